"""PackedCollate's one-call path: in ordinary memory, a pack-mode batch whose ragged
fields are all plain arrays or small tensors is packed field by field with pack()'s
one-call kernels (scan, sort, allocation and scatter in one Cython call), without a
plan or a batch block. It must give exactly what the general path gives (which the
same collate takes in shared memory), and leave everything else to it."""
import collections
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence

import fastcollate.collate as collate
from fastcollate import PackedCollate
from reference import reference_pack
from strategies import NUMPY_DTYPES, make_sample

Pair = collections.namedtuple("Pair", "seq label")


def refuse_plans(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("planned")
    monkeypatch.setattr(collate, "plan_batch", refuse)
    monkeypatch.setattr(collate, "plan_flat", refuse)


def test_plain_batches_are_packed_without_a_plan(monkeypatch):
    refuse_plans(monkeypatch)
    arrays = [np.arange(n) for n in (3, 5, 1)]
    tensors = [torch.from_numpy(a) for a in arrays]
    c = PackedCollate()
    for bare in (arrays, tensors):
        p = c(bare)
        assert p.data.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4]
        assert p.batch_sizes.tolist() == [3, 2, 2, 1, 1] and p.sorted_indices.tolist() == [1, 0, 2]
    seqs, labels = c([(a, i) for i, a in enumerate(arrays)])
    assert seqs.unsorted_indices.tolist() == [1, 0, 2] and labels.tolist() == [0, 1, 2]
    out = c([{"x": t, "y": float(i), "name": str(i)} for i, t in enumerate(tensors)])
    assert out["y"].dtype == torch.float64 and out["name"] == ["0", "1", "2"]
    rec = c([Pair(a, i) for i, a in enumerate(arrays)])
    assert type(rec) is Pair and rec.label.tolist() == [0, 1, 2]


@pytest.mark.parametrize("make", [
    lambda: PackedCollate(mode="pad"), lambda: PackedCollate(mode="flat"),
    lambda: PackedCollate(dtype=torch.float32), lambda: PackedCollate(dtype={0: torch.int32}),
    lambda: PackedCollate(shared_memory=True),
], ids=["pad", "flat", "dtype", "dtype-dict", "shared"])
def test_options_the_kernels_do_not_cover_take_the_general_path(monkeypatch, make):
    refuse_plans(monkeypatch)
    with pytest.raises(AssertionError, match="planned"):
        make()([(np.arange(n), n) for n in (3, 1)])


@pytest.mark.parametrize("column", [
    [np.arange(3), [1, 2]],                                   # mixed kinds
    [np.arange(3), np.arange(2, dtype=np.int32)],             # mixed dtypes
    [np.arange(3), np.arange(4)[::2]],                        # strided
    [torch.arange(3.0, requires_grad=True), torch.arange(2.0)],
    [torch.zeros(80000)[::2], torch.zeros(60000)[::2]],       # large, strided
    [np.array(["a", "b"]), np.array(["c"])],                  # not numbers
], ids=["kinds", "dtypes", "strided", "grad", "large-strided", "strings"])
def test_batches_the_kernels_refuse_take_the_general_path(monkeypatch, column):
    calls = []
    real = collate.plan_batch
    monkeypatch.setattr(collate, "plan_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    samples = [(s, i) for i, s in enumerate(column)]
    try:
        got = PackedCollate()(samples)
    except (TypeError, ValueError):
        got = None
    assert calls, "the general path did not run"
    if got is not None:
        general = PackedCollate(shared_memory=True)(samples)
        assert_same_batch(got, general)


def test_lengths_and_groups_come_from_the_packing(monkeypatch):
    refuse_plans(monkeypatch)
    x = [np.arange(n) for n in (3, 5, 1)]
    packed, lengths = PackedCollate(lengths=True)(x)
    assert lengths.tolist() == [3, 5, 1] and lengths.dtype == torch.int64
    samples = [{"x": a, "y": a * 2, "label": i} for i, a in enumerate(x)]
    out = PackedCollate(lengths={"y": "n"}, groups=[("x", "y")])(samples)
    assert list(out) == ["x", "y", "label", "n"] and out["n"].tolist() == [3, 5, 1]
    assert out["y"].data.tolist() == [2 * v for v in out["x"].data.tolist()]
    out = PackedCollate(lengths=True, enforce_sorted=True)([(a, 0) for a in x[1::-1]])
    assert out[2].tolist() == [5, 3] and out[0].sorted_indices is None
    with pytest.raises(ValueError, match=r"sample 1: field 'y' has length 2 but field 'x' has length 5"):
        PackedCollate(groups=[("x", "y")])([{"x": x[0], "y": x[0]}, {"x": x[1], "y": x[1][:2]}])
    with pytest.raises(ValueError, match="already have a field 'x_lengths'"):
        PackedCollate(lengths=True)([{"x": a, "x_lengths": 0} for a in x])


def test_packed_lengths_checks_its_tables():
    from fastcollate import _core
    bs = np.array([3, 2, 2, 1], dtype=np.int64)
    assert _core.packed_lengths(bs).tolist() == [4, 3, 1]
    assert _core.packed_lengths(bs, np.array([2, 0, 1])).tolist() == [1, 4, 3]
    assert _core.packed_lengths(np.zeros(0, dtype=np.int64)).tolist() == []
    for bad_bs, ui in [([2, 3], None), ([2, 0], None), ([3, 1], [0, 1]), ([2, 1], [0, 2]),
                       ([2, 1], [-1, 0])]:
        with pytest.raises(ValueError):
            _core.packed_lengths(np.array(bad_bs, dtype=np.int64),
                                 None if ui is None else np.array(ui, dtype=np.int64))


@pytest.mark.parametrize("bad, match", [
    ([np.arange(3), np.arange(0)], r"^field 0: sample 1 has length 0"),
    ([torch.arange(3), torch.arange(0)], r"^field 0: sample 1 has length 0"),
])
def test_errors_name_the_field_and_the_sample_as_the_general_path_does(bad, match):
    with pytest.raises(ValueError, match=match):
        PackedCollate()([(s, 0) for s in bad])
    with pytest.raises(ValueError, match=match):
        PackedCollate(shared_memory=True)([(s, 0) for s in bad])
    with pytest.raises(ValueError, match=r"^sample 1 has length 0"):
        PackedCollate()([s for s in bad])


def test_enforce_sorted_errors_like_the_general_path():
    samples = [np.arange(2), np.arange(3)]
    for c in (PackedCollate(enforce_sorted=True),
              PackedCollate(enforce_sorted=True, shared_memory=True)):
        with pytest.raises(ValueError, match="sorted"):
            c(samples)
    p = PackedCollate(enforce_sorted=True)(samples[::-1])
    assert p.sorted_indices is None and p.data.tolist() == [0, 0, 1, 1, 2]


def test_the_stacking_memory_is_shared_with_the_general_path():
    """An auto-detected tensor field of one length is stacked (general path), and the
    flip to ragged (one-call path) warns; once ragged it stays ragged."""
    c = PackedCollate()
    stacked = c([(torch.arange(2), 0), (torch.arange(2), 1)])
    assert not isinstance(stacked[0], PackedSequence)
    with pytest.warns(UserWarning, match=r"field 0 was stacked .* lengths differ"):
        ragged = c([(torch.arange(2), 0), (torch.arange(1), 1)])
    assert isinstance(ragged[0], PackedSequence)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = c([(torch.arange(2), 0), (torch.arange(2), 1)])
    assert isinstance(again[0], PackedSequence) and again[0].batch_sizes.tolist() == [2, 2]


def assert_same_batch(got, want):
    assert type(got) is type(want)
    if isinstance(want, PackedSequence):
        assert got.data.dtype == want.data.dtype and torch.equal(got.data, want.data)
        assert torch.equal(got.batch_sizes, want.batch_sizes)
        assert got.batch_sizes.dtype == torch.int64
        for a, b in ((got.sorted_indices, want.sorted_indices),
                     (got.unsorted_indices, want.unsorted_indices)):
            assert (a is None) == (b is None)
            assert a is None or (a.dtype == torch.int64 and torch.equal(a, b))
        assert got.data.requires_grad == want.data.requires_grad
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            assert_same_batch(got[k], want[k])
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert_same_batch(a, b)
    else:
        assert got == want


@st.composite
def plain_batches(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B = draw(st.integers(1, 60))
    lengths = (rng.choice(draw(st.lists(st.integers(1, 40), min_size=1, max_size=4)), size=B)
               if draw(st.booleans()) else
               np.clip(rng.lognormal(2, 1.2, size=B), 1, 300).astype(np.int64))
    enforce_sorted = draw(st.booleans())
    if enforce_sorted:
        lengths = np.sort(lengths)[::-1]
    row = draw(st.sampled_from([(), (1,), (3,), (2, 5)]))
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    seqs = [make_sample(rng, int(n), row, dtype) for n in lengths]
    if draw(st.booleans()):
        seqs = [s.numpy() for s in seqs]
    structure = draw(st.sampled_from(["bare", "tuple", "list", "dict", "namedtuple",
                                      "grouped"]))
    lengths = draw(st.sampled_from([False, True] + ([{"x": "n"}] if structure in
                                                     ("dict", "grouped") else [])))
    return seqs, structure, enforce_sorted, draw(st.booleans()), lengths


def build(seqs, structure):
    if structure == "bare":
        return list(seqs)
    if structure == "tuple":
        return [(s, i, float(i) / 2) for i, s in enumerate(seqs)]
    if structure == "list":
        return [[s, i] for i, s in enumerate(seqs)]
    if structure == "dict":
        return [{"label": i % 3, "x": s, "tag": f"s{i}"} for i, s in enumerate(seqs)]
    if structure == "grouped":      # inputs and per-step targets (another dtype)
        return [{"x": s, "y": np.full(len(s), i, dtype=np.int16)} for i, s in enumerate(seqs)]
    return [Pair(s, np.full(2, i, dtype=np.int32)) for i, s in enumerate(seqs)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_batches())
def test_one_call_batches_equal_the_general_path_and_the_reference(case):
    seqs, structure, enforce_sorted, declared, lengths = case
    samples = build(seqs, structure)
    key = {"bare": None, "dict": "x", "grouped": "x"}.get(structure, 0)
    ragged = None if (structure == "bare" or not declared) else [key]
    options = dict(enforce_sorted=enforce_sorted, lengths=lengths)
    if structure == "grouped":
        ragged, options["groups"] = ["x", "y"], [("x", "y")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # (a field of one length is stacked: no flip)
        got = PackedCollate(ragged, **options)(samples)
        want = PackedCollate(ragged, shared_memory=True, **options)(samples)
    assert_same_batch(got, want)
    extra = None        # the lengths output, where the batch has one
    if structure in ("dict", "grouped"):
        packed = got["x"]
        extra = got.get("n" if isinstance(lengths, dict) else "x_lengths")
    elif structure == "bare":
        packed, extra = got if lengths else (got, None)
    elif structure in ("tuple", "list"):
        packed = got[0]
        if lengths and isinstance(packed, PackedSequence):
            extra = got[-1]
    else:
        record = got
        if type(got) is tuple:          # (record, lengths)
            record, extra = got
        packed = record.seq
    if lengths and isinstance(packed, PackedSequence):
        assert extra.tolist() == list(map(len, seqs))
    else:
        assert extra is None
    if isinstance(packed, PackedSequence):
        data, bs, si, ui = reference_pack([torch.as_tensor(s) for s in seqs], enforce_sorted)
        assert torch.equal(packed.data, data) and packed.batch_sizes.tolist() == bs
        if enforce_sorted:
            assert packed.sorted_indices is None
        else:
            assert packed.sorted_indices.tolist() == si
            assert packed.unsorted_indices.tolist() == ui
    else:       # auto-detected and all of one length: stacked like default_collate
        assert ragged is None and len({len(s) for s in seqs}) == 1
        assert torch.equal(packed, torch.stack([torch.as_tensor(s) for s in seqs]))


def test_one_call_batches_own_their_memory():
    """The output shares nothing with the samples: changing them afterwards changes
    nothing in the batch."""
    arrays = [np.arange(n) for n in (3, 2)]
    labels = [np.array([1, 2]), np.array([3, 4])]
    seqs, lab = PackedCollate()(list(zip(arrays, labels)))
    for a in arrays + labels:
        a[:] = -1
    assert seqs.data.tolist() == [0, 0, 1, 1, 2] and lab.tolist() == [[1, 2], [3, 4]]


# -- dict samples split at C speed (_core.split_dicts) ------------------------------

def split_dicts_reference(samples, keys):
    if not all(type(s) is dict and s.keys() == set(keys) for s in samples):
        return None
    return [[s[k] for s in samples] for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", 1, 2.5, (1,)]), st.integers(),
                                max_size=4), min_size=1, max_size=6),
       st.booleans())
def test_split_dicts_equals_the_plain_split(samples, subclass):
    from fastcollate import _core
    if subclass and len(samples) > 1:
        samples[-1] = collections.OrderedDict(samples[-1])
    keys = list(samples[0])
    assert _core.split_dicts(samples, keys) == split_dicts_reference(samples, keys)


def test_dict_batches_of_other_mappings_or_keys_take_the_general_check():
    c = PackedCollate()
    out = c([collections.OrderedDict(x=[1, 2], y=0), collections.OrderedDict(y=1, x=[3])])
    assert type(out) is dict and list(out) == ["x", "y"]
    assert out["x"].data.tolist() == [1, 3, 2] and out["y"].tolist() == [0, 1]
    with pytest.raises(TypeError, match="sample 1 is a OrderedDict"):
        c([{"x": [1, 2], "y": 0}, collections.OrderedDict(y=1, x=[3])])
    with pytest.raises(ValueError, match="sample 1 has keys"):
        c([{"x": [1], "y": 0}, {"x": [1], "z": 0}])
    with pytest.raises(ValueError, match="sample 1 has keys"):
        c([{"x": [1], "y": 0}, {"x": [1]}])
    with pytest.raises(TypeError, match="sample 1 is a list"):
        c([{"x": [1], "y": 0}, [[1], 0]])


class MutatingKey:
    """A key whose __eq__ (run by the dict lookup on a hash collision) empties the
    sample being looked up."""
    def __init__(self, name, victim=None):
        self.name, self.victim = name, victim

    def __hash__(self):
        return 7

    def __eq__(self, other):
        if self.victim is not None:
            self.victim.clear()
        return isinstance(other, MutatingKey) and other.name == self.name


def test_a_key_that_mutates_the_sample_during_the_split_is_safe():
    from fastcollate import _core
    a, b = MutatingKey("a"), MutatingKey("b")
    s0 = {a: 1, b: 2}
    s1 = {a: 3, b: 4}
    a.victim = s1           # the lookup of a in s1 compares keys: s1 is emptied
    got = _core.split_dicts([s0, s1], [a, b])
    assert got is None or got == [[1, 3], [2, 4]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), max_size=40), st.booleans())
def test_packed_lengths_and_length_range_equal_the_plain_ones(lengths, enforce_sorted):
    from fastcollate import _core
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    lens = np.array(lengths, dtype=np.int64)
    assert _core.length_range(lens) == ((min(lengths), max(lengths)) if lengths else (0, 0))
    if not lengths:
        return
    bs, si, ui = _core.sort_lengths(lens, enforce_sorted)
    assert _core.packed_lengths(bs, ui).tolist() == lengths


class BadLength:
    def __len__(self):
        raise RuntimeError("no length")


def test_a_sample_whose_len_raises_gets_the_general_error():
    with pytest.raises(TypeError, match="sample 1"):
        PackedCollate()([(np.arange(3), 0), (BadLength(), 1)])


def test_nested_tensor_samples_get_the_general_error():
    nt = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError, match="field 0: sample 0: nested tensors are not supported"):
        PackedCollate()([(nt, 0), (nt, 1)])


def test_a_bare_batch_the_kernels_refuse_is_tried_once(monkeypatch):
    calls = []
    real = collate.packed_in_one_call
    monkeypatch.setattr(collate, "packed_in_one_call",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    p = PackedCollate()([np.arange(3), np.arange(2, dtype=np.int32)])   # mixed dtypes
    assert calls == [1] and p.data.dtype == torch.int64
    assert p.data.tolist() == [0, 0, 1, 1, 2]
