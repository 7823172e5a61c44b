// Rotary position embedding, in place, on the first rd dims of each head vector; and the fused
// per-head q/k norm + rope, which on the cpu is those two reference ops in sequence.
#include <math.h>

#include "backend/cpu_internal.h"

// Angle of pair i at position p, computed as transformers does: inv_freq in float, product in
// float.
static float rope_angle(int p, int i, int rd, double theta) {
    float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / rd));
    return (float)p * inv_freq;
}

// Rotates every pair of every head by +angle (sign = 1) or -angle (sign = -1).
// AE_ROPE_HALF pairs (i, i + rd/2); AE_ROPE_INTERLEAVED pairs (2i, 2i + 1).
static void rope_apply(float *x, const int32_t *pos, int T, int H, int stride, int rd, double theta,
                       ae_rope_mode mode, float sign) {
    int half = rd / 2;
#pragma omp parallel for if (T > 16)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            float ang = rope_angle(pos[t], i, rd, theta);
            float c = cosf(ang), s = sign * sinf(ang);
            int ia = mode == AE_ROPE_HALF ? i : 2 * i;
            int ib = mode == AE_ROPE_HALF ? i + half : 2 * i + 1;
            for (int h = 0; h < H; h++) {
                float *v = x + ((size_t)t * H + h) * stride;
                float a = v[ia], b = v[ib];
                v[ia] = a * c - b * s;
                v[ib] = b * c + a * s;
            }
        }
    }
}

void ae_cpu_rope(const ae_backend *be, ae_ptr x, ae_ptr pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode) {
    (void)be;
    rope_apply(cpu_f(x, "rope"), cpu_i(pos, "rope"), T, H, stride, rd, theta, mode, 1.0f);
}

// The rotation is orthogonal, so its transpose (the backward) is the rotation by -angle; dims
// past rd pass through unchanged.
void ae_cpu_rope_bwd(const ae_backend *be, ae_ptr dx, ae_ptr pos, int T, int H, int stride, int rd,
                     double theta, ae_rope_mode mode) {
    (void)be;
    rope_apply(cpu_f(dx, "rope_bwd"), cpu_i(pos, "rope_bwd"), T, H, stride, rd, theta, mode, -1.0f);
}

// rmsnorm then rope of the Hh head rows of each of M tokens at x + t·ld + h·hd; one call over
// all rows when they are packed, else one per token (each row's values are the same either way).
static void norm_rope_rows(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr x,
                           int64_t ld, int Hh, ae_ptr w, ae_ptr pos) {
    if (ae_ptr_is_null(x) || Hh <= 0 || a->M <= 0) return;
    int hd = a->hd;
    if (ld == (int64_t)Hh * hd) {
        ae_cpu_rmsnorm(be, x, x, w, a->M * Hh, hd, hd, a->eps);
        ae_cpu_rope(be, x, pos, a->M, Hh, hd, a->rd, a->theta, a->mode);
        return;
    }
    for (int t = 0; t < a->M; t++) {
        ae_ptr xt = ae_ptr_at(x, (size_t)t * (size_t)ld);
        ae_cpu_rmsnorm(be, xt, xt, w, Hh, hd, hd, a->eps);
        ae_cpu_rope(be, xt, ae_ptr_at(pos, (size_t)t), 1, Hh, hd, a->rd, a->theta, a->mode);
    }
}

void ae_cpu_qk_norm_rope(const ae_backend *be, const ae_qk_norm_rope_args *a, ae_ptr q, ae_ptr k,
                         ae_ptr wq, ae_ptr wk, ae_ptr pos) {
    norm_rope_rows(be, a, q, a->ldq, a->Hq, wq, pos);
    norm_rope_rows(be, a, k, a->ldk, a->Hkv, wk, pos);
}
