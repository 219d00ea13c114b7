"""The one training loop of the package: seeded epochs → validation → best epoch restored → history.

The FC projection (Survey §2.5.3), the attention head (§2.3.2.3), the deep hash head (§2.3.2.4)
and fine-tuning (§2.4) all train the same way; only what one epoch does differs. :func:`fit`
owns the rest: the epoch records, model selection on a validation part of the LEARNING split
(never the test split), early stopping and restoring the chosen weights. Taught in
notebooks/04, 06, 07 and 09, wherever a head is trained.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["FitResult", "fit", "minibatches", "sgd_epoch"]


@dataclass
class FitResult:
    """``history``: one record per epoch; ``best_epoch``: the epoch whose weights were restored;
    ``best_score``: its validation score (None without validation)."""

    history: list[dict]
    best_epoch: int
    best_score: float | None


def fit(run_epoch: Callable[[int], dict], modules: Sequence[nn.Module], *, epochs: int,
        validate: Callable[[], dict] | None = None, start: Callable[[], dict] | None = None,
        select: str = "val", patience: int | None = None, resume: dict | None = None,
        on_epoch_end: Callable[[int, list, dict], None] | None = None,
        progress: bool | None = None, desc: str = "") -> FitResult:
    """Train epochs ``1 … epochs``, keep the best one, restore its weights into ``modules``.

    ``run_epoch(epoch)`` trains one epoch and returns its record entries (e.g. ``{"loss": …}``).
    ``validate()`` returns entries added to every record; its ``"val_mAP"`` is the selection score.
    ``start()``, if given, records an epoch 0 (the untrained model), which can be selected too.
    ``select="val"``: the best score wins, strictly (the earliest of equal epochs stays), and
    ``patience`` epochs without a gain stop training; ``"last"`` (or no score) keeps the last
    epoch. ``resume`` (``{"history", "best"}`` from :func:`on_epoch_end`'s arguments) continues a
    run; ``on_epoch_end(epoch, history, best)`` is called after every epoch (e.g. to checkpoint).
    """
    from tqdm.auto import tqdm

    if select not in ("val", "last"):
        raise ValueError(f"select must be 'val' (best validation epoch) or 'last', got {select!r}")

    def record(epoch: int, entries: dict) -> dict:
        rec = {"epoch": epoch, **entries}
        if validate is not None:
            rec.update(validate())
        return rec

    def keep(epoch: int, score) -> dict:
        return {"epoch": epoch, "score": score, "states": [copy.deepcopy(m.state_dict()) for m in modules]}

    if resume is not None:
        history, best = resume["history"], resume["best"]
    elif start is not None:
        history = [record(0, start())]
        best = keep(0, history[0].get("val_mAP"))
    else:
        history, best = [], {"epoch": epochs, "score": None, "states": None}
    first = history[-1]["epoch"] + 1 if history else 1
    bar = tqdm(range(first, epochs + 1), desc=desc, disable=not progress)
    for epoch in bar:
        if select == "val" and patience is not None and epoch - best["epoch"] > patience:
            break
        rec = record(epoch, run_epoch(epoch))
        history.append(rec)
        score = rec.get("val_mAP")
        if select == "last" or score is None or best["score"] is None or score > best["score"]:
            best = keep(epoch, score)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, best)
        bar.set_postfix(loss=f"{rec.get('loss', np.nan):.4f}", val=f"{np.nan if score is None else score:.3f}")
    if best["states"] is not None:
        for module, state in zip(modules, best["states"]):
            module.load_state_dict(state)
    return FitResult(history, best["epoch"], best["score"])


def minibatches(n: int, batch_size: int, generator: torch.Generator, *, sort_within: bool = False) -> Iterator:
    """One shuffled pass over ``n`` rows in batches: slices of ``torch.randperm(n, generator)``.

    ``sort_within=True`` sorts each batch's rows (NumPy), so a memmap is read in order; the order
    of the batches stays random.
    """
    order = torch.randperm(n, generator=generator)
    for s in range(0, n, batch_size):
        yield np.sort(order[s:s + batch_size].numpy()) if sort_within else order[s:s + batch_size]


def sgd_epoch(loss_of: Callable, batches, optimizer: torch.optim.Optimizer) -> dict:
    """One optimiser step per batch; returns the batch-size-weighted mean of the loss (``"loss"``).

    ``loss_of(batch)`` returns the loss, or ``(loss, terms)`` with a dict of further tensors whose
    means are reported too.
    """
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        out = loss_of(batch)
        loss, terms = out if isinstance(out, tuple) else (out, {})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for name, value in {"loss": loss, **terms}.items():
            sums[name] = sums.get(name, 0.0) + value.item() * len(batch)
        count += len(batch)
    return {name: total / max(count, 1) for name, total in sums.items()}
