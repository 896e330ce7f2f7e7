"""pack()'s one-call kernels (``_core.pack_arrays``, ``pack_flat``, ``pack_tensors``):
scan, counting sort, allocation and scatter in one Cython call, against the plain
reference; every input they do not handle must come back as None (the general path
then packs or names it), never as a wrong batch."""
import gc
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcollate
from fastcollate import _core, packing
from torch.nn.utils.rnn import PackedSequence, pad_sequence
from reference import reference_pack
from strategies import NUMPY_DTYPES, batches, make_sample

ROWS = [(), (1,), (3,), (2, 5), (16,), (0,)]


@st.composite
def uniform_batches(draw, dtypes=NUMPY_DTYPES):
    """One dtype, one row: the batches the one-call kernels take. Lengths from a few
    values (ties) or long-tailed, sorted when ``enforce_sorted`` is drawn."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B = draw(st.integers(1, 200))
    if draw(st.booleans()):
        pool = draw(st.lists(st.integers(1, 80), min_size=1, max_size=5))
        lengths = rng.choice(pool, size=B)
    else:
        lengths = np.clip(rng.lognormal(2.5, 1.2, size=B), 1, 700).astype(np.int64)
    enforce_sorted = draw(st.booleans())
    if enforce_sorted:
        lengths = np.sort(lengths)[::-1]
    row = draw(st.sampled_from(ROWS))
    dtype = draw(st.sampled_from(dtypes))
    samples = [make_sample(rng, int(n), row, dtype) for n in lengths]
    return samples, enforce_sorted


def assert_matches_reference(packed, tensors, enforce_sorted):
    data, bs, si, ui = packed
    want, want_bs, want_si, want_ui = reference_pack(tensors, enforce_sorted)
    got = torch.from_numpy(data)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)
    assert bs.tolist() == want_bs
    if enforce_sorted:
        assert si is None and ui is None
    else:
        assert si.tolist() == want_si and ui.tolist() == want_ui
    assert data.ctypes.data % 64 == 0 and data.flags.c_contiguous and data.flags.writeable


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_batches())
def test_pack_arrays_equals_the_reference(case):
    samples, enforce_sorted = case
    arrays = [s.numpy() for s in samples]
    assert_matches_reference(_core.pack_arrays(arrays, enforce_sorted), samples,
                             enforce_sorted)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_batches(), st.booleans())
def test_pack_tensors_equals_the_reference(case, strided):
    samples, enforce_sorted = case
    if samples[0][0].numel() == 0:
        return       # rows of zero elements: numel() cannot give lengths (None, below)
    # every other row of a twice-as-long tensor: torch.cat copies any strides
    tensors = [torch.stack([s, torch.zeros_like(s)], 1).reshape((-1,) + s.shape[1:])[::2]
               if strided else s for s in samples]
    packed = _core.pack_tensors(tensors, torch.Tensor, torch.cat, 1 << 40, enforce_sorted)
    assert_matches_reference(packed, samples, enforce_sorted)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_batches(), st.booleans())
def test_pack_tensors_reads_large_samples_directly(case, viewed):
    """Samples averaging ``direct_bytes`` or more are read where they lie (no
    concatenation) and scattered in the same call; views into a larger storage
    (an offset into it) are read from their own first row."""
    samples, enforce_sorted = case
    if samples[0][0].numel() == 0:
        return
    tensors = [torch.cat([s[:1], s])[1:] if viewed else s for s in samples]
    packed = _core.pack_tensors(tensors, torch.Tensor, torch.cat, 0, enforce_sorted)
    assert packed is not None
    assert_matches_reference(packed, samples, enforce_sorted)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_batches(), st.integers(1, 4096), st.booleans())
def test_pack_tensors_in_chunks_equals_the_reference(case, chunk_bytes, mixed):
    """Batches over ``chunk_bytes`` are concatenated and scattered a chunk of ranks at a
    time; mixed dtypes either promote alike in every chunk or go to the general path."""
    samples, enforce_sorted = case
    if samples[0][0].numel() == 0:
        return
    tensors = [s.to(torch.float64) if mixed and i % 7 == 3 else s
               for i, s in enumerate(samples)]
    packed = _core.pack_tensors(tensors, torch.Tensor, torch.cat, 1 << 40, enforce_sorted,
                                chunk_bytes)
    if packed is None:      # mixed dtypes that promote differently from chunk to chunk
        assert mixed and len({t.dtype for t in tensors}) > 1
        return
    target = torch.cat(tensors).dtype
    assert_matches_reference(packed, [t.to(target) for t in tensors], enforce_sorted)


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_batches(), st.sampled_from(NUMPY_DTYPES))
def test_pack_tensors_promotes_mixed_dtypes_like_torch_cat(case, other):
    samples, enforce_sorted = case
    if samples[0][0].numel() == 0:
        return
    mixed = [s.to(other) if i % 3 == 1 else s for i, s in enumerate(samples)]
    packed = _core.pack_tensors(mixed, torch.Tensor, torch.cat, 1 << 40, enforce_sorted,
                                1 << 40)     # one concatenation (chunks: test below)
    target = torch.cat(mixed).dtype
    assert_matches_reference(packed, [s.to(target) for s in mixed], enforce_sorted)


def test_conjugate_and_negative_views_come_out_as_their_values():
    z = torch.tensor([1 + 2j, 3 - 4j, 5 + 6j])
    batch = [z.conj(), z[:2], torch._neg_view(z)[:1]]
    p = fastcollate.pack(batch)
    want = torch.nn.utils.rnn.pack_sequence([t.resolve_conj().resolve_neg() for t in batch],
                                           enforce_sorted=False)
    assert torch.equal(p.data, want.data) and not p.data.is_conj()


def test_pack_takes_the_one_call_paths(monkeypatch):
    """pack() of plain arrays and of small tensors never plans (one kernel call)."""
    def refuse(*a, **k):
        raise AssertionError("planned")
    monkeypatch.setattr(packing, "plan_batch", refuse)
    arrays = [np.arange(n) for n in (3, 5, 1)]
    p = fastcollate.pack(arrays)
    assert p.data.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4] and p.batch_sizes.tolist() == [3, 2, 2, 1, 1]
    p = fastcollate.pack(tuple(torch.from_numpy(a) for a in arrays))
    assert p.sorted_indices.tolist() == [1, 0, 2] and p.unsorted_indices.tolist() == [1, 0, 2]
    p = fastcollate.pack([torch.arange(3), torch.arange(2)], enforce_sorted=True)
    assert p.data.tolist() == [0, 0, 1, 1, 2] and p.sorted_indices is None


def _odd_arrays():
    a = np.arange(12, dtype=np.int64).reshape(6, 2)
    return {
        "a list": [a, [[1, 2]]],
        "a tensor": [a, torch.zeros(2, 2, dtype=torch.int64)],
        "a subclass": [a, np.ma.masked_array(a)],
        "another dtype": [a, a.astype(np.int32)],
        "another row": [a, np.zeros((2, 3), np.int64)],
        "another ndim": [a, np.zeros(2, np.int64)],
        "zero-dimensional": [np.array(3), np.array(4)],
        "not contiguous": [a, a[::2]],
        "byte-swapped": [a, a.astype(">i8")],
        "misaligned": [a, np.frombuffer(b"\0" * 17, np.int64, 2, 1).reshape(1, 2)],
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_batches())
def test_pack_packed_is_pack_arrays_as_a_packed_sequence(case):
    samples, enforce_sorted = case
    arrays = [s.numpy() for s in samples]
    p = _core.pack_packed(arrays, enforce_sorted)
    assert type(p) is PackedSequence
    want, want_bs, want_si, want_ui = reference_pack(samples, enforce_sorted)
    assert p.data.dtype == want.dtype and torch.equal(p.data, want)
    assert p.batch_sizes.dtype == torch.int64 and p.batch_sizes.tolist() == want_bs
    if enforce_sorted:
        assert p.sorted_indices is None and p.unsorted_indices is None
    else:
        assert p.sorted_indices.tolist() == want_si and p.unsorted_indices.tolist() == want_ui


def test_pack_packed_returns_none_for_what_it_does_not_take():
    a = np.arange(6)
    assert _core.pack_packed(iter([a, a])) is None          # never consumes an iterator
    assert _core.pack_packed([]) is None and _core.pack_packed(()) is None
    assert _core.pack_packed(np.stack([a, a])) is None
    assert _core.pack_packed([torch.arange(3), a]) is None
    assert _core.pack_packed([np.ones(3, np.longdouble)] * 2) is None   # torch lacks it
    assert _core.pack_packed((a, a)).data.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # every type number of a dtype torch has: 'q' and 'l' are both int64 on LP64
    assert _core.pack_packed([np.ones(2, "q")]).data.dtype == torch.int64


def test_pack_of_arrays_under_a_torch_function_mode_takes_the_general_path():
    """A mode (here ``torch.device``) is never bypassed by the one-call path: the
    general path runs with modes disabled, as for every other input."""
    seen = []
    real = packing._pack

    def spy(*a, **k):
        seen.append(1)
        return real(*a, **k)
    packing._pack = spy
    try:
        with torch.device("cpu"):
            p = fastcollate.pack([np.arange(3), np.arange(2)])
        q = fastcollate.pack([np.arange(3), np.arange(2)])
    finally:
        packing._pack = real
    assert seen == [1] and torch.equal(p.data, q.data)


@pytest.mark.parametrize("name", list(_odd_arrays()))
def test_pack_arrays_returns_none_for_anything_unusual(name):
    batch = _odd_arrays()[name]
    assert _core.pack_arrays(batch) is None
    assert _core.pack_packed(batch) is None
    # and pack() still packs or names it through the general path
    try:
        p = fastcollate.pack(batch)
    except (ValueError, TypeError) as e:
        assert "sample" in str(e)
    else:
        assert p.data.shape[0] == sum(len(np.atleast_1d(s)) for s in batch)


def test_pack_arrays_accepts_read_only_arrays_and_empty_rows():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    a.flags.writeable = False
    data, bs, _, _ = _core.pack_arrays([a, a[:1].copy()])
    assert data.tolist() == [[0, 1], [0, 1], [2, 3], [4, 5]] and bs.tolist() == [2, 1, 1]
    data, bs, _, _ = _core.pack_arrays([np.zeros((2, 0)), np.zeros((3, 0))])
    assert data.shape == (5, 0) and bs.tolist() == [2, 2, 1]


def test_zero_length_and_unsorted_samples_raise_like_sort_lengths():
    with pytest.raises(ValueError, match="sample 1 has length 0"):
        _core.pack_arrays([np.arange(2), np.arange(0)])
    with pytest.raises(_core.UnsortedError, match="sample 1"):
        _core.pack_arrays([np.arange(2), np.arange(3)], True)
    with pytest.raises(ValueError, match="sample 1 has length 0"):
        fastcollate.pack([torch.arange(2), torch.arange(0)])
    with pytest.raises(RuntimeError, match="enforce_sorted"):
        fastcollate.pack([torch.arange(2), torch.arange(3)], enforce_sorted=True)


def test_pack_flat_returns_none_unless_the_counts_split_the_rows():
    src = np.arange(12, dtype=np.int16).reshape(6, 2)
    data, bs, si, ui = _core.pack_flat(src, np.array([4, 8], dtype=np.int64))
    assert data.tolist() == [[4, 5], [0, 1], [6, 7], [2, 3], [8, 9], [10, 11]]
    assert (bs.tolist(), si.tolist(), ui.tolist()) == ([2, 2, 1, 1], [1, 0], [1, 0])
    for counts in ([4, 7], [4, 0, 8], [4, 6], [4, 10], [14, -2], [2**62, 2**62]):
        assert _core.pack_flat(src, np.array(counts, dtype=np.int64)) is None, counts
    assert _core.pack_flat(src[::2], np.array([2, 4], dtype=np.int64)) is None
    assert _core.pack_flat(src.astype(">i2"), np.array([12], dtype=np.int64)) is None
    assert _core.pack_flat(src.tolist(), np.array([12], dtype=np.int64)) is None
    assert _core.pack_flat(np.zeros((3, 0)), np.array([0, 0], dtype=np.int64)) is None
    assert _core.pack_flat(src, np.array([], dtype=np.int64)) is None


class _Sub(torch.Tensor):
    pass


def _odd_tensors():
    t = torch.arange(6.0)
    n = packing._DIRECT_TENSOR_BYTES // 4      # float32 samples read directly
    return {
        "a subclass": [t, torch.arange(3.0).as_subclass(_Sub)],
        "an array": [t, np.arange(3.0)],
        "requiring grad": [t, torch.arange(3.0, requires_grad=True)],
        "bfloat16": [t.bfloat16(), t.bfloat16()],
        "other rows": [torch.zeros(2, 3), torch.zeros(2, 4)],
        "zero-dimensional": [torch.tensor(1.0), torch.tensor(2.0)],
        "a legacy empty beside rows": [torch.zeros(2, 3), torch.zeros(0)],
        "zero length": [t, t[:0]],
        "large strided samples": [torch.zeros(2 * n)[::2], torch.zeros(2 * n)[::2]],
        "large samples of two dtypes": [torch.zeros(n), torch.zeros(n).double()],
    }


@pytest.mark.parametrize("name", list(_odd_tensors()))
def test_pack_tensors_returns_none_for_what_the_general_path_must_handle(name):
    batch = _odd_tensors()[name]
    assert _core.pack_tensors(batch, torch.Tensor, torch.cat,
                              packing._DIRECT_TENSOR_BYTES) is None
    try:
        p = fastcollate.pack(batch)
    except (ValueError, TypeError) as e:
        assert "sample" in str(e)
    else:       # packed through the general path, like torch
        want = torch.nn.utils.rnn.pack_sequence(
            [torch.as_tensor(s).detach().resolve_conj() for s in batch], enforce_sorted=False)
        assert torch.equal(p.data.detach().resolve_conj(), want.data)
        assert p.batch_sizes.tolist() == want.batch_sizes.tolist()


@pytest.mark.skipif(os.environ.get("FASTCOLLATE_SANITIZED", "") not in ("", "0"),
                    reason="ASAN's quarantine holds freed memory: RSS does not drop")
def test_the_output_is_freed_with_the_packed_sequence():
    """The kernels' output memory (a capsule-owned aligned buffer) goes back to the
    system when the last tensor viewing it is dropped: 40 x 32 MB never accumulate."""
    def rss():
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    arrays = [np.ones(1 << 20, dtype=np.float32) for _ in range(8)]    # 32 MB packed
    tensors = [torch.ones(100, dtype=torch.int64) for _ in range(8)]
    fastcollate.pack(arrays)
    gc.collect()
    before = rss()
    for _ in range(40):
        p = fastcollate.pack(arrays)
        assert float(p.data[0]) == 1.0
        q = fastcollate.pack(tensors)
        del p, q
    gc.collect()
    assert rss() - before < 200 << 20


def test_the_output_works_as_torch_memory():
    """A numpy-owned output behaves like torch's own: shared memory, pickling, a view
    outliving the PackedSequence, in-place ops."""
    import pickle
    p = fastcollate.pack([np.arange(4.0), np.arange(2.0)])
    view = p.data[1:3]
    q = pickle.loads(pickle.dumps(p))
    assert torch.equal(q.data, p.data)
    del p
    gc.collect()
    assert view.tolist() == [0.0, 1.0]
    view.add_(1)
    assert view.tolist() == [1.0, 2.0]
    r = fastcollate.pack([torch.arange(3), torch.arange(1)])
    r.data.share_memory_()
    assert r.data.is_shared() and r.data.tolist() == [0, 0, 1, 2]


class _Arrays(torch.utils.data.Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        return np.arange(1 + i % 5, dtype=np.int64) + 100 * i


def test_batches_packed_in_worker_processes_arrive_intact():
    """The kernels' numpy-owned outputs cross from DataLoader workers to the main
    process (moved into shared memory by torch's reducer) unchanged."""
    loader = torch.utils.data.DataLoader(_Arrays(), batch_size=6, num_workers=2,
                                         collate_fn=fastcollate.pack)
    got = [torch.nn.utils.rnn.unpack_sequence(p) for p in loader]
    want = [[torch.from_numpy(_Arrays()[i]) for i in range(b, b + 6)] for b in range(0, 24, 6)]
    assert [[t.tolist() for t in batch] for batch in got] == \
        [[t.tolist() for t in batch] for batch in want]


def test_object_arrays_are_never_copied_raw():
    """An object array's bytes are PyObject pointers: the kernels must refuse them (a
    raw copy would share the objects without owning them: freed memory once the
    source is gone). Found in review: this segfaulted."""
    objs = np.array([float(i) for i in range(2000)], dtype=object)
    assert _core.pack_flat(objs, np.array([2000], dtype=np.int64)) is None
    assert _core.pack_arrays([objs, objs[:3].copy()]) is None
    structured = np.zeros(4, dtype=[("a", np.int64), ("b", object)])
    assert _core.pack_arrays([structured]) is None


def test_chunked_path_leaves_an_odd_row_to_the_general_error():
    """In the chunked path lengths come from sample 0's row until each chunk's
    torch.cat checks the rows: an unsorted verdict there may rest on a sample of
    another row, so the general path must report it (found in review)."""
    batch = [torch.zeros(100, 4) for _ in range(1000)]
    batch[500] = torch.zeros(60, 8)
    for enforce_sorted in (True, False):
        with pytest.raises(ValueError, match=r"sample 500.*\(60, 8\)"):
            fastcollate.pack(batch, enforce_sorted=enforce_sorted)


def test_a_sample_changing_shape_between_the_planned_reads_falls_back(monkeypatch):
    """Large non-contiguous tensors are concatenated after the direct read refuses
    them; if a sample changes shape in between (another thread), the second read
    returns None and the general path takes over instead of a TypeError (review)."""
    batch = [torch.zeros(256, 32)[:, ::2] for _ in range(4)]    # 16 KB samples, strided
    real = _core.tensor_sources

    def racing(seqs, *args):
        found = real(seqs, *args)
        seqs[1].unsqueeze_(0)           # what a mutator thread could do meanwhile
        return found
    monkeypatch.setattr(_core, "tensor_sources", racing)
    with pytest.raises(ValueError, match="sample 1"):
        packing.plan_batch(batch)


# ---------------------------------------------------------------------------------------
# pad() of NumPy batches in one call: _core.pad_arrays
# ---------------------------------------------------------------------------------------

def reference_padded(samples, T, batch_first, left, value):
    """Padding the plain way: a buffer full of the value, each sample copied in."""
    row, dtype = samples[0].shape[1:], samples[0].dtype
    out = np.full((len(samples), T) + row, value, dtype=dtype)
    for i, s in enumerate(samples):
        start = T - len(s) if left else 0
        out[i, start:start + len(s)] = s
    return out if batch_first else np.ascontiguousarray(np.swapaxes(out, 0, 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(kinds=["ndarray"], dtypes=NUMPY_DTYPES, min_length=0), st.booleans(),
       st.booleans(), st.sampled_from([0, 1, 7, -0.0]), st.sampled_from([1, 3, 8]))
def test_pad_arrays_equals_the_padded_reference(samples, batch_first, left, value,
                                                multiple):
    dtype = torch.from_numpy(samples[0][:0]).dtype
    elem = fastcollate.padding._pad_element(value, dtype)
    got = _core.pad_arrays(samples, batch_first, left, elem, multiple)
    assert got is not None
    out, lengths = got
    T = -(-max(len(s) for s in samples) // multiple) * multiple
    assert lengths.tolist() == [len(s) for s in samples]
    assert out.dtype == samples[0].dtype and out.ctypes.data % 64 == 0
    want = reference_padded(samples, T, batch_first, left, np.array(value).astype(out.dtype))
    assert out.shape == want.shape
    assert out.tobytes() == want.tobytes()          # bytes: -0.0 and NaN-free compare
    if multiple == 1 and T > 0:                     # and torch agrees
        ref = pad_sequence([torch.from_numpy(s) for s in samples], batch_first=batch_first,
                           padding_value=value, padding_side="left" if left else "right")
        assert torch.equal(fastcollate.pad(samples, batch_first=batch_first,
                                           padding_value=value,
                                           padding_side="left" if left else "right"), ref)


def test_pad_of_plain_arrays_is_one_call(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("planned")
    monkeypatch.setattr(packing, "plan_batch", refuse)
    monkeypatch.setattr(fastcollate.padding, "plan_batch", refuse)
    batch = [np.arange(3, dtype=np.int32), np.arange(0, dtype=np.int32), np.arange(1, dtype=np.int32)]
    out, lengths = fastcollate.pad(tuple(batch), padding_value=-1, return_lengths=True,
                                   pad_to_multiple_of=4)
    assert out.dtype == torch.int32 and lengths.tolist() == [3, 0, 1]
    assert out.tolist() == [[0, 1, 2, -1], [-1, -1, -1, -1], [0, -1, -1, -1]]
    out = fastcollate.pad(batch, batch_first=False, padding_side="left")
    assert out.tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0]]


@pytest.mark.parametrize("name", list(_odd_arrays()))
def test_pad_arrays_returns_none_for_anything_unusual(name):
    batch = _odd_arrays()[name]
    assert _core.pad_arrays(batch) is None
    try:        # and pad() still pads or names it through the general path
        out = fastcollate.pad(batch)
    except (ValueError, TypeError) as e:
        assert "sample" in str(e)
    else:
        assert out.shape[0] == len(batch)


def test_pad_arrays_refuses_what_it_cannot_pad_alone():
    a = np.arange(6)
    assert _core.pad_arrays(iter([a, a])) is None               # never consumes an iterator
    assert _core.pad_arrays([]) is None
    assert _core.pad_arrays([np.ones(3, np.longdouble)] * 2) is None   # torch lacks it
    assert _core.pad_arrays([a], True, False, None, 2**62) is None     # B x T too large
    with pytest.raises(ValueError, match="too large"):
        fastcollate.pad([a], pad_to_multiple_of=2**62)
    with pytest.raises(ValueError, match="one 8-byte element"):
        _core.pad_arrays([a], True, False, b"\1")
    with pytest.raises(ValueError, match="multiple"):
        _core.pad_arrays([a], True, False, None, 0)


def test_pad_of_a_mixed_batch_pads_with_a_value_only_the_promoted_dtype_holds():
    """-1 does not fit sample 0's uint8, but the batch promotes to int16: the one-call
    path leaves it to the general path, which pads like torch."""
    batch = [np.array([200, 1], np.uint8), np.array([-5], np.int16)]
    ref = pad_sequence([torch.from_numpy(b).to(torch.int16) for b in batch],
                       batch_first=True, padding_value=-1)
    assert torch.equal(fastcollate.pad(batch, padding_value=-1), ref)
    with pytest.raises(OverflowError, match="padding_value"):
        fastcollate.pad(batch[:1], padding_value=-1)


def test_pad_of_arrays_under_a_torch_function_mode_takes_the_general_path():
    seen = []
    real = fastcollate.padding._pad

    def spy(*a, **k):
        seen.append(1)
        return real(*a, **k)
    fastcollate.padding._pad = spy
    try:
        with torch.device("cpu"):
            p = fastcollate.pad([np.arange(3), np.arange(2)])
        q = fastcollate.pad([np.arange(3), np.arange(2)])
    finally:
        fastcollate.padding._pad = real
    assert seen == [1] and torch.equal(p, q)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(kinds=["tensor", "tensor_strided"], dtypes=NUMPY_DTYPES), st.booleans(),
       st.booleans(), st.sampled_from([0, 1, 7]), st.sampled_from([None, 4]),
       st.booleans())
def test_pad_of_small_tensors_in_one_call_equals_pad_sequence(samples, batch_first, left,
                                                              value, multiple, mixed):
    """numel() per tensor, torch.cat (promotion like torch.cat: compared with the
    samples converted first), then pad_flat from the concatenation."""
    if mixed and len(samples) > 1:
        samples = [s.to(torch.float64) if i == 1 else s for i, s in enumerate(samples)]
    dtype = samples[0].dtype
    for s in samples[1:]:
        dtype = torch.promote_types(dtype, s.dtype)
    side = "left" if left else "right"
    ref = pad_sequence([s.to(dtype) for s in samples], batch_first=batch_first,
                       padding_value=value, padding_side=side)
    if multiple:
        T = ref.shape[1 if batch_first else 0]
        extra = -(-T // multiple) * multiple - T
        if extra:
            shape = list(ref.shape)
            shape[1 if batch_first else 0] = extra
            fill = torch.full(shape, value, dtype=dtype)
            parts = [fill, ref] if left else [ref, fill]
            ref = torch.cat(parts, dim=1 if batch_first else 0)
    got = pad_checked_against_pad_flat(samples, batch_first=batch_first, padding_value=value,
                           padding_side=side, pad_to_multiple_of=multiple)
    assert got.dtype == dtype and torch.equal(got, ref)


def pad_checked_against_pad_flat(samples, **kw):
    """fastcollate.pad, checked to have taken the one-call path for this batch."""
    flat = _core.cat_tensors(samples, torch.Tensor, torch.cat, packing._DIRECT_TENSOR_BYTES,
                             4 * packing._CHUNK_BYTES)
    out = fastcollate.pad(samples, **kw)
    if flat is not None:       # the batch the one-call path takes: the same result
        left = kw["padding_side"] == "left"
        elem = fastcollate.padding._pad_element(kw["padding_value"], out.dtype)
        direct = _core.pad_flat(flat[0], flat[1], kw["batch_first"], left, elem,
                                kw["pad_to_multiple_of"] or 1)
        assert torch.equal(torch.from_numpy(direct), out)
    return out


def test_pad_of_small_tensors_is_one_call(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("planned")
    monkeypatch.setattr(fastcollate.padding, "plan_batch", refuse)
    batch = [torch.arange(3), torch.arange(1), torch.arange(2)]
    out, lengths = fastcollate.pad(batch, padding_value=-1, return_lengths=True)
    assert out.tolist() == [[0, 1, 2], [0, -1, -1], [0, 1, -1]] and lengths.tolist() == [3, 1, 2]
    out = fastcollate.pad([torch.ones(2, 3), torch.ones(1, 3, dtype=torch.float64)],
                          batch_first=False)
    assert out.dtype == torch.float64 and out.shape == (2, 2, 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(kinds=["tensor"], dtypes=NUMPY_DTYPES, min_length=0), st.booleans(),
       st.booleans(), st.sampled_from([0, 1, 7]), st.sampled_from([1, 4]), st.booleans())
def test_pad_tensors_reads_large_samples_directly(samples, batch_first, left, value,
                                                  multiple, viewed):
    """Samples averaging ``direct_bytes`` or more are read where they lie and padded in
    the same call (lengths may be 0; views at an offset into a larger storage): equal
    to the padded reference built from NumPy copies."""
    tensors = [torch.cat([s[:1], s])[1:] if viewed and len(s) else s for s in samples]
    elem = fastcollate.padding._pad_element(value, samples[0].dtype)
    got = _core.pad_tensors(tensors, torch.Tensor, torch.cat, 0, 1 << 40,
                            lambda d: (True, elem), batch_first, left, multiple)
    assert got is not None
    out, lengths = got
    arrays = [s.numpy() for s in samples]
    T = -(-max(len(s) for s in samples) // multiple) * multiple
    assert lengths.tolist() == [len(s) for s in samples]
    assert out.ctypes.data % 64 == 0
    want = reference_padded(arrays, T, batch_first, left, np.array(value).astype(out.dtype))
    assert out.shape == want.shape and out.tobytes() == want.tobytes()


def test_pad_of_large_tensors_is_one_call_and_declines_odd_ones(monkeypatch):
    """pad() of tensors averaging 10 KB or more reads them directly, without the plan;
    large strided or mixed-dtype samples go to the plan (which concatenates them)."""
    n = packing._DIRECT_TENSOR_BYTES // 4
    batch = [torch.arange(n, dtype=torch.float32), torch.arange(n // 2, dtype=torch.float32)]
    want = pad_sequence(batch, batch_first=True, padding_value=-1.0)
    real = fastcollate.padding.plan_batch
    planned = []

    def spy(*a, **k):
        planned.append(1)
        return real(*a, **k)
    monkeypatch.setattr(fastcollate.padding, "plan_batch", spy)
    assert torch.equal(fastcollate.pad(batch, padding_value=-1.0), want) and not planned
    for odd in ([batch[0], torch.arange(2.0 * n)[::2]], [batch[0], batch[0].double()]):
        got = fastcollate.pad(odd, padding_value=-1.0)
        assert planned and torch.equal(got, pad_sequence(
            [t.to(got.dtype) for t in odd], batch_first=True, padding_value=-1.0))
        planned.clear()
    def refuse(d):
        return False, None
    assert _core.pad_tensors(batch, torch.Tensor, torch.cat, 0, 1 << 40, refuse) is None


def test_cat_tensors_and_pad_flat_refuse_what_they_cannot_take():
    cat = lambda ts: _core.cat_tensors(ts, torch.Tensor, torch.cat, 4096, 1 << 20)  # noqa: E731
    t = torch.arange(6)
    assert cat([t, t])[1].tolist() == [6, 6]
    assert cat([t, torch.zeros(0)]) is None                  # an empty sample: its row?
    assert cat([t, t.numpy()]) is None
    assert cat([t, t.float().requires_grad_()]) is None       # no NumPy view
    assert cat([torch.tensor(3), torch.tensor(4)]) is None    # zero-dimensional
    assert cat([torch.zeros(1024)]) is None                   # large samples: direct reads
    assert _core.cat_tensors([torch.zeros(1000)] * 8, torch.Tensor, torch.cat, 1 << 20,
                             1000) is None                   # over max_bytes
    assert cat([torch.zeros(2, 3), torch.zeros(2, 4)]) is None   # torch.cat refuses
    src = np.arange(6)
    assert _core.pad_flat(src, np.array([2, 3])) is None      # not all the rows
    assert _core.pad_flat(src, np.array([7, -1])) is None
    assert _core.pad_flat(src[::2], np.array([3])) is None    # not contiguous
    assert _core.pad_flat(src, np.array([4, 2]), True, True)[1].tolist() == [0, 0, 4, 5]


def test_pack_packed_packs_tensors_and_declines_odd_ones_once(monkeypatch):
    small = [torch.arange(3), torch.arange(5), torch.arange(1)]
    p = _core.pack_packed(small)
    assert type(p) is PackedSequence and p.data.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4]
    assert p.sorted_indices.tolist() == [1, 0, 2]
    large = [torch.arange(2000), torch.arange(1000)]      # 8 KB samples: read directly
    p = _core.pack_packed(large)
    assert type(p) is PackedSequence and p.data[:5].tolist() == [0, 0, 1, 1, 2]
    large = [torch.arange(4000)[::2], torch.arange(1000)]   # strided: the planned path
    assert _core.pack_packed(large) is None
    assert _core.pack_packed([torch.arange(3).float().requires_grad_()]) is None
    calls = []
    real = packing.packed_in_one_call
    monkeypatch.setattr(packing, "packed_in_one_call",
                        lambda *a: calls.append(1) or real(*a))
    q = fastcollate.pack(large)          # pack_packed declined it: not asked again
    assert calls == [] and q.data[:4].tolist() == [0, 0, 2, 1]


def test_pack_of_tensors_under_a_torch_function_mode_takes_the_general_path():
    seen = []
    real = packing._pack

    def spy(*a, **k):
        seen.append(a[4] if len(a) > 4 else False)
        return real(*a, **k)
    packing._pack = spy
    try:
        with torch.device("cpu"):
            p = fastcollate.pack([torch.arange(3), torch.arange(2)])
    finally:
        packing._pack = real
    assert seen == [False] and p.data.tolist() == [0, 0, 1, 1, 2]


def test_patched_tensor_attributes_are_read_the_new_way(monkeypatch):
    """The direct read's attribute readers are built once per tensor type; patching an
    attribute of torch.Tensor (a new version tag for the type) must rebuild them, or
    the patch would be bypassed."""
    batch = [torch.arange(4096.0), torch.arange(3000.0)]   # 14 KB per sample: direct
    want = torch.nn.utils.rnn.pack_sequence(batch, enforce_sorted=False)
    fastcollate.pack(batch)                                 # builds the readers
    calls = []
    real = torch.Tensor.storage_offset

    def counted(self):
        calls.append(1)
        return real(self)
    monkeypatch.setattr(torch.Tensor, "storage_offset", counted)
    got = fastcollate.pack(batch)
    assert len(calls) == 2
    assert torch.equal(got.data, want.data) and torch.equal(got.batch_sizes, want.batch_sizes)
    monkeypatch.undo()
    calls.clear()
    assert torch.equal(fastcollate.pack(batch).data, want.data) and not calls
