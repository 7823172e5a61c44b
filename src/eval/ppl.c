#include "eval/ppl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/progress.h"
#include "eval/windows.h"

ae_status ae_ppl_add_doc(const ae_model *m, const int32_t *ids, size_t n, int ctx, ae_ppl *acc) {
    if (ctx < 1) return ae_errorf(AE_ERR_ARG, "--ctx must be >= 1, got %d", ctx);
    if (n < 2) return AE_OK;
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size;
    ae_kv_cache cache;
    AE_TRY(ae_kv_cache_init(&cache, m, ctx));
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr logits = ae_scratch_alloc(&s, (size_t)ctx * V, AE_DT_F32); // (ctx, V)
    ae_ptr tgt = ae_scratch_alloc(&s, (size_t)ctx, AE_DT_I32);         // (ctx) next tokens
    ae_ptr nll = ae_scratch_alloc(&s, (size_t)ctx, AE_DT_F32);         // (ctx)
    float *h = ae_alloc_f32((size_t)ctx);                               // (ctx) host copy
    ae_status st = s.failed || !h ? AE_ERR_NOMEM : AE_OK;
    ae_windows it;
    ae_window w;
    ae_windows_init(&it, n, ctx);
    while (st == AE_OK && ae_windows_next(&it, &w)) {
        int T = w.len;
        ae_kv_cache_reset(&cache);
        st = ae_model_forward(m, &cache, ids + w.start, T, logits, 1);
        if (st == AE_OK) st = be->upload(be, tgt, ids + w.start + 1, AE_DT_I32, (size_t)T);
        if (st == AE_OK) {
            be->nll_rows(be, nll, logits, tgt, T, V);
            st = be->download(be, h, AE_DT_F32, nll, (size_t)T);
        }
        for (int t = 0; st == AE_OK && t < T; t++) acc->nll_sum += h[t];
        if (st == AE_OK) acc->tokens += T;
    }
    acc->docs++;
    ae_free_aligned(h);
    ae_scratch_free(&s);
    ae_kv_cache_free(&cache);
    return st;
}

ae_status ae_ppl_add_chunks(const ae_model *m, const int32_t *ids, size_t n, int ctx,
                            int max_chunks, ae_ppl *acc) {
    if (ctx < 2) return ae_errorf(AE_ERR_ARG, "--ctx must be >= 2 for chunked scoring, got %d", ctx);
    size_t n_chunks = n / (size_t)ctx;
    if (n_chunks == 0 || (max_chunks > 0 && acc->docs >= max_chunks)) return AE_OK;
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size, first = ctx / 2;
    ae_kv_cache cache;
    AE_TRY(ae_kv_cache_init(&cache, m, ctx));
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr logits = ae_scratch_alloc(&s, (size_t)ctx * V, AE_DT_F32); // (ctx, V)
    ae_ptr tgt = ae_scratch_alloc(&s, (size_t)ctx, AE_DT_I32);         // (ctx - 1) next tokens
    ae_ptr nll = ae_scratch_alloc(&s, (size_t)ctx, AE_DT_F32);         // (ctx - 1)
    float *h = ae_alloc_f32((size_t)ctx);                               // (ctx) host copy
    ae_status st = s.failed || !h ? AE_ERR_NOMEM : AE_OK;
    for (size_t c = 0; st == AE_OK && c < n_chunks; c++) {
        if (max_chunks > 0 && acc->docs >= max_chunks) break;
        const int32_t *x = ids + c * (size_t)ctx;
        ae_kv_cache_reset(&cache);
        st = ae_model_forward(m, &cache, x, ctx, logits, 1);
        if (st == AE_OK) st = be->upload(be, tgt, x + 1, AE_DT_I32, (size_t)(ctx - 1));
        if (st == AE_OK) {
            be->nll_rows(be, nll, logits, tgt, ctx - 1, V);
            st = be->download(be, h, AE_DT_F32, nll, (size_t)(ctx - 1));
        }
        for (int t = first; st == AE_OK && t < ctx - 1; t++) acc->nll_sum += h[t];
        if (st == AE_OK) {
            acc->tokens += ctx - 1 - first;
            acc->docs++;
        }
    }
    ae_free_aligned(h);
    ae_scratch_free(&s);
    ae_kv_cache_free(&cache);
    return st;
}

ae_status ae_docs_foreach(const ae_tokenizer *tok, const char *text, size_t len, ae_doc_fn fn,
                          void *ud) {
    static const char sep[] = "<|endoftext|>";
    const size_t seplen = sizeof sep - 1;
    size_t pos = 0;
    for (;;) {
        const char *hit = NULL;
        for (size_t i = pos; i + seplen <= len; i++)
            if (text[i] == '<' && memcmp(text + i, sep, seplen) == 0) {
                hit = text + i;
                break;
            }
        size_t end = hit ? (size_t)(hit - text) : len;
        int32_t *ids = NULL;
        size_t n = 0;
        AE_TRY(ae_tokenizer_encode(tok, text + pos, end - pos, &ids, &n));
        ae_status st = fn(ud, ids, n);
        free(ids);
        AE_TRY(st);
        if (!hit) return AE_OK;
        pos = end + seplen;
    }
}

typedef struct {
    const ae_model *m;
    int ctx, progress;
    ae_ppl *out;
    ae_progress pg;
    int chunks, max_chunks; // chunks: ae_ppl_add_chunks instead of ae_ppl_add_doc
} ppl_ctx;

// The progress line (when asked): documents or chunks, tokens, the running perplexity.
static void ppl_progress(ppl_ctx *c, int final) {
    if (!c->progress || c->out->tokens <= 0 || !ae_progress_due(&c->pg, final)) return;
    ae_progress_line(&c->pg, final, "eval ppl: %d %s, %lld tokens, running ppl %.3f, %.0f tok/s",
                     c->out->docs, c->chunks ? "chunks" : "docs", (long long)c->out->tokens,
                     exp(c->out->nll_sum / c->out->tokens),
                     c->out->tokens / (ae_progress_elapsed(&c->pg) + 1e-9));
}

static ae_status ppl_doc(void *ud, const int32_t *ids, size_t n) {
    ppl_ctx *c = ud;
    if (c->chunks) AE_TRY(ae_ppl_add_chunks(c->m, ids, n, c->ctx, c->max_chunks, c->out));
    else AE_TRY(ae_ppl_add_doc(c->m, ids, n, c->ctx, c->out));
    ppl_progress(c, 0);
    return AE_OK;
}

// One pass over the text's documents (whole documents in windows, or llama.cpp's chunks).
static ae_status ppl_run(ppl_ctx *c, const ae_tokenizer *tok, const char *text, size_t len) {
    ae_progress_start(&c->pg, 1);
    ae_status st = ae_docs_foreach(tok, text, len, ppl_doc, c);
    ppl_progress(c, 1); // also after an error: the line ends before its message
    return st;
}

ae_status ae_ppl_text(const ae_model *m, const ae_tokenizer *tok, const char *text, size_t len,
                      int ctx, int progress, ae_ppl *out) {
    memset(out, 0, sizeof *out);
    if (ctx < 1) return ae_errorf(AE_ERR_ARG, "--ctx must be >= 1, got %d", ctx);
    ppl_ctx c = {.m = m, .ctx = ctx, .progress = progress, .out = out};
    return ppl_run(&c, tok, text, len);
}

ae_status ae_ppl_text_chunks(const ae_model *m, const ae_tokenizer *tok, const char *text,
                             size_t len, int ctx, int max_chunks, int progress, ae_ppl *out) {
    memset(out, 0, sizeof *out);
    if (ctx < 2) return ae_errorf(AE_ERR_ARG, "--ctx must be >= 2, got %d", ctx);
    ppl_ctx c = {.m = m, .ctx = ctx, .progress = progress, .out = out, .chunks = 1,
                 .max_chunks = max_chunks};
    return ppl_run(&c, tok, text, len);
}
