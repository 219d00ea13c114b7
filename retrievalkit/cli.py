"""The ``retrievalkit`` command: datasets list/fetch/verify, evaluate, reproduce.

Taught in notebooks/00_setup_and_data and the README.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _cmd_datasets(args) -> int:
    from .datasets import download, manifest

    if args.action == "list":
        for name, entry in manifest.MANIFEST.items():
            where = download.locate(name, args.data_home)
            state = f"present  {where}" if where else f"absent   (would go to {download.dataset_root(name, args.data_home)})"
            print(f"{name:14s} {entry.summary():45s} {state}")
        return 0
    names = args.names or []
    if not names:
        print("name at least one dataset (see `retrievalkit datasets list`)", file=sys.stderr)
        return 2
    for name in names:
        if args.action == "fetch":
            root = download.fetch(name, args.data_home, progress=not args.quiet)
            print(f"{name}: ready at {root}")
        else:
            print(json.dumps(download.verify(name, args.data_home), indent=2, default=str))
    return 0


def _cmd_evaluate(args) -> int:
    import pandas as pd

    from . import datasets
    from .experiments import baseline

    dataset = datasets.load(args.dataset, data_home=args.data_home, download=not args.no_download)
    df, _ = baseline.run(dataset, progress=not args.quiet)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(df.to_string(index=False))
    return 0


def _cmd_reproduce(args) -> int:
    from .experiments.reproduce import StepsFailed, from_cache, reproduce

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
            progress=not args.quiet,
            data_home=args.data_home,
        )
    except StepsFailed as err:
        print(f"retrievalkit: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrievalkit", description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None, help="dataset folder (default: $RETRIEVALKIT_DATA or ./data)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="list, fetch or verify datasets")
    ds.add_argument("action", choices=["list", "fetch", "verify"])
    ds.add_argument("names", nargs="*", help="dataset names (see `datasets list`)")
    ds.set_defaults(func=_cmd_datasets)

    ev = sub.add_parser("evaluate", help="evaluate the handcrafted baseline on a dataset")
    ev.add_argument("--dataset", default="coil100")
    ev.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")
    ev.set_defaults(func=_cmd_evaluate)

    rp = sub.add_parser("reproduce", help="run the survey's experiments; write figures/ and results/")
    rp.add_argument("--steps", nargs="*", help="only these steps (default: all)")
    rp.add_argument("--small", action="store_true", help="SMALL mode (subsets; same as RETRIEVALKIT_SMALL=1)")
    rp.add_argument("--from-cache", action="store_true",
                    help="compute nothing: redraw the figures from results/*.csv and rewrite figures/REPORT.md")
    rp.add_argument("--figures", default="figures")
    rp.add_argument("--results", default="results")
    rp.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .datasets.base import DatasetNotFoundError
    from .datasets.images import UnreadableImageError

    try:
        return args.func(args)
    except (DatasetNotFoundError, UnreadableImageError, ValueError) as err:
        print(f"retrievalkit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("retrievalkit: interrupted; completed files were kept, partial ones resume next time", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
