"""Backbones: one registry and one `create_model`, in the manner of timm.

Every model takes single-channel images in [0, 1] (what `radfed.data` yields) and does its
own input conversion (grey to 3 channels, the weight source's normalisation), so training
code and checkpoints never depend on how a backbone was pretrained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

# ImageNet statistics, used by torchvision/timm ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_PREFIXES = ("fc.", "classifier.", "AuxLogits.", "head.")
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

    def summary(self) -> str:
        return (
            f"matched {len(self.matched)}, missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}, "
            f"head keys skipped {len(self.head_skipped)}"
        )


class Classifier(nn.Module):
    """A backbone with its input conversion; `net` keeps torchvision's key names."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)


def _resnet(builder: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
    def make(num_classes: int) -> nn.Module:
        net = builder(weights=None)
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        return net

    return make


_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "resnet50": _resnet(tvm.resnet50),
    "resnet18": _resnet(tvm.resnet18),
}


def list_models() -> list[str]:
    """Architectures `create_model` knows."""
    return sorted(_REGISTRY)


def create_model(arch: str, num_classes: int, weights: str | Path = "random") -> Classifier:
    """Build `arch` with a fresh `num_classes` head; `weights` is "random" or a local file.

    Random and RadImageNet-PyTorch sources take inputs scaled to [-1, 1]; that is also
    what radfed uses for random init so both are comparable.
    """
    if arch not in _REGISTRY:
        raise WeightsError(f"unknown backbone '{arch}'; allowed: {', '.join(list_models())}")
    net = _REGISTRY[arch](num_classes)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if str(weights) != "random":
        report = load_backbone_weights(net, Path(weights))
        if report.missing or report.mismatched:
            raise WeightsError(f"{weights}: does not fit {arch}: {report.summary()}")
    return Classifier(net, mean, std)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors, unwrapping common containers; never executes code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise WeightsError(f"{path}: cannot read weights ({type(err).__name__}); "
                           "give a PyTorch state_dict file (.pt/.pth)") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state_dict of tensors")
    return obj


def _normalise_keys(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes and map `nn.Sequential` child indices to child names."""
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    names = [name for name, _ in net.named_children()]
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head.isdigit() and int(head) < len(names):
            key = f"{names[int(head)]}.{rest}"
        out[key] = value
    return out


def load_backbone_weights(net: nn.Module, path: Path) -> LoadReport:
    """Load every backbone tensor from `path` into `net`, leaving the head fresh."""
    source = _normalise_keys(read_state_dict(path), net)
    target = net.state_dict()
    report = LoadReport()
    for key, value in source.items():
        if key.startswith(HEAD_PREFIXES):
            report.head_skipped.append(key)
        elif key not in target:
            report.unexpected.append(key)
        elif target[key].shape != value.shape:
            report.mismatched.append(key)
        else:
            report.matched.append(key)
    report.missing = [
        k for k in target if k not in source and not k.startswith(HEAD_PREFIXES)
    ]
    if not report.missing and not report.mismatched:
        net.load_state_dict({k: source[k] for k in report.matched}, strict=False)
    return report


def apply_freeze(model: Classifier, policy: str, unfreeze_top: int = 10) -> None:
    """Set which parameters train: "none" (all), "all" (head only) or "top-k".

    A "layer" for top-k is a parameterised leaf module (conv, BN, linear) in forward
    order, counted from the output; the head always trains. Frozen BatchNorm layers are
    put in eval mode by `set_train_mode`, so their running statistics stay put.
    """
    leaves = [m for m in model.net.modules() if not list(m.children()) and list(m.parameters())]
    head = leaves[-1]
    trainable = {id(m) for m in leaves} if policy == "none" else {id(head)}
    if policy == "top-k":
        trainable |= {id(m) for m in leaves[-(unfreeze_top + 1):]}
    for module in leaves:
        for p in module.parameters():
            p.requires_grad = id(module) in trainable


def set_train_mode(model: Classifier) -> None:
    """Training mode, except BatchNorm layers whose parameters are frozen."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
