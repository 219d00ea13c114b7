"""One shape for every retrieval benchmark: database images, query images, per-query ground truth.

Survey §2.5.1 (datasets) and §2.5.2 (metrics); taught in notebooks/00_setup_and_data.

Indices in the ground truth always refer to rows of ``db_paths``. A query that is itself a
database image (COIL-100, Holidays, UKBench) is excluded from its own ranking by listing its
database index in ``junk`` — junk images are removed from the ranking before AP is computed,
which is exactly how the Oxford protocol ignores them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

PROTOCOLS = ("all", "easy", "medium", "hard")


def _as_index(values) -> np.ndarray:
    return np.unique(np.asarray(values if values is not None else [], dtype=np.int64))


@dataclass(frozen=True, eq=False)
class QueryGroundTruth:
    """Ground truth of one query.

    ``positives``: database rows that count as relevant in the dataset's main protocol.
    ``junk``: rows removed from the ranking before scoring (neither relevant nor irrelevant).
    ``easy`` / ``hard``: optional split of the positives (revisitop's Easy/Hard, or COIL-100's
    angular distance); when present, :meth:`protocol` derives the Easy/Medium/Hard views.
    ``bbox``: optional query region ``(x1, y1, x2, y2)`` in pixels of the query image, in the
    frame the dataset reads it in (see :attr:`RetrievalDataset.exif_transpose`).
    """

    positives: np.ndarray
    junk: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    easy: np.ndarray | None = None
    hard: np.ndarray | None = None
    bbox: tuple[float, float, float, float] | None = None

    @classmethod
    def make(cls, positives, junk=None, easy=None, hard=None, bbox=None) -> "QueryGroundTruth":
        return cls(
            positives=_as_index(positives),
            junk=_as_index(junk),
            easy=None if easy is None else _as_index(easy),
            hard=None if hard is None else _as_index(hard),
            bbox=None if bbox is None else tuple(float(v) for v in bbox),
        )

    def protocol(self, name: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """Return ``(positives, junk)`` for a protocol.

        ``all`` and ``medium`` use the main positives. ``easy`` keeps only the easy positives and
        moves every other positive into junk; ``hard`` does the same with the hard ones. With
        revisitop's lists (positives = easy ∪ hard) this is exactly its rule: Easy ignores the hard
        images, Hard ignores the easy ones, Medium counts both (Radenović et al. 2018).
        """
        if name in ("all", "medium"):
            return self.positives, self.junk
        if name not in ("easy", "hard"):
            raise ValueError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")
        subset = self.easy if name == "easy" else self.hard
        if subset is None:
            raise ValueError(f"this dataset defines no {name!r} positives; use protocol 'all'")
        ignored = np.setdiff1d(self.positives, subset)
        return subset, np.union1d(self.junk, ignored)


@dataclass
class RetrievalDataset:
    """A retrieval benchmark.

    ``db_paths`` / ``query_paths``: image files (absolute paths). For in-memory datasets
    (Fashion-MNIST) ``db_arrays`` / ``query_arrays`` hold the pixels instead and the paths are
    synthetic names. ``meta`` holds per-dataset extras (COIL-100's ``poses``). ``gnd[i]`` is the
    ground truth of query ``i``. ``db_labels`` / ``query_labels``
    hold the group or class of each image where the dataset has one (used by category-level
    metrics and by learning on a learning split). ``query_db_index[i]`` is the database row of
    query ``i`` or -1 when the query is not in the database.

    ``exif_transpose``: whether images are turned upright by their EXIF orientation tag before
    query boxes apply. Each loader states its rule: False where the ground truth was drawn on the
    stored pixels (ROxford/RParis, Oxford5k/Paris6k, as revisitop reads them), True elsewhere
    (Holidays needs it; COIL-100, UKBench and user folders are read upright). ``revisited``: the
    dataset is scored by revisitop's rules (its mP@k), set by the revisited loader.
    """

    name: str
    root: Path
    db_paths: list[Path]
    query_paths: list[Path]
    gnd: list[QueryGroundTruth]
    db_labels: np.ndarray | None = None
    query_labels: np.ndarray | None = None
    query_db_index: np.ndarray | None = None
    protocols: tuple[str, ...] = ("all",)
    split: str = "test"
    description: str = ""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    db_arrays: np.ndarray | None = None
    query_arrays: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    exif_transpose: bool = True
    revisited: bool = False

    def __post_init__(self) -> None:
        if len(self.gnd) != len(self.query_paths):
            raise ValueError(
                f"{self.name}: {len(self.query_paths)} queries but {len(self.gnd)} ground-truth entries"
            )

    @classmethod
    def queries_from_database(cls, name: str, root, db_paths, labels, query_rows, gnd, **kwargs) -> "RetrievalDataset":
        """A dataset whose queries are database rows (COIL-100, Holidays, UKBench, folders).

        ``query_rows`` index ``db_paths``; ``labels`` (group or class per image) also give the
        queries' labels. Other fields (protocols, description, skipped, meta …) pass through.
        """
        query_rows = np.asarray(query_rows, dtype=np.int64)
        labels = np.asarray(labels)
        return cls(
            name=name,
            root=Path(root),
            db_paths=list(db_paths),
            query_paths=[db_paths[q] for q in query_rows],
            gnd=list(gnd),
            db_labels=labels,
            query_labels=labels[query_rows],
            query_db_index=query_rows,
            **kwargs,
        )

    @classmethod
    def grouped(cls, name: str, root, db_paths, labels, query_rows, *, query_is_positive: bool = False,
                **kwargs) -> "RetrievalDataset":
        """Queries are database rows, and a query's positives are the rows with its label (Holidays,
        UKBench, SOP, folders). The query itself is junk, so it is left out of its own ranking, unless
        ``query_is_positive`` (UKBench's N-S score counts it among the top 4). Other fields pass through.
        """
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        values, starts = np.unique(labels[order], return_index=True)
        members = dict(zip(values.tolist(), np.split(order, starts[1:])))
        gnd = []
        for q in np.asarray(query_rows, dtype=np.int64).tolist():
            same = members[labels[q].item()]
            gnd.append(QueryGroundTruth.make(same) if query_is_positive else QueryGroundTruth.make(same[same != q], [q]))
        return cls.queries_from_database(name, root, db_paths, labels, query_rows, gnd, **kwargs)

    @property
    def n_db(self) -> int:
        return len(self.db_paths)

    @property
    def n_queries(self) -> int:
        return len(self.query_paths)

    @property
    def query_bboxes(self) -> list[tuple[float, float, float, float] | None]:
        return [g.bbox for g in self.gnd]

    @property
    def query_rows_in_db(self) -> np.ndarray | None:
        """Each query's database row when every query is an uncropped database image (its descriptor can be
        reused), else None (queries are separate photos or crops and need their own extraction)."""
        index = None if self.query_db_index is None else np.asarray(self.query_db_index)
        if index is not None and (index >= 0).all() and all(b is None for b in self.query_bboxes):
            return index
        return None

    @property
    def default_protocol(self) -> str:
        """``all`` where the dataset has it, else revisitop's ``medium``."""
        return "all" if "all" in self.protocols else ("medium" if "medium" in self.protocols else self.protocols[0])

    def ground_truth(self, protocol: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(positives, junk)`` of every query under ``protocol`` (see :meth:`QueryGroundTruth.protocol`)."""
        protocol = protocol or self.default_protocol
        if protocol not in self.protocols:
            raise ValueError(
                f"{self.name} has no protocol {protocol!r}; it has {', '.join(self.protocols)}"
            )
        return [g.protocol(protocol) for g in self.gnd]

    def subset_queries(self, query_ids: Sequence[int]) -> "RetrievalDataset":
        """The same database with only some queries (SMALL mode, quick looks)."""
        query_ids = list(query_ids)
        pick = lambda seq: None if seq is None else np.asarray(seq)[query_ids]  # noqa: E731
        return replace(
            self,
            query_paths=[self.query_paths[i] for i in query_ids],
            gnd=[self.gnd[i] for i in query_ids],
            query_labels=pick(self.query_labels),
            query_db_index=pick(self.query_db_index),
            query_arrays=pick(self.query_arrays),
        )

    def summary(self) -> dict:
        n_pos = [len(g.positives) for g in self.gnd]
        return {
            "dataset": self.name,
            "split": self.split,
            "db_images": self.n_db,
            "queries": self.n_queries,
            "positives_per_query": float(np.mean(n_pos)) if n_pos else 0.0,
            "protocols": ",".join(self.protocols),
            "skipped": len(self.skipped),
        }

    def __repr__(self) -> str:
        s = self.summary()
        return (
            f"RetrievalDataset({s['dataset']!r}, split={s['split']!r}, db={s['db_images']}, "
            f"queries={s['queries']}, protocols={s['protocols']})"
        )


def drop_database_rows(
    gnd: Sequence[QueryGroundTruth], keep: np.ndarray
) -> list[QueryGroundTruth]:
    """Ground truth re-indexed for a database that keeps only the rows where ``keep`` is True.

    Dropped rows disappear from positives, junk, easy and hard; the other indices shift down.
    """
    keep = np.asarray(keep, dtype=bool)
    new_row = np.cumsum(keep) - 1
    new_row[~keep] = -1

    def remap(rows):
        if rows is None:
            return None
        mapped = new_row[np.asarray(rows, dtype=np.int64)]
        return mapped[mapped >= 0]

    return [
        QueryGroundTruth.make(remap(g.positives), remap(g.junk), remap(g.easy), remap(g.hard), g.bbox)
        for g in gnd
    ]


def resolve_root(name: str, root, data_home=None, *, download: bool = True, progress=None, **kwargs) -> Path:
    """``root`` as a path; when it is None, the dataset's folder under the data home, fetched first
    (mirror, then the official URL) if it is missing and ``download`` (see ``download.ensure``)."""
    if root is None:
        from .download import ensure

        root = ensure(name, data_home, download=download, progress=progress, **kwargs)
    return Path(root)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message names the path and the command that fetches them."""

    def __init__(self, name: str, path: Path, hint: str | None = None):
        hint = hint or (
            f"run `retrievalkit datasets fetch {name}`, or set RETRIEVALKIT_MIRROR to a folder holding its files"
        )
        super().__init__(f"{name} not found under {path}: {hint}")
        self.name = name
        self.path = path
        self.hint = hint

    def __reduce__(self):  # picklable, so it survives DataLoader worker processes
        return (type(self), (self.name, self.path, self.hint))
