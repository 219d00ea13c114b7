"""The handcrafted baseline on the default protocol (colour histogram on COIL-100).

Survey §2.1 question 1; taught in notebooks/00_setup_and_data.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .. import baselines, evaluate, index
from ..datasets import RetrievalDataset

METHOD = "color_histogram_hsv"


def describe_dataset(dataset: RetrievalDataset, *, progress=None, workers: int = 2):
    """Descriptors of the database and the queries.

    Queries reuse their database rows only when every query is a database image and none has a
    box; cropped queries (Oxford5k/Paris6k: database images cropped to their box) are described
    from their crop, like the revisitop protocol's queries.
    """
    read = dict(exif_transpose=dataset.exif_transpose, workers=workers, progress=progress)
    db, skipped = baselines.describe_images(dataset.db_paths, **read)
    in_db = dataset.query_db_index is not None and np.all(np.asarray(dataset.query_db_index) >= 0)
    if in_db and all(box is None for box in dataset.query_bboxes):
        queries = db[np.asarray(dataset.query_db_index)]
    else:
        queries, q_skipped = baselines.describe_images(dataset.query_paths, bboxes=dataset.query_bboxes, **read)
        skipped += q_skipped
    return db, queries, skipped


def run(dataset: RetrievalDataset, *, progress=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Describe, search, evaluate. Returns the tidy results and the ranking (for panels)."""
    start = time.perf_counter()
    db, queries, skipped = describe_dataset(dataset, progress=progress)
    describe_s = time.perf_counter() - start
    start = time.perf_counter()
    _, ids = index.exact_search(queries, db)
    search_ms = 1000 * (time.perf_counter() - start) / max(len(queries), 1)
    rows = evaluate.evaluate(ids, dataset)
    for row in rows:
        row.update(
            method=METHOD,
            dim=db.shape[1],
            db_images=dataset.n_db,
            skipped_images=len(skipped),
            describe_ms_per_image=1000 * describe_s / max(dataset.n_db, 1),
            search_ms_per_query=search_ms,
        )
    return pd.DataFrame(rows), ids
