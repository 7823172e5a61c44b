// MLA: multi-head latent attention exactly as DeepSeek-V2/V3 (HF DeepseekV3Attention with
// rope_interleave = true, no rope scaling), replacing a Qwen3 attention module.
//
//   q        = x·Wqᵀ                                  (q_lora_rank == 0)
//            | RMSNorm(x·Wqaᵀ; q_a_layernorm)·Wqbᵀ     (q_lora_rank > 0)
//   q_h      = [q_nope_h (dn) | q_rope_h (dr)]
//   [c | kr] = x·Wkvaᵀ        (kv_a_proj_with_mqa: R + dr outputs)
//   c        = RMSNorm(c; kv_a_layernorm)
//   [k_nope_h (dn) | v_h (dv)] = c·Wkvbᵀ (per head)
//   RoPE (interleaved pairs, theta from the teacher) on q_rope_h and on the one shared kr
//   k_h = [k_nope_h | kr];  o_h = softmax(q_h·k_hᵀ / sqrt(dn + dr), causal) · v_h
//   y = [o_1 … o_H]·Woᵀ
// Cache per token: [c (R) | kr (dr)], R + dr floats. Decode uses the absorbed form: per head
// q̃_h = [Wuk_hᵀ·q_nope_h (R) | q_rope_h (dr)] scores against the cached [c | kr] directly;
// o_h = Wuv_h·(Σ p_j c_j), where Wkvb rows of head h are [Wuk_h (dn, R); Wuv_h (dv, R)].
#ifndef AE_MODEL_ATTN_MLA_H
#define AE_MODEL_ATTN_MLA_H

#include "backend/ops.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/params.h"

typedef struct {
    int D;           // hidden size
    int H;           // heads (the teacher's num_attention_heads)
    int q_lora_rank; // 0: plain q_proj
    int kv_lora_rank;
    int dn, dr, dv;  // qk_nope_head_dim, qk_rope_head_dim, v_head_dim
    double rope_theta;
    float eps;       // rms_norm_eps
} ae_mla_dims;

typedef struct {
    ae_mla_dims d;
    const ae_backend *be; // owner of the tensors (wt dtype)
    ae_ptr wq;        // (H*(dn+dr), D)        q_proj.weight           (q_lora_rank == 0)
    ae_ptr wqa;       // (q_lora_rank, D)      q_a_proj.weight         (q_lora_rank > 0)
    ae_ptr q_a_norm;  // (q_lora_rank)         q_a_layernorm.weight
    ae_ptr wqb;       // (H*(dn+dr), q_lora)   q_b_proj.weight
    ae_ptr wkva;      // (R+dr, D)             kv_a_proj_with_mqa.weight
    ae_ptr kv_a_norm; // (R)                   kv_a_layernorm.weight
    ae_ptr wkvb;      // (H*(dn+dv), R)        kv_b_proj.weight
    ae_ptr wo;        // (D, H*dv)             o_proj.weight
} ae_mla;

// Allocates zeroed parameters for the dims on `be` (also used for gradient buffers).
ae_status ae_mla_init(ae_mla *m, const ae_mla_dims *d, const ae_backend *be);
void ae_mla_free(ae_mla *m);
// The parameters with their HF/DeepSeek names (q_proj or q_a_proj/q_a_layernorm/q_b_proj,
// kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj; all "<name>.weight").
ae_param_list ae_mla_params(ae_mla *m);
int ae_mla_cache_dim(const ae_mla_dims *d); // R + dr

// Inference, one sequence. x: (T, D) act, the normalised input at positions pos0..pos0+T-1
// (pos: (T) I32 holding them); cache: (cap, R+dr) act latent cache holding positions
// 0..pos0-1, rows pos0.. are written. y: (T, D) act. Materialised: decompresses per-head K/V for
// all cached positions; absorbed: the decode form. Both give the same result.
ae_status ae_mla_forward_materialized(const ae_backend *be, const ae_mla *m, ae_ptr x, int T,
                                      int pos0, ae_ptr pos, ae_ptr cache, ae_ptr y);
ae_status ae_mla_forward_absorbed(const ae_backend *be, const ae_mla *m, ae_ptr x, int T, int pos0,
                                  ae_ptr pos, ae_ptr cache, ae_ptr y);

// Training: B sequences of T tokens, positions 0..T-1 each. x: (B, T, D), y: (B, T, D).
// Saved activations live in an opaque struct; backward accumulates parameter gradients into
// `grad` (same dims) and writes dx (B, T, D) when dx is non-null. The activations borrow x (no
// copy): it must hold the same values when the backward runs, or be rebound to a buffer that
// does (ae_mla_acts_rebind: whole-model training that keeps the activations while the buffer
// x was in is reused, then recomputes x).
typedef struct ae_mla_acts ae_mla_acts;
ae_status ae_mla_train_forward(const ae_backend *be, const ae_mla *m, ae_ptr x, int B, int T,
                               ae_ptr y, ae_mla_acts **acts);
void ae_mla_acts_rebind(ae_mla_acts *a, ae_ptr x);
// y (B, T, D) = the forward's output again, from the kept attention output (o_proj alone; the
// same bits as the forward's y).
void ae_mla_acts_output(const ae_backend *be, const ae_mla *m, const ae_mla_acts *a, ae_ptr y);
ae_status ae_mla_backward(const ae_backend *be, const ae_mla *m, const ae_mla_acts *acts,
                          ae_ptr dy, ae_ptr dx, ae_mla *grad);
void ae_mla_acts_free(ae_mla_acts *a);

// Initialisation. Random: matrices ~ N(0, std²) (std = the teacher's initializer_range), norms 1,
// made on the backend by fill_normal (the same values on every backend) from one seed per
// tensor drawn from rng.
ae_status ae_mla_init_random(ae_mla *m, float std, ae_rng *rng);

// Teacher init: from a Qwen3 GQA module (host arrays: wq (Hq*hd, D), wk/wv (Hkv*hd, D),
// wo (D, Hq*hd), q_norm/k_norm (hd)) by low-rank factorisation on the host; method in
// docs/TARGETS.md. Requires H == Hq. Reports the relative Frobenius reconstruction error of the
// factorised key/value maps in *kv_rel_err.
typedef struct {
    int Hq, Hkv, hd;
    const float *wq, *wk, *wv, *wo, *q_norm, *k_norm;
    // (D) the layer's input_layernorm weight, or NULL (taken as 1): models the typical layer
    // input x = input_norm ⊙ z with z of unit RMS, which sets the scales and weights the
    // factorisation (see mla_init.c).
    const float *input_norm;
} ae_gqa_view;
ae_status ae_mla_init_from_teacher(ae_mla *m, const ae_gqa_view *t, double *kv_rel_err);

// Teacher inits from the literature (issue 8), all on the same folding and K/V factorisation:
// they differ in which teacher rotary components become the student's rope part (methods in
// mla_init.c, mla_init_mha2mla.c, mla_init_transmla.c; docs/TARGETS.md).
typedef enum {
    AE_MLA_INIT_TEACHER = 1,  // every (hd/dr)-th teacher pair, shared key = mean over kv heads
    AE_MLA_INIT_MHA2MLA = 2,  // per rope slot the pair of largest query·key norm score
    AE_MLA_INIT_TRANSMLA = 3, // per rope slot the top principal component of the window's keys
} ae_mla_init_method;

// Figures of merit of one initialised module, computed from its returned weights (except
// kv_rel_err, which comes from the singular values of the factorised matrix).
typedef struct {
    double kv_rel_err;      // ‖W − W_R‖_F / ‖W‖_F of the stacked nope keys and values
    double rope_logit_err;  // relative error of the rope-part logit forms under isotropic
                            // inputs, summed over heads and slots (mla_init_eval.c)
    double rope_key_energy; // fraction of the input-weighted energy of the teacher's keys in
                            // the rope windows that the shared rope key captures
    double qk_logit_err;    // relative error of the whole q·k logit forms (rope at the real
                            // frequencies + nope through the latent), over relative distances
    int rope_shifted;       // rope slots rotating a teacher pair that is not their window's
                            // first at the slot's frequency (mha2mla; approximate rotation)
} ae_mla_init_stats;
ae_status ae_mla_init_teacher_method(ae_mla *m, const ae_gqa_view *t, ae_mla_init_method how,
                                     ae_mla_init_stats *stats);

#endif
