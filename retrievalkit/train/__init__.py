"""What trains: the one fit loop (:mod:`~retrievalkit.train.loop`) shared by every trained head and by
fine-tuning, and the heads trained on frozen features (:mod:`~retrievalkit.train.heads`). Loaded on first use."""
import importlib


def __getattr__(name: str):
    if name in ("heads", "loop"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
