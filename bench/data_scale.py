"""Data at scale: preparing, starting and training on synthetic corpora of 30k, 300k and 3M pairs.

    python bench/data_scale.py                          # all three sizes, this checkout
    python bench/data_scale.py --sizes 30000 300000     # fewer rows
    python bench/data_scale.py --code /tmp/before --sizes 30000 300000   # another checkout (before)

The corpus: each pair is 1-3 Multi30k training captions joined with a space, en and de joined the same
way (seeded; written once to --work as train.{en,de}.gz, with the first 100 pairs of Multi30k val and
test as val/test). For each size it reports:
- prep: `transformer prepare` wall time, pairs/s (training pairs read / wall time) and peak
  RSS (the kernel's maxrss of that process), and the prepared directory's size on disk;
- cold / warm start: wall time from launching `train.py` to the end of its first optimiser step with
  no prepared data (it prepares) and with it (it maps it);
- RSS after 50 steps: VmRSS of the train.py process right after step 50 (warm cache), and the same
  for each rank of `torchrun --nproc-per-node 2` (1 thread each).
The data settings are configs/multi30k_en_de.yaml's (joint BPE 8k, max_length 100) with 1,024-token
batches; the model is a small one (SMALL_MODEL) so that 50 steps take seconds: its memory is the
same at every size, so differences between rows are the data's. Code without a prepare step (before it was written) prepares
nothing ahead: its prep columns are empty and every start is a cold start.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROBE_STEPS = 50
# A small model, so that 50 steps take seconds on a shared CPU: its memory is the same at every
# corpus size, and the data pipeline (the subject here) is the recipe's.
SMALL_MODEL = [
    "model.d_model=64",
    "model.n_heads=2",
    "model.d_ff=256",
    "model.n_encoder_layers=1",
    "model.n_decoder_layers=1",
    "train.precision=fp32",
    "data.max_tokens=1024",  # (the recipe's 4,096 make a step of even this model take seconds)
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/multi30k", help="Multi30k raw text")
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000, 3_000_000])
    parser.add_argument("--work", default="/tmp/data_scale", help="corpora, caches and runs")
    parser.add_argument("--code", default=str(ROOT), help="checkout whose train.py is measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-torchrun", action="store_true")
    parser.add_argument(
        "--skip-cold", action="store_true", help="no cold start (about prep + warm start)"
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one measured train.py
    return parser.parse_known_args(argv)[0]


# --- the synthetic corpus ---------------------------------------------------------------------------


def read_gz(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        return file.read().splitlines()


def make_corpus(data: Path, pairs: int, directory: Path, seed: int) -> Path:
    """train.{en,de}.gz of `pairs` pairs of 1-3 joined captions, plus 100-pair val and test."""
    if (directory / "done").is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    en, de = read_gz(data / "train.en.gz"), read_gz(data / "train.de.gz")
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, size=pairs)  # (pairs,) captions per pair
    picks = rng.integers(0, len(en), size=int(counts.sum())).tolist()
    with (
        gzip.open(directory / "train.en.gz", "wt", encoding="utf-8", compresslevel=1) as out_en,
        gzip.open(directory / "train.de.gz", "wt", encoding="utf-8", compresslevel=1) as out_de,
    ):
        start = 0
        for count in counts.tolist():
            chosen = picks[start : start + count]
            start += count
            out_en.write(" ".join(en[i] for i in chosen) + "\n")
            out_de.write(" ".join(de[i] for i in chosen) + "\n")
    for split, name in (("val", "val"), ("test", "test_2016_flickr")):
        for lang in ("en", "de"):
            lines = read_gz(data / f"{name}.{lang}.gz")[:100]
            (directory / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "done").touch()
    return directory


# --- measuring processes ----------------------------------------------------------------------------


def run_measured(command: list[str], cwd: Path, log: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in GB, exit status) of one process (os.wait4 gives
    its own maxrss and CPU time, user + system, over all its threads)."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall, cpu = time.monotonic() - start, usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1e6, os.waitstatus_to_exitcode(status)


def train_args(corpus: Path, run_dir: Path, cache: Path | None, threads: int) -> list[str]:
    args = [
        "--config",
        "configs/multi30k_en_de.yaml",
        f"data.dataset={corpus}",
        "data.splits.validation=val",
        "data.splits.test=test",
        f"train.run_dir={run_dir}",
        f"train.max_steps={PROBE_STEPS}",
        "train.validate_every=100000",
        f"train.threads={threads}",
        "train.device=cpu",
        *SMALL_MODEL,
    ]
    return args + ([f"data.cache_dir={cache}"] if cache else [])


def probe(
    code: Path, args: list[str], out: Path, log: Path, torchrun: bool = False
) -> list[dict] | None:
    """Run train.py (through this script's --probe) and read what each process reported."""
    for old in out.parent.glob(out.name + "*"):
        old.unlink()
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command = [*launcher, str(Path(__file__).resolve()), f"--probe={out}", *args, "--overwrite"]
    started = time.time()
    _, _, peak, status = run_measured(command, code, log)
    reports = sorted(out.parent.glob(out.name + ".*"))
    if status != 0 or not reports:
        print(f"  (failed with status {status}; see {log})")
        return None
    results = [json.loads(path.read_text()) for path in reports]
    for result in results:
        result["first_step_s"] = result["first_step_at"] - started
        result["peak_gb"] = peak
    return results


def run_probe(out: str, argv: list[str]) -> None:
    """Inside the measured process: train.py's main, with train_step wrapped to note the end of
    step 1 and the RSS after step 50, then leave at once (no validation or checkpoint after)."""
    sys.path.insert(0, os.getcwd())
    import train
    from transformer.training import loop

    real_step = loop.train_step
    seen = {"steps": 0}
    rank = os.environ.get("RANK", "0")

    def measured_step(*args: object, **kwargs: object) -> object:
        stats = real_step(*args, **kwargs)
        seen["steps"] += 1
        if seen["steps"] == 1:
            seen["first_step_at"] = time.time()
        if seen["steps"] == PROBE_STEPS:
            rss = next(
                int(line.split()[1]) * 1024
                for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
            report = {"rank": rank, "rss_gb": rss / 1e9, "first_step_at": seen["first_step_at"]}
            Path(f"{out}.{rank}").write_text(json.dumps(report))
            sys.stdout.flush()
            os._exit(0)
        return stats

    loop.train_step = measured_step
    sys.exit(train.main(argv))


# --- one row ----------------------------------------------------------------------------------------


def measure_size(args: argparse.Namespace, pairs: int) -> dict[str, object]:
    work, code = Path(args.work), Path(args.code)
    corpus = make_corpus(Path(args.data).resolve(), pairs, work / f"corpus-{pairs}", args.seed)
    has_prepare = any(
        (code / "transformer" / p).is_file() for p in ("prepare.py", "data/prepare.py")
    )
    tag = "after" if has_prepare else "before"
    cache = work / f"cache-{tag}-{pairs}" if has_prepare else None
    run_dir, logs = work / f"run-{tag}-{pairs}", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    row: dict[str, object] = {"pairs": pairs, "code": tag}
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
        command = [sys.executable, "-m", "transformer", "prepare"]
        if not (code / "transformer" / "commands").is_dir():  # a checkout before the commands
            command = [sys.executable, "-m", "transformer.prepare"]
        command += train_args(corpus, run_dir, cache, 0)
        wall, cpu, peak, status = run_measured(command, code, logs / f"prepare-{tag}-{pairs}.log")
        meta = json.loads(next(cache.glob("train-*/meta.json")).read_text()) if not status else {}
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        row.update(
            prep_s=wall,
            prep_pairs_per_s=meta.get("seen", 0) / wall,
            prep_cpu_s=cpu,
            prep_peak_gb=peak,
            cache_mb=size / 1e6,
            kept=meta.get("pairs"),
        )
        print(f"  prepare: {wall:.0f} s ({cpu:.0f} s CPU), peak {peak:.2f} GB", flush=True)
    out = work / "probe"
    cold = None
    if not (args.skip_cold and has_prepare):
        if cache is not None:
            shutil.rmtree(cache)  # the cold start prepares again
        log = logs / f"cold-{tag}-{pairs}.log"
        cold = probe(code, train_args(corpus, run_dir, cache, 0), out, log)
    if cold:
        row.update(cold_first_step_s=cold[0]["first_step_s"], cold_peak_gb=cold[0]["peak_gb"])
        print(f"  cold start: {cold[0]['first_step_s']:.0f} s", flush=True)
    if has_prepare:
        warm = probe(code, train_args(corpus, run_dir, cache, 0), out, logs / f"warm-{pairs}.log")
        if warm:
            row.update(warm_first_step_s=warm[0]["first_step_s"], rss_50_gb=warm[0]["rss_gb"])
            print(f"  warm start: {warm[0]['first_step_s']:.0f} s", flush=True)
    elif cold:
        row.update(rss_50_gb=cold[0]["rss_gb"])
    if not args.skip_torchrun:
        ranks = probe(
            code, train_args(corpus, run_dir, cache, 1), out, logs / f"ddp-{tag}-{pairs}.log", True
        )
        if ranks:
            row.update(rank_rss_50_gb=[r["rss_gb"] for r in ranks])
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


def show(rows: list[dict[str, object]]) -> None:
    def cell(row: dict[str, object], key: str, form: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, list):
            return " / ".join(format(v, form) for v in value)
        return format(value, form)

    print(
        "\n| code | pairs | prep s | prep CPU s | prep pairs/s | prep peak RSS GB | cache MB "
        "| cold start s | cold start peak RSS GB "
        "| warm start s | RSS @50 steps GB | RSS @50, 2 ranks GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['code']} | {row['pairs']:,} | {cell(row, 'prep_s', '.0f')} "
            f"| {cell(row, 'prep_cpu_s', '.0f')} "
            f"| {cell(row, 'prep_pairs_per_s', ',.0f')} | {cell(row, 'prep_peak_gb', '.2f')} "
            f"| {cell(row, 'cache_mb', '.0f')} | {cell(row, 'cold_first_step_s', '.0f')} "
            f"| {cell(row, 'cold_peak_gb', '.2f')} "
            f"| {cell(row, 'warm_first_step_s', '.1f')} | {cell(row, 'rss_50_gb', '.3f')} "
            f"| {cell(row, 'rank_rss_50_gb', '.3f')} |"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.probe:
        rest = (argv if argv is not None else sys.argv[1:])[1:]
        run_probe(args.probe, [a for a in rest if not a.startswith("--probe")])
        return
    rows = []
    for pairs in args.sizes:
        print(f"{pairs:,} pairs ({args.code})", flush=True)
        rows.append(measure_size(args, pairs))
        show(rows)


if __name__ == "__main__":
    main()
