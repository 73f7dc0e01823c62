"""Weight sources: each format built here from a real model with random weights, loaded,
and checked to compute the same features; and the refusals (wrong arch, truncated, partial).

The Keras-h5 tests build keras.applications models on the torch backend (~12 s to import
keras once); InceptionResNetV2 through Keras is marked slow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models as tvm

from radfed.models import NORMALISATIONS, WeightsError, create_model
from radfed.weights import (
    WeightsRefused,
    detect_format,
    inspect_weights,
    load_weights,
    weights_normalisation,
)


def _randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """BN stats away from 0/1, so that any stats/epsilon mistake shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return net.eval()


def _features(net: nn.Module, head: str, x: torch.Tensor) -> torch.Tensor:
    old = getattr(net, head)
    setattr(net, head, nn.Identity())
    try:
        with torch.no_grad():
            return net.eval()(x)
    finally:
        setattr(net, head, old)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    assert a.shape == b.shape
    err = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    assert err < rtol, f"relative max error {err:.2e}"


def _radimagenet_file(path: Path, src: nn.Module, k: int) -> Path:
    backbone = nn.Sequential(*list(src.children())[:k])
    torch.save({f"backbone.{key}": v for key, v in backbone.state_dict().items()}, path)
    return path


# ----------------------------------------------------------- PyTorch sources


@pytest.mark.e2e
def test_radimagenet_resnet50(tmp_path: Path) -> None:
    src = _randomise_bn(tvm.resnet50())
    path = _radimagenet_file(tmp_path / "RadImageNet-ResNet50.pt", src, 9)
    assert detect_format(path) == "radimagenet-torch"
    assert weights_normalisation(path) == "radimagenet"
    model = create_model("resnet50", 3, path)
    assert model.normalisation == "radimagenet"
    x = torch.randn(2, 3, 64, 64)
    _close(_features(model.net, "fc", x), _features(src, "fc", x))
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 3)


@pytest.mark.e2e
def test_radimagenet_densenet121(tmp_path: Path) -> None:
    src = _randomise_bn(tvm.densenet121())
    path = _radimagenet_file(tmp_path / "dn.pt", src, 1)
    model = create_model("densenet121", 2, path)
    x = torch.randn(2, 3, 64, 64)
    _close(_features(model.net, "classifier", x), _features(src, "classifier", x))


@pytest.mark.e2e
@pytest.mark.parametrize("aux", [True, False])
def test_radimagenet_inception_v3_both_layouts(tmp_path: Path, aux: bool) -> None:
    src = _randomise_bn(tvm.inception_v3(weights=None, aux_logits=aux, init_weights=False))
    k = len(list(src.children())) - 3  # up to Mixed_7c; AuxLogits among them when aux
    path = _radimagenet_file(tmp_path / "iv3.pt", src, k)
    net, report = load_weights("inception_v3", 2, path)
    assert report.complete and (len(report.head_skipped) > 0) == aux
    assert report.normalisation == "radimagenet"
    x = torch.randn(1, 3, 75, 75)
    _close(_features(net, "fc", x), _features(src, "fc", x))


@pytest.mark.e2e
def test_timm_inception_resnet_v2_state_dict(tmp_path: Path) -> None:
    import timm

    src = _randomise_bn(timm.create_model("inception_resnet_v2", num_classes=1000))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "irv2.pth")
    assert weights_normalisation(tmp_path / "irv2.pth") == "imagenet"
    model = create_model("inception_resnet_v2", 2, tmp_path / "irv2.pth")
    assert model.normalisation == "imagenet"
    assert torch.allclose(model.mean.flatten(), torch.tensor(NORMALISATIONS["imagenet"][0]))
    x = torch.randn(1, 3, 75, 75)
    _close(_features(model.net, "classif", x), _features(src, "classif", x))


@pytest.mark.e2e
def test_torchvision_resnet18_state_dict(tmp_path: Path) -> None:
    src = _randomise_bn(tvm.resnet18())
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    assert detect_format(tmp_path / "r18.pth") == "torch"
    _, report = load_weights("resnet18", 4, tmp_path / "r18.pth")
    assert report.complete and report.head_skipped == ["fc.weight", "fc.bias"]
    model = create_model("resnet18", 4, tmp_path / "r18.pth")
    assert create_model("resnet18", 4, tmp_path / "r18.pth", normalisation="radimagenet").normalisation == "radimagenet"
    with pytest.raises(WeightsError, match="'keras' convention"):
        create_model("resnet18", 4, tmp_path / "r18.pth", normalisation="keras")
    assert weights_normalisation("random") == "radimagenet"
    x = torch.randn(2, 3, 64, 64)
    _close(_features(model.net, "fc", x), _features(src, "fc", x))


# ------------------------------------------------------------------ refusals


def test_wrong_arch_refused_with_report(tmp_path: Path) -> None:
    path = _radimagenet_file(tmp_path / "r18.pt", tvm.resnet18(), 9)
    with pytest.raises(WeightsRefused) as err:
        create_model("resnet50", 2, path)
    line = str(err.value)
    assert "\n" not in line and "refused" in line and "missing" in line
    assert "first missing: layer1.0.conv3.weight" in line or "first missing" in line
    assert err.value.report.mismatched  # layer1.0.conv1 has another shape


def test_truncated_file_refused(tmp_path: Path) -> None:
    torch.save(tvm.resnet18().state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot read weights"):
        create_model("resnet18", 2, tmp_path / "cut.pth")
    report, line = inspect_weights(tmp_path / "cut.pth", "resnet18")
    assert report is None and "cannot read" in line


def test_partial_refused_unless_allowed(tmp_path: Path) -> None:
    src = _randomise_bn(tvm.resnet18())
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("layer4.")}
    torch.save(state, tmp_path / "part.pth")
    with pytest.raises(WeightsRefused, match=r"missing \d+.*first missing: layer4\.0"):
        create_model("resnet18", 2, tmp_path / "part.pth")
    model = create_model("resnet18", 2, tmp_path / "part.pth", allow_partial=True)
    assert torch.equal(model.net.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    report, line = inspect_weights(tmp_path / "part.pth", "resnet18", allow_partial=True)
    assert line is None and report.missing and not report.complete


def test_unknown_arch_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="unknown backbone"):
        create_model("vgg16", 2)
    with pytest.raises(WeightsError, match="no such file"):
        create_model("resnet18", 2, tmp_path / "nope.pt")


# ------------------------------------------------------------------ Keras h5

# pyproject registers no "slow" marker (not this file's to edit): opt in by environment.
slow = pytest.mark.skipif(
    not os.environ.get("RADFED_SLOW_TESTS"), reason="slow (~1 min on 2 cores): set RADFED_SLOW_TESTS=1"
)


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def _keras_model(keras, name: str, size: int, seed: int = 0):
    keras.utils.set_random_seed(seed)
    build = getattr(keras.applications, name)
    model = build(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for w in layer.weights:
            value = keras.ops.convert_to_numpy(w.value)
            leaf = w.path.split("/")[-1]
            if leaf == "bias" or leaf == "beta" or leaf == "moving_mean":
                value = rng.normal(0, 0.1, value.shape)
            elif leaf in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, value.shape)
            new.append(value.astype(np.float32))
        if new:
            layer.set_weights(new)
    return model


def _save_h5(keras, model, path: Path, full: bool = False) -> Path:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    if full:
        legacy_h5_format.save_model_to_hdf5(model, str(path), include_optimizer=False)
    else:  # what tf.keras 2 `save_weights("x_notop.h5")` writes: layers at the root
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def _check_keras(keras, tmp_path, kname, arch, head, size, full=False, rtol=1e-4, rebuild=True):
    kmodel = _keras_model(keras, kname, size)
    path = _save_h5(keras, kmodel, tmp_path / f"{kname}_notop.h5", full=full)
    assert detect_format(path) == "keras-h5"
    assert weights_normalisation(path) == "keras"
    model = create_model(arch, 2, path)
    assert model.normalisation == "keras"
    x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
    expected = torch.as_tensor(keras.ops.convert_to_numpy(kmodel(x, training=False)))
    got = _features(model.net, head, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    _close(got, expected, rtol)
    if not rebuild:
        return path
    # A client rebuilding from random with the same convention computes the same thing.
    client = create_model(arch, 2, "random", normalisation="keras")
    client.load_state_dict(model.state_dict())
    _close(_features(client.net, head, torch.from_numpy(x).permute(0, 3, 1, 2)), expected, rtol)
    return path


@pytest.mark.e2e
def test_keras_resnet50(keras, tmp_path: Path) -> None:
    _check_keras(keras, tmp_path, "ResNet50", "resnet50", "fc", 64, full=True)
    # Keras 3's own `save_weights` layout drops layer names: refused with one line
    kmodel = _keras_model(keras, "ResNet50", 32)
    kmodel.save_weights(tmp_path / "r50.weights.h5")
    with pytest.raises(WeightsError, match="Keras 3 '.weights.h5' layout is not supported"):
        create_model("resnet50", 2, tmp_path / "r50.weights.h5")


@pytest.mark.e2e
def test_keras_densenet121(keras, tmp_path: Path) -> None:
    path = _check_keras(keras, tmp_path, "DenseNet121", "densenet121", "classifier", 64, rebuild=False)
    with pytest.raises(WeightsRefused) as err:  # a Keras file of another model
        create_model("resnet50", 2, path)
    assert "looks like a Keras densenet121" in str(err.value) and "missing" in str(err.value)
    assert "\n" not in str(err.value)
    data = path.read_bytes()  # a truncated h5 file
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="cannot read Keras h5|truncated"):
        create_model("densenet121", 2, tmp_path / "cut.h5")


@pytest.mark.e2e
def test_keras_inception_v3(keras, tmp_path: Path) -> None:
    _check_keras(keras, tmp_path, "InceptionV3", "inception_v3", "fc", 75)


@pytest.mark.e2e
@slow
def test_keras_inception_resnet_v2(keras, tmp_path: Path) -> None:
    _check_keras(keras, tmp_path, "InceptionResNetV2", "inception_resnet_v2", "classif", 75)


@pytest.mark.e2e
def test_round_checkpoint_seeds_an_experiment_and_passes_inspect(tmp_path):
    """A radfed round checkpoint (`net.`-prefixed Classifier state, spec, convention) is a
    weight file: `weights inspect` accepts it and create_model loads it exactly."""
    import json as _json

    from radfed.models import create_model as build
    from radfed.weights import detect_format, inspect_weights, weights_normalisation

    torch.manual_seed(3)
    model = build("resnet18", 2, "random")
    path = tmp_path / "round-003.pt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "round": 3,
            "spec": _json.dumps({"weights": "random"}),
            "normalisation": model.normalisation,
        },
        path,
    )
    assert detect_format(path) == "radfed-checkpoint"
    assert weights_normalisation(path) == "radimagenet"
    report, refusal = inspect_weights(path, "resnet18")
    assert refusal is None and report is not None and not report.missing
    again = build("resnet18", 2, path)
    backbone = [k for k in model.state_dict() if not k.startswith("net.fc.")]
    assert all(torch.equal(model.state_dict()[k], again.state_dict()[k]) for k in backbone)
    assert again.normalisation == "radimagenet"
    from tests.federation import cli

    proc = cli("server.cli", "weights", "inspect", str(path), "--arch", "resnet18", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
