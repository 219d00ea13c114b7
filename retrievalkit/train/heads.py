"""Heads trained on frozen features of the learning split: an FC projection and an attention head.

Survey §2.5.3 and Figure 2.13(b): to study descriptor dimension, the survey varies the width of
fully-connected layers placed on top of pooled convolutional features (32-d … 8192-d). We do the
same on frozen backbone descriptors: one FC layer + ReLU (as AlexNet's and VGG's fc6/fc7 are
taken after their ReLU), trained with a cosine-softmax classification loss over the learning
split's objects (taught in notebooks/04_whitening_and_dimension). Survey §2.3.2.3, Figure 2.8c:
the DELF-style attention head learns which positions of frozen maps to pool (taught in
notebooks/06_attention). Both train through :func:`retrievalkit.train.loop.fit`; model selection
(the best epoch) uses a validation part of the learning split; the test split is never seen.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import config
from ..evaluate import leave_one_out_map
from ..finetune.losses import CosineClassifierLoss
from ..nn.attention import DEFAULT_HIDDEN, AttentionHead, AttentionPooling, attention_descriptors
from ..rows import Estimator
from .loop import fit, minibatches, sgd_epoch


# The FC head normalises like torch's F.normalize (x / max(‖x‖, 1e-12)), as the committed
# dimension results were trained; its proxies start at ~0.05 norm, where the package's default
# eps of 1e-6 would change the training trajectory (by ~1e-5 in the loss).
PROXY_EPS = 1e-12


class _FCHead(nn.Module):
    def __init__(self, d_in: int, dim: int):
        super().__init__()
        self.d_in, self.dim = d_in, dim  # kept so a fitted projection can be rebuilt from the artifacts cache
        self.fc = nn.Linear(d_in, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(torch.relu(self.fc(x)), dim=1)


class _TrainedHead(Estimator):
    """``fit`` bookkeeping shared by the two heads below."""

    def _fit(self, modules, run_epoch, validate, start=None, desc="") -> None:
        result = fit(run_epoch, modules, epochs=self.epochs, validate=validate, start=start,
                     progress=self.progress, desc=desc)
        self.history_, self.best_epoch_ = result.history, result.best_epoch


class LearnedProjection(_TrainedHead):
    """An FC+ReLU layer of width ``dim`` on pooled descriptors, with ``fit`` / ``transform``.

    ``fit(X, labels, X_val, labels_val)``: X and X_val both come from the LEARNING split (the
    caller carves the validation objects out of it). The epoch with the best validation mAP is
    kept; ``history_`` records loss and validation mAP per epoch.
    """

    def __init__(self, dim: int, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 256,
                 temperature: float = 0.05, weight_decay: float = 1e-4, seed: int = 0, device="auto",
                 progress: bool | None = None):
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def fit(self, X, labels, X_val=None, labels_val=None) -> "LearnedProjection":
        device = config.device(self.device)
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        classes, y = np.unique(np.asarray(labels), return_inverse=True)
        x = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        y = torch.as_tensor(y, device=device)
        self.head_ = _FCHead(x.shape[1], self.dim).to(device)
        self.proxies_ = CosineClassifierLoss(self.dim, len(classes), self.temperature, normalize_input=False,
                                             init_std=0.01, eps=PROXY_EPS).to(device)
        opt = torch.optim.AdamW([*self.head_.parameters(), *self.proxies_.parameters()], lr=self.lr,
                                weight_decay=self.weight_decay)

        def run_epoch(epoch):
            self.head_.train()
            batches = (b.to(device) for b in minibatches(len(x), self.batch_size, generator))
            return sgd_epoch(lambda b: self.proxies_(self.head_(x[b]), y[b]), batches, opt)

        validate = None if X_val is None else (
            lambda: {"val_mAP": leave_one_out_map(self.transform(X_val), np.asarray(labels_val))})
        self._fit([self.head_, self.proxies_], run_epoch, validate, desc=f"FC {self.dim}-d")
        return self

    def transform(self, X) -> np.ndarray:
        self._check_fitted("head_", "call fit(X_learn, labels) first")
        self.head_.eval()
        device = next(self.head_.parameters()).device
        with torch.inference_mode():
            return self.head_(torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)).cpu().numpy()


class LearnedAttention(_TrainedHead):
    """An :class:`~retrievalkit.nn.attention.AttentionHead` trained on FROZEN backbone maps; ``fit`` / ``transform``.

    ``fit(maps, labels, maps_val=None, labels_val=None)``: ``maps`` (``N×C×H×W``, float16/32 array
    or memmap, e.g. the kept last-layer maps of the learning split) with one object id per row;
    the validation maps also come from the LEARNING split. Loss: the cosine classifier of
    :class:`~retrievalkit.finetune.losses.CosineClassifierLoss` (proxies started at the class
    means) on the L2-normalised attention-pooled descriptor: the head can only lower it by moving
    weight onto positions whose features identify the object. Validation classes need not appear
    in training: the score is leave-one-out mAP among validation rows.

    ``history_``: ``epoch`` 0 is the untrained head (loss on the learning split without updates);
    ``head_`` (eval mode) is that of the best validation epoch, possibly 0, or of the last epoch
    without validation data. ``transform(maps)`` gives the attention-pooled descriptors. Seeded.
    Survey §2.3.2.3, Figure 2.8c; taught in notebooks/06_attention.
    """

    def __init__(self, hidden: int = DEFAULT_HIDDEN, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
                 temperature: float = 0.05, weight_decay: float = 1e-4, seed: int = 0, device="auto",
                 progress: bool | None = None):
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def fit(self, X, labels, X_val=None, labels_val=None) -> "LearnedAttention":
        if X.ndim != 4:
            raise ValueError(f"maps must be N×C×H×W feature maps, got shape {tuple(X.shape)}")
        if len(labels) != len(X):
            raise ValueError(f"{len(labels)} labels for {len(X)} learning maps: give one label per map")
        if (X_val is None) != (labels_val is None) or (X_val is not None and len(X_val) != len(labels_val)):
            raise ValueError("maps_val and labels_val go together, one label per validation map (or both None)")
        dev, bs = config.device(self.device), self.batch_size
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        classes, y = np.unique(np.asarray(labels), return_inverse=True)
        y = torch.as_tensor(y, device=dev)
        self.head_ = head = AttentionHead(X.shape[1], self.hidden).to(dev)
        pool = AttentionPooling.from_head(head)
        ce = CosineClassifierLoss(X.shape[1], len(classes), self.temperature, normalize_input=False).to(dev)
        ce.init_from_means(torch.as_tensor(attention_descriptors(X, head, batch_size=bs), device=dev), y)
        opt = torch.optim.AdamW([*head.parameters(), *ce.parameters()], lr=self.lr, weight_decay=self.weight_decay)

        def maps(idx):
            return torch.as_tensor(np.asarray(X[idx], dtype=np.float32), device=dev)

        def start():  # the untrained head's loss, no update
            with torch.no_grad():
                return {"loss": sum(float(nn.functional.cross_entropy(ce.logits(pool(maps(slice(s, s + bs)))),
                                                                      y[s:s + bs], reduction="sum"))
                                    for s in range(0, len(X), bs)) / len(X)}

        def run_epoch(epoch):
            head.train()
            batches = minibatches(len(X), bs, generator, sort_within=True)  # a memmap is read in order
            return sgd_epoch(lambda idx: ce(pool(maps(idx)), y[torch.as_tensor(idx, device=dev)]), batches, opt)

        validate = None if X_val is None else (
            lambda: {"val_mAP": leave_one_out_map(attention_descriptors(X_val, head, batch_size=bs),
                                                  np.asarray(labels_val))})
        self._fit([head], run_epoch, validate, start, desc="attention head")
        head.eval()
        return self

    def transform(self, X) -> np.ndarray:
        self._check_fitted("head_", "call fit(maps_learn, labels) first")
        return attention_descriptors(X, self.head_, batch_size=self.batch_size)
