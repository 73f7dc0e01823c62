"""Grad-CAM heat maps: where in an image the model saw the finding.

Made with the `grad-cam` package (pytorch-grad-cam): it is small, maintained, works on
any torch module given a target layer, and does exactly Grad-CAM and its variants with
no framework around it (MONAI's CAM would pull MONAI's transforms and networks in;
Captum's LayerGradCam needs the same layer choice and its own upsampling). radfed only
chooses the layer and draws the overlay.

The layer: Grad-CAM's resolution is the target layer's feature map. The last stage of a
ResNet is 7×7 at 224 px but 2×2 at 64 px, too coarse to point at a lesion; so the layer
is the deepest stage of the network whose output map is at least `MIN_MAP` pixels on its
shorter side (found by one dry run), falling back to the largest map when none is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

MIN_MAP = 7  # pixels on the shorter side of the target layer's map (ResNet at 224 px: 7)


def _stages(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's stages: its direct children, a `features` sequence opened up (DenseNet)."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential) and name == "features":
            out += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            out.append((name, child))
    return out


def cam_layer(model: nn.Module, image_size: int, name: str | None = None) -> tuple[str, nn.Module]:
    """(name, module) of the stage Grad-CAM reads (see the module docstring), or the stage
    `name` asked for (ValueError listing the stages when there is none of that name)."""
    net = getattr(model, "net", model)
    stages = _stages(net)
    if name:
        found = dict(stages)
        if name not in found:
            raise ValueError(f"no stage {name!r} for heat maps; stages: {', '.join(found)}")
        return name, found[name]
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    hooks = []
    for name, module in stages:

        def record(_m, _i, output, name=name):
            if isinstance(output, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(output.shape)
                order.append(name)

        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    maps = [(name, min(shapes[name][-2:])) for name in order if len(shapes[name]) == 4]
    if not maps:
        raise ValueError("no convolutional stage found for Grad-CAM")
    good = [name for name, side in maps if side >= MIN_MAP]
    chosen = good[-1] if good else max(reversed(maps), key=lambda m: m[1])[0]
    return chosen, dict(stages)[chosen]


def heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    targets: list[int],
    *,
    batch_size: int = 16,
    layer_name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """N × H × W Grad-CAM maps in [0, 1] (the input's size) for class `targets[i]` of image i."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    _, layer = cam_layer(model, int(images.shape[-1]), layer_name)
    model.eval()
    out = []
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float()
            wanted = [ClassifierOutputTarget(int(t)) for t in targets[start : start + batch_size]]
            out.append(np.asarray(cam(input_tensor=batch, targets=wanted), dtype=np.float32))
            if progress is not None:
                progress(len(batch))
    maps = np.concatenate(out) if out else np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    return np.nan_to_num(maps, nan=0.0)


def overlay(image: np.ndarray, cam: np.ndarray, size: int | None = None) -> np.ndarray:
    """The heat map over the grey image as H × W × 3 uint8 RGB (jet colours, 40 % heat),
    resized to `size` pixels square when given (for viewing)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    rgb = show_cam_on_image(
        np.repeat(grey[..., None], 3, axis=2), np.clip(cam, 0.0, 1.0), use_rgb=True, image_weight=0.6
    )
    if size and size != rgb.shape[0]:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return rgb


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of the heat map's maximum."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(row), int(col)
