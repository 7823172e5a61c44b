// RMSNorm: y = x · r · w with r = 1 / sqrt(mean(x²) + eps), per row.
#include <math.h>
#include <stdlib.h>

#include "backend/cpu_internal.h"

static double rms_inv(const float *x, int D, float eps) {
    double ss = 0.0;
    for (int d = 0; d < D; d++) ss += (double)x[d] * x[d];
    return 1.0 / sqrt(ss / D + eps);
}

void ae_cpu_rmsnorm(const ae_backend *be, float *y, const float *x, const float *w, int M, int D,
                    float eps) {
    (void)be;
#pragma omp parallel for if (M > 16)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D;
        float inv = (float)rms_inv(xi, D, eps);
        for (int d = 0; d < D; d++) yi[d] = w[d] * (xi[d] * inv);
    }
}

// With g = dy ⊙ w (the gradient reaching the normalised x̂ = x · r):
//   dx = r · g − r³ / D · x · Σ_d g_d x_d
//   dw = Σ_rows dy ⊙ x · r
void ae_cpu_rmsnorm_bwd(const ae_backend *be, float *dx, float *dw, const float *dy,
                        const float *x, const float *w, int M, int D, float eps) {
    (void)be;
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
