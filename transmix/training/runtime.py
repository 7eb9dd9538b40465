"""Where a process runs: its device, its place in a ``torchrun`` job, autocast, and the per-step reduction.

Nothing here knows about training; the trainer, evaluation, robustness, the benchmark and Fig. 1's pairs all take
their device from :func:`resolve_device` and their precision from :func:`autocast`, so no module calls ``.cuda()``.
"""

from __future__ import annotations

import os
import platform
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from transmix import __version__
from transmix.config.strict import ConfigError
from transmix.records.provenance import stack


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """``(rank, world)``: which slice of a global batch, or which shard of a dataset, is this process's."""
        return self.rank, self.world


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when there is one; a bare ``cuda`` -> this process's GPU under ``torchrun``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} asked for, but no CUDA device is available; use device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the ``torchrun`` process group when there is one (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world == 1:
        return Dist(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank), device


def leave_distributed(where: Dist) -> None:
    if where.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device``, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def use_tf32(device: torch.device, on: bool) -> None:
    """TF32 for float32 matrix products and convolutions on CUDA (Ampere and later); nothing elsewhere."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def compile_model(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile`` that keeps the attention capture's hooks honest.

    By default dynamo does not guard on a module's hooks, so a graph compiled for one model is reused for another
    of the same class that carries hooks the first lacked, and those hooks never run (seen with two micro ViTs in
    one process, one hooked). Guarding on hooks costs a little at every call and makes each model's hooks its own.
    Dynamo decides that reuse before any backend sees the graph, so it holds for every ``backend``; training and
    the benchmark use the default.
    """
    import torch._dynamo.config

    torch._dynamo.config.skip_nnmodule_hook_guards = False
    return torch.compile(model, backend=backend)


def reduce(loss: torch.Tensor, stop: bool, world: int) -> tuple[float, bool]:
    """Mean loss over processes and whether any process was asked to stop, in one collective; it waits for the
    device, so the loop calls it every ``sync_every`` steps."""
    if world == 1:
        return float(loss), stop
    packed = torch.stack([loss.double().cpu() / world, torch.tensor(float(stop), dtype=torch.float64)])
    if dist.get_backend() == "nccl":
        packed = packed.to(loss.device)
    dist.all_reduce(packed)
    return float(packed[0]), bool(packed[1] > 0)


def device_name(device: torch.device) -> str:
    """The GPU's name (``NVIDIA H200``), or the processor's on a CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def environment(device: torch.device, sha: str) -> dict[str, Any]:
    """Versions, code revision and hardware, as every run directory records them."""
    import timm

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
        "transmix": __version__,
        "git_sha": sha,
        "lock": stack(),  # the locked stack, and any package installed at another version
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
    }
