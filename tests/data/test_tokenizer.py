from __future__ import annotations

import numpy as np
import pytest
import torch

from seqmodels.data.tokenizer import (
    PAD_CHAR,
    PAD_ID,
    UNK_ID,
    VOCAB_SIZE,
    DNATokenizer,
    reverse_complement,
    reverse_complement_ids,
)


def test_ids_match_hyenadna_checkpoints():
    tok = DNATokenizer()
    assert VOCAB_SIZE == 12
    assert tok.encode("ACGTN").tolist() == [7, 8, 9, 10, 11]
    assert tok.decode([0, 1, 2, 3, 4, 5, 6]) == "[CLS][SEP][BOS][MASK]" + PAD_CHAR + "[RESERVED][UNK]"


def test_round_trip_upper_cases():
    tok = DNATokenizer()
    seq = "acgtNNACGTgattaca"
    ids = tok.encode(seq)
    assert ids.dtype == np.int64 and ids.shape == (len(seq),)
    assert tok.decode(ids) == seq.upper()
    assert tok.decode(tok.encode_tensor(seq)) == seq.upper()


@pytest.mark.parametrize("code", list("RYSWKMBDHVryswkmbdhv"))
def test_iupac_codes_map_to_n(code):
    assert DNATokenizer().encode(code).tolist() == [11]


def test_unknown_characters():
    assert DNATokenizer().encode("AXZ*").tolist() == [7, UNK_ID, UNK_ID, UNK_ID]
    with pytest.raises(ValueError, match=r"'X' at position 2"):
        DNATokenizer(unknown="error").encode("ACXG")
    assert DNATokenizer().encode(PAD_CHAR).tolist() == [PAD_ID]


def test_decode_rejects_out_of_vocab():
    with pytest.raises(ValueError, match="ids must lie"):
        DNATokenizer().decode([7, 12])


def test_reverse_complement_string():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("acgR") == "Ncgt"
    assert reverse_complement(reverse_complement("GATTACAN")) == "GATTACAN"


def test_reverse_complement_ids_tensor_and_array():
    tok = DNATokenizer()
    ids = tok.encode("AACG" + PAD_CHAR + "TN")
    expected = tok.encode("N" + "A" + PAD_CHAR + "CGTT")
    out = reverse_complement_ids(ids)
    assert out.tolist() == expected.tolist()
    assert ids.tolist() == tok.encode("AACG" + PAD_CHAR + "TN").tolist()  # input untouched
    t = torch.from_numpy(ids).view(1, -1)
    out_t = reverse_complement_ids(t)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.int64
    assert out_t[0].tolist() == expected.tolist()
    assert torch.equal(reverse_complement_ids(out_t), t)


def test_encode_million_bases_is_vectorised():
    seq = "ACGTN" * 200_000
    ids = DNATokenizer().encode(seq)
    assert ids.shape == (1_000_000,)
    assert np.bincount(ids, minlength=12)[7:].tolist() == [200_000] * 5


def test_reverse_complement_ids_rejects_labels():
    with pytest.raises(ValueError, match="ids must lie"):
        reverse_complement_ids(torch.tensor([7, -100]))
