"""Many processes, one training run: torchrun + torch.distributed + DistributedDataParallel.

`torchrun` starts one process per GPU (or several CPU processes) on each machine and sets RANK, WORLD_SIZE and
LOCAL_RANK; `init_world` joins them into one process group (NCCL between GPUs, gloo on CPUs) with a bounded
timeout, so a rank that dies or hangs makes the others fail with an error instead of waiting forever. The few
collectives training needs beyond DDP's gradient all-reduce live here, each on tensors (never pickled objects).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from robolearn.device import resolve_device

DEFAULT_TIMEOUT_S = 600.0  # longest a rank waits for the others in one collective (a checkpoint, an eval share)


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank `rank` of `size`, GPU `local_rank` of its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    grouped: bool = False  # in a torch.distributed process group (torchrun), even one of size 1 (DDP on one GPU)

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, TensorBoard, checkpoints, reports and videos."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Collectives and DDP are in play: every rank must take part in them in the same order."""
        return self.grouped

    @classmethod
    def current(cls) -> World:
        """The world of the process group this process joined (one process when there is none)."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), grouped=True)

    def share(self, global_batch: int) -> int:
        """Each rank's part of a global batch: `train.batch_size` is the global batch, split evenly."""
        if global_batch % self.size:
            raise ValueError(f"the batch size {global_batch} is the global batch, split evenly over {self.size} "
                             f"ranks: make it a multiple of {self.size}")
        return global_batch // self.size


def launched_by_torchrun() -> bool:
    """torchrun sets these for every worker, also with one process (--nproc_per_node=1: DDP on one GPU)."""
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def init_world(device: str | None = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (if any) and pick this rank's device.

    Under torchrun, CUDA ranks each take GPU LOCAL_RANK and talk over NCCL; CPU ranks talk over gloo. Outside
    torchrun this is one process on `device`. Calling it again in a process that already joined is harmless."""
    if not launched_by_torchrun():
        return World.current(), resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                               f"start at most that many processes per node (--nproc_per_node)")
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)  # later plain "cuda" tensors land on this rank's GPU too
    if not dist.is_initialized():
        # NCCL's watchdog aborts a collective stuck past the timeout instead of blocking forever
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s),
                                device_id=wanted if wanted.type == "cuda" else None)
    return World.current(), wanted


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_mean(values: dict[str, float], world: World) -> dict[str, float]:
    """The mean over ranks of each value (every rank must pass the same keys in the same order)."""
    if not world.distributed or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return dict(zip(values, (t / world.size).tolist()))


def all_max(value: float, world: World) -> float:
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_bytes(data: bytes | None, world: World) -> bytes | None:
    """Rank 0's bytes (None: nothing) on every rank: how a resume reaches ranks on machines without rank 0's disk."""
    if not world.distributed:
        return data
    device = _comm_device()
    size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    n = int(size.item())
    if n < 0:
        return None
    buffer = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if world.is_main and n
              else torch.empty(n, dtype=torch.uint8, device=device))
    if n:
        dist.broadcast(buffer, src=0)
    return bytes(buffer.cpu().numpy().tobytes())


def check_identical(module: torch.nn.Module, world: World, what: str) -> None:
    """Raise when ranks hold different weights (a float64 checksum of every tensor, compared across ranks)."""
    if not world.distributed:
        return
    with torch.no_grad():
        sums = torch.stack([t.detach().double().sum() for t in module.state_dict().values()
                            if t.dtype.is_floating_point]).to(_comm_device())
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"the {what} weights differ between ranks (rank {world.rank}); the ranks diverged")
