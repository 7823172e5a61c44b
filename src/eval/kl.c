#include "eval/kl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "eval/ppl.h"
#include "infer/sample.h"

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

// KL(p ‖ q) of two logit rows, in double.   zt, zs: (V)
static double row_kl(const float *zt, const float *zs, int V) {
    double mt = zt[0], ms = zs[0];
    for (int i = 1; i < V; i++) {
        mt = zt[i] > mt ? zt[i] : mt;
        ms = zs[i] > ms ? zs[i] : ms;
    }
    double st = 0, ss = 0;
    for (int i = 0; i < V; i++) {
        st += exp(zt[i] - mt);
        ss += exp(zs[i] - ms);
    }
    double lt = log(st) + mt, ls = log(ss) + ms, kl = 0;
    for (int i = 0; i < V; i++) {
        double lpt = zt[i] - lt;
        kl += exp(lpt) * (lpt - (zs[i] - ls));
    }
    return kl > 0 ? kl : 0;
}

static void add(ae_kl_acc *a, double kl, int agree, double nt, double ns) {
    a->tokens++;
    a->top1 += agree;
    a->kl += kl;
    a->nll_t += nt;
    a->nll_s += ns;
}

static ae_status score_doc(const ae_model *t, const ae_model *s, const int32_t *ids, size_t n,
                           int ctx, ae_kl_result *r) {
    if (n < 2) return AE_OK;
    int V = t->cfg.vocab_size;
    ae_kv_cache ct, cs;
    AE_TRY(ae_kv_cache_init(&ct, t, ctx));
    ae_status st = ae_kv_cache_init(&cs, s, ctx);
    float *lt = ae_alloc_f32((size_t)ctx * V), *ls = ae_alloc_f32((size_t)ctx * V); // (ctx, V)
    if (st == AE_OK && (!lt || !ls)) st = AE_ERR_NOMEM;
    for (size_t w = 0; st == AE_OK && w + 1 < n; w += (size_t)ctx) {
        int T = (int)((n - 1 - w) < (size_t)ctx ? (n - 1 - w) : (size_t)ctx);
        ae_kv_cache_reset(&ct);
        ae_kv_cache_reset(&cs);
        st = ae_model_forward(t, &ct, ids + w, T, lt, 1);
        if (st == AE_OK) st = ae_model_forward(s, &cs, ids + w, T, ls, 1);
        for (int i = 0; st == AE_OK && i < T; i++) {
            const float *zt = lt + (size_t)i * V, *zs = ls + (size_t)i * V;
            int y = ids[w + i + 1];
            double kl = row_kl(zt, zs, V);
            int agree = ae_argmax(zt, V) == ae_argmax(zs, V);
            double nt = ae_nll(zt, V, y), ns = ae_nll(zs, V, y);
            add(&r->all, kl, agree, nt, ns);
            for (int b = 0; b < r->n_buckets; b++)
                if (i >= r->bucket_lo[b] && i < r->bucket_hi[b]) add(&r->bucket[b], kl, agree, nt, ns);
        }
    }
    ae_free_aligned(lt);
    ae_free_aligned(ls);
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
