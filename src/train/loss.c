// Distillation losses through the op interface: vocabulary-chunked KD (KL teacher ‖ student at
// temperature τ), cosine feature matching and (normalised) MSE, each with its gradient.
//
// KD, per token i with zt = ht_i·Wtᵀ, zs = hs_i·Wsᵀ (V logits each), pt = softmax(zt/τ),
// ps = softmax(zs/τ):  ℓ_i = τ²·Σ_v pt_v (log pt_v − log ps_v),  loss = mean_i ℓ_i,
//   ∂loss/∂zs_v = τ·(ps_v − pt_v)/N,  dhs_i = Σ_v ∂/∂zs_v · Ws_v,  dWs_v += Σ_i ∂/∂zs_v · hs_i.
// Tokens are processed in blocks of AE_KD_ROWS (the environment's AE_KD_ROWS overrides it:
// fewer rows hold fewer logits, for memory-bound runs and A/B measurements); each block makes two
// passes over the vocabulary in chunks of `chunk` rows of W: pass 1 computes the chunk's logits
// (two GEMMs into F32) and merges them into each token's online softmax statistics
// (softmax_stats: running max, sum of exp and argmax, teacher and student); pass 2 adds the
// chunk's KL to each token's row (kd_chunk, which also writes the chunk's logit gradient) and
// turns that gradient into dhs and dWs (matmul_bwd). Pass 2 needs the same logits again: pass 1
// keeps them ("held" chunks, up to a byte budget: every chunk by default, rows x V x 8 bytes,
// 2.3 GiB for 2048 rows of Qwen3's vocabulary) and pass 2 recomputes only the chunks past the
// budget (the same GEMMs, the same bits), so the result does not depend on the budget. Holding
// everything saves two of the five LM-head GEMMs of a step's KL term. At most rows × chunk
// logits of each side are live besides the held ones, never N×V. The per-row KL is summed on
// the host in double.
#include "train/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/mem.h"

#define KD_DEFAULT_CHUNK 4096 // vocabulary rows per chunk when chunk <= 0

// The buffers of one KD computation, for blocks of up to R tokens and chunks of up to C columns.
typedef struct {
    ae_scratch mem;
    int n_hold;        // chunks whose logits pass 1 keeps for pass 2 (the first n_hold)
    ae_ptr hold;       // (n_hold, 2, R, C) F32  held logits: teacher then student, per chunk
    ae_ptr zt, zs;     // (R, C) F32  logits of one chunk past the held ones, teacher and student
    ae_ptr dzs;        // (R, C) act  ∂loss/∂zs of the chunk (null: no gradient wanted)
    ae_ptr st, ss;     // (R, 2) F32  softmax statistics (max, sum of exp) of zt/τ and zs/τ
    ae_ptr at, as;     // (R) I32     argmax of zt and of zs
    ae_ptr kl;         // (R) F32     KL of each token of the block
    float *hkl;        // (R) host copy of kl
    int32_t *hat, *has;// (R) host copies of at and as
} kd_bufs;

static void kd_bufs_free(kd_bufs *b, const ae_backend *be) {
    if (b->n_hold > 0) be->free(be, b->hold);
    ae_scratch_free(&b->mem);
    free(b->hkl);
    free(b->hat);
    free(b->has);
}

// Tokens per block: AE_KD_ROWS, or the environment's AE_KD_ROWS.
static int kd_rows(void) { return ae_env_int("AE_KD_ROWS", AE_KD_ROWS, 1, 1L << 20); }

// Chunks of R x C logits pass 1 keeps for pass 2, out of n: all of them, or as many as the
// environment's AE_KD_HOLD_MIB (a budget in MiB for both sides; 0 keeps none: the recompute of
// every chunk, as before; for measurements and low-memory runs) allows.
static int kd_hold_chunks(int R, int C, int n) {
    const char *env = getenv("AE_KD_HOLD_MIB");
    if (!env || !*env) return n;
    double mib = strtod(env, NULL), per = 2.0 * 4.0 * R * C / 1048576.0;
    int k = mib > 0 ? (int)(mib / per) : 0;
    return k < n ? k : n;
}

static ae_status kd_bufs_init(kd_bufs *b, const ae_backend *be, int R, int C, int n_chunks,
                              int grad) {
    ae_scratch *s = &b->mem;
    size_t rc = (size_t)R * C;
    memset(b, 0, sizeof *b);
    ae_scratch_init(s, be);
    b->n_hold = kd_hold_chunks(R, C, n_chunks);
    if (b->n_hold > 0) {
        b->hold = be->alloc(be, 2 * rc * (size_t)b->n_hold, AE_DT_F32);
        if (ae_ptr_is_null(b->hold)) b->n_hold = 0; // no room: pass 2 recomputes every chunk
    }
    if (b->n_hold < n_chunks) {
        b->zt = ae_scratch_alloc(s, rc, AE_DT_F32);
        b->zs = ae_scratch_alloc(s, rc, AE_DT_F32);
    }
    if (grad) b->dzs = ae_scratch_alloc(s, rc, be->act_dtype);
    b->st = ae_scratch_alloc(s, 2 * (size_t)R, AE_DT_F32);
    b->ss = ae_scratch_alloc(s, 2 * (size_t)R, AE_DT_F32);
    b->at = ae_scratch_alloc(s, (size_t)R, AE_DT_I32);
    b->as = ae_scratch_alloc(s, (size_t)R, AE_DT_I32);
    b->kl = ae_scratch_alloc(s, (size_t)R, AE_DT_F32);
    b->hkl = ae_malloc(sizeof(float) * (size_t)R);
    b->hat = ae_malloc(sizeof(int32_t) * (size_t)R);
    b->has = ae_malloc(sizeof(int32_t) * (size_t)R);
    if (!s->failed && b->hkl && b->hat && b->has) return AE_OK;
    kd_bufs_free(b, be);
    return ae_errorf(AE_ERR_NOMEM, "out of %s memory for the KD loss buffers (%d tokens x %d "
                     "vocabulary rows)", be->name, R, C);
}

// Where chunk c's logits are: its held slot, or the one-chunk buffers.
//   zt, zs: (nb, cv) F32 at the returned pointers
static void chunk_slot(const kd_bufs *b, int c, int R, int C, ae_ptr *zt, ae_ptr *zs) {
    if (c < b->n_hold) {
        size_t rc = (size_t)R * C;
        *zt = ae_ptr_at(b->hold, 2 * (size_t)c * rc);
        *zs = ae_ptr_at(b->hold, (2 * (size_t)c + 1) * rc);
    } else {
        *zt = b->zt;
        *zs = b->zs;
    }
}

// Logits of vocabulary rows v0 .. v0+cv-1 for the nb tokens of a block, teacher and student.
//   zt, zs: (nb, cv) F32;  ht, hs: (nb, D) act;  Wt, Ws: (V, D) wt
static void chunk_logits(const ae_backend *be, ae_ptr zt, ae_ptr zs, ae_ptr ht, ae_ptr hs,
                         ae_ptr Wt, ae_ptr Ws, int v0, int nb, int D, int cv) {
    ae_matmul(be, zt, ht, ae_ptr_at(Wt, (size_t)v0 * D), nb, D, cv);
    ae_matmul(be, zs, hs, ae_ptr_at(Ws, (size_t)v0 * D), nb, D, cv);
}

ae_status ae_kd_loss(const ae_backend *be, ae_ptr ht, ae_ptr Wt, ae_ptr hs, ae_ptr Ws, int N,
                     int D, int V, float tau, int chunk, float grad_scale, ae_ptr dhs, ae_ptr dWs,
                     double *loss, int *top1) {
    if (N <= 0 || D <= 0 || V <= 0)
        return ae_errorf(AE_ERR_ARG, "kd loss: N %d, D %d, V %d must be positive", N, D, V);
    if (!(tau > 0.0f)) return ae_errorf(AE_ERR_ARG, "kd loss: temperature %g must be > 0", (double)tau);
    if (!be->softmax_stats || !be->kd_chunk)
        return ae_errorf(AE_ERR_UNSUPPORTED, "kd loss: the %s backend has no training ops", be->name);
    if (chunk <= 0) chunk = KD_DEFAULT_CHUNK;
    if (chunk > V) chunk = V;
    int grad = !ae_ptr_is_null(dhs) || !ae_ptr_is_null(dWs);
    kd_bufs b;
    const int rows = kd_rows(), R = N < rows ? N : rows;
    AE_TRY(kd_bufs_init(&b, be, R, chunk, (V + chunk - 1) / chunk, grad));
    if (!ae_ptr_is_null(dhs)) be->fill(be, dhs, (size_t)N * D, 0.0f);
    float inv_tau = 1.0f / tau, gscale = grad_scale * tau / (float)N;
    double total = 0.0;
    int agree = 0;
    ae_status st = AE_OK;
    for (int r0 = 0; r0 < N && st == AE_OK; r0 += rows) {
        int nb = N - r0 < rows ? N - r0 : rows;
        ae_ptr htb = ae_ptr_at(ht, (size_t)r0 * D), hsb = ae_ptr_at(hs, (size_t)r0 * D);
        // pass 1: softmax statistics and argmax over the whole vocabulary
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int cv = V - v0 < chunk ? V - v0 : chunk;
            ae_ptr zt, zs;
            chunk_slot(&b, v0 / chunk, R, chunk, &zt, &zs);
            chunk_logits(be, zt, zs, htb, hsb, Wt, Ws, v0, nb, D, cv);
            be->softmax_stats(be, b.st, b.at, zt, cv, nb, cv, v0, inv_tau);
            be->softmax_stats(be, b.ss, b.as, zs, cv, nb, cv, v0, inv_tau);
        }
        // pass 2: KL per token, and the chunk's gradient into dhs and dWs
        be->fill(be, b.kl, (size_t)nb, 0.0f);
        for (int v0 = 0; v0 < V; v0 += chunk) {
            int cv = V - v0 < chunk ? V - v0 : chunk, c = v0 / chunk;
            ae_ptr zt, zs;
            chunk_slot(&b, c, R, chunk, &zt, &zs);
            if (c >= b.n_hold) chunk_logits(be, zt, zs, htb, hsb, Wt, Ws, v0, nb, D, cv);
            be->kd_chunk(be, b.kl, b.dzs, cv, zt, zs, cv, b.st, b.ss, nb, cv, inv_tau, gscale);
            if (grad)
                ae_matmul_bwd(be, ae_ptr_at(dhs, (size_t)r0 * D), ae_ptr_at(dWs, (size_t)v0 * D),
                              b.dzs, hsb, ae_ptr_at(Ws, (size_t)v0 * D), nb, D, cv);
        }
        st = be->download(be, b.hkl, AE_DT_F32, b.kl, (size_t)nb);
        if (st == AE_OK) st = be->download(be, b.hat, AE_DT_I32, b.at, (size_t)nb);
        if (st == AE_OK) st = be->download(be, b.has, AE_DT_I32, b.as, (size_t)nb);
        for (int i = 0; i < nb && st == AE_OK; i++) {
            total += b.hkl[i];
            agree += b.hat[i] == b.has[i];
        }
    }
    kd_bufs_free(&b, be);
    if (st != AE_OK) return st;
    *loss = (double)tau * tau * total / N;
    if (top1) *top1 = agree;
    return AE_OK;
}

// *mean = the mean of n per-row losses in backend memory (F32 or F64), summed in double.
static ae_status rows_mean(const ae_backend *be, ae_ptr rows, int n, double *mean) {
    int f64 = rows.dtype == AE_DT_F64;
    void *h = ae_malloc((f64 ? sizeof(double) : sizeof(float)) * (size_t)n); // (n)
    if (!h) return AE_ERR_NOMEM;
    ae_status st = be->download(be, h, f64 ? AE_DT_F64 : AE_DT_F32, rows, (size_t)n);
    double sum = 0.0;
    for (int i = 0; i < n && st == AE_OK; i++) sum += f64 ? ((double *)h)[i] : ((float *)h)[i];
    free(h);
    if (st == AE_OK) *mean = sum / n;
    return st;
}

ae_status ae_cosine_loss(const ae_backend *be, ae_ptr a, ae_ptr b, int N, int D, float grad_scale,
                         ae_ptr da, double *loss) {
    if (N <= 0 || D <= 0) return ae_errorf(AE_ERR_ARG, "cosine loss: N %d, D %d must be positive", N, D);
    if (!be->cosine_rows)
        return ae_errorf(AE_ERR_UNSUPPORTED, "cosine loss: the %s backend has no training ops", be->name);
    ae_ptr rows = be->alloc(be, (size_t)N, AE_DT_F32); // (N) 1 − cos per row
    if (ae_ptr_is_null(rows)) return AE_ERR_NOMEM;
    be->cosine_rows(be, rows, da, a, b, N, D, grad_scale / (float)N);
    ae_status st = rows_mean(be, rows, N, loss);
    be->free(be, rows);
    return st;
}

ae_status ae_mse_loss(const ae_backend *be, ae_ptr y, ae_ptr t, int N, int D, int normalized,
                      float grad_scale, ae_ptr dy, double *loss) {
    if (N <= 0 || D <= 0) return ae_errorf(AE_ERR_ARG, "mse loss: N %d, D %d must be positive", N, D);
    if (!be->mse_rows)
        return ae_errorf(AE_ERR_UNSUPPORTED, "mse loss: the %s backend has no training ops", be->name);
    ae_ptr rows = be->alloc(be, (size_t)N, AE_DT_F64); // (N) per-row losses
    if (ae_ptr_is_null(rows)) return AE_ERR_NOMEM;
    be->mse_rows(be, rows, dy, y, t, N, D, normalized, grad_scale / (float)N);
    ae_status st = rows_mean(be, rows, N, loss);
    be->free(be, rows);
    return st;
}
