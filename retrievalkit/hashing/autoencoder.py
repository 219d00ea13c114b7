"""Unsupervised hashing with an autoencoder: codes learned without labels, from reconstruction alone.

Survey §2.4.2.2 "AutoEncoder-based frameworks": an encoder maps a descriptor to a short latent code,
a decoder maps the code back, and the pair is trained to make the round trip lossless. Here the latent
code is the hash code. The idea goes back to *semantic hashing* (Salakhutdinov & Hinton 2009,
doi:10.1016/j.ijar.2008.11.006): a deep autoencoder whose middle layer is pushed towards binary
values, so that documents with similar content land on nearby addresses. Taught in notebooks/07_hashing.

For a batch of standardised rows ``x`` (B×D), relaxed codes ``h = tanh(enc(x)) ∈ (−1, 1)^{B×K}`` and
reconstructions ``x̂ = dec(h)`` the objective is (:func:`autoencoder_loss`)

    L = mean_{i,d} (x_id − x̂_id)²  +  λ · mean_{i,k} (|h_ik| − 1)²

the mean squared reconstruction error plus the quantisation penalty of :mod:`.deep` (λ =
``quantization``), which pulls the bottleneck to ±1 so that ``sign`` at test time loses little.
No label enters: the code only has to keep what is needed to rebuild the descriptor, which is where
its variance lies — not necessarily what makes two images the same object.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import config
from ..rows import Estimator, as_rows
from ..train.loop import fit, minibatches, sgd_epoch
from .deep import INFERENCE_BATCH, SignCodes, quantization_penalty

DEFAULT_HIDDEN = 256


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``mean_{i,d} (x_id − x̂_id)²``: the mean squared error of the reconstruction."""
    return ((x - x_hat) ** 2).mean()


def autoencoder_loss(x: torch.Tensor, h: torch.Tensor, x_hat: torch.Tensor, quantization: float = 0.1) -> torch.Tensor:
    """The training objective: ``reconstruction_loss(x, x̂) + quantization · mean (|h| − 1)²`` (module docstring)."""
    return reconstruction_loss(x, x_hat) + quantization * quantization_penalty(h)


class HashAutoencoder(nn.Module):
    """``x ↦ h = tanh(enc((x − shift)/scale)) ↦ x̂ = dec(h)``; each side a one-hidden-layer MLP (or linear).

    ``shift``/``scale`` are buffers (standardisation, as in :class:`.deep.HashHead`); :meth:`standardize`
    gives the rows the decoder must rebuild.
    """

    def __init__(self, in_dim: int, n_bits: int, hidden: int | None = DEFAULT_HIDDEN):
        super().__init__()
        self.in_dim, self.n_bits, self.hidden = in_dim, n_bits, hidden
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(()))

        def mlp(a, b):
            return nn.Linear(a, b) if hidden is None else nn.Sequential(nn.Linear(a, hidden), nn.ReLU(), nn.Linear(hidden, b))

        self.encoder, self.decoder = mlp(in_dim, n_bits), mlp(n_bits, in_dim)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The relaxed codes ``h`` (tanh of the bottleneck)."""
        return torch.tanh(self.encoder(self.standardize(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, x̂)``: relaxed codes and the reconstruction of the standardised input."""
        h = self.encode(x)
        return h, self.decoder(h)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_bits={self.n_bits}, hidden={self.hidden}"


class AutoencoderHash(SignCodes, Estimator):
    """Unsupervised hash codes: the sign of an autoencoder's tanh bottleneck; ``fit(X)`` takes no labels.

    Trained with Adam through the package's one loop (:func:`retrievalkit.train.loop.fit`, ``select="last"``:
    without labels there is nothing to select an epoch on) on :func:`autoencoder_loss`. The input is
    centred and scaled with learning-row statistics (one global scale, mean squared entry 1) and the
    decoder rebuilds those standardised rows. ``hidden=None`` makes both sides linear, so each bit is
    the sign of a learned projection (without the tanh and the quantisation term, the best linear
    autoencoder spans the top principal subspace, PCA-sign's).
    ``history_`` has one record per epoch: ``train_loss``, ``reconstruction``, ``quantization``.
    Seeded (weights, shuffling) without touching the global RNG; deterministic kernels.

    ``transform(X)``: ±1 int8 codes (0 ↦ +1), ``as_bits=True`` 0/1; ``relaxed(X)`` the tanh outputs;
    ``encode(X)`` packed codes for :func:`retrievalkit.hashing.hamming_search`. Fit on the LEARNING split only.
    """

    def __init__(self, n_bits: int = 64, *, hidden: int | None = DEFAULT_HIDDEN, quantization: float = 0.1,
                 epochs: int = 30, lr: float = 1e-3, batch_size: int = 128, seed: int = 0, device="auto",
                 progress: bool | None = None):
        self.n_bits, self.hidden, self.quantization = int(n_bits), hidden, quantization
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.seed, self.device, self.progress = seed, device, progress

    @config.deterministic()
    def fit(self, X) -> "AutoencoderHash":
        x_np = as_rows(X, "X", finite=True)
        device = config.device(self.device)
        self.n_features_in_ = x_np.shape[1]
        cuda_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_ids):
            torch.manual_seed(self.seed)
            self.net_ = HashAutoencoder(x_np.shape[1], self.n_bits, self.hidden).to(device)
            mean = x_np.mean(axis=0)
            self.net_.shift.copy_(torch.as_tensor(mean))
            self.net_.scale.fill_(float(np.sqrt(((x_np - mean) ** 2).mean())) or 1.0)
            generator = torch.Generator().manual_seed(self.seed)
            x = torch.as_tensor(x_np, device=device)
            opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)

            def loss_of(batch):
                rows = x[batch]
                h, x_hat = self.net_(rows)
                terms = {"reconstruction": reconstruction_loss(self.net_.standardize(rows), x_hat),
                         "quantization": quantization_penalty(h)}
                return terms["reconstruction"] + self.quantization * terms["quantization"], terms

            def run_epoch(epoch):
                self.net_.train()
                batches = (b.to(device) for b in minibatches(len(x), self.batch_size, generator))
                means = sgd_epoch(loss_of, batches, opt)
                return {"train_loss": means.pop("loss"), **means}

            result = fit(run_epoch, [self.net_], epochs=self.epochs, select="last", progress=self.progress,
                         desc=f"autoencoder hash {self.n_bits} bits")
        self.history_ = result.history
        return self

    def relaxed(self, X) -> np.ndarray:
        """The tanh bottleneck (``N×n_bits`` float32 in ``(−1, 1)``)."""
        x_np = as_rows(self._check(X), "X")
        self.net_.eval()
        device = next(self.net_.parameters()).device
        out = np.empty((len(x_np), self.n_bits), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x_np), INFERENCE_BATCH):
                chunk = torch.as_tensor(x_np[start : start + INFERENCE_BATCH], device=device)
                out[start : start + len(chunk)] = self.net_.encode(chunk).cpu().numpy()
        return out



__all__ = ["AutoencoderHash", "HashAutoencoder", "autoencoder_loss", "reconstruction_loss"]
