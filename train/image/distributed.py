"""torchrun integration: the rank/world of this process, one process group per run, and sharding helpers.

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), the
trainer joins a process group (gloo on CPU, NCCL on GPUs); launched plainly it is rank 0 of 1 and nothing
here touches ``torch.distributed``. torchrun is the scheduler; this module only reads what it set up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T = TypeVar("T")

# Collectives wait this long: rank 0 alone runs the text stages and builds the trunk cache (an hour on a
# CPU for Flickr8k) while the other ranks wait at a barrier. torchrun tears every rank down when one fails,
# so the timeout only bounds a genuine deadlock.
DEFAULT_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes shared outputs (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        """The context torchrun put in the environment (rank 0 of 1 when not launched by torchrun)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if not 0 <= rank < world:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
        return cls(rank=rank, world_size=world, local_rank=local, local_world_size=max(1, local_world))

    def cpu_threads(self) -> int:
        """This rank's fair share of the machine's cores (all of them for a single process)."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)


def default_backend() -> str:
    """NCCL when this process has a GPU, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def device_for(ctx: DistContext) -> torch.device:
    """This rank's device: its local GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


@contextmanager
def process_group(backend: str | None = None,
                  timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[DistContext]:
    """Join torchrun's process group for the duration of the block (a no-op for a single process)."""
    ctx = DistContext.from_env()
    if not ctx.enabled or dist.is_initialized():
        yield ctx
        return
    chosen = backend or default_backend()
    if chosen == "nccl":
        torch.cuda.set_device(device_for(ctx))
    dist.init_process_group(backend=chosen, timeout=timeout)
    log.info("rank %d/%d joined the %s process group", ctx.rank, ctx.world_size, chosen)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()


def shard_indices(n: int, ctx: DistContext) -> np.ndarray:
    """The rows of ``range(n)`` this rank owns: a strided slice, so shards differ in size by at most one."""
    return np.arange(ctx.rank, n, ctx.world_size, dtype=np.int64)


def batch_share(n: int, ctx: DistContext) -> tuple[np.ndarray, float]:
    """This rank's positions in a global batch of ``n`` rows, and the factor its mean loss is scaled by.

    DDP averages gradients over ranks, so a rank holding ``n_r`` of the ``n`` rows scales its mean loss by
    ``n_r · world / n``: the average of the scaled gradients is then exactly the gradient of the mean loss
    over the whole batch, however unevenly the rows fall (a rank with no row contributes zero).
    """
    positions = shard_indices(n, ctx)
    return positions, len(positions) * ctx.world_size / max(n, 1)


def gather_order(n: int, world: int) -> np.ndarray:
    """Rows of the all-gathered strided shares, each padded to ceil(n / world), in global batch order."""
    m = -(-n // world)
    j = np.arange(n, dtype=np.int64)
    return (j % world) * m + j // world


def broadcast_object(value: T, ctx: DistContext | None, src: int = 0) -> T:
    """Rank ``src``'s ``value`` (any picklable object) on every rank (unchanged for a single process)."""
    if ctx is None or not (ctx.enabled and dist.is_initialized()):
        return value
    box: list[object] = [value]
    dist.broadcast_object_list(box, src=src, device=device_for(ctx) if dist.get_backend() == "nccl" else None)
    return box[0]  # type: ignore[return-value]


def broadcast_floats(values: list[float], ctx: DistContext, src: int = 0) -> list[float]:
    """Rank ``src``'s ``values`` on every rank (returned unchanged for a single process)."""
    if not (ctx.enabled and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(device_for(ctx))
    dist.broadcast(t, src=src)
    return [float(v) for v in t.cpu()]


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """The element-wise sum of ``values`` over every rank (unchanged for a single process)."""
    if not (ctx.enabled and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(device_for(ctx))
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]
