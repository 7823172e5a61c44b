// SHA-256 (FIPS 180-4), streaming and one-shot. Used to fingerprint tokenizer.json, data files
// and the executable of each rank of a group (dist/comm.h).
#ifndef AE_CORE_SHA256_H
#define AE_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t nbytes;      // message length so far
    unsigned char buf[64];
    size_t nbuf;          // bytes pending in buf
} ae_sha256_ctx;

void ae_sha256_init(ae_sha256_ctx *c);
void ae_sha256_update(ae_sha256_ctx *c, const void *data, size_t n);
void ae_sha256_final(ae_sha256_ctx *c, uint8_t out[32]);
void ae_sha256(const void *data, size_t n, uint8_t out[32]);
// Lower-case hex of a 32-byte digest into hex[65] (NUL-terminated).
void ae_sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
