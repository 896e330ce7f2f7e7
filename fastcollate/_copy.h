/* The row-scatter loop of fastcollate._core, in C so that it can be compiled twice
 * (AVX2 and baseline x86-64, chosen at load time by GCC's target_clones) and copy rows
 * with inline vector moves instead of a memcpy call per row: with rows of 64 bytes to a
 * few KB the call and its size dispatch cost as much as the copy.
 *
 * out:     packed output; row t of the sample of rank r goes to row offsets[t] + r
 * srcs:    address of each rank's first row (NULL: skip this rank), rank order
 * lens:    rows of each rank, non-increasing
 * block:   time steps copied from one sample before moving to the next
 */
#ifndef FASTCOLLATE_COPY_H
#define FASTCOLLATE_COPY_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define FC_HAVE_STREAM 1
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FC_CLONES
#endif

static inline void fc_copy_row(char *restrict dst, const char *restrict src, size_t n)
{
    if (n >= 32) {
        size_t i = 0;
        for (; i + 32 <= n; i += 32)
            __builtin_memcpy(dst + i, src + i, 32);
        if (i < n)  /* the last 32 bytes again, overlapping: same values, no tail loop */
            __builtin_memcpy(dst + n - 32, src + n - 32, 32);
    } else if (n >= 16) {
        __builtin_memcpy(dst, src, 16);
        __builtin_memcpy(dst + n - 16, src + n - 16, 16);
    } else {
        memcpy(dst, src, n);
    }
}

#ifdef FC_HAVE_STREAM
/* Non-temporal copy of a row whose size is a multiple of 16 into a 16-byte aligned
 * destination: the rows land in scattered places that will not be read back soon, so
 * bypassing the cache avoids reading every destination line before writing it. */
static inline void fc_stream_row(char *restrict dst, const char *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i += 16)
        _mm_stream_si128((__m128i *)(dst + i), _mm_loadu_si128((const __m128i *)(src + i)));
}
#endif

#ifdef FC_HAVE_STREAM
__attribute__((target("avx2")))
static inline void fc_stream_row32(char *restrict dst, const char *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i += 32)
        _mm256_stream_si256((__m256i *)(dst + i), _mm256_loadu_si256((const __m256i *)(src + i)));
}
#endif

#define FC_SCATTER_LOOP(COPY)                                                       \
    for (int64_t t0 = 0; t0 < lens[0]; t0 += block) {                               \
        for (int64_t r = 0; r < B && lens[r] > t0; r++) {                           \
            const char *src = srcs[r];                                              \
            if (src == NULL) continue;                                              \
            int64_t tend = t0 + block < lens[r] ? t0 + block : lens[r];             \
            for (int64_t t = t0; t < tend; t++) { COPY; }                           \
        }                                                                           \
    }

#ifdef FC_HAVE_STREAM
/* The same with 32-byte non-temporal stores, for AVX2 machines (checked at run time). */
__attribute__((target("avx2")))
static void fc_scatter_stream32(char *out, const char *const *srcs, const int64_t *lens,
                                const int64_t *offsets, int64_t B, int64_t row_bytes,
                                int64_t block)
{
    FC_SCATTER_LOOP(fc_stream_row32(out + (offsets[t] + r) * row_bytes, src + t * row_bytes,
                                    (size_t)row_bytes))
    _mm_sfence();
}
#endif

FC_CLONES
static void fc_scatter(char *out, const char *const *srcs, const int64_t *lens,
                       const int64_t *offsets, int64_t B, int64_t row_bytes, int64_t block,
                       int stream)
{
    if (B <= 0) return;
    switch (row_bytes) {
    case 1: FC_SCATTER_LOOP(((uint8_t *)out)[offsets[t] + r] = ((const uint8_t *)src)[t]) break;
    case 2: FC_SCATTER_LOOP(((uint16_t *)out)[offsets[t] + r] = ((const uint16_t *)src)[t]) break;
    case 4: FC_SCATTER_LOOP(((uint32_t *)out)[offsets[t] + r] = ((const uint32_t *)src)[t]) break;
    case 8: FC_SCATTER_LOOP(((uint64_t *)out)[offsets[t] + r] = ((const uint64_t *)src)[t]) break;
    case 16: FC_SCATTER_LOOP(__builtin_memcpy(out + (offsets[t] + r) * 16, src + t * 16, 16)) break;
    default:
#ifdef FC_HAVE_STREAM
        if (stream == 2 && row_bytes % 32 == 0 && ((uintptr_t)out & 31) == 0
                && __builtin_cpu_supports("avx2")) {
            fc_scatter_stream32(out, srcs, lens, offsets, B, row_bytes, block);
            break;
        }
        if (stream && row_bytes % 16 == 0 && ((uintptr_t)out & 15) == 0) {
            FC_SCATTER_LOOP(fc_stream_row(out + (offsets[t] + r) * row_bytes,
                                          src + t * row_bytes, (size_t)row_bytes))
            _mm_sfence();
            break;
        }
#endif
        FC_SCATTER_LOOP(fc_copy_row(out + (offsets[t] + r) * row_bytes, src + t * row_bytes,
                                    (size_t)row_bytes))
    }
}
#endif
