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
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
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

/* Tiled scatter for narrow rows (1, 2, 4, 8, 16 bytes: one element each). The packed
 * output is time-major: step t of ranks r0..r0+n-1 are n adjacent rows. For a tile of
 * FC_TR ranks over tb steps, each step's rows of the ranks still active are written as
 * one contiguous run while the tile's sources (tb elements each) stay in L1
 * (FC_TILE_BANDS); once one sample is left, the rest of it is contiguous in the
 * output: one memcpy. With `partial`, the B ranks given
 * are a slice of the batch's (out, srcs and lens start at its first rank; offsets
 * are the whole batch's): the dense tails, which assume no other rank is active, are
 * skipped, and every row is written at offs[t] + r. */
#define FC_TR 16
#ifndef FC_PANEL_STEPS
#define FC_PANEL_STEPS 256
#endif
typedef struct { uint64_t lo, hi; } fc_u128;
/* Rows as elements of their size at any address: a sample's rows are aligned to its
 * element type only (4 uint8 per row: 4-byte rows at an odd address), and so may be a
 * caller's `out`; reading them through a uint32_t* is undefined behaviour. These
 * alignment-1 types are used when a pointer is not aligned to the row size (fc_scatter
 * and fc_pad check); the aligned kernels stay for the common case (~10% faster on
 * 4-byte rows, where GCC vectorizes the aligned accesses better). */
typedef uint16_t fc_u16u __attribute__((aligned(1), may_alias));
typedef uint32_t fc_u32u __attribute__((aligned(1), may_alias));
typedef uint64_t fc_u64u __attribute__((aligned(1), may_alias));
typedef struct __attribute__((packed, may_alias)) { uint64_t lo, hi; } fc_u128u;

#ifdef FC_HAVE_STREAM
/* 16 steps x 16 ranks of 1-byte rows, transposed in SSE2 registers: load 16 bytes of
 * each rank's source (steps t..t+15), store 16 bytes (ranks r0..r0+15) at each step. */
static inline void fc_t16x16_u8(const uint8_t *const *sp, int64_t t, uint8_t *o,
                                const int64_t *offs, int64_t r0)
{
    __m128i x[16], b[16], c[16], e[2][8];
    for (int k = 0; k < 16; k++) x[k] = _mm_loadu_si128((const __m128i *)(sp[k] + t));
    for (int i = 0; i < 8; i++) {      /* 16-bit units: (rank 2i, 2i+1) at step j */
        b[2 * i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
        b[2 * i + 1] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) {      /* 32-bit units: ranks 4g..4g+3 at step j */
        c[4 * g] = _mm_unpacklo_epi16(b[4 * g], b[4 * g + 2]);
        c[4 * g + 1] = _mm_unpackhi_epi16(b[4 * g], b[4 * g + 2]);
        c[4 * g + 2] = _mm_unpacklo_epi16(b[4 * g + 1], b[4 * g + 3]);
        c[4 * g + 3] = _mm_unpackhi_epi16(b[4 * g + 1], b[4 * g + 3]);
    }
    for (int h = 0; h < 2; h++)        /* 64-bit units: ranks 8h..8h+7 at step j */
        for (int q = 0; q < 4; q++) {
            e[h][2 * q] = _mm_unpacklo_epi32(c[8 * h + q], c[8 * h + 4 + q]);
            e[h][2 * q + 1] = _mm_unpackhi_epi32(c[8 * h + q], c[8 * h + 4 + q]);
        }
    for (int q = 0; q < 8; q++) {      /* steps 2q, 2q+1: all 16 ranks */
        _mm_storeu_si128((__m128i *)(o + offs[t + 2 * q] + r0),
                         _mm_unpacklo_epi64(e[0][q], e[1][q]));
        _mm_storeu_si128((__m128i *)(o + offs[t + 2 * q + 1] + r0),
                         _mm_unpackhi_epi64(e[0][q], e[1][q]));
    }
}

/* 4 steps x n ranks (n <= 16) of 4-byte rows: 4 x 4 blocks transposed in SSE2
 * registers (load steps t..t+3 of 4 ranks, store ranks r..r+3 at each step), the
 * n % 4 ranks left one element at a time. sp: the tile's sources as bytes; rows at
 * any address (unaligned loads and stores, memcpy for single elements). */
static inline void fc_t4xn_u32(const char *const *sp, int64_t n, int64_t t, char *o,
                               const int64_t *offs, int64_t r0)
{
    char *d[4];
    for (int j = 0; j < 4; j++) d[j] = o + (offs[t + j] + r0) * 4;
    int64_t g = 0;
    for (; g + 4 <= n; g += 4) {
        __m128i a = _mm_loadu_si128((const __m128i *)(sp[g] + t * 4));
        __m128i b = _mm_loadu_si128((const __m128i *)(sp[g + 1] + t * 4));
        __m128i c = _mm_loadu_si128((const __m128i *)(sp[g + 2] + t * 4));
        __m128i e = _mm_loadu_si128((const __m128i *)(sp[g + 3] + t * 4));
        __m128i ab0 = _mm_unpacklo_epi32(a, b), ab1 = _mm_unpackhi_epi32(a, b);
        __m128i ce0 = _mm_unpacklo_epi32(c, e), ce1 = _mm_unpackhi_epi32(c, e);
        _mm_storeu_si128((__m128i *)(d[0] + g * 4), _mm_unpacklo_epi64(ab0, ce0));
        _mm_storeu_si128((__m128i *)(d[1] + g * 4), _mm_unpackhi_epi64(ab0, ce0));
        _mm_storeu_si128((__m128i *)(d[2] + g * 4), _mm_unpacklo_epi64(ab1, ce1));
        _mm_storeu_si128((__m128i *)(d[3] + g * 4), _mm_unpackhi_epi64(ab1, ce1));
    }
    for (; g < n; g++)
        for (int j = 0; j < 4; j++) memcpy(d[j] + g * 4, sp[g] + (t + j) * 4, 4);
}

/* 2 steps x n ranks (n <= 16) of 8-byte rows: 2 x 2 blocks in SSE2 registers, an odd
 * rank left alone (an AVX2 4 x 4 version measured slower: int64 256 x ~512 55
 * against 43 us). Measured against the element loop (scatter alone): int64 256 x
 * ~512 58 -> 43 us, int32 53 -> 33 us. */
static inline void fc_t2xn_u64(const char *const *sp, int64_t n, int64_t t, char *o,
                               const int64_t *offs, int64_t r0)
{
    char *d0 = o + (offs[t] + r0) * 8, *d1 = o + (offs[t + 1] + r0) * 8;
    int64_t g = 0;
    for (; g + 2 <= n; g += 2) {
        __m128i a = _mm_loadu_si128((const __m128i *)(sp[g] + t * 8));
        __m128i b = _mm_loadu_si128((const __m128i *)(sp[g + 1] + t * 8));
        _mm_storeu_si128((__m128i *)(d0 + g * 8), _mm_unpacklo_epi64(a, b));
        _mm_storeu_si128((__m128i *)(d1 + g * 8), _mm_unpackhi_epi64(a, b));
    }
    if (g < n) {
        memcpy(d0 + g * 8, sp[g] + t * 8, 8);
        memcpy(d1 + g * 8, sp[g] + (t + 1) * 8, 8);
    }
}
/* 8 steps x n ranks (n <= 16) of 2-byte rows: 8 x 8 blocks in SSE2 registers (16-,
 * 32-, then 64-bit unpacks), the n % 8 ranks left one element at a time. */
static inline void fc_t8xn_u16(const char *const *sp, int64_t n, int64_t t, char *o,
                               const int64_t *offs, int64_t r0)
{
    char *d[8];
    for (int j = 0; j < 8; j++) d[j] = o + (offs[t + j] + r0) * 2;
    int64_t g = 0;
    for (; g + 8 <= n; g += 8) {
        __m128i a[8], b[8], c[8];
        for (int k = 0; k < 8; k++) a[k] = _mm_loadu_si128((const __m128i *)(sp[g + k] + t * 2));
        for (int k = 0; k < 8; k += 2) {   /* rank pairs (k, k+1): steps 0-3, 4-7 */
            b[k] = _mm_unpacklo_epi16(a[k], a[k + 1]);
            b[k + 1] = _mm_unpackhi_epi16(a[k], a[k + 1]);
        }
        for (int h = 0; h < 8; h += 4) {   /* ranks h..h+3: steps (0,1) (2,3) (4,5) (6,7) */
            c[h] = _mm_unpacklo_epi32(b[h], b[h + 2]);
            c[h + 1] = _mm_unpackhi_epi32(b[h], b[h + 2]);
            c[h + 2] = _mm_unpacklo_epi32(b[h + 1], b[h + 3]);
            c[h + 3] = _mm_unpackhi_epi32(b[h + 1], b[h + 3]);
        }
        for (int q = 0; q < 4; q++) {      /* steps 2q, 2q+1: ranks 0..7 */
            _mm_storeu_si128((__m128i *)(d[2 * q] + g * 2), _mm_unpacklo_epi64(c[q], c[4 + q]));
            _mm_storeu_si128((__m128i *)(d[2 * q + 1] + g * 2), _mm_unpackhi_epi64(c[q], c[4 + q]));
        }
    }
    for (; g < n; g++)
        for (int j = 0; j < 8; j++) memcpy(d[j] + g * 2, sp[g] + (t + j) * 2, 2);
}
#define FC_FAST_U16(N) if ((N) >= 8) for (; t + 8 <= te; t += 8) \
        fc_t8xn_u16(srcs + r0, (N), t, (char *)o, offs, r0);
#define FC_FAST_U8(N) if ((N) == FC_TR) for (; t + 16 <= te; t += 16) \
        fc_t16x16_u8(sp, t, o, offs, r0);
#define FC_FAST_U32(N) if ((N) >= 4) for (; t + 4 <= te; t += 4) \
        fc_t4xn_u32(srcs + r0, (N), t, (char *)o, offs, r0);
#define FC_FAST_U64(N) if ((N) >= 2) for (; t + 2 <= te; t += 2) \
        fc_t2xn_u64(srcs + r0, (N), t, (char *)o, offs, r0);
#else
#define FC_FAST_U8(N)
#define FC_FAST_U16(N)
#define FC_FAST_U32(N)
#define FC_FAST_U64(N)
#endif

/* A..: the few samples still active over [t0, lens[A-1]) fill a dense (steps x A)
 * block of the output: interleave them without looking up per-step offsets. */
#define FC_FEW(A_)                                                                      \
    for (int64_t i = 0; i < m; i++)                                                     \
        for (int k = 0; k < A_; k++) d[i * A_ + k] = sp[k][t0 + i];

/* One tile's group of n ranks (r0..r0+n-1, n <= FC_TR) over steps [t0, t1), in bands:
 * ranks are sorted by length, so the group's last rank still active bounds a band of
 * steps over which the first n ranks all are, and each step of the band is one run of
 * n adjacent rows (offs[t] + r0..). The band ends where that rank ends; the next band
 * has the ranks left. No row is copied alone: a group whose samples end at different
 * steps inside the tile (long-tailed lengths, short samples) stays on the vector path
 * (FAST: n ranks, several steps in registers). */
#define FC_NO_FAST(N)
#define FC_TILE_BANDS(TYPE, FAST)                                                       \
    for (int64_t t = t0; t < t1;) {                                                     \
        while (n > 0 && lens[r0 + n - 1] <= t) n--;                                     \
        if (n == 0) break;                                                              \
        int64_t te = lens[r0 + n - 1] < t1 ? lens[r0 + n - 1] : t1;                     \
        if (n == FC_TR) {      /* a constant count: the transposes unroll */            \
            FAST(FC_TR)                                                                 \
            for (; t < te; t++) {                                                       \
                TYPE *d = o + offs[t] + r0;                                             \
                for (int k = 0; k < FC_TR; k++) d[k] = sp[k][t];                        \
            }                                                                           \
        } else {                                                                        \
            FAST(n)                                                                     \
            for (; t < te; t++) {                                                       \
                TYPE *d = o + offs[t] + r0;                                             \
                for (int64_t k = 0; k < n; k++) d[k] = sp[k][t];                        \
            }                                                                           \
        }                                                                               \
    }

#define FC_DEFINE_TILED(NAME, TYPE, FAST)                                               \
static void NAME(char *out, const char *const *srcs, const int64_t *lens,               \
                 const int64_t *offs, int64_t B, int64_t tb, int partial)               \
{                                                                                       \
    TYPE *o = (TYPE *)out;                                                              \
    int64_t T = lens[0], A = B, t0 = 0;                                                 \
    const TYPE *sp[FC_TR];                                                              \
    while (t0 < T) {                                                                    \
        while (A > 1 && lens[A - 1] <= t0) A--;                                         \
        if (partial) {}                                                                 \
        else if (A == 1) {                                                              \
            memcpy(o + offs[t0], (const TYPE *)srcs[0] + t0,                            \
                   (size_t)(T - t0) * sizeof(TYPE));                                    \
            break;                                                                      \
        }                                                                               \
        else if (A <= 4) {                                                              \
            int64_t m = lens[A - 1] - t0;                                               \
            TYPE *d = o + offs[t0];                                                     \
            for (int64_t k = 0; k < A; k++) sp[k] = (const TYPE *)srcs[k];              \
            if (A == 2) { FC_FEW(2) } else if (A == 3) { FC_FEW(3) } else { FC_FEW(4) } \
            t0 += m;                                                                    \
            continue;                                                                   \
        }                                                                               \
        int64_t t1 = t0 + tb < T ? t0 + tb : T;                                         \
        for (int64_t r0 = 0; r0 < A; r0 += FC_TR) {                                     \
            int64_t n = A - r0 < FC_TR ? A - r0 : FC_TR;                                \
            for (int64_t k = 0; k < n; k++) sp[k] = (const TYPE *)srcs[r0 + k];         \
            FC_TILE_BANDS(TYPE, FAST)                                                   \
        }                                                                               \
        t0 = t1;                                                                        \
    }                                                                                   \
}

/* Panels for narrow rows in outputs larger than the caches: R ranks at a time, over
 * tb steps, each step's rows of the panel written as one contiguous run of R
 * elements. The tiles above write 16-element runs to every step's row in turn, one
 * cache line per row visited, which costs a line fill from memory each; with panels
 * of hundreds of ranks the runs are kilobytes (sequential writes, prefetched) while
 * the panel's sources still stream from memory (int64, 4096 x ~512, fresh sources:
 * 3.6 -> 2.7 ms; 16384 x ~128: 5.0 -> 2.8 ms). The ranks still active at step t of
 * a panel are r0..re-1 (lengths are non-increasing); once rank 0 is the only one left
 * in the batch, the rest of it is contiguous in the output: one memcpy. With
 * `partial` (see above) rows go to offs[t] + r and the dense tail is skipped. */
#define FC_DEFINE_PANEL(NAME, TYPE)                                                     \
static void NAME(char *out, const char *const *srcs, const int64_t *lens,               \
                 const int64_t *offs, int64_t B, int64_t R, int64_t tb, int partial)    \
{                                                                                       \
    TYPE *o = (TYPE *)out;                                                              \
    const TYPE *const *s = (const TYPE *const *)srcs;                                   \
    int64_t T = lens[0], A0 = B;                                                        \
    for (int64_t t0 = 0; t0 < T; t0 += tb) {                                            \
        int64_t t1 = t0 + tb < T ? t0 + tb : T;                                         \
        while (A0 > 0 && lens[A0 - 1] <= t0) A0--;                                      \
        for (int64_t r0 = 0; r0 < A0; r0 += R) {                                        \
            int64_t re = r0 + R < A0 ? r0 + R : A0;                                     \
            for (int64_t t = t0; t < t1; t++) {                                         \
                while (re > r0 && lens[re - 1] <= t) re--;                              \
                if (re == r0) break;                                                    \
                if (!partial && re == 1) {                                              \
                    memcpy(o + offs[t], s[0] + t, (size_t)(t1 - t) * sizeof(TYPE));     \
                    break;                                                              \
                }                                                                       \
                TYPE *d = o + offs[t];                                                  \
                for (int64_t r = r0; r < re; r++) d[r] = s[r][t];                       \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
}

FC_CLONES FC_DEFINE_TILED(fc_tiled1, uint8_t, FC_FAST_U8)
FC_CLONES FC_DEFINE_TILED(fc_tiled2, uint16_t, FC_FAST_U16)
FC_CLONES FC_DEFINE_TILED(fc_tiled4, uint32_t, FC_FAST_U32)
FC_CLONES FC_DEFINE_TILED(fc_tiled8, uint64_t, FC_FAST_U64)
FC_CLONES FC_DEFINE_TILED(fc_tiled16, fc_u128, FC_NO_FAST)
FC_CLONES FC_DEFINE_TILED(fc_tiled2u, fc_u16u, FC_FAST_U16)
FC_CLONES FC_DEFINE_TILED(fc_tiled4u, fc_u32u, FC_FAST_U32)
FC_CLONES FC_DEFINE_TILED(fc_tiled8u, fc_u64u, FC_FAST_U64)
FC_CLONES FC_DEFINE_TILED(fc_tiled16u, fc_u128u, FC_NO_FAST)
FC_CLONES FC_DEFINE_PANEL(fc_panel1, uint8_t)
FC_CLONES FC_DEFINE_PANEL(fc_panel2, uint16_t)
FC_CLONES FC_DEFINE_PANEL(fc_panel4, uint32_t)
FC_CLONES FC_DEFINE_PANEL(fc_panel8, uint64_t)
FC_CLONES FC_DEFINE_PANEL(fc_panel16, fc_u128)
FC_CLONES FC_DEFINE_PANEL(fc_panel2u, fc_u16u)
FC_CLONES FC_DEFINE_PANEL(fc_panel4u, fc_u32u)
FC_CLONES FC_DEFINE_PANEL(fc_panel8u, fc_u64u)
FC_CLONES FC_DEFINE_PANEL(fc_panel16u, fc_u128u)


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

/* Whether the first ranks' sources crowd into few L1 cache sets (bits 6-11 of their
 * addresses: 64 sets of 8 ways): samples of one length laid end to end in one buffer
 * (a flat store, a concatenation), 512 B or 4 KB apart. A panel reads one line of
 * each of its 256 ranks per step and comes back to it for the next steps; with fewer
 * than 16 sets in use those lines evict each other before their reuse (int64, 4096 x
 * 512 flat: 6.1 ms in panels against 2.0 ms in tiles), so such batches take the
 * tiles, which keep 16 ranks' lines at a time. */
static int fc_sources_alias(const char *const *srcs, int64_t B)
{
    uint64_t sets = 0;
    int64_t n = B < 256 ? B : 256;
    for (int64_t r = 0; r < n; r++) sets |= (uint64_t)1 << (((uintptr_t)srcs[r] >> 6) & 63);
    return n >= 64 && __builtin_popcountll(sets) < 16;
}

FC_CLONES
static void fc_scatter(char *out, const char *const *srcs, const int64_t *lens,
                       const int64_t *offsets, int64_t B, int64_t row_bytes, int64_t block,
                       int stream, int64_t tile, int partial)
{
    if (B <= 0) return;
    int any_null = 0;
    uintptr_t bits = (uintptr_t)out;       /* every address, for the alignment check */
    for (int64_t r = 0; r < B; r++) {
        any_null |= srcs[r] == NULL;
        bits |= (uintptr_t)srcs[r];        /* (NULL sources are skipped: 0 is aligned) */
    }
    /* `out` and every source aligned to the row's element type (fc_u128: 8 bytes) */
    uintptr_t align = row_bytes == 16 ? 8 : (uintptr_t)row_bytes;
    int aligned = row_bytes > 16 || (bits & (align - 1)) == 0;
    /* the narrow-row kernel NAME<bytes>, or its alignment-1 twin NAME<bytes>u */
#define FC_BY_ROW(NAME, ...)                                                           \
    switch (row_bytes) {                                                               \
    case 1: NAME##1(__VA_ARGS__); return;                                              \
    case 2: if (aligned) NAME##2(__VA_ARGS__); else NAME##2u(__VA_ARGS__); return;     \
    case 4: if (aligned) NAME##4(__VA_ARGS__); else NAME##4u(__VA_ARGS__); return;     \
    case 8: if (aligned) NAME##8(__VA_ARGS__); else NAME##8u(__VA_ARGS__); return;     \
    case 16: if (aligned) NAME##16(__VA_ARGS__); else NAME##16u(__VA_ARGS__); return;  \
    }
    if (!any_null && tile < 0 && fc_sources_alias(srcs, B)) tile = 64;
    if (!any_null && tile < 0) {   /* panels of -tile ranks (FC_PANEL_STEPS steps) */
        int64_t R = tile == INT64_MIN ? INT64_MAX : -tile, tb = FC_PANEL_STEPS;
        FC_BY_ROW(fc_panel, out, srcs, lens, offsets, B, R, tb, partial)
    }
    if (!any_null && tile > 0) {
        FC_BY_ROW(fc_tiled, out, srcs, lens, offsets, B, tile, partial)
    }
#undef FC_BY_ROW
#define FC_ELEMENT_LOOP(TYPE, UTYPE)                                                \
    if (aligned) FC_SCATTER_LOOP(((TYPE *)out)[offsets[t] + r] = ((const TYPE *)src)[t]) \
    else FC_SCATTER_LOOP(((UTYPE *)out)[offsets[t] + r] = ((const UTYPE *)src)[t])
    switch (row_bytes) {
    case 1: FC_SCATTER_LOOP(((uint8_t *)out)[offsets[t] + r] = ((const uint8_t *)src)[t]) break;
    case 2: FC_ELEMENT_LOOP(uint16_t, fc_u16u) break;
    case 4: FC_ELEMENT_LOOP(uint32_t, fc_u32u) break;
    case 8: FC_ELEMENT_LOOP(uint64_t, fc_u64u) break;
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

/* Padded layout: row t of sample i goes to row base(i) + (shift(i) + t) * stride, where
 * batch-first: base = i * T, stride = 1; time-major: base = i, stride = B; and
 * shift = T - lens[i] for left padding, else 0. Every other row of the sample's slots
 * is filled with the pattern pad (pad_bytes bytes, repeated; pad_bytes divides
 * row_bytes; NULL: zeros): one element, so that no padding row is ever built in
 * memory. Samples with srcs[i] == NULL only get their padding (their data is written
 * by someone else). */
static void fc_fill_pattern(char *d, const char *pad, size_t pad_bytes, size_t n)
{
    if (n == 0) return;
    size_t done = pad_bytes < n ? pad_bytes : n;
    memcpy(d, pad, done);
    while (done < n) {              /* doubling: log2(n / pad_bytes) copies */
        size_t k = done < n - done ? done : n - done;
        memcpy(d + done, d, k);
        done += k;
    }
}

static void fc_fill_rows(char *dst, int64_t nrows, int64_t row_stride_bytes,
                         const char *pad, int64_t pad_bytes, int64_t row_bytes)
{
    for (int64_t k = 0; k < nrows; k++) {
        char *d = dst + k * row_stride_bytes;
        if (pad == NULL) memset(d, 0, (size_t)row_bytes);
        else if (pad_bytes == row_bytes) fc_copy_row(d, pad, (size_t)row_bytes);
        else fc_fill_pattern(d, pad, (size_t)pad_bytes, (size_t)row_bytes);
    }
}

/* Bulk copy / fill of n bytes with non-temporal 16-byte stores in the aligned middle
 * (ordinary stores for the unaligned head and tail); plain memcpy/memset elsewhere. */
#ifdef FC_HAVE_STREAM
__attribute__((target("avx2")))
static void fc_bulk_copy32(char *dst, const char *src, size_t n)
{
    size_t head = (32 - ((uintptr_t)dst & 31)) & 31;
    memcpy(dst, src, head);
    size_t body = (n - head) & ~(size_t)31, i;
    for (i = 0; i < body; i += 32)
        _mm256_stream_si256((__m256i *)(dst + head + i),
                            _mm256_loadu_si256((const __m256i *)(src + head + i)));
    memcpy(dst + head + body, src + head + body, n - head - body);
}
#endif

static void fc_bulk_copy(char *dst, const char *src, size_t n, int stream)
{
#ifdef FC_HAVE_STREAM
    if (stream == 2 && n >= 256 && __builtin_cpu_supports("avx2")) {
        fc_bulk_copy32(dst, src, n);
        return;
    }
    if (stream && n >= 256) {
        size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
        memcpy(dst, src, head);
        size_t body = (n - head) & ~(size_t)15, i;
        for (i = 0; i < body; i += 16)
            _mm_stream_si128((__m128i *)(dst + head + i),
                             _mm_loadu_si128((const __m128i *)(src + head + i)));
        memcpy(dst + head + body, src + head + body, n - head - body);
        return;
    }
#endif
    (void)stream;
    memcpy(dst, src, n);
}

static void fc_bulk_zero(char *dst, size_t n, int stream)
{
#ifdef FC_HAVE_STREAM
    if (stream && n >= 256) {
        size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
        memset(dst, 0, head);
        size_t body = (n - head) & ~(size_t)15, i;
        __m128i z = _mm_setzero_si128();
        for (i = 0; i < body; i += 16)
            _mm_stream_si128((__m128i *)(dst + head + i), z);
        memset(dst + head + body, 0, n - head - body);
        return;
    }
#endif
    (void)stream;
    memset(dst, 0, n);
}

/* Time-major padding, element by element: every slot of steps [ta, tb) for samples
 * r0..r0+n-1 (sample k's data at output steps [s, s + L), s = T - L with left
 * padding, the padding element `pv` elsewhere). fc_pad_tm_narrow's remainders. */
#define FC_PAD_TM_ELEMS(TYPE)                                                           \
    {                                                                                   \
        TYPE pv;                                                                        \
        memcpy(&pv, ptile, sizeof(TYPE));                                               \
        for (int64_t t = ta; t < tb; t++) {                                             \
            TYPE *d = (TYPE *)out + offs[t] + r0;                                       \
            for (int64_t k = 0; k < n; k++) {                                           \
                int64_t L = lens[r0 + k], s = left ? T - L : 0;                         \
                d[k] = t >= s && t < s + L ? ((const TYPE *)srcs[r0 + k])[t - s] : pv;  \
            }                                                                           \
        }                                                                               \
    }

/* M(TYPE) for the element type of a narrow row of rb (1, 2, 4 or 8) bytes */
#define FC_BY_NARROW_ROW(M, rb)                                                         \
    switch (rb) {                                                                       \
    case 1: M(uint8_t) break;                                                           \
    case 2: M(fc_u16u) break;                                                           \
    case 4: M(fc_u32u) break;                                                           \
    case 8: M(fc_u64u) break;                                                           \
    }

/* fc_pad_tm_narrow's tile [t0, t1) of a group with data in few samples: only their
 * data, element by element (the padding is written around it). */
#define FC_PAD_TM_DATA(TYPE)                                                            \
    for (int64_t k = 0; k < n; k++) {                                                   \
        int64_t sk = ss[r0 + k], ek = es[r0 + k];                                       \
        int64_t a = sk > t0 ? sk : t0, b = ek < t1 ? ek : t1;                           \
        for (int64_t t = a; t < b; t++)                                                 \
            ((TYPE *)out)[po[t - t0] + r0 + k] = ((const TYPE *)srcs[r0 + k])[t - sk];  \
    }

/* Time-major padding of narrow rows (1 or 2 bytes, and 4 or 8 padded on the left;
 * every source given; fc_pad_tm_groups takes 4 and 8 on the right), in tiles of 16
 * steps x 16 samples (a group: samples r0..r0+15 in input order), every
 * slot written once, step tile by step tile. In a tile, each sample of a group is
 * read from one 16-row run: its source where it has data at all 16 steps, a run of
 * padding rows where it has none, and, where its data starts or ends inside the tile,
 * a copy on the stack of its rows there between padding rows; the register
 * transposes then write each step's 16 slots at once, whatever the lengths. Groups
 * with no data in a tile join a run of padding, filled a step at a time (a long tail's
 * steps past the common lengths: one fill per step); so do groups with data in at
 * most FC_PAD_TM_SPARSE samples there, whose data is then written element by element
 * (long-tail, int64 on the left: 123 -> 100 us).
 *
 * Earlier, only a group's common steps (where all 16 samples hold data) were
 * transposed, the rest written slot by slot after the padding: with lengths spread
 * 1..2000 a group's shortest sample covers 1/17 of its steps, so that was most of the
 * data (bytes, 512 x ~1000 uint8: 355 -> 190 us, batch-first 32; left-padded with 3:
 * 555 -> 215), and with left padding a long tail's short samples were a remainder
 * at every step (long-tail, 128 x ~20 with a few 50-200x that: int64 176 -> 100 us,
 * int32 170 -> 78; tokens 36 -> 29). The steps past the last whole tile, and a
 * group of fewer than 16 samples of 1-byte rows, are written element by element.
 * Returns -1 (nothing written) when the step table cannot be allocated. */
#ifdef FC_HAVE_STREAM
#define FC_PAD_TM_H 16
#ifndef FC_PAD_TM_SPARSE
#define FC_PAD_TM_SPARSE 3
#endif
FC_CLONES
static int fc_pad_tm_narrow(char *out, const char *const *srcs, const int64_t *lens,
                            int64_t B, int64_t ldb, int64_t T, int64_t row_bytes, int left,
                            const char *pad_row, int64_t pad_bytes)
{
    const int64_t rb = row_bytes, H = FC_PAD_TM_H, tiled = T - T % FC_PAD_TM_H;
    const int64_t groups = (B + FC_TR - 1) / FC_TR;
    /* the step table, then each group's first and last data step + 1, and the
     * groups of a tile with data in few samples */
    int64_t *offs = (int64_t *)malloc((size_t)((T > 0 ? T : 1) + 4 * groups + 2 * B)
                                      * sizeof(int64_t));
    if (offs == NULL) return -1;
    int64_t *gs = offs + (T > 0 ? T : 1), *ge = gs + groups, *gf = ge + groups;
    int64_t *sparse = gf + groups, *ss = sparse + groups, *es = ss + B;
    for (int64_t t = 0; t < T; t++) offs[t] = t * ldb;
    for (int64_t g = 0; g < groups && tiled > 0; g++) {
        gs[g] = T;
        ge[g] = 0;
        /* gf: the tiles where at most FC_PAD_TM_SPARSE of the group's samples hold
         * data. With right padding every sample's data starts at step 0, so those are
         * the tiles from the (FC_PAD_TM_SPARSE + 1)-th latest end on (t0 >= gf);
         * with left padding it all ends at step T: the tiles up to the (SPARSE + 1)-th
         * earliest start (t1 <= gf). */
        int64_t top[FC_PAD_TM_SPARSE + 1], m = 0;  /* the latest ends (earliest starts) */
        for (int64_t i = g * FC_TR; i < B && i < (g + 1) * FC_TR; i++) {
            /* sample i's data at output steps [ss, es) (empty: [T, T) or [0, 0)); the
             * group's first and last + 1 (a bound: an empty sample may lower gs) */
            ss[i] = left ? T - lens[i] : 0;
            es[i] = ss[i] + lens[i];
            gs[g] = ss[i] < gs[g] ? ss[i] : gs[g];
            ge[g] = es[i] > ge[g] ? es[i] : ge[g];
            int64_t v = left ? -ss[i] : es[i], j;
            if (lens[i] == 0 || (m > FC_PAD_TM_SPARSE && v <= top[FC_PAD_TM_SPARSE]))
                continue;
            j = m > FC_PAD_TM_SPARSE ? FC_PAD_TM_SPARSE : m++;
            for (; j > 0 && top[j - 1] < v; j--) top[j] = top[j - 1];
            top[j] = v;
        }
        gf[g] = m > FC_PAD_TM_SPARSE ? (left ? -top[FC_PAD_TM_SPARSE] : top[FC_PAD_TM_SPARSE])
                                     : (left ? T : 0);
    }
    /* 16 rows of padding: the run of a sample without data in a tile, the start of a
     * staged one's, and the pattern of the padding runs */
    char ptile[FC_PAD_TM_H * 8];
    if (pad_row == NULL) memset(ptile, 0, (size_t)(H * rb));
    else fc_fill_pattern(ptile, pad_row, (size_t)pad_bytes, (size_t)(H * rb));
    char stage[FC_TR][FC_PAD_TM_H * 8];
    const char *tp[FC_TR];
    int part[FC_TR];
    for (int64_t t0 = 0; t0 < tiled; t0 += H) {
        const int64_t t1 = t0 + H, *po = offs + t0;
        int64_t run = 0;        /* the run of padding-only groups: samples run..r0-1 */
        int64_t nsparse = 0;    /* groups with data in few samples: after the padding */
        for (int64_t g = 0; g <= groups; g++) {
            int64_t r0 = g < groups ? g * FC_TR : B, n = B - r0 < FC_TR ? B - r0 : FC_TR;
            int small = n < 2 || (rb == 1 && n < FC_TR);
            if (g < groups) {
                if (ge[g] <= t0 || gs[g] >= t1) continue;
                if (!small && (left ? t1 <= gf[g] : t0 >= gf[g])) {
                    sparse[nsparse++] = g;
                    continue;
                }
            }
            if (r0 > run) {
                for (int64_t j = 0; j < H; j++) {
                    char *d = out + (po[j] + run) * rb;
                    if (pad_row == NULL) memset(d, 0, (size_t)((r0 - run) * rb));
                    else fc_fill_pattern(d, ptile, (size_t)(H * rb), (size_t)((r0 - run) * rb));
                }
            }
            if (g == groups) break;
            run = r0 + n;
            if (small) {
                int64_t ta = t0, tb = t1;
                FC_BY_NARROW_ROW(FC_PAD_TM_ELEMS, rb)
                continue;
            }
            /* each sample's run (no branch per sample: which of the three is data) */
            int64_t np_ = 0;
            for (int64_t k = 0; k < n; k++) {
                int64_t sk = ss[r0 + k], ek = es[r0 + k];
                int full = (sk <= t0) & (t1 <= ek), part_ = (ek > t0) & (sk < t1) & !full;
                uintptr_t at = (uintptr_t)srcs[r0 + k] + (uintptr_t)((t0 - sk) * rb);
                tp[k] = full ? (const char *)at : part_ ? stage[k] : ptile;
                part[np_] = (int)k;
                np_ += part_;
            }
            for (int64_t q = 0; q < np_; q++) {  /* data starting or ending in the tile */
                int64_t k = part[q], sk = ss[r0 + k], ek = es[r0 + k];
                int64_t a = sk > t0 ? sk : t0, b = ek < t1 ? ek : t1;
                memcpy(stage[k], ptile, (size_t)(H * rb));
                memcpy(stage[k] + (a - t0) * rb, srcs[r0 + k] + (a - sk) * rb,
                       (size_t)((b - a) * rb));
            }
            switch (rb) {
            case 1: fc_t16x16_u8((const uint8_t *const *)tp, 0, (uint8_t *)out, po, r0); break;
            case 2: for (int64_t j = 0; j < H; j += 8) fc_t8xn_u16(tp, n, j, out, po, r0); break;
            case 4: for (int64_t j = 0; j < H; j += 4) fc_t4xn_u32(tp, n, j, out, po, r0); break;
            case 8: for (int64_t j = 0; j < H; j += 2) fc_t2xn_u64(tp, n, j, out, po, r0); break;
            }
        }
        /* the sparse groups' data, over the padding just written */
        for (int64_t q = 0; q < nsparse; q++) {
            int64_t r0 = sparse[q] * FC_TR, n = B - r0 < FC_TR ? B - r0 : FC_TR;
            FC_BY_NARROW_ROW(FC_PAD_TM_DATA, rb)
        }
    }
    {   /* the steps past the last whole tile, every sample */
        int64_t r0 = 0, n = B, ta = tiled, tb = T;
        FC_BY_NARROW_ROW(FC_PAD_TM_ELEMS, rb)
    }
    free(offs);
    return 0;
}
#endif

/* fc_pad_tm_groups' rest of a group (samples r0..r0+n-1) over output steps
 * [lo, hi): ord[] holds the group's samples by length, longest first, so the samples
 * with data at step t are its first `live` ones (those with L_k > t). */
#define FC_PAD_TM_REST(TYPE)                                                            \
    {                                                                                   \
        int64_t live = n;                                                               \
        for (int64_t t = lo; t < hi; t++) {                                             \
            while (live > 0 && lens[r0 + ord[live - 1]] <= t) live--;                   \
            TYPE *d = (TYPE *)out + offs[t] + r0;                                       \
            for (int64_t j = 0; j < live; j++) {                                        \
                int k = ord[j];                                                         \
                d[k] = ((const TYPE *)srcs[r0 + k])[t];                                 \
            }                                                                           \
        }                                                                               \
    }

/* Time-major padding of 4- or 8-byte rows on the right (every source given), group
 * by group (fc_pad_tm_narrow takes the other narrow rows and left padding: measured
 * faster there; this is faster here, tokens 256 x ~37 int64: 21 us against 23-24):
 * each step's B slots are filled with the padding first (one run per step), then the
 * samples are written 16 at a time in input order. Over the steps where all 16 of a
 * group hold data (its first m = min(lengths)), the register transposes of the tiled
 * kernel write each step's 16 slots at once (tokens: 251 -> 51 us; element by
 * element, each slot of each step was its own store and each padding slot its own
 * memset). The rest of the group's data (FC_PAD_TM_REST) is then written step by
 * step, each step's slots in one run (sample by sample it was a column walk, a line
 * fetched per element: big, 8192 x ~500 int64, 22 -> 12 ms; long-tail 81-104 -> 71
 * us). Returns -1 (nothing written) when the step table cannot be allocated. */
#ifdef FC_HAVE_STREAM
FC_CLONES
static int fc_pad_tm_groups(char *out, const char *const *srcs, const int64_t *lens,
                            int64_t B, int64_t ldb, int64_t T, int64_t row_bytes,
                            const char *pad_row, int64_t pad_bytes)
{
    int64_t *offs = (int64_t *)malloc((size_t)(T > 0 ? T : 1) * sizeof(int64_t));
    if (offs == NULL) return -1;
    for (int64_t t = 0; t < T; t++) {
        offs[t] = t * ldb;
        char *d = out + offs[t] * row_bytes;
        if (pad_row == NULL) memset(d, 0, (size_t)(B * row_bytes));
        else fc_fill_pattern(d, pad_row, (size_t)pad_bytes, (size_t)(B * row_bytes));
    }
    for (int64_t r0 = 0; r0 < B; r0 += FC_TR) {
        int64_t n = B - r0 < FC_TR ? B - r0 : FC_TR, m = T;
        for (int64_t k = 0; k < n; k++) if (lens[r0 + k] < m) m = lens[r0 + k];
        /* the common steps 0..m-1 */
        const char *const *sp = srcs + r0;
        int64_t t = 0;
        if (n >= 2) {
            if (row_bytes == 4)
                for (; t + 4 <= m; t += 4) fc_t4xn_u32(sp, n, t, out, offs, r0);
            else
                for (; t + 2 <= m; t += 2) fc_t2xn_u64(sp, n, t, out, offs, r0);
        }
        for (; t < m; t++)
            for (int64_t k = 0; k < n; k++)
                memcpy(out + (offs[t] + r0 + k) * row_bytes, sp[k] + t * row_bytes,
                       (size_t)row_bytes);
        /* the rest of each sample, its steps outside the common ones, step by step:
         * each step's n slots are one run of the output (sample by sample, every row
         * would land B rows after the last, a line fetched per row) */
        int64_t lo = m, hi = m;
        int ord[FC_TR];                 /* the group by length, longest first */
        for (int k = 0; k < (int)n; k++) {
            int j = k;
            for (; j > 0 && lens[r0 + ord[j - 1]] < lens[r0 + k]; j--) ord[j] = ord[j - 1];
            ord[j] = k;
            if (lens[r0 + k] > hi) hi = lens[r0 + k];
        }
        if (row_bytes == 4) FC_PAD_TM_REST(fc_u32u)
        else FC_PAD_TM_REST(fc_u64u)
    }
    free(offs);
    return 0;
}
#endif

/* Time-major padding in tiles of steps x G samples (any row size; srcs[i] == NULL:
 * only sample i's padding), for the rows fc_pad_tm_narrow does not take (16 bytes and
 * wider, or a batch with a NULL source). The output row of sample i at step t is
 * t * ldb + i; sample i's data fills steps [shift, shift + L) (shift = T - L with left
 * padding), padding the rest. Written sample by sample, a time-major buffer is a
 * column walk: every row lands ldb rows after the last. In a tile, G adjacent samples
 * (a run of >= 256 bytes) are written over 8-32 steps while the tile's lines stay in
 * cache, and from 1 MB of output (`stream`) rows of >= 64 bytes (a multiple of 16)
 * are stored non-temporally, as the batch-first copy is: the scattered rows then skip
 * reading every destination line first (speech, 32 x ~800 x 320 B: 1.51 -> 0.44 ms,
 * batch-first 0.43 ms, pad_sequence 1.2-1.8 ms; embed 2.3 -> 1.3 ms). FC_PAD_TM_ROWS
 * is one tile's copy for rows of one element type (the padding element `pv` once in a
 * register). */
#define FC_PAD_TM_ROWS(TYPE)                                                            \
    {                                                                                   \
        TYPE pv;                                                                        \
        memcpy(&pv, prow, sizeof(TYPE));                                                \
        for (int64_t i = g0; i < g1; i++) {                                             \
            int64_t L = lens[i], shift = left ? T - L : 0;                              \
            int64_t a = shift > t0 ? shift : t0, b = shift + L < t1 ? shift + L : t1;   \
            if (a > b) a = b = t1;                                                      \
            TYPE *d = (TYPE *)out + i;                                                  \
            const TYPE *src = (const TYPE *)srcs[i];    /* NULL: padding only */        \
            for (int64_t t = t0; t < a; t++) d[t * ldb] = pv;                           \
            if (src != NULL) for (int64_t t = a; t < b; t++) d[t * ldb] = src[t - shift]; \
            for (int64_t t = b; t < t1; t++) d[t * ldb] = pv;                           \
        }                                                                               \
    }

FC_CLONES
static int fc_pad_tm_tiles(char *out, const char *const *srcs, const int64_t *lens,
                           int64_t B, int64_t ldb, int64_t T, int64_t row_bytes, int left,
                           const char *pad_row, int64_t pad_bytes, int stream)
{
    /* non-temporal row stores (16-byte, aligned) for large outputs of wide rows */
    int nt = stream && row_bytes >= 64 && row_bytes % 16 == 0 && ((uintptr_t)out & 15) == 0;
    /* one padding row, built once: zeros, or the pattern repeated */
    char local[16];
    char *prow = row_bytes <= 16 ? local : (char *)malloc((size_t)row_bytes);
    if (prow == NULL) return -1;
    if (pad_row == NULL) memset(prow, 0, (size_t)row_bytes);
    else fc_fill_pattern(prow, pad_row, (size_t)pad_bytes, (size_t)row_bytes);
    int64_t G = 256 / row_bytes;
    if (G < 1) G = 1;
    if (G > B) G = B;
    /* steps per tile: 8 (16-byte rows of 256 samples, 4 KB apart: 32 us against 90
     * with 16 steps, the lines of a taller tile share L1 sets), 32 with the
     * non-temporal stores (embed, 128 x ~100 x 1 KB: 0.95 -> 0.87 ms) */
    const int64_t S = nt ? 32 : 8;
    for (int64_t t0 = 0; t0 < T; t0 += S) {
        int64_t t1 = t0 + S < T ? t0 + S : T;
        for (int64_t g0 = 0; g0 < B; g0 += G) {
            int64_t g1 = g0 + G < B ? g0 + G : B;
            switch (row_bytes) {
            case 1: FC_PAD_TM_ROWS(uint8_t) continue;
            case 2: FC_PAD_TM_ROWS(fc_u16u) continue;
            case 4: FC_PAD_TM_ROWS(fc_u32u) continue;
            case 8: FC_PAD_TM_ROWS(fc_u64u) continue;
            case 16: FC_PAD_TM_ROWS(fc_u128u) continue;
            }
            for (int64_t i = g0; i < g1; i++) {
                int64_t L = lens[i], shift = left ? T - L : 0;
                int64_t a = shift > t0 ? shift : t0, b = shift + L < t1 ? shift + L : t1;
                if (a > b) a = b = t1;
                char *d = out + i * row_bytes;
                int64_t sb = ldb * row_bytes;
#ifdef FC_HAVE_STREAM
                if (nt) {
                    for (int64_t t = t0; t < a; t++) fc_stream_row(d + t * sb, prow, (size_t)row_bytes);
                    if (srcs[i] != NULL)
                        for (int64_t t = a; t < b; t++)
                            fc_stream_row(d + t * sb, srcs[i] + (t - shift) * row_bytes, (size_t)row_bytes);
                    for (int64_t t = b; t < t1; t++) fc_stream_row(d + t * sb, prow, (size_t)row_bytes);
                    continue;
                }
#endif
                for (int64_t t = t0; t < a; t++) fc_copy_row(d + t * sb, prow, (size_t)row_bytes);
                if (srcs[i] != NULL)
                    for (int64_t t = a; t < b; t++)
                        fc_copy_row(d + t * sb, srcs[i] + (t - shift) * row_bytes, (size_t)row_bytes);
                for (int64_t t = b; t < t1; t++) fc_copy_row(d + t * sb, prow, (size_t)row_bytes);
            }
        }
    }
    if (prow != local) free(prow);
#ifdef FC_HAVE_STREAM
    if (nt) _mm_sfence();
#endif
    return 0;
}

FC_CLONES
static void fc_pad(char *out, const char *const *srcs, const int64_t *lens, int64_t B,
                   int64_t ldb, int64_t T, int64_t row_bytes, int batch_first, int left,
                   const char *pad_row, int64_t pad_bytes, int stream)
{
#ifdef FC_HAVE_STREAM
    if (!batch_first && B >= 2 && (row_bytes == 1 || row_bytes == 2 || row_bytes == 4
                                   || row_bytes == 8)) {
        int any_null = 0;
        for (int64_t i = 0; i < B; i++) any_null |= srcs[i] == NULL;
        /* 4- and 8-byte rows padded on the right: group by group, the rest of each
         * group step by step (tokens, 256 x ~37 int64: 21 us, tiled 23-24); the
         * others in whole tiles (bytes, 512 x ~1000 uint8: 355 -> 190 us) */
        if (!any_null && (!left && row_bytes >= 4
                          ? fc_pad_tm_groups(out, srcs, lens, B, ldb, T, row_bytes, pad_row,
                                             pad_bytes)
                          : fc_pad_tm_narrow(out, srcs, lens, B, ldb, T, row_bytes, left,
                                             pad_row, pad_bytes)) == 0)
            return;
    }
#endif
    if (!batch_first && fc_pad_tm_tiles(out, srcs, lens, B, ldb, T, row_bytes, left, pad_row,
                                        pad_bytes, stream) == 0)
        return;
    /* ldb: samples per time step of the time-major buffer (B for a whole batch; the
     * batch's B when these B samples are a range of its columns) */
    int64_t stride = batch_first ? 1 : ldb;
    int64_t sb = stride * row_bytes;
    for (int64_t i = 0; i < B; i++) {
        int64_t L = lens[i];
        int64_t base = batch_first ? i * T : i;
        int64_t shift = left ? T - L : 0;
        char *first = out + base * row_bytes;
        /* padding before (left) or after (right) the data */
        if (batch_first && pad_row == NULL) {
            fc_bulk_zero(first, (size_t)(shift * row_bytes), stream);
            fc_bulk_zero(first + (shift + L) * row_bytes, (size_t)((T - shift - L) * row_bytes),
                         stream);
        } else {
            if (batch_first) {      /* padding rows are contiguous: one pattern fill */
                fc_fill_pattern(first, pad_row, (size_t)pad_bytes, (size_t)(shift * row_bytes));
                fc_fill_pattern(first + (shift + L) * row_bytes, pad_row, (size_t)pad_bytes,
                                (size_t)((T - shift - L) * row_bytes));
            } else {
                fc_fill_rows(first, shift, sb, pad_row, pad_bytes, row_bytes);
                fc_fill_rows(first + (shift + L) * sb, T - shift - L, sb, pad_row, pad_bytes,
                             row_bytes);
            }
        }
        const char *src = srcs[i];
        if (src == NULL) continue;
        if (batch_first) {
            fc_bulk_copy(first + shift * row_bytes, src, (size_t)(L * row_bytes), stream);
        } else {
            char *d = first + shift * sb;
            /* (alignment-1 types: a sample's 4- or 8-byte rows may sit at any address) */
            switch (row_bytes) {
            case 4: for (int64_t t = 0; t < L; t++) ((fc_u32u *)d)[t * stride] = ((const fc_u32u *)src)[t]; break;
            case 8: for (int64_t t = 0; t < L; t++) ((fc_u64u *)d)[t * stride] = ((const fc_u64u *)src)[t]; break;
            default: for (int64_t t = 0; t < L; t++) fc_copy_row(d + t * sb, src + t * row_bytes, (size_t)row_bytes);
            }
        }
    }
#ifdef FC_HAVE_STREAM
    if (stream) _mm_sfence();
#endif
}
/* Ask the kernel to back the 2 MB-aligned interior of [p, p + n) with transparent huge
 * pages (Linux, THP in "madvise" or "always" mode), as NumPy does for its large
 * arrays. Call it on fresh memory before the first write: a fresh 4 KB-page mapping
 * costs one page fault per 4 KB, which dominated packing outputs of tens of MB.
 * Only a hint: 0 when advised, 1 when there was no whole huge page to advise, -1
 * where unsupported or refused (the memory works the same either way). */
static int fc_advise_huge(char *p, size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t H = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + H - 1) & ~(H - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(H - 1);
    if (b <= a) return 1;
    return madvise((void *)a, (size_t)(b - a), MADV_HUGEPAGE) == 0 ? 0 : -1;
#else
    (void)p; (void)n;
    return -1;
#endif
}

#endif
