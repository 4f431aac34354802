"""Training on several processes: the torch.distributed side of a run launched by ``torchrun``.

``torchrun --nproc_per_node N -m datasetgan train ...`` starts N ranks; :func:`join` sees torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR ...) and joins the process group with the
backend that fits the device: ``nccl`` on CUDA (rank r on GPU LOCAL_RANK), ``gloo`` on the CPU.
Without torchrun it returns the one-process :class:`Group`, whose collectives do nothing.

What the ranks share (see :mod:`datasetgan.training`): every optimiser step averages the gradients of
all ranks with one all-reduce of a flat buffer, which is what DistributedDataParallel does inside.
DDP's module wrapper itself does not fit StyleGAN2: its phases call G's mapping and synthesis
separately, differentiate gradients (R1, path length) and take an optimiser step per phase, while DDP
synchronises only inside ``forward`` + one ``backward``. ADA's r_t statistic, the path-length mean,
G's running w average and every logged loss are all-reduced too, so all ranks hold the same p and the
same weights at every step.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(hours=2)  # rank 0 alone computes FID and writes snapshots while the others wait


@dataclass
class Group:
    """This process's place among the ranks of one training run."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the only one that writes into the run folder."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns the tensor."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, *values: float) -> list[float]:
        """Python numbers summed over ranks (float64 on the way)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.sum_(t).tolist()

    def sum_grads(self, params) -> None:
        """Sum the gradients of ``params`` over ranks with one all-reduce. A parameter without a gradient
        (outside this phase's graph, the same on every rank) keeps none, so the optimiser skips it."""
        params = [p for p in params if p.grad is not None]
        if not self.active or not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.sum_(flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.reshape(p.shape))

    def broadcast_(self, tensors) -> None:
        """Rank 0's values into every rank's tensors (so all ranks start from the same weights)."""
        if self.active:
            for t in tensors:
                dist.broadcast(t, src=0)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped CPU tensor, in rank order."""
        if not self.active:
            return [tensor]
        moved = tensor.to(self.device)
        out = [torch.empty_like(moved) for _ in range(self.world_size)]
        dist.all_gather(out, moved)
        return [t.cpu() for t in out]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def join(device: str = "cpu") -> Group:
    """The process group of a torchrun launch (or the single process); chooses the backend and, on
    CUDA, this rank's GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return Group(rank=rank, world_size=world, device=device)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "cpu"):
    """:func:`join` for the body of a command, then :func:`leave`. After a body that succeeded the
    ranks first wait for each other: rank 0 writes the last outputs alone, and a rank that tore its
    gloo connections down meanwhile died at exit ("terminate called without an active exception")."""
    group = join(device)
    try:
        yield group
        group.barrier()
    finally:
        leave()
