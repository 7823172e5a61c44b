// RMSNorm: y = x · r · w with r = 1 / sqrt(mean(x²) + eps), per row.
#include <math.h>
#include <stdlib.h>

#include "backend/cpu_internal.h"

static double rms_inv(const float *x, int D, float eps) {
    double ss = 0.0;
    for (int d = 0; d < D; d++) ss += (double)x[d] * x[d];
    return 1.0 / sqrt(ss / D + eps);
}

static void norm_rows(float *y, const float *x, const float *w, int M, int D, int64_t ld,
                      float eps) {
#pragma omp parallel for if (M > 16)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * ld;
        float *yi = y + (size_t)i * ld;
        float inv = (float)rms_inv(xi, D, eps);
        for (int d = 0; d < D; d++) yi[d] = w[d] * (xi[d] * inv);
    }
}

void ae_cpu_rmsnorm(const ae_backend *be, ae_ptr y, ae_ptr x, ae_ptr w, int M, int D, int64_t ld,
                    float eps) {
    (void)be;
    norm_rows(cpu_f(y, "rmsnorm"), cpu_f(x, "rmsnorm"), cpu_f(w, "rmsnorm"), M, D, ld, eps);
}

void ae_cpu_add_rmsnorm(const ae_backend *be, ae_ptr xo, ae_ptr x, ae_ptr dx, ae_ptr y,
                        ae_ptr w, int M, int D, float eps) {
    ae_cpu_add(be, xo, x, dx, (size_t)M * D);
    norm_rows(cpu_f(y, "add_rmsnorm"), cpu_f(xo, "add_rmsnorm"), cpu_f(w, "add_rmsnorm"), M, D, D,
              eps);
}

// With g = dy ⊙ w (the gradient reaching the normalised x̂ = x · r):
//   dx = r · g − r³ / D · x · Σ_d g_d x_d
//   dw = Σ_rows dy ⊙ x · r
void ae_cpu_rmsnorm_bwd(const ae_backend *be, ae_ptr dxp, ae_ptr dwp, ae_ptr dyp, ae_ptr xp,
                        ae_ptr wp, int M, int D, float eps) {
    (void)be;
    float *dx = cpu_f(dxp, "rmsnorm_bwd"), *dw = cpu_f(dwp, "rmsnorm_bwd");
    const float *dy = cpu_f(dyp, "rmsnorm_bwd"), *x = cpu_f(xp, "rmsnorm_bwd");
    const float *w = cpu_f(wp, "rmsnorm_bwd");
    double *r = malloc(sizeof(double) * (size_t)(M > 0 ? M : 1));
#pragma omp parallel for if (M > 16)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D, *dyi = dy + (size_t)i * D;
        float *dxi = dx + (size_t)i * D;
        double ri = rms_inv(xi, D, eps), gx = 0.0;
        r[i] = ri;
        for (int d = 0; d < D; d++) gx += (double)dyi[d] * w[d] * xi[d];
        double c = ri * ri * ri * gx / D;
        for (int d = 0; d < D; d++) dxi[d] += (float)(ri * dyi[d] * w[d] - c * xi[d]);
    }
    // dw: a column reduction over rows; one thread per column keeps the sum order fixed.
    if (dw) {
#pragma omp parallel for if ((long)M * D > 65536)
        for (int d = 0; d < D; d++) {
            double s = 0.0;
            for (int i = 0; i < M; i++)
                s += (double)dy[(size_t)i * D + d] * x[(size_t)i * D + d] * r[i];
            dw[d] += (float)s;
        }
    }
    free(r);
}
