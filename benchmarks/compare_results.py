"""Compare two result folders (``results/*.csv``) cell by cell.

Used to check that a refactoring leaves the reproduction's numbers alone:
``python benchmarks/compare_results.py OLD_DIR NEW_DIR [--atol 1e-6]``. Timing columns differ from
run to run on any machine and are skipped; every other number must agree to ``atol`` and every
other cell exactly. Prints one line per difference and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TIMING = re.compile(r"(_s$|ms_per_|_ms$|^s_per_|queries_per_s|^seconds$|images_per_s|^time)")


def compare_frames(old: pd.DataFrame, new: pd.DataFrame, atol: float) -> list[str]:
    if list(old.columns) != list(new.columns):
        return [f"columns differ: {list(old.columns)} vs {list(new.columns)}"]
    if len(old) != len(new):
        return [f"rows differ: {len(old)} vs {len(new)}"]
    problems = []
    for col in old.columns:
        if TIMING.search(col):
            continue
        a, b = old[col], new[col]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            bad = ~(np.isclose(x, y, rtol=0, atol=atol) | (np.isnan(x) & np.isnan(y)))
            if bad.any():
                worst = np.nanmax(np.abs(x - y)[bad]) if np.isfinite(x[bad] - y[bad]).any() else np.nan
                problems.append(f"{col}: {int(bad.sum())} rows differ, largest by {worst:.3g} "
                                f"(first at row {int(np.flatnonzero(bad)[0])})")
        elif not (a.astype(str) == b.astype(str)).all():
            row = int(np.flatnonzero((a.astype(str) != b.astype(str)).to_numpy())[0])
            problems.append(f"{col}: text differs (first at row {row}: {a.iloc[row]!r} vs {b.iloc[row]!r})")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    names = sorted({p.name for p in args.old.glob("*.csv")} | {p.name for p in args.new.glob("*.csv")})
    failed = False
    for name in names:
        old, new = args.old / name, args.new / name
        if not (old.is_file() and new.is_file()):
            print(f"{name}: only in {'old' if old.is_file() else 'new'}")
            failed = True
            continue
        for problem in compare_frames(pd.read_csv(old), pd.read_csv(new), args.atol):
            print(f"{name}: {problem}")
            failed = True
    print("differences found" if failed else f"{len(names)} CSVs agree (atol {args.atol:g}; timing columns skipped)")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
