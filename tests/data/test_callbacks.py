from __future__ import annotations

import pytest

from seqmodels.data.callbacks import SeqLenWarmup


class _DM:
    def __init__(self, seq_len: int, batch_size: int) -> None:
        self.seq_len, self.batch_size = seq_len, batch_size

    def set_seq_len(self, n: int) -> None:
        self.seq_len = n

    def set_batch_size(self, n: int) -> None:
        self.batch_size = n


def test_doubling_schedule_from_paper():
    w = SeqLenWarmup(start=1024, target=2**14, epochs_per_stage=2)
    assert [w.seq_len_at(e) for e in range(12)] == [1024, 1024, 2048, 2048, 4096, 4096, 8192, 8192] + [16384] * 4


def test_target_not_a_power_of_two_multiple():
    w = SeqLenWarmup(start=1024, target=3000)
    assert [w.seq_len_at(e) for e in range(4)] == [1024, 2048, 3000, 3000]


def test_explicit_stages():
    w = SeqLenWarmup(stages=[[0, 128], [3, 512], [5, 2048]])
    assert [w.seq_len_at(e) for e in range(7)] == [128, 128, 128, 512, 512, 2048, 2048]
    with pytest.raises(ValueError, match="epoch 0"):
        SeqLenWarmup(stages=[(1, 128)])
    with pytest.raises(ValueError, match="strictly increasing"):
        SeqLenWarmup(stages=[(0, 128), (2, 256), (2, 512)])


def test_apply_scales_batch_to_constant_tokens():
    dm = _DM(seq_len=4096, batch_size=4)
    w = SeqLenWarmup(start=1024, scale_batch_size=True)
    tokens = []
    for epoch in range(4):
        w.apply(dm, epoch)
        tokens.append(dm.seq_len * dm.batch_size)
    assert dm.seq_len == 4096 and dm.batch_size == 4
    assert tokens == [16384] * 4
    w.apply(dm, 0)
    assert (dm.seq_len, dm.batch_size) == (1024, 16)
    fresh = SeqLenWarmup(start=1024)
    fresh.load_state_dict(w.state_dict())
    fresh.apply(dm, 2)  # the restored base, not the datamodule's current (warmup) values
    assert dm.seq_len == 4096


def test_invalid_configuration():
    with pytest.raises(ValueError, match="target"):
        SeqLenWarmup(start=2048, target=1024)
    with pytest.raises(ValueError, match="exceeds the target"):
        SeqLenWarmup(start=2048).apply(_DM(1024, 1), 0)
