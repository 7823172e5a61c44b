// Rotary angles of the CUDA kernels (rope, rope_bwd, qk_norm_rope, the MLA prep), computed as
// cpu_rope.c (and transformers) does: inv_freq = (float)(1.0 / pow(theta, 2i / rd)) in double
// rounded to float, then (float)p · inv_freq in fp32; cos and sin of that fp32 angle in double,
// rounded to float (what a correctly rounded cosf / sinf returns; angles reach 1e5 radians).
// inv_freq is computed on the host with the CPU's expression and passed in the kernel's
// parameters (RopeFreq, up to kRopeTab pairs), so it equals the CPU's bit for bit; pairs past the
// table (rd > 2·kRopeTab) compute it on the device in double. CUDA C++ only, internal to the
// backend.
#ifndef AE_BACKEND_CUDA_ROPE_H
#define AE_BACKEND_CUDA_ROPE_H

#include <math.h>

constexpr int kRopeTab = 256; // inv_freq values passed by parameter (rd <= 512; beyond: on device)

struct RopeFreq {
    float f[kRopeTab];
};

// The table of rd rotary dims (pairs past rd / 2 zero), on the host: the expression of
// cpu_rope.c, evaluated by the same libm.
static inline RopeFreq rope_freq(double theta, int rd) {
    RopeFreq tab;
    for (int i = 0; i < kRopeTab; i++)
        tab.f[i] = i < rd / 2 ? (float)(1.0 / pow(theta, (double)(2 * i) / rd)) : 0.0f;
    return tab;
}

// (cos, sin) of pair i's angle at position p.
__device__ __forceinline__ float2 rope_cs(const RopeFreq &tab, float p, int i, int rd,
                                          double theta) {
    const float inv = i < kRopeTab ? tab.f[i] : (float)(1.0 / pow(theta, (double)(2 * i) / rd));
    const float ang = __fmul_rn(p, inv);
    double s, c;
    sincos((double)ang, &s, &c);
    return make_float2((float)c, (float)s);
}

#endif
