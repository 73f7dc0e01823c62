"""The ClientApp each clinic runs: local training and evaluation on the clinic's own DICOM.

Flower starts a fresh process for every message, so nothing survives in memory between
rounds; header facts and preprocessed images come from the clinic's on-disk cache instead.
With a frozen backbone (freeze = "all") the backbone's features are cached too and only the
head trains and travels (radfed/features.py). Replies carry weights and aggregate numbers
only; the first reply of a run also carries the clinic's data card (counts per label, split,
modality, equipment, size bucket, transfer syntax and rejection reason:
ClinicData.shared_card). Any failure is answered with a reason that
names the kind of problem, never a path, a tag value or a traceback: those stay in the
clinic's own log.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client_node.delivery import keep_delivery
from client_node.legacy import legacy_format_mod, secagg_mod
from client_node.outbox import outbox_mod
from client_node.packing import packing_mod
from client_node.simulation import simulation_mod
from client_node.transfer import transfer_mod
from radfed import features as feat
from radfed.batchnorm import as_evaluated, batchnorm_state_keys, reestimate_batchnorm
from radfed.data import DATA_CARD_RECORD, ClinicData, DataError, load_clinic
from radfed.delivery import DELIVERY_KEY, MODELS_FOLDER, RECEIPT_RECORD
from radfed.models import Classifier, apply_freeze, create_model, model_to_load
from radfed.spec import ExperimentSpec, data_options
from radfed.training import (
    pick_device,
    predict_head_logits,
    predict_logits,
    recipe_kwargs,
    train_head,
    train_local,
)
from radfed.unit_scores import split_validation

log = logging.getLogger("radfed.clinic")
# simulation_mod: virtual clinics only; packing_mod: models travel packed (radfed.packing),
# so the outbox log below it records the tensors themselves.
app = ClientApp(mods=[simulation_mod, packing_mod, outbox_mod])


def _process_age() -> float:
    """Seconds since this ClientApp process started (Linux), for the timing log line."""
    try:
        uptime = float(open("/proc/uptime").read().split()[0])
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _guarded(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Turn any exception into a PHI-free error reply; the details go to the local log."""

    @functools.wraps(handler)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except DataError as err:
            log.error("clinic data problem: %s", err)
            reason = "clinic data problem; run `client-node check-data` at the clinic"
        except feat.BackboneMissing as err:
            log.error("%s", err)
            reason = "frozen backbone not cached at the clinic; restart the run"
        except Exception:  # noqa: BLE001 - every failure must become a clean reply
            log.exception("ClientApp failed")
            reason = "ClientApp failed at the clinic; see the clinic's client-node log"
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)

    return wrapper


def _setup(context: Context) -> None:
    threads = int(context.node_config.get("threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def _data(spec: ExperimentSpec, context: Context) -> ClinicData:
    cfg = context.node_config
    manifest = str(cfg.get("manifest", "") or "")
    cache = str(cfg.get("cache-dir", "") or "")
    return load_clinic(
        Path(str(cfg["data-path"])),
        spec.labels,
        spec.image_size,
        manifest=Path(manifest) if manifest else None,
        val_fraction=spec.val_fraction,
        seed=spec.seed,
        cache_dir=Path(cache) if cache else None,
        workers=int(cfg.get("workers", 1) or 1),
        options=data_options(spec.data).with_local(json.loads(str(cfg.get("data-options", "") or "{}"))),
    )


def _model(spec: ExperimentSpec, msg: Message, context: Context) -> torch.nn.Module:
    """The received global model, with whatever this clinic keeps local restored onto it."""
    return _model_from_state(spec, msg.content["arrays"].to_torch_state_dict(), msg.content["config"], context)


def _model_from_state(
    spec: ExperimentSpec, state: dict[str, torch.Tensor], config: ConfigRecord, context: Context
) -> torch.nn.Module:
    model = model_to_load(spec.backbone, len(spec.labels), str(config.get("normalisation", "radimagenet")))
    model.load_state_dict(state)  # strict: every weight is the received one
    keys = _local_keys(model, config)
    path = _local_path(context)
    if keys and path.is_file():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict({k: v for k, v in saved.items() if k in keys}, strict=False)
    apply_freeze(model, spec.freeze, spec.unfreeze_top)
    return model


def _state_dir(context: Context) -> Path:
    return Path(str(context.node_config.get("state-dir", "") or ".radfed-state"))


def _head_model(
    spec: ExperimentSpec, msg: Message, context: Context, data: ClinicData
) -> tuple[Classifier, feat.FeatureSet]:
    """Head-only rounds (freeze "all"): the received head plus cached backbone features.

    The frozen backbone comes with the first message of a run and is kept by digest
    under the state folder; features are computed once per (backbone, data) and cached.
    """
    config = msg.content["config"]
    digest = str(config["backbone-sha"])
    norm = str(config.get("normalisation", "radimagenet"))
    model = create_model(spec.backbone, len(spec.labels), "random", normalisation=norm)
    head_keys, _ = feat.split_head(model)
    received = msg.content.array_records.get("backbone")
    if received is not None:
        feat.keep_backbone(
            _state_dir(context), digest, received.to_torch_state_dict(), arch=spec.backbone, normalisation=norm
        )
    cache_dir = Path(str(context.node_config.get("cache-dir", "") or _state_dir(context)))
    data_digest = feat.tensors_digest(data.train.pixels, data.train.labels, data.val.pixels, data.val.labels)
    path = feat.feature_path(cache_dir, digest, data_digest, spec.image_size)
    feats = feat.load_features(path)
    if feats is None:
        t0 = time.monotonic()
        backbone = (
            received.to_torch_state_dict() if received is not None else feat.load_backbone(_state_dir(context), digest)
        )
        _load_exactly(model, backbone, [k for k in model.state_dict() if k not in head_keys])
        feats = feat.compute_features(model, data.train.pixels, data.val.pixels, path=path)
        log.info(
            "computed backbone features once: %d images in %.1fs",
            len(data.train.labels) + len(data.val.labels),
            time.monotonic() - t0,
        )
    _load_exactly(model, msg.content["arrays"].to_torch_state_dict(), head_keys)
    return model, feats


def _load_exactly(model: torch.nn.Module, state: dict[str, torch.Tensor], keys: list[str]) -> None:
    """Load a partial state_dict that must hold exactly `keys`."""
    if set(state) != set(keys):
        raise ValueError("received weights do not hold the expected tensors")
    model.load_state_dict(state, strict=False)


def _local_keys(model: torch.nn.Module, config: ConfigRecord) -> set[str]:
    """state_dict entries that stay at this clinic between rounds of a run.

    FedBN (`local-bn`): every BatchNorm weight, bias and statistic. Differential privacy
    (`local-stats`, strategies.privacy): every buffer (BatchNorm running statistics),
    since only clipped, noised parameters may leave the clinic.
    """
    keys: set[str] = set()
    if bool(config.get("local-bn", False)):
        keys |= set(batchnorm_state_keys(model))
    if bool(config.get("local-stats", False)):
        keys |= {name for name, _ in model.named_buffers()} & set(model.state_dict())
    return keys


def _local_path(context: Context) -> Path:
    """Where this clinic keeps its local tensors (FedBN, DP) between rounds of a run."""
    return _state_dir(context) / "local" / f"run-{context.run_id}.pt"


def _save_local(model: torch.nn.Module, keys: set[str], context: Context) -> None:
    state = model.state_dict()
    path = _local_path(context)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: state[k] for k in keys}, path)


def _outgoing(model: torch.nn.Module, msg: Message, context: Context, keys: list[str] | None = None) -> ArrayRecord:
    """The weights sent back (only `keys` if given, e.g. the head): local entries go back as
    received, never this clinic's own. A test-only node option can corrupt the update."""
    state = model.state_dict()
    if keys is not None:
        state = {k: state[k] for k in keys}
    fault = str(context.node_config.get("fault", "") or "")
    if fault:
        log.warning("test fault '%s' applied to this clinic's update", fault)
        for key, value in state.items():
            if value.is_floating_point():
                state[key] = value.fill_(float("nan")) if fault == "nan" else value * 100.0
    record = ArrayRecord(state)
    received = msg.content["arrays"]
    for key in _local_keys(model, msg.content["config"]):
        if key in record.keys() and key in received.keys():
            record[key] = received[key]
    return record


def _reply(
    msg: Message,
    context: Context,
    metrics: dict[str, float | list[float]],
    arrays: ArrayRecord | None = None,
    data_card: dict | None = None,
) -> Message:
    content = RecordDict(
        {
            "metrics": MetricRecord(metrics),
            "clinic": ConfigRecord(
                {"name": str(context.node_config.get("clinic-name", "")), "device": pick_device().type}
            ),
        }
    )
    if arrays is not None:
        content["arrays"] = arrays
    if data_card is not None:  # a ConfigRecord: Flower aggregates MetricRecords, not this
        content[DATA_CARD_RECORD] = ConfigRecord({"json": json.dumps(data_card, sort_keys=True)})
    return Message(content=content, reply_to=msg)


def clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's client-side clipping mod, where the run's DP wrapper asks for it.

    Flower's mods answer every message without a clipping norm with an error, so they
    are applied only when the server sends one (strategies.privacy), and only to
    training (on evaluation they would fail every message).
    """
    config = msg.content.config_records.get("config", ConfigRecord())
    if KEY_CLIPPING_NORM not in config:
        return call_next(msg, context)
    mod = adaptiveclipping_mod if config.get("dp-clipping") == "adaptive" else fixedclipping_mod
    return mod(msg, context, call_next)


@app.train(mods=[transfer_mod, clipping_mod, secagg_mod, legacy_format_mod])
@_guarded
def train(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on held-out patients, then fine-tune it."""
    _setup(context)
    config = msg.content["config"]
    spec = ExperimentSpec.from_json(str(config["spec"]))
    server_round = int(config.get("server-round", 1))
    if bool(config.get("head-only", False)):
        return _train_head_only(msg, context, spec, server_round)
    t0 = time.monotonic()
    data = _data(spec, context)
    model = _model(spec, msg, context)
    metrics: dict[str, float] = {}
    if bool(config.get("evaluate-received", False)):
        metrics = _val_metrics(_for_evaluation(model, spec, config, data), data, spec, count_key="val_examples")
    t1 = time.monotonic()
    seed = spec.seed * 1000 + server_round
    torch.manual_seed(seed)
    loss = train_local(
        model,
        data.train.pixels,
        data.train.labels,
        epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        seed=seed,
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        **recipe_kwargs(spec, server_round),
    )
    log.info(
        "round %d train: %d images; process %.1fs, data+model+eval %.1fs, training %.1fs",
        server_round,
        len(data.train.labels),
        _process_age() - (time.monotonic() - t0),
        t1 - t0,
        time.monotonic() - t1,
    )
    if keys := _local_keys(model, config):
        _save_local(model, keys, context)
    metrics.update({"train_loss": loss, "num-examples": len(data.train.labels)})
    # The first reply of a run carries the clinic's data mix (counts only) for the dashboard.
    card = data.shared_card() if server_round == 1 else None
    return _reply(msg, context, metrics, _outgoing(model, msg, context), card)


def _val_metrics(
    model: torch.nn.Module, data: ClinicData, spec: ExperimentSpec, count_key: str
) -> dict[str, float | list[float]]:
    return _quality_metrics(predict_logits(model, data.val.pixels), data, spec, count_key)


def _quality_metrics(
    logits: torch.Tensor, data: ClinicData, spec: ExperimentSpec, count_key: str
) -> dict[str, float | list[float]]:
    """Validation figures (radfed.reply.ClinicValidation): loss, accuracy, AUROC with its
    95 % CI over patients, sensitivity and specificity at Youden's threshold on this split,
    ECE, health figures, and the per-score counts (and their patient-resampled
    replicates) that make pooled figures and the pooled CI at the server. Aggregates only.

    Per labelled unit (radfed.unit_scores): a study's or series' slices become one score,
    the mean of their log-odds, so the count sent is of studies, series or images."""
    return split_validation(logits.numpy(), data.val, spec.seed).to_metrics(count_key)


def _train_head_only(msg: Message, context: Context, spec: ExperimentSpec, server_round: int) -> Message:
    """A train round with a frozen backbone: the head alone trains, on cached features."""
    config = msg.content["config"]
    t0 = time.monotonic()
    data = _data(spec, context)
    model, feats = _head_model(spec, msg, context, data)
    metrics: dict[str, float] = {}
    if bool(config.get("evaluate-received", False)):
        metrics = _quality_metrics(predict_head_logits(model.head, feats.val), data, spec, "val_examples")
    t1 = time.monotonic()
    seed = spec.seed * 1000 + server_round
    torch.manual_seed(seed)
    recipe = recipe_kwargs(spec, server_round)
    recipe.pop("augment")  # cached features: the flip is the only augmentation
    loss = train_head(
        model.head,
        feats.train,
        feats.train_flipped,
        data.train.labels,
        epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        seed=seed,
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        dropout=feat.head_dropout(model),
        **recipe,
    )
    log.info(
        "round %d head-only train: %d images; data+features+eval %.1fs, training %.2fs",
        server_round,
        len(data.train.labels),
        t1 - t0,
        time.monotonic() - t1,
    )
    metrics.update({"train_loss": loss, "num-examples": len(data.train.labels)})
    head_keys, _ = feat.split_head(model)
    card = data.shared_card() if server_round == 1 else None
    return _reply(msg, context, metrics, _outgoing(model, msg, context, head_keys), card)


@app.evaluate(mods=[transfer_mod, legacy_format_mod])
@_guarded
def evaluate_global(msg: Message, context: Context) -> Message:
    """Evaluate the global model on this clinic's held-out patients."""
    _setup(context)
    config = msg.content["config"]
    spec = ExperimentSpec.from_json(str(config["spec"]))
    data = _data(spec, context)
    if bool(config.get("head-only", False)):
        model, feats = _head_model(spec, msg, context, data)
        logits = predict_head_logits(model.head, feats.val)
        return _reply(msg, context, _quality_metrics(logits, data, spec, "num-examples"))
    model = _as_evaluated_here(_model(spec, msg, context), spec, config, context, data)
    return _reply(msg, context, _val_metrics(model, data, spec, count_key="num-examples"))


def _as_evaluated_here(
    model: torch.nn.Module, spec: ExperimentSpec, config: ConfigRecord, context: Context, data: ClinicData
) -> torch.nn.Module:
    """The final model as this clinic evaluates it (and keeps it, client_node.delivery)."""
    if _local_keys(model, config) and not _local_path(context).is_file():  # a held-out clinic
        reestimate_batchnorm(model, data.train.pixels, labels=data.train.labels)  # FedBN: none of its own yet
        return model
    return _for_evaluation(model, spec, config, data)


def _for_evaluation(
    model: torch.nn.Module, spec: ExperimentSpec, config: ConfigRecord, data: ClinicData
) -> torch.nn.Module:
    """The global model as this clinic evaluates it (radfed.batchnorm.as_evaluated); under
    FedBN (local-bn) the clinic's own statistics are already there. Nothing of it leaves."""
    if bool(config.get("local-bn", False)):
        return model
    return as_evaluated(model, data.train.pixels, spec.bn_policy, data.train.labels)


@app.query()
@_guarded
def identify(msg: Message, context: Context) -> Message:
    """Say which clinic this node is (its name only), so the coordinator can hold one out;
    or, at the end of a run, keep the models it delivers (client_node.delivery)."""
    config = msg.content.config_records.get("config", ConfigRecord())
    if not bool(config.get(DELIVERY_KEY, False)):
        return _reply(msg, context, {})
    _setup(context)
    spec = ExperimentSpec.from_json(str(config["spec"]))
    data = _data(spec, context)

    def as_clinic_model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = _model_from_state(spec, state, config, context)
        if bool(config.get("head-only", False)):  # evaluated on the frozen backbone's features
            return model.eval()
        return _as_evaluated_here(model, spec, config, context, data)

    receipt = keep_delivery(msg, spec, data, _models_dir(context), as_clinic_model)
    reply = _reply(msg, context, {})
    reply.content[RECEIPT_RECORD] = ConfigRecord(receipt)
    return reply


def _models_dir(context: Context) -> Path:
    """Where this clinic keeps the models runs deliver to it (NODE_HOME/models)."""
    given = str(context.node_config.get("models-dir", "") or "")
    return Path(given) if given else _state_dir(context).parent / MODELS_FOLDER


if not log.handlers:  # the clinic's own log (the SuperNode's output); never sent anywhere
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s radfed %(levelname)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(os.environ.get("RADFED_CLINIC_LOG_LEVEL", "INFO"))
