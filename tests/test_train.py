"""train.py end to end on the shipped numbers corpus: checkpoints, TensorBoard, validation, resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from transformer import device
from transformer.checkpoint import load_model
from transformer.config import load_config
from transformer.data.loading import EncodedSplit
from transformer.model import build_transformer
from transformer.training import loop, precision
from transformer.training.loss import token_loss_sum
from transformer.training.schedule import learning_rate_factor

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
NUMBERS = str(Path(__file__).parent.parent / "configs" / "data" / "numbers")
# Smaller and shorter than configs/tiny.yaml so every test runs in seconds.
FAST = [
    f"data.dataset={NUMBERS}",
    "model.d_model=32",
    "model.n_heads=2",
    "model.d_ff=64",
    "data.tokenizer.vocab_size=260",
    "data.max_tokens=1024",
    "train.log_every=2",
    "train.device=cpu",
    "train.threads=1",
]


def run_train(run_dir: Path, *overrides: str, flags: tuple[str, ...] = ()) -> int:
    return train.main(["--config", TINY, *flags, f"train.run_dir={run_dir}", *FAST, *overrides])


def test_train_writes_checkpoints_tensorboard_and_validates_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = load_config(
        TINY, [f"train.run_dir={run_dir}", *FAST, "train.max_steps=12", "train.validate_every=4"]
    )
    result = loop.train(config)

    assert result.state.step == 12
    assert result.last_validation is not None
    assert (
        result.last_validation.scores.n_sentences == 60
    )  # every line of configs/data/numbers/val.*
    assert len(result.state.history) == 3
    assert math.isfinite(result.last_validation.loss)

    checkpoints = run_dir / "checkpoints"
    names = sorted(p.name for p in checkpoints.glob("*.pt"))
    assert names == ["best.pt", "last.pt", "step_0000008.pt", "step_0000012.pt"]  # keep 2
    payload = torch.load(checkpoints / "last.pt", weights_only=True)
    assert payload["step"] == 12 and payload["config"]["train"]["max_steps"] == 12
    assert {"optimizer", "scheduler", "scaler", "sampler", "rng", "tokenizers"} <= payload.keys()
    loaded = load_model(checkpoints / "best.pt")
    assert loaded.config.model.src_vocab_size == loaded.tokenizers.src_vocab_size
    assert (run_dir / "config.yaml").is_file()

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in [
        "train/loss",
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_second",
        "valid/loss",
        "valid/perplexity",
        "valid/bleu",
        "valid/chrf",
        "valid/ter",
    ]:
        assert tag in tags["scalars"], tag
    # Labelled attention heatmaps (matplotlib figures) for the first train.num_samples sentences.
    attention = [f"valid/attention/sentence_{n}" for n in (1, 2, 3)]
    assert sorted(tag for tag in tags["images"] if tag.startswith("valid/attention")) == attention
    assert len(events.Images(attention[0])) == 3  # one per validation
    # The final hparams go into the run itself, and add no one-point hparam/* scalar charts.
    assert not [tag for tag in tags["scalars"] if not tag.startswith(("train/", "valid/"))]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert "custom_scalars__config__" in tags["tensors"]  # the Custom Scalars tab's layout
    assert any(tag.startswith("valid/samples") for tag in tags["tensors"])
    assert len(events.Scalars("valid/bleu")) == 3


def final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    common = (
        "train.validate_every=5",
        "model.dropout=0.1",
    )  # dropout: the RNG state must resume too
    assert run_train(tmp_path / "straight", "train.max_steps=10", *common) == 0
    assert run_train(tmp_path / "split", "train.max_steps=5", *common) == 0
    assert run_train(tmp_path / "split", "train.max_steps=10", *common, flags=("--resume",)) == 0
    straight, split = final_parameters(tmp_path / "straight"), final_parameters(tmp_path / "split")
    assert straight.keys() == split.keys()
    for name in straight:
        assert torch.equal(straight[name], split[name]), name


def test_resume_across_an_epoch_boundary(tmp_path: Path) -> None:
    # ~880 training pairs at 1024 tokens per batch is about 30 batches an epoch; 45 steps spans two.
    common = ("train.validate_every=100", "data.max_tokens=1024")
    assert run_train(tmp_path / "straight", "train.max_steps=45", *common) == 0
    assert run_train(tmp_path / "split", "train.max_steps=20", *common) == 0
    assert run_train(tmp_path / "split", "train.max_steps=45", *common, flags=("--resume",)) == 0
    straight, split = final_parameters(tmp_path / "straight"), final_parameters(tmp_path / "split")
    for name in straight:
        assert torch.equal(straight[name], split[name]), name


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_train(tmp_path, "train.max_steps=2", "train.validate_every=2") == 0
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    assert run_train(tmp_path, "train.max_steps=2") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    assert (
        run_train(tmp_path, "train.max_steps=1", "train.validate_every=1", flags=("--overwrite",))
        == 0
    )
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 1


def test_resume_without_a_run_and_with_a_changed_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_train(tmp_path, "train.max_steps=2", flags=("--resume",)) == 2
    assert "there is no" in capsys.readouterr().err
    assert run_train(tmp_path, "train.max_steps=2", "train.validate_every=2") == 0
    assert run_train(tmp_path, "train.max_steps=4", "model.d_ff=96", flags=("--resume",)) == 2
    assert "model.d_ff" in capsys.readouterr().err


def test_ctrl_c_saves_last_checkpoint_and_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_step = loop.train_step
    calls = []

    def step_then_interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        stats = real_step(*args, **kwargs)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C during step 3
        return stats

    monkeypatch.setattr(loop, "train_step", step_then_interrupt)
    assert run_train(tmp_path, "train.max_steps=50", "train.validate_every=100") == 130
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    assert "--resume" in capsys.readouterr().err


def test_config_errors_are_one_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_train(tmp_path, "train.lrr=0.1") == 2
    assert "did you mean train.lr?" in capsys.readouterr().err
    assert run_train(tmp_path, "train.max_steps=many") == 2
    assert "train.max_steps must be an integer" in capsys.readouterr().err
    assert train.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert run_train(tmp_path, "data.dataset=" + str(tmp_path / "nowhere")) == 2
    assert "nowhere" in capsys.readouterr().err


def test_override_takes_effect(tmp_path: Path) -> None:
    config = load_config(TINY, ["train.lr=3e-4", "model.d_model=48", "data.max_tokens=512"])
    assert (config.train.lr, config.model.d_model, config.data.max_tokens) == (3e-4, 48, 512)


def test_learning_rate_schedules() -> None:
    factors = [learning_rate_factor(s, 10, "inverse_sqrt") for s in range(40)]
    assert factors[9] == 1.0 and factors[0] == 0.1
    assert factors[39] == pytest.approx(math.sqrt(10 / 40))
    cosine = [learning_rate_factor(s, 10, "cosine", 110, 0.1) for s in range(110)]
    assert cosine[9] == 1.0 and cosine[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(cosine[9:], cosine[10:], strict=False))


def test_bf16_on_a_cpu_without_native_bf16_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert run_train(tmp_path, "train.precision=bf16", "train.max_steps=1") == 0
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["step"] == 1


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_token_loss_sum_equals_torch_label_smoothed_cross_entropy(smoothing: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator, requires_grad=True)
    labels = torch.randint(1, 11, (3, 5), generator=generator)
    labels[0, 3:] = 0  # padding is ignored
    ours = token_loss_sum(logits, labels, smoothing)
    expected = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1),
        labels.flatten(),
        ignore_index=0,
        label_smoothing=smoothing,
        reduction="sum",
    )
    torch.testing.assert_close(ours, expected)
    (gradient,) = torch.autograd.grad(ours, logits)
    (expected_gradient,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(gradient, expected_gradient)
    assert torch.all(gradient[0, 3:] == 0)


def test_token_loss_gradient_passes_gradcheck() -> None:
    from transformer.training.loss import _SmoothedCrossEntropySum

    logits = torch.randn(6, 9, dtype=torch.double, requires_grad=True)
    labels = torch.tensor([1, 0, 4, 8, 0, 2])  # two PAD rows
    assert torch.autograd.gradcheck(
        lambda z: _SmoothedCrossEntropySum.apply(z, labels, 0.1), (logits,)
    )


def fake_step_timer(
    monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float] | None
) -> list[list[str]]:
    """Make training/precision.py's step timer return `seconds`; the list records its calls."""
    calls: list[list[str]] = []

    def measure(model, train, config, device, precisions):  # noqa: ANN001, ANN202
        calls.append(precisions)
        assert seconds is not None, "the step timer should not have been called"
        return seconds

    monkeypatch.setattr(precision, "time_training_steps", measure)
    return calls


@pytest.mark.parametrize(
    "native, seconds, expected",
    [
        (True, {"bf16": 0.1, "fp32": 0.2}, "bf16"),
        (True, {"bf16": 0.3, "fp32": 0.2}, "fp32"),  # native bf16, but slower here
        (False, None, "fp32"),  # emulated bf16: not even timed
    ],
)
def test_precision_auto_takes_the_faster_where_the_cpu_has_native_bf16(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    native: bool,
    seconds: dict[str, float] | None,
    expected: str,
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    calls = fake_step_timer(monkeypatch, seconds)
    assert run_train(tmp_path, "train.precision=auto", "train.max_steps=1") == 0
    assert calls == ([["bf16", "fp32"]] if native else [])
    assert f"Precision: {expected} (auto:" in capsys.readouterr().out
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["train"]["precision"] == expected  # the choice made, for the record
    assert saved["precision_choice"]["step_seconds"] == (seconds or {})


@pytest.mark.parametrize("bf16_seconds, expected", [(0.104, "bf16"), (0.106, "fp32")])
def test_precision_auto_gives_a_near_tie_to_bf16(
    monkeypatch: pytest.MonkeyPatch, bf16_seconds: float, expected: str
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    seconds = {"bf16": bf16_seconds, "fp32": 0.1}  # within / beyond BF16_TIE = 1.05
    choice = device.resolve_precision("auto", torch.device("cpu"), measure=lambda _: seconds)
    assert (choice.precision, choice.step_seconds) == (expected, seconds)


def test_a_resumed_run_keeps_the_precision_auto_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    fake_step_timer(monkeypatch, {"bf16": 0.1, "fp32": 0.2})
    assert run_train(tmp_path, "train.precision=auto", "train.max_steps=1") == 0
    calls = fake_step_timer(monkeypatch, {"bf16": 0.3, "fp32": 0.2})  # fp32 faster now
    resumed = ("train.precision=auto", "train.max_steps=2")
    assert run_train(tmp_path, *resumed, flags=("--resume",)) == 0
    assert calls == []
    assert "Precision: bf16 (auto: kept from the run being resumed)" in capsys.readouterr().out
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 2 and saved["config"]["train"]["precision"] == "bf16"
    assert saved["precision_choice"]["step_seconds"] == {"bf16": 0.1, "fp32": 0.2}


def test_timing_the_precisions_leaves_no_trace_on_the_run() -> None:
    """The probe really trains (forward and backward) but changes no weight, leaves no gradient
    and restores the random state that dropout draws from."""
    config = load_config(TINY, [*FAST, "model.src_vocab_size=50", "model.tgt_vocab_size=50"])
    torch.manual_seed(0)
    model = build_transformer(config.model)
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 12, (2, 40), generator=generator).tolist()
    ids = [
        [torch.randint(4, 50, (n,), generator=generator).tolist() for n in side] for side in lengths
    ]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    seconds = precision.time_training_steps(
        model, EncodedSplit(*ids), config, torch.device("cpu"), ["bf16", "fp32"]
    )
    assert seconds.keys() == {"bf16", "fp32"}
    assert all(0 < value < math.inf for value in seconds.values())
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_token_loss_sum_in_chunks_of_bf16_logits_equals_float32_cross_entropy() -> None:
    """More rows than one chunk, bf16 logits (as under autocast): the float32 loss of the same
    values, and a gradient in the logits' dtype."""
    from transformer.training.loss import ROWS_PER_CHUNK

    generator = torch.Generator().manual_seed(1)
    rows = 2 * ROWS_PER_CHUNK + 37
    logits = torch.randn(rows, 50, generator=generator).bfloat16().requires_grad_()
    labels = torch.randint(1, 50, (rows,), generator=generator)
    labels[ROWS_PER_CHUNK - 3 : ROWS_PER_CHUNK + 5] = 0  # padding across a chunk boundary
    ours = token_loss_sum(logits, labels, 0.1)
    reference_logits = logits.detach().float().requires_grad_()
    expected = torch.nn.functional.cross_entropy(
        reference_logits, labels, ignore_index=0, label_smoothing=0.1, reduction="sum"
    )
    torch.testing.assert_close(ours, expected)
    (gradient,) = torch.autograd.grad(ours, logits)
    (expected_gradient,) = torch.autograd.grad(expected, reference_logits)
    assert gradient.dtype == torch.bfloat16
    torch.testing.assert_close(gradient.float(), expected_gradient.bfloat16().float())


def test_max_epochs_ends_with_one_validation_at_the_end_of_the_epoch(tmp_path: Path) -> None:
    """An epoch whose batch count does not divide by train.accumulate ends with a short step; the
    run stops there and validates once (the one validation site of the loop)."""
    overrides = ("train.max_epochs=1", "train.accumulate=3", "data.max_tokens=8192")
    assert run_train(tmp_path, *overrides, "train.validate_every=1000") == 0
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    batches = saved["sampler"]["batches_per_epoch"]
    assert batches % 3 != 0  # the last step of the epoch takes the remainder
    assert saved["step"] == math.ceil(batches / 3)
    assert saved["train_state"]["epoch"] == 1
    assert (saved["sampler"]["epoch"], saved["sampler"]["position"]) == (1, 0)
    assert [entry["step"] for entry in saved["train_state"]["history"]] == [saved["step"]]


KEEP_MEMORY_PROBE = """
import resource, sys, torch
from transformer.device import keep_freed_cpu_memory
kept = keep_freed_cpu_memory(torch.device("cpu")) if sys.argv[1] == "keep" else False
for round in range(3):  # 10 blocks of 8 MB, all freed, three times (a step's activations)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(8 * 2**20, dtype=torch.uint8).fill_(1) for _ in range(10)]
    del blocks
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings")
def test_kept_cpu_memory_is_reused_without_page_faults() -> None:
    """After keep_freed_cpu_memory(), tensors allocated again after being freed reuse the same
    pages: the third round of 80 MB of blocks faults in at most a quarter of its 20,480 pages (seen:
    0 or 2,048 with the setting; 20,448 in most runs with glibc's defaults)."""
    result = subprocess.run(
        [sys.executable, "-c", KEEP_MEMORY_PROBE, "keep"], capture_output=True, text=True
    )
    kept, faults = result.stdout.split()
    if kept != "True":
        pytest.skip("not glibc: mallopt is not available")
    assert int(faults) < 20480 // 4
    assert device.keep_freed_cpu_memory(torch.device("meta")) is False  # not the CPU: untouched


def test_kernel_caches_are_limited_on_a_cpu_without_amx_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without AMX each training step's shapes are new, so oneDNN's kernel caches only hold
    memory: train.py sizes them down (unless the user did); with AMX the kernels are reused."""
    for name in device.KERNEL_CACHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(device, "cpu_has_amx", lambda: True)
    assert device.limit_kernel_caches(torch.device("cpu")) is False
    assert not any(name in os.environ for name in device.KERNEL_CACHES)
    monkeypatch.setattr(device, "cpu_has_amx", lambda: False)
    assert device.limit_kernel_caches(torch.device("meta")) is False  # not the CPU
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")  # the user's own setting
    assert device.limit_kernel_caches(torch.device("cpu")) is True
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(device.KERNEL_CACHE_ENTRIES)
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"
