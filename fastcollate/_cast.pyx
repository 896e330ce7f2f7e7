"""Widening copies: samples of one dtype written into a wider one inside the copy.

``pack(arrays_of_uint16, dtype=torch.int64)`` and the like: every element is read in
its own type and stored, converted, at its final place in the packed or padded output,
with no intermediate array of the target dtype. Only conversions that keep every value
exactly are served (unsigned/signed integers into wider integers, integers into a
float that holds them, float32 into float64); the Python layer sends anything else
the general way.

Placement follows :func:`fastcollate._core.read_lists`: row ``t`` of sample ``i`` goes to
output row ``starts[i] + offsets[t]`` (packed: ``starts`` = ranks, ``offsets`` = step
offsets; padded: see :mod:`fastcollate.padding`). No torch import.
"""
from libc.stdint cimport (int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t,
                          uintptr_t)

import numpy as np

from ._core import check_storages

# element codes (struct-module letters) of the sources and targets served
SOURCE_CODES = {"B": 0, "b": 1, "h": 2, "H": 3, "i": 4, "I": 5, "f": 6}
TARGET_CODES = {"h": 0, "i": 1, "q": 2, "f": 3, "d": 4}
# (source, target) pairs converted exactly
LOSSLESS = frozenset(
    [(s, "h") for s in "Bb"] + [(s, "i") for s in "BbhH"] + [(s, "q") for s in "BbhHiI"]
    + [(s, "f") for s in "BbhH"] + [(s, "d") for s in "BbhHiIf"])

ctypedef fused src_t:
    uint8_t
    int8_t
    int16_t
    uint16_t
    int32_t
    uint32_t
    float

ctypedef fused dst_t:
    int16_t
    int32_t
    int64_t
    float
    double


cdef inline void _sample(const src_t* s, dst_t* out, const int64_t* offs, int64_t start,
                         int64_t L, int64_t re) noexcept nogil:
    cdef int64_t t, k
    cdef dst_t* d
    for t in range(L):
        d = out + (start + offs[t]) * re
        for k in range(re):
            d[k] = <dst_t>s[t * re + k]


cdef void _dispatch(int pair, const char* src, char* out, const int64_t* offs, int64_t start,
                    int64_t L, int64_t re) noexcept nogil:
    if pair == 0:    # uint8_t -> int16_t
        _sample[uint8_t, int16_t](<const uint8_t*>src, <int16_t*>out, offs, start, L, re)
    elif pair == 8:    # int8_t -> int16_t
        _sample[int8_t, int16_t](<const int8_t*>src, <int16_t*>out, offs, start, L, re)
    elif pair == 1:    # uint8_t -> int32_t
        _sample[uint8_t, int32_t](<const uint8_t*>src, <int32_t*>out, offs, start, L, re)
    elif pair == 9:    # int8_t -> int32_t
        _sample[int8_t, int32_t](<const int8_t*>src, <int32_t*>out, offs, start, L, re)
    elif pair == 17:    # int16_t -> int32_t
        _sample[int16_t, int32_t](<const int16_t*>src, <int32_t*>out, offs, start, L, re)
    elif pair == 25:    # uint16_t -> int32_t
        _sample[uint16_t, int32_t](<const uint16_t*>src, <int32_t*>out, offs, start, L, re)
    elif pair == 2:    # uint8_t -> int64_t
        _sample[uint8_t, int64_t](<const uint8_t*>src, <int64_t*>out, offs, start, L, re)
    elif pair == 10:    # int8_t -> int64_t
        _sample[int8_t, int64_t](<const int8_t*>src, <int64_t*>out, offs, start, L, re)
    elif pair == 18:    # int16_t -> int64_t
        _sample[int16_t, int64_t](<const int16_t*>src, <int64_t*>out, offs, start, L, re)
    elif pair == 26:    # uint16_t -> int64_t
        _sample[uint16_t, int64_t](<const uint16_t*>src, <int64_t*>out, offs, start, L, re)
    elif pair == 34:    # int32_t -> int64_t
        _sample[int32_t, int64_t](<const int32_t*>src, <int64_t*>out, offs, start, L, re)
    elif pair == 42:    # uint32_t -> int64_t
        _sample[uint32_t, int64_t](<const uint32_t*>src, <int64_t*>out, offs, start, L, re)
    elif pair == 3:    # uint8_t -> float
        _sample[uint8_t, float](<const uint8_t*>src, <float*>out, offs, start, L, re)
    elif pair == 11:    # int8_t -> float
        _sample[int8_t, float](<const int8_t*>src, <float*>out, offs, start, L, re)
    elif pair == 19:    # int16_t -> float
        _sample[int16_t, float](<const int16_t*>src, <float*>out, offs, start, L, re)
    elif pair == 27:    # uint16_t -> float
        _sample[uint16_t, float](<const uint16_t*>src, <float*>out, offs, start, L, re)
    elif pair == 4:    # uint8_t -> double
        _sample[uint8_t, double](<const uint8_t*>src, <double*>out, offs, start, L, re)
    elif pair == 12:    # int8_t -> double
        _sample[int8_t, double](<const int8_t*>src, <double*>out, offs, start, L, re)
    elif pair == 20:    # int16_t -> double
        _sample[int16_t, double](<const int16_t*>src, <double*>out, offs, start, L, re)
    elif pair == 28:    # uint16_t -> double
        _sample[uint16_t, double](<const uint16_t*>src, <double*>out, offs, start, L, re)
    elif pair == 36:    # int32_t -> double
        _sample[int32_t, double](<const int32_t*>src, <double*>out, offs, start, L, re)
    elif pair == 44:    # uint32_t -> double
        _sample[uint32_t, double](<const uint32_t*>src, <double*>out, offs, start, L, re)
    elif pair == 52:    # float -> double
        _sample[float, double](<const float*>src, <double*>out, offs, start, L, re)


def cast_scatter(src_ptrs, lengths, starts, offsets, Py_ssize_t row_elems, str src_code,
                 str dst_code, uintptr_t out_ptr, int64_t n_out_rows, list storages=None,
                 snapshot=None):
    """Write sample ``i`` (``lengths[i]`` contiguous rows of ``row_elems`` elements of
    type ``src_code`` at ``src_ptrs[i]``; 0 with length 0 to skip it) into the output
    of ``n_out_rows`` rows of type ``dst_code`` at ``out_ptr``, row ``t`` at row
    ``starts[i] + offsets[t]``, converting every element.

    Low-level, like :func:`fastcollate._core.scatter`: the caller guarantees the
    sources; every output row is checked to lie inside the output first (ValueError),
    ``(src_code, dst_code)`` must be in :data:`LOSSLESS`. ``storages``/``snapshot``
    as in :func:`fastcollate._core.scatter`. The GIL is released while copying.

    >>> import numpy as np
    >>> a, b = np.array([7, 65535], dtype=np.uint16), np.array([1], dtype=np.uint16)
    >>> out = np.zeros(3, dtype=np.int64)
    >>> ptrs = [a.ctypes.data, b.ctypes.data]
    >>> cast_scatter(ptrs, [2, 1], [0, 1], [0, 2], 1, "H", "q", out.ctypes.data, 3)
    >>> out.tolist()
    [7, 1, 65535]
    """
    if (src_code, dst_code) not in LOSSLESS:
        raise ValueError(f"no exact conversion from {src_code!r} to {dst_code!r}")
    cdef int pair = SOURCE_CODES[src_code] * 8 + TARGET_CODES[dst_code]
    # private copies of the tables: a caller changing them meanwhile cannot void the checks
    cdef const int64_t[::1] ptrs = np.array(src_ptrs, dtype=np.int64, order="C")
    cdef const int64_t[::1] lens = np.array(lengths, dtype=np.int64, order="C")
    cdef const int64_t[::1] st = np.array(starts, dtype=np.int64, order="C")
    cdef const int64_t[::1] offs = np.array(offsets, dtype=np.int64, order="C")
    cdef Py_ssize_t B = lens.shape[0], i, T = offs.shape[0]
    if ptrs.shape[0] != B or st.shape[0] != B:
        raise ValueError("src_ptrs, lengths and starts differ in size")
    if row_elems < 0 or n_out_rows < 0:
        raise ValueError("row_elems and n_out_rows must be >= 0")
    for i in range(1, T):
        if offs[i] < offs[i - 1]:
            raise ValueError("offsets must be non-decreasing")
    for i in range(B):
        if lens[i] < 0 or lens[i] > T:
            raise ValueError(f"sample {i} has length {lens[i]}, outside 0..{T}")
        if lens[i] and (st[i] + offs[0] < 0 or st[i] + offs[lens[i] - 1] >= n_out_rows):
            raise ValueError(f"sample {i} would be written outside the output's "
                             f"{n_out_rows} rows")
        if lens[i] and row_elems and ptrs[i] == 0:     # rows of 0 elements: no data
            raise ValueError(f"sample {i} has no address")
    if B == 0 or row_elems == 0:
        return
    if storages is not None:
        check_storages(storages, snapshot)
    with nogil:
        for i in range(B):
            if lens[i]:
                _dispatch(pair, <const char*><uintptr_t>ptrs[i], <char*>out_ptr, &offs[0],
                          st[i], lens[i], row_elems)
