"""The joint map's training step at a large vocabulary: dense AdamW over the whole word table against the
row-wise AdamW the trainer uses (train/recipes/joint/rowadam.py), on the same batches.

    python scripts/bench_joint_step.py --words 80000 --dim 300 [--steps 40] [--rounds 3] [--threads N]

Synthetic corpus: captions of 10 words drawn from a Zipf law over ``--words`` words (as real captions
are), one per post, batches of 128 posts, 1,024-d image features, the joint loss (a linear map, TF-IDF-style
caption means, symmetric InfoNCE). Each step is the whole training step (forward, backward, both
optimisers); rounds alternate between the two, and the JSON line gives each one's median ms per step,
the largest difference between the two tables after the same steps, and for scale the difference between
two dense runs whose starting tables differ by 1e-7 noise (Adam's sign-like updates of near-zero gradients
make any two runs drift apart by about that much; tests/train/test_rowadam.py holds the steps themselves
to dense AdamW's on a loss without that coupling).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from train.recipes.joint.rowadam import RowAdamW

BATCH, WORDS_PER_CAPTION, FEATURES = 128, 10, 1024


def batches(n_words: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """``steps`` batches of caption word ids (BATCH, WORDS_PER_CAPTION), Zipf-distributed."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_words + 1)
    p /= p.sum()
    return [rng.choice(n_words, (BATCH, WORDS_PER_CAPTION), p=p) for _ in range(steps)]


def run(kind: str, table0: torch.Tensor, steps: list[np.ndarray],
        x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Median ms per step of ``kind`` ("dense" or "rows") over ``steps``; the table it ends with."""
    torch.manual_seed(0)
    proj = nn.Linear(FEATURES, table0.shape[1])
    opt = torch.optim.AdamW(proj.parameters(), lr=2e-3, weight_decay=1e-4)
    lrs = [0.0] + [2e-3] * len(steps)
    if kind == "dense":
        words = nn.Parameter(table0.clone())
        wopt = torch.optim.AdamW([words], lr=2e-3, weight_decay=1e-4)
    else:
        table = table0.clone()
        rows_opt = RowAdamW(table, lrs, weight_decay=1e-4)
    labels = torch.arange(BATCH)
    times = []
    for ids in steps:
        t0 = time.perf_counter()
        flat = torch.from_numpy(ids.reshape(-1))
        if kind == "dense":
            txt = words[flat].view(BATCH, WORDS_PER_CAPTION, -1).mean(dim=1)
        else:
            uniq, inv = torch.unique(flat, return_inverse=True)
            rows = rows_opt.prepare(uniq).requires_grad_()
            txt = rows[inv].view(BATCH, WORDS_PER_CAPTION, -1).mean(dim=1)
        img = nn.functional.normalize(proj(x), dim=1)
        sims = img @ nn.functional.normalize(txt, dim=1).T / 0.05
        loss = (nn.functional.cross_entropy(sims, labels) + nn.functional.cross_entropy(sims.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        if kind == "dense":
            wopt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if kind == "dense":
            wopt.step()
        else:
            assert rows.grad is not None
            rows_opt.step(rows.grad)
        times.append(time.perf_counter() - t0)
    if kind == "dense":
        return 1000 * statistics.median(times), words.detach()
    rows_opt.flush()
    return 1000 * statistics.median(times), table


def main() -> None:
    """Alternate dense and row-wise rounds; print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=80000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table0 = torch.randn(args.words, args.dim) * 0.1
    x = torch.randn(BATCH, FEATURES)
    steps = batches(args.words, args.steps)
    out: dict[str, Any] = {"words": args.words, "dim": args.dim, "steps": args.steps,
                           "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}
    dense_ms, rows_ms = [], []
    for _ in range(args.rounds):
        ms, dense_table = run("dense", table0, steps, x)
        dense_ms.append(ms)
        ms, rows_table = run("rows", table0, steps, x)
        rows_ms.append(ms)
    _, nudged = run("dense", table0 + 1e-7 * torch.randn_like(table0), steps, x)
    out |= {"dense_adamw_ms_per_step": round(statistics.median(dense_ms), 2),
            "row_adamw_ms_per_step": round(statistics.median(rows_ms), 2),
            "max_table_difference": float((dense_table - rows_table).abs().max()),
            "dense_vs_dense_1e-7_nudged": float((dense_table - nudged).abs().max()),
            "unique_words_per_batch": round(float(np.mean([len(np.unique(s)) for s in steps])), 1),
            "load_after": os.getloadavg()[0]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
