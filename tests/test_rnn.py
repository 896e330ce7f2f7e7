"""fastcollate.rnn against torch.nn.utils.rnn.

The first part runs the cases of torch's own ``test/nn/test_packed_sequence.py`` (written
again here, against the drop-in); the second compares the drop-in with torch on random
batches and on every input that takes torch's own path, result by result and error by
error.
"""
import inspect
import random

import numpy as np
import pytest
import torch
import torch.nn.utils.rnn as torch_rnn
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcollate
from fastcollate import rnn


def assert_same_tensor(ours, theirs):
    assert type(ours) is type(theirs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.device == theirs.device and ours.is_contiguous() == theirs.is_contiguous()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


def assert_same_packed(ours, theirs):
    assert type(ours) is type(theirs) is torch_rnn.PackedSequence
    for a, b in zip(ours, theirs):
        if b is None:
            assert a is None
        else:
            assert_same_tensor(a, b)


def assert_same(name, *args, **kwargs):
    """fastcollate.rnn.<name> returns what torch's returns, or raises what it raises."""
    try:
        theirs = getattr(torch_rnn, name)(*args, **kwargs)
    except Exception as e:      # noqa: BLE001 -- whatever torch raises, we must raise
        with pytest.raises(type(e)) as info:
            getattr(rnn, name)(*args, **kwargs)
        if not isinstance(info.value, fastcollate.UnsortedError):
            assert str(info.value) == str(e)
        return None
    ours = getattr(rnn, name)(*args, **kwargs)
    if isinstance(theirs, torch_rnn.PackedSequence):
        assert_same_packed(ours, theirs)
    else:
        assert_same_tensor(ours, theirs)
    return ours


# ---------------------------------------------------------------------------------------
# torch's test_packed_sequence.py cases, against the drop-in
# ---------------------------------------------------------------------------------------

TYPES = [torch.float64, torch.float32, torch.int64, torch.int32, torch.int16, torch.int8,
         torch.uint8]


def ordered_sequences(dtype, batch_size=5, max_length=6):
    lo, hi = (0, 256) if dtype == torch.uint8 else (-128, 128)
    seqs = [torch.randint(lo, hi, (random.randint(1, max_length),)).to(dtype)
            for _ in range(batch_size)]
    return sorted(seqs, key=len, reverse=True)


def padded_sequences(dtype):
    ordered = ordered_sequences(dtype)
    return rnn.pad_sequence(ordered), [len(s) for s in ordered]


@pytest.mark.parametrize("dtype", TYPES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_type_casts_of_packed_sequence(dtype, enforce_sorted):
    random.seed(0)
    for cast, expected in [("double", torch.float64), ("float", torch.float32),
                           ("long", torch.int64), ("int", torch.int32),
                           ("short", torch.int16), ("char", torch.int8),
                           ("byte", torch.uint8)]:
        packed = rnn.pack_sequence(ordered_sequences(dtype), enforce_sorted=enforce_sorted)
        unpacked, _ = rnn.pad_packed_sequence(getattr(packed, cast)())
        assert unpacked.dtype == expected


def test_wrong_order_is_a_runtime_error():
    a, b = torch.ones(25, 300), torch.ones(22, 300)
    with pytest.raises(RuntimeError):
        rnn.pack_padded_sequence(rnn.pad_sequence([b, a]), [22, 25], enforce_sorted=True)
    with pytest.raises(RuntimeError, match="must be sorted in decreasing order"):
        rnn.pack_sequence([b, a], enforce_sorted=True)


def test_pad_sequence_with_tensor_sequences():
    tuple_input = rnn.pad_sequence((torch.tensor([[7, 6]]), torch.tensor([[-7, -1]])))
    tensor_input = rnn.pad_sequence(torch.tensor([[[7, 6]], [[-7, -1]]]))
    assert torch.equal(tuple_input, tensor_input)
    assert tuple_input.shape == torch.Size([1, 2, 2])


def test_pad_sequence_with_non_iterable_sequences():
    with pytest.raises(RuntimeError, match="Expected iterable for input sequences, but got "
                                           "arg of type"):
        rnn.pad_sequence(5)


def test_total_length():
    random.seed(1)
    padded, lengths = padded_sequences(torch.float32)
    max_length = max(lengths)
    packed = rnn.pack_padded_sequence(padded, lengths)
    for total_length in (-1, 0, max_length - 1):
        for batch_first in (True, False):
            with pytest.raises(ValueError, match="Expected total_length to be at least"):
                rnn.pad_packed_sequence(packed, batch_first=batch_first,
                                        total_length=total_length)
    for batch_first in (True, False):
        no_extra_pad, _ = rnn.pad_packed_sequence(packed, batch_first=batch_first)
        for delta in (0, 1, 8):
            unpacked, lengths_out = rnn.pad_packed_sequence(
                packed, batch_first=batch_first, total_length=max_length + delta)
            assert lengths_out.tolist() == lengths
            assert unpacked.size(1 if batch_first else 0) == max_length + delta
            extra = no_extra_pad.new_zeros((5, delta) if batch_first else (delta, 5))
            assert torch.equal(unpacked, torch.cat([no_extra_pad, extra], 1 if batch_first else 0))


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_to(enforce_sorted):
    random.seed(2)
    a = rnn.pack_sequence(ordered_sequences(torch.int32), enforce_sorted=enforce_sorted).cpu()
    assert a is a.to("cpu") and a is a.cpu() and a is a.to("cpu", dtype=torch.int32)
    assert_same_packed(a.long(), a.to(torch.int64))
    if torch.cuda.is_available():
        b = a.cuda()
        assert b is b.to("cuda") and b is b.cuda()
        assert_same_packed(a, b.to("cpu"))


def _reference_pad(t, length):
    return torch.cat([t, t.new_zeros((length - t.size(0),) + t.shape[1:])])


def test_pad_sequence_cases():
    a, b, c = torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6])
    expected = torch.tensor([[4, 5, 0], [1, 2, 3], [6, 0, 0]])
    assert torch.equal(rnn.pad_sequence([b, a, c], True), expected)
    assert torch.equal(rnn.pad_sequence([b, a, c]), expected.transpose(0, 1))
    assert torch.equal(rnn.pad_sequence([b, a, c], True, 1),
                       torch.tensor([[4, 5, 1], [1, 2, 3], [6, 1, 1]]))
    assert torch.equal(rnn.pad_sequence([a, b, c], True),
                       torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]]))


@pytest.mark.parametrize("num_dim", [0, 1, 2, 3])
def test_pad_sequence_more_dimensions(num_dim):
    random.seed(num_dim)
    maxlen = 9
    seqs = [torch.rand(i * i, 5, *[4] * num_dim) for i in range(1, maxlen + 1)]
    random.shuffle(seqs)
    expected = torch.stack([_reference_pad(s, maxlen * maxlen) for s in seqs])
    assert torch.equal(rnn.pad_sequence(seqs, True), expected)
    assert torch.equal(rnn.pad_sequence(seqs), expected.transpose(0, 1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_unpad_sequence_round_trip(batch_first):
    random.seed(3)
    seqs = [torch.rand(i * i, 5, 4) for i in range(1, 10)]
    random.shuffle(seqs)
    lengths = torch.as_tensor([len(s) for s in seqs])
    padded = rnn.pad_sequence(seqs, batch_first=batch_first)
    for s, u in zip(seqs, rnn.unpad_sequence(padded, lengths, batch_first=batch_first)):
        assert torch.equal(s, u)


def test_pack_sequence_single_dimension():
    a, b, c = torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6])
    expected = [1, 4, 6, 2, 5, 3]
    packed = rnn.pack_sequence([a, b, c], enforce_sorted=False)
    assert packed.batch_sizes.tolist() == [3, 2, 1] and packed.data.tolist() == expected
    assert packed.sorted_indices.tolist() == [0, 1, 2]
    assert packed.unsorted_indices.tolist() == [0, 1, 2]
    unsorted = rnn.pack_sequence([b, c, a], enforce_sorted=False)
    assert unsorted.batch_sizes.tolist() == [3, 2, 1] and unsorted.data.tolist() == expected
    assert unsorted.sorted_indices.tolist() == [2, 0, 1]
    assert unsorted.unsorted_indices.tolist() == [1, 2, 0]
    enforced = rnn.pack_sequence([a, b, c], enforce_sorted=True)
    assert enforced.data.tolist() == expected
    assert enforced.sorted_indices is None and enforced.unsorted_indices is None


def test_pack_sequence_unsorted_with_enforce_sorted_raises_torch_messages():
    a, b, c = torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([6])
    with pytest.raises(RuntimeError, match="must be sorted in decreasing order"):
        rnn.pack_sequence([b, c, a], enforce_sorted=True)
    with pytest.raises(RuntimeError, match="You can pass `enforce_sorted=False`"):
        rnn.pack_sequence([b, c, a], enforce_sorted=True)
    with pytest.raises(RuntimeError, match="You can pass `enforce_sorted=False`"):
        rnn.pack_sequence([b, c, a])                     # torch's default: True


def test_unsorted_error_is_a_value_error_and_a_runtime_error_from_pack_too():
    assert issubclass(fastcollate.UnsortedError, ValueError)
    assert issubclass(fastcollate.UnsortedError, RuntimeError)
    with pytest.raises(RuntimeError, match="sample 2 .* is longer than sample 1"):
        fastcollate.pack([[1, 2], [1], [1, 2, 3]], enforce_sorted=True)


@pytest.mark.parametrize("num_dim", [0, 1, 2, 3])
def test_pack_sequence_compatibility_with_the_other_utilities(num_dim):
    random.seed(10 + num_dim)
    seqs = [torch.rand(i * i, 5, *[4] * num_dim) for i in range(9, 0, -1)]
    lengths = [len(s) for s in seqs]
    shuffled = [s.clone() for s in seqs]
    random.shuffle(shuffled)
    cases = [(seqs, lengths, True), (seqs, lengths, False),
             (shuffled, [len(s) for s in shuffled], False)]
    for sequences, lens, enforce_sorted in cases:
        for batch_first in (True, False):
            padded = rnn.pad_sequence(sequences, batch_first)
            packed = rnn.pack_sequence(sequences, enforce_sorted)
            assert torch.equal(rnn.pad_packed_sequence(packed, batch_first)[0], padded)
            assert_same_packed(packed, torch_rnn.pack_padded_sequence(
                padded, lens, batch_first, enforce_sorted))


@pytest.mark.parametrize("num_dim", [0, 1, 2])
def test_unpack_sequence_round_trip(num_dim):
    random.seed(20 + num_dim)
    seqs = [torch.rand(i * i, 5, *[4] * num_dim) for i in range(1, 10)]
    random.shuffle(seqs)
    for s, u in zip(seqs, rnn.unpack_sequence(rnn.pack_sequence(seqs, enforce_sorted=False))):
        assert torch.equal(s, u)


# ---------------------------------------------------------------------------------------
# The drop-in's contract: torch's signatures, torch's results, torch's errors
# ---------------------------------------------------------------------------------------

def test_same_names_as_torch():
    assert sorted(rnn.__all__) == sorted(torch_rnn.__all__)
    for name in rnn.__all__:
        assert getattr(rnn, name) is not None


@pytest.mark.parametrize("name", ["pack_sequence", "pad_sequence"])
def test_same_signature_as_torch(name):
    ours = inspect.signature(getattr(rnn, name)).parameters
    theirs = inspect.signature(getattr(torch_rnn, name)).parameters
    assert [(p.name, p.default, p.kind) for p in ours.values()] == \
        [(p.name, p.default, p.kind) for p in theirs.values()]


DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
          torch.uint16, torch.uint32, torch.uint64]


def make_batch(draw_lengths, row, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 100, (n,) + row, generator=g).to(dtype) for n in draw_lengths]


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=40),
       row=st.sampled_from([(), (3,), (2, 2), (80,)]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_pack_sequence_equals_torch_field_by_field_ties_included(lengths, row, dtype, seed):
    seqs = make_batch(lengths, row, dtype, seed)     # many ties: torch's order must be kept
    assert_same("pack_sequence", seqs, enforce_sorted=False)
    assert_same("pack_sequence", sorted(seqs, key=len, reverse=True))
    assert_same("pack_sequence", seqs)               # unsorted: both raise, or both pack


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=20),
       row=st.sampled_from([(), (3,), (80,)]), dtype=st.sampled_from(DTYPES),
       batch_first=st.booleans(), side=st.sampled_from(["right", "left"]),
       value=st.sampled_from([0, 0.0, -0.0, 1, -1, 2.5, True, 300, float("nan"),
                              float("inf"), 1e30]),
       seed=st.integers(0, 2**16))
def test_pad_sequence_equals_torch(lengths, row, dtype, batch_first, side, value, seed):
    seqs = make_batch(lengths, row, dtype, seed)
    assert_same("pad_sequence", seqs, batch_first, value, side)


def test_large_samples_read_in_place_equal_torch():
    seqs = make_batch([300, 20, 300, 150], (80,), torch.float32, 0)   # 60 KB per sample
    assert_same("pack_sequence", seqs, enforce_sorted=False)
    assert_same("pad_sequence", seqs, batch_first=True, padding_value=-1.0)


@pytest.mark.parametrize("args", [
    # inputs the fast path leaves to torch: torch's result (or error) is the answer
    ([torch.tensor([1, 2]), torch.tensor([1.7])],),                 # torch casts to int64
    ([torch.tensor([1.5, 2.5]), torch.tensor([3], dtype=torch.int64)],),
    ([torch.ones(3, 4), torch.ones(2, 1)],),                        # rows torch broadcasts
    ([torch.ones(3, 4), torch.ones(2, 3)],),                        # rows it cannot
    ([torch.ones(3), torch.ones(0)],),                              # zero length
    ([torch.tensor(1), torch.tensor(2)],),                          # zero-dimensional
    ([],),                                                          # empty
    ([[1, 2], [3]],),                                               # not tensors
    ([torch.ones(2), np.ones(1)],),
    ([torch.nn.Parameter(torch.ones(3)), torch.ones(2)],),          # a subclass
    ([torch.ones(3).to_sparse(), torch.ones(2).to_sparse()],),
])
@pytest.mark.parametrize("name", ["pack_sequence", "pad_sequence"])
def test_inputs_left_to_torch_give_torch_results_and_errors(name, args):
    assert_same(name, *args)
    if name == "pack_sequence":
        assert_same(name, *args, enforce_sorted=False)


def test_tensor_batch_input_is_copied_like_torch():
    x = torch.randn(3, 4, 2)
    for batch_first in (True, False):
        out = assert_same("pad_sequence", x, batch_first)
        assert out.data_ptr() != x.data_ptr()
    assert_same("pad_sequence", torch.randn(4))                     # 0-d samples: an error
    assert_same("pad_sequence", torch.randn(0, 3))                  # empty
    assert_same("pad_sequence", torch.ones(2, 3, dtype=torch.int64), False, 1e30)


def test_generator_and_other_iterables_are_read_once_like_torch():
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    out = rnn.pad_sequence(s for s in seqs)
    assert_same_tensor(out, torch_rnn.pad_sequence(s for s in seqs))


@pytest.mark.parametrize("kwargs", [{"padding_side": "middle"}, {"padding_value": "x"},
                                    {"padding_value": 1 + 2j}, {"batch_first": 1}])
def test_bad_options_raise_what_torch_raises(kwargs):
    assert_same("pad_sequence", [torch.ones(2), torch.ones(1)], **kwargs)


def test_grad_flows_like_torch():
    a = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(2, 2, requires_grad=True)
    packed = rnn.pack_sequence([a, b])
    packed.data.sum().backward()
    assert torch.equal(a.grad, torch.ones(3, 2)) and torch.equal(b.grad, torch.ones(2, 2))
    padded = rnn.pad_sequence([a, b], padding_value=5.0)
    assert padded.requires_grad and padded[2, 1].tolist() == [5.0, 5.0]


def test_a_torch_function_mode_is_honoured_like_torch():
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    with Count():
        packed = rnn.pack_sequence(seqs)
        padded = rnn.pad_sequence(seqs)
    assert Count.calls > 0          # torch's own implementation ran, under the mode
    assert_same_packed(packed, torch_rnn.pack_sequence(seqs))
    assert_same_tensor(padded, torch_rnn.pad_sequence(seqs))


def test_result_does_not_alias_the_inputs():
    seqs = [torch.arange(5000.0), torch.arange(3000.0)]       # large: read in place
    padded = rnn.pad_sequence(seqs, batch_first=True)
    packed = rnn.pack_sequence(seqs)
    seqs[0].zero_()
    assert padded[0, 4999] == 4999 and packed.data[-1] == 4999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_equal_torch():
    seqs = [t.cuda() for t in make_batch([3, 1, 3, 2], (2,), torch.float32, 0)]
    assert_same("pack_sequence", seqs, enforce_sorted=False)
    assert_same("pad_sequence", seqs, True, -1.0, "left")


def test_plain_tensor_batches_take_the_fast_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch's implementation was called")

    monkeypatch.setattr(rnn._torch_rnn, "pack_sequence", refuse)
    monkeypatch.setattr(rnn._torch_rnn, "pad_sequence", refuse)
    small = make_batch([3, 1, 3, 2] * 10, (), torch.int64, 0)
    large = make_batch([300, 20, 300], (80,), torch.float32, 0)
    for seqs in (small, large):
        rnn.pack_sequence(seqs, enforce_sorted=False)
        rnn.pack_sequence(sorted(seqs, key=len, reverse=True))
        rnn.pad_sequence(seqs, padding_value=-1, padding_side="left")
    rnn.pad_sequence(torch.ones(3, 4))
    with pytest.raises(fastcollate.UnsortedError):
        rnn.pack_sequence(small)


# ---------------------------------------------------------------------------------------
# pack_padded_sequence: torch's cases, then equality with torch
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sorted_lengths", [[10, 8, 4, 2, 2, 2, 1], [11], [3, 3, 3, 1], [3]])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_pack_padded_sequence_cases(sorted_lengths, shuffle, batch_first):
    random.seed(len(sorted_lengths))
    T = sorted_lengths[0]
    # sample i (from 1) holds i * 100 + 1.., in rows of 5, padded with zeros to T
    padded = torch.stack([
        _reference_pad(i * 100 + torch.arange(1.0, 5 * n + 1).view(n, 5), T)
        for i, n in enumerate(sorted_lengths, 1)], 1)                    # (T, B, 5)
    batch_sizes = [sum(n > t for n in sorted_lengths) for t in range(T)]
    expected = torch.stack([torch.arange(1.0, 6) + (i + 1) * 100 + 5 * t
                            for t, bs in enumerate(batch_sizes) for i in range(bs)])
    lengths, inputs = sorted_lengths, padded
    if shuffle:
        perm = list(range(len(sorted_lengths)))
        random.shuffle(perm)
        inputs, lengths = padded[:, perm], [sorted_lengths[i] for i in perm]
    if batch_first:
        inputs = inputs.transpose(0, 1)
    for lens in (lengths, torch.tensor(lengths)):
        packed = rnn.pack_padded_sequence(inputs, lens, batch_first, enforce_sorted=not shuffle)
        assert packed.batch_sizes.tolist() == batch_sizes
        unpacked, unpacked_lengths = rnn.pad_packed_sequence(packed, batch_first)
        assert torch.equal(unpacked, inputs) and unpacked_lengths.tolist() == lengths
        if not shuffle:
            assert torch.equal(packed.data, expected) and packed.sorted_indices is None
        assert_same_packed(packed, torch_rnn.pack_padded_sequence(
            inputs, lens, batch_first, enforce_sorted=not shuffle))


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=40),
       row=st.sampled_from([(), (3,), (2, 2)]), dtype=st.sampled_from(DTYPES),
       batch_first=st.booleans(), extra=st.integers(0, 2), as_tensor=st.booleans(),
       strided=st.booleans(), seed=st.integers(0, 2**16))
def test_pack_padded_sequence_equals_torch(lengths, row, dtype, batch_first, extra,
                                           as_tensor, strided, seed):
    g = torch.Generator().manual_seed(seed)
    T, B = max(lengths) + extra, len(lengths)
    shape = (B, T) + row if batch_first else (T, B) + row
    padded = torch.randint(0, 100, shape, generator=g).to(dtype)
    if strided:                 # a view with gaps: read through its strides
        padded = torch.stack([padded, padded], -1)[..., 1]
        assert not padded.is_contiguous() or padded.numel() <= 1
    lens = torch.tensor(lengths) if as_tensor else lengths
    assert_same("pack_padded_sequence", padded, lens, batch_first, enforce_sorted=False)
    assert_same("pack_padded_sequence", padded, sorted(lengths, reverse=True), batch_first)
    assert_same("pack_padded_sequence", padded, lens, batch_first)   # may be unsorted


@pytest.mark.parametrize("lengths", [[3, 5], [0, 1], [2], [2, 2, 1], [[2, 1]], ["a", "b"],
                                     [2.7, 1.2]])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_pack_padded_sequence_bad_lengths_behave_like_torch(lengths, enforce_sorted):
    padded = torch.arange(8.0).view(4, 2)                # T = 4, B = 2
    if lengths == [3, 5]:       # longer than T: torch reads past the steps; we hand it over
        assert rnn._pack_padded_fast(padded, lengths, False, enforce_sorted) is None
        return
    assert_same("pack_padded_sequence", padded, lengths, enforce_sorted=enforce_sorted)
    assert_same("pack_padded_sequence", padded, torch.tensor([2, 1]).double(),
                enforce_sorted=enforce_sorted)


def test_pack_padded_sequence_gradient_equals_torch():
    x = torch.randn(4, 3, 2, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    w = torch.randn(8, 2)
    rnn.pack_padded_sequence(x, [2, 4, 2], enforce_sorted=False).data.mul(w).sum().backward()
    torch_rnn.pack_padded_sequence(y, [2, 4, 2], enforce_sorted=False).data.mul(w).sum().backward()
    assert torch.equal(x.grad, y.grad)


def test_pack_padded_sequence_takes_the_fast_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch's implementation was called")

    monkeypatch.setattr(rnn._torch_rnn, "pack_padded_sequence", refuse)
    padded = torch.randn(5, 3, 2)
    rnn.pack_padded_sequence(padded, [5, 3, 1])
    rnn.pack_padded_sequence(padded, torch.tensor([1, 5, 3]), enforce_sorted=False)
    rnn.pack_padded_sequence(padded.transpose(0, 1), [3, 5, 1], batch_first=True,
                             enforce_sorted=False)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_pack_padded_sequence_of_unsigned_dtypes_torch_cannot_gather(dtype, contiguous):
    padded = torch.arange(24).view(4, 3, 2).to(dtype)          # no index_select for these
    if not contiguous:
        padded = padded.transpose(0, 1).contiguous().transpose(0, 1)
    for batch_first in (False, True):
        x = padded.transpose(0, 1) if batch_first else padded
        ours = rnn.pack_padded_sequence(x, [2, 4, 3], batch_first, enforce_sorted=False)
        theirs = torch_rnn.pack_padded_sequence(x, [2, 4, 3], batch_first, enforce_sorted=False)
        assert ours.data.dtype == dtype
        assert torch.equal(ours.data.to(torch.float64), theirs.data.to(torch.float64))


@pytest.mark.parametrize("lengths", [[0], [1, 0], [2, 1]])
def test_pad_sequence_refuses_a_padding_value_the_dtype_overflows_like_torch(lengths):
    """torch's C++ fill checks the conversion (1e30 into float16 raises) even when no
    slot is padded; the drop-in raises the same error instead of writing inf."""
    seqs = [torch.ones(n, dtype=torch.float16) for n in lengths]
    with pytest.raises(RuntimeError, match="without overflow") as theirs:
        torch.nn.utils.rnn.pad_sequence(seqs, padding_value=1e30)
    with pytest.raises(RuntimeError, match="without overflow") as ours:
        rnn.pad_sequence(seqs, padding_value=1e30)
    assert str(ours.value) == str(theirs.value)
