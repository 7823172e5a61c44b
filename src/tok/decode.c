// Decode: ids -> the bytes of each token (HF's ByteLevel decoder: inverse GPT-2 byte map, or the
// token's own text when it is not byte-level, e.g. added tokens) -> UTF-8 with invalid sequences
// replaced as Rust's String::from_utf8_lossy does. The streaming variant holds back a trailing
// incomplete character until the next id (or the flush).
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

static ae_status check_id(const ae_tokenizer *t, int32_t id, size_t pos) {
    if (id < 0 || id >= t->vocab_size || !t->id_str[id])
        return ae_errorf(AE_ERR_ARG,
                         "decode: id %d at position %zu is not in the vocabulary "
                         "(size %d)",
                         (int)id, pos, t->vocab_size);
    return AE_OK;
}

static ae_status finish(ae_tok_buf *b, ae_status st, char **text, size_t *len) {
    if (st == AE_OK && !b->p) st = ae_tok_buf_put(b, "", 0);
    if (st != AE_OK) {
        free(b->p);
        return st;
    }
    *text = b->p;
    *len = b->n;
    return AE_OK;
}

ae_status ae_tokenizer_decode(const ae_tokenizer *t, const int32_t *ids, size_t n, char **text,
                              size_t *len) {
    *text = NULL;
    *len = 0;
    ae_tok_buf raw = {0}, out = {0};
    ae_status st = AE_OK;
    for (size_t i = 0; i < n && st == AE_OK; i++) {
        if ((st = check_id(t, ids[i], i)) != AE_OK) break;
        st = ae_tok_buf_put(&raw, t->dec_blob + t->dec_off[ids[i]],
                            t->dec_off[ids[i] + 1] - t->dec_off[ids[i]]);
    }
    if (st == AE_OK && raw.n) ae_tok_utf8_lossy((const unsigned char *)raw.p, raw.n, 1, &out, &st);
    free(raw.p);
    return finish(&out, st, text, len);
}

ae_status ae_tokenizer_decode_next(const ae_tokenizer *t, ae_decode_stream *s, int32_t id,
                                   char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    AE_TRY(check_id(t, id, 0));
    if (s->npending < 0 || s->npending > (int)sizeof s->pending)
        return ae_errorf(AE_ERR_ARG, "decode: corrupt stream state (npending %d)", s->npending);
    ae_tok_buf raw = {0}, o = {0};
    ae_status st = ae_tok_buf_put(&raw, s->pending, (size_t)s->npending);
    if (st == AE_OK)
        st =
            ae_tok_buf_put(&raw, t->dec_blob + t->dec_off[id], t->dec_off[id + 1] - t->dec_off[id]);
    size_t used = 0;
    if (st == AE_OK && raw.n)
        used = ae_tok_utf8_lossy((const unsigned char *)raw.p, raw.n, 0, &o, &st);
    if (st == AE_OK) {
        // what is left is a truncated but so far valid character: at most 3 bytes
        s->npending = (int)(raw.n - used);
        memcpy(s->pending, raw.p + used, raw.n - used);
    }
    free(raw.p);
    return finish(&o, st, out, len);
}

ae_status ae_tokenizer_decode_flush(const ae_tokenizer *t, ae_decode_stream *s, char **out,
                                    size_t *len) {
    (void)t;
    *out = NULL;
    *len = 0;
    if (s->npending < 0 || s->npending > (int)sizeof s->pending)
        return ae_errorf(AE_ERR_ARG, "decode: corrupt stream state (npending %d)", s->npending);
    ae_tok_buf o = {0};
    ae_status st = AE_OK;
    if (s->npending) ae_tok_utf8_lossy(s->pending, (size_t)s->npending, 1, &o, &st);
    s->npending = 0;
    return finish(&o, st, out, len);
}
