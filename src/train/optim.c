#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

ae_status ae_adamw_init(ae_adamw *o, const ae_adamw_cfg *cfg, const ae_opt_param *params, int n) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->nonfinite = -1;
    o->p = ae_calloc((size_t)n, sizeof *o->p);
    o->m = ae_calloc((size_t)n, sizeof *o->m);
    o->v = ae_calloc((size_t)n, sizeof *o->v);
    if (!o->p || !o->m || !o->v) {
        ae_adamw_free(o);
        return AE_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        o->p[i] = params[i];
        o->m[i] = ae_alloc_f32((size_t)params[i].numel);
        o->v[i] = ae_alloc_f32((size_t)params[i].numel);
        if (!o->m[i] || !o->v[i]) {
            ae_adamw_free(o);
            return AE_ERR_NOMEM;
        }
    }
    return AE_OK;
}

void ae_adamw_free(ae_adamw *o) {
    for (int i = 0; i < o->n; i++) {
        if (o->m) ae_free_aligned(o->m[i]);
        if (o->v) ae_free_aligned(o->v[i]);
    }
    free(o->m);
    free(o->v);
    free(o->p);
    memset(o, 0, sizeof *o);
    o->nonfinite = -1;
}

float ae_lr_at(const ae_adamw_cfg *c, int64_t s) {
    if (c->warmup > 0 && s <= c->warmup) return c->lr * (float)s / (float)c->warmup;
    if (c->total <= c->warmup) return c->lr;
    double t = (double)(s - c->warmup) / (double)(c->total - c->warmup);
    if (t > 1.0) t = 1.0;
    double floor = c->lr * c->min_lr_ratio;
    return (float)(floor + (c->lr - floor) * 0.5 * (1.0 + cos(3.14159265358979323846 * t)));
}

double ae_grad_norm(const ae_adamw *o) {
    double ss = 0.0;
    for (int i = 0; i < o->n; i++) {
        const float *g = o->p[i].grad;
        for (int64_t j = 0; j < o->p[i].numel; j++) ss += (double)g[j] * g[j];
    }
    return sqrt(ss);
}

double ae_adamw_step(ae_adamw *o) {
    const ae_adamw_cfg *c = &o->cfg;
    double norm = ae_grad_norm(o);
    o->nonfinite = -1;
    if (!isfinite(norm)) { // a float gradient squared cannot overflow a double: one holds Inf/NaN
        for (int i = 0; i < o->n && o->nonfinite < 0; i++)
            for (int64_t j = 0; j < o->p[i].numel; j++)
                if (!isfinite(o->p[i].grad[j])) {
                    o->nonfinite = i;
                    break;
                }
        return norm;
    }
    float scale = (c->clip > 0.0f && norm > c->clip) ? (float)(c->clip / norm) : 1.0f;
    o->step++;
    float lr = ae_lr_at(c, o->step);
    float bc1 = 1.0f - powf(c->beta1, (float)o->step);
    float bc2 = 1.0f - powf(c->beta2, (float)o->step);
    for (int i = 0; i < o->n; i++) {
        float *w = o->p[i].data, *g = o->p[i].grad, *m = o->m[i], *v = o->v[i];
        float wd = o->p[i].decay ? c->weight_decay : 0.0f;
        int64_t n = o->p[i].numel;
        int bad = 0;
#pragma omp parallel for reduction(| : bad) if (n > 65536)
        for (int64_t j = 0; j < n; j++) {
            float gj = g[j] * scale;
            m[j] = c->beta1 * m[j] + (1.0f - c->beta1) * gj;
            v[j] = c->beta2 * v[j] + (1.0f - c->beta2) * gj * gj;
            float mhat = m[j] / bc1, vhat = v[j] / bc2;
            w[j] -= lr * (mhat / (sqrtf(vhat) + c->eps) + wd * w[j]);
            bad |= !isfinite(w[j]) || !isfinite(v[j]); // m is a mean of finite gradients
        }
        if (bad && o->nonfinite < 0) o->nonfinite = i;
    }
    return norm;
}

void ae_adamw_zero_grad(ae_adamw *o) {
    for (int i = 0; i < o->n; i++) memset(o->p[i].grad, 0, sizeof(float) * (size_t)o->p[i].numel);
}
