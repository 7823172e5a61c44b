// Teacher-vs-student agreement on a text: mean KL(p_teacher ‖ p_student) per token, top-1
// agreement, both perplexities, and the same split by position in the window so long-range
// loss is visible; several students against one teacher run in one pass. Documents and
// windows as in eval/ppl.h (windows up to the model's context: logits are streamed by chunks).
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

// Teacher against n_students students in one pass: out[i] for students[i]. Each window runs
// through every model in chunks of `chunk` rows (each model's KV cache carries the window from
// chunk to chunk); the teacher's logits of a chunk are computed once and compared with each
// student's in turn, so at most two (chunk, V) logit blocks exist at a time, whatever ctx is.
// chunk <= 0: AE_KL_CHUNK. Buckets: 0-127, 128-511, 512-1023, then doubling (1024-2047, ...),
// the last one cut at ctx.
#define AE_KL_CHUNK 512
#define AE_KL_MAX_STUDENTS 16
ae_status ae_kl_text(const ae_model *teacher, const ae_model *const *students, int n_students,
                     const ae_tokenizer *tok, const char *text, size_t len, int ctx, int chunk,
                     int progress, ae_kl_result *out);

#endif
