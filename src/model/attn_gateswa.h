// GateSWA: a Qwen3 attention module with (a) a sliding window on some layers, (b) a sigmoid
// output gate before o_proj (Qwen "gated attention", G1 position) and (c) optional learned
// per-head attention sinks (gpt-oss style). q/k/v/o and q_norm/k_norm keep the teacher's shapes.
//
//   q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ;  q, k = RMSNorm per head (q_norm, k_norm); RoPE rotate-half
//   a = SDPA(q, k, v) with causal mask, window W on sliding layers (a query sees itself and
//       the W-1 positions before it: HF's sliding_window = W), sinks joining each head's softmax
//   g = x·Wgᵀ   (g_proj: Hq·hd outputs elementwise, or Hq outputs, one per head)
//   y = (a ⊙ sigmoid(g))·Woᵀ
// Tensors: q_proj, k_proj, v_proj, o_proj, q_norm, k_norm, g_proj (all ".weight"), and
// "sinks" (Hq) when enabled. Decode: sliding layers keep a ring buffer of W positions.
#ifndef AE_MODEL_ATTN_GATESWA_H
#define AE_MODEL_ATTN_GATESWA_H

#include "backend/ops.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/params.h"

typedef enum { AE_GATE_NONE = 0, AE_GATE_ELEMENTWISE = 1, AE_GATE_HEAD = 2 } ae_gate_kind;

typedef struct {
    int D, Hq, Hkv, hd;
    int window;         // 0: full attention layer; > 0: sliding window W
    ae_gate_kind gate;
    int sinks;          // 1: learned per-head sinks
    double rope_theta;
    float eps;
} ae_gswa_dims;

typedef struct {
    ae_gswa_dims d;
    const ae_backend *be; // owner of the tensors (wt dtype; sinks F32)
    ae_ptr wq;     // (Hq*hd, D)
    ae_ptr wk;     // (Hkv*hd, D)
    ae_ptr wv;     // (Hkv*hd, D)
    ae_ptr wo;     // (D, Hq*hd)
    ae_ptr q_norm; // (hd)
    ae_ptr k_norm; // (hd)
    ae_ptr wg;     // (Hq*hd, D) elementwise | (Hq, D) per head | null
    ae_ptr sinks;  // (Hq) F32 | null
} ae_gswa;

// Allocates zeroed parameters on `be` (also used for gradient buffers).
ae_status ae_gswa_init(ae_gswa *m, const ae_gswa_dims *d, const ae_backend *be);
void ae_gswa_free(ae_gswa *m);
// The parameters the dims call for, with their HF names.
ae_param_list ae_gswa_params(ae_gswa *m);

// Decode cache of one layer: full layers hold every position, sliding layers a ring of
// `window` slots (position j in slot j % window).
typedef struct {
    const ae_backend *be;
    int rows;    // capacity (positions) or window (ring)
    int ring;    // 1 for sliding layers
    int kv_dim;  // Hkv*hd
    ae_ptr k;    // (rows, Hkv, hd) act
    ae_ptr v;    // (rows, Hkv, hd) act
} ae_gswa_cache;
ae_status ae_gswa_cache_init(ae_gswa_cache *c, const ae_gswa_dims *d, int max_positions,
                             const ae_backend *be);
void ae_gswa_cache_free(ae_gswa_cache *c);

// Inference, one sequence: x (T, D) act at positions pos0..pos0+T-1 (pos: (T) I32 holding
// them) with the cache holding the positions before; y (T, D) act. With a ring, T may exceed
// the window (processed in chunks).
ae_status ae_gswa_forward(const ae_backend *be, const ae_gswa *m, ae_ptr x, int T, int pos0,
                          ae_ptr pos, ae_gswa_cache *cache, ae_ptr y);

// Training (B sequences of T tokens, positions 0..T-1 each): x, y, dx (B*T, D). The
// activations borrow x, as ae_mla_train_forward's do (rebind, output: the same contract).
typedef struct ae_gswa_acts ae_gswa_acts;
ae_status ae_gswa_train_forward(const ae_backend *be, const ae_gswa *m, ae_ptr x, int B, int T,
                                ae_ptr y, ae_gswa_acts **acts);
void ae_gswa_acts_rebind(ae_gswa_acts *a, ae_ptr x);
void ae_gswa_acts_output(const ae_backend *be, const ae_gswa *m, const ae_gswa_acts *a, ae_ptr y);
ae_status ae_gswa_backward(const ae_backend *be, const ae_gswa *m, const ae_gswa_acts *acts,
                           ae_ptr dy, ae_ptr dx, ae_gswa *grad);
void ae_gswa_acts_free(ae_gswa_acts *a);
// The same y with nothing kept for a backward (a frozen teacher): the inference projections
// (gswa_project_qkv: q and k normed and rotated by one qk_norm_rope, exactly the training
// forward's ops on cpu), no activations, no log-sum-exp.
ae_status ae_gswa_forward_batch(const ae_backend *be, const ae_gswa *m, ae_ptr x, int B, int T,
                                ae_ptr y);

// Random init: matrices ~ N(0, std²), norms 1, sinks 0, made on the backend by fill_normal
// (counter-based: the same values on every backend) from one seed per tensor drawn from rng.
ae_status ae_gswa_init_random(ae_gswa *m, float std, ae_rng *rng);
// Teacher init from the teacher's module t (same dims but gate/sinks/window): copies
// q/k/v/o/q_norm/k_norm; the gate starts neutral: Wg = 0 gives sigmoid(0) = 1/2 exactly, so
// o_proj is the teacher's ×2 (exact in binary floating point) and the module reproduces the
// teacher bit for bit before the window cuts in; sinks start at AE_GSWA_SINK_INIT (a sink
// weight below e^-30 of the softmax mass in practice).
#define AE_GSWA_SINK_INIT (-30.0f)
ae_status ae_gswa_init_from_teacher(ae_gswa *m, const ae_gswa *t);

#endif
