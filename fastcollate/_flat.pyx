# cython: language_level=3
"""Kernels of the flattened layout: samples concatenated in input order.

Sample ``i`` occupies rows ``cu_seqlens[i] .. cu_seqlens[i + 1]`` of the output, where
``cu_seqlens`` is the exclusive prefix sum of the lengths (flash-attention's varlen
``cu_seqlens``, the offsets of a ``torch.nested`` jagged tensor). Like
:mod:`fastcollate._core` this module does not import torch: it works on NumPy arrays
and raw addresses, checks every table against the lengths and every write against the
output size it is given, and releases the GIL while it copies.

Lists of Python numbers need no kernel here: ``_core.read_lists``/``_core.read_ints``
write element ``t`` of sample ``i`` to ``offsets[t] + ranks[i]``, which is the
flattened layout with ``offsets = arange(T + 1)`` and ``ranks = cu_seqlens[:-1]``.
"""
cimport cython
from libc.stdint cimport INT32_MAX, INT64_MAX, int32_t, int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np
cimport numpy as cnp

from ._core import STREAM_MIN_BYTES, check_storages

cnp.import_array()

cdef extern from "_flat.h" nogil:
    # the bulk copy of the padded layout (_copy.h): memcpy, or non-temporal stores in
    # the aligned middle (stream 1: 16-byte, 2: 32-byte where the CPU has AVX2)
    void fc_bulk_copy(char* dst, const char* src, size_t n, int stream)
    void fc_flat_fence(int stream)


cdef cnp.ndarray _table(object x, bint private):
    """``x`` as a 1-D C-contiguous int64 array (through NumPy's C API: a typed
    memoryview costs a microsecond per table). ``private``: always a fresh copy, for
    tables that bound writes made without the GIL, so that nobody can change them
    under the kernel."""
    cdef int flags = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if private:
        flags |= cnp.NPY_ARRAY_ENSURECOPY
    return <cnp.ndarray>cnp.PyArray_FROMANY(x, cnp.NPY_INT64, 1, 1, flags)


cdef inline int64_t* _data(cnp.ndarray a) noexcept:
    return <int64_t*>cnp.PyArray_DATA(a)


cdef int64_t _total(const int64_t* lens, Py_ssize_t B) except -1:
    """Sum of the lengths; each must be >= 0 and the sum must fit int64."""
    cdef int64_t acc = 0, l
    cdef Py_ssize_t i
    for i in range(B):
        l = lens[i]
        if l < 0 or l > INT64_MAX - acc:
            raise ValueError(f"sample {i} has length {l}: negative, or the total length "
                             "overflows int64")
        acc += l
    return acc


cdef int64_t _fitting_total(const int64_t* lens, Py_ssize_t B, int64_t n_out) except -1:
    """The total of the lengths, which must fit in an output of ``n_out`` values."""
    cdef int64_t total = _total(lens, B)
    if total > n_out:
        raise ValueError(f"the lengths add up to {total} values but the output holds {n_out}")
    return total


def cu_seqlens(lengths, uintptr_t out_ptr, int itemsize):
    """Write the ``B + 1`` cumulative offsets of ``lengths`` to ``out_ptr``.

    ``itemsize`` is 4 (int32, what flash-attention takes) or 8 (int64). Returns
    ``(total, max_len, min_len)`` as Python ints (0s for an empty batch), so that no
    caller has to read them back from a device. OverflowError when the total does not
    fit int32 and int32 offsets were asked for.

    >>> import numpy as np
    >>> out = np.empty(4, dtype=np.int32)
    >>> cu_seqlens(np.array([3, 1, 2]), out.ctypes.data, 4), out.tolist()
    ((6, 3, 1), [0, 3, 4, 6])
    """
    # a shared table is fine here: only B + 1 entries are written, whatever it holds
    cdef cnp.ndarray arr = _table(lengths, False)
    cdef const int64_t* lens = _data(arr)
    if itemsize != 4 and itemsize != 8:
        raise ValueError(f"itemsize must be 4 (int32) or 8 (int64), got {itemsize}")
    cdef Py_ssize_t B = cnp.PyArray_DIM(arr, 0), i
    cdef int64_t total = _total(lens, B), mx = 0, mn = INT64_MAX, acc = 0, l
    if itemsize == 4 and total > INT32_MAX:
        raise OverflowError(f"the batch has {total} rows: int32 cu_seqlens cannot hold "
                            "it; pass offsets_dtype=torch.int64")
    cdef int32_t* o32 = <int32_t*>out_ptr
    cdef int64_t* o64 = <int64_t*>out_ptr
    with nogil:
        for i in range(B + 1):
            if itemsize == 4:
                o32[i] = <int32_t>acc
            else:
                o64[i] = acc
            if i < B:
                l = lens[i]
                acc += l
                if l > mx:
                    mx = l
                if l < mn:
                    mn = l
    return total, mx, (mn if B else 0)


def concat(src_ptrs, lengths, Py_ssize_t row_bytes, uintptr_t out_ptr, int64_t n_out,
           starts=None, list storages=None, snapshot=None, int stream=-1):
    """Copy contiguous samples one after another into the buffer at ``out_ptr``.

    Low-level, like ``_core.scatter``: sample ``i`` is ``lengths[i]`` contiguous rows
    of ``row_bytes`` bytes at ``src_ptrs[i]`` (0: leave its rows alone, someone else
    writes them), in input order; the buffer holds ``n_out`` rows (ValueError if the
    lengths need more). ``stream``: non-temporal stores (as in ``_core.pad_scatter``);
    -1 (default) uses them when the output is over ``STREAM_MIN_BYTES``, where they
    save the read of every destination line. ``starts``, if given, is the output row where each sample
    begins (rows of fixed-length packing, with gaps); each sample must fit in
    ``0..n_out`` (ValueError naming it otherwise). ``storages``/``snapshot`` as in ``_core.scatter``: checked as
    the last step before the GIL is released. The tables are copied first, so a caller
    changing them meanwhile cannot void the checks.
    """
    cdef cnp.ndarray ptrs_arr = _table(src_ptrs, True)
    cdef cnp.ndarray lens_arr = _table(lengths, True)
    cdef const int64_t* ptrs = _data(ptrs_arr)
    cdef const int64_t* lens = _data(lens_arr)
    cdef Py_ssize_t B = cnp.PyArray_DIM(lens_arr, 0), i
    if cnp.PyArray_DIM(ptrs_arr, 0) != B:
        raise ValueError("src_ptrs and lengths differ in size")
    if row_bytes < 0:
        raise ValueError(f"row_bytes must be >= 0, got {row_bytes}")
    cdef int64_t total = _total(lens, B)
    cdef cnp.ndarray dest_arr = cnp.PyArray_EMPTY(1, [B], cnp.NPY_INT64, 0)
    cdef int64_t* dest = _data(dest_arr)
    cdef cnp.ndarray given_arr
    cdef const int64_t* given
    cdef int64_t acc = 0
    if starts is None:
        if total > n_out:
            raise ValueError(f"the lengths add up to {total} rows but the output holds "
                             f"{n_out}")
        for i in range(B):
            dest[i] = acc
            acc += lens[i]
    else:
        given_arr = _table(starts, False)      # read once, into the private dest
        given = _data(given_arr)
        if cnp.PyArray_DIM(given_arr, 0) != B:
            raise ValueError("starts and lengths differ in size")
        for i in range(B):
            if given[i] < 0 or given[i] > n_out or lens[i] > n_out - given[i]:
                raise ValueError(f"sample {i}: rows {given[i]}..{given[i] + lens[i]} are "
                                 f"outside the output ({n_out} rows)")
            dest[i] = given[i]
    if B == 0 or row_bytes == 0 or n_out == 0:
        return
    if n_out > INT64_MAX // row_bytes:
        raise ValueError("the output size overflows int64")
    if stream < 0:
        stream = 2 if total * row_bytes >= STREAM_MIN_BYTES else 0
    if storages is not None:
        check_storages(storages, snapshot)
    cdef char* out = <char*>out_ptr
    cdef int64_t n
    with nogil:
        for i in range(B):
            n = lens[i] * row_bytes
            if ptrs[i] != 0 and n:
                fc_bulk_copy(out + dest[i] * row_bytes, <const char*><uintptr_t>ptrs[i],
                             <size_t>n, stream)
        fc_flat_fence(stream)


def positions(lengths, uintptr_t out_ptr, int64_t n_out, int64_t start=0,
              bint segments=False):
    """Per-token int64 values of the flattened layout, written to ``out_ptr``.

    ``segments=False``: position ids, ``start, start + 1, ...`` restarting for every
    sample (Hugging Face's ``position_ids`` of a flattened batch). ``segments=True``:
    the index of the sample each token belongs to (``seq_idx``), plus ``start``. The
    buffer holds ``n_out`` int64 values (ValueError if the lengths need more).

    >>> import numpy as np
    >>> out = np.empty(5, dtype=np.int64)
    >>> positions(np.array([3, 2]), out.ctypes.data, 5); out.tolist()
    [0, 1, 2, 0, 1]
    >>> positions(np.array([3, 2]), out.ctypes.data, 5, segments=True); out.tolist()
    [0, 0, 0, 1, 1]
    """
    cdef cnp.ndarray arr = _table(lengths, True)
    cdef const int64_t* lens = _data(arr)
    cdef Py_ssize_t B = cnp.PyArray_DIM(arr, 0), i
    cdef int64_t total = _fitting_total(lens, B, n_out), t, pos = 0, l
    if total and (start > INT64_MAX - total or start < -INT64_MAX + total):
        raise OverflowError(f"start {start} overflows int64")
    cdef int64_t* out = <int64_t*>out_ptr
    with nogil:
        for i in range(B):
            l = lens[i]
            if segments:
                for t in range(l):
                    out[pos + t] = start + i
            else:
                for t in range(l):
                    out[pos + t] = start + t
            pos += l


def boundary_labels(uintptr_t src_ptr, lengths, uintptr_t out_ptr, int64_t n_out,
                    bint shift, int64_t ignore_index):
    """Labels of a flattened batch from its int64 values at ``src_ptr``.

    ``shift=False``: a copy of the values with ``ignore_index`` on the first token of
    every sample (Hugging Face's ``DataCollatorWithFlattening``: the model shifts, and
    no sample learns to predict the next one's first token). ``shift=True``: token
    ``t`` gets the value of token ``t + 1`` of the same sample, and the last token of
    every sample ``ignore_index`` (for a loss that does not shift). Source and output
    hold ``n_out`` int64 values each (ValueError if the lengths need more); they may be
    the same buffer.

    >>> import numpy as np
    >>> x = np.array([5, 6, 7, 8, 9]); out = np.empty(5, dtype=np.int64)
    >>> boundary_labels(x.ctypes.data, [3, 2], out.ctypes.data, 5, False, -100); out.tolist()
    [-100, 6, 7, -100, 9]
    >>> boundary_labels(x.ctypes.data, [3, 2], out.ctypes.data, 5, True, -100); out.tolist()
    [6, 7, -100, 9, -100]
    """
    cdef cnp.ndarray arr = _table(lengths, True)
    cdef const int64_t* lens = _data(arr)
    cdef Py_ssize_t B = cnp.PyArray_DIM(arr, 0), i
    cdef int64_t total = _fitting_total(lens, B, n_out), t, pos = 0, l
    cdef const int64_t* src = <const int64_t*>src_ptr
    cdef int64_t* out = <int64_t*>out_ptr
    with nogil:
        for i in range(B):
            l = lens[i]
            if l == 0:
                continue
            if shift:
                for t in range(l - 1):
                    out[pos + t] = src[pos + t + 1]
                out[pos + l - 1] = ignore_index
            else:
                if out != src:
                    memcpy(out + pos + 1, src + pos + 1, <size_t>(l - 1) * sizeof(int64_t))
                out[pos] = ignore_index
            pos += l


@cython.boundscheck(True)
def first_fit_decreasing(lengths, int64_t capacity):
    """Assign items to bins of ``capacity`` by first-fit decreasing.

    Items are taken longest first (ties in input order: the stable counting sort of
    ``_core.sort_lengths``); each goes into the first bin (lowest index) with room
    left, a new bin if none has. Finding that bin is a descent in a tree of the bins'
    free space: O(n log bins). Returns ``(bins, used)``: an int64 array of every item's
    bin (input order) and the tokens used in each bin. Every length must lie in
    ``0..capacity`` (ValueError naming the item otherwise).

    >>> bins, used = first_fit_decreasing([5, 3, 4, 2, 6], 8)
    >>> bins.tolist(), used.tolist()
    ([1, 1, 2, 0, 0], [8, 8, 4])
    """
    cdef const int64_t[::1] lens = np.array(lengths, dtype=np.int64, order="C")
    cdef Py_ssize_t n = lens.shape[0], i, k
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    cdef int64_t mx = 0
    for i in range(n):
        if lens[i] < 0:
            raise ValueError(f"sample {i} has a negative length {lens[i]}")
        if lens[i] > capacity:
            raise ValueError(f"sample {i} has length {lens[i]}, longer than max_length "
                             f"{capacity}: a row holds whole samples")
        if lens[i] > mx:
            mx = lens[i]
    # decreasing order, stable: counting sort by length (lengths <= capacity)
    cdef cnp.ndarray order_arr = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] order = order_arr
    cdef cnp.ndarray count_arr = np.zeros(mx + 2, dtype=np.int64)
    cdef int64_t[::1] count = count_arr
    cdef int64_t acc = 0, c
    for i in range(n):
        count[lens[i]] += 1
    for k in range(mx, -1, -1):          # start of each length's run, longest first
        c = count[k]
        count[k] = acc
        acc += c
    for i in range(n):
        order[count[lens[i]]] = i
        count[lens[i]] += 1
    # a complete binary tree over n possible bins (never more bins than items): leaf
    # j holds bin j's free space, inner nodes the maximum of their children
    cdef Py_ssize_t size = 1
    while size < max(n, 1):
        size *= 2
    cdef cnp.ndarray tree_arr = np.full(2 * size, capacity, dtype=np.int64)
    cdef int64_t[::1] tree = tree_arr
    cdef cnp.ndarray bins_arr = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] bins = bins_arr
    cdef Py_ssize_t node, nbins = 0
    cdef int64_t l
    for k in range(n):
        i = order[k]
        l = lens[i]
        node = 1
        while node < size:               # leftmost leaf with free >= l (root has room:
            node = 2 * node              # an unused bin is a full capacity)
            if tree[node] < l:
                node += 1
        bins[i] = node - size
        if node - size >= nbins:
            nbins = node - size + 1
        tree[node] -= l
        node //= 2
        while node >= 1:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    used = capacity - tree_arr[size:size + nbins]
    return bins_arr, used
