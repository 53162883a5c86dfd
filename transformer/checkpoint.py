"""Self-contained checkpoints: save atomically, load safely, average.

A checkpoint is a file a user can hand to someone else. It carries the resolved config and the
tokenizers' JSON next to the weights, so `translate.py` needs nothing else, and it holds only
tensors and plain Python values, so it loads with `torch.load(weights_only=True)` (no pickled code).

    transformer average runs/x/checkpoints --last 5 -o runs/x/avg.pt   # commands/average.py
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transformer.config import Config, ConfigError, config_from_dict
from transformer.model import Transformer, build_transformer
from transformer.tokenization.tokenizer import TokenizerPair

FORMAT_VERSION = 1
STEP_CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or incompatible; the message says what to do."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file in the same directory, then rename: a crash mid-write never
    leaves a truncated file under the final name (rename is atomic on POSIX and Windows).

    A write that fails (full disk, no permission) removes its temporary file and raises one
    CheckpointError that names the file and the cause; the previous file under `path` is intact."""
    path = Path(path)
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        with os.fdopen(descriptor, "wb") as file:
            torch.save({"format_version": FORMAT_VERSION, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        cause = _os_error_in(error)
        if cause is None:
            raise
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} written"
        raise CheckpointError(
            f"cannot write checkpoint {str(path)!r}: {cause.strerror or cause} ({kept}, no "
            "temporary file left); free disk space or fix the permissions and run again"
        ) from None


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind `error`: torch.save reports a failed write as a RuntimeError
    ("unexpected pos ...") whose context is the OSError (ENOSPC, EACCES, ...)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights_only=True, turning every failure into one clear message."""
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoints" if (path / "checkpoints").is_dir() else path  # a run dir?
        raise CheckpointError(
            f"{str(path)!r} is a directory; give a checkpoint file such as {inside / 'best.pt'}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {str(path)!r}; training writes them to <run_dir>/checkpoints/"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        if isinstance(error, pickle.UnpicklingError) and "Weights only" in str(error):
            raise CheckpointError(  # one line, not PyTorch's whole explanation
                f"{str(path)!r} holds pickled Python objects, which are refused (loading them "
                "could run code); use a checkpoint written by this project's train.py"
            ) from None
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{str(path)!r} cannot be read as a checkpoint ({type(error).__name__}: "
            f"{first_line}); it may be truncated or not a checkpoint of this project: use "
            "another one, such as last.pt or best.pt"
        ) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{str(path)!r} is not a checkpoint written by this project")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format version {payload['format_version']}, newer than this "
            f"code's {FORMAT_VERSION}: upgrade the package to read it"
        )
    missing = [key for key in ("config", "tokenizers", "model") if key not in payload]
    if missing:
        raise CheckpointError(f"{str(path)!r} lacks {', '.join(missing)}: not a usable checkpoint")
    return payload


@dataclass
class LoadedModel:
    """What translating needs, rebuilt from a checkpoint alone."""

    model: Transformer
    config: Config
    tokenizers: TokenizerPair
    step: int


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model, its config and its tokenizers from one checkpoint, in eval mode."""
    return model_from_payload(load_checkpoint(path, map_location=device), path, device)


def model_from_payload(
    payload: dict[str, Any], path: str | Path, device: str | torch.device = "cpu"
) -> LoadedModel:
    """`load_model` for a checkpoint already in memory (e.g. an average); `path` names it in
    error messages."""
    try:
        config = config_from_dict(payload["config"])
    except ConfigError as error:
        raise CheckpointError(
            f"{str(path)!r} was written with an incompatible configuration ({error})"
        ) from None
    model = build_transformer(config.model)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"the weights in {str(path)!r} do not fit the model its config describes ({first_line})"
        ) from None
    tokenizers = TokenizerPair.from_json(payload["tokenizers"], config.model.source_eos)
    return LoadedModel(model.to(device).eval(), config, tokenizers, int(payload.get("step", 0)))


# --- keeping the N most recent ---------------------------------------------------------------------


def step_checkpoints(directory: str | Path) -> list[Path]:
    """The `step_N.pt` files in a directory, oldest step first."""
    found = []
    for path in Path(directory).glob("step_*.pt"):
        match = STEP_CHECKPOINT.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def remove_old_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the `keep` most recent step checkpoints."""
    if keep <= 0:
        return
    for path in step_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)


# --- averaging -------------------------------------------------------------------------------------


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """Element-wise mean of the model weights of several checkpoints of one run.

    Averaging the last few checkpoints smooths the noise of the final updates and usually adds a
    fraction of a BLEU point for free. The result keeps the config and tokenizers of the newest
    checkpoint and drops optimiser state: it is for translating, not for resuming."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    payloads = [load_checkpoint(path) for path in paths]
    newest = payloads[-1]
    total = {name: tensor.double().clone() for name, tensor in payloads[0]["model"].items()}
    for path, payload in zip(paths[1:], payloads[1:], strict=True):
        if payload["model"].keys() != total.keys() or payload["config"] != newest["config"]:
            raise CheckpointError(f"{str(path)!r} comes from a different model; cannot average it")
        for name, tensor in payload["model"].items():
            total[name] += tensor.double()
    reference = newest["model"]
    averaged = {name: (total[name] / len(payloads)).to(reference[name].dtype) for name in reference}
    return {
        "config": newest["config"],
        "tokenizers": newest["tokenizers"],
        "model": averaged,
        "step": newest.get("step", 0),
        "averaged_from": [str(path) for path in paths],
    }
