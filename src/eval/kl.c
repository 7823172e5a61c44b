#include "eval/kl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/progress.h"
#include "eval/ppl.h"
#include "eval/windows.h"

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

// Per-row scores of one chunk, read back to the host: (chunk) each.
typedef struct {
    float *kl, *nll_t, *nll_s;
    int32_t *top_t, *top_s;
} row_scores;

// One pass over a text: the models, their caches, the chunk buffers.
typedef struct {
    const ae_model *t;
    const ae_model *const *s;
    int n_s, ctx, chunk, cap, progress;
    ae_kv_cache cache[AE_KL_MAX_STUDENTS + 1]; // teacher, then the students; cap positions
    ae_scratch sc;
    ae_ptr lt, ls;   // (chunk, V) F32: teacher, student logits
    ae_ptr tgt;      // (chunk) I32 next tokens
    ae_ptr dev[5];   // (chunk) each: kl, nll_t, nll_s F32; top_t, top_s I32
    row_scores h;
    ae_kl_result *out; // (n_s)
    ae_progress pg;
} kl_run;

static ae_status run_alloc(kl_run *r) {
    const ae_backend *be = r->t->be;
    int V = r->t->cfg.vocab_size, C = r->chunk;
    ae_scratch_init(&r->sc, be);
    r->lt = ae_scratch_alloc(&r->sc, (size_t)C * V, AE_DT_F32);
    r->ls = ae_scratch_alloc(&r->sc, (size_t)C * V, AE_DT_F32);
    r->tgt = ae_scratch_alloc(&r->sc, (size_t)C, AE_DT_I32);
    for (int i = 0; i < 5; i++) r->dev[i] = ae_scratch_alloc(&r->sc, (size_t)C, i < 3 ? AE_DT_F32 : AE_DT_I32);
    r->h = (row_scores){ae_alloc_f32((size_t)C), ae_alloc_f32((size_t)C), ae_alloc_f32((size_t)C),
                        ae_malloc(sizeof(int32_t) * (size_t)C), ae_malloc(sizeof(int32_t) * (size_t)C)};
    if (r->sc.failed) return ae_errorf(AE_ERR_NOMEM, "eval kl: out of memory for logits of %d rows", C);
    return r->h.kl && r->h.nll_t && r->h.nll_s && r->h.top_t && r->h.top_s ? AE_OK : AE_ERR_NOMEM;
}

static void free_caches(kl_run *r) {
    for (int i = 0; i <= r->n_s; i++) ae_kv_cache_free(&r->cache[i]);
    memset(r->cache, 0, sizeof r->cache);
    r->cap = 0;
}

static void run_free(kl_run *r) {
    ae_free_aligned(r->h.kl);
    ae_free_aligned(r->h.nll_t);
    ae_free_aligned(r->h.nll_s);
    free(r->h.top_t);
    free(r->h.top_s);
    ae_scratch_free(&r->sc);
    free_caches(r);
}

// Caches for windows of `need` positions: grown (never shrunk) to the longest window so far.
static ae_status ensure_caches(kl_run *r, int need) {
    if (need <= r->cap) return AE_OK;
    free_caches(r);
    for (int i = 0; i <= r->n_s; i++)
        AE_TRY(ae_kv_cache_init(&r->cache[i], i ? r->s[i - 1] : r->t, need));
    r->cap = need;
    return AE_OK;
}

static void add_rows(ae_kl_result *r, const row_scores *h, int n, int pos0) {
    for (int i = 0; i < n; i++) {
        int agree = h->top_t[i] == h->top_s[i], p = pos0 + i;
        add(&r->all, h->kl[i], agree, h->nll_t[i], h->nll_s[i]);
        for (int b = 0; b < r->n_buckets; b++)
            if (p >= r->bucket_lo[b] && p < r->bucket_hi[b])
                add(&r->bucket[b], h->kl[i], agree, h->nll_t[i], h->nll_s[i]);
    }
}

// Rows pos0 .. pos0+n-1 of the current window (ids: their inputs; ids[n]: the last target).
static ae_status score_chunk(kl_run *r, const int32_t *ids, int n, int pos0) {
    const ae_backend *be = r->t->be;
    int V = r->t->cfg.vocab_size;
    AE_TRY(ae_model_forward(r->t, &r->cache[0], ids, n, r->lt, 1));
    AE_TRY(be->upload(be, r->tgt, ids + 1, AE_DT_I32, (size_t)n));
    be->nll_rows(be, r->dev[1], r->lt, r->tgt, n, V);
    be->argmax_rows(be, r->dev[3], r->lt, n, V);
    AE_TRY(be->download(be, r->h.nll_t, AE_DT_F32, r->dev[1], (size_t)n));
    AE_TRY(be->download(be, r->h.top_t, AE_DT_I32, r->dev[3], (size_t)n));
    for (int i = 0; i < r->n_s; i++) {
        AE_TRY(ae_model_forward(r->s[i], &r->cache[i + 1], ids, n, r->ls, 1));
        be->kl_rows(be, r->dev[0], r->lt, r->ls, n, V);
        be->nll_rows(be, r->dev[2], r->ls, r->tgt, n, V);
        be->argmax_rows(be, r->dev[4], r->ls, n, V);
        AE_TRY(be->download(be, r->h.kl, AE_DT_F32, r->dev[0], (size_t)n));
        AE_TRY(be->download(be, r->h.nll_s, AE_DT_F32, r->dev[2], (size_t)n));
        AE_TRY(be->download(be, r->h.top_s, AE_DT_I32, r->dev[4], (size_t)n));
        add_rows(&r->out[i], &r->h, n, pos0);
    }
    return AE_OK;
}

// One document: the windows of eval/windows.h, each from empty caches, in chunks.
static ae_status score_doc(kl_run *r, const int32_t *ids, size_t n) {
    if (n < 2) return AE_OK;
    AE_TRY(ensure_caches(r, ae_windows_longest(n, r->ctx)));
    ae_windows it;
    ae_window w;
    ae_windows_init(&it, n, r->ctx);
    while (ae_windows_next(&it, &w)) {
        for (int i = 0; i <= r->n_s; i++) ae_kv_cache_reset(&r->cache[i]);
        for (int c0 = 0; c0 < w.len; c0 += r->chunk) {
            int rows = w.len - c0 < r->chunk ? w.len - c0 : r->chunk;
            AE_TRY(score_chunk(r, ids + w.start + c0, rows, c0));
        }
    }
    return AE_OK;
}

// The progress line (when asked): tokens so far, the first student's KL and top-1 agreement.
static void kl_progress(kl_run *r, int final) {
    const ae_kl_acc *a = &r->out[0].all;
    if (!r->progress || !a->tokens || !ae_progress_due(&r->pg, final)) return;
    ae_progress_line(&r->pg, final, "eval kl: %lld tokens, KL %.4f, top1 %.3f (first student), %.0f tok/s",
                     (long long)a->tokens, a->kl / a->tokens, (double)a->top1 / a->tokens,
                     a->tokens / (ae_progress_elapsed(&r->pg) + 1e-9));
}

static ae_status kl_doc(void *ud, const int32_t *ids, size_t n) {
    kl_run *r = ud;
    AE_TRY(score_doc(r, ids, n));
    kl_progress(r, 0);
    return AE_OK;
}

ae_status ae_kl_text(const ae_model *teacher, const ae_model *const *students, int n_students,
                     const ae_tokenizer *tok, const char *text, size_t len, int ctx, int chunk,
                     int progress, ae_kl_result *out) {
    if (n_students < 1 || n_students > AE_KL_MAX_STUDENTS)
        return ae_errorf(AE_ERR_ARG, "eval kl: %d students (1 to %d)", n_students, AE_KL_MAX_STUDENTS);
    for (int i = 0; i < n_students; i++) {
        const ae_model *s = students[i];
        if (teacher->be != s->be)
            return ae_errorf(AE_ERR_ARG, "teacher and student are on different devices (%s, %s)",
                             teacher->be->name, s->be->name);
        if (teacher->cfg.vocab_size != s->cfg.vocab_size)
            return ae_errorf(AE_ERR_ARG, "teacher and student vocabularies differ (%d vs %d)",
                             teacher->cfg.vocab_size, s->cfg.vocab_size);
    }
    if (ctx < 2) return ae_errorf(AE_ERR_ARG, "--ctx must be >= 2, got %d", ctx);
    for (int i = 0; i < n_students; i++) init_buckets(&out[i], ctx);
    kl_run r = {.t = teacher, .s = students, .n_s = n_students, .ctx = ctx,
                .chunk = chunk > 0 ? (chunk < ctx ? chunk : ctx) : (AE_KL_CHUNK < ctx ? AE_KL_CHUNK : ctx),
                .progress = progress, .out = out};
    ae_progress_start(&r.pg, 1);
    ae_status st = run_alloc(&r);
    if (st == AE_OK) st = ae_docs_foreach(tok, text, len, kl_doc, &r);
    run_free(&r);
    kl_progress(&r, 1); // also after an error: the line ends before its message
    return st;
}
