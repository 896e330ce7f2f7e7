# cython: language_level=3
"""Bucket buffer of :class:`fastcollate.stream.BucketStream` (streaming length bucketing).

One class, :class:`BucketBuffer`: a fixed number of slots, each holding one sample's
length and arrival number (the Python layer keeps the sample itself in a list at the same
slot). Slots are grouped into length buckets (``boundaries``: bucket ``k`` holds lengths
in ``(boundaries[k - 1], boundaries[k]]``) as doubly linked lists with per-bucket
counts, token sums and maximum lengths. :meth:`BucketBuffer.pop_batch` chooses a bucket
(at random among the *ready* ones, weighted by the tokens they hold) and cuts one batch
from it: the bucket's samples sorted by length (longest first, ties by arrival), the
batch a run of consecutive ones grown around the bucket's oldest sample, first towards
shorter samples, then towards longer ones, under the same limits as
:class:`fastcollate.sampler.BucketBatchSampler` (``count <= batch_size``,
``count * max_len <= max_tokens``). The random numbers come from a splitmix64
generator whose state is one integer.

Bucket lists are kept in arrival order (append at the tail), so a cut gathers its
bucket in arrival order (the oldest sample first) and sorts it with one stable
counting sort on the lengths (buckets spanning more than ``HIST_SIZE`` distinct lengths
fall back to ``qsort`` on ``(length, arrival)``): O(bucket + length range) per batch.

This module does not import torch. The Python layer validates lengths before they get
here; the kernel still checks every slot and length it is given and raises instead of
crashing.
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport qsort
from cpython.long cimport PyLong_CheckExact

import operator

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFF
# Buckets whose lengths span at most this many values are sorted by counting.
cdef Py_ssize_t HIST_SIZE = 4096


cdef struct Member:
    int64_t length
    int64_t arrival
    int64_t slot


cdef int _cmp_member(const void* a, const void* b) noexcept nogil:
    """Longest first, then earliest arrival (arrivals are unique: a total order)."""
    cdef const Member* x = <const Member*> a
    cdef const Member* y = <const Member*> b
    if x.length != y.length:
        return -1 if x.length > y.length else 1
    if x.arrival != y.arrival:
        return -1 if x.arrival < y.arrival else 1
    return 0


cdef inline bint _fits(int64_t cnt, int64_t mx, int64_t ln, int64_t batch_size,
                       int64_t max_tokens) noexcept nogil:
    """Whether a batch of ``cnt`` samples with longest ``mx`` can take one of length
    ``ln`` (the rule of ``_sampler._cut``)."""
    if batch_size > 0 and cnt >= batch_size:
        return False
    if ln > mx:
        mx = ln
    if max_tokens > 0 and (cnt + 1) * mx > max_tokens:
        return False
    return True


cdef inline uint64_t _splitmix(uint64_t* state) noexcept nogil:
    state[0] += <uint64_t> 0x9E3779B97F4A7C15
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EB
    return z ^ (z >> 31)


cdef class BucketBuffer:
    """Slots of sample lengths grouped into length buckets.

    Parameters
    ----------
    capacity : int
        Number of slots (>= 1).
    batch_size, max_tokens : int
        Limits; ``0`` means no limit of that kind (at least one must be set).
    state : int
        Initial state of the splitmix64 generator (any int, taken modulo 2**64).

    Examples
    --------
    >>> b = BucketBuffer(4, 0, 6, 7)
    >>> [b.push(n) for n in (3, 1, 3, 2)]
    [0, 1, 2, 3]
    >>> b.set_boundaries([2])      # bucket 0: lengths <= 2, bucket 1: longer
    >>> b.pop_batch().tolist(), b.size
    ([0, 2], 2)
    >>> b.last_real, b.last_padded
    (6, 6)
    """
    cdef readonly Py_ssize_t capacity, size, num_buckets
    cdef readonly int64_t batch_size, max_tokens, arrivals, last_real, last_padded
    cdef uint64_t _state
    cdef int64_t[::1] _len, _arr, _bkt, _nxt, _prv, _free
    cdef int64_t[::1] _head, _tail, _cnt, _tok, _maxl, _bnd, _hist
    cdef Py_ssize_t _nfree
    cdef object _members_arr
    cdef Member* _members
    cdef Member* _sorted

    def __cinit__(self, Py_ssize_t capacity, int64_t batch_size, int64_t max_tokens,
                  state):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if batch_size < 0 or max_tokens < 0 or (batch_size == 0 and max_tokens == 0):
            raise ValueError("batch_size and max_tokens must be >= 0 (0: no limit), "
                             "and not both 0")
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._state = <uint64_t> (int(state) & 0xFFFFFFFFFFFFFFFF)
        self._len = np.zeros(capacity, dtype=np.int64)
        self._arr = np.zeros(capacity, dtype=np.int64)
        self._bkt = np.full(capacity, -1, dtype=np.int64)
        self._nxt = np.full(capacity, -1, dtype=np.int64)
        self._prv = np.full(capacity, -1, dtype=np.int64)
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.int64)
        self._nfree = capacity
        self._members_arr = np.empty(2 * capacity * sizeof(Member), dtype=np.uint8)
        cdef unsigned char[::1] raw = self._members_arr
        self._members = <Member*> &raw[0]
        self._sorted = self._members + capacity
        self._hist = np.zeros(HIST_SIZE + 1, dtype=np.int64)
        self._set_bnd(np.empty(0, dtype=np.int64))

    # ------------------------------------------------------------------ buckets
    cdef _set_bnd(self, cnp.ndarray bnd):
        self._bnd = bnd
        self.num_buckets = bnd.shape[0] + 1
        self._head = np.full(self.num_buckets, -1, dtype=np.int64)
        self._tail = np.full(self.num_buckets, -1, dtype=np.int64)
        self._cnt = np.zeros(self.num_buckets, dtype=np.int64)
        self._tok = np.zeros(self.num_buckets, dtype=np.int64)
        self._maxl = np.zeros(self.num_buckets, dtype=np.int64)

    cdef inline Py_ssize_t _bucket_of(self, int64_t ln) noexcept nogil:
        """Number of boundaries < ln (binary search)."""
        cdef Py_ssize_t lo = 0, hi = self._bnd.shape[0], mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._bnd[mid] < ln:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef inline void _link(self, int64_t s) noexcept nogil:
        """Append slot ``s`` to its bucket's list (lists stay in arrival order)."""
        cdef int64_t ln = self._len[s]
        cdef Py_ssize_t k = self._bucket_of(ln)
        self._bkt[s] = k
        self._nxt[s] = -1
        self._prv[s] = self._tail[k]
        if self._tail[k] >= 0:
            self._nxt[self._tail[k]] = s
        else:
            self._head[k] = s
        self._tail[k] = s
        self._cnt[k] += 1
        self._tok[k] += ln
        if ln > self._maxl[k]:
            self._maxl[k] = ln

    cdef inline void _unlink(self, int64_t s) noexcept nogil:
        cdef int64_t k = self._bkt[s]
        if self._prv[s] >= 0:
            self._nxt[self._prv[s]] = self._nxt[s]
        else:
            self._head[k] = self._nxt[s]
        if self._nxt[s] >= 0:
            self._prv[self._nxt[s]] = self._prv[s]
        else:
            self._tail[k] = self._prv[s]
        self._cnt[k] -= 1
        self._tok[k] -= self._len[s]
        self._bkt[s] = -1
        self._free[self._nfree] = s
        self._nfree += 1

    def set_boundaries(self, boundaries):
        """Regroup the slots by ``boundaries`` (strictly increasing ints >= 1)."""
        bnd = np.ascontiguousarray(boundaries, dtype=np.int64).reshape(-1)
        if bnd.size and (bnd[0] < 1 or np.any(np.diff(bnd) <= 0)):
            raise ValueError("boundaries must be strictly increasing ints >= 1, got "
                             f"{bnd.tolist()}")
        occupied = self.slots().tolist()      # arrival order
        self._set_bnd(bnd)
        for s in occupied:
            self._link(s)

    def boundaries(self):
        """The bucket boundaries, as a list of ints."""
        return np.asarray(self._bnd).tolist()

    # ------------------------------------------------------------------ slots
    cpdef Py_ssize_t push(self, object length) except -2:
        """Store one sample's length; return its slot, or -1 (nothing stored) if the
        length exceeds ``max_tokens``.

        Raises ``TypeError`` for a length that is not an int (bools included),
        ``ValueError`` for one below 1 or when the buffer is full, ``OverflowError``
        when ``length * capacity`` does not fit int64.
        """
        cdef int64_t s, ln
        if PyLong_CheckExact(length):
            ln = length
        elif isinstance(length, bool) or not hasattr(length, "__index__"):
            raise TypeError(f"length must be an int, got {type(length).__name__}")
        else:
            ln = operator.index(length)
        if ln < 1:
            raise ValueError(f"has length {ln}; every sample length must be >= 1")
        if self.max_tokens > 0 and ln > self.max_tokens:
            return -1
        if ln > INT64_MAX // self.capacity:
            raise OverflowError(f"length {ln} times the buffer capacity "
                                f"{self.capacity} does not fit in int64")
        if self._nfree == 0:
            raise ValueError("the buffer is full")
        self._nfree -= 1
        s = self._free[self._nfree]
        self._len[s] = ln
        self._arr[s] = self.arrivals
        self.arrivals += 1
        self._link(s)
        self.size += 1
        return s

    def lengths(self):
        """Lengths of the occupied slots, in arrival order (int64 array)."""
        occ = np.flatnonzero(np.asarray(self._bkt) >= 0)
        occ = occ[np.argsort(np.asarray(self._arr)[occ], kind="stable")]
        return np.asarray(self._len)[occ].copy()

    def slots(self):
        """The occupied slots, in arrival order (int64 array)."""
        occ = np.flatnonzero(np.asarray(self._bkt) >= 0)
        return occ[np.argsort(np.asarray(self._arr)[occ], kind="stable")].astype(np.int64)

    def slot_lengths(self):
        """A copy of the per-slot lengths (indexed by slot)."""
        return np.asarray(self._len).copy()

    def clear(self):
        """Empty every slot (the generator state and arrival count are kept)."""
        for s in range(self.capacity):
            if self._bkt[s] >= 0:
                self._unlink(s)
        self.size = 0
        for k in range(self.num_buckets):
            self._maxl[k] = 0

    # ------------------------------------------------------------------ random
    cpdef uint64_t below(self, uint64_t n) except? 0:
        """A pseudo-random int in ``[0, n)`` (``n >= 1``) from the generator."""
        if n == 0:
            raise ValueError("below(0)")
        return _splitmix(&self._state) % n

    @property
    def state(self):
        """The generator's state (an int in ``[0, 2**64)``)."""
        return int(self._state)

    # ------------------------------------------------------------------ batches
    cdef Py_ssize_t _choose(self) noexcept nogil:
        """The bucket to cut from: a ready one (at least ``cap(max length)``
        samples), drawn with probability proportional to its tokens; else the one
        holding the most tokens. -1 if the buffer is empty."""
        cdef Py_ssize_t k, best = -1
        cdef int64_t r
        cdef uint64_t utotal = 0
        for k in range(self.num_buckets):
            if self._cnt[k] == 0:
                continue
            if best < 0 or self._tok[k] > self._tok[best]:
                best = k
            if self._ready(k):
                utotal += <uint64_t> self._tok[k]
        if utotal == 0:
            return best
        r = <int64_t> (_splitmix(&self._state) % utotal)
        for k in range(self.num_buckets):
            if self._cnt[k] and self._ready(k):
                if r < self._tok[k]:
                    return k
                r -= self._tok[k]
        return best   # not reached

    cdef inline bint _ready(self, Py_ssize_t k) noexcept nogil:
        cdef int64_t cap = self._cnt[k] + 1
        if self.batch_size > 0 and self.batch_size < cap:
            cap = self.batch_size
        if self.max_tokens > 0 and self.max_tokens // self._maxl[k] < cap:
            cap = self.max_tokens // self._maxl[k]
        return self._cnt[k] >= cap

    cdef Py_ssize_t _sort_bucket(self, Py_ssize_t k, Member** out) noexcept nogil:
        """Gather bucket ``k`` (in arrival order) and sort it by length, longest
        first, ties in arrival order; ``*out`` points at the result. Returns the
        position of the bucket's oldest sample in it."""
        cdef Member* m = self._members
        cdef Member* d = self._sorted
        cdef Py_ssize_t n = 0, q, r
        cdef int64_t s = self._head[k], lo = INT64_MAX, hi = 0, run, c
        cdef int64_t* h
        while s >= 0:
            m[n].length = self._len[s]
            m[n].arrival = self._arr[s]
            m[n].slot = s
            if m[n].length < lo:
                lo = m[n].length
            if m[n].length > hi:
                hi = m[n].length
            n += 1
            s = self._nxt[s]
        if hi - lo >= HIST_SIZE:
            qsort(m, n, sizeof(Member), _cmp_member)
            out[0] = m
            for q in range(n):          # the oldest: first of its length's run
                if m[q].arrival == self._arr[self._head[k]]:
                    return q
            return 0
        # stable counting sort on hi - length (the list is in arrival order)
        r = hi - lo + 1
        h = &self._hist[0]
        for q in range(r + 1):
            h[q] = 0
        for q in range(n):
            h[hi - m[q].length + 1] += 1
        for q in range(r):
            h[q + 1] += h[q]
        run = h[hi - m[0].length]       # m[0] is the oldest; it leads its run
        for q in range(n):
            c = hi - m[q].length
            d[h[c]] = m[q]
            h[c] += 1
        out[0] = d
        return run

    def pop_batch(self):
        """Cut one batch from the buffer and free its slots.

        Returns
        -------
        int64 ndarray
            The batch's slots, longest sample first (empty if the buffer is empty).
            ``last_real`` / ``last_padded`` give its token count and padded size.
        """
        cdef Py_ssize_t k, n = 0, q, p = 0, lo = 0, hi = 0
        cdef int64_t cnt = 0, mx = 0, real = 0
        cdef Member* m = NULL
        with nogil:
            k = self._choose()
            if k >= 0:
                n = self._cnt[k]
                p = self._sort_bucket(k, &m)
                lo = p
                hi = p + 1
                cnt = 1
                mx = m[p].length
                while hi < n and _fits(cnt, mx, m[hi].length, self.batch_size,
                                       self.max_tokens):
                    hi += 1
                    cnt += 1
                while lo > 0 and _fits(cnt, mx, m[lo - 1].length, self.batch_size,
                                       self.max_tokens):
                    lo -= 1
                    cnt += 1
                    mx = m[lo].length
        if k < 0:
            self.last_real = self.last_padded = 0
            return np.empty(0, dtype=np.int64)
        out_arr = np.empty(hi - lo, dtype=np.int64)
        cdef int64_t[::1] out = out_arr
        for q in range(lo, hi):
            out[q - lo] = m[q].slot
            real += m[q].length
            self._unlink(m[q].slot)
        self.size -= hi - lo
        # the bucket's new maximum: the longest sample outside [lo, hi)
        self._maxl[k] = m[0].length if lo > 0 else (m[hi].length if hi < n else 0)
        self.last_real = real
        self.last_padded = cnt * mx
        return out_arr

    def shuffle(self, Py_ssize_t n):
        """A permutation of ``range(n)`` drawn with the generator (Fisher-Yates from
        the end: ``j = below(i + 1)`` for ``i = n - 1 .. 1``)."""
        perm_arr = np.arange(n, dtype=np.int64)
        cdef int64_t[::1] perm = perm_arr
        cdef Py_ssize_t i, j
        cdef int64_t t
        for i in range(n - 1, 0, -1):
            j = <Py_ssize_t> (_splitmix(&self._state) % <uint64_t> (i + 1))
            t = perm[i]; perm[i] = perm[j]; perm[j] = t
        return perm_arr
