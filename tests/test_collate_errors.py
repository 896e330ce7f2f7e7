"""PackedCollate: non-ragged fields against default_collate, and one test per bad input
or bad option (a correct batch or a clear error naming the sample, field or option)."""
import collections
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence
from torch.utils.data import default_collate

from fastcollate import PackedCollate, packed_collate

Point = collections.namedtuple("Point", ["x", "y"])


def fixed(column, **kw):
    """Collate ``column`` as the non-ragged field 1 of ``(seq, value)`` samples."""
    return PackedCollate(ragged=[0], **kw)([(np.arange(2), v) for v in column])[1]


def same(a, b):
    """Equal structure, values and dtypes (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
                and torch.equal(a.isnan() if a.is_floating_point() else a,
                                b.isnan() if b.is_floating_point() else b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    return a == b


# --------------------------------------------------------------------------- 1: numbers
def test_mixed_python_numbers_collate_to_float64_whatever_comes_first():
    # default_collate picks the dtype from sample 0: [2.5, 1] -> float64 but
    # [1, 2.5] -> float32 (torch's default dtype). A batch's dtype must not depend on
    # which sample came first: any Python float makes the field float64.
    for column in ([2.5, 1], [1, 2.5], [True, 2.5], [2.5, True], [1, True, 2.5]):
        out = fixed(column)
        assert out.dtype == torch.float64, column
        assert out.tolist() == [float(v) for v in column]
    assert default_collate([2.5, 1]).dtype == torch.float64      # what it matches


def test_numpy_scalars_mixed_with_python_numbers_do_not_depend_on_order():
    a = fixed([np.float32(1.5), 2.5])
    b = fixed([2.5, np.float32(1.5)])
    assert a.dtype == b.dtype == torch.float64 and b.tolist() == [2.5, 1.5]
    assert fixed([np.int64(1), 2.5]).dtype == fixed([2.5, np.int64(1)]).dtype == torch.float64
    assert fixed([np.int32(1), 2]).dtype == fixed([2, np.int32(1)]).dtype == torch.int64
    assert fixed([True, np.bool_(False)]).tolist() == [True, False]


def test_python_complex_numbers_collate_to_complex128():
    assert fixed([1j, 2]).dtype == fixed([2.5, 1j]).dtype == torch.complex128


def python_numbers():
    return st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                     st.floats(allow_nan=True, allow_infinity=True))


NP_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint16,
             np.float16, np.float32, np.float64, np.complex64]


@st.composite
def numpy_columns(draw):
    dtype = draw(st.sampled_from(NP_DTYPES))
    n = draw(st.integers(1, 6))
    values = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
    shape = draw(st.sampled_from([(), (3,), (2, 2)]))
    as_array = draw(st.booleans()) or shape != ()
    if as_array:
        return [np.full(shape, v, dtype=dtype) for v in values]
    return [dtype(v) for v in values]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=8),
    st.lists(st.floats(allow_nan=True), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=1, max_size=8),
    st.lists(st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1)), min_size=1,
             max_size=8),
    st.lists(python_numbers(), min_size=1, max_size=8),
    numpy_columns(),
    st.lists(st.text(max_size=3), min_size=1, max_size=4),
    st.integers(1, 5).flatmap(lambda n: st.lists(
        st.fixed_dictionaries({"a": st.integers(0, 9), "b": st.floats(0, 1)}),
        min_size=n, max_size=n)),
    st.lists(st.tuples(st.integers(0, 9), st.booleans()).map(lambda t: Point(*t)),
             min_size=1, max_size=5),
))
def test_non_ragged_fields_match_default_collate(column):
    want_column = column
    if (all(type(v) in (bool, int, float) for v in column)
            and any(type(v) is float for v in column)):
        # the one documented difference: default_collate's dtype depends on sample 0
        want_column = [float(v) for v in column]
    want = default_collate(want_column)
    got = fixed(column)
    assert same(got, want), (got, want)
    # dict samples: the same field, by key
    d = PackedCollate(ragged=["s"])([{"s": [1], "v": v} for v in column])["v"]
    assert same(d, want)


def test_zero_dim_tensors_and_arrays_match_default_collate():
    for column in ([torch.tensor(1), torch.tensor(2)],
                   [torch.tensor(1, dtype=torch.int32), torch.tensor(2.0)],
                   [np.array(1, dtype=np.int32), np.array(2)],
                   [np.array(1.5, dtype=np.float32), np.float32(2)],
                   [torch.ones(2, 3), torch.zeros(2, 3)]):
        assert same(fixed(column), default_collate(column)), column


def test_ints_outside_int64_are_an_overflow_error_naming_the_sample():
    with pytest.raises(OverflowError,
                       match=r"field 1: sample 1: value 9223372036854775808 does not fit"):
        fixed([1, 2**63])
    with pytest.raises(OverflowError, match=r"field 1: sample 0"):
        fixed([-2**70, 2])
    with pytest.raises(OverflowError, match=r"field 1: sample 1"):
        fixed([np.int64(1), 2**64])
    with pytest.raises(OverflowError, match=r"field 1: sample 2"):
        fixed([1.0, 2.0, 10**400])


def test_int64_mixed_with_uint64_is_refused_not_rounded_to_float():
    with pytest.raises(TypeError, match="field 1: .*no common integer dtype"):
        fixed([np.int64(1), np.uint64(2**63 + 1)])


# --------------------------------------------------------------------------- 6: mixed kinds
@pytest.mark.parametrize("column, exc, msg", [
    ([{"a": 1}, np.arange(2)], TypeError, r"sample 1 is a ndarray, but sample 0 is a dict"),
    ([np.arange(2), {"a": 1}], TypeError, r"sample 1 is a dict, but sample 0 is a ndarray"),
    ([torch.tensor(1), 2], TypeError, r"sample 1 is a int, but sample 0 is a Tensor"),
    ([1, "a"], TypeError, r"sample 1 is a str, but sample 0 is a int"),
    (["a", 1], TypeError, r"sample 1 is a int, but sample 0 is a str"),
    ([torch.ones(2), np.ones(2)], TypeError, r"sample 1 is a ndarray"),
    ([Point(1, 2), (1, 2)], TypeError, r"sample 1 is a tuple, but sample 0 is a Point"),
    ([None, None], TypeError, r"sample 0 is a NoneType"),
    ([1, None], TypeError, r"sample 1 is a NoneType"),
    ([object(), object()], TypeError, r"sample 0 is a object"),
    ([np.array(["a"]), np.array(["b"])], TypeError, r"sample 0 has dtype <U1"),
    ([np.datetime64(1, "s")] * 2, TypeError, r"sample 0 is a datetime64"),
    ([{"a": 1}, {"b": 1}], ValueError, r"sample 1 has keys \['b'\], but sample 0 has \['a'\]"),
    ([{"a": 1}, {"a": 1, "b": 2}], ValueError, r"sample 1 has keys"),
    ([{"a": 1}, {"a": "x"}], TypeError, r"\['a'\]: sample 1 is a str"),
    ([{"a": [1, 2]}, {"a": [3]}], ValueError, r"\['a'\]: sample 1 has 1 items, but sample 0 has 2"),
    ([(1, 2), (3,)], ValueError, r"sample 1 has 1 items, but sample 0 has 2"),
    ([[1, 2], [3, "x"]], TypeError, r"\[1\]: sample 1 is a str"),
    ([np.ones(3), np.ones(2)], ValueError, r"sample 1 has shape \(2,\), but sample 0 has shape"),
    ([np.ones(3), 1.0], ValueError, r"sample 1 has shape \(\), but sample 0 has shape \(3,\)"),
    ([torch.ones(3), torch.ones(2)], ValueError, r"sample 1 has shape \(2,\), but sample 0"),
])
def test_non_ragged_field_errors_name_the_field_and_sample(column, exc, msg):
    nested = msg.startswith("\\[")          # a key or position inside field 1
    with pytest.raises(exc, match="field 1" + ("" if nested else ": ") + msg):
        fixed(column)


def test_dict_in_one_sample_and_array_in_another_is_a_type_error():
    samples = [{"x": [1, 2], "meta": {"id": 1}}, {"x": [3], "meta": np.arange(2)}]
    with pytest.raises(TypeError, match=r"field 'meta': sample 1 is a ndarray"):
        packed_collate(samples)


def test_nested_fields_keep_default_collates_structure():
    column = [{"a": 1, "b": [1.5, 2]}, {"a": 2, "b": [2.5, 3]}]
    assert same(fixed(column), default_collate(column))
    assert same(fixed([(1, "a"), (2, "b")]), default_collate([(1, "a"), (2, "b")]))


# --------------------------------------------------------------------------- 2: extra keys
@pytest.mark.parametrize("opts, samples, msg", [
    (dict(lengths=True), [{"x": [1, 2], "x_lengths": 7}, {"x": [3], "x_lengths": 8}],
     r"'x_lengths'"),
    (dict(mode="pad", mask=True), [{"x": [1, 2], "x_mask": 7}, {"x": [3], "x_mask": 8}],
     r"'x_mask'"),
    (dict(lengths=True), [{1: [1, 2], "1": [5]}, {1: [3], "1": [6, 7]}], r"'1_lengths'"),
    (dict(ragged=["x", "x_lengths"], lengths=True),
     [{"x": [1, 2], "x_lengths": [1]}, {"x": [3], "x_lengths": [2]}], r"'x_lengths'"),
])
def test_extra_output_keys_never_overwrite_a_field(opts, samples, msg):
    with pytest.raises(ValueError, match=msg):
        PackedCollate(**opts)(samples)


def test_extra_output_keys_without_collision_still_work():
    out = PackedCollate(mode="pad", lengths=True, mask=True)(
        [{"x": [1, 2], "x_len": 7}, {"x": [3], "x_len": 8}])
    assert out["x_lengths"].tolist() == [2, 1] and out["x_len"].tolist() == [7, 8]
    assert out["x_mask"].tolist() == [[True, True], [True, False]]


# --------------------------------------------------------------------------- 5: groups
@pytest.mark.parametrize("groups, exc, msg", [
    ([()], ValueError, r"groups: group 0 is empty"),
    ([("x", "y"), []], ValueError, r"groups: group 1 is empty"),
    (["xy"], TypeError, r"groups: group 0 is the str 'xy'"),
    (("x", "y"), TypeError, r"groups=\[\('x', 'y'\)\]"),
    ((0, 1), TypeError, r"groups=\[\(0, 1\)\]"),
    ("xy", TypeError, r"groups must be an iterable of tuples of keys"),
    (5, TypeError, r"groups must be an iterable of tuples of keys"),
])
def test_bad_groups_are_refused_at_construction(groups, exc, msg):
    with pytest.raises(exc, match=msg):
        PackedCollate(groups=groups)


def test_a_one_field_group_checks_that_the_field_is_ragged():
    out = PackedCollate(groups=[("x",)])([{"x": [1, 2], "y": 0}])
    assert isinstance(out["x"], PackedSequence)
    with pytest.raises(KeyError, match=r"fields \['y'\] are not ragged"):
        PackedCollate(groups=[["y"]])([{"x": [1, 2], "y": 0}])


# --------------------------------------------------------------------------- 7: one key
def test_ragged_given_one_str_is_one_key():
    samples = [{"xy": [1, 2, 3], "x": [1, 2], "y": [4, 5]},
               {"xy": [4], "x": [3, 4], "y": [6, 7]}]
    out = PackedCollate(ragged="xy")(samples)
    assert isinstance(out["xy"], PackedSequence)
    assert not isinstance(out["x"], PackedSequence)     # default_collate'd: a list
    assert [t.tolist() for t in out["x"]] == [[1, 3], [2, 4]]
    assert PackedCollate(ragged="xy").ragged == ("xy",)


def test_ragged_given_one_int_is_one_position():
    packed, other = PackedCollate(ragged=0)([([1, 2], np.ones(2)), ([3], np.ones(2))])
    assert isinstance(packed, PackedSequence) and other.shape == (2, 2)


@pytest.mark.parametrize("ragged", [True, 1.5, object()])
def test_ragged_of_a_wrong_type_is_a_type_error(ragged):
    with pytest.raises(TypeError, match="ragged must be"):
        PackedCollate(ragged=ragged)


# --------------------------------------------------------------------------- 8: options
def test_dtype_naming_an_unknown_field_is_a_key_error():
    with pytest.raises(KeyError, match=r"dtype names fields \['z'\] that are not"):
        PackedCollate(dtype={"z": torch.float16})([{"x": [1, 2]}])


def test_dtype_naming_a_non_ragged_field_is_a_value_error():
    with pytest.raises(ValueError, match=r"dtype names field 'y', which is not ragged"):
        PackedCollate(dtype={"y": torch.float16})([{"x": [1, 2], "y": 3}])


@pytest.mark.parametrize("dtype", ["float32", np.float32, {"x": "float32"}, {"x": 5}])
def test_dtype_of_a_wrong_type_is_refused_at_construction(dtype):
    with pytest.raises(TypeError, match="dtype"):
        PackedCollate(dtype=dtype)


@pytest.mark.parametrize("value", ["0", None, [0], b"\x00"])
def test_padding_value_of_a_wrong_type_is_refused_at_construction(value):
    with pytest.raises(TypeError, match="padding_value must be a number"):
        PackedCollate(mode="pad", padding_value=value)


@pytest.mark.parametrize("multiple, exc", [
    (0, ValueError), (-8, ValueError), (1.5, TypeError), (True, TypeError),
    ("8", TypeError), (8.0, TypeError)])
def test_bad_pad_to_multiple_of_is_refused_at_construction(multiple, exc):
    with pytest.raises(exc, match="pad_to_multiple_of"):
        PackedCollate(mode="pad", pad_to_multiple_of=multiple)


def test_numpy_int_pad_to_multiple_of_is_accepted():
    out = PackedCollate(mode="pad", pad_to_multiple_of=np.int64(4))([[1, 2, 3, 4, 5]])
    assert out.shape == (1, 8)


def test_good_options_still_accepted():
    PackedCollate(mode="pad", padding_value=np.float32(-1), pad_to_multiple_of=8,
                  dtype={"x": torch.float32, "y": None}, groups=[["x", "y"]])
    PackedCollate(mode="pad", padding_value=torch.tensor(-1), dtype=torch.int32)


@dataclasses.dataclass
class Rec:
    seq: list
    label: int


@pytest.mark.parametrize("samples, exc, msg", [
    ([Rec([1], 0), Point([1], 0)], TypeError, r"sample 1 is a Point, but sample 0 is a Rec"),
    ([Point([1], 0), Rec([1], 0)], TypeError, r"sample 1 is a Rec, but sample 0 is a Point"),
    ([Point([1], 0), ([1], 0)], TypeError, r"sample 1 is a tuple, but sample 0 is a Point"),
    ([{"x": [1]}, Rec([1], 0)], TypeError, r"sample 1 is a Rec, but sample 0 is a dict"),
    ([{1, 2}, {3}], TypeError, r"sample 0 is a set"),
    ([(i for i in range(2))], TypeError, r"sample 0 is a generator"),
    ([[1, 2], ([1], 0)], TypeError, r"sample 1 is a tuple, but sample 0 is a sequence"),
    ([([1], 0), ([1],)], ValueError, r"sample 1 has 1 fields, but sample 0 has 2"),
    ([[[1], 0], [[1], 0, 1]], ValueError, r"sample 1 has 3 fields, but sample 0 has 2"),
])
def test_mixed_and_unsupported_samples_name_the_sample(samples, exc, msg):
    with pytest.raises(exc, match=msg):
        packed_collate(samples)


@dataclasses.dataclass
class WithDerived:
    seq: list
    label: int
    size: int = dataclasses.field(init=False, default=0)


@dataclasses.dataclass
class Checked:
    seq: list
    label: int

    def __post_init__(self):
        self.label = int(self.label)        # fine per sample, not for a batch


def test_dataclass_samples_with_init_false_fields():
    out = packed_collate([WithDerived([1, 2], 0), WithDerived([3], 1)])
    assert isinstance(out, WithDerived) and isinstance(out.seq, PackedSequence)
    assert out.label.tolist() == [0, 1] and out.size.tolist() == [0, 0]
    from fastcollate import to_device
    moved = to_device(out, "cpu")
    assert isinstance(moved, WithDerived) and moved.size.tolist() == [0, 0]


def test_dataclass_whose_init_refuses_batched_values_is_a_type_error():
    with pytest.raises(TypeError, match=r"cannot build the batch as a Checked"):
        packed_collate([Checked([1, 2], 0), Checked([3], 1)])
