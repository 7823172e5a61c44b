// Whole-model training passes (stage 2 of the distillation) through the op interface, on any
// backend with training ops: a forward over B sequences of T tokens that keeps the residual
// stream entering each layer, and the backward from gradients on the final normalised hidden
// states and, optionally, on the residual stream after each layer (feature matching), which
// recomputes each layer's internals from its input (per-layer gradient checkpointing).
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
// ae_model_grads_like with bf16 = 1: the gradient of every BF16 parameter is BF16 too (the
// others, e.g. attention sinks and every tensor of an F32 model, stay F32): half the memory,
// for backends whose ops accumulate into BF16 gradients (cuda; ops.h "dw: F32, or BF16").
ae_status ae_model_grads_alloc(const ae_model *m, int attention_only, int bf16, ae_model **out);
// ae_model_grads_like(m, 0, out).
ae_status ae_model_zeros_like(const ae_model *m, ae_model **out);
void ae_model_zero(ae_model *g); // sets every tensor g holds to 0

typedef struct ae_train_acts ae_train_acts;

// What a training forward keeps of the residual stream entering every layer, h_0..h_L.
enum {
    AE_KEEP_NONE = 0, // the final hidden alone (a teacher without the cosine term)
    AE_KEEP_F32 = 1,  // h_l in F32: the backward recomputes each layer's internals from h_l
    AE_KEEP_ACT = 2,  // h_l rounded to the backend's activation dtype (a copy of the F32 stream
                      // the forward runs on): targets that no backward recomputes from, i.e.
                      // the teacher's side of the cosine term (bf16 on cuda: half the bytes of
                      // F32, 1.16 GiB less at Qwen3-8B × 4096 tokens; F32 on cpu: the same bits)
    AE_KEEP_ATTN = 4, // or'ed onto AE_KEEP_F32: also each layer's attention-module activations,
                      // so the backward recomputes only the rest of each layer (faster; holds
                      // every layer's module activations at once). The backward frees them as
                      // it passes each layer: one backward per such forward
};
// Without AE_KEEP_F32 no backward follows: the attention modules then run their forward-only
// form (ae_layer_attn_forward_batch: no activations, GQA's q/k norm and RoPE in one op).
// Training forward over B sequences of T tokens (positions 0..T-1 each) on m's backend. Keeps
// only what stage 2 needs after it: the final normalised hidden states (the input of lm_head)
// and the residual streams keep_hidden (AE_KEEP_*) says. The stream itself always runs in F32.
//   ids: (B, T) host array, each in [0, vocab_size)
ae_status ae_model_train_forward(const ae_model *m, const int32_t *ids, int B, int T,
                                 int keep_hidden, ae_train_acts **acts);
// Residual stream entering layer l (l = 0: embeddings; l = L: output of the last layer, before
// the final norm), or a null pointer when not kept.   (B*T, D) F32 (AE_KEEP_F32) or act
// (AE_KEEP_ACT) in backend memory
ae_ptr ae_train_acts_hidden(const ae_train_acts *a, int l);
// Final normalised hidden states, the input of lm_head.   (B*T, D) act in backend memory
ae_ptr ae_train_acts_final(const ae_train_acts *a);
// The token ids on the backend.   (B*T) I32
ae_ptr ae_train_acts_ids(const ae_train_acts *a);
// Experts chosen for each token by MoE layer l, descending probability; NULL for dense layers
// and on backends without host memory (routing statistics, kept on cpu only: tests detect
// routing flips with it).   (B*T, num_experts_per_tok) host
const int *ae_train_acts_topk(const ae_train_acts *a, int l);
// Router probabilities (softmax over all experts) of MoE layer l; NULL as ae_train_acts_topk.
// (B*T, num_experts) host
const float *ae_train_acts_router_probs(const ae_train_acts *a, int l);
void ae_train_acts_free(ae_train_acts *a);

// An extra gradient on the residual stream (feature matching): called as the backward passes
// h_l, for l = L down to 0, to add ∂loss/∂h_l into dh.   h, dh: (B*T, D) F32 in backend memory
typedef ae_status (*ae_hidden_grad_fn)(void *ctx, int l, ae_ptr h, ae_ptr dh);

// Backward from d_final (B*T, D) float, ∂loss/∂final-normalised-hidden (null: no such term), and
// add_dh (null: none). Needs a forward with AE_KEEP_F32. Layer by layer from the top, each
// layer's internals are recomputed from h_l just before its backward (gradient checkpointing)
// and freed after it. Accumulates into g (a gradient model); attention_only: only attention
// gradients are needed (the rest of the backward still runs to carry gradients through, but
// the other weight gradients, the embedding's included, are skipped).
ae_status ae_model_train_backward(const ae_model *m, const ae_train_acts *a, ae_ptr d_final,
                                  ae_hidden_grad_fn add_dh, void *ctx, ae_model *g,
                                  int attention_only);

#endif
