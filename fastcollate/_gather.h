/* Converting copies of fastcollate._store: rows of a flat store gathered into the
 * packed or padded layout while each element is converted (uint16/uint32 token ids to
 * int64 or int32, float32 <-> float64), so no intermediate array exists.
 *
 * srcs:  address of each sample's first row (rank order for packed, input order for
 *        padded); loads go through memcpy, so a source need not be aligned
 * lens:  rows of each sample (non-increasing for packed)
 * row:   elements per row
 * Packed: row t of rank r goes to element row (offsets[t] + r) of out.
 * Padded: sample b, step t goes to row b * T + t (batch_first) or t * B + b; the
 *        padding rows get the element `pad` (already in the output type).
 */
#ifndef FASTCOLLATE_GATHER_H
#define FASTCOLLATE_GATHER_H
#include <stdint.h>
#include <string.h>

#define FC_LOAD(S, p) ({ S v_; memcpy(&v_, (p), sizeof v_); v_; })

#define FC_CONVERT(NAME, S, D)                                                         \
static void NAME##_packed(char *out_, const char *const *srcs, const int64_t *lens,   \
                          const int64_t *offsets, int64_t B, int64_t row)             \
{                                                                                      \
    D *out = (D *)out_;                                                                \
    if (row == 1) {     /* one element a row: write the output in order, step by step */ \
        int64_t active = B;                                                            \
        for (int64_t t = 0; t < lens[0]; t++) {                                        \
            while (active > 0 && lens[active - 1] <= t) active--;                      \
            D *o = out + offsets[t];                                                   \
            const int64_t at = t * (int64_t)sizeof(S);                                 \
            for (int64_t r = 0; r < active; r++)                                       \
                o[r] = (D)FC_LOAD(S, srcs[r] + at);                                    \
        }                                                                              \
        return;                                                                        \
    }                                                                                  \
    for (int64_t r = 0; r < B; r++) {                                                  \
        const char *src = srcs[r];                                                     \
        for (int64_t t = 0; t < lens[r]; t++) {                                        \
            D *o = out + (offsets[t] + r) * row;                                       \
            const char *s = src + t * row * (int64_t)sizeof(S);                        \
            for (int64_t e = 0; e < row; e++)                                          \
                o[e] = (D)FC_LOAD(S, s + e * sizeof(S));                               \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
static void NAME##_padded(char *out_, const char *const *srcs, const int64_t *lens,   \
                          int64_t B, int64_t T, int64_t row, int batch_first, int left,\
                          const char *pad_)                                            \
{                                                                                      \
    D *out = (D *)out_;                                                                \
    D pad;                                                                             \
    memcpy(&pad, pad_, sizeof pad);                                                    \
    for (int64_t b = 0; b < B; b++) {                                                  \
        const char *src = srcs[b];                                                     \
        int64_t len = lens[b], shift = left ? T - len : 0;                             \
        for (int64_t t = 0; t < T; t++) {                                              \
            D *o = out + (batch_first ? b * T + t : t * B + b) * row;                  \
            int64_t s = t - shift;                                                     \
            if (s < 0 || s >= len) {                                                   \
                for (int64_t e = 0; e < row; e++) o[e] = pad;                          \
            } else {                                                                   \
                const char *p = src + s * row * (int64_t)sizeof(S);                    \
                for (int64_t e = 0; e < row; e++)                                      \
                    o[e] = (D)FC_LOAD(S, p + e * sizeof(S));                           \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
}

/* One pair per (source, target): integer sources to int64 and int32 (values wrap
 * like torch's .to() when they do not fit, as C's conversions do on GCC/Clang), and
 * the float32/float64 pair. */
#define FC_INTS(X)                                                                     \
    X('b', int8_t) X('B', uint8_t) X('h', int16_t) X('H', uint16_t)                    \
    X('i', int32_t) X('I', uint32_t) X('q', int64_t) X('Q', uint64_t)

#define FC_DEF(C, S) FC_CONVERT(fc_##S##_to_i64, S, int64_t) FC_CONVERT(fc_##S##_to_i32, S, int32_t)
FC_INTS(FC_DEF)
FC_CONVERT(fc_f32_to_f64, float, double)
FC_CONVERT(fc_f64_to_f32, double, float)

typedef void (*fc_packed_fn)(char *, const char *const *, const int64_t *,
                             const int64_t *, int64_t, int64_t);
typedef void (*fc_padded_fn)(char *, const char *const *, const int64_t *, int64_t,
                             int64_t, int64_t, int, int, const char *);

/* The converting copy from type code `s` to `d` (NumPy's one-letter codes), or NULL
 * when there is none (the caller then converts through torch). */
static int fc_convert_index(char s, char d)
{
    int k = 0;
#define FC_IDX(C, S) if (s == C) return d == 'q' ? k : (d == 'i' ? k + 1 : -1); k += 2;
    FC_INTS(FC_IDX)
#undef FC_IDX
    if (s == 'f' && d == 'd') return 16;
    if (s == 'd' && d == 'f') return 17;
    return -1;
}

#define FC_PACKED_PTRS(C, S) fc_##S##_to_i64_packed, fc_##S##_to_i32_packed,
#define FC_PADDED_PTRS(C, S) fc_##S##_to_i64_padded, fc_##S##_to_i32_padded,
static const fc_packed_fn fc_packed_fns[18] = {FC_INTS(FC_PACKED_PTRS) fc_f32_to_f64_packed,
                                               fc_f64_to_f32_packed};
static const fc_padded_fn fc_padded_fns[18] = {FC_INTS(FC_PADDED_PTRS) fc_f32_to_f64_padded,
                                               fc_f64_to_f32_padded};
#undef FC_PACKED_PTRS
#undef FC_PADDED_PTRS

static int fc_can_convert(char s, char d) { return fc_convert_index(s, d) >= 0; }

static int fc_convert_packed(char s, char d, char *out, const char *const *srcs,
                             const int64_t *lens, const int64_t *offsets, int64_t B,
                             int64_t row)
{
    int k = fc_convert_index(s, d);
    if (k < 0) return -1;
    fc_packed_fns[k](out, srcs, lens, offsets, B, row);
    return 0;
}

static int fc_convert_padded(char s, char d, char *out, const char *const *srcs,
                             const int64_t *lens, int64_t B, int64_t T, int64_t row,
                             int batch_first, int left, const char *pad)
{
    int k = fc_convert_index(s, d);
    if (k < 0) return -1;
    fc_padded_fns[k](out, srcs, lens, B, T, row, batch_first, left, pad);
    return 0;
}
#endif
