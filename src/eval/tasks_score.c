// Log-likelihood requests through the model's forward (lm-eval's HFLM.loglikelihood protocol).
//
// Tokens (lm-eval TemplateLM._encode_pair, causal): trailing whitespace of the context moves
// to the continuation; whole = encode(context + continuation), ctx = encode(context),
// cont = whole[len(ctx):]. An empty context is the tokenizer's eos token (lm-eval's
// prefix_token_id: bos, which Qwen tokenizers lack, else eos).
// Input: (ctx + cont)[-(max_len + 1):][:-1]; the last len(cont) logit rows score cont.
//
// The input splits into a prefix (everything before the rows that are scored) and a tail of
// len(cont) tokens. The prefix is run once and kept in the KV cache while the following
// requests share it (the choices of one item); each tail then runs from the prefix's end
// (the cache is rewound to it). On sliding-window layers (a ring of W slots) a rewind is only
// valid while prefix + tail <= W; otherwise the prefix is run again.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/tasks_internal.h"

static ae_status encode_req(const ae_tokenizer *tok, const char *ctx, const char *cont, ae_enc_req *r) {
    int32_t *c = NULL, *w = NULL;
    size_t nc = 0, nw = 0;
    if (!ctx[0]) { // lm-eval: ([prefix_token_id], encode(cont)) unless cont starts with it
        int eos = ae_tokenizer_eos_id(tok);
        if (eos < 0) return ae_errorf(AE_ERR_ARG, "an empty context needs the tokenizer's eos token, which it lacks");
        AE_TRY(ae_tokenizer_encode(tok, cont, strlen(cont), &w, &nw));
        int skip = nw > 0 && w[0] == eos;
        r->ids = ae_malloc(sizeof(int32_t) * (nw + 1));
        if (!r->ids) {
            free(w);
            return AE_ERR_NOMEM;
        }
        r->ids[0] = eos;
        memcpy(r->ids + 1, w + skip, sizeof(int32_t) * (nw - (size_t)skip));
        r->n_ctx = 1;
        r->n_cont = (int)(nw - (size_t)skip);
        free(w);
        return AE_OK;
    }
    size_t lc = strlen(ctx), keep = ae_py_rstrip_len(ctx, lc);
    char *whole = ae_strfmt("%s%s", ctx, cont);
    if (!whole) return AE_ERR_NOMEM;
    ae_status st = ae_tokenizer_encode(tok, ctx, keep, &c, &nc);
    if (st == AE_OK) st = ae_tokenizer_encode(tok, whole, strlen(whole), &w, &nw);
    free(whole);
    if (st == AE_OK && nc == 0) st = ae_errorf(AE_ERR_ARG, "a context of only whitespace has no tokens");
    if (st == AE_OK) {
        r->n_ctx = (int)nc;
        r->n_cont = nw > nc ? (int)(nw - nc) : 0;
        r->ids = ae_malloc(sizeof(int32_t) * (nc + (size_t)r->n_cont));
        if (!r->ids) st = AE_ERR_NOMEM;
        else {
            memcpy(r->ids, c, sizeof(int32_t) * nc);
            memcpy(r->ids + nc, w + nc, sizeof(int32_t) * (size_t)r->n_cont);
        }
    }
    free(c);
    free(w);
    return st;
}

ae_req_view ae_req_view_of(const ae_enc_req *r, int max_len) {
    int total = r->n_ctx + r->n_cont, start = total > max_len + 1 ? total - (max_len + 1) : 0;
    int n_in = total - 1 - start;
    ae_req_view v = {r->ids + start, n_in - r->n_cont, r->n_cont, start > 0};
    return v;
}

int ae_req_same_prefix(const ae_req_view *a, const ae_req_view *b) {
    return a->n_prefix == b->n_prefix &&
           (a->n_prefix == 0 || !memcmp(a->in, b->in, sizeof(int32_t) * (size_t)a->n_prefix));
}

// Scorer state of one model: the cache, device buffers, the prefix the cache holds.
typedef struct {
    const ae_model *m;
    ae_kv_cache cache;
    ae_scratch s;
    ae_ptr logits;  // (max_cont, V) F32
    ae_ptr tgt;     // (max_cont) I32
    ae_ptr nll;     // (max_cont) F32
    ae_ptr amax;    // (max_cont) I32
    float *h_nll;   // (max_cont) host
    int32_t *h_amax; // (max_cont) host
    const int32_t *prefix; // tokens the cache holds (points into an ae_enc_req), n_prefix of them
    int n_prefix;   // -1: nothing reusable
    int ring;       // smallest sliding-window ring (slots), 0 when none
} scorer;

static ae_status scorer_init(scorer *sc, const ae_model *m, int cap, int max_cont) {
    memset(sc, 0, sizeof *sc);
    sc->m = m;
    sc->n_prefix = -1;
    AE_TRY(ae_kv_cache_init(&sc->cache, m, cap));
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size;
    ae_scratch_init(&sc->s, be);
    sc->logits = ae_scratch_alloc(&sc->s, (size_t)max_cont * V, AE_DT_F32);
    sc->tgt = ae_scratch_alloc(&sc->s, (size_t)max_cont, AE_DT_I32);
    sc->nll = ae_scratch_alloc(&sc->s, (size_t)max_cont, AE_DT_F32);
    sc->amax = ae_scratch_alloc(&sc->s, (size_t)max_cont, AE_DT_I32);
    sc->h_nll = ae_alloc_f32((size_t)max_cont);
    sc->h_amax = ae_malloc(sizeof(int32_t) * (size_t)max_cont);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (m->layers[l].kind != AE_ATTN_MLA && sc->cache.kv[l].ring &&
            (sc->ring == 0 || sc->cache.kv[l].rows < sc->ring))
            sc->ring = sc->cache.kv[l].rows;
    return sc->s.failed || !sc->h_nll || !sc->h_amax ? AE_ERR_NOMEM : AE_OK;
}

static void scorer_free(scorer *sc) {
    ae_free_aligned(sc->h_nll);
    free(sc->h_amax);
    ae_scratch_free(&sc->s);
    ae_kv_cache_free(&sc->cache);
}

// One request: log-likelihood of its continuation and whether each token is the argmax.
static ae_status score_req(scorer *sc, const ae_enc_req *r, int max_len, double *ll, unsigned char *greedy,
                           int *truncated) {
    const ae_backend *be = sc->m->be;
    int V = sc->m->cfg.vocab_size;
    ae_req_view v = ae_req_view_of(r, max_len);
    const int32_t *in = v.in; // (n_prefix + n_tail) model input
    int np = v.n_prefix, nk = v.n_tail;
    *truncated = v.truncated;
    if (!(np == sc->n_prefix && (np == 0 || !memcmp(in, sc->prefix, sizeof(int32_t) * (size_t)np)))) {
        ae_kv_cache_reset(&sc->cache);
        sc->n_prefix = -1;
        if (np > 0) AE_TRY(ae_model_forward(sc->m, &sc->cache, in, np, ae_ptr_null(), 0));
        sc->prefix = in;
        sc->n_prefix = np;
    }
    sc->cache.n = np; // rewind to the end of the prefix
    AE_TRY(ae_model_forward(sc->m, &sc->cache, in + np, nk, sc->logits, 1));
    if (sc->ring && np + nk > sc->ring) sc->n_prefix = -1; // the tail overwrote ring slots
    AE_TRY(be->upload(be, sc->tgt, r->ids + r->n_ctx, AE_DT_I32, (size_t)nk));
    be->nll_rows(be, sc->nll, sc->logits, sc->tgt, nk, V);
    be->argmax_rows(be, sc->amax, sc->logits, nk, V);
    AE_TRY(be->download(be, sc->h_nll, AE_DT_F32, sc->nll, (size_t)nk));
    AE_TRY(be->download(be, sc->h_amax, AE_DT_I32, sc->amax, (size_t)nk));
    double s = 0;
    int g = 1;
    for (int t = 0; t < nk; t++) {
        s -= sc->h_nll[t];
        g &= sc->h_amax[t] == r->ids[r->n_ctx + t];
    }
    *ll = s;
    *greedy = (unsigned char)g;
    return AE_OK;
}

static ae_status alloc_scores(ae_task_scores *o, const ae_task_item *items, int n_items) {
    memset(o, 0, sizeof *o);
    o->n_items = n_items;
    o->first = ae_calloc((size_t)n_items + 1, sizeof *o->first);
    if (!o->first) return AE_ERR_NOMEM;
    for (int i = 0; i < n_items; i++) o->first[i + 1] = o->first[i] + items[i].n;
    o->n_req = o->first[n_items];
    size_t nr = o->n_req ? (size_t)o->n_req : 1;
    o->ll = ae_calloc(nr, sizeof *o->ll);
    o->greedy = ae_calloc(nr, 1);
    o->n_tokens = ae_calloc(nr, sizeof *o->n_tokens);
    o->truncated = ae_calloc((size_t)n_items + 1, 1);
    return o->ll && o->greedy && o->n_tokens && o->truncated ? AE_OK : AE_ERR_NOMEM;
}

// Items one after another through the contiguous forward (batch 1: the reference).
static ae_status score_sequential(const ae_model *m, const ae_enc_req *enc, const ae_task_item *items,
                                  int n_items, int max_len, int cap, int max_cont,
                                  ae_task_progress_fn progress, void *ud, ae_task_scores *out) {
    scorer sc;
    ae_status st = scorer_init(&sc, m, cap, max_cont);
    for (int i = 0; i < n_items && st == AE_OK; i++) {
        for (int j = 0; j < items[i].n && st == AE_OK; j++) {
            int k = out->first[i] + j, tr;
            st = score_req(&sc, &enc[k], max_len, &out->ll[k], &out->greedy[k], &tr);
            out->truncated[i] |= (unsigned char)tr;
        }
        if (progress && st == AE_OK) progress(ud, i + 1, n_items);
    }
    scorer_free(&sc);
    return st;
}

ae_status ae_task_score(const ae_model *m, const ae_tokenizer *tok, const ae_task_item *items,
                        int n_items, int max_len, int batch, ae_task_progress_fn progress, void *ud,
                        ae_task_scores *out) {
    if (max_len < 1) return ae_errorf(AE_ERR_ARG, "max length must be >= 1, got %d", max_len);
    if (batch < 1) return ae_errorf(AE_ERR_ARG, "--batch must be >= 1, got %d", batch);
    AE_TRY(alloc_scores(out, items, n_items));
    ae_enc_req *enc = ae_calloc(out->n_req ? (size_t)out->n_req : 1, sizeof *enc);
    if (!enc) {
        ae_task_scores_free(out);
        return AE_ERR_NOMEM;
    }
    // Tokenise everything first: sizes the cache and reports bad requests before any scoring.
    ae_status st = AE_OK;
    int cap = 1, max_cont = 1, V = m->cfg.vocab_size;
    for (int i = 0; i < n_items && st == AE_OK; i++)
        for (int j = 0; j < items[i].n && st == AE_OK; j++) {
            ae_enc_req *r = &enc[out->first[i] + j];
            st = encode_req(tok, items[i].ctx[j], items[i].cont[j], r);
            if (st != AE_OK) break;
            if (r->n_cont < 1)
                st = ae_errorf(AE_ERR_ARG, "item %d, choice %d: the continuation has no tokens of its own",
                               items[i].doc, j);
            else if (r->n_cont > max_len)
                st = ae_errorf(AE_ERR_ARG, "item %d, choice %d: continuation of %d tokens exceeds the max length %d",
                               items[i].doc, j, r->n_cont, max_len);
            for (int t = 0; st == AE_OK && t < r->n_ctx + r->n_cont; t++)
                if (r->ids[t] < 0 || r->ids[t] >= V)
                    st = ae_errorf(AE_ERR_ARG, "item %d: token id %d is outside the model's vocabulary (%d)",
                                   items[i].doc, r->ids[t], V);
            int n_in = r->n_ctx + r->n_cont - 1;
            if (n_in > max_len) n_in = max_len;
            if (n_in > cap) cap = n_in;
            if (r->n_cont > max_cont) max_cont = r->n_cont;
            out->n_tokens[out->first[i] + j] = r->n_cont;
        }
    // Many items per forward need the backend's paged ops and a model the paged cache can lay
    // out (AE_ERR_UNSUPPORTED, e.g. sliding layers with different windows); otherwise items run
    // one by one, which overwrites everything the batched attempt wrote.
    int paged = batch > 1 && m->be->attention_paged && m->be->paged_store;
    if (st == AE_OK && paged) st = ae_task_score_batched(m, enc, max_len, batch, progress, ud, out);
    if ((st == AE_OK && !paged) || st == AE_ERR_UNSUPPORTED)
        st = score_sequential(m, enc, items, n_items, max_len, cap, max_cont, progress, ud, out);
    for (int i = 0; i < n_items; i++) out->n_truncated += out->truncated[i];
    for (int k = 0; k < out->n_req; k++) free(enc[k].ids);
    free(enc);
    if (st != AE_OK) ae_task_scores_free(out);
    return st;
}

void ae_task_scores_free(ae_task_scores *s) {
    free(s->first);
    free(s->ll);
    free(s->greedy);
    free(s->n_tokens);
    free(s->truncated);
    memset(s, 0, sizeof *s);
}
