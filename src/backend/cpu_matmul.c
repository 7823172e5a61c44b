// Matrix products through OpenBLAS: one cblas_sgemm per product of the batch (sgemv for the
// single-row Linear case); a matmul group is one ae_matmul per product.
#include <cblas.h>

#include "backend/cpu_internal.h"

void ae_cpu_gemm(const ae_backend *be, const ae_gemm_args *g, ae_ptr y, ae_ptr a, ae_ptr b) {
    (void)be;
    float *yy = cpu_f(y, "gemm");
    const float *aa = cpu_f(a, "gemm"), *bb = cpu_f(b, "gemm");
    if (g->batch == 1 && g->M == 1 && !g->trans_a && g->trans_b) { // y (N) = alpha·b (N, K)·a + beta·y
        cblas_sgemv(CblasRowMajor, CblasNoTrans, g->N, g->K, g->alpha, bb, (int)g->ldb, aa, 1,
                    g->beta, yy, 1);
        return;
    }
    for (int i = 0; i < g->batch; i++)
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, g->M, g->N, g->K, g->alpha,
                    aa + i * g->sa, (int)g->lda, bb + i * g->sb, (int)g->ldb, g->beta,
                    yy + i * g->sy, (int)g->ldy);
}

void ae_cpu_matmul_group(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                         const int *N, int M, int K) {
    for (int i = 0; i < n; i++) ae_matmul(be, y[i], x, w[i], M, K, N[i]);
}

// The reference SwiGLU input: the two products, then silu_mul on them (the op's definition).
void ae_cpu_gate_up_silu(const ae_backend *be, ae_ptr act, ae_ptr g, ae_ptr u, ae_ptr x,
                         ae_ptr wg, ae_ptr wu, int M, int K, int N) {
    ae_ptr ys[2] = {g, u}, ws[2] = {wg, wu};
    int Ns[2] = {N, N};
    ae_cpu_matmul_group(be, 2, ys, x, ws, Ns, M, K);
    ae_cpu_silu_mul(be, act, g, u, (size_t)M * N);
}
