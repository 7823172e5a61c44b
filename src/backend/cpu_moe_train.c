// MoE training ops on the CPU (the reference; contracts in ops.h): the slot plan (a stable
// counting sort of the (token, choice) slots by expert), the combine of slot rows into tokens and
// its backward, the router's softmax/top-k backward, and the grouped expert products (one gemm
// per expert on its slot rows). Dots and sums of the backward in double.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_internal.h"

void ae_cpu_moe_plan(const ae_backend *be, ae_ptr offp, ae_ptr posp, ae_ptr tokp, ae_ptr idxp,
                     int T, int K, int E) {
    (void)be;
    int32_t *off = cpu_i(offp, "moe_plan"), *pos = cpu_i(posp, "moe_plan");
    int32_t *tok = cpu_i(tokp, "moe_plan");
    const int32_t *idx = cpu_i(idxp, "moe_plan");
    size_t S = (size_t)T * K;
    memset(off, 0, sizeof(int32_t) * (size_t)(E + 1));
    for (size_t s = 0; s < S; s++) {
        if (idx[s] < 0 || idx[s] >= E) {
            fprintf(stderr, "attnedit: internal error: cpu moe_plan: slot %zu names expert %d of "
                    "%d\n", s, idx[s], E);
            abort();
        }
        off[idx[s] + 1]++;
    }
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    // next free position of each expert: off[e] + the slots placed so far (the E+1 ints of off
    // are restored below)
    for (size_t s = 0; s < S; s++) {
        int p = off[idx[s]]++;
        pos[s] = p;
        tok[p] = (int32_t)(s / (size_t)K);
    }
    for (int e = E; e > 0; e--) off[e] = off[e - 1];
    off[0] = 0;
}

void ae_cpu_moe_combine(const ae_backend *be, ae_ptr yp, ae_ptr op, ae_ptr posp, ae_ptr wtsp, int T,
                        int K, int D, int accumulate) {
    (void)be;
    float *y = cpu_f(yp, "moe_combine");
    const float *o = cpu_f(op, "moe_combine");
    const int32_t *pos = cpu_i(posp, "moe_combine");
    const float *w = ae_ptr_is_null(wtsp) ? NULL : cpu_f(wtsp, "moe_combine");
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *yt = y + (size_t)t * D;
        for (int d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) {
                size_t s = (size_t)t * K + k;
                acc += (w ? w[s] : 1.0f) * o[(size_t)pos[s] * D + d];
            }
            yt[d] = accumulate ? yt[d] + acc : acc;
        }
    }
}

void ae_cpu_moe_combine_bwd(const ae_backend *be, ae_ptr dyep, ae_ptr dwp, ae_ptr dyp, ae_ptr op,
                            ae_ptr posp, ae_ptr wtsp, int T, int K, int D) {
    (void)be;
    float *dye = cpu_f(dyep, "moe_combine_bwd"), *dw = cpu_f(dwp, "moe_combine_bwd");
    const float *dy = cpu_f(dyp, "moe_combine_bwd"), *o = cpu_f(op, "moe_combine_bwd");
    const float *w = cpu_f(wtsp, "moe_combine_bwd");
    const int32_t *pos = cpu_i(posp, "moe_combine_bwd");
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *dyt = dy + (size_t)t * D;
        for (int k = 0; k < K; k++) {
            size_t s = (size_t)t * K + k;
            const float *os = o + (size_t)pos[s] * D;
            float *ds = dye + (size_t)pos[s] * D;
            double dot = 0.0;
            for (int d = 0; d < D; d++) {
                dot += (double)dyt[d] * os[d];
                ds[d] = w[s] * dyt[d];
            }
            dw[s] = (float)dot;
        }
    }
}

void ae_cpu_moe_route_bwd(const ae_backend *be, ae_ptr dzp, ae_ptr dwp, ae_ptr probsp, ae_ptr idxp,
                          int T, int E, int K, int renorm) {
    (void)be;
    float *dz = cpu_f(dzp, "moe_route_bwd");
    const float *dw = cpu_f(dwp, "moe_route_bwd"), *probs = cpu_f(probsp, "moe_route_bwd");
    const int32_t *idx = cpu_i(idxp, "moe_route_bwd");
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *p = probs + (size_t)t * E, *g = dw + (size_t)t * K;
        const int32_t *top = idx + (size_t)t * K;
        float *dzt = dz + (size_t)t * E;
        double ssum = 0.0, wdw = 0.0, pdp = 0.0;
        for (int j = 0; j < K; j++) ssum += p[top[j]];
        for (int j = 0; j < K; j++) wdw += (double)g[j] * p[top[j]] / ssum; // Σ dw_j w_j
        // dp_j of the selected experts; pdp = Σ_e dp_e p_e over them (dp = 0 elsewhere)
        for (int j = 0; j < K; j++) pdp += (renorm ? (g[j] - wdw) / ssum : g[j]) * p[top[j]];
        for (int e = 0; e < E; e++) dzt[e] = (float)(-(double)p[e] * pdp);
        for (int j = 0; j < K; j++) {
            double dp = renorm ? (g[j] - wdw) / ssum : g[j];
            dzt[top[j]] = (float)((double)p[top[j]] * (dp - pdp));
        }
    }
}

// Expert e's slot rows off[e] .. off[e+1]−1, checked against the contract (ops.h).
static const int32_t *expert_offsets(ae_ptr offp, int S, int E, const char *op) {
    const int32_t *off = cpu_i(offp, op);
    for (int e = 0; e < E; e++)
        if (off[0] != 0 || off[e + 1] < off[e] || off[E] > S) {
            fprintf(stderr, "attnedit: internal error: cpu %s: slot offsets off[%d] = %d, "
                    "off[%d] = %d of %d slots are not a grouping\n", op, e, off[e], e + 1,
                    off[e + 1], S);
            abort();
        }
    return off;
}

void ae_cpu_expert_matmul(const ae_backend *be, int n, const ae_ptr *y, ae_ptr x, const ae_ptr *w,
                          ae_ptr offp, int S, int E, int N, int Kd) {
    const int32_t *off = expert_offsets(offp, S, E, "expert_matmul");
    for (int e = 0; e < E; e++) {
        int rows = off[e + 1] - off[e];
        if (rows == 0) continue;
        // y[i] rows (rows, N) = x rows (rows, Kd) · w[i][e]ᵀ (N, Kd)
        ae_gemm_args g = {.M = rows, .N = N, .K = Kd, .batch = 1, .trans_a = 0, .trans_b = 1,
                          .lda = Kd, .ldb = Kd, .ldy = N, .alpha = 1.0f, .beta = 0.0f};
        for (int i = 0; i < n; i++)
            ae_cpu_gemm(be, &g, ae_ptr_at(y[i], (size_t)off[e] * N),
                        ae_ptr_at(x, (size_t)off[e] * Kd), ae_ptr_at(w[i], (size_t)e * N * Kd));
    }
}

void ae_cpu_expert_matmul_bwd(const ae_backend *be, int n, ae_ptr dx, const ae_ptr *dw,
                              const ae_ptr *dy, ae_ptr x, const ae_ptr *w, ae_ptr offp, int S,
                              int E, int N, int Kd, int accumulate) {
    const int32_t *off = expert_offsets(offp, S, E, "expert_matmul_bwd");
    for (int e = 0; e < E; e++) {
        int rows = off[e + 1] - off[e];
        if (rows == 0) continue;
        // dx rows (rows, Kd) (=|+=) dy[i] rows (rows, N) · w[i][e] (N, Kd), summed over i
        ae_gemm_args gx = {.M = rows, .N = Kd, .K = N, .batch = 1, .trans_a = 0, .trans_b = 0,
                           .lda = N, .ldb = Kd, .ldy = Kd, .alpha = 1.0f};
        // dw[i][e] (N, Kd) += dy[i] rowsᵀ (N, rows) · x rows (rows, Kd)
        ae_gemm_args gw = {.M = N, .N = Kd, .K = rows, .batch = 1, .trans_a = 1, .trans_b = 0,
                           .lda = N, .ldb = Kd, .ldy = Kd, .alpha = 1.0f, .beta = 1.0f};
        for (int i = 0; i < n; i++) {
            ae_ptr dyi = ae_ptr_at(dy[i], (size_t)off[e] * N);
            gx.beta = accumulate || i > 0 ? 1.0f : 0.0f;
            if (!ae_ptr_is_null(dx))
                ae_cpu_gemm(be, &gx, ae_ptr_at(dx, (size_t)off[e] * Kd), dyi,
                            ae_ptr_at(w[i], (size_t)e * N * Kd));
            if (dw && !ae_ptr_is_null(dw[i]))
                ae_cpu_gemm(be, &gw, ae_ptr_at(dw[i], (size_t)e * N * Kd), dyi,
                            ae_ptr_at(x, (size_t)off[e] * Kd));
        }
    }
}
