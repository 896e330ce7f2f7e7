"""pack(): the packed layout, against a plain reference and against torch."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_sequence, unpack_sequence

import fastcollate
from reference import reference_order, reference_pack
from strategies import ALL_DTYPES, batches, expected_dtype, to_tensor


def assert_packed_equal(p: PackedSequence, samples, enforce_sorted=False):
    """p is exactly the reference packing of samples (cast to p's dtype)."""
    converted = [to_tensor(s).to(p.data.dtype) for s in samples]
    data, bs, order, inverse = reference_pack(converted, enforce_sorted)
    assert p.data.dtype == data.dtype
    assert torch.equal(p.data, data)
    assert p.batch_sizes.dtype == torch.int64 and p.batch_sizes.device.type == "cpu"
    assert p.batch_sizes.tolist() == bs
    if enforce_sorted:
        assert p.sorted_indices is None and p.unsorted_indices is None
    else:
        assert p.sorted_indices is not None and p.unsorted_indices is not None
        assert p.sorted_indices.tolist() == order
        assert p.unsorted_indices.tolist() == inverse


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_pack_equals_reference_for_any_batch(samples):
    p = fastcollate.pack(samples)
    assert p.data.dtype == expected_dtype(samples)
    assert_packed_equal(p, samples)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_unpack_gives_back_the_inputs_and_batch_sizes_match_torch(samples):
    p = fastcollate.pack(samples)
    tensors = [to_tensor(s).to(p.data.dtype) for s in samples]
    reference = pack_sequence(tensors, enforce_sorted=False)
    assert torch.equal(p.batch_sizes, reference.batch_sizes)
    for mine, original in zip(unpack_sequence(p), tensors):
        assert mine.dtype == original.dtype
        assert torch.equal(mine, original)
    lengths = [t.shape[0] for t in tensors]
    if len(set(lengths)) == len(lengths):     # no ties: torch's order is ours
        assert torch.equal(p.data, reference.data)
        assert torch.equal(p.sorted_indices, reference.sorted_indices)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_enforce_sorted_accepts_sorted_input_and_returns_no_indices(samples):
    lengths = [len(s) for s in samples]
    ordered = [samples[i] for i in reference_order(lengths)]
    p = fastcollate.pack(ordered, enforce_sorted=True)
    assert_packed_equal(p, ordered, enforce_sorted=True)


@settings(max_examples=60, deadline=None)
@given(batches(kinds=["tensor", "ndarray", "list"]), st.sampled_from(ALL_DTYPES))
def test_explicit_dtype_casts_like_torch(samples, dtype):
    # arrays and tensors cast like .to(dtype); Python lists convert like
    # torch.tensor(x, dtype=dtype), which refuses complex numbers for a real dtype
    try:
        expected = [torch.tensor(s, dtype=dtype) if isinstance(s, list) else
                    to_tensor(s).to(dtype) for s in samples]
    except TypeError:
        with pytest.raises(TypeError, match="sample"):
            fastcollate.pack(samples, dtype=dtype)
        return
    p = fastcollate.pack(samples, dtype=dtype)
    assert p.data.dtype == dtype
    for mine, original in zip(unpack_sequence(p), expected):
        assert torch.equal(mine, original)


def test_ties_keep_input_order():
    p = fastcollate.pack([[1], [2, 2], [3], [4, 4], [5]])
    assert p.sorted_indices.tolist() == [1, 3, 0, 2, 4]
    assert p.data.tolist() == [2, 4, 1, 3, 5, 2, 4]


def test_python_numbers_infer_like_torch_tensor():
    assert fastcollate.pack([[True, False]]).data.dtype == torch.bool
    assert fastcollate.pack([[1, 2]]).data.dtype == torch.int64
    assert fastcollate.pack([[1, 2.5]]).data.dtype == torch.get_default_dtype()
    assert fastcollate.pack([[1, True]]).data.dtype == torch.int64
    assert fastcollate.pack([[1j, 2]]).data.dtype == torch.complex64


def test_mixed_dtypes_promote_and_never_truncate():
    p = fastcollate.pack([torch.tensor([1, 2]), [1.7]])
    assert p.data.dtype == torch.float32
    assert sorted(p.data.tolist()) == pytest.approx([1.0, 1.7, 2.0])
    p = fastcollate.pack([np.array([1], dtype=np.int32), np.array([2.5, 3.5])])
    assert p.data.dtype == torch.float64
    assert unpack_sequence(p)[1].tolist() == [2.5, 3.5]


def test_non_native_byte_order_arrays():
    a = np.arange(5, dtype=">i4")
    p = fastcollate.pack([a, np.arange(3, dtype="<i4")])
    assert unpack_sequence(p)[0].tolist() == [0, 1, 2, 3, 4]
    assert p.data.dtype == torch.int32


def test_tuple_of_tuples_and_nested_rows():
    p = fastcollate.pack(((1, 2), (3,)))
    assert p.data.tolist() == [1, 3, 2]
    p = fastcollate.pack([[[1, 2], [3, 4]], [[5, 6]]])
    assert p.data.tolist() == [[1, 2], [5, 6], [3, 4]]


def test_numpy_scalars_in_lists_take_the_general_path():
    p = fastcollate.pack([[np.int64(3), np.int64(4)], [5]])
    assert p.data.tolist() == [3, 5, 4]


def test_pin_memory_flag_is_honoured_when_available():
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs CUDA")
    assert fastcollate.pack([[1, 2], [3]], pin_memory=True).data.is_pinned()


def test_autograd_flows_back_to_the_inputs():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(2, 3, requires_grad=True)
    p = fastcollate.pack([b, a])
    assert p.data.requires_grad
    (p.data * torch.arange(p.data.shape[0]).unsqueeze(1)).sum().backward()
    ref_a = a.detach().clone().requires_grad_()
    ref_b = b.detach().clone().requires_grad_()
    r = pack_sequence([ref_b, ref_a], enforce_sorted=False)
    (r.data * torch.arange(r.data.shape[0]).unsqueeze(1)).sum().backward()
    assert torch.equal(a.grad, ref_a.grad) and torch.equal(b.grad, ref_b.grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_give_a_cuda_result_with_cpu_batch_sizes():
    samples = [torch.randn(n, 4, device="cuda") for n in (3, 5, 1)]
    p = fastcollate.pack(samples)
    assert p.data.is_cuda and p.sorted_indices.is_cuda
    assert p.batch_sizes.device.type == "cpu"
    for mine, original in zip(unpack_sequence(p), samples):
        assert torch.equal(mine, original)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_rnn_on_our_packing_matches_torch(mode):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    samples = [torch.randn(int(n), 6) for n in rng.integers(1, 20, size=33)]
    rnn = (torch.nn.LSTM if mode == "lstm" else torch.nn.GRU)(6, 8, num_layers=2)
    out_ours, h_ours = rnn(fastcollate.pack(samples))
    out_torch, h_torch = rnn(pack_sequence(samples, enforce_sorted=False))
    for a, b in zip(unpack_sequence(out_ours), unpack_sequence(out_torch)):
        torch.testing.assert_close(a, b)
    h_ours = h_ours if isinstance(h_ours, tuple) else (h_ours,)
    h_torch = h_torch if isinstance(h_torch, tuple) else (h_torch,)
    for a, b in zip(h_ours, h_torch):                 # h_n / c_n, in input order
        torch.testing.assert_close(a, b)


def test_pack_lengths_from_list_array_and_tensor():
    for lengths in ([2, 3, 2], np.array([2, 3, 2]), torch.tensor([2, 3, 2])):
        bs, si, ui = fastcollate.pack_lengths(lengths)
        assert bs.tolist() == [3, 3, 1] and si.tolist() == [1, 0, 2] and ui.tolist() == [1, 0, 2]
        assert bs.dtype == si.dtype == ui.dtype == torch.int64
    bs, si, ui = fastcollate.pack_lengths([3, 2, 2], enforce_sorted=True)
    assert bs.tolist() == [3, 3, 1] and si is None and ui is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=200))
def test_pack_lengths_matches_pack_padded_sequence(lengths):
    bs, si, ui = fastcollate.pack_lengths(lengths)
    padded = torch.zeros(max(lengths), len(lengths))
    ref = torch.nn.utils.rnn.pack_padded_sequence(padded, torch.tensor(lengths),
                                                  enforce_sorted=False)
    assert torch.equal(bs, ref.batch_sizes)
    assert si.tolist() == reference_order(lengths)
    assert torch.equal(si[ui], torch.arange(len(lengths)))


@pytest.mark.parametrize("odd", [None, "strided", "dtype", "grad", "row"])
def test_large_tensor_samples_read_directly_or_fall_back(odd):
    rng = np.random.default_rng(3)
    samples = [torch.from_numpy(rng.standard_normal((int(n), 80)).astype(np.float32))
               for n in rng.integers(100, 300, size=12)]
    if odd == "strided":
        samples[5] = torch.cat([samples[5], samples[5]], dim=1)[:, ::2]
    elif odd == "dtype":
        samples[5] = samples[5].double()
    elif odd == "grad":
        samples[5] = samples[5].clone().requires_grad_()
    elif odd == "row":
        samples[5] = samples[5][:, :79]
        with pytest.raises(ValueError, match="sample 5: has shape"):
            fastcollate.pack(samples)
        return
    p = fastcollate.pack(samples)
    assert p.data.dtype == expected_dtype(samples)
    assert_packed_equal(p, [s.detach() for s in samples])


def test_threads_can_pack_concurrently():
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(5)
    batches = [[rng.standard_normal((int(n), 64)).astype(np.float32)
                for n in rng.integers(50, 400, size=32)] for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fastcollate.pack, batches))
    for p, batch in zip(results, batches):
        assert_packed_equal(p, batch)
