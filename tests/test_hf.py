"""Hugging Face conventions with a real ``datasets.Dataset`` built locally (no hub):
formats none/numpy/torch, 0 and 2 workers, lengths from a column; and exact
resumption with torchdata's StatefulDataLoader."""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

from fastcollate import BucketBatchSampler, PackedCollate
from fastcollate.sampler import column_lengths

datasets = pytest.importorskip("datasets")

PAD = 3
rng = np.random.default_rng(0)
LENS = rng.integers(1, 30, 64).tolist()
IDS = [rng.integers(4, 100, n).tolist() for n in LENS]
COLUMNS = {"input_ids": IDS, "attention_mask": [[1] * n for n in LENS],
           "labels": [[t + 1 for t in ids] for ids in IDS], "label": list(range(64)),
           "length": LENS}


def hf_collate(**kw):
    return PackedCollate(mode="pad", padding_value={"input_ids": PAD, "labels": -100,
                                                    "attention_mask": 0},
                         **kw)


def reference(batch_rows):
    """What transformers' DataCollatorWithPadding (+ -100 labels) gives, by hand."""
    out = {}
    for key, value in (("input_ids", PAD), ("labels", -100), ("attention_mask", 0)):
        out[key] = pad_sequence([torch.tensor(COLUMNS[key][i]) for i in batch_rows],
                                batch_first=True, padding_value=value)
    out["label"] = torch.tensor([COLUMNS["label"][i] for i in batch_rows])
    return out


@pytest.fixture(scope="module")
def ds():
    return datasets.Dataset.from_dict(COLUMNS)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("fmt", [None, "numpy", "torch"])
def test_a_datasets_dataset_in_every_format_through_a_dataloader(ds, fmt, workers):
    data = ds.with_format(fmt)
    sampler = BucketBatchSampler.from_dataset(data, "input_ids", max_tokens=96, seed=1)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=hf_collate(),
                        num_workers=workers)
    batches = list(sampler)
    got = list(loader)
    assert len(got) == len(batches)
    for rows, batch in zip(batches, got):
        ref = reference(rows)
        assert set(batch) == set(COLUMNS)
        for key in ref:
            assert torch.equal(batch[key], ref[key]), (fmt, workers, key)


def test_lengths_straight_from_a_ragged_column_or_a_length_column(ds):
    assert column_lengths(ds, "input_ids").tolist() == LENS
    assert column_lengths(ds, "length").tolist() == LENS
    view = ds.shuffle(seed=0).select(range(10))       # an indices mapping over the table
    assert column_lengths(view, "input_ids").tolist() == [len(x) for x in view["input_ids"]]
    a = BucketBatchSampler.from_dataset(ds, "length", max_tokens=96)
    b = BucketBatchSampler(LENS, max_tokens=96)
    assert list(a) == list(b)


def test_a_column_that_is_not_lengths_is_refused(ds):
    with pytest.raises(KeyError, match=r"column 'input_idz' is not in the dataset"):
        BucketBatchSampler.from_dataset(ds, "input_idz", batch_size=4)
    text = datasets.Dataset.from_dict({"text": ["a", "bc"]})
    with pytest.raises(TypeError, match=r"Arrow type string"):
        column_lengths(text, "text")


def test_hf_mask_and_length_names(ds):
    data = ds.remove_columns(["attention_mask", "labels"])
    collate = PackedCollate(mode="pad", padding_value={"input_ids": PAD},
                            mask={"input_ids": "attention_mask"},
                            lengths={"input_ids": "length"}, ragged="input_ids")
    with pytest.raises(ValueError, match=r"adds the key 'length'"):
        collate([data[0], data[1]])
    batch = collate([data.remove_columns("length")[i] for i in (0, 1, 2)])
    assert batch["length"].tolist() == LENS[:3]
    assert batch["attention_mask"].sum(1).tolist() == LENS[:3]


def test_stateful_dataloader_with_workers_resumes_exactly():
    tdl = pytest.importorskip("torchdata.stateful_dataloader")
    data = [(list(range(n)), i) for i, n in enumerate(LENS)]

    def make():
        sampler = BucketBatchSampler(LENS, batch_size=4, seed=2)
        return tdl.StatefulDataLoader(data, batch_sampler=sampler, num_workers=2,
                                      collate_fn=PackedCollate(lengths=True))

    everything = [b[1].tolist() for b in make()]
    loader = make()
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()       # the plain sampler's count would be 5 + prefetched
    resumed = make()
    resumed.load_state_dict(state)
    assert [b[1].tolist() for b in resumed] == everything[5:]
