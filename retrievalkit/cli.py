"""The ``retrievalkit`` command: datasets list/fetch/verify, evaluate, search, reproduce.

Taught in notebooks/00_setup_and_data and the README.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import pickle
import sys
from pathlib import Path

from . import config

# `evaluate` and `search` default to the best configuration of the committed default run
# (results/aggregation.csv, COIL-100 test split, 200 queries): EfficientNet-Lite1, GeM on its last
# conv map, no whitening, mAP 0.8565 (Lite1 + MAC ties at 0.8565; Lite0 + GeM: 0.8503).
# PCA-whitening learned on the learning split lowered Lite1 + GeM to 0.8387.
DEFAULT_BACKBONE = "efficientnet_lite1"
DEFAULT_POOLING = "gem"
WHITENINGS = ("none", "pca_w", "lw")
PANEL_QUERIES = 4
TOP_K = 10


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"retrievalkit: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- datasets
def _cmd_datasets(args) -> int:
    from .datasets import download, manifest

    if args.action == "list":
        width = max(map(len, manifest.MANIFEST))
        for name, entry in manifest.MANIFEST.items():
            where = download.locate(name, args.data_home)
            state = f"present  {where}" if where else f"absent   (would go to {download.dataset_root(name, args.data_home)})"
            print(f"{name:{width}s} {entry.summary():45s} {state}")
        return 0
    names = args.names or []
    if not names:
        print("retrievalkit: error: name at least one dataset (see `retrievalkit datasets list`)", file=sys.stderr)
        return 2
    for name in names:
        if args.action == "fetch":
            root = download.fetch(name, args.data_home, progress=_progress(args))
            print(f"{name}: ready at {root}")
        else:
            print(json.dumps(download.verify(name, args.data_home), indent=2, default=str))
    return 0


def _loader(name: str):
    """The loader function registered for dataset ``name`` (ValueError listing the names otherwise)."""
    import importlib

    from . import datasets

    key = name.lower().replace("-", "_")
    if key not in datasets.LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(datasets.LOADERS)}")
    module, func = datasets.LOADERS[key].split(":")
    return getattr(importlib.import_module(f"{datasets.__name__}.{module}"), func)


def _load_dataset(args, split: str | None = None):
    """Load ``--dataset`` with the options its loader takes (``--root``, ``--data-home``, ``--no-download``)."""
    loader = _loader(args.dataset)
    params = inspect.signature(loader).parameters
    needs_root = "root" in params and params["root"].default is inspect.Parameter.empty
    if needs_root and not args.root:
        raise ValueError(f"--dataset {args.dataset} needs --root DIR: a folder of images grouped in "
                         "sub-folders (DIR/<group>/<image>)")
    offered = {"root": args.root, "data_home": args.data_home, "download": not args.no_download,
               "progress": _progress(args), "split": split}
    kwargs = {k: v for k, v in offered.items() if k in params and v is not None}
    return loader(**kwargs)


def _has_learning_split(args) -> bool:
    """Loaders that take ``split`` offer a learning split (COIL-100's objects 1–50, SOP's first products)."""
    return "split" in inspect.signature(_loader(args.dataset)).parameters


def _progress(args) -> bool:
    # tqdm reads TQDM_DISABLE only when ``disable`` is left out, and the package always passes it.
    return not (args.quiet or config.truthy(os.environ.get("TQDM_DISABLE")))


# --------------------------------------------------------------------------- deep descriptors
def _check_method(args) -> None:
    """Fail on a bad backbone or pooling name before any data is read."""
    from .backbones import get_spec
    from .nn.pooling import POOLINGS

    get_spec(args.backbone)
    if args.pooling.lower() not in POOLINGS:
        raise ValueError(f"unknown pooling {args.pooling!r}; choose one of {', '.join(sorted(POOLINGS))}")
    if args.whitening == "lw" and not _has_learning_split(args):
        raise ValueError(f"--whitening lw learns from labelled pairs of a learning split and {args.dataset} has "
                         "none: use --whitening pca_w (learned on the database, no labels) or none")


def _rows(feats):
    """The L2-normalised rows of the one extracted layer (vector layers have no pooling)."""
    (layer, pooling), = feats.available()
    return feats.get(layer, pooling)


class _Describer:
    """Extracts ``--backbone/--layer/--pooling`` descriptors of any image set at one input setting.

    The database fixes the input (size, resize rule); queries, learning images and a searched
    photo are described at the same setting, so their rows are comparable.
    """

    def __init__(self, args):
        from .backbones import load_backbone

        self.args = args
        self.backbone = load_backbone(args.backbone, progress=_progress(args))
        self.input = None

    def __call__(self, data, images: str = "db", cache: bool = True):
        from . import features

        resize, size = self.input or ("default", self.args.size)
        feats = features.extract(data, self.backbone, self.args.layer, self.args.pooling, images=images,
                                 size=size, resize=resize, workers=self.args.workers, cache=cache,
                                 progress=_progress(self.args))
        if self.input is None:
            self.input = (feats.config["input"]["resize"], feats.config["input"]["size"])
        self.layer = feats.config["layers"][0]
        return feats

    def describe(self):
        return f"{self.args.backbone} {self.layer} {self.args.pooling}"


def _query_rows(describer, dataset, db):
    """Query rows: database rows when every query is an uncropped database image, else their own extraction."""
    index = dataset.query_rows_in_db
    return db[index] if index is not None else _rows(describer(dataset, images="queries"))


def _whitening(args, describer, dataset, db):
    """A fitted whitening (or None) and one line saying what it learned on.

    Whitening learns only on a learning split (Survey §2.3.2, the PCA_w columns of Table 2.2). A
    dataset without one (a folder of your photos) can only get PCA-whitening learned on its own
    database images, without labels; the line says so, and says when there are fewer images than
    dimensions, where whitening keeps too few directions and usually hurts. Hence the default: none.
    """
    from . import whitening

    if args.whitening == "none":
        return None, "whitening: none"
    if not _has_learning_split(args):
        model = whitening.PCAWhitening().fit(db)
        few = "" if len(db) > db.shape[1] else \
            f"; {len(db)} images for {db.shape[1]} dimensions is too few, expect it to hurt"
        return model, (f"whitening: pca_w learned on the {len(db)} database images themselves ({dataset.name} has no "
                       f"learning split; no labels used), not on held-out images{few}")
    learn = _load_dataset(args, split="learn")
    rows = _rows(describer(learn))
    if args.whitening == "lw":
        model = whitening.LearnedWhitening().fit(rows, labels=learn.db_labels)
    else:
        model = whitening.PCAWhitening().fit(rows)
    return model, f"whitening: {args.whitening} learned on the learning split ({len(rows)} images of {learn.name})"


def _database(args):
    """Dataset, describer, raw database rows, the whitening (a function on rows) and its note."""
    _check_method(args)
    dataset = _load_dataset(args)
    describer = _Describer(args)
    db = _rows(describer(dataset))
    model, note = _whitening(args, describer, dataset, db)
    return dataset, describer, db, (lambda x: x) if model is None else model.transform, note


def _save_panel(fig, path) -> Path:
    from .experiments.steps import save_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path)


def _cmd_evaluate(args) -> int:
    import numpy as np

    from . import evaluate, figures
    from .index import exact_search

    dataset, describer, db, whiten, note = _database(args)
    _, ids = exact_search(whiten(_query_rows(describer, dataset, db)), whiten(db))
    print(f"{dataset.name}: {dataset.n_db} database images, {dataset.n_queries} queries; "
          f"{describer.describe()}; {note}")
    for row in evaluate.evaluate(ids, dataset):
        precision = "  ".join(f"{k} {row[k]:.4f}" for k in row if k.startswith("mP@"))
        print(f"{row['dataset']} {row['protocol']}: mAP {row['mAP']:.4f}  {precision}  ({row['queries']} queries)")
    shown = sorted(set(np.linspace(0, dataset.n_queries - 1, min(PANEL_QUERIES, dataset.n_queries)).astype(int)))
    fig = figures.ranking_panel(dataset, ids, queries=shown, k=min(TOP_K, dataset.n_db - 1),
                                title=f"{dataset.name}: {describer.describe()}, whitening {args.whitening}")
    print(f"ranking panel: {_save_panel(fig, args.panel or f'{dataset.name}_ranking.png')}")
    return 0


def _results_panel(query: Path, paths, scores, title: str):
    """The query (blue frame) and its top-k with their scores; relevance is unknown, so frames stay grey."""
    import matplotlib.pyplot as plt

    from .figures import QUERY, _frame, _thumbnail

    fig, axes = plt.subplots(1, len(paths) + 1, figsize=(1.3 * (len(paths) + 1), 1.6), squeeze=False)
    axes[0, 0].imshow(_thumbnail(query))
    axes[0, 0].set_title("query", fontsize=8)
    _frame(axes[0, 0], QUERY)
    for col, (path, score) in enumerate(zip(paths, scores), start=1):
        axes[0, col].imshow(_thumbnail(path))
        axes[0, col].set_title(f"#{col} {score:.3f}", fontsize=8)
        _frame(axes[0, col], "#7f7f7f", width=2.0)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _cmd_search(args) -> int:
    from .index import exact_search

    query = Path(args.query).expanduser()
    if not query.is_file():
        raise FileNotFoundError(f"query image {query} not found: give the path of a photo (JPEG, PNG …)")
    if args.k <= 0:
        raise ValueError(f"-k must be a positive number of results, got {args.k}")
    dataset, describer, db, whiten, note = _database(args)
    feats = describer([str(query)], cache=False)
    if feats.skipped:
        raise ValueError(f"query image {query} could not be read ({feats.skipped[0][1]}): give a JPEG or PNG photo")
    scores, ids = exact_search(whiten(_rows(feats)), whiten(db), k=args.k)
    print(f"query {query} in {dataset.name} ({dataset.n_db} images); {describer.describe()}; {note}")
    for rank, (score, i) in enumerate(zip(scores[0], ids[0]), start=1):
        print(f"{rank:3d}  {score:.4f}  {dataset.db_paths[i]}")
    fig = _results_panel(query, [dataset.db_paths[i] for i in ids[0]], scores[0],
                         f"{query.name} in {dataset.name}: {describer.describe()}, whitening {args.whitening}")
    print(f"results panel: {_save_panel(fig, args.panel or f'search_{query.stem}.png')}")
    return 0


# --------------------------------------------------------------------------- reproduce
def _cmd_reproduce(args) -> int:
    from .experiments.reproduce import STEPS, StepsFailed, from_cache, reproduce

    if args.plan:
        from . import config
        from .experiments import plan

        steps = args.steps or list(STEPS)
        unknown = [s for s in steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {unknown}; known steps: {', '.join(STEPS)}")
        from .experiments.steps import Run

        mode = config.mode(True if args.small else None, True if args.full else None)
        run = Run(figures=Path(args.figures), results=Path(args.results), small=mode == "SMALL", progress=False,
                  data_home=args.data_home, full=mode == "full", reuse=not args.recompute)
        cached = {n: run.reuse and STEPS[n].is_cached(run) for n in steps}
        print(plan.describe(plan.make_plan(steps, {n: STEPS[n].outputs for n in steps}, args.results, mode,
                                           cached=cached)))
        return 0
    if args.from_cache:
        if args.steps:
            raise ValueError("--from-cache redraws every figure from results/ and takes no --steps")
        for path in from_cache(args.figures, args.results):
            print(path)
        return 0
    try:
        written = reproduce(
            args.steps or None,
            figures_dir=args.figures,
            results_dir=args.results,
            small=True if args.small else None,
            full=True if args.full else None,
            progress=_progress(args),
            data_home=args.data_home,
            recompute=args.recompute,
        )
    except StepsFailed as err:
        print(f"retrievalkit: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


# --------------------------------------------------------------------------- the parser
def _add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="coil100", help="a name from `retrievalkit datasets list`, or folder")
    p.add_argument("--root", default=None, help="the dataset's folder (needed by --dataset folder: DIR/<group>/<image>)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"network (default {DEFAULT_BACKBONE})")
    p.add_argument("--layer", default=None, help="layer to describe (default: the backbone's last conv map)")
    p.add_argument("--pooling", default=DEFAULT_POOLING, help=f"mac, spoc, gem, rmac, crow, cam (default {DEFAULT_POOLING})")
    p.add_argument("--whitening", default="none", choices=WHITENINGS,
                   help="none (default), pca_w or lw, learned on the dataset's learning split")
    p.add_argument("--size", type=int, default=None, help="input side in pixels (default: the dataset's)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (0: decode in the main one)")
    p.add_argument("--panel", default=None, help="where to write the PNG panel")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="retrievalkit", description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None, help="dataset folder (default: $RETRIEVALKIT_DATA or ./data)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    quiet = _Parser(add_help=False)  # -q also after the command; unset there, the top-level value stands
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    ds = sub.add_parser("datasets", parents=[quiet], help="list, fetch or verify datasets")
    ds.add_argument("action", choices=["list", "fetch", "verify"])
    ds.add_argument("names", nargs="*", help="dataset names (see `datasets list`)")
    ds.set_defaults(func=_cmd_datasets)

    ev = sub.add_parser("evaluate", parents=[quiet],
                        help="score deep descriptors on a dataset (mAP, mP@k) and draw a ranking panel")
    _add_method_options(ev)
    ev.set_defaults(func=_cmd_evaluate)

    se = sub.add_parser("search", parents=[quiet], help="rank a dataset's images by similarity to one photo")
    se.add_argument("query", help="path of the query photo")
    se.add_argument("-k", type=int, default=TOP_K, help=f"results to show (default {TOP_K})")
    _add_method_options(se)
    se.set_defaults(func=_cmd_search)

    ca = sub.add_parser("cache", parents=[quiet],
                        help="list the cache, pack it into one archive, or unpack an instructor's archive")
    ca.add_argument("action", choices=["list", "pack", "unpack"])
    ca.add_argument("path", nargs="?", help="the archive (unpack without it reads retrievalkit-cache.tar "
                                            "from RETRIEVALKIT_MIRROR)")
    ca.set_defaults(func=_cmd_cache)

    rp = sub.add_parser("reproduce", parents=[quiet], help="run the survey's experiments; write figures/ and results/")
    rp.add_argument("--steps", nargs="*", help="only these steps (default: all)")
    rp.add_argument("--small", action="store_true", help="SMALL mode (subsets; same as RETRIEVALKIT_SMALL=1)")
    rp.add_argument("--full", action="store_true",
                    help="paper-size settings (every COIL view, the whole grids; hours on 2 cores; RETRIEVALKIT_FULL=1)")
    rp.add_argument("--plan", action="store_true", help="print the steps, what is on disk and an estimate per step; run nothing")
    rp.add_argument("--from-cache", action="store_true",
                    help="compute nothing: redraw the figures from results/*.csv and rewrite figures/REPORT.md")
    rp.add_argument("--recompute", action="store_true",
                    help="compute every step again, even where the step cache holds its output for these inputs")
    rp.add_argument("--figures", default="figures")
    rp.add_argument("--results", default="results")
    rp.set_defaults(func=_cmd_reproduce)
    return parser


# --------------------------------------------------------------------------- cache sharing
def _cmd_cache(args) -> int:
    from . import cache_share

    if args.action == "list":
        for row in cache_share.summary():
            print(f"{row['entry']}  {row['megabytes']:.1f} MiB  {row['status']}")
        return 0
    if args.action == "pack":
        if not args.path:
            raise ValueError("cache pack needs the archive's path, e.g. `retrievalkit cache pack lab-cache.tar`")
        packed = cache_share.pack(args.path)
        print(f"wrote {packed.path}: {len(packed.entries)} entries, {packed.bytes / 2**20:.1f} MiB")
        for name, why in packed.skipped:
            print(f"skipped {name}: {why}")
        return 0
    unpacked = cache_share.unpack(args.path)
    print(f"{unpacked.archive}: {len(unpacked.installed)} installed, {len(unpacked.kept)} already present")
    for name, why in unpacked.refused:
        print(f"refused {name}: {why}")
    return 0 if unpacked.ok else 1


# --------------------------------------------------------------------------- errors
_REFETCH = "the file is truncated or corrupt: delete it and fetch it again (`retrievalkit datasets fetch <dataset>`)"
_FIXES = (
    (PermissionError, "no permission: fix the file's permissions, or point --data-home, RETRIEVALKIT_CACHE, "
                      "--figures or --results at a folder you can write"),
    (IsADirectoryError, "a folder stands where a file is expected: give a file path"),
    (NotADirectoryError, "a file stands where a folder is expected: give a folder path, or move the file away"),
    (FileNotFoundError, "no such file or folder: check the path (`retrievalkit datasets list` shows the data)"),
    (pickle.UnpicklingError, _REFETCH),
    (EOFError, _REFETCH),
)
_EXPECTED = tuple(kind for kind, _ in _FIXES)


def error_line(err: BaseException) -> str:
    """One line for an ordinary failure: what went wrong, on which file, and the fix.

    Raw OS errors (``[Errno 13] Permission denied: 'x'``) get the file and a fix; our own
    messages already carry both and are kept as they are, on one line.
    """
    fix = next((text for kind, text in _FIXES if isinstance(err, kind)), None)
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}; {fix}"
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, (pickle.UnpicklingError, EOFError)):
        text = f"{text}; {fix}"
    return text


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2, one line already printed)
        return stop.code if isinstance(stop.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .datasets.base import DatasetNotFoundError
    from .datasets.download import DownloadError
    from .datasets.images import UnreadableImageError

    try:
        return args.func(args)
    except (DatasetNotFoundError, DownloadError, UnreadableImageError, ValueError, *_EXPECTED) as err:
        print(f"retrievalkit: error: {error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("retrievalkit: interrupted; completed files were kept, partial ones resume next time", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
