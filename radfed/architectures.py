"""The architecture table, input conventions and the weight-load report: one home.

`radfed.models` (building and training-side policies) and `radfed.weights` (reading and
converting weight files) both need to know which architectures exist, where their head
is, which input convention a weight source implies, how a Keras-compatible layout differs,
and how a load is reported. Keeping that here lets both import it without importing each
other.

Conventions ("normalisation") are a property of the weight source, not of the file:

- ``"radimagenet"``: inputs scaled to [-1, 1] (mean = std = 0.5 per channel on [0, 1]
  input): RadImageNet PyTorch checkpoints and random init (radfed's historical default).
- ``"imagenet"``: ImageNet mean/std, for torchvision/timm ImageNet state_dicts.
- ``"keras"``: RadImageNet Keras ``*_notop.h5`` weights: caffe-style ``x01 - mean_bgr/255``
  with std 1; it also selects the Keras-compatible layout (`keras_layout`).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

# ImageNet statistics, used by torchvision/timm ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# caffe-style BGR means (0..255) of keras.applications.imagenet_utils, then /255.
KERAS_CAFFE_MEAN = (103.939 / 255, 116.779 / 255, 123.68 / 255)
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "radimagenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "keras": (KERAS_CAFFE_MEAN, (1.0, 1.0, 1.0)),
}
HEAD_PREFIXES = ("fc.", "classifier.", "AuxLogits.", "head.", "classif.")
STRIP_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


class WeightsError(ValueError):
    """A weight file that does not fit the architecture; the message carries the report."""


@dataclass
class LoadReport:
    """What a weight load matched: refuse anything short of the whole backbone."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    head_skipped: list[str] = field(default_factory=list)
    source_format: str = ""
    normalisation: str = ""

    @property
    def complete(self) -> bool:
        return bool(self.matched) and not self.missing and not self.mismatched

    def summary(self) -> str:
        text = (
            f"matched {len(self.matched)}, missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}, "
            f"head keys skipped {len(self.head_skipped)}"
        )
        if self.missing:
            text += f"; first missing: {', '.join(self.missing[:3])}"
        if self.mismatched:
            text += f"; first mismatched: {', '.join(self.mismatched[:3])}"
        return text

    def as_dict(self) -> dict:
        return {
            "format": self.source_format,
            "normalisation": self.normalisation,
            "complete": self.complete,
            "counts": {
                k: len(getattr(self, k)) for k in ("matched", "missing", "unexpected", "mismatched", "head_skipped")
            },
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": self.mismatched,
            "head_skipped": self.head_skipped,
        }


# ---------------------------------------------------------------- architectures


def _resnet(builder: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
    def make(num_classes: int) -> nn.Module:
        net = builder(weights=None)
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        return net

    return make


def _densenet121(num_classes: int) -> nn.Module:
    net = tvm.densenet121(weights=None)
    net.classifier = nn.Linear(net.classifier.in_features, num_classes)
    return net


def _inception_v3(num_classes: int) -> nn.Module:
    net = tvm.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def _inception_resnet_v2(num_classes: int) -> nn.Module:
    import timm  # imports in ~2 s: only where it is used

    return timm.create_model("inception_resnet_v2", pretrained=False, num_classes=num_classes)


@dataclass(frozen=True)
class ArchInfo:
    build: Callable[[int], nn.Module]
    head: str
    input_size: int
    family: str  # "resnet", "densenet", "inception", "inception_resnet"


ARCHITECTURES: dict[str, ArchInfo] = {
    "resnet50": ArchInfo(_resnet(tvm.resnet50), "fc", 224, "resnet"),
    "resnet18": ArchInfo(_resnet(tvm.resnet18), "fc", 224, "resnet"),
    "densenet121": ArchInfo(_densenet121, "classifier", 224, "densenet"),
    "inception_v3": ArchInfo(_inception_v3, "fc", 299, "inception"),
    "inception_resnet_v2": ArchInfo(_inception_resnet_v2, "classif", 299, "inception_resnet"),
}


def list_models() -> list[str]:
    """Architectures `radfed.models.create_model` knows."""
    return sorted(ARCHITECTURES)


def arch_info(arch: str) -> ArchInfo:
    if arch not in ARCHITECTURES:
        raise WeightsError(f"unknown backbone '{arch}'; allowed: {', '.join(list_models())}")
    return ARCHITECTURES[arch]


def default_input_size(arch: str) -> int:
    """The input side the architecture was designed for: 299 for the Inception family."""
    return arch_info(arch).input_size


# --------------------------------------------------------- Keras-compatible layout


def _avg_pool_excl_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _patched_forward(module: nn.Module) -> Callable:
    """`_forward` of torchvision's InceptionA/C/E with Keras' padding-free averaging."""
    fwd = type(module)._forward
    globs = dict(fwd.__globals__)
    shim = types.SimpleNamespace(**{n: getattr(F, n) for n in dir(F) if not n.startswith("__")})
    shim.avg_pool2d = lambda x, kernel_size, stride, padding: _avg_pool_excl_pad(x)
    globs["F"] = shim
    new = types.FunctionType(fwd.__code__, globs, fwd.__name__, fwd.__defaults__, fwd.__closure__)
    return types.MethodType(new, module)


def keras_layout(net: nn.Module, family: str) -> None:
    """Make `net` compute what the Keras application of the same family computes.

    ResNet50 strides on the first 1x1 conv of a downsampling block, BatchNorm epsilon
    1.001e-5 (ResNet50/DenseNet121) or 1e-3 (Inception), and Inception average pooling
    that excludes padding: without these, converted Keras weights compute something else.
    """
    if family == "resnet":
        for layer in (net.layer2, net.layer3, net.layer4):
            block = layer[0]
            if isinstance(block, tvm.resnet.Bottleneck):
                block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1.001e-5
    elif family == "densenet":
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1.001e-5
    elif family == "inception":
        for m in net.modules():
            if isinstance(m, (tvm.inception.InceptionA, tvm.inception.InceptionC, tvm.inception.InceptionE)):
                m._forward = _patched_forward(m)
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3
    # timm's inception_resnet_v2 already follows Keras (eps 1e-3, pooling without padding).
