#include "eval/kl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "eval/ppl.h"

static void init_buckets(ae_kl_result *r, int ctx) {
    memset(r, 0, sizeof *r);
    int edges[AE_KL_MAX_BUCKETS + 1] = {0, 128, 512, 1024};
    int n = 3;
    while (edges[n] < ctx && n < AE_KL_MAX_BUCKETS) {
        edges[n + 1] = edges[n] * 2;
        n++;
    }
    for (int i = 0; i < n && edges[i] < ctx; i++) {
        r->bucket_lo[i] = edges[i];
        r->bucket_hi[i] = edges[i + 1] < ctx ? edges[i + 1] : ctx;
        r->n_buckets = i + 1;
    }
}

static void add(ae_kl_acc *a, double kl, int agree, double nt, double ns) {
    a->tokens++;
    a->top1 += agree;
    a->kl += kl;
    a->nll_t += nt;
    a->nll_s += ns;
}

// Per-row scores of one window, read back to the host: (T) each.
typedef struct {
    float *kl, *nll_t, *nll_s;
    int32_t *top_t, *top_s;
} row_scores;

static ae_status score_window(const ae_backend *be, ae_ptr lt, ae_ptr ls, ae_ptr tgt,
                              ae_ptr *dev, int T, int V, row_scores *h) {
    be->kl_rows(be, dev[0], lt, ls, T, V);
    be->nll_rows(be, dev[1], lt, tgt, T, V);
    be->nll_rows(be, dev[2], ls, tgt, T, V);
    be->argmax_rows(be, dev[3], lt, T, V);
    be->argmax_rows(be, dev[4], ls, T, V);
    AE_TRY(be->download(be, h->kl, AE_DT_F32, dev[0], (size_t)T));
    AE_TRY(be->download(be, h->nll_t, AE_DT_F32, dev[1], (size_t)T));
    AE_TRY(be->download(be, h->nll_s, AE_DT_F32, dev[2], (size_t)T));
    AE_TRY(be->download(be, h->top_t, AE_DT_I32, dev[3], (size_t)T));
    return be->download(be, h->top_s, AE_DT_I32, dev[4], (size_t)T);
}

static ae_status score_doc(const ae_model *t, const ae_model *s, const int32_t *ids, size_t n,
                           int ctx, ae_kl_result *r) {
    if (n < 2) return AE_OK;
    const ae_backend *be = s->be;
    int V = t->cfg.vocab_size;
    ae_kv_cache ct, cs;
    AE_TRY(ae_kv_cache_init(&ct, t, ctx));
    ae_status st = ae_kv_cache_init(&cs, s, ctx);
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    ae_ptr lt = ae_scratch_alloc(&sc, (size_t)ctx * V, AE_DT_F32); // (ctx, V) teacher logits
    ae_ptr ls = ae_scratch_alloc(&sc, (size_t)ctx * V, AE_DT_F32); // (ctx, V) student logits
    ae_ptr tgt = ae_scratch_alloc(&sc, (size_t)ctx, AE_DT_I32);    // (ctx) next tokens
    ae_ptr dev[5];                                                  // (ctx) each: row_scores
    for (int i = 0; i < 5; i++) dev[i] = ae_scratch_alloc(&sc, (size_t)ctx, i < 3 ? AE_DT_F32 : AE_DT_I32);
    row_scores h = {ae_alloc_f32((size_t)ctx), ae_alloc_f32((size_t)ctx), ae_alloc_f32((size_t)ctx),
                    ae_malloc(sizeof(int32_t) * (size_t)ctx), ae_malloc(sizeof(int32_t) * (size_t)ctx)};
    if (st == AE_OK && (sc.failed || !h.kl || !h.nll_t || !h.nll_s || !h.top_t || !h.top_s))
        st = AE_ERR_NOMEM;
    for (size_t w = 0; st == AE_OK && w + 1 < n; w += (size_t)ctx) {
        int T = (int)((n - 1 - w) < (size_t)ctx ? (n - 1 - w) : (size_t)ctx);
        ae_kv_cache_reset(&ct);
        ae_kv_cache_reset(&cs);
        st = ae_model_forward(t, &ct, ids + w, T, lt, 1);
        if (st == AE_OK) st = ae_model_forward(s, &cs, ids + w, T, ls, 1);
        if (st == AE_OK) st = be->upload(be, tgt, ids + w + 1, AE_DT_I32, (size_t)T);
        if (st == AE_OK) st = score_window(be, lt, ls, tgt, dev, T, V, &h);
        for (int i = 0; st == AE_OK && i < T; i++) {
            int agree = h.top_t[i] == h.top_s[i];
            add(&r->all, h.kl[i], agree, h.nll_t[i], h.nll_s[i]);
            for (int b = 0; b < r->n_buckets; b++)
                if (i >= r->bucket_lo[b] && i < r->bucket_hi[b])
                    add(&r->bucket[b], h.kl[i], agree, h.nll_t[i], h.nll_s[i]);
        }
    }
    ae_free_aligned(h.kl);
    ae_free_aligned(h.nll_t);
    ae_free_aligned(h.nll_s);
    free(h.top_t);
    free(h.top_s);
    ae_scratch_free(&sc);
    ae_kv_cache_free(&cs);
    ae_kv_cache_free(&ct);
    return st;
}

typedef struct {
    const ae_model *t, *s;
    int ctx, progress;
    ae_kl_result *out;
    double t0;
} kl_ctx;

static ae_status kl_doc(void *ud, const int32_t *ids, size_t n) {
    kl_ctx *c = ud;
    AE_TRY(score_doc(c->t, c->s, ids, n, c->ctx, c->out));
    const ae_kl_acc *a = &c->out->all;
    if (c->progress && a->tokens)
        fprintf(stderr, "\reval kl: %lld tokens, KL %.4f, top1 %.3f, %.0f tok/s", (long long)a->tokens,
                a->kl / a->tokens, (double)a->top1 / a->tokens, a->tokens / (ae_time_now() - c->t0 + 1e-9));
    return AE_OK;
}

ae_status ae_kl_text(const ae_model *teacher, const ae_model *student, const ae_tokenizer *tok,
                     const char *text, size_t len, int ctx, int progress, ae_kl_result *out) {
    if (teacher->be != student->be)
        return ae_errorf(AE_ERR_ARG, "teacher and student are on different devices (%s, %s)",
                         teacher->be->name, student->be->name);
    if (teacher->cfg.vocab_size != student->cfg.vocab_size)
        return ae_errorf(AE_ERR_ARG, "teacher and student vocabularies differ (%d vs %d)",
                         teacher->cfg.vocab_size, student->cfg.vocab_size);
    if (ctx < 2) return ae_errorf(AE_ERR_ARG, "--ctx must be >= 2, got %d", ctx);
    init_buckets(out, ctx);
    kl_ctx c = {teacher, student, ctx, progress, out, ae_time_now()};
    AE_TRY(ae_docs_foreach(tok, text, len, kl_doc, &c));
    if (progress) fputc('\n', stderr);
    return AE_OK;
}
