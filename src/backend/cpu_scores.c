// Scores of logit rows: negative log-likelihood of a target, KL between two rows, argmax. Each
// row is reduced in double, one row per OpenMP task.
#include <math.h>

#include "backend/cpu_internal.h"
#include "core/logsumexp.h"

void ae_cpu_nll_rows(const ae_backend *be, ae_ptr out, ae_ptr zp, ae_ptr target, int T, int V) {
    (void)be;
    float *o = cpu_f(out, "nll_rows");
    const float *z = cpu_f(zp, "nll_rows");
    const int32_t *y = cpu_i(target, "nll_rows");
#pragma omp parallel for if (T > 4)
    for (int t = 0; t < T; t++) {
        const float *zt = z + (size_t)t * V;
        o[t] = (float)(ae_logsumexp(zt, V) - (double)zt[y[t]]);
    }
}

// KL(p ‖ q) = Σ p (log p − log q), clamped at 0 against rounding.
void ae_cpu_kl_rows(const ae_backend *be, ae_ptr out, ae_ptr ztp, ae_ptr zsp, int T, int V) {
    (void)be;
    float *o = cpu_f(out, "kl_rows");
    const float *zt = cpu_f(ztp, "kl_rows"), *zs = cpu_f(zsp, "kl_rows");
#pragma omp parallel for if (T > 4)
    for (int t = 0; t < T; t++) {
        const float *a = zt + (size_t)t * V, *b = zs + (size_t)t * V;
        double lt = ae_logsumexp(a, V), ls = ae_logsumexp(b, V), kl = 0.0;
        for (int i = 0; i < V; i++) {
            double lpt = a[i] - lt;
            kl += exp(lpt) * (lpt - (b[i] - ls));
        }
        o[t] = (float)(kl > 0 ? kl : 0);
    }
}

void ae_cpu_argmax_rows(const ae_backend *be, ae_ptr out, ae_ptr zp, int T, int V) {
    (void)be;
    int32_t *o = cpu_i(out, "argmax_rows");
    const float *z = cpu_f(zp, "argmax_rows");
    for (int t = 0; t < T; t++) {
        const float *r = z + (size_t)t * V;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (r[i] > r[best]) best = i;
        o[t] = best;
    }
}
