// PNG encoder (8-bit RGB, no interlace) on top of our deflate: per-row filter choice, zlib
// wrapper (header 78 01, Adler-32), chunks with CRC-32, atomic file write.
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "plot/png.h"

uint32_t ae_crc32(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) { // idempotent: racing threads compute the same values
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t ae_adler32(uint32_t adler, const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (n > 0) {
        size_t k = n < 5552 ? n : 5552; // largest run before the sums can overflow 32 bits
        n -= k;
        while (k--) {
            a += *p++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return b << 16 | a;
}

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
}

// Filtered scanlines: h rows of (1 filter byte + 3w bytes). out: (h, 1 + 3w)
static void filter_rows(const uint8_t *rgb, int w, int h, uint8_t *out) {
    size_t stride = (size_t)w * 3;
    uint8_t *cand = out; // written in place: try each filter, keep the best
    for (int y = 0; y < h; y++) {
        const uint8_t *row = rgb + (size_t)y * stride, *up = y ? row - stride : NULL;
        uint8_t *dst = cand + (size_t)y * (stride + 1);
        uint64_t best_cost = UINT64_MAX;
        int best = 0;
        for (int f = 0; f < 5; f++) {
            uint64_t cost = 0;
            for (size_t i = 0; i < stride; i++) {
                int a = i >= 3 ? row[i - 3] : 0, b = up ? up[i] : 0, c = (i >= 3 && up) ? up[i - 3] : 0;
                int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : paeth(a, b, c);
                int v = (uint8_t)(row[i] - pred);
                cost += (uint64_t)(v < 128 ? v : 256 - v);
            }
            if (cost < best_cost) best_cost = cost, best = f;
        }
        dst[0] = (uint8_t)best;
        for (size_t i = 0; i < stride; i++) {
            int a = i >= 3 ? row[i - 3] : 0, b = up ? up[i] : 0, c = (i >= 3 && up) ? up[i - 3] : 0;
            int pred = best == 0 ? 0 : best == 1 ? a : best == 2 ? b : best == 3 ? (a + b) / 2 : paeth(a, b, c);
            dst[1 + i] = (uint8_t)(row[i] - pred);
        }
    }
}

typedef struct {
    uint8_t *p;
    size_t len;
} obuf;

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void put_chunk(obuf *o, const char *type, const uint8_t *data, size_t n) {
    uint8_t *p = o->p + o->len;
    put32(p, (uint32_t)n);
    memcpy(p + 4, type, 4);
    if (n) memcpy(p + 8, data, n);
    put32(p + 8 + n, ae_crc32(0, p + 4, n + 4));
    o->len += n + 12;
}

enum { IDAT_MAX = 65536 };

ae_status ae_png_encode(const uint8_t *rgb, int w, int h, ae_deflate_mode mode, uint8_t **out,
                        size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return ae_errorf(AE_ERR_ARG, "png: image size %dx%d is not in 1x1 .. 16384x16384", w, h);
    size_t raw_n = (size_t)h * ((size_t)w * 3 + 1);
    uint8_t *raw = ae_malloc(raw_n); // (h, 1 + 3w) filtered scanlines
    if (!raw) return AE_ERR_NOMEM;
    filter_rows(rgb, w, h, raw);
    uint8_t *def = NULL;
    size_t def_n = 0;
    ae_status st = ae_deflate(raw, raw_n, mode, &def, &def_n);
    uint32_t adler = ae_adler32(1, raw, raw_n);
    free(raw);
    if (st != AE_OK) return st;
    // zlib stream: CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (check bits; no dictionary)
    size_t z_n = 2 + def_n + 4;
    uint8_t *z = ae_malloc(z_n);
    size_t n_idat = (z_n + IDAT_MAX - 1) / IDAT_MAX;
    obuf o = {ae_malloc(8 + 25 + z_n + 12 * n_idat + 12), 0};
    if (!z || !o.p) {
        free(def), free(z), free(o.p);
        return AE_ERR_NOMEM;
    }
    z[0] = 0x78, z[1] = 0x01;
    memcpy(z + 2, def, def_n);
    put32(z + 2 + def_n, adler);
    free(def);
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(o.p, sig, 8);
    o.len = 8;
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;  // bit depth
    ihdr[9] = 2;  // colour type: RGB
    ihdr[10] = 0; // compression: deflate
    ihdr[11] = 0; // filter method 0 (five per-row filters)
    ihdr[12] = 0; // no interlace
    put_chunk(&o, "IHDR", ihdr, 13);
    for (size_t i = 0; i < z_n; i += IDAT_MAX)
        put_chunk(&o, "IDAT", z + i, z_n - i < IDAT_MAX ? z_n - i : IDAT_MAX);
    put_chunk(&o, "IEND", NULL, 0);
    free(z);
    *out = o.p;
    *out_len = o.len;
    return AE_OK;
}

ae_status ae_png_write(const char *path, const uint8_t *rgb, int w, int h) {
    uint8_t *png;
    size_t n;
    AE_TRY(ae_png_encode(rgb, w, h, AE_DEFLATE_FIXED, &png, &n));
    ae_atomic_file f;
    ae_status st = ae_atomic_open(&f, path);
    if (st == AE_OK) {
        st = ae_atomic_write(&f, png, n);
        if (st == AE_OK) st = ae_atomic_commit(&f);
        else ae_atomic_abort(&f);
    }
    free(png);
    return st;
}
