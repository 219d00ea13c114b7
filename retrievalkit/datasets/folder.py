"""Any folder of images grouped by sub-folder or by a CSV, as a retrieval benchmark.

Survey §2.5.1 (datasets); taught in notebooks/00_setup_and_data. A course lab or a researcher
points :func:`load` at their own photos: every image that has at least one other image in its
group is a query, its positives are the rest of its group, and it is excluded from its own
ranking (junk), like Holidays.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from .base import DatasetNotFoundError, RetrievalDataset
from .images import find_unreadable, list_images

log = logging.getLogger(__name__)

def _groups_from_subfolders(root: Path) -> tuple[list[Path], list[str], list[tuple[Path, str]]]:
    paths, groups = [], []
    images, skipped = list_images(root)
    for path in images:
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            skipped.append((path, "not inside a group sub-folder (put it in one, or use groups_csv)"))
            continue
        paths.append(path)
        groups.append(parts[0])
    return paths, groups, skipped


def _resolve_csv(root: Path, groups_csv) -> Path:
    csv_path = Path(groups_csv).expanduser()
    if not csv_path.is_file() and not csv_path.is_absolute() and (root / csv_path).is_file():
        csv_path = root / csv_path
    if not csv_path.is_file():
        raise FileNotFoundError(f"groups CSV not found: {groups_csv}")
    return csv_path


def _groups_from_csv(root: Path, groups_csv) -> tuple[list[Path], list[str]]:
    """Rows ``path,group``; an optional header ``path,group``; paths relative to ``root`` or absolute."""
    csv_path = _resolve_csv(root, groups_csv)
    paths, groups = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            row = [cell.strip() for cell in row]
            if not row or not any(row):
                continue
            if line_no == 1 and [c.lower() for c in row[:2]] == ["path", "group"]:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise ValueError(f"{csv_path}, line {line_no}: expected 'path,group', got {row}")
            path = Path(row[0]).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_file():
                raise FileNotFoundError(
                    f"{csv_path}, line {line_no}: image {path} does not exist (fix the path or remove the row)"
                )
            paths.append(path)
            groups.append(row[1])
    return paths, groups


def load(
    root,
    *,
    groups_csv=None,
    check_images: bool = True,
    progress: bool | None = None,
    name: str = "folder",
) -> RetrievalDataset:
    """Load a folder of images as a retrieval benchmark (Survey §2.5.1; notebooks/00_setup_and_data).

    Groups come from the first-level sub-folder of each image (``root/<group>/.../img.jpg``), or
    from ``groups_csv``, a CSV of ``path,group`` rows (paths relative to ``root`` or absolute).
    Database = every readable image. Queries = every image whose group holds at least one other
    image; positives = the rest of its group; junk = the query itself. Images alone in their group
    stay in the database as distractors; with no group of two or more images there are no queries
    and :func:`retrievalkit.evaluate.evaluate` says so. Files are read in every format Pillow
    decodes (.jpg, .jfif, .png, .pbm, .pnm, .tiff, .webp …; 16-bit scaled to 8); EXIF orientation
    is applied (``exif_transpose=True``). ``db_labels`` numbers the groups in sorted name order;
    ``dataset.meta["group_names"][label]`` gives a label's name.

    ``check_images`` (default on: user folders hold anything) decodes every file first — a few
    ms per image — and lists the unreadable ones in ``dataset.skipped`` instead of failing later
    in the middle of an extraction. Without ``groups_csv`` every file under ``root`` is either
    read or listed in ``skipped`` with the reason (not an image, outside any group sub-folder,
    unreadable).
    """
    root = Path(root).expanduser().resolve()
    hint = "give a folder of images grouped in sub-folders (root/<group>/<image>), or a groups_csv"
    if not root.is_dir():
        raise DatasetNotFoundError(name, root, hint=f"no such folder; {hint}")
    skipped: list[tuple[Path, str]] = []
    if groups_csv is not None:
        paths, groups = _groups_from_csv(root, groups_csv)
    else:
        paths, groups, skipped = _groups_from_subfolders(root)
    if not paths:
        raise DatasetNotFoundError(name, root, hint=f"no grouped images found; {hint}")

    if check_images:
        readable, unreadable = find_unreadable(paths, progress=progress)
        readable = set(readable)
        groups = [g for p, g in zip(paths, groups) if p in readable]
        paths = [p for p in paths if p in readable]
        skipped += unreadable
    return _grouped_dataset(name, root, paths, groups, skipped)


def _grouped_dataset(name, root, paths, groups, skipped) -> RetrievalDataset:
    group_names = sorted(set(groups))
    label_of = {group: label for label, group in enumerate(group_names)}
    labels = np.asarray([label_of[g] for g in groups], dtype=np.int64)
    query_rows = np.flatnonzero(np.bincount(labels, minlength=len(group_names))[labels] > 1)
    description = (
        f"{len(paths)} images in {len(group_names)} groups under {root}; every image with a "
        "group-mate is a query, excluded from its own ranking"
    )
    if not len(query_rows):
        description += (
            "; no group holds two readable images, so there are no queries: put at least two "
            "images of the same object or scene in each group (sub-folder or CSV group)"
        )
        log.warning("%s: %s", name, description)
    return RetrievalDataset.grouped(
        name, root, list(paths), labels, query_rows,
        description=description,
        skipped=list(skipped),
        meta={"group_names": group_names},
    )
