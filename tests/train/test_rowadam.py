"""The joint map's row-wise AdamW takes the same steps as torch's dense AdamW (issue 26, item 2).

Each step touches a few rows of a table (Zipf-distributed, as words are); the rows a step reads, and the
whole table at the end, equal dense AdamW's under the joint recipe's warm-up + cosine schedule and with
weight decay, although untouched rows were never written between their gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.recipes.joint.model import warmup_cosine
from train.recipes.joint.rowadam import RowAdamW

V, D, STEPS, WARMUP = 500, 16, 400, 40


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_row_adamw_takes_dense_adamws_steps(weight_decay: float) -> None:
    torch.manual_seed(0)
    start = torch.randn(V, D)
    target = torch.randn(V, D)
    lr = 2e-2
    dense = torch.nn.Parameter(start.clone())
    opt = torch.optim.AdamW([dense], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, WARMUP, STEPS))
    table = start.clone()
    lrs = [0.0] + [lr * warmup_cosine(t - 1, WARMUP, STEPS) for t in range(1, STEPS + 1)]
    rows_opt = RowAdamW(table, lrs, weight_decay=weight_decay)
    rng = np.random.default_rng(0)
    zipf = 1 / np.arange(1, V + 1)
    read_diff = 0.0
    for _ in range(STEPS):
        ids = torch.from_numpy(np.unique(rng.choice(V, 40, p=zipf / zipf.sum())))
        rows = rows_opt.prepare(ids).requires_grad_()
        read_diff = max(read_diff, float((rows.detach() - dense.detach()[ids]).abs().max()))
        ((rows - target[ids]) ** 2).sum().backward()
        assert rows.grad is not None
        rows_opt.step(rows.grad)
        opt.zero_grad()
        ((dense[ids] - target[ids]) ** 2).sum().backward()
        opt.step()
        sched.step()
    rows_opt.flush()
    moved = float((table - start).abs().max())
    assert moved > 1.0  # the table really trained
    assert read_diff < 2e-4  # what each forward pass read (float32 rounding, ε left out of catch-ups)
    assert float((table - dense.detach()).abs().max()) < 2e-5
    assert torch.equal(rows_opt.last, torch.full((V,), STEPS))  # flushed: every row at the last step


def test_step_without_prepare_is_refused() -> None:
    opt = RowAdamW(torch.zeros(4, 2), [0.0, 1e-3])
    with pytest.raises(RuntimeError):
        opt.step(torch.zeros(1, 2))


def test_a_row_that_skipped_one_step_matches_dense_even_with_gradients_near_eps() -> None:
    # ε matters when |g| is near it: the catch-up's denominator is dense AdamW's own for a one-step gap.
    torch.manual_seed(0)
    start = torch.randn(6, 8)
    dense = torch.nn.Parameter(start.clone())
    opt = torch.optim.AdamW([dense], lr=1e-3, weight_decay=1e-2)
    table = start.clone()
    rows_opt = RowAdamW(table, [0.0] + [1e-3] * 5, weight_decay=1e-2)
    for ids in ([0, 1], [2, 3], [0, 1], [2, 3], [0, 1]):  # each skips every other step (4, 5: never touched)
        rows = torch.tensor(ids)
        grad = torch.randn(len(ids), 8) * 1e-8
        dense.grad = torch.zeros(6, 8)
        dense.grad[rows] = grad
        opt.step()
        rows_opt.prepare(rows)
        rows_opt.step(grad)
    rows_opt.flush()
    assert float((table - dense.detach()).abs().max()) < 1e-6  # float32 rounding of the decays
