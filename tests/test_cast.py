"""Unsigned NumPy dtypes, and dtype= conversions done inside the copy.

uint16/uint32/uint64 arrays (token ids are often stored as uint16) pack and pad natively
(torch has those dtypes). With ``dtype=`` asking for a wider type that holds every value
(uint16 -> int64, int32 -> float64...), each element is converted as it is copied from
the sample into its final place: the plan reads the samples' own memory
(``plan.cast_from``), no array of the target dtype is made in between. Results are
compared with torch (``.to(dtype)`` per sample, then torch's pack/pad).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_sequence, pad_sequence, unpack_sequence

import fastcollate
from fastcollate import _cast, packing
from fastcollate.packing import _CAST_CODES, plan_batch
from reference import reference_pack

CODE_DTYPE = {code: dtype for dtype, code in _CAST_CODES.items()}
PAIRS = sorted(((CODE_DTYPE[s], CODE_DTYPE[d]) for s, d in _cast.LOSSLESS), key=str)
NP = {torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16,
      torch.uint16: np.uint16, torch.int32: np.int32, torch.uint32: np.uint32,
      torch.float32: np.float32}


def extreme_samples(np_dtype, lengths, row=(), seed=0):
    """Samples holding the dtype's extremes (the values a lossy cast would change)."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        values = np.array([info.min, info.max, 0, 1, info.max - 1], dtype=np_dtype)
    else:
        values = np.array([np.finfo(np_dtype).max, -np.finfo(np_dtype).tiny, 0.1, -3.5],
                          dtype=np_dtype)
    return [rng.choice(values, size=(n,) + row) for n in lengths]


def torch_reference(samples, dtype):
    return [torch.from_numpy(np.ascontiguousarray(s)).to(dtype) for s in samples]


@pytest.mark.parametrize("np_dtype", [np.uint16, np.uint32, np.uint64])
def test_unsigned_arrays_pack_and_pad_natively(np_dtype):
    samples = extreme_samples(np_dtype, [3, 1, 2])
    tensors = [torch.from_numpy(s) for s in samples]
    packed = fastcollate.pack(samples)
    assert packed.data.dtype == tensors[0].dtype
    assert torch.equal(packed.data.to(torch.float64),       # (torch.equal: no uint64 kernel)
                       pack_sequence(tensors, enforce_sorted=False).data.to(torch.float64))
    padded = fastcollate.pad(samples, batch_first=False)
    assert padded.dtype == tensors[0].dtype
    assert torch.equal(padded.to(torch.float64), pad_sequence(tensors).to(torch.float64))


@pytest.mark.parametrize("src,dst", PAIRS, ids=str)
def test_exact_conversions_happen_inside_the_copy(src, dst):
    samples = extreme_samples(NP[src], [4, 1, 3, 3], row=(2,))
    plan = plan_batch(samples, dtype=dst)
    assert plan.cast_from == src and plan.dtype == dst
    assert list(plan.ptrs) == [s.ctypes.data for s in samples]     # the samples' memory
    ref = torch_reference(samples, dst)
    assert torch.equal(fastcollate.pack(samples, dtype=dst).data,
                       pack_sequence(ref, enforce_sorted=False).data)
    assert torch.equal(fastcollate.pad(samples, dtype=dst, padding_value=7),
                       pad_sequence(ref, batch_first=True, padding_value=7))


def test_the_issue_case_uint16_token_ids_to_int64():
    ids = [np.array([5, 65535, 7], dtype=np.uint16), np.array([1], dtype=np.uint16)]
    packed = fastcollate.pack(ids, dtype=torch.int64)
    assert packed.data.dtype == torch.int64 and packed.data.tolist() == [5, 1, 65535, 7]
    padded = fastcollate.pad(ids, dtype=torch.int64, padding_value=-100)
    assert padded.tolist() == [[5, 65535, 7], [1, -100, -100]]


@settings(max_examples=40, deadline=None)
@given(pair=st.sampled_from(PAIRS), seed=st.integers(0, 2**16),
       lengths=st.lists(st.integers(1, 12), min_size=1, max_size=24),
       row=st.sampled_from([(), (3,), (2, 2)]),
       kind=st.sampled_from(["ndarray", "tensor", "tensor_large"]),
       batch_first=st.booleans(), left=st.booleans())
def test_converted_batches_equal_torch(pair, seed, lengths, row, kind, batch_first, left):
    src, dst = pair
    if kind == "tensor_large":          # big enough to be read in place, sample by sample
        lengths = [n + 4096 // NP[src]().itemsize for n in lengths]
    samples = extreme_samples(NP[src], lengths, row, seed)
    if kind != "ndarray":
        samples = [torch.from_numpy(s) for s in samples]
    ref = torch_reference(samples, dst)
    packed = fastcollate.pack(samples, dtype=dst)
    # torch orders ties its own way: compare sample by sample
    assert packed.data.dtype == dst
    for ours, theirs in zip(unpack_sequence(packed), ref):
        assert torch.equal(ours, theirs)
    assert torch.equal(packed.batch_sizes,
                       pack_sequence(ref, enforce_sorted=False).batch_sizes)
    side = "left" if left else "right"
    assert torch.equal(
        fastcollate.pad(samples, dtype=dst, batch_first=batch_first, padding_side=side),
        pad_sequence(ref, batch_first=batch_first, padding_side=side))


@pytest.mark.parametrize("src,dst", [(torch.uint32, torch.int16), (torch.int64, torch.int32),
                                     (torch.float64, torch.float32),
                                     (torch.uint16, torch.float16)])
def test_conversions_that_change_values_take_the_general_path_like_torch(src, dst):
    samples = [torch.arange(70000, 70004).to(src), torch.tensor([3]).to(src)]
    assert plan_batch(samples, dtype=dst).cast_from is None
    ref = [s.to(dst) for s in samples]
    assert torch.equal(fastcollate.pack(samples, dtype=dst).data,
                       pack_sequence(ref, enforce_sorted=False).data)


def test_collate_dtype_option_converts_in_the_copy():
    samples = [(np.array([1, 2, 3], dtype=np.uint16), 0), (np.array([4], dtype=np.uint16), 1)]
    packed, labels = fastcollate.PackedCollate(dtype={0: torch.int64})(samples)
    assert packed.data.dtype == torch.int64 and packed.data.tolist() == [1, 4, 2, 3]


def test_a_storage_resized_after_planning_is_refused():
    samples = [torch.arange(6000, dtype=torch.int32), torch.arange(4000, dtype=torch.int32)]
    plan = plan_batch(samples, dtype=torch.int64)
    assert plan.cast_from == torch.int32 and plan.storages is not None
    samples[0].resize_(100000)          # its storage moves: the planned address dangles
    with pytest.raises(ValueError, match="sample 0: its storage was resized"):
        fastcollate.kernels.write_plan(plan, torch.empty(plan.shape, dtype=plan.dtype))


def _buffers():
    a = np.array([1, 2, 3], dtype=np.uint16)
    return a, np.zeros(4, dtype=np.int64)


@pytest.mark.parametrize("kwargs,match", [
    ({"src_code": "q", "dst_code": "i"}, "no exact conversion"),
    ({"src_code": "H", "dst_code": "h"}, "no exact conversion"),
    ({"starts": [2]}, "outside the output"),
    ({"starts": [-1]}, "outside the output"),
    ({"lengths": [4]}, r"length 4, outside 0..3"),
    ({"offsets": [0, 2, 1]}, "non-decreasing"),
    ({"src_ptrs": [0]}, "no address"),
    ({"starts": [0, 1]}, "differ in size"),
])
def test_cast_scatter_checks_every_write_before_copying(kwargs, match):
    a, out = _buffers()
    args = dict(src_ptrs=[a.ctypes.data], lengths=[3], starts=[0], offsets=[0, 1, 2],
                row_elems=1, src_code="H", dst_code="q", out_ptr=out.ctypes.data,
                n_out_rows=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _cast.cast_scatter(**args)
    assert not out.any()            # nothing written


@pytest.mark.parametrize("kind", ["tensor", "ndarray"])
def test_rows_of_zero_elements_convert_like_torch(kind):
    """Rows of shape (0,) hold no data (an empty tensor's address is 0): converting
    them must give torch's empty result, not refuse the batch (found by the pad fuzz
    target under the sanitizer)."""
    x = torch.zeros((600, 0), dtype=torch.uint8)
    batch = [x if kind == "tensor" else x.numpy(), x[:3] if kind == "tensor" else x[:3].numpy()]
    p = fastcollate.pad(batch, dtype=torch.int16)
    assert p.shape == (2, 600, 0) and p.dtype == torch.int16
    q = fastcollate.pack(batch, dtype=torch.int16)
    assert q.data.shape == (603, 0) and q.data.dtype == torch.int16
    assert q.batch_sizes.tolist() == [2] * 3 + [1] * 597


@settings(max_examples=150, deadline=None)
@given(pair=st.sampled_from(sorted(_cast.LOSSLESS)), seed=st.integers(0, 2**16),
       lengths=st.lists(st.integers(0, 70), min_size=1, max_size=40),
       row_elems=st.sampled_from([1, 2, 3, 5]),
       layout=st.sampled_from(["packed", "time-major", "spread", "reversed", "batch-first",
                               "left", "shifted-run"]))
def test_cast_scatter_in_every_layout_equals_the_plain_loop(pair, seed, lengths,
                                                            row_elems, layout):
    """Placement by starts and offsets: ranks (a permutation), sample order, starts
    that are no permutation (spread out, or in reverse order), consecutive offsets
    (batch-first padding, right or left; a run that starts past row 0: one widening
    loop per sample), zero-length samples skipped."""
    src_code, dst_code = pair
    np_src = np.dtype(src_code)
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(lengths) or 1
    samples = [rng.integers(0, 100, size=(n, row_elems)).astype(np_src) for n in lengths]
    if layout == "packed":
        order = sorted(range(B), key=lambda i: -lengths[i])
        starts = np.empty(B, np.int64)
        starts[order] = np.arange(B)
        bs = [sum(n > t for n in lengths) for t in range(T)]
        offsets = np.concatenate([[0], np.cumsum(bs)[:-1]]).astype(np.int64)
        n_rows = sum(lengths)
    elif layout in ("batch-first", "left", "shifted-run"):
        run = T + (layout == "shifted-run")
        starts = np.arange(B, dtype=np.int64) * run
        if layout == "left":
            starts += T - np.array(lengths, dtype=np.int64)
        offsets = np.arange(T, dtype=np.int64) + (layout == "shifted-run")
        n_rows = B * run
    else:
        starts = np.arange(B, dtype=np.int64)
        if layout == "spread":
            starts *= 2
        elif layout == "reversed":
            starts = starts[::-1].copy()
        offsets = np.arange(T, dtype=np.int64) * 2 * B
        n_rows = 2 * B * T
    out = np.full((n_rows, row_elems), -7, dtype=np.dtype(dst_code))
    ptrs = [s.ctypes.data if n else 0 for s, n in zip(samples, lengths)]
    _cast.cast_scatter(ptrs, lengths, starts, offsets, row_elems, src_code, dst_code,
                       out.ctypes.data, n_rows)
    want = np.full_like(out, -7)
    for s, n, start in zip(samples, lengths, starts):
        for t in range(n):
            want[start + offsets[t]] = s[t]
    np.testing.assert_array_equal(out, want)


@settings(max_examples=150, deadline=None)
@given(pair=st.sampled_from(sorted(_cast.LOSSLESS)), seed=st.integers(0, 2**16),
       lengths=st.lists(st.integers(1, 150), min_size=1, max_size=40),
       row_elems=st.sampled_from([1, 2, 3, 8]), chunk_bytes=st.sampled_from([1, 7, 64, 4096,
                                                                               1 << 20]),
       offset=st.sampled_from([0, 1]))
def test_cast_pack_equals_the_packed_reference(pair, seed, lengths, row_elems, chunk_bytes,
                                              offset):
    """Chunks of steps from one step to the whole batch, sources at aligned and odd
    addresses: every element lands converted at its packed place."""
    src_code, dst_code = pair
    rng = np.random.default_rng(seed)
    np_src = np.dtype(src_code)
    buf = rng.integers(0, 100, size=sum(lengths) * row_elems * np_src.itemsize
                       + len(lengths) + 8, dtype=np.uint8)
    samples, at = [], offset
    for n in lengths:
        nb = n * row_elems * np_src.itemsize
        samples.append(buf[at:at + nb].view(np.uint8))
        at += nb + offset
    values = [np.frombuffer(s.tobytes(), np_src).reshape(n, row_elems)
              for s, n in zip(samples, lengths)]
    bs, order, _ = fastcollate.kernels.sort_lengths(lengths)
    out = np.full((sum(lengths), row_elems), -7, dtype=np.dtype(dst_code))
    _cast.cast_pack([s.ctypes.data for s in samples], lengths, order, bs, row_elems,
                    src_code, dst_code, out.ctypes.data, out.shape[0],
                    chunk_bytes=chunk_bytes)
    want = np.concatenate([np.stack([values[i][t] for i in order if lengths[i] > t])
                           for t in range(max(lengths))]).astype(np.dtype(dst_code))
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("tamper, match", [
    ("order_dup", "permutation"), ("order_oob", "permutation"), ("bs", "batch_sizes"),
    ("bs_short", "steps"), ("unsorted", "non-increasing"), ("zero", "non-increasing"),
    ("small_out", "holds"), ("no_address", "address"), ("pair", "exact")])
def test_cast_pack_checks_every_table_before_writing(tamper, match):
    lengths = [3, 5, 1, 5]
    samples = [np.arange(n, dtype=np.uint16) for n in lengths]
    bs, order, _ = fastcollate.kernels.sort_lengths(lengths)
    ptrs, order, bs = [s.ctypes.data for s in samples], order.tolist(), bs.tolist()
    n_out, codes = sum(lengths), ("H", "q")
    if tamper == "order_dup":
        order[1] = order[0]
    elif tamper == "order_oob":
        order[0] = 9
    elif tamper == "bs":
        bs[1] += 1
    elif tamper == "bs_short":
        bs = bs[:-1]
    elif tamper == "unsorted":
        order = [0, 1, 2, 3]
    elif tamper == "zero":
        lengths = [3, 5, 0, 5]
    elif tamper == "small_out":
        n_out -= 1
    elif tamper == "no_address":
        ptrs[0] = 0
    elif tamper == "pair":
        codes = ("q", "H")
    out = np.full(sum(lengths) + 8, -7, dtype=np.int64)
    with pytest.raises(ValueError, match=match):
        _cast.cast_pack(ptrs, lengths, order, bs, 1, *codes, out.ctypes.data, n_out)
    assert (out == -7).all()


# ---------------------------------------------------------------------------------------
# pack(arrays, dtype=) in one call: _cast.pack_arrays_cast
# ---------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(pair=st.sampled_from(sorted(_cast.LOSSLESS)), seed=st.integers(0, 2**16),
       lengths=st.lists(st.integers(1, 150), min_size=1, max_size=40),
       row=st.sampled_from([(), (3,), (2, 2)]),
       chunk_bytes=st.sampled_from([1, 7, 64, 4096, _cast.CAST_CHUNK_BYTES]),
       enforce_sorted=st.booleans())
def test_pack_arrays_cast_equals_the_packed_reference(pair, seed, lengths, row, chunk_bytes,
                                                      enforce_sorted):
    src_code, dst_code = pair
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    samples = extreme_samples(np.dtype(src_code), lengths, row, seed)
    got = _cast.pack_arrays_cast(samples, enforce_sorted, np.dtype(dst_code),
                                 chunk_bytes=chunk_bytes)
    assert got is not None
    data, bs, si, ui = got
    want, want_bs, want_si, want_ui = reference_pack(
        torch_reference(samples, CODE_DTYPE[dst_code]), enforce_sorted)
    assert data.dtype == np.dtype(dst_code) and data.flags.c_contiguous
    assert data.ctypes.data % 64 == 0
    np.testing.assert_array_equal(data, want.numpy())
    assert bs.tolist() == want_bs
    assert (si is None if enforce_sorted else si.tolist() == want_si)
    assert (ui is None if enforce_sorted else ui.tolist() == want_ui)


def test_pack_with_a_dtype_of_plain_arrays_is_one_call(monkeypatch):
    """pack(arrays, dtype=) never plans when the arrays convert exactly, or are of that
    dtype already."""
    def refuse(*a, **k):
        raise AssertionError("planned")
    monkeypatch.setattr(packing, "plan_batch", refuse)
    ids = [np.array([5, 65535, 7], np.uint16), np.array([1], np.uint16)]
    p = fastcollate.pack(ids, dtype=torch.int64)
    assert p.data.dtype == torch.int64 and p.data.tolist() == [5, 1, 65535, 7]
    assert p.batch_sizes.tolist() == [2, 1, 1] and p.sorted_indices.tolist() == [0, 1]
    p = fastcollate.pack(tuple(ids), dtype=torch.float32, enforce_sorted=True)
    assert p.data.dtype == torch.float32 and p.sorted_indices is None
    p = fastcollate.pack([a.astype(np.int64) for a in ids], dtype=torch.int64)
    assert p.data.dtype == torch.int64 and p.data.tolist() == [5, 1, 65535, 7]


def _odd_cast_batches():
    a = np.arange(12, dtype=np.uint16).reshape(6, 2)
    return {
        "a list": ([a, [[1, 2]]], np.int64),
        "a tensor": ([a, torch.zeros(2, 2, dtype=torch.uint16)], np.int64),
        "another dtype": ([a, a.astype(np.uint8)], np.int64),
        "another row": ([a, np.zeros((2, 3), np.uint16)], np.int64),
        "zero-dimensional": ([np.array(3, np.uint16)], np.int64),
        "not contiguous": ([a, a[::2]], np.int64),
        "byte-swapped": ([a, a.astype(">u2")], np.int64),
        "a lossy conversion": ([a.astype(np.int32)], np.float32),
        "a narrowing": ([a.astype(np.int64)], np.int32),
        "the same dtype": ([a], np.uint16),
        "bool sources": ([a.astype(bool)], np.int64),
        "a big-endian target": ([a], ">i8"),
        "a dtype torch lacks": ([a], np.longdouble),
    }


@pytest.mark.parametrize("name", list(_odd_cast_batches()))
def test_pack_arrays_cast_returns_none_for_anything_unusual(name):
    batch, dtype = _odd_cast_batches()[name]
    assert _cast.pack_arrays_cast(batch, False, np.dtype(dtype)) is None
    assert _cast.pack_arrays_cast(batch, False, "int64") is None    # not a np.dtype
    assert _cast.pack_arrays_cast([], False, np.dtype(np.int64)) is None


@pytest.mark.parametrize("name", ["another dtype", "not contiguous", "byte-swapped",
                                  "a lossy conversion", "bool sources"])
def test_pack_with_a_dtype_of_unusual_arrays_still_equals_torch(name):
    batch, _ = _odd_cast_batches()[name]
    dst = torch.float32 if name == "a lossy conversion" else torch.int64
    ref = [torch.from_numpy(np.ascontiguousarray(s).astype(s.dtype.newbyteorder("="))
                            ).to(dst) for s in batch]
    got = fastcollate.pack(batch, dtype=dst)
    assert got.data.dtype == dst
    for ours, theirs in zip(unpack_sequence(got), ref):
        assert torch.equal(ours, theirs)


def test_pack_arrays_cast_names_a_zero_length_or_unsorted_sample():
    ids = [np.arange(3, dtype=np.uint16), np.arange(0, dtype=np.uint16)]
    with pytest.raises(ValueError, match="sample 1 has length 0"):
        _cast.pack_arrays_cast(ids, False, np.dtype(np.int64))
    with pytest.raises(ValueError, match="sample 1 has length 0"):
        fastcollate.pack(ids, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="enforce_sorted=True but sample 1"):
        fastcollate.pack(ids[:1] + [np.arange(4, dtype=np.uint16)], dtype=torch.int64,
                         enforce_sorted=True)


def test_pack_arrays_cast_of_rows_of_zero_elements():
    batch = [np.zeros((3, 0), np.uint8), np.zeros((1, 0), np.uint8)]
    data, bs, si, _ = _cast.pack_arrays_cast(batch, False, np.dtype(np.int16))
    assert data.shape == (4, 0) and data.dtype == np.int16 and bs.tolist() == [2, 1, 1]
    assert fastcollate.pack(batch, dtype=torch.int16).data.shape == (4, 0)
