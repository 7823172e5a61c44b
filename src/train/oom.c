// Out of memory in a training step: the probe of what fits and the message (train/oom.h).
#include "train/oom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/mem_limit.h"
#include "core/mem.h"

int ae_oom_divisor_at_most(int64_t n, int64_t m) {
    for (int64_t d = m < n ? m : n; d > 1; d--)
        if (n % d == 0) return (int)d;
    return 1;
}

// One probe on the first rows x T tokens of ids (rows of `stride` tokens); the gradients are
// zeroed afterwards. 1: it ran, 0: out of memory, -1: another failure (message set).
static int probe(ae_run *r, ae_oom_micro_fn micro, const int32_t *ids, int stride, int rows, int T) {
    int32_t *sub = NULL; // (rows, T) when the rows are cut shorter than stride
    const int32_t *x = ids;
    if (T != stride) {
        sub = ae_malloc(sizeof(int32_t) * (size_t)rows * T);
        if (!sub) return -1;
        for (int b = 0; b < rows; b++) memcpy(sub + (size_t)b * T, ids + (size_t)b * stride, sizeof(int32_t) * T);
        x = sub;
    }
    ae_status st = micro(r, x, rows, T);
    ae_run_zero_grads(r);
    free(sub);
    return st == AE_OK ? 1 : st == AE_ERR_NOMEM ? 0 : -1;
}

// The largest b (dividing accum x B, below B) for which b x T runs; 0 when none, -1 when a probe
// failed otherwise.
static int probe_batch(ae_run *r, ae_oom_micro_fn micro, const int32_t *ids, int B, int T) {
    int64_t per_step = (int64_t)B * r->o->accum;
    if (B < 2) return 0;
    for (int b = ae_oom_divisor_at_most(per_step, B / 2);; b = ae_oom_divisor_at_most(per_step, b / 2)) {
        int ran = probe(r, micro, ids, T, b, T);
        if (ran) return ran > 0 ? b : -1;
        if (b == 1) return 0;
    }
}

// The largest power-of-two context below T (at least 2) that one sequence runs with; 0 when
// none, -1 when a probe failed otherwise.
static int probe_ctx(ae_run *r, ae_oom_micro_fn micro, const int32_t *ids, int T) {
    int c = 1;
    while (c * 2 < T) c *= 2;
    for (; c >= 2; c /= 2) {
        int ran = probe(r, micro, ids, T, 1, c);
        if (ran) return ran > 0 ? c : -1;
    }
    return 0;
}

ae_status ae_oom_stop(ae_run *r, ae_oom_micro_fn micro, const int32_t *ids, int B, int T) {
    const ae_distill_opts *o = r->o;
    char failed[400], kept[160], way[700];
    const char *alloc = ae_mem_last_refusal();
    if (alloc[0] && !strstr(ae_last_error(), alloc))
        snprintf(failed, sizeof failed, "%.150s: %.240s", ae_last_error(), alloc);
    else
        snprintf(failed, sizeof failed, "%.390s", ae_last_error());
    ae_mem_clear_refusal();
    ae_run_zero_grads(r); // the failed step's partial sums
    int resumable = r->ckpt_stage >= 0;
    if (resumable)
        snprintf(kept, sizeof kept, "the last checkpoint (stage %d, step %lld) is kept",
                 r->ckpt_stage + 1, (long long)r->ckpt_step);
    else
        snprintf(kept, sizeof kept, "no checkpoint had been written yet");
    int b = probe_batch(r, micro, ids, B, T);
    int64_t per_step = (int64_t)B * o->accum;
    if (b > 0) {
        snprintf(way, sizeof way, "%d sequence%s x %d tokens fit. Continue with the same %lld "
                 "sequences per step (the same data and the same math, though not bit-identical to "
                 "an uninterrupted run: the sums are grouped differently): attnedit convert %s "
                 "%.200s --batch %d --accum %lld", b, b == 1 ? "" : "s", T, (long long)per_step,
                 resumable ? "--resume" : "--restart", r->out_dir, b, (long long)(per_step / b));
    } else if (b == 0) {
        int c = probe_ctx(r, micro, ids, T);
        char ran[80] = "";
        if (c > 0) snprintf(ran, sizeof ran, " (one sequence of %d tokens ran)", c);
        else if (c < 0) snprintf(ran, sizeof ran, " (probing shorter contexts failed)");
        snprintf(way, sizeof way, "not even one sequence of %d tokens fits: the context does not fit "
                 "in this memory. A new run needs a smaller --ctx%s or a device with more memory", T,
                 ran);
    } else {
        snprintf(way, sizeof way, "probing smaller micro-batches failed: %.300s", ae_last_error());
    }
    const char *acts = r->stage == 1 && o->s2_keep_attn
                           ? " Without --stage2-acts keep (the attention activations of every layer "
                             "held from the forward to the backward) stage 2 needs less memory."
                           : "";
    return ae_errorf(AE_ERR_NOMEM, "out of memory at stage %d, step %lld of %lld: a micro-batch of "
                     "%d sequence%s x %d tokens does not fit. Training stopped: %s and "
                     "model.safetensors was not rewritten. Tried on the same sequences without "
                     "updating anything: %s.%s (The failure: %s)", r->stage + 1, (long long)r->step + 1,
                     (long long)ae_distill_stage_steps(o, r->stage), B, B == 1 ? "" : "s", T, kept, way,
                     acts, failed);
}
