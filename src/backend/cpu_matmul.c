// Matrix products (PyTorch Linear layout, y = x · wᵀ) through OpenBLAS.
#include <cblas.h>

#include "backend/cpu_internal.h"

void ae_cpu_matmul(const ae_backend *be, float *y, const float *x, const float *w, int M, int K,
                   int N) {
    (void)be;
    if (M == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, 0.0f, y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}

// dy: (M, N).  dx (M, K) += dy · w   (w: (N, K));   dw (N, K) += dyᵀ · x   (x: (M, K)).
void ae_cpu_matmul_bwd(const ae_backend *be, float *dx, float *dw, const float *dy,
                       const float *x, const float *w, int M, int K, int N) {
    (void)be;
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, N, w, K, 1.0f,
                    dx, K);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw,
                    K);
}
