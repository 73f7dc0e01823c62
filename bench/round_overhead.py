"""Round overhead: radfed's rounds against a minimal Flower app's, on the same loopback (issue 18).

The same small model (resnet18 at 32 px, 2 classes), the same clinics (default 2) with
the same number of training images, the same rounds, run

- A: through radfed as the README deploys it: `coordinator superlink` with TLS and
  SuperNode authentication, clinics enrolled with `coordinator clinic add` and started
  with `client-node start --bundle` (warm ClientApp worker), `coordinator run` with the
  guards, the register and the recorder writing every round to SQLite;
- B: through a minimal Flower 1.42 app in its default deployment: `flower-superlink
  --insecure`, one `flower-supernode --insecure` per clinic (subprocess isolation: a new
  ClientApp process per message), FedAvg from flwr.serverapp.strategy with a train and
  an evaluate broadcast every round, a plain torch loop on random tensors;

interleaved A, B, A, B, ... (`--repeats` of each), so that load on the machine hits both
alike. Per-round wall time: radfed's round rows (`duration_s`, from one checkpoint to the
next; round 1 from Flower's evaluate_fn call for round 0, when the strategy starts), the
Flower app's from its own timestamps (evaluate_fn runs once per round, and for round 0),
so both count round 1 from the same point. radfed's set-up before round 1 (ServerApp
start-up, initial model, roll call) is reported apart, `radfed_run_setup_s`. radfed's
clinics log their ClientApp's time (client_node/app.py: data, model, evaluation of the
received model, training) and each whole task (client_node/worker.py); a round's overhead
is its wall time minus the slowest clinic's ClientApp time in that round (the final
round's evaluate task counted whole), i.e. everything that is not the clinics' own work:
polling, the model's transfers, aggregation, guards, recording, checkpoints.
`overhead_beyond_tasks` subtracts whole tasks instead (the transfer between a clinic's
SuperNode and its worker then counts as the clinic's).

The last line is one JSON object: `radfed_round_s`, `flower_round_s`, `ratio`
(radfed / Flower) and `radfed_overhead_s_per_round`, each {median, min, max} over the
repeats (each repeat's value is its mean over rounds), plus the raw per-round numbers.

    .venv/bin/python bench/round_overhead.py   # 2 clinics, 3 rounds, 3 repeats: ~12 min on 2 idle cores
    .venv/bin/python bench/round_overhead.py --baseline-root /tmp/radfed-before   # + another checkout's radfed
    .venv/bin/python bench/round_overhead.py --repeats 1 --skip-flower   # radfed alone, once
    .venv/bin/python bench/round_overhead.py --transfer-dtype bfloat16   # radfed's weights in half the bytes
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from radfed.demo_data import write_clinic  # noqa: E402
from radfed.flower_env import flower_bin, flower_env  # noqa: E402
from radfed.processes import free_port, reachable, spawn_bound, stop_all  # noqa: E402
from radfed.spec import ExperimentSpec, spec_to_toml  # noqa: E402
from tests.federation import Federation  # noqa: E402

TASK_LINE = re.compile(r"radfed INFO: task \S+ (\S+) in ([\d.]+) s")
TRAIN_LINE = re.compile(r"round \d+ train: (\d+) images")
APP_LINE = re.compile(r"round (\d+) train: \d+ images; process \S+, data\+model\+eval ([\d.]+)s, training ([\d.]+)s")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clinics", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--patients", type=int, default=8, help="generated patients per clinic")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--work", type=Path, default=None, help="keep logs here (default: a temp folder)")
    p.add_argument("--skip-flower", action="store_true", help="radfed only (no ratio)")
    p.add_argument(
        "--transfer-dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="radfed's spec transfer_dtype (the Flower app always sends float32) (default: %(default)s)",
    )
    p.add_argument(
        "--baseline-root",
        type=Path,
        default=None,
        help="another radfed checkout (e.g. before a change): its radfed runs join the "
        "interleaving (A0, A, B, A0, A, B...) and are reported as baseline_*",
    )
    return p.parse_args()


class RunFailed(RuntimeError):
    """One run did not complete (on a loaded machine: a timed-out upload); tried again once."""


def _say(text: str) -> None:
    print(f"[round_overhead] {text}", file=sys.stderr, flush=True)


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


# ------------------------------------------------------------------------------ A: radfed
def _spec(a: argparse.Namespace) -> ExperimentSpec:
    return ExperimentSpec(
        name="round-overhead",
        backbone="resnet18",
        image_size=a.image_size,
        rounds=a.rounds,
        local_epochs=1,
        batch_size=a.batch_size,
        learning_rate=1e-3,
        freeze="none",
        strategy="fedavg",
        min_clinics=a.clinics,
        clinic_timeout=900.0,
        seed=1,
        transfer_dtype=a.transfer_dtype,
    )


def _task_times(log: Path) -> list[float]:
    return [float(m.group(2)) for m in TASK_LINE.finditer(log.read_text(errors="replace"))]


def run_radfed(a: argparse.Namespace, work: Path, data: list[Path]) -> dict:
    """One secure radfed run; per-round wall time and the slowest clinic's task time."""
    fed = Federation(work, secure=True)
    names = [f"clinic-{i + 1}" for i in range(a.clinics)]
    try:
        fed.start_superlink()
        for name, folder in zip(names, data):
            fed.start_clinic(name, folder, "", fed.enrol(name))
        fed.wait_for(
            lambda: sum(s == "online" for s in fed.node_status().values()) == a.clinics, "clinics online", timeout=900
        )
        spec_file = work / "exp.toml"
        spec_file.write_text(spec_to_toml(_spec(a)))
        started = time.monotonic()
        with open(work / "logs" / "run.log", "ab") as log:
            code = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "server.cli",
                    "run",
                    str(spec_file),
                    "--control",
                    fed.control,
                    "--root-certificates",
                    str(fed.certs / "ca.crt"),
                    "--db",
                    fed.db,
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=2400,
                check=False,
            ).returncode
        wall = time.monotonic() - started
        if code != 0:
            raise RunFailed(f"radfed run failed ({code}); logs in {work / 'logs'}")
    finally:
        fed.close()
    return {**radfed_times(work, names, a.rounds), "run_wall_s": wall}


def radfed_times(work: Path, names: list[str], rounds: int) -> dict:
    """Per round: wall time (the store's round rows) and the slowest clinic's time in its
    ClientApp (the train handler's data + model + evaluation + training, from the clinic's
    log; the last round adds the final evaluate task, counted whole). `clinic_task_s`
    counts each clinic's whole worker task instead: also receiving the model from its
    SuperNode and sending the update back, the transfer part of a round."""
    with sqlite3.connect(work / "radfed.db") as db:
        rows = db.execute("SELECT server_round, duration_s FROM round_results WHERE duration_s IS NOT NULL").fetchall()
        (started,) = db.execute("SELECT started_at FROM runs").fetchone()
        (first_done,) = db.execute("SELECT created_at FROM checkpoints WHERE server_round = 1").fetchone()
    durations = dict(rows)
    walls = [durations[r] for r in range(1, rounds + 1)]
    # the run's set-up before round 1 (ServerApp start-up, initial model, roll call): from the
    # run's start to round 1's, which is its checkpoint's time less its duration
    elapsed = datetime.fromisoformat(first_done) - datetime.fromisoformat(started)
    setup = elapsed.total_seconds() - durations[1]
    slowest_app, slowest_task = [0.0] * rounds, [0.0] * rounds
    for name in names:
        text = (work / "logs" / f"{name}.log").read_text(errors="replace")
        tasks = [float(m.group(2)) for m in TASK_LINE.finditer(text)]
        app = {int(m.group(1)): float(m.group(2)) + float(m.group(3)) for m in APP_LINE.finditer(text)}
        if len(tasks) < rounds + 1 or len(app) < rounds:
            raise RunFailed(f"{name}: {len(tasks)} task and {len(app)} train lines in its log")
        # Each clinic's tasks, in order: one train per round, the final evaluate, the delivery.
        per_task = tasks[:rounds]
        per_task[-1] += tasks[rounds]  # the final evaluate broadcast ends the last round
        per_app = [app[r] for r in range(1, rounds + 1)]
        per_app[-1] += tasks[rounds]
        slowest_task = [max(s, t) for s, t in zip(slowest_task, per_task)]
        slowest_app = [max(s, t) for s, t in zip(slowest_app, per_app)]
    images = TRAIN_LINE.findall((work / "logs" / f"{names[0]}.log").read_text(errors="replace"))
    return {
        "round_s": walls,
        "clinic_app_s": slowest_app,
        "clinic_task_s": slowest_task,
        "overhead_s": [r - t for r, t in zip(walls, slowest_app)],
        "overhead_beyond_tasks_s": [r - t for r, t in zip(walls, slowest_task)],
        "setup_s": [setup],
        "train_images": int(images[0]) if images else None,
    }


# --------------------------------------------------------------------- B: a minimal Flower app
FLOWER_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "overheadbench"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "bench"

[tool.flwr.app.components]
serverapp = "bench_server:app"
clientapp = "bench_client:app"

[tool.flwr.app.config]
num-server-rounds = 3
timing-file = ""
train-images = 24
val-images = 8
image-size = 32
batch-size = 8
"""

FLOWER_CLIENT = '''\
"""A plain Flower ClientApp: resnet18 on random tensors, one local epoch."""
import torch
import torchvision
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _setup(context):
    torch.set_num_threads(1)
    cfg = context.run_config
    size, g = int(cfg["image-size"]), torch.Generator().manual_seed(int(context.node_id) % 1000)
    model = torchvision.models.resnet18(num_classes=2)
    make = lambda n: (torch.rand(n, 3, size, size, generator=g), torch.randint(0, 2, (n,), generator=g))
    return model, make(int(cfg["train-images"])), make(int(cfg["val-images"])), int(cfg["batch-size"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    model, (x, y), _, batch = _setup(context)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = 0.0
    for i in range(0, len(y), batch):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
        loss.backward()
        opt.step()
        total += float(loss) * len(y[i:i + batch])
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"train_loss": total / len(y), "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model, _, (x, y), _ = _setup(context)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.eval()
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(x), y))
    content = RecordDict({"metrics": MetricRecord({"eval_loss": loss, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
'''

FLOWER_SERVER = '''\
"""A plain Flower ServerApp: FedAvg, a train and an evaluate broadcast every round."""
import json
import time

import torch
import torchvision
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    stamps = []

    def stamp(server_round, arrays):
        stamps.append((server_round, time.time()))
        with open(str(cfg["timing-file"]), "w") as fh:
            json.dump(stamps, fh)
        return None

    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=2)
    FedAvg().start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                   num_rounds=int(cfg["num-server-rounds"]), evaluate_fn=stamp)
'''


def write_flower_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("pyproject.toml", FLOWER_PYPROJECT),
        ("bench_client.py", FLOWER_CLIENT),
        ("bench_server.py", FLOWER_SERVER),
    ):
        (folder / name).write_text(text)
    return folder


def _flower_spawn(cmd: list[str], home: Path, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        return spawn_bound(
            cmd, env=flower_env(home), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=home
        )


def run_flower(a: argparse.Namespace, work: Path, app: Path, train_images: int, val_images: int) -> dict:
    """One run of the minimal Flower app in its default deployment (subprocess isolation)."""
    port = free_port()
    procs: list[subprocess.Popen] = []
    timing = work / "timing.json"
    try:
        procs.append(
            _flower_spawn(
                [
                    flower_bin("flower-superlink"),
                    "--insecure",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--disable-runtime-dependency-installation",
                ],
                work / "superlink",
                work / "logs" / "superlink.log",
            )
        )
        deadline = time.monotonic() + 60
        while reachable(f"127.0.0.1:{port}", timeout=1.0):
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise SystemExit(f"flower-superlink did not start; see {work / 'logs'}")
            time.sleep(0.3)
        for i in range(a.clinics):
            procs.append(
                _flower_spawn(
                    [
                        flower_bin("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                    ],
                    work / f"node-{i}",
                    work / "logs" / f"node-{i}.log",
                )
            )
        cli = work / "cli"
        cli.mkdir(parents=True, exist_ok=True)
        (cli / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
        )
        config = (
            f'num-server-rounds={a.rounds} timing-file="{timing}" train-images={train_images} '
            f"val-images={val_images} image-size={a.image_size} batch-size={a.batch_size}"
        )
        with open(work / "logs" / "run.log", "ab") as log:
            code = subprocess.run(
                [flower_bin("flwr"), "run", str(app), "bench", "--stream", "--run-config", config],
                env=flower_env(cli),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=2400,
                check=False,
            ).returncode
        if code != 0 or not timing.is_file():
            raise RunFailed(f"Flower run failed ({code}); logs in {work / 'logs'}")
    finally:
        stop_all(procs)
    stamps = sorted(json.loads(timing.read_text()))
    times = [t for _, t in stamps]
    return {"round_s": [b - c for c, b in itertools.pairwise(times)]}


# ------------------------------------------------------------------------------ the bench
def run_baseline(a: argparse.Namespace, work: Path) -> dict:
    """One radfed run from the checkout at --baseline-root, through its own copy of this bench."""
    root = a.baseline_root.resolve()
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "RADFED_HOME": str(work / "radfed-home"),
        "FLWR_HOME": str(work / "radfed-home" / "flwr"),
    }
    cmd = [
        sys.executable,
        str(root / "bench" / "round_overhead.py"),
        "--skip-flower",
        "--repeats",
        "1",
        "--clinics",
        str(a.clinics),
        "--rounds",
        str(a.rounds),
        "--patients",
        str(a.patients),
        "--image-size",
        str(a.image_size),
        "--batch-size",
        str(a.batch_size),
        "--work",
        str(work),
    ]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RunFailed(f"baseline run failed: {proc.stderr.strip()[-500:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])["raw"]["radfed"][0]
    return {**raw, "train_images": None}


def _twice(what: str, fn, *args) -> dict:
    """A run, and once more if the machine's load made it fail (a new work folder)."""
    try:
        return fn(*args)
    except RunFailed as err:
        _say(f"  {what}: {err}; trying once more")
        retry = list(args)
        retry[1] = Path(f"{retry[1]}-again")  # every run function takes its work folder second
        return fn(*retry)


def _show(name: str, r: dict) -> None:
    if "clinic_task_s" in r:
        _say(
            f"  {name} rounds {[round(x, 1) for x in r['round_s']]} s, slowest clinic's ClientApp "
            f"{[round(x, 1) for x in r['clinic_app_s']]} s "
            f"(whole tasks {[round(x, 1) for x in r['clinic_task_s']]} s), "
            f"overhead {[round(x, 1) for x in r['overhead_s']]} s"
        )
    else:
        _say(f"  {name} rounds {[round(x, 1) for x in r['round_s']]} s")


def _summary(runs: list[dict], prefix: str) -> dict:
    return {
        f"{prefix}round_s": _spread([statistics.mean(r["round_s"]) for r in runs]),
        f"{prefix}overhead_s_per_round": _spread([statistics.mean(r["overhead_s"]) for r in runs]),
        f"{prefix}clinic_app_s_per_round": _spread([statistics.mean(r["clinic_app_s"]) for r in runs]),
        f"{prefix}overhead_beyond_tasks_s_per_round": _spread(
            [statistics.mean(r["overhead_beyond_tasks_s"]) for r in runs]
        ),
        f"{prefix}run_setup_s": _spread([r["setup_s"][0] for r in runs if r.get("setup_s")]),
    }


def _raw(runs: list[dict]) -> list[dict]:
    keys = ("round_s", "clinic_app_s", "clinic_task_s", "overhead_s", "overhead_beyond_tasks_s", "setup_s")
    return [{k: [round(x, 2) for x in r[k]] for k in keys if k in r} for r in runs]


def main() -> None:
    a = _args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop every process it started
    work = (a.work or Path(tempfile.mkdtemp(prefix="round-overhead-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RADFED_HOME", str(work / "radfed-home"))
    os.environ.setdefault("FLWR_HOME", str(work / "radfed-home" / "flwr"))
    data = []
    for i in range(a.clinics):
        folder = work / "data" / f"clinic-{i + 1}"
        if not (folder / "labels.csv").is_file():
            write_clinic(folder, clinic_index=i % 3, n_patients=a.patients, prevalence=0.5, seed=i)
        data.append(folder)
    app = write_flower_app(work / "flower-app")
    radfed_runs, flower_runs, baseline_runs = [], [], []
    train_images = None
    for rep in range(a.repeats):
        if a.baseline_root:
            _say(f"repeat {rep + 1}/{a.repeats}: baseline radfed from {a.baseline_root}")
            baseline_runs.append(_twice("baseline", run_baseline, a, work / f"baseline-{rep}"))
            _show("baseline", baseline_runs[-1])
        _say(f"repeat {rep + 1}/{a.repeats}: radfed (TLS, node auth, guards, recording)")
        radfed_runs.append(_twice("radfed", run_radfed, a, work / f"radfed-{rep}", data))
        train_images = train_images or radfed_runs[-1]["train_images"] or 24
        _show("radfed", radfed_runs[-1])
        if a.skip_flower:
            continue
        _say(f"repeat {rep + 1}/{a.repeats}: minimal Flower app (default deployment)")
        flower_runs.append(
            _twice("Flower", run_flower, a, work / f"flower-{rep}", app, train_images, max(4, train_images // 3))
        )
        _show("Flower", flower_runs[-1])
        if rep + 1 < a.repeats:
            _say(f"so far: {json.dumps(_result(a, train_images, radfed_runs, flower_runs, baseline_runs, work))}")
    print(json.dumps(_result(a, train_images, radfed_runs, flower_runs, baseline_runs, work)))


def _result(
    a: argparse.Namespace,
    train_images: int | None,
    radfed_runs: list[dict],
    flower_runs: list[dict],
    baseline_runs: list[dict],
    work: Path,
) -> dict:
    radfed_round = [statistics.mean(r["round_s"]) for r in radfed_runs]
    flower_round = [statistics.mean(f["round_s"]) for f in flower_runs]
    out = {
        "clinics": a.clinics,
        "transfer_dtype": a.transfer_dtype,
        "rounds": a.rounds,
        "repeats": a.repeats,
        "backbone": "resnet18",
        "image_size": a.image_size,
        "train_images_per_clinic": train_images,
        **_summary(radfed_runs, "radfed_"),
        "flower_round_s": _spread(flower_round),
        "ratio": _spread([r / f for r, f in zip(radfed_round, flower_round)]),
    }
    raw = {"radfed": _raw(radfed_runs), "flower": [[round(x, 2) for x in f["round_s"]] for f in flower_runs]}
    if baseline_runs:
        out.update(_summary(baseline_runs, "baseline_"))
        out["baseline_ratio"] = _spread(
            [statistics.mean(b["round_s"]) / f for b, f in zip(baseline_runs, flower_round)]
        )
        raw["baseline"] = _raw(baseline_runs)
    return {**out, "raw": raw, "work": str(work)}


if __name__ == "__main__":
    main()
