"""The one fit loop (retrievalkit.train.loop): best-epoch selection, restored weights, patience, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retrievalkit.train.loop import fit, minibatches, sgd_epoch


def scripted(scores, start_score=None):
    """A one-weight model whose weight is the epoch number and whose validation scores are scripted."""
    model = nn.Linear(1, 1, bias=False)

    def run_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(epoch)
        return {"loss": 1.0 / epoch}

    def validate():
        return {"val_mAP": start_score if model.weight.item() == 0 else scores[int(model.weight.item()) - 1]}

    return model, run_epoch, validate


def test_the_earliest_best_epoch_is_kept_and_its_weights_restored():
    model, run_epoch, validate = scripted([0.2, 0.5, 0.5, 0.4])
    result = fit(run_epoch, [model], epochs=4, validate=validate)
    assert result.best_epoch == 2 and result.best_score == 0.5  # epoch 3 ties: the earlier stays
    assert model.weight.item() == 2
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.history[1] == {"epoch": 2, "loss": 0.5, "val_mAP": 0.5}


def test_epoch_zero_can_win_and_last_ignores_the_scores():
    model, run_epoch, validate = scripted([0.2, 0.3], start_score=0.9)
    with torch.no_grad():
        model.weight.fill_(0)
    result = fit(run_epoch, [model], epochs=2, validate=validate, start=lambda: {"loss": 9.0})
    assert result.best_epoch == 0 and model.weight.item() == 0
    assert result.history[0] == {"epoch": 0, "loss": 9.0, "val_mAP": 0.9}
    result = fit(run_epoch, [model], epochs=2, validate=validate, select="last")
    assert result.best_epoch == 2 and model.weight.item() == 2


def test_without_validation_the_last_epoch_is_kept():
    model, run_epoch, _ = scripted([])
    result = fit(run_epoch, [model], epochs=3)
    assert (result.best_epoch, result.best_score, model.weight.item()) == (3, None, 3)


def test_patience_stops_and_resume_continues():
    model, run_epoch, validate = scripted([0.5, 0.4, 0.3, 0.2, 0.9])
    result = fit(run_epoch, [model], epochs=5, validate=validate, patience=2)
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and result.best_epoch == 1
    saved = {}
    fit(run_epoch, [model], epochs=2, validate=validate, on_epoch_end=lambda e, h, b: saved.update(history=h, best=b))
    result = fit(run_epoch, [model], epochs=5, validate=validate, resume=saved)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5] and result.best_epoch == 5
    with pytest.raises(ValueError, match="select"):
        fit(run_epoch, [model], epochs=1, select="best")


def test_minibatches_cover_every_row_once_and_sgd_epoch_weights_by_batch_size():
    g = torch.Generator().manual_seed(0)
    batches = list(minibatches(10, 4, g, sort_within=True))
    assert [len(b) for b in batches] == [4, 4, 2] and all((np.diff(b) > 0).all() for b in batches)
    assert sorted(np.concatenate(batches)) == list(range(10))
    w = nn.Parameter(torch.zeros(()))
    means = sgd_epoch(lambda b: (w * 0 + len(b), {"twice": w * 0 + 2 * len(b)}), batches, torch.optim.SGD([w], lr=0.1))
    assert means == pytest.approx({"loss": (16 + 16 + 4) / 10, "twice": (32 + 32 + 8) / 10})
