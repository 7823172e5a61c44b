// The code tables of the 8-bit AdamW moments (backend/adam8.h).
#include "backend/adam8.h"

// Magnitude of code k of a float-like code with `mbits` mantissa bits and the rest exponent,
// subnormals at exponent field 0, as an integer: e = k >> mbits, f = k mod 2^mbits;
// f for e = 0, (2^mbits + f)·2^(e − 1) otherwise. Exact in float (at most 31·2^14).
static float code_magnitude(int k, int mbits) {
    int e = k >> mbits, f = k & ((1 << mbits) - 1);
    return e == 0 ? (float)f : (float)(((1 << mbits) + f) << (e - 1));
}

// val[k] = magnitude(k) / magnitude(n − 1) (the largest is 1), mid between neighbours.
static void fill_code(float *val, float *mid, int n, int mbits) {
    float top = code_magnitude(n - 1, mbits);
    for (int k = 0; k < n; k++) val[k] = code_magnitude(k, mbits) / top;
    for (int k = 0; k + 1 < n; k++) mid[k] = (val[k] + val[k + 1]) * 0.5f;
}

void ae_q8_code_init(ae_q8_code *c) {
    fill_code(c->m_val, c->m_mid, 128, 3); // 4 exponent + 3 mantissa bits (+ the sign bit)
    fill_code(c->v_val, c->v_mid, 256, 4); // 4 exponent + 4 mantissa bits, unsigned
}
