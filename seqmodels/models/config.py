"""Typed configuration of the Mamba language model: the single source of truth for its shape.

A config is plain data: presets are looked up by name, checkpoints store ``to_dict()`` and
rebuild with ``from_dict()``. ``__post_init__`` resolves the derived fields (``dt_rank`` when
"auto", ``d_inner``, ``padded_vocab_size``) and rejects bad values with a ``ValueError`` that
names the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

ScanImpl = Literal["auto", "triton", "torch", "ref"]
SCAN_IMPLS: tuple[str, ...] = ("auto", "triton", "torch", "ref")

# The DNA models of the Mamba paper (section 4.3): 12 x 128, 16 x 256, 24 x 512 over the
# 12-id character tokenizer (padded to 16 rows of embedding).
_PRESETS: dict[str, dict[str, Any]] = {
    "1.4m": {"d_model": 128, "n_layer": 12, "vocab_size": 12},
    "7m": {"d_model": 256, "n_layer": 16, "vocab_size": 12},
    "40.7m": {"d_model": 512, "n_layer": 24, "vocab_size": 12},
}


def check_mixer_args(
    owner: str,
    *,
    d_model: int,
    d_state: int,
    d_conv: int,
    expand: int,
    dt_rank: int | Literal["auto"],
    dt_min: float,
    dt_max: float,
    dt_init_floor: float,
    complex: bool,
    scan_impl: str,
) -> None:
    """Validate the mixer hyperparameters shared by :class:`MambaConfig` and the modules.

    ``owner`` prefixes the messages ("MambaConfig", "Mamba") so the error names the field.
    """
    for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
        _check_positive_int(owner, name, value)
    if dt_rank != "auto":
        _check_positive_int(owner, "dt_rank", dt_rank, extra=' or "auto"')
    for name, value in (("dt_min", dt_min), ("dt_max", dt_max)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{owner}.{name} must be a positive number, got {value!r}")
    if dt_min > dt_max:
        raise ValueError(f"{owner}.dt_max must be >= dt_min, got dt_max={dt_max!r} < dt_min={dt_min!r}")
    if not isinstance(dt_init_floor, (int, float)) or isinstance(dt_init_floor, bool) or dt_init_floor < 0:
        raise ValueError(f"{owner}.dt_init_floor must be a number >= 0, got {dt_init_floor!r}")
    if not isinstance(complex, bool):
        raise ValueError(f"{owner}.complex must be a bool, got {complex!r}")
    if scan_impl not in SCAN_IMPLS:
        raise ValueError(f"{owner}.scan_impl must be one of {SCAN_IMPLS}, got {scan_impl!r}")


# The MambaBlock arguments every model config carries under the same names.
BLOCK_FIELDS: tuple[str, ...] = (
    "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init_floor",
    "complex", "scan_impl", "rms_norm_eps", "residual_in_fp32",
)


def block_kwargs(config: Any) -> dict[str, Any]:
    """``MambaBlock`` keyword arguments (besides d_model) read off a config with those fields."""
    return {name: getattr(config, name) for name in BLOCK_FIELDS}


def resolve_dt_rank(d_model: int, dt_rank: int | Literal["auto"]) -> int:
    """``"auto"`` means ceil(d_model / 16), as in the Mamba paper."""
    return math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank


def _check_positive_int(owner: str, name: str, value: Any, extra: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive int{extra}, got {value!r}")


CHECKPOINT_DTYPES = ("float32", "bfloat16")


@dataclass
class MambaConfig:
    """Shape and initialisation of a Mamba language model (embedding, blocks, final norm, head).

    Derived fields (not constructor arguments): ``d_inner = expand * d_model`` and
    ``padded_vocab_size`` (``vocab_size`` rounded up to ``pad_vocab_size_multiple``);
    ``dt_rank="auto"`` is replaced by ceil(d_model / 16).
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | Literal["auto"] = "auto"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    # complex=True: S4D-Lin initialisation and a complex-valued state (used for audio).
    complex: bool = False
    scan_impl: ScanImpl = "auto"
    # Recompute each block's activations in backward (saves memory on long sequences).
    checkpointing: bool = False
    # With checkpointing: the dtype in which each block's input (the residual stream) is kept
    # for the recomputation. "bfloat16" halves that memory (about 8 GB less for the 7M preset at
    # 2^20 bases) and rounds the stream to bfloat16 at every block boundary, in the forward too,
    # so that the recomputation sees what the forward saw.
    checkpoint_dtype: Literal["float32", "bfloat16"] = "float32"
    # With checkpointing and the Triton scan: keep each block's scan tile states (fp32, one per
    # 128 positions and state: 256 bytes per position per block of the 7M preset, 4 GiB at 2^20
    # bases) from the forward to the backward, so the recomputation skips the scan and the
    # scan's backward writes its output itself: one scan forward per step instead of two.
    checkpoint_scan_states: bool = True
    # On CUDA, in training without checkpointing: run the blocks' forward and backward as two
    # CUDA graphs (captured at the second step of a shape, replayed after), so the host launches
    # two graphs per step instead of about 900 kernels. For short contexts on one device, where
    # the host launching kernels bounds the step (see seqmodels/models/cuda_graph.py).
    cuda_graph: bool = False
    rms_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    pad_vocab_size_multiple: int = 16
    initializer_range: float = 0.02
    # GPT-2 style 1/sqrt(n_layer) scaling of each block's output projection at init.
    rescale_prenorm_residual: bool = True
    name: str | None = None

    d_inner: int = field(init=False, repr=False)
    padded_vocab_size: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_positive_int("MambaConfig", "n_layer", self.n_layer)
        _check_positive_int("MambaConfig", "vocab_size", self.vocab_size)
        _check_positive_int("MambaConfig", "pad_vocab_size_multiple", self.pad_vocab_size_multiple)
        check_mixer_args(
            "MambaConfig",
            d_model=self.d_model,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            dt_rank=self.dt_rank,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            dt_init_floor=self.dt_init_floor,
            complex=self.complex,
            scan_impl=self.scan_impl,
        )
        bools = ("checkpointing", "checkpoint_scan_states", "cuda_graph", "residual_in_fp32", "tie_embeddings",
                 "rescale_prenorm_residual")
        for name in bools:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.cuda_graph and self.checkpointing:
            raise ValueError(
                "MambaConfig: cuda_graph and checkpointing exclude each other (the checkpointed blocks "
                "recompute their forward inside the backward, which is not captured); set one of them to false"
            )
        if self.checkpoint_dtype not in CHECKPOINT_DTYPES:
            raise ValueError(
                f"MambaConfig.checkpoint_dtype must be one of {CHECKPOINT_DTYPES}, got {self.checkpoint_dtype!r}"
            )
        for name in ("rms_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"MambaConfig.{name} must be a positive number, got {value!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"MambaConfig.name must be a str or None, got {self.name!r}")
        self.dt_rank = resolve_dt_rank(self.d_model, self.dt_rank)
        self.d_inner = self.expand * self.d_model
        multiple = self.pad_vocab_size_multiple
        self.padded_vocab_size = -(-self.vocab_size // multiple) * multiple

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> MambaConfig:
        """A preset by name ("1.4m", "7m", "40.7m": the paper's DNA models), with overrides.

        >>> MambaConfig.from_name("1.4m", scan_impl="ref").n_layer
        12
        """
        key = name.lower() if isinstance(name, str) else name
        if key not in _PRESETS:
            raise ValueError(f"MambaConfig.from_name: name must be one of {sorted(_PRESETS)}, got {name!r}")
        kwargs = {**_PRESETS[key], "name": key}
        kwargs.update(overrides)
        return cls.from_dict(kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Constructor arguments as plain data (for checkpoints); derived fields are left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MambaConfig:
        """Inverse of :meth:`to_dict`. Unknown keys raise; derived keys, if present, must agree."""
        if not isinstance(data, dict):
            raise ValueError(f"MambaConfig.from_dict: data must be a dict, got {type(data).__name__}")
        init_names = {f.name for f in dataclasses.fields(cls) if f.init}
        derived_names = {f.name for f in dataclasses.fields(cls) if not f.init}
        unknown = sorted(set(data) - init_names - derived_names)
        if unknown:
            raise ValueError(f"MambaConfig: unknown field(s) {unknown}")
        config = cls(**{k: v for k, v in data.items() if k in init_names})
        for name in derived_names & set(data):
            if data[name] != getattr(config, name):
                derived = getattr(config, name)
                raise ValueError(
                    f"MambaConfig.{name} is derived: got {data[name]!r}, the other fields give {derived!r}"
                )
        return config

    def mixer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~seqmodels.models.mamba.MambaBlock` (besides d_model)."""
        return block_kwargs(self)
