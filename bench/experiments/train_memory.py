"""Where a training run's resident memory goes: RSS sampled through a run, by phase.

    python bench/experiments/train_memory.py --out /tmp/memory.json -- \
        --config multi30k_en_de data.dataset=/path/to/multi30k data.splits.validation=val \
        data.splits.test=test_2016_flickr train.max_minutes=6 train.validate_every=150 \
        train.run_dir=/tmp/memory_run --overwrite

Runs `transformer train` with the arguments after `--` in this process, with a thread that reads
/proc/self/status every 0.1 s (VmRSS) and glibc's mallinfo2 (the heap: bytes in use, bytes freed
but kept), and labels each sample with the phase the run is in: setup, step, validation (its
packed copy of the model, decoding, loss), checkpoint. It prints, per phase, the largest RSS seen
and the heap at that moment, and the run's peak (VmHWM) over the peak of its training steps, and
writes every sample to --out. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap() -> tuple[float, float, float]:
    """(MB in use, MB freed but kept by malloc, MB in mmapped blocks), over every arena."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks / 1e6, info.fordblks / 1e6, info.hblkhd / 1e6


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1e3
    raise KeyError(key)


class Sampler:
    """RSS and heap every `interval` seconds, each labelled with the phase stack at that moment."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.phases = interval, ["start"]
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        in_use, kept, mapped = heap()
        self.samples.append(
            {
                "t": round(time.monotonic() - self.started, 2),
                "phase": "/".join(self.phases[1:]) or "start",
                "rss_mb": status_mb("VmRSS"),
                "heap_in_use_mb": in_use,
                "heap_kept_free_mb": kept,
                "mmapped_mb": mapped,
            }
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def labelled(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.phases.append(name)
            self.sample()
            try:
                return function(*args, **kwargs)
            finally:
                self.sample()
                self.phases.pop()

        return wrapper


def label_phases(sampler: Sampler) -> None:
    from transformer.training import loop, run_checkpoint, validation

    for module, name, label in (
        (loop, "start_run", "setup"),
        (loop, "train_step", "step"),
        (loop, "validate_and_save", "validation"),
        (validation, "pack_linear_layers", "pack"),
        (validation, "translate_ids", "decode"),
        (validation, "validation_loss", "loss"),
        (validation, "log_attention_figures", "figures"),
        (run_checkpoint, "save", "checkpoint"),
    ):
        setattr(module, name, sampler.labelled(label, getattr(module, name)))


def report(sampler: Sampler) -> dict[str, Any]:
    by_phase: dict[str, dict[str, Any]] = {}
    for sample in sampler.samples:
        best = by_phase.get(sample["phase"])
        if best is None or sample["rss_mb"] > best["rss_mb"]:
            by_phase[sample["phase"]] = sample
    steps = [s["rss_mb"] for s in sampler.samples if s["phase"] == "step"]
    first_validation = next(
        (s["t"] for s in sampler.samples if s["phase"].startswith("validation")), float("inf")
    )
    steps_before = [
        s["rss_mb"] for s in sampler.samples if s["phase"] == "step" and s["t"] < first_validation
    ]
    return {
        "peak_mb": status_mb("VmHWM"),
        "steps_peak_mb": max(steps, default=0.0),
        "steps_peak_before_validation_mb": max(steps_before, default=0.0),
        "by_phase": by_phase,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file of every sample and the summary")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train's arguments")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    from transformer.commands import train

    sampler = Sampler(args.interval)
    label_phases(sampler)
    sampler.start()
    status = train.main(train_args)
    sampler.stop()
    summary = report(sampler)
    Path(args.out).write_text(json.dumps({**summary, "samples": sampler.samples}, indent=0))
    print(
        f"\n{'phase':<32} {'max RSS MB':>10} {'heap in use':>12} {'kept free':>10} {'mmapped':>8}"
    )
    for phase, sample in summary["by_phase"].items():
        print(
            f"{phase:<32} {sample['rss_mb']:>10.0f} {sample['heap_in_use_mb']:>12.0f} "
            f"{sample['heap_kept_free_mb']:>10.0f} {sample['mmapped_mb']:>8.0f}"
        )
    peak, steps = summary["peak_mb"], summary["steps_peak_before_validation_mb"]
    print(
        f"run peak (VmHWM) {peak:.0f} MB; steps' peak before the first validation {steps:.0f} MB "
        f"(all steps {summary['steps_peak_mb']:.0f} MB): {peak / max(steps, 1):.2f}x"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
