// Every backward op of the CPU backend against central finite differences (and the MoE slot
// plan against its definition).
//
// For an op with output y and a fixed random R, the scalar loss is L = Σ y ⊙ R, so the gradient
// reaching y is dy = R. The analytic gradients come from the backend's backward op (fp32); the
// numeric ones from central differences (eps = 1e-4) of a naive double-precision forward
// evaluated at the same (float-valued) inputs, so the reference carries almost no rounding
// noise and the check is |analytic − numeric| <= 1e-3 · max(1, |numeric|) per element. A
// dropped or wrong term moves gradients by O(1) and fails this (verified by mutating the
// backward ops by hand: e.g. dropping the −D term of ds, or the r³ term of rmsnorm).
// Each case also checks the backend's forward against the same double reference, which ties
// the backward to the forward that training actually runs.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/rng.h"
#include "util/fd.h"
#include "util/testutil.h"

#define FD_EPS 1e-4
#define FD_TOL 1e-3
#define FD_MAX_CHECKS 96 // elements checked per tensor (all of them when the tensor is smaller)

static float *fvec(size_t n, ae_rng *r) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = ae_rng_normal(r);
    return x;
}

static float *fconst(size_t n, float c) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = c;
    return x;
}

static double *dvec(const float *x, size_t n) { return ae_test_to_double(x, n); }

// Compares analytic[i] with the central difference of loss() in x[i] (x is a double input the
// loss reads through ctx). Checks every element, or FD_MAX_CHECKS random ones of a big tensor.
static void check_fd(const char *what, ae_fd_loss loss, void *ctx, double *x, size_t n,
                     const float *analytic, ae_rng *r) {
    size_t checks = n <= FD_MAX_CHECKS ? n : FD_MAX_CHECKS;
    for (size_t c = 0; c < checks; c++) {
        size_t i = n <= FD_MAX_CHECKS ? c : (size_t)(ae_rng_u64(r) % n);
        double num = ae_fd_central_d(loss, ctx, &x[i], FD_EPS);
        if (!(fabs(analytic[i] - num) <= FD_TOL * fmax(1.0, fabs(num))))
            fail_msg("%s[%zu]: analytic %.7g, numeric %.7g", what, i, (double)analytic[i], num);
    }
}

// Checks y (float, from the backend) against the double reference forward within tol.
static void check_close(const char *what, const float *y, const double *ref, size_t n, double tol) {
    for (size_t i = 0; i < n; i++)
        if (!(fabs(y[i] - ref[i]) <= tol * fmax(1.0, fabs(ref[i]))))
            fail_msg("%s[%zu]: %.7g vs reference %.7g", what, i, (double)y[i], ref[i]);
}

// a == base + times · g, elementwise, up to fp32 rounding (accumulate semantics).
static void check_accum(const char *what, const float *a, const float *base, const float *g,
                        float times, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double want = (double)base[i] + (double)times * g[i];
        if (!(fabs(a[i] - want) <= 1e-5 * fmax(1.0, fabs(want))))
            fail_msg("%s[%zu]: %.7g, want %.7g", what, i, (double)a[i], want);
    }
}

static double dot_loss(const double *y, const double *R, size_t n) {
    double L = 0;
    for (size_t i = 0; i < n; i++) L += y[i] * R[i];
    return L;
}

// ---------------------------------------------------------------- matmul

typedef struct {
    int M, K, N;
    double *x, *w, *R, *y;
} mm_ctx;

static double mm_loss(void *p) {
    mm_ctx *c = p;
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double s = 0;
            for (int k = 0; k < c->K; k++) s += c->x[i * c->K + k] * c->w[j * c->K + k];
            c->y[i * c->N + j] = s;
        }
    return dot_loss(c->y, c->R, (size_t)c->M * c->N);
}

static void test_matmul_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 11);
    int shapes[][3] = {{1, 7, 5}, {5, 16, 9}, {17, 33, 4}};
    for (size_t s = 0; s < 3; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
        float *x = fvec(nx, &r), *w = fvec(nw, &r), *R = fvec(ny, &r), *y = fvec(ny, &r);
        mm_ctx c = {M, K, N, dvec(x, nx), dvec(w, nw), dvec(R, ny), malloc(sizeof(double) * ny)};
        mm_loss(&c);
        ae_matmul(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(w), M, K, N);
        check_close("matmul y", y, c.y, ny, 1e-5);

        float *dx = fconst(nx, 0), *dw = fconst(nw, 0);
        ae_matmul_bwd(be, ae_host_f32(dx), ae_host_f32(dw), ae_host_f32(R), ae_host_f32(x),
                      ae_host_f32(w), M, K, N);
        check_fd("matmul dx", mm_loss, &c, c.x, nx, dx, &r);
        check_fd("matmul dw", mm_loss, &c, c.w, nw, dw, &r);

        // accumulate: a second call adds the same again; a NULL target is skipped
        float *dx2 = fconst(nx, 0.5f), *dw2 = fconst(nw, -0.25f);
        float *bx = fconst(nx, 0.5f), *bw = fconst(nw, -0.25f);
        ae_matmul_bwd(be, ae_host_f32(dx2), ae_host_f32(dw2), ae_host_f32(R), ae_host_f32(x),
                      ae_host_f32(w), M, K, N);
        ae_matmul_bwd(be, ae_host_f32(dx2), ae_host_f32(dw2), ae_host_f32(R), ae_host_f32(x),
                      ae_host_f32(w), M, K, N);
        check_accum("matmul dx (2 calls)", dx2, bx, dx, 2.0f, nx);
        check_accum("matmul dw (2 calls)", dw2, bw, dw, 2.0f, nw);
        ae_matmul_bwd(be, ae_host_f32(dx2), ae_ptr_null(), ae_host_f32(R), ae_host_f32(x),
                      ae_host_f32(w), M, K, N);
        ae_matmul_bwd(be, ae_ptr_null(), ae_host_f32(dw2), ae_host_f32(R), ae_host_f32(x),
                      ae_host_f32(w), M, K, N);
        check_accum("matmul dx (3 calls)", dx2, bx, dx, 3.0f, nx);
        check_accum("matmul dw (3 calls)", dw2, bw, dw, 3.0f, nw);

        free(x), free(w), free(R), free(y), free(dx), free(dw), free(dx2), free(dw2), free(bx),
            free(bw);
        free(c.x), free(c.w), free(c.R), free(c.y);
    }
}

// ---------------------------------------------------------------- rmsnorm

typedef struct {
    int M, D;
    double eps;
    double *x, *w, *R, *y;
} rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    for (int i = 0; i < c->M; i++) {
        const double *xi = c->x + (size_t)i * c->D;
        double ss = 0;
        for (int d = 0; d < c->D; d++) ss += xi[d] * xi[d];
        double inv = 1.0 / sqrt(ss / c->D + c->eps);
        for (int d = 0; d < c->D; d++) c->y[(size_t)i * c->D + d] = xi[d] * inv * c->w[d];
    }
    return dot_loss(c->y, c->R, (size_t)c->M * c->D);
}

static void test_rmsnorm_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 12);
    int shapes[][2] = {{1, 8}, {5, 24}, {40, 16}};
    for (size_t s = 0; s < 3; s++) {
        int M = shapes[s][0], D = shapes[s][1];
        size_t n = (size_t)M * D;
        float eps = 1e-6f;
        float *x = fvec(n, &r), *w = fvec((size_t)D, &r), *R = fvec(n, &r), *y = fvec(n, &r);
        rms_ctx c = {M, D, eps, dvec(x, n), dvec(w, (size_t)D), dvec(R, n),
                     malloc(sizeof(double) * n)};
        rms_loss(&c);
        be->rmsnorm(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(w), M, D, D, eps);
        check_close("rmsnorm y", y, c.y, n, 1e-5);

        float *dx = fconst(n, 0), *dw = fconst((size_t)D, 0);
        be->rmsnorm_bwd(be, ae_host_f32(dx), ae_host_f32(dw), ae_host_f32(R), ae_host_f32(x),
                        ae_host_f32(w), M, D, eps);
        check_fd("rmsnorm dx", rms_loss, &c, c.x, n, dx, &r);
        check_fd("rmsnorm dw", rms_loss, &c, c.w, (size_t)D, dw, &r);

        float *dx2 = fconst(n, 1.0f), *dw2 = fconst((size_t)D, 2.0f);
        float *bx = fconst(n, 1.0f), *bw = fconst((size_t)D, 2.0f);
        be->rmsnorm_bwd(be, ae_host_f32(dx2), ae_host_f32(dw2), ae_host_f32(R), ae_host_f32(x),
                        ae_host_f32(w), M, D, eps);
        be->rmsnorm_bwd(be, ae_host_f32(dx2), ae_ptr_null(), ae_host_f32(R), ae_host_f32(x),
                        ae_host_f32(w), M, D, eps); // dw may be NULL
        be->rmsnorm_bwd(be, ae_host_f32(dx2), ae_host_f32(dw2), ae_host_f32(R), ae_host_f32(x),
                        ae_host_f32(w), M, D, eps);
        check_accum("rmsnorm dx (3 calls)", dx2, bx, dx, 3.0f, n);
        check_accum("rmsnorm dw (2 calls)", dw2, bw, dw, 2.0f, (size_t)D);

        free(x), free(w), free(R), free(y), free(dx), free(dw), free(dx2), free(dw2), free(bx),
            free(bw);
        free(c.x), free(c.w), free(c.R), free(c.y);
    }
}

// ---------------------------------------------------------------- rope

typedef struct {
    int T, H, stride, rd;
    const int32_t *pos;
    double theta;
    ae_rope_mode mode;
    double *x, *R, *y;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    int half = c->rd / 2;
    size_t n = (size_t)c->T * c->H * c->stride;
    memcpy(c->y, c->x, sizeof(double) * n);
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < half; i++) {
                // the angle as the backend (and transformers) computes it, in float
                float inv_freq = (float)(1.0 / pow(c->theta, (double)(2 * i) / c->rd));
                double ang = (float)c->pos[t] * inv_freq;
                int ia = c->mode == AE_ROPE_HALF ? i : 2 * i;
                int ib = c->mode == AE_ROPE_HALF ? i + half : 2 * i + 1;
                size_t o = ((size_t)t * c->H + h) * c->stride;
                double a = c->x[o + ia], b = c->x[o + ib];
                c->y[o + ia] = a * cos(ang) - b * sin(ang);
                c->y[o + ib] = b * cos(ang) + a * sin(ang);
            }
    return dot_loss(c->y, c->R, n);
}

static void test_rope_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 13);
    int T = 4, H = 3;
    int32_t pos[4] = {0, 1, 7, 30};
    int layouts[][2] = {{8, 8}, {10, 6}, {12, 4}}; // stride, rd (rd < stride: partial rotary)
    for (int mode = 0; mode < 2; mode++)
        for (size_t l = 0; l < 3; l++) {
            int stride = layouts[l][0], rd = layouts[l][1];
            size_t n = (size_t)T * H * stride;
            float *x = fvec(n, &r), *R = fvec(n, &r), *y = malloc(sizeof(float) * n);
            rope_ctx c = {T, H, stride, rd, pos, 10000.0, (ae_rope_mode)mode, dvec(x, n),
                          dvec(R, n), malloc(sizeof(double) * n)};
            rope_loss(&c);
            memcpy(y, x, sizeof(float) * n);
            be->rope(be, ae_host_f32(y), ae_host_i32(pos), T, H, stride, rd, 10000.0,
                     (ae_rope_mode)mode);
            check_close("rope y", y, c.y, n, 1e-5);

            float *dx = malloc(sizeof(float) * n);
            memcpy(dx, R, sizeof(float) * n);
            be->rope_bwd(be, ae_host_f32(dx), ae_host_i32(pos), T, H, stride, rd, 10000.0,
                         (ae_rope_mode)mode);
            check_fd(mode ? "rope(interleaved) dx" : "rope(half) dx", rope_loss, &c, c.x, n, dx,
                     &r);
            free(x), free(R), free(y), free(dx), free(c.x), free(c.R), free(c.y);
        }
}

// ---------------------------------------------------------------- attention

// The double reference (ae_test_attention) reads K/V exactly as ae_attn_args describes (strides,
// ring rows); k and v may be the same array (absorbed MLA), and then a perturbation moves both.
typedef struct {
    ae_attn_args a;
    double *q, *k, *v, *sinks, *R, *out;
    double *lse; // (T·Hq) each row's log-sum-exp in log2 units (ae_attn_args.lse)
} attn_ctx;

static double attn_loss(void *p) {
    attn_ctx *c = p;
    const ae_attn_args *a = &c->a;
    ae_test_attn r = {a->T, a->pos0, a->Hq, a->Hkv, a->dk, a->dv, (size_t)a->k_stride,
                      (size_t)a->v_stride, a->window, a->ring, a->scale, c->sinks, c->lse};
    ae_test_attention(c->out, &r, c->q, c->k, c->v);
    for (int i = 0; i < a->T * a->Hq; i++) c->lse[i] /= log(2.0); // the op's unit: log2
    return dot_loss(c->out, c->R, (size_t)a->T * a->Hq * a->dv);
}

typedef enum { LAYOUT_DENSE, LAYOUT_PADDED, LAYOUT_MLA } attn_layout;

typedef struct {
    int T, pos0, Hq, Hkv, dk, dv, window, ring, sinks;
    attn_layout layout;
} attn_case;

static void run_attn_case(const attn_case *tc, ae_rng *r) {
    const ae_backend *be = ae_backend_cpu();
    int S = tc->pos0 + tc->T;
    int rows = tc->ring > 0 ? tc->ring : S;
    ae_attn_args a = ae_attn_dense(tc->T, tc->pos0, tc->Hq, tc->Hkv, tc->dk, tc->dv, tc->window,
                                   1.0f / sqrtf((float)tc->dk), ae_ptr_null());
    a.ring = tc->ring;
    if (tc->layout == LAYOUT_PADDED) a.k_stride += 3, a.v_stride += 5;
    if (tc->layout == LAYOUT_MLA) a.k_stride = a.v_stride = tc->dk; // v = first dv of each k row
    size_t nq = (size_t)tc->T * tc->Hq * tc->dk, no = (size_t)tc->T * tc->Hq * tc->dv;
    size_t nk = (size_t)rows * a.k_stride, nv = (size_t)rows * a.v_stride;
    float *q = fvec(nq, r), *k = fvec(nk, r), *R = fvec(no, r), *out = malloc(sizeof(float) * no);
    float *v = tc->layout == LAYOUT_MLA ? k : fvec(nv, r);
    float *sinks = tc->sinks ? fvec((size_t)tc->Hq, r) : NULL;
    a.sinks = ae_host_f32(sinks);

    size_t nrows = (size_t)tc->T * tc->Hq;
    attn_ctx c = {a, dvec(q, nq), dvec(k, nk), NULL, sinks ? dvec(sinks, tc->Hq) : NULL,
                  dvec(R, no), malloc(sizeof(double) * no), malloc(sizeof(double) * nrows)};
    c.v = tc->layout == LAYOUT_MLA ? c.k : dvec(v, nv);
    attn_loss(&c);
    // the forward, writing the rows' log-sum-exp as the training forwards do
    float *lse = fconst(nrows, NAN);
    ae_attn_args af = a;
    af.lse = ae_host_f32(lse);
    be->attention(be, &af, ae_host_f32(out), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    check_close("attention out", out, c.out, no, 1e-5);
    check_close("attention lse", lse, c.lse, nrows, 1e-5);

    // dq is overwritten (start from garbage); dk, dv, dsinks accumulate (start from a base).
    // Once recomputing the forward, once from the saved out and lse: the same bits.
    float *dq = fconst(nq, NAN), *dk = fconst(nk, 0.5f), *dsk = fconst((size_t)tc->Hq, -1.0f);
    float *dv = tc->layout == LAYOUT_MLA ? dk : fconst(nv, 0.25f);
    be->attention_bwd(be, &a, ae_host_f32(dq), ae_host_f32(dk), ae_host_f32(dv),
                      sinks ? ae_host_f32(dsk) : ae_ptr_null(), ae_host_f32(R), ae_ptr_null(),
                      ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    float *sq = fconst(nq, NAN), *sk = fconst(nk, 0.5f), *ssk = fconst((size_t)tc->Hq, -1.0f);
    float *sv = tc->layout == LAYOUT_MLA ? sk : fconst(nv, 0.25f);
    be->attention_bwd(be, &af, ae_host_f32(sq), ae_host_f32(sk), ae_host_f32(sv),
                      sinks ? ae_host_f32(ssk) : ae_ptr_null(), ae_host_f32(R), ae_host_f32(out),
                      ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    assert_memory_equal(sq, dq, sizeof(float) * nq);
    assert_memory_equal(sk, dk, sizeof(float) * nk);
    assert_memory_equal(sv, dv, sizeof(float) * (tc->layout == LAYOUT_MLA ? nk : nv));
    assert_memory_equal(ssk, dsk, sizeof(float) * (size_t)tc->Hq);
    for (size_t i = 0; i < nk; i++) dk[i] -= 0.5f;
    if (tc->layout != LAYOUT_MLA)
        for (size_t i = 0; i < nv; i++) dv[i] -= 0.25f;
    for (int h = 0; h < tc->Hq; h++) dsk[h] += 1.0f;
    if (tc->layout != LAYOUT_MLA) { // the saved lse is the one used: lse + 1 halves every p, so dv
        float *lse1 = malloc(sizeof(float) * nrows), *hq = fconst(nq, NAN), *hk = fconst(nk, 0.5f);
        float *hv = fconst(nv, 0.25f), *base = fconst(nv, 0.25f);
        for (size_t i = 0; i < nrows; i++) lse1[i] = lse[i] + 1.0f;
        ae_attn_args a1 = a;
        a1.lse = ae_host_f32(lse1);
        be->attention_bwd(be, &a1, ae_host_f32(hq), ae_host_f32(hk), ae_host_f32(hv),
                          ae_ptr_null(), ae_host_f32(R), ae_host_f32(out), ae_host_f32(q),
                          ae_host_f32(k), ae_host_f32(v));
        check_accum("attention dv from a saved lse + 1", hv, base, dv, 0.5f, nv);
        free(lse1), free(hq), free(hk), free(hv), free(base);
    }

    char what[160];
    snprintf(what, sizeof what, "T=%d pos0=%d Hq=%d Hkv=%d dk=%d dv=%d W=%d ring=%d sinks=%d "
             "layout=%d", tc->T, tc->pos0, tc->Hq, tc->Hkv, tc->dk, tc->dv, tc->window, tc->ring,
             tc->sinks, (int)tc->layout);
    print_message("attention_bwd %s\n", what);
    check_fd("attention dq", attn_loss, &c, c.q, nq, dq, r);
    check_fd(tc->layout == LAYOUT_MLA ? "attention dkv" : "attention dk", attn_loss, &c, c.k, nk,
             dk, r);
    if (tc->layout != LAYOUT_MLA) check_fd("attention dv", attn_loss, &c, c.v, nv, dv, r);
    if (sinks) check_fd("attention dsinks", attn_loss, &c, c.sinks, (size_t)tc->Hq, dsk, r);
    if (tc->layout == LAYOUT_PADDED) { // padding between rows never receives gradient
        for (int row = 0; row < rows; row++) {
            for (int i = tc->Hkv * tc->dk; i < a.k_stride; i++)
                assert_true(dk[(size_t)row * a.k_stride + i] == 0.0f);
            for (int i = tc->Hkv * tc->dv; i < a.v_stride; i++)
                assert_true(dv[(size_t)row * a.v_stride + i] == 0.0f);
        }
    }

    free(q), free(k), free(R), free(out), free(sinks), free(dq), free(dk), free(dsk);
    free(lse), free(sq), free(sk), free(ssk);
    free(c.q), free(c.k), free(c.sinks), free(c.R), free(c.out), free(c.lse);
    if (tc->layout != LAYOUT_MLA) free(v), free(dv), free(c.v), free(sv);
}

static void test_attention_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 14);
    const attn_case cases[] = {
        // T, pos0, Hq, Hkv, dk, dv, window, ring, sinks, layout
        {6, 0, 2, 2, 8, 8, 0, 0, 0, LAYOUT_DENSE},   // MHA, full causal
        {6, 0, 2, 2, 8, 8, 0, 0, 1, LAYOUT_DENSE},   // + sinks
        {7, 0, 4, 2, 8, 6, 3, 0, 1, LAYOUT_DENSE},   // GQA 2, T > window, dk != dv
        {7, 0, 4, 2, 8, 6, 3, 0, 0, LAYOUT_DENSE},
        {3, 0, 4, 1, 6, 8, 5, 0, 1, LAYOUT_DENSE},   // GQA 4, T < window
        {5, 0, 4, 1, 8, 8, 2, 0, 0, LAYOUT_DENSE},   // GQA 4, window 2
        {8, 0, 4, 4, 4, 4, 0, 0, 1, LAYOUT_DENSE},
        {4, 3, 2, 1, 8, 4, 0, 0, 1, LAYOUT_DENSE},   // continuation: pos0 > 0
        {4, 5, 4, 2, 6, 6, 3, 0, 1, LAYOUT_DENSE},   // pos0 > 0 with a window
        {6, 0, 4, 2, 8, 4, 0, 0, 1, LAYOUT_PADDED},  // k/v rows wider than Hkv·d
        {5, 2, 4, 2, 6, 6, 4, 0, 0, LAYOUT_PADDED},
        {5, 0, 4, 1, 8, 6, 0, 0, 0, LAYOUT_MLA},     // absorbed MLA: v inside k rows, dk = dv alias
        {5, 0, 4, 1, 8, 6, 3, 0, 1, LAYOUT_MLA},
        {3, 6, 2, 1, 4, 4, 4, 6, 1, LAYOUT_DENSE},   // ring: T + window − 1 = ring slots
        {1, 10, 4, 2, 4, 4, 4, 4, 0, LAYOUT_DENSE},  // ring, one-token decode
        {4, 0, 2, 2, 4, 4, 3, 5, 1, LAYOUT_DENSE},   // ring that never wraps
        {6, 0, 2, 1, 4, 4, 3, 4, 0, LAYOUT_DENSE},   // ring that wraps within the call
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attn_case(&cases[i], &r);
}

// Backward results do not depend on the thread count or the run (no races on dk/dv).
static void test_attention_bwd_deterministic(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 15);
    int T = 48, Hq = 8, Hkv = 2, d = 32;
    ae_attn_args a = ae_attn_dense(T, 0, Hq, Hkv, d, d, 0, 0.2f, ae_ptr_null());
    size_t nq = (size_t)T * Hq * d, nk = (size_t)T * Hkv * d;
    float *q = fvec(nq, &r), *k = fvec(nk, &r), *v = fvec(nk, &r), *dout = fvec(nq, &r);
    float *sinks = fvec((size_t)Hq, &r);
    a.sinks = ae_host_f32(sinks);
    float *res[3][4];
    int threads[3] = {2, 2, 1};
    int saved = omp_get_max_threads();
    for (int run = 0; run < 3; run++) {
        omp_set_num_threads(threads[run]);
        res[run][0] = fconst(nq, 0), res[run][1] = fconst(nk, 0), res[run][2] = fconst(nk, 0);
        res[run][3] = fconst((size_t)Hq, 0);
        be->attention_bwd(be, &a, ae_host_f32(res[run][0]), ae_host_f32(res[run][1]),
                          ae_host_f32(res[run][2]), ae_host_f32(res[run][3]), ae_host_f32(dout),
                          ae_ptr_null(), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    }
    omp_set_num_threads(saved);
    size_t sizes[4] = {nq, nk, nk, (size_t)Hq};
    for (int run = 1; run < 3; run++)
        for (int i = 0; i < 4; i++)
            assert_memory_equal(res[0][i], res[run][i], sizeof(float) * sizes[i]);
    for (int run = 0; run < 3; run++)
        for (int i = 0; i < 4; i++) free(res[run][i]);
    free(q), free(k), free(v), free(dout), free(sinks);
}

// ---------------------------------------------------------------- gate_mul, silu_mul

typedef struct {
    int T, H, hd, per_head;
    double *x, *g, *R, *y;
} gate_ctx;

static double gate_loss(void *p) {
    gate_ctx *c = p;
    for (int r = 0; r < c->T * c->H; r++)
        for (int d = 0; d < c->hd; d++) {
            size_t i = (size_t)r * c->hd + d;
            double g = c->per_head ? c->g[r] : c->g[i];
            c->y[i] = c->x[i] / (1 + exp(-g));
        }
    return dot_loss(c->y, c->R, (size_t)c->T * c->H * c->hd);
}

static void test_gate_mul_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 16);
    int T = 3, H = 4, hd = 6;
    for (int per_head = 0; per_head < 2; per_head++) {
        size_t n = (size_t)T * H * hd, ng = per_head ? (size_t)T * H : n;
        float *x = fvec(n, &r), *g = fvec(ng, &r), *R = fvec(n, &r), *y = malloc(sizeof(float) * n);
        for (size_t i = 0; i < ng; i++) g[i] *= 2.0f;
        gate_ctx c = {T, H, hd, per_head, dvec(x, n), dvec(g, ng), dvec(R, n),
                      malloc(sizeof(double) * n)};
        gate_loss(&c);
        be->gate_mul(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(g), T, H, hd, per_head);
        check_close("gate_mul y", y, c.y, n, 1e-6);
        float *dx = fconst(n, NAN), *dg = fconst(ng, NAN); // both overwritten
        be->gate_mul_bwd(be, ae_host_f32(dx), ae_host_f32(dg), ae_host_f32(R), ae_host_f32(x),
                         ae_host_f32(g), T, H, hd, per_head);
        check_fd("gate_mul dx", gate_loss, &c, c.x, n, dx, &r);
        check_fd(per_head ? "gate_mul(per head) dg" : "gate_mul dg", gate_loss, &c, c.g, ng, dg,
                 &r);
        // dx may be dy itself
        float *dyx = malloc(sizeof(float) * n), *dg2 = malloc(sizeof(float) * ng);
        memcpy(dyx, R, sizeof(float) * n);
        be->gate_mul_bwd(be, ae_host_f32(dyx), ae_host_f32(dg2), ae_host_f32(dyx), ae_host_f32(x),
                         ae_host_f32(g), T, H, hd, per_head);
        assert_memory_equal(dyx, dx, sizeof(float) * n);
        assert_memory_equal(dg2, dg, sizeof(float) * ng);
        free(x), free(g), free(R), free(y), free(dx), free(dg), free(dyx), free(dg2);
        free(c.x), free(c.g), free(c.R), free(c.y);
    }
}

typedef struct {
    size_t n;
    double *g, *u, *R, *y;
} silu_ctx;

static double silu_loss(void *p) {
    silu_ctx *c = p;
    for (size_t i = 0; i < c->n; i++) c->y[i] = c->g[i] / (1 + exp(-c->g[i])) * c->u[i];
    return dot_loss(c->y, c->R, c->n);
}

static void test_silu_mul_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 17);
    size_t n = 200;
    float *g = fvec(n, &r), *u = fvec(n, &r), *R = fvec(n, &r), *y = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) g[i] *= 3.0f;
    g[0] = -30.0f, g[1] = 25.0f, g[2] = 0.0f; // saturated both ways, and the origin
    silu_ctx c = {n, dvec(g, n), dvec(u, n), dvec(R, n), malloc(sizeof(double) * n)};
    silu_loss(&c);
    be->silu_mul(be, ae_host_f32(y), ae_host_f32(g), ae_host_f32(u), n);
    check_close("silu_mul y", y, c.y, n, 1e-6);
    float *dg = fconst(n, NAN), *du = fconst(n, NAN);
    be->silu_mul_bwd(be, ae_host_f32(dg), ae_host_f32(du), ae_host_f32(R), ae_host_f32(g),
                     ae_host_f32(u), n);
    check_fd("silu_mul dg", silu_loss, &c, c.g, n, dg, &r);
    check_fd("silu_mul du", silu_loss, &c, c.u, n, du, &r);
    free(g), free(u), free(R), free(y), free(dg), free(du);
    free(c.g), free(c.u), free(c.R), free(c.y);
}

// ---------------------------------------------------------------- MoE training ops

// Distinct random experts for each token (T, K) of E: a partial Fisher-Yates shuffle per token.
static int32_t *random_routing(ae_rng *r, int T, int K, int E) {
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)T * K);
    int *perm = malloc(sizeof(int) * (size_t)E);
    for (int t = 0; t < T; t++) {
        for (int e = 0; e < E; e++) perm[e] = e;
        for (int k = 0; k < K; k++) {
            int j = k + (int)(ae_rng_u64(r) % (uint64_t)(E - k)), tmp = perm[k];
            perm[k] = perm[j], perm[j] = tmp;
            idx[t * K + k] = perm[k];
        }
    }
    free(perm);
    return idx;
}

// moe_plan against its definition: positions by expert, then by slot; tok the slot's token.
static void test_moe_plan(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 18);
    int shapes[][3] = {{1, 1, 1}, {7, 2, 8}, {40, 3, 5}, {33, 8, 128}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int T = shapes[c][0], K = shapes[c][1], E = shapes[c][2], S = T * K;
        int32_t *idx = random_routing(&r, T, K, E);
        int32_t *off = malloc(sizeof(int32_t) * (size_t)(E + 1));
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)S), *tok = malloc(sizeof(int32_t) * (size_t)S);
        be->moe_plan(be, ae_host_i32(off), ae_host_i32(pos), ae_host_i32(tok), ae_host_i32(idx), T,
                     K, E);
        int p = 0;
        for (int e = 0; e < E; e++) {
            assert_int_equal(off[e], p);
            for (int s = 0; s < S; s++)
                if (idx[s] == e) {
                    assert_int_equal(pos[s], p);
                    assert_int_equal(tok[p], s / K);
                    p++;
                }
        }
        assert_int_equal(off[E], S);
        free(idx), free(off), free(pos), free(tok);
    }
}

typedef struct {
    int T, K, D;
    const int32_t *pos;
    double *o, *w, *R, *y; // o: (T·K, D) by position;  w: (T, K);  R, y: (T, D)
} comb_ctx;

static double comb_loss(void *p) {
    comb_ctx *c = p;
    for (int t = 0; t < c->T; t++)
        for (int d = 0; d < c->D; d++) {
            double s = 0;
            for (int k = 0; k < c->K; k++) {
                size_t sl = (size_t)t * c->K + k;
                s += c->w[sl] * c->o[(size_t)c->pos[sl] * c->D + d];
            }
            c->y[(size_t)t * c->D + d] = s;
        }
    return dot_loss(c->y, c->R, (size_t)c->T * c->D);
}

// moe_combine forward (weighted, and unweighted accumulating) and moe_combine_bwd against finite
// differences in the slot rows and the routing weights.
static void test_moe_combine_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 19);
    int T = 5, K = 3, E = 6, D = 7, S = T * K;
    int32_t *idx = random_routing(&r, T, K, E);
    int32_t *off = malloc(sizeof(int32_t) * (size_t)(E + 1)), *pos = malloc(sizeof(int32_t) * S);
    int32_t *tok = malloc(sizeof(int32_t) * S);
    be->moe_plan(be, ae_host_i32(off), ae_host_i32(pos), ae_host_i32(tok), ae_host_i32(idx), T, K, E);
    size_t no = (size_t)S * D, ny = (size_t)T * D;
    float *o = fvec(no, &r), *w = fvec((size_t)S, &r), *R = fvec(ny, &r), *y = fconst(ny, NAN);
    comb_ctx c = {T, K, D, pos, dvec(o, no), dvec(w, (size_t)S), dvec(R, ny), malloc(sizeof(double) * ny)};
    comb_loss(&c);
    be->moe_combine(be, ae_host_f32(y), ae_host_f32(o), ae_host_i32(pos), ae_host_f32(w), T, K, D, 0);
    check_close("moe_combine y", y, c.y, ny, 1e-6);
    float *dye = fconst(no, NAN), *dw = fconst((size_t)S, NAN); // both overwritten
    be->moe_combine_bwd(be, ae_host_f32(dye), ae_host_f32(dw), ae_host_f32(R), ae_host_f32(o),
                        ae_host_i32(pos), ae_host_f32(w), T, K, D);
    check_fd("moe_combine_bwd dye", comb_loss, &c, c.o, no, dye, &r);
    check_fd("moe_combine_bwd dw", comb_loss, &c, c.w, (size_t)S, dw, &r);
    // without weights, accumulating: y = base + Σ_k o[pos] (the gather's backward)
    float *acc = fvec(ny, &r), *base = malloc(sizeof(float) * ny);
    memcpy(base, acc, sizeof(float) * ny);
    for (int i = 0; i < S; i++) c.w[i] = 1.0;
    comb_loss(&c);
    be->moe_combine(be, ae_host_f32(acc), ae_host_f32(o), ae_host_i32(pos), ae_ptr_null(), T, K, D, 1);
    for (size_t i = 0; i < ny; i++) c.y[i] += base[i];
    check_close("moe_combine (no weights, accumulate) y", acc, c.y, ny, 1e-6);
    free(idx), free(off), free(pos), free(tok), free(o), free(w), free(R), free(y), free(dye),
        free(dw), free(acc), free(base);
    free(c.o), free(c.w), free(c.R), free(c.y);
}

typedef struct {
    int T, E, K, renorm;
    const int32_t *idx;
    double *z, *R, *w; // z: (T, E) logits;  R: (T, K) the gradient on the weights;  w: (T, K)
} route_ctx;

// Σ R ⊙ wts with the selected experts held fixed: softmax in double, renormalised when asked.
static double route_loss(void *p) {
    route_ctx *c = p;
    for (int t = 0; t < c->T; t++) {
        const double *z = c->z + (size_t)t * c->E;
        double mx = z[0], se = 0, sel = 0;
        for (int e = 1; e < c->E; e++) mx = fmax(mx, z[e]);
        for (int e = 0; e < c->E; e++) se += exp(z[e] - mx);
        for (int k = 0; k < c->K; k++) sel += exp(z[c->idx[t * c->K + k]] - mx) / se;
        for (int k = 0; k < c->K; k++) {
            double pk = exp(z[c->idx[t * c->K + k]] - mx) / se;
            c->w[t * c->K + k] = c->renorm ? pk / sel : pk;
        }
    }
    return dot_loss(c->w, c->R, (size_t)c->T * c->K);
}

// moe_route_bwd: the logit gradient of Σ dw ⊙ wts against finite differences of the double
// softmax at moe_route's selection, with and without renormalisation.
static void test_moe_route_bwd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 20);
    int T = 6, E = 8;
    for (int renorm = 0; renorm < 2; renorm++)
        for (int K = 1; K <= 4; K += 3) {
            size_t nz = (size_t)T * E, nk = (size_t)T * K;
            float *z = fvec(nz, &r), *R = fvec(nk, &r), *w = fconst(nk, NAN), *p = fconst(nz, NAN);
            for (size_t i = 0; i < nz; i++) z[i] *= 2.0f;
            int32_t *idx = malloc(sizeof(int32_t) * nk);
            be->moe_route(be, ae_host_i32(idx), ae_host_f32(w), ae_host_f32(p), ae_host_f32(z), T, E,
                          K, renorm);
            route_ctx c = {T, E, K, renorm, idx, dvec(z, nz), dvec(R, nk), malloc(sizeof(double) * nk)};
            route_loss(&c);
            check_close("moe_route wts", w, c.w, nk, 1e-6);
            float *dz = fconst(nz, NAN); // overwritten
            be->moe_route_bwd(be, ae_host_f32(dz), ae_host_f32(R), ae_host_f32(p), ae_host_i32(idx),
                              T, E, K, renorm);
            check_fd(renorm ? "moe_route_bwd (renormalised) dz" : "moe_route_bwd dz", route_loss, &c,
                     c.z, nz, dz, &r);
            free(z), free(R), free(w), free(p), free(idx), free(dz);
            free(c.z), free(c.R), free(c.w);
        }
}

typedef struct {
    int n, E, N, Kd, S;
    const int32_t *off;
    double *x, *w[2], *R[2], *y; // x: (S, Kd);  w[i]: (E, N, Kd);  R[i], y: (S, N)
} expert_ctx;

// Σ_i Σ_p R[i][p] · (x[p] · w[i][e(p)]ᵀ) over the grouped rows, in double.
static double expert_loss(void *p) {
    expert_ctx *c = p;
    double l = 0;
    for (int i = 0; i < c->n; i++) {
        for (int e = 0; e < c->E; e++)
            for (int q = c->off[e]; q < c->off[e + 1]; q++)
                for (int j = 0; j < c->N; j++) {
                    double s = 0;
                    for (int k = 0; k < c->Kd; k++)
                        s += c->x[(size_t)q * c->Kd + k] * c->w[i][((size_t)e * c->N + j) * c->Kd + k];
                    c->y[(size_t)q * c->N + j] = s;
                }
        l += dot_loss(c->y, c->R[i], (size_t)c->off[c->E] * c->N);
    }
    return l;
}

// expert_matmul against the double loop (each product, every row of every expert; rows past
// off[E] untouched) and expert_matmul_bwd against finite differences of the summed loss in x
// (overwriting and accumulating) and in the weights (accumulating; empty experts get zeros). Uneven counts, empty experts (first, middle, last), an expert
// alone, shapes that are no multiple of any tile.
static void test_expert_matmul(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 21);
    const int counts[][6] = {{0, 3, 0, 1, 4, 0}, {5, 0, 0, 0, 0, 0}, {1, 2, 3, 4, 5, 6}};
    const int shapes[][3] = {{6, 5, 7}, {1, 3, 2}, {6, 9, 17}}; // E, N, Kd
    for (int c = 0; c < 3; c++)
        for (int n = 1; n <= 2; n++) {
            int E = shapes[c][0], N = shapes[c][1], Kd = shapes[c][2];
            int32_t off[7] = {0};
            for (int e = 0; e < E; e++) off[e + 1] = off[e] + counts[c][e];
            int S = off[E] + 2; // two rows past the groups: never written
            size_t nx = (size_t)S * Kd, ny = (size_t)S * N, nw = (size_t)E * N * Kd;
            float *x = fvec(nx, &r), *w[2] = {fvec(nw, &r), fvec(nw, &r)};
            float *R[2] = {fvec(ny, &r), fvec(ny, &r)}, *y[2] = {fconst(ny, NAN), fconst(ny, NAN)};
            expert_ctx ctx = {n, E, N, Kd, S, off, dvec(x, nx), {dvec(w[0], nw), dvec(w[1], nw)},
                              {dvec(R[0], ny), dvec(R[1], ny)}, malloc(sizeof(double) * ny)};
            ae_ptr py[2] = {ae_host_f32(y[0]), ae_host_f32(y[1])};
            ae_ptr pw[2] = {ae_host_f32(w[0]), ae_host_f32(w[1])};
            ae_ptr pR[2] = {ae_host_f32(R[0]), ae_host_f32(R[1])};
            be->expert_matmul(be, n, py, ae_host_f32(x), pw, ae_host_i32(off), S, E, N, Kd);
            double *w0 = ctx.w[0];
            for (int i = 0; i < n; i++) {
                ctx.n = 1, ctx.w[0] = ctx.w[i]; // product i alone
                expert_loss(&ctx);
                check_close("expert_matmul y", y[i], ctx.y, (size_t)off[E] * N, 1e-5);
                for (size_t q = (size_t)off[E] * N; q < ny; q++)
                    if (!isnan(y[i][q])) fail_msg("expert_matmul wrote row %zu past off[E]", q / N);
            }
            ctx.n = n, ctx.w[0] = w0;
            float *dx = fconst(nx, NAN); // overwritten (rows past off[E] stay NaN)
            float *dw[2] = {fconst(nw, 0.0f), fconst(nw, 0.0f)}; // accumulated into
            ae_ptr pdw[2] = {ae_host_f32(dw[0]), ae_host_f32(dw[1])};
            be->expert_matmul_bwd(be, n, ae_host_f32(dx), pdw, pR, ae_host_f32(x), pw,
                                  ae_host_i32(off), S, E, N, Kd, 0);
            for (size_t q = (size_t)off[E] * Kd; q < nx; q++)
                if (!isnan(dx[q])) fail_msg("expert_matmul_bwd wrote row %zu past off[E]", q / Kd);
            check_fd(n == 2 ? "expert_matmul_bwd (two products) dx" : "expert_matmul_bwd dx",
                     expert_loss, &ctx, ctx.x, (size_t)off[E] * Kd, dx, &r);
            for (int i = 0; i < n; i++)
                check_fd(i ? "expert_matmul_bwd dw[1]" : "expert_matmul_bwd dw[0]", expert_loss,
                         &ctx, ctx.w[i], nw, dw[i], &r);
            // accumulating: dx = base + the gradient, dw = twice it; dx null: weights only
            float *acc = fvec(nx, &r), *base = malloc(sizeof(float) * nx);
            float *dw1 = malloc(sizeof(float) * nw);
            memcpy(base, acc, sizeof(float) * nx), memcpy(dw1, dw[0], sizeof(float) * nw);
            be->expert_matmul_bwd(be, n, ae_host_f32(acc), NULL, pR, ae_host_f32(x), pw,
                                  ae_host_i32(off), S, E, N, Kd, 1);
            check_accum("expert_matmul_bwd (accumulate) dx", acc, base, dx, 1.0f, (size_t)off[E] * Kd);
            be->expert_matmul_bwd(be, n, ae_ptr_null(), pdw, pR, ae_host_f32(x), pw,
                                  ae_host_i32(off), S, E, N, Kd, 0);
            float *zero = fconst(nw, 0.0f);
            check_accum("expert_matmul_bwd (accumulate) dw[0]", dw[0], zero, dw1, 2.0f, nw);
            free(x), free(w[0]), free(w[1]), free(R[0]), free(R[1]), free(y[0]), free(y[1]);
            free(dx), free(acc), free(base), free(dw[0]), free(dw[1]), free(dw1), free(zero);
            free(ctx.x), free(ctx.w[0]), free(ctx.w[1]), free(ctx.R[0]), free(ctx.R[1]), free(ctx.y);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_bwd),
        cmocka_unit_test(test_rmsnorm_bwd),
        cmocka_unit_test(test_rope_bwd),
        cmocka_unit_test(test_attention_bwd),
        cmocka_unit_test(test_attention_bwd_deterministic),
        cmocka_unit_test(test_gate_mul_bwd),
        cmocka_unit_test(test_silu_mul_bwd),
        cmocka_unit_test(test_moe_plan),
        cmocka_unit_test(test_moe_combine_bwd),
        cmocka_unit_test(test_moe_route_bwd),
        cmocka_unit_test(test_expert_matmul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
