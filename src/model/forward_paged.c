// The model over a paged KV cache: layout planning and the batched forward step (model/paged.h).
// Dense parts (embedding, norms, projections, MLP/MoE, head) run once over all N rows of the
// step; attention writes each row's K/V (latent) into its page slot (paged_store) and reads
// each sequence's keys through its block table (attention_paged). MLA layers use the absorbed
// form (scores against the cached latent) for decode rows and short chunks, the materialised
// form (K/V decompressed from the sequence's latents) for long prefill chunks. With a graph
// handle (ae_paged_batch.graph) the step after its uploads is recorded as backend graphs, cut
// between layers, as ae_model_decode_step records the batch-1 decode (model/forward.c).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/mem.h"
#include "model/gswa_internal.h"
#include "model/mla_internal.h"
#include "model/moe.h"
#include "model/paged.h"

static int layer_group(const ae_model *m, int l) {
    if (m->layers[l].kind == AE_ATTN_MLA) return AE_PG_LATENT;
    return m->cfg.layer_types[l] == AE_LAYER_SLIDING ? AE_PG_SLIDING : AE_PG_FULL;
}

ae_status ae_paged_layout_init(ae_paged_layout *lo, const ae_model *m, int min_positions) {
    memset(lo, 0, sizeof *lo);
    int L = m->cfg.num_hidden_layers;
    if (min_positions <= 0 || L <= 0)
        return ae_errorf(AE_ERR_ARG, "paged layout: %d layers, %d positions per page", L,
                         min_positions);
    lo->layers = ae_calloc((size_t)L, sizeof *lo->layers);
    if (!lo->layers) return AE_ERR_NOMEM;
    lo->n_layers = L;
    for (int l = 0; l < L; l++) {
        ae_paged_layer *pl = &lo->layers[l];
        pl->group = layer_group(m, l);
        if (pl->group == AE_PG_LATENT) {
            ae_mla_dims d = ae_model_mla_dims(&m->cfg);
            pl->kv_dim = ae_mla_cache_dim(&d);
        } else {
            ae_gswa_dims d = ae_model_gswa_dims(&m->cfg, l);
            pl->kv_dim = d.Hkv * d.hd;
            if (pl->group == AE_PG_SLIDING) {
                if (lo->window && lo->window != d.window) {
                    ae_paged_layout_free(lo);
                    return ae_errorf(AE_ERR_UNSUPPORTED,
                                     "paged cache: sliding layers with different windows");
                }
                lo->window = d.window;
            }
        }
        pl->offset = lo->row_elems[pl->group];
        lo->row_elems[pl->group] += pl->group == AE_PG_LATENT ? pl->kv_dim : 2 * pl->kv_dim;
    }
    int64_t widest = 0;
    for (int g = 0; g < AE_PG_COUNT; g++) widest = lo->row_elems[g] > widest ? lo->row_elems[g] : widest;
    lo->page_stride = widest * min_positions;
    for (int g = 0; g < AE_PG_COUNT; g++)
        lo->page_size[g] = lo->row_elems[g] ? (int)(lo->page_stride / lo->row_elems[g]) : 0;
    return AE_OK;
}

void ae_paged_layout_free(ae_paged_layout *lo) {
    free(lo->layers);
    memset(lo, 0, sizeof *lo);
}

typedef struct {
    ae_scratch mem;
    ae_ptr x;   // (N, D) F32 residual stream
    ae_ptr xn;  // (N, D) act
    ae_ptr tmp; // (N, D) act
    ae_ptr g;   // (N, I) act
    ae_ptr u;   // (N, I) act
} pworkspace;

// GQA/GateSWA layer over pages: y (N, D) from xn (N, D).
static ae_status gswa_paged(const ae_backend *be, const ae_gswa *m, const ae_paged_layout *lo,
                            const ae_paged_layer *pl, const ae_paged_batch *b, ae_ptr x, ae_ptr y) {
    const ae_gswa_dims *d = &m->d;
    int N = b->N, g = pl->group, kvd = d->Hkv * d->hd;
    size_t qd = (size_t)d->Hq * d->hd;
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr q = ae_scratch_alloc(&s, (size_t)N * qd, at);  // (N, Hq, hd)
    ae_ptr k = ae_scratch_alloc(&s, (size_t)N * 2 * kvd, at); // (N, Hkv, hd), then v
    ae_ptr v = ae_ptr_at(k, (size_t)N * kvd);                 // (N, Hkv, hd)
    ae_ptr a = ae_scratch_alloc(&s, (size_t)N * qd, at);  // (N, Hq, hd)
    size_t gd = gswa_gate_dim(d);
    ae_ptr gt = gd ? ae_scratch_alloc(&s, (size_t)N * gd, at) : ae_ptr_null(); // (N, gate_dim)
    if (s.failed) {
        ae_scratch_free(&s);
        return ae_errorf(AE_ERR_NOMEM, "paged forward: out of memory for %d rows", N);
    }
    gswa_project_qkv(be, m, x, N, b->pos, q, k, v, gt); // one GEMV + one norm/rope launch at decode
    ae_ptr kp = ae_ptr_at(lo->pool, (size_t)pl->offset), vp = ae_ptr_at(lo->pool, (size_t)(pl->offset + kvd));
    int P = lo->page_size[g];
    int64_t ld = lo->row_elems[g];
    if (N == 1) { // one row [k | v]: the layer's columns of a page row, one store
        be->paged_store(be, kp, lo->page_stride, P, ld, k, 2 * kvd, b->slot[g], 1, 2 * kvd);
    } else {
        be->paged_store(be, kp, lo->page_stride, P, ld, k, kvd, b->slot[g], N, kvd);
        be->paged_store(be, vp, lo->page_stride, P, ld, v, kvd, b->slot[g], N, kvd);
    }
    ae_paged_attn_args pa = {.N = N, .Hq = d->Hq, .Hkv = d->Hkv, .dk = d->hd, .dv = d->hd,
                             .page_size = P, .max_blocks = b->max_blocks[g],
                             .page_stride = lo->page_stride, .k_stride = (int)ld,
                             .v_stride = (int)ld, .window = d->window,
                             .scale = gswa_attn_scale(d), .sinks = m->sinks, .seq = b->seq,
                             .pos = b->pos, .block_table = b->table[g], .n_runs = b->n_runs,
                             .runs = b->runs};
    be->attention_paged(be, &pa, a, q, kp, vp);
    gswa_gated_out(be, m, a, gt, N, y);
    ae_scratch_free(&s);
    return AE_OK;
}

// Prefill runs of at least this many rows take the materialised form (mla_paged_materialize);
// decode rows and shorter runs the absorbed form. For a run of n rows over S keys the
// materialised form does S·H·R·(dn+dv) multiply-adds to decompress the latents plus about
// n·S·H·(dn+dr+dv) in attention, the absorbed form n·S·H·(2R+dr): at the 8B student's dims
// (R 512, dn = dr = 64, dv 128) equal at n ~ 120, and the materialised attention runs on the
// GQA tensor-core kernel. AE_PAGED_MLA_MATERIALIZE_MIN=n (n >= 1) overrides it (tests,
// measurements; a large n keeps every row absorbed).
enum { MLA_MATERIALIZE_MIN = 128 };

static int mla_materialize_min(void) {
    return ae_env_int("AE_PAGED_MLA_MATERIALIZE_MIN", MLA_MATERIALIZE_MIN, 1, 1L << 30);
}

// attention_paged over the rows outside the runs flagged in mat: one call per maximal range of
// such rows, with the runs inside it renumbered (tmp: room for pa->n_runs runs).
static void attend_other_rows(const ae_backend *be, const ae_paged_attn_args *pa,
                              const char *mat, ae_ptr out, ae_ptr q, ae_ptr kv,
                              ae_paged_run *tmp) {
    size_t ldq = (size_t)pa->Hq * pa->dk, ldo = (size_t)pa->Hq * pa->dv;
    int r = 0; // first row not yet covered
    for (int i = 0; i <= pa->n_runs; i++) {
        if (i < pa->n_runs && !mat[i]) continue;
        int end = i < pa->n_runs ? pa->runs[i].first : pa->N;
        if (end > r) {
            ae_paged_attn_args sub = *pa;
            sub.N = end - r;
            sub.seq = ae_ptr_at(pa->seq, (size_t)r);
            sub.pos = ae_ptr_at(pa->pos, (size_t)r);
            sub.n_runs = 0;
            sub.runs = tmp;
            for (int k = 0; k < pa->n_runs; k++) {
                const ae_paged_run *u = &pa->runs[k];
                if (u->first < r || u->first + u->n > end) continue;
                tmp[sub.n_runs] = *u;
                tmp[sub.n_runs++].first -= r;
            }
            be->attention_paged(be, &sub, ae_ptr_at(out, (size_t)r * ldo),
                                ae_ptr_at(q, (size_t)r * ldq), kv, kv);
        }
        if (i < pa->n_runs) r = pa->runs[i].first + pa->runs[i].n;
    }
}

// The materialised runs of one MLA layer: marks them in mat (pa->n_runs) and allocates their
// scratch from s for the longest (its latents gathered out of the pages, then K/V of every
// head): 0 runs when the backend cannot gather or the scratch does not fit (every row absorbed
// then; the cost is time, not the step).
static int mla_pick_materialized(const ae_backend *be, const ae_mla_dims *d,
                                 const ae_paged_attn_args *pa, char *mat, ae_scratch *s,
                                 ae_ptr *latc, mla_kv_bufs *kv) {
    int n = 0, S = 0, min = mla_materialize_min();
    for (int i = 0; i < pa->n_runs; i++) {
        const ae_paged_run *u = &pa->runs[i];
        mat[i] = be->paged_gather && u->n >= min;
        if (mat[i] && u->pos0 + u->n > S) S = u->pos0 + u->n;
        n += mat[i];
    }
    if (n == 0) return 0;
    *latc = ae_scratch_alloc(s, (size_t)S * ae_mla_cache_dim(d), be->act_dtype); // (S, R+dr)
    if (mla_kv_alloc(s, d, S, kv)) return n;
    memset(mat, 0, (size_t)pa->n_runs);
    return 0;
}

// The projections of an MLA layer's N rows, as the contiguous absorbed form makes them
// (attn_mla.c): q (before its rope) and the new latent rows [c | kr] in one matmul group (one
// GEMV launch at decode on cuda; separate products on cpu), then the latent normed, both ropes
// and q's rotated rope part into the absorbed query rows qt in one mla_decode_prep (where the
// backend has it; else the reference ops it stands for, bit for bit). q's rope part is left as
// projected. qt's first R values of each row are the caller's (zero here without a nope part).
//   x: (N, D)  q: (N, H, dn+dr)  qa: (N, q_lora)  lat: (N, R+dr)  qt: (N, H, R+dr)
// absorb (mla_decode_absorb present, AE_MLA_FUSE unset or 1): the prep and qt's latent part
// q_nope_h · Wuk_h in that one call (one launch on cuda), else the caller's per-head gemm.
static void mla_paged_project(const ae_backend *be, const ae_mla *m, ae_ptr x, int N, ae_ptr pos,
                              ae_ptr q, ae_ptr qa, ae_ptr lat, ae_ptr qt, int absorb) {
    const ae_mla_dims *d = &m->d;
    int H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dq = dn + dr, ql = d->q_lora_rank;
    int Cd = ae_mla_cache_dim(d);
    ae_ptr ys[2] = {ql == 0 ? q : qa, lat}, ws[2] = {ql == 0 ? m->wq : m->wqa, m->wkva};
    int Ns[2] = {ql == 0 ? H * dq : ql, Cd};
    ae_matmul_group(be, 2, ys, x, ws, Ns, N, d->D);
    if (ql > 0) { // q = RMSNorm(x·Wqaᵀ)·Wqbᵀ
        be->rmsnorm(be, qa, qa, m->q_a_norm, N, ql, ql, d->eps);
        ae_matmul(be, q, qa, m->wqb, N, ql, H * dq);
    }
    ae_mla_prep_args pp = {.T = N, .H = H, .R = R, .dr = dr, .dn = dn, .ldkv = Cd, .eps = d->eps,
                           .theta = d->rope_theta, .mode = AE_ROPE_INTERLEAVED};
    if (absorb) {
        be->mla_decode_absorb(be, &pp, lat, q, qt, m->kv_a_norm, m->wkvb,
                              (int64_t)(dn + d->dv) * R, pos);
        return;
    }
    if (dn == 0) be->fill(be, qt, (size_t)N * H * Cd, 0.0f); // no nope part: latent half is 0
    if (be->mla_decode_prep) {
        be->mla_decode_prep(be, &pp, lat, q, qt, m->kv_a_norm, pos);
        return;
    }
    be->rmsnorm(be, lat, lat, m->kv_a_norm, N, R, Cd, d->eps);
    be->rope(be, ae_ptr_at(lat, (size_t)R), pos, N, 1, Cd, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
    ae_ptr qr = ae_ptr_at(qt, (size_t)R); // (N, H, Cd) rows, rope part
    be->copy_rows(be, qr, Cd, ae_ptr_at(q, (size_t)dn), dq, N * H, dr);
    be->rope(be, qr, pos, N, H, Cd, dr, d->rope_theta, AE_ROPE_INTERLEAVED);
}

// MLA layer over pages (see ae_mla_forward_absorbed): decode rows and short runs in the
// absorbed form (scores against the cached latent), long prefill runs materialised
// (mla_attend_materialized over the sequence's latents gathered out of its pages).
static ae_status mla_paged(const ae_backend *be, const ae_mla *m, const ae_paged_layout *lo,
                           const ae_paged_layer *pl, const ae_paged_batch *b, ae_ptr x, ae_ptr y) {
    const ae_mla_dims *d = &m->d;
    int N = b->N, H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv;
    int dq = dn + dr, Cd = ae_mla_cache_dim(d), dkv = dn + dv, ql = d->q_lora_rank;
    int g = AE_PG_LATENT, nr = b->n_runs;
    ae_dtype at = be->act_dtype;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr q = ae_scratch_alloc(&s, (size_t)N * H * dq, at);             // (N, H, dn+dr)
    ae_ptr qa = ae_scratch_alloc(&s, (size_t)N * (ql > 0 ? ql : 1), at); // (N, q_lora)
    ae_ptr lat = ae_scratch_alloc(&s, (size_t)N * Cd, at);               // (N, R+dr)
    ae_ptr qt = ae_scratch_alloc(&s, (size_t)N * H * Cd, at);            // (N, H, R+dr)
    ae_ptr ctx = ae_scratch_alloc(&s, (size_t)N * H * R, at);            // (N, H, R)
    ae_ptr o = ae_scratch_alloc(&s, (size_t)N * H * dv, at);             // (N, H, dv)
    char *mat = ae_calloc((size_t)nr + 1, 1);                            // (n_runs) materialised
    ae_paged_run *tmp = ae_calloc((size_t)nr + 1, sizeof *tmp);
    if (s.failed || !mat || !tmp) {
        ae_scratch_free(&s);
        free(mat);
        free(tmp);
        return ae_errorf(AE_ERR_NOMEM, "paged forward: out of memory for %d rows", N);
    }
    const int absorb = ae_env_int("AE_MLA_FUSE", 1, 0, 1) && be->mla_decode_absorb;
    mla_paged_project(be, m, x, N, b->pos, q, qa, lat, qt, absorb);
    ae_ptr cp = ae_ptr_at(lo->pool, (size_t)pl->offset);
    int P = lo->page_size[g];
    int64_t ld = lo->row_elems[g];
    be->paged_store(be, cp, lo->page_stride, P, ld, lat, Cd, b->slot[g], N, Cd);
    if (dn > 0 && !absorb) { // per head: q̃_nope (N, R) = q_nope_h (N, dn) · Wuk_h (dn, R)
        ae_gemm_args ga = {.M = N, .N = R, .K = dn, .batch = H, .lda = (int64_t)H * dq, .sa = dq,
                           .ldb = R, .sb = (int64_t)dkv * R, .ldy = (int64_t)H * Cd, .sy = Cd,
                           .alpha = 1.0f};
        be->gemm(be, &ga, qt, q, m->wkvb);
    }
    ae_paged_attn_args pa = {.N = N, .Hq = H, .Hkv = 1, .dk = Cd, .dv = R, .page_size = P,
                             .max_blocks = b->max_blocks[g], .page_stride = lo->page_stride,
                             .k_stride = (int)ld, .v_stride = (int)ld, .window = 0,
                             .scale = mla_scale(d), .sinks = ae_ptr_null(), .seq = b->seq,
                             .pos = b->pos, .block_table = b->table[g], .n_runs = nr,
                             .runs = b->runs};
    ae_scratch ms; // the materialised runs' scratch
    ae_scratch_init(&ms, be);
    ae_ptr latc = ae_ptr_null();
    mla_kv_bufs kv;
    int n_mat = mla_pick_materialized(be, d, &pa, mat, &ms, &latc, &kv);
    if (n_mat > 0) // the materialised runs read q with its rope part rotated
        be->rope(be, ae_ptr_at(q, (size_t)dn), b->pos, N, H, dq, dr, d->rope_theta,
                 AE_ROPE_INTERLEAVED);
    attend_other_rows(be, &pa, mat, ctx, qt, cp, tmp);
    // per head: o_h = ctx_h · Wuv_hᵀ (the materialised runs' rows are overwritten below)
    ae_gemm_args gb = {.M = N, .N = dv, .K = R, .batch = H, .trans_b = 1, .lda = (int64_t)H * R,
                       .sa = R, .ldb = R, .sb = (int64_t)dkv * R, .ldy = (int64_t)H * dv, .sy = dv,
                       .alpha = 1.0f};
    be->gemm(be, &gb, o, ctx, ae_ptr_at(m->wkvb, (size_t)dn * R));
    for (int i = 0; n_mat > 0 && i < nr; i++) {
        const ae_paged_run *u = &b->runs[i];
        if (!mat[i]) continue;
        int S = u->pos0 + u->n;
        be->paged_gather(be, latc, Cd, cp, lo->page_stride, P, ld,
                         ae_ptr_at(b->table[g], (size_t)u->seq * b->max_blocks[g]), S, Cd);
        mla_attend_materialized(be, m, u->n, u->pos0, ae_ptr_at(q, (size_t)u->first * H * dq),
                                latc, Cd, &kv, ae_ptr_at(o, (size_t)u->first * H * dv));
    }
    ae_matmul(be, y, o, m->wo, N, H * dv, d->D);
    ae_scratch_free(&ms);
    ae_scratch_free(&s);
    free(mat);
    free(tmp);
    return AE_OK;
}

// 1 when the rows whose logits are wanted are consecutive (every decode step): the head then
// reads them in place, else they are copied out of the step's rows first.
static int rows_consecutive(const int *rows, int n) {
    for (int i = 1; i < n; i++)
        if (rows[i] != rows[0] + i) return 0;
    return 1;
}

// The step on its N rows with the ids already on the device: workspace, embedding, layers,
// final norm, head. No host transfer, so it can be recorded: g is the recording in progress
// (cut points between layers) or NULL. Writes only the rows' cache slots and the logits, so it
// can run again from the start with the same result (a recording that did not run to its end).
static ae_status run_paged(const ae_model *m, const ae_paged_layout *lo, const ae_paged_batch *b,
                           ae_ptr ids, const int *out_rows, int n_out, ae_ptr logits, ae_graph *g) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    int D = c->hidden_size, V = c->vocab_size, nl = c->num_hidden_layers, N = b->N;
    float eps = (float)c->rms_norm_eps;
    size_t I = c->intermediate_size;
    if (c->arch == AE_ARCH_QWEN3_MOE && (size_t)c->moe_intermediate_size > I) I = c->moe_intermediate_size;
    pworkspace w;
    ae_scratch *s = &w.mem;
    ae_scratch_init(s, be);
    w.x = ae_scratch_alloc(s, (size_t)N * D, AE_DT_F32);
    w.xn = ae_scratch_alloc(s, (size_t)N * D, be->act_dtype);
    w.tmp = ae_scratch_alloc(s, (size_t)N * D, be->act_dtype);
    w.g = ae_scratch_alloc(s, (size_t)N * I, be->act_dtype);
    w.u = ae_scratch_alloc(s, (size_t)N * I, be->act_dtype);
    int in_place = rows_consecutive(out_rows, n_out);
    ae_ptr hid = n_out > 0 && !in_place ? ae_scratch_alloc(s, (size_t)n_out * D, be->act_dtype)
                                        : ae_ptr_null(); // (n_out, D) act
    if (s->failed) {
        ae_scratch_free(s);
        return ae_errorf(AE_ERR_NOMEM, "paged forward: out of memory for %d rows", N);
    }
    be->embed(be, w.x, m->embed, ids, N, D);
    be->rmsnorm(be, w.xn, w.x, nl > 0 ? m->layers[0].input_norm : m->final_norm, N, D, D, eps);
    ae_status st = AE_OK;
    for (int l = 0; l < nl && st == AE_OK; l++) {
        const ae_layer *L = &m->layers[l];
        const ae_paged_layer *pl = &lo->layers[l];
        st = L->kind == AE_ATTN_MLA ? mla_paged(be, &L->mla, lo, pl, b, w.xn, w.tmp)
                                    : gswa_paged(be, &L->gqa, lo, pl, b, w.xn, w.tmp);
        if (st != AE_OK) break;
        be->add_rmsnorm(be, w.x, w.x, w.tmp, w.xn, L->post_norm, N, D, eps);
        st = ae_layer_ffn_forward(m, L, w.tmp, w.xn, N, w.g, w.u); // gate/up+SwiGLU: one GEMV
        if (st != AE_OK) break;
        ae_ptr next = l + 1 < nl ? m->layers[l + 1].input_norm : m->final_norm;
        be->add_rmsnorm(be, w.x, w.x, w.tmp, w.xn, next, N, D, eps);
        if (g) be->graph_cut(be, g);
    }
    if (st == AE_OK && n_out > 0) {
        for (int i = 0; !in_place && i < n_out; i++)
            ae_copy(be, ae_ptr_at(hid, (size_t)i * D), ae_ptr_at(w.xn, (size_t)out_rows[i] * D),
                    (size_t)D);
        ae_ptr h = in_place ? ae_ptr_at(w.xn, (size_t)out_rows[0] * D) : hid;
        ae_matmul(be, logits, h, m->lm_head, n_out, D, V);
    }
    ae_scratch_free(s);
    return st;
}

// run_paged recorded on g (once more when the recording's workspace had to grow), else (no
// handle, graphs off, a failed recording) op by op.
static ae_status run_recorded(const ae_model *m, const ae_paged_layout *lo,
                              const ae_paged_batch *b, ae_ptr ids, const int *out_rows, int n_out,
                              ae_ptr logits, ae_graph *g) {
    const ae_backend *be = m->be;
    int r = AE_GRAPH_FAILED;
    ae_status st = AE_OK;
    int can = g && be->graph_begin && be->graph_end && be->graph_cut;
    for (int attempt = 0; attempt < 2 && can && be->graph_begin(be, g); attempt++) {
        st = run_paged(m, lo, b, ids, out_rows, n_out, logits, g);
        r = be->graph_end(be, g, st == AE_OK);
        if (r != AE_GRAPH_RETRY) break;
    }
    if (r == AE_GRAPH_RAN) return st;
    return run_paged(m, lo, b, ids, out_rows, n_out, logits, NULL);
}

ae_status ae_model_forward_paged(const ae_model *m, const ae_paged_layout *lo,
                                 const ae_paged_batch *b, const int *out_rows, int n_out,
                                 ae_ptr logits) {
    const ae_config *c = &m->cfg;
    const ae_backend *be = m->be;
    int V = c->vocab_size, nl = c->num_hidden_layers, N = b->N;
    if (!be->attention_paged || !be->paged_store)
        return ae_errorf(AE_ERR_UNSUPPORTED, "the %s backend has no paged attention ops yet",
                         be->name);
    if (N <= 0) return ae_errorf(AE_ERR_ARG, "paged forward: no tokens to run");
    if (lo->n_layers != nl) return ae_errorf(AE_ERR_ARG, "paged forward: layout of another model");
    for (int t = 0; t < N; t++)
        if (b->ids[t] < 0 || b->ids[t] >= V)
            return ae_errorf(AE_ERR_ARG, "token id %d is out of range [0, %d)", b->ids[t], V);
    for (int i = 0; i < n_out; i++)
        if (out_rows[i] < 0 || out_rows[i] >= N)
            return ae_errorf(AE_ERR_ARG, "paged forward: logit row %d of %d", out_rows[i], N);
    ae_ptr ids = b->dev_ids, own = ae_ptr_null(); // uploaded before any recording
    if (ae_ptr_is_null(ids)) {
        own = ids = be->alloc(be, (size_t)N, AE_DT_I32);
        if (ae_ptr_is_null(ids))
            return ae_errorf(AE_ERR_NOMEM, "paged forward: out of memory for %d rows", N);
        ae_status st = be->upload(be, ids, b->ids, AE_DT_I32, (size_t)N);
        if (st != AE_OK) {
            be->free(be, own);
            return st;
        }
    }
    ae_status st = run_recorded(m, lo, b, ids, out_rows, n_out, logits, b->graph);
    be->free(be, own); // a null pointer is a no-op
    return st;
}
