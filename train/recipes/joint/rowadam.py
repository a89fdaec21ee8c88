"""AdamW for a large table of which each step touches a few rows (the joint map's word vectors).

Dense AdamW moves every row at every step: weight decay, and momentum that keeps a row moving for tens of
steps after its last gradient. At 80,000 words × 300 that is 24 million values read and written three
times per step (about 350 ms on the reference machine). Here a row is brought up to date only when a
step reads it (:meth:`RowAdamW.prepare`, before the forward pass) or at a snapshot
(:meth:`RowAdamW.flush`): the k = t − s steps it missed (last updated at step s, now at t) had zero
gradient, so its moments decay by β1^k and β2^k, and, as torch's AdamW orders each step's decay and
update, the parameter moves to

    p_t = p_s · exp(c_t − c_s) − (m_s / √v_s) · exp(c_t) · Σ_{j=s+1..t} a_j · e^(−c_j) · r^(j−s)

with a_j = lr_j · √(1 − β2^j) / (1 − β1^j), r = β1 / √β2 and c_j = Σ_{i≤j} log(1 − lr_i·wd). The whole
schedule is known in advance, so the sum is R_s − r^k · R_t with R_j = Σ_{i>j} a_i · e^(−c_i) · r^(i−j),
computed once backwards: a catch-up costs O(1) per row. The only approximation is ε: dense AdamW divides
each step's m̂ by √v̂ + ε, the catch-up all of them by the first missed step's (√v_s + ε·√(1 − β2^(s+1))/√β2
in √v_s's scale), exact for a row that missed one step and off by ε's share of √v̂ drifting over the
missed steps otherwise, which matters only for gradients near ε. Everything else is torch's AdamW, step
for step: a test runs both on the same gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class RowAdamW:
    """AdamW (torch's decoupled weight decay) over the rows of ``table``, touched rows only.

    ``lrs[t]`` is the learning rate of step t (1-based; ``lrs[0]`` unused), so the whole schedule is known.
    """

    def __init__(self, table: torch.Tensor, lrs: Sequence[float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.table = table
        self.b1, self.b2 = betas
        self.eps, self.wd = eps, weight_decay
        dev = table.device
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)
        self.last = torch.zeros(table.shape[0], dtype=torch.int64, device=dev)  # step each row is up to
        self.t = 0
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        lr = np.asarray(lrs, np.float64)
        self.lr = lr
        steps = np.arange(len(lr), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = lr * np.sqrt(1 - self.b2 ** steps) / (1 - self.b1 ** steps)
        a[0] = 0.0
        c = np.cumsum(np.log1p(-lr * weight_decay))
        c -= c[0]
        r = self.b1 / math.sqrt(self.b2)
        g = a * np.exp(-c)
        suffix = np.zeros(len(lr), np.float64)  # R_j = r · (g_{j+1} + R_{j+1})
        for j in range(len(lr) - 2, -1, -1):
            suffix[j] = r * (g[j + 1] + suffix[j + 1])
        self._c = torch.from_numpy(c).to(dev)
        self._suffix = torch.from_numpy(suffix).to(dev)
        # ε in the first missed step's denominator, in √v_s's scale: √v̂_j + ε = (β2^(k/2)·√v_s + ε·√bc2_j)
        # / √bc2_j, so with k = 1 the catch-up divides by √v_s + ε·√bc2_(s+1) / √β2 exactly as dense AdamW.
        self._eps_scale = torch.from_numpy(np.append(np.sqrt(1 - self.b2 ** steps[1:]), 1.0) * eps
                                           / math.sqrt(self.b2)).to(dev)
        self._log_r = math.log(r)

    def _caught_up(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(parameters, m, v) of ``rows`` (distinct) brought from their last step to step ``self.t`` under
        zero gradients (new tensors; the state is not written)."""
        t = self.t
        s = self.last.index_select(0, rows)
        k = (t - s).to(torch.float64)
        decay = torch.exp(self._c[t] - self._c.index_select(0, s))
        moved = torch.exp(self._c[t]) * (self._suffix.index_select(0, s)
                                         - torch.exp(k * self._log_r) * self._suffix[t])
        p, m, v = (x.index_select(0, rows) for x in (self.table, self.m, self.v))
        # m is 0 wherever v is (a row never given a gradient)
        ratio = m / (v.sqrt() + self._eps_scale.index_select(0, s).to(v.dtype)[:, None]).clamp_min(1e-30)
        dtype = self.table.dtype
        p = p * decay.to(dtype)[:, None] - ratio * moved.to(dtype)[:, None]
        m = m * torch.exp(k * math.log(self.b1)).to(dtype)[:, None]
        v = v * torch.exp(k * math.log(self.b2)).to(dtype)[:, None]
        return p, m, v

    def _write(self, rows: torch.Tensor, p: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> None:
        self.table.index_copy_(0, rows, p)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        self.last.index_fill_(0, rows, self.t)

    def prepare(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` (distinct) as of the current step, for the forward pass (a copy: give it to autograd);
        :meth:`step` then updates them."""
        p, m, v = self._caught_up(rows)
        self._pending = (rows, p, m, v)
        return p.clone()

    def step(self, grad: torch.Tensor) -> None:
        """One AdamW step: ``grad`` (U, D) for the rows of the last :meth:`prepare`, zero for every other
        row (the dense step's decay and momentum reach those when next prepared or flushed)."""
        if self._pending is None:
            raise RuntimeError("RowAdamW.step without prepare")
        rows, p, m, v = self._pending
        self._pending = None
        t = self.t + 1
        if t >= len(self.lr):
            raise ValueError(f"step {t} is past the schedule's {len(self.lr) - 1} steps")
        lr = float(self.lr[t])
        p.mul_(1 - lr * self.wd)
        m.lerp_(grad, 1 - self.b1)
        v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        bc1 = 1 - self.b1 ** t
        bc2 = 1 - self.b2 ** t
        denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
        p.addcdiv_(m, denom, value=-lr / bc1)
        self.t = t
        self._write(rows, p, m, v)

    def flush(self, block: int = 65536) -> None:
        """Bring every row up to the current step (before reading the whole table)."""
        n = self.table.shape[0]
        for start in range(0, n, block):
            rows = torch.arange(start, min(n, start + block), device=self.table.device)
            self._write(rows, *self._caught_up(rows))

    def state_dict(self) -> dict[str, Any]:
        """The moments, each row's last step and the step count (the table is saved by its owner)."""
        return {"m": self.m.cpu(), "v": self.v.cpu(), "last": self.last.cpu(), "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        dev = self.table.device
        self.m.copy_(state["m"].to(dev))
        self.v.copy_(state["v"].to(dev))
        self.last.copy_(state["last"].to(dev))
        self.t = int(state["t"])
