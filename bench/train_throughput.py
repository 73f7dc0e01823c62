"""Local-training throughput: radfed's step vs a plain PyTorch loop, and head-only rounds.

Run: `python bench/train_throughput.py [--arch resnet50] [--images 32] [--size 224]`.
CPU, 2 threads. Prints a few human lines, then ONE JSON line (the last line) with the
figures and whether the goals were met:

- radfed.training.train_local images/s >= 0.95 x a plain PyTorch loop (same model, data,
  batch size, optimiser; the plain loop has no augmentation, radfed's has its flip);
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

from radfed.features import compute_features, split_head  # noqa: E402
from radfed.models import apply_freeze, create_model  # noqa: E402
from radfed.training import train_head, train_local  # noqa: E402
from strategies.utils import model_bytes  # noqa: E402


def plain_loop(model, images, labels, batch_size, lr, seed):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    order = torch.randperm(len(labels), generator=gen)
    for start in range(0, len(labels), batch_size):
        idx = order[start:start + batch_size]
        loss = loss_fn(model(images[idx]), labels[idx])
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


def message_bytes(state) -> int:
    """Bytes of the tensors a Flower message carries for this state (as recorded per round)."""
    return model_bytes(RecordDict({"arrays": ArrayRecord({k: v for k, v in state.items()})}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    images = torch.rand(args.images, 1, args.size, args.size)
    labels = torch.arange(args.images) % 2
    n, bs, lr = args.images, args.batch, 1e-3

    # 1. full fine-tuning step: radfed.train_local vs a plain loop, same model and data
    model = create_model(args.arch, 2)
    apply_freeze(model, "none")
    plain_model = copy.deepcopy(model)
    warm = images[:bs], labels[:bs]
    train_local(model, *warm, epochs=1, batch_size=bs, learning_rate=lr, seed=0, device=cpu)
    plain_loop(plain_model, *warm, bs, lr, 0)
    t_radfed, t_plain = [], []
    for r in range(args.reps):  # interleaved, best of each
        t_radfed.append(best_of(lambda r=r: train_local(model, images, labels, epochs=1,
                                                        batch_size=bs, learning_rate=lr,
                                                        seed=r, device=cpu), 1))
        t_plain.append(best_of(lambda r=r: plain_loop(plain_model, images, labels, bs, lr, r), 1))
    radfed_ips, plain_ips = n / min(t_radfed), n / min(t_plain)
    print(f"full step: radfed {radfed_ips:.2f} img/s, plain {plain_ips:.2f} img/s, "
          f"ratio {radfed_ips / plain_ips:.3f}")

    # 2. head-only round: full forward through the frozen backbone vs cached features
    apply_freeze(model, "all")
    train_local(model, *warm, epochs=1, batch_size=bs, learning_rate=lr, seed=0, device=cpu)
    t_full = best_of(lambda: train_local(model, images, labels, epochs=1, batch_size=bs,
                                         learning_rate=lr, seed=1, device=cpu), args.reps)
    t0 = time.perf_counter()
    feats = compute_features(model, images, images[:0], batch_size=bs, device=cpu)
    t_cache = time.perf_counter() - t0

    def cached_round(seed: int) -> None:
        train_head(model.head, feats.train, feats.train_flipped, labels, epochs=1,
                   batch_size=bs, learning_rate=lr, seed=seed, device=cpu)

    cached_round(0)
    t_cached = best_of(lambda: cached_round(1), max(args.reps, 5))
    state = model.state_dict()
    head_keys, _ = split_head(model)
    sent, full = message_bytes({k: state[k] for k in head_keys}), message_bytes(state)
    print(f"head-only round: full forward {t_full * 1e3:.0f} ms, cached {t_cached * 1e3:.2f} ms "
          f"(+ {t_cache * 1e3:.0f} ms once to cache features), bytes {sent} of {full}")
    speedup = t_full / t_cached
    out = {
        "arch": args.arch, "images": n, "size": args.size, "batch": bs,
        "threads": args.threads, "device": "cpu",
        "radfed_train_img_s": round(radfed_ips, 3), "plain_train_img_s": round(plain_ips, 3),
        "train_ratio": round(radfed_ips / plain_ips, 4),
        "goal_train_ratio_ge_0.95": radfed_ips / plain_ips >= 0.95,
        "head_round_full_forward_s": round(t_full, 4),
        "head_round_cached_s": round(t_cached, 6),
        "feature_cache_once_s": round(t_cache, 4),
        "head_round_speedup": round(speedup, 1),
        "first_round_speedup_incl_cache": round(t_full / (t_cached + t_cache), 2),
        "goal_speedup_ge_20": speedup >= 20,
        "bytes_trainable": sent, "bytes_full_state": full,
        "bytes_fraction": round(sent / full, 6),
        "goal_bytes_le_1pct": sent / full <= 0.01,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
