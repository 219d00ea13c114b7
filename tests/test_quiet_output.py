"""A student's output carries no library noise: each known warning is silenced where it starts.

* faiss's loader logs every CPU build it tries at INFO (the CLI logs at INFO): retrievalkit's
  ``__init__`` sets that one logger to WARNING.
* faiss's k-means prints "WARNING clustering …" to stderr when PQ codebooks train on a small learning
  split (240 lines in notebook 08): ``index._quiet_kmeans``; SMALL-mode pseudo-labels (notebook 10):
  ``finetune.unsupervised.kmeans_labels``.
* torch warns once per process when a tensor wraps a read-only array, as ``np.asarray(PIL image)`` is
  (notebooks 01 and 03): the notebooks copy with ``np.array``.

Warnings emitted once per process (torch's, faiss's import) are checked in a fresh interpreter.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)


def test_importing_faiss_through_retrievalkit_logs_nothing_at_info():
    run = _fresh_python("import logging; logging.basicConfig(level=logging.INFO)\n"
                        "import retrievalkit.index, faiss\n"
                        "logging.getLogger('faiss').warning('still shown')")
    assert run.stderr.strip() == "WARNING:faiss:still shown", run.stderr


def test_training_pq_codebooks_on_a_small_learning_split_prints_nothing(capfd):
    from retrievalkit.index import build_index

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(800, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    for kind, params in (("ivf_pq", {}), ("ivf_pq", {"refine": "flat"}), ("pca_pq", {})):
        build_index(kind, rows[:300], xtrain=rows[300:], **params)  # 500 points for 256-word codebooks
    assert capfd.readouterr().err == ""


def test_kmeans_pseudo_labels_on_few_points_print_nothing(capfd):
    from retrievalkit.finetune.unsupervised import kmeans_labels

    rows = np.random.default_rng(0).normal(size=(180, 16)).astype(np.float32)
    assert len(np.unique(kmeans_labels(rows, 10))) == 10  # 18 points per cluster: faiss would warn below 39
    assert capfd.readouterr().err == ""


def test_notebook_image_to_tensor_lines_warn_nothing():
    """Every notebook line ``x = torch.as_tensor(np.…(<image>)…)`` runs on a PIL image without a warning."""
    lines = [m.group(1) for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
             for m in re.finditer(r"^\w+ = (torch\.as_tensor\(np\.\w+\((?:photo|image)\).*)$", p.read_text(), re.M)]
    assert len(lines) >= 2, lines  # notebooks 01 and 03
    code = ("import warnings, numpy as np, torch\nfrom PIL import Image\n"
            "photo = image = Image.new('RGB', (8, 8))\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            + "".join(f"    {line}\n" for line in lines)
            + "print([str(w.message) for w in caught])")
    assert _fresh_python(code).stdout.strip() == "[]"
