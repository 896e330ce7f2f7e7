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
from libc.stdint cimport (INT64_MAX, int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t,
                          uint32_t, uintptr_t)
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from cpython.object cimport PyObject

import numpy as np
cimport numpy as cnp

from ._core cimport _count_sort, _new_rows, _rank_tables, _scan_like_first
from ._core import check_storages

cnp.import_array()

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
    # consecutive offsets (batch-first padding): each sample is one run of the output,
    # widened in one vectorised loop instead of a row at a time
    cdef bint run = True
    for i in range(1, T):
        if offs[i] != offs[i - 1] + 1:
            run = False
            break
    cdef int64_t row_out = row_elems * _DST_BYTES[dst_code]
    if storages is not None:
        check_storages(storages, snapshot)
    with nogil:
        for i in range(B):
            if lens[i] and run:
                _dispatch(pair, <const char*><uintptr_t>ptrs[i],
                          <char*>out_ptr + (st[i] + offs[0]) * row_out, &_ROW0, 0, 1,
                          lens[i] * row_elems)
            elif lens[i]:
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
    cdef int64_t acc = 0, active
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
        tmp = _chunk_buffer(offs, T, row_elems * sb, chunk_bytes)
        if storages is not None:
            check_storages(storages, snapshot)
        with nogil:
            _widen_steps(<char*>out_ptr, srcs, lens, &bs[0], offs, T, row_elems, sb, db,
                         pair, chunk_bytes, tmp, csrcs, clens, coffs)
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


cdef char* _chunk_buffer(const int64_t* offs, int64_t T, int64_t rb,
                         int64_t chunk_bytes) except NULL:
    """A buffer for the largest chunk :func:`_widen_steps` scatters: the rows of the
    steps ``_chunk_end`` groups (``offs``: the ``T + 1`` step offsets), at most
    ``chunk_bytes // rb`` rows of ``rb`` bytes (a larger single step goes in slices)."""
    cdef int64_t cap = max(chunk_bytes // rb, 1), t0 = 0, t1, rows, max_rows = 0
    while t0 < T:
        t1 = _chunk_end(offs, t0, T, cap)
        rows = offs[t1] - offs[t0]
        if (rows if rows < cap else cap) > max_rows:
            max_rows = rows if rows < cap else cap
        t0 = t1
    cdef char* tmp = <char*>malloc(max_rows * rb + 64)
    if tmp == NULL:
        raise MemoryError()
    return tmp


cdef void _widen_steps(char* out, const uintptr_t* srcs, const int64_t* lens,
                       const int64_t* bs, const int64_t* offs, int64_t T, int64_t row_elems,
                       int64_t sb, int64_t db, int pair, int64_t chunk_bytes, char* tmp,
                       uintptr_t* csrcs, int64_t* clens, int64_t* coffs) noexcept nogil:
    """The packed, widened copy of checked tables: the sample of rank ``r`` (``lens[r]``
    rows of ``row_elems`` elements of ``sb`` bytes at ``srcs[r]``, non-increasing) has
    its step ``t`` at output row ``offs[t] + r`` (``db``-byte elements, kernel
    ``pair``). The steps go a chunk of about ``chunk_bytes`` source bytes at a time:
    scattered in the source type into ``tmp`` (from :func:`_chunk_buffer`) by the row
    kernels, then widened in one sequential pass into place; ``csrcs``, ``clens``
    (``bs[0]`` entries) and ``coffs`` (``T + 1``) are scratch."""
    cdef int64_t rb = row_elems * sb, cap = max(chunk_bytes // rb, 1)
    cdef int64_t t0 = 0, t1, A, r, k, rows, tile
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
                _dispatch(pair, tmp, out + (offs[t0] + r) * row_elems * db, &_ROW0,
                          0, 1, rows * row_elems)
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
        _dispatch(pair, tmp, out + offs[t0] * row_elems * db, &_ROW0, 0, 1,
                  rows * row_elems)
        t0 = t1


cdef str _code_of(cnp.PyArray_Descr* d):
    """The element code of a native dtype the kernels convert from or to (``"q"`` for
    int64...), or None."""
    cdef char k = (<cnp.dtype><PyObject*>d).kind
    cdef Py_ssize_t n = (<cnp.dtype><PyObject*>d).itemsize
    if k == b'u':
        return {1: "B", 2: "H", 4: "I"}.get(n)
    if k == b'i':
        return {1: "b", 2: "h", 4: "i", 8: "q"}.get(n)
    if k == b'f':
        return {4: "f", 8: "d"}.get(n)
    return None


def pack_arrays_cast(seqs, bint enforce_sorted, dtype, int64_t chunk_bytes=CAST_CHUNK_BYTES):
    """:func:`fastcollate._core.pack_arrays` converting into ``dtype`` (a NumPy dtype)
    inside the copy: ``fastcollate.pack(arrays, dtype=...)`` in one call, for a batch
    whose samples are exact, C-contiguous, aligned, native-endian ``ndarray`` of
    sample 0's dtype and trailing shape, converted exactly (:data:`LOSSLESS`: uint16
    into int64...). Returns ``(data, batch_sizes, sorted_indices, unsorted_indices)``
    as arrays, ``data`` of ``dtype`` in 64-byte aligned memory; None, with nothing
    allocated, for any other batch or conversion (the caller's general path takes it
    or names the odd sample). Zero-length samples, and unsorted ones with
    ``enforce_sorted``, raise as :func:`fastcollate._core.sort_lengths` does.

    The samples are kept in a private list while the GIL is released for the copy.

    >>> import numpy as np
    >>> data, bs, order, _ = pack_arrays_cast(
    ...     [np.array([7], np.uint16), np.array([1, 65535], np.uint16)], False,
    ...     np.dtype(np.int64))
    >>> data.dtype, data.tolist(), bs.tolist(), order.tolist()
    (dtype('int64'), [1, 7, 65535], [2, 1], [1, 0])
    """
    cdef list own = list(seqs)
    cdef Py_ssize_t B = len(own), i, r, k
    if B == 0 or chunk_bytes <= 0 or not isinstance(dtype, np.dtype):
        return None
    cdef object x = own[0]
    if not cnp.PyArray_CheckExact(x):
        return None
    cdef cnp.ndarray a, a0 = <cnp.ndarray>x
    cdef cnp.dtype dst = <cnp.dtype>dtype
    cdef cnp.PyArray_Descr* d0 = cnp.PyArray_DESCR(a0)
    cdef int nd0 = cnp.PyArray_NDIM(a0)
    cdef cnp.npy_intp* dims0 = cnp.PyArray_DIMS(a0)
    if nd0 < 1 or nd0 > 64 or not dst.isnative:
        return None
    cdef tuple codes = (_code_of(d0), _code_of(<cnp.PyArray_Descr*>dst))
    if codes not in LOSSLESS:
        return None
    cdef int pair = SOURCE_CODES[codes[0]] * 8 + TARGET_CODES[codes[1]]
    cdef int64_t sb = _SRC_BYTES[codes[0]], db = _DST_BYTES[codes[1]], row_elems = 1
    cdef cnp.npy_intp out_dims[64]
    for k in range(nd0):
        out_dims[k] = dims0[k]
        if k:
            row_elems *= dims0[k]
    cdef int64_t* scratch = <int64_t*>malloc(2 * B * sizeof(int64_t) + 8)
    if scratch == NULL:
        raise MemoryError()
    cdef uintptr_t* ptrs = <uintptr_t*>scratch
    cdef int64_t* lens_in = scratch + B
    try:
        if not _scan_like_first(own, d0, nd0, out_dims, ptrs, lens_in):
            return None
        bs_arr, si_arr, ui_arr = _count_sort(lens_in, B, enforce_sorted)
        return _cast_packed(ptrs, lens_in, B, <cnp.ndarray>bs_arr, si_arr, row_elems, sb,
                            db, pair, dst, nd0, out_dims, chunk_bytes), bs_arr, si_arr, ui_arr
    finally:
        free(scratch)


cdef cnp.ndarray _cast_packed(const uintptr_t* ptrs, const int64_t* lens_in, Py_ssize_t B,
                              cnp.ndarray bs_arr, si_arr, int64_t row_elems, int64_t sb,
                              int64_t db, int pair, cnp.dtype dst, int nd,
                              cnp.npy_intp* dims, int64_t chunk_bytes):
    """The output of :func:`pack_arrays_cast`: the samples (``ptrs``/``lens_in``, sorted
    by :func:`_count_sort` into ``bs_arr``/``si_arr``) in rank order, allocated
    (``dims[0]`` is set here) and written by :func:`_widen_steps`."""
    cdef Py_ssize_t T = bs_arr.shape[0]
    cdef const int64_t* bs = <const int64_t*>cnp.PyArray_DATA(bs_arr)
    cdef const int64_t* order = NULL
    if si_arr is not None:
        order = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>si_arr)
    cdef int64_t* lens = <int64_t*>malloc((4 * B + 2 * T + 2) * sizeof(int64_t))
    if lens == NULL:
        raise MemoryError()
    cdef uintptr_t* srcs = <uintptr_t*>(lens + B)
    cdef uintptr_t* csrcs = <uintptr_t*>(lens + 2 * B)
    cdef int64_t* clens = lens + 3 * B
    cdef int64_t* offs = lens + 4 * B
    cdef int64_t acc = 0
    cdef char* tmp = NULL
    cdef cnp.ndarray data
    try:
        acc = _rank_tables(lens_in, order, B, bs, T, lens, offs, ptrs, srcs)
        if row_elems > 0 and acc > INT64_MAX // (row_elems * db):
            raise ValueError(f"the packed data ({acc} rows of {row_elems * db} bytes) "
                             "overflows int64")
        dims[0] = acc
        data = _new_rows(dst, nd, dims, <size_t>(acc * row_elems * db))
        if row_elems == 0:
            return data
        tmp = _chunk_buffer(offs, T, row_elems * sb, chunk_bytes)
        with nogil:
            _widen_steps(<char*>cnp.PyArray_DATA(data), srcs, lens, bs, offs, T, row_elems,
                         sb, db, pair, chunk_bytes, tmp, csrcs, clens, offs + T + 1)
        return data
    finally:
        free(lens)
        free(tmp)
