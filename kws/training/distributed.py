"""Devices, mixed precision and DistributedDataParallel for `kws train`: the plumbing, kept out of train.py.

One process: `kws train --device auto|cpu|cuda|mps`. Several (one machine or many):

    torchrun --nproc-per-node N [--nnodes M --node-rank I --master-addr HOST --master-port P] -m kws train ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup` reads them and joins torch's
own process group (gloo on CPU, NCCL on CUDA). Every rank trains `--batch` sequences per step (the global
batch is WORLD_SIZE x --batch), rank 0 alone evaluates, logs and writes files, the others wait at a barrier.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..errors import KwsError

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP = ("auto", "off", "bf16", "fp16")


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """--device: auto is CUDA where present, else the CPU (MPS only when asked for: unmeasured here)."""
    if name not in DEVICES:
        raise KwsError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise KwsError(f"--device cuda: this torch ({torch.__version__}) sees no CUDA device "
                           "(a CPU-only build, or no driver); use --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise KwsError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) here: "
                           "--nproc-per-node should be at most the GPUs of each machine")
        return torch.device("cuda", local_rank)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise KwsError("--device mps: this torch sees no Apple GPU (MPS); use --device cpu")
    return torch.device(name)


@dataclass
class Dist:
    """Where this process trains: its rank of `world` and its device (world 1: a plain single process)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False        # this call created the process group (and destroys it in close)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world > 1

    def rows(self, batch: int) -> range:
        """This rank's rows of each global batch of world x batch rows: r, r + world, ... (1 process: all)."""
        return range(self.rank, self.world * batch, self.world)

    def barrier(self) -> None:
        if self.ddp:
            dist.barrier()

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks (in place; one process: `t` as it is). No host sync on CUDA."""
        if self.ddp:
            dist.all_reduce(t)
        return t

    @contextlib.contextmanager
    def local_first(self):
        """Local rank 0 of each machine runs the block first (e.g. decodes and caches the data), the other
        ranks after it (reading its cache): every rank passes one barrier, before or after the block."""
        if self.ddp and self.local_rank:
            dist.barrier()
        yield
        if self.ddp and not self.local_rank:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (e.g. the checkpoint: no shared file system needed)."""
        if not self.ddp:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.ddp:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [self.device.index] if self.device.type == "cuda" else None
        # the buffers (input normalisation) are fixed after set-up: no need to broadcast them every step
        return DDP(module, device_ids=ids, broadcast_buffers=False)

    def quiet(self):
        """Ranks > 0 print nothing (rank 0 logs); errors still propagate as exceptions."""
        if self.main:
            return contextlib.nullcontext()
        return contextlib.redirect_stderr(open(os.devnull, "w"))

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: str = "auto") -> Dist:
    """The launch environment -> Dist. None of torchrun's variables: one process. All of them: join the
    process group. Some but not all: one clear error (a hand-made launch that forgot one)."""
    have = [k for k in LAUNCH_ENV if os.environ.get(k)]
    if not have:
        return Dist(device=pick_device(device))
    missing = [k for k in LAUNCH_ENV if k not in have]
    if missing:
        raise KwsError(f"half-set launch environment: {', '.join(have)} set but {', '.join(missing)} missing; "
                       "launch several processes with `torchrun --nproc-per-node N -m kws train ...`, "
                       "or unset them for one process")
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise KwsError("RANK, WORLD_SIZE and LOCAL_RANK must be integers: "
                       + ", ".join(f"{k}={os.environ[k]!r}" for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))) from None
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise KwsError(f"launch environment: RANK {rank} is not one of WORLD_SIZE {world} ranks")
    dev = pick_device(device, local)
    if world == 1:
        return Dist(device=dev)
    if dev.type == "mps":
        raise KwsError("several processes on MPS: DistributedDataParallel supports CPU (gloo) and CUDA (NCCL)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://", rank=rank,
                                world_size=world)
        owns = True
    return Dist(rank=rank, world=world, local_rank=local, device=dev, owns_group=owns)


@dataclass
class Precision:
    """--amp: autocast dtype (None: float32) and a gradient scaler (enabled for float16 only)."""
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    device_type: str

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def precision(amp: str, device: torch.device) -> Precision:
    """auto: bf16 on CUDA where the GPU has it, else fp16 with a gradient scaler; float32 on CPU and MPS
    (bf16/fp16 can be asked for there too: CPU autocast is how the tests reach this path without a GPU)."""
    if amp not in AMP:
        raise KwsError(f"--amp {amp!r}: choose one of {', '.join(AMP)}")
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    return Precision(dtype, scaler, device.type)


def to_device(x: torch.Tensor | None, device: torch.device):
    """A producer's CPU batch onto the trainer's device: pinned and copied without blocking on CUDA, so
    the copy overlaps the previous step's kernels."""
    if x is None or device.type == "cpu":
        return x
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def reproducible(device: torch.device) -> None:
    """Same seed, same device, same results: cuDNN's deterministic kernels (its GRU has non-deterministic
    backward paths otherwise)."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model as model files hold it: on the CPU (a copy when it trains elsewhere)."""
    p = next(model.parameters(), None)
    if p is None or p.device.type == "cpu":
        return model
    import copy
    return copy.deepcopy(model).cpu()
