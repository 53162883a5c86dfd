"""One SHA-256 over a checkpoint's weights and optimizer state: two runs that trained the same
way (same seed, data, code path) print the same digest, bit for bit.

    python train.py --config configs/tiny.yaml train.run_dir=runs/a train.device=cpu \\
        train.max_steps=40 train.validate_every=20 train.threads=1
    python tools/checkpoint_digest.py runs/a/checkpoints/last.pt

Used to show that a refactor changed no behaviour (e.g. the layout move of issue 20: the same
digest before and after). Prints the digest and the step.
"""

from __future__ import annotations

import hashlib
import sys

import torch


def digest(path: str) -> tuple[str, int]:
    checkpoint = torch.load(path, weights_only=True)
    sha = hashlib.sha256()
    for name in sorted(checkpoint["model"]):
        sha.update(checkpoint["model"][name].float().numpy().tobytes())
    state = checkpoint["optimizer"]["state"]
    for key in sorted(state, key=str):
        for field in sorted(state[key]):
            value = state[key][field]
            sha.update(value.numpy().tobytes() if torch.is_tensor(value) else str(value).encode())
    return sha.hexdigest(), int(checkpoint["step"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/checkpoint_digest.py CHECKPOINT.pt")
    value, step = digest(sys.argv[1])
    print(f"{value}  step {step}")
