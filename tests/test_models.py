"""Registry, input conventions, transfer policies (freeze / top-k / none) and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from radfed.models import (
    WeightsError,
    apply_freeze,
    create_model,
    default_input_size,
    list_models,
    set_train_mode,
    trainable_state_keys,
)
from radfed.training import train_local


def test_registry() -> None:
    assert list_models() == ["densenet121", "inception_resnet_v2", "inception_v3", "resnet18", "resnet50"]
    assert default_input_size("resnet50") == 224
    assert default_input_size("inception_v3") == default_input_size("inception_resnet_v2") == 299
    with pytest.raises(WeightsError, match="unknown backbone"):
        default_input_size("vgg")


def test_normalisation_default_and_explicit() -> None:
    model = create_model("resnet18", 2)  # backwards compatible: random means [-1, 1]
    assert model.normalisation == "radimagenet"
    assert torch.equal(model.mean.flatten(), torch.full((3,), 0.5))
    assert torch.equal(model.std.flatten(), torch.full((3,), 0.5))
    imagenet = create_model("resnet18", 2, "random", normalisation="imagenet")
    assert imagenet.std.flatten()[0].item() == pytest.approx(0.229)
    keras = create_model("resnet18", 2, "random", normalisation="keras")
    assert keras.mean.flatten()[0].item() == pytest.approx(103.939 / 255)
    assert "mean" not in imagenet.state_dict()  # conventions travel in the run config
    assert all(k.startswith("net.") for k in imagenet.state_dict())
    with pytest.raises(WeightsError, match="unknown normalisation"):
        create_model("resnet18", 2, "random", normalisation="zscore")


@pytest.mark.e2e
def test_keras_convention_changes_resnet50_layout() -> None:
    model = create_model("resnet50", 2, "random", normalisation="keras")
    block = model.net.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert model.net.bn1.eps == pytest.approx(1.001e-5)
    plain = create_model("resnet50", 2)
    assert plain.net.layer2[0].conv2.stride == (2, 2)
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_policies_resnet18() -> None:
    model = create_model("resnet18", 3)
    names = {n for n, _ in model.named_parameters()}
    apply_freeze(model, "none")
    assert _trainable(model) == names
    apply_freeze(model, "all")
    assert _trainable(model) == {"net.fc.weight", "net.fc.bias"}
    # top-10: the head plus the 10 parameterised modules below it = all of layer4
    apply_freeze(model, "top-k", 10)
    assert _trainable(model) == {n for n in names if n.startswith(("net.layer4.", "net.fc."))}
    apply_freeze(model, "top-k", 1)  # only layer4.1.bn2 below the head
    assert _trainable(model) == {"net.fc.weight", "net.fc.bias", "net.layer4.1.bn2.weight", "net.layer4.1.bn2.bias"}
    apply_freeze(model, "top-k", 0)
    assert _trainable(model) == {"net.fc.weight", "net.fc.bias"}
    apply_freeze(model, "top-k", 1000)  # more than there are: everything trains
    assert _trainable(model) == names
    with pytest.raises(ValueError, match="unknown freeze policy"):
        apply_freeze(model, "half")


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["inception_resnet_v2", "densenet121"])
def test_freeze_heads_of_other_archs(arch: str) -> None:
    model = create_model(arch, 2)
    apply_freeze(model, "all")
    head = "net.classif." if arch == "inception_resnet_v2" else "net.classifier."
    assert _trainable(model) == {head + "weight", head + "bias"}
    apply_freeze(model, "none")
    assert all(p.requires_grad for p in model.parameters())


def test_trainable_state_keys() -> None:
    model = create_model("resnet18", 2)
    apply_freeze(model, "all")
    assert trainable_state_keys(model) == ["net.fc.weight", "net.fc.bias"]
    apply_freeze(model, "top-k", 10)
    keys = trainable_state_keys(model)
    assert "net.layer4.1.bn2.running_mean" in keys and "net.layer4.0.bn1.num_batches_tracked" in keys
    assert not any(k.startswith("net.layer3.") for k in keys)
    apply_freeze(model, "none")
    assert trainable_state_keys(model) == list(model.state_dict())


def _step(model) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 0, 1])
    train_local(model, images, labels, epochs=1, batch_size=4, learning_rate=1e-2, seed=0, device=torch.device("cpu"))


@pytest.mark.e2e
def test_frozen_batchnorm_stays_in_eval_and_keeps_stats() -> None:
    model = create_model("resnet18", 2)
    apply_freeze(model, "top-k", 10)
    set_train_mode(model)
    assert not model.net.bn1.training and not model.net.layer3[1].bn2.training
    assert model.net.layer4[1].bn2.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(trainable_state_keys(model))
    assert "net.layer4.1.bn2.running_mean" in changed
    assert "net.layer3.1.bn2.running_mean" not in changed
    assert "net.bn1.running_var" not in changed


def test_head_only_changes_only_head() -> None:
    model = create_model("resnet18", 2)
    apply_freeze(model, "all")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"net.fc.weight", "net.fc.bias"}


@pytest.mark.e2e
def test_client_rebuild_roundtrip() -> None:
    """What the ClientApp does: random model, load the global state, apply the policy."""
    server = create_model("resnet18", 3)
    client = create_model("resnet18", 3, "random")
    client.load_state_dict(server.state_dict())
    apply_freeze(client, "top-k", 10)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(server.eval()(x), client.eval()(x))
        f = client.features(x)
    assert f.shape == (2, 512)
    assert isinstance(client.head, nn.Linear)


# ---------------------------------------------------------------------- CLI


@pytest.mark.e2e
def test_cli_inspect_ok_and_json(tmp_path) -> None:
    from torchvision import models as tvm

    from server.weights_cli import weights_app

    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")
    runner = CliRunner()
    result = runner.invoke(weights_app, ["inspect", str(tmp_path / "r18.pth"), "--arch", "resnet18", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accepted"] and data["counts"]["matched"] == 120
    assert data["normalisation"] == "imagenet" and data["format"] == "torch"
    table = runner.invoke(weights_app, ["inspect", str(tmp_path / "r18.pth"), "--arch", "resnet18"])
    assert table.exit_code == 0 and "matched" in table.stdout
    assert "Example" in runner.invoke(weights_app, ["inspect", "--help"]).stdout


@pytest.mark.e2e
def test_cli_inspect_refusals(tmp_path) -> None:
    from torchvision import models as tvm

    from server.weights_cli import weights_app

    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")
    runner = CliRunner()
    result = runner.invoke(weights_app, ["inspect", str(tmp_path / "r18.pth"), "--arch", "resnet50", "--json"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused" in lines[0] and "missing 165" in lines[0]
    assert json.loads(result.stdout)["accepted"] is False
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(weights_app, ["inspect", str(tmp_path / "junk.pt"), "--arch", "resnet18"])
    assert result.exit_code == 1 and "cannot read" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    partial = runner.invoke(
        weights_app, ["inspect", str(tmp_path / "r18.pth"), "--arch", "resnet50", "--allow-partial"]
    )
    assert partial.exit_code == 0


def test_model_to_load_is_a_fresh_copy_of_the_right_shape():
    """The clinic's per-message network: built once per process, handed out as copies."""
    from radfed.models import model_to_load

    reference = create_model("resnet18", 3, "random", normalisation="imagenet")
    first = model_to_load("resnet18", 3, "imagenet")
    assert first.normalisation == "imagenet" and list(first.state_dict()) == list(reference.state_dict())
    first.load_state_dict(reference.state_dict())  # strict: every key is there
    with torch.no_grad():
        next(first.parameters()).add_(1.0)
        first.net.conv1.weight.requires_grad_(False)
    second = model_to_load("resnet18", 3, "imagenet")
    assert second is not first and next(second.parameters()).requires_grad
    assert not torch.equal(next(second.parameters()), next(first.parameters()))
    assert model_to_load("resnet18", 2, "imagenet").state_dict()[f"net.{reference.head_name}.weight"].shape[0] == 2
