"""Weight sources for radfed's backbones: read, convert, check, load. Nothing downloads.

Formats, detected from the file itself:

- ``radimagenet-torch``: RadImageNet PyTorch checkpoints, the state_dict of a wrapper whose
  attribute ``backbone`` is ``nn.Sequential(*list(net.children())[:k])``: keys such as
  ``backbone.0.weight``, ``backbone.4.0.conv1.weight``. Bare child indices are mapped to the
  model's child names; for InceptionV3 both layouts (with and without ``AuxLogits`` among
  the children) are tried and the better one is kept. Convention "radimagenet" ([-1, 1]).
- ``torch``: plain torchvision/timm state_dicts (ImageNet weights). Convention "imagenet".
- ``keras-h5``: RadImageNet Keras ``*_notop.h5`` files (weights-only or full-model saves of
  tf.keras 2 / Keras 3 legacy h5; Keras 3 ``.weights.h5`` is refused: it drops layer
  names), converted with h5py + numpy into the Keras-compatible
  layout of the torch model (see `radfed.architectures.keras_layout`). Convention "keras".

Every load goes into a fresh model, which is only returned when the whole backbone matched
(or ``allow_partial``); otherwise `WeightsError` carries the `LoadReport` (``err.report``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radfed.architectures import (
    HEAD_PREFIXES,
    STRIP_PREFIXES,
    LoadReport,
    WeightsError,
    arch_info,
    keras_layout,
)

H5_MAGIC = b"\x89HDF\r\n\x1a\n"
FORMAT_NORMALISATION = {"radimagenet-torch": "radimagenet", "torch": "imagenet", "keras-h5": "keras"}


class WeightsRefused(WeightsError):
    """A load that did not match the whole backbone; `report` says what matched."""

    def __init__(self, message: str, report: LoadReport):
        super().__init__(message)
        self.report = report


# ------------------------------------------------------------------ detection


def _is_h5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head == H5_MAGIC


CHECKPOINT_FORMAT = "radfed-checkpoint"


def detect_format(path: str | Path) -> str:
    """ "keras-h5", "radfed-checkpoint", "radimagenet-torch" or "torch", from the file's
    bytes and key names."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if _is_h5(path):
        return "keras-h5"
    if checkpoint_info(path) is not None:
        return CHECKPOINT_FORMAT
    keys = list(read_state_dict(path))
    return _torch_format(keys)


def checkpoint_info(path: str | Path) -> dict | None:
    """A radfed round checkpoint's round, spec and input convention; None for other files.

    Checkpoints (`round-NNN.pt`, written every round) hold the whole Classifier's
    state_dict (keys `net.…`), so they can seed an experiment (`weights = "…/round-003.pt"`)
    or a resumed run; their convention is the run's, stored beside the weights.
    """
    obj = _torch_load(Path(path).expanduser())
    if not (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "spec" in obj):
        return None
    norm = obj.get("normalisation")
    if not norm:  # written before the convention was stored: a random init's is [-1, 1]
        import json

        weights = json.loads(str(obj["spec"])).get("weights", "random")
        norm = "radimagenet" if weights == "random" else weights_normalisation(weights)
    return {"round": obj.get("round"), "spec": obj["spec"], "normalisation": norm}


def _torch_format(keys: list[str]) -> str:
    if keys and (
        all(k.startswith("backbone.") for k in keys) or all(_strip(k).split(".", 1)[0].isdigit() for k in keys)
    ):
        return "radimagenet-torch"
    return "torch"


def weights_normalisation(path: str | Path) -> str:
    """The input convention of a weight file ("radimagenet", "imagenet" or "keras"), or
    "radimagenet" for "random": put it in the run config so clients rebuild alike."""
    if str(path) == "random":
        return "radimagenet"
    fmt = detect_format(path)
    if fmt == CHECKPOINT_FORMAT:
        return checkpoint_info(path)["normalisation"]  # type: ignore[index]
    return FORMAT_NORMALISATION[fmt]


# -------------------------------------------------------------- torch files


def _torch_load(path: Path):
    """torch.load with weights_only (never executes code), memory-mapped where it can be."""
    try:
        try:  # memory-mapped: listing keys of a 200 MB file costs no read
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise WeightsError(
            f"{path}: cannot read weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120] if str(err) else ''}); "
            "give a PyTorch state_dict (.pt/.pth) or a Keras .h5 file"
        ) from None
    return obj


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors, unwrapping common containers; never executes code."""
    obj = _torch_load(path)
    checkpoint = isinstance(obj, dict) and "spec" in obj and isinstance(obj.get("state_dict"), dict)
    for key in ("state_dict", "model", "model_state", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state_dict of tensors")
    if checkpoint:  # radfed's Classifier wraps the network as `net`
        obj = {k.removeprefix("net."): v for k, v in obj.items()}
    return obj


def _strip(key: str) -> str:
    for prefix in STRIP_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


_DENSE_OLD = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _child_layouts(net: nn.Module, arch: str | None) -> list[list[str]]:
    names = [name for name, _ in net.named_children()]
    layouts = [names]
    if "Mixed_6e" in names and "AuxLogits" not in names:  # torchvision InceptionV3
        alt = list(names)
        alt.insert(alt.index("Mixed_6e") + 1, "AuxLogits")
        layouts.append(alt)
    return layouts


def _map_keys(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes shared by all keys and map child indices to child names."""
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head.isdigit() and int(head) < len(names):
            key = f"{names[int(head)]}.{rest}"
        key = _DENSE_OLD.sub(r"\1\2", key)
        out[key] = value
    return out


def _is_head(key: str, head_name: str | None) -> bool:
    return key.startswith(HEAD_PREFIXES) or (head_name is not None and key.startswith(head_name + "."))


def _compare(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], head_name: str | None) -> LoadReport:
    report = LoadReport()
    for key, value in source.items():
        if _is_head(key, head_name):
            report.head_skipped.append(key)
        elif key not in target:
            report.unexpected.append(key)
        elif target[key].shape != value.shape:
            report.mismatched.append(key)
        else:
            report.matched.append(key)
    # num_batches_tracked is a counter, not a weight: old checkpoints lack it.
    report.missing = [
        k for k in target if k not in source and not _is_head(k, head_name) and not k.endswith("num_batches_tracked")
    ]
    return report


def _finish(
    net: nn.Module, source: dict[str, torch.Tensor], report: LoadReport, *, allow_partial: bool, what: str
) -> LoadReport:
    if not report.complete and not (allow_partial and report.matched):
        raise WeightsRefused(
            f"{what}: refused, not the whole backbone: {report.summary()}"
            + ("" if allow_partial else "; use allow_partial to load anyway"),
            report,
        )
    net.load_state_dict({k: source[k] for k in report.matched}, strict=False)
    return report


def load_torch_into(
    net: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    allow_partial: bool = False,
    arch: str | None = None,
    what: str = "weights",
) -> LoadReport:
    """Match `state` against `net`'s backbone; load it only when it fits (see module doc)."""
    head_name = arch_info(arch).head if arch else None
    target = net.state_dict()
    best: tuple[LoadReport, dict] | None = None
    for names in _child_layouts(net, arch):
        source = _map_keys(state, names)
        report = _compare(source, target, head_name)
        if best is None or len(report.matched) > len(best[0].matched):
            best = (report, source)
    report, source = best
    report.source_format = _torch_format(list(state))
    report.normalisation = FORMAT_NORMALISATION[report.source_format]
    return _finish(net, source, report, allow_partial=allow_partial, what=what)


# -------------------------------------------------------------- Keras files


def _attr_list(group, name: str) -> list[str]:
    """A Keras h5 string-list attribute, possibly split into `name0`, `name1`, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {"kernel"|"bias"|"gamma"|"beta"|"moving_mean"|"moving_variance": array}}."""
    import h5py  # noqa: PLC0415

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layers" in root and "layer_names" not in root.attrs:
                # Keras 3 names these groups by class and graph order, not by layer name.
                raise WeightsError(
                    f"{path}: Keras 3 '.weights.h5' layout is not supported "
                    "(it drops layer names); save with tf.keras 2 "
                    "`save_weights('x.h5')` or legacy `model.save('x.h5')`"
                )
            layers: dict[str, dict[str, np.ndarray]] = {}
            for name in _attr_list(root, "layer_names") or list(root.keys()):
                group = root[name]
                arrays = {}
                for wname in _attr_list(group, "weight_names"):
                    kind = wname.split("/")[-1].split(":")[0]
                    arrays[kind] = np.asarray(group[wname], dtype=np.float32)
                if arrays:
                    layers[name] = arrays
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py raises OSError/KeyError/... on bad files
        raise WeightsError(
            f"{path}: cannot read Keras h5 weights ({type(err).__name__}: {str(err)[:120]}); the file may be truncated"
        ) from None
    if not layers:
        raise WeightsError(f"{path}: no layer weights in this h5 file")
    return layers


def guess_keras_arch(layers: dict[str, dict]) -> str | None:
    """Which Keras application the layer names come from, if recognisable."""
    names = set(layers)
    if any(n.startswith("block35_") for n in names):
        return "inception_resnet_v2"
    if "conv2_block1_3_conv" in names:
        return "resnet50"
    if "pool2_conv" in names and "conv2_block1_2_conv" in names:
        return "densenet121"
    if sum(1 for n in names if re.fullmatch(r"conv2d(_\d+)?", n)) >= 90:
        return "inception_v3"
    return None


def _suffix_sorted(names, base: str) -> list[str]:
    pat = re.compile(rf"{base}(?:_(\d+))?")
    found = [(int(m.group(1) or 0), n) for n in names if (m := pat.fullmatch(n))]
    return [n for _, n in sorted(found)]


class _Converter:
    """Collects torch tensors from Keras layers; records which Keras layers were used."""

    def __init__(self, layers: dict[str, dict[str, np.ndarray]]):
        self.layers = layers
        self.state: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def conv(self, kname: str, prefix: str, *, fold_into: str | None = None) -> None:
        if kname not in self.layers:
            return
        self.used.add(kname)
        arr = self.layers[kname]
        if "kernel" in arr:
            self.state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(arr["kernel"].transpose(3, 2, 0, 1)))
        if "bias" in arr:
            if fold_into is None:
                self.state[f"{prefix}.bias"] = torch.from_numpy(arr["bias"].copy())
            else:
                self._bias = (fold_into, arr["bias"])

    def bn(self, kname: str, prefix: str, *, conv_bias_from: str | None = None) -> None:
        if kname not in self.layers:
            return
        self.used.add(kname)
        arr = self.layers[kname]
        n = arr["moving_mean"].shape[0]
        mean = arr["moving_mean"].copy()
        if conv_bias_from and "bias" in self.layers.get(conv_bias_from, {}):
            # BN(conv(x) + b) == BN'(conv(x)) with running_mean' = running_mean - b
            mean = mean - self.layers[conv_bias_from]["bias"]
        self.state[f"{prefix}.weight"] = torch.from_numpy(arr.get("gamma", np.ones(n, np.float32)).copy())
        self.state[f"{prefix}.bias"] = torch.from_numpy(arr.get("beta", np.zeros(n, np.float32)).copy())
        self.state[f"{prefix}.running_mean"] = torch.from_numpy(mean.astype(np.float32))
        self.state[f"{prefix}.running_var"] = torch.from_numpy(arr["moving_variance"].copy())

    def conv_bn(self, kconv: str, kbn: str, tconv: str, tbn: str) -> None:
        self.conv(kconv, tconv, fold_into=tbn)
        self.bn(kbn, tbn, conv_bias_from=kconv)


def _convert_resnet50(c: _Converter, net: nn.Module) -> None:
    c.conv_bn("conv1_conv", "conv1_bn", "conv1", "bn1")
    for s, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4), start=2):
        for b in range(len(layer)):
            k, t = f"conv{s}_block{b + 1}", f"layer{s - 1}.{b}"
            c.conv_bn(f"{k}_0_conv", f"{k}_0_bn", f"{t}.downsample.0", f"{t}.downsample.1")
            for i in (1, 2, 3):
                c.conv_bn(f"{k}_{i}_conv", f"{k}_{i}_bn", f"{t}.conv{i}", f"{t}.bn{i}")


def _convert_densenet121(c: _Converter, net: nn.Module) -> None:
    c.conv("conv1_conv", "features.conv0")
    c.bn("conv1_bn", "features.norm0")
    for s, blocks in enumerate((6, 12, 24, 16), start=2):
        for b in range(1, blocks + 1):
            k, t = f"conv{s}_block{b}", f"features.denseblock{s - 1}.denselayer{b}"
            c.bn(f"{k}_0_bn", f"{t}.norm1")
            c.conv(f"{k}_1_conv", f"{t}.conv1")
            c.bn(f"{k}_1_bn", f"{t}.norm2")
            c.conv(f"{k}_2_conv", f"{t}.conv2")
        if s < 5:
            c.bn(f"pool{s}_bn", f"features.transition{s - 1}.norm")
            c.conv(f"pool{s}_conv", f"features.transition{s - 1}.conv")
    c.bn("bn", "features.norm5")


def _pair_auto(c: _Converter, modules: list[str]) -> None:
    convs = _suffix_sorted(c.layers, "conv2d")
    bns = _suffix_sorted(c.layers, "batch_normalization")
    for prefix, kconv, kbn in zip(modules, convs, bns):
        c.conv_bn(kconv, kbn, f"{prefix}.conv", f"{prefix}.bn")


def _convert_inception_v3(c: _Converter, net: nn.Module) -> None:
    from torchvision.models.inception import BasicConv2d  # noqa: PLC0415

    _pair_auto(c, [n for n, m in net.named_modules() if isinstance(m, BasicConv2d) and not n.startswith("AuxLogits")])


def _convert_inception_resnet_v2(c: _Converter, net: nn.Module) -> None:
    cna = [
        n
        for n, m in net.named_modules()
        if isinstance(getattr(m, "conv", None), nn.Conv2d)
        and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)
        and n != "conv2d_7b"
    ]
    _pair_auto(c, cna)
    projections = [
        n for n, m in net.named_modules() if n.endswith("conv2d") and isinstance(m, nn.Conv2d) and m.bias is not None
    ]
    keras_proj = (
        [f"block35_{i}_conv" for i in range(1, 11)]
        + [f"block17_{i}_conv" for i in range(1, 21)]
        + [f"block8_{i}_conv" for i in range(1, 11)]
    )
    for prefix, kname in zip(projections, keras_proj):
        c.conv(kname, prefix)
    c.conv_bn("conv_7b", "conv_7b_bn", "conv2d_7b.conv", "conv2d_7b.bn")


_KERAS_CONVERTERS = {
    "resnet50": _convert_resnet50,
    "densenet121": _convert_densenet121,
    "inception_v3": _convert_inception_v3,
    "inception_resnet_v2": _convert_inception_resnet_v2,
}


def convert_keras(
    arch: str, layers: dict[str, dict[str, np.ndarray]], net: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Torch state (for `net` in Keras layout) and the Keras layers left unused."""
    if arch not in _KERAS_CONVERTERS:
        raise WeightsError(
            f"no Keras converter for '{arch}'; Keras files are supported for {', '.join(_KERAS_CONVERTERS)}"
        )
    c = _Converter(layers)
    _KERAS_CONVERTERS[arch](c, net)
    target = net.state_dict()
    for key, value in target.items():  # counters are not weights
        if key.endswith("num_batches_tracked") and key.rsplit(".", 1)[0] + ".running_mean" in c.state:
            c.state[key] = value.clone()
    return c.state, [f"keras:{n}" for n in layers if n not in c.used]


# ------------------------------------------------------------------ loading


def load_weights(
    arch: str, num_classes: int, path: str | Path, *, allow_partial: bool = False
) -> tuple[nn.Module, LoadReport]:
    """A fresh `arch` net with a new `num_classes` head and the backbone from `path`.

    Raises `WeightsRefused` (a `WeightsError`, with `.report`) when the file does not
    provide the whole backbone, unless `allow_partial`; `WeightsError` for unreadable files.
    """
    info = arch_info(arch)
    path = Path(path).expanduser()
    fmt = detect_format(path)
    what = f"{path.name} ({fmt}) into {arch}"
    net = info.build(num_classes)
    if fmt != "keras-h5":
        report = load_torch_into(net, read_state_dict(path), allow_partial=allow_partial, arch=arch, what=what)
        if fmt == CHECKPOINT_FORMAT:
            report.source_format, report.normalisation = fmt, weights_normalisation(path)
        return net, report
    layers = read_keras_h5(path)
    keras_layout(net, info.family)
    guess = guess_keras_arch(layers)
    if guess is not None and guess != arch:
        what += f" (the file looks like a Keras {guess})"
    if arch not in _KERAS_CONVERTERS:
        raise WeightsError(f"{what}: no Keras converter for '{arch}'")
    source, unused = convert_keras(arch, layers, net)
    report = _compare(source, net.state_dict(), info.head)
    report.unexpected += unused
    report.source_format, report.normalisation = fmt, "keras"
    _finish(net, source, report, allow_partial=allow_partial, what=what)
    return net, report


def inspect_weights(
    path: str | Path, arch: str, *, allow_partial: bool = False
) -> tuple[LoadReport | None, str | None]:
    """(report, refusal line or None); the report is None when the file cannot be read."""
    try:
        _, report = load_weights(arch, 2, path, allow_partial=allow_partial)
        return report, None
    except WeightsRefused as err:
        return err.report, str(err)
    except WeightsError as err:
        return None, str(err)
