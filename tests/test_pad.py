"""pad(): equal to torch's pad_sequence where their options overlap."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence

import fastcollate
from strategies import ALL_DTYPES, batches, expected_dtype, to_tensor

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(batches(min_length=0), st.booleans(), st.sampled_from(["right", "left"]),
       st.sampled_from([0, 1, -3]))
def test_pad_equals_pad_sequence(samples, batch_first, side, value):
    if all(len(s) == 0 for s in samples):
        samples = samples + [torch.zeros((1,) + tuple(to_tensor(samples[0]).shape[1:]),
                                         dtype=to_tensor(samples[0]).dtype)]
    dtype = expected_dtype(samples)
    try:
        ref = pad_sequence([to_tensor(s).to(dtype) for s in samples],
                           batch_first=batch_first, padding_value=value, padding_side=side)
    except RuntimeError:          # a padding value the dtype cannot hold (-3 in uint8)
        with pytest.raises(OverflowError, match="padding_value"):
            fastcollate.pad(samples, batch_first=batch_first, padding_value=value,
                            padding_side=side)
        return
    out = fastcollate.pad(samples, batch_first=batch_first, padding_value=value,
                          padding_side=side)
    assert out.dtype == dtype
    assert torch.equal(out, ref)


@SETTINGS
@given(batches(kinds=["tensor", "ndarray", "list"]), st.integers(1, 16), st.booleans())
def test_pad_to_multiple_of_and_lengths(samples, multiple, batch_first):
    out, lengths = fastcollate.pad(samples, pad_to_multiple_of=multiple,
                                   return_lengths=True, batch_first=batch_first)
    longest = max(len(s) for s in samples)
    T = out.shape[1] if batch_first else out.shape[0]
    assert T % multiple == 0 and longest <= T < longest + multiple
    assert lengths.tolist() == [len(s) for s in samples]
    ref = pad_sequence([to_tensor(s).to(out.dtype) for s in samples], batch_first=True)
    view = out if batch_first else out.transpose(0, 1)
    assert torch.equal(view[:, :longest], ref)
    assert not view[:, longest:].any()


@SETTINGS
@given(batches(kinds=["list"], dtypes=[torch.int64]), st.sampled_from(ALL_DTYPES))
def test_pad_lists_with_explicit_dtype(samples, dtype):
    out = fastcollate.pad(samples, dtype=dtype, padding_value=1)
    ref = pad_sequence([torch.tensor(s).to(dtype) for s in samples], batch_first=True,
                       padding_value=1)
    assert torch.equal(out, ref)


def test_pad_float_padding_value_in_a_float_batch():
    out = fastcollate.pad([np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)],
                          padding_value=-0.5)
    assert out[1, 1].tolist() == [-0.5, -0.5, -0.5]


def test_pad_backpropagates():
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(1, 2, requires_grad=True)
    out = fastcollate.pad([a, b], padding_side="left")
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    ref_a, ref_b = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ref = pad_sequence([ref_a, ref_b], batch_first=True, padding_side="left")
    (ref * torch.arange(ref.numel()).view_as(ref)).sum().backward()
    assert torch.equal(a.grad, ref_a.grad) and torch.equal(b.grad, ref_b.grad)


def test_pad_errors_name_the_sample():
    with pytest.raises(ValueError, match="sample 1: has shape"):
        fastcollate.pad([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="padding_side"):
        fastcollate.pad([[1]], padding_side="middle")
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        fastcollate.pad([[1]], pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="empty batch"):
        fastcollate.pad([])
    with pytest.raises(OverflowError, match="padding_value -1 does not fit torch.uint8"):
        fastcollate.pad([np.ones(2, np.uint8), np.ones(1, np.uint8)], padding_value=-1)
    with pytest.raises(OverflowError, match="padding_value -200 does not fit torch.int8"):
        fastcollate.pad([[1.5, 2.5], [3.5]], dtype=torch.int8, padding_value=-200)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.int64, np.complex128])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("B", [2, 17, 40])
@pytest.mark.parametrize("offset", [0, 1])
def test_time_major_padding_of_narrow_rows_equals_torch(dtype, side, B, offset):
    """Groups of 16 samples in input order: their common steps through the register
    transposes (with left padding each source starts L - min(L) rows in), the rest one
    slot at a time, the padding filled a step at a time; sources at odd addresses
    too. Lengths spread so that every group has common steps and a remainder."""
    rng = np.random.default_rng(B * 10 + offset)
    lengths = [int(n) for n in rng.integers(1, 90, size=B)]
    itemsize = np.dtype(dtype).itemsize
    buf = np.zeros(sum(lengths) * itemsize + B * offset + 16, dtype=np.uint8)
    samples, at = [], offset
    for n in lengths:
        raw = rng.integers(0, 100, size=n).astype(dtype).view(np.uint8)
        buf[at:at + n * itemsize] = raw
        samples.append(buf[at:at + n * itemsize].view(dtype))
        at += n * itemsize + offset
    tensors = [torch.from_numpy(s.copy()) for s in samples]
    got = fastcollate.pad(samples, batch_first=False, padding_side=side, padding_value=7)
    want = pad_sequence(tensors, batch_first=False, padding_side=side, padding_value=7)
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("B", [16, 35])
def test_time_major_padding_of_groups_with_long_common_steps_equals_torch(dtype, side, B):
    """Groups of 16 whose shortest sample has >= 16 steps, so that 1-byte rows go
    through the 16 x 16 register transposes too, with the rest of each group written
    step by step (the longest first: one long sample among short ones, as in a long
    tail), and empty samples in the last group."""
    rng = np.random.default_rng(B)
    lengths = [int(n) for n in rng.integers(16, 90, size=B)]
    lengths[3] = 700
    lengths[-1] = 0
    samples = [rng.integers(0, 100, size=n).astype(dtype) for n in lengths]
    tensors = [torch.from_numpy(s) for s in samples]
    got = fastcollate.pad(samples, batch_first=False, padding_side=side, padding_value=7)
    want = pad_sequence(tensors, batch_first=False, padding_side=side, padding_value=7)
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("row", [(4,), (20,), (80,), (33,)])
@pytest.mark.parametrize("side", ["right", "left"])
def test_time_major_padding_of_wide_rows_equals_torch(row, side):
    """Rows of 16 bytes and wider in tiles of steps x samples; the outputs are over 1 MB,
    so rows of >= 64 bytes (multiples of 16) are stored non-temporally, 132-byte rows
    (not a multiple of 16) are not."""
    rng = np.random.default_rng(row[0])
    lengths = [int(n) for n in rng.integers(1, 1200, size=21 if row[0] >= 20 else 120)]
    samples = [rng.standard_normal((n,) + row).astype(np.float32) for n in lengths]
    tensors = [torch.from_numpy(s) for s in samples]
    got = fastcollate.pad(samples, batch_first=False, padding_side=side, padding_value=-2.5)
    want = pad_sequence(tensors, batch_first=False, padding_side=side, padding_value=-2.5)
    assert got.nbytes >= 1 << 20
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("offset", [0, 4])
@pytest.mark.parametrize("stream", [0, 2])
@pytest.mark.parametrize("row_bytes", [16, 128])
def test_time_major_pad_scatter_of_wide_rows_skips_null_sources(offset, stream, row_bytes):
    """pad_scatter into a caller's buffer (at a 16-byte aligned address, or 4 bytes off
    it: no non-temporal stores there): a sample given as address 0 only gets its
    padding (left padding: its rows start past step 0), every other row is the
    reference's."""
    from fastcollate import _core
    rng = np.random.default_rng(offset + stream)
    lengths = [int(n) for n in rng.integers(0, 300, size=9)]
    T = max(lengths)
    samples = [rng.integers(0, 256, size=(n, row_bytes), dtype=np.uint8) for n in lengths]
    ptrs = [s.ctypes.data if i != 2 else 0 for i, s in enumerate(samples)]
    buf = np.full(T * len(lengths) * row_bytes + 64, 0xEE, dtype=np.uint8)
    start = (-buf.ctypes.data) % 16 + offset
    out = buf[start:start + T * len(lengths) * row_bytes].reshape(T, len(lengths), row_bytes)
    pattern = bytes([1, 2, 3, 4])
    _core.pad_scatter(ptrs, lengths, T, row_bytes, out.ctypes.data, batch_first=False,
                      left=True, pad_row=pattern, stream=stream)
    want = np.tile(np.frombuffer(pattern, np.uint8), row_bytes // 4)
    want = np.broadcast_to(want, out.shape).copy()
    for i, s in enumerate(samples):
        if i == 2:
            want[T - len(s):, i] = 0xEE      # its data rows are left as they were
        elif len(s):
            want[T - len(s):, i] = s
    np.testing.assert_array_equal(out, want)
    assert (buf[:start] == 0xEE).all() and (buf[start + out.nbytes:] == 0xEE).all()


@st.composite
def _narrow_time_major_cases(draw):
    """Batches for the time-major kernel of 1-8 byte rows: lengths spread (tiles a
    sample's data starts or ends inside), long-tailed (groups with data in a few
    samples only) or equal; B across the groups of 16; T across the 16-step tiles."""
    row_bytes = draw(st.sampled_from([1, 2, 4, 8]))
    B = draw(st.integers(1, 70))
    shape = draw(st.sampled_from(["spread", "tail", "equal", "tiny"]))
    hi = draw(st.integers(1, 90))
    lengths = draw(st.lists(st.integers(0, {"tiny": 3}.get(shape, hi)), min_size=B,
                            max_size=B))
    if shape == "tail":
        lengths = [min(n, 20) for n in lengths]
        for i in draw(st.lists(st.integers(0, B - 1), max_size=3)):
            lengths[i] = draw(st.integers(40, 200))
    elif shape == "equal":
        lengths = [hi] * B
    if not any(lengths):
        lengths[0] = 1
    pad = draw(st.one_of(st.none(), st.binary(min_size=row_bytes, max_size=row_bytes)))
    return row_bytes, lengths, draw(st.booleans()), pad, draw(st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(_narrow_time_major_cases())
def test_time_major_pad_of_narrow_rows_equals_the_reference(case):
    """The tiled time-major kernel (register transposes over whole tiles, staged
    samples whose data starts or ends in a tile, runs of padding, sparse groups written
    element by element) against a slot-by-slot reference, into a buffer with guard
    bytes on both sides (a write outside the output shows up there); sources at odd
    addresses too."""
    from fastcollate import _core
    row_bytes, lengths, left, pad, offset = case
    rng = np.random.default_rng(len(lengths) * 7 + offset)
    B, T = len(lengths), max(lengths)
    blob = rng.integers(0, 256, size=sum(lengths) * row_bytes + offset, dtype=np.uint8)
    samples, at = [], offset
    for n in lengths:
        samples.append(blob[at:at + n * row_bytes].reshape(n, row_bytes))
        at += n * row_bytes
    want = np.empty((T, B, row_bytes), np.uint8)
    want[:] = np.frombuffer(pad, np.uint8) if pad is not None else 0
    for i, s in enumerate(samples):
        for t in range(len(s)):
            want[(T - len(s) + t) if left else t, i] = s[t]
    guard = 64
    buf = np.full(T * B * row_bytes + 2 * guard, 0xA5, np.uint8)
    ptrs = [s.ctypes.data if len(s) else blob.ctypes.data for s in samples]
    _core.pad_scatter(ptrs, lengths, T, row_bytes, buf.ctypes.data + guard,
                      batch_first=False, left=left, pad_row=pad)
    assert (buf[:guard] == 0xA5).all() and (buf[-guard:] == 0xA5).all()
    np.testing.assert_array_equal(buf[guard:-guard].reshape(T, B, row_bytes), want)
