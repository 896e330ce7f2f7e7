# cython: language_level=3
"""Kernels of fastcollate's flat stores (values + offsets): offsets checks, selection of
a batch by indices, and the converting gathers (uint16/uint32 token ids to int64 while
copying into the packed or padded layout).

Like :mod:`fastcollate._core`, this module does not import torch. The Python layer
(:mod:`fastcollate.store`) owns the policy; these functions check what they need to
stay memory-safe: every read is bounded by the store's real size, every write by the
output's, whatever the tables they are given.
"""
cimport cython
from libc.stdint cimport INT64_MAX, int64_t, uintptr_t
from libc.stdlib cimport free, malloc

import numpy as np
cimport numpy as cnp

from ._core cimport _count_sort, _new_rows, _pack_rows, _rank_tables

cnp.import_array()

cdef extern from "_gather.h" nogil:
    int fc_can_convert(char s, char d)
    int fc_convert_packed(char s, char d, char* out, const char* const* srcs,
                          const int64_t* lens, const int64_t* offsets, int64_t B,
                          int64_t row)
    int fc_convert_padded(char s, char d, char* out, const char* const* srcs,
                          const int64_t* lens, int64_t B, int64_t T, int64_t row,
                          int batch_first, int left, const char* pad)


def check_offsets(const int64_t[::1] offsets, int64_t n_rows, str what="offsets"):
    """Raise ValueError naming the first entry that breaks the rules: at least one entry,
    ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == n_rows`` (the rows of the
    values). One pass, no temporary array (the table may be memory-mapped and large)."""
    cdef Py_ssize_t n = offsets.shape[0], i, bad = -1
    if n == 0:
        raise ValueError(f"{what} is empty: a store of n samples needs n + 1 offsets "
                         "(the first 0)")
    if offsets[0] != 0:
        raise ValueError(f"{what}[0] is {offsets[0]}, expected 0")
    with nogil:
        for i in range(1, n):
            if offsets[i] < offsets[i - 1]:
                bad = i
                break
    if bad >= 0:
        raise ValueError(f"{what} decrease at entry {bad} ({offsets[bad - 1]} then "
                         f"{offsets[bad]}): they must be non-decreasing (sample "
                         f"{bad - 1} would have a negative length)")
    if offsets[n - 1] != n_rows:
        raise ValueError(f"{what}[-1] is {offsets[n - 1]} but the values have {n_rows} "
                         f"rows: the last offset must be the number of rows"
                         + (" (values shorter than the offsets claim)"
                            if offsets[n - 1] > n_rows else ""))


def select(const int64_t[::1] offsets, indices, cnp.ndarray values):
    """Lengths and first-row addresses of the samples ``indices`` of a store whose rows
    are the leading dimension of ``values`` (a C-contiguous array; its address, row
    count and row size are read from the array itself, now).

    ``indices`` must be integers in ``0 .. len(offsets) - 2`` (IndexError naming the
    position of the first that is not). The offsets of every selected sample are checked
    again (``0 <= offsets[i] <= offsets[i + 1] <= rows``): an address returned here
    never points outside the values, whatever was done to the table since it was
    validated. Returns ``(lengths, ptrs)``, int64 arrays in the order of ``indices``.
    """
    if not cnp.PyArray_IS_C_CONTIGUOUS(values) or cnp.PyArray_NDIM(values) < 1:
        raise ValueError("values must be a C-contiguous array with at least one dimension")
    cdef int64_t n_rows = cnp.PyArray_DIM(values, 0)
    cdef int64_t row_bytes = cnp.PyArray_ITEMSIZE(values)
    cdef int d
    for d in range(1, cnp.PyArray_NDIM(values)):
        row_bytes *= cnp.PyArray_DIM(values, d)
    cdef uintptr_t base = <uintptr_t>cnp.PyArray_DATA(values)
    cdef const int64_t[::1] idx = as_indices(indices)
    cdef Py_ssize_t B = idx.shape[0], k
    cdef int64_t n = offsets.shape[0] - 1, i, a, b, bad = -1
    lengths = np.empty(B, dtype=np.int64)
    ptrs = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] lens = lengths
    cdef int64_t[::1] ps = ptrs
    with nogil:
        for k in range(B):
            i = idx[k]
            if i < 0 or i >= n:
                bad = k
                break
            a = offsets[i]
            b = offsets[i + 1]
            if a < 0 or a > b or b > n_rows:
                bad = k
                break
            lens[k] = b - a
            ps[k] = <int64_t>(base + <uintptr_t>(a * row_bytes))
    if bad >= 0:
        i = idx[bad]
        if i < 0 or i >= n:
            raise IndexError(f"index {i} (position {bad}) is out of range for a store of "
                             f"{n} samples (0..{n - 1}; negative indices are refused)")
        raise ValueError(f"sample {i}: offsets {offsets[i]}..{offsets[i + 1]} are outside "
                         f"the store's {n_rows} rows (the offsets were changed after the "
                         "store was checked)")
    return lengths, ptrs


def as_indices(indices):
    """``indices`` as a C-contiguous 1-D int64 array (TypeError for non-integers,
    OverflowError for integers beyond int64)."""
    if type(indices) is np.ndarray and (<cnp.ndarray>indices).dtype == np.int64 and \
            (<cnp.ndarray>indices).ndim == 1:
        return np.ascontiguousarray(indices)
    arr = np.asarray(indices)
    if arr.ndim != 1:
        raise TypeError(f"indices must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.max() > 2**63 - 1:
        raise OverflowError("indices do not fit int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def checked_indices(indices, int64_t n, str what="a store"):
    """A private, read-only int64 copy of ``indices`` (1-D integers), each in
    ``0 .. n - 1``: IndexError naming the position of the first that is not."""
    src = as_indices(indices)
    cdef cnp.ndarray out = np.array(src, dtype=np.int64, copy=True)
    cdef const int64_t[::1] idx = out
    cdef Py_ssize_t k, bad = -1
    with nogil:
        for k in range(idx.shape[0]):
            if idx[k] < 0 or idx[k] >= n:
                bad = k
                break
    if bad >= 0:
        raise IndexError(f"index {idx[bad]} (position {bad}) is out of range for {what} of "
                         f"{n} samples (0..{n - 1}; negative indices are refused)")
    out.flags.writeable = False
    return out


def can_convert(str src, str dst):
    """Whether a converting copy from element code ``src`` to ``dst`` exists (codes:
    b B h H i I q Q for the integers, f d for float32/float64)."""
    return len(src) == 1 and len(dst) == 1 and fc_can_convert(
        <char>ord(src), <char>ord(dst)) != 0


cdef int _check_codes(str src, str dst) except -1:
    if not can_convert(src, dst):
        raise ValueError(f"no converting copy from {src!r} to {dst!r}")
    return 0


def convert_packed(str src, str dst, ptrs, lengths, sorted_indices, int64_t row,
                   uintptr_t out_ptr, int64_t out_rows):
    """Write samples (``lengths[i]`` rows of ``row`` elements of code ``src`` at
    ``ptrs[i]``, input order) into the packed layout at ``out_ptr``, converted to
    ``dst``. ``sorted_indices`` is the rank order (None: already sorted); the step
    offsets are derived here from the lengths, and the output must hold ``out_rows``
    rows, at least their sum (ValueError otherwise). The tables are copied first; the
    GIL is released while copying."""
    _check_codes(src, dst)
    cdef const int64_t[::1] ptrs_in = np.array(ptrs, dtype=np.int64, order="C")
    cdef const int64_t[::1] lens_in = np.array(lengths, dtype=np.int64, order="C")
    cdef Py_ssize_t B = lens_in.shape[0], r, i, t, T
    if ptrs_in.shape[0] != B:
        raise ValueError("ptrs and lengths differ in size")
    if B == 0 or row <= 0:
        return
    cdef const int64_t[::1] order
    if sorted_indices is not None:
        order = np.array(sorted_indices, dtype=np.int64, order="C")
        if order.shape[0] != B:
            raise ValueError("sorted_indices and lengths differ in size")
    cdef int64_t* lens = <int64_t*>malloc(2 * B * sizeof(int64_t))
    if lens == NULL:
        raise MemoryError()
    cdef uintptr_t* srcs = <uintptr_t*>(lens + B)
    cdef int64_t* offs = NULL
    cdef int64_t acc = 0
    cdef Py_ssize_t active = B
    cdef char s_code = <char>ord(src), d_code = <char>ord(dst)
    try:
        for r in range(B):
            i = r if sorted_indices is None else order[r]
            if i < 0 or i >= B:
                raise ValueError(f"sorted_indices[{r}] = {i} is out of range")
            lens[r] = lens_in[i]
            srcs[r] = <uintptr_t>ptrs_in[i]
            if lens[r] < 1 or (r > 0 and lens[r] > lens[r - 1]):
                raise ValueError("lengths must be >= 1 and non-increasing in rank order")
        T = lens[0]
        offs = <int64_t*>malloc((T + 1) * sizeof(int64_t))
        if offs == NULL:
            raise MemoryError()
        for t in range(T):
            while active > 0 and lens[active - 1] <= t:
                active -= 1
            offs[t] = acc
            acc += active
        offs[T] = acc
        if acc > out_rows:
            raise ValueError(f"the samples have {acc} rows but the output holds {out_rows}")
        with nogil:
            fc_convert_packed(s_code, d_code, <char*>out_ptr,
                              <const char* const*>srcs, lens, offs, B, row)
    finally:
        free(lens)
        free(offs)


def convert_padded(str src, str dst, ptrs, lengths, int64_t T, int64_t row,
                   uintptr_t out_ptr, int64_t out_rows, bint batch_first, bint left,
                   bytes pad):
    """Write samples into a padded ``(B, T, row)`` (or ``(T, B, row)``) buffer of
    ``out_rows >= B * T`` rows at ``out_ptr``, converting each element from ``src`` to
    ``dst``; padding elements are ``pad`` (one element of ``dst``, as bytes)."""
    _check_codes(src, dst)
    cdef const int64_t[::1] ptrs_in = np.array(ptrs, dtype=np.int64, order="C")
    cdef const int64_t[::1] lens = np.array(lengths, dtype=np.int64, order="C")
    cdef Py_ssize_t B = lens.shape[0], i
    cdef int64_t size = 8 if dst in ("q", "d") else 4
    if ptrs_in.shape[0] != B:
        raise ValueError("ptrs and lengths differ in size")
    if len(pad) != size:
        raise ValueError(f"pad must be one {dst!r} element ({size} bytes), got {len(pad)}")
    for i in range(B):
        if lens[i] < 0 or lens[i] > T:
            raise ValueError(f"sample {i} has length {lens[i]}, outside 0..{T}")
    if B == 0 or T <= 0 or row <= 0:
        return
    if B * T > out_rows:
        raise ValueError(f"the padded batch has {B * T} rows but the output holds {out_rows}")
    cdef const char* p = pad
    cdef char s_code = <char>ord(src), d_code = <char>ord(dst)
    with nogil:
        fc_convert_padded(s_code, d_code, <char*>out_ptr,
                          <const char* const*>&ptrs_in[0], &lens[0], B, T, row,
                          batch_first, left, p)


def pack_selection(const int64_t[::1] offsets, indices, cnp.ndarray values,
                   bint enforce_sorted=False, str convert=None):
    """:func:`fastcollate.pack` of the samples ``indices`` of a store in one call: their
    rows found by :func:`select` (indices and offsets checked against the values' real
    size), then the counting sort, the allocation and the row scatter of
    :func:`fastcollate._core.pack_arrays`, as ``(data, batch_sizes, sorted_indices,
    unsorted_indices)`` arrays, ``data`` of the values' dtype; with ``convert`` (two
    element codes, the first the values'), converted while copying by the converting
    copy of :func:`convert_packed` into an output of the second's dtype.

    None, with nothing allocated, when the values are not aligned, native-endian plain
    numbers, or a sample has length 0 or the lengths are unsorted with
    ``enforce_sorted`` (the planned path names the store's sample). ``values`` stays
    referenced here while the GIL is released for the copy."""
    if (not cnp.PyArray_ISCARRAY_RO(values) or not cnp.PyArray_ISNOTSWAPPED(values)
            or values.dtype.kind not in "biufc" or cnp.PyArray_NDIM(values) > 64):
        return None
    cdef cnp.dtype dst = values.dtype
    if convert is not None:
        _check_codes(convert[:1], convert[1:])
        if np.dtype(convert[0]) != values.dtype:
            raise ValueError(f"code {convert[0]!r} does not read {values.dtype} values")
        dst = np.dtype(convert[1])
    lengths, ptrs = select(offsets, indices, values)
    cdef Py_ssize_t B = lengths.shape[0], k
    if B == 0:
        return None
    cdef int nd = cnp.PyArray_NDIM(values)
    cdef cnp.npy_intp dims[64]
    cdef Py_ssize_t row_bytes = cnp.PyArray_ITEMSIZE(values), row_elems = 1
    for k in range(nd):
        dims[k] = cnp.PyArray_DIM(values, k)
        if k:
            row_bytes *= dims[k]
            row_elems *= dims[k]
    cdef const uintptr_t* srcs = <const uintptr_t*>cnp.PyArray_DATA(<cnp.ndarray>ptrs)
    cdef const int64_t* lens = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>lengths)
    try:
        if convert is None:
            return _pack_rows(srcs, lens, B, row_bytes, dst, nd, dims, enforce_sorted)
        sorted_ = _count_sort(lens, B, enforce_sorted)
    except ValueError:      # a zero length, unsorted: the planned path names the sample
        return None
    return (_converted_rows(srcs, lens, B, sorted_, convert, dst, nd, dims, row_elems),) + \
        sorted_


cdef cnp.ndarray _converted_rows(const uintptr_t* ptrs, const int64_t* lens_in,
                                 Py_ssize_t B, tuple sorted_, str convert, cnp.dtype dst,
                                 int nd, cnp.npy_intp* dims, int64_t row_elems):
    """The packed output of :func:`pack_selection` with ``convert``: the samples in the
    rank order of ``sorted_`` (:func:`_count_sort`'s tables), allocated (``dims[0]`` is
    set here) and written by ``fc_convert_packed``."""
    bs_arr, si_arr, _ = sorted_
    cdef Py_ssize_t T = (<cnp.ndarray>bs_arr).shape[0]
    cdef const int64_t* bs = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>bs_arr)
    cdef const int64_t* order = NULL
    if si_arr is not None:
        order = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>si_arr)
    cdef int64_t* lens = <int64_t*>malloc((2 * B + T + 1) * sizeof(int64_t))
    if lens == NULL:
        raise MemoryError()
    cdef uintptr_t* srcs = <uintptr_t*>(lens + B)
    cdef int64_t* offs = lens + 2 * B
    cdef int64_t acc = 0
    cdef char s_code = <char>ord(convert[0]), d_code = <char>ord(convert[1])
    cdef cnp.ndarray data
    try:
        acc = _rank_tables(lens_in, order, B, bs, T, lens, offs, ptrs, srcs)
        if row_elems > 0 and acc > INT64_MAX // (row_elems * dst.itemsize):
            raise ValueError(f"the packed data ({acc} rows) overflows int64")
        dims[0] = acc
        data = _new_rows(dst, nd, dims, <size_t>(acc * row_elems * dst.itemsize))
        if row_elems > 0:
            with nogil:
                fc_convert_packed(s_code, d_code, <char*>cnp.PyArray_DATA(data),
                                  <const char* const*>srcs, lens, offs, B, row_elems)
        return data
    finally:
        free(lens)
