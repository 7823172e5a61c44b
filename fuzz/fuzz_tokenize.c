// libFuzzer harness: the Qwen3 tokenizer on arbitrary input. Loaded once: the real one from
// ../shared/qwen3-tokenizer when present ($AE_FUZZ_TOKENIZER overrides), else the bundled
// models/qwen3-micro. Each input is used three ways:
//   1. as text to encode (any bytes: invalid UTF-8 must be refused with AE_ERR_ARG);
//   2. as the text `attnedit tokenize --decode` reads (ae_parse_ids), then decoded;
//   3. as binary token ids (4 bytes each: a raw int32 when the first byte's top bit is set, else
//      an id in [0, vocab_size]) to decode, one shot and streaming.
// Promises checked (tok/tokenizer.h, cli/args.h): encode succeeds iff the input is UTF-8, returns
// ids in range, and decode(encode(x)) is x after NFC when no added token can match; decode
// succeeds iff every id is in the vocabulary; streaming decode concatenates to decode's output.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "fuzz_util.h"
#include "tok/tok_internal.h"
#include "tok/tokenizer.h"

static ae_tokenizer *g_tok;
static int g_vocab;
static unsigned char *g_valid;      // (g_vocab) 1 when the id decodes
static unsigned char g_added_first[256]; // first bytes of added tokens

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    (void)fz_dir();
    g_tok = fz_load_tokenizer();
    g_vocab = ae_tokenizer_vocab_size(g_tok);
    g_valid = calloc((size_t)g_vocab, 1);
    if (!g_valid) abort();
    for (int32_t id = 0; id < g_vocab; id++) {
        char *out = NULL;
        size_t len;
        g_valid[id] = ae_tokenizer_decode(g_tok, &id, 1, &out, &len) == AE_OK;
        free(out);
    }
    for (int i = 0; i < g_tok->n_added; i++)
        if (g_tok->added[i].content_len) g_added_first[(unsigned char)g_tok->added[i].content[0]] = 1;
    return 0;
}

static int has_added_first(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (g_added_first[(unsigned char)s[i]]) return 1;
    return 0;
}

// Decodes ids (one shot and streaming); expect_ok: every id is in the vocabulary. Returns the
// text (heap) or NULL.
static char *decode(const int32_t *ids, size_t n, size_t *len_out) {
    int expect_ok = 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g_vocab || !g_valid[ids[i]]) expect_ok = 0;
    char *text = NULL;
    size_t len = 0;
    fz_begin();
    ae_status st = ae_tokenizer_decode(g_tok, ids, n, &text, &len);
    fz_check(st, "ae_tokenizer_decode");
    FZ_ASSERT((st == AE_OK) == expect_ok, "decode status %d, expected %s", (int)st,
              expect_ok ? "ok" : "an error");
    if (st != AE_OK) {
        FZ_ASSERT(st == AE_ERR_ARG && !text, "decode refused with status %d", (int)st);
        return NULL;
    }
    FZ_ASSERT(ae_check_utf8(text, len, "decode") == AE_OK, "decode output is not UTF-8");
    // streaming decode: the pieces and the flush concatenate to the same text
    fz_check_decode_stream(g_tok, ids, n, text, len);
    *len_out = len;
    return text;
}

static void encode(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    int utf8 = ae_check_utf8(s, size, "input") == AE_OK;
    int32_t *ids = NULL;
    size_t n = 0;
    fz_begin();
    ae_status st = ae_tokenizer_encode(g_tok, s, size, &ids, &n);
    fz_check(st, "ae_tokenizer_encode");
    if (!utf8) {
        FZ_ASSERT(st == AE_ERR_ARG && !ids, "invalid UTF-8 not refused (status %d)", (int)st);
        return;
    }
    FZ_ASSERT(st == AE_OK, "valid UTF-8 refused: %s", ae_last_error());
    for (size_t i = 0; i < n; i++)
        FZ_ASSERT(ids[i] >= 0 && ids[i] < g_vocab && g_valid[ids[i]], "encode gave id %d", ids[i]);
    size_t len = 0;
    char *back = decode(ids, n, &len);
    FZ_ASSERT(back, "ids from encode do not decode");
    // Round trip: without added tokens in play, decode(encode(x)) == NFC(x).
    char *norm = NULL;
    size_t nlen = 0;
    fz_begin();
    st = ae_tok_normalize(g_tok, s, size, &norm, &nlen);
    fz_check(st, "ae_tok_normalize");
    if (st == AE_OK && !has_added_first(s, size) && !has_added_first(norm, nlen))
        FZ_ASSERT(len == nlen && memcmp(back, norm, len) == 0,
                  "decode(encode(x)) != NFC(x) (%zu vs %zu bytes)", len, nlen);
    if (norm != s) free(norm);
    free(back);
    free(ids);
}

static void parse_ids_text(const uint8_t *data, size_t size) {
    char *text = fz_cstr(data, size);
    int32_t *ids = NULL;
    int n = 0;
    fz_begin();
    ae_status st = ae_parse_ids(text, "ids", g_vocab, &ids, &n);
    fz_check(st, "ae_parse_ids");
    if (st == AE_OK) {
        for (int i = 0; i < n; i++)
            FZ_ASSERT(ids[i] >= 0 && ids[i] < g_vocab, "ae_parse_ids gave id %d", ids[i]);
        size_t len;
        free(decode(ids, (size_t)n, &len));
        free(ids);
    }
    free(text);
}

static void binary_ids(const uint8_t *data, size_t size) {
    size_t n = size / 4;
    int32_t *ids = malloc(sizeof *ids * (n ? n : 1));
    if (!ids) abort();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = data + 4 * i;
        uint32_t u = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        ids[i] = (p[0] & 0x80) ? (int32_t)u : (int32_t)(u % (uint32_t)(g_vocab + 1));
    }
    size_t len;
    free(decode(ids, n, &len));
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    encode(data, size);
    parse_ids_text(data, size);
    binary_ids(data, size);
    return 0;
}
