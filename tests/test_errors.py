"""Bad input: one test per error, checking the exception type and the sample it names."""
import numpy as np
import pytest
import torch

import fastcollate


def test_empty_batch_is_a_value_error():
    with pytest.raises(ValueError, match="empty batch"):
        fastcollate.pack([])


@pytest.mark.parametrize("batch", [
    [[1, 2], [], [3]],
    [np.arange(2), np.arange(0), np.arange(3)],
    [torch.arange(2), torch.arange(0), torch.arange(3)],
    [torch.ones(2, 3), torch.ones(0, 3), torch.ones(1, 3)],
    [torch.ones(2, 3), torch.ones(0), torch.ones(1, 3)],
])
def test_zero_length_sample_is_a_value_error_naming_it(batch):
    with pytest.raises(ValueError, match=r"sample 1 .*length"):
        fastcollate.pack(batch)


@pytest.mark.parametrize("batch", [
    [np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 4))],
    [torch.ones(2, 3), torch.ones(4, 3), torch.ones(2, 4)],
    [[[1, 2, 3]], [[1, 2, 3]], [[1, 2]]],
    [torch.ones(2, 3), np.ones((4, 3)), np.ones(2)],
])
def test_row_shape_mismatch_is_a_value_error_naming_the_sample(batch):
    with pytest.raises(ValueError, match=r"sample 2: has shape .* expected \(L, 3\)"):
        fastcollate.pack(batch)


def test_ragged_nested_list_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"sample 1: nested lists must be rectangular"):
        fastcollate.pack([[[1, 2], [3, 4]], [[1, 2], [3]]])


@pytest.mark.parametrize("batch", [
    [[1, 2], ["a", "b"]],
    [[1, 2], [None]],
    [[1, 2], "ab"],
    [[1, 2], {"x": 1}],
    [[1, 2], np.array(["a", "b"])],
    [[1, 2], np.array([object(), object()])],
    [np.arange(3), 7],
])
def test_non_numeric_data_is_a_type_error_naming_the_sample(batch):
    with pytest.raises(TypeError, match=r"sample 1"):
        fastcollate.pack(batch)


def test_python_int_too_large_for_int64_is_an_overflow_error():
    with pytest.raises(OverflowError, match=r"sample 1"):
        fastcollate.pack([[1], [2, 2**63]])


@pytest.mark.parametrize("call", [fastcollate.pack, fastcollate.pad, fastcollate.flatten,
                                  lambda b: fastcollate.PackedCollate()(b)])
@pytest.mark.parametrize("batch", [[[1, 2**63], [-6.0]], [(2**64,), [1.5, 2.5]],
                                   [[2.0], [3], [-2**63 - 1, 1]], [[1, 2**63], [1j]]])
def test_an_int_beyond_int64_in_a_sample_of_ints_is_an_overflow_error_beside_floats(
        batch, call):
    # torch.tensor(sample) refuses the sample on its own, as for arrays and tensors
    # beside it: the other samples' floats do not make its ints floats
    i = next(k for k, s in enumerate(batch) if any(type(v) is int and not -2**63 <= v < 2**63
                                                   for v in s))
    with pytest.raises((OverflowError, ValueError, RuntimeError)):
        torch.tensor(batch[i])
    with pytest.raises(OverflowError, match=rf"sample {i}, element \d"):
        call(batch)


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float64])
def test_an_int_beyond_int64_beside_a_float_of_its_own_sample_reads_as_torch_tensor(dtype):
    batch = [[1.5, 2**63], [3], [2**64, 1]] if dtype is not None else [[1.5, 2**63], [3.0]]
    p = fastcollate.pack(batch, dtype=dtype)
    ref = torch.nn.utils.rnn.pack_sequence([torch.tensor(s, dtype=dtype or torch.float32)
                                            for s in batch], enforce_sorted=False)
    assert torch.equal(p.data, ref.data)


@pytest.mark.parametrize("dtype,value", [(torch.int8, 128), (torch.uint8, -1),
                                         (torch.int16, 2**15), (torch.int32, -(2**31) - 1)])
def test_python_int_that_does_not_fit_the_dtype_is_an_overflow_error(dtype, value):
    with pytest.raises(OverflowError, match=r"sample 2"):
        fastcollate.pack([[1], [2], [3, value]], dtype=dtype)
    with pytest.raises(OverflowError, match=r"sample 2"):
        fastcollate.pack([torch.tensor([1]), [2], [3, value]], dtype=dtype)


def test_unsorted_input_with_enforce_sorted_is_a_value_error():
    with pytest.raises(ValueError, match=r"enforce_sorted=True but sample 2 \(length 3\)"):
        fastcollate.pack([[1, 2], [1, 2], [1, 2, 3]], enforce_sorted=True)


def test_zero_dimensional_sample_is_a_value_error():
    with pytest.raises(ValueError, match=r"sample 1: is zero-dimensional"):
        fastcollate.pack([torch.tensor([1]), torch.tensor(2)])


def test_a_single_tensor_instead_of_a_batch_is_a_type_error():
    with pytest.raises(TypeError, match="list or tuple"):
        fastcollate.pack(torch.ones(3, 4))
    with pytest.raises(TypeError, match="list or tuple"):
        fastcollate.pack(iter([[1]]))


def test_dtype_must_be_a_torch_dtype():
    with pytest.raises(TypeError, match="torch.dtype"):
        fastcollate.pack([[1]], dtype=np.float32)


def test_pack_lengths_errors():
    with pytest.raises(ValueError, match=r"sample 1 has length 0"):
        fastcollate.pack_lengths([3, 0])
    with pytest.raises(ValueError, match="empty batch"):
        fastcollate.pack_lengths([])
    with pytest.raises(TypeError, match="integers"):
        fastcollate.pack_lengths([1.5, 2.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        fastcollate.pack_lengths([[1, 2]])


def test_failed_pack_leaves_no_partial_result_and_next_call_works():
    with pytest.raises(OverflowError):
        fastcollate.pack([[1, 2], [3, 2**70]])
    assert fastcollate.pack([[1, 2], [3]]).data.tolist() == [1, 3, 2]
