"""The leaderboard as printed: readable in a wide and in an 80-column terminal."""

from __future__ import annotations

from rich.console import Console

from radfed.store import Store
from server.leaderboard import leaderboard_table


def _store(tmp_path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'board.db'}")
    exp = store.create_experiment("demo-resnet50-3clinics", "{}", "resnet50", "random", "fedavg")
    run = store.start_run(exp, "42", rounds_planned=3)
    for rnd in range(4):  # round 0 is the initial evaluation, not a training round
        store.record_round(
            run,
            rnd,
            val_auroc=0.6 + 0.1 * rnd,
            num_clinics=3,
            num_examples=90,
            pooled={"auroc": 0.886, "auroc_low": 0.79, "auroc_high": 0.95} if rnd == 3 else None,
        )
    store.finish_run(run, "completed", final_auroc=0.936)
    return store


def _render(store: Store, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))
    console.print(leaderboard_table(store))
    return console.export_text()


def test_wide_terminal_gets_the_table_without_empty_columns(tmp_path):
    text = _render(_store(tmp_path), 250)
    assert "demo-resnet50-3clinics" in text and "0.886 [0.790–0.950]" in text and "0.900" in text
    header = next(line for line in text.splitlines() if "experiment" in line)
    assert "privacy" not in header and "held-out" not in header  # empty for every run
    row = next(line for line in text.splitlines() if "demo-resnet50" in line)
    assert "│      3 │" in row  # training rounds, not counting the initial evaluation


def test_narrow_terminal_gets_one_readable_line_per_run(tmp_path):
    text = _render(_store(tmp_path), 80)
    flat = " ".join(text.split())
    assert "1. demo-resnet50-3clinics: resnet50 (random), fedavg, 3 rounds, completed" in flat
    assert (
        "pooled AUROC 0.886 [0.790–0.950] (0 clinics); clinic mean AUROC 0.900; selected checkpoint round 3: 0.886"
    ) in flat
    assert "…" not in text


def test_a_shown_point_never_lies_outside_its_shown_interval():
    from radfed.reply import format_auroc

    for point, low, high in ((0.996, 0.9955, 0.99995), (0.9995, 0.9995, 1.0), (0.5, 0.5, 0.5), (0.8, 0.7949, 0.85)):
        shown = format_auroc(point, low, high)
        p, lo, hi = (float(x) for x in shown.replace("[", "").replace("]", "").replace("–", " ").split())
        assert lo <= p <= hi, shown
