"""The ServerApp: one federated experiment, from spec to recorded run.

Flower starts it (via the SuperLink) for each `coordinator run`; it reads the spec, the
database URL and the checkpoint folder from the run config, waits for enough clinics,
runs the strategy and records everything on the way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from radfed.audit import Registry
from radfed.batchnorm import batchnorm_state_keys, batchnorm_statistics_keys
from radfed.features import split_head, state_digest
from radfed.models import apply_freeze, create_model
from radfed.object_pulls import quicker_object_pulls
from radfed.spec import ExperimentSpec
from radfed.store import Store
from server.delivery import deliver
from server.holdout import ExcludingGrid, evaluate_holdout, find_holdout
from server.membership import member_grid
from server.packing_grid import PackingGrid
from server.recorder import RunRecorder
from server.resume import load_checkpoint
from strategies import build_strategy, check_privacy
from strategies.fedbn import FedBN
from strategies.secagg import SECAGG_MODE, run_secure, secure_strategy

log = logging.getLogger("radfed.server")
app = ServerApp()


class NotEnoughClinics(RuntimeError):
    """Fewer clinics connected than the experiment's `min_clinics` within its timeout."""


def wait_for_clinics(grid: Grid, minimum: int, timeout: float) -> int:
    """Block until `minimum` SuperNodes are connected; refuse after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (count := len(list(grid.get_node_ids()))) < minimum:
        if time.monotonic() > deadline:
            raise NotEnoughClinics(
                f"only {count} of {minimum} clinics connected within {timeout:g} s; "
                "start more `client-node start` processes or lower min_clinics"
            )
        time.sleep(1)
    return count


def trainable_keys(model: torch.nn.Module, spec: ExperimentSpec) -> set[str]:
    """Parameters the clinics train under the spec's freeze policy (what DP may change)."""
    apply_freeze(model, spec.freeze, spec.unfreeze_top)
    return {name for name, p in model.named_parameters() if p.requires_grad}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one experiment; the run row ends 'completed' or 'failed' with a reason."""
    from flwr.superlink.grid import http_grid

    quicker_object_pulls(http_grid)  # clinics' updates fetched as soon as they are uploaded
    cfg = context.run_config
    spec = ExperimentSpec.from_json(str(cfg["spec"]))
    store = Store(str(cfg["database-url"]) or None)
    weights_name = "random" if spec.weights == "random" else Path(spec.weights).name
    privacy = check_privacy(spec.privacy, spec.min_clinics, spec.strategy)
    holdout = str(cfg.get("holdout", "") or "")
    start_round = int(cfg.get("resume-round", 0) or 0)  # `coordinator run --resume`
    simulated = str(cfg.get("simulated", "") or "")  # `coordinator simulate`: virtual clinics
    if start_round:
        run_id = int(cfg["resume-run"])
        store.resume_run(run_id, str(context.run_id), start_round)
    else:
        exp_id = store.create_experiment(
            spec.name,
            spec.to_json(),
            spec.backbone,
            weights_name,
            spec.strategy,
            sweep=spec.sweep,
            weight_source=spec.weight_source,
            privacy=privacy,
        )
        run_id = store.start_run(exp_id, str(context.run_id), spec.rounds, holdout=holdout, simulated=simulated)
    todo = spec.rounds - start_round  # the strategy's rounds 1..todo are rounds start+1..N
    try:
        # models travel packed (server.packing_grid); under node auth only the register's active clinics
        grid = member_grid(PackingGrid(grid))
        train_grid: Grid = grid
        if holdout:  # leave-one-clinic-out: the strategy never sees that node
            holdout_node = find_holdout(grid, holdout, spec.min_clinics, spec.clinic_timeout)
            train_grid = ExcludingGrid(grid, {holdout_node})
        wait_for_clinics(train_grid, spec.min_clinics, spec.clinic_timeout)
        torch.manual_seed(spec.seed)  # the initial head (and random backbones) from the spec's seed
        model = create_model(spec.backbone, len(spec.labels), spec.weights)
        if start_round:
            model.load_state_dict(load_checkpoint(str(cfg["resume-checkpoint"]), str(cfg["resume-sha256"])))
        ckpt_dir = Path(str(cfg["checkpoint-dir"])) / f"run-{run_id}"
        # Clinics rebuild the same network: the input convention of the weight source
        # (and, for Keras weights, its layout) is not in the state_dict, so it travels here.
        shared = {"spec": spec.to_json(), "normalisation": model.normalisation}
        initial, frozen, backbone = model.state_dict(), None, None
        if spec.freeze == "all" and privacy["mode"] != SECAGG_MODE:
            # head-only rounds: only the head travels after each clinic's first message
            head_keys, frozen = split_head(model)
            shared.update(
                {
                    "head-only": True,
                    "backbone-sha": state_digest(frozen, arch=spec.backbone, normalisation=model.normalisation),
                }
            )
            backbone = ArrayRecord(frozen)
            initial = {k: initial[k] for k in head_keys}
        recorder = RunRecorder(
            store,
            run_id,
            spec,
            ckpt_dir,
            Registry(store),
            str(context.run_id),
            frozen=frozen,
            key_order=list(model.state_dict()),
            normalisation=model.normalisation,
            round_offset=start_round,
        )
        if privacy["mode"] == SECAGG_MODE:
            if holdout:
                raise ValueError("--holdout is not available with privacy mode secagg+")
            arrays = ArrayRecord(initial)
            secure = secure_strategy(
                recorder, list(arrays.keys()), arrays, trainable_keys(model, spec), todo, spec.min_clinics, shared
            )
            run_secure(train_grid, context, secure, privacy, todo, spec.round_timeout)
        else:
            strategy = build_strategy(
                replace(spec, rounds=todo),
                recorder,
                bn_keys=batchnorm_state_keys(model),
                backbone=backbone,
                trainable_keys=trainable_keys(model, spec),
                statistics_keys=batchnorm_statistics_keys(model),
            )
            result = strategy.start(
                train_grid,
                ArrayRecord(initial),
                num_rounds=todo,
                timeout=spec.round_timeout,
                train_config=ConfigRecord(dict(shared)),
                evaluate_config=ConfigRecord(dict(shared)),
                evaluate_fn=recorder.checkpoint,
            )
            if holdout:  # it never received the backbone: it gets the full model
                final_state = {**(frozen or {}), **result.arrays.to_torch_state_dict()}
                final_arrays = ArrayRecord({k: final_state[k] for k in model.state_dict()})
                plain = {k: v for k, v in shared.items() if k not in ("head-only", "backbone-sha")}
                config = ConfigRecord(
                    {
                        **plain,
                        "server-round": todo,
                        "local-bn": isinstance(getattr(strategy, "strategy", strategy), FedBN),
                        "local-stats": privacy["mode"] != "none",
                    }
                )
                reply = evaluate_holdout(train_grid, holdout_node, final_arrays, config, spec.round_timeout)
                recorder.holdout((recorder.stopped_at - start_round) if recorder.stopped_at else todo, reply)
        final = recorder.val_auroc.get(recorder.stopped_at or spec.rounds)
        fedbn = privacy["mode"] != SECAGG_MODE and isinstance(getattr(strategy, "strategy", strategy), FedBN)
        try:  # the clinics get the model back (not virtual ones); a failed delivery leaves the run completed
            if not simulated:
                deliver(
                    grid,
                    store,
                    run_id,
                    str(context.run_id),
                    spec,
                    model.normalisation,
                    recorder.pooled,
                    {**shared, "local-bn": fedbn, "local-stats": privacy["mode"] != "none"},
                    audit=Registry(store),
                    timeout=spec.round_timeout,
                )
        except Exception as err:  # noqa: BLE001 - reported, never fatal to a trained run
            log.warning("delivering the models failed: %s", f"{type(err).__name__}: {err}".splitlines()[0])
        store.finish_run(run_id, "completed", final_auroc=final)
        log.info("run %s completed: pooled AUROC %s", run_id, final)
    except BaseException as err:
        store.finish_run(run_id, "failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
        raise
    finally:
        store.close()
