// Deflate (RFC 1951) encoder: stored blocks, or greedy LZ77 with hash chains coded with the
// fixed Huffman code (block type 1). Plots are mostly runs of background, which LZ77 with
// distance 1 (or one row back) turns into a few bits per 258 bytes.
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "plot/png.h"

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint64_t acc; // pending bits, least significant first
    int nacc;
    int oom;
} bitw;

static void bw_byte(bitw *b, uint8_t v) {
    if (b->oom) return;
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        uint8_t *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    b->buf[b->len++] = v;
}

// Appends the low `n` bits of v (n <= 32), least significant first.
static void bw_bits(bitw *b, uint32_t v, int n) {
    b->acc |= (uint64_t)(v & (n == 32 ? 0xffffffffu : ((1u << n) - 1))) << b->nacc;
    b->nacc += n;
    while (b->nacc >= 8) {
        bw_byte(b, (uint8_t)b->acc);
        b->acc >>= 8;
        b->nacc -= 8;
    }
}

static void bw_flush(bitw *b) {
    if (b->nacc > 0) bw_byte(b, (uint8_t)b->acc);
    b->acc = 0;
    b->nacc = 0;
}

// A Huffman code of `len` bits is sent most significant bit first.
static void bw_code(bitw *b, uint32_t code, int len) {
    uint32_t r = 0;
    for (int i = 0; i < len; i++) r |= ((code >> i) & 1u) << (len - 1 - i);
    bw_bits(b, r, len);
}

// Fixed literal/length code (RFC 1951 3.2.6).
static void put_litlen(bitw *b, int v) {
    if (v < 144) bw_code(b, 0x30u + (uint32_t)v, 8);
    else if (v < 256) bw_code(b, 0x190u + (uint32_t)(v - 144), 9);
    else if (v < 280) bw_code(b, (uint32_t)(v - 256), 7);
    else bw_code(b, 0xC0u + (uint32_t)(v - 280), 8);
}

static const uint16_t k_len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                        31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t k_len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                        2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t k_dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                         33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                         1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t k_dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                         6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static void put_match(bitw *b, int len, int dist) {
    int i = 28;
    while (k_len_base[i] > len) i--;
    put_litlen(b, 257 + i);
    if (k_len_extra[i]) bw_bits(b, (uint32_t)(len - k_len_base[i]), k_len_extra[i]);
    int j = 29;
    while (k_dist_base[j] > dist) j--;
    bw_code(b, (uint32_t)j, 5);
    if (k_dist_extra[j]) bw_bits(b, (uint32_t)(dist - k_dist_base[j]), k_dist_extra[j]);
}

enum { WIN = 32768, MIN_MATCH = 3, MAX_MATCH = 258, HASH_BITS = 15, MAX_CHAIN = 48 };

static uint32_t hash3(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
    return (v * 2654435761u) >> (32 - HASH_BITS);
}

static ae_status deflate_fixed(const uint8_t *in, size_t n, bitw *b) {
    int32_t *head = ae_malloc(sizeof(int32_t) << HASH_BITS); // (2^HASH_BITS) last position + 1
    int32_t *prev = ae_malloc(sizeof(int32_t) * WIN);        // (WIN) previous position + 1
    if (!head || !prev) {
        free(head), free(prev);
        return AE_ERR_NOMEM;
    }
    memset(head, 0, sizeof(int32_t) << HASH_BITS);
    bw_bits(b, 1, 1); // BFINAL
    bw_bits(b, 1, 2); // BTYPE 01: fixed Huffman
    size_t i = 0;
    while (i < n) {
        int best = 0, best_d = 0;
        if (i + MIN_MATCH <= n) {
            uint32_t h = hash3(in + i);
            size_t maxlen = n - i < MAX_MATCH ? n - i : MAX_MATCH;
            int32_t cand = head[h];
            for (int chain = 0; cand > 0 && chain < MAX_CHAIN; chain++) {
                size_t c = (size_t)cand - 1;
                if (i - c > WIN - 1) break;
                if (in[c + (size_t)best] == in[i + (size_t)best]) {
                    size_t l = 0;
                    while (l < maxlen && in[c + l] == in[i + l]) l++;
                    if ((int)l > best) {
                        best = (int)l;
                        best_d = (int)(i - c);
                        if (l == maxlen) break;
                    }
                }
                int32_t nx = prev[c % WIN];
                if (nx >= cand) break; // the slot was reused: chain ends
                cand = nx;
            }
        }
        size_t adv = best >= MIN_MATCH ? (size_t)best : 1;
        if (best >= MIN_MATCH) put_match(b, best, best_d);
        else put_litlen(b, in[i]);
        for (size_t k = 0; k < adv; k++, i++) { // insert every position passed into the chains
            if (i + MIN_MATCH > n) continue;
            uint32_t h = hash3(in + i);
            prev[i % WIN] = head[h];
            head[h] = (int32_t)(i + 1);
        }
    }
    put_litlen(b, 256); // end of block
    bw_flush(b);
    free(head);
    free(prev);
    return AE_OK;
}

static void deflate_stored(const uint8_t *in, size_t n, bitw *b) {
    size_t i = 0;
    do {
        size_t len = n - i > 65535 ? 65535 : n - i;
        bw_bits(b, i + len == n ? 1 : 0, 1); // BFINAL
        bw_bits(b, 0, 2);                     // BTYPE 00: stored
        bw_flush(b);
        bw_byte(b, (uint8_t)len), bw_byte(b, (uint8_t)(len >> 8));
        bw_byte(b, (uint8_t)~len), bw_byte(b, (uint8_t)(~len >> 8));
        for (size_t k = 0; k < len; k++) bw_byte(b, in[i + k]);
        i += len;
    } while (i < n);
}

ae_status ae_deflate(const uint8_t *in, size_t n, ae_deflate_mode mode, uint8_t **out,
                     size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (n > (size_t)INT32_MAX - WIN)
        return ae_errorf(AE_ERR_ARG, "deflate: %zu bytes is more than this encoder takes", n);
    bitw b = {0};
    if (mode == AE_DEFLATE_STORED) deflate_stored(in, n, &b);
    else AE_TRY(deflate_fixed(in, n, &b));
    if (b.oom) {
        free(b.buf);
        return AE_ERR_NOMEM;
    }
    *out = b.buf;
    *out_len = b.len;
    return AE_OK;
}
