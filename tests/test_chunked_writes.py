"""Deferred tensor plans: large batches of small tensors written a chunk at a time.

``plan_batch(defer_tensors=True)`` plans such a batch from its shapes alone; the write
(``write_plan``, ``write_padded``) concatenates and scatters it a chunk of samples at a
time (``_core.pack_chunks_into``/``pad_chunks_into``), so no concatenation of the whole
batch sits beside the output (tests/test_memory.py measures that). Here the chunks are
made tiny (``packing._CHUNK_BYTES``) so that small random batches take that path, and
every result is compared with torch's own functions or the plain reference.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence

import fastcollate
from fastcollate import _core, packing, rnn
from fastcollate.padding import write_padded
from reference import reference_pack
from strategies import NUMPY_DTYPES, ROWS, expected_dtype, make_sample


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch):
    """Chunks of 48 bytes: batches over 192 bytes are planned for chunked writes."""
    monkeypatch.setattr(packing, "_CHUNK_BYTES", 48)


@st.composite
def small_tensor_batches(draw, min_length=1, mixed=False):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B = draw(st.integers(1, 60))
    lengths = rng.integers(min_length, draw(st.integers(min_length + 1, 40)), size=B)
    row = draw(st.sampled_from(ROWS))
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    samples = [make_sample(rng, int(n), row, dtype) for n in lengths]
    if mixed and B > 1:         # a later sample of another dtype: promotes in its chunk
        other = draw(st.sampled_from(NUMPY_DTYPES))
        i = int(rng.integers(1, B))
        samples[i] = samples[i].to(other) if not (
            samples[i].is_complex() and not other.is_complex) else samples[i]
    return samples


def _takes_chunks(samples) -> bool:
    """Deferred: over four chunks of small samples (contiguous samples averaging
    ``_DIRECT_TENSOR_BYTES`` or more are read directly, with no concatenation)."""
    nbytes = sum(s.numel() * s.element_size() for s in samples)
    return (nbytes > 4 * packing._CHUNK_BYTES
            and nbytes < packing._DIRECT_TENSOR_BYTES * len(samples))


def _deferred(samples, **kw):
    return packing.plan_batch(samples, defer_tensors=True, **kw)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tensor_batches(), st.booleans())
def test_packed_chunks_equal_the_reference(samples, enforce_sorted):
    _check_packed_chunks(samples, enforce_sorted)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tensor_batches(), st.booleans())
def test_packed_chunks_written_in_panels_equal_the_reference(samples, enforce_sorted):
    """The panel kernel (large outputs), forced here: each chunk is a slice of ranks
    written at the whole batch's step offsets."""
    old = _core.panel_min_bytes(0)
    try:
        _check_packed_chunks(samples, enforce_sorted)
    finally:
        _core.panel_min_bytes(old)


def _check_packed_chunks(samples, enforce_sorted):
    if enforce_sorted:
        samples = sorted(samples, key=lambda s: -s.shape[0])
    plan = _deferred(samples, enforce_sorted=enforce_sorted)
    assert (plan.tensors is not None) == _takes_chunks(samples)
    out = torch.empty(plan.shape, dtype=plan.dtype)
    packing.write_plan(plan, out)
    want, bs, si, ui = reference_pack(samples, enforce_sorted)
    assert out.dtype == want.dtype and torch.equal(out, want)
    p = packing.wrap_packed(out, plan)
    assert p.batch_sizes.tolist() == bs
    if not enforce_sorted:
        assert p.sorted_indices.tolist() == si and p.unsorted_indices.tolist() == ui
    # the public entry points that take this path agree with torch
    got = fastcollate.pack(samples, enforce_sorted=enforce_sorted, dtype=samples[0].dtype)
    assert torch.equal(got.data, want)
    ref = torch.nn.utils.rnn.pack_sequence(samples, enforce_sorted=enforce_sorted)
    mine = rnn.pack_sequence(samples, enforce_sorted=enforce_sorted)
    for a, b in zip(mine, ref):
        assert (a is None and b is None) or torch.equal(a, b)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tensor_batches(min_length=0), st.booleans(), st.sampled_from(["right", "left"]),
       st.sampled_from([0, 1, 7]), st.sampled_from([None, 8]))
def test_padded_chunks_equal_torch(samples, batch_first, side, value, multiple):
    assert (_deferred(samples, sort=False).tensors is not None) == _takes_chunks(samples)
    want = pad_sequence(samples, batch_first=batch_first, padding_value=value,
                        padding_side=side)
    got = fastcollate.pad(samples, batch_first=batch_first, padding_value=value,
                          padding_side=side, pad_to_multiple_of=multiple)
    T = want.shape[1 if batch_first else 0]
    got_t = got[:, :T] if batch_first else got[:T]
    if side == "left" and multiple:     # left padding grows at the front
        extra = got.shape[1 if batch_first else 0] - T
        got_t = got[:, extra:] if batch_first else got[extra:]
    assert got.dtype == want.dtype and torch.equal(got_t, want)
    assert torch.equal(rnn.pad_sequence(samples, batch_first=batch_first,
                                        padding_value=value, padding_side=side), want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tensor_batches(), st.sampled_from(["pack", "pad"]), st.booleans())
def test_collated_chunks_equal_torch(samples, mode, as_dicts):
    batch = [{"x": s, "y": i} for i, s in enumerate(samples)] if as_dicts else samples
    out = fastcollate.PackedCollate(ragged="x" if as_dicts else None, mode=mode)(batch)
    got = out["x"] if as_dicts else out
    if mode == "pack":
        want = torch.nn.utils.rnn.pack_sequence(samples, enforce_sorted=False)
        assert torch.equal(got.data, reference_pack(samples)[0])
        assert torch.equal(got.batch_sizes, want.batch_sizes)
    else:
        got = got[0] if isinstance(got, tuple) else got
        assert torch.equal(got, pad_sequence(samples, batch_first=True))
    if as_dicts:
        assert out["y"].tolist() == list(range(len(samples)))


@pytest.mark.filterwarnings("ignore:Casting complex values to real")   # torch's own
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tensor_batches(mixed=True))
def test_mixed_dtypes_are_planned_again_and_promote_like_torch(samples):
    """Sample 0's dtype is a guess: a chunk that promotes makes the write raise Replan
    and the callers plan again, with torch.cat's promotion (torch's pad_sequence itself
    takes sample 0's dtype: the reference pads the promoted samples)."""
    promoted = [s.to(expected_dtype(samples)) for s in samples]
    want = pad_sequence(promoted, batch_first=True)
    got = fastcollate.pad(samples)
    assert got.dtype == want.dtype and torch.equal(got, want)
    p = fastcollate.PackedCollate()(samples)
    ref = reference_pack(promoted)[0]
    assert p.data.dtype == want.dtype and torch.equal(p.data, ref)
    assert torch.equal(fastcollate.PackedCollate(mode="pad")(samples), want)
    ref_p = torch.nn.utils.rnn.pack_sequence(samples, enforce_sorted=False)
    assert torch.equal(rnn.pack_sequence(samples, enforce_sorted=False).data, ref_p.data)
    assert torch.equal(rnn.pad_sequence(samples, batch_first=True),
                       pad_sequence(samples, batch_first=True))


def _batch(B=40, n=9, dtype=torch.int64):
    return [torch.arange(n + i % 5, dtype=dtype) * (i + 1) for i in range(B)]


def test_a_mixed_chunk_raises_replan_from_the_write():
    samples = _batch()
    samples[-1] = samples[-1].double()
    plan = _deferred(samples)
    assert plan.tensors is not None and plan.dtype == torch.int64
    with pytest.raises(packing.Replan):
        packing.write_plan(plan, torch.empty(plan.shape, dtype=plan.dtype))
    pplan = _deferred(samples, sort=False)
    with pytest.raises(packing.Replan):
        write_padded(pplan, torch.empty((len(samples), 13), dtype=torch.int64))
    # planned again without deferring: promoted, as torch.cat does
    assert packing.plan_batch(samples).dtype == torch.float64
    assert issubclass(packing.NotInts, packing.Replan)


def test_a_sample_requiring_grad_keeps_its_graph():
    samples = [s.double() for s in _batch()]
    samples[7].requires_grad_(True)
    out = fastcollate.pad(samples)
    assert out.requires_grad
    out.sum().backward()
    assert torch.equal(samples[7].grad, torch.ones_like(samples[7]))
    p = fastcollate.PackedCollate()(samples)
    assert p.data.requires_grad


@pytest.mark.parametrize("sort", [True, False])
def test_a_sample_that_changes_length_after_planning_is_named(sort):
    samples = _batch()
    plan = _deferred(samples, sort=sort)
    assert plan.tensors is not None
    samples[23].resize_(3)          # planned with 12 rows
    with pytest.raises(ValueError, match="sample 23 has 3 elements but was planned "
                                         "with length 12"):
        if sort:
            packing.write_plan(plan, torch.empty(plan.shape, dtype=plan.dtype))
        else:
            write_padded(plan, torch.empty((40, 13), dtype=torch.int64))


def test_small_or_odd_batches_are_not_deferred():
    assert _deferred(_batch(B=2, n=3)).tensors is None          # under four chunks
    assert _deferred(_batch(), dtype=torch.float32).tensors is None   # a conversion
    grad = [s.double().requires_grad_(True) for s in _batch()]
    assert _deferred(grad).tensors is None                      # sample 0 needs torch ops
    assert _deferred([s.to(torch.bfloat16) for s in _batch()]).tensors is None
    unsorted = _batch()
    with pytest.raises(fastcollate.UnsortedError):              # named the usual way
        _deferred(unsorted, enforce_sorted=True)
    assert packing.plan_batch(_batch()).tensors is None         # only when asked


def test_the_kernels_check_their_tables_before_writing():
    samples = _batch()
    plan = _deferred(samples)
    out = torch.zeros(plan.shape, dtype=plan.dtype)
    args = (plan.tensors, plan.lengths, plan.sorted_indices, plan.batch_sizes, np.int64,
            plan.row, torch.cat, torch.Tensor, out.data_ptr())
    with pytest.raises(ValueError, match="the output has"):
        _core.pack_chunks_into(*args, plan.total - 1, 48)
    bad = plan.batch_sizes.copy()
    bad[0] += 1
    with pytest.raises(ValueError, match="batch_sizes"):
        _core.pack_chunks_into(plan.tensors, plan.lengths, plan.sorted_indices, bad,
                               np.int64, plan.row, torch.cat, torch.Tensor,
                               out.data_ptr(), plan.total, 48)
    assert not out.any()            # nothing written
    with pytest.raises(ValueError, match="outside 0..5"):
        _core.pad_chunks_into(plan.tensors, plan.lengths, np.int64, plan.row, torch.cat,
                              torch.Tensor, out.data_ptr(), 5)
    with pytest.raises(ValueError, match="cannot copy elements"):
        _core.pad_chunks_into(plan.tensors, plan.lengths, object, plan.row, torch.cat,
                              torch.Tensor, out.data_ptr(), 13)


def test_a_sample_of_another_row_is_named_by_the_re_plan():
    """Deferred plans take sample 0's row: a sample of another row makes its chunk
    refuse, and planning again names it (not as a sample that changed)."""
    batch = [torch.zeros(10, 4) for _ in range(60)]
    batch[33] = torch.zeros(5, 8)
    with pytest.raises(ValueError, match=r"sample 33.*\(5, 8\)"):
        fastcollate.pad(batch)
    with pytest.raises(ValueError, match=r"sample 33.*\(5, 8\)"):
        fastcollate.PackedCollate()(batch)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_tensor_batches(), st.sampled_from(["strided", "mixed"]),
       st.sampled_from(["pack", "pad", "collate", "collate_pad"]))
def test_strided_and_mixed_kind_batches_in_chunks_equal_torch(samples, how, call):
    """Samples that cannot be read directly (strided tensors) or that mix kinds (the
    general path: NumPy arrays, lists, tensors) are concatenated a chunk at a time too."""
    if how == "strided":
        batch = [torch.stack([s, torch.zeros_like(s)], 1).reshape((-1,) + s.shape[1:])[::2]
                 for s in samples]
    else:
        flat = samples[0].dim() == 1    # (the collate reads nested lists as records)
        batch = [s if i % 3 == 0 else s.tolist() if i % 3 == 2 and flat
                 else s.numpy().copy() for i, s in enumerate(samples)]
    want_dtype = expected_dtype(batch)
    promoted = [s.to(want_dtype) for s in samples]
    if call == "pack":
        got = fastcollate.pack(batch, dtype=want_dtype).data
    elif call == "collate":
        got = fastcollate.PackedCollate()(batch).data
    if call in ("pack", "collate"):
        assert got.dtype == want_dtype and torch.equal(got, reference_pack(promoted)[0])
        return
    got = (fastcollate.pad(batch) if call == "pad" else
           fastcollate.PackedCollate(mode="pad")(batch))
    assert got.dtype == want_dtype and torch.equal(got, pad_sequence(promoted, batch_first=True))


def test_mixed_kind_and_strided_batches_are_deferred():
    samples = _batch()
    mixed = [s.numpy() if i % 2 else s for i, s in enumerate(samples)]
    plan = _deferred(mixed)
    assert plan.tensors is not None and plan.dtype == torch.int64
    strided = [torch.arange(2 * (600 + i)).double()[::2] for i in range(3)]  # 4.8 KB each
    assert _deferred(strided).tensors is not None
    assert packing.plan_batch(strided).tensors is None
