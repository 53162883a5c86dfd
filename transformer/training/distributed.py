"""Data-parallel training across processes started by `torchrun`: the process group, rank helpers,
sums across ranks, and the few places where one rank acts for all.

    torchrun --nproc-per-node 2 train.py --config configs/tiny.yaml train.device=cpu

Every process (rank) holds a full copy of the model and trains on its own share of the batches
(`TokenBatchSampler` gives batch k of an epoch to rank k % world_size). DistributedDataParallel
adds the ranks' gradients in the backward pass, so every rank takes the same optimizer step and the
copies never drift apart. Without torchrun (plain `python train.py`) there is no process group:
every helper here then answers for a world of one and costs nothing.

Rank 0 (the "main" rank) alone writes files and shows progress; the other ranks compute the same
run silently. Whatever depends on a decision (stop now? which checkpoint?) is agreed across ranks,
because a rank that leaves the loop one step early leaves the others waiting in a collective.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from transformer.device import resolve_device
from transformer.model import Transformer

T = TypeVar("T")


class RanksLostError(RuntimeError):
    """A collective failed: another rank died, hangs, or cannot be reached."""


# --- who am I --------------------------------------------------------------------------------------


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the one rank that writes files and shows progress (rank 0)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restart_count() -> int:
    """How often torchrun (--max-restarts) has restarted this group of workers; 0 on the first try."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process on a GPU node takes its own GPU: cuda:LOCAL_RANK."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# --- the process group -----------------------------------------------------------------------------

_collective_device = torch.device("cpu")  # NCCL reduces tensors on the GPU, Gloo on the CPU


@contextmanager
def process_group(device_name: str, timeout_s: float) -> Iterator[None]:
    """Join torchrun's process group for the duration of a run (NCCL on CUDA, Gloo otherwise), and
    leave it cleanly. Outside torchrun this does nothing.

    `timeout_s` bounds every wait for the other ranks: when one dies or hangs, the others stop with
    a `RanksLostError` within that time instead of waiting forever. It must exceed the longest
    thing one rank does while the others wait (rank 0 preparing the data, writing a
    checkpoint). The other ranks print nothing on stdout from here on (the bar, samples and scores
    come from rank 0); their errors and warnings still reach stderr."""
    global _collective_device
    if not launched_by_torchrun() or is_distributed():
        yield
        return
    device = local_device(resolve_device(device_name))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        _collective_device = device
    try:
        with _failures_named(timeout_s):
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
            _warn_if_restarts_may_not_reconnect()
            if not is_main():  # for the rest of the process: rank 0 reports the run
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            yield
            dist.barrier()  # nobody leaves before rank 0 has written its last files
    finally:
        if is_distributed():
            dist.destroy_process_group()
        _collective_device = torch.device("cpu")


def _warn_if_restarts_may_not_reconnect() -> None:
    """By default torchrun keeps one key-value store for all its restarts, and the processes of a
    restarted group can read the addresses of the previous, dead ones from it and fail to connect
    (seen here with Gloo in about one restart out of four; PyTorch issue #135712). Setting
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each restart a fresh store."""
    restarts_allowed = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    shared_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    if restarts_allowed and shared_store and restart_count() == 0 and is_main():
        warnings.warn(
            "torchrun --max-restarts: also set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's "
            "environment, or a restarted group may fail to connect (PyTorch issue #135712)",
            stacklevel=3,
        )


@contextmanager
def _failures_named(timeout_s: float) -> Iterator[None]:
    """Turn the backend's errors about a lost peer into one message that says what happened."""
    try:
        yield
    except RanksLostError:
        raise
    except RuntimeError as error:  # DistBackendError, and Gloo's RuntimeErrors from inside backward
        text = str(error)
        if not isinstance(error, dist.DistError) and not any(
            word in text for word in ("Gloo", "gloo", "NCCL", "Connection closed", "Timed out")
        ):
            raise
        first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        raise RanksLostError(
            f"rank {rank()} of {world_size()} lost contact with the other ranks: one of them "
            f"died, hangs, or did not answer within train.dist_timeout_s={timeout_s:g} s "
            f"({first_line[:200]}). In torchrun's report, a rank that died is the first failure "
            "and a rank that hung is the one stopped by a signal. Continue with --resume, or "
            "launch with torchrun --max-restarts K to restart from last.pt automatically"
        ) from error


# --- collectives -----------------------------------------------------------------------------------


def sum_across_ranks(values: Sequence[float] | Tensor) -> Tensor:
    """Element-wise sum over all ranks (a copy; the input is left alone)."""
    total = torch.as_tensor(values, device=_collective_device).clone()
    if is_distributed():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each flag, whether it is set on any rank: decisions to stop must be taken together."""
    if not is_distributed():
        return flags
    counts = sum_across_ranks([float(flag) for flag in flags])
    return tuple(bool(count > 0) for count in counts.tolist())


def gather_objects(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank (pickled: keep it small)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def gather_in_order(shard: list[T | None]) -> list[T]:
    """Merge per-rank lists in which each rank filled its own slots and left the others None:
    the result has every slot filled, in the original order."""
    merged = list(shard)
    for other in gather_objects(shard):
        for i, value in enumerate(other):
            if merged[i] is None:
                merged[i] = value
    missing = sum(value is None for value in merged)
    if missing:
        raise RuntimeError(f"{missing} slots were filled by no rank")
    return merged  # type: ignore[return-value]


def from_main(make: Callable[[], T]) -> T:
    """Run `make` on rank 0 only and hand its result to every rank (pickled). An error raised on
    rank 0 is raised on every rank, so a bad setting stops them all with the same message instead
    of leaving the others waiting."""
    if not is_distributed():
        return make()
    message: list[Any] = [None]
    if is_main():
        try:
            message[0] = ("ok", make())
        except Exception as error:  # sent on, then raised here too
            message[0] = ("error", error)
    dist.broadcast_object_list(message, src=0)
    outcome, value = message[0]
    if outcome == "error":
        raise value
    return value


def first_on_each_node(make: Callable[[], T]) -> T:
    """Run `make` on the first process of each node (LOCAL_RANK 0), then, once every node's first
    process is done, on the others: the first one prepares what the others then find ready on the
    node's disk (prepared data). They wait at most train.dist_timeout_s. An error in a first
    process is raised on every rank, so all stop with the same message."""
    if not is_distributed():
        return make()
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    result: Any = None
    outcome: tuple[str, Any] | None = None
    if first:
        try:
            result, outcome = make(), ("ok", None)
        except Exception as error:  # sent on, then raised everywhere
            outcome = ("error", error)
    for other in gather_objects(outcome):  # the wait: every rank takes part
        if other is not None and other[0] == "error":
            raise other[1]
    return result if first else make()


# --- the model -------------------------------------------------------------------------------------


class TokenStates(nn.Module):
    """DDP wraps a module and adds gradients up for whatever its `forward` computed. Training calls
    `Transformer.token_states`, not `forward`, so this module's forward is exactly that call. (The
    output projection runs inside the loss; its weight is the target embedding's, and its bias's
    gradient reaches DDP's hooks in the same backward pass, like every other parameter's.)"""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, tgt: Tensor, row_multiple: int = 1) -> Tensor:
        """src (B, S), decoder input tgt (B, T) -> decoder states (R, D) of the N real target
        positions (then R - N extra rows, see `Transformer.token_states`)."""
        return self.model.token_states(src, tgt, row_multiple)


def data_parallel(model: Transformer, device: torch.device) -> DistributedDataParallel | None:
    """The model's `token_states` under DDP, or None in a single process.

    Every parameter takes part in every step (no find_unused_parameters search). The buffers
    (positional-encoding tables) are constants, so they are not re-sent before each forward."""
    if not is_distributed():
        return None
    return DistributedDataParallel(
        TokenStates(model),
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
    )


def gradient_sync(ddp: DistributedDataParallel | None, sync: bool) -> Any:
    """Accumulating batches: only the last backward of a step needs to add the gradients across
    ranks; the earlier ones run under `no_sync` and just accumulate locally."""
    if ddp is None or sync:
        return nullcontext()
    return ddp.no_sync()


def seed_per_rank(seed: int) -> None:
    """Give each rank its own dropout stream (the initial weights were drawn from the common seed
    before this, so every rank starts from the same model)."""
    if is_distributed():
        torch.manual_seed(seed * 1_000_003 + rank())
