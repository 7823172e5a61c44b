// PNG writing without zlib: 8-bit RGB images, zlib streams made by our own deflate encoder
// (stored blocks, or LZ77 + the fixed Huffman code of RFC 1951), CRC-32 and Adler-32.
#ifndef AE_PLOT_PNG_H
#define AE_PLOT_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum {
    AE_DEFLATE_STORED = 0, // uncompressed blocks of at most 65535 bytes
    AE_DEFLATE_FIXED = 1,  // one block: greedy LZ77 (32 KiB window) + fixed Huffman codes
} ae_deflate_mode;

// CRC-32 (ISO 3309, as PNG and gzip use it) of data, continuing from crc (start with 0).
uint32_t ae_crc32(uint32_t crc, const void *data, size_t n);
// Adler-32 (RFC 1950) of data, continuing from adler (start with 1).
uint32_t ae_adler32(uint32_t adler, const void *data, size_t n);

// Raw deflate stream (RFC 1951) of in[0..n): *out heap-allocated, *out_len its size.
ae_status ae_deflate(const uint8_t *in, size_t n, ae_deflate_mode mode, uint8_t **out,
                     size_t *out_len);

// The PNG file of an 8-bit RGB image: signature, IHDR, IDAT chunks of at most 64 KiB, IEND.
// Each row gets the PNG filter (none, sub, up, average, Paeth) with the smallest sum of absolute
// values. rgb: (h, w, 3) row-major, top row first. *out heap-allocated.
ae_status ae_png_encode(const uint8_t *rgb, int w, int h, ae_deflate_mode mode, uint8_t **out,
                        size_t *out_len);

// ae_png_encode (fixed Huffman) written atomically to path: the file appears whole or not at
// all (a failure leaves a previous file untouched).
ae_status ae_png_write(const char *path, const uint8_t *rgb, int w, int h);

#endif
