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
from fastcollate import _cast
from fastcollate.packing import _CAST_CODES, plan_batch

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
    samples = [torch.arange(3000, dtype=torch.int32), torch.arange(2000, dtype=torch.int32)]
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
