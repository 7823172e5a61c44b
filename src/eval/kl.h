// Teacher-vs-student agreement on a text: mean KL(p_teacher ‖ p_student) per token, top-1
// agreement, both perplexities, and the same split by position in the window so long-range
// loss is visible. Documents and windows as in eval/ppl.h.
#ifndef AE_EVAL_KL_H
#define AE_EVAL_KL_H

#include <stdint.h>

#include "model/model.h"
#include "tok/tokenizer.h"

#define AE_KL_MAX_BUCKETS 16

typedef struct {
    int64_t tokens, top1;
    double kl, nll_t, nll_s; // sums
} ae_kl_acc;

typedef struct {
    ae_kl_acc all;
    int n_buckets;
    int bucket_lo[AE_KL_MAX_BUCKETS], bucket_hi[AE_KL_MAX_BUCKETS]; // [lo, hi) positions
    ae_kl_acc bucket[AE_KL_MAX_BUCKETS];
} ae_kl_result;

// Buckets: 0-127, 128-511, 512-1023, then doubling (1024-2047, ...) up to ctx.
ae_status ae_kl_text(const ae_model *teacher, const ae_model *student, const ae_tokenizer *tok,
                     const char *text, size_t len, int ctx, int progress, ae_kl_result *out);

#endif
