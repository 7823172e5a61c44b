// Encode pipeline, in HF's order: split out added tokens with normalized=false on the raw text;
// normalize (NFC) each remaining segment; split out added tokens with normalized=true; then
// pre-tokenize (Split regex, ByteLevel) and BPE every remaining piece.
#include <stdlib.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

static ae_status encode_normalized(const ae_tokenizer *t, const char *s, size_t n,
                                   ae_tok_bpe_cache *cache, ae_tok_ids *ids) {
    char *norm;
    size_t nlen;
    AE_TRY(ae_tok_normalize(t, s, n, &norm, &nlen));
    ae_tok_split *sp = NULL;
    size_t nsp = 0;
    ae_status st = ae_tok_find_added(t, &t->match_norm, norm, nlen, &sp, &nsp);
    for (size_t i = 0; st == AE_OK && i < nsp; i++) {
        if (sp[i].id >= 0)
            st = ae_tok_ids_push(ids, sp[i].id);
        else
            st = ae_tok_pretok_encode(t, norm + sp[i].start, sp[i].end - sp[i].start, cache, ids);
    }
    free(sp);
    if (norm != s) free(norm);
    return st;
}

ae_status ae_tokenizer_encode(const ae_tokenizer *t, const char *text, size_t len, int32_t **ids,
                              size_t *n) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return ae_errorf(AE_ERR_ARG, "encode: NULL text");
    if (len > (size_t)INT32_MAX / 4)
        return ae_errorf(AE_ERR_ARG,
                         "encode: text of %zu bytes is "
                         "too long",
                         len);
    size_t bad = ae_tok_utf8_invalid_at((const unsigned char *)text, len);
    if (bad != (size_t)-1)
        return ae_errorf(AE_ERR_ARG,
                         "encode: input is not valid UTF-8 (byte offset %zu, byte "
                         "0x%02X)",
                         bad, (unsigned char)text[bad]);
    ae_tok_ids out = {0};
    ae_tok_split *sp = NULL;
    size_t nsp = 0;
    ae_tok_bpe_cache *cache = NULL;
    ae_status st = AE_OK;
    if (len > 0) st = ae_tok_find_added(t, &t->match_raw, text, len, &sp, &nsp);
    if (st == AE_OK && len >= 64 && !(cache = ae_tok_bpe_cache_new())) st = AE_ERR_NOMEM;
    for (size_t i = 0; st == AE_OK && i < nsp; i++) {
        if (sp[i].id >= 0)
            st = ae_tok_ids_push(&out, sp[i].id);
        else
            st = encode_normalized(t, text + sp[i].start, sp[i].end - sp[i].start, cache, &out);
    }
    free(sp);
    ae_tok_bpe_cache_free(cache);
    if (st != AE_OK) {
        free(out.p);
        return st;
    }
    if (!out.p && !(out.p = ae_malloc(sizeof *out.p))) return AE_ERR_NOMEM;
    *ids = out.p;
    *n = out.n;
    return AE_OK;
}
