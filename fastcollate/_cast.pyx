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
from libc.stdlib cimport free, malloc
from libc.string cimport memset

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


# ---------------------------------------------------------------------------------------
# Packed layout: the narrow sources scattered by the row kernels, then widened in order
# ---------------------------------------------------------------------------------------

cdef extern from "_copy.h" nogil:
    void fc_scatter(char* out, const char* const* srcs, const int64_t* lens,
                    const int64_t* offsets, int64_t B, int64_t row_bytes, int64_t block,
                    int stream, int64_t tile, int partial)

_SRC_BYTES = {"B": 1, "b": 1, "h": 2, "H": 2, "i": 4, "I": 4, "f": 4}
_DST_BYTES = {"h": 2, "i": 4, "q": 8, "f": 4, "d": 8}
# one step at row 0: _dispatch then widens n elements in order (a row of n elements)
cdef int64_t _ROW0 = 0
# source bytes scattered per chunk (in L2), then widened into the output (128 KB-2 MB
# measured alike; 32 KB 1.6x slower on 8192 x ~500)
CAST_CHUNK_BYTES = 512 << 10


def cast_pack(src_ptrs, lengths, sorted_indices, batch_sizes, Py_ssize_t row_elems,
              str src_code, str dst_code, uintptr_t out_ptr, int64_t n_out_rows,
              list storages=None, snapshot=None, int64_t chunk_bytes=CAST_CHUNK_BYTES):
    """:func:`cast_scatter` for the packed layout: sample ``sorted_indices[r]`` (None:
    ``r``) has rank ``r``, ``batch_sizes`` as from
    :func:`fastcollate._core.sort_lengths`. The steps are taken a chunk of about
    ``chunk_bytes`` source bytes at a time: the chunk's rows (contiguous in the packed
    output) are scattered in the source type into a private buffer by the row kernels
    (tiles, register transposes), then widened in one sequential pass into place. One
    converted store per element and no scattered access to the wide output (uint16 ->
    int64, 8192 x ~500: 18 -> 4 ms, where a per-sample loop wrote each element to
    another cache line).

    Every table is checked first (ValueError): ``sorted_indices`` a permutation, the
    lengths >= 1 and non-increasing in rank order, ``batch_sizes`` the counts of
    samples longer than each step, their sum at most ``n_out_rows``.
    """
    if (src_code, dst_code) not in LOSSLESS:
        raise ValueError(f"no exact conversion from {src_code!r} to {dst_code!r}")
    cdef int pair = SOURCE_CODES[src_code] * 8 + TARGET_CODES[dst_code]
    cdef int64_t sb = _SRC_BYTES[src_code], db = _DST_BYTES[dst_code]
    cdef const int64_t[::1] ptrs_in = np.array(src_ptrs, dtype=np.int64, order="C")
    cdef const int64_t[::1] lens_in = np.array(lengths, dtype=np.int64, order="C")
    cdef const int64_t[::1] bs = np.array(batch_sizes, dtype=np.int64, order="C")
    cdef Py_ssize_t B = lens_in.shape[0], T = bs.shape[0], r, i, t
    if ptrs_in.shape[0] != B:
        raise ValueError("src_ptrs and lengths differ in size")
    if row_elems < 0 or n_out_rows < 0 or chunk_bytes <= 0:
        raise ValueError("row_elems, n_out_rows and chunk_bytes must be >= 0 (> 0)")
    cdef const int64_t[::1] order
    if sorted_indices is not None:
        order = np.array(sorted_indices, dtype=np.int64, order="C")
        if order.shape[0] != B:
            raise ValueError("sorted_indices and lengths differ in size")
    if B == 0:
        return
    cdef int64_t* lens = <int64_t*>malloc((4 * B + 2 * T + 2) * sizeof(int64_t))
    if lens == NULL:
        raise MemoryError()
    cdef uintptr_t* srcs = <uintptr_t*>(lens + B)
    cdef uintptr_t* csrcs = <uintptr_t*>(lens + 2 * B)    # a chunk's sub-batch
    cdef int64_t* clens = lens + 3 * B
    cdef int64_t* offs = lens + 4 * B                       # T + 1 step offsets
    cdef int64_t* coffs = offs + T + 1
    cdef char* seen = NULL
    cdef char* tmp = NULL
    cdef int64_t acc = 0, active, t0, t1, k, rows, max_rows = 0, A, cap, tile, rb
    try:
        seen = <char*>malloc(B)
        if seen == NULL:
            raise MemoryError()
        memset(seen, 0, B)
        for r in range(B):
            i = r if sorted_indices is None else order[r]
            if i < 0 or i >= B or seen[i]:
                raise ValueError(f"sorted_indices is not a permutation (rank {r}: {i})")
            seen[i] = 1
            lens[r] = lens_in[i]
            srcs[r] = <uintptr_t>ptrs_in[i]
            if lens[r] < 1 or (r > 0 and lens[r] > lens[r - 1]):
                raise ValueError("lengths must be >= 1 and non-increasing in rank order")
            if row_elems and srcs[r] == 0:
                raise ValueError(f"sample {i} has no address")
        if lens[0] != T:
            raise ValueError(f"batch_sizes has {T} steps, the longest sample {lens[0]}")
        active = B
        for t in range(T):
            while active > 0 and lens[active - 1] <= t:
                active -= 1
            if bs[t] != active:
                raise ValueError(f"batch_sizes[{t}] = {bs[t]}, but {active} samples are "
                                 f"longer than {t}")
            offs[t] = acc
            acc += active
        offs[T] = acc
        if acc > n_out_rows:
            raise ValueError(f"the samples have {acc} rows but the output holds {n_out_rows}")
        if row_elems == 0:
            return
        rb = row_elems * sb
        cap = max(chunk_bytes // rb, 1)
        t0 = 0
        while t0 < T:       # the largest chunk: about chunk_bytes (a larger single
            t1 = _chunk_end(offs, t0, T, cap)   # step goes in slices of ranks)
            rows = offs[t1] - offs[t0]
            if (rows if rows < cap else cap) > max_rows:
                max_rows = rows if rows < cap else cap
            t0 = t1
        tmp = <char*>malloc(max_rows * rb + 64)
        if tmp == NULL:
            raise MemoryError()
        if storages is not None:
            check_storages(storages, snapshot)
        with nogil:
            t0 = 0
            while t0 < T:
                t1 = _chunk_end(offs, t0, T, cap)
                A = bs[t0]      # ranks 0..A-1 are active at t0: their steps t0..t1-1
                if A > cap:     # one step, over chunk_bytes: slices of cap ranks
                    r = 0
                    while r < A:
                        rows = A - r if A - r < cap else cap
                        for k in range(rows):
                            csrcs[k] = srcs[r + k] + <uintptr_t>(t0 * rb)
                            clens[k] = 1
                        coffs[0] = 0
                        coffs[1] = rows
                        fc_scatter(tmp, <const char* const*>csrcs, clens, coffs, rows, rb,
                                   16 if rb <= 16 else 8, 0, 0, 0)
                        _dispatch(pair, tmp, <char*>out_ptr + (offs[t0] + r) * row_elems * db,
                                  &_ROW0, 0, 1, rows * row_elems)
                        r += rows
                    t0 = t1
                    continue
                for r in range(A):
                    csrcs[r] = srcs[r] + <uintptr_t>(t0 * rb)
                    clens[r] = (lens[r] if lens[r] < t1 else t1) - t0
                for k in range(t1 - t0 + 1):
                    coffs[k] = offs[t0 + k] - offs[t0]
                rows = coffs[t1 - t0]
                tile = 0            # tiles of up to 64 steps for 1-16 byte rows
                if rb <= 16 and (rb & (rb - 1)) == 0 and t1 - t0 >= 8:
                    tile = 64 if t1 - t0 >= 64 else t1 - t0
                fc_scatter(tmp, <const char* const*>csrcs, clens, coffs, A, rb,
                           16 if rb <= 16 else 8, 0, tile, 0)
                _dispatch(pair, tmp, <char*>out_ptr + offs[t0] * row_elems * db, &_ROW0,
                          0, 1, rows * row_elems)
                t0 = t1
    finally:
        free(lens)
        free(seen)
        free(tmp)


cdef inline int64_t _chunk_end(const int64_t* offs, int64_t t0, int64_t T,
                               int64_t max_rows) noexcept nogil:
    """End of the chunk of steps from ``t0``: at least one step, then while its rows
    stay within ``max_rows``."""
    cdef int64_t t1 = t0 + 1
    while t1 < T and offs[t1 + 1] - offs[t0] <= max_rows:
        t1 += 1
    return t1
