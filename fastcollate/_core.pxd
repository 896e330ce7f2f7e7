# cython: language_level=3
"""C-level pieces of fastcollate._core that the other kernels cimport (one definition:
the dtype/shape test of a batch, the counting sort, the output allocation, sort +
allocate + scatter of checked sources)."""
from libc.stdint cimport int64_t, uintptr_t
cimport numpy as cnp

cdef tuple _count_sort(const int64_t* lens, Py_ssize_t B, bint enforce_sorted)
cdef cnp.ndarray _new_rows(cnp.dtype descr, int nd, cnp.npy_intp* dims, size_t nbytes)
cdef bint _like_first(cnp.ndarray a, cnp.PyArray_Descr* d0, int nd0,
                      const cnp.npy_intp* dims0) noexcept
cdef tuple _pack_rows(const uintptr_t* srcs_in, const int64_t* lens_in, Py_ssize_t B,
                      Py_ssize_t row_bytes, cnp.dtype descr, int nd, cnp.npy_intp* dims,
                      bint enforce_sorted)
cdef bint _scan_like_first(list own, cnp.PyArray_Descr* d0, int nd0,
                           const cnp.npy_intp* dims0, uintptr_t* ptrs, int64_t* lens)
cdef int64_t _rank_tables(const int64_t* lens_in, const int64_t* order, Py_ssize_t B,
                          const int64_t* bs, Py_ssize_t T, int64_t* lens, int64_t* offs,
                          const uintptr_t* ptrs_in, uintptr_t* srcs) except -1
