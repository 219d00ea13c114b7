"""Fully-connected layers on top of pooled descriptors, trained on the learning split.

Survey §2.5.3 and Figure 2.13(b): to study descriptor dimension, the survey varies the width of
fully-connected layers placed on top of pooled convolutional features (32-d … 8192-d). We do the
same on frozen backbone descriptors: one FC layer + ReLU (as AlexNet's and VGG's fc6/fc7 are
taken after their ReLU), trained with a cosine-softmax classification loss over the learning
split's objects. Model selection (the best epoch) uses a validation part of the learning split;
the test split is never seen. Taught in notebooks/04_whitening_and_dimension.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from . import config, evaluate
from .index import exact_search


class _FCHead(nn.Module):
    def __init__(self, d_in: int, dim: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(d_in, dim)
        self.proxies = nn.Parameter(torch.randn(n_classes, dim) * 0.01)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(torch.relu(self.fc(x)), dim=1)

    def logits(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        return self.embed(x) @ nn.functional.normalize(self.proxies, dim=1).T / temperature


def leave_one_out_map(x: np.ndarray, labels: np.ndarray) -> float:
    """mAP when every row queries all the others (itself excluded) — the validation score."""
    _, ids = exact_search(x, x)
    gnd = evaluate.label_ground_truth(labels)
    return evaluate.mean_ap(ids, gnd)


class LearnedProjection:
    """An FC+ReLU layer of width ``dim`` on pooled descriptors, with ``fit`` / ``transform``.

    ``fit(X, labels, X_val, labels_val)``: X and X_val both come from the LEARNING split (the
    caller carves the validation objects out of it). The epoch with the best validation mAP is
    kept; ``history_`` records loss and validation mAP per epoch.
    """

    def __init__(self, dim: int, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 256,
                 temperature: float = 0.05, weight_decay: float = 1e-4, seed: int = 0, device="auto",
                 progress: bool | None = None):
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.temperature = temperature
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, X, labels, X_val=None, labels_val=None) -> "LearnedProjection":
        from tqdm.auto import trange

        device = config.device(self.device)
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        classes, y = np.unique(np.asarray(labels), return_inverse=True)
        x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        y = torch.as_tensor(y, device=device)
        self.head_ = _FCHead(x.shape[1], self.dim, len(classes)).to(device)
        opt = torch.optim.AdamW(self.head_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.history_ = []
        best = (-np.inf, None)
        for epoch in trange(self.epochs, desc=f"FC {self.dim}-d", disable=not self.progress):
            self.head_.train()
            order = torch.randperm(len(x), generator=generator).to(device)
            total = 0.0
            for start in range(0, len(x), self.batch_size):
                batch = order[start : start + self.batch_size]
                loss = nn.functional.cross_entropy(self.head_.logits(x[batch], self.temperature), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            record = {"epoch": epoch + 1, "loss": total / len(x)}
            if X_val is not None:
                record["val_mAP"] = leave_one_out_map(self.transform(X_val), np.asarray(labels_val))
                if record["val_mAP"] > best[0]:
                    best = (record["val_mAP"], copy.deepcopy(self.head_.state_dict()))
            self.history_.append(record)
        if best[1] is not None:
            self.head_.load_state_dict(best[1])
            self.best_epoch_ = max(self.history_, key=lambda r: r["val_mAP"])["epoch"]
        else:
            self.best_epoch_ = self.epochs
        return self

    def transform(self, X) -> np.ndarray:
        if not hasattr(self, "head_"):
            raise RuntimeError("LearnedProjection is not fitted: call fit(X_learn, labels) first")
        self.head_.eval()
        device = next(self.head_.parameters()).device
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
            return self.head_.embed(x).cpu().numpy()
