// The backward ops against central finite differences of their double-precision forwards
// (util/ref.h), on every backend (util/backends.h: cpu always; cuda when the build has it and a
// GPU is present, else a cmocka skip naming the reason): matmul_bwd, rmsnorm_bwd, rope_bwd,
// sum_rows_rep (copy_rows_rep's backward), attention_bwd, gate_mul_bwd, silu_mul_bwd. The MoE
// training ops (slot plan, combine, routing, grouped expert products) and the thread-count
// determinism of attention_bwd: on the cpu.
//
// For an op with output y and a fixed random R, the scalar loss is L = Σ y ⊙ R, so the gradient
// reaching y is dy = R. The analytic gradients come from the backend's backward op; the numeric
// ones from central differences (eps = 1e-4) of the naive double forward evaluated at the values
// the op read (inputs go into the backend's buffers in its dtypes, cpu F32, cuda BF16, and are
// read back), so the oracle carries almost no rounding noise. Gradients are F32 on every
// backend. The check is |analytic − numeric| <= tol · max(1, |numeric|) per element, with (cpu |
// cuda):
//   TOL_GRAD      {1e-3, 2e-3}: fp32 backward arithmetic on the same inputs (~1e-6); cuda's
//                 products of bf16 operands are exact in fp32, only the order of sums differs.
//   TOL_GRAD_ATTN {1e-3, 2e-2}: attention; cuda's CUDA-core kernels are fp32 throughout (~1e-5),
//                 its tensor-core path (head dims 32/64/128) rounds P and dS to bf16 as mma
//                 operands (test_cuda_grad_ops' TOL_ATTN_TC, 2e-2 relative L2).
// A dropped or wrong term moves gradients by O(1) and fails this (verified by mutating the
// backward ops by hand: e.g. dropping the −D term of ds, or the r³ term of rmsnorm).
// Each case also checks the backend's forward against the same double reference (TOL_FWD: cpu
// 1e-5; cuda 5e-3, a BF16 output rounded once, 2e-2 for attention, as test_ops), which ties the
// backward to the forward that training actually runs.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/rng.h"
#include "util/backends.h"
#include "util/fd.h"
#include "util/testutil.h"

#define FD_EPS 1e-4
#define FD_TOL 1e-3      // the cpu-only tests below
#define FD_MAX_CHECKS 96 // elements checked per tensor (all of them when the tensor is smaller)

static const ae_tb_tol TOL_GRAD = {1e-3, 2e-3};
static const ae_tb_tol TOL_GRAD_ATTN = {1e-3, 2e-2};
static const ae_tb_tol TOL_FWD = {1e-5, 5e-3};
static const ae_tb_tol TOL_FWD_ATTN = {1e-5, 2e-2};
static const ae_tb_tol TOL_LSE = {1e-5, 1e-4}; // log2-unit lse: fp32 scores, log2f (test_cuda_grad_ops)

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
// loss reads through ctx), within tol · max(1, |numeric|). Checks every element, or
// FD_MAX_CHECKS random ones of a big tensor.
static void check_fd_tol(const char *what, ae_fd_loss loss, void *ctx, double *x, size_t n,
                         const float *analytic, ae_rng *r, double tol) {
    size_t checks = n <= FD_MAX_CHECKS ? n : FD_MAX_CHECKS;
    for (size_t c = 0; c < checks; c++) {
        size_t i = n <= FD_MAX_CHECKS ? c : (size_t)(ae_rng_u64(r) % n);
        double num = ae_fd_central_d(loss, ctx, &x[i], FD_EPS);
        if (!(fabs(analytic[i] - num) <= tol * fmax(1.0, fabs(num))))
            fail_msg("%s[%zu]: analytic %.7g, numeric %.7g", what, i, (double)analytic[i], num);
    }
}

static void check_fd(const char *what, ae_fd_loss loss, void *ctx, double *x, size_t n,
                     const float *analytic, ae_rng *r) {
    check_fd_tol(what, loss, ctx, x, n, analytic, r, FD_TOL);
}

// The same on backend be, "what on be" in the message.
static void check_fd_on(const ae_backend *be, const char *what, ae_fd_loss loss, void *ctx,
                        double *x, size_t n, const float *analytic, ae_rng *r, ae_tb_tol tol) {
    char w[200];
    snprintf(w, sizeof w, "%s on %s", what, be->name);
    check_fd_tol(w, loss, ctx, x, n, analytic, r, ae_tb_tol_of(be, tol));
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
    ae_ref_matmul(c->y, c->x, c->w, c->M, c->K, c->N);
    return dot_loss(c->y, c->R, (size_t)c->M * c->N);
}

// dx and dw against finite differences; both accumulate (a second call adds the same again) and
// a null target is skipped.
static void test_matmul_bwd(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 11);
    int shapes[][3] = {{1, 7, 5}, {5, 16, 9}, {17, 33, 4}};
    for (size_t s = 0; s < 3; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
        ae_scratch sc;
        ae_scratch_init(&sc, be);
        float *x = fvec(nx, &r), *w = fvec(nw, &r), *R = fvec(ny, &r);
        ae_ptr px = ae_tb_in(&sc, x, nx, be->act_dtype), pw = ae_tb_in(&sc, w, nw, be->weight_dtype);
        ae_ptr pR = ae_tb_in(&sc, R, ny, be->act_dtype), py = ae_tb_new(&sc, ny, be->act_dtype, NAN);
        mm_ctx c = {M, K, N, dvec(x, nx), dvec(w, nw), dvec(R, ny), malloc(sizeof(double) * ny)};
        mm_loss(&c);
        ae_matmul(be, py, px, pw, M, K, N);
        float *y = ae_tb_out(be, py, ny);
        ae_tb_check(be, "matmul y", y, c.y, ny, ae_tb_tol_of(be, TOL_FWD));

        ae_ptr pdx = ae_tb_new(&sc, nx, AE_DT_F32, 0), pdw = ae_tb_new(&sc, nw, AE_DT_F32, 0);
        ae_matmul_bwd(be, pdx, pdw, pR, px, pw, M, K, N);
        float *dx = ae_tb_out(be, pdx, nx), *dw = ae_tb_out(be, pdw, nw);
        check_fd_on(be, "matmul dx", mm_loss, &c, c.x, nx, dx, &r, TOL_GRAD);
        check_fd_on(be, "matmul dw", mm_loss, &c, c.w, nw, dw, &r, TOL_GRAD);

        // accumulate: a second call adds the same again; a NULL target is skipped
        float *bx = fconst(nx, 0.5f), *bw = fconst(nw, -0.25f);
        ae_ptr pdx2 = ae_tb_new(&sc, nx, AE_DT_F32, 0.5f), pdw2 = ae_tb_new(&sc, nw, AE_DT_F32, -0.25f);
        ae_matmul_bwd(be, pdx2, pdw2, pR, px, pw, M, K, N);
        ae_matmul_bwd(be, pdx2, pdw2, pR, px, pw, M, K, N);
        float *dx2 = ae_tb_out(be, pdx2, nx), *dw2 = ae_tb_out(be, pdw2, nw);
        check_accum("matmul dx (2 calls)", dx2, bx, dx, 2.0f, nx);
        check_accum("matmul dw (2 calls)", dw2, bw, dw, 2.0f, nw);
        ae_matmul_bwd(be, pdx2, ae_ptr_null(), pR, px, pw, M, K, N);
        ae_matmul_bwd(be, ae_ptr_null(), pdw2, pR, px, pw, M, K, N);
        ae_tb_get(be, dx2, pdx2, nx);
        ae_tb_get(be, dw2, pdw2, nw);
        check_accum("matmul dx (3 calls)", dx2, bx, dx, 3.0f, nx);
        check_accum("matmul dw (3 calls)", dw2, bw, dw, 3.0f, nw);

        free(x), free(w), free(R), free(y), free(dx), free(dw), free(dx2), free(dw2), free(bx),
            free(bw);
        free(c.x), free(c.w), free(c.R), free(c.y);
        ae_scratch_free(&sc);
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
    ae_ref_rmsnorm(c->y, c->x, c->w, c->M, c->D, c->eps);
    return dot_loss(c->y, c->R, (size_t)c->M * c->D);
}

static void test_rmsnorm_bwd(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 12);
    int shapes[][2] = {{1, 8}, {5, 24}, {40, 16}};
    for (size_t s = 0; s < 3; s++) {
        int M = shapes[s][0], D = shapes[s][1];
        size_t n = (size_t)M * D;
        float eps = 1e-6f;
        ae_scratch sc;
        ae_scratch_init(&sc, be);
        float *x = fvec(n, &r), *w = fvec((size_t)D, &r), *R = fvec(n, &r);
        ae_ptr px = ae_tb_in(&sc, x, n, be->act_dtype);
        ae_ptr pw = ae_tb_in(&sc, w, (size_t)D, be->weight_dtype);
        ae_ptr pR = ae_tb_in(&sc, R, n, be->act_dtype), py = ae_tb_new(&sc, n, be->act_dtype, NAN);
        rms_ctx c = {M, D, eps, dvec(x, n), dvec(w, (size_t)D), dvec(R, n),
                     malloc(sizeof(double) * n)};
        rms_loss(&c);
        be->rmsnorm(be, py, px, pw, M, D, D, eps);
        float *y = ae_tb_out(be, py, n);
        ae_tb_check(be, "rmsnorm y", y, c.y, n, ae_tb_tol_of(be, TOL_FWD));

        ae_ptr pdx = ae_tb_new(&sc, n, AE_DT_F32, 0), pdw = ae_tb_new(&sc, (size_t)D, AE_DT_F32, 0);
        be->rmsnorm_bwd(be, pdx, pdw, pR, px, pw, M, D, eps);
        float *dx = ae_tb_out(be, pdx, n), *dw = ae_tb_out(be, pdw, (size_t)D);
        check_fd_on(be, "rmsnorm dx", rms_loss, &c, c.x, n, dx, &r, TOL_GRAD);
        check_fd_on(be, "rmsnorm dw", rms_loss, &c, c.w, (size_t)D, dw, &r, TOL_GRAD);

        float *bx = fconst(n, 1.0f), *bw = fconst((size_t)D, 2.0f);
        ae_ptr pdx2 = ae_tb_new(&sc, n, AE_DT_F32, 1.0f), pdw2 = ae_tb_new(&sc, (size_t)D, AE_DT_F32, 2.0f);
        be->rmsnorm_bwd(be, pdx2, pdw2, pR, px, pw, M, D, eps);
        be->rmsnorm_bwd(be, pdx2, ae_ptr_null(), pR, px, pw, M, D, eps); // dw may be NULL
        be->rmsnorm_bwd(be, pdx2, pdw2, pR, px, pw, M, D, eps);
        float *dx2 = ae_tb_out(be, pdx2, n), *dw2 = ae_tb_out(be, pdw2, (size_t)D);
        check_accum("rmsnorm dx (3 calls)", dx2, bx, dx, 3.0f, n);
        check_accum("rmsnorm dw (2 calls)", dw2, bw, dw, 2.0f, (size_t)D);

        free(x), free(w), free(R), free(y), free(dx), free(dw), free(dx2), free(dw2), free(bx),
            free(bw);
        free(c.x), free(c.w), free(c.R), free(c.y);
        ae_scratch_free(&sc);
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
    ae_ref_rope(c->y, c->x, c->pos, c->T, c->H, c->stride, c->rd, c->theta, c->mode);
    return dot_loss(c->y, c->R, (size_t)c->T * c->H * c->stride);
}

static void test_rope_bwd(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 13);
    int T = 4, H = 3;
    int32_t pos[4] = {0, 1, 7, 30};
    int layouts[][2] = {{8, 8}, {10, 6}, {12, 4}}; // stride, rd (rd < stride: partial rotary)
    for (int mode = 0; mode < 2; mode++)
        for (size_t l = 0; l < 3; l++) {
            int stride = layouts[l][0], rd = layouts[l][1];
            size_t n = (size_t)T * H * stride;
            ae_scratch sc;
            ae_scratch_init(&sc, be);
            float *x = fvec(n, &r), *R = fvec(n, &r);
            ae_ptr px = ae_tb_in(&sc, x, n, be->act_dtype), ppos = ae_tb_in_i32(&sc, pos, 4);
            rope_ctx c = {T, H, stride, rd, pos, 10000.0, (ae_rope_mode)mode, dvec(x, n),
                          NULL, malloc(sizeof(double) * n)};
            be->rope(be, px, ppos, T, H, stride, rd, 10000.0, (ae_rope_mode)mode);
            float *y = ae_tb_out(be, px, n);
            ae_ptr pd = ae_tb_in(&sc, R, n, AE_DT_F32); // the gradient, rotated back in place
            c.R = dvec(R, n);
            rope_loss(&c);
            ae_tb_check(be, "rope y", y, c.y, n, ae_tb_tol_of(be, TOL_FWD));
            be->rope_bwd(be, pd, ppos, T, H, stride, rd, 10000.0, (ae_rope_mode)mode);
            float *dx = ae_tb_out(be, pd, n);
            check_fd_on(be, mode ? "rope(interleaved) dx" : "rope(half) dx", rope_loss, &c, c.x,
                        n, dx, &r, TOL_GRAD);
            free(x), free(R), free(y), free(dx), free(c.x), free(c.R), free(c.y);
            ae_scratch_free(&sc);
        }
}

// ---------------------------------------------------------------- sum_rows_rep

// copy_rows_rep as the forward: y row i·rep + j = x row i (cols values; x rows lx apart, y rows
// ly apart), L = Σ y ⊙ R. Its gradient in x is sum_rows_rep of R (MLA's rope-key gradient).
typedef struct {
    int rows, rep, cols, lx, ly;
    double *x, *R;
} rep_ctx;

static double rep_loss(void *p) {
    const rep_ctx *c = p;
    double L = 0;
    for (int i = 0; i < c->rows; i++)
        for (int j = 0; j < c->rep; j++)
            for (int k = 0; k < c->cols; k++)
                L += c->x[(size_t)i * c->lx + k] * c->R[((size_t)i * c->rep + j) * c->ly + k];
    return L;
}

// dx = sum_rows_rep(R) against finite differences of the forward above, R in the activation
// dtype and dx in F32 (then in the activation dtype, the MLA backward's case: within its
// rounding); the padding of dx's rows (columns cols .. lx) keeps its values.
static void test_sum_rows_rep(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 17);
    // rows, rep, cols, lx, ly: one row; odd widths (no 4-value chunks); MLA's layout (dr 64 of
    // 576-wide latent rows, 16 heads' 192-wide K rows, offsets left out)
    const int shapes[][5] = {{1, 1, 1, 1, 1}, {3, 5, 7, 9, 11}, {6, 16, 64, 576, 192}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        int rows = shapes[sh][0], rep = shapes[sh][1], cols = shapes[sh][2];
        int lx = shapes[sh][3], ly = shapes[sh][4];
        size_t nx = (size_t)rows * lx, ny = (size_t)rows * rep * ly;
        ae_scratch sc;
        ae_scratch_init(&sc, be);
        float *R = fvec(ny, &r), *x0 = fconst(nx, 0.0f);
        ae_ptr pR = ae_tb_in(&sc, R, ny, be->act_dtype);
        rep_ctx c = {rows, rep, cols, lx, ly, dvec(x0, nx), dvec(R, ny)};
        for (int dt = 0; dt < 2; dt++) {
            ae_dtype ddt = dt ? be->act_dtype : AE_DT_F32;
            ae_ptr pdx = ae_tb_new(&sc, nx, ddt, 7.0f);
            be->sum_rows_rep(be, pdx, lx, pR, ly, rows, rep, cols);
            float *dx = ae_tb_out(be, pdx, nx);
            for (size_t i = 0; i < nx; i++) {
                if ((int)(i % (size_t)lx) < cols) continue;
                if (dx[i] != 7.0f)
                    fail_msg("sum_rows_rep on %s: padding dx[%zu] = %g", be->name, i, dx[i]);
                dx[i] = 0.0f; // the loss does not read the padding: its gradient there is 0
            }
            ae_tb_tol tol = dt ? (ae_tb_tol){1e-3, 1e-2} : TOL_GRAD; // dx rounded to bf16 on cuda
            check_fd_on(be, dt ? "sum_rows_rep dx (act dtype)" : "sum_rows_rep dx", rep_loss, &c,
                        c.x, nx, dx, &r, tol);
            free(dx);
        }
        free(R), free(x0), free(c.x), free(c.R);
        ae_scratch_free(&sc);
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

// b equals a: bit for bit on the cpu (its contract), within rounding elsewhere: cuda's CUDA-core
// path takes D = Σ dout·out from the saved bf16 out (2^-9 relative per element) instead of fp32
// sums, so a gradient element moves by ~|dout|·|out|·2^-9·sqrt(dv) and more where ds sums many
// keys (measured on the H200, 2026-11-29: 5.25e-3 and 1.24e-2 on fresh inputs): 2e-2 per element,
// tol · max(1, |a|), TOL_GRAD_ATTN's cuda value. A lost term (the −D of ds, a key) costs >= 1e-1.
static void check_same(const ae_backend *be, const char *what, const float *b, const float *a,
                       size_t n) {
    if (ae_tb_is_cpu(be)) {
        assert_memory_equal(b, a, sizeof(float) * n);
        return;
    }
    double *ad = dvec(a, n);
    ae_tb_check(be, what, b, ad, n, 2e-2);
    free(ad);
}

// The attention backward's inputs and gradients on one backend.
typedef struct {
    ae_scratch *sc;
    size_t nq, nk, nv;
    int Hq, aliased; // aliased: dv is dk (absorbed MLA)
    ae_ptr q, k, v, R;
} attn_io;

// attention_bwd from the starting values dq NaN (overwritten), dk 0.5, dv 0.25, dsinks −1
// (accumulated), given out (null: recomputed) and a->lse; downloads into g[4] (dq, dk, dv,
// dsinks; dv is dk when aliased).
static void attn_bwd(const ae_backend *be, const attn_io *io, const ae_attn_args *a, ae_ptr out,
                     float *g[4]) {
    ae_ptr dq = ae_tb_new(io->sc, io->nq, AE_DT_F32, NAN);
    ae_ptr dk = ae_tb_new(io->sc, io->nk, AE_DT_F32, 0.5f);
    ae_ptr dv = io->aliased ? dk : ae_tb_new(io->sc, io->nv, AE_DT_F32, 0.25f);
    ae_ptr ds = ae_tb_new(io->sc, (size_t)io->Hq, AE_DT_F32, -1.0f);
    be->attention_bwd(be, a, dq, dk, dv, ae_ptr_is_null(a->sinks) ? ae_ptr_null() : ds, io->R, out,
                      io->q, io->k, io->v);
    g[0] = ae_tb_out(be, dq, io->nq), g[1] = ae_tb_out(be, dk, io->nk);
    g[2] = io->aliased ? g[1] : ae_tb_out(be, dv, io->nv);
    g[3] = ae_tb_out(be, ds, (size_t)io->Hq);
}

// ae_attn_args.dkv_set: setting dk and dv over starting values 0.5 / 0.25 gives the bits of
// adding into starts that are 0 on the storage rows' key and value parts (rows 0 .. nstore − 1,
// the first Hkv·dk resp. Hkv·dv values of each) and 0.5 / 0.25 elsewhere (row padding, ring slots
// past the positions): the parts written as from zero, nothing else touched.
static void check_dkv_set(const ae_backend *be, const attn_io *io, const ae_attn_args *a,
                          int rows) {
    int S = a->pos0 + a->T, nstore = a->ring > 0 && a->ring < S ? a->ring : S;
    float *start[2][2]; // [set][dk, dv]
    for (int set = 0; set < 2; set++) {
        start[set][0] = malloc(sizeof(float) * io->nk);
        start[set][1] = malloc(sizeof(float) * io->nv);
        for (size_t i = 0; i < io->nk; i++) start[set][0][i] = 0.5f;
        for (size_t i = 0; i < io->nv; i++) start[set][1][i] = io->aliased ? 0.5f : 0.25f;
    }
    for (int row = 0; row < nstore && row < rows; row++) {
        memset(start[0][0] + (size_t)row * a->k_stride, 0, sizeof(float) * a->Hkv * a->dk);
        memset((io->aliased ? start[0][0] : start[0][1]) + (size_t)row * a->v_stride, 0,
               sizeof(float) * a->Hkv * a->dv);
    }
    float *g[2][2];
    for (int set = 0; set < 2; set++) {
        ae_attn_args as = *a;
        as.dkv_set = set;
        ae_ptr dq = ae_tb_new(io->sc, io->nq, AE_DT_F32, NAN);
        ae_ptr dk = ae_tb_in(io->sc, start[set][0], io->nk, AE_DT_F32);
        ae_ptr dv = io->aliased ? dk : ae_tb_in(io->sc, start[set][1], io->nv, AE_DT_F32);
        be->attention_bwd(be, &as, dq, dk, dv, ae_ptr_null(), io->R, ae_ptr_null(), io->q, io->k,
                          io->v);
        g[set][0] = ae_tb_out(be, dk, io->nk);
        g[set][1] = io->aliased ? NULL : ae_tb_out(be, dv, io->nv);
    }
    assert_memory_equal(g[1][0], g[0][0], sizeof(float) * io->nk);
    if (!io->aliased) assert_memory_equal(g[1][1], g[0][1], sizeof(float) * io->nv);
    for (int set = 0; set < 2; set++) {
        free(start[set][0]), free(start[set][1]);
        free(g[set][0]), free(g[set][1]);
    }
}

static void free_grads(float *g[4]) {
    if (g[2] != g[1]) free(g[2]);
    free(g[0]), free(g[1]), free(g[3]);
}

static void run_attn_case(const ae_backend *be, const attn_case *tc, ae_rng *r) {
    int S = tc->pos0 + tc->T;
    int rows = tc->ring > 0 ? tc->ring : S;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    ae_attn_args a = ae_attn_dense(tc->T, tc->pos0, tc->Hq, tc->Hkv, tc->dk, tc->dv, tc->window,
                                   1.0f / sqrtf((float)tc->dk), ae_ptr_null());
    a.ring = tc->ring;
    if (tc->layout == LAYOUT_PADDED) a.k_stride += 3, a.v_stride += 5;
    if (tc->layout == LAYOUT_MLA) a.k_stride = a.v_stride = tc->dk; // v = first dv of each k row
    size_t nq = (size_t)tc->T * tc->Hq * tc->dk, no = (size_t)tc->T * tc->Hq * tc->dv;
    size_t nk = (size_t)rows * a.k_stride, nv = (size_t)rows * a.v_stride;
    int aliased = tc->layout == LAYOUT_MLA;
    float *q = fvec(nq, r), *k = fvec(nk, r), *R = fvec(no, r);
    float *v = aliased ? k : fvec(nv, r);
    float *sinks = tc->sinks ? fvec((size_t)tc->Hq, r) : NULL;
    ae_dtype act = be->act_dtype;
    attn_io io = {&sc, nq, nk, aliased ? nk : nv, tc->Hq, aliased, ae_tb_in(&sc, q, nq, act),
                  ae_tb_in(&sc, k, nk, act), ae_ptr_null(), ae_tb_in(&sc, R, no, act)};
    io.v = aliased ? io.k : ae_tb_in(&sc, v, nv, act);
    if (sinks) a.sinks = ae_tb_in(&sc, sinks, (size_t)tc->Hq, AE_DT_F32);

    size_t nrows = (size_t)tc->T * tc->Hq;
    attn_ctx c = {a, dvec(q, nq), dvec(k, nk), NULL, sinks ? dvec(sinks, tc->Hq) : NULL,
                  dvec(R, no), malloc(sizeof(double) * no), malloc(sizeof(double) * nrows)};
    c.v = aliased ? c.k : dvec(v, nv);
    attn_loss(&c);
    char what[160];
    snprintf(what, sizeof what, "T=%d pos0=%d Hq=%d Hkv=%d dk=%d dv=%d W=%d ring=%d sinks=%d "
             "layout=%d", tc->T, tc->pos0, tc->Hq, tc->Hkv, tc->dk, tc->dv, tc->window, tc->ring,
             tc->sinks, (int)tc->layout);
    print_message("attention_bwd on %s: %s\n", be->name, what);
    // the forward, writing the rows' log-sum-exp as the training forwards do
    ae_ptr pout = ae_tb_new(&sc, no, act, NAN), plse = ae_tb_new(&sc, nrows, AE_DT_F32, NAN);
    ae_attn_args af = a;
    af.lse = plse;
    be->attention(be, &af, pout, io.q, io.k, io.v);
    float *out = ae_tb_out(be, pout, no), *lse = ae_tb_out(be, plse, nrows);
    ae_tb_check(be, "attention out", out, c.out, no, ae_tb_tol_of(be, TOL_FWD_ATTN));
    ae_tb_check(be, "attention lse", lse, c.lse, nrows, ae_tb_tol_of(be, TOL_LSE));

    // Once recomputing the forward, once from the saved out and lse: the same gradients.
    float *g[4], *s[4];
    attn_bwd(be, &io, &a, ae_ptr_null(), g);
    attn_bwd(be, &io, &af, pout, s);
    check_dkv_set(be, &io, &a, rows);
    check_same(be, "attention dq from the saved forward", s[0], g[0], nq);
    check_same(be, "attention dk from the saved forward", s[1], g[1], nk);
    if (!aliased) check_same(be, "attention dv from the saved forward", s[2], g[2], nv);
    check_same(be, "attention dsinks from the saved forward", s[3], g[3], (size_t)tc->Hq);
    float *dq = g[0], *dk = g[1], *dv = g[2], *dsk = g[3];
    for (size_t i = 0; i < nk; i++) dk[i] -= 0.5f;
    if (!aliased)
        for (size_t i = 0; i < nv; i++) dv[i] -= 0.25f;
    for (int h = 0; h < tc->Hq; h++) dsk[h] += 1.0f;
    if (!aliased) { // the saved lse is the one used: lse + 1 halves every p, so dv
        float *lse1 = malloc(sizeof(float) * nrows), *h[4];
        for (size_t i = 0; i < nrows; i++) lse1[i] = lse[i] + 1.0f;
        ae_attn_args a1 = a;
        a1.lse = ae_tb_in(&sc, lse1, nrows, AE_DT_F32);
        attn_bwd(be, &io, &a1, pout, h);
        double *want = malloc(sizeof(double) * nv);
        for (size_t i = 0; i < nv; i++) want[i] = 0.25 + 0.5 * (double)dv[i];
        ae_tb_check(be, "attention dv from a saved lse + 1", h[2], want, nv,
                    ae_tb_is_cpu(be) ? 1e-5 : 5e-3);
        free(lse1), free(want);
        free_grads(h);
    }

    ae_tb_tol tol = TOL_GRAD_ATTN;
    check_fd_on(be, "attention dq", attn_loss, &c, c.q, nq, dq, r, tol);
    check_fd_on(be, aliased ? "attention dkv" : "attention dk", attn_loss, &c, c.k, nk, dk, r, tol);
    if (!aliased) check_fd_on(be, "attention dv", attn_loss, &c, c.v, nv, dv, r, tol);
    if (sinks) check_fd_on(be, "attention dsinks", attn_loss, &c, c.sinks, (size_t)tc->Hq, dsk, r, tol);
    if (tc->layout == LAYOUT_PADDED) { // padding between rows never receives gradient
        for (int row = 0; row < rows; row++) {
            for (int i = tc->Hkv * tc->dk; i < a.k_stride; i++)
                assert_true(dk[(size_t)row * a.k_stride + i] == 0.0f);
            for (int i = tc->Hkv * tc->dv; i < a.v_stride; i++)
                assert_true(dv[(size_t)row * a.v_stride + i] == 0.0f);
        }
    }

    free(q), free(k), free(R), free(out), free(sinks), free(lse);
    free_grads(g), free_grads(s);
    free(c.q), free(c.k), free(c.sinks), free(c.R), free(c.out), free(c.lse);
    if (!aliased) free(v), free(c.v);
    ae_scratch_free(&sc);
}

static void test_attention_bwd(void **state) {
    const ae_backend *be = ae_tb_backend(state);
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
        {20, 0, 4, 2, 32, 32, 0, 0, 1, LAYOUT_DENSE},  // cuda: the tensor-core path's head dim
        {18, 3, 4, 2, 32, 32, 7, 0, 0, LAYOUT_DENSE},  // ... with a window, pos0 > 0
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_attn_case(be, &cases[i], &r);
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
    ae_ref_gate_mul(c->y, c->x, c->g, c->T, c->H, c->hd, c->per_head);
    return dot_loss(c->y, c->R, (size_t)c->T * c->H * c->hd);
}

static void test_gate_mul_bwd(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 16);
    int T = 3, H = 4, hd = 6;
    for (int per_head = 0; per_head < 2; per_head++) {
        size_t n = (size_t)T * H * hd, ng = per_head ? (size_t)T * H : n;
        ae_scratch sc;
        ae_scratch_init(&sc, be);
        float *x = fvec(n, &r), *g = fvec(ng, &r), *R = fvec(n, &r);
        for (size_t i = 0; i < ng; i++) g[i] *= 2.0f;
        ae_ptr px = ae_tb_in(&sc, x, n, be->act_dtype), pg = ae_tb_in(&sc, g, ng, be->act_dtype);
        ae_ptr pR = ae_tb_in(&sc, R, n, be->act_dtype), py = ae_tb_new(&sc, n, be->act_dtype, NAN);
        gate_ctx c = {T, H, hd, per_head, dvec(x, n), dvec(g, ng), dvec(R, n),
                      malloc(sizeof(double) * n)};
        gate_loss(&c);
        be->gate_mul(be, py, px, pg, T, H, hd, per_head);
        float *y = ae_tb_out(be, py, n);
        ae_tb_check(be, "gate_mul y", y, c.y, n, ae_tb_is_cpu(be) ? 1e-6 : TOL_FWD.cuda);
        ae_ptr pdx = ae_tb_new(&sc, n, AE_DT_F32, NAN), pdg = ae_tb_new(&sc, ng, AE_DT_F32, NAN);
        be->gate_mul_bwd(be, pdx, pdg, pR, px, pg, T, H, hd, per_head); // both overwritten
        float *dx = ae_tb_out(be, pdx, n), *dg = ae_tb_out(be, pdg, ng);
        check_fd_on(be, "gate_mul dx", gate_loss, &c, c.x, n, dx, &r, TOL_GRAD);
        check_fd_on(be, per_head ? "gate_mul(per head) dg" : "gate_mul dg", gate_loss, &c, c.g,
                    ng, dg, &r, TOL_GRAD);
        // dx may be dy itself
        ae_ptr pdyx = ae_tb_in(&sc, R, n, AE_DT_F32), pdg2 = ae_tb_new(&sc, ng, AE_DT_F32, NAN);
        be->gate_mul_bwd(be, pdyx, pdg2, pdyx, px, pg, T, H, hd, per_head);
        float *dyx = ae_tb_out(be, pdyx, n), *dg2 = ae_tb_out(be, pdg2, ng);
        check_same(be, "gate_mul_bwd dx == dy", dyx, dx, n);
        check_same(be, "gate_mul_bwd dg with dx == dy", dg2, dg, ng);
        free(x), free(g), free(R), free(y), free(dx), free(dg), free(dyx), free(dg2);
        free(c.x), free(c.g), free(c.R), free(c.y);
        ae_scratch_free(&sc);
    }
}

typedef struct {
    size_t n;
    double *g, *u, *R, *y;
} silu_ctx;

static double silu_loss(void *p) {
    silu_ctx *c = p;
    ae_ref_silu_mul(c->y, c->g, c->u, c->n);
    return dot_loss(c->y, c->R, c->n);
}

static void test_silu_mul_bwd(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 17);
    size_t n = 200;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *g = fvec(n, &r), *u = fvec(n, &r), *R = fvec(n, &r);
    for (size_t i = 0; i < n; i++) g[i] *= 3.0f;
    g[0] = -30.0f, g[1] = 25.0f, g[2] = 0.0f; // saturated both ways, and the origin
    ae_ptr pg = ae_tb_in(&sc, g, n, be->act_dtype), pu = ae_tb_in(&sc, u, n, be->act_dtype);
    ae_ptr pR = ae_tb_in(&sc, R, n, be->act_dtype), py = ae_tb_new(&sc, n, be->act_dtype, NAN);
    silu_ctx c = {n, dvec(g, n), dvec(u, n), dvec(R, n), malloc(sizeof(double) * n)};
    silu_loss(&c);
    be->silu_mul(be, py, pg, pu, n);
    float *y = ae_tb_out(be, py, n);
    ae_tb_check(be, "silu_mul y", y, c.y, n, ae_tb_is_cpu(be) ? 1e-6 : TOL_FWD.cuda);
    ae_ptr pdg = ae_tb_new(&sc, n, AE_DT_F32, NAN), pdu = ae_tb_new(&sc, n, AE_DT_F32, NAN);
    be->silu_mul_bwd(be, pdg, pdu, pR, pg, pu, n);
    float *dg = ae_tb_out(be, pdg, n), *du = ae_tb_out(be, pdu, n);
    check_fd_on(be, "silu_mul dg", silu_loss, &c, c.g, n, dg, &r, TOL_GRAD);
    check_fd_on(be, "silu_mul du", silu_loss, &c, c.u, n, du, &r, TOL_GRAD);
    free(g), free(u), free(R), free(y), free(dg), free(du);
    free(c.g), free(c.u), free(c.R), free(c.y);
    ae_scratch_free(&sc);
}

// ---------------------------------------------------------------- MoE training ops

// moe_plan against its definition: positions by expert, then by slot; tok the slot's token.
static void test_moe_plan(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 18);
    int shapes[][3] = {{1, 1, 1}, {7, 2, 8}, {40, 3, 5}, {33, 8, 128}};
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        int T = shapes[c][0], K = shapes[c][1], E = shapes[c][2], S = T * K;
        int32_t *idx = ae_test_routing(&r, T, K, E, -1);
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
    int32_t *idx = ae_test_routing(&r, T, K, E, -1);
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
    double *p;         // (E) one row's probabilities
} route_ctx;

// Σ R ⊙ wts with the selected experts held fixed: softmax in double, renormalised when asked.
static double route_loss(void *p) {
    route_ctx *c = p;
    for (int t = 0; t < c->T; t++) {
        ae_ref_logsumexp(c->z + (size_t)t * c->E, c->E, c->p); // p = softmax of the row
        double sel = 0;
        for (int k = 0; k < c->K; k++) sel += c->p[c->idx[t * c->K + k]];
        for (int k = 0; k < c->K; k++) {
            double pk = c->p[c->idx[t * c->K + k]];
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
            route_ctx c = {T, E, K, renorm, idx, dvec(z, nz), dvec(R, nk), malloc(sizeof(double) * nk),
                           malloc(sizeof(double) * E)};
            route_loss(&c);
            check_close("moe_route wts", w, c.w, nk, 1e-6);
            float *dz = fconst(nz, NAN); // overwritten
            be->moe_route_bwd(be, ae_host_f32(dz), ae_host_f32(R), ae_host_f32(p), ae_host_i32(idx),
                              T, E, K, renorm);
            check_fd(renorm ? "moe_route_bwd (renormalised) dz" : "moe_route_bwd dz", route_loss, &c,
                     c.z, nz, dz, &r);
            free(z), free(R), free(w), free(p), free(idx), free(dz);
            free(c.z), free(c.R), free(c.w), free(c.p);
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
        AE_TB_TESTS(test_matmul_bwd),
        AE_TB_TESTS(test_rmsnorm_bwd),
        AE_TB_TESTS(test_rope_bwd),
        AE_TB_TESTS(test_sum_rows_rep),
        AE_TB_TESTS(test_attention_bwd),
        cmocka_unit_test(test_attention_bwd_deterministic),
        AE_TB_TESTS(test_gate_mul_bwd),
        AE_TB_TESTS(test_silu_mul_bwd),
        cmocka_unit_test(test_moe_plan),
        cmocka_unit_test(test_moe_combine_bwd),
        cmocka_unit_test(test_moe_route_bwd),
        cmocka_unit_test(test_expert_matmul),
    };
    return cmocka_run_group_tests(tests, ae_tb_setup, ae_tb_teardown);
}
