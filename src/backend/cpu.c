// CPU reference backend: fp32, readable loops, OpenBLAS for matrix products, OpenMP across
// rows/heads. Accumulations that decide parity (norms, softmax) run in double.
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "backend/ops.h"

static void cpu_matmul(const ae_backend *be, float *y, const float *x, const float *w, int M,
                       int K, int N) {
    (void)be;
    if (M == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, 0.0f, y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
}

static void cpu_rmsnorm(const ae_backend *be, float *y, const float *x, const float *w, int M,
                        int D, float eps) {
    (void)be;
#pragma omp parallel for if (M > 16)
    for (int i = 0; i < M; i++) {
        const float *xi = x + (size_t)i * D;
        float *yi = y + (size_t)i * D;
        double ss = 0.0;
        for (int d = 0; d < D; d++) ss += (double)xi[d] * xi[d];
        float inv = (float)(1.0 / sqrt(ss / D + eps));
        for (int d = 0; d < D; d++) yi[d] = w[d] * (xi[d] * inv);
    }
}

// Angle of pair i at position p, computed as transformers does: inv_freq in float, product in
// float.
static float rope_angle(int p, int i, int rd, double theta) {
    float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / rd));
    return (float)p * inv_freq;
}

// Rotates every pair of every head by +angle (sign = 1) or -angle (sign = -1).
static void rope_apply(float *x, const int *pos, int T, int H, int stride, int rd, double theta,
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

static void cpu_rope(const ae_backend *be, float *x, const int *pos, int T, int H, int stride,
                     int rd, double theta, ae_rope_mode mode) {
    (void)be;
    rope_apply(x, pos, T, H, stride, rd, theta, mode, 1.0f);
}

static void cpu_rope_bwd(const ae_backend *be, float *dx, const int *pos, int T, int H, int stride,
                         int rd, double theta, ae_rope_mode mode) {
    (void)be;
    rope_apply(dx, pos, T, H, stride, rd, theta, mode, -1.0f); // rotation is orthogonal
}

ae_attn_args ae_attn_dense(int T, int pos0, int Hq, int Hkv, int dk, int dv, int window,
                           float scale, const float *sinks) {
    ae_attn_args a = {.T = T, .pos0 = pos0, .Hq = Hq, .Hkv = Hkv, .dk = dk, .dv = dv,
                      .k_stride = Hkv * dk, .v_stride = Hkv * dv, .window = window, .ring = 0,
                      .scale = scale, .sinks = sinks};
    return a;
}

// First visible key position for a query at position qpos.
static int attn_lo(const ae_attn_args *a, int qpos) {
    int lo = 0;
    if (a->window > 0 && qpos - a->window + 1 > lo) lo = qpos - a->window + 1;
    return lo;
}

static size_t attn_row(const ae_attn_args *a, int j) {
    return (size_t)(a->ring > 0 ? j % a->ring : j);
}

// Softmax probabilities of one query row over keys lo..qpos into p[j - lo]; returns the
// normaliser's sink share (p_sink) through *psink when sinks are on.
static void attn_probs(const ae_attn_args *a, const float *qv, const float *k, int h, int qpos,
                       float *p, float *psink) {
    int lo = attn_lo(a, qpos), kh = h / (a->Hq / a->Hkv);
    float mx = -INFINITY;
    for (int j = lo; j <= qpos; j++) {
        const float *kv = k + attn_row(a, j) * a->k_stride + (size_t)kh * a->dk;
        float s = 0.0f;
        for (int d = 0; d < a->dk; d++) s += qv[d] * kv[d];
        s *= a->scale;
        p[j - lo] = s;
        if (s > mx) mx = s;
    }
    float sink = a->sinks ? a->sinks[h] : -INFINITY;
    if (sink > mx) mx = sink;
    double sum = a->sinks ? exp((double)sink - mx) : 0.0;
    for (int j = lo; j <= qpos; j++) {
        p[j - lo] = expf(p[j - lo] - mx);
        sum += p[j - lo];
    }
    float inv = (float)(1.0 / sum);
    for (int j = lo; j <= qpos; j++) p[j - lo] *= inv;
    if (psink) *psink = a->sinks ? (float)(exp((double)sink - mx) / sum) : 0.0f;
}

static void cpu_attention(const ae_backend *be, const ae_attn_args *a, float *out, const float *q,
                          const float *k, const float *v) {
    (void)be;
    int S = a->pos0 + a->T;
    // Threads only pay off with enough query-key pairs; one-token decode of a short context
    // stays on the calling thread.
#pragma omp parallel if ((long)a->T * a->Hq * S * a->dk > 262144)
    {
        float *p = malloc(sizeof(float) * (size_t)S);
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < a->T; t++) {
            for (int h = 0; h < a->Hq; h++) {
                int qpos = a->pos0 + t, lo = attn_lo(a, qpos), kh = h / (a->Hq / a->Hkv);
                attn_probs(a, q + ((size_t)t * a->Hq + h) * a->dk, k, h, qpos, p, NULL);
                float *o = out + ((size_t)t * a->Hq + h) * a->dv;
                for (int d = 0; d < a->dv; d++) o[d] = 0.0f;
                for (int j = lo; j <= qpos; j++) {
                    const float *vv = v + attn_row(a, j) * a->v_stride + (size_t)kh * a->dv;
                    float pj = p[j - lo];
                    for (int d = 0; d < a->dv; d++) o[d] += pj * vv[d];
                }
            }
        }
        free(p);
    }
}

static void cpu_silu_mul(const ae_backend *be, float *y, const float *g, const float *u,
                         size_t n) {
    (void)be;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_add(const ae_backend *be, float *y, const float *x, size_t n) {
    (void)be;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static const ae_backend k_cpu = {
    .name = "cpu",
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .rope_bwd = cpu_rope_bwd,
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
};

const ae_backend *ae_backend_cpu(void) { return &k_cpu; }
