// Whole-model training passes (stage 2 of the distillation, and the teacher recording of
// stage 1): a forward over B sequences of T tokens that keeps what the backward needs, and the
// backward from gradients on the final normalised hidden states and, optionally, on the
// residual stream after each layer (feature matching).
//
// Gradients live in a "gradient model": an ae_model with the same config whose tensors hold
// ∂loss/∂parameter (ae_model_zeros_like). The optimizer walks ae_model_params of the model and
// of its gradient model in the same order.
#ifndef AE_TRAIN_MODEL_TRAIN_H
#define AE_TRAIN_MODEL_TRAIN_H

#include <stdint.h>

#include "model/model.h"

// Every parameter tensor with its full HF name ("model.layers.3.self_attn.q_proj.weight").
typedef struct {
    char name[96];
    ae_ptr t;         // the tensor in the model's backend memory (weight dtype; F32 in a gradient
                      // model)
    float *data;      // host view of t on host-memory F32 backends (cpu), else NULL
    int64_t numel;
    int decay;        // AdamW weight decay applies: every 2-D matrix (embeddings, lm_head and the
                      // router included), never norms or sinks (see model_train.c)
    int is_attention; // part of a layer's self_attn module
} ae_named_param;

// Lists the parameters (attention_only: only self_attn modules of every layer). *out heap.
// Works on every backend; entries of tensors a gradient model does not hold have a null t.
ae_status ae_model_params(ae_model *m, int attention_only, ae_named_param **out, int *n);
// An all-zero gradient model for m on m's backend: the same config and shapes, every tensor F32
// (whatever m's weight dtype), the head tied as in m. attention_only: only the self_attn modules
// are allocated (the rest stays null), for training that updates attention alone.
ae_status ae_model_grads_like(const ae_model *m, int attention_only, ae_model **out);
// ae_model_grads_like(m, 0, out).
ae_status ae_model_zeros_like(const ae_model *m, ae_model **out);
void ae_model_zero(ae_model *g); // sets every tensor g holds to 0

typedef struct ae_train_acts ae_train_acts;

// ids: (B, T); positions 0..T-1 in each sequence.
ae_status ae_model_train_forward(const ae_model *m, const int32_t *ids, int B, int T,
                                 ae_train_acts **acts);
// Residual stream entering layer l (l = 0: embeddings; l = L: output of the last layer, before
// the final norm).   (B*T, D)
const float *ae_train_acts_hidden(const ae_train_acts *a, int l);
// Normalised input of layer l's attention (RMSNorm(h_l; input_layernorm)) and the attention
// module's output a_l (before the residual add): the stage-1 teacher targets.   (B*T, D) each
const float *ae_train_acts_attn_in(const ae_train_acts *a, int l);
const float *ae_train_acts_attn_out(const ae_train_acts *a, int l);
// Final normalised hidden states, the input of lm_head.   (B*T, D)
const float *ae_train_acts_final(const ae_train_acts *a);
// Experts chosen for each token by MoE layer l, descending probability; NULL for dense layers
// (routing statistics; tests detect routing flips with it).   (B*T, num_experts_per_tok)
const int *ae_train_acts_topk(const ae_train_acts *a, int l);
// Router probabilities (softmax over all experts) of MoE layer l; NULL for dense layers.
// (B*T, num_experts)
const float *ae_train_acts_router_probs(const ae_train_acts *a, int l);
void ae_train_acts_free(ae_train_acts *a);

// Backward. d_final: (B*T, D) ∂loss/∂final-normalised-hidden. d_hidden: NULL, or L+1 pointers
// (entries may be NULL) with extra ∂loss/∂h_l added where the stream passes layer l.
// Accumulates into g (a gradient model); attention_only: only attention gradients are needed
// (the rest of the backward still runs to carry gradients through, but their weight
// gradients are skipped).
ae_status ae_model_train_backward(const ae_model *m, const ae_train_acts *a, const float *d_final,
                                  float *const *d_hidden, ae_model *g, int attention_only);

#endif
