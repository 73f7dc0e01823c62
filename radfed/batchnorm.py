"""Which state_dict entries belong to BatchNorm layers (for FedBN's local statistics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from radfed.heap import trimmed

if TYPE_CHECKING:
    from radfed.data.rows import Images


def batchnorm_state_keys(model: nn.Module) -> list[str]:
    """Keys of every BatchNorm weight, bias and running statistic in `model.state_dict()`.

    Found from the modules, not guessed from names: torchvision hides BN layers behind
    names such as `downsample.1`.
    """
    keys = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            keys += [prefix + k for k in module.state_dict()]
    return keys


def batchnorm_statistics_keys(model: nn.Module) -> list[str]:
    """Keys of every BatchNorm running statistic and batch counter (buffers, not parameters).

    They are measured, not learned: a server optimiser must average them, never step them.
    """
    keys = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            prefix = f"{name}." if name else ""
            keys += [prefix + k for k, _ in module.named_buffers(recurse=False)]
    return keys


BN_POLICIES = ("global", "clinic")


def class_balanced_order(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Indices into a clinic's images in which every class present counts equally.

    About as many indices as images (each of the k classes gets ceil(n / k)): a class
    with fewer images is repeated, one with more is thinned evenly (every image of it
    still seen when it has fewer than that share), then the whole is shuffled with a fixed
    seed so each batch mixes the classes. Costs the same passes as the images themselves.
    """
    labels = torch.as_tensor(labels).flatten()
    classes = torch.unique(labels)
    if len(classes) < 2:
        return torch.arange(len(labels))
    share = -(-len(labels) // len(classes))
    parts = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        if len(members) >= share:  # thinned evenly over the class
            parts.append(members[torch.linspace(0, len(members) - 1, share).round().long()])
        else:  # repeated whole, then the first images again
            parts.append(members.repeat(-(-share // len(members)))[:share])
    order = torch.cat(parts)
    return order[torch.randperm(len(order), generator=torch.Generator().manual_seed(seed))]


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, images: Images, batch_size: int = 64, labels: torch.Tensor | None = None
) -> None:
    """Replace every BatchNorm layer's running statistics by those of `images`.

    Averaged across clinics (FedAvg), the statistics describe no scanner in particular:
    a clinic whose detector is brighter or noisier than the mean gets shifted,
    saturated scores (issue 14). Measured on the clinic's own training images
    just before evaluation (spec bn_policy = "clinic"), they match its scanner again;
    the learned weights stay the global model's. The layers' momentum is restored after.

    With `labels`, the statistics are class-balanced (`class_balanced_order`): measured on
    all images, a clinic where 70 % of patients have the finding normalises its findings
    toward the mean, and one with 15 % does not, so the same model scores the two clinics'
    findings on shifted scales and the pooled AUROC falls below every clinic's own (issue
    14: nodules, pooled 0.965 with every clinic at 0.95-0.99). Balanced, the statistics
    describe the scanner, not the case mix. The labels never leave the clinic.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(images) < 2:
        return
    order = class_balanced_order(labels) if labels is not None else None
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over all batches
    model.train()
    total = len(order) if order is not None else len(images)
    for start in trimmed(range(0, total, batch_size)):
        batch = images[order[start : start + batch_size]] if order is not None else images[start : start + batch_size]
        if len(batch) > 1:
            model(batch)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)


def as_evaluated(model: nn.Module, images: Images, bn_policy: str, labels: torch.Tensor | None = None) -> nn.Module:
    """The global model as a clinic evaluates it: with bn_policy "clinic", a copy whose
    BatchNorm statistics are re-estimated on that clinic's training `images`,
    class-balanced by their `labels` when given (`reestimate_batchnorm`); with "global",
    the model itself. One rule for the ClientApp and the centralised baseline, so
    federated and centralised figures are measured the same way."""
    if bn_policy != "clinic":
        return model
    import copy

    adapted = copy.deepcopy(model)
    reestimate_batchnorm(adapted, images, labels=labels)
    return adapted
