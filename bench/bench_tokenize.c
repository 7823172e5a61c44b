// Tokenizer throughput on one CPU thread: bench_tokenize MODEL_DIR FILE [repeats]
// Prints load time, encode MB/s (input bytes) and decode MB/s (output bytes), best of repeats.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/file.h"
#include "tok/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL_DIR FILE [repeats]\n", argv[0]);
        return 2;
    }
    int repeats = argc == 4 ? atoi(argv[3]) : 3;
    if (repeats < 1) repeats = 1;
    ae_tokenizer *t;
    double t0 = now_s();
    if (ae_tokenizer_load(argv[1], &t) != AE_OK) {
        fprintf(stderr, "error: %s\n", ae_last_error());
        return 1;
    }
    double load = now_s() - t0;
    char *text;
    size_t len;
    if (ae_file_read_all(argv[2], &text, &len) != AE_OK) {
        fprintf(stderr, "error: %s\n", ae_last_error());
        ae_tokenizer_free(t);
        return 1;
    }
    double best_enc = 1e30, best_dec = 1e30;
    int32_t *ids = NULL;
    size_t n = 0;
    char *dec = NULL;
    size_t dlen = 0;
    for (int r = 0; r < repeats; r++) {
        free(ids);
        t0 = now_s();
        if (ae_tokenizer_encode(t, text, len, &ids, &n) != AE_OK) {
            fprintf(stderr, "error: %s\n", ae_last_error());
            return 1;
        }
        double e = now_s() - t0;
        if (e < best_enc) best_enc = e;
        free(dec);
        t0 = now_s();
        if (ae_tokenizer_decode(t, ids, n, &dec, &dlen) != AE_OK) {
            fprintf(stderr, "error: %s\n", ae_last_error());
            return 1;
        }
        double d = now_s() - t0;
        if (d < best_dec) best_dec = d;
    }
    int roundtrip = dlen == len && memcmp(dec, text, len) == 0;
    printf("tokenizer %s (vocab %d): load %.3f s\n", argv[1], ae_tokenizer_vocab_size(t), load);
    printf("file %s: %zu bytes -> %zu tokens (%.2f bytes/token), round trip %s\n", argv[2], len, n,
           n ? (double)len / (double)n : 0.0, roundtrip ? "exact" : "DIFFERS");
    printf("encode: %.2f MB/s (%.3f s, %.0f tokens/s)\n", (double)len / best_enc / 1e6, best_enc,
           (double)n / best_enc);
    printf("decode: %.2f MB/s (%.3f s)\n", (double)dlen / best_dec / 1e6, best_dec);
    free(ids);
    free(dec);
    free(text);
    ae_tokenizer_free(t);
    return roundtrip ? 0 : 1;
}
