// Elementwise ops: sigmoid gate, SwiGLU product, residual add. Every backward here reads an
// element's inputs before writing its outputs, so an output may alias the dy it comes from.
#include <math.h>

#include "backend/cpu_internal.h"

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// y = x ⊙ σ(g); g elementwise (T, H, hd) or one per head (T, H).
void ae_cpu_gate_mul(const ae_backend *be, ae_ptr yp, ae_ptr xp, ae_ptr gp, int T, int H, int hd,
                     int per_head) {
    (void)be;
    float *y = cpu_f(yp, "gate_mul");
    const float *x = cpu_f(xp, "gate_mul"), *g = cpu_f(gp, "gate_mul");
    size_t rows = (size_t)T * H;
#pragma omp parallel for if (rows * hd > 65536)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * hd;
        float *yr = y + r * hd;
        if (per_head) {
            float s = sigmoidf(g[r]);
            for (int d = 0; d < hd; d++) yr[d] = xr[d] * s;
        } else {
            const float *gr = g + r * hd;
            for (int d = 0; d < hd; d++) yr[d] = xr[d] * sigmoidf(gr[d]);
        }
    }
}

// dx = dy ⊙ σ(g);  dg = dy ⊙ x ⊙ σ'(g), σ' = σ(1 − σ), summed over hd when per_head.
void ae_cpu_gate_mul_bwd(const ae_backend *be, ae_ptr dxp, ae_ptr dgp, ae_ptr dyp, ae_ptr xp,
                         ae_ptr gp, int T, int H, int hd, int per_head) {
    (void)be;
    float *dx = cpu_f(dxp, "gate_mul_bwd"), *dg = cpu_f(dgp, "gate_mul_bwd");
    const float *dy = cpu_f(dyp, "gate_mul_bwd"), *x = cpu_f(xp, "gate_mul_bwd");
    const float *g = cpu_f(gp, "gate_mul_bwd");
    size_t rows = (size_t)T * H;
#pragma omp parallel for if (rows * hd > 65536)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * hd, *dyr = dy + r * hd;
        float *dxr = dx + r * hd;
        if (per_head) {
            float s = sigmoidf(g[r]);
            double dot = 0.0;
            for (int d = 0; d < hd; d++) dot += (double)dyr[d] * xr[d];
            dg[r] = (float)(dot * s * (1.0f - s));
            for (int d = 0; d < hd; d++) dxr[d] = dyr[d] * s;
        } else {
            const float *gr = g + r * hd;
            float *dgr = dg + r * hd;
            for (int d = 0; d < hd; d++) {
                float s = sigmoidf(gr[d]), gy = dyr[d], xv = xr[d];
                dxr[d] = gy * s;
                dgr[d] = gy * xv * s * (1.0f - s);
            }
        }
    }
}

// y = silu(g) ⊙ u, silu(g) = g σ(g).
void ae_cpu_silu_mul(const ae_backend *be, ae_ptr yp, ae_ptr gp, ae_ptr up, size_t n) {
    (void)be;
    float *y = cpu_f(yp, "silu_mul");
    const float *g = cpu_f(gp, "silu_mul"), *u = cpu_f(up, "silu_mul");
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// dg = dy ⊙ u ⊙ silu'(g), silu'(g) = σ(g) (1 + g (1 − σ(g)));  du = dy ⊙ silu(g).
void ae_cpu_silu_mul_bwd(const ae_backend *be, ae_ptr dgp, ae_ptr dup, ae_ptr dyp, ae_ptr gp,
                         ae_ptr up, size_t n) {
    (void)be;
    float *dg = cpu_f(dgp, "silu_mul_bwd"), *du = cpu_f(dup, "silu_mul_bwd");
    const float *dy = cpu_f(dyp, "silu_mul_bwd"), *g = cpu_f(gp, "silu_mul_bwd");
    const float *u = cpu_f(up, "silu_mul_bwd");
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i], ui = u[i], gy = dy[i], s = sigmoidf(gi);
        dg[i] = gy * ui * s * (1.0f + gi * (1.0f - s));
        du[i] = gy * gi * s;
    }
}

void ae_cpu_add(const ae_backend *be, ae_ptr yp, ae_ptr ap, ae_ptr bp, size_t n) {
    (void)be;
    float *y = cpu_f(yp, "add");
    const float *a = cpu_f(ap, "add"), *b = cpu_f(bp, "add");
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
