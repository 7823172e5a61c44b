// Pass-key scoring on a model (see passkey.h).
//
// One trial: the prompt but its last token runs into the KV cache (no head); then the tail
// [last prompt token, answer[0..k-2]] runs teacher-forced with the head on its k rows, giving
// each answer token's log-likelihood (nll_rows) and the greedy choice after each true prefix
// (argmax_rows). Greedy generation agrees with the answer up to the first row whose argmax is
// not the answer's token; there the prediction leaves the answer and is continued by decode
// steps from the cache rewound to that point. Full caches (GQA layers, MLA latents) rewind by
// resetting their length; the sliding-window rings, which the tail overwrote, are restored from
// a copy taken before the tail ran.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/passkey.h"

struct ae_passkey_scorer {
    const ae_model *m;
    const ae_tokenizer *tok;
    int max_tokens, max_answer, eos;
    ae_kv_cache cache;
    ae_scratch s;
    ae_ptr logits;    // (max_answer, V) F32
    ae_ptr tgt;       // (max_answer) I32
    ae_ptr nll;       // (max_answer) F32
    ae_ptr amax;      // (max_answer) I32
    ae_ptr snap;      // the ring layers' K then V, layer after layer (act dtype)
    size_t snap_n;    // values in snap (0: no ring layer)
    float *h_nll;     // (max_answer)
    int32_t *h_amax;  // (max_answer)
    int32_t *tail;    // (max_answer)
    int32_t *pred;    // (max_answer)
};

// Copies the ring layers' K/V into the snapshot (save) or back (restore).
static void ring_copy(ae_passkey_scorer *sc, int save) {
    const ae_backend *be = sc->m->be;
    size_t off = 0;
    for (int l = 0; l < sc->cache.n_layers; l++) {
        const ae_gswa_cache *c = &sc->cache.kv[l];
        if (sc->m->layers[l].kind == AE_ATTN_MLA || !c->ring) continue;
        size_t n = (size_t)c->rows * c->kv_dim;
        ae_ptr k = ae_ptr_at(sc->snap, off), v = ae_ptr_at(sc->snap, off + n);
        if (save) {
            ae_copy(be, k, c->k, n);
            ae_copy(be, v, c->v, n);
        } else {
            ae_copy(be, c->k, k, n);
            ae_copy(be, c->v, v, n);
        }
        off += 2 * n;
    }
}

ae_status ae_passkey_scorer_init(const ae_model *m, const ae_tokenizer *tok, int max_tokens,
                                 int max_answer, ae_passkey_scorer **out) {
    *out = NULL;
    if (max_tokens < 1 || max_answer < 1)
        return ae_errorf(AE_ERR_ARG, "pass key: scorer for %d prompt and %d answer tokens", max_tokens,
                         max_answer);
    ae_passkey_scorer *sc = ae_calloc(1, sizeof *sc);
    if (!sc) return AE_ERR_NOMEM;
    sc->m = m;
    sc->tok = tok;
    sc->max_tokens = max_tokens;
    sc->max_answer = max_answer;
    sc->eos = tok ? ae_tokenizer_eos_id(tok) : -1;
    const ae_backend *be = m->be;
    ae_scratch_init(&sc->s, be);
    ae_status st = ae_kv_cache_init(&sc->cache, m, max_tokens + max_answer);
    if (st != AE_OK) {
        free(sc);
        return st;
    }
    for (int l = 0; l < sc->cache.n_layers; l++)
        if (m->layers[l].kind != AE_ATTN_MLA && sc->cache.kv[l].ring)
            sc->snap_n += 2 * (size_t)sc->cache.kv[l].rows * sc->cache.kv[l].kv_dim;
    size_t V = (size_t)m->cfg.vocab_size, A = (size_t)max_answer;
    sc->logits = ae_scratch_alloc(&sc->s, A * V, AE_DT_F32);
    sc->tgt = ae_scratch_alloc(&sc->s, A, AE_DT_I32);
    sc->nll = ae_scratch_alloc(&sc->s, A, AE_DT_F32);
    sc->amax = ae_scratch_alloc(&sc->s, A, AE_DT_I32);
    if (sc->snap_n) sc->snap = ae_scratch_alloc(&sc->s, sc->snap_n, be->act_dtype);
    sc->h_nll = ae_alloc_f32(A);
    sc->h_amax = ae_malloc(sizeof(int32_t) * A);
    sc->tail = ae_malloc(sizeof(int32_t) * A);
    sc->pred = ae_malloc(sizeof(int32_t) * A);
    if (sc->s.failed || !sc->h_nll || !sc->h_amax || !sc->tail || !sc->pred) {
        ae_passkey_scorer_free(sc);
        return AE_ERR_NOMEM;
    }
    *out = sc;
    return AE_OK;
}

void ae_passkey_scorer_free(ae_passkey_scorer *sc) {
    if (!sc) return;
    ae_free_aligned(sc->h_nll);
    free(sc->h_amax);
    free(sc->tail);
    free(sc->pred);
    ae_scratch_free(&sc->s);
    ae_kv_cache_free(&sc->cache);
    free(sc);
}

ae_status ae_passkey_score_one(ae_passkey_scorer *sc, const int32_t *ids, int n,
                               const int32_t *answer, int n_answer, const char *key,
                               ae_passkey_score *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || n > sc->max_tokens || n_answer < 1 || n_answer > sc->max_answer)
        return ae_errorf(AE_ERR_ARG, "pass key: a prompt of %d tokens with an answer of %d (the scorer "
                                     "holds up to %d and %d)", n, n_answer, sc->max_tokens, sc->max_answer);
    const ae_model *m = sc->m;
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size, k = n_answer;
    ae_kv_cache_reset(&sc->cache);
    if (n > 1) AE_TRY(ae_model_forward(m, &sc->cache, ids, n - 1, ae_ptr_null(), 0));
    if (sc->snap_n) ring_copy(sc, 1);
    sc->tail[0] = ids[n - 1];
    memcpy(sc->tail + 1, answer, sizeof(int32_t) * (size_t)(k - 1));
    AE_TRY(ae_model_forward(m, &sc->cache, sc->tail, k, sc->logits, 1));
    AE_TRY(be->upload(be, sc->tgt, answer, AE_DT_I32, (size_t)k));
    be->nll_rows(be, sc->nll, sc->logits, sc->tgt, k, V);
    be->argmax_rows(be, sc->amax, sc->logits, k, V);
    AE_TRY(be->download(be, sc->h_nll, AE_DT_F32, sc->nll, (size_t)k));
    AE_TRY(be->download(be, sc->h_amax, AE_DT_I32, sc->amax, (size_t)k));
    double nll = 0;
    for (int t = 0; t < k; t++) nll += sc->h_nll[t];
    out->loglik = -nll / k;
    out->n = n;
    int j = 0; // first row whose greedy token leaves the answer
    while (j < k && sc->h_amax[j] == answer[j]) j++;
    memcpy(sc->pred, answer, sizeof(int32_t) * (size_t)j);
    int np = j;
    if (j < k) {
        sc->pred[np++] = sc->h_amax[j];
        if (np < k && sc->pred[j] != sc->eos) {
            // back to the cache after prompt + answer[0..j-1], then greedy decode steps
            if (sc->snap_n) ring_copy(sc, 0);
            sc->cache.n = n - 1;
            AE_TRY(ae_model_forward(m, &sc->cache, sc->tail, j + 1, ae_ptr_null(), 0));
            while (np < k) {
                AE_TRY(ae_model_forward(m, &sc->cache, &sc->pred[np - 1], 1, sc->logits, 0));
                be->argmax_rows(be, sc->amax, sc->logits, 1, V);
                AE_TRY(be->download(be, &sc->pred[np], AE_DT_I32, sc->amax, 1));
                if (sc->pred[np++] == sc->eos) break;
            }
        }
    }
    size_t len = 0;
    if (sc->tok) AE_TRY(ae_tokenizer_decode(sc->tok, sc->pred, (size_t)np, &out->pred, &len));
    else if (!(out->pred = ae_strdup(""))) return AE_ERR_NOMEM;
    out->correct = ae_passkey_match(key, out->pred);
    return AE_OK;
}

void ae_passkey_scores_free(ae_passkey_score *sc, int n) {
    if (!sc) return;
    for (int i = 0; i < n; i++) {
        free(sc[i].pred);
        sc[i].pred = NULL;
    }
}

void ae_passkey_cell(const ae_passkey_set *s, const ae_passkey_score *sc, int li, int di,
                     double *acc, double *loglik) {
    double a = 0, l = 0;
    for (int t = 0; t < s->trials; t++) {
        const ae_passkey_score *x = &sc[ae_passkey_index(s, li, di, t)];
        a += x->correct;
        l += x->loglik;
    }
    *acc = a / s->trials;
    *loglik = l / s->trials;
}

ae_status ae_passkey_run(const ae_model *m, const ae_tokenizer *tok, int reencode,
                         const ae_passkey_set *s, ae_passkey_progress_fn progress, void *ud,
                         ae_passkey_score *out) {
    int total = s->n_lengths * s->n_depths * s->trials, max_n = 1, max_a = 1;
    memset(out, 0, sizeof *out * (size_t)total);
    // With another tokenizer, the same texts are encoded again (all first: sizes the cache).
    int32_t **ids = NULL, **ans = NULL;
    int *nid = NULL, *nans = NULL;
    ae_status st = AE_OK;
    if (reencode) {
        ids = ae_calloc((size_t)total, sizeof *ids);
        ans = ae_calloc((size_t)total, sizeof *ans);
        nid = ae_calloc((size_t)total, sizeof *nid);
        nans = ae_calloc((size_t)total, sizeof *nans);
        if (!ids || !ans || !nid || !nans) st = AE_ERR_NOMEM;
    }
    for (int i = 0; i < total && st == AE_OK; i++) {
        const ae_passkey_prompt *p = &s->prompts[i];
        int n = p->n, a = p->n_answer;
        if (reencode) {
            st = ae_passkey_encode(tok, p->text, p->key, &ids[i], &nid[i], &ans[i], &nans[i]);
            n = nid[i];
            a = nans[i];
        }
        if (st == AE_OK && n + a > m->cfg.max_position_embeddings)
            st = ae_errorf(AE_ERR_ARG, "a pass-key prompt of %d tokens and its answer (%d) exceed the "
                                       "model's max_position_embeddings (%d)", n, a, m->cfg.max_position_embeddings);
        if (n > max_n) max_n = n;
        if (a > max_a) max_a = a;
    }
    ae_passkey_scorer *sc = NULL;
    if (st == AE_OK) st = ae_passkey_scorer_init(m, tok, max_n, max_a, &sc);
    for (int i = 0; i < total && st == AE_OK; i++) {
        const ae_passkey_prompt *p = &s->prompts[i];
        st = reencode ? ae_passkey_score_one(sc, ids[i], nid[i], ans[i], nans[i], p->key, &out[i])
                      : ae_passkey_score_one(sc, p->ids, p->n, p->answer, p->n_answer, p->key, &out[i]);
        if (st == AE_OK && progress) progress(ud, i + 1, total);
    }
    ae_passkey_scorer_free(sc);
    for (int i = 0; reencode && i < total; i++) {
        if (ids) free(ids[i]);
        if (ans) free(ans[i]);
    }
    free(ids);
    free(ans);
    free(nid);
    free(nans);
    if (st != AE_OK) ae_passkey_scores_free(out, total);
    return st;
}
