# cython: language_level=3
"""Kernels of fastcollate: length scan, counting sort, row scatter, Python-list readers.

This module does not import torch: it works on NumPy arrays, integer addresses and
Python lists, so one build serves every torch version. The Python layer
(:mod:`fastcollate.packing`, :mod:`fastcollate.padding`, :mod:`fastcollate.collate`)
validates input and owns every policy; the functions here check only what they need to
stay memory-safe, and raise instead of crashing.

Layout (torch's ``PackedSequence``): samples sorted by length, descending (stable:
ties keep input order); row ``t`` of the sample of sorted rank ``r`` lands at flat
row ``offsets[t] + r`` where ``offsets[t] = sum(batch_sizes[:t])``.
"""
cimport cython
from cpython.complex cimport PyComplex_RealAsDouble, PyComplex_ImagAsDouble
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.dict cimport PyDict_CheckExact, PyDict_Size
from cpython.object cimport PyObject
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from cpython.pycapsule cimport PyCapsule_New, PyCapsule_GetPointer, PyCapsule_SetDestructor
from cpython.ref cimport Py_INCREF

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "Python.h":
    bint PyLong_CheckExact(PyObject*)
    bint PyFloat_CheckExact(PyObject*)
    bint PyBool_Check(PyObject*)
    bint PyComplex_CheckExact(PyObject*)
    bint PyList_CheckExact(object)
    bint PyTuple_CheckExact(object)
    bint PyList_Check(object)
    bint PyTuple_Check(object)
    long long PyLong_AsLongLongAndOverflow(PyObject*, int*) except? -1
    double PyFloat_AS_DOUBLE(PyObject*)
    double PyLong_AsDouble(PyObject*)
    PyObject* PyErr_Occurred()
    void PyErr_Clear()

# ---------------------------------------------------------------------------------------
# Reading tensor attributes: the C function behind a builtin method or property
# ---------------------------------------------------------------------------------------

from cpython.object cimport PyTypeObject, Py_TYPE

cdef extern from "Python.h":
    ctypedef struct PyDescrObject:
        PyTypeObject* d_type
    ctypedef struct PyMethodDef:
        void* ml_meth
        int ml_flags
    ctypedef struct PyMethodDescrObject:
        PyDescrObject d_common
        PyMethodDef* d_method
    ctypedef struct PyGetSetDef:
        void* get
        void* closure
    ctypedef struct PyGetSetDescrObject:
        PyDescrObject d_common
        PyGetSetDef* d_getset
    PyTypeObject PyMethodDescr_Type
    PyTypeObject PyGetSetDescr_Type
    bint PyType_IsSubtype(PyTypeObject*, PyTypeObject*)
    int METH_NOARGS, METH_VARARGS, METH_KEYWORDS, METH_COEXIST

ctypedef object (*_noargs_fn)(object, PyObject*)
ctypedef object (*_kwargs_fn)(object, object, PyObject*)
ctypedef object (*_getter_fn)(object, void*)

cdef enum:
    _GENERIC_CALL = 0
    _GENERIC_GET = 1
    _NOARGS = 2
    _KWARGS = 3
    _GETTER = 4


@cython.final
cdef class _Attr:
    """One attribute of the exact instances of a type (torch.Tensor's ``numel()``,
    ``shape``...), read through the C function behind it when the type's attribute is
    a builtin method taking no arguments or a builtin property. That skips the
    attribute lookup and the call's dispatch: ~30 ns per read instead of 55-70 ns,
    about a third of a small tensor's cost in a batch.

    The value is what ``getattr(tp, name)(x)`` (``call``) or ``x.<name>`` returns for
    ``type(x) is tp``: the same function is called, with no arguments, and it runs
    its own checks (torch function modes...). Any other kind of attribute (a Python
    override, another implementation) is read the ordinary way. Callers check
    ``type(x) is tp`` before :meth:`get`."""
    cdef object descr
    cdef object tp
    cdef str name
    cdef int kind
    cdef void* fn
    cdef void* closure

    def __cinit__(self, tp, str name, bint call=True):
        if not isinstance(tp, type):
            raise TypeError(f"expected a type, got {type(tp).__name__}")
        cdef object d = getattr(tp, name)
        cdef PyTypeObject* owner
        cdef int flags
        self.descr = d
        self.tp = tp
        self.name = name
        self.kind = _GENERIC_CALL if call else _GENERIC_GET
        self.fn = NULL
        self.closure = NULL
        if Py_TYPE(d) is &PyMethodDescr_Type and call:
            owner = (<PyMethodDescrObject*><PyObject*>d).d_common.d_type
            flags = (<PyMethodDescrObject*><PyObject*>d).d_method.ml_flags & ~METH_COEXIST
            if PyType_IsSubtype(<PyTypeObject*><PyObject*>tp, owner):
                if flags == METH_NOARGS:
                    self.kind = _NOARGS
                elif flags == METH_VARARGS | METH_KEYWORDS:
                    self.kind = _KWARGS
                if self.kind != _GENERIC_CALL:
                    self.fn = (<PyMethodDescrObject*><PyObject*>d).d_method.ml_meth
        elif Py_TYPE(d) is &PyGetSetDescr_Type and not call:
            owner = (<PyGetSetDescrObject*><PyObject*>d).d_common.d_type
            if (PyType_IsSubtype(<PyTypeObject*><PyObject*>tp, owner)
                    and (<PyGetSetDescrObject*><PyObject*>d).d_getset.get != NULL):
                self.kind = _GETTER
                self.fn = (<PyGetSetDescrObject*><PyObject*>d).d_getset.get
                self.closure = (<PyGetSetDescrObject*><PyObject*>d).d_getset.closure

    @property
    def direct(self):
        """Whether reads call the C function behind the attribute."""
        return self.kind >= _NOARGS

    cdef inline object get(self, object x):
        if self.kind == _NOARGS:
            return (<_noargs_fn>self.fn)(x, NULL)
        if self.kind == _GETTER:
            return (<_getter_fn>self.fn)(x, self.closure)
        if self.kind == _KWARGS:
            return (<_kwargs_fn>self.fn)(x, (), NULL)
        if self.kind == _GENERIC_CALL:
            return self.descr(x)
        return getattr(x, self.name)

    def __call__(self, x):
        """:meth:`get` from Python (tests); TypeError unless ``type(x)`` is the type."""
        if type(x) is not self.tp:
            raise TypeError(f"expected a {self.tp.__name__}, got {type(x).__name__}")
        return self.get(x)


cdef extern from *:
    """
    /* A type's CPython version tag, 0 when it has none: CPython gives a type a new,
       never reused tag whenever the type or a base class is modified (an attribute
       set or deleted), and 0 until one is next assigned. */
    static unsigned int fc_type_tag(PyObject* t) {
        PyTypeObject* tp = (PyTypeObject*)t;
    #ifdef Py_TPFLAGS_VALID_VERSION_TAG
        if (!(tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) return 0;
    #endif
        return tp->tp_version_tag;
    }
    """
    unsigned int fc_type_tag(PyObject* t)


@cython.final
cdef class _StorageReads:
    """``data_ptr()`` and ``nbytes()`` of one storage type (:class:`_Attr`), with the
    type's version tag when they were built. Never changed once built: a caller
    holding one reads consistently whatever re-entrant code does to the cache."""
    cdef object tp
    cdef unsigned int tag
    cdef _Attr data_ptr, nbytes

    def __cinit__(self, tp):
        self.tp = tp
        self.data_ptr = _Attr(tp, "data_ptr")
        self.nbytes = _Attr(tp, "nbytes")
        self.tag = fc_type_tag(<PyObject*>tp)   # after the lookups, which assign one


@cython.final
cdef class _TensorReads:
    """The :class:`_Attr` reads of one tensor type that the tensor paths make, and of
    its storage type, built once instead of per call (~1 us for the dozen of the
    direct path). :func:`_tensor_reads` rebuilds them whenever the type's version tag
    changes (and :meth:`storage_reads` the storage type's), so a patched attribute is
    read the new way."""
    cdef object tp
    cdef unsigned int tag
    cdef _Attr numel, dim, shape, dtype, is_cpu, requires_grad, is_contiguous
    cdef _Attr is_neg, is_conj, untyped_storage, storage_offset
    cdef _StorageReads storage

    def __cinit__(self, tp):
        self.tp = tp
        self.numel = _Attr(tp, "numel")
        self.dim = _Attr(tp, "dim")
        self.shape = _Attr(tp, "shape", False)
        self.dtype = _Attr(tp, "dtype", False)
        self.is_cpu = _Attr(tp, "is_cpu", False)
        self.requires_grad = _Attr(tp, "requires_grad", False)
        self.is_contiguous = _Attr(tp, "is_contiguous")
        self.is_neg = _Attr(tp, "is_neg")
        self.is_conj = _Attr(tp, "is_conj")
        self.untyped_storage = _Attr(tp, "untyped_storage")
        self.storage_offset = _Attr(tp, "storage_offset")
        self.tag = fc_type_tag(<PyObject*>tp)   # after the lookups, which assign one

    cdef _StorageReads storage_reads(self, object storage_type):
        """The reads of ``storage_type`` (a type), cached while it is unchanged."""
        cdef _StorageReads r = self.storage
        if (r is None or r.tp is not storage_type or r.tag == 0
                or fc_type_tag(<PyObject*>storage_type) != r.tag):
            r = _StorageReads(storage_type)
            self.storage = r
        return r


cdef _TensorReads _reads = None


cdef _TensorReads _tensor_reads(tp):
    """The cached :class:`_TensorReads` of ``tp``, rebuilt when ``tp`` differs from the
    last one or was modified since."""
    global _reads
    cdef _TensorReads r = _reads
    if r is None or r.tp is not tp or r.tag == 0 or fc_type_tag(<PyObject*>tp) != r.tag:
        r = _TensorReads(tp)
        _reads = r
    return r


# ---------------------------------------------------------------------------------------
# Lengths, counting sort, batch_sizes
# ---------------------------------------------------------------------------------------

class UnsortedError(ValueError, RuntimeError):
    """Unsorted lengths with ``enforce_sorted=True``: a ValueError (fastcollate's API)
    and a RuntimeError (what ``torch.nn.utils.rnn.pack_sequence`` raises)."""


def sort_lengths(lengths, bint enforce_sorted=False):
    """Counting-sort sample lengths, descending and stable, in O(B + T).

    Parameters
    ----------
    lengths : array-like of int
        Length of every sample; each must be >= 1.
    enforce_sorted : bool
        If true the lengths must already be non-increasing and no permutation is made.

    Returns
    -------
    batch_sizes : ndarray of int64, shape (max_len,)
        ``batch_sizes[t]`` is the number of samples longer than ``t``.
    sorted_indices : ndarray of int64, shape (B,), or None
        ``sorted_indices[r]`` is the input index of the sample of rank ``r``
        (``None`` when ``enforce_sorted``).
    unsorted_indices : ndarray of int64, shape (B,), or None
        Its inverse: the rank of input sample ``i``.

    Raises
    ------
    ValueError
        Empty batch, a length < 1 (naming the index), or unsorted lengths with
        ``enforce_sorted`` (:class:`UnsortedError`, also a RuntimeError).

    Examples
    --------
    >>> bs, order, inverse = sort_lengths([2, 3, 2])
    >>> bs.tolist(), order.tolist(), inverse.tolist()
    ([3, 3, 1], [1, 0, 2], [1, 0, 2])
    """
    cdef cnp.ndarray arr = _int64_lengths(lengths)
    return _count_sort(<const int64_t*>cnp.PyArray_DATA(arr), arr.shape[0], enforce_sorted)


cdef tuple _count_sort(const int64_t* lens, Py_ssize_t B, bint enforce_sorted):
    """:func:`sort_lengths` of ``B`` lengths at ``lens`` (the caller keeps them alive)."""
    cdef Py_ssize_t i
    if B == 0:
        raise ValueError("cannot pack an empty batch: expected at least one sample")
    cdef int64_t max_len = 0, l
    for i in range(B):
        l = lens[i]
        if l < 1:
            raise ValueError(f"sample {i} has length {l}: every sample must have length >= 1")
        if l > max_len:
            max_len = l
    if enforce_sorted:
        for i in range(1, B):
            if lens[i] > lens[i - 1]:
                raise UnsortedError(
                    f"enforce_sorted=True but sample {i} (length {lens[i]}) is longer than "
                    f"sample {i - 1} (length {lens[i - 1]}): sequences must be sorted in "
                    "decreasing order of length. You can pass `enforce_sorted=False` to "
                    "sort them internally")
    # counts, then suffix sums: bs[t] = #samples with length > t, for t in 0..max_len-1
    cdef cnp.npy_intp n = max_len
    cdef cnp.ndarray bs_arr = cnp.PyArray_ZEROS(1, &n, cnp.NPY_INT64, 0)
    cdef int64_t* bs = <int64_t*>cnp.PyArray_DATA(bs_arr)
    cdef int64_t t, run = 0
    with nogil:
        for i in range(B):
            bs[lens[i] - 1] += 1               # counts shifted: bs[l-1] = #len == l
        for t in range(max_len - 1, -1, -1):    # suffix sum: #len >= t+1 == #len > t
            run += bs[t]                        # (in a register: no store-to-load chain)
            bs[t] = run
    if enforce_sorted:
        return bs_arr, None, None
    n = B
    cdef cnp.ndarray order_arr = cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)
    cdef cnp.ndarray inverse_arr = cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)
    cdef int64_t* order = <int64_t*>cnp.PyArray_DATA(order_arr)
    cdef int64_t* inverse = <int64_t*>cnp.PyArray_DATA(inverse_arr)
    # samples of length l take ranks [#len > l, #len >= l) = [bs[l], bs[l-1]) (with
    # bs[max_len] = 0); a separate cursor per length keeps batch_sizes intact.
    cdef int64_t* cursor = <int64_t*>malloc((max_len + 1) * sizeof(int64_t))
    if cursor == NULL:
        raise MemoryError()
    with nogil:
        cursor[0] = 0
        memcpy(cursor + 1, bs + 1, (max_len - 1) * sizeof(int64_t))
        cursor[max_len] = 0
        for i in range(B):
            l = lens[i]
            order[cursor[l]] = i
            inverse[i] = cursor[l]
            cursor[l] += 1
    free(cursor)
    return bs_arr, order_arr, inverse_arr


def _int64_lengths(lengths):
    """``lengths`` as a 1-D int64 array; a value that is not an integer, or does not fit
    int64, raises naming its index (NumPy would wrap uint64 silently)."""
    src = np.asarray(lengths)
    if src.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional, got shape {src.shape}")
    if src.dtype.kind == "u" and src.size and src.max() > INT64_MAX:
        i = int(np.argmax(src > INT64_MAX))
        raise ValueError(f"sample {i} has length {int(src[i])}, which does not fit int64")
    if src.size and src.dtype.kind not in "iu":
        # floats, bools, or Python ints beyond int64 (NumPy made floats/objects of them)
        items = src.tolist() if isinstance(lengths, np.ndarray) else list(lengths)
        for i, v in enumerate(items):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"sample {i} has length {v!r}: lengths must be integers")
            if not -INT64_MAX - 1 <= v <= INT64_MAX:
                raise ValueError(f"sample {i} has length {v}, which does not fit int64")
    # always a private copy: the sort checks it, then indexes with it without the GIL,
    # and the caller's array may be written meanwhile (NumPy ops release the GIL)
    return np.array(src, dtype=np.int64, order="C", copy=True)


def offsets_of(const int64_t[::1] batch_sizes):
    """Exclusive prefix sum of ``batch_sizes`` (the flat row where step ``t`` starts).

    Returns an int64 array of ``len(batch_sizes) + 1`` entries; the last is the total.
    """
    cdef Py_ssize_t T = batch_sizes.shape[0], t
    cdef cnp.ndarray out = np.empty(T + 1, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int64_t acc = 0, b
    for t in range(T):
        o[t] = acc
        b = batch_sizes[t]
        if b < 0 or b > INT64_MAX - acc:
            raise ValueError(f"batch_sizes[{t}] = {b}: negative, or the total overflows int64")
        acc += b
    o[T] = acc
    return out


@cython.boundscheck(True)
def packed_lengths(const int64_t[::1] batch_sizes, unsorted_indices=None):
    """Each sample's length, in input order, from a packing's ``batch_sizes`` and
    ``unsorted_indices`` (None: the samples are in rank order, ``enforce_sorted``).

    The sample of rank ``r`` has as many steps as there are ``batch_sizes[t] > r``.
    ``batch_sizes`` must be positive and non-increasing and ``unsorted_indices`` hold
    ``batch_sizes[0]`` ranks in range (ValueError otherwise).
    """
    cdef Py_ssize_t T = batch_sizes.shape[0], t, i
    cdef int64_t B = batch_sizes[0] if T else 0, r, hi, lo
    cdef cnp.ndarray by_rank = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] L = by_rank
    for t in range(T):
        hi = batch_sizes[t]
        lo = batch_sizes[t + 1] if t + 1 < T else 0
        if (lo < 1 and t + 1 < T) or lo > hi:
            raise ValueError(f"batch_sizes[{t + 1}] = {lo}: not in [1, batch_sizes[{t}]]")
        for r in range(lo, hi):
            L[r] = t + 1
    if unsorted_indices is None:
        return by_rank
    cdef const int64_t[::1] ui = unsorted_indices
    if ui.shape[0] != B:
        raise ValueError(f"unsorted_indices has {ui.shape[0]} entries for {B} samples")
    cdef cnp.ndarray out = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] o = out
    for i in range(B):
        r = ui[i]
        if r < 0 or r >= B:
            raise ValueError(f"unsorted_indices[{i}] = {r}: not a rank of {B} samples")
        o[i] = L[r]
    return out


# ---------------------------------------------------------------------------------------
# Row scatter from contiguous sources
# ---------------------------------------------------------------------------------------

cdef extern from "_copy.h" nogil:
    void fc_scatter(char* out, const char* const* srcs, const int64_t* lens,
                    const int64_t* offsets, int64_t B, int64_t row_bytes, int64_t block,
                    int stream, int64_t tile, int partial)
    void fc_pad(char* out, const char* const* srcs, const int64_t* lens, int64_t B,
                int64_t ldb, int64_t T, int64_t row_bytes, int batch_first, int left, const char* pad_row,
                int64_t pad_bytes, int stream)
    int fc_advise_huge(char* p, size_t n)


def scatter(src_ptrs, lengths, sorted_indices, batch_sizes, Py_ssize_t row_bytes,
            uintptr_t out_ptr, int64_t block=0, int stream=-1, list storages=None,
            snapshot=None, int64_t tile=-1):
    """Write contiguous samples into the packed layout at address ``out_ptr``.

    Low-level: the caller guarantees that sample ``i`` is ``lengths[i]`` contiguous rows
    of ``row_bytes`` bytes at address ``src_ptrs[i]``, that the output buffer holds
    ``sum(lengths) * row_bytes`` bytes, and that all of them stay alive during the call.
    :func:`fastcollate.pack` does this for you; use this to fill a buffer you allocated
    yourself (pinned, shared memory).

    Parameters
    ----------
    src_ptrs : int64 array (B,)
        Address of each sample's first row, in input order (0 for samples to skip).
    lengths : int64 array (B,)
        Rows of each sample, in input order.
    sorted_indices : int64 array (B,) or None
        Input index of each rank, from :func:`sort_lengths`; None if already sorted.
    batch_sizes : int64 array (T,)
        From :func:`sort_lengths`.
    row_bytes : int
        Bytes of one row (itemsize times the product of the trailing shape).
    out_ptr : int
        Address of the output buffer.
    block : int
        Time steps copied per sample before moving to the next; 0 picks by row size.
    tile : int
        The narrow-row kernel (rows of 1, 2, 4, 8, 16 bytes): time steps per tile
        (> 0), panels of ``-tile`` ranks (<= -2), 0 turns it off, -1 (default) picks
        by row size, batch length and output size (:func:`choose_tile`).
    stream : int
        Non-temporal stores: 0 never, 1/2 with 16/32-byte stores where the rows allow
        it, -1 (default) picks by row size and output size (:func:`choose_stream`).
    storages, snapshot : optional
        From :func:`tensor_sources`: checked by :func:`check_storages` as the last
        step before the GIL is released.

    The GIL is released while copying.
    """
    cdef const int64_t[::1] ptrs_in = np.ascontiguousarray(src_ptrs, dtype=np.int64)
    cdef const int64_t[::1] lens_in = np.ascontiguousarray(lengths, dtype=np.int64)
    cdef const int64_t[::1] bs = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    cdef Py_ssize_t B = lens_in.shape[0], T = bs.shape[0]
    if ptrs_in.shape[0] != B:
        raise ValueError("src_ptrs and lengths differ in size")
    if B == 0 or row_bytes <= 0:
        return
    cdef const int64_t[::1] order
    if sorted_indices is not None:
        order = np.ascontiguousarray(sorted_indices, dtype=np.int64)
        if order.shape[0] != B:
            raise ValueError("sorted_indices and lengths differ in size")
    if storages is not None:
        check_storages(storages, snapshot)
    _scatter_ranked(<char*>out_ptr, <const uintptr_t*>&ptrs_in[0], &lens_in[0],
                    NULL if sorted_indices is None else &order[0], B,
                    NULL if T == 0 else &bs[0], T, row_bytes,
                    block, stream, tile)


cdef int _scatter_ranked(char* out, const uintptr_t* ptrs_in, const int64_t* lens_in,
                         const int64_t* order, Py_ssize_t B, const int64_t* bs,
                         Py_ssize_t T, Py_ssize_t row_bytes, int64_t block, int stream,
                         int64_t tile) except -1:
    """:func:`scatter` of ``B > 0`` samples after checking that ``order`` (NULL: the
    identity), ``lens_in`` and ``bs`` agree, so that no write can leave the
    ``sum(lengths)`` rows of ``out``; the GIL is released for the copy."""
    # one scratch block: rank-ordered sources and lengths, then the step offsets
    cdef int64_t* scratch = <int64_t*>malloc((2 * B + T + 1) * sizeof(int64_t))
    if scratch == NULL:
        raise MemoryError()
    cdef uintptr_t* srcs = <uintptr_t*>scratch
    cdef int64_t* lens = scratch + B
    cdef int64_t* offs = scratch + 2 * B
    cdef int64_t acc
    try:
        acc = _rank_tables(lens_in, order, B, bs, T, lens, offs, ptrs_in, srcs)
        if block <= 0:
            block = choose_block(row_bytes, B)
        if stream < 0:
            stream = choose_stream(row_bytes, acc * row_bytes)
        if tile == -1:
            tile = choose_tile(row_bytes, T, B, acc * row_bytes)
        with nogil:
            fc_scatter(out, <const char* const*>srcs, lens, offs, B, row_bytes, block,
                       stream, tile, 0)
    finally:
        free(scratch)
    return 0


cdef int64_t _rank_tables(const int64_t* lens_in, const int64_t* order, Py_ssize_t B,
                          const int64_t* bs, Py_ssize_t T, int64_t* lens, int64_t* offs,
                          const uintptr_t* ptrs_in, uintptr_t* srcs) except -1:
    """The rank-ordered tables of a packed write of ``B > 0`` samples: ``lens`` (and
    ``srcs`` from ``ptrs_in`` unless NULL) in rank order, ``offs[t]`` the first packed
    row of step ``t`` (``T + 1`` entries). Checks that ``order`` (NULL: the identity),
    the lengths and ``bs`` agree, so that no row written from them can leave the packed
    rows; returns their number.

    With fewer steps than samples, one walk over the steps checks each batch size
    against the samples still active. With more (a few long samples: thousands of
    steps per sample), O(B) checks plus one branch-free pass over the steps do, since
    with the lengths non-increasing in rank order, ``bs[t] == #{r: lens[r] > t}`` for
    every ``t < T = lens[0]`` holds exactly when ``bs`` is non-increasing,
    ``bs[0] == B``, and for every rank ``r``,
    ``bs[lens[r] - 1] > r`` (still active at its last step) and ``bs[lens[r]] <= r``
    (gone after it; for ``lens[r] < T``). For the ``k`` ranks active at step ``t``,
    rank ``k - 1``'s first condition bounds ``bs[t]`` below by ``k`` and rank ``k``'s
    second (or ``bs[0] == B``) bounds it above by ``k``. When the check fails, the
    step-by-step walk (:func:`_rank_tables_error`) names the first bad step."""
    cdef Py_ssize_t t, r, i
    cdef int64_t acc = 0, l, prev
    cdef bint unsorted = False, overflow = False, bad = False
    for r in range(B):
        i = r if order == NULL else order[r]
        if i < 0 or i >= B:
            raise ValueError(f"sorted_indices[{r}] = {i} is out of range")
        if srcs != NULL:
            srcs[r] = ptrs_in[i]
        l = lens_in[i]
        lens[r] = l
        unsorted |= r > 0 and l > lens[r - 1]
        if l > 0:
            overflow |= l > INT64_MAX - acc
            acc = acc + l if not overflow else acc
    if unsorted:
        raise ValueError("lengths are not sorted by sorted_indices")
    if lens[B - 1] < 1 or T != lens[0]:
        raise ValueError("batch_sizes do not match lengths")
    if overflow:
        raise ValueError("the total length overflows int64")
    cdef Py_ssize_t active = B
    if T <= B:                  # fewer steps than ranks: the walk is cheaper
        acc = 0
        for t in range(T):
            while active > 0 and lens[active - 1] <= t:
                active -= 1
            if bs[t] != active:
                _rank_tables_error(lens, B, bs, T)
            offs[t] = acc
            acc += active       # <= sum(lens): no overflow
        offs[T] = acc
        return acc
    bad = bs[0] != B
    for r in range(B):          # 1 <= lens[r] <= T = lens[0]
        l = lens[r]
        bad |= bs[l - 1] <= r
        if l < T:
            bad |= bs[l] > r
    cdef uint64_t run = 0       # unsigned: bad tables may wrap it, never UB
    with nogil:
        prev = bs[0]
        for t in range(T):      # sum(bs) == sum(lens) once the checks hold: no overflow
            bad |= bs[t] > prev
            prev = bs[t]
            offs[t] = <int64_t>run
            run += <uint64_t>prev
        offs[T] = <int64_t>run
    if bad:
        _rank_tables_error(lens, B, bs, T)
    return acc


cdef int _rank_tables_error(const int64_t* lens, Py_ssize_t B, const int64_t* bs,
                            Py_ssize_t T) except -1:
    """Raise ValueError naming the first step ``t`` whose ``bs[t]`` is not the number
    of the rank-ordered lengths ``lens`` (sorted, >= 1, ``lens[0] == T``) above ``t``:
    :func:`_rank_tables` found one."""
    cdef Py_ssize_t active = B, t
    for t in range(T):
        while active > 0 and lens[active - 1] <= t:
            active -= 1
        if bs[t] != active:
            raise ValueError(f"batch_sizes[{t}] = {bs[t]} does not match lengths "
                             f"({active} samples are longer than {t})")
    raise AssertionError("_rank_tables_error: the tables are consistent")


# ---------------------------------------------------------------------------------------
# pack in one call: scan + counting sort + allocation + scatter
# ---------------------------------------------------------------------------------------

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void** memptr, size_t alignment, size_t size)

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyTypeObject:
        pass
    PyTypeObject PyArray_Type
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.PyArray_Descr* descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)

cdef extern from "_pool.h":
    size_t FC_POOL_MIN
    size_t fc_pool_limit
    int fc_pool_n
    size_t fc_pool_bytes
    size_t fc_pool_capacity(size_t n)
    void* fc_pool_take(size_t n, size_t* size)
    void fc_pool_give(void* p, size_t size)
    size_t fc_pool_clear()

cdef extern from "Python.h":
    int PyCapsule_SetContext(object capsule, void* context) except -1
    void* PyCapsule_GetContext(object capsule)

cdef const char* _BUFFER_NAME = "fastcollate.rows"
cdef size_t _HUGE_MIN = 4 << 20


def _pool_limit_from_env():
    """``FASTCOLLATE_POOL_MB`` (default 256) as bytes; 0 disables the buffer cache."""
    import os
    raw = os.environ.get("FASTCOLLATE_POOL_MB", "")
    try:
        mb = float(raw) if raw.strip() else 256.0
    except ValueError:
        raise ValueError(f"FASTCOLLATE_POOL_MB must be a number of megabytes, got {raw!r}")
    return int(max(mb, 0.0) * (1 << 20))


fc_pool_limit = _pool_limit_from_env()


def pool_limit(limit=None):
    """The byte limit of the cache of large output buffers (``_pool.h``); with
    ``limit``, set it first (0 disables the cache and frees what it holds; a lower
    limit frees the oldest buffers as they are given back). Returns the limit."""
    global fc_pool_limit
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        fc_pool_limit = <size_t>limit
        if limit == 0:
            fc_pool_clear()
    return fc_pool_limit


def pool_stats():
    """``(buffers, bytes)`` held by the cache of large output buffers."""
    return fc_pool_n, fc_pool_bytes


def pool_clear():
    """Free every buffer the cache holds; returns the bytes released."""
    return fc_pool_clear()


cdef void _free_rows(object capsule) noexcept:
    # runs when the last array/tensor viewing the buffer is freed (GIL held)
    fc_pool_give(PyCapsule_GetPointer(capsule, _BUFFER_NAME),
                 <size_t><uintptr_t>PyCapsule_GetContext(capsule))


cdef cnp.ndarray _new_rows(cnp.dtype descr, int nd, cnp.npy_intp* dims, size_t nbytes):
    """A C-contiguous array of shape ``dims`` and dtype ``descr`` (``nbytes`` bytes),
    64-byte aligned as torch's CPU allocator aligns, owning its memory: freed with the
    array, or, from ``FC_POOL_MIN`` (4 MB) bytes, kept by the buffer cache
    (``_pool.h``) for a later output, which then skips the page faults and the zeroing
    of fresh memory. Its bytes are garbage until written. Fresh buffers from
    ``HUGE_MIN_BYTES`` are advised onto huge pages."""
    cdef void* p = NULL
    cdef size_t size = nbytes if nbytes > 0 else 64
    cdef bint fresh = True
    if nbytes >= FC_POOL_MIN and fc_pool_limit > 0:
        p = fc_pool_take(nbytes, &size)
        fresh = p == NULL
        if fresh:
            size = fc_pool_capacity(nbytes)
    if fresh and posix_memalign(&p, 64, size) != 0:
        raise MemoryError(f"cannot allocate {nbytes} bytes for the packed data")
    try:
        owner = PyCapsule_New(p, _BUFFER_NAME, NULL)
        # the size first, then the destructor: a capsule freed in between frees nothing
        # (leaks), never hands the cache a buffer of an unknown size
        PyCapsule_SetContext(owner, <void*><uintptr_t>size)
        PyCapsule_SetDestructor(owner, _free_rows)
    except BaseException:
        free(p)
        raise
    if fresh and size >= _HUGE_MIN:
        fc_advise_huge(<char*>p, size)
    Py_INCREF(descr)        # PyArray_NewFromDescr steals a reference, even on failure
    cdef cnp.ndarray arr = PyArray_NewFromDescr(&PyArray_Type, <cnp.PyArray_Descr*>descr, nd, dims,
                                                NULL, p, cnp.NPY_ARRAY_CARRAY, NULL)
    cnp.set_array_base(arr, owner)
    return arr


cdef cnp.dtype _BYTES = np.dtype(np.uint8)


def new_block(Py_ssize_t nbytes):
    """A fresh uint8 array of ``nbytes`` bytes, 64-byte aligned, owning its memory
    (freed with the last array or tensor that views it), advised onto huge pages from
    ``HUGE_MIN_BYTES``: a batch block in ordinary memory, without ``torch.empty``."""
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    cdef cnp.npy_intp n = nbytes
    return _new_rows(_BYTES, 1, &n, <size_t>nbytes)


cdef inline bint _plain_numbers(cnp.PyArray_Descr* d) noexcept:
    """bool, integer, float or complex elements: bytes that hold no references (an
    object array's bytes are PyObject pointers: copying them raw would share the
    objects without owning them)."""
    cdef char k = (<cnp.dtype><PyObject*>d).kind
    return k == b'b' or k == b'i' or k == b'u' or k == b'f' or k == b'c'


cdef inline bint _readable_rows(cnp.ndarray a) noexcept:
    """C-contiguous, aligned, native-endian plain numbers: rows the kernels may copy."""
    return (cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and _plain_numbers(cnp.PyArray_DESCR(a)))


cdef bint _like_first(cnp.ndarray a, cnp.PyArray_Descr* d0, int nd0,
                      const cnp.npy_intp* dims0) noexcept:
    """``a`` is C-contiguous, aligned and native-endian, of sample 0's dtype ``d0``
    (or an equivalent one), number of dimensions ``nd0`` (>= 1) and trailing shape
    ``dims0[1:]``."""
    cdef cnp.PyArray_Descr* d = cnp.PyArray_DESCR(a)
    cdef int k
    if (nd0 < 1 or cnp.PyArray_NDIM(a) != nd0 or not cnp.PyArray_ISCARRAY_RO(a)
            or not cnp.PyArray_ISNOTSWAPPED(a)):
        return False
    if d != d0 and not cnp.PyArray_EquivTypes(<cnp.dtype><PyObject*>d,
                                              <cnp.dtype><PyObject*>d0):
        return False
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    for k in range(1, nd0):
        if dims[k] != dims0[k]:
            return False
    return True


cdef bint _scan_like_first(list own, cnp.PyArray_Descr* d0, int nd0,
                           const cnp.npy_intp* dims0, uintptr_t* ptrs, int64_t* lens):
    """``ptrs[i]``/``lens[i]``: the data address and leading length of every sample of
    ``own``; False as soon as one is not an exact ndarray like sample 0
    (:func:`_like_first`)."""
    cdef Py_ssize_t i
    cdef object x
    cdef cnp.ndarray a
    for i in range(len(own)):
        x = own[i]
        if not cnp.PyArray_CheckExact(x):
            return False
        a = <cnp.ndarray>x
        if not _like_first(a, d0, nd0, dims0):
            return False
        ptrs[i] = <uintptr_t>cnp.PyArray_DATA(a)
        lens[i] = cnp.PyArray_DIM(a, 0)
    return True


cdef tuple _pack_rows(const uintptr_t* srcs_in, const int64_t* lens_in, Py_ssize_t B,
                      Py_ssize_t row_bytes, cnp.dtype descr, int nd, cnp.npy_intp* dims,
                      bint enforce_sorted):
    """Sort ``B`` samples (``lens_in[i]`` contiguous rows of ``row_bytes`` bytes at
    ``srcs_in[i]``, kept alive by the caller), allocate the packed output (shape
    ``dims``: ``dims[0]`` is set here, ``dims[1:]`` is the row) and scatter into it.
    Returns ``(data, batch_sizes, sorted_indices, unsorted_indices)`` as arrays."""
    cdef tuple packed = _sort_alloc(lens_in, B, row_bytes, descr, nd, dims, enforce_sorted)
    _scatter_packed(packed, srcs_in, lens_in, B, row_bytes)
    return packed


cdef tuple _sort_alloc(const int64_t* lens_in, Py_ssize_t B, Py_ssize_t row_bytes,
                       cnp.dtype descr, int nd, cnp.npy_intp* dims, bint enforce_sorted):
    """:func:`_pack_rows` up to the copy: ``(data, batch_sizes, sorted_indices,
    unsorted_indices)`` with ``data`` allocated (:func:`_new_rows`), not yet written."""
    bs_arr, si_arr, ui_arr = _count_sort(lens_in, B, enforce_sorted)
    cdef Py_ssize_t T = (<cnp.ndarray>bs_arr).shape[0], t
    cdef const int64_t* bs = <const int64_t*>cnp.PyArray_DATA(bs_arr)
    cdef int64_t total = 0
    cdef const int64_t* parts = bs if T <= B else lens_in    # the shorter: same sum
    for t in range(T if T <= B else B):
        if parts[t] > INT64_MAX - total:
            raise ValueError("the total length overflows int64")
        total += parts[t]
    if row_bytes > 0 and total > INT64_MAX // row_bytes:
        raise ValueError(f"the packed data ({total} rows of {row_bytes} bytes) overflows int64")
    dims[0] = total
    cdef cnp.ndarray data = _new_rows(descr, nd, dims, <size_t>(total * row_bytes))
    return data, bs_arr, si_arr, ui_arr


cdef int _scatter_packed(tuple packed, const uintptr_t* srcs, const int64_t* lens,
                         Py_ssize_t B, Py_ssize_t row_bytes) except -1:
    """The copy of :func:`_pack_rows` into :func:`_sort_alloc`'s ``packed`` (the GIL
    is released)."""
    if row_bytes <= 0:
        return 0
    data, bs_arr, si_arr, _ = packed
    cdef const int64_t* order = NULL
    if si_arr is not None:
        order = <const int64_t*>cnp.PyArray_DATA(si_arr)
    _scatter_ranked(<char*>cnp.PyArray_DATA(data), srcs, lens, order, B,
                    <const int64_t*>cnp.PyArray_DATA(bs_arr),
                    (<cnp.ndarray>bs_arr).shape[0], row_bytes, 0, -1, -1)
    return 0


# pack_packed's factories, from set_packed_factories (this module does not import torch)
cdef object _from_numpy = None      # torch.from_numpy
cdef object _tuple_new = None       # tuple.__new__
cdef object _packed_type = None     # torch.nn.utils.rnn.PackedSequence
cdef uint64_t _torch_typenums = 0   # bit n: native NumPy type number n, which torch has
cdef object _tensor_type = None     # torch.Tensor, torch.cat and the direct-read threshold
cdef object _cat = None             # for batches of small tensors (pack_tensors)
cdef int64_t _direct_bytes = 0
cdef dict _np_of_torch = {}         # torch dtype -> its NumPy dtype (pack_tensors' direct reads)


def set_packed_factories(from_numpy, packed_type, torch_dtypes, tensor_type=None, cat=None,
                         int64_t direct_bytes=0):
    """Give :func:`pack_packed` ``torch.from_numpy``, ``PackedSequence``, the NumPy
    dtypes torch has (a dict: NumPy dtype -> torch dtype) and, for tensor batches,
    ``torch.Tensor``, ``torch.cat`` and :func:`pack_tensors`' ``direct_bytes``
    (fastcollate.packing does, at import)."""
    global _from_numpy, _tuple_new, _packed_type, _torch_typenums
    global _tensor_type, _cat, _direct_bytes, _np_of_torch
    if not (isinstance(packed_type, type) and issubclass(packed_type, tuple)):
        raise TypeError("packed_type must be a tuple subclass")
    if tensor_type is not None and not (isinstance(tensor_type, type) and callable(cat)):
        raise TypeError("tensor_type must be a type and cat a callable")
    _tensor_type, _cat, _direct_bytes = tensor_type, cat, direct_bytes
    cdef uint64_t bits = 0
    cdef dict np_of = {}
    for d, t in torch_dtypes.items():
        if d.isnative and _plain_numbers(<cnp.PyArray_Descr*>d):
            np_of[t] = d
    for c in np.typecodes["All"]:       # every type number, e.g. 'q' and 'l' for int64
        d = np.dtype(c)
        if d in torch_dtypes and d.isnative and 0 <= d.num < 64:
            bits |= (<uint64_t>1) << d.num
    _from_numpy, _tuple_new, _packed_type, _torch_typenums = (
        from_numpy, tuple.__new__, packed_type, bits)
    _np_of_torch = np_of


def pack_packed(seqs, bint enforce_sorted=False):
    """:func:`pack_arrays` of a list or tuple of NumPy arrays, or :func:`pack_tensors`
    of one of exact tensors, returned as a ``PackedSequence`` sharing the
    arrays' memory (``from_numpy``, made with ``tuple.__new__`` as
    ``PackedSequence._make`` does: the fields are already right): the whole of
    :func:`fastcollate.pack` for such batches in one call (~3 us at B=16 against ~3.9
    us through Python). None, with nothing allocated, for anything else: not a
    non-empty list or tuple, sample 0 neither an exact ndarray of a dtype torch has
    nor an exact tensor, anything those decline, or no factories set."""
    if _packed_type is None or not (type(seqs) is list or type(seqs) is tuple) or not seqs:
        return None
    x0 = seqs[0]
    if cnp.PyArray_CheckExact(x0):
        packed = _pack_arrays(seqs, enforce_sorted, True)
    elif _tensor_type is not None and type(x0) is _tensor_type:
        packed = pack_tensors(seqs, _tensor_type, _cat, _direct_bytes, enforce_sorted)
    else:
        return None
    if packed is None:
        return None
    data, bs, si, ui = <tuple>packed
    f = _from_numpy
    if si is None:
        return _tuple_new(_packed_type, (f(data), f(bs), None, None))
    return _tuple_new(_packed_type, (f(data), f(bs), f(si), f(ui)))


def pad_arrays(seqs, bint batch_first=True, bint left=False, bytes pad_elem=None,
               int64_t multiple=1):
    """:func:`fastcollate.pad` of a list or tuple of NumPy arrays in one call: scan,
    allocate, pad and copy (~3 us at B=16 against ~12 through the plan).

    Every sample must be an exact, C-contiguous, aligned, native-endian ``ndarray`` of
    sample 0's dtype (one torch has, see :func:`set_packed_factories`), number of
    dimensions (>= 1) and trailing shape; lengths may be 0. Returns ``(out, lengths)``:
    ``out`` a fresh ``(B, T, *row)`` (``batch_first``) or ``(T, B, *row)`` array in
    64-byte aligned memory, ``T`` the longest length rounded up to a multiple of
    ``multiple``, padding before the data with ``left``, each padding element the bytes
    ``pad_elem`` (one element of the dtype; None: zeros); ``lengths`` int64. None, with
    nothing allocated, for any other batch, or when ``B * T`` rows would not fit
    (the caller's general path takes it or names the odd sample). The samples are kept
    in a private list while the GIL is released for the copy.

    >>> import numpy as np
    >>> out, lengths = pad_arrays([np.array([1, 2, 3]), np.array([4])], True, True)
    >>> out.tolist(), lengths.tolist()
    ([[1, 2, 3], [0, 0, 4]], [3, 1])
    """
    if _packed_type is None or not (type(seqs) is list or type(seqs) is tuple) or not seqs:
        return None
    cdef list own = list(seqs)
    cdef Py_ssize_t B = len(own), i
    cdef object x = own[0]
    if not cnp.PyArray_CheckExact(x):
        return None
    cdef cnp.ndarray a, a0 = <cnp.ndarray>x
    cdef cnp.PyArray_Descr* d0 = cnp.PyArray_DESCR(a0)
    cdef int nd0 = cnp.PyArray_NDIM(a0), num = cnp.PyArray_TYPE(a0)
    if nd0 < 1 or nd0 > 63 or not _plain_numbers(d0):
        return None
    if num < 0 or num >= 64 or not (_torch_typenums >> num) & 1:
        return None
    cdef cnp.npy_intp* dims0 = cnp.PyArray_DIMS(a0)
    cdef cnp.npy_intp nB = B
    cdef cnp.ndarray lens_arr = cnp.PyArray_EMPTY(1, &nB, cnp.NPY_INT64, 0)
    cdef int64_t* lens = <int64_t*>cnp.PyArray_DATA(lens_arr)
    cdef uintptr_t* ptrs = <uintptr_t*>malloc(B * sizeof(uintptr_t) + 8)
    if ptrs == NULL:
        raise MemoryError()
    try:
        if not _scan_like_first(own, d0, nd0, dims0, ptrs, lens):
            return None
        out = _pad_rows(ptrs, lens, B, <cnp.dtype><PyObject*>d0, nd0, dims0, batch_first,
                        left, pad_elem, multiple)
        return None if out is None else (out, lens_arr)
    finally:
        free(ptrs)


def pad_flat(src, const int64_t[::1] lengths, bint batch_first=True, bint left=False,
             bytes pad_elem=None, int64_t multiple=1):
    """:func:`pad_arrays` of samples concatenated in ``src`` (a C-contiguous, aligned,
    native-endian array of shape ``(N, *row)``, e.g. the NumPy view of ``torch.cat``
    of a tensor batch), sample ``i`` being its next ``lengths[i]`` rows (>= 0, adding
    up to ``N``): the padded array, or None when they do not (or ``B * T`` rows would
    not fit)."""
    if not cnp.PyArray_CheckExact(src):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>src
    cdef int nd = cnp.PyArray_NDIM(a), k
    if nd < 1 or nd > 63 or not _readable_rows(a):
        return None
    cdef Py_ssize_t B = lengths.shape[0], i
    if B == 0:
        return None
    cdef Py_ssize_t row_bytes = cnp.PyArray_ITEMSIZE(a)
    for k in range(1, nd):
        row_bytes *= cnp.PyArray_DIM(a, k)
    cdef int64_t acc = 0, n_rows = cnp.PyArray_DIM(a, 0)
    cdef uintptr_t base = <uintptr_t>cnp.PyArray_DATA(a)
    cdef int64_t* lens = <int64_t*>malloc(2 * B * sizeof(int64_t))
    if lens == NULL:
        raise MemoryError()
    cdef uintptr_t* ptrs = <uintptr_t*>(lens + B)
    try:
        for i in range(B):
            if lengths[i] < 0 or lengths[i] > n_rows - acc:
                return None
            lens[i] = lengths[i]
            ptrs[i] = base + <uintptr_t>(acc * row_bytes)
            acc += lengths[i]
        if acc != n_rows:
            return None
        return _pad_rows(ptrs, lens, B, <cnp.dtype><PyObject*>cnp.PyArray_DESCR(a), nd,
                         cnp.PyArray_DIMS(a), batch_first, left, pad_elem, multiple)
    finally:
        free(lens)


cdef object _pad_rows(const uintptr_t* ptrs, const int64_t* lens, Py_ssize_t B,
                      cnp.dtype descr, int nd, const cnp.npy_intp* dims, bint batch_first,
                      bint left, bytes pad_elem, int64_t multiple):
    """The padded output of ``B`` samples (``lens[i]`` contiguous rows at ``ptrs[i]``,
    kept alive by the caller) of dtype ``descr`` and row ``dims[1:nd]``: allocated and
    written by ``fc_pad``; None when ``B * T`` rows would not fit."""
    cdef int64_t T = 0
    out = _pad_alloc(lens, B, descr, nd, dims, batch_first, pad_elem, multiple, &T)
    if out is not None:
        _pad_write(<cnp.ndarray>out, ptrs, lens, B, T, batch_first, left, pad_elem)
    return out


cdef object _pad_alloc(const int64_t* lens, Py_ssize_t B, cnp.dtype descr, int nd,
                       const cnp.npy_intp* dims, bint batch_first, bytes pad_elem,
                       int64_t multiple, int64_t* T_out):
    """:func:`_pad_rows` up to the copy: the output allocated, not yet written, and its
    length ``T_out``; None when ``B * T`` rows would not fit."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    cdef Py_ssize_t itemsize = descr.itemsize, row_bytes = descr.itemsize, i
    cdef int k
    if pad_elem is not None and len(pad_elem) != itemsize:
        raise ValueError(f"pad_elem must be one {itemsize}-byte element, got "
                         f"{len(pad_elem)} bytes")
    cdef cnp.npy_intp out_dims[64]
    for k in range(1, nd):
        out_dims[k + 1] = dims[k]
        row_bytes *= dims[k]
    cdef int64_t T = 0, rows
    for i in range(B):
        if lens[i] > T:
            T = lens[i]
    if T % multiple:
        if T > INT64_MAX - multiple:
            return None
        T += multiple - T % multiple
    rows = B * T if T == 0 or B <= INT64_MAX // T else -1
    if rows < 0 or rows >= (<int64_t>1 << 62) or (
            row_bytes > 0 and rows > INT64_MAX // row_bytes):
        return None         # the general path says why
    out_dims[0] = B if batch_first else T
    out_dims[1] = T if batch_first else B
    T_out[0] = T
    return _new_rows(descr, nd + 1, out_dims, <size_t>(rows * row_bytes))


cdef int _pad_write(cnp.ndarray out, const uintptr_t* ptrs, const int64_t* lens,
                    Py_ssize_t B, int64_t T, bint batch_first, bint left,
                    bytes pad_elem) except -1:
    """The copy of :func:`_pad_rows` into :func:`_pad_alloc`'s ``out`` (``fc_pad``,
    the GIL released)."""
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(out), k
    cdef int64_t row_bytes = itemsize
    for k in range(2, cnp.PyArray_NDIM(out)):
        row_bytes *= cnp.PyArray_DIM(out, k)
    cdef int64_t rows = <int64_t>B * T
    cdef const char* pad = NULL if pad_elem is None else <const char*>pad_elem
    cdef int64_t pad_bytes = 0 if pad_elem is None else itemsize
    cdef int stream
    if rows and row_bytes > 0:
        stream = 2 if rows * row_bytes >= STREAM_MIN_BYTES else 0
        with nogil:
            fc_pad(<char*>cnp.PyArray_DATA(out), <const char* const*>ptrs, lens, B, B, T,
                   row_bytes, batch_first, left, pad, pad_bytes, stream)
    return 0


def pad_tensors(seqs, tensor_type, cat, int64_t direct_bytes, int64_t max_bytes,
                pad_bytes, bint batch_first=True, bint left=False, int64_t multiple=1):
    """:func:`fastcollate.pad` of a batch of exact CPU tensors in one call, as
    ``(out, lengths)`` like :func:`pad_arrays`; ``pad_bytes(numpy_dtype)`` gives
    ``(ok, pad_elem)`` for the output's dtype (not ok: None is returned).

    ``numel()`` of every sample first (:func:`tensor_numels`). Batches of at most
    ``max_bytes`` whose samples average under ``direct_bytes`` are concatenated
    (:func:`cat_tensors`) and padded from the concatenation (:func:`pad_flat`); the
    others are read tensor by tensor where they lie, with the checks of
    :func:`tensor_sources` and the storages' addresses read last, right before the
    copy, as :func:`pack_tensors` does (no extra memory). None, with nothing kept, for
    whatever those decline (the caller's planned path takes it or names the odd
    sample): not exact tensors, strided or mixed-dtype large samples..."""
    cdef list own = list(seqs)
    cdef double nbytes = 0
    cdef bint large = False
    numels = _small_numels(own, tensor_type, direct_bytes, &nbytes, &large)
    if numels is None:
        return None
    if large or nbytes > <double>max_bytes:
        return _pad_tensor_sources(own, tensor_type, numels, pad_bytes, batch_first,
                                   left, multiple)
    flat = _cat_rows(own, <cnp.ndarray>numels, cat)
    if flat is None:
        return None
    src, lengths = <tuple>flat
    ok, elem = pad_bytes(src.dtype)
    if not ok:
        return None
    out = pad_flat(src, lengths, batch_first, left, elem, multiple)
    return None if out is None else (out, lengths)


cdef object _pad_tensor_sources(list own, tensor_type, cnp.ndarray numels, pad_bytes,
                                bint batch_first, bint left, int64_t multiple):
    """:func:`pad_tensors` of a batch read tensor by tensor (as
    :func:`_pack_tensor_sources` reads it)."""
    cdef _TensorReads rd = _tensor_reads(tensor_type)
    cdef cnp.npy_intp dims[64]
    cdef int64_t row_bytes = 0, T = 0
    first = _first_layout(rd, own[0], 63, dims, &row_bytes)
    if first is None:
        return None
    dtype, descr, row = <tuple>first
    ok, elem = pad_bytes(descr)
    if not ok:
        return None
    cdef Py_ssize_t B = len(own), nd = PyTuple_GET_SIZE(row) + 1
    cdef cnp.npy_intp nB = B
    cdef cnp.ndarray lens_arr = cnp.PyArray_EMPTY(1, &nB, cnp.NPY_INT64, 0)
    cdef int64_t* lens = <int64_t*>cnp.PyArray_DATA(lens_arr)
    cdef int64_t* offs = <int64_t*>malloc(B * sizeof(int64_t) + 8)
    if offs == NULL:
        raise MemoryError()
    cdef list storages = [None] * B
    cdef _StorageReads sr
    try:
        sr = _read_sources(rd, own, tensor_type, dtype, row,
                           <const int64_t*>cnp.PyArray_DATA(numels), lens, offs, storages)
        if sr is None:
            return None
        out = _pad_alloc(lens, B, <cnp.dtype>descr, nd, dims, batch_first, elem, multiple,
                         &T)
        if out is None:
            return None
        # nothing the collector tracks is allocated from here to the copy
        _resolve_sources(sr, storages, lens, offs, B, row_bytes)
        _pad_write(<cnp.ndarray>out, <const uintptr_t*>offs, lens, B, T, batch_first,
                   left, elem)
        return out, lens_arr
    finally:
        free(offs)


def cat_tensors(seqs, tensor_type, cat, int64_t direct_bytes, int64_t max_bytes):
    """A batch of small exact CPU tensors as one NumPy array: ``(src, lengths)``, the
    NumPy view of ``cat(samples)`` (``torch.cat``, which validates dtypes, devices and
    rows, promotes mixed dtypes and copies any strides) and each sample's rows (from
    ``numel()``, read before ``cat`` with no Python code in between). For
    :func:`pad_flat`. None, with nothing kept, when a sample is not an exact
    ``tensor_type`` or holds no elements (a 1-D empty tensor, which ``cat`` skips
    whatever its row), when the samples average ``direct_bytes`` or more or add up to
    more than ``max_bytes`` (the concatenation is extra memory), when ``cat`` refuses
    the batch or its result has no NumPy view (requiring grad, not on the CPU...), or
    when the counts do not split it into whole rows."""
    cdef list own = list(seqs)
    cdef double nbytes = 0
    numels = _small_numels(own, tensor_type, direct_bytes, &nbytes)
    if numels is None or nbytes > <double>max_bytes:
        return None
    return _cat_rows(own, <cnp.ndarray>numels, cat)


cdef object _cat_rows(list own, cnp.ndarray numels, cat):
    """:func:`cat_tensors` once the ``numel()`` counts are read: ``(src, lengths)`` or
    None."""
    cdef Py_ssize_t B = len(own), i, k
    cdef const int64_t* n = <const int64_t*>cnp.PyArray_DATA(numels)
    for i in range(B):
        if n[i] <= 0:
            return None
    src = _cat_numpy(cat, own)
    if src is None or cnp.PyArray_NDIM(<cnp.ndarray>src) < 1:
        return None
    cdef int64_t unit = 1, acc = 0
    for k in range(1, cnp.PyArray_NDIM(<cnp.ndarray>src)):
        unit *= cnp.PyArray_DIM(<cnp.ndarray>src, k)
    if unit <= 0:
        return None
    cdef cnp.npy_intp nB = B
    cdef cnp.ndarray lens_arr = cnp.PyArray_EMPTY(1, &nB, cnp.NPY_INT64, 0)
    cdef int64_t* lens = <int64_t*>cnp.PyArray_DATA(lens_arr)
    for i in range(B):
        if n[i] % unit:
            return None
        lens[i] = n[i] // unit
        acc += lens[i]
    if acc != cnp.PyArray_DIM(<cnp.ndarray>src, 0):
        return None
    return src, lens_arr


@cython.boundscheck(True)
def pack_arrays(seqs, bint enforce_sorted=False, bint torch_only=False):
    """:func:`fastcollate.pack` of a batch of NumPy arrays in one call.

    Every sample must be an exact, C-contiguous, aligned, native-endian ``ndarray`` of
    sample 0's dtype, number of dimensions (>= 1) and trailing shape; otherwise None is
    returned and nothing is allocated (the caller takes its general path, which names
    the odd sample). Returns ``(data, batch_sizes, sorted_indices, unsorted_indices)``
    as arrays: ``data`` a fresh ``(sum L_i, *row)`` array of that dtype in 64-byte
    aligned memory; the indices None with ``enforce_sorted``. Zero-length samples and
    unsorted lengths with ``enforce_sorted`` raise as :func:`sort_lengths` does.

    The batch is copied into a private list first: every array stays alive while the
    GIL is released for the copy, whatever another thread does to ``seqs``.

    With ``torch_only``, None also unless the dtype is one torch has (as given to
    :func:`set_packed_factories`).
    """
    return _pack_arrays(seqs, enforce_sorted, torch_only)


@cython.boundscheck(True)
cdef object _pack_arrays(seqs, bint enforce_sorted, bint torch_only):
    """:func:`pack_arrays`; with ``torch_only``, None unless sample 0's dtype is one
    torch has (set_packed_factories)."""
    cdef list own = list(seqs)
    cdef Py_ssize_t B = len(own), i, k
    if B == 0:
        return None
    cdef object x = own[0]
    if not cnp.PyArray_CheckExact(x):
        return None
    cdef cnp.ndarray a, a0 = <cnp.ndarray>x
    cdef cnp.PyArray_Descr* d0 = cnp.PyArray_DESCR(a0)
    cdef int nd0 = cnp.PyArray_NDIM(a0)
    cdef cnp.npy_intp* dims0 = cnp.PyArray_DIMS(a0)
    if nd0 < 1 or not _plain_numbers(d0):
        return None
    cdef int num = cnp.PyArray_TYPE(a0)
    if torch_only and (num < 0 or num >= 64 or not (_torch_typenums >> num) & 1):
        return None
    cdef Py_ssize_t row_bytes = cnp.PyArray_ITEMSIZE(a0)
    for k in range(1, nd0):
        row_bytes *= dims0[k]
    cdef cnp.npy_intp out_dims[64]
    if nd0 > 64:
        return None
    for k in range(nd0):
        out_dims[k] = dims0[k]
    cdef int64_t* scratch = <int64_t*>malloc(2 * B * sizeof(int64_t) + 8)
    if scratch == NULL:
        raise MemoryError()
    cdef uintptr_t* ptrs = <uintptr_t*>scratch
    cdef int64_t* lens = scratch + B
    try:
        if not _scan_like_first(own, d0, nd0, out_dims, ptrs, lens):
            return None
        return _pack_rows(ptrs, lens, B, row_bytes, <cnp.dtype><PyObject*>d0, nd0,
                          out_dims, enforce_sorted)
    finally:
        free(scratch)


def pack_flat(src, const int64_t[::1] numels, bint enforce_sorted=False):
    """:func:`fastcollate.pack` of samples concatenated in ``src`` (a C-contiguous,
    aligned, native-endian array of shape ``(N, *row)``, e.g. ``torch.cat`` of a tensor
    batch as NumPy), sample ``i`` being ``numels[i]`` elements, in one call.

    Returns ``(data, batch_sizes, sorted_indices, unsorted_indices)`` like
    :func:`pack_arrays`, or None when the elements do not split into whole rows of
    ``src``: a count of 0 or not a multiple of the row's elements, counts that do not
    add up to ``N`` rows, or rows of zero elements (the caller's general path then
    reports the sample).
    """
    if not cnp.PyArray_CheckExact(src):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>src
    cdef int nd = cnp.PyArray_NDIM(a), k
    if nd < 1 or nd > 64 or not _readable_rows(a):
        return None
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp out_dims[64]
    cdef int64_t unit = 1, n, acc = 0
    for k in range(nd):
        out_dims[k] = dims[k]
        if k:
            unit *= dims[k]
    cdef Py_ssize_t B = numels.shape[0], i
    if B == 0 or unit <= 0:
        return None
    cdef Py_ssize_t row_bytes = unit * cnp.PyArray_ITEMSIZE(a)
    cdef int64_t* scratch = <int64_t*>malloc(2 * B * sizeof(int64_t))
    if scratch == NULL:
        raise MemoryError()
    cdef uintptr_t* ptrs = <uintptr_t*>scratch
    cdef int64_t* lens = scratch + B
    cdef uintptr_t base = <uintptr_t>cnp.PyArray_DATA(a)
    try:
        for i in range(B):
            n = numels[i]
            if n <= 0 or n % unit != 0:
                return None
            n //= unit
            if n > dims[0] - acc:
                return None
            ptrs[i] = base + <uintptr_t>(acc * row_bytes)
            lens[i] = n
            acc += n
        if acc != dims[0]:
            return None
        return _pack_rows(ptrs, lens, B, row_bytes, <cnp.dtype><PyObject*>cnp.PyArray_DESCR(a),
                          nd, out_dims, enforce_sorted)
    finally:
        free(scratch)


# Batches of small tensors of more than 4 chunks are concatenated a chunk of this many
# bytes at a time (it stays in L2 for the scatter): peak memory is the output plus one
# chunk. Below that, one torch.cat of the whole batch is faster (the chunks' cat reads
# the tensors in rank order, ~25% slower for thousands of tensors) and its extra
# memory under 1 MB.
CHUNK_BYTES = 256 << 10


def pack_tensors(seqs, tensor_type, cat, int64_t direct_bytes, bint enforce_sorted=False,
                 int64_t chunk_bytes=CHUNK_BYTES):
    """:func:`fastcollate.pack` of a batch of exact CPU tensors in one call:
    ``numel()`` of every sample, ``cat(samples)`` (``torch.cat``: it validates
    dtypes, devices and rows, promotes mixed dtypes, copies any strides), its NumPy
    view, then :func:`pack_flat`. ``tensor_type`` and ``cat`` are ``torch.Tensor`` and
    ``torch.cat`` (this module does not import torch). Samples averaging
    ``direct_bytes`` or more (sample 0's element size times the elements) are instead
    read where they lie, without the concatenation's copy (:func:`_pack_tensor_sources`:
    the checks of :func:`tensor_sources`, one dtype, contiguous; None otherwise, and
    the planned path concatenates them).

    None, with nothing allocated, when a sample is not an exact ``tensor_type``, when
    ``cat`` refuses the batch, when the concatenation has no NumPy view (requiring
    grad, not on the CPU, a conjugate or negative view, a dtype NumPy lacks) or when
    :func:`pack_flat` cannot split it: the caller's general path handles or names it.

    No Python code runs between the ``numel()`` reads and the start of ``cat``, so
    another Python thread cannot change a sample's shape in between (``cat`` then reads
    the samples itself); the flat buffer is private to this call.

    Batches over ``4 * chunk_bytes`` are concatenated and scattered a chunk of ranks at
    a time (:func:`_pack_tensor_chunks`): peak memory is the output plus one chunk.
    There each chunk's ``cat`` releases the GIL, so a later chunk's samples can change
    shape after their lengths were read (a ``set_``/``resize_`` during the call, which
    torch.cat itself does not survive either); each chunk's rows are checked against
    the lengths, so reads and writes stay in bounds whatever happens.
    """
    cdef list own = list(seqs)
    cdef double nbytes = 0
    cdef bint large = False
    numels = _small_numels(own, tensor_type, direct_bytes, &nbytes, &large)
    if large:
        return _pack_tensor_sources(own, tensor_type, enforce_sorted,
                                    <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>numels))
    if numels is None:
        return None
    if nbytes > 4.0 * <double>chunk_bytes:
        return _pack_tensor_chunks(own, numels, cat, enforce_sorted, chunk_bytes)
    src = _cat_numpy(cat, own)
    return None if src is None else pack_flat(src, numels, enforce_sorted)


cdef object _small_numels(list own, tensor_type, int64_t direct_bytes, double* nbytes,
                          bint* large=NULL):
    """``numel()`` of every sample (:func:`tensor_numels`) and, in ``nbytes``, their
    bytes (sample 0's element size); None for an empty batch or a sample that is not
    an exact ``tensor_type``. Samples averaging ``direct_bytes`` or more (reading each
    tensor directly then beats a concatenation's copy) set ``large`` and still return
    the counts; without ``large`` they return None."""
    cdef Py_ssize_t B = len(own), i
    if B == 0:
        return None
    numels = tensor_numels(own, tensor_type)
    if numels is None:
        return None
    cdef const int64_t* n = <const int64_t*>cnp.PyArray_DATA(numels)
    cdef double total = 0
    for i in range(B):
        total += <double>n[i]
    nbytes[0] = total * <double>own[0].element_size()
    if nbytes[0] >= <double>direct_bytes * <double>B:
        if large == NULL:
            return None
        large[0] = True
    return numels


cdef object _pack_tensor_sources(list own, tensor_type, bint enforce_sorted,
                                 const int64_t* numels):
    """:func:`pack_tensors` of a batch of large samples (``numels``: their ``numel()``,
    just read), each tensor read where it lies: exact CPU tensors of sample 0's dtype
    and row, contiguous, without grad, neither negative nor conjugate views (the checks
    of :func:`tensor_sources`), whose storages are of one type; then sort, allocation
    and scatter as for NumPy batches. None for a dtype NumPy lacks or a sample those
    checks decline (the planned path then concatenates or names it).

    The storages' addresses and sizes are read last, after the sort and the allocation
    (which may run Python code: a collection's finalizers), and only then bound the
    copy, so a storage resized or reallocated before that is read as it is then
    (``ValueError`` naming the sample if it no longer holds the sample's bytes); one
    that is reallocated while the GIL-released copy runs is the documented race."""
    cdef _TensorReads rd = _tensor_reads(tensor_type)
    cdef cnp.npy_intp out_dims[64]
    cdef int64_t row_bytes = 0
    first = _first_layout(rd, own[0], 64, out_dims, &row_bytes)
    if first is None:
        return None
    dtype, descr, row = <tuple>first
    cdef Py_ssize_t B = len(own), nd = PyTuple_GET_SIZE(row) + 1
    cdef int64_t* table = <int64_t*>malloc(2 * B * sizeof(int64_t) + 8)
    if table == NULL:
        raise MemoryError()
    cdef int64_t* lens = table
    cdef int64_t* offs = table + B
    cdef list storages = [None] * B
    cdef _StorageReads sr
    try:
        sr = _read_sources(rd, own, tensor_type, dtype, row, numels, lens, offs, storages)
        if sr is None:
            return None
        packed = _sort_alloc(lens, B, row_bytes, <cnp.dtype>descr, nd, out_dims,
                             enforce_sorted)
        # from here to the copy nothing allocates an object the collector tracks, so no
        # Python code runs: the addresses read now are the ones copied from
        _resolve_sources(sr, storages, lens, offs, B, row_bytes)
        _scatter_packed(packed, <const uintptr_t*>offs, lens, B, row_bytes)
        return packed
    finally:
        free(table)


cdef object _first_layout(_TensorReads rd, object t0, int max_nd, cnp.npy_intp* dims,
                          int64_t* row_bytes):
    """``(dtype, numpy_dtype, row)`` of sample 0 of a batch read directly, with
    ``dims[1:nd]`` its row and ``row_bytes`` the row's bytes; None for a dtype NumPy
    lacks or fewer than 1 or more than ``max_nd`` dimensions."""
    dtype = rd.dtype.get(t0)
    cdef object descr = _np_of_torch.get(dtype)
    cdef object shape0 = rd.shape.get(t0)
    if descr is None or not isinstance(shape0, tuple):
        return None
    cdef Py_ssize_t nd = PyTuple_GET_SIZE(shape0), k
    if nd < 1 or nd > max_nd:
        return None
    row_bytes[0] = (<cnp.dtype>descr).itemsize
    for k in range(1, nd):
        dims[k] = <object>PyTuple_GET_ITEM(shape0, k)
        row_bytes[0] *= dims[k]
    return dtype, descr, (<tuple>shape0)[1:]


cdef _StorageReads _read_sources(_TensorReads rd, list own, tensor_type, dtype,
                                 tuple row, const int64_t* numels, int64_t* lens,
                                 int64_t* offs, list storages):
    """:func:`_read_source` of every sample of ``own`` into ``lens``/``offs``/
    ``storages``: the reads of their storage type, or None as soon as a sample is
    declined or the storages are of several types."""
    cdef Py_ssize_t i
    cdef object storage_type = None
    cdef bint complex_ = dtype.is_complex
    cdef int64_t itemsize = dtype.itemsize
    for i in range(len(own)):
        offs[i] = _read_source(rd, own[i], tensor_type, dtype, complex_, itemsize, row,
                               &numels[i], &lens[i], storages, i)
        if offs[i] < 0:
            return None
        if i == 0:
            storage_type = type(<object>PyList_GET_ITEM(storages, 0))
        elif type(<object>PyList_GET_ITEM(storages, i)) is not storage_type:
            return None
    return rd.storage_reads(storage_type)


cdef int _resolve_sources(_StorageReads sr, list storages, const int64_t* lens,
                          int64_t* offs, Py_ssize_t B, int64_t row_bytes) except -1:
    """``offs[i]`` (sample ``i``'s byte offset in ``storages[i]``, a storage of type
    ``sr.tp``) becomes its address, from the storage's ``data_ptr()`` and ``nbytes()``
    read now (once for samples that share a storage); ValueError naming a sample whose
    storage no longer holds its ``lens[i]`` rows. Makes no object the collector tracks
    (the reads return ints)."""
    cdef Py_ssize_t i
    cdef object st, prev = None
    cdef int64_t base = 0, nbytes = 0
    for i in range(B):
        st = <object>PyList_GET_ITEM(storages, i)
        if st is not prev:
            if type(st) is not sr.tp:
                raise ValueError(f"sample {i}: its storage changed type during the call")
            base = sr.data_ptr.get(st)
            nbytes = sr.nbytes.get(st)
            prev = st
        _check_extent(i, base, nbytes, offs[i], lens[i], row_bytes)
        offs[i] = base + offs[i]
    return 0


cdef inline Py_ssize_t _chunk_end(const int64_t* lens, Py_ssize_t r0, Py_ssize_t B,
                                  int64_t unit, int64_t limit) noexcept:
    """End of the chunk that starts at ``r0``: the samples that follow while their
    elements (``lens[r] * unit``) fit in ``limit``; at least one."""
    cdef int64_t elems = lens[r0] * unit
    cdef Py_ssize_t r1 = r0 + 1
    while r1 < B and elems + lens[r1] * unit <= limit:
        elems += lens[r1] * unit
        r1 += 1
    return r1


cdef inline int64_t _chunk_sources(uintptr_t* srcs, uintptr_t base, const int64_t* lens,
                                   Py_ssize_t r0, Py_ssize_t r1,
                                   Py_ssize_t row_bytes) noexcept:
    """``srcs[r - r0]``: the address of sample ``r``'s rows in a chunk concatenated at
    ``base``; returns the chunk's rows."""
    cdef int64_t rows = 0
    cdef Py_ssize_t r
    for r in range(r0, r1):
        srcs[r - r0] = base + <uintptr_t>(rows * row_bytes)
        rows += lens[r]
    return rows


cdef object _cat_numpy(cat, list group):
    """``cat(group).numpy()``, or None if torch.cat refuses the group or the result has
    no NumPy view (requiring grad, not on the CPU, a dtype NumPy lacks)."""
    try:
        src = cat(group).numpy()
    except (RuntimeError, TypeError, ValueError):
        return None
    if not cnp.PyArray_CheckExact(src) or not _readable_rows(<cnp.ndarray>src):
        return None
    return src


cdef object _pack_tensor_chunks(list own, cnp.ndarray numels, cat, bint enforce_sorted,
                                int64_t chunk_bytes):
    """:func:`pack_tensors` of a batch larger than ``chunk_bytes``, with no
    concatenation of the whole batch: the samples are sorted first (lengths from
    ``numel()`` and sample 0's row), then concatenated and scattered a chunk of
    consecutive ranks (about ``chunk_bytes``, in cache) at a time. Peak memory: the
    output plus one chunk. Every chunk must come out with the row, dtype and number
    of rows the lengths say (torch.cat promotes within a chunk: chunks of different
    dtypes mean mixed dtypes, left to the general path); None otherwise."""
    cdef Py_ssize_t B = len(own), i, r, r0, r1, k
    cdef tuple shape0 = tuple(own[0].shape)
    cdef int nd = len(shape0)
    if nd < 1 or nd > 64:
        return None
    cdef int64_t unit = 1
    for k in range(1, nd):
        unit *= <int64_t>shape0[k]
    if unit <= 0:
        return None
    cdef const int64_t* n = <const int64_t*>cnp.PyArray_DATA(numels)
    cdef cnp.npy_intp nB = B
    cdef cnp.ndarray lens_arr = cnp.PyArray_EMPTY(1, &nB, cnp.NPY_INT64, 0)
    cdef int64_t* lens = <int64_t*>cnp.PyArray_DATA(lens_arr)
    for i in range(B):
        if n[i] <= 0 or n[i] % unit != 0:
            return None
        lens[i] = n[i] // unit
    # lengths from sample 0's row: until each chunk's torch.cat has checked the rows,
    # an unsorted verdict may rest on a sample of another row (the general path names
    # it properly)
    try:
        bs_arr, si_arr, ui_arr = _count_sort(lens, B, enforce_sorted)
    except UnsortedError:
        return None
    cdef const int64_t* bs = <const int64_t*>cnp.PyArray_DATA(bs_arr)
    cdef const int64_t* order = NULL
    if si_arr is not None:
        order = <const int64_t*>cnp.PyArray_DATA(si_arr)
    cdef Py_ssize_t T = (<cnp.ndarray>bs_arr).shape[0], t
    cdef int64_t* scratch = <int64_t*>malloc((2 * B + T + 1) * sizeof(int64_t))
    if scratch == NULL:
        raise MemoryError()
    cdef int64_t* lens_r = scratch               # lengths in rank order
    cdef uintptr_t* srcs = <uintptr_t*>(scratch + B)
    cdef int64_t* offs = scratch + 2 * B
    cdef int64_t acc = 0, rows, limit = chunk_bytes // <int64_t>own[0].element_size()
    cdef Py_ssize_t row_bytes = 0
    cdef cnp.npy_intp out_dims[64]
    cdef cnp.npy_intp* dims
    cdef cnp.ndarray src, data = None
    cdef cnp.PyArray_Descr* d0 = NULL
    cdef list group
    cdef int stream = 0
    cdef int64_t block = 0, tile = 0
    try:
        for r in range(B):
            lens_r[r] = lens[r if order == NULL else order[r]]
        for t in range(T):
            offs[t] = acc
            acc += bs[t]
        offs[T] = acc
        r0 = 0
        while r0 < B:
            r1 = _chunk_end(lens_r, r0, B, unit, limit)
            group = [own[r if order == NULL else order[r]] for r in range(r0, r1)]
            src = None          # the previous chunk goes before the next one is made
            src = _cat_numpy(cat, group)
            if src is None or cnp.PyArray_NDIM(src) != nd:
                return None
            dims = cnp.PyArray_DIMS(src)
            for k in range(1, nd):
                if dims[k] != <cnp.npy_intp>shape0[k]:
                    return None
            if data is None:
                d0 = cnp.PyArray_DESCR(src)
                row_bytes = unit * cnp.PyArray_ITEMSIZE(src)
                out_dims[0] = acc
                for k in range(1, nd):
                    out_dims[k] = dims[k]
                if acc > INT64_MAX // row_bytes:
                    return None
                data = _new_rows(<cnp.dtype><PyObject*>d0, nd, out_dims,
                                 <size_t>(acc * row_bytes))
                block = choose_block(row_bytes, B)
                stream = choose_stream(row_bytes, acc * row_bytes)
                tile = choose_tile(row_bytes, T, B, acc * row_bytes)
            elif not _like_first(src, d0, nd, out_dims):
                return None     # another dtype than the first chunk's: mixed dtypes
            rows = _chunk_sources(srcs, <uintptr_t>cnp.PyArray_DATA(src), lens_r, r0, r1,
                                  row_bytes)
            if rows != dims[0]:
                return None
            # ranks r0..r1-1 only (partial): every row at offs[t] + r, whatever the
            # other ranks do (the tiled kernel's dense tails, which assume it sees
            # every active rank, are skipped)
            with nogil:
                fc_scatter(<char*>cnp.PyArray_DATA(data) + r0 * row_bytes,
                           <const char* const*>srcs, lens_r + r0, offs, r1 - r0, row_bytes,
                           block, stream, tile, 1)
            r0 = r1
        return data, bs_arr, si_arr, ui_arr
    finally:
        free(scratch)


cdef object _planned_chunk(list own, const int64_t* lens, const int64_t* order,
                           Py_ssize_t r0, Py_ssize_t r1, int64_t unit, cat, tensor_type,
                           cnp.PyArray_Descr* descr, int nd, const cnp.npy_intp* dims):
    """``cat`` of the planned samples ``r0..r1-1`` (sample ``order[r]``, or ``r`` when
    ``order`` is NULL; ``lens[r]`` its planned length) as a NumPy view.

    Each sample's ``numel()`` is read again right before ``cat`` (no Python code runs
    in between): a sample whose element count is no longer ``lens[r] * unit`` raises
    ValueError naming it. None when the concatenation is not the planned rows (another
    dtype than ``descr`` or row than ``dims[1:]``, requiring grad, not on the CPU, or
    refused by ``cat``): the caller plans the batch again."""
    cdef list group = []
    cdef Py_ssize_t r, i
    cdef int64_t rows = 0, n
    cdef object x, shape
    cdef _Attr numel = _Attr(tensor_type, "numel")
    for r in range(r0, r1):
        i = r if order == NULL else order[r]
        x = own[i]
        if type(x) is not tensor_type:
            return None
        n = numel.get(x)
        if n != lens[r] * unit:
            shape = x.shape
            if PyTuple_GET_SIZE(shape) == 0 or <object>PyTuple_GET_ITEM(shape, 0) == lens[r]:
                return None     # another row (planned from sample 0's): named on re-plan
            raise ValueError(f"sample {i} has {n} elements but was planned with length "
                             f"{lens[r]} ({lens[r] * unit} elements): it changed during "
                             "the call")
        group.append(x)
        rows += lens[r]
    src = _cat_numpy(cat, group)
    if (src is None or not _like_first(<cnp.ndarray>src, descr, nd, dims)
            or cnp.PyArray_DIMS(<cnp.ndarray>src)[0] != rows):
        return None
    return src


cdef cnp.dtype _planned_dtype(dtype, tuple row, int* nd, cnp.npy_intp* dims,
                              int64_t* unit):
    """The NumPy dtype and the trailing dimensions ``dims[1:]`` of planned rows."""
    if len(row) > 63:
        raise ValueError("rows of more than 63 dimensions")
    cdef cnp.dtype d = np.dtype(dtype)
    if not _plain_numbers(<cnp.PyArray_Descr*>d):
        raise ValueError(f"cannot copy elements of dtype {d}")
    cdef int k
    nd[0] = len(row) + 1
    unit[0] = 1
    for k in range(len(row)):
        dims[k + 1] = <cnp.npy_intp>row[k]
        if dims[k + 1] < 0:
            raise ValueError(f"row {row} has a negative dimension")
        unit[0] *= dims[k + 1]
    if unit[0] <= 0:
        raise ValueError(f"rows {row} hold no elements")
    return d


def pack_chunks_into(seqs, lengths, sorted_indices, batch_sizes, dtype, tuple row, cat,
                     tensor_type, uintptr_t out_ptr, int64_t out_rows,
                     int64_t chunk_bytes=CHUNK_BYTES):
    """Write a planned batch of small exact tensors into the packed rows at ``out_ptr``
    (``out_rows`` rows of ``row`` elements of NumPy dtype ``dtype``), concatenating
    them a chunk of consecutive ranks (about ``chunk_bytes``) at a time with ``cat``
    (``torch.cat``) and scattering each chunk from cache: peak memory is the output
    plus one chunk, where one concatenation of the whole batch doubled it.

    ``lengths``, ``sorted_indices`` (None: already sorted) and ``batch_sizes`` are the
    plan's; they are copied and checked against each other and ``out_rows`` first.
    Returns True when written, False when a chunk did not come out as planned (see
    :func:`_planned_chunk`: mixed dtypes, a sample requiring grad...; the rows written
    so far are garbage) so that the caller plans again. A sample whose length changed
    since it was planned raises ValueError naming it. As in :func:`pack_tensors`, the
    GIL is released inside each chunk's ``cat``: a ``set_``/``resize_`` of a sample
    during the call is undefined (torch.cat does not survive it), but reads and writes
    stay in bounds whatever happens."""
    cdef list own = list(seqs)
    # lengths and batch sizes: read once each into private rank-ordered tables
    # (_rank_tables), which are checked and used from then on
    cdef cnp.ndarray lens_arr = np.ascontiguousarray(lengths, dtype=np.int64)
    cdef cnp.ndarray bs_arr = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    cdef cnp.ndarray order_arr = None
    cdef Py_ssize_t B = len(own), T = bs_arr.shape[0], r0, r1
    if lens_arr.ndim != 1 or lens_arr.shape[0] != B or bs_arr.ndim != 1:
        raise ValueError("lengths and batch_sizes must be 1-D, one length per sample")
    if sorted_indices is not None:
        # private: the chunks index the batch with it after the tables' checks
        order_arr = np.array(sorted_indices, dtype=np.int64)
        if order_arr.ndim != 1 or order_arr.shape[0] != B:
            raise ValueError("sorted_indices and lengths differ in size")
    cdef int nd
    cdef int64_t unit
    cdef cnp.npy_intp dims[64]
    cdef cnp.dtype d = _planned_dtype(dtype, row, &nd, dims, &unit)
    cdef cnp.PyArray_Descr* descr = <cnp.PyArray_Descr*>d
    cdef Py_ssize_t itemsize = d.itemsize, row_bytes = unit * itemsize
    if B == 0:
        return True
    cdef const int64_t* order = (NULL if order_arr is None else
                                 <const int64_t*>cnp.PyArray_DATA(order_arr))
    cdef int64_t* scratch = <int64_t*>malloc((2 * B + T + 1) * sizeof(int64_t))
    if scratch == NULL:
        raise MemoryError()
    cdef int64_t* lens_r = scratch
    cdef uintptr_t* srcs = <uintptr_t*>(scratch + B)
    cdef int64_t* offs = scratch + 2 * B
    cdef int64_t total, limit = max(chunk_bytes // itemsize, 1)
    cdef int64_t block, tile
    cdef int stream
    cdef cnp.ndarray src
    try:
        total = _rank_tables(<const int64_t*>cnp.PyArray_DATA(lens_arr), order, B,
                             <const int64_t*>cnp.PyArray_DATA(bs_arr), T, lens_r, offs,
                             NULL, NULL)
        if total != out_rows:
            raise ValueError(f"the output has {out_rows} rows, the plan {total}")
        block = choose_block(row_bytes, B)
        stream = choose_stream(row_bytes, total * row_bytes)
        tile = choose_tile(row_bytes, T, B, total * row_bytes)
        r0 = 0
        while r0 < B:
            r1 = _chunk_end(lens_r, r0, B, unit, limit)
            src = None          # the previous chunk goes before the next one is made
            src = _planned_chunk(own, lens_r, order, r0, r1, unit, cat, tensor_type,
                                 descr, nd, dims)
            if src is None:
                return False
            _chunk_sources(srcs, <uintptr_t>cnp.PyArray_DATA(src), lens_r, r0, r1, row_bytes)
            with nogil:         # ranks r0..r1-1 only (partial), as _pack_tensor_chunks
                fc_scatter(<char*>out_ptr + r0 * row_bytes, <const char* const*>srcs,
                           lens_r + r0, offs, r1 - r0, row_bytes, block, stream, tile, 1)
            r0 = r1
        return True
    finally:
        free(scratch)


def pad_chunks_into(seqs, lengths, dtype, tuple row, cat, tensor_type, uintptr_t out_ptr,
                    int64_t T, bint batch_first=True, bint left=False, bytes pad_row=None,
                    int64_t chunk_bytes=CHUNK_BYTES):
    """:func:`pack_chunks_into` for a padded ``(B, T, *row)`` (``batch_first``) or
    ``(T, B, *row)`` buffer at ``out_ptr``: each chunk is a range of consecutive
    samples, concatenated, then written with its padding as :func:`pad_scatter` does
    (``left``, ``pad_row``). Returns True when written, False when a chunk did not come
    out as planned (the caller plans again); ValueError for a sample whose length
    changed since it was planned."""
    cdef list own = list(seqs)
    cdef cnp.ndarray lens_arr = np.array(lengths, dtype=np.int64)    # private: nogil reads
    cdef Py_ssize_t B = len(own), i, i0, i1
    if lens_arr.ndim != 1 or lens_arr.shape[0] != B:
        raise ValueError("lengths must be 1-D, one length per sample")
    cdef const int64_t* lens = <const int64_t*>cnp.PyArray_DATA(lens_arr)
    for i in range(B):
        if lens[i] < 0 or lens[i] > T:
            raise ValueError(f"sample {i} has length {lens[i]}, outside 0..{T}")
    cdef int nd
    cdef int64_t unit
    cdef cnp.npy_intp dims[64]
    cdef cnp.dtype d = _planned_dtype(dtype, row, &nd, dims, &unit)
    cdef cnp.PyArray_Descr* descr = <cnp.PyArray_Descr*>d
    cdef Py_ssize_t itemsize = d.itemsize, row_bytes = unit * itemsize
    if pad_row is not None and (len(pad_row) == 0 or row_bytes % len(pad_row) != 0):
        raise ValueError(f"pad_row must be a pattern whose length divides {row_bytes}, "
                         f"got {len(pad_row)} bytes")
    if B == 0 or T == 0:
        return True
    cdef const char* pad = NULL if pad_row is None else <const char*>pad_row
    cdef int64_t pad_bytes = 0 if pad_row is None else len(pad_row)
    cdef int stream = 2 if B * T * row_bytes >= STREAM_MIN_BYTES else 0
    cdef uintptr_t* srcs = <uintptr_t*>malloc(B * sizeof(uintptr_t))
    if srcs == NULL:
        raise MemoryError()
    cdef int64_t limit = max(chunk_bytes // itemsize, 1)
    cdef char* first
    cdef cnp.ndarray src
    try:
        i0 = 0
        while i0 < B:
            i1 = _chunk_end(lens, i0, B, unit, limit)
            src = None
            src = _planned_chunk(own, lens, NULL, i0, i1, unit, cat, tensor_type, descr,
                                 nd, dims)
            if src is None:
                return False
            _chunk_sources(srcs, <uintptr_t>cnp.PyArray_DATA(src), lens, i0, i1, row_bytes)
            first = <char*>out_ptr + (i0 * T if batch_first else i0) * row_bytes
            with nogil:         # samples i0..i1-1: their slots and padding only
                fc_pad(first, <const char* const*>srcs, lens + i0, i1 - i0, B, T,
                       row_bytes, batch_first, left, pad, pad_bytes, stream)
            i0 = i1
        return True
    finally:
        free(srcs)


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def tensor_numels(seqs, tensor_type):
    """``numel()`` of every sample of a batch of exact tensors (``type(x) is
    tensor_type``) as int64, or None as soon as a sample is anything else. One call
    of the C function behind ``numel()`` per tensor (~35 ns, :class:`_Attr`), cheaper
    than reading ``shape``."""
    cdef Py_ssize_t B = len(seqs), i
    cdef cnp.npy_intp n = B
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)
    cdef int64_t* o = <int64_t*>cnp.PyArray_DATA(out)
    cdef object x
    cdef _Attr numel = _tensor_reads(tensor_type).numel
    for i in range(B):
        x = seqs[i]
        if type(x) is not tensor_type:
            return None
        o[i] = numel.get(x)
    return out


def pad_scatter(src_ptrs, lengths, Py_ssize_t T, Py_ssize_t row_bytes, uintptr_t out_ptr,
                bint batch_first=True, bint left=False, bytes pad_row=None, int stream=-1,
                list storages=None, snapshot=None):
    """Write contiguous samples into a padded ``(B, T, *row)`` or ``(T, B, *row)`` buffer.

    Low-level, like :func:`scatter`: sample ``i`` is ``lengths[i]`` contiguous rows of
    ``row_bytes`` bytes at ``src_ptrs[i]`` (0: write only its padding), the buffer at
    ``out_ptr`` holds ``B * T`` rows. Padding rows are filled with ``pad_row``, a byte
    pattern whose length divides ``row_bytes`` (one element, or a whole row), repeated
    (None: zeros). ``left`` puts the padding before the data. ``stream``: non-temporal
    stores for the batch-first bulk copies (1: 16-byte, 2: 32-byte where the CPU has
    AVX2) and for time-major rows of >= 64 bytes (a multiple of 16, at a 16-byte
    aligned ``out_ptr``), -1 (default) picks 2 when the output is over
    ``STREAM_MIN_BYTES``.
    ``storages``/``snapshot`` as in :func:`scatter`. The GIL is released; the tables
    are copied first, so a caller changing them meanwhile cannot void the checks.
    """
    cdef const int64_t[::1] ptrs = np.array(src_ptrs, dtype=np.int64, order="C")
    cdef const int64_t[::1] lens = np.array(lengths, dtype=np.int64, order="C")
    cdef Py_ssize_t B = lens.shape[0], i
    if ptrs.shape[0] != B:
        raise ValueError("src_ptrs and lengths differ in size")
    for i in range(B):
        if lens[i] < 0 or lens[i] > T:
            raise ValueError(f"sample {i} has length {lens[i]}, outside 0..{T}")
    if pad_row is not None and row_bytes > 0 and (
            len(pad_row) == 0 or row_bytes % len(pad_row) != 0):
        raise ValueError(f"pad_row must be a pattern whose length divides {row_bytes}, "
                         f"got {len(pad_row)} bytes")
    if B == 0 or T == 0 or row_bytes <= 0:      # nothing to write (and out may be NULL)
        return
    cdef const char* pad = NULL if pad_row is None else <const char*>pad_row
    cdef int64_t pad_bytes = 0 if pad_row is None else len(pad_row)
    if stream < 0:
        stream = 2 if B * T * row_bytes >= STREAM_MIN_BYTES else 0
    if storages is not None:
        check_storages(storages, snapshot)
    with nogil:
        fc_pad(<char*>out_ptr, <const char* const*>&ptrs[0], &lens[0], B, B, T, row_bytes,
               batch_first, left, pad, pad_bytes, stream)


HUGE_MIN_BYTES = _HUGE_MIN


def advise_huge(uintptr_t ptr, size_t nbytes):
    """Hint that the fresh buffer ``[ptr, ptr + nbytes)`` be backed by transparent huge
    pages (Linux ``madvise(MADV_HUGEPAGE)`` on its 2 MB-aligned interior), before it is
    first written. Returns 0 when advised, 1 when the buffer holds no whole huge page,
    -1 where unsupported. Only a hint: the memory works the same either way.

    Measured on 33 MB outputs: page faults of a fresh 4 KB-page mapping were 56% of
    the time; with huge pages, ~512x fewer faults.
    """
    if ptr == 0 or nbytes == 0:
        return 1
    return fc_advise_huge(<char*>ptr, nbytes)


PANEL_MIN_BYTES = 6 << 20             # narrow-row outputs written in panels (default)
PANEL_RANKS = 256
cdef int64_t _tile_steps = 128       # steps per tile of the narrow-row kernel
TILE_STEPS = _tile_steps
cdef int64_t _panel_min_bytes = PANEL_MIN_BYTES


def panel_min_bytes(n=None):
    """The output size from which :func:`choose_tile` picks panels (default
    ``PANEL_MIN_BYTES``); with ``n``, set it (tests force the panels on small batches
    with 0) and return the previous value."""
    global _panel_min_bytes
    cdef int64_t old = _panel_min_bytes
    if n is not None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        _panel_min_bytes = n
    return old


cpdef int64_t choose_tile(Py_ssize_t row_bytes, int64_t max_len, Py_ssize_t B=0,
                          int64_t total_bytes=0) noexcept:
    """The narrow-row kernel for rows of 1, 2, 4, 8 or 16 bytes: time steps per tile
    (> 0), ``-ranks`` for panels of that many ranks (< 0), 0 for the per-sample
    blocked loop.

    Measured (scatter alone, 2-core machine, fresh sources): tiles pay once samples
    are long (bytes, 512 x ~1000 uint8: 245 -> 56 us; long-tail int64: 12.7 -> 8.9
    us). Since a tile writes the ranks still active as bands of steps (no row copied
    alone, ``FC_TILE_BANDS``), they also beat the blocked loop on batches of short
    samples (short-many, 1024 x 1..32 int64: 12.9 -> 9.4 us; 4096 x ~8 int64: 42 ->
    27 us; 4096 x ~16 int32: 50 -> 29 us), only not below 8 steps (ties: 1..4), and
    ``TILE_STEPS`` = 128 steps per tile beat 64 by 0-20% (uint8 256 x ~512: 18.4 ->
    14.5 us, int32 4096 x ~64: 67 -> 61 us). Outputs of ``PANEL_MIN_BYTES`` or more
    (:func:`panel_min_bytes`), beyond the caches, run faster in panels of
    ``PANEL_RANKS`` ranks, which write each step's rows as runs of kilobytes instead
    of one cache line per step and tile (against the best tiles:
    int64 4096 x ~512 3.4 -> 3.0 ms, 16384 x ~512 15.6 -> 12.8 ms, 16384 x ~64 1.8 ->
    1.4 ms; int32 4096 x ~1000 5.9 -> 3.4 ms; uint16 16384 x ~512 10.8 -> 6.1 ms);
    in-cache outputs (1-4 MB) stay with the tiles (int64 256 x ~512: 59 against 68
    us), and so do 1-byte rows, whose tiles transpose 16 x 16 blocks in registers
    (uint8 16384 x ~512: 4.3 ms against 5.1 in panels).
    """
    if not (row_bytes == 1 or row_bytes == 2 or row_bytes == 4 or row_bytes == 8
            or row_bytes == 16):
        return 0
    if total_bytes >= _panel_min_bytes and row_bytes > 1:
        return -PANEL_RANKS
    if max_len >= 8:
        return _tile_steps
    return 0


cpdef int64_t choose_block(Py_ssize_t row_bytes, Py_ssize_t B) noexcept:
    """Time steps copied from one sample before moving to the next.

    Measured with ``benchmarks/`` (workloads in ``fastcollate/_workloads.py``): rows of
    <= 16 bytes run best with long runs per sample (16+), wider rows with 8; with
    streaming stores the choice hardly matters.
    """
    return 16 if row_bytes <= 16 else 8


STREAM_MIN_BYTES = 1 << 20             # padding and flattening (bulk runs)
SCATTER_STREAM_MIN_BYTES = 10 << 20    # the packed layout's row scatter


cpdef int choose_stream(Py_ssize_t row_bytes, int64_t total_bytes) noexcept:
    """0: ordinary stores; 1/2: 16/32-byte non-temporal stores (x86-64; 2 needs AVX2,
    checked at run time, else 1 is used).

    Streaming pays when rows are whole multiples of 16 bytes, at least 64 bytes wide,
    and the output is larger than ``SCATTER_STREAM_MIN_BYTES`` (speech: 0.56 -> 0.35
    ms, embed: 1.34 -> 0.55 ms for a fresh output): the scattered row writes then skip
    the read of every destination line. Smaller outputs stay in cache, where ordinary
    stores are faster (fresh huge-page outputs, 2-core AMD EPYC, 32 MB L3: 4.1 MB of
    4 KB rows 155 -> 110 us, 2.8 MB of 320 B rows 110 -> 81 us without streaming;
    from 5.8 MB on, streaming won by 30-55%). Since outputs of 4 MB or more are reused
    warm (the buffer cache), the threshold is 10 MB: ``pack`` in a loop, ordinary
    stores against streaming: 5.2 MB of 320 B rows 200 -> 166 us, 8.1 MB of 4 KB rows
    308 -> 235 us, speech (8.4 MB) 310 -> 280 us; streaming still wins from 10 MB on
    (10.1 MB of 320 B rows: 434 against 506 us, 16 MB of 4 KB rows 603 against 764).
    """
    if (row_bytes >= 64 and row_bytes % 16 == 0
            and total_bytes >= SCATTER_STREAM_MIN_BYTES):
        return 2
    return 0


# ---------------------------------------------------------------------------------------
# Python lists of numbers
# ---------------------------------------------------------------------------------------

# element kinds, ordered like torch.tensor's inference: bool < int < float < complex
KIND_BOOL = 0
KIND_INT = 1
KIND_FLOAT = 2
KIND_COMPLEX = 3
KIND_OTHER = 4      # not an exact Python number: use the slow path


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def list_kind(seqs, bint inferred=False):
    """Widest element kind over a batch of flat lists/tuples of Python numbers.

    Returns ``(kind, lengths)`` where kind is one of KIND_BOOL..KIND_COMPLEX, or
    ``(KIND_OTHER, index)`` naming the first sample that is not a flat list/tuple of
    exact Python bool/int/float/complex (nested lists, NumPy scalars, strings...).
    ``lengths`` is an int64 array.

    ``inferred`` (no explicit dtype): each sample infers on its own, as
    ``torch.tensor(sample)`` does, before the batch promotes; so an int beyond int64 in
    a sample holding no float or complex raises OverflowError even when other samples
    make the batch float (it would be read as a float otherwise).
    """
    cdef Py_ssize_t B = len(seqs), i, j, n
    cdef cnp.ndarray lens_arr = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] lens = lens_arr
    cdef int kind = KIND_BOOL
    cdef object s
    cdef PyObject* x
    cdef bint is_list
    for i in range(B):
        s = seqs[i]
        is_list = PyList_CheckExact(s)
        if not is_list and not PyTuple_CheckExact(s):
            return KIND_OTHER, i
        n = PyList_GET_SIZE(s) if is_list else PyTuple_GET_SIZE(s)
        lens[i] = n
        for j in range(n):
            x = <PyObject*>(PyList_GET_ITEM(s, j) if is_list else PyTuple_GET_ITEM(s, j))
            if PyLong_CheckExact(x):
                if kind < KIND_INT:
                    kind = KIND_INT
            elif PyFloat_CheckExact(x):
                if kind < KIND_FLOAT:
                    kind = KIND_FLOAT
            elif PyBool_Check(x):
                pass
            elif PyComplex_CheckExact(x):
                kind = KIND_COMPLEX
            else:
                return KIND_OTHER, i
    if inferred and kind >= KIND_FLOAT:
        _ints_fit_int64(seqs)
    return kind, lens_arr


@cython.boundscheck(True)   # (seqs[i] as in list_kind)
cdef int _ints_fit_int64(seqs) except -1:
    """OverflowError naming the first int beyond int64 in a sample of bools and ints
    only (a second pass, taken only by batches that promote to a float or complex)."""
    cdef Py_ssize_t i, j, n
    cdef object s
    cdef PyObject* x
    cdef bint is_list, numbers_only
    cdef int overflow
    for i in range(len(seqs)):
        s = seqs[i]
        is_list = PyList_CheckExact(s)
        if not is_list and not PyTuple_CheckExact(s):
            continue        # (a caller's sequence type: the reader checks it again)
        n = PyList_GET_SIZE(s) if is_list else PyTuple_GET_SIZE(s)
        numbers_only = True
        for j in range(n):
            x = _item(s, j, is_list)
            if not (PyLong_CheckExact(x) or PyBool_Check(x)):
                numbers_only = False
                break
        if not numbers_only:
            continue
        for j in range(n):
            x = _item(s, j, is_list)
            overflow = 0
            PyLong_AsLongLongAndOverflow(x, &overflow)
            if overflow != 0:
                raise OverflowError(f"sample {i}, element {j}: value {<object>x} does not "
                                    "fit int64, the dtype of this sample's ints (as in "
                                    "torch.tensor)")
    return 0


cdef inline PyObject* _item(object s, Py_ssize_t j, bint is_list) noexcept:
    return <PyObject*>(PyList_GET_ITEM(s, j) if is_list else PyTuple_GET_ITEM(s, j))


cdef Py_ssize_t _planned_size(object s, Py_ssize_t i, int64_t planned,
                              Py_ssize_t n_offsets) except -1:
    """Size of sample ``i``, a list or tuple, checked against its planned length.

    The list may have changed since it was planned (another thread, or user code that
    ran in between); its slots in the output were sized by the plan, so any other
    length is refused before anything is written."""
    cdef Py_ssize_t n
    if PyList_CheckExact(s):
        n = PyList_GET_SIZE(s)
    elif PyTuple_CheckExact(s):
        n = PyTuple_GET_SIZE(s)
    else:
        raise TypeError(f"sample {i} is a {type(s).__name__}, expected a list or tuple")
    if n != planned:
        raise ValueError(f"sample {i} has length {n} but was planned with length "
                         f"{planned}: it changed during the call")
    if n >= n_offsets:      # offsets has T + 1 entries, the last being the total
        raise ValueError(f"sample {i} is longer than the offsets table")
    return n


cdef inline int _check_pos(int64_t pos, int64_t n_out, Py_ssize_t i) except -1:
    # one unsigned compare: 0 <= pos < n_out
    if <uint64_t>pos >= <uint64_t>n_out:
        raise ValueError(f"sample {i}: position {pos} is outside the output "
                         f"({n_out} elements); ranks/offsets do not match the lengths")
    return 0


cdef int _not_a_number(PyObject* x, Py_ssize_t i, Py_ssize_t j) except -1:
    raise TypeError(f"sample {i}, element {j}: expected a Python bool/int/float/complex, "
                    f"found {type(<object>x).__name__} (did the list change during the call?)")


cdef int64_t _float_to_int(double d, int64_t lo, int64_t hi, Py_ssize_t i,
                           Py_ssize_t j) except? -1:
    """Truncate a float toward zero like ``torch.tensor(..., dtype=<int>)``: the value
    itself must lie in ``lo..hi`` (NaN and inf never do), else OverflowError."""
    cdef bint ok = d >= <double>lo and d <= <double>hi
    if hi == INT64_MAX:
        ok = ok and d < 9223372036854775808.0    # (double)INT64_MAX rounds up to 2**63
    if not ok:
        raise OverflowError(f"sample {i}, element {j}: value {d!r} does not fit the "
                            f"output dtype (range {lo}..{hi})")
    return <int64_t>d


cdef double _int_to_double(PyObject* x, Py_ssize_t i, Py_ssize_t j) except? -1.0:
    cdef double d = PyLong_AsDouble(x)
    if d == -1.0 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        raise OverflowError(f"sample {i}, element {j}: int {<object>x} is too large "
                            "for a floating-point dtype")
    return d


def read_lists(seqs, const int64_t[::1] lengths, const int64_t[::1] ranks,
               const int64_t[::1] offsets, uintptr_t out_ptr, int64_t n_out, str code,
               int64_t lo=0, int64_t hi=0, bint cast=True):
    """Write flat lists of Python numbers into the packed layout at ``out_ptr``.

    Element ``t`` of ``seqs[i]`` goes to flat position ``offsets[t] + ranks[i]``.
    ``lengths[i]`` is the length sample ``i`` was planned with: a list whose length
    differs now raises ValueError naming it, before anything of it is written, and
    every position is checked against ``n_out``, the number of elements the buffer
    holds, so nothing is ever written outside it. ``code`` is the output element type:
    ``'b'`` bool (1 byte), ``'q'`` int64 (range-checked against ``lo..hi``, then
    stored in 1/2/4/8 bytes by the caller's choice of ``code``: ``'q'`` 8, ``'i'`` 4,
    ``'h'`` 2, ``'c'`` 1), ``'d'`` float64, ``'f'`` float32, ``'D'`` complex128,
    ``'F'`` complex64.

    Elements must be exact Python bools, ints, floats or complex numbers (TypeError
    otherwise). As in ``torch.tensor(x, dtype=...)``: floats stored in an integer type
    are truncated toward zero and must lie in ``lo..hi`` (NaN, inf and larger values
    raise OverflowError); ints are exact; complex numbers raise TypeError for integer
    and real types; ints too large for a float raise OverflowError. Every error names
    the sample and element. With ``cast=False`` (the dtype was inferred from the lists
    while planning) a value of a wider kind than the code's, which only a list changed
    since then can hold, raises TypeError instead of being converted.
    """
    cdef Py_ssize_t B = len(seqs), i, j, n
    cdef int64_t rank, pos, v
    cdef int overflow
    cdef double d, cre, cim
    cdef PyObject* x
    cdef object s
    cdef bint is_list
    cdef char* out = <char*>out_ptr
    if len(code) != 1 or code not in "qihcbdfDF":
        raise ValueError(f"unknown element code {code!r}")
    cdef char c = ord(code[0])
    if ranks.shape[0] != B or lengths.shape[0] != B:
        raise ValueError("lengths, ranks and seqs differ in size")
    for i in range(B):
        s = seqs[i]
        is_list = PyList_CheckExact(s)
        n = _planned_size(s, i, lengths[i], offsets.shape[0])
        rank = ranks[i]
        if c == b'q' or c == b'i' or c == b'h' or c == b'c':
            for j in range(n):
                x = _item(s, j, is_list)
                if PyLong_CheckExact(x) or PyBool_Check(x):
                    overflow = 0
                    v = PyLong_AsLongLongAndOverflow(x, &overflow)
                    if overflow != 0 or v < lo or v > hi:
                        raise OverflowError(
                            f"sample {i}, element {j}: value {<object>x} does not fit the "
                            f"output dtype (range {lo}..{hi})")
                elif PyFloat_CheckExact(x) and cast:
                    v = _float_to_int(PyFloat_AS_DOUBLE(x), lo, hi, i, j)
                elif PyComplex_CheckExact(x) or PyFloat_CheckExact(x):
                    raise TypeError(
                        f"sample {i}, element {j}: cannot store {type(<object>x).__name__} "
                        "in an integer dtype" + ("" if cast else " (inferred from the "
                        "lists: did one change during the call?)"))
                else:
                    _not_a_number(x, i, j)
                pos = offsets[j] + rank
                _check_pos(pos, n_out, i)
                if c == b'q':
                    (<int64_t*>out)[pos] = v
                elif c == b'i':
                    (<int*>out)[pos] = <int>v
                elif c == b'h':
                    (<short*>out)[pos] = <short>v
                else:
                    (<char*>out)[pos] = <char>v
        elif c == b'b':
            for j in range(n):
                x = _item(s, j, is_list)
                pos = offsets[j] + rank
                _check_pos(pos, n_out, i)
                if not cast and not PyBool_Check(x):
                    raise TypeError(f"sample {i}, element {j}: a {type(<object>x).__name__} "
                                    "in lists inferred as bool (did one change during the "
                                    "call?)")
                if PyComplex_CheckExact(x):
                    (<uint8_t*>out)[pos] = (PyComplex_RealAsDouble(<object>x) != 0
                                            or PyComplex_ImagAsDouble(<object>x) != 0)
                elif PyFloat_CheckExact(x):
                    (<uint8_t*>out)[pos] = PyFloat_AS_DOUBLE(x) != 0
                elif PyLong_CheckExact(x) or PyBool_Check(x):
                    (<uint8_t*>out)[pos] = (<object>x) != 0
                else:
                    _not_a_number(x, i, j)
        elif c == b'd' or c == b'f':
            for j in range(n):
                x = _item(s, j, is_list)
                if PyFloat_CheckExact(x):
                    d = PyFloat_AS_DOUBLE(x)
                elif PyLong_CheckExact(x) or PyBool_Check(x):
                    d = _int_to_double(x, i, j)
                elif PyComplex_CheckExact(x):
                    raise TypeError(
                        f"sample {i}, element {j}: cannot store complex in a real dtype")
                else:
                    _not_a_number(x, i, j)
                pos = offsets[j] + rank
                _check_pos(pos, n_out, i)
                if c == b'd':
                    (<double*>out)[pos] = d
                else:
                    (<float*>out)[pos] = <float>d
        else:    # 'D' / 'F'
            for j in range(n):
                x = _item(s, j, is_list)
                pos = offsets[j] + rank
                _check_pos(pos, n_out, i)
                if PyComplex_CheckExact(x):
                    cre = PyComplex_RealAsDouble(<object>x)
                    cim = PyComplex_ImagAsDouble(<object>x)
                elif PyFloat_CheckExact(x):
                    cre, cim = PyFloat_AS_DOUBLE(x), 0.0
                elif PyLong_CheckExact(x) or PyBool_Check(x):
                    cre, cim = _int_to_double(x, i, j), 0.0
                else:
                    _not_a_number(x, i, j)
                if c == b'D':
                    (<double*>out)[2 * pos] = cre
                    (<double*>out)[2 * pos + 1] = cim
                else:
                    (<float*>out)[2 * pos] = <float>cre
                    (<float*>out)[2 * pos + 1] = <float>cim


# ---------------------------------------------------------------------------------------
# Source scans: one pass over the batch reading each sample's address and length
# ---------------------------------------------------------------------------------------

@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def array_sources(seqs):
    """Addresses and lengths of a batch of NumPy arrays, checked against sample 0.

    Returns ``(ptrs, lengths, odd)``: int64 arrays of each sample's data address and
    leading length, and the list of indices that need the Python layer's attention
    (not an exact ``ndarray``, a different dtype, ndim or row shape than sample 0,
    zero-dimensional, or not C-contiguous, aligned and native-endian). Their entries
    in ``ptrs``/``lengths`` are 0.
    """
    cdef Py_ssize_t B = len(seqs), i, nd0 = -1
    cdef cnp.ndarray ptrs_arr = np.zeros(B, dtype=np.int64)
    cdef cnp.ndarray lens_arr = np.zeros(B, dtype=np.int64)
    cdef int64_t[::1] ptrs = ptrs_arr
    cdef int64_t[::1] lens = lens_arr
    cdef list odd = []
    cdef object x
    cdef cnp.ndarray a, a0 = None
    cdef cnp.PyArray_Descr* d0 = NULL
    cdef cnp.npy_intp* dims0 = NULL
    for i in range(B):
        x = seqs[i]
        if not cnp.PyArray_CheckExact(x):
            odd.append(i)
            continue
        a = <cnp.ndarray>x
        if a0 is None:
            a0 = a
            d0 = cnp.PyArray_DESCR(a)
            nd0 = cnp.PyArray_NDIM(a)
            dims0 = cnp.PyArray_DIMS(a)
        if not _like_first(a, d0, nd0, dims0):
            odd.append(i)
            continue
        ptrs[i] = <int64_t><uintptr_t>cnp.PyArray_DATA(a)
        lens[i] = cnp.PyArray_DIM(a, 0)
    return ptrs_arr, lens_arr, odd


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def leading_lengths(seqs):
    """``len`` of every sample via its ``shape[0]`` (arrays, tensors), as int64.

    Returns ``(lengths, bad)`` where ``bad`` is the first index whose ``shape`` is
    missing or empty (zero-dimensional), or -1.
    """
    cdef Py_ssize_t B = len(seqs), i
    cdef cnp.ndarray lens_arr = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] lens = lens_arr
    cdef object shape
    for i in range(B):
        shape = getattr(seqs[i], "shape", None)
        if not isinstance(shape, tuple) or PyTuple_GET_SIZE(shape) == 0:
            return lens_arr, i
        lens[i] = <object>PyTuple_GET_ITEM(shape, 0)
    return lens_arr, -1


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def tensor_lengths(seqs, tensor_type, cat=None, int64_t direct_bytes=0,
                   int64_t chunk_bytes=0):
    """Leading lengths of a batch of exact tensors (``type(x) is tensor_type``, whose
    ``shape`` cannot be overridden), as int64; None if a sample is anything else, is
    zero-dimensional, or has another number of dimensions than sample 0 (torch.cat
    would skip a 1-D empty tensor beside wider rows instead of refusing it).

    With ``cat`` (``torch.cat``), returns ``(lengths, flat)``: ``flat`` is
    ``cat(seqs)`` when the samples average fewer than ``direct_bytes`` bytes (sample
    0's row bytes times the mean length), ``None`` otherwise (the caller reads them
    directly), ``False`` when ``cat`` refused them, and ``True``, without calling
    ``cat``, when ``chunk_bytes`` is given and they are small but hold more than
    ``4 * chunk_bytes`` bytes (the caller concatenates them a chunk at a time:
    :func:`pack_chunks_into`). No Python code runs between the
    shape reads and the start of ``cat``: another Python thread cannot change a
    sample's shape in between, so the lengths are those ``cat`` concatenated.
    """
    cdef list own = list(seqs)
    cdef Py_ssize_t B = len(own), i, k, nd = -1
    cdef cnp.ndarray lens_arr = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] lens = lens_arr
    cdef object x, shape, shape0 = None
    cdef int64_t total = 0, row_bytes
    cdef _Attr shape_of = _Attr(tensor_type, "shape", False)
    for i in range(B):
        x = own[i]
        if type(x) is not tensor_type:
            return None
        shape = shape_of.get(x)
        if not isinstance(shape, tuple):
            return None
        if nd < 0:
            nd = PyTuple_GET_SIZE(shape)
            shape0 = shape
        if nd == 0 or PyTuple_GET_SIZE(shape) != nd:
            return None
        lens[i] = <object>PyTuple_GET_ITEM(shape, 0)
        if lens[i] < 0 or lens[i] > INT64_MAX - total:
            return None
        total += lens[i]
    if cat is None:
        return lens_arr
    row_bytes = own[0].element_size()
    for k in range(1, nd):
        row_bytes *= <int64_t>(<object>PyTuple_GET_ITEM(shape0, k))
    if <double>total * <double>row_bytes >= <double>direct_bytes * <double>B:
        return lens_arr, None
    if chunk_bytes > 0 and <double>total * <double>row_bytes > 4.0 * <double>chunk_bytes:
        return lens_arr, True
    try:
        return lens_arr, cat(own)
    except (RuntimeError, TypeError, ValueError):
        return lens_arr, False


@cython.boundscheck(True)
def flatten_nested(x, Py_ssize_t sample, Py_ssize_t max_depth=32,
                   int64_t max_items=1 << 24):
    """The leaves of a rectangular nested list/tuple sample, flat, and its shape.

    Returns ``(leaves, shape)``: a new list of the leaves in row-major order (numbers,
    NumPy scalars, 0-d arrays/tensors: anything that is not a list or tuple), checked to
    be rectangular. The walk is iterative and bounded: a self-referential list, one
    nested deeper than ``max_depth`` levels, or a DAG of shared sub-lists that would
    unfold into more than ``max_items`` elements raises ValueError (naming the sample)
    instead of recursing forever. List and tuple subclasses are read through the
    base type's own iterator, so an overridden ``__len__``/``__getitem__`` cannot
    lie. The leaves list is private: no other thread can change it afterwards.
    """
    cdef list shape = []
    cdef list leaves = []
    cdef object y = x
    cdef Py_ssize_t depth = 0, n, k, top
    cdef int64_t items = 1
    # the expected shape: the lengths along the first elements
    while _is_seq(y):
        if depth >= max_depth:
            raise ValueError(f"sample {sample}: nested lists deeper than {max_depth} levels "
                             "(a list that contains itself?)")
        y = _exact_seq(y)
        n = len(y)
        shape.append(n)
        depth += 1
        if n == 0:
            break
        if items > max_items // n:
            raise ValueError(f"sample {sample}: nested lists of shape {tuple(shape)}... "
                             f"would hold more than {max_items} elements")
        items *= n
        y = y[0]
    cdef Py_ssize_t ndim = len(shape)
    # depth-first walk with an explicit stack of (sequence, next index)
    cdef list seqs = [_exact_seq(x)]
    cdef list pos = [0]
    cdef object seq, item
    while seqs:
        top = len(seqs) - 1
        seq = seqs[top]
        k = pos[top]
        if k >= len(seq):
            seqs.pop()
            pos.pop()
            continue
        pos[top] = k + 1
        item = seq[k]
        if top + 1 < ndim:           # a sub-list of length shape[top + 1] is expected
            if not _is_seq(item):
                raise ValueError(f"sample {sample}: nested lists must be rectangular "
                                 f"(found {type(item).__name__} at depth {top + 1}, "
                                 f"expected a sequence of length {shape[top + 1]})")
            item = _exact_seq(item)
            if len(item) != shape[top + 1]:
                raise ValueError(f"sample {sample}: nested lists must be rectangular "
                                 f"(expected a sequence of length {shape[top + 1]} at "
                                 f"depth {top + 1}, got {len(item)})")
            seqs.append(item)
            pos.append(0)
        elif _is_seq(item):
            raise ValueError(f"sample {sample}: nested lists must be rectangular (found a "
                             f"sequence at depth {top + 1}, where sample 0 of the row has "
                             "a number)")
        else:
            leaves.append(item)
    return leaves, tuple(shape)


cdef object _exact_seq(object y):
    """``y`` if it is an exact list/tuple, else its items read by the base iterator."""
    if PyList_CheckExact(y) or PyTuple_CheckExact(y):
        return y
    if PyList_Check(y):
        return list(list.__iter__(y))
    return list(tuple.__iter__(y))


cdef inline bint _is_seq(object y) noexcept:
    """A list or tuple by its type (isinstance would ask a __class__ property)."""
    return PyList_Check(y) or PyTuple_Check(y)


def chunk_pointers(int64_t base, const int64_t[::1] lengths, Py_ssize_t row_bytes):
    """Addresses of consecutive chunks of ``lengths[i]`` rows starting at ``base``."""
    cdef Py_ssize_t B = lengths.shape[0], i
    cdef cnp.ndarray out = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int64_t acc = base
    with nogil:
        for i in range(B):
            o[i] = acc
            acc += lengths[i] * row_bytes
    return out


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def tensor_sources(seqs, tensor_type, dtype, tuple row):
    """Addresses and lengths of CPU tensors, read one attribute at a time.

    For batches of large samples, where reading a few attributes per tensor costs less
    than copying the batch twice. ``tensor_type`` is ``torch.Tensor`` (this module does
    not import torch). Returns ``(ptrs, lengths, storages, snapshot)``, or None as soon
    as a sample is not an exact CPU tensor of ``dtype`` with trailing shape ``row``,
    C-contiguous, not requiring grad and not a conjugate or negative view: the caller
    then takes its general path. (Only exact tensors: a subclass may override
    ``shape``.)

    ``storages`` are the samples' storages: holding them keeps the memory alive even if
    a tensor is pointed elsewhere (``set_``) or dropped; ``snapshot`` is an int64
    ``(B, 2)`` array of each storage's data address and size, for
    :func:`check_storages` to verify, right before copying, that no storage was
    reallocated (``resize_``) since. A storage smaller than its tensor's shape needs
    raises ValueError naming the sample.
    """
    return _tensor_sources(seqs, tensor_type, dtype, row)


@cython.boundscheck(True)
cdef object _tensor_sources(seqs, tensor_type, dtype, tuple row):
    """:func:`tensor_sources`."""
    cdef Py_ssize_t B = len(seqs), i
    cdef cnp.npy_intp dims[2]
    dims[0] = B
    dims[1] = 2
    cdef cnp.ndarray ptrs_arr = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef cnp.ndarray lens_arr = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef cnp.ndarray snap_arr = cnp.PyArray_EMPTY(2, dims, cnp.NPY_INT64, 0)
    cdef int64_t* ptrs = <int64_t*>cnp.PyArray_DATA(ptrs_arr)
    cdef int64_t* lens = <int64_t*>cnp.PyArray_DATA(lens_arr)
    cdef int64_t* snap = <int64_t*>cnp.PyArray_DATA(snap_arr)
    cdef list storages = [None] * B
    cdef _TensorReads rd = _tensor_reads(tensor_type)
    cdef int64_t base, nbytes, start, row_bytes = _row_bytes(dtype, row)
    cdef int64_t itemsize = dtype.itemsize
    cdef bint complex_ = dtype.is_complex
    cdef object st
    cdef _StorageReads sr
    # Each storage's extent is read and checked right after its tensor, not in a pass
    # after all of them as _resolve_sources does: a storage shrunk under its tensor
    # raises here, naming the sample, before a later sample's refusal (None) can hand
    # the batch to torch.cat, which crashes on such a tensor.
    for i in range(B):
        start = _read_source(rd, seqs[i], tensor_type, dtype, complex_, itemsize, row,
                             NULL, &lens[i], storages, i)
        if start < 0:
            return None
        st = <object>PyList_GET_ITEM(storages, i)
        sr = rd.storage_reads(type(st))
        if type(st) is not sr.tp:
            return None
        base = sr.data_ptr.get(st)
        nbytes = sr.nbytes.get(st)
        _check_extent(i, base, nbytes, start, lens[i], row_bytes)
        snap[2 * i] = base
        snap[2 * i + 1] = nbytes
        ptrs[i] = base + start
    return ptrs_arr, lens_arr, storages, snap_arr


cdef inline int64_t _row_bytes(dtype, tuple row) except -1:
    """Bytes of one row of ``dtype`` elements and trailing shape ``row``."""
    cdef int64_t b = dtype.itemsize
    cdef Py_ssize_t k
    for k in range(PyTuple_GET_SIZE(row)):
        b *= <int64_t>(<object>PyTuple_GET_ITEM(row, k))
    return b


cdef int64_t _read_source(_TensorReads rd, object t, tensor_type, dtype, bint complex_,
                          int64_t itemsize, tuple row, const int64_t* numel, int64_t* n,
                          list storages, Py_ssize_t i) except -2:
    """The checks of :func:`tensor_sources` on sample ``i`` (``t``): an exact
    ``tensor_type`` of ``dtype`` and trailing shape ``row``, on the CPU, without grad,
    contiguous, neither a negative nor a conjugate view. Sets ``n[0]`` to its length and
    ``storages[i]`` to its storage and returns its byte offset in the storage; -1 for a
    sample that is none of that.
    ``numel``: the sample's ``numel()`` read just before, or NULL; for a 1-D sample
    (``row == ()``) it is then the length, and ``dim()`` replaces the dearer ``shape``
    (a torch.Size) read."""
    if type(t) is not tensor_type:
        return -1
    cdef Py_ssize_t nd = PyTuple_GET_SIZE(row) + 1, k
    cdef object shape
    if numel != NULL and nd == 1:
        if rd.dim.get(t) != 1:
            return -1
        n[0] = numel[0]
    else:
        shape = rd.shape.get(t)
        if not isinstance(shape, tuple) or PyTuple_GET_SIZE(shape) != nd:
            return -1
        for k in range(1, nd):
            if <object>PyTuple_GET_ITEM(shape, k) != <object>PyTuple_GET_ITEM(row, k - 1):
                return -1
        n[0] = <object>PyTuple_GET_ITEM(shape, 0)
    if (rd.dtype.get(t) is not dtype or not rd.is_cpu.get(t) or rd.requires_grad.get(t)
            or not rd.is_contiguous.get(t) or rd.is_neg.get(t)
            or (complex_ and rd.is_conj.get(t))):
        return -1   # conjugate/negative views: their memory is not their value
    storages[i] = rd.untyped_storage.get(t)
    return <int64_t>rd.storage_offset.get(t) * itemsize


cdef inline int _check_extent(Py_ssize_t i, int64_t base, int64_t nbytes, int64_t start,
                              int64_t n, int64_t row_bytes) except -1:
    """ValueError naming sample ``i`` unless its ``n`` rows of ``row_bytes`` from byte
    ``start`` lie inside its storage (``nbytes`` bytes at ``base``)."""
    if (start < 0 or n < 0 or start > nbytes
            or (row_bytes > 0 and n > (nbytes - start) // row_bytes)
            or (base == 0 and nbytes)):
        raise ValueError(f"sample {i}: its storage holds fewer bytes than its shape "
                         f"({n} rows of {row_bytes} bytes from byte {start}) needs "
                         "(was it resized?)")
    return 0


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def check_storages(list storages, const int64_t[:, ::1] snapshot):
    """Raise ValueError naming the first sample whose storage no longer has the data
    address recorded by :func:`tensor_sources` (it was resized or reallocated in
    place since: the recorded addresses would dangle; a CPU storage that changes size
    always moves)."""
    cdef Py_ssize_t i
    cdef object st, storage_type = None
    cdef _Attr data_ptr = None
    if snapshot.shape[0] != len(storages):
        raise ValueError("storages and snapshot differ in size")
    for i in range(len(storages)):
        st = storages[i]
        if type(st) is not storage_type:
            storage_type = type(st)
            data_ptr = _Attr(storage_type, "data_ptr")
        if data_ptr.get(st) != snapshot[i, 0]:
            raise ValueError(f"sample {i}: its storage was resized or reallocated while "
                             "the batch was being packed")


# ---------------------------------------------------------------------------------------
# Collate helpers: split records into columns, numbers into arrays
# ---------------------------------------------------------------------------------------

@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def split_columns(samples, Py_ssize_t nfields):
    """Columns of a batch of tuples/lists with ``nfields`` fields each.

    Returns a list of ``nfields`` lists, or ``(index, None)`` naming the first sample
    that is not a tuple/list of that many fields (the caller raises).
    """
    cdef Py_ssize_t B = len(samples), i, k
    cdef list cols = [[None] * B for _ in range(nfields)]
    cdef list col
    cdef object s
    cdef PyObject* item
    cdef type t0 = type(samples[0]) if B else tuple
    for i in range(B):
        s = samples[i]
        if type(s) is not t0:
            return i, None
        if PyTuple_CheckExact(s):
            if PyTuple_GET_SIZE(s) != nfields:
                return i, None
            for k in range(nfields):
                col = <list>PyList_GET_ITEM(cols, k)
                col[i] = <object>PyTuple_GET_ITEM(s, k)
        elif PyList_CheckExact(s):
            if PyList_GET_SIZE(s) != nfields:
                return i, None
            for k in range(nfields):
                col = <list>PyList_GET_ITEM(cols, k)
                col[i] = <object>PyList_GET_ITEM(s, k)
        else:
            if len(s) != nfields:
                return i, None
            for k in range(nfields):
                col = <list>PyList_GET_ITEM(cols, k)
                col[i] = s[k]
    return cols


cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key) except? NULL


@cython.boundscheck(True)
def split_dicts(list samples, list keys):
    """Columns of a batch of exact dicts that all have exactly ``keys`` (any order).

    Returns a list of ``len(keys)`` lists (column ``k`` holds every sample's value at
    ``keys[k]``), or None as soon as a sample is not an exact dict of these keys (the
    caller's general check names it). A value is referenced as soon as it is looked
    up, before any Python code (a key's ``__eq__``) can run.
    """
    cdef Py_ssize_t B = len(samples), K = len(keys), i, k
    cdef list cols = [[None] * B for _ in range(K)]
    cdef list col
    cdef object s
    cdef PyObject* item
    for i in range(B):
        s = samples[i]
        if not PyDict_CheckExact(s) or PyDict_Size(s) != K:
            return None
        for k in range(K):
            item = PyDict_GetItemWithError(s, keys[k])
            if item == NULL:
                return None
            col = cols[k]
            col[i] = <object>item
    return cols


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def one_leading_length(seqs, tensor_type):
    """Whether the samples of ``seqs`` all have the same leading length, read at C
    speed from exact ndarrays and exact ``tensor_type`` tensors (the array's shape, the
    tensor's ``shape`` through :class:`_Attr`, ~70 ns, where ``len()`` of a tensor
    runs torch's Python ``__len__``, ~400 ns). The first, middle and last samples are
    read first (they tell most ragged batches apart), then all. False as soon as two
    read samples differ; None when a sample read before that is anything else or has
    no dimension (the caller decides the Python way)."""
    cdef Py_ssize_t B = len(seqs), i
    if B == 0:
        return None
    cdef _TensorReads rd = _tensor_reads(tensor_type)
    cdef int64_t n0 = _leading(rd, seqs[0], tensor_type), n
    if n0 < 0:
        return None
    for i in range(B + 2):          # B // 2 and B - 1 first, then every sample
        n = _leading(rd, seqs[B // 2 if i == 0 else (B - 1 if i == 1 else i - 2)],
                     tensor_type)
        if n < 0:
            return None
        if n != n0:
            return False
    return True


cdef int64_t _leading(_TensorReads rd, object x, tensor_type) except -2:
    """The leading length of an exact ndarray or ``tensor_type`` with >= 1 dimension;
    -1 for anything else."""
    if cnp.PyArray_CheckExact(x):
        if cnp.PyArray_NDIM(<cnp.ndarray>x) < 1:
            return -1
        return cnp.PyArray_DIM(<cnp.ndarray>x, 0)
    if type(x) is not tensor_type:
        return -1
    cdef object shape = rd.shape.get(x)
    if not isinstance(shape, tuple) or PyTuple_GET_SIZE(shape) < 1:
        return -1
    return <object>PyTuple_GET_ITEM(shape, 0)


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def exact_numbers(values):
    """An int64 array if every value is an exact Python int that fits int64, a float64
    array if every value is an exact Python float; otherwise None."""
    cdef Py_ssize_t B = len(values), i
    if B == 0:
        return None
    cdef object first = values[0]
    cdef cnp.ndarray arr
    cdef int64_t[::1] ints
    cdef double[::1] floats
    cdef PyObject* x
    cdef int overflow = 0
    if PyLong_CheckExact(<PyObject*>first):
        arr = np.empty(B, dtype=np.int64)
        ints = arr
        for i in range(B):
            x = <PyObject*>values[i]
            if not PyLong_CheckExact(x):
                return None
            ints[i] = PyLong_AsLongLongAndOverflow(x, &overflow)
            if overflow:
                return None
        return arr
    if PyFloat_CheckExact(<PyObject*>first):
        arr = np.empty(B, dtype=np.float64)
        floats = arr
        for i in range(B):
            x = <PyObject*>values[i]
            if not PyFloat_CheckExact(x):
                return None
            floats[i] = PyFloat_AS_DOUBLE(x)
        return arr
    return None


def copy_array(uintptr_t dst, src):
    """Copy a C-contiguous NumPy array's bytes to address ``dst`` (caller sizes it)."""
    cdef cnp.ndarray a = src
    if not cnp.PyArray_ISCARRAY_RO(a):
        raise ValueError("copy_array needs a C-contiguous, aligned array")
    cdef size_t n = <size_t>cnp.PyArray_NBYTES(a)
    cdef const char* p = <const char*>cnp.PyArray_DATA(a)
    with nogil:
        memcpy(<void*>dst, p, n)


def same_int64(a, b):
    """Whether ``a`` and ``b`` are one-dimensional int64 arrays of the same values
    (False for anything else)."""
    if not (cnp.PyArray_CheckExact(a) and cnp.PyArray_CheckExact(b)):
        return False
    cdef cnp.ndarray x = <cnp.ndarray>a, y = <cnp.ndarray>b
    if (cnp.PyArray_NDIM(x) != 1 or cnp.PyArray_NDIM(y) != 1
            or cnp.PyArray_TYPE(x) != cnp.NPY_INT64 or cnp.PyArray_TYPE(y) != cnp.NPY_INT64
            or cnp.PyArray_DIM(x, 0) != cnp.PyArray_DIM(y, 0)
            or not cnp.PyArray_ISCARRAY_RO(x) or not cnp.PyArray_ISCARRAY_RO(y)
            or not cnp.PyArray_ISNOTSWAPPED(x) or not cnp.PyArray_ISNOTSWAPPED(y)):
        return False
    return memcmp(cnp.PyArray_DATA(x), cnp.PyArray_DATA(y),
                  <size_t>cnp.PyArray_NBYTES(x)) == 0


def length_range(const int64_t[::1] lengths):
    """``(min, max)`` of the lengths, ``(0, 0)`` for none: one call, where two NumPy
    reductions cost ~2 us each on a small batch."""
    cdef Py_ssize_t n = lengths.shape[0], i
    if n == 0:
        return 0, 0
    cdef int64_t lo = lengths[0], hi = lengths[0], v
    for i in range(1, n):
        v = lengths[i]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    return lo, hi


cpdef int64_t sum_lengths(const int64_t[::1] lengths) except? -1:
    """Sum of an int64 array (a NumPy reduction costs microseconds on small arrays)."""
    cdef int64_t acc = 0, l
    cdef Py_ssize_t i
    for i in range(lengths.shape[0]):
        l = lengths[i]
        if l < 0 or l > INT64_MAX - acc:
            raise ValueError(f"sample {i} has length {l}: negative, or the total length "
                             "overflows int64")
        acc += l
    return acc


@cython.boundscheck(True)   # indexes a caller's sequence, which Python code may change
def list_lengths(seqs):
    """Lengths of a batch of lists/tuples as int64, or ``(KIND_OTHER, index)`` naming
    the first sample that is not an exact list/tuple."""
    cdef Py_ssize_t B = len(seqs), i
    cdef cnp.ndarray lens_arr = np.empty(B, dtype=np.int64)
    cdef int64_t[::1] lens = lens_arr
    cdef object s
    for i in range(B):
        s = seqs[i]
        if PyList_CheckExact(s):
            lens[i] = PyList_GET_SIZE(s)
        elif PyTuple_CheckExact(s):
            lens[i] = PyTuple_GET_SIZE(s)
        else:
            return KIND_OTHER, i
    return lens_arr


def read_ints(seqs, const int64_t[::1] lengths, const int64_t[::1] ranks,
              const int64_t[::1] offsets, uintptr_t out_ptr, int64_t n_out):
    """Optimistic one-pass reader for the common case, lists of Python ints.

    Writes element ``t`` of ``seqs[i]`` as int64 to ``offsets[t] + ranks[i]``, like
    :func:`read_lists` with code ``'q'``, without a separate pass to infer the kind;
    ``lengths`` and ``n_out`` bound the writes as there (a list whose length is not its
    planned one raises ValueError naming it). Returns 0 when every element was an int
    (bools included) and at least one was not a bool; 1 when all were bools (the
    batch's dtype is then bool); -1 as soon as an element is not an exact int/bool, or
    does not fit int64 (the caller then takes the inferring path, which reports it
    properly). The output is partly written then.
    """
    cdef Py_ssize_t B = len(seqs), i, j, n
    cdef int64_t rank, v, pos
    cdef int overflow
    cdef bint is_list, saw_int = False
    cdef object s
    cdef PyObject* x
    cdef int64_t* out = <int64_t*>out_ptr
    if ranks.shape[0] != B or lengths.shape[0] != B:
        raise ValueError("lengths, ranks and seqs differ in size")
    for i in range(B):
        s = seqs[i]
        is_list = PyList_CheckExact(s)
        n = _planned_size(s, i, lengths[i], offsets.shape[0])
        rank = ranks[i]
        for j in range(n):
            x = _item(s, j, is_list)
            if PyLong_CheckExact(x):
                saw_int = True
            elif not PyBool_Check(x):
                return -1
            overflow = 0
            v = PyLong_AsLongLongAndOverflow(x, &overflow)
            if overflow:
                return -1
            pos = offsets[j] + rank
            _check_pos(pos, n_out, i)
            out[pos] = v
    return 0 if saw_int else 1
