"""Hypothesis strategies and sample helpers shared by the test files."""
import numpy as np
import torch
from hypothesis import strategies as st

ALL_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.bfloat16, torch.float32, torch.float64,
              torch.complex64, torch.complex128]
NUMPY_DTYPES = [d for d in ALL_DTYPES if d != torch.bfloat16]
ROWS = [(), (3,), (2, 5)]
KINDS = ["tensor", "tensor_strided", "ndarray", "ndarray_reversed", "list"]


def make_sample(rng: np.random.Generator, length: int, row, dtype: torch.dtype) -> torch.Tensor:
    values = torch.from_numpy(rng.integers(0, 100, size=(length,) + tuple(row)))
    if dtype.is_complex:
        return (values + 1j * values.flip(0)).to(dtype)
    return values.to(dtype)


def as_kind(t: torch.Tensor, kind: str):
    """The same sample as the given input kind (values unchanged)."""
    if kind == "tensor":
        return t.clone()
    if kind == "tensor_strided":             # every other row of a twice-as-long tensor
        wide = torch.stack([t, torch.zeros_like(t)], dim=1).reshape((-1,) + t.shape[1:])
        strided = wide[::2]
        assert not strided.is_contiguous() or t.shape[0] <= 1
        return strided
    if kind == "ndarray":
        return t.numpy().copy()
    if kind == "ndarray_reversed":           # negative strides
        return np.flip(t.flip(0).numpy().copy(), axis=0)
    if kind == "list":
        return t.tolist()
    raise AssertionError(kind)


def to_tensor(s) -> torch.Tensor:
    """A sample of any kind as a tensor, the way torch users convert it."""
    if isinstance(s, torch.Tensor):
        return s
    if isinstance(s, list):
        return torch.tensor(s)
    return torch.from_numpy(np.array(s, order="C", copy=True))


def expected_dtype(samples) -> torch.dtype:
    """torch.cat's promotion over the samples' dtypes, lists inferred like torch.tensor."""
    dtypes = [to_tensor(s).dtype for s in samples]
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


@st.composite
def batches(draw, kinds=KINDS, dtypes=ALL_DTYPES, min_length=1):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    B = draw(st.integers(1, 300))
    pool = draw(st.lists(st.integers(min_length, 64), min_size=1, max_size=6))  # few lengths: ties
    lengths = rng.choice(pool, size=B).tolist()
    row = draw(st.sampled_from(ROWS))
    dtype = draw(st.sampled_from(dtypes))
    kind_set = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3, unique=True))
    if dtype == torch.bfloat16:
        kind_set = [k for k in kind_set if not k.startswith("ndarray")] or ["tensor"]
    kinds_per_sample = [kind_set[i % len(kind_set)] for i in range(B)]
    # an empty list has no elements to infer a dtype from: give those as tensors
    kinds_per_sample = ["tensor" if k == "list" and n == 0 else k
                        for k, n in zip(kinds_per_sample, lengths)]
    samples = [as_kind(make_sample(rng, n, row, dtype), k)
               for k, n in zip(kinds_per_sample, lengths)]
    return samples
