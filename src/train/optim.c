// AdamW (decoupled weight decay), the learning-rate schedule and global-norm clipping, on the
// optimizer's backend: the per-value update is the backend's adamw op, the norm its sumsq op;
// only the per-tensor sums and flags travel to the host.
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/adam8.h"
#include "core/mem.h"

// With cfg.state8 the code bytes of a tensor live in a buffer of ceil(n/4) F32 words (backends
// allocate, fill and move F32; a byte array has no dtype of its own there), zeroed by fill and
// handed to adamw8 as U8. Transfers move the words bit for bit (F32 to F32 is a plain copy on
// every backend).
static size_t code_words(size_t n) { return (n + 3) / 4; }

static ae_ptr codes_alloc(const ae_backend *be, size_t n) {
    ae_ptr p = be->alloc(be, code_words(n), AE_DT_F32);
    if (ae_ptr_is_null(p)) return p;
    be->fill(be, p, code_words(n), 0.0f);
    return ae_ptr_make(p.data, AE_DT_U8);
}

static ae_ptr words_of(ae_ptr codes) { return ae_ptr_make(codes.data, AE_DT_F32); }

double ae_adamw_state_bytes_per_value(int state8) {
    return state8 ? 2.0 + 8.0 / AE_Q8_BLOCK : 8.0;
}

// F32 zeros of n values in backend memory, or null.
static ae_ptr zeros_alloc(const ae_backend *be, size_t n) {
    ae_ptr p = be->alloc(be, n, AE_DT_F32);
    if (!ae_ptr_is_null(p)) be->fill(be, p, n, 0.0f);
    return p;
}

// Moments of tensor i: F32 m and v, or codes and block absmax.
static int moments_alloc(ae_adamw *o, int i) {
    const ae_backend *be = o->be;
    size_t k = (size_t)o->p[i].numel;
    if (!o->cfg.state8) {
        o->m[i] = zeros_alloc(be, k);
        o->v[i] = zeros_alloc(be, k);
        return !ae_ptr_is_null(o->m[i]) && !ae_ptr_is_null(o->v[i]);
    }
    o->m[i] = codes_alloc(be, k);
    o->v[i] = codes_alloc(be, k);
    o->ms[i] = zeros_alloc(be, ae_q8_blocks(k));
    o->vs[i] = zeros_alloc(be, ae_q8_blocks(k));
    return !ae_ptr_is_null(o->m[i]) && !ae_ptr_is_null(o->v[i]) && !ae_ptr_is_null(o->ms[i]) &&
           !ae_ptr_is_null(o->vs[i]);
}

ae_status ae_adamw_init(ae_adamw *o, const ae_backend *be, const ae_adamw_cfg *cfg,
                        const ae_opt_param *params, int n) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = be;
    o->n = n;
    o->nonfinite = -1;
    int has_update = cfg->state8 ? be->adamw8 != NULL : be->adamw != NULL;
    if (!has_update || !be->sumsq)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no optimizer ops (%s, sumsq)",
                         be->name, cfg->state8 ? "adamw8: 8-bit AdamW states" : "adamw");
    size_t slots = (size_t)(n > 0 ? n : 1);
    o->p = ae_calloc(slots, sizeof *o->p);
    o->m = ae_calloc(slots, sizeof *o->m);
    o->v = ae_calloc(slots, sizeof *o->v);
    if (cfg->state8) {
        o->ms = ae_calloc(slots, sizeof *o->ms);
        o->vs = ae_calloc(slots, sizeof *o->vs);
    }
    o->sums = be->alloc(be, slots, AE_DT_F64);
    o->flags = be->alloc(be, slots, AE_DT_I32);
    int ok = o->p && o->m && o->v && (!cfg->state8 || (o->ms && o->vs)) &&
             !ae_ptr_is_null(o->sums) && !ae_ptr_is_null(o->flags);
    double bytes = 0; // of both moments of every tensor
    for (int i = 0; i < n; i++)
        bytes += ae_adamw_state_bytes_per_value(cfg->state8) * (double)params[i].numel;
    for (int i = 0; ok && i < n; i++) {
        o->p[i] = params[i];
        ok = moments_alloc(o, i);
    }
    if (!ok) {
        ae_adamw_free(o);
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the AdamW moments of %d tensors "
                         "(%s, %.2f GiB)", be->name, n, cfg->state8 ? "8-bit" : "F32",
                         bytes / 1073741824.0);
    }
    return AE_OK;
}

void ae_adamw_free(ae_adamw *o) {
    const ae_backend *be = o->be;
    if (be) {
        for (int i = 0; i < o->n; i++) {
            if (o->m) be->free(be, o->m[i]);
            if (o->v) be->free(be, o->v[i]);
            if (o->ms) be->free(be, o->ms[i]);
            if (o->vs) be->free(be, o->vs[i]);
        }
        be->free(be, o->sums);
        be->free(be, o->flags);
    }
    free(o->m);
    free(o->v);
    free(o->ms);
    free(o->vs);
    free(o->p);
    memset(o, 0, sizeof *o);
    o->nonfinite = -1;
}

ae_status ae_adamw_codes_download(const ae_adamw *o, ae_ptr codes, uint8_t *dst, size_t n) {
    float *w = ae_alloc_f32(code_words(n));
    if (!w) return ae_errorf(AE_ERR_NOMEM, "out of host memory for %zu AdamW state bytes", n);
    ae_status st = o->be->download(o->be, w, AE_DT_F32, words_of(codes), code_words(n));
    if (st == AE_OK) memcpy(dst, w, n);
    ae_free_aligned(w);
    return st;
}

ae_status ae_adamw_codes_upload(const ae_adamw *o, ae_ptr codes, const uint8_t *src, size_t n) {
    float *w = ae_alloc_f32(code_words(n)); // zeroed: the padding bytes of the last word stay 0
    if (!w) return ae_errorf(AE_ERR_NOMEM, "out of host memory for %zu AdamW state bytes", n);
    memcpy(w, src, n);
    ae_status st = o->be->upload(o->be, words_of(codes), w, AE_DT_F32, code_words(n));
    if (st == AE_OK) st = o->be->sync(o->be); // w is freed below
    ae_free_aligned(w);
    return st;
}

ae_ptr ae_adamw_master(const ae_adamw *o, int i) {
    return ae_ptr_is_null(o->p[i].master) ? o->p[i].param : o->p[i].master;
}

float ae_lr_at(const ae_adamw_cfg *c, int64_t s) {
    if (c->warmup > 0 && s <= c->warmup) return c->lr * (float)s / (float)c->warmup;
    if (c->total <= c->warmup) return c->lr;
    double t = (double)(s - c->warmup) / (double)(c->total - c->warmup);
    if (t > 1.0) t = 1.0;
    double floor = c->lr * c->min_lr_ratio;
    return (float)(floor + (c->lr - floor) * 0.5 * (1.0 + cos(3.14159265358979323846 * t)));
}

// Squared norm of every gradient into sums (host, n values); AE_OK or a device error.
static ae_status tensor_sums(ae_adamw *o, double *sums) {
    const ae_backend *be = o->be;
    for (int i = 0; i < o->n; i++)
        be->sumsq(be, ae_ptr_at(o->sums, (size_t)i), o->p[i].grad, (size_t)o->p[i].numel);
    return be->download(be, sums, AE_DT_F64, o->sums, (size_t)o->n);
}

ae_status ae_grad_norm(ae_adamw *o, double *norm) {
    *norm = 0.0;
    if (o->n == 0) return AE_OK;
    double *sums = ae_malloc(sizeof(double) * (size_t)o->n);
    ae_status st = sums ? tensor_sums(o, sums) : AE_ERR_NOMEM;
    double ss = 0.0;
    for (int i = 0; st == AE_OK && i < o->n; i++) ss += sums[i];
    free(sums);
    *norm = sqrt(ss);
    return st;
}

ae_status ae_adamw_step_queue(ae_adamw *o, double *norm_out) {
    const ae_adamw_cfg *c = &o->cfg;
    const ae_backend *be = o->be;
    o->nonfinite = -1;
    o->queued = 0;
    *norm_out = 0.0;
    if (o->n == 0 && !o->norm_sum) {
        o->step++;
        return AE_OK;
    }
    size_t slots = (size_t)(o->n > 0 ? o->n : 1);
    double *sums = ae_calloc(slots, sizeof(double));
    ae_status st = sums ? (o->n ? tensor_sums(o, sums) : AE_OK) : AE_ERR_NOMEM;
    if (st != AE_OK) goto done;
    double ss = 0.0;
    for (int i = 0; i < o->n; i++) ss += sums[i];
    if (o->norm_sum && (st = o->norm_sum(o->norm_ctx, &ss)) != AE_OK) goto done;
    double norm = *norm_out = sqrt(ss);
    if (!isfinite(norm)) { // a float gradient squared cannot overflow a double: one holds Inf/NaN
        o->nonfinite = -2; // unless one of ours does
        for (int i = 0; i < o->n && o->nonfinite < 0; i++)
            if (!isfinite(sums[i])) o->nonfinite = i;
        goto done;
    }
    o->step++;
    if (o->n == 0) goto done;
    float scale = (c->clip > 0.0f && norm > c->clip) ? (float)(c->clip / norm) : 1.0f;
    ae_adamw_args a = {.lr = ae_lr_at(c, o->step), .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
                       .bc1 = 1.0f - powf(c->beta1, (float)o->step),
                       .bc2 = 1.0f - powf(c->beta2, (float)o->step), .gscale = scale};
    be->fill(be, o->flags, (size_t)o->n, 0.0f);
    for (int i = 0; i < o->n; i++) {
        const ae_opt_param *p = &o->p[i];
        a.weight_decay = p->decay ? c->weight_decay : 0.0f;
        int own = ae_ptr_is_null(p->master); // the param is its own F32 master
        ae_ptr w = own ? p->param : p->master, param = own ? ae_ptr_null() : p->param;
        ae_ptr flag = ae_ptr_at(o->flags, (size_t)i);
        if (c->state8)
            be->adamw8(be, &a, w, o->m[i], o->ms[i], o->v[i], o->vs[i], p->grad, param, flag,
                       (size_t)p->numel);
        else
            be->adamw(be, &a, w, o->m[i], o->v[i], p->grad, param, flag, (size_t)p->numel);
    }
    o->queued = 1;
done:
    free(sums);
    return st;
}

ae_status ae_adamw_step_finish(ae_adamw *o) {
    if (!o->queued) return AE_OK;
    o->queued = 0;
    int32_t *flags = ae_malloc(sizeof(int32_t) * (size_t)o->n);
    if (!flags) return AE_ERR_NOMEM;
    ae_status st = o->be->download(o->be, flags, AE_DT_I32, o->flags, (size_t)o->n);
    for (int i = 0; st == AE_OK && i < o->n && o->nonfinite < 0; i++)
        if (flags[i]) o->nonfinite = i;
    free(flags);
    return st;
}

ae_status ae_adamw_step(ae_adamw *o, double *norm_out) {
    ae_status st = ae_adamw_step_queue(o, norm_out);
    ae_status fs = ae_adamw_step_finish(o);
    return st != AE_OK ? st : fs;
}

void ae_adamw_zero_grad(ae_adamw *o) {
    for (int i = 0; i < o->n; i++) o->be->fill(o->be, o->p[i].grad, (size_t)o->p[i].numel, 0.0f);
}
