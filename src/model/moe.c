#include "model/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

void ae_moe_route(const float *p, int n, int k, int renorm, int *idx, float *wts) {
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

ae_status ae_moe_forward(const ae_model *m, const ae_layer *L, float *y, const float *x, int T) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int D = c->hidden_size, E = c->num_experts, K = c->num_experts_per_tok;
    int Im = c->moe_intermediate_size;
    ae_status st = AE_ERR_NOMEM;
    float *probs = ae_alloc_f32((size_t)T * E);   // (T, E)
    int *top = ae_malloc(sizeof(int) * (size_t)T * K); // (T, K)
    float *topw = ae_alloc_f32((size_t)T * K);    // (T, K)
    int *rows = ae_malloc(sizeof(int) * (size_t)T);    // tokens routed to one expert
    float *rw = ae_alloc_f32(T);                  // their routing weights
    float *xe = ae_alloc_f32((size_t)T * D);      // (n_e, D) gathered inputs
    float *g = ae_alloc_f32((size_t)T * Im);      // (n_e, Im)
    float *u = ae_alloc_f32((size_t)T * Im);      // (n_e, Im)
    float *ye = ae_alloc_f32((size_t)T * D);      // (n_e, D)
    if (!probs || !top || !topw || !rows || !rw || !xe || !g || !u || !ye) goto done;

    be->matmul(be, probs, x, L->router, T, D, E);
    for (int t = 0; t < T; t++) {
        ae_moe_softmax(probs + (size_t)t * E, E);
        ae_moe_route(probs + (size_t)t * E, E, K, c->norm_topk_prob, top + (size_t)t * K,
                     topw + (size_t)t * K);
    }
    memset(y, 0, sizeof(float) * (size_t)T * D);
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < K; j++)
                if (top[t * K + j] == e) {
                    rows[n] = t;
                    rw[n] = topw[t * K + j];
                    memcpy(xe + (size_t)n * D, x + (size_t)t * D, sizeof(float) * D);
                    n++;
                }
        if (n == 0) continue;
        size_t per_gu = (size_t)Im * D;
        be->matmul(be, g, xe, L->e_gate + per_gu * e, n, D, Im);
        be->matmul(be, u, xe, L->e_up + per_gu * e, n, D, Im);
        be->silu_mul(be, g, g, u, (size_t)n * Im);
        be->matmul(be, ye, g, L->e_down + (size_t)D * Im * e, n, Im, D);
        for (int i = 0; i < n; i++) {
            float *yt = y + (size_t)rows[i] * D;
            const float *src = ye + (size_t)i * D;
            for (int d = 0; d < D; d++) yt[d] += rw[i] * src[d];
        }
    }
    st = AE_OK;
done:
    ae_free_aligned(probs);
    free(top);
    ae_free_aligned(topw);
    free(rows);
    ae_free_aligned(rw);
    ae_free_aligned(xe);
    ae_free_aligned(g);
    ae_free_aligned(u);
    ae_free_aligned(ye);
    return st;
}
