"""Head-only rounds (freeze = "all"): cached features train the head exactly as the full
forward would, caches are keyed by backbone and data, and only clinics that have not
confirmed the backbone get it."""

from __future__ import annotations

import copy

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from radfed import features as feat
from radfed.models import create_model
from radfed.training import evaluate, evaluate_head, train_head, train_local
from strategies.head_only import BACKBONE_KEY, HeadOnlyMixin

CPU = torch.device("cpu")


@pytest.mark.e2e
@pytest.mark.parametrize(("precision", "tolerance"), [("float32", 1e-6), ("bfloat16", 1e-3)])
def test_head_on_cached_features_equals_training_with_a_frozen_backbone(precision, tolerance, monkeypatch):
    """Exact in float32; under bfloat16 autocast (radfed.precision's choice on a CPU with
    native bfloat16) the backbone's features differ in the last bits between a batch of 4
    and the cache's larger batches, so the heads agree to bfloat16's precision."""
    monkeypatch.setenv("RADFED_CPU_PRECISION", precision)
    torch.manual_seed(0)
    model = create_model("resnet18", 2)
    feat.split_head(model)
    twin = copy.deepcopy(model)
    images, labels = torch.rand(13, 1, 16, 16), torch.arange(13) % 2
    train_local(model, images, labels, epochs=2, batch_size=4, learning_rate=1e-2, seed=5, device=CPU)
    cached = feat.compute_features(twin, images, images[:9], device=CPU)
    train_head(
        twin.head,
        cached.train,
        cached.train_flipped,
        labels,
        epochs=2,
        batch_size=4,
        learning_rate=1e-2,
        seed=5,
        device=CPU,
    )
    assert not torch.equal(twin.head.weight, create_model("resnet18", 2).head.weight)
    assert torch.allclose(model.head.weight, twin.head.weight, atol=tolerance)
    full, head = evaluate(model, images[:9], labels[:9], device=CPU), evaluate_head(twin.head, cached.val, labels[:9])
    assert full.loss == pytest.approx(head.loss, abs=10 * tolerance) and full.auroc == pytest.approx(head.auroc)


@pytest.mark.e2e
def test_caches_are_keyed_by_backbone_and_data(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", 2)
    keys, frozen = feat.split_head(model)
    assert keys == ["net.fc.weight", "net.fc.bias"] and not set(keys) & set(frozen)
    digest = feat.state_digest(frozen, arch="resnet18", normalisation="radimagenet")
    assert digest != feat.state_digest(frozen, arch="resnet18", normalisation="imagenet")
    changed = dict(frozen, **{"net.conv1.weight": frozen["net.conv1.weight"] + 1e-3})
    assert digest != feat.state_digest(changed, arch="resnet18", normalisation="radimagenet")
    data = torch.rand(4, 1, 16, 16)
    assert feat.tensors_digest(data) != feat.tensors_digest(data.flip(-1))

    with pytest.raises(feat.BackboneMissing):
        feat.load_backbone(tmp_path, digest)
    with pytest.raises(ValueError, match="digest"):
        feat.keep_backbone(tmp_path, digest, changed, arch="resnet18", normalisation="radimagenet")
    feat.keep_backbone(tmp_path, digest, frozen, arch="resnet18", normalisation="radimagenet")
    assert torch.equal(feat.load_backbone(tmp_path, digest)["net.conv1.weight"], frozen["net.conv1.weight"])

    path = feat.feature_path(tmp_path, digest, feat.tensors_digest(data), 16)
    assert feat.load_features(path) is None
    feats = feat.compute_features(model, data, data[:2], device=CPU)
    feat.save_features(path, feats)
    again = feat.load_features(path)
    assert again is not None and torch.equal(again.train_flipped[:], feats.train_flipped)
    path.write_bytes(b"broken")
    assert feat.load_features(path) is None  # recomputed, never fatal


class _Base:
    """The Flower side of a strategy: one message per node sharing one payload (as FedAvg)."""

    def configure_train(self, server_round, arrays, config, grid):
        content = RecordDict({"arrays": arrays, "config": config})
        return [Message(content=content, message_type="train", dst_node_id=n) for n in grid]

    def aggregate_train(self, server_round, replies):
        return None, None


def _reply(to: Message) -> Message:
    return Message(RecordDict({"config": ConfigRecord({})}), reply_to=to)


def test_backbone_goes_once_to_each_clinic(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # as inside a ServerApp
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    strategy = type("S", (HeadOnlyMixin, _Base), {})()
    strategy.backbone = ArrayRecord({"net.conv1.weight": torch.zeros(2, 2)})
    head = ArrayRecord({"net.fc.weight": torch.ones(2, 2)})
    first = strategy.configure_train(1, head, ConfigRecord({}), [11, 12])
    assert all(BACKBONE_KEY in m.content.array_records for m in first)
    strategy.aggregate_train(1, [_reply(first[0])])  # clinic 12 failed or was late
    second = {m.metadata.dst_node_id: m for m in strategy.configure_train(2, head, ConfigRecord({}), [11, 12, 13])}
    assert BACKBONE_KEY not in second[11].content.array_records
    assert BACKBONE_KEY in second[12].content.array_records and BACKBONE_KEY in second[13].content.array_records
    assert list(second[11].content.array_records["arrays"].keys()) == ["net.fc.weight"]
