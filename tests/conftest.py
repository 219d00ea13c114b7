"""Shared fixtures and helpers: the read-only ../shared folder, a COIL-100 data home extracted once per
session, tiny JPEG files for the loader tests."""
from __future__ import annotations

import io
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRIEVALKIT_SHARED", REPO.parent / "shared"))
MIRROR = SHARED / "mirror"
SAMPLES = SHARED / "samples"


def jpeg_bytes(size=(8, 8), seed=0) -> bytes:
    """A random-noise RGB JPEG of ``size`` = (width, height) pixels, as file bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def truncated_jpeg_bytes(seed=0) -> bytes:
    """The first half of a 64×64 JPEG: a file that opens as JPEG but cannot be decoded."""
    data = jpeg_bytes((64, 64), seed)
    return data[: len(data) // 2]


@pytest.fixture(scope="session")
def shared_mirror() -> Path:
    if not (MIRROR / "coil-100.zip").is_file():
        pytest.fail(f"the test mirror is missing: expected {MIRROR}/coil-100.zip (../shared beside the checkout)")
    return MIRROR


def _fetch_from_mirror(name: str, home: Path, mirror: Path) -> Path:
    """Fetch ``name`` into ``home`` through the data hub's real path: present files → mirror → URLs."""
    from retrievalkit.datasets import download

    old = os.environ.get("RETRIEVALKIT_MIRROR")
    os.environ["RETRIEVALKIT_MIRROR"] = str(mirror)
    try:
        return download.ensure(name, home, download=False, progress=False)
    finally:
        if old is None:
            os.environ.pop("RETRIEVALKIT_MIRROR", None)
        else:
            os.environ["RETRIEVALKIT_MIRROR"] = old


@pytest.fixture(scope="session")
def coil_home(tmp_path_factory, shared_mirror) -> Path:
    """A data home with COIL-100 fetched through the real mirror → verify → extract path, once per session."""
    home = tmp_path_factory.mktemp("coil_home")
    _fetch_from_mirror("coil100", home, shared_mirror)
    return home


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory, shared_mirror) -> Path:
    """The folder holding the four Fashion-MNIST files, as the data hub finds them (never a hard-coded system path)."""
    if not (shared_mirror / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the test mirror lacks Fashion-MNIST: expected {shared_mirror}/train-images-idx3-ubyte.gz")
    return _fetch_from_mirror("fashion_mnist", tmp_path_factory.mktemp("fashion_home"), shared_mirror)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small forwards on one torch thread: 64-px inputs gain nothing from two, and on a busy machine two
    OpenMP threads spin at every barrier waiting for each other (measured: 5 s alone, 200 s under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sideways_jpeg(path: Path) -> Path:
    """Stored 40×20: top half red, bottom half blue; EXIF orientation 6 (display turned 90° clockwise)."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10] = (255, 0, 0)
    stored[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100, subsampling=0)
    return path


# --------------------------------------------------------------------------- a local HTTP server
class Served:
    """What the test server serves, how it misbehaves, and what it was asked."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.send_length = True
        self.honour_range = True
        self.cut_after: int | None = None  # bytes sent before closing, on every answer from offset 0
        self.cut_once: dict[str, int] = {}  # path -> bytes sent before closing, on its next answer only
        self.chunk_delay_s = 0.0  # slows a transfer down: 32 KB per step
        self.requests: list[tuple[str, str | None]] = []
        self.url = ""


def _handler(state: Served):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            body = state.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(asked.group(1)) if asked and state.honour_range else 0
            if start >= len(body) and asked and state.honour_range:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            if state.send_length:
                self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if state.cut_after is not None and start == 0:
                payload = payload[:state.cut_after]
            once = state.cut_once.pop(self.path, None)
            if once is not None:
                payload = payload[:once]
            try:
                for i in range(0, len(payload), 32_768):
                    self.wfile.write(payload[i:i + 32_768])
                    time.sleep(state.chunk_delay_s)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def server():
    state = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- hashing test data
def hadamard(n):
    """The n×n ±1 Sylvester-Hadamard matrix (n a power of two): mutually orthogonal, balanced columns."""
    h = np.ones((1, 1), dtype=np.int8)
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    return h


def skewed_classes(seed, d=32, sizes=(200,) + (25,) * 8, spread=0.6):
    """ReLU-like (non-negative, L2-normalised) descriptors of 9 classes, one of them as big as the rest."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(len(sizes), d))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    X = np.abs(centres[labels] + spread * rng.normal(size=(len(labels), d)))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), labels
