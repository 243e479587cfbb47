"""Several processes, one run: the pieces the trainer needs under ``torchrun``.

``torchrun --nproc_per_node=N -m rnndrop train RECIPE`` (or ``... classify train --data
PATH``) starts N processes with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set; :func:`process_group` turns them into a ``torch.distributed`` process
group (gloo on CPU; NCCL for CUDA tensors plus gloo for the CPU-side objects of a checkpoint)
and removes it at the end. Without those variables, or with ``WORLD_SIZE=1``, nothing is
initialised and a run is exactly a single-process run.

Every collective has the group's timeout (``train.dist_timeout``): a process that died or hangs
stops the others within that time with one line (:class:`PeerLost`), never a silent hang.

No imports from the package: this is ground floor.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


# DistributedDataParallel's option not to broadcast the module's buffers before every forward
# (ours are constants: sampler tables); torch >= 2.13 renamed it and deprecated the old name.
NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                  if "forward_sync_buffers" in inspect.signature(
                      torch.nn.parallel.DistributedDataParallel.__init__).parameters
                  else {"broadcast_buffers": False})


class PeerLost(RuntimeError):
    """Another process of the run died, hung or could not be reached."""


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes, ``local_rank`` on its node."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be >= 1, got {n}")
    return n


def world() -> World:
    """This process's place in the initialised process group (a world of one if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s dropout masks: a hash of (seed, rank), so that ranks draw
    independent masks and no rank of one run repeats the masks of another run's seed (as
    ``seed + rank`` would for the run with seed + 1)."""
    digest = hashlib.blake2b(f"rnndrop:{seed}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def device_for(device: str, w: World) -> torch.device:
    """``train.device`` for this process: under several processes ``cuda`` is this node's GPU
    number ``LOCAL_RANK`` (one process per device)."""
    if not w.distributed or not device.startswith("cuda"):
        return torch.device(device)
    if device != "cuda":
        raise ValueError(f"train.device={device!r} names one GPU, but with {w.size} processes "
                         f"each takes its own (cuda:LOCAL_RANK): use --device cuda")
    return torch.device("cuda", w.local_rank)


@contextmanager
def process_group(device: str, timeout_s: float):
    """Initialise the process group that torchrun's environment describes, for the block.
    With no such environment (or one process) nothing happens."""
    if env_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        yield world()
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run a single process")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {', '.join(missing)} not: start the run with "
                           f"torchrun --nproc_per_node=N -m rnndrop train|classify train ...")
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={device!r} but no CUDA device is available")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    # NCCL moves the gradients; gloo the checkpoint's CPU-side objects (RNG states, hidden).
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except Exception as e:
        raise PeerLost(f"could not form the process group ({_first_line(e)}); check "
                       f"MASTER_ADDR/MASTER_PORT and that every process was started") from None
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _backend_reason(e: BaseException) -> str:
    """The gist of a backend's error: gloo's "[.../pair.cc:553] Connection closed by peer
    [127.0.0.1]:6037. This is typically caused by ..." becomes its first sentence."""
    line = _first_line(e)
    line = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", line)
    return re.split(r"\.\s+(?=[A-Z])", line, maxsplit=1)[0].rstrip(".")


def is_comm_error(e: BaseException) -> bool:
    """A failed or timed-out collective (gloo and NCCL raise ``DistError`` subclasses or a
    plain RuntimeError naming the backend)."""
    if isinstance(e, PeerLost):
        return False
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        k in text for k in ("gloo", "Gloo", "NCCL", "Connection closed by peer",
                            "Connection reset by peer", "timed out"))


@contextmanager
def peer_errors_as_one_line(w: World, timeout_s: float):
    """Turn a failed collective into one :class:`PeerLost` line for the user."""
    try:
        yield
    except RuntimeError as e:
        if not (w.distributed and is_comm_error(e)):
            raise
        raise PeerLost(f"rank {w.rank} of {w.size}: lost the other processes (one exited, was "
                       f"killed or did not answer within train.dist_timeout={timeout_s:g} s: "
                       f"{_backend_reason(e)}); continue from the last checkpoint with --resume"
                       ) from None


def step_sync(loss: torch.Tensor, *flags: bool, size: int) -> tuple[torch.Tensor, list[bool]]:
    """One all-reduce per step: the mean of every rank's ``loss`` (a scalar; returned as a 0-d
    float32 tensor on its device) and, for each of ``flags``, whether any rank raised it (a
    stop signal, a passed deadline), so that every rank takes the same decision at the same
    step."""
    buf = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=loss.device)
    buf = torch.cat([loss.detach().double().reshape(1), buf])
    dist.all_reduce(buf)
    mean = (buf[0] / size).float()
    return mean, [v > 0 for v in buf[1:].tolist()]


def gather_to_rank0(obj, w: World):
    """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere); a collective."""
    out = [None] * w.size if w.rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def on_rank0(fn, w: World):
    """Run ``fn()`` on rank 0 only (a file read or write) and give every rank its result, or
    raise its error (a one-line user error) on every rank: no rank waits for a peer that
    stopped with an error."""
    box = [None]
    if w.rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:
            try:
                pickle.dumps(e)
                err = e
            except Exception:
                err = RuntimeError(str(e))
            box[0] = ("error", err)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value
