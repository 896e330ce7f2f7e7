/* A small cache of large output buffers (fastcollate/_core.pyx, _new_rows).
 *
 * A fresh multi-megabyte buffer costs a page fault and a kernel zeroing per page on
 * first write: on a 64 MB packed output (16384 x ~512 int64) that was a third of
 * pack()'s time (27 -> 18 ms when the buffer is reused). glibc hands buffers over
 * 32 MB straight back to the kernel on free(), so every batch paid it again. Buffers
 * of at least FC_POOL_MIN bytes are therefore kept here when their last array or
 * tensor is freed and reused by a later output that fits.
 *
 * Safety: a buffer enters the cache only from the destructor of the capsule that owns
 * it, which runs when no array, tensor or view references it any more; it leaves the
 * cache to become a new output. Both happen with the GIL held (object deallocation and
 * _new_rows need it), which serialises every access to the cache: no lock. Under
 * AddressSanitizer a cached buffer is poisoned, so a stale pointer into it is still
 * reported as a use after free.
 *
 * Limits: at most FC_POOL_SLOTS buffers and fc_pool_limit bytes in all (set from
 * FASTCOLLATE_POOL_MB by _core; 0 disables the cache). A buffer serves a request of n
 * bytes if it holds n to n * 3/2 bytes, so a small batch never pins a huge buffer. */
#ifndef FASTCOLLATE_POOL_H
#define FASTCOLLATE_POOL_H

#include <stddef.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define FC_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FC_POOL_ASAN 1
#endif
#endif
#ifdef FC_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define FC_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define FC_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define FC_POISON(p, n) ((void)(p), (void)(n))
#define FC_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define FC_POOL_SLOTS 8
#define FC_POOL_MIN ((size_t)4 << 20)

typedef struct { void *p; size_t size; } fc_pool_slot;

static fc_pool_slot fc_pool[FC_POOL_SLOTS];
static int fc_pool_n = 0;                   /* slots 0..n-1 in use, oldest first */
static size_t fc_pool_bytes = 0;
static size_t fc_pool_limit = (size_t)256 << 20;

/* Capacity to allocate for a request of n bytes (>= FC_POOL_MIN): n rounded up by an
 * eighth and to whole 2 MB pages, so that batches a little larger than the last one
 * still fit in its buffer. Only the bytes written are ever backed by memory. */
static size_t fc_pool_capacity(size_t n)
{
    const size_t H = (size_t)2 << 20;
    size_t c = n + n / 8;
    if (c < n) return n;                    /* overflow: no headroom */
    size_t r = (c + H - 1) & ~(H - 1);
    return r < c ? c : r;
}

/* A cached buffer of n to n * 3/2 bytes (its size in *size), or NULL. The best fit
 * is taken: the smallest that serves. */
static void *fc_pool_take(size_t n, size_t *size)
{
    int best = -1;
    for (int i = 0; i < fc_pool_n; i++) {
        size_t s = fc_pool[i].size;
        if (s >= n && s - n <= n / 2 && (best < 0 || s < fc_pool[best].size)) best = i;
    }
    if (best < 0) return NULL;
    void *p = fc_pool[best].p;
    *size = fc_pool[best].size;
    fc_pool_bytes -= fc_pool[best].size;
    for (int i = best; i + 1 < fc_pool_n; i++) fc_pool[i] = fc_pool[i + 1];
    fc_pool_n--;
    FC_UNPOISON(p, *size);
    return p;
}

/* Free or cache a buffer of `size` bytes from posix_memalign. The oldest buffers are
 * freed first to make room; one larger than the limit is freed at once. */
static void fc_pool_give(void *p, size_t size)
{
    if (p == NULL) return;
    if (size < FC_POOL_MIN || size > fc_pool_limit) { free(p); return; }
    while (fc_pool_n > 0 && (fc_pool_n == FC_POOL_SLOTS
                             || fc_pool_bytes + size > fc_pool_limit)) {
        FC_UNPOISON(fc_pool[0].p, fc_pool[0].size);
        free(fc_pool[0].p);
        fc_pool_bytes -= fc_pool[0].size;
        for (int i = 0; i + 1 < fc_pool_n; i++) fc_pool[i] = fc_pool[i + 1];
        fc_pool_n--;
    }
    FC_POISON(p, size);
    fc_pool[fc_pool_n].p = p;
    fc_pool[fc_pool_n].size = size;
    fc_pool_n++;
    fc_pool_bytes += size;
}

/* Free every cached buffer; returns the bytes released. */
static size_t fc_pool_clear(void)
{
    size_t released = fc_pool_bytes;
    for (int i = 0; i < fc_pool_n; i++) {
        FC_UNPOISON(fc_pool[i].p, fc_pool[i].size);
        free(fc_pool[i].p);
    }
    fc_pool_n = 0;
    fc_pool_bytes = 0;
    return released;
}

#endif
