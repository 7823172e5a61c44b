#include "core/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k_dtypes[AE_DT_COUNT] = {
    [AE_DT_BOOL] = {"BOOL", 1}, [AE_DT_U8] = {"U8", 1},     [AE_DT_I8] = {"I8", 1},
    [AE_DT_I16] = {"I16", 2},   [AE_DT_U16] = {"U16", 2},   [AE_DT_F16] = {"F16", 2},
    [AE_DT_BF16] = {"BF16", 2}, [AE_DT_I32] = {"I32", 4},   [AE_DT_U32] = {"U32", 4},
    [AE_DT_F32] = {"F32", 4},   [AE_DT_I64] = {"I64", 8},   [AE_DT_U64] = {"U64", 8},
    [AE_DT_F64] = {"F64", 8},   [AE_DT_F8_E4M3] = {"F8_E4M3", 1}, [AE_DT_F8_E5M2] = {"F8_E5M2", 1},
};

size_t ae_dtype_size(ae_dtype t) { return (unsigned)t < AE_DT_COUNT ? k_dtypes[t].size : 0; }

const char *ae_dtype_name(ae_dtype t) { return (unsigned)t < AE_DT_COUNT ? k_dtypes[t].name : "?"; }

int ae_dtype_from_name(const char *name, ae_dtype *out) {
    for (int i = 0; i < AE_DT_COUNT; i++) {
        if (strcmp(name, k_dtypes[i].name) == 0) {
            *out = (ae_dtype)i;
            return 0;
        }
    }
    return -1;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float ae_bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

float ae_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13)); // inf / nan
    if (exp == 0) {
        if (man == 0) return bits_to_f32(sign);
        // subnormal: value = man * 2^-24
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t ae_f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((u + rounding) >> 16);
}

uint16_t ae_f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;       // NaN
    if (a >= 0x477ff000u) return sign | 0x7c00;      // overflow (>= 65520) -> inf
    if (a < 0x38800000u) {                           // subnormal or zero in f16
        if (a < 0x33000000u) return sign;            // < 2^-25 rounds to 0
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);            // 14..24
        uint32_t half = 1u << (shift - 1);
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t r = man >> shift;
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u; // rebias 127->15, round
    return sign | (uint16_t)(r >> 13);
}
