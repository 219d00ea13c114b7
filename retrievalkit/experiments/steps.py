"""A reproduce step, declared once: what it computes, the CSVs it writes, the figures drawn from them, its report section.

``retrievalkit reproduce`` calls a :class:`Step` (compute → CSVs → figures → section) and
``--from-cache`` reads the same CSVs back and draws the same :class:`Figure` list, so a figure in
``figures/`` is the same picture whichever of the two wrote it. Survey §2.5.3; taught in
notebooks/12_reproduce_survey_figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..config import atomic_path


@dataclass
class Run:
    """Where a reproduction writes, and what its steps share (the COIL-100 splits, results later steps reuse)."""

    figures: Path
    results: Path
    small: bool
    progress: bool
    data_home: Path | None = None
    full: bool = False  # paper-size settings (``reproduce --full``); neither flag: the default, laptop-sized run
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
        tables = self.compute(run)
        if set(tables) != set(self.outputs):
            raise RuntimeError(f"step {self.name} computed {list(tables)} but declares {list(self.outputs)}")
        for name, df in list(tables.items()):
            if df.attrs.get("per_query"):
                tables[f"{name}_per_query"] = pd.DataFrame(df.attrs["per_query"])
        for name, df in tables.items():
            run.save_csv(df, name)
        for fig in self.figures:
            run.save_figure(fig.from_tables(tables), fig.name)
        for name, fig in (self.live_figures(run, tables) if self.live_figures else {}).items():
            run.save_figure(fig, name)
        return self.section(run, tables)


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
