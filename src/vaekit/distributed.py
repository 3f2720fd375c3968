"""Data-parallel training and evaluation on PyTorch's own engine: ``torch.distributed`` process
groups and ``DistributedDataParallel`` (DDP), launched by ``torchrun``.

Semantics (the same program runs on 1 or N processes):

- ``--batch-size B`` is the *global* batch: each of the W ranks takes ``B / W`` examples per
  step (a disjoint shard of the epoch, :class:`~vaekit.batches.TensorBatches`), DDP averages the
  gradients, so one step is the gradient of the mean loss over the same B examples as a single
  process with batch B, and the learning rate keeps its meaning (no scaling rule is applied).
- Metrics are sums over examples all-reduced across ranks before anyone divides, so rank 0
  reports full-data values. Evaluation spreads batches over ranks and gathers per-example values.
- Only rank 0 writes files; every rank loads the same checkpoint when resuming.

Outside torchrun every helper here is a no-op, so single-process code pays nothing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .errors import ConfigError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun for every worker
# torchrun's c10d rendezvous shares its key-value store with the workers by default, and a
# restarted group can then read keys left by the previous attempt and connect to dead peers
# (pytorch/pytorch#135712). On one node `process_group` gives every attempt its own key prefix
# in that store; this variable, read by torchrun itself, gives every attempt its own store,
# which multi-node jobs still need. `vaekit train --nproc` sets it.
FRESH_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
_joined_a_group = False  # set once this process has joined a torchrun job's process group


def joined_a_process_group() -> bool:
    """Whether this process joined a torchrun job's process group (:func:`process_group`)."""
    return _joined_a_group


def restart_caveat() -> str | None:
    """A warning when torchrun may restart the workers of several nodes over a store shared
    across attempts (on one node :func:`attempt_store` keeps the attempts apart)."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if (restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            and os.environ.get("GROUP_WORLD_SIZE", "1") != "1"):
        return (f"note: torchrun shares its store across restarts and the nodes of a job count "
                f"their restarts each for itself: export {FRESH_STORE_ENV}=1 before torchrun "
                f"for multi-node jobs with restarts (pytorch/pytorch#135712)")
    return None


def launched_by_torchrun(environ: dict | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_ENV)


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    if is_distributed():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# -- process group ------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessGroup:
    """What a worker knows about the job: ``active`` only under torchrun."""

    active: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # this rank's device under torchrun

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_device(requested: str, local_rank: int) -> torch.device:
    """The device of one worker: ``cuda:LOCAL_RANK`` when CUDA is asked for (or ``auto`` and
    available), else the CPU. An explicit ``cuda:N`` is refused: torchrun assigns GPUs."""
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"--device {requested} under torchrun: each worker uses the GPU "
                              "of its LOCAL_RANK; pass --device cuda (or auto)")
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
        return torch.device(f"cuda:{local_rank}")
    return device


def attempt_store_prefix() -> str:
    """The key prefix of this attempt in torchrun's shared store, one per restart (the
    :class:`~torch.distributed.PrefixStore` adds the ``/`` before each key)."""
    return f"vaekit/attempt_{restart_count()}"


def attempt_store() -> torch.distributed.Store | None:
    """A store of this attempt's own when torchrun shares its agent's store with the workers
    on a single node, else None (torch's env:// init, as usual).

    With the shared store (``TORCHELASTIC_USE_AGENT_STORE=True``, torchrun's default for the
    c10d rendezvous, ``--standalone`` included) env:// connects to the agent's TCPStore with no
    per-attempt prefix, so a restarted group reads the keys the previous attempt left there
    (gloo addresses, barrier counters), connects to dead peers and fails or hangs
    (pytorch/pytorch#135712). Prefixing the keys with the restart count isolates the attempts
    whatever ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE`` says. Only on one node: every agent counts
    its own restarts (one whose worker failed counts one more than the others, which restart
    on the membership change), so across nodes the prefixes would differ and the ranks never
    meet; there env:// is kept and the variable is still needed (:func:`restart_caveat`)."""
    if (os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
            or os.environ.get("GROUP_WORLD_SIZE") != "1"):
        return None
    # the store timeout env:// gives it (gloo's default)
    from torch.distributed.constants import default_pg_timeout

    client = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
        is_master=False, timeout=default_pg_timeout)
    return torch.distributed.PrefixStore(attempt_store_prefix(), client)


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[ProcessGroup]:
    """Under torchrun: joins the job's process group (NCCL when the worker's device is a GPU,
    gloo on CPU; rendezvous from torchrun's environment, under a key prefix of this attempt's
    own when torchrun shares its store on one node: :func:`attempt_store`), yields a
    :class:`ProcessGroup`, and on the way out waits for every rank and destroys the group.
    Outside torchrun: yields an inactive group and does nothing."""
    if not launched_by_torchrun() or is_distributed():
        rank, world = rank_and_world_size()
        yield ProcessGroup(active=is_distributed(), rank=rank, world_size=world)
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    worker_device = rank_device(device, local_rank)
    if worker_device.type == "cuda":
        torch.cuda.set_device(worker_device)
    backend = "nccl" if worker_device.type == "cuda" else "gloo"
    device_id = worker_device if worker_device.type == "cuda" else None
    store = attempt_store()  # torchrun's shared store on one node: this attempt's keys only
    if store is None:
        torch.distributed.init_process_group(backend, device_id=device_id)
    else:
        torch.distributed.init_process_group(
            backend, store=store, rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]), device_id=device_id)
    global _joined_a_group
    _joined_a_group = True
    group = ProcessGroup(True, torch.distributed.get_rank(), torch.distributed.get_world_size(),
                         local_rank, worker_device)
    finished = False
    try:
        yield group
        finished = True
    finally:
        if finished:  # a rank that failed must not wait for the others (torchrun restarts all)
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# -- collectives (no-ops in one process) ---------------------------------------------------
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """sum over ranks of ``x`` (in place; returns ``x``)."""
    if is_distributed():
        torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.SUM)
    return x


def all_ranks_agree(flag: bool | torch.Tensor, device: torch.device | str = "cpu") -> bool:
    """True only when ``flag`` is true on every rank: collective decisions (skip a step) keep
    DDP's gradient all-reduces matched across ranks."""
    if not is_distributed():
        return bool(flag)
    x = torch.as_tensor(flag, device=device).to(torch.int32).reshape(1)
    torch.distributed.all_reduce(x, op=torch.distributed.ReduceOp.MIN)
    return bool(x.item())


def rank0_decides(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (e.g. whether a checkpoint exists to resume from)."""
    if not is_distributed():
        return flag
    x = torch.tensor([int(flag)], device=device)
    torch.distributed.broadcast(x, src=0)
    return bool(x.item())


def gather_batches(local: dict[int, torch.Tensor], num_batches: int) -> list[torch.Tensor]:
    """All ranks' per-batch results ``{batch index: tensor}`` as one list in batch order, on
    every rank (``all_gather_object`` of CPU tensors: sizes may differ between ranks)."""
    if not is_distributed():
        return [local[b] for b in range(num_batches)]
    parts: list[dict[int, torch.Tensor]] = [{} for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather_object(parts, {b: v.cpu() for b, v in local.items()})
    merged = {b: v for part in parts for b, v in part.items()}
    return [merged[b] for b in range(num_batches)]


def my_batches(num_batches: int, shard: bool = True) -> range:
    """Indices of the batches this rank computes: round-robin ``rank, rank + W, ...``."""
    rank, world = rank_and_world_size() if shard else (0, 1)
    return range(rank, num_batches, world)


# -- training ------------------------------------------------------------------------------
def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """B / W: ``--batch-size`` is the global batch, split evenly over the ranks."""
    if global_batch % world_size:
        raise ConfigError(f"--batch-size {global_batch} (the global batch) must be divisible by "
                          f"the {world_size} processes; use a multiple of {world_size}")
    return global_batch // world_size


def rank_seed(seed: int, rank: int, step: int) -> int:
    """Seed of rank r > 0's random stream (posterior noise, dynamic binarization), distinct per
    rank and per resume point so ranks never draw the same noise; rank 0 keeps the
    single-process stream."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63)


def is_main_process(environ: dict | None = None) -> bool:
    """Rank 0 of a torchrun job (from its environment), or a process not under torchrun."""
    environ = os.environ if environ is None else environ
    return int(environ.get("RANK", "0")) == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
    return device
