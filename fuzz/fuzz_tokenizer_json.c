// libFuzzer harness: tokenizer.json (+ tokenizer_config.json) loading, ae_tokenizer_load. The
// input is tokenizer.json, optionally followed by the line "#tokenizer_config.json" and that
// file's text; both are written to a tmpfs model folder. A tokenizer that loads is then used:
// every id decodes or is refused, a fixed text is encoded and decoded back.
// Promises checked (tok/tokenizer.h): AE_OK or an error with a message; on success vocab_size
// > 0, the eos id is -1 or in range, id vocab_size - 1 decodes, ids outside [0, vocab_size) are
// AE_ERR_ARG, encode returns ids in range that decode, and streaming decode equals decode.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "tok/tokenizer.h"

static const char k_sep[] = "\n#tokenizer_config.json\n";

static const char *const k_texts[] = {
    "Hello, world! It's 2024.\n",
    "  naïve café e\xcc\x81 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa4\x97 <|endoftext|>"
    "<|im_start|>user\n\tdon't   stop\r\n\r\n12345 x<think>y</think> \xe2\x84\xaa\xcd\xbe end",
};

static const uint8_t *find_sep(const uint8_t *d, size_t n) {
    size_t k = sizeof k_sep - 1;
    for (size_t i = 0; i + k <= n; i++)
        if (d[i] == '\n' && memcmp(d + i, k_sep, k) == 0) return d + i;
    return NULL;
}

static void decode_checked(const ae_tokenizer *t, const int32_t *ids, size_t n, int expect_ok) {
    char *text = NULL;
    size_t len = 0;
    fz_begin();
    ae_status st = ae_tokenizer_decode(t, ids, n, &text, &len);
    fz_check(st, "ae_tokenizer_decode");
    if (expect_ok) FZ_ASSERT(st == AE_OK, "decode of valid ids failed: %s", ae_last_error());
    if (st != AE_OK) {
        FZ_ASSERT(st == AE_ERR_ARG || st == AE_ERR_NOMEM, "decode status %d", (int)st);
        return;
    }
    FZ_ASSERT(text && strlen(text) <= len && text[len] == '\0', "decode output not terminated");
    // streaming decode: the pieces and the flush concatenate to the same text
    fz_check_decode_stream(t, ids, n, text, len);
    free(text);
}

static void use(const ae_tokenizer *t) {
    int vocab = ae_tokenizer_vocab_size(t);
    FZ_ASSERT(vocab > 0, "vocab_size %d", vocab);
    int eos = ae_tokenizer_eos_id(t);
    FZ_ASSERT(eos == -1 || (eos >= 0 && eos < vocab), "eos id %d (vocab %d)", eos, vocab);
    FZ_ASSERT(!ae_tokenizer_is_special(t, -1) && !ae_tokenizer_is_special(t, vocab), "is_special");
    int32_t bad[3] = {-1, vocab, INT32_MAX};
    for (int i = 0; i < 3; i++) {
        char *out = NULL;
        size_t len;
        fz_begin();
        ae_status st = ae_tokenizer_decode(t, &bad[i], 1, &out, &len);
        fz_check(st, "ae_tokenizer_decode");
        FZ_ASSERT(st == AE_ERR_ARG && !out, "decode of id %d: status %d", bad[i], (int)st);
    }
    int32_t last = vocab - 1;
    decode_checked(t, &last, 1, 1);
    for (int32_t id = 0; id < vocab && id < 512; id++) decode_checked(t, &id, 1, 0);
    for (size_t k = 0; k < sizeof k_texts / sizeof *k_texts; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        fz_begin();
        ae_status st = ae_tokenizer_encode(t, k_texts[k], strlen(k_texts[k]), &ids, &n);
        fz_check(st, "ae_tokenizer_encode");
        if (st != AE_OK) {
            FZ_ASSERT(!ids, "failed encode returned ids");
            continue;
        }
        for (size_t i = 0; i < n; i++)
            FZ_ASSERT(ids[i] >= 0 && ids[i] < vocab, "encode gave id %d (vocab %d)", ids[i], vocab);
        decode_checked(t, ids, n, 1);
        free(ids);
    }
    (void)ae_tokenizer_token_id(t, "<|endoftext|>");
    (void)ae_tokenizer_token_id(t, "");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = find_sep(data, size);
    size_t tok_len = sep ? (size_t)(sep - data) : size;
    fz_write("m/tokenizer.json", data, tok_len);
    if (sep) {
        const uint8_t *cfg = sep + sizeof k_sep - 1;
        fz_write("m/tokenizer_config.json", cfg, size - (size_t)(cfg - data));
    } else {
        fz_remove("m/tokenizer_config.json");
    }
    ae_tokenizer *t = NULL;
    fz_begin();
    ae_status st = ae_tokenizer_load(fz_path("m"), &t);
    fz_check(st, "ae_tokenizer_load");
    if (st != AE_OK) {
        FZ_ASSERT(t == NULL, "failed load left a tokenizer");
        return 0;
    }
    use(t);
    ae_tokenizer_free(t);
    return 0;
}
