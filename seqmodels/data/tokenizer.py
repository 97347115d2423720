"""Character-level DNA tokenizer with the ids of the public HyenaDNA / Caduceus checkpoints.

Vocabulary (12 ids)::

    [CLS]0 [SEP]1 [BOS]2 [MASK]3 [PAD]4 [RESERVED]5 [UNK]6 A7 C8 G9 T10 N11

Encoding rules, applied to every byte of the input:

* lower case is upper-cased first (soft-masked repeats in UCSC FASTA files are lower case);
* ``A C G T N`` map to their ids;
* the IUPAC ambiguity codes ``R Y S W K M B D H V`` map to ``N``: the checkpoints have no ids for
  them and they mean "one of several bases", which is what ``N`` stands for;
* ``PAD_CHAR`` (``"-"``, the alignment gap: "no base here") maps to ``[PAD]``; FASTA fetches use it
  for positions beyond a chromosome end;
* any other character maps to ``[UNK]`` by default (``unknown="unk"``), so one odd byte in a
  genome does not stop a long run; ``unknown="error"`` raises a ValueError naming the first
  offending character and its position instead.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

CLS_ID, SEP_ID, BOS_ID, MASK_ID, PAD_ID, RESERVED_ID, UNK_ID = 0, 1, 2, 3, 4, 5, 6
A_ID, C_ID, G_ID, T_ID, N_ID = 7, 8, 9, 10, 11
VOCAB_SIZE = 12
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
BASES = "ACGTN"
IUPAC_AMBIGUOUS = "RYSWKMBDHV"
PAD_CHAR = "-"
# Labels at these positions are ignored by torch.nn.functional.cross_entropy's default.
IGNORE_INDEX = -100


def _build_tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte -> id lookup table (256 entries, UNK where undefined) and id -> complement id table."""
    lut = np.full(256, UNK_ID, dtype=np.int64)
    for i, base in enumerate(BASES):
        lut[ord(base)] = A_ID + i
        lut[ord(base.lower())] = A_ID + i
    for code in IUPAC_AMBIGUOUS:
        lut[ord(code)] = N_ID
        lut[ord(code.lower())] = N_ID
    lut[ord(PAD_CHAR)] = PAD_ID
    comp = np.arange(VOCAB_SIZE, dtype=np.int64)  # specials and N are their own complement
    comp[A_ID], comp[T_ID], comp[C_ID], comp[G_ID] = T_ID, A_ID, G_ID, C_ID
    return lut, comp


_BYTE_TO_ID, _COMPLEMENT_ID = _build_tables()
_KNOWN_BYTE = _BYTE_TO_ID != UNK_ID
_ID_TO_TEXT = [*SPECIAL_TOKENS, *BASES]
_ID_TO_TEXT[PAD_ID] = PAD_CHAR
# str.translate table for reverse complement on text; case is kept, ambiguity codes go to N.
_COMPLEMENT_TEXT = str.maketrans(
    "ACGTNacgtn" + IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower(),
    "TGCANtgcan" + "N" * len(IUPAC_AMBIGUOUS) + "n" * len(IUPAC_AMBIGUOUS),
)


class DNATokenizer:
    """Vectorised character tokenizer for DNA (see the module docstring for the rules).

    Args:
        unknown: ``"unk"`` maps characters outside the alphabet to ``[UNK]`` (id 6);
            ``"error"`` raises a ValueError instead.
    """

    vocab_size: int = VOCAB_SIZE
    pad_id: int = PAD_ID
    unk_id: int = UNK_ID

    def __init__(self, unknown: Literal["unk", "error"] = "unk") -> None:
        if unknown not in ("unk", "error"):
            raise ValueError(f"unknown must be 'unk' or 'error', got {unknown!r}")
        self.unknown = unknown

    def encode(self, seq: str | bytes) -> np.ndarray:
        """Encode a sequence of length ``L`` into an int64 array ``[L]`` of ids.

        One table lookup over the bytes: a million-base window takes about a millisecond.
        """
        raw = seq.encode("ascii", errors="replace") if isinstance(seq, str) else bytes(seq)
        codes = np.frombuffer(raw, dtype=np.uint8)
        if self.unknown == "error":
            bad = np.flatnonzero(~_KNOWN_BYTE[codes])
            if bad.size:
                pos = int(bad[0])
                raise ValueError(
                    f"character {chr(codes[pos])!r} at position {pos} is not DNA "
                    f"(expected A C G T N, IUPAC codes {IUPAC_AMBIGUOUS} or {PAD_CHAR!r})"
                )
        return _BYTE_TO_ID[codes]

    def encode_tensor(self, seq: str | bytes) -> Tensor:
        """Like :meth:`encode`, returning a LongTensor ``[L]``."""
        return torch.from_numpy(self.encode(seq))

    def decode(self, ids: Tensor | np.ndarray | list[int]) -> str:
        """Ids ``[L]`` back to text: bases as letters, ``[PAD]`` as ``PAD_CHAR`` and the other
        special ids as their bracketed names. Raises ValueError on ids outside the vocabulary."""
        arr = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
            raise ValueError(f"ids must lie in [0, {VOCAB_SIZE}), got range [{arr.min()}, {arr.max()}]")
        return "".join(_ID_TO_TEXT[i] for i in arr.tolist())


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA string; case is kept, ``N`` and ambiguity codes give ``N``
    (``n``), ``PAD_CHAR`` and other characters stay as they are."""
    return seq.translate(_COMPLEMENT_TEXT)[::-1]


def reverse_complement_ids(ids: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Reverse complement of token ids along the last axis ``[..., L]``; returns a new array
    or tensor of the input's type. A<->T, C<->G; N, [PAD] and the other special ids are kept.

    Raises ValueError for ids outside the vocabulary (e.g. -100 labels: complement the
    inputs, then derive the labels)."""
    arr = ids if isinstance(ids, Tensor) else np.asarray(ids)
    if arr.numel() if isinstance(arr, Tensor) else arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= VOCAB_SIZE:
            raise ValueError(f"ids must lie in [0, {VOCAB_SIZE}), got range [{lo}, {hi}]")
    if isinstance(arr, Tensor):
        table = torch.from_numpy(_COMPLEMENT_ID).to(arr.device)
        return table[arr.long()].to(arr.dtype).flip(-1)
    return _COMPLEMENT_ID[arr].astype(arr.dtype)[..., ::-1].copy()
