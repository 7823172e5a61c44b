#include "model/layer_attn.h"

#include <string.h>

ae_status ae_layer_attn_train_forward(const ae_backend *be, const ae_layer *L, ae_ptr x, int B,
                                      int T, ae_ptr y, ae_layer_attn_acts *acts) {
    memset(acts, 0, sizeof *acts);
    if (L->kind == AE_ATTN_MLA) return ae_mla_train_forward(be, &L->mla, x, B, T, y, &acts->mla);
    return ae_gswa_train_forward(be, &L->gqa, x, B, T, y, &acts->gswa);
}

ae_status ae_layer_attn_forward_batch(const ae_backend *be, const ae_layer *L, ae_ptr x, int B,
                                      int T, ae_ptr y) {
    if (L->kind != AE_ATTN_MLA) return ae_gswa_forward_batch(be, &L->gqa, x, B, T, y);
    ae_layer_attn_acts a;
    ae_status st = ae_layer_attn_train_forward(be, L, x, B, T, y, &a);
    ae_layer_attn_acts_free(&a);
    return st;
}

ae_status ae_layer_attn_backward(const ae_backend *be, const ae_layer *L,
                                 const ae_layer_attn_acts *acts, ae_ptr dy, ae_ptr dx,
                                 ae_layer *G) {
    if (L->kind == AE_ATTN_MLA) return ae_mla_backward(be, &L->mla, acts->mla, dy, dx, &G->mla);
    return ae_gswa_backward(be, &L->gqa, acts->gswa, dy, dx, &G->gqa);
}

void ae_layer_attn_acts_rebind(ae_layer_attn_acts *acts, ae_ptr x) {
    if (acts->mla) ae_mla_acts_rebind(acts->mla, x);
    if (acts->gswa) ae_gswa_acts_rebind(acts->gswa, x);
}

void ae_layer_attn_output(const ae_backend *be, const ae_layer *L, const ae_layer_attn_acts *acts,
                          ae_ptr y) {
    if (L->kind == AE_ATTN_MLA) ae_mla_acts_output(be, &L->mla, acts->mla, y);
    else ae_gswa_acts_output(be, &L->gqa, acts->gswa, y);
}

int ae_layer_attn_acts_held(const ae_layer_attn_acts *acts) { return acts->mla || acts->gswa; }

void ae_layer_attn_acts_free(ae_layer_attn_acts *acts) {
    ae_gswa_acts_free(acts->gswa);
    ae_mla_acts_free(acts->mla);
    memset(acts, 0, sizeof *acts);
}
