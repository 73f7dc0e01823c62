"""Local-training throughput: radfed's step vs the best plain PyTorch loop, and head-only rounds.

Run: `python bench/train_throughput.py [--arch resnet50] [--images 32] [--size 224]`.
CPU, 2 threads. Prints a few human lines, then ONE JSON line (the last line) with the
figures and whether the goals were met:

- radfed.training.train_local images/s >= 0.95 x the best plain PyTorch loop we know (same
  model, data, batch size, optimiser; channels_last, bfloat16 autocast where the CPU has
  native bfloat16 as radfed.precision decides, loss in float32; no augmentation, radfed's
  has its flip). The two alternate, the order flipping every repeat (radfed, plain, plain,
  radfed, ...; `--reps` each), so machine load hits both alike; median and min/max
  images/s are reported. `--compile` adds a torch.compile'd plain loop as a third
  contender (off by default: on a loaded 2-core CPU compiling a ResNet costs minutes; not
  yet measured there);
- radfed's achieved GFLOP/s (forward FLOPs per image by torch.utils.flop_counter x 3 for
  forward + backward, x images/s) against this machine's measured matmul peak: the best of
  a few 2048^3 torch.matmul in float32 and bfloat16 on the same threads;
- a head-only round on cached backbone features (radfed.features.compute_features once
  per clinic, then radfed.training.train_head, as the ClientApp does with freeze = "all")
  >= 20 x faster than a head-only round that runs the full forward pass (train_local with
  the backbone frozen), and it sends <= 1 % of the bytes: the serialised ArrayRecord a
  head-only message carries vs the full model's (what strategies/head_only.py sends after
  a clinic's first message).

glibc's malloc returns large activation buffers to the OS after every pass; the script
re-executes itself with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set (both loops gain).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    os.environ.update(MALLOC_MMAP_THRESHOLD_="1073741824", MALLOC_TRIM_THRESHOLD_="4294967296")
    os.execv(sys.executable, [sys.executable, *sys.argv])

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from flwr.app import ArrayRecord, RecordDict  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from radfed.features import compute_features, split_head  # noqa: E402
from radfed.models import apply_freeze, create_model  # noqa: E402
from radfed.precision import cpu_precision  # noqa: E402
from radfed.training import train_head, train_local  # noqa: E402
from strategies.utils import model_bytes  # noqa: E402


def plain_loop(model, images, labels, batch_size, lr, seed, bf16: bool):
    """The best plain recipe: channels_last model and batches, bfloat16 autocast when the
    CPU has it natively, float32 loss, Adam (= radfed's AdamW at weight decay 0)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.to(memory_format=torch.channels_last).train()
    order = torch.randperm(len(labels), generator=gen)
    for start in range(0, len(labels), batch_size):
        idx = order[start : start + batch_size]
        x = images[idx].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def best_of(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(contenders: dict, reps: int, images: int) -> dict[str, list[float]]:
    """Images/s of each contender, run in turn `reps` times; the order flips every repeat
    (A, B, B, A, A, B, ...) so that neither always runs first after the other."""
    rates = {name: [] for name in contenders}
    for r in range(reps):
        for name in list(contenders) if r % 2 == 0 else list(contenders)[::-1]:
            fn = contenders[name]
            t = time.perf_counter()
            fn(r)
            rates[name].append(images / (time.perf_counter() - t))
            print(
                f"  repeat {r + 1}/{reps} {name}: {rates[name][-1]:.2f} img/s (load {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
                flush=True,
            )
    return rates


def spread(rates: list[float]) -> dict:
    return {"median": round(statistics.median(rates), 3), "min": round(min(rates), 3), "max": round(max(rates), 3)}


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """Best GFLOP/s of an n x n x n torch.matmul on the current threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    return 2 * n**3 / best_of(lambda: torch.matmul(a, b), reps) / 1e9


def train_flops_per_image(model, size: int, bf16: bool) -> float:
    """Forward FLOPs of one image x 3 (backward is about twice the forward)."""
    model.eval()
    with (
        torch.no_grad(),
        FlopCounterMode(display=False) as counter,
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    ):
        model(torch.rand(1, 1, size, size))
    return 3.0 * counter.get_total_flops()


def message_bytes(state) -> int:
    """Bytes of the tensors a Flower message carries for this state (as recorded per round)."""
    return model_bytes(RecordDict({"arrays": ArrayRecord({k: v for k, v in state.items()})}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--compile", action="store_true", help="also time a torch.compile'd plain loop (minutes of compiling)"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    images = torch.rand(args.images, 1, args.size, args.size)
    labels = torch.arange(args.images) % 2
    n, bs, lr = args.images, args.batch, 1e-3

    # 1. full fine-tuning step: radfed.train_local vs the best plain loop, interleaved
    bf16 = cpu_precision() == "bfloat16"
    model = create_model(args.arch, 2)
    apply_freeze(model, "none")
    plain_model = copy.deepcopy(model)
    warm = images[:bs], labels[:bs]
    contenders = {
        "radfed": lambda r: train_local(
            model, images, labels, epochs=1, batch_size=bs, learning_rate=lr, seed=r, device=cpu
        ),
        "plain": lambda r: plain_loop(plain_model, images, labels, bs, lr, r, bf16),
    }
    if args.compile:
        compiled_model = copy.deepcopy(plain_model)
        compiled = torch.compile(compiled_model)
        t0 = time.perf_counter()
        plain_loop(compiled, *warm, bs, lr, 0, bf16)
        compile_s = time.perf_counter() - t0
        contenders["plain_compiled"] = lambda r: plain_loop(compiled, images, labels, bs, lr, r, bf16)
    train_local(model, *warm, epochs=1, batch_size=bs, learning_rate=lr, seed=0, device=cpu)
    plain_loop(plain_model, *warm, bs, lr, 0, bf16)
    rates = interleaved(contenders, args.reps, n)
    radfed_ips = statistics.median(rates["radfed"])
    plain_ips = max(statistics.median(v) for k, v in rates.items() if k != "radfed")
    ratio = radfed_ips / plain_ips
    ratios = [a / b for a, b in zip(rates["radfed"], rates["plain"])]
    flops = train_flops_per_image(copy.deepcopy(plain_model), args.size, bf16)
    peak = {"float32": matmul_peak_gflops(torch.float32), "bfloat16": matmul_peak_gflops(torch.bfloat16)}
    achieved = flops * radfed_ips / 1e9
    used_peak = peak["bfloat16" if bf16 else "float32"]
    print(
        f"full step ({cpu_precision()}, channels_last): radfed {radfed_ips:.2f} img/s "
        f"[{min(rates['radfed']):.2f}-{max(rates['radfed']):.2f}], plain {plain_ips:.2f} img/s, "
        f"ratio {ratio:.3f}; {achieved:.1f} GFLOP/s of a {used_peak:.1f} GFLOP/s matmul peak "
        f"({achieved / used_peak:.1%})"
    )

    # 2. head-only round: full forward through the frozen backbone vs cached features
    apply_freeze(model, "all")
    train_local(model, *warm, epochs=1, batch_size=bs, learning_rate=lr, seed=0, device=cpu)
    t_full = best_of(
        lambda: train_local(model, images, labels, epochs=1, batch_size=bs, learning_rate=lr, seed=1, device=cpu),
        args.reps,
    )
    t0 = time.perf_counter()
    feats = compute_features(model, images, images[:0], batch_size=bs, device=cpu)
    t_cache = time.perf_counter() - t0

    def cached_round(seed: int) -> None:
        train_head(
            model.head,
            feats.train,
            feats.train_flipped,
            labels,
            epochs=1,
            batch_size=bs,
            learning_rate=lr,
            seed=seed,
            device=cpu,
        )

    cached_round(0)
    t_cached = best_of(lambda: cached_round(1), max(args.reps, 5))
    state = model.state_dict()
    head_keys, _ = split_head(model)
    sent, full = message_bytes({k: state[k] for k in head_keys}), message_bytes(state)
    print(
        f"head-only round: full forward {t_full * 1e3:.0f} ms, cached {t_cached * 1e3:.2f} ms "
        f"(+ {t_cache * 1e3:.0f} ms once to cache features), bytes {sent} of {full}"
    )
    speedup = t_full / t_cached
    out = {
        "arch": args.arch,
        "images": n,
        "size": args.size,
        "batch": bs,
        "threads": args.threads,
        "device": "cpu",
        "cpu_precision": cpu_precision(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "reps": args.reps,
        "radfed_train_img_s": spread(rates["radfed"]),
        "plain_train_img_s": spread(rates["plain"]),
        "train_ratio": round(ratio, 4),
        "train_ratio_per_pair": spread(ratios),
        "goal_train_ratio_ge_0.95": ratio >= 0.95,
        "train_gflop_per_image": round(flops / 1e9, 3),
        "radfed_gflops": round(achieved, 2),
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
        "radfed_fraction_of_peak": round(achieved / used_peak, 4),
        "head_round_full_forward_s": round(t_full, 4),
        "head_round_cached_s": round(t_cached, 6),
        "feature_cache_once_s": round(t_cache, 4),
        "head_round_speedup": round(speedup, 1),
        "first_round_speedup_incl_cache": round(t_full / (t_cached + t_cache), 2),
        "goal_speedup_ge_20": speedup >= 20,
        "bytes_trainable": sent,
        "bytes_full_state": full,
        "bytes_fraction": round(sent / full, 6),
        "goal_bytes_le_1pct": sent / full <= 0.01,
    }
    if args.compile:
        out["plain_compiled_img_s"] = spread(rates["plain_compiled"])
        out["compile_s"] = round(compile_s, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
