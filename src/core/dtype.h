// Element types of stored tensors and conversion of 16-bit floats to f32 (byte-wise loads,
// no unaligned casts).
#ifndef AE_CORE_DTYPE_H
#define AE_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AE_DT_BOOL, AE_DT_U8, AE_DT_I8, AE_DT_I16, AE_DT_U16, AE_DT_F16, AE_DT_BF16,
    AE_DT_I32, AE_DT_U32, AE_DT_F32, AE_DT_I64, AE_DT_U64, AE_DT_F64,
    AE_DT_F8_E4M3, AE_DT_F8_E5M2,
    AE_DT_COUNT
} ae_dtype;

size_t ae_dtype_size(ae_dtype t);
const char *ae_dtype_name(ae_dtype t); // safetensors spelling: "F32", "BF16", ...
int ae_dtype_from_name(const char *name, ae_dtype *out); // 0 on success, -1 unknown

float ae_bf16_to_f32(uint16_t h);
float ae_f16_to_f32(uint16_t h);
uint16_t ae_f32_to_bf16(float f); // round to nearest even, NaN kept NaN
uint16_t ae_f32_to_f16(float f);  // round to nearest even

#ifdef __cplusplus
}
#endif

#endif
