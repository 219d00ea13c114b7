"""The `retrievalkit` command on a generated folder of grouped photos: evaluate, search, one-line errors.

Groups are drawn shapes in their own colour (red discs, green squares, blue triangles), four
variants each (position, size, background), at 64 px through EfficientNet-Lite0 with its bundled
weights: small enough for seconds on a CPU, distinct enough that a deep descriptor must group them.
"""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retrievalkit import cli
from retrievalkit.datasets import download

SHAPES = {"red_discs": ("ellipse", (220, 30, 30)), "green_squares": ("rectangle", (30, 180, 40)),
          "blue_triangles": ("polygon", (40, 60, 220))}
PER_GROUP = 4
FAST = ["--backbone", "efficientnet_lite0", "--size", "64", "--workers", "0", "-q"]
MAP_LINE = re.compile(r"^folder all: mAP (\d\.\d{4})  mP@1 \d\.\d{4}  mP@5 \d\.\d{4}  mP@10 \d\.\d{4}  \((\d+) queries\)$",
                      re.M)


def draw(path, shape: str, colour, variant: int, side: int = 64) -> None:
    rng = np.random.default_rng(variant)
    background = tuple(int(v) for v in rng.integers(200, 255, 3))
    img = Image.new("RGB", (side, side), background)
    r = 14 + 3 * (variant % 3)
    cx, cy = 32 + (variant % 2) * 6 - 3, 32 + (variant // 2) * 6 - 3
    box = [cx - r, cy - r, cx + r, cy + r]
    pen = ImageDraw.Draw(img)
    if shape == "polygon":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        getattr(pen, shape)(box, fill=colour)
    img.save(path)


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    root = tmp_path / "photos"
    for group, (shape, colour) in SHAPES.items():
        (root / group).mkdir(parents=True)
        for v in range(PER_GROUP):
            draw(root / group / f"{v}.png", shape, colour, v)
    return root


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_a_folder_prints_map_and_writes_the_panel(photos, tmp_path, capsys):
    panel = tmp_path / "out" / "panel.png"
    code = cli.main(["evaluate", "--dataset", "folder", "--root", str(photos), *FAST, "--panel", str(panel)])
    out = capsys.readouterr().out
    assert code == 0, out
    (score, queries), = MAP_LINE.findall(out)
    chance = (PER_GROUP - 1) / (PER_GROUP * len(SHAPES) - 1)
    assert int(queries) == PER_GROUP * len(SHAPES) and chance < float(score) <= 1.0
    assert "efficientnet_lite0 head gem; whitening: none" in out
    assert _png(panel) and f"ranking panel: {panel}" in out


def test_whitening_a_folder_says_it_learned_on_the_database(photos, tmp_path, capsys):
    code = cli.main(["evaluate", "--dataset", "folder", "--root", str(photos), *FAST, "--whitening", "pca_w",
                     "--panel", str(tmp_path / "w.png")])
    out = capsys.readouterr().out
    assert code == 0 and MAP_LINE.search(out)
    assert "pca_w learned on the 12 database images themselves (folder has no learning split" in out


@pytest.mark.parametrize("method", ["pca_w", "lw"])
def test_whitening_learns_on_the_learning_split_when_the_dataset_has_one(photos, tmp_path, monkeypatch, capsys, method):
    """A dataset whose loader takes ``split`` (COIL-100, SOP) learns whitening on split='learn' only."""
    from retrievalkit.datasets import folder

    learn = tmp_path / "learn"
    for g, (shape, colour) in enumerate(SHAPES.values()):
        for v in range(6):  # other variants, and more images than groups for the learned whitening's pairs
            (learn / f"group{g}").mkdir(parents=True, exist_ok=True)
            draw(learn / f"group{g}" / f"{v}.png", shape, colour, 10 + v)
    asked = []

    def load(root, split="test", progress=None):
        asked.append(split)
        return folder.load(learn if split == "learn" else root, name=f"shapes-{split}")

    monkeypatch.setattr(cli, "_loader", lambda name: load)
    code = cli.main(["evaluate", "--dataset", "shapes", "--root", str(photos), *FAST, "--whitening", method,
                     "--panel", str(tmp_path / "w.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert asked == ["test", "learn"]
    assert f"whitening: {method} learned on the learning split (18 images of shapes-learn)" in out
    assert re.search(r"^shapes-test all: mAP \d\.\d{4}", out, re.M)


def test_search_one_photo_lists_its_group_first(photos, tmp_path, capsys):
    query = tmp_path / "my_red_disc.png"
    draw(query, "ellipse", (200, 20, 20), variant=7)
    panel = tmp_path / "search.png"
    code = cli.main(["search", str(query), "-k", "3", "--dataset", "folder", "--root", str(photos), *FAST,
                     "--panel", str(panel)])
    out = capsys.readouterr().out
    assert code == 0, out
    ranked = re.findall(r"^\s+(\d)  (\d\.\d{4})  (\S+)$", out, re.M)
    assert [int(r) for r, _, _ in ranked] == [1, 2, 3]
    assert "red_discs" in ranked[0][2] and float(ranked[0][1]) >= float(ranked[2][1])
    assert _png(panel) and f"results panel: {panel}" in out


@pytest.mark.parametrize("argv, said", [
    (["evaluate", "--dataset", "folder", "--root", "{root}", "--pooling", "nope"], "unknown pooling 'nope'"),
    (["evaluate", "--dataset", "folder"], "needs --root DIR"),
    (["search", "{root}/missing.jpg", "--dataset", "folder", "--root", "{root}"], "missing.jpg not found"),
    (["evaluate", "--dataset", "folder", "--root", "{root}", "--whitening", "zca"], "invalid choice: 'zca'"),
    (["evaluate", "--dataset", "folder", "--root", "{root}", "--whitening", "lw", *FAST], "has none"),
    (["evaluate", "--dataset", "folder", "--root", "{root}/nowhere"], "nowhere"),
    (["evaluate", "--dataset", "nope"], "known datasets: coil100"),
])
def test_bad_arguments_give_one_line_and_a_nonzero_exit(photos, capsys, argv, said):
    code = cli.main([a.replace("{root}", str(photos)) for a in argv])
    err = capsys.readouterr().err
    assert code != 0 and said in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("retrievalkit: error: ")


@pytest.mark.parametrize("error, said", [
    (PermissionError(13, "Permission denied", "/data/cache/features"), "/data/cache/features: Permission denied; no permission"),
    (NotADirectoryError(20, "Not a directory", "/data/home"), "/data/home: Not a directory; a file stands where a folder"),
    (FileNotFoundError(2, "No such file or directory", "/x/y.jpg"), "/x/y.jpg: No such file or directory; no such file"),
    (pickle.UnpicklingError("/d/gnd_roxford5k.pkl: pickle data was truncated"),
     "/d/gnd_roxford5k.pkl: pickle data was truncated; the file is truncated"),
    (EOFError("/d/gnd_roxford5k.pkl: Ran out of input"), "/d/gnd_roxford5k.pkl: Ran out of input; the file is truncated"),
])
def test_ordinary_errors_are_one_line_with_file_and_fix(monkeypatch, capsys, error, said):
    def failing(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_datasets", failing)
    assert cli.main(["datasets", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"retrievalkit: error: {said}")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_our_own_messages_are_kept_whole(monkeypatch, capsys):
    from retrievalkit.backbones import PretrainedWeightsMissing

    message = "resnet50 ImageNet weights not found: put resnet50-0676ba61.pth in ~/.cache/torch/hub/checkpoints"
    def failing(args):
        raise PretrainedWeightsMissing(message, filename="resnet50-0676ba61.pth")

    monkeypatch.setattr(cli, "_cmd_datasets", failing)
    assert cli.main(["datasets", "list"]) == 1
    assert capsys.readouterr().err == f"retrievalkit: error: {message}\n"


def test_a_file_as_the_cache_folder_is_one_line(photos, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(blocker))
    code = cli.main(["evaluate", "--dataset", "folder", "--root", str(photos), *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{blocker}" in err and "a file stands where a folder is expected" in err


@pytest.mark.parametrize("content", [b"", pickle.dumps({"imlist": ["a"] * 100})[:40]])
def test_broken_ground_truth_pickle_is_named(tmp_path, content):
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(content)
    with pytest.raises(pickle.UnpicklingError, match=re.escape(str(path))):
        download.load_gnd_pickle(path)


def test_reproduce_from_cache_needs_a_results_folder(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert cli.main(["reproduce", "--from-cache", "--results", str(missing), "--figures", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert f"results folder {missing} not found" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert cli.main(["reproduce", "--from-cache", "--results", str(tmp_path / "empty"),
                     "--figures", str(tmp_path / "f")]) == 1
    assert "holds no results" in capsys.readouterr().err
    assert not (tmp_path / "f" / "REPORT.md").exists()


@pytest.mark.parametrize("argv", [["reproduce", "--steps", "baseline"], ["datasets", "fetch", "coil100"]])
def test_tqdm_disable_silences_every_command(monkeypatch, argv):
    from retrievalkit.experiments import reproduce

    seen = {}
    monkeypatch.setattr(reproduce, "reproduce", lambda *a, **kw: seen.update(kw) or {})
    monkeypatch.setattr(download, "fetch", lambda *a, **kw: seen.update(kw) or "here")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert cli.main(argv) == 0
    assert seen["progress"] is False
    monkeypatch.delenv("TQDM_DISABLE")
    assert cli.main(argv) == 0
    assert seen["progress"] is True
