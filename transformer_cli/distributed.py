"""`train` on torch.distributed: torchrun's environment -> a process group and DistributedDataParallel.

Every rank reads the same global batch order (a pure function of seed and epoch) and takes every
world_size-th batch of it, so one update sees the batches one process with --accumulate world_size
would see. Rank 0 alone validates, checkpoints, logs and draws; the others follow its decisions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import numpy as np
import torch

from transformer_cli.errors import RunError


@dataclass(frozen=True)
class World:
    """The processes of one training run and this process's place among them."""

    rank: int = 0  # this process, 0 .. size-1
    size: int = 1  # processes training together
    local_rank: int = 0  # this process on its machine (its GPU)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that validates, writes and draws."""
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK; one process without them."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RunError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (launch with torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise RunError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank, size, local)


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (nccl for CUDA, gloo for the CPU); returns this rank's device."""
    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise RunError(f"LOCAL_RANK {world.local_rank} but this machine has {torch.cuda.device_count()} "
                           "CUDA device(s): use --nproc-per-node <= the number of GPUs")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RunError(f"{' and '.join(missing)} not set: launch with torchrun")
    # the other ranks wait in a collective while rank 0 validates and writes checkpoints alone
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size,
                            timeout=timedelta(hours=2))
    return device


def rank0_run_id(run_id: str, world: World, device: torch.device) -> str:
    """Rank 0's run id on every rank (a new run draws a random one on each)."""
    if world.size == 1:
        return run_id
    data = torch.tensor(list(run_id.encode().ljust(64)[:64]), dtype=torch.uint8, device=device)
    torch.distributed.broadcast(data, 0)
    return bytes(data.tolist()).decode().strip()


def check_same_start(state, world: World, device: torch.device) -> None:
    """Every rank must continue from rank 0's step and place in the epoch, or the ranks would take
    different numbers of updates and wait for each other forever."""
    if world.size == 1:
        return
    mine = torch.tensor([state.step, state.epoch, state.batch_in_epoch], dtype=torch.int64, device=device)
    theirs = mine.clone()
    torch.distributed.broadcast(theirs, 0)
    agree = torch.tensor([int(torch.equal(mine, theirs))], device=device)
    torch.distributed.all_reduce(agree, op=torch.distributed.ReduceOp.MIN)
    if not int(agree):
        raise RunError(f"rank {world.rank} would resume at step {state.step}, rank 0 at step {int(theirs[0])}: "
                       "the run directory must be one file system that every machine sees")


def stop(world: World) -> None:
    """Leave the process group (if this run joined one)."""
    import torch.distributed as dist

    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def made_by_rank0(world: World, make: Callable[[], None]) -> None:
    """make() on rank 0 (files every rank then reads), the other ranks waiting until it is done."""
    if world.is_main:
        make()
    barrier(world)


def barrier(world: World) -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if world.size > 1:
        torch.distributed.barrier()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model (it starts from rank 0's weights)."""
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def replica_fingerprints(model: torch.nn.Module, world: World) -> list[float]:
    """A checksum of the weights on every rank (they must all be equal after training)."""
    device = next(model.parameters()).device
    total = torch.zeros(world.size, dtype=torch.float64, device=device)
    with torch.no_grad():
        total[world.rank] = sum(float(p.double().abs().sum() + p.double().sum()) for p in model.parameters())
    if world.size > 1:
        torch.distributed.all_reduce(total)
    return total.tolist()


class ShardedHooks:
    """RunHooks for one rank of a DDP run: this rank's share of the batches; validation, checkpoints
    and logs on rank 0 only, its validation score broadcast so every rank takes the same decisions."""

    def __init__(self, inner, world: World) -> None:
        self.inner, self.world = inner, world
        self.replicas = world.size

    def batches(self, epoch: int, start: int):
        """This rank's batches of `epoch` from batch `start` on: every world-size-th of the global order
        (an epoch that must be made first, BPE-dropout's segmentation, is made by rank 0)."""
        made_by_rank0(self.world, lambda: self.inner.train.ready(epoch))
        return self.inner.batches(epoch, start, self.world.rank, self.world.size)

    def evaluate(self, state) -> dict:
        """Rank 0's validation metrics; the other ranks get its score only, to take the same decisions."""
        metrics = self.inner.evaluate(state) if self.world.is_main else {"score": 0.0}
        score = torch.tensor([metrics["score"]], dtype=torch.float64, device=self.inner.device)
        torch.distributed.broadcast(score, 0)
        return metrics if self.world.is_main else {"score": float(score)}

    def checkpoint(self, state, is_best: bool) -> None:
        """Write the checkpoint of `state` (and the best model when is_best) on rank 0 only."""
        if self.world.is_main:
            self.inner.checkpoint(state, is_best)

    def log(self, event: dict) -> None:
        """Record the event (metrics.jsonl, the callback) on rank 0 only."""
        if self.world.is_main:
            self.inner.log(event)

    def start_step(self, step: int) -> None:
        """Dropout of update step+1 on this rank, seeded from (seed, step, rank): a resumed run draws
        the same masks without any rank's random state in the checkpoint."""
        torch.manual_seed(int(np.random.SeedSequence([self.inner.cfg.seed, step, self.world.rank]).generate_state(1)[0]))

    def end_step(self, step: int) -> None:
        """After the update (every rank keeps the same moving average: resume needs no rank 0 broadcast)."""
        self.inner.end_step(step)

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """The slowest clock and any rank's stop request (Ctrl-C reaches the ranks at different steps)."""
        t = torch.tensor([elapsed, float(stop)], dtype=torch.float64, device=self.inner.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t[0]), bool(t[1] > 0)
