// Private helpers shared by the MLA files (attn_mla.c: parameters and inference; mla_train.c:
// training forward/backward; mla_init*.c: teacher initialisations; mla_svd.c: LAPACK SVD and
// symmetric eigenvectors).
#ifndef AE_MODEL_MLA_INTERNAL_H
#define AE_MODEL_MLA_INTERNAL_H

#include "model/attn_mla.h"

// Validates the dims (positive sizes, dr even, dn >= 0); AE_ERR_ARG with a message otherwise.
ae_status mla_check_dims(const ae_mla_dims *d);

// Query path for M tokens at positions pos (M, I32): q (M, H, dn+dr), RoPE applied to the
// q_rope slices. With q_lora_rank > 0, qa_raw (M, q_lora) receives x·Wqaᵀ and qa_n (M, q_lora)
// its RMSNorm (qa_raw may be null when not needed: then qa_n holds both steps in place).
void mla_q_forward(const ae_backend *be, const ae_mla *m, ae_ptr x, int M, ae_ptr pos, ae_ptr q,
                   ae_ptr qa_raw, ae_ptr qa_n);

// The attention scale 1/sqrt(dn + dr) of both forms.
float mla_scale(const ae_mla_dims *d);

// Scratch of the materialised form over S cached positions: [k_nope | v] of every head, then
// the keys [k_nope | k_rope] and values apart (act dtype).
typedef struct {
    ae_ptr kvb; // (S, H, dn+dv)
    ae_ptr K;   // (S, H, dn+dr)
    ae_ptr V;   // (S, H, dv)
} mla_kv_bufs;
// Allocates kv from s; 0 when it does not fit (s->failed).
int mla_kv_alloc(ae_scratch *s, const ae_mla_dims *d, int S, mla_kv_bufs *kv);
// The one K/V split of kv_b_proj's output: over n rows of H heads, kvb (n, H, dn+dv) per head
// [k_nope | v] → k_nope into the first dn columns of K (n, H, dn+dr) (the rope columns are left
// to the caller) and v into V (n, H, dv).
void mla_kv_split(const ae_backend *be, const ae_mla_dims *d, int n, ae_ptr kvb, ae_ptr K,
                  ae_ptr V);
// Its backward, the join: dK's nope columns (n, H, dn+dr) and dV (n, H, dv) into
// dkvb (n, H, dn+dv) per head [dk_nope | dv].
void mla_kv_join(const ae_backend *be, const ae_mla_dims *d, int n, ae_ptr dK, ae_ptr dV,
                 ae_ptr dkvb);
// Materialised attention of T query rows at positions pos0..pos0+T-1 over the S = pos0 + T
// cached latents lat (S rows of [RMSNorm(c) (R) | RoPE(k_rope) (dr)], row stride ldl): K/V of
// every head decompressed through Wkvb (one GEMM), the shared rope key joined to every head,
// then causal `attention` (tensor cores on cuda). q (T, H, dn+dr) rope'd; o (T, H, dv).
void mla_attend_materialized(const ae_backend *be, const ae_mla *m, int T, int pos0, ae_ptr q,
                             ae_ptr lat, int64_t ldl, const mla_kv_bufs *kv, ae_ptr o);

// ---- Teacher initialisations (mla_init.c: shared steps and --init teacher; mla_init_mha2mla.c,
// mla_init_transmla.c: the literature's rope/nope splits; mla_init_eval.c: figures of merit).

// The module's tensors as host arrays (a cpu-backend module: the factorisation runs on the host).
typedef struct {
    float *wq, *wqa, *q_a_norm, *wqb, *wkva, *kv_a_norm, *wkvb, *wo;
} mla_host;

// The student's maps before factorisation, in double on the host. Every init fills Q, the nope
// key rows of W and kr from the folded teacher rows Qf/Kf (step 1 of mla_init.c); the value
// rows of W are the teacher's Wv. A "slot" j < dr/2 is a student rope pair; its "window" is
// the teacher pairs j·s .. j·s+s-1 (s = hd/dr), the first of which has the slot's frequency.
typedef struct {
    const ae_gqa_view *t;
    int Hq, Hkv, hd, D, dn, dr, s, half; // half = hd/2: teacher pair i is dims (i, i + half)
    double *Qf; // (Hq*hd, D) folded query rows, head by head (diag(q_norm)·Wq_h/rho)
    double *Kf; // (Hkv*hd, D) folded key rows
    double *Q;  // (Hq*(dn+dr), D) student query rows per head: [nope | rope, interleaved]
    double *W;  // (Hkv*(dn+hd), D) nope key rows of every kv head (Hkv*dn), then the values
    double *kr; // (dr, D) shared rope key rows, interleaved (row 2j: x, 2j+1: y of slot j)
} mla_maps;

// Checks the student dims against the teacher (method: the init's name, for messages).
ae_status mla_check_teacher(const ae_mla *m, const ae_gqa_view *t, const char *method);
// Allocates the maps and fills Qf, Kf and the value rows of W; AE_ERR_NOMEM otherwise.
ae_status mla_maps_init(mla_maps *mp, const ae_mla_dims *d, const ae_gqa_view *t);
void mla_maps_free(mla_maps *mp);
// Teacher dim of student rope dim e (< dr) and of student nope dim n (< dn) when slot j rotates
// teacher pair pair[j] (dr/2 entries; NULL: the windows' first pairs, j·s): rope_dim[2j] =
// pair[j], rope_dim[2j+1] = pair[j] + half; the nope dims are the others in increasing order.
void mla_dim_maps(const mla_maps *mp, const int *pair, int *rope_dim, int *nope_dim);
// Fills Q, the nope key rows of W and kr for the split pair[] (as mla_dim_maps): query rows
// copied, nope key rows copied, kr = the mean over kv heads of the rope pairs' folded rows.
ae_status mla_maps_split(mla_maps *mp, const int *pair);
// Factorises Q (q_lora_rank > 0) and W, writes every tensor of the host module (wkva's last dr
// rows = kr, o_proj = the teacher's); *kv_rel_err = the relative error of W's truncation.
ae_status mla_maps_finish(const ae_mla_dims *d, const mla_maps *mp, mla_host *m, double *kv_rel_err);
// <a ⊙ w, b ⊙ w> over D entries (w NULL: 1): the input-weighted inner product of two rows.
double mla_wdot(const double *a, const double *b, const float *w, int D);

// The literature's splits (they fill Q, W's nope rows and kr like mla_maps_split).
// MHA2MLA: per slot the window's pair of largest weight-based score; *shifted = the slots whose
// chosen pair is not the window's first (rotated at the slot's frequency: approximate).
ae_status mla_fill_mha2mla(mla_maps *mp, int *shifted);
// TransMLA (RoRoPE + FreqFold): per slot the top principal component of the window's keys.
ae_status mla_fill_transmla(mla_maps *mp);

// Figures of merit from the returned host module (mla_init_eval.c): rope_logit_err and
// rope_key_energy of stats (see ae_mla_init_stats).
void mla_eval_rope(const ae_mla_dims *d, const mla_maps *mp, const mla_host *m, ae_mla_init_stats *stats);

// Eigenvector of the largest eigenvalue of the symmetric (n, n) matrix A through LAPACK dsyev:
// u (n) unit, *lambda its eigenvalue; the sign makes the entry of largest magnitude positive.
ae_status mla_sym_top_eig(int n, const double *A, double *u, double *lambda);

// Thin SVD of the row-major (M, N) matrix A through LAPACK dgesvd: A = U·diag(S)·Vt with
// k = min(M, N), U (M, k), S (k) descending, Vt (k, N) — or (N, N) (a full orthonormal basis
// of the input space) when full_vt.
ae_status mla_svd(int M, int N, const double *A, double *U, double *S, double *Vt, int full_vt);

#endif
