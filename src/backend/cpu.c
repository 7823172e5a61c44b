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

static void cpu_rope(const ae_backend *be, float *x, const int *pos, int T, int H, int hd,
                     double theta) {
    (void)be;
    int half = hd / 2;
#pragma omp parallel for if (T > 16)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            // inv_freq in float as transformers computes it, angle in float as well
            float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / hd));
            float ang = (float)pos[t] * inv_freq;
            float c = cosf(ang), s = sinf(ang);
            for (int h = 0; h < H; h++) {
                float *v = x + ((size_t)t * H + h) * hd;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

static void cpu_attention(const ae_backend *be, float *out, const float *q, const float *k,
                          const float *v, int T, int pos0, int Hq, int Hkv, int hd, int window,
                          float scale) {
    (void)be;
    int group = Hq / Hkv;
    int S = pos0 + T;
    // Threads only pay off with enough query-key pairs; one-token decode of a short context
    // stays on the calling thread (and out of the way of BLAS's own threads).
#pragma omp parallel if ((long)T * Hq * S * hd > 262144)
    {
        float *p = malloc(sizeof(float) * (size_t)S);
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < Hq; h++) {
                int qpos = pos0 + t;
                int lo = (window > 0 && qpos - window + 1 > 0) ? qpos - window + 1 : 0;
                const float *qv = q + ((size_t)t * Hq + h) * hd;
                int kh = h / group;
                float mx = -INFINITY;
                for (int j = lo; j <= qpos; j++) {
                    const float *kv = k + ((size_t)j * Hkv + kh) * hd;
                    float s = 0.0f;
                    for (int d = 0; d < hd; d++) s += qv[d] * kv[d];
                    s *= scale;
                    p[j] = s;
                    if (s > mx) mx = s;
                }
                double sum = 0.0;
                for (int j = lo; j <= qpos; j++) {
                    p[j] = expf(p[j] - mx);
                    sum += p[j];
                }
                float inv = (float)(1.0 / sum);
                float *o = out + ((size_t)t * Hq + h) * hd;
                for (int d = 0; d < hd; d++) o[d] = 0.0f;
                for (int j = lo; j <= qpos; j++) {
                    const float *vv = v + ((size_t)j * Hkv + kh) * hd;
                    float pj = p[j] * inv;
                    for (int d = 0; d < hd; d++) o[d] += pj * vv[d];
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
    .attention = cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
};

const ae_backend *ae_backend_cpu(void) { return &k_cpu; }
