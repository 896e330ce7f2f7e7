"""PackedCollate: structure, alignment, labels, workers, pinning, errors."""
import collections
import dataclasses
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_sequence, pad_sequence, unpack_sequence
from torch.utils.data import DataLoader, Dataset

import fastcollate
from fastcollate import PackedCollate, packed_collate, padded_collate, to_device

Pair = collections.namedtuple("Pair", ["seq", "label"])


@dataclasses.dataclass
class Record:
    seq: np.ndarray
    label: int


def ragged_batch(rng, B=9, feat=None):
    shape = lambda n: (int(n),) if feat is None else (int(n), feat)
    return [rng.integers(0, 50, size=shape(n)) for n in rng.integers(1, 12, size=B)]


def same_packed(a, b):
    return all(torch.equal(x, y) for x, y in zip(unpack_sequence(a), unpack_sequence(b)))


def test_bare_samples_give_a_packed_sequence():
    seqs = ragged_batch(np.random.default_rng(0))
    out = packed_collate(seqs)
    assert same_packed(out, pack_sequence([torch.from_numpy(s) for s in seqs],
                                          enforce_sorted=False))


def test_tuple_samples_keep_structure_and_labels_in_input_order():
    rng = np.random.default_rng(1)
    seqs = ragged_batch(rng)
    samples = [(s, i, float(i) / 2) for i, s in enumerate(seqs)]
    packed, labels, halves = packed_collate(samples)
    assert labels.tolist() == list(range(len(seqs))) and labels.dtype == torch.int64
    assert halves.dtype == torch.float64
    for got, want in zip(unpack_sequence(packed), seqs):
        assert got.tolist() == want.tolist()


def test_list_samples_give_a_list_batch():
    out = packed_collate([[np.arange(3), 0], [np.arange(2), 1]])
    assert isinstance(out, list) and out[1].tolist() == [0, 1]


def test_dict_namedtuple_and_dataclass_samples():
    rng = np.random.default_rng(2)
    seqs = ragged_batch(rng, B=5)
    d = packed_collate([{"x": s, "y": i, "name": f"s{i}"} for i, s in enumerate(seqs)])
    assert set(d) == {"x", "y", "name"} and d["name"] == [f"s{i}" for i in range(5)]
    nt = packed_collate([Pair(s, i) for i, s in enumerate(seqs)])
    assert isinstance(nt, Pair) and nt.label.tolist() == list(range(5))
    dc = packed_collate([Record(s, i) for i, s in enumerate(seqs)])
    assert isinstance(dc, Record) and same_packed(dc.seq, nt.seq) and same_packed(d["x"], nt.seq)


def test_dict_samples_may_order_their_keys_differently():
    out = packed_collate([{"x": [1, 2], "y": 0}, {"y": 1, "x": [3]}])
    assert list(out) == ["x", "y"] and out["y"].tolist() == [0, 1]
    assert out["x"].data.tolist() == [1, 3, 2]


def test_inputs_and_targets_share_one_permutation():
    rng = np.random.default_rng(3)
    seqs = ragged_batch(rng, B=40)
    samples = [{"inputs": s, "targets": s * 10 + 1} for s in seqs]
    out = PackedCollate(groups=[("inputs", "targets")])(samples)
    x, y = out["inputs"], out["targets"]
    assert torch.equal(x.batch_sizes, y.batch_sizes)
    assert torch.equal(y.data, x.data * 10 + 1)          # element i is target of input i


def test_fields_of_different_lengths_pack_independently():
    rng = np.random.default_rng(4)
    src, tgt = ragged_batch(rng, B=7), ragged_batch(rng, B=7)
    s, t = packed_collate(list(zip(src, tgt)))
    assert same_packed(s, pack_sequence([torch.from_numpy(a) for a in src], False))
    assert same_packed(t, pack_sequence([torch.from_numpy(a) for a in tgt], False))


def test_group_length_mismatch_names_the_sample():
    samples = [([1, 2], [1, 2]), ([1, 2, 3], [1, 2])]
    with pytest.raises(ValueError, match=r"sample 1: field 1 has length 2 but field 0"):
        PackedCollate(groups=[(0, 1)])(samples)


def test_padded_collate_gives_batch_first_padding_and_lengths():
    padded, labels, lengths = padded_collate([([1, 2, 3], 0), ([4], 1)])
    assert padded.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert labels.tolist() == [0, 1] and lengths.tolist() == [3, 1]


def test_declared_ragged_fields_and_lengths_option():
    samples = [(np.arange(4), np.ones(3)), (np.arange(2), np.ones(3))]
    packed, fixed, lengths = PackedCollate(ragged=[0], lengths=True)(samples)
    assert fixed.shape == (2, 3) and lengths.tolist() == [4, 2]
    assert isinstance(packed, torch.nn.utils.rnn.PackedSequence)
    d = PackedCollate(lengths=True)([{"x": [1, 2, 3]}, {"x": [4]}])
    assert d["x_lengths"].tolist() == [3, 1]


def test_per_field_dtype():
    out = PackedCollate(dtype={"x": torch.float16})([{"x": [1, 2], "y": [3]}] * 2)
    assert out["x"].data.dtype == torch.float16 and out["y"].data.dtype == torch.int64


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from(["right", "left"]),
       st.sampled_from([None, 8]))
def test_pad_mode_equals_pad_sequence(seed, batch_first, side, multiple):
    rng = np.random.default_rng(seed)
    seqs = ragged_batch(rng, B=int(rng.integers(1, 20)), feat=3)
    # ragged=0: a tensor field of one length (B may be 1) would be stacked otherwise
    collate = PackedCollate(0, mode="pad", lengths=True, mask=True, batch_first=batch_first,
                            padding_side=side, padding_value=-1,
                            pad_to_multiple_of=multiple)
    padded, labels, lengths, mask = collate([(s, i) for i, s in enumerate(seqs)])
    ref = pad_sequence([torch.from_numpy(s) for s in seqs], batch_first=batch_first,
                       padding_value=-1, padding_side=side)
    T = ref.shape[1 if batch_first else 0]
    view = padded if batch_first else padded.transpose(0, 1)
    refv = ref if batch_first else ref.transpose(0, 1)
    if side == "right":
        assert torch.equal(view[:, :T], refv)
    else:
        assert torch.equal(view[:, view.shape[1] - T:], refv)
    assert lengths.tolist() == [len(s) for s in seqs]
    m = mask if batch_first else mask.t()
    assert m.sum(1).tolist() == lengths.tolist()
    assert (view[~m] == -1).all()


def test_collator_pickles_and_repr():
    c = PackedCollate(groups=[(0, 1)], mode="pad", mask=True)
    c2 = pickle.loads(pickle.dumps(c))
    assert repr(c2) == repr(c)
    assert torch.equal(c2([([1, 2], [3, 4])])[0], c([([1, 2], [3, 4])])[0])


def test_batches_can_live_in_one_shared_block():
    out = PackedCollate(shared_memory=True, lengths=True)([([1, 2, 3], 5), ([4], 6)])
    packed, labels, lengths = out
    tensors = [packed.data, packed.batch_sizes, packed.sorted_indices,
               packed.unsorted_indices, labels, lengths]
    assert all(t.is_shared() for t in tensors)
    ptrs = {t.untyped_storage().data_ptr() for t in tensors}
    assert len(ptrs) == 1
    assert packed.data.tolist() == [1, 4, 2, 3] and labels.tolist() == [5, 6]


def test_one_block_false_allocates_each_tensor_separately():
    packed, labels = PackedCollate(shared_memory=True, one_block=False)([([1, 2], 5), ([4], 6)])
    tensors = [packed.data, packed.batch_sizes, packed.sorted_indices, labels]
    assert all(t.is_shared() for t in tensors)
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == len(tensors)
    assert packed.data.tolist() == [1, 4, 2] and labels.tolist() == [5, 6]


def test_structure_mismatch_errors_name_the_sample():
    with pytest.raises(ValueError, match="sample 1 has keys"):
        packed_collate([{"x": [1]}, {"y": [1]}])
    with pytest.raises(ValueError, match="sample 2 has 3 fields"):
        packed_collate([([1], 0), ([1], 0), ([1], 0, 0)])
    with pytest.raises(TypeError, match="sample 1 is a dict"):
        packed_collate([([1], 0), {"x": [1]}])
    with pytest.raises(ValueError, match=r"field 0: sample 1 has length 0"):
        packed_collate([([1], 0), ([], 1)])
    with pytest.raises(TypeError, match="sample 0 is a"):
        packed_collate([object()])
    with pytest.raises(ValueError, match="empty batch"):
        packed_collate([])


class Ragged(Dataset):
    def __init__(self, n=64, seed=0):
        rng = np.random.default_rng(seed)
        self.items = [(rng.integers(0, 100, size=int(k)), int(i))
                      for i, k in enumerate(rng.integers(1, 30, size=n))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _batches(loader):
    return [(p.data.clone(), p.batch_sizes.clone(), p.sorted_indices.clone(), y.clone())
            for p, y in loader]


def test_workers_give_the_same_batches_as_the_main_process():
    ds = Ragged()
    collate = PackedCollate()
    main = _batches(DataLoader(ds, batch_size=8, collate_fn=collate))
    loader = DataLoader(ds, batch_size=8, collate_fn=collate, num_workers=2,
                        persistent_workers=True)
    for _ in range(2):                                  # two epochs, same workers
        assert all(all(torch.equal(a, b) for a, b in zip(x, y))
                   for x, y in zip(main, _batches(loader)))
    assert len(main) == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dataloader_pin_memory_pins_data_and_keeps_batch_sizes_on_cpu():
    loader = DataLoader(Ragged(), batch_size=8, collate_fn=packed_collate, pin_memory=True)
    packed, labels = next(iter(loader))
    assert packed.data.is_pinned() and labels.is_pinned()
    assert packed.batch_sizes.device.type == "cpu"
    moved = to_device((packed, labels), "cuda")
    assert moved[0].data.is_cuda and moved[0].batch_sizes.device.type == "cpu"
    lstm = torch.nn.LSTM(1, 4).cuda()
    x = moved[0]._replace(data=moved[0].data.float().unsqueeze(1))
    out, _ = lstm(x)
    assert out.data.shape == (packed.data.shape[0], 4)


def test_dataloader_pin_memory_path_pins_packed_fields_and_keeps_batch_sizes(monkeypatch):
    """Without a GPU, pinning itself cannot run: record which tensors torch's pin-memory
    step (the one DataLoader(pin_memory=True) applies to every batch) would pin."""
    from torch.utils.data._utils.pin_memory import pin_memory as pin_batch
    pinned = []

    def fake_pin(t, *args, **kwargs):
        pinned.append(t)
        return t.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = PackedCollate(lengths=True)([{"x": [1, 2, 3], "y": 0}, {"x": [4], "y": 1}])
    out = pin_batch(batch)
    assert isinstance(out["x"], torch.nn.utils.rnn.PackedSequence)
    assert out["x"].batch_sizes is batch["x"].batch_sizes            # left alone
    assert any(t is batch["x"].data for t in pinned)                 # data pinned
    assert any(t is batch["x"].sorted_indices for t in pinned)
    assert any(t is batch["y"] for t in pinned) and any(t is batch["x_lengths"] for t in pinned)
    assert all(t is not batch["x"].batch_sizes for t in pinned)
    assert out["x"].data.tolist() == [1, 4, 2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_collator_writes_straight_into_pinned_memory():
    packed, labels = PackedCollate(pin_memory=True)([([1, 2], 0), ([3], 1)])
    assert packed.data.is_pinned() and labels.is_pinned()


def test_to_device_keeps_structure_and_batch_sizes_on_cpu():
    batch = {"x": fastcollate.pack([[1, 2], [3]]), "y": (torch.ones(2), [torch.zeros(1)]),
             "p": Pair(torch.ones(1), "keep")}
    moved = to_device(batch, "cpu")
    assert isinstance(moved["p"], Pair) and moved["p"].label == "keep"
    assert moved["x"].batch_sizes is batch["x"].batch_sizes
    assert isinstance(moved["y"], tuple) and isinstance(moved["y"][1], list)


@pytest.mark.parametrize("values", [[[1.5, 2], [3]], [[True, False], [True]],
                                    [[1, 2.5], [3]], [[1, 2], [3]], [[2**63], [1]]])
def test_collate_of_lists_that_are_not_all_ints_matches_pack(values):
    """Int-looking lists are read straight into the batch block; when they hold other
    numbers the field is planned again and gives what pack gives (or its error)."""
    collate = PackedCollate()
    try:
        expected = fastcollate.pack(values)
    except OverflowError:
        with pytest.raises(OverflowError):
            collate([{"x": v, "ids": [1, 2]} for v in values])
        return
    got = collate([{"x": v, "ids": [1, 2]} for v in values])
    assert got["x"].data.dtype == expected.data.dtype
    assert torch.equal(got["x"].data, expected.data)
    assert torch.equal(got["x"].batch_sizes, expected.batch_sizes)
    assert got["ids"].data.tolist() == [1, 1, 2, 2]


@pytest.mark.parametrize("sample", [(3.5, 0), [3.5, 0], (1, 2)])
def test_with_ragged_fields_named_a_tuple_of_numbers_is_a_record_not_a_sequence(sample):
    # ragged=[0] says samples are records whose field 0 is ragged: a number there is
    # an error naming the field, not a bare sequence (3.5, 0) of length 2
    with pytest.raises(TypeError, match="field 0: sample 0"):
        fastcollate.PackedCollate(ragged=[0], lengths=True)([sample])
    p, labels, lengths = fastcollate.PackedCollate(ragged=[0], lengths=True)(
        [([3.5, 1.0], 0), ([2.0], 1)])
    assert labels.tolist() == [0, 1] and lengths.tolist() == [2, 1]
    assert torch.equal(p.data, torch.tensor([3.5, 2.0, 1.0]))
    # without ragged=, a flat tuple of numbers stays a bare sequence
    q = fastcollate.PackedCollate()([sample])
    assert torch.equal(q.data, torch.tensor(list(sample), dtype=q.data.dtype))


_LEADING = st.lists(st.tuples(st.sampled_from(["tensor", "array", "1-D tensor", "0-d",
                                               "strided", "list", "subclass"]),
                              st.integers(0, 5)), min_size=1, max_size=12)


class _SubTensor(torch.Tensor):
    pass


def _leading_sample(kind, n):
    return {"tensor": lambda: torch.zeros(n, 3), "array": lambda: np.zeros((n, 2)),
            "1-D tensor": lambda: torch.arange(n), "0-d": lambda: torch.tensor(1.0),
            "strided": lambda: torch.zeros(n, 4)[:, ::2], "list": lambda: [0] * n,
            "subclass": lambda: torch.zeros(n).as_subclass(_SubTensor)}[kind]()


@settings(max_examples=300, deadline=None)
@given(_LEADING)
def test_one_leading_length_matches_reading_every_length(spec):
    """_core.one_leading_length: whether the exact tensors/arrays of a column all have
    the same leading length (False once two differ), None when it meets anything else
    first (the caller's Python check then decides, 0-d samples included)."""
    column = [_leading_sample(k, n) for k, n in spec]
    got = fastcollate._core.one_leading_length(column, torch.Tensor)
    plain = [type(x) in (torch.Tensor, np.ndarray) and x.ndim >= 1 for x in column]
    lengths = {x.shape[0] for x, p in zip(column, plain) if p}
    if got is None:
        assert not all(plain)
    elif got:
        assert all(plain) and len(lengths) == 1
    else:
        assert len(lengths) > 1
    sized = {len(x) for x in column if getattr(x, "ndim", 1) >= 1}
    may = fastcollate.collate._may_have_one_length(column)
    if any(getattr(x, "ndim", 1) == 0 for x in column):
        assert may or len(sized) > 1     # a 0-d sample: unsure unless lengths differ
    else:
        assert may == (len(sized) == 1)
