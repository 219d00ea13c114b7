"""A reproduce step, declared once: what it computes, the CSVs it writes, the figures drawn from them, its report section.

``retrievalkit reproduce`` calls a :class:`Step` (compute → CSVs → figures → section) and
``--from-cache`` reads the same CSVs back and draws the same :class:`Figure` list, so a figure in
``figures/`` is the same picture whichever of the two wrote it. Survey §2.5.3; taught in
notebooks/12_reproduce_survey_figures.

A step's whole output (its CSVs, report section and live figures) is also kept in the artefact
cache (kind ``step_output``), keyed by the step, the run's mode, the package's source, the library
versions and the networks whose weights are present. The entry also records the data it was computed
from: a fingerprint (file names and sizes) of every dataset folder of the data home as the step ended;
it is served only while each of those folders is unchanged (a folder that a later step extracts does
not count; an image added to or lost from one the step read does). A second ``retrievalkit
reproduce`` with nothing changed writes the same files from there in seconds; ``reproduce
--recompute`` ignores the cache.
"""
from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import artifacts
from .. import config as rk_config
from ..config import atomic_path

STEP_OUTPUT_VERSION = 1


@dataclass
class Run:
    """Where a reproduction writes, and what its steps share (the COIL-100 splits, results later steps reuse)."""

    figures: Path
    results: Path
    small: bool
    progress: bool
    data_home: Path | None = None
    full: bool = False  # paper-size settings (``reproduce --full``); neither flag: the default, laptop-sized run
    reuse: bool = False  # serve a step's output from the step cache when nothing it depends on changed
    written: list[Path] = field(default_factory=list)
    shared: dict = field(default_factory=dict)
    _coil: Any = field(default=None, repr=False)

    def __post_init__(self):
        self.full = self.full and not self.small  # SMALL wins, as in config.mode

    @property
    def mode(self) -> str:
        """``"SMALL"``, ``"default"`` or ``"full"``, as recorded beside each step's results."""
        return "SMALL" if self.small else "full" if self.full else "default"

    @property
    def coil(self):
        """The one :class:`~retrievalkit.experiments.offtheshelf.Coil` of this run (SMALL mode: its small splits)."""
        if self._coil is None:
            from .offtheshelf import Coil

            self._coil = Coil(small=self.small, full=self.full, data_home=self.data_home, progress=self.progress)
        return self._coil

    def save_csv(self, df: pd.DataFrame, name: str) -> Path:
        path = self.results / f"{name}.csv"
        atomic_write(path, df.to_csv(index=False))
        self.written.append(path)
        return path

    def save_figure(self, fig, name: str) -> Path:
        path = save_png(fig, self.figures / f"{name}.png")
        self.written.append(path)
        return path


@dataclass(frozen=True)
class Figure:
    """A figure file and how to draw it from the tables named in ``inputs`` (CSV names without ``.csv``)."""

    name: str
    inputs: tuple[str, ...]
    draw: Callable[..., Any]
    what: str

    def from_tables(self, tables: dict[str, pd.DataFrame]):
        return self.draw(*[tables[name] for name in self.inputs])


@dataclass(frozen=True)
class Step:
    """One ``reproduce`` step. ``compute(run)`` returns exactly the tables named in ``outputs``; a table whose
    ``attrs["per_query"]`` holds per-query APs is also written as ``<name>_per_query``. ``figures`` are drawn
    from those tables (here and by ``--from-cache``); ``live_figures(run, tables)`` returns the figures that
    need images or models, which only a run can draw; ``section(run, tables)`` is its Markdown for REPORT.md."""

    name: str
    outputs: tuple[str, ...]
    compute: Callable[[Run], dict[str, pd.DataFrame]]
    figures: tuple[Figure, ...]
    section: Callable[[Run, dict[str, pd.DataFrame]], str]
    live_figures: Callable[[Run, dict[str, pd.DataFrame]], dict[str, Any]] | None = None

    def __call__(self, run: Run) -> str:
        if not run.reuse:
            return self._write(run, self._compute_output(run))
        key = step_key(self, run)
        output, stored = self._cached_output(run, key)
        if output is None:
            def compute():
                out = self._compute_output(run)
                out["data"] = dataset_fingerprints(rk_config.data_home(run.data_home))  # as the step ends
                return out

            # refresh: an entry whose dataset folders changed is replaced, not kept beside the new one
            output = artifacts.cached("step_output", key, compute, version=STEP_OUTPUT_VERSION, refresh=stored)
        return self._write(run, output)

    def is_cached(self, run: Run) -> bool:
        """Whether a reusing run would serve this step from the step cache (what the plan prints)."""
        return self._cached_output(run, step_key(self, run), warn=False)[0] is not None

    def _cached_output(self, run: Run, key: dict, warn: bool = True) -> tuple[dict | None, bool]:
        """``(output, stored)``: the cached output when its entry is good and every dataset folder it read
        is unchanged (else None), and whether a good entry is stored for ``key`` at all."""
        folder = artifacts.lookup("step_output", key, version=STEP_OUTPUT_VERSION, warn=warn)
        if folder is None:
            return None, False
        try:
            output = artifacts.load_folder(folder)
        except artifacts.CorruptArtifactError:
            return None, False  # artifacts.cached replaces it
        home = rk_config.data_home(run.data_home)
        fresh = all(folder_fingerprint(home / name) == fp for name, fp in (output.get("data") or {}).items())
        return (output if fresh else None), True

    def _compute_output(self, run: Run) -> dict:
        """Compute the step; return its CSV texts, section and live-figure PNGs (JSON, for the step cache)."""
        tables = self.compute(run)
        if set(tables) != set(self.outputs):
            raise RuntimeError(f"step {self.name} computed {list(tables)} but declares {list(self.outputs)}")
        for name, df in list(tables.items()):
            if df.attrs.get("per_query"):
                tables[f"{name}_per_query"] = pd.DataFrame(df.attrs["per_query"])
        live = {}
        for name, fig in (self.live_figures(run, tables) if self.live_figures else {}).items():
            live[name] = base64.b64encode(save_png(fig, run.figures / f"{name}.png").read_bytes()).decode()
        return {"csv": {name: df.to_csv(index=False) for name, df in tables.items()},
                "section": self.section(run, tables), "live_figures": live}

    def _write(self, run: Run, output: dict) -> str:
        """Write a step's output: its CSVs, the figures drawn from them (as ``--from-cache`` draws them:
        from the CSVs read back), its live figures; returns its report section."""
        tables = {}
        for name, text in output["csv"].items():
            path = run.results / f"{name}.csv"
            atomic_write(path, text)
            run.written.append(path)
            tables[name] = pd.read_csv(StringIO(text))
        for fig in self.figures:
            run.save_figure(fig.from_tables(tables), fig.name)
        for name, png in output["live_figures"].items():
            path = run.figures / f"{name}.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(base64.b64decode(png))
            run.written.append(path)
        return output["section"]


def step_key(step: Step, run: Run) -> dict:
    """What a step's output depends on besides its data, as the step cache's key (a change recomputes
    the step); the data is checked against the fingerprints the entry records (:meth:`Step._cached_output`)."""
    from .. import backbones

    return {"data": "dataset folders, checked on read", "step": step.name, "mode": run.mode,
            "code": source_fingerprint(), "libraries": library_versions(),
            "weights": sorted(n for n in backbones.BACKBONES if backbones.weights_available(n))}


def source_fingerprint() -> str:
    """sha256 of every module of the package: any edit to the code makes every cached step stale."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def dataset_fingerprints(home: Path) -> dict[str, str]:
    """:func:`folder_fingerprint` of every dataset folder of the data home (the cache left out)."""
    skip = {rk_config.cache_dir().resolve(), (home / "cache").resolve()}
    if not home.is_dir():
        return {}
    return {d.name: folder_fingerprint(d) for d in sorted(home.iterdir())
            if d.is_dir() and d.resolve() not in skip}


def folder_fingerprint(folder: Path) -> str | None:
    """sha256 of the name and size of every file under ``folder`` (None when it is gone): an image added,
    lost or replaced by one of another size changes it (the packs themselves are checksummed)."""
    if not folder.is_dir():
        return None
    entries = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(parent) / name
            try:
                entries.append(f"{path.relative_to(folder).as_posix()}\t{path.stat().st_size}")
            except OSError:  # removed while we walked
                continue
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:32]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose kernels compute the numbers."""
    from importlib import metadata

    out = {}
    for dist in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "faiss-cpu",
                 "opencv-python-headless"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def atomic_write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file + rename) and close it; every figure goes through here."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def table(df: pd.DataFrame, columns, protocol: str = "all") -> str:
    """The rows of one protocol (when the table has protocols), as a Markdown table for a report section."""
    data = df[df["protocol"] == protocol] if "protocol" in df.columns else df
    return data[list(columns)].to_markdown(index=False, floatfmt=".4f")
