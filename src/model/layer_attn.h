// Training passes of a layer's attention module, whatever its kind (GQA/GateSWA or MLA): the
// one dispatch the whole-model backward and stage 1 share.
#ifndef AE_MODEL_LAYER_ATTN_H
#define AE_MODEL_LAYER_ATTN_H

#include "model/model.h"

typedef struct {
    ae_gswa_acts *gswa; // kinds GQA, GATESWA
    ae_mla_acts *mla;   // kind MLA
} ae_layer_attn_acts;

// y = Attn_L(x)   x, y: (B*T, D); positions 0..T-1 in each of the B sequences. The
// activations borrow x: it must hold the same values when the backward runs (or be rebound).
ae_status ae_layer_attn_train_forward(const ae_backend *be, const ae_layer *L, ae_ptr x, int B,
                                      int T, ae_ptr y, ae_layer_attn_acts *acts);
// The same y with nothing kept for a backward (a frozen teacher's layer): GQA/GateSWA modules
// through ae_gswa_forward_batch; MLA through the training forward, its activations freed.
ae_status ae_layer_attn_forward_batch(const ae_backend *be, const ae_layer *L, ae_ptr x, int B,
                                      int T, ae_ptr y);
// Points the activations at another buffer x holding the forward's input (its buffer was
// reused since).
void ae_layer_attn_acts_rebind(ae_layer_attn_acts *acts, ae_ptr x);
// y = the forward's output again from the activations (the output projection alone).
void ae_layer_attn_output(const ae_backend *be, const ae_layer *L, const ae_layer_attn_acts *acts,
                          ae_ptr y);
// 1 when acts hold a forward's activations (not freed).
int ae_layer_attn_acts_held(const ae_layer_attn_acts *acts);
// Parameter gradients accumulate into G's module of the same kind; dx (B*T, D) is overwritten
// when non-null.
ae_status ae_layer_attn_backward(const ae_backend *be, const ae_layer *L,
                                 const ae_layer_attn_acts *acts, ae_ptr dy, ae_ptr dx,
                                 ae_layer *G);
void ae_layer_attn_acts_free(ae_layer_attn_acts *acts);

#endif
