"""Where a training process runs: the torch device, the ``torchrun`` process group, progress.

Every training stage (distillation, compression, federated fine-tuning) picks its device and
joins a process group through these, and reports progress through a :data:`Reporter`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist

Reporter = Callable[[str, int, int], None]
"""Progress callback: (description, done, total)."""


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when there is a GPU, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device: str) -> int:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); returns the rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0
    if not dist.is_initialized():
        backend = "nccl" if pick_device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
