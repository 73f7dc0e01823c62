"""The dashboard's "Submit" page: a researcher asks the coordinator to run an experiment.

Every choice comes from what the registries offer (backbones, the coordinator's weights
registry, freeze policies, strategies and their parameters, privacy modes); the only
typed text is the experiment's name and its task labels, both checked to be plain
words. The submission is validated like a TOML spec (radfed.experiment_queue) and
queued as pending; the coordinator approves or rejects it (`coordinator queue ...`).
Below the form: this researcher's own submissions, with the coordinator's decisions.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.auth import accounts, current_researcher, login_form
from radfed.experiment_queue import ExperimentQueue, QueueError
from radfed.spec import AUGMENTATIONS, BACKBONES, BN_POLICIES, FREEZE_POLICIES, ExperimentSpec
from radfed.store import StoreError
from radfed.weight_files import RANDOM, weight_files

KEY = "submit."  # widget keys: unique across the dashboard's pages
DEFAULTS = ExperimentSpec(name="defaults")
QUEUE_COLUMNS = {
    "id": "#",
    "name": "Experiment",
    "submitted_at": "Submitted",
    "status": "Status",
    "reviewer": "Reviewer",
    "reason": "Reason",
    "run": "Run",
    "error": "Error",
}


@st.cache_resource(show_spinner=False)
def _queue(url: str) -> ExperimentQueue:
    """One queue handle per database, on the accounts' store (one connection pool)."""
    return ExperimentQueue(accounts().store)


def experiment_queue() -> ExperimentQueue:
    """The queue of the dashboard's database."""
    return _queue(accounts().store.url)


def _number(label: str, default: Any, key: str, **kw: Any) -> Any:
    """An int or float input matching the default's type (the spec checks the range)."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise TypeError(f"{key}: not a number default {default!r}")
    if isinstance(default, int):
        return int(st.number_input(label, value=default, step=1, key=KEY + key, **kw))
    return float(st.number_input(label, value=float(default), format="%g", key=KEY + key, **kw))


def _params(title: str, params: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Number inputs for a strategy's or privacy mode's parameters, defaults filled in."""
    if not params:
        return {}
    st.caption(title)
    columns = st.columns(min(len(params), 3))
    values = {}
    for i, (name, info) in enumerate(params.items()):
        with columns[i % len(columns)]:
            values[name] = _number(name, info["default"], f"{prefix}.{name}", help=info["doc"])
    return values


def submission_form() -> dict[str, Any]:
    """The form's values, in the spec's keys."""
    from strategies import describe, describe_privacy  # imports Flower: only on this page

    strategies = {row["name"]: row for row in describe()}
    modes = {row["mode"]: row for row in describe_privacy()}
    left, right = st.columns(2)
    with left:
        name = st.text_input(
            "Experiment name",
            key=KEY + "name",
            placeholder="pneumonia-resnet50",
            help="Letters, digits, . _ - (64 at most).",
        )
        labels = st.text_input(
            "Task labels (comma-separated)",
            value=", ".join(DEFAULTS.labels),
            key=KEY + "labels",
            help="The classes, as the clinics map their data to them.",
        )
        backbone = st.selectbox("Backbone", BACKBONES, index=BACKBONES.index("resnet50"), key=KEY + "backbone")
        weights = st.selectbox(
            "Weights (the coordinator's weights registry)", [RANDOM, *weight_files()], key=KEY + "weights"
        )
        image_size = _number("Image size (px)", DEFAULTS.image_size, "image_size", min_value=16, max_value=1024)
        freeze = st.selectbox("Freeze policy", FREEZE_POLICIES, key=KEY + "freeze")
        unfreeze_top = _number(
            "Unfrozen top layers (top-k)",
            DEFAULTS.unfreeze_top,
            "unfreeze_top",
            min_value=1,
            disabled=freeze != "top-k",
        )
    with right:
        rounds = _number("Rounds", DEFAULTS.rounds, "rounds", min_value=1)
        local_epochs = _number("Local epochs per round", DEFAULTS.local_epochs, "local_epochs", min_value=1)
        batch_size = _number("Batch size", DEFAULTS.batch_size, "batch_size", min_value=1)
        learning_rate = _number("Learning rate", DEFAULTS.learning_rate, "learning_rate", min_value=0.0)
        min_clinics = _number("Clinics needed (min_clinics)", DEFAULTS.min_clinics, "min_clinics", min_value=1)
        augment = st.selectbox("Augmentation", AUGMENTATIONS, key=KEY + "augment")
        bn_policy = st.selectbox(
            "BatchNorm statistics", BN_POLICIES, index=BN_POLICIES.index(DEFAULTS.bn_policy), key=KEY + "bn_policy"
        )
        seed = _number("Seed", DEFAULTS.seed, "seed", min_value=0)
    strategy = st.selectbox(
        "Strategy", list(strategies), key=KEY + "strategy", format_func=lambda s: f"{s}: {strategies[s]['summary']}"
    )
    strategy_params = _params("Strategy parameters", strategies[strategy]["params"], f"strategy.{strategy}")
    mode = st.selectbox(
        "Privacy", list(modes), key=KEY + "privacy", format_func=lambda m: f"{m}: {modes[m]['summary']}"
    )
    privacy = _params("Privacy parameters", modes[mode]["params"], f"privacy.{mode}")
    form = dict(
        name=name.strip(),
        labels=[x.strip() for x in labels.split(",") if x.strip()],
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        freeze=freeze,
        rounds=rounds,
        local_epochs=local_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        min_clinics=min_clinics,
        augment=augment,
        bn_policy=bn_policy,
        seed=seed,
        strategy=strategy,
        strategy_params=strategy_params,
        privacy={"mode": mode, **privacy},
    )
    if freeze == "top-k":
        form["unfreeze_top"] = unfreeze_top
    return form


def show_own_submissions(queue: ExperimentQueue, name: str) -> None:
    """This researcher's submissions, newest first, with the coordinator's decisions."""
    rows = queue.submissions(submitted_by=name)
    st.markdown("**Your submissions**")
    if not rows:
        st.info("None yet.")
        return
    frame = pd.DataFrame(rows[::-1])[list(QUEUE_COLUMNS)].rename(columns=QUEUE_COLUMNS)
    st.dataframe(frame, hide_index=True, width="stretch")


def submit_page() -> None:
    """Submit an experiment for the coordinator's review (needs a login, also on loopback)."""
    st.header("Submit an experiment")
    try:
        who = current_researcher()
        if who is None:
            st.info("Submitting needs a login, so that the coordinator knows who asks.")
            login_form(key="radfed-login-submit")
            st.stop()
        queue = experiment_queue()
    except StoreError as e:
        st.error(str(e))
        return
    st.caption(
        f"As **{who.name}**. The coordinator reviews each submission "
        "(`coordinator queue approve ID`); approved ones run in order."
    )
    form = submission_form()
    if st.button("Submit for review", type="primary", key=KEY + "submit"):
        try:
            sid = queue.submit(form, who.name)
        except QueueError as e:
            st.error(str(e))
        else:
            st.success(f"Submitted as #{sid} ({form['name']}); waiting for the coordinator's review.")
    show_own_submissions(queue, who.name)
