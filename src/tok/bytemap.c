// The GPT-2 byte <-> unicode table of byte-level BPE: printable bytes ('!'..'~', 0xA1..0xAC,
// 0xAE..0xFF) map to the code point of the same value, the other 68 bytes to U+0100.. in order.
#include <stdint.h>

#include "tok/tok_internal.h"

static int byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

// The 68 other bytes, in order: 0x00..0x20 (33), 0x7F..0xA0 (34), 0xAD (1).
uint32_t ae_tok_byte_to_cp(unsigned char b) {
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b <= 0xA0) return 256u + 33u + (b - 0x7Fu);
    return 256u + 67u; // 0xAD
}

int ae_tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + (k - 33));
    return k == 67 ? 0xAD : -1;
}

ae_status ae_tok_token_bytes(const char *tok, size_t len, ae_tok_buf *out) {
    const unsigned char *s = (const unsigned char *)tok;
    size_t start = out->n;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = ae_tok_utf8_next(s + i, len - i, &cp);
        int b = ae_tok_cp_to_byte(cp);
        if (b < 0) { // not a byte-level token: its raw UTF-8, as HF's ByteLevel decoder does
            out->n = start;
            return ae_tok_buf_put(out, tok, len);
        }
        unsigned char c = (unsigned char)b;
        AE_TRY(ae_tok_buf_put(out, &c, 1));
        i += (size_t)k;
    }
    return AE_OK;
}
