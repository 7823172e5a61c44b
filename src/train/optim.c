// AdamW (decoupled weight decay), the learning-rate schedule and global-norm clipping, on the
// optimizer's backend: the per-value update is the backend's adamw op, the norm its sumsq op;
// only the per-tensor sums and flags travel to the host.
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

ae_status ae_adamw_init(ae_adamw *o, const ae_backend *be, const ae_adamw_cfg *cfg,
                        const ae_opt_param *params, int n) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = be;
    o->n = n;
    o->nonfinite = -1;
    if (!be->adamw || !be->sumsq)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no optimizer ops (adamw, sumsq)",
                         be->name);
    o->p = ae_calloc((size_t)(n > 0 ? n : 1), sizeof *o->p);
    o->m = ae_calloc((size_t)(n > 0 ? n : 1), sizeof *o->m);
    o->v = ae_calloc((size_t)(n > 0 ? n : 1), sizeof *o->v);
    o->sums = be->alloc(be, (size_t)(n > 0 ? n : 1), AE_DT_F64);
    o->flags = be->alloc(be, (size_t)(n > 0 ? n : 1), AE_DT_I32);
    int ok = o->p && o->m && o->v && !ae_ptr_is_null(o->sums) && !ae_ptr_is_null(o->flags);
    double bytes = 0; // of both moments of every tensor
    for (int i = 0; i < n; i++) bytes += 8.0 * (double)params[i].numel;
    for (int i = 0; ok && i < n; i++) {
        o->p[i] = params[i];
        size_t k = (size_t)params[i].numel;
        o->m[i] = be->alloc(be, k, AE_DT_F32);
        o->v[i] = be->alloc(be, k, AE_DT_F32);
        ok = !ae_ptr_is_null(o->m[i]) && !ae_ptr_is_null(o->v[i]);
        if (ok) {
            be->fill(be, o->m[i], k, 0.0f);
            be->fill(be, o->v[i], k, 0.0f);
        }
    }
    if (!ok) {
        ae_adamw_free(o);
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the AdamW moments of %d tensors "
                         "(F32, %.2f GiB)", be->name, n, bytes / 1073741824.0);
    }
    return AE_OK;
}

void ae_adamw_free(ae_adamw *o) {
    const ae_backend *be = o->be;
    if (be) {
        for (int i = 0; i < o->n; i++) {
            if (o->m) be->free(be, o->m[i]);
            if (o->v) be->free(be, o->v[i]);
        }
        be->free(be, o->sums);
        be->free(be, o->flags);
    }
    free(o->m);
    free(o->v);
    free(o->p);
    memset(o, 0, sizeof *o);
    o->nonfinite = -1;
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

ae_status ae_adamw_step(ae_adamw *o, double *norm_out) {
    const ae_adamw_cfg *c = &o->cfg;
    const ae_backend *be = o->be;
    o->nonfinite = -1;
    *norm_out = 0.0;
    if (o->n == 0) {
        o->step++;
        return AE_OK;
    }
    double *sums = ae_malloc(sizeof(double) * (size_t)o->n);
    int32_t *flags = ae_malloc(sizeof(int32_t) * (size_t)o->n);
    ae_status st = sums && flags ? tensor_sums(o, sums) : AE_ERR_NOMEM;
    if (st != AE_OK) goto done;
    double ss = 0.0;
    for (int i = 0; i < o->n; i++) ss += sums[i];
    double norm = *norm_out = sqrt(ss);
    if (!isfinite(norm)) { // a float gradient squared cannot overflow a double: one holds Inf/NaN
        for (int i = 0; i < o->n && o->nonfinite < 0; i++)
            if (!isfinite(sums[i])) o->nonfinite = i;
        goto done;
    }
    float scale = (c->clip > 0.0f && norm > c->clip) ? (float)(c->clip / norm) : 1.0f;
    o->step++;
    ae_adamw_args a = {.lr = ae_lr_at(c, o->step), .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
                       .bc1 = 1.0f - powf(c->beta1, (float)o->step),
                       .bc2 = 1.0f - powf(c->beta2, (float)o->step), .gscale = scale};
    be->fill(be, o->flags, (size_t)o->n, 0.0f);
    for (int i = 0; i < o->n; i++) {
        const ae_opt_param *p = &o->p[i];
        a.weight_decay = p->decay ? c->weight_decay : 0.0f;
        int own = ae_ptr_is_null(p->master); // the param is its own F32 master
        be->adamw(be, &a, own ? p->param : p->master, o->m[i], o->v[i], p->grad,
                  own ? ae_ptr_null() : p->param, ae_ptr_at(o->flags, (size_t)i), (size_t)p->numel);
    }
    st = be->download(be, flags, AE_DT_I32, o->flags, (size_t)o->n);
    for (int i = 0; st == AE_OK && i < o->n && o->nonfinite < 0; i++)
        if (flags[i]) o->nonfinite = i;
done:
    free(sums);
    free(flags);
    return st;
}

void ae_adamw_zero_grad(ae_adamw *o) {
    for (int i = 0; i < o->n; i++) o->be->fill(o->be, o->p[i].grad, (size_t)o->p[i].numel, 0.0f);
}
