// The tests' double-precision references (util/ref.h).
#include "util/ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ae_ref_matmul(double *y, const double *x, const double *w, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += x[(size_t)i * K + k] * w[(size_t)j * K + k];
            y[(size_t)i * N + j] = s;
        }
}

void ae_ref_rmsnorm(double *y, const double *x, const double *w, int M, int D, double eps) {
    for (int i = 0; i < M; i++) {
        const double *xi = x + (size_t)i * D;
        double ss = 0;
        for (int d = 0; d < D; d++) ss += xi[d] * xi[d];
        double inv = 1.0 / sqrt(ss / D + eps);
        for (int d = 0; d < D; d++) y[(size_t)i * D + d] = xi[d] * inv * (w ? w[d] : 1.0);
    }
}

double ae_ref_rope_angle(int pos, int i, int rd, double theta) {
    float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / rd));
    return (double)((float)pos * inv_freq);
}

void ae_ref_rope_head(double *v, int rd, int pos, double theta, ae_rope_mode mode) {
    int half = rd / 2;
    for (int i = 0; i < half; i++) {
        double ang = ae_ref_rope_angle(pos, i, rd, theta), c = cos(ang), s = sin(ang);
        int ia = mode == AE_ROPE_HALF ? i : 2 * i;
        int ib = mode == AE_ROPE_HALF ? i + half : 2 * i + 1;
        double a = v[ia], b = v[ib];
        v[ia] = a * c - b * s;
        v[ib] = b * c + a * s;
    }
}

void ae_ref_rope(double *y, const double *x, const int32_t *pos, int T, int H, int stride, int rd,
                 double theta, ae_rope_mode mode) {
    if (y != x) memmove(y, x, sizeof(double) * (size_t)T * H * stride);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            ae_ref_rope_head(y + ((size_t)t * H + h) * stride, rd, pos[t], theta, mode);
}

double ae_ref_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }
double ae_ref_silu(double v) { return v * ae_ref_sigmoid(v); }

void ae_ref_silu_mul(double *y, const double *g, const double *u, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = ae_ref_silu(g[i]) * u[i];
}

void ae_ref_gate_mul(double *y, const double *x, const double *g, int T, int H, int hd,
                     int per_head) {
    for (size_t r = 0; r < (size_t)T * H; r++)
        for (int d = 0; d < hd; d++) {
            size_t i = r * hd + d;
            y[i] = x[i] * ae_ref_sigmoid(per_head ? g[r] : g[i]);
        }
}

double ae_ref_logsumexp(const double *z, int n, double *p) {
    double mx = -INFINITY, s = 0.0;
    for (int i = 0; i < n; i++) mx = fmax(mx, z[i]);
    for (int i = 0; i < n; i++) {
        double e = exp(z[i] - mx);
        s += e;
        if (p) p[i] = e;
    }
    for (int i = 0; p && i < n; i++) p[i] /= s;
    return mx + log(s);
}

// scale·z formed in float as the ops form it, as a new double array (caller frees).   z: (n)
static double *scaled(const float *z, int n, float scale) {
    double *d = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    if (!d) abort();
    for (int i = 0; i < n; i++) d[i] = (double)(z[i] * scale);
    return d;
}

double ae_test_logsumexp(const float *z, int n, float scale, double *p) {
    double *d = scaled(z, n, scale);
    double l = ae_ref_logsumexp(d, n, p);
    free(d);
    return l;
}

double ae_ref_nll_row(const float *z, int n, int target) {
    return ae_test_logsumexp(z, n, 1.0f, NULL) - z[target];
}

double ae_ref_kl_row(const float *zt, const float *zs, int n, float scale) {
    double *a = scaled(zt, n, scale), *b = scaled(zs, n, scale);
    double *pt = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1)); // (n) softmax(scale·zt)
    if (!pt) abort();
    double lt = ae_ref_logsumexp(a, n, pt), ls = ae_ref_logsumexp(b, n, NULL), kl = 0;
    for (int i = 0; i < n; i++)
        if (pt[i] > 0) kl += pt[i] * ((a[i] - lt) - (b[i] - ls));
    free(a), free(b), free(pt);
    return kl;
}

double ae_ref_mse_row(const double *y, const double *t, int D, int normalized) {
    double se = 0, tt = 0;
    for (int d = 0; d < D; d++) se += (y[d] - t[d]) * (y[d] - t[d]), tt += t[d] * t[d];
    return se / (normalized ? tt + 1e-6 : (double)D);
}

double ae_ref_cos_row(const double *a, const double *b, int D) {
    double ab = 0, aa = 0, bb = 0;
    for (int d = 0; d < D; d++) ab += a[d] * b[d], aa += a[d] * a[d], bb += b[d] * b[d];
    return aa > 0 && bb > 0 ? 1.0 - ab / sqrt(aa * bb) : 1.0;
}

void ae_test_attention(double *out, const ae_test_attn *a, const double *q, const double *k,
                       const double *v) {
    int S = a->pos0 + a->T;
    double *p = malloc(sizeof(double) * (size_t)(S > 0 ? S : 1)); // (S) one row's weights
    if (!p) abort();
    for (int t = 0; t < a->T; t++)
        for (int h = 0; h < a->Hq; h++) {
            int g = h / (a->Hq / a->Hkv), qpos = a->pos0 + t;
            int lo = a->window > 0 && qpos - a->window + 1 > 0 ? qpos - a->window + 1 : 0;
            const double *qh = q + ((size_t)t * a->Hq + h) * a->dk;
            double mx = a->sinks ? a->sinks[h] : -INFINITY, sum = 0;
            for (int j = lo; j <= qpos; j++) {
                size_t row = (size_t)(a->ring > 0 ? j % a->ring : j);
                const double *kj = k + row * a->k_stride + (size_t)g * a->dk;
                double d = 0;
                for (int i = 0; i < a->dk; i++) d += qh[i] * kj[i];
                p[j] = d * a->scale;
                mx = fmax(mx, p[j]);
            }
            if (a->sinks) sum += exp(a->sinks[h] - mx);
            for (int j = lo; j <= qpos; j++) sum += (p[j] = exp(p[j] - mx));
            if (a->lse) a->lse[(size_t)t * a->Hq + h] = mx + log(sum);
            for (int i = 0; i < a->dv; i++) {
                double o = 0;
                for (int j = lo; j <= qpos; j++) {
                    size_t row = (size_t)(a->ring > 0 ? j % a->ring : j);
                    o += p[j] / sum * v[row * a->v_stride + (size_t)g * a->dv + i];
                }
                out[((size_t)t * a->Hq + h) * a->dv + i] = o;
            }
        }
    free(p);
}
