/* The flattened layout's copies reuse the padded layout's bulk copy (_copy.h); the
 * store fence after non-temporal stores exists on x86-64 only. */
#ifndef FASTCOLLATE_FLAT_H
#define FASTCOLLATE_FLAT_H
#include "_copy.h"

static inline void fc_flat_fence(int stream)
{
#ifdef FC_HAVE_STREAM
    if (stream) _mm_sfence();
#endif
    (void)stream;
}
#endif
