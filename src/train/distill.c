// The distillation loop: stage 1 (teacher forcing of every replaced attention module) and
// stage 2 (KL + cosine feature matching on the whole student), with gradient accumulation,
// AdamW, checkpoints, progress and metrics.jsonl.
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/file.h"
#include "core/killpoint.h"
#include "core/log.h"
#include "core/mem.h"
#include "plot/plot.h"
#include "train/distill_internal.h"
#include "train/distill_dp.h"
#include "model/layer_attn.h"
#include "train/run_spec.h"
#include "train/loss.h"
#include "train/moe_train.h"
#include "train/oom.h"
#include "backend/mem_limit.h"
#include "dist/comm.h"

#define KD_VOCAB_CHUNK 4096

// Tokens per optimizer step, or 0 when a factor is < 1 or the product exceeds
// AE_RUN_MAX_STEP_TOKENS (each factor is an int, so the product is formed in double first).
static int64_t step_tokens(const ae_distill_opts *o) {
    double per = (double)o->ctx * o->batch * o->accum;
    return o->ctx < 1 || o->batch < 1 || o->accum < 1 || per > (double)AE_RUN_MAX_STEP_TOKENS
               ? 0 : (int64_t)per;
}

int64_t ae_distill_stage_steps(const ae_distill_opts *o, int s) {
    int64_t per = step_tokens(o);
    if (s < 0 || s > 1 || per <= 0 || o->stage_tokens[s] <= 0) return 0;
    return (o->stage_tokens[s] + per - 1) / per;
}

// The options every step relies on (a zero batch would divide by zero).
static ae_status check_opts(const ae_distill_opts *o) {
    if (o->ctx < 2 || o->batch < 1 || o->accum < 1 || !step_tokens(o))
        return ae_errorf(AE_ERR_ARG, "distillation options: ctx %d, batch %d, accum %d; need ctx >= 2, "
                         "batch >= 1, accum >= 1 and ctx x batch x accum <= 2^40 tokens per step",
                         o->ctx, o->batch, o->accum);
    if (o->stage_tokens[0] < 0 || o->stage_tokens[1] < 0)
        return ae_errorf(AE_ERR_ARG, "distillation options: negative token budget (%lld, %lld)",
                         (long long)o->stage_tokens[0], (long long)o->stage_tokens[1]);
    return AE_OK;
}

static int has_moe(const ae_model *m) {
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (m->layers[l].is_moe) return 1;
    return 0;
}

ae_status ae_distill_check_backend(const ae_backend *be, const ae_distill_opts *o) {
    if (o->grad_bf16 && be->weight_dtype != AE_DT_BF16)
        return ae_errorf(AE_ERR_UNSUPPORTED, "--grad-dtype bf16 needs a backend with bf16 weights "
                         "(cuda): the %s backend's parameters are %s, so their gradients are too "
                         "(use --grad-dtype fp32 there)", be->name, ae_dtype_name(be->weight_dtype));
    return AE_OK;
}

// Both stages run on every backend with training ops (MoE layers included: moe_train.c).
static ae_status check_backend(const ae_model *t, const ae_model *s, const ae_distill_opts *o) {
    const ae_backend *be = s->be;
    AE_TRY(ae_distill_check_backend(be, o));
    if (!be->mse_rows || !be->adamw || !be->attention_bwd)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no training ops", be->name);
    if (o->stage_tokens[1] <= 0) return AE_OK;
    if (!be->embed_bwd || !be->rmsnorm_bwd || !be->softmax_stats || !be->kd_chunk || !be->cosine_rows)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend lacks the training ops of stage 2 "
                         "(--stage2-tokens %lld)", be->name, (long long)o->stage_tokens[1]);
    if ((has_moe(t) || has_moe(s)) && (!be->moe_plan || !be->moe_combine_bwd || !be->moe_route_bwd))
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend lacks the MoE training ops that stage 2 "
                         "(--stage2-tokens %lld) of a mixture-of-experts model needs", be->name,
                         (long long)o->stage_tokens[1]);
    return AE_OK;
}

static int layer_of(const char *name) {
    int l;
    return sscanf(name, "model.layers.%d.", &l) == 1 ? l : -1;
}

// ---------------------------------------------------------------- non-finite values
// A loss, gradient or update that is Inf or NaN stops the run before anything is logged or
// saved: the checkpoint on disk stays the last good one and no final model is written.

int64_t ae_f32_first_nonfinite(const float *x, int64_t n) {
    int64_t first = INT64_MAX;
#pragma omp parallel for reduction(min : first) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++)
        if (i < first && !isfinite(x[i])) first = i;
    return first == INT64_MAX ? -1 : first;
}

static int nonfinite(const float *x, size_t n) { return ae_f32_first_nonfinite(x, (int64_t)n) >= 0; }

// 1 when x (n float values in backend memory) holds Inf or NaN (its sum of squares, kept in
// double, is not finite).
static int dev_nonfinite(const ae_backend *be, ae_ptr x, size_t n) {
    if (be->host_memory && x.dtype == AE_DT_F32) return nonfinite(ae_f32(x), n);
    ae_ptr out = be->alloc(be, 1, AE_DT_F64);
    double v = 0.0;
    if (ae_ptr_is_null(out)) return 0;
    be->sumsq(be, out, x, n);
    int bad = be->download(be, &v, AE_DT_F64, out, 1) != AE_OK || !isfinite(v);
    be->free(be, out);
    return bad;
}

// A loss for messages: NaN, Inf, -Inf or %g.
static const char *fmt_loss(double v, char buf[32]) {
    if (isnan(v)) return "NaN";
    if (isinf(v)) return v > 0 ? "Inf" : "-Inf";
    snprintf(buf, 32, "%g", v);
    return buf;
}

// " (layer l)" for a parameter of layer l, else "".
static const char *fmt_layer(const char *name, char buf[32]) {
    int l;
    if (sscanf(name, "model.layers.%d.", &l) != 1) return "";
    snprintf(buf, 32, " (layer %d)", l);
    return buf;
}

// The message of a run stopped on a non-finite value at the current step: the cause (naming
// the layer), what is kept and what to change. teacher: the teacher itself overflowed.
__attribute__((format(printf, 3, 4)))
static ae_status diverged(const ae_run *r, int teacher, const char *fmt, ...) {
    char cause[400], kept[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof cause, fmt, ap);
    va_end(ap);
    if (r->ckpt_stage >= 0)
        snprintf(kept, sizeof kept, "the last good checkpoint (stage %d, step %lld) is kept",
                 r->ckpt_stage + 1, (long long)r->ckpt_step);
    else
        snprintf(kept, sizeof kept, "no checkpoint had been written yet");
    char advice[200];
    if (teacher)
        snprintf(advice, sizeof advice, "the teacher's own activations overflow on this batch: "
                 "check the teacher's weights");
    else
        snprintf(advice, sizeof advice, "resuming would repeat the same steps: start the run again "
                 "with a lower --stage%d-lr (this run: %g), a smaller --clip (%g) or less "
                 "--weight-decay (%g)", r->stage + 1, r->o->lr[r->stage], r->o->clip, r->o->weight_decay);
    return ae_errorf(AE_ERR_NONFINITE, "non-finite value in training at stage %d, step %lld of %lld: "
                     "%s. Training stopped: %s in %.200s and model.safetensors was not rewritten; %s",
                     r->stage + 1, (long long)r->step + 1,
                     (long long)ae_distill_stage_steps(r->o, r->stage), cause, kept, r->out_dir, advice);
}

// Stage 1, layer l: the loss of one term is not finite. The teacher's input x and target a,
// or the student's output y, hold Inf/NaN.   x, a, y: (N·D) float in backend memory
static ae_status stage1_nonfinite(const ae_run *r, int l, const char *term, double loss, ae_ptr x,
                                  ae_ptr a, ae_ptr y, size_t nd) {
    const ae_backend *be = r->s->be;
    char b[32];
    int bad_x = dev_nonfinite(be, x, nd);
    if (bad_x || dev_nonfinite(be, a, nd))
        return diverged(r, 1, "the teacher's attention %s of layer %d holds Inf or NaN",
                        bad_x ? "input" : "output", l);
    return diverged(r, 0, "the %s loss of layer %d (model.layers.%d.self_attn) is %s%s", term, l, l,
                    fmt_loss(loss, b),
                    dev_nonfinite(be, y, nd) ? ": the student's attention output holds Inf or NaN" : "");
}

// The first of the teacher's streams h_0..h_L holding Inf/NaN, L + 1 for its final norm output,
// -1 for none. A teacher forward that kept no stream (ta) is run again keeping them.
static int teacher_first_bad(const ae_run *r, const int32_t *ids, int B, int T,
                             const ae_train_acts *ta) {
    const ae_backend *be = r->t->be;
    int L = r->t->cfg.num_hidden_layers, bad = -1;
    size_t nd = (size_t)B * T * r->t->cfg.hidden_size;
    ae_train_acts *kept = NULL;
    if (ae_ptr_is_null(ae_train_acts_hidden(ta, 0)) &&
        ae_model_train_forward(r->t, ids, B, T, AE_KEEP_F32, &kept) == AE_OK)
        ta = kept;
    for (int l = 0; l <= L && bad < 0; l++) {
        ae_ptr h = ae_train_acts_hidden(ta, l);
        if (!ae_ptr_is_null(h) && dev_nonfinite(be, h, nd)) bad = l;
    }
    if (bad < 0 && dev_nonfinite(be, ae_train_acts_final(ta), nd)) bad = L + 1;
    ae_train_acts_free(kept);
    return bad;
}

// Stage 2: the KL or cosine loss is not finite. Names the first layer after which the teacher's
// or else the student's residual stream holds Inf/NaN. ids: the micro-batch (B, T); ta, sa: its
// forwards.
static ae_status stage2_nonfinite(const ae_run *r, const int32_t *ids, int B, int T,
                                  const ae_train_acts *ta, const ae_train_acts *sa,
                                  const char *term, double loss) {
    const ae_backend *be = r->s->be;
    int L = r->s->cfg.num_hidden_layers;
    size_t nd = (size_t)B * T * r->s->cfg.hidden_size;
    char b[32];
    const char *v = fmt_loss(loss, b);
    int bad_t = teacher_first_bad(r, ids, B, T, ta);
    if (bad_t == 0)
        return diverged(r, 1, "the %s loss is %s: the teacher's embeddings hold Inf or NaN", term, v);
    if (bad_t > 0 && bad_t <= L)
        return diverged(r, 1, "the %s loss is %s: the teacher's residual stream first holds Inf or "
                        "NaN after layer %d", term, v, bad_t - 1);
    if (bad_t > L)
        return diverged(r, 1, "the %s loss is %s: the teacher's final norm output holds Inf or NaN",
                        term, v);
    for (int l = 1; l <= L; l++)
        if (dev_nonfinite(be, ae_train_acts_hidden(sa, l), nd))
            return diverged(r, 0, "the %s loss is %s: the student's residual stream first holds Inf or "
                            "NaN after layer %d (model.layers.%d)", term, v, l - 1, l - 1);
    return diverged(r, 0, "the %s loss is %s: the student's %s", term, v,
                    dev_nonfinite(be, ae_train_acts_final(sa), nd) ? "final norm output holds Inf or NaN"
                                                                    : "logits overflow (lm_head)");
}

// ae_adamw_step found a non-finite gradient (norm not finite: nothing was updated) or made a
// tensor non-finite.
static ae_status update_nonfinite(const ae_run *r, double norm, double loss) {
    if (r->opt.nonfinite < 0) // -2: on another rank's share of the tensors (sharded states)
        return diverged(r, 0, "%s on another rank (its message names the tensor; the loss, %g, is "
                        "finite)", isfinite(norm) ? "the update made a tensor or its AdamW second "
                        "moment hold Inf or NaN" : "a gradient holds Inf or NaN", loss);
    const char *name = r->sp[r->trainable[r->opt.nonfinite]].name;
    char b[32];
    if (!isfinite(norm))
        return diverged(r, 0, "the gradient of %s%s holds Inf or NaN (the loss, %g, is finite)", name,
                        fmt_layer(name, b), loss);
    return diverged(r, 0, "the update (gradient norm %g before clipping) made %s%s or its AdamW "
                    "second moment hold Inf or NaN", norm, name, fmt_layer(name, b));
}

// Stage 1 trains the replaced attention modules; stage 2 those too, or everything.
static int is_trainable(const ae_run *r, int stage, const ae_named_param *p) {
    int l = layer_of(p->name);
    int replaced = l >= 0 && p->is_attention && r->s->layers[l].kind != AE_ATTN_GQA;
    if (stage == 0) return replaced;
    return r->o->train_all ? 1 : replaced;
}

int ae_run_param_saved(const ae_run *r, int i) { return is_trainable(r, 1, &r->sp[i]); }

// The F32 copy AdamW updates for parameter i: none when the tensor is F32 itself (cpu; sinks),
// else made once from the tensor (cuda: bf16 weights) and kept for the rest of the run, so a
// tensor trained in both stages keeps its fp32 value across the stage boundary.
static ae_status ensure_master(ae_run *r, int i) {
    const ae_named_param *p = &r->sp[i];
    const ae_backend *be = r->s->be;
    if (p->t.dtype == AE_DT_F32 || !ae_ptr_is_null(r->master[i])) return AE_OK;
    r->master[i] = be->alloc(be, (size_t)p->numel, AE_DT_F32);
    if (ae_ptr_is_null(r->master[i]))
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the fp32 master copy of %s (%.1f MiB)",
                         be->name, p->name, 4.0 * (double)p->numel / 1048576.0);
    ae_copy(be, r->master[i], p->t, (size_t)p->numel);
    return AE_OK;
}

int ae_run_has_master(const ae_run *r, int i) {
    return r->sp[i].t.dtype != AE_DT_F32 && is_trainable(r, r->stage < 1 ? r->stage : 1, &r->sp[i]);
}

void ae_run_zero_grads(ae_run *r) {
    const ae_backend *be = r->s->be;
    for (int j = 0; j < r->nstage; j++) {
        const ae_named_param *g = &r->gp[r->stage_params[j]];
        be->fill(be, g->t, (size_t)g->numel, 0.0f);
    }
}

ae_status ae_run_setup_stage(ae_run *r) {
    ae_adamw_free(&r->opt);
    r->ntrain = r->nstage = 0;
    if (r->stage >= 2) return AE_OK; // done: nothing trains
    ae_opt_param *ps = ae_calloc((size_t)r->np, sizeof *ps);
    if (!ps) return AE_ERR_NOMEM;
    ae_status st = AE_OK;
    int rank = ae_comm_rank(r->o->comm);
    for (int i = 0; i < r->np && st == AE_OK; i++) {
        if (!is_trainable(r, r->stage, &r->sp[i])) continue;
        r->stage_params[r->nstage++] = i;
        if (r->sharded && r->owner[i] != rank) continue; // another rank's share
        if ((st = ensure_master(r, i)) == AE_OK) {
            r->trainable[r->ntrain] = i;
            ps[r->ntrain++] = (ae_opt_param){.param = r->sp[i].t, .master = r->master[i],
                                             .grad = r->gp[i].t, .numel = r->sp[i].numel,
                                             .decay = r->sp[i].decay};
        }
    }
    const ae_distill_opts *o = r->o;
    int64_t steps = ae_distill_stage_steps(o, r->stage);
    ae_adamw_cfg c = {.lr = o->lr[r->stage], .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                      .weight_decay = o->weight_decay, .warmup = (int64_t)(o->warmup_frac * steps),
                      .total = steps, .min_lr_ratio = o->min_lr_ratio, .clip = o->clip,
                      .state8 = o->optim_8bit};
    if (st == AE_OK) st = ae_adamw_init(&r->opt, r->s->be, &c, ps, r->ntrain);
    if (st == AE_OK) ae_dp_optimizer_hooks(r);
    free(ps);
    return st;
}

// ---------------------------------------------------------------- stage 1
// Stage 1 streams layer by layer through backend memory: the teacher's residual stream enters
// layer l, the teacher's attention makes the target, every replaced module trains on the
// teacher's normalised input, then the teacher's layer completes the stream for layer l + 1.
// Nothing of layer l is kept once layer l + 1 starts.

// The FFN of a teacher layer with what its backward needs, through the op interface (any
// backend).
typedef struct {
    ae_scratch mem;
    ae_ptr g, u, act, scratch; // (N, I) x 3 and 3·(N, I) act: dense layers
    ae_moe_acts moe;           // MoE layers
} ffn_acts;

static ae_status ffn_train_forward(const ae_model *t, const ae_layer *L, ae_ptr z, int N, ae_ptr o,
                                   ffn_acts *fa) {
    const ae_backend *be = t->be;
    memset(fa, 0, sizeof *fa);
    ae_scratch_init(&fa->mem, be);
    if (L->is_moe) return ae_moe_train_forward(t, L, z, N, o, &fa->moe);
    size_t ni = (size_t)N * t->cfg.intermediate_size;
    fa->g = ae_scratch_alloc(&fa->mem, ni, be->act_dtype);
    fa->u = ae_scratch_alloc(&fa->mem, ni, be->act_dtype);
    fa->act = ae_scratch_alloc(&fa->mem, ni, be->act_dtype);
    fa->scratch = ae_scratch_alloc(&fa->mem, 3 * ni, be->act_dtype);
    if (fa->mem.failed) return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the block-output term "
                                         "of %d tokens", be->name, N);
    ae_mlp_train_forward(t, L, z, N, o, fa->g, fa->u, fa->act);
    return AE_OK;
}

// dz = ∂/∂z of the FFN (overwritten) from dout.
static ae_status ffn_train_backward(const ae_model *t, const ae_layer *L, ffn_acts *fa, ae_ptr z,
                                    ae_ptr dout, int N, ae_ptr dz) {
    const ae_backend *be = t->be;
    be->fill(be, dz, (size_t)N * t->cfg.hidden_size, 0.0f);
    if (L->is_moe) return ae_moe_train_backward(t, L, &fa->moe, z, dout, dz, NULL);
    ae_mlp_train_backward(t, L, z, fa->g, fa->u, fa->act, dout, N, dz, NULL, fa->scratch);
    return AE_OK;
}

static void ffn_acts_free(ffn_acts *fa) {
    ae_moe_acts_free(&fa->moe);
    ae_scratch_free(&fa->mem);
}

// Block-output term of layer l: the student's attention output y, added to the teacher's
// residual h (entering layer l) and passed through the frozen teacher post-attention norm and
// MLP/MoE, against the teacher's block output `target` (h_{l+1}). Adds w · ∂loss/∂y to dy;
// *loss = the mean over rows.   h, target: (N, D) F32;  y, dy: (N, D) act
ae_status ae_distill_block_term(const ae_model *t, int l, ae_ptr h, ae_ptr target, ae_ptr y, int N,
                                int normalized, float w, ae_ptr dy, double *loss) {
    const ae_layer *L = &t->layers[l];
    const ae_backend *be = t->be;
    int D = t->cfg.hidden_size;
    float eps = (float)t->cfg.rms_norm_eps;
    size_t nd = (size_t)N * D;
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr u = ae_scratch_alloc(&s, nd, AE_DT_F32);  // (N, D) h + y
    ae_ptr z = ae_scratch_alloc(&s, nd, at);          // (N, D) RMSNorm(u; post_attention_layernorm)
    ae_ptr o = ae_scratch_alloc(&s, nd, at);          // (N, D) FFN(z)
    ae_ptr out = ae_scratch_alloc(&s, nd, AE_DT_F32); // (N, D) u + FFN(z): the block output
    ae_ptr dout = ae_scratch_alloc(&s, nd, at);       // (N, D)
    ae_ptr dz = ae_scratch_alloc(&s, nd, at);         // (N, D)
    ae_ptr rows = ae_scratch_alloc(&s, (size_t)N, AE_DT_F64);
    double *hrows = ae_malloc(sizeof(double) * (size_t)N);
    if (s.failed || !hrows) {
        ae_scratch_free(&s);
        free(hrows);
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the block-output term", be->name);
    }
    ffn_acts fa;
    be->add(be, u, h, y, nd);
    be->rmsnorm(be, z, u, L->post_norm, N, D, D, eps);
    ae_status st = ffn_train_forward(t, L, z, N, o, &fa);
    if (st == AE_OK) {
        be->add(be, out, u, o, nd);
        be->mse_rows(be, rows, dout, out, target, N, D, normalized, w / (float)N);
        st = ffn_train_backward(t, L, &fa, z, dout, N, dz);
    }
    if (st == AE_OK) { // the residual path and the FFN path both reach y through u
        be->add(be, dy, dy, dout, nd);
        be->rmsnorm_bwd(be, dy, ae_ptr_null(), dz, u, L->post_norm, N, D, eps);
        st = be->download(be, hrows, AE_DT_F64, rows, (size_t)N);
    }
    if (st == AE_OK) {
        double sum = 0.0;
        for (int i = 0; i < N; i++) sum += hrows[i];
        *loss = sum / N;
    }
    ffn_acts_free(&fa);
    ae_scratch_free(&s);
    free(hrows);
    return st;
}

// The optional block-output term; its weighted loss joins the layer's logged loss.
static ae_status add_block_term(const ae_run *r, int l, ae_ptr h, ae_ptr target, ae_ptr y, int N,
                                ae_ptr dy, double *layer_loss) {
    if (r->o->s1_block <= 0.0f) return AE_OK;
    double bl = 0.0;
    AE_TRY(ae_distill_block_term(r->t, l, h, target, y, N, r->o->s1_normalized,
                                 r->o->s1_block / (float)r->o->accum, dy, &bl));
    if (!isfinite(bl)) {
        size_t nd = (size_t)N * r->s->cfg.hidden_size;
        const ae_backend *be = r->s->be;
        if (dev_nonfinite(be, h, nd) || dev_nonfinite(be, target, nd))
            return diverged(r, 1, "the teacher's residual stream around layer %d holds Inf or NaN", l);
        char b[32];
        return diverged(r, 0, "the block-output loss (--stage1-block) of layer %d (model.layers.%d) "
                        "is %s", l, l, fmt_loss(bl, b));
    }
    layer_loss[l] += r->o->s1_block * bl;
    return AE_OK;
}

// The buffers of one stage-1 micro-batch of N = B·T tokens, in backend memory. The teacher runs
// A layers ahead of the student on its own queue (stage1_micro): what the student's module l
// reads while the teacher's layers up to l + A run is kept in slots by layer. The teacher's
// buffers are its queue's (allocated and freed there), the student's the student's.
typedef struct {
    ae_scratch tmem; // the teacher's:
    ae_ptr ids;      // (N) I32
    // with A = the layers the teacher runs ahead (ae_s1_lanes.ahead), slots of layer l:
    ae_ptr h[AE_S1_AHEAD_MAX + 2];  // (N, D) F32  its residual stream entering layer l:
                                    //             h[l % (A + 2)]
    ae_ptr xn[AE_S1_AHEAD_MAX + 1]; // (N, D) act  RMSNorm(h; input_layernorm) of layer l, every
                                    //             module's input: xn[l % (A + 1)]
    ae_ptr yt[AE_S1_AHEAD_MAX + 1]; // (N, D) act  its attention output of layer l: yt[l % (A + 1)]
    ae_ptr z;        // (N, D) act  the post-attention norm of its stream
    ae_ptr f;        // (N, D) act  a MoE layer's FFN output before its add (null for dense
                     //             teachers: their down projections add into the stream)
    ae_ptr g, u;     // (N, I) act  its dense FFN scratch
    ae_scratch smem; // the student's:
    ae_ptr ys, dy;   // (N, D) act  the student's attention output, ∂loss/∂ys
    ae_ptr rows;     // (N) F64     per-token losses (F64: a diverging loss stays finite as long
                     //             as the double does, as the gradients are checked first)
    double *hrows;   // (N) host copy of rows
} s1_bufs;

// tb: the teacher's queue, be: the student's; A: the layers the teacher runs ahead.
static ae_status s1_bufs_init(s1_bufs *w, const ae_backend *tb, const ae_backend *be, int A,
                              const ae_config *c, const int32_t *ids, int N) {
    size_t D = c->hidden_size, I = c->intermediate_size, nd = (size_t)N * D;
    ae_dtype at = be->act_dtype;
    ae_scratch *s = &w->tmem;
    ae_scratch_init(s, tb);
    w->ids = ae_scratch_alloc(s, (size_t)N, AE_DT_I32);
    for (int i = 0; i < A + 2; i++) w->h[i] = ae_scratch_alloc(s, nd, AE_DT_F32);
    for (int i = 0; i < A + 1; i++) {
        w->xn[i] = ae_scratch_alloc(s, nd, at);
        w->yt[i] = ae_scratch_alloc(s, nd, at);
    }
    w->z = ae_scratch_alloc(s, nd, at);
    w->f = c->num_experts > 0 ? ae_scratch_alloc(s, nd, at) : ae_ptr_null();
    w->g = ae_scratch_alloc(s, (size_t)N * (I ? I : 1), at);
    w->u = ae_scratch_alloc(s, (size_t)N * (I ? I : 1), at);
    ae_scratch_init(&w->smem, be);
    w->ys = ae_scratch_alloc(&w->smem, nd, at);
    w->dy = ae_scratch_alloc(&w->smem, nd, at);
    w->rows = ae_scratch_alloc(&w->smem, (size_t)N, AE_DT_F64);
    w->hrows = ae_malloc(sizeof(double) * (size_t)N);
    if (!s->failed && !w->smem.failed && w->hrows &&
        tb->upload(tb, w->ids, ids, AE_DT_I32, (size_t)N) == AE_OK)
        return AE_OK;
    ae_scratch_free(s);
    ae_scratch_free(&w->smem);
    free(w->hrows);
    return ae_errorf(AE_ERR_NOMEM, "out of %s memory for a stage-1 micro-batch of %d tokens", be->name, N);
}

static void s1_bufs_free(s1_bufs *w) {
    ae_scratch_free(&w->tmem);
    ae_scratch_free(&w->smem);
    free(w->hrows);
}

static void s1_lanes_close(ae_run *r);

// Opens stage 1's teacher queue on first use (ae_s1_lanes); on failure nothing stays open. A
// second stream that cannot be had (its workspace: out of memory) leaves one queue, with a note.
static ae_status s1_lanes_open(ae_run *r) {
    ae_s1_lanes *ln = &r->lanes;
    if (ln->be) return AE_OK;
    const ae_backend *be = r->s->be;
    ae_status st = ae_event_new(be, &ln->end);
    for (int i = 0; st == AE_OK && i <= AE_S1_AHEAD_MAX; i++) {
        st = ae_event_new(be, &ln->tdone[i]);
        if (st == AE_OK) st = ae_event_new(be, &ln->sdone[i]);
    }
    ln->be = be;
    if (st == AE_OK && ae_env_int("AE_STAGE1_OVERLAP", 1, 0, 1) &&
        ae_sibling_open(be, &ln->be) != AE_OK) { // the same bits in one queue, only slower
        fprintf(stderr, "note: stage 1 runs the teacher and the student in one queue (no second "
                "%s stream: %s)\n", be->name, ae_last_error());
        ln->be = be;
    }
    ln->ahead = ae_env_int("AE_STAGE1_AHEAD", 2, 1, AE_S1_AHEAD_MAX);
    if (st != AE_OK) s1_lanes_close(r);
    return st;
}

// Layer l's slot of xn, yt and the events, and its stream h_l (ae_s1_lanes.ahead = A).
static int s1_slot(const ae_run *r, int l) { return l % (r->lanes.ahead + 1); }
static ae_ptr s1_h(const ae_run *r, const s1_bufs *w, int l) {
    return w->h[l % (r->lanes.ahead + 2)];
}

static void s1_next_drop(ae_run *r);

static void s1_lanes_close(ae_run *r) {
    ae_s1_lanes *ln = &r->lanes;
    if (!ln->be) return;
    s1_next_drop(r);
    const ae_backend *be = r->s->be;
    ae_event_free(be, ln->end);
    for (int i = 0; i <= AE_S1_AHEAD_MAX; i++) {
        ae_event_free(be, ln->tdone[i]);
        ae_event_free(be, ln->sdone[i]);
    }
    ae_sibling_close(be, ln->be);
    memset(ln, 0, sizeof *ln);
}

// The teacher's layer l on its own queue (tv: the teacher with the lane's backend), A layers
// ahead of the student: xn = RMSNorm(h_l), yt its attention output (activations not kept),
// h_{l+1} = h_l + yt + FFN(RMSNorm(h_l + yt)), in layer l's slots; the last layer's h_{l+1} only
// where the block term reads it. From layer A + 1 on it first waits for the student's module
// l − A − 1, the last reader of the slots it overwrites (h_{l+1} takes h_{l−A−1}'s); layers
// 0..A write this micro-batch's new buffers.
static ae_status teacher_layer(const ae_run *r, const ae_model *tv, int l, s1_bufs *w, int B,
                               int T) {
    const ae_backend *be = tv->be;
    const ae_layer *L = &tv->layers[l];
    int D = tv->cfg.hidden_size, N = B * T;
    float eps = (float)tv->cfg.rms_norm_eps;
    int k = s1_slot(r, l);
    ae_ptr h = s1_h(r, w, l), hn = s1_h(r, w, l + 1), xn = w->xn[k], yt = w->yt[k];
    if (l > r->lanes.ahead) ae_event_wait(be, r->lanes.sdone[k]);
    be->rmsnorm(be, xn, h, L->input_norm, N, D, D, eps);
    ae_status st = ae_layer_attn_forward_batch(be, L, xn, B, T, yt);
    int stream_used = l + 1 < tv->cfg.num_hidden_layers || r->o->s1_block > 0.0f;
    if (st == AE_OK && stream_used) {
        be->add_rmsnorm(be, hn, h, yt, w->z, L->post_norm, N, D, eps);
        st = ae_layer_ffn_forward_add(tv, L, hn, w->z, N, w->g, w->u, w->f);
    }
    ae_event_record(be, r->lanes.tdone[k]);
    return st;
}

// Student module l on the teacher's input: MSE toward the teacher's output (and the optional
// block term), backward into the gradient model. Adds the layer's loss to layer_loss[l].
static ae_status student_module(ae_run *r, int l, s1_bufs *w, int B, int T, double *layer_loss) {
    const ae_backend *be = r->s->be;
    ae_layer *L = &r->s->layers[l], *G = &r->g->layers[l];
    int D = r->s->cfg.hidden_size, N = B * T;
    size_t nd = (size_t)N * D;
    ae_ptr xn = w->xn[s1_slot(r, l)], yt = w->yt[s1_slot(r, l)];
    ae_layer_attn_acts a;
    ae_status st = ae_layer_attn_train_forward(be, L, xn, B, T, w->ys, &a);
    if (st == AE_OK) {
        be->mse_rows(be, w->rows, w->dy, w->ys, yt, N, D, r->o->s1_normalized,
                     1.0f / ((float)N * (float)r->o->accum));
        st = be->download(be, w->hrows, AE_DT_F64, w->rows, (size_t)N);
    }
    if (st == AE_OK) {
        double li = 0.0;
        for (int i = 0; i < N; i++) li += w->hrows[i];
        li /= N;
        if (!isfinite(li)) st = stage1_nonfinite(r, l, "attention-output", li, xn, yt, w->ys, nd);
        layer_loss[l] += li;
    }
    if (st == AE_OK)
        st = add_block_term(r, l, s1_h(r, w, l), s1_h(r, w, l + 1), w->ys, N, w->dy, layer_loss);
    if (st == AE_OK) st = ae_layer_attn_backward(be, L, &a, w->dy, ae_ptr_null(), G);
    ae_layer_attn_acts_free(&a);
    return st;
}

// The teacher's start of a micro-batch on its queue: the buffers, the embedding and its layers
// 0..A (they wait for nothing of the student's). On failure nothing is left allocated.
static ae_status teacher_start(ae_run *r, const ae_model *tv, const int32_t *ids, int B, int T,
                               s1_bufs *w) {
    int D = tv->cfg.hidden_size, N = B * T, nl = tv->cfg.num_hidden_layers;
    AE_TRY(s1_bufs_init(w, tv->be, r->s->be, r->lanes.ahead, &tv->cfg, ids, N));
    tv->be->embed(tv->be, w->h[0], tv->embed, w->ids, N, D);
    ae_status st = AE_OK;
    for (int l = 0; l <= r->lanes.ahead && l < nl && st == AE_OK; l++)
        st = teacher_layer(r, tv, l, w, B, T);
    if (st != AE_OK) s1_bufs_free(w); // only the teacher's queue has used them
    return st;
}

// The teacher with its ops queued on stage 1's teacher queue (r->lanes.be, open).
static ae_model teacher_view(const ae_run *r) {
    ae_model tv = *r->t;
    tv.be = r->lanes.be;
    return tv;
}

// A micro-batch whose teacher start was queued ahead (stage1_prefetch): its ids and buffers.
struct ae_s1_next {
    int32_t *ids; // (B, T) host
    int B, T;
    s1_bufs w;
};

// Frees a queued teacher start nobody took (its buffers on the teacher's queue, after its work).
static void s1_next_drop(ae_run *r) {
    struct ae_s1_next *n = r->lanes.next;
    if (!n) return;
    s1_bufs_free(&n->w);
    free(n->ids);
    free(n);
    r->lanes.next = NULL;
}

// Queues the teacher's start of the micro-batch ids (B, T) before the step's optimizer runs on
// the student's queue (the teacher reads none of what it changes): stage1_micro takes it when
// called with the same ids. A start that cannot be queued is left to stage1_micro.
static void stage1_prefetch(ae_run *r, const int32_t *ids, int B, int T) {
    s1_next_drop(r);
    struct ae_s1_next *n = ae_calloc(1, sizeof *n);
    size_t bytes = sizeof(int32_t) * (size_t)B * T;
    int ok = n && (n->ids = ae_malloc(bytes)) && s1_lanes_open(r) == AE_OK;
    if (ok) {
        ae_model tv = teacher_view(r);
        ok = teacher_start(r, &tv, ids, B, T, &n->w) == AE_OK;
    }
    if (!ok) { // stage1_micro will run the start, and say why if it fails again
        if (n) free(n->ids);
        free(n);
        return;
    }
    memcpy(n->ids, ids, bytes);
    n->B = B, n->T = T;
    r->lanes.next = n;
}

// The queued teacher start of the micro-batch ids (B, T) into w: 1 when there was one (taken),
// 0 when not (another queued start is dropped).
static int s1_next_take(ae_run *r, const int32_t *ids, int B, int T, s1_bufs *w) {
    struct ae_s1_next *n = r->lanes.next;
    if (!n || n->B != B || n->T != T || memcmp(n->ids, ids, sizeof(int32_t) * (size_t)B * T)) {
        s1_next_drop(r);
        return 0;
    }
    *w = n->w;
    free(n->ids);
    free(n);
    r->lanes.next = NULL;
    return 1;
}

// One micro-batch, layer by layer: the teacher's stream on its own queue, A layers ahead
// (ae_s1_lanes.ahead), and every replaced module's step on the student's, so that the teacher's
// next layers run while the student's module l trains. The teacher's queue does not wait for
// the student's before layer A + 1, so a micro-batch's first teacher layers also run during the
// previous step's optimizer (stage1_prefetch). In one queue (the cpu) the same order runs
// serially.
static ae_status stage1_micro(ae_run *r, const int32_t *ids, int B, int T, double *layer_loss) {
    const ae_backend *be = r->s->be;
    s1_bufs w;
    int queued = s1_next_take(r, ids, B, T, &w);
    AE_TRY(s1_lanes_open(r));
    ae_s1_lanes *ln = &r->lanes;
    ae_model tv = teacher_view(r);
    if (!queued) AE_TRY(teacher_start(r, &tv, ids, B, T, &w));
    ae_status st = AE_OK;
    int nl = tv.cfg.num_hidden_layers;
    for (int l = 0; st == AE_OK && l < nl; l++) {
        if (l >= 1 && l + ln->ahead < nl) st = teacher_layer(r, &tv, l + ln->ahead, &w, B, T);
        ae_event_wait(be, ln->tdone[s1_slot(r, l)]);
        if (st == AE_OK && r->s->layers[l].kind != AE_ATTN_GQA)
            st = student_module(r, l, &w, B, T, layer_loss);
        ae_event_record(be, ln->sdone[s1_slot(r, l)]);
        if (st == AE_OK) st = ae_dp_layer_done(r, l); // its gradients' sum over the ranks starts
    }
    // the teacher's buffers are freed on its queue once the student's has read them
    ae_event_record(be, ln->end);
    ae_event_wait(tv.be, ln->end);
    ae_status ts = ae_backend_status(tv.be); // the teacher queue's own errors, without waiting
    if (st == AE_OK) st = ts;
    s1_bufs_free(&w);
    return st;
}

// ---------------------------------------------------------------- stage 2
// Stage 2 through backend memory: the teacher's forward keeps its final normalised hidden (and,
// for the cosine term, its residual stream after each layer); the student's forward keeps its
// residual stream entering each layer; the KD loss runs over vocabulary chunks; the student's
// backward recomputes each layer from its input, adding the cosine term's gradient on the
// stream as it passes each layer.

// The cosine term's gradient on the student's stream h_l (l >= 1) against the teacher's.
typedef struct {
    const ae_backend *be;
    const ae_train_acts *ta;
    ae_scratch mem;
    ae_ptr rows;    // (L, N) F32  1 − cos per token of layers 1..L (row l − 1): the loss, read
                    //             once after the backward (cos_loss)
    ae_ptr da;      // (N, D) F32  the term's gradient on h_l
    int N, D;
    float scale;    // cos_weight / L / accum / N: the weight of each token's 1 − cos
} cos_grad;

static ae_status add_cos_grad(void *ctx, int l, ae_ptr h, ae_ptr dh) {
    cos_grad *c = ctx;
    if (!c || l < 1) return AE_OK;
    c->be->cosine_rows(c->be, ae_ptr_at(c->rows, (size_t)(l - 1) * c->N), c->da, h,
                       ae_train_acts_hidden(c->ta, l), c->N, c->D, c->scale);
    c->be->add(c->be, dh, dh, c->da, (size_t)c->N * c->D);
    return AE_OK;
}

// Called as the student's backward passes h_l (l = L down to 0): layer l's backward is done
// (l < L), so its gradients' sum over the ranks can start; then the cosine term, if any.
typedef struct {
    ae_run *r;
    cos_grad *cos; // NULL without the cosine term
} layer_hook;

static ae_status layer_done(void *ctx, int l, ae_ptr h, ae_ptr dh) {
    layer_hook *k = ctx;
    if (l < k->r->s->cfg.num_hidden_layers) AE_TRY(ae_dp_layer_done(k->r, l));
    return add_cos_grad(k->cos, l, h, dh);
}

// *cosl += the cosine term (mean over layers and tokens of 1 − cos(h_l^S, h_l^T), l = 1..L), from
// the rows the backward's add_cos_grad wrote (one download for every layer, instead of a forward
// pass of its own and a download per layer). Summed as ae_cosine_loss sums: each layer's rows in
// double in token order, / N; the layers in order, / L. A non-finite layer stops the run.
static ae_status cos_loss(const ae_run *r, const int32_t *ids, int B, int T, const ae_train_acts *ta,
                          const ae_train_acts *sa, const cos_grad *c, double *cosl) {
    int L = r->s->cfg.num_hidden_layers, N = c->N;
    float *h = ae_malloc(sizeof(float) * (size_t)L * (size_t)N); // (L, N)
    if (!h) return AE_ERR_NOMEM;
    ae_status st = c->be->download(c->be, h, AE_DT_F32, c->rows, (size_t)L * (size_t)N);
    double sum = 0.0;
    for (int l = 1; l <= L && st == AE_OK; l++) {
        const float *hl = h + (size_t)(l - 1) * (size_t)N;
        double s = 0.0;
        for (int i = 0; i < N; i++) s += hl[i];
        const double cl = s / N;
        if (!isfinite(cl)) st = stage2_nonfinite(r, ids, B, T, ta, sa, "cosine feature", cl);
        sum += cl;
    }
    free(h);
    if (st == AE_OK) *cosl += sum / L;
    return st;
}

// The KL term: its gradient on the student's final hidden into dfinal (and on lm_head when the
// head trains).   dfinal: (N, D) F32
static ae_status kd_term(ae_run *r, const int32_t *ids, int B, int T, const ae_train_acts *ta,
                         const ae_train_acts *sa, ae_ptr dfinal, double *kd, int *top1) {
    const ae_model *t = r->t, *s = r->s;
    const ae_distill_opts *o = r->o;
    double loss = 0.0;
    int agree = 0;
    AE_TRY(ae_kd_loss(s->be, ae_train_acts_final(ta), t->lm_head, ae_train_acts_final(sa), s->lm_head,
                      B * T, s->cfg.hidden_size, s->cfg.vocab_size, o->tau, KD_VOCAB_CHUNK,
                      1.0f / (float)o->accum, dfinal, o->train_all ? r->g->lm_head : ae_ptr_null(),
                      &loss, &agree));
    *kd += loss;
    *top1 += agree;
    return isfinite(loss) ? AE_OK : stage2_nonfinite(r, ids, B, T, ta, sa, "KL", loss);
}

// The student's backward over N = B·T tokens from dfinal, with the cosine term's gradient on its
// stream (ta: the teacher's streams, or NULL without the term), then that term's loss into
// *cosl.   dfinal: (N, D) F32
static ae_status student_backward(ae_run *r, const int32_t *ids, int B, int T, const ae_train_acts *ta,
                                  const ae_train_acts *sa, ae_ptr dfinal, double *cosl) {
    ae_model *s = r->s;
    const ae_backend *be = s->be;
    const ae_distill_opts *o = r->o;
    if (!ta) {
        layer_hook k = {.r = r};
        return ae_model_train_backward(s, sa, dfinal, layer_done, &k, r->g, !o->train_all);
    }
    int D = s->cfg.hidden_size, L = s->cfg.num_hidden_layers, N = B * T;
    cos_grad c = {.be = be, .ta = ta, .N = N, .D = D,
                  .scale = o->cos_weight / (float)L / (float)o->accum / (float)N};
    ae_scratch_init(&c.mem, be);
    c.rows = ae_scratch_alloc(&c.mem, (size_t)L * N, AE_DT_F32);
    c.da = ae_scratch_alloc(&c.mem, (size_t)N * D, AE_DT_F32);
    ae_status st = c.mem.failed ? ae_errorf(AE_ERR_NOMEM, "out of %s memory for the cosine term's "
                                            "gradient", be->name)
                                : ae_model_train_backward(s, sa, dfinal, layer_done,
                                                          &(layer_hook){.r = r, .cos = &c}, r->g,
                                                          !o->train_all);
    if (st == AE_OK) st = cos_loss(r, ids, B, T, ta, sa, &c, cosl);
    ae_scratch_free(&c.mem);
    return st;
}

// The teacher's activations of a micro-batch (made on the teacher's queue) freed there, once
// the student's queue has read them.
static void teacher_acts_release(ae_run *r, ae_train_acts *ta) {
    if (!ta) return;
    ae_event_record(r->s->be, r->lanes.end);
    ae_event_wait(r->lanes.be, r->lanes.end);
    ae_train_acts_free(ta);
}

// One micro-batch of stage 2 (distill_internal.h). The teacher's forward runs on its own queue
// (stage 1's, ae_s1_lanes), beside the student's forward; the KD term waits for it. The
// teacher's activations are freed before the backward unless the cosine term needs them.
ae_status ae_distill_stage2_micro(ae_run *r, const int32_t *ids, int B, int T, double *kd,
                                  double *cosl, int *top1) {
    const ae_backend *be = r->s->be;
    int cos = r->o->cos_weight > 0.0f, N = B * T;
    ae_train_acts *ta = NULL, *sa = NULL;
    ae_ptr dfinal = ae_ptr_null(); // (N, D) F32 ∂loss/∂ the student's final hidden
    AE_TRY(s1_lanes_open(r));
    ae_model tv = teacher_view(r);
    // the teacher's streams are the cosine term's targets only: kept in the activation dtype
    ae_status st = ae_model_train_forward(&tv, ids, B, T, cos ? AE_KEEP_ACT : AE_KEEP_NONE, &ta);
    ae_event_record(tv.be, r->lanes.tdone[0]);
    if (st == AE_OK)
        st = ae_model_train_forward(r->s, ids, B, T,
                                    AE_KEEP_F32 | (r->o->s2_keep_attn ? AE_KEEP_ATTN : 0), &sa);
    ae_event_wait(be, r->lanes.tdone[0]);
    if (st == AE_OK) st = ae_backend_status(tv.be);
    if (st == AE_OK) {
        dfinal = be->alloc(be, (size_t)N * r->s->cfg.hidden_size, AE_DT_F32);
        if (ae_ptr_is_null(dfinal))
            st = ae_errorf(AE_ERR_NOMEM, "out of %s memory for a stage-2 micro-batch of %d tokens",
                           be->name, N);
    }
    if (st == AE_OK) st = kd_term(r, ids, B, T, ta, sa, dfinal, kd, top1);
    if (!cos) {
        teacher_acts_release(r, ta);
        ta = NULL;
    }
    if (st == AE_OK) st = student_backward(r, ids, B, T, ta, sa, dfinal, cosl);
    be->free(be, dfinal);
    ae_train_acts_free(sa);
    teacher_acts_release(r, ta);
    return st;
}

// The out-of-memory probe's micro-step (train/oom.h): the current stage's forward and backward
// on ids (B, T) into the gradients, its losses thrown away.
static ae_status probe_micro(ae_run *r, const int32_t *ids, int B, int T) {
    double kd = 0.0, cosl = 0.0, *ll = ae_calloc((size_t)r->s->cfg.num_hidden_layers, sizeof(double));
    int agree = 0;
    if (!ll) return AE_ERR_NOMEM;
    ae_status st = r->stage == 0 ? stage1_micro(r, ids, B, T, ll)
                                 : ae_distill_stage2_micro(r, ids, B, T, &kd, &cosl, &agree);
    free(ll);
    return st;
}

// ---------------------------------------------------------------- loop
// Throughput of this process since the last progress line (not checkpointed).
typedef struct {
    double t_interval;
    int64_t tokens;
} interval_clock;

// The progress line and metrics.jsonl record of the steps since the last one (their means,
// from r->iv, which is then cleared).
static void log_interval(ae_run *r, interval_clock *ic, int64_t total, double run_t0) {
    const ae_distill_opts *o = r->o;
    ae_interval *is = &r->iv;
    int L = r->s->cfg.num_hidden_layers;
    double now = ae_time_now(), dt = now - ic->t_interval;
    double loss = is->loss_sum / (double)is->n;
    double tps = ic->tokens / (dt > 1e-9 ? dt : 1e-9);
    double scored = (double)is->n * o->accum * o->batch * o->ctx; // predictions of the interval
    double eta = (double)(total - r->step) * ((double)o->ctx * o->batch * o->accum) / (tps > 0 ? tps : 1);
    fprintf(stderr, "stage %d  step %lld/%lld  loss %.5f", r->stage + 1, (long long)r->step,
            (long long)total, loss);
    if (r->stage == 1) fprintf(stderr, "  top1 %.3f", (double)is->top1 / scored);
    fprintf(stderr, "  lr %.2e  %.0f tok/s  elapsed %.0fs  eta %.0fs", ae_lr_at(&r->opt.cfg, r->step),
            tps, now - run_t0, eta);
    size_t fr = 0, tot = 0;
    ae_backend_mem_info(r->s->be, &fr, &tot);
    if (tot) fprintf(stderr, "  %s mem %.1f/%.1f GiB", r->s->be->name, (double)(tot - fr) / 1073741824.0,
                     (double)tot / 1073741824.0);
    fputc('\n', stderr);
    if (r->metrics) {
        fprintf(r->metrics, "{\"stage\":%d,\"step\":%lld,\"steps\":%lld,\"loss\":%.6g,\"lr\":%.6g,"
                "\"tokens_per_s\":%.1f,\"elapsed_s\":%.2f",
                r->stage + 1, (long long)r->step, (long long)total, loss, ae_lr_at(&r->opt.cfg, r->step),
                tps, now - run_t0);
        if (r->stage == 0) {
            fprintf(r->metrics, ",\"layer_loss\":[");
            int first = 1;
            for (int l = 0; l < L; l++) {
                if (r->s->layers[l].kind == AE_ATTN_GQA) continue;
                fprintf(r->metrics, "%s%.6g", first ? "" : ",", is->layer_sum[l] / (double)is->n);
                first = 0;
            }
            fputc(']', r->metrics);
        } else {
            fprintf(r->metrics, ",\"kl\":%.6g,\"cos\":%.6g,\"top1\":%.4f", loss,
                    is->cos_sum / (double)is->n, (double)is->top1 / scored);
        }
        fputs("}\n", r->metrics);
        fflush(r->metrics);
    }
    ae_interval_clear(is, L);
    ic->tokens = 0;
    ic->t_interval = now;
}

void ae_interval_clear(ae_interval *iv, int L) {
    iv->n = iv->top1 = 0;
    iv->loss_sum = iv->cos_sum = 0.0;
    if (iv->layer_sum) memset(iv->layer_sum, 0, sizeof(double) * (size_t)L);
}

// Test hook: AE_TEST_KILL_AT_STEP=k raises SIGKILL right after optimizer step k (1-based,
// counted over both stages), to test that a resumed run matches an uninterrupted one.
// AE_TEST_KILL_RANK=r: only rank r of a data-parallel group dies.
static void maybe_die(const ae_run *r, int64_t global_step) {
    const char *k = getenv("AE_TEST_KILL_AT_STEP"), *rank = getenv("AE_TEST_KILL_RANK");
    if (rank && atoi(rank) != ae_comm_rank(r->o->comm)) return;
    if (k && atoll(k) == global_step) raise(SIGKILL);
}

// Writes a checkpoint (rank 0 of a group; every rank learns the outcome) and remembers its
// position (named if training stops later).
static ae_status save_checkpoint(ae_run *r) {
    ae_status st = ae_dp_is_root(r) ? ae_ckpt_save(r) : r->sharded ? ae_ckpt_serve(r) : AE_OK;
    AE_TRY(ae_dp_agree(r, st, "saving a checkpoint"));
    r->last_save = ae_time_now();
    r->ckpt_stage = r->stage;
    r->ckpt_step = r->step;
    return AE_OK;
}

// The model inputs of B loader windows: the first T of each window's T + 1 tokens.
//   win: (B, T + 1)  ids: (B, T)
static void window_inputs(const int32_t *win, int B, int T, int32_t *ids) {
    for (int b = 0; b < B; b++)
        memcpy(ids + (size_t)b * T, win + (size_t)b * (T + 1), sizeof(int32_t) * T);
}

static ae_status run_stage(ae_run *r, double run_t0) {
    const ae_distill_opts *o = r->o;
    int B = o->batch, T = o->ctx, L = r->s->cfg.num_hidden_layers;
    int64_t total = ae_distill_stage_steps(o, r->stage);
    int32_t *win = ae_malloc(sizeof(int32_t) * (size_t)B * (T + 1)); // (B, T+1)
    int32_t *ids = ae_malloc(sizeof(int32_t) * (size_t)B * T);       // (B, T)
    double *ll = ae_malloc(sizeof(double) * (size_t)L); // (L) this step's loss per layer
    if (!win || !ids || !ll) {
        free(win), free(ids), free(ll);
        return AE_ERR_NOMEM;
    }
    // r->iv: the sums since the last progress line (a resumed run restores them)
    ae_interval *is = &r->iv;
    interval_clock ic = {.t_interval = ae_time_now()};
    ae_status st = AE_OK;
    while (r->step < total && st == AE_OK) {
        ae_run_zero_grads(r);
        ae_mem_clear_refusal(); // an out-of-memory report names this step's allocation only
        double kd = 0.0, cosl = 0.0;
        int agree = 0;
        memset(ll, 0, sizeof(double) * (size_t)L);
        for (int a = 0; a < o->accum && st == AE_OK; a++) {
            ae_loader_next(&r->loader, B, win); // every rank draws every window: one loader state
            if (!ae_dp_owns_micro(r, a)) continue;
            r->last_micro = a + ae_comm_size(o->comm) >= o->accum; // this rank's last of the step
            window_inputs(win, B, T, ids);
            st = r->stage == 0 ? stage1_micro(r, ids, B, T, ll)
                                : ae_distill_stage2_micro(r, ids, B, T, &kd, &cosl, &agree);
        }
        if (st == AE_ERR_NOMEM) { // what fits (the probe's backward starts no gradient sums)
            r->last_micro = 0;
            st = ae_oom_stop(r, probe_micro, ids, B, T);
        }
        st = ae_dp_reduce_step(r, st, ll, &kd, &cosl, &agree); // sums over the ranks, if several
        if (st != AE_OK) break;
        double loss = 0.0;
        int nrep = 0;
        for (int l = 0; l < L; l++)
            if (r->s->layers[l].kind != AE_ATTN_GQA) {
                loss += ll[l] / o->accum;
                nrep++;
            }
        loss = r->stage == 0 ? loss / (nrep ? nrep : 1) : kd / o->accum;
        double norm;
        st = ae_adamw_step_queue(&r->opt, &norm);
        if (st == AE_OK && r->opt.queued && r->stage == 0 && r->step + 1 < total &&
            ae_dp_owns_micro(r, 0)) { // the next step's teacher start runs beside the update
            ae_loader peek = r->loader; // the next step's first window, the loader not advanced
            ae_loader_next(&peek, B, win);
            window_inputs(win, B, T, ids);
            stage1_prefetch(r, ids, B, T);
        }
        ae_status fs = ae_adamw_step_finish(&r->opt);
        if (st == AE_OK) st = fs;
        if (st == AE_OK) st = ae_dp_after_update(r); // sharded states: the owners' new values
        if (st != AE_OK) break;
        if (r->opt.nonfinite != -1) {
            st = update_nonfinite(r, norm, loss);
            break;
        }
        r->step++;
        for (int l = 0; l < L; l++)
            if (r->s->layers[l].kind != AE_ATTN_GQA) is->layer_sum[l] += ll[l] / o->accum;
        is->loss_sum += loss;
        is->cos_sum += cosl / o->accum;
        is->top1 += agree;
        is->n++;
        ic.tokens += (int64_t)o->accum * B * T;
        if (o->log_every <= 1 || r->step % o->log_every == 0 || r->step == total) {
            r->final_loss[r->stage] = is->loss_sum / is->n;
            if (ae_dp_is_root(r)) {
                log_interval(r, &ic, total, run_t0);
            } else {
                ae_interval_clear(is, L);
                ic.tokens = 0;
            }
        }
        int by_steps = o->save_every > 0 && r->step % o->save_every == 0;
        int by_time = o->save_minutes > 0 && ae_time_now() - r->last_save >= 60.0 * o->save_minutes;
        if (r->step < total && (by_steps || by_time)) st = save_checkpoint(r);
        int64_t global = r->step + (r->stage == 1 ? ae_distill_stage_steps(o, 0) : 0);
        if (st == AE_OK) maybe_die(r, global);
        if (st == AE_OK) ae_kill_point("step");
    }
    s1_next_drop(r); // a start queued for a step that does not run
    free(win);
    free(ids);
    free(ll);
    return st;
}

// The loss curves of metrics.jsonl drawn to out_dir/loss.png (attnedit plot): a figure that
// cannot be drawn is a note, never a reason to stop training.
static void plot_losses(const char *out_dir) {
    char *png = ae_path_join(out_dir, "loss.png");
    if (png && ae_plot_metrics(out_dir, png) == AE_OK)
        fprintf(stderr, "loss curves: %s\n", png);
    else
        fprintf(stderr, "note: loss curves not drawn: %s\n", ae_last_error());
    free(png);
}

ae_status ae_run_init(ae_run *r, const ae_model *t, ae_model *s, const ae_tokfile *data,
                      const ae_distill_opts *o, const char *out_dir) {
    memset(r, 0, sizeof *r);
    r->t = t;
    r->s = s;
    r->o = o;
    r->out_dir = out_dir;
    r->ckpt_stage = -1;
    r->last_save = ae_time_now();
    // attention-only training needs gradients of the attention modules alone
    // (with --grad-dtype bf16 those of bf16 parameters in bf16)
    AE_TRY(ae_model_grads_alloc(s, !o->train_all, o->grad_bf16, &r->g));
    AE_TRY(ae_model_params(s, 0, &r->sp, &r->np));
    int ng;
    AE_TRY(ae_model_params(r->g, 0, &r->gp, &ng));
    if (ng != r->np) return ae_errorf(AE_ERR_FORMAT, "internal: gradient model has %d tensors, model %d", ng, r->np);
    r->trainable = ae_calloc((size_t)r->np, sizeof(int));
    r->stage_params = ae_calloc((size_t)r->np, sizeof(int));
    r->owner = ae_calloc((size_t)r->np, sizeof(int));
    r->layer = ae_calloc((size_t)r->np, sizeof(int));
    r->started = ae_calloc((size_t)r->np, 1);
    r->master = ae_calloc((size_t)r->np, sizeof(ae_ptr));
    r->iv.layer_sum = ae_calloc((size_t)s->cfg.num_hidden_layers, sizeof(double));
    if (!r->trainable || !r->stage_params || !r->owner || !r->layer || !r->started || !r->master ||
        !r->iv.layer_sum)
        return AE_ERR_NOMEM;
    for (int i = 0; i < r->np; i++) r->layer[i] = layer_of(r->sp[i].name);
    ae_dp_plan(r); // which rank updates which tensor, when the states are sharded
    return ae_loader_init(&r->loader, data, o->ctx, o->seed);
}

void ae_run_free(ae_run *r) {
    s1_lanes_close(r);
    ae_adamw_free(&r->opt);
    for (int i = 0; r->master && i < r->np; i++) r->s->be->free(r->s->be, r->master[i]);
    free(r->master);
    free(r->sp);
    free(r->gp);
    free(r->trainable);
    free(r->stage_params);
    free(r->owner);
    free(r->layer);
    free(r->started);
    free(r->iv.layer_sum);
    ae_model_free(r->g);
    if (r->metrics) fclose(r->metrics);
}

ae_status ae_distill_run(const ae_model *teacher, ae_model *student, const ae_tokfile *data,
                         const ae_distill_opts *o, const char *out_dir, int resume,
                         ae_distill_result *res) {
    memset(res, 0, sizeof *res);
    AE_TRY(check_opts(o));
    AE_TRY(check_backend(teacher, student, o));
    double t0 = ae_time_now();
    ae_run r;
    ae_status st = ae_run_init(&r, teacher, student, data, o, out_dir);
    int found = 0;
    if (st == AE_OK && resume) st = ae_ckpt_load(&r, &found);
    if (st == AE_OK && found) r.ckpt_stage = r.stage, r.ckpt_step = r.step;
    if (st == AE_OK && resume && !found)
        st = ae_errorf(AE_ERR_ARG, "%s: no checkpoint to resume from (checkpoint/state.json is "
                       "missing)", out_dir);
    if (st == AE_OK) st = ae_dp_start(&r, found); // a data-parallel group: checks, same start
    if (st == AE_OK && !found) {
        r.stage = 0;
        r.step = 0;
        st = ae_run_setup_stage(&r);
    }
    if (st == AE_OK && ae_dp_is_root(&r)) {
        char *mpath = ae_path_join(out_dir, "metrics.jsonl");
        r.metrics = mpath ? fopen(mpath, "a") : NULL;
        free(mpath);
        if (ae_comm_size(o->comm) > 1)
            fprintf(stderr, "data-parallel: %d ranks (%s), %d of the %d micro-batches of each step "
                    "per rank%s\n", ae_comm_size(o->comm), ae_comm_kind(o->comm),
                    o->accum / ae_comm_size(o->comm), o->accum,
                    r.sharded ? "; AdamW states and fp32 masters sharded over the ranks (ZeRO-1)" : "");
        if (found && r.stage < 2)
            fprintf(stderr, "resuming at stage %d, step %lld\n", r.stage + 1, (long long)r.step);
        else if (found)
            fprintf(stderr, "the checkpoint is of the finished training: nothing left to train\n");
    }
    while (st == AE_OK && r.stage < 2) {
        int trained = ae_distill_stage_steps(o, r.stage) > 0;
        if (trained) st = run_stage(&r, t0);
        if (st != AE_OK) break;
        if (trained && ae_dp_is_root(&r)) plot_losses(out_dir);
        r.stage++;
        r.step = 0;
        ae_interval_clear(&r.iv, student->cfg.num_hidden_layers); // each stage logs its own
        if (r.stage < 2) st = ae_run_setup_stage(&r);
        if (st == AE_OK && o->save_every >= 0) st = save_checkpoint(&r); // stage boundary, end
    }
    res->wall_s = ae_time_now() - t0;
    for (int s = 0; s < 2; s++) {
        res->final_loss[s] = r.final_loss[s];
        if (r.stage > s) // finished stages, including those finished before a resume
            res->tokens_done[s] = ae_distill_stage_steps(o, s) * o->ctx * o->batch * o->accum;
    }
    ae_run_free(&r);
    return st;
}
