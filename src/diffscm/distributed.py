"""Several processes (``accelerate launch`` / ``torchrun``): who am I, which share of the work is mine, gather it back.

Work is split into *contiguous* blocks of whole batches (or chunks), so every batch a rank computes is the very batch
a single process would compute: the gathered output equals the single-process output for the same seed. Gathering
goes through tensors (``all_gather`` with padding), never through pickled objects.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def topology() -> Topology:
    """Rank and world size of this process; the process group (gloo on CPU, nccl on GPU) is initialised on first use
    through accelerate when launched with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Topology()
    import torch._dynamo  # noqa: F401  (measured: without it, gloo's teardown at exit aborts ~1 run in 5 here)
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True accelerate ignores CPU worlds
    if not _SHUTDOWN_REGISTERED:
        atexit.register(_shutdown)
        _SHUTDOWN_REGISTERED.append(True)
    return Topology(state.process_index, state.num_processes, state.local_process_index)


_SHUTDOWN_REGISTERED: list = []


def _shutdown() -> None:
    """Tear the process group down before the interpreter exits: left to static destructors, gloo's threads can
    abort the process ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def device_for(top: Topology, preference: str = "auto") -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when several processes share a GPU machine, else ``pick_device``."""
    from .device import pick_device

    dev = pick_device(preference)
    if top.distributed and dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", top.local_rank % torch.cuda.device_count())
    return dev


def block(n: int, top: Topology) -> range:
    """This rank's contiguous block of ``range(n)`` (blocks differ in size by at most one)."""
    return range(top.rank * n // top.world, (top.rank + 1) * n // top.world)


def barrier(top: Topology) -> None:
    if top.distributed:
        torch.distributed.barrier()


def gather_rows(t: torch.Tensor, top: Topology) -> torch.Tensor:
    """Concatenate every rank's ``t`` along dim 0 in rank order (ranks may hold different row counts); all ranks get it."""
    if not top.distributed:
        return t
    dev = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    rows = torch.tensor([t.shape[0]], device=dev)
    counts = [torch.zeros_like(rows) for _ in range(top.world)]
    torch.distributed.all_gather(counts, rows)
    counts = [int(c) for c in counts]
    pad = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=dev)
    pad[: t.shape[0]] = t.to(dev)
    parts = [torch.empty_like(pad) for _ in range(top.world)]
    torch.distributed.all_gather(parts, pad)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device)
