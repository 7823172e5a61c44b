// Token files (format in data.h) and the deterministic window loader.
#include "train/data.h"

#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "core/sha256.h"

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static int host_is_le(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

void ae_tokfile_header(unsigned char hdr[AE_TOKFILE_HEADER], uint32_t vocab_size,
                       uint64_t n_tokens, const uint8_t tokenizer_hash[32], uint32_t eos_id) {
    memset(hdr, 0, AE_TOKFILE_HEADER);
    memcpy(hdr, AE_TOKFILE_MAGIC, 8);
    wr32(hdr + 8, AE_TOKFILE_VERSION);
    wr32(hdr + 12, vocab_size);
    wr64(hdr + 16, n_tokens);
    memcpy(hdr + 24, tokenizer_hash, 32);
    wr32(hdr + 56, eos_id);
    wr32(hdr + 60, 0);
}

static ae_status bad(ae_mmap *m, ae_status st) {
    ae_mmap_close(m);
    free(m);
    return st;
}

ae_status ae_tokfile_open(const char *path, ae_tokfile *f) {
    memset(f, 0, sizeof *f);
    if (!host_is_le())
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: token files are little-endian; this host is not",
                         path);
    ae_mmap *m = ae_malloc(sizeof *m);
    if (!m) return AE_ERR_NOMEM;
    ae_status st = ae_mmap_open(path, m);
    if (st != AE_OK) {
        free(m);
        return st;
    }
    const unsigned char *p = m->data;
    size_t size = m->size;
    if (size < 8 || memcmp(p, AE_TOKFILE_MAGIC, 8) != 0)
        return bad(m, ae_errorf(AE_ERR_FORMAT,
                                "%s: not a token file (wrong magic, expected \"" AE_TOKFILE_MAGIC
                                "\"; make one with 'attnedit prepare-data')",
                                path));
    if (size < AE_TOKFILE_HEADER)
        return bad(m, ae_errorf(AE_ERR_FORMAT,
                                "%s: truncated token file (%zu bytes, the header alone is %d)",
                                path, size, AE_TOKFILE_HEADER));
    uint32_t version = rd32(p + 8), vocab = rd32(p + 12), eos = rd32(p + 56), reserved = rd32(p + 60);
    uint64_t n = rd64(p + 16);
    if (version != AE_TOKFILE_VERSION)
        return bad(m, ae_errorf(AE_ERR_FORMAT,
                                "%s: unsupported token file version %u (this attnedit reads "
                                "version %u; re-run 'attnedit prepare-data')",
                                path, version, AE_TOKFILE_VERSION));
    if (vocab == 0 || vocab > (uint32_t)INT32_MAX)
        return bad(m, ae_errorf(AE_ERR_FORMAT, "%s: token file header has vocabulary size %u", path,
                                vocab));
    if (eos >= vocab)
        return bad(m, ae_errorf(AE_ERR_FORMAT,
                                "%s: token file header has eos id %u >= vocabulary size %u", path,
                                eos, vocab));
    if (reserved != 0)
        return bad(m, ae_errorf(AE_ERR_FORMAT,
                                "%s: token file header has a non-zero reserved field (0x%08x)", path,
                                reserved));
    uint64_t payload = size - AE_TOKFILE_HEADER;
    if (n > payload / 4 || payload != 4 * n) {
        return bad(m, ae_errorf(AE_ERR_FORMAT,
                                "%s: %s token file: header says %llu tokens but the file holds "
                                "%llu bytes after the %d-byte header (room for %llu tokens)",
                                path, n > payload / 4 ? "truncated" : "oversized",
                                (unsigned long long)n, (unsigned long long)payload,
                                AE_TOKFILE_HEADER, (unsigned long long)(payload / 4)));
    }
    const uint32_t *ids = (const uint32_t *)(const void *)(p + AE_TOKFILE_HEADER);
    for (uint64_t i = 0; i < n; i++)
        if (ids[i] >= vocab)
            return bad(m, ae_errorf(AE_ERR_FORMAT,
                                    "%s: token %llu has id %u >= vocabulary size %u", path,
                                    (unsigned long long)i, ids[i], vocab));
    f->version = version;
    f->vocab_size = vocab;
    f->eos_id = eos;
    f->n_tokens = n;
    memcpy(f->tokenizer_hash, p + 24, 32);
    f->ids = n ? ids : NULL;
    f->map_ = m;
    return AE_OK;
}

void ae_tokfile_close(ae_tokfile *f) {
    if (f->map_) {
        ae_mmap_close(f->map_);
        free(f->map_);
    }
    memset(f, 0, sizeof *f);
}

ae_status ae_tokenizer_file_hash(const char *model_dir, uint8_t hash[32], char hex[65]) {
    char *path = ae_path_join(model_dir, "tokenizer.json");
    if (!path) return AE_ERR_NOMEM;
    ae_mmap m;
    ae_status st = ae_mmap_open(path, &m);
    free(path);
    if (st != AE_OK) return st;
    ae_sha256(m.data, m.size, hash);
    ae_mmap_close(&m);
    if (hex) ae_sha256_hex(hash, hex);
    return AE_OK;
}

ae_status ae_tokfile_check_model(const ae_tokfile *f, const char *path, const char *model_dir,
                                 int model_vocab) {
    uint8_t h[32];
    char hex[65], fhex[65];
    AE_TRY(ae_tokenizer_file_hash(model_dir, h, hex));
    ae_sha256_hex(f->tokenizer_hash, fhex);
    if (memcmp(h, f->tokenizer_hash, 32) != 0)
        return ae_errorf(AE_ERR_ARG,
                         "%s: made with a different tokenizer than %s/tokenizer.json (token file "
                         "tokenizer SHA-256 %.16s..., model's %.16s...); re-run 'attnedit "
                         "prepare-data --model %s'",
                         path, model_dir, fhex, hex, model_dir);
    if (model_vocab <= 0 || f->vocab_size > (uint32_t)model_vocab)
        return ae_errorf(AE_ERR_ARG,
                         "%s: token file vocabulary size %u exceeds the model's vocabulary size %d "
                         "(%s)",
                         path, f->vocab_size, model_vocab, model_dir);
    return AE_OK;
}

// Uniform in [0, n) without modulo bias (n > 0).
static uint64_t uniform_below(ae_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n; // 2^64 mod n
    for (;;) {
        uint64_t x = ae_rng_u64(r);
        if (x >= threshold) return x % n;
    }
}

ae_status ae_loader_init(ae_loader *l, const ae_tokfile *f, int ctx, uint64_t seed) {
    memset(l, 0, sizeof *l);
    if (ctx < 1) return ae_errorf(AE_ERR_ARG, "context length %d must be at least 1", ctx);
    if (f->n_tokens < (uint64_t)ctx + 1)
        return ae_errorf(AE_ERR_ARG,
                         "token file holds %llu tokens, fewer than one window of ctx + 1 = %d",
                         (unsigned long long)f->n_tokens, ctx + 1);
    l->f = f;
    l->ctx = ctx;
    l->seed = seed;
    ae_rng_seed(&l->rng, seed);
    return AE_OK;
}

uint64_t ae_loader_next_start(ae_loader *l) {
    uint64_t n_starts = l->f->n_tokens - (uint64_t)l->ctx; // starts 0 .. N - ctx - 1
    l->draws++;
    return uniform_below(&l->rng, n_starts);
}

ae_status ae_loader_restore(ae_loader *l, const ae_tokfile *f, int ctx, uint64_t seed,
                            uint64_t draws) {
    AE_TRY(ae_loader_init(l, f, ctx, seed));
    for (uint64_t i = 0; i < draws; i++) ae_loader_next_start(l);
    return AE_OK;
}

void ae_loader_next(ae_loader *l, int B, int32_t *ids) {
    size_t w = (size_t)l->ctx + 1;
    for (int b = 0; b < B; b++) {
        uint64_t s = ae_loader_next_start(l);
        const uint32_t *src = l->f->ids + s;
        int32_t *dst = ids + (size_t)b * w;
        for (size_t i = 0; i < w; i++) dst[i] = (int32_t)src[i];
    }
}
