"""PackedCollate against transformers' DataCollatorWithPadding on Hugging Face style
samples (dicts of Python lists, as a ``datasets.Dataset`` without a format yields),
with a tokenizer built locally (no download).

    pytest benchmarks/test_bench_hf.py --benchmark-only
"""
import numpy as np
import pytest
import torch

from fastcollate import PackedCollate

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB = 30000


def local_tokenizer():
    vocab = {f"w{i}": i for i in range(VOCAB)}
    vocab["[PAD]"], vocab["[UNK]"] = VOCAB, VOCAB + 1
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]",
                                                unk_token="[UNK]")


def features(B=256, seed=0):
    """The tokens workload's lengths (lognormal 3.3/0.8, 1..512) as tokenizer output."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.3, 0.8, size=B), 1, 512).astype(int)
    return [{"input_ids": rng.integers(0, VOCAB, n).tolist(), "attention_mask": [1] * n,
             "label": i % 10} for i, n in enumerate(lengths)]


TOKENIZER = local_tokenizer()
FEATURES = features()
OURS = PackedCollate(mode="pad", padding_value={"input_ids": TOKENIZER.pad_token_id,
                                                "attention_mask": 0})
THEIRS = transformers.DataCollatorWithPadding(TOKENIZER, return_tensors="pt")


def test_hf_fastcollate(benchmark):
    benchmark.group = "hf-pad-tokens"
    out = benchmark(OURS, FEATURES)
    ref = THEIRS(FEATURES)
    assert torch.equal(out["input_ids"], ref["input_ids"])
    assert torch.equal(out["attention_mask"], ref["attention_mask"])
    assert torch.equal(out["label"], ref["labels"])


def test_hf_torch_transformers_data_collator_with_padding(benchmark):
    benchmark.group = "hf-pad-tokens"
    benchmark(THEIRS, FEATURES)


def test_hf_torch_tensor_per_sample(benchmark):
    # what a hand-written collate of Python lists starts with: torch.tensor per list
    benchmark.group = "hf-pad-tokens"
    benchmark(lambda: [torch.tensor(f["input_ids"]) for f in FEATURES])
