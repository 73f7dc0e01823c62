"""Backbones: one registry and one `create_model`, in the manner of timm.

Every model takes single-channel images in [0, 1] (what `radfed.data` yields) and does its
own input conversion (grey to 3 channels, the weight source's normalisation), so training
code and checkpoints never depend on how a backbone was pretrained.

Architectures: resnet50, densenet121, inception_v3 (torchvision, no auxiliary head),
inception_resnet_v2 (timm), and resnet18 (a small baseline for tests). The table, the
conventions and the load report live in `radfed.architectures`, shared with
`radfed.weights` (which reads weight files; this module builds models from them).

Conventions ("normalisation") are a property of the weight source, not of the file, so a
client that rebuilds a model with ``weights="random"`` and then loads the global
state_dict must be given the same convention (see `radfed.weights.weights_normalisation`):

- ``"radimagenet"``: inputs scaled to [-1, 1] (mean = std = 0.5 per channel on [0, 1]
  input): RadImageNet PyTorch checkpoints (their example: ``(x - 127.5) / 127.5``) and
  random init (radfed's historical default).
- ``"imagenet"``: ImageNet mean/std, for torchvision/timm ImageNet state_dicts.
- ``"keras"``: RadImageNet Keras ``*_notop.h5`` weights. Their scripts apply caffe-style
  ``preprocess_input`` (RGB->BGR, subtract the ImageNet BGR means in 0..255) and then
  ``rescale=1/255``, i.e. ``x01 - mean_bgr / 255`` with std 1; for grey images copied to
  3 channels the BGR order only decides which mean goes to which channel. This convention
  also selects the Keras-compatible layout: ResNet50 stride 2 on the first 1x1 conv of a
  downsampling block, BatchNorm epsilon 1.001e-5 (ResNet50/DenseNet121), and Inception
  average pooling that excludes padding. Without it, converted weights compute something
  else.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from torch import nn

from radfed.architectures import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KERAS_CAFFE_MEAN,
    NORMALISATIONS,
    ArchInfo,
    LoadReport,
    WeightsError,
    arch_info,
    default_input_size,
    keras_layout,
    list_models,
)
from radfed.weights import load_weights

# Re-exported: callers build models from here and catch `WeightsError` from here.
__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KERAS_CAFFE_MEAN",
    "NORMALISATIONS",
    "FREEZE_POLICIES",
    "ArchInfo",
    "LoadReport",
    "WeightsError",
    "Classifier",
    "arch_info",
    "default_input_size",
    "list_models",
    "create_model",
    "model_to_load",
    "apply_freeze",
    "set_train_mode",
    "trainable_state_keys",
]
FREEZE_POLICIES = ("none", "all", "top-k")


class Classifier(nn.Module):
    """A backbone with its input conversion; `net` keeps torchvision's/timm's key names."""

    def __init__(
        self,
        net: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        arch: str = "",
        head_name: str = "fc",
        normalisation: str = "radimagenet",
    ):
        super().__init__()
        self.net = net
        self.arch = arch
        self.head_name = head_name
        self.normalisation = normalisation
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def head(self) -> nn.Module:
        return getattr(self.net, self.head_name)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._prep(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (what the head sees), in the current mode."""
        head = self.head
        setattr(self.net, self.head_name, nn.Identity())
        try:
            return self.net(self._prep(x))
        finally:
            setattr(self.net, self.head_name, head)


# ---------------------------------------------------------------------- factory


def create_model(
    arch: str,
    num_classes: int,
    weights: str | Path = "random",
    *,
    normalisation: str | None = None,
    allow_partial: bool = False,
) -> Classifier:
    """Build `arch` with a fresh `num_classes` head; `weights` is "random" or a local file.

    The file may be a RadImageNet PyTorch checkpoint, a RadImageNet Keras ``*_notop.h5``
    file, or a torchvision/timm state_dict; the format is detected from the file.
    `normalisation` defaults to the weight source's convention ("radimagenet", i.e.
    [-1, 1], for random init). Raises `WeightsError` with the load report if the file
    does not provide the whole backbone, unless `allow_partial`.
    """
    info = arch_info(arch)
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise WeightsError(f"unknown normalisation '{normalisation}'; allowed: {', '.join(NORMALISATIONS)}")
    if num_classes < 1:
        raise WeightsError(f"num_classes must be at least 1, got {num_classes}")
    if str(weights) == "random":
        norm = normalisation or "radimagenet"
        net = info.build(num_classes)
        if norm == "keras":
            keras_layout(net, info.family)
    else:
        net, report = load_weights(arch, num_classes, Path(weights), allow_partial=allow_partial)
        if normalisation is not None and (normalisation == "keras") != (report.normalisation == "keras"):
            raise WeightsError(
                f"{Path(weights).name}: normalisation '{normalisation}' does not fit a "
                f"{report.source_format} file: the 'keras' convention also sets the network "
                "layout, so it goes with Keras h5 weights only"
            )
        norm = normalisation or report.normalisation
    mean, std = NORMALISATIONS[norm]
    return Classifier(net, mean, std, arch=arch, head_name=info.head, normalisation=norm)


# --------------------------------------------------------------- freeze policies


def model_to_load(arch: str, num_classes: int, normalisation: str = "radimagenet") -> Classifier:
    """A network of this shape whose every weight the caller is about to overwrite (a
    received state_dict): a copy of one built once per process, not a fresh random
    initialisation per message. A warm clinic worker builds the same network for every
    train and evaluate message of a run; initialising it costs far more than copying
    (resnet18: ~0.2 s idle and 2 s on a loaded 2-core machine, against ~20 ms)."""
    return copy.deepcopy(_blank(arch, num_classes, normalisation))


@functools.lru_cache(maxsize=2)
def _blank(arch: str, num_classes: int, normalisation: str) -> Classifier:
    return create_model(arch, num_classes, "random", normalisation=normalisation)


def _leaves(model: Classifier) -> list[nn.Module]:
    return [m for m in model.net.modules() if list(m.parameters(recurse=False))]


def apply_freeze(model: Classifier, policy: str, unfreeze_top: int = 10) -> None:
    """Set which parameters train: "none" (all), "all" (head only) or "top-k".

    A "layer" for top-k is a module that owns parameters directly (a Conv2d, a BatchNorm
    or a Linear, each counted once; timm's BatchNormAct2d counts as its BatchNorm) in
    registration order, which is forward order for these backbones,
    counted from the output with the head excluded: "top-k" trains the new head plus the
    k backbone leaf modules just below it (k = `unfreeze_top`, 10 by default). The paper's
    Keras "top 10 layers" also count weightless layers (activations, pooling), so its
    counts are not comparable one-to-one. Frozen BatchNorm layers are put in eval mode by
    `set_train_mode`, so their running statistics stay put.
    """
    if policy not in FREEZE_POLICIES:
        raise ValueError(f"unknown freeze policy '{policy}'; allowed: {', '.join(FREEZE_POLICIES)}")
    if unfreeze_top < 0:
        raise ValueError(f"unfreeze_top must be >= 0, got {unfreeze_top}")
    head = model.head
    head_ids = {id(m) for m in head.modules()}
    body = [m for m in _leaves(model) if id(m) not in head_ids]
    if policy == "none":
        trainable = {id(m) for m in body}
    elif policy == "all":
        trainable = set()
    else:
        trainable = {id(m) for m in body[max(0, len(body) - unfreeze_top) :]}
    trainable |= head_ids
    for module in model.net.modules():
        for p in module.parameters(recurse=False):
            p.requires_grad = id(module) in trainable


def _bn_trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


def set_train_mode(model: Classifier) -> None:
    """Training mode, except BatchNorm layers whose parameters are frozen."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not _bn_trains(module):
            module.eval()


def trainable_state_keys(model: Classifier) -> list[str]:
    """state_dict keys whose tensors can change in training under the current policy.

    Trainable parameters plus the running statistics of BatchNorm layers that
    `set_train_mode` leaves in train mode (those with trainable parameters); everything
    else stays equal to the global model in a round.
    """
    keys = [f"{name}" for name, p in model.named_parameters() if p.requires_grad]
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and _bn_trains(module):
            for buf, value in module.named_buffers(recurse=False):
                if value is not None:
                    keys.append(f"{name}.{buf}")
    order = {k: i for i, k in enumerate(model.state_dict())}
    return sorted(set(keys), key=lambda k: order.get(k, len(order)))
