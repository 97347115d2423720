"""``seqmodels generate``: sample waveforms from a trained waveform LM checkpoint.

    seqmodels generate --checkpoint CKPT --num-samples 16 --seconds 1 --output-dir samples/

writes ``sample_000.wav`` ... (16-bit PCM, 16 kHz) and ``spectrograms.png``. Sampling runs the
U-Net's recurrent ``step`` one sample at a time (constant cost per sample). The pooling schedule
repeats every ``total_pool`` (16) samples, so sampling advances one such period at a time. On a
GPU each stage of Mamba blocks advances in one fused stage step per sample
(:func:`seqmodels.kernels.mamba_stage_step`, a few Triton kernels for all its blocks), and one
period (16 steps, the Gumbel-max sampling and the feedback of each code included) is captured
once in a CUDA graph and replayed. On a CPU the same period loop runs eagerly, block by block.
Every path draws the same noise (uniform numbers for a whole period from the seeded generator,
turned into Gumbel noise), so a seed fixes the samples.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seqmodels.checkpoint import read_checkpoint
from seqmodels.data.audio import SAMPLE_RATE, START_CODE, MuLawVariant, mu_law_decode, mu_law_encode, read_wav, write_wav
from seqmodels.models import MambaUNet, MambaUNetConfig, UNetInferenceCache, UNetStageWeights

WAVEFORM_KIND = "waveform_lm"


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """``logits [B, V]`` divided by ``temperature``, with the codes outside the top ``k`` (when
    ``top_k > 0``) and outside the nucleus (the smallest set whose probability reaches ``top_p``,
    when ``top_p < 1``) set to -inf. Float32, a new tensor."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a code when the codes before it already reach top_p (the first always stays).
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


def gumbel_noise(uniform: Tensor) -> Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` from uniform numbers in [0, 1) (any shape).

    u = 0 is raised to the smallest normal float32, so the noise is always finite."""
    return -torch.log(-torch.log(uniform.clamp(min=torch.finfo(torch.float32).tiny)))


def gumbel_max(
    logits: Tensor, gumbel: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> Tensor:
    """One code per row of ``logits [B, V]`` -> [B] int64: the argmax of the filtered logits
    (:func:`filter_logits`) plus ``gumbel [B, V]`` noise, which is a draw from their softmax
    (Gumbel-max). No host synchronisation: safe inside a CUDA graph."""
    return torch.argmax(filter_logits(logits, temperature, top_k, top_p) + gumbel, dim=-1)


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one code per row of ``logits [B, V]`` -> [B] int64 (Gumbel-max, as generation does).

    ``temperature`` divides the logits; ``top_k > 0`` keeps the k most likely codes; ``top_p < 1``
    keeps the smallest set of codes whose probability reaches ``top_p`` (nucleus sampling).
    """
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    return gumbel_max(logits, gumbel_noise(uniform), temperature, top_k, top_p)


@dataclass
class _PeriodBuffers:
    """Tensors one period of sampling reads and writes; fixed addresses, so a CUDA graph of the
    period can be replayed after they are refilled.

    x [B]: the code fed to the first step (the last code of the previous period). uniform
    [P, B, V]: the period's noise. forced [P] / forced_mask [P]: the prefix code to feed at each
    step where the mask is set, instead of the sample. codes [P, B]: the period's codes.
    """

    x: Tensor
    uniform: Tensor
    forced: Tensor
    forced_mask: Tensor
    codes: Tensor


def _sample_period(
    model: MambaUNet,
    cache: UNetInferenceCache,
    stages: UNetStageWeights | None,
    buf: _PeriodBuffers,
    temperature: float,
    top_k: int,
    top_p: float,
) -> None:
    """Advance ``cache`` by one period of P = ``buf.codes.shape[0]`` samples (``cache.t`` must be
    a multiple of P: the captured schedule of pooled stages then repeats)."""
    gumbel = gumbel_noise(buf.uniform)  # [P, B, V]
    x = buf.x
    for k in range(buf.codes.shape[0]):
        logits = model.step(x, cache, stages)  # [B, V]: the distribution of this sample
        sampled = gumbel_max(logits, gumbel[k], temperature, top_k, top_p)
        x = torch.where(buf.forced_mask[k], buf.forced[k], sampled, out=buf.codes[k])
    buf.x.copy_(x)


def _capture_period(run: Callable[[], None], cache: UNetInferenceCache, buf: _PeriodBuffers) -> torch.cuda.CUDAGraph:
    """Capture one period in a CUDA graph; leaves ``cache`` and ``buf.x`` at the start."""
    buf.uniform.fill_(0.5)
    buf.forced_mask.fill_(False)
    # Warm up on a side stream (Triton compilation, cuBLAS workspaces), as torch.cuda.graph asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    cache.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    cache.zero_()
    buf.x.fill_(START_CODE)
    return graph


def _default_fused(model: MambaUNet, device: torch.device) -> bool:
    """The fused stage step where it pays and can run: CUDA, float32 weights, float32 residual."""
    return (
        device.type == "cuda"
        and model.config.residual_in_fp32
        and all(p.dtype == torch.float32 for p in model.parameters())
    )


@torch.inference_mode()
def generate_codes(
    model: MambaUNet,
    batch_size: int,
    num_new: int,
    *,
    prefix: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    fused: bool | None = None,
    cuda_graph: bool | None = None,
) -> Tensor:
    """Sample ``num_new`` codes after an optional ``prefix [P]`` for ``batch_size`` clips.

    The start code (silence) goes in first, then the prefix, one sample at a time through
    ``model.step``; every new code is fed back in. Sampling runs whole periods of
    ``model.config.total_pool`` samples (the extra samples of the last one are dropped); each
    period draws its uniform noise, [total_pool, batch_size, V], from ``generator`` in one call.

    ``fused`` (default: on a CUDA device with float32 weights) advances each stage of blocks in
    one :func:`~seqmodels.kernels.mamba_stage_step` call per sample (``MambaUNet.pack_stages``;
    on a CPU that is the PyTorch reference of the stage step); ``cuda_graph`` (default: on a CUDA
    device) captures one period in a CUDA graph and replays it. Both exist to compare paths:
    for a given generator state the codes agree up to the float rounding of the paths.

    Returns:
        LongTensor [batch_size, P + num_new] on the model's device (prefix included).
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    if fused is None:
        fused = _default_fused(model, device)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"generate_codes: cuda_graph=True needs the model on a CUDA device, got {device}")
    stages = model.pack_stages() if fused else None
    cache = model.allocate_inference_cache(batch_size, device=device)
    prefix = torch.zeros(0, dtype=torch.long) if prefix is None else prefix.long().flatten()
    period = model.config.total_pool
    total = prefix.numel() + num_new
    n_periods = -(-total // period)
    forced = torch.zeros(n_periods * period, dtype=torch.long, device=device)
    forced[: prefix.numel()] = prefix.to(device)
    forced_mask = torch.arange(n_periods * period, device=device) < prefix.numel()
    buf = _PeriodBuffers(
        x=torch.full((batch_size,), START_CODE, dtype=torch.long, device=device),
        uniform=torch.empty(period, batch_size, model.config.vocab_size, device=device),
        forced=torch.empty(period, dtype=torch.long, device=device),
        forced_mask=torch.empty(period, dtype=torch.bool, device=device),
        codes=torch.empty(period, batch_size, dtype=torch.long, device=device),
    )

    def run() -> None:
        _sample_period(model, cache, stages, buf, temperature, top_k, top_p)

    if cuda_graph:
        run = _capture_period(run, cache, buf).replay
    out = torch.empty(batch_size, n_periods * period, dtype=torch.long, device=device)
    with tqdm(total=total, desc="sampling", unit="sample", disable=not progress, mininterval=1.0) as bar:
        for j in range(n_periods):
            window = slice(j * period, (j + 1) * period)
            torch.rand(buf.uniform.shape, generator=generator, out=buf.uniform)
            buf.forced.copy_(forced[window])
            buf.forced_mask.copy_(forced_mask[window])
            run()
            out[:, window] = buf.codes.t()
            bar.update(min(period, total - j * period))
    return out[:, :total]


def write_spectrogram_grid(waves: Tensor, path: str | Path, sample_rate: int = SAMPLE_RATE) -> Path:
    """Log-magnitude spectrograms of ``waves [n, T]`` in one PNG grid (at most 4 columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = waves.shape[0]
    cols = min(4, n)
    rows = math.ceil(n / cols)
    n_fft = 512
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), dpi=100, squeeze=False)
    window = torch.hann_window(n_fft)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        wave = waves[i].float().cpu()
        if wave.numel() < n_fft:
            wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
        spec = torch.stft(wave, n_fft, hop_length=n_fft // 4, window=window, return_complex=True).abs()
        db = 20 * torch.log10(spec + 1e-5)  # [freq, frames]
        seconds = wave.numel() / sample_rate
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, sample_rate / 2000))
        ax.set_title(f"sample_{i:03d}", fontsize=8)
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("kHz", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_clips(codes: Tensor, mu_law: MuLawVariant, out_dir: str | Path, start_index: int = 0) -> list[Path]:
    """Decode codes [n, T] and write ``sample_XXX.wav`` (16-bit, 16 kHz) and ``spectrograms.png``
    into ``out_dir``. Returns the WAV paths."""
    out_dir = Path(out_dir)
    waves = mu_law_decode(codes.cpu(), mu_law)  # [n, T] float32 in [-1, 1]
    paths = [write_wav(out_dir / f"sample_{start_index + i:03d}.wav", wave) for i, wave in enumerate(waves)]
    write_spectrogram_grid(waves, out_dir / "spectrograms.png")
    return paths


def load_waveform_model(path: str | Path, device: torch.device) -> tuple[MambaUNet, MuLawVariant]:
    """The U-Net of a ``waveform_lm`` checkpoint on ``device`` (eval mode) and its mu-law variant.

    ``scan_impl`` is reset to "auto": the fused decode kernel on a GPU, PyTorch on a CPU, whatever
    the training run used. Raises ValueError naming the file for a checkpoint of another kind.
    """
    ckpt = read_checkpoint(path)
    meta = ckpt["seqmodels"]
    if meta.get("kind") != WAVEFORM_KIND:
        raise ValueError(
            f"--checkpoint {path}: a {meta.get('kind')!r} checkpoint; generate needs a {WAVEFORM_KIND!r} "
            "checkpoint (trained with seqmodels.tasks.WaveformLM)"
        )
    config = MambaUNetConfig.from_dict({**meta["config"], "scan_impl": "auto", "checkpointing": False})
    model = MambaUNet(config)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.to(device).eval(), meta.get("mu_law", "sashimi")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqmodels generate",
        description="Sample clips from a waveform LM checkpoint (seqmodels.tasks.WaveformLM): writes "
        "sample_000.wav ... (16-bit, 16 kHz) and spectrograms.png into --output-dir.",
    )
    parser.add_argument("--checkpoint", required=True, help="a waveform_lm checkpoint (.ckpt)")
    parser.add_argument("--num-samples", type=int, default=16, help="clips to generate (default 16)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of new audio per clip (default 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips sampled together (default 16)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (default 1: off)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely codes (default 0: off)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--prefix", default=None,
        help="WAV to continue: encoded with the checkpoint's mu-law variant and fed in first; every "
        "clip then holds the prefix followed by --seconds of new audio",
    )
    parser.add_argument("--output-dir", required=True, help="folder for the WAVs and the PNG")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Reject bad values with the argument's name, before any model is loaded."""
    if not args.seconds > 0 or not math.isfinite(args.seconds):
        raise ValueError(f"--seconds must be a positive number, got {args.seconds}")
    if round(args.seconds * SAMPLE_RATE) < 1:
        raise ValueError(f"--seconds {args.seconds} is less than one sample at {SAMPLE_RATE} Hz")
    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be positive, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must lie in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: file not found")
    if args.prefix is not None and not Path(args.prefix).is_file():
        raise FileNotFoundError(f"--prefix {args.prefix}: file not found")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")


def generate_main(argv: Sequence[str]) -> int:
    """Entry point of ``seqmodels generate``; returns the process exit status."""
    args = _parser().parse_args(list(argv))
    try:
        _check_args(args)
        device = torch.device(
            "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
        )
        model, mu_law = load_waveform_model(args.checkpoint, device)
        prefix = None
        if args.prefix is not None:
            wave = read_wav(args.prefix)  # [T] at 16 kHz; raises ValueError naming the file
            if wave.numel() == 0:
                raise ValueError(f"--prefix {args.prefix}: the file holds no samples")
            prefix = mu_law_encode(wave, mu_law)
    except (FileNotFoundError, ValueError) as err:
        print(f"seqmodels generate: {err}", file=sys.stderr)
        return 1

    num_new = round(args.seconds * SAMPLE_RATE)
    out_dir = Path(args.output_dir)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    all_codes = []
    for start in range(0, args.num_samples, args.batch_size):
        n = min(args.batch_size, args.num_samples - start)
        codes = generate_codes(
            model, n, num_new, prefix=prefix, temperature=args.temperature, top_k=args.top_k,
            top_p=args.top_p, generator=generator, progress=not args.no_progress,
        )
        waves = mu_law_decode(codes.cpu(), mu_law)
        for i, wave in enumerate(waves):
            write_wav(out_dir / f"sample_{start + i:03d}.wav", wave)
        all_codes.append(codes.cpu())
    waves = mu_law_decode(torch.cat(all_codes), mu_law)
    png = write_spectrogram_grid(waves, out_dir / "spectrograms.png")
    print(f"seqmodels generate: wrote {args.num_samples} clips of {waves.shape[1]} samples to {out_dir} and {png.name}")
    return 0


__all__ = [
    "filter_logits",
    "generate_codes",
    "generate_main",
    "gumbel_max",
    "gumbel_noise",
    "load_waveform_model",
    "sample_logits",
    "write_clips",
    "write_spectrogram_grid",
]
