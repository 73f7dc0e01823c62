"""The Streamlit dashboard page by page (AppTest), its pure tables, and the `dashboard`
CLI as a real process.

The pages run against one store filled the way a federation fills it
(tests/dashboard_store.py: a sweep of four runs, a failed run, a run in progress, a
centralised baseline, the clinic register and audit trail). Every page test also checks
that nothing on the page reads None or NaN, shows a Flower run id or a path on the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from radfed.store import Store
from tests.dashboard_store import Filled, fill, unreadable, visible_texts, walk

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    folder = tmp_path_factory.mktemp("dashboard-store")
    return fill(f"sqlite:///{folder / 'radfed.db'}", folder)


def open_app(monkeypatch: pytest.MonkeyPatch, db_url: str, page: str | None = None) -> AppTest:
    """Run the app as `streamlit run app.py -- --db URL` would, then switch to `page`."""
    monkeypatch.setattr(sys, "argv", [str(APP), "--db", db_url])
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not unreadable(at), unreadable(at)
    return at


def texts(at: AppTest) -> str:
    return "\n".join(visible_texts(at))


def frame_with(at: AppTest, column: str):
    return next(
        n.value
        for n in walk(at._tree)
        if n.type in ("dataframe", "table") and column in list(n.value.columns) + [n.value.index.name]
    )


def charts(at: AppTest) -> list[dict]:
    return [json.loads(n.proto.spec) for n in walk(at._tree) if n.type == "vega_lite_chart"]


def marks(spec: dict) -> set[str]:
    found = set()
    for layer in spec.get("layer", [spec]):
        mark = layer.get("mark")
        found.add(mark["type"] if isinstance(mark, dict) else mark)
    return found


# ------------------------------------------------------------------------- the pages


@pytest.mark.e2e
def test_leaderboard_ranks_by_the_pooled_auroc_with_its_ci(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url)
    with Store(filled.url) as store:
        finished = store.leaderboard()
    board = frame_with(at, "vs #1")
    assert board.index.tolist() == ["1", "2", "3", "4", "5"]
    assert board["Run"].tolist() == [f"{e['experiment']} · run {e['run_id']}" for e in finished]
    assert [float(h.split()[0]) for h in board["Pooled AUROC [95% CI]"]] == [
        round(e["pooled_auroc"], 3) for e in finished
    ]
    assert all(re.fullmatch(r"0\.\d{3} \[0\.\d{3}–[01]\.\d{3}\]", h) for h in board["Pooled AUROC [95% CI]"])
    ties = board["vs #1"].tolist()
    assert ties[0] == "#1" and ties[1] == "≈ #1" and ties[-1] == "below #1"  # as radfed.ranking says
    assert [t == "≈ #1" for t in ties[1:]] == [bool(e["overlaps_top"]) for e in finished[1:]]
    assert "Clinic mean AUROC" in board.columns
    text = texts(at)
    assert "Trust the pooled AUROC" in text and "cannot be told apart" in text
    assert not any("live-resnet18" in r for r in board["Run"]) and "in progress" in text
    outcome = frame_with(at, "Fed ÷ central")
    central = dict(zip(outcome.index, outcome["Fed ÷ central"]))
    first = "pneu-radimagenet-resnet50-unfreeze-all-lr0.001 · run 1"
    assert central.pop(first).endswith("× (centralised 0.950)")
    assert set(central.values()) == {"no baseline yet"}
    went = frame_with(at, "Took")
    assert went.loc[first, "Rounds"] == "2 of 2" and went.loc["densenet-crashed · run 5", "Status"] == "failed"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", t) for t in went["Started"])  # no ISO, no µs
    assert all(re.fullmatch(r"\d+ s|\d+ min \d+ s", t) for t in went["Took"])


@pytest.mark.e2e
def test_filters_and_grouping(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url)
    assert {m.label for m in at.sidebar.multiselect} >= {"Backbone", "Weight source", "Freeze policy", "Strategy"}
    at.sidebar.multiselect(key="leaderboard-weight_source").select("imagenet").run()
    board = frame_with(at, "vs #1")
    assert sorted(r.split(" · ")[0] for r in board["Run"]) == [
        "pneu-imagenet-resnet50-freeze-all-lr0.01",
        "pneu-imagenet-resnet50-unfreeze-all-lr0.001",
    ]
    assert board.index.tolist() == ["1", "2"] and board["vs #1"].tolist()[0] == "#1"  # ranked among those shown
    at.selectbox(key="group-by").select("freeze").run()
    groups = frame_with(at, "Runs")
    assert groups.index.tolist() == ["head only (backbone frozen)", "train every layer"]
    assert groups["Runs"].tolist() == [1, 1]
    # the filter is remembered on another page
    at.switch_page("compare.py").run()
    assert at.sidebar.multiselect(key="compare-weight_source").value == ["imagenet"]
    assert not unreadable(at)


@pytest.mark.e2e
def test_compare_overlays_curves_with_bands_and_settings(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "compare.py")
    chosen = at.multiselect(key="runs").value
    assert len(chosen) == 3
    [spec] = charts(at)
    assert {"area", "line"} <= marks(spec)  # the CI is a band, not two more lines
    legend = spec["layer"][1]["encoding"]["color"]["legend"]
    assert legend["orient"] == "bottom" and legend["labelLimit"] >= 400
    assert spec["layer"][1]["encoding"]["x"]["title"].startswith("Round (0 = the initial model")
    assert spec["layer"][1]["encoding"]["color"]["scale"]["scheme"] == "tableau10"
    settings = frame_with(at, "Differs")
    assert "Learning rate" in settings.index and "Layers trained" in settings.index
    assert "Batch size" not in settings.index  # only what differs, by default
    at.toggle(key="compare-differing").set_value(False).run()
    settings = frame_with(at, "Differs")
    assert "Batch size" in settings.index and "Seed" in settings.index and "Image size (px)" in settings.index
    assert "resnet50.pth" in texts(at)  # the weight file by its name, never its folder


@pytest.mark.e2e
def test_sweeps_pair_radimagenet_with_imagenet(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "sweeps.py")
    pairs = frame_with(at, "radimagenet − imagenet [95% CI]")
    assert len(pairs) == 2
    assert all(t.startswith(("+", "-")) and "to" in t for t in pairs["radimagenet − imagenet [95% CI]"])
    means = frame_with(at, "Pairs")
    assert means["Pairs"].tolist() == [2] and "[" in means.iloc[0, -1]
    summary = frame_with(at, "Weight source")
    assert sorted(summary["Weight source"]) == ["imagenet", "radimagenet"]
    assert any("rule" in marks(c) for c in charts(at))


@pytest.mark.e2e
def test_run_details_settings_downloads_and_words(monkeypatch, filled: Filled) -> None:
    import streamlit

    offered = []
    original = streamlit.download_button

    def recording(label, data, file_name=None, **kwargs):
        offered.append(file_name)
        return original(label, data, file_name=file_name, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", recording)
    at = open_app(monkeypatch, filled.url, "run.py")
    at.selectbox(key="run").select(filled.runs["pneu-radimagenet-resnet50-unfreeze-all-lr0.001"]).run()
    assert not unreadable(at)
    text = texts(at)
    assert "pneu-radimagenet-resnet50-unfreeze-all-lr0.001 · run 1 (completed)" in text
    settings = frame_with(at, "Setting")
    values = dict(zip(settings["Setting"], settings["Value"]))
    assert values["Learning rate"] == "0.001" and values["Local epochs per round"] == "1"
    assert values["Batch size"] == "16" and values["Image size (px)"] == "224" and values["Seed"] == "0"
    assert values["Layers trained"] == "train every layer" and values["Initial weights"] == "resnet50.pth"
    stem = "pneu-radimagenet-resnet50-unfreeze-all-lr0.001-run-1-round-"
    assert f"{stem}2.pt" in offered and any(n.startswith(stem) and n.endswith(".card.md") for n in offered)
    assert any("round 2" in b.proto.label for b in at.get("download_button"))
    traffic = frame_with(at, "Sent to clinics")
    assert traffic["Sent to clinics"].tolist() == ["5.00 MB", "5.00 MB"] and traffic["Took"].tolist()[0] == "43 s"
    final = frame_with(at, "Threshold p(finding)")
    assert final.index.tolist() == ["federated, all clinics pooled", "centralised baseline, pooled"]
    assert frame_with(at, "Patients")["Patients"].tolist()[0] == "not sent (pooled from counts)"
    assert "Youden" in text and "Fed ÷ central" in text
    auroc = charts(at)[0]
    assert {"area", "line"} <= marks(auroc)
    assert "training loss (clinics' mean)" in text and "train_loss" not in text


def test_download_names_follow_experiment_and_run(filled: Filled) -> None:
    from dashboard.context import file_stem, run_name

    with Store(filled.url) as store:
        entry = next(e for e in store.leaderboard() if e["run_id"] == 1)
    assert run_name(entry) == "pneu-radimagenet-resnet50-unfreeze-all-lr0.001 · run 1"
    assert file_stem(entry, 3) + ".pt" == "pneu-radimagenet-resnet50-unfreeze-all-lr0.001-run-1-round-3.pt"


@pytest.mark.e2e
def test_failed_run_shows_its_error(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "run.py")
    box = at.selectbox(key="run")
    box.select(filled.runs["densenet-crashed"]).run()
    assert any("CUDA out of memory" in e.value and "(see serverapp.log)" in e.value for e in at.error)
    assert not unreadable(at)  # the log's folder on the server is not shown


@pytest.mark.e2e
def test_per_clinic_forest_plot_and_separate_tables(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "per_clinic.py")
    forest = charts(at)[0]
    assert {"rule", "point"} <= marks(forest)
    who = next(
        v
        for n in walk(at._tree)
        if n.type == "vega_lite_chart"
        for v in [visible_texts_of(n)]
        if "all clinics pooled" in v
    )
    assert "clinic-a" in who and "clinic-b" in who
    evaluations = frame_with(at, "AUROC [95% CI]")
    assert set(frame_with(at, "Training loss")["Clinic"]) == {"clinic-a", "clinic-b"}
    training = frame_with(at, "Training loss")
    assert training["Model sent to it"].tolist()[0] == "2.50 MB" and len(training) == 4
    assert "Training loss" not in evaluations.columns
    accuracy = frame_with(at, "Accuracy at p(finding) ≥ 0.5")
    assert set(accuracy.index) == {"clinic-a", "clinic-b"}
    assert "Round 0 is the initial model" in texts(at)


def visible_texts_of(node) -> str:
    from tests.dashboard_store import chart_texts

    return " ".join(chart_texts(node.proto))


@pytest.mark.e2e
def test_diagnostics_roc_reliability_and_confusion(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "diagnostics.py")
    at.selectbox(key="run").select(1).run()
    assert not unreadable(at)
    text = texts(at)
    assert "Threshold:" in text and "log-odds" in text
    specs = charts(at)
    assert len(specs) == 3  # ROC, reliability, confusion matrix
    with Store(filled.url) as store:
        entry = next(e for e in store.leaderboard() if e["run_id"] == 1)
    pooled = entry["pooled"]
    assert f"all clinics pooled (AUROC {pooled['auroc']:.3f})" in text  # the curve's area is the headline
    confusion = next(n for n in walk(at._tree) if n.type == "vega_lite_chart" and "called" in visible_texts_of(n))
    cells = visible_texts_of(confusion)
    images = int(pooled["images"])
    assert cells.count("(") >= 4 and str(images) not in ("0",)
    assert f"sensitivity {pooled['sensitivity']:.2f}, specificity {pooled['specificity']:.2f}" in text


@pytest.mark.e2e
def test_live_progress_of_a_running_run(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "live.py")
    text = texts(at)
    assert "live-resnet18 · run 6" in text and "1 of 3 rounds done" in text
    clinics = frame_with(at, "Round 2")
    status = dict(zip(clinics.index, clinics["Round 2"]))
    assert status == {"clinic-a": "trained on 20 images", "clinic-b": "waiting for its reply"}
    assert "Time left" in text and "about 1 min 26 s" in text  # round 1 took 43 s; 2 rounds to go


@pytest.mark.e2e
def test_audit_trail_filters(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "audit_trail.py")
    events = frame_with(at, "Detail")
    assert {"enrolled", "revoked", "contributed an update"} <= set(events["What"])
    assert "pneu-radimagenet-resnet50-unfreeze-all-lr0.001 · run 1" in set(events["Run"])
    at.sidebar.multiselect(key="audit-clinics").select("clinic-c").run()
    events = frame_with(at, "Detail")
    assert set(events["Clinic"]) == {"clinic-c"} and set(events["What"]) == {"enrolled", "revoked"}
    assert not unreadable(at)


@pytest.mark.e2e
def test_clinic_register(monkeypatch, filled: Filled) -> None:
    at = open_app(monkeypatch, filled.url, "register.py")
    register = frame_with(at, "Status")
    assert register.index.tolist() == ["clinic-a", "clinic-b", "clinic-c"]
    assert register.loc["clinic-c", "Status"] == "revoked: refused"
    assert register.loc["clinic-a", "Registered with the SuperLink"] == "yes"
    at.sidebar.multiselect(key="register-status").select("revoked: refused").run()
    assert frame_with(at, "Status").index.tolist() == ["clinic-c"]


@pytest.mark.e2e
def test_empty_database_shows_friendly_message_on_every_page(monkeypatch, tmp_path: Path) -> None:
    at = open_app(monkeypatch, f"sqlite:///{tmp_path / 'empty.db'}")
    assert any("No experiments yet" in i.value and "coordinator demo" in i.value for i in at.info)
    for page in (
        "compare.py",
        "sweeps.py",
        "live.py",
        "run.py",
        "per_clinic.py",
        "diagnostics.py",
        "audit_trail.py",
        "register.py",
    ):
        at.switch_page(page).run()
        assert not at.exception and at.info, page
        assert not unreadable(at), page


@pytest.mark.e2e
def test_unreachable_database_shows_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(APP), "--db", "postgresql://radfed:secret@127.0.0.1:1/radfed"])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    (error,) = at.error
    assert "127.0.0.1:1" in error.value and "Fix:" in error.value and "secret" not in error.value


@pytest.mark.e2e
def test_login_and_submit_hooks(monkeypatch, filled: Filled) -> None:
    """dashboard/auth.py and dashboard/submit.py (built elsewhere) plug in when they exist."""
    import types

    submit = types.ModuleType("dashboard.submit")
    submit.submit_page = lambda: __import__("streamlit").title("Submit an experiment")
    auth = types.ModuleType("dashboard.auth")
    auth.require_login = lambda: False  # nobody logged in: nothing is shown
    downloads = []
    auth.record_download = downloads.append
    monkeypatch.setitem(sys.modules, "dashboard.submit", submit)
    monkeypatch.setitem(sys.modules, "dashboard.auth", auth)
    monkeypatch.setattr(sys, "argv", [str(APP), "--db", filled.url])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception and not at.title and not at.get("table")
    auth.require_login = lambda: None  # on loopback their login lets anonymous readers in
    at.run()
    assert [t.value for t in at.title] == ["Leaderboard"]
    assert any(info.get("url_pathname") == "submit" for info in at._registered_pages.values())
    from dashboard.context import on_download

    on_download("a.pt")()
    assert downloads == ["a.pt"]


# ------------------------------------------------------------------------- pure parts


def test_scores_give_the_recorded_auroc_and_threshold(filled: Filled) -> None:
    from sklearn.metrics import roc_auc_score

    from dashboard.scores import auroc, confusion, pooled, rates, reliability_frame, roc_frame
    from radfed.pooled import key_scores

    with Store(filled.url) as store:
        entry = next(e for e in store.leaderboard() if e["run_id"] == 1)
        rows = [r for r in store.score_histograms(1, 2) if r["phase"] == "evaluate"]
        assert "scores" not in entry["clinics"][0]  # the leaderboard stays light
    assert [r["clinic"] for r in rows] == ["clinic-a", "clinic-b"]
    hist = pooled([r["scores"] for r in rows])
    assert auroc(hist) == pytest.approx(entry["pooled"]["auroc"], abs=1e-12)
    keys, neg, pos = hist
    scores = np.repeat(key_scores(keys), (neg + pos).astype(int))
    labels = np.concatenate([np.r_[[0] * int(n), [1] * int(p)] for n, p in zip(neg, pos)])
    assert roc_auc_score(labels, scores) == pytest.approx(entry["pooled"]["auroc"], abs=1e-12)
    curve = roc_frame(hist)
    assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(entry["pooled"]["auroc"], abs=1e-9)
    sens, spec = rates(confusion(hist, entry["pooled"]["threshold_logit"]))
    assert (sens, spec) == (entry["pooled"]["sensitivity"], entry["pooled"]["specificity"])
    cal = reliability_frame([r["scores"] for r in rows])
    assert cal["images"].sum() == entry["pooled"]["images"]


def test_words_never_print_none() -> None:
    import pandas as pd

    from dashboard.words import auroc_text, display_frame, duration, megabytes, when

    assert auroc_text(None) == "not measured" and auroc_text(0.81234, 0.7, None) == "0.812"
    assert auroc_text(0.9, 0.85, 0.95) == "0.900 [0.850–0.950]"
    assert duration(3725) == "1 h 02 min" and duration(61) == "1 min 1 s" and duration(None) == "not yet"
    assert megabytes(2_500_000) == "2.50 MB"
    assert when("2026-01-02T03:04:05.123456+00:00") == "2026-01-02 03:04 UTC"
    frame = display_frame(pd.DataFrame({"a": [1.0, float("nan")], "b": [None, "x"]}), {"b": "no baseline yet"})
    assert frame.values.tolist() == [["1", "no baseline yet"], ["not measured", "x"]]


def test_paired_differences_pair_runs_that_differ_only_in_weights(filled: Filled) -> None:
    from radfed.results import mean_difference, paired_differences

    with Store(filled.url) as store:
        board = store.leaderboard()
    rows = paired_differences(board)
    assert [(r["freeze"], r["first"]["run_id"], r["second"]["run_id"]) for r in rows] == [("none", 1, 2), ("all", 3, 4)]
    for r in rows:
        assert r["diff"] == pytest.approx(r["first"]["pooled_auroc"] - r["second"]["pooled_auroc"])
        assert r["low"] < r["diff"] < r["high"]
    [mean] = mean_difference(rows)
    assert mean["pairs"] == 2 and mean["low"] < mean["diff"] < mean["high"]


# ------------------------------------------------------------------- the CLI process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children_of(pid: int) -> list[int]:
    """Direct children of pid, from /proc (no psutil needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_healthy(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dashboard exited early: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                if reply.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"dashboard did not become healthy on port {port} within {timeout}s")


def test_cli_hides_streamlits_deploy_button() -> None:
    from dashboard.cli import streamlit_command

    command = streamlit_command("sqlite:///x.db", "127.0.0.1", 8501)
    assert command[command.index("--client.toolbarMode") + 1] == "viewer"


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the streamlit child")
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_cli_serves_and_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    db_url = f"sqlite:///{tmp_path / 'radfed.db'}"
    Store(db_url).close()
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "--db", db_url, "--port", str(port)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_healthy(port, proc, log)
        children = children_of(proc.pid)
        assert children, "streamlit should run as a child process"

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 0

        deadline = time.monotonic() + 10
        while not all(gone(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(gone(c) for c in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_cli_bad_database_exits_1_before_streamlit(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "--db", "postgresql://u:pw@127.0.0.1:1/db", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "Fix:" in lines[0]
    assert "Streamlit" not in result.stdout + result.stderr
