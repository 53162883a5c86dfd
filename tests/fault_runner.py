"""Runs train.py in a child process that pauses in the middle of its N-th checkpoint write, so that
tests/test_faults.py can kill it there with SIGKILL (a test tool, not a test module).

    PAUSE_AT_SAVE=2 PAUSE_SIGNAL=/tmp/x python tests/fault_runner.py --config ... --resume

The N-th `torch.save` writes the first half of its real bytes, creates PAUSE_SIGNAL, and sleeps.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

import train  # noqa: E402

REAL_SAVE = torch.save


def pausing_save(pause_at: int, signal_file: Path) -> Any:
    calls = 0

    def save(obj: object, file: Any, *args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls != pause_at:
            return REAL_SAVE(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        REAL_SAVE(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        signal_file.touch()
        time.sleep(600)  # the test kills us here

    return save


if __name__ == "__main__":
    torch.save = pausing_save(int(os.environ["PAUSE_AT_SAVE"]), Path(os.environ["PAUSE_SIGNAL"]))
    sys.exit(train.main(sys.argv[1:]))
