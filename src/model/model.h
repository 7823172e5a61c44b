// A Qwen3 / Qwen3-MoE causal LM — teacher or student — held in a backend's memory (cpu: fp32,
// cuda: bf16) and run through the op interface. Each layer's attention is one of three modules: the teacher's GQA (a GateSWA module
// with no gate and no sinks), GateSWA, or MLA (config.json's layer_attn). Weights are read from a
// Hugging Face folder and checked against the config: every expected tensor must exist with the
// expected shape, and no unexplained tensor may be present.
#ifndef AE_MODEL_MODEL_H
#define AE_MODEL_MODEL_H

#include <stdint.h>

#include "backend/ops.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/config.h"
#include "model/attn_gateswa.h"
#include "model/attn_mla.h"

// Every tensor is in the model's backend memory, dtype be->weight_dtype.
typedef struct {
    ae_ptr input_norm;  // (D)
    ae_ptr post_norm;   // (D)
    ae_attn_kind kind;  // which of the two modules below is used
    ae_gswa gqa;        // kind GQA or GATESWA
    ae_mla mla;         // kind MLA
    int is_moe;
    // dense MLP (is_moe == 0)
    ae_ptr w_gate;      // (I, D)
    ae_ptr w_up;        // (I, D)
    ae_ptr w_down;      // (D, I)
    // sparse MoE (is_moe == 1)
    ae_ptr router;      // (E, D)
    ae_ptr e_gate;      // (E, Im, D)
    ae_ptr e_up;        // (E, Im, D)
    ae_ptr e_down;      // (E, D, Im)
} ae_layer;

typedef struct {
    ae_config cfg;
    const ae_backend *be;
    ae_ptr embed;       // (V, D)
    ae_ptr lm_head;     // (V, D); == embed when tied
    ae_ptr final_norm;  // (D)
    ae_layer *layers;   // (L)
    int64_t n_params;   // counted from the loaded tensors
    ae_dtype src_dtype; // dtype of model.embed_tokens.weight in the source files
    int shared_base;    // 1: every tensor but the replaced attention modules belongs to another
                        // model (ae_model_share); only those modules are freed with this one
} ae_model;

// Dims of layer l's attention module as the config describes it.
ae_gswa_dims ae_model_gswa_dims(const ae_config *c, int l);
ae_mla_dims ae_model_mla_dims(const ae_config *c);

// Loads dir/config.json and the weights (any of F32/F16/BF16, converted once to the backend's
// weight dtype as they are uploaded).
ae_status ae_model_load(const char *dir, const ae_backend *be, ae_model **out);
// dir/config.json and the names and shapes of its weights, every tensor checked in the files
// as ae_model_load checks it (present, of the config's shape, a float dtype, finite, no
// tensor left over), none read: every weight pointer is null (on the cpu backend). For code
// that reads the tensors from the files itself, one at a time (export).
ae_status ae_model_load_shapes(const char *dir, ae_model **out);
// A model with dir/config.json's architecture and random weights (matrices ~ N(0, σ²), σ the
// config's initializer_range; norms 1; sinks 0), made on the device without weight files: for
// benchmarks at real sizes.
ae_status ae_model_random(const char *dir, const ae_backend *be, uint64_t seed, ae_model **out);
// 1 when the model's tensors are host float arrays (cpu backend): the host-side code that
// still reads weights directly (student initialisation, training) needs it.
int ae_model_on_host(const ae_model *m);
void ae_model_free(ae_model *m);
// A model that shares every tensor of `base` (which must outlive it): turned into a student
// with ae_student_make, it owns only its new attention modules. For attention-only training,
// where the teacher's frozen weights serve both models.
ae_status ae_model_share(const ae_model *base, ae_model **out);

// Decode state of every layer: GQA/GateSWA layers keep K/V (a ring of `window` slots on
// sliding layers), MLA layers their latent [c | k_rope] per position.
typedef struct {
    const ae_backend *be;
    int n_layers, cap, n;  // n = tokens processed so far
    ae_gswa_cache *kv;     // (L) used by GQA/GateSWA layers
    ae_ptr *latent;        // (L) × (cap, kv_lora_rank + qk_rope_head_dim) act, MLA layers
    int graphs;            // 1 (ae_kv_cache_init's default): ae_model_decode_step records its
                           // steps as backend graphs where the backend has them (cuda); 0: not
    ae_graph *graph;       // the backend's recording of the decode step (made on first use)
} ae_kv_cache;

ae_status ae_kv_cache_init(ae_kv_cache *c, const ae_model *m, int cap);
void ae_kv_cache_free(ae_kv_cache *c);
void ae_kv_cache_reset(ae_kv_cache *c);

// Bytes of the cache for `cap` positions (act dtype), for memory planning.
size_t ae_kv_cache_bytes(const ae_model *m, int cap);
// Device memory one ae_model_forward of T tokens from an empty cache takes beyond the weights
// and the cache (its workspaces, largest layer), for act_bytes-sized activations: the estimate
// `attnedit inspect` prints.
double ae_forward_workspace_bytes(const ae_config *c, int64_t T, int act_bytes);

// Runs T tokens (host ids) at positions cache->n .. cache->n+T-1 and appends them to the cache.
// logits: backend F32 (T, V) when all_logits, else (1, V) for the last token only; null skips
// the head. ids must be in [0, V): checked, AE_ERR_ARG otherwise. On cuda the work is queued:
// reading the logits (download) waits for it and reports a device error.
ae_status ae_model_forward(const ae_model *m, ae_kv_cache *cache, const int32_t *ids, int T,
                           ae_ptr logits, int all_logits);
// One decode step: ae_model_forward of the one token `id` at position cache->n, logits (1, V)
// F32 of it. With cache->graphs and a backend with graphs (cuda), the step after the first is
// recorded and run as a graph (backend/ops.h, docs/CUDA.md: a few launches instead of hundreds);
// the logits and cache rows are bit for bit those of ae_model_forward. A failed recording is
// reported once on stderr and the steps run op by op from then on.
ae_status ae_model_decode_step(const ae_model *m, ae_kv_cache *cache, int32_t id, ae_ptr logits);

// Feed-forward sub-block of layer L on T rows: y = SwiGLU MLP(x) or MoE(x) (no residual).
// x, y: (T, D) act;  g, u: (T, intermediate_size) act scratch of dense layers (unused by MoE).
ae_status ae_layer_ffn_forward(const ae_model *m, const ae_layer *L, ae_ptr y, ae_ptr x, int T,
                               ae_ptr g, ae_ptr u);
// h += FFN_L(x) for the residual stream h (T, D) F32: a dense layer's down projection adds into
// h in its epilogue (ae_matmul_add); a MoE layer's output goes through y (T, D) act scratch and
// an add (y is not read for a dense layer: it may be null there).
ae_status ae_layer_ffn_forward_add(const ae_model *m, const ae_layer *L, ae_ptr h, ae_ptr x,
                                   int T, ae_ptr g, ae_ptr u, ae_ptr y);

#endif
