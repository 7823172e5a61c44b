// Training data: token files made by `attnedit prepare-data` and a deterministic window loader.
//
// Token file (little-endian):
//   offset 0   8 bytes  magic "AETOKENS"
//   offset 8   u32      format version (1)
//   offset 12  u32      vocabulary size of the tokenizer that made it
//   offset 16  u64      number of tokens N
//   offset 24  32 bytes tokenizer hash: SHA-256 of the tokenizer.json bytes
//   offset 56  u32      eos id used between documents
//   offset 60  u32      reserved (0)
//   offset 64  N × u32  token ids
// Documents are separated by one eos id.
#ifndef AE_TRAIN_DATA_H
#define AE_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/rng.h"
#include "tok/tokenizer.h"

#define AE_TOKFILE_MAGIC "AETOKENS"
#define AE_TOKFILE_VERSION 1u
#define AE_TOKFILE_HEADER 64

typedef struct {
    uint32_t version, vocab_size, eos_id;
    uint64_t n_tokens;
    uint8_t tokenizer_hash[32];
    const uint32_t *ids; // (n_tokens) mapped
    void *map_;          // internal
} ae_tokfile;

// Opens and validates a token file (magic, version, size == header + 4·N, ids < vocab_size).
// Every failure is AE_ERR_FORMAT (AE_ERR_IO when unreadable) with a message naming the file.
ae_status ae_tokfile_open(const char *path, ae_tokfile *f);
void ae_tokfile_close(ae_tokfile *f);
// SHA-256 of dir/tokenizer.json (hex digest written to hex[65] when non-NULL).
ae_status ae_tokenizer_file_hash(const char *model_dir, uint8_t hash[32], char hex[65]);
// AE_ERR_ARG unless the file was made by this model's tokenizer (hash and vocab size).
// model_vocab is the model's embedding rows (config vocab_size); it may exceed the tokenizer's
// vocabulary (real Qwen3: 151936 rows, 151669 tokens) but not be smaller than the file's.
ae_status ae_tokfile_check_model(const ae_tokfile *f, const char *path, const char *model_dir,
                                 int model_vocab);
// Fills the 64-byte header (little-endian, reserved = 0).
void ae_tokfile_header(unsigned char hdr[AE_TOKFILE_HEADER], uint32_t vocab_size,
                       uint64_t n_tokens, const uint8_t tokenizer_hash[32], uint32_t eos_id);

// Deterministic loader of windows of ctx+1 tokens (inputs + next-token targets) drawn uniformly
// from a token file with a seeded generator. Its whole state is (seed, draws) so a resumed run
// continues exactly where it stopped: copy the struct, or save (seed, draws) and call
// ae_loader_restore. Window starts are uniform in [0, N - ctx - 1] (unbiased), so a window may
// cross document boundaries (the eos between documents is part of the stream).
typedef struct {
    const ae_tokfile *f;
    int ctx;
    ae_rng rng;     // stream state after `draws` windows
    uint64_t draws; // windows drawn so far
    uint64_t seed;  // seed given to init
} ae_loader;

// AE_ERR_ARG when ctx < 1 or the file holds fewer than ctx + 1 tokens.
ae_status ae_loader_init(ae_loader *l, const ae_tokfile *f, int ctx, uint64_t seed);
// Same as init followed by skipping `draws` windows (replays the generator, O(draws)).
ae_status ae_loader_restore(ae_loader *l, const ae_tokfile *f, int ctx, uint64_t seed,
                            uint64_t draws);
// Start offset of the next window, advancing the state by one draw.
uint64_t ae_loader_next_start(ae_loader *l);
// Fills ids (B, ctx+1) with the next B windows.
void ae_loader_next(ae_loader *l, int B, int32_t *ids);

#endif
