"""Data: FASTA/BED reading, DNA tokenizer, next-base datasets, DataModules and callbacks.

Batches are dicts ``{"input_ids": LongTensor[B, L], "labels": LongTensor[B, L]}``.
"""

from seqmodels.data.bed import SPLITS, Interval, count_splits, read_bed, select_split
from seqmodels.data.callbacks import SeqLenWarmup
from seqmodels.data.datamodule import HG38DataModule
from seqmodels.data.dna import (
    NextBaseDataset,
    ShardedSampler,
    Window,
    collate_windows,
    make_windows,
    whole_sequences,
)
from seqmodels.data.fasta import FastaFile, check_fasta_file
from seqmodels.data.prepare import prepare_hg38
from seqmodels.data.tokenizer import (
    IGNORE_INDEX,
    PAD_CHAR,
    PAD_ID,
    VOCAB_SIZE,
    DNATokenizer,
    reverse_complement,
    reverse_complement_ids,
)

__all__ = [
    "IGNORE_INDEX",
    "PAD_CHAR",
    "PAD_ID",
    "SPLITS",
    "VOCAB_SIZE",
    "DNATokenizer",
    "FastaFile",
    "HG38DataModule",
    "Interval",
    "NextBaseDataset",
    "SeqLenWarmup",
    "ShardedSampler",
    "Window",
    "check_fasta_file",
    "collate_windows",
    "count_splits",
    "make_windows",
    "prepare_hg38",
    "read_bed",
    "reverse_complement",
    "reverse_complement_ids",
    "select_split",
    "whole_sequences",
]
