"""Run-time settings read from the environment: data home, cache, mirror, SMALL mode, device, deterministic kernels.

Every setting is read when asked for (not at import time), so tests and notebooks can change
the environment and see the change. Taught in notebooks/00_setup_and_data.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

ENV_DATA = "RETRIEVALKIT_DATA"
ENV_MIRROR = "RETRIEVALKIT_MIRROR"
ENV_SMALL = "RETRIEVALKIT_SMALL"
ENV_FULL = "RETRIEVALKIT_FULL"
MODES = ("SMALL", "default", "full")
ENV_CACHE = "RETRIEVALKIT_CACHE"


def data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Folder holding downloaded datasets (scikit-learn's ``data_home`` convention).

    Order: the argument, ``$RETRIEVALKIT_DATA``, the ``data/`` folder of the checkout when the
    package runs from one (so notebooks started in ``notebooks/`` share the repository's data),
    then ``./data``.
    """
    if data_home is None:
        data_home = os.environ.get(ENV_DATA) or _checkout_data() or "data"
    return Path(data_home).expanduser().resolve()


def _checkout_data() -> Path | None:
    candidate = Path(__file__).resolve().parents[1] / "data"
    return candidate if (candidate / "README.md").is_file() else None


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Folder for feature caches: ``$RETRIEVALKIT_CACHE`` or ``<data home>/cache``."""
    if cache is None:
        cache = os.environ.get(ENV_CACHE) or data_home() / "cache"
    return Path(cache).expanduser().resolve()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Write a file under its final name in one step: the block writes the yielded temporary path
    beside ``path``; it is renamed to ``path`` when the block ends, and removed if the block fails,
    so a reader never sees a half-written file (the package's rule for caches and results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mirror() -> str | None:
    """A folder path or base URL holding the official file names (``$RETRIEVALKIT_MIRROR``), or None."""
    value = os.environ.get(ENV_MIRROR, "").strip()
    return value or None


def truthy(value: str | None) -> bool:
    """An environment flag such as RETRIEVALKIT_SMALL or TQDM_DISABLE: 1, true, yes or on."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_small() -> bool:
    """SMALL mode (``RETRIEVALKIT_SMALL=1``): notebooks and experiments use subsets so they finish in seconds."""
    return truthy(os.environ.get(ENV_SMALL))


def is_full() -> bool:
    """Paper-size settings (``RETRIEVALKIT_FULL=1`` or ``reproduce --full``): every view, every grid point, for
    those with time or a GPU. Neither flag: the default run, sized for a 2-core laptop within 30 minutes."""
    return truthy(os.environ.get(ENV_FULL)) and not is_small()


def mode(small: bool | None = None, full: bool | None = None) -> str:
    """``"SMALL"``, ``"default"`` or ``"full"``: explicit flags win over the environment; SMALL wins over full."""
    small = is_small() if small is None else small
    full = is_full() if full is None else full
    return "SMALL" if small else "full" if full else "default"


def __getattr__(name: str):
    # ``rk.config.SMALL`` reads the environment each time it is asked, like the functions above.
    if name == "SMALL":
        return is_small()
    raise AttributeError(f"module 'retrievalkit.config' has no attribute {name!r}")


def device(device: str | None = "auto"):
    """Resolve ``"auto"`` to CUDA when present, else CPU. Never hard-code ``.cuda()``."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """Within the block, torch runs only deterministic kernels, so a seeded training gives the same weights on rerun.

    Sets ``torch.use_deterministic_algorithms`` (and, for CUDA, cuDNN's deterministic mode and the
    cuBLAS workspace setting it needs) and restores the previous settings on exit. Seeds stay the
    caller's business (pass them: trainers seed their own generators). ``enabled=False`` is a no-op.
    """
    import torch

    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
