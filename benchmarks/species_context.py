"""Species-classification accuracy against context length, through the public CLI.

    python -m benchmarks.species_context                                  # GPU defaults
    python -m benchmarks.species_context --lengths 256 512 --max-steps 20 \\
        --backbone '{d_model: 16, n_layer: 1, vocab_size: 12, scan_impl: torch}'   # CPU smoke run

For each context length ``L`` the script trains a classifier of the five *S. aureus* strains
(complete genomes written by ``data/species/fetch_ragout_strains.sh`` into
``data/species/full/aureus/``; every genome cut 80/10/10 into train/val/test regions) for a
fixed number of optimizer steps, from scratch (``--preset``/``--backbone``) or fine-tuned from
a pretraining checkpoint (``--init-from``), then evaluates it on the held-out test windows.
Every run is a ``seqmodels fit`` and a ``seqmodels test`` subprocess on
``configs/dna/species_tiny.yaml`` with command-line overrides; the exact commands are printed
and stored in the JSON. Batches hold ``--tokens-per-batch`` bases (batch = tokens // L, at
least 1) unless ``--batch-size`` fixes the batch, so that each length costs about the same time
per step. ``--test-lengths`` tests every trained model at several window lengths (a mean-pooled
classifier reads any length), ``--ckpt best`` the checkpoint of best validation accuracy;
``--val-length`` validates on windows of that length (so that ``best`` is chosen at a long
context without touching the test split) every ``--val-every`` steps, and ``--rc-aug``
reverse-complements half the training windows. Output:
a table on stdout and ``<out>/species_context.json`` with, per training length, steps, batch, fit
time and, per test length, the test accuracy, loss, per-class accuracy and test time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from seqmodels.tasks.callbacks import read_metrics_csv

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/dna/species_tiny.yaml"
STRAINS = ("COL", "JKD6008", "N315", "RF122", "USA300_FPR3757")  # the default genome folder's


def strains_in(genome_dir: Path) -> tuple[str, ...]:
    """The classes: the default S. aureus strains, or every ``*.fa`` of another genome folder."""
    found = tuple(sorted(p.stem for p in genome_dir.glob("*.fa")))
    return STRAINS if not found or set(STRAINS) <= set(found) else found
DEFAULT_LENGTHS = (2**10, 2**12, 2**14, 2**15)


def genomes_arg(genome_dir: Path) -> str:
    """The ``--data.genomes`` mapping (flow-style YAML) for the five strains in ``genome_dir``."""
    strains = strains_in(genome_dir)
    missing = [s for s in strains if not (genome_dir / f"{s}.fa").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{genome_dir}: missing {', '.join(f'{s}.fa' for s in missing)}; run "
            f"data/species/fetch_ragout_strains.sh to write the full genomes"
        )
    # paths relative to the repository (where the commands run) when possible, so the printed
    # commands are the ones a user types
    try:
        genome_dir = genome_dir.resolve().relative_to(REPO)
    except ValueError:
        pass
    return "{" + ", ".join(f"{s}: {genome_dir / (s + '.fa')}" for s in strains) + "}"


def _round_to(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _batch(args: argparse.Namespace, length: int) -> int:
    return args.batch_size or max(1, args.tokens_per_batch // length)


def _common(args: argparse.Namespace, length: int, out_dir: Path, name: str) -> list[str]:
    """Data, trainer and logger arguments shared by ``fit`` and ``test`` at window length ``length``."""
    k = len(strains_in(args.genome_dir))
    return [
        "--config", CONFIG,
        "--data.genomes", genomes_arg(args.genome_dir),
        "--data.split_fractions", "[0.8, 0.1, 0.1]",
        "--data.seq_len", str(length),
        "--data.batch_size", str(_batch(args, length)),
        "--data.num_workers", str(args.num_workers),
        "--data.val_samples", str(_round_to(args.val_samples, k)),
        "--data.test_samples", str(_round_to(args.test_samples, k)),
        "--data.seed", str(args.seed),
        "--trainer.precision", args.precision,
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(out_dir / "runs"),
        "--trainer.logger.init_args.name", name,
    ]


def run_commands(
    args: argparse.Namespace, length: int, out_dir: Path, test_lengths: list[int] | None = None
) -> tuple[list[str], list[list[str]], int]:
    """The ``fit`` argument list for training at ``length``, one ``test`` argument list per test
    length (default: ``length`` alone), and the training batch size."""
    batch = _batch(args, length)
    k = len(strains_in(args.genome_dir))
    # One epoch that ends exactly at max_steps, so the last validation and checkpoints come at the end.
    train_samples = _round_to(args.max_steps * batch, k)
    common = _common(args, length, out_dir, f"L{length}")
    if args.init_from is not None:
        model = ["--model.init_from", str(args.init_from), "--model.backbone", args.backbone or "null"]
    elif args.backbone is not None:
        model = ["--model.backbone", args.backbone]
    else:
        model = ["--model.preset", args.preset, "--model.backbone", "null"]
    fit = [
        "fit", *common, *model,
        "--model.lr", str(args.lr if args.lr is not None else (1e-4 if args.init_from else 2e-3)),
        "--model.warmup_steps", str(max(1, args.max_steps // 10)),
        "--model.pooling", args.pooling,
        "--model.pool_norm", args.pool_norm,
        "--data.train_samples_per_epoch", str(train_samples),
        *(["--data.eval_seq_len", str(args.val_length)] if args.val_length else []),
        *(["--data.rc_aug", "true"] if args.rc_aug else []),
        *(["--trainer.val_check_interval", str(args.val_every)] if args.val_every else []),
        "--trainer.max_epochs", "1",
        "--trainer.max_steps", str(args.max_steps),
        "--seed_everything", str(args.seed),
    ]
    ckpt = out_dir / "runs" / f"L{length}" / "version_0" / "checkpoints" / f"{args.ckpt}.ckpt"
    # The checkpoint carries the resolved backbone and classes: no model arguments needed. The
    # test windows have their own length: a mean-pooled classifier reads any length.
    tests = [["test", *_common(args, t, out_dir, f"L{length}_test{t}"), "--ckpt_path", str(ckpt)]
             for t in (test_lengths or [length])]
    return fit, tests, batch


def _run(argv: list[str], log: Path) -> float:
    """Run ``seqmodels ARGV`` in a subprocess (fresh GPU memory per run); returns wall seconds."""
    print("$ seqmodels " + shlex.join(argv), flush=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "seqmodels", *argv], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"seqmodels {argv[0]} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return elapsed


def measure(args: argparse.Namespace, length: int) -> dict:
    """Train and test at one length; returns the row of the report."""
    out_dir = args.out / f"L{length}"
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    test_lengths = args.test_lengths or [length]
    fit, tests, batch = run_commands(args, length, out_dir, test_lengths)
    fit_s = _run(fit, out_dir / "fit.log")
    results = {}
    for t, test in zip(test_lengths, tests):
        test_s = _run(test, out_dir / f"test{t}.log")
        series = read_metrics_csv(out_dir / "runs" / f"L{length}_test{t}" / "version_0" / "metrics.csv")
        per_class = {s: series[f"test/acc_{s}"][-1][1] for s in strains_in(args.genome_dir) if f"test/acc_{s}" in series}
        results[t] = {
            "test_acc": series["test/acc"][-1][1],
            "test_loss": series["test/loss"][-1][1],
            "per_class_acc": per_class,
            "test_s": round(test_s, 1),
        }
    return {
        "L": length,
        "batch": batch,
        "steps": args.max_steps,
        "checkpoint": args.ckpt,
        "tests": [{"L": t, **r} for t, r in results.items()],
        "fit_s": round(fit_s, 1),
        "commands": ["seqmodels " + shlex.join(c) for c in (fit, *tests)],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), help="context lengths")
    p.add_argument("--test-lengths", type=int, nargs="+",
                   help="window lengths to test every trained model at (default: its training length)")
    p.add_argument("--ckpt", default="last", choices=["last", "best"],
                   help="checkpoint to test: the last, or the best by validation accuracy")
    p.add_argument("--val-length", type=int,
                   help="validation window length during fit (default: the training length)")
    p.add_argument("--val-every", type=int, help="validate every N steps (default: once, at the end)")
    p.add_argument("--rc-aug", action="store_true", help="reverse-complement half the training windows")
    p.add_argument("--max-steps", type=int, default=1000, help="optimizer steps per length (the budget)")
    p.add_argument("--tokens-per-batch", type=int, default=2**16, help="bases per batch (batch = this // L)")
    p.add_argument("--batch-size", type=int, help="fixed batch size for every length (overrides tokens)")
    p.add_argument("--preset", default="1.4m", help="backbone preset when training from scratch")
    p.add_argument("--backbone", help="MambaConfig fields as flow YAML (replaces --preset; with "
                   "--init-from only scan_impl/checkpointing)")
    p.add_argument("--init-from", type=Path, help="pretraining (dna_lm) checkpoint to fine-tune")
    p.add_argument("--pooling", default="last", choices=["last", "mean"], help="classifier pooling")
    p.add_argument("--pool-norm", default="none", choices=["none", "batch"],
                   help="standardise the pooled features before the head (batch statistics)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3 from scratch, 1e-4 fine-tuning)")
    p.add_argument("--genome-dir", type=Path, default=REPO / "data/species/full/aureus")
    p.add_argument("--val-samples", type=int, default=250)
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--precision", default="bf16-mixed" if cuda else "32-true")
    p.add_argument("--num-workers", type=int, default=4 if cuda else 0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/species_context"), help="output folder")
    args = p.parse_args(argv)
    for name in ("max_steps", "tokens_per_batch", "val_samples", "test_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("batch_size", "val_length", "val_every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.val_every is not None and args.val_every > args.max_steps:
        p.error(f"--val-every ({args.val_every}) is more than --max-steps ({args.max_steps})")
    for name in ("lengths", "test_lengths"):
        if any(n < 1 for n in getattr(args, name) or []):
            p.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.init_from is not None and not args.init_from.is_file():
        p.error(f"--init-from: checkpoint not found: {args.init_from}")
    args.genome_dir = args.genome_dir.resolve()
    args.out = args.out.resolve()
    try:
        genomes_arg(args.genome_dir)
    except FileNotFoundError as err:
        p.error(str(err))
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = []
    for length in args.lengths:
        rows.append(measure(args, length))
        r = rows[-1]
        accs = ", ".join(f"{t['test_acc']:.3f} at {t['L']}" for t in r["tests"])
        print(f"L={length}: test accuracy {accs} ({r['fit_s']:.0f} s fit)", flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    strains = strains_in(args.genome_dir)
    report = {"device": device, "genome_dir": str(args.genome_dir), "strains": list(strains), "chance": 1 / len(strains), "rows": rows,
              "argv": sys.argv[1:] if argv is None else list(argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "species_context.json").write_text(json.dumps(report, indent=2))
    print(f"\n{args.genome_dir.name} strain classification, {len(strains)} classes (chance {1 / len(strains):.0%}), {device}")
    print(f"{'train L':>8}  {'batch':>5}  {'steps':>5}  {'fit s':>6}  {'test L':>8}  {'test acc':>8}  {'test loss':>9}")
    for r in rows:
        for i, t in enumerate(r["tests"]):
            lead = f"{r['L']:>8}  {r['batch']:>5}  {r['steps']:>5}  {r['fit_s']:>6.0f}" if i == 0 else " " * 29
            print(f"{lead}  {t['L']:>8}  {t['test_acc']:>8.3f}  {t['test_loss']:>9.3f}")
    print(f"wrote {args.out / 'species_context.json'}")
    return rows


if __name__ == "__main__":
    main()
