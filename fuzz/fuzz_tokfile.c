// libFuzzer harness: token files (train/data.h: 64-byte header, then N x u32 ids), read by
// ae_tokfile_open from a tmpfs file; a file that opens is then checked against a model folder
// (ae_tokfile_check_model) and windows are drawn from it (ae_loader_*).
// Promises checked (train/data.h): AE_OK or an error with a message; on success magic,
// version, size == 64 + 4 N, eos < vocab and every id < vocab hold; check_model succeeds iff the
// tokenizer hash matches and the model vocabulary is large enough; the loader refuses ctx < 1
// and files shorter than ctx + 1 tokens, draws windows inside the file, and restore(draws)
// continues exactly where the drawing stopped.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "train/data.h"
#include "core/sha256.h"

// The model folder's tokenizer.json (only its SHA-256 matters here; the seed corpus carries it).
static const char k_tokjson[] = "{\"fuzz\": \"tokenizer.json of fuzz_tokfile\"}\n";
static uint8_t g_hash[32];

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    fz_write("m/tokenizer.json", k_tokjson, sizeof k_tokjson - 1);
    ae_sha256(k_tokjson, sizeof k_tokjson - 1, g_hash);
}

static void loader(const ae_tokfile *f, int ctx, uint64_t seed) {
    ae_loader l;
    fz_begin();
    ae_status st = ae_loader_init(&l, f, ctx, seed);
    fz_check(st, "ae_loader_init");
    int fits = ctx >= 1 && f->n_tokens >= (uint64_t)ctx + 1;
    FZ_ASSERT((st == AE_OK) == fits, "loader_init(ctx %d) on %llu tokens: status %d", ctx,
              (unsigned long long)f->n_tokens, (int)st);
    if (st != AE_OK) return;
    enum { B = 3 };
    int32_t *win = malloc(sizeof *win * B * ((size_t)ctx + 1));
    if (!win) abort();
    ae_loader saved = l;
    uint64_t starts[B];
    for (int b = 0; b < B; b++) {
        starts[b] = ae_loader_next_start(&l);
        FZ_ASSERT(starts[b] + (uint64_t)ctx + 1 <= f->n_tokens, "window %llu past the end",
                  (unsigned long long)starts[b]);
    }
    l = saved;
    ae_loader_next(&l, B, win);
    for (int b = 0; b < B; b++)
        for (int i = 0; i <= ctx; i++)
            FZ_ASSERT((uint32_t)win[(size_t)b * ((size_t)ctx + 1) + (size_t)i] == f->ids[starts[b] + (uint64_t)i],
                      "window %d differs", b);
    uint64_t next = ae_loader_next_start(&l);
    ae_loader r;
    fz_begin();
    st = ae_loader_restore(&r, f, ctx, seed, B);
    fz_check(st, "ae_loader_restore");
    FZ_ASSERT(st == AE_OK && ae_loader_next_start(&r) == next, "restore does not continue the draws");
    free(win);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    fz_write("d.tok", data, size);
    ae_tokfile f;
    fz_begin();
    ae_status st = ae_tokfile_open(fz_path("d.tok"), &f);
    fz_check(st, "ae_tokfile_open");
    if (st != AE_OK) {
        FZ_ASSERT(f.map_ == NULL, "failed open left a mapping");
        return 0;
    }
    FZ_ASSERT(size >= AE_TOKFILE_HEADER && memcmp(data, AE_TOKFILE_MAGIC, 8) == 0, "magic");
    FZ_ASSERT(f.version == AE_TOKFILE_VERSION && f.vocab_size == rd32(data + 12) &&
                  f.eos_id == rd32(data + 56) && f.eos_id < f.vocab_size,
              "header fields");
    FZ_ASSERT(size == AE_TOKFILE_HEADER + 4 * f.n_tokens, "size %zu for %llu tokens", size,
              (unsigned long long)f.n_tokens);
    for (uint64_t i = 0; i < f.n_tokens; i++)
        FZ_ASSERT(f.ids[i] < f.vocab_size, "id %u >= vocab %u", f.ids[i], f.vocab_size);
    int same_hash = memcmp(f.tokenizer_hash, g_hash, 32) == 0;
    int models[3] = {(int)f.vocab_size, (int)f.vocab_size - 1, 0};
    for (int k = 0; k < 3; k++) {
        fz_begin();
        st = ae_tokfile_check_model(&f, "d.tok", fz_path("m"), models[k]);
        fz_check(st, "ae_tokfile_check_model");
        int ok = same_hash && models[k] > 0 && f.vocab_size <= (uint32_t)models[k];
        FZ_ASSERT((st == AE_OK) == ok, "check_model(vocab %d): status %d", models[k], (int)st);
    }
    uint64_t seed = 0;
    memcpy(&seed, data + 24, sizeof seed);
    int ctx = (int)(data[32] % 24) - 1; // -1 .. 22
    loader(&f, ctx, seed);
    loader(&f, f.n_tokens > 1 ? (int)((f.n_tokens - 1) & 0x3fff) : 1, seed ^ 1);
    ae_tokfile_close(&f);
    return 0;
}
