// Qwen3-MoE sparse block on the CPU: softmax router over all experts, top-k, optional
// renormalisation; experts run one at a time on the tokens routed to them (gather, SwiGLU
// through OpenBLAS, weighted scatter-add in token order).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/cpu_internal.h"
#include "core/mem.h"

void ae_moe_topk(const float *p, int n, int k, int renorm, int *idx, float *wts) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++) taken |= idx[i] == e;
            if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        idx[j] = best;
        wts[j] = p[best];
    }
    if (renorm) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += wts[j];
        for (int j = 0; j < k; j++) wts[j] /= s;
    }
}

void ae_moe_softmax(float *z, int n) {
    float mx = z[0];
    for (int i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        z[i] = expf(z[i] - mx);
        s += z[i];
    }
    for (int i = 0; i < n; i++) z[i] = (float)(z[i] / s);
}

void ae_cpu_moe_route(const ae_backend *be, ae_ptr idx, ae_ptr wts, ae_ptr probs, ae_ptr logits,
                      int T, int E, int K, int renorm) {
    (void)be;
    const float *z = cpu_f(logits, "moe_route");
    int32_t *ix = cpu_i(idx, "moe_route");
    float *w = cpu_f(wts, "moe_route");
    float *pout = ae_ptr_is_null(probs) ? NULL : cpu_f(probs, "moe_route");
    float *p = malloc(sizeof(float) * (size_t)E);
    int *top = malloc(sizeof(int) * (size_t)K);
    if (!p || !top) {
        fprintf(stderr, "attnedit: out of memory in the cpu moe_route op (%d experts)\n", E);
        abort();
    }
    for (int t = 0; t < T; t++) {
        memcpy(p, z + (size_t)t * E, sizeof(float) * (size_t)E);
        ae_moe_softmax(p, E);
        ae_moe_topk(p, E, K, renorm, top, w + (size_t)t * K);
        for (int j = 0; j < K; j++) ix[(size_t)t * K + j] = top[j];
        if (pout) memcpy(pout + (size_t)t * E, p, sizeof(float) * (size_t)E);
    }
    free(p);
    free(top);
}

// Linear y (M, N) = x (M, K) · w (N, K)ᵀ on host arrays.
static void linear(const ae_backend *be, float *y, const float *x, const float *w, int M, int K,
                   int N) {
    ae_matmul(be, ae_host_f32(y), ae_host_f32((float *)x), ae_host_f32((float *)w), M, K, N);
}

void ae_cpu_moe_ffn(const ae_backend *be, ae_ptr yp, ae_ptr xp, ae_ptr idxp, ae_ptr wtsp,
                    ae_ptr w_gate, ae_ptr w_up, ae_ptr w_down, int T, int D, int Im, int E, int K) {
    float *y = cpu_f(yp, "moe_ffn");
    const float *x = cpu_f(xp, "moe_ffn"), *wts = cpu_f(wtsp, "moe_ffn");
    const int32_t *idx = cpu_i(idxp, "moe_ffn");
    const float *wg = cpu_f(w_gate, "moe_ffn"), *wu = cpu_f(w_up, "moe_ffn");
    const float *wd = cpu_f(w_down, "moe_ffn");
    int *rows = malloc(sizeof(int) * (size_t)T);       // tokens routed to one expert
    float *rw = malloc(sizeof(float) * (size_t)T);      // their routing weights
    float *xe = ae_alloc_f32((size_t)T * D);            // (n_e, D) gathered inputs
    float *g = ae_alloc_f32((size_t)T * Im);            // (n_e, Im)
    float *u = ae_alloc_f32((size_t)T * Im);            // (n_e, Im)
    float *ye = ae_alloc_f32((size_t)T * D);            // (n_e, D)
    if (!rows || !rw || !xe || !g || !u || !ye) {
        fprintf(stderr, "attnedit: out of memory in the cpu MoE op (%d tokens)\n", T);
        abort();
    }
    memset(y, 0, sizeof(float) * (size_t)T * D);
    size_t per_gu = (size_t)Im * D;
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < K; j++)
                if (idx[t * K + j] == e) {
                    rows[n] = t;
                    rw[n] = wts[t * K + j];
                    memcpy(xe + (size_t)n * D, x + (size_t)t * D, sizeof(float) * D);
                    n++;
                }
        if (n == 0) continue;
        linear(be, g, xe, wg + per_gu * e, n, D, Im);
        linear(be, u, xe, wu + per_gu * e, n, D, Im);
        ae_cpu_silu_mul(be, ae_host_f32(g), ae_host_f32(g), ae_host_f32(u), (size_t)n * Im);
        linear(be, ye, g, wd + (size_t)D * Im * e, n, Im, D);
        for (int i = 0; i < n; i++) {
            float *yt = y + (size_t)rows[i] * D;
            const float *src = ye + (size_t)i * D;
            for (int d = 0; d < D; d++) yt[d] += rw[i] * src[d];
        }
    }
    free(rows);
    free(rw);
    ae_free_aligned(xe);
    ae_free_aligned(g);
    ae_free_aligned(u);
    ae_free_aligned(ye);
}
