// Feed-forward sub-blocks for training: dense SwiGLU MLP and the Qwen3-MoE sparse block,
// forward (keeping what the backward needs) and backward.
//
// MoE math per token (x: (D), router R: (E, D)):
//   z = x·Rᵀ,  p = ae_moe_softmax(z),  top-k indices i_1..i_k (descending p),
//   w_j = p_{i_j} (/ Σ_j p_{i_j} when norm_topk_prob),  y = Σ_j w_j · Expert_{i_j}(x)
// Backward: dw_j = dy·ye_j; renormalised: dp_{i_j} = (dw_j − Σ_m dw_m w_m) / S (S = Σ p_sel);
// otherwise dp_{i_j} = dw_j; unselected experts get dp = 0 (top-k passes gradient only through
// the chosen probabilities); dz = p ⊙ (dp − Σ_e dp_e p_e); dx += dz·R, dR += dzᵀ·x.
#include "train/moe_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/moe.h"

void ae_moe_acts_free(ae_moe_acts *a) {
    if (!a) return;
    ae_free_aligned(a->probs);
    free(a->top);
    ae_free_aligned(a->topw);
    free(a->off);
    free(a->slot_tok);
    free(a->slot_of);
    ae_free_aligned(a->g);
    ae_free_aligned(a->u);
    ae_free_aligned(a->act);
    ae_free_aligned(a->ye);
    memset(a, 0, sizeof *a);
}

ae_status ae_moe_train_forward(const ae_model *m, const ae_layer *L, const float *x, int M,
                               float *y, ae_moe_acts *a) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int D = c->hidden_size, E = c->num_experts, K = c->num_experts_per_tok;
    int Im = c->moe_intermediate_size;
    memset(a, 0, sizeof *a);
    if (K < 1 || K > E) return ae_errorf(AE_ERR_ARG, "moe: num_experts_per_tok %d of %d experts", K, E);
    size_t S = (size_t)M * K;
    a->M = M;
    a->E = E;
    a->K = K;
    a->Im = Im;
    a->D = D;
    a->probs = ae_alloc_f32((size_t)M * E);
    a->top = ae_malloc(sizeof(int) * S);
    a->topw = ae_alloc_f32(S);
    a->off = ae_malloc(sizeof(int) * (size_t)(E + 1));
    a->slot_tok = ae_malloc(sizeof(int) * S);
    a->slot_of = ae_malloc(sizeof(int) * S);
    a->g = ae_alloc_f32(S * Im);
    a->u = ae_alloc_f32(S * Im);
    a->act = ae_alloc_f32(S * Im);
    a->ye = ae_alloc_f32(S * D);
    float *xe = ae_alloc_f32((size_t)M * D); // (n_e, D) inputs gathered for one expert
    if (!a->probs || !a->top || !a->topw || !a->off || !a->slot_tok || !a->slot_of || !a->g ||
        !a->u || !a->act || !a->ye || !xe) {
        ae_free_aligned(xe);
        ae_moe_acts_free(a);
        return AE_ERR_NOMEM;
    }
    ae_matmul(be, ae_host_f32(a->probs), ae_host_f32(x), L->router, M, D, E);
    for (int t = 0; t < M; t++) {
        ae_moe_softmax(a->probs + (size_t)t * E, E);
        ae_moe_topk(a->probs + (size_t)t * E, E, K, c->norm_topk_prob, a->top + (size_t)t * K,
                    a->topw + (size_t)t * K);
    }
    // Slots grouped by expert, tokens in order within an expert (moe.c's order).
    int s = 0;
    for (int e = 0; e < E; e++) {
        a->off[e] = s;
        for (int t = 0; t < M; t++)
            for (int j = 0; j < K; j++)
                if (a->top[t * K + j] == e) {
                    a->slot_tok[s] = t;
                    a->slot_of[t * K + j] = s;
                    s++;
                }
    }
    a->off[E] = s;
    memset(y, 0, sizeof(float) * (size_t)M * D);
    size_t per_gu = (size_t)Im * D;
    for (int e = 0; e < E; e++) {
        int s0 = a->off[e], n = a->off[e + 1] - s0;
        if (n == 0) continue;
        for (int i = 0; i < n; i++)
            memcpy(xe + (size_t)i * D, x + (size_t)a->slot_tok[s0 + i] * D, sizeof(float) * D);
        float *g = a->g + (size_t)s0 * Im, *u = a->u + (size_t)s0 * Im;
        float *act = a->act + (size_t)s0 * Im, *ye = a->ye + (size_t)s0 * D;
        ae_matmul(be, ae_host_f32(g), ae_host_f32(xe), ae_ptr_at(L->e_gate, per_gu * e), n, D, Im);
        ae_matmul(be, ae_host_f32(u), ae_host_f32(xe), ae_ptr_at(L->e_up, per_gu * e), n, D, Im);
        be->silu_mul(be, ae_host_f32(act), ae_host_f32(g), ae_host_f32(u), (size_t)n * Im);
        ae_matmul(be, ae_host_f32(ye), ae_host_f32(act), ae_ptr_at(L->e_down, per_gu * e), n, Im, D);
        for (int i = 0; i < n; i++) {
            int t = a->slot_tok[s0 + i];
            float w = 0.0f;
            for (int j = 0; j < K; j++)
                if (a->top[t * K + j] == e) w = a->topw[t * K + j];
            float *yt = y + (size_t)t * D;
            const float *src = ye + (size_t)i * D;
            for (int d = 0; d < D; d++) yt[d] += w * src[d];
        }
    }
    ae_free_aligned(xe);
    return AE_OK;
}

ae_status ae_moe_train_backward(const ae_model *m, const ae_layer *L, const ae_moe_acts *a,
                                const float *x, const float *dy, float *dx, ae_layer *gL) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    int M = a->M, E = a->E, K = a->K, Im = a->Im, D = a->D;
    size_t S = (size_t)M * K, per_gu = (size_t)Im * D;
    float *dz = ae_alloc_f32((size_t)M * E);  // (M, E) router-logit gradient
    float *xe = ae_alloc_f32(S * D);          // (n_e, D) gathered inputs
    float *dye = ae_alloc_f32(S * D);         // (n_e, D) gradient of the expert outputs
    float *dxe = ae_alloc_f32(S * D);         // (n_e, D) gradient of the gathered inputs
    float *dact = ae_alloc_f32(S * Im);       // (n_e, Im)
    float *dg = ae_alloc_f32(S * Im);
    float *du = ae_alloc_f32(S * Im);
    double *dwp = ae_malloc(sizeof(double) * 2 * (size_t)K); // (K) dL/dw_j, then (K) dL/dp_sel
    double *dpp = dwp ? dwp + K : NULL;
    ae_status st = AE_OK;
    if (!dz || !xe || !dye || !dxe || !dact || !dg || !du || !dwp) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    // Routing: dw_j = dy_t · ye_slot, then through the renormalisation and the softmax.
    for (int t = 0; t < M; t++) {
        const float *dyt = dy + (size_t)t * D, *p = a->probs + (size_t)t * E;
        const int *top = a->top + (size_t)t * K;
        const float *w = a->topw + (size_t)t * K;
        for (int j = 0; j < K; j++) {
            const float *ye = a->ye + (size_t)a->slot_of[t * K + j] * D;
            double sdot = 0.0;
            for (int d = 0; d < D; d++) sdot += (double)dyt[d] * ye[d];
            dwp[j] = sdot;
        }
        if (c->norm_topk_prob) {
            double ssum = 0.0, wdw = 0.0;
            for (int j = 0; j < K; j++) {
                ssum += p[top[j]];
                wdw += dwp[j] * w[j];
            }
            for (int j = 0; j < K; j++) dpp[j] = (dwp[j] - wdw) / ssum;
        } else {
            for (int j = 0; j < K; j++) dpp[j] = dwp[j];
        }
        double pdp = 0.0; // Σ_e dp_e p_e over the selected experts (dp = 0 elsewhere)
        for (int j = 0; j < K; j++) pdp += dpp[j] * p[top[j]];
        float *dzt = dz + (size_t)t * E;
        for (int e = 0; e < E; e++) dzt[e] = (float)(-(double)p[e] * pdp);
        for (int j = 0; j < K; j++) dzt[top[j]] += (float)((double)p[top[j]] * dpp[j]);
    }
    ae_matmul_bwd(be, ae_host_f32(dx), gL ? gL->router : ae_ptr_null(), ae_host_f32(dz),
                  ae_host_f32(x), L->router, M, D, E);

    // Experts, one at a time over their slots.
    for (int e = 0; e < E; e++) {
        int s0 = a->off[e], n = a->off[e + 1] - s0;
        if (n == 0) continue;
        for (int i = 0; i < n; i++) {
            int s = s0 + i, t = a->slot_tok[s];
            float w = 0.0f;
            for (int j = 0; j < K; j++)
                if (a->slot_of[t * K + j] == s) w = a->topw[t * K + j];
            memcpy(xe + (size_t)i * D, x + (size_t)t * D, sizeof(float) * D);
            const float *dyt = dy + (size_t)t * D;
            float *d = dye + (size_t)i * D;
            for (int k = 0; k < D; k++) d[k] = w * dyt[k];
        }
        const float *g = a->g + (size_t)s0 * Im, *u = a->u + (size_t)s0 * Im;
        const float *act = a->act + (size_t)s0 * Im;
        memset(dact, 0, sizeof(float) * (size_t)n * Im);
        memset(dxe, 0, sizeof(float) * (size_t)n * D);
        ae_ptr gdown = gL ? ae_ptr_at(gL->e_down, per_gu * e) : ae_ptr_null();
        ae_ptr ggate = gL ? ae_ptr_at(gL->e_gate, per_gu * e) : ae_ptr_null();
        ae_ptr gup = gL ? ae_ptr_at(gL->e_up, per_gu * e) : ae_ptr_null();
        ae_matmul_bwd(be, ae_host_f32(dact), gdown, ae_host_f32(dye), ae_host_f32(act),
                      ae_ptr_at(L->e_down, per_gu * e), n, Im, D);
        be->silu_mul_bwd(be, ae_host_f32(dg), ae_host_f32(du), ae_host_f32(dact), ae_host_f32(g),
                         ae_host_f32(u), (size_t)n * Im);
        ae_matmul_bwd(be, ae_host_f32(dxe), ggate, ae_host_f32(dg), ae_host_f32(xe),
                      ae_ptr_at(L->e_gate, per_gu * e), n, D, Im);
        ae_matmul_bwd(be, ae_host_f32(dxe), gup, ae_host_f32(du), ae_host_f32(xe),
                      ae_ptr_at(L->e_up, per_gu * e), n, D, Im);
        for (int i = 0; i < n; i++) {
            float *dxt = dx + (size_t)a->slot_tok[s0 + i] * D;
            const float *src = dxe + (size_t)i * D;
            for (int k = 0; k < D; k++) dxt[k] += src[k];
        }
    }
done:
    ae_free_aligned(dz);
    ae_free_aligned(xe);
    ae_free_aligned(dye);
    ae_free_aligned(dxe);
    ae_free_aligned(dact);
    ae_free_aligned(dg);
    ae_free_aligned(du);
    free(dwp);
    return st;
}

void ae_mlp_train_forward(const ae_model *m, const ae_layer *L, ae_ptr x, int M, ae_ptr y,
                          ae_ptr g, ae_ptr u, ae_ptr act) {
    const ae_backend *be = m->be;
    int D = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    ae_matmul(be, g, x, L->w_gate, M, D, I);
    ae_matmul(be, u, x, L->w_up, M, D, I);
    be->silu_mul(be, act, g, u, (size_t)M * I);
    ae_matmul(be, y, act, L->w_down, M, I, D);
}

void ae_mlp_train_backward(const ae_model *m, const ae_layer *L, ae_ptr x, ae_ptr g, ae_ptr u,
                           ae_ptr act, ae_ptr dy, int M, ae_ptr dx, ae_layer *gL, ae_ptr scratch) {
    const ae_backend *be = m->be;
    int D = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    size_t n = (size_t)M * I;
    ae_ptr dact = scratch, dg = ae_ptr_at(scratch, n), du = ae_ptr_at(scratch, 2 * n); // (M, I) each
    be->fill(be, dact, n, 0.0f);
    ae_matmul_bwd(be, dact, gL ? gL->w_down : ae_ptr_null(), dy, act, L->w_down, M, I, D);
    be->silu_mul_bwd(be, dg, du, dact, g, u, n);
    ae_matmul_bwd(be, dx, gL ? gL->w_gate : ae_ptr_null(), dg, x, L->w_gate, M, D, I);
    ae_matmul_bwd(be, dx, gL ? gL->w_up : ae_ptr_null(), du, x, L->w_up, M, D, I);
}
