// The forward ops on every backend (util/backends.h: cpu always; cuda when the build has it and
// a GPU is present, else a cmocka skip naming the reason) against the double-precision
// references of util/ref.h; and MoE top-k routing (a host function).
//
// Method: inputs are drawn with fixed seeds and put in the backend's own buffers in its dtypes
// (cpu: F32; cuda: activations and weights BF16; the residual stream, sinks and logits F32),
// then read back, so the reference is computed from exactly the values the op read. cuda
// buffers start NaN-filled (AE_CUDA_POISON=1): an element an op forgets to write fails. Each
// output element must satisfy |y − ref| <= tol · max(1, |ref|), with per backend (cpu fp32 |
// cuda, the dtypes above):
//   TOL_F32_OP  {1e-5, 5e-3}: an fp32 result of fp32 arithmetic on the cpu (sums of at most a
//               few dozen terms, ~1e-7); on cuda a BF16 output, the fp32 result rounded once to
//               8 significant bits (<= 2^-9 = 2e-3 per element: test_backend_ops' TOL_BF16_OUT).
//   TOL_EXP     {1e-6, 5e-3}: elementwise sigmoid / silu products (expf within an ulp on the cpu).
//   TOL_ATTN    {1e-5, 2e-2}: attention; on cuda a BF16 output (2e-3) and a flash kernel's
//               probabilities in bf16 in P·V (<= 2^-9 · Σ p|v|, ~1e-2 in the worst row of unit
//               normal values; test_backend_ops holds the relative L2 error to 1e-2).
//   TOL_ADD     {1e-6, 1e-6}: one fp32 addition into an F32 tensor on both backends.
//   TOL_ROWS    {1e-5, 1e-4}: nll_rows / kl_rows of F32 logits, F32 out: an fp32 log-sum-exp
//               over V terms (as test_backend_ops held cuda to the cpu: 1e-5 nll, 1e-4 kl).
//   TOL_SWIGLU  {1e-5, 1e-2}: gate_up_silu, silu(x·wgᵀ) ⊙ x·wuᵀ: on the cpu fp32 sums of <= 1032
//               products and expf (~1e-6); on cuda three bf16 roundings (g, u, act: <= 3·2^-9 =
//               6e-3 of |ref|, silu's slope adding at most ~2^-9·max|g²e^g·u| ~ 4e-3 absolute
//               where g < 0 and the output is small).
// A one-line bug (a wrong sign, a scale off by one term, a shifted window, a dropped sink) moves
// outputs by O(1e-1) or more and fails on every backend.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "util/backends.h"
#include "util/testutil.h"

static const ae_tb_tol TOL_F32_OP = {1e-5, 5e-3};
static const ae_tb_tol TOL_EXP = {1e-6, 5e-3};
static const ae_tb_tol TOL_ATTN = {1e-5, 2e-2};
static const ae_tb_tol TOL_ADD = {1e-6, 1e-6};
static const ae_tb_tol TOL_ROWS = {1e-5, 1e-4};
static const ae_tb_tol TOL_SWIGLU = {1e-5, 1e-2};

static float *randn(ae_rng *r, size_t n, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    ae_test_fill_normal(x, n, scale, r);
    return x;
}

static double *dnew(size_t n) {
    double *x = malloc(sizeof(double) * (n ? n : 1));
    assert_non_null(x);
    return x;
}

// ---------------------------------------------------------------- copy_rows_rep

// dst row i·rep + j (at dst + doff + (i·rep + j)·ldd) = src row i (at src + soff + i·lds): the
// first cols values of those rows equal their source exactly (a copy of values the dtype holds:
// tolerance 0 on every backend), and every other element of dst (before doff, the gaps of
// ldd > cols) keeps the value it had.
static void run_copy_rows_rep(const ae_backend *be, ae_rng *r, int rows, int rep, int cols,
                              int64_t lds, int64_t ldd, size_t soff, size_t doff, ae_dtype dt) {
    size_t ns = soff + (size_t)(rows - 1) * (size_t)lds + (size_t)cols;
    size_t nd = doff + ((size_t)rows * (size_t)rep - 1) * (size_t)ldd + (size_t)cols;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *src = randn(r, ns, 1.0f), *dst0 = randn(r, nd, 10.0f);
    ae_ptr ps = ae_tb_in(&sc, src, ns, dt), pd = ae_tb_in(&sc, dst0, nd, dt);
    double *ref = ae_test_to_double(dst0, nd);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < rep; j++)
            for (int c = 0; c < cols; c++)
                ref[doff + ((size_t)i * rep + j) * (size_t)ldd + c] =
                    src[soff + (size_t)i * lds + c];
    be->copy_rows_rep(be, ae_ptr_at(pd, doff), ldd, ae_ptr_at(ps, soff), lds, rows, rep, cols);
    float *got = ae_tb_out(be, pd, nd);
    char what[128];
    snprintf(what, sizeof what,
             "copy_rows_rep %s rows=%d rep=%d cols=%d lds=%lld ldd=%lld off=%zu/%zu", ae_dtype_name(dt), rows, rep, cols, (long long)lds, (long long)ldd, soff, doff);
    ae_tb_check(be, what, got, ref, nd, 0.0);
    free(src), free(dst0), free(ref), free(got);
    ae_scratch_free(&sc);
}

// One element; rep 1 (copy_rows); odd sizes and strides; packed destination rows (ldd == cols);
// the MLA rope-key broadcast (rows of a 576-wide latent at offset 512 into 32 heads of 192-wide
// key rows at offset 128).
static void test_copy_rows_rep(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 11);
    ae_dtype dts[2] = {be->act_dtype, AE_DT_F32};
    for (int d = 0; d < (dts[0] == AE_DT_F32 ? 1 : 2); d++) {
        run_copy_rows_rep(be, &r, 1, 1, 1, 1, 1, 0, 0, dts[d]);
        run_copy_rows_rep(be, &r, 5, 1, 7, 9, 8, 1, 2, dts[d]);
        run_copy_rows_rep(be, &r, 7, 3, 5, 6, 11, 3, 1, dts[d]);
        run_copy_rows_rep(be, &r, 2, 4, 100, 100, 100, 0, 0, dts[d]);
        run_copy_rows_rep(be, &r, 1, 32, 64, 64, 192, 0, 128, dts[d]);
        run_copy_rows_rep(be, &r, 33, 32, 64, 576, 192, 512, 128, dts[d]);
        // an odd latent width (R = 33, dr = 8: 41-wide rows) into odd key rows (dn = 57): rows
        // and offsets only 2-byte aligned in bf16
        run_copy_rows_rep(be, &r, 13, 32, 8, 41, 65, 33, 57, dts[d]);
    }
}

// ---------------------------------------------------------------- matmul

static void test_matmul(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    double tol = ae_tb_tol_of(be, TOL_F32_OP); // y: act
    ae_rng r;
    ae_rng_seed(&r, 1);
    int shapes[][3] = {{1, 7, 5}, {3, 16, 9}, {17, 33, 4}, {8, 64, 48}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        ae_scratch sc;
        ae_scratch_init(&sc, be);
        float *x = randn(&r, (size_t)M * K, 1.0f), *w = randn(&r, (size_t)N * K, 1.0f);
        ae_ptr px = ae_tb_in(&sc, x, (size_t)M * K, be->act_dtype);
        ae_ptr pw = ae_tb_in(&sc, w, (size_t)N * K, be->weight_dtype);
        ae_ptr py = ae_tb_new(&sc, (size_t)M * N, be->act_dtype, NAN);
        ae_matmul(be, py, px, pw, M, K, N);
        float *y = ae_tb_out(be, py, (size_t)M * N);
        double *xd = ae_test_to_double(x, (size_t)M * K), *wd = ae_test_to_double(w, (size_t)N * K);
        double *ref = dnew((size_t)M * N);
        ae_ref_matmul(ref, xd, wd, M, K, N);
        char what[64];
        snprintf(what, sizeof what, "matmul M=%d K=%d N=%d", M, K, N);
        ae_tb_check(be, what, y, ref, (size_t)M * N, tol);
        free(x), free(w), free(y), free(xd), free(wd), free(ref);
        ae_scratch_free(&sc);
    }
}

// ---------------------------------------------------------------- gate_up_silu

// act (M, N) = silu(x·wgᵀ) ⊙ (x·wuᵀ) against the double reference of the two products and
// silu_mul; act a separate buffer or g itself (as the dense MLP calls it). g ~ N(0, 4): saturated
// and near-zero gates both occur.
static void run_gate_up_silu(const ae_backend *be, ae_rng *r, int M, int K, int N, int act_is_g) {
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    const size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
    float *x = randn(r, nx, 1.0f), *wg = randn(r, nw, 2.0f / sqrtf((float)K));
    float *wu = randn(r, nw, 1.0f / sqrtf((float)K));
    ae_ptr px = ae_tb_in(&sc, x, nx, be->act_dtype);
    ae_ptr pwg = ae_tb_in(&sc, wg, nw, be->weight_dtype), pwu = ae_tb_in(&sc, wu, nw, be->weight_dtype);
    ae_ptr pg = ae_tb_new(&sc, ny, be->act_dtype, NAN), pu = ae_tb_new(&sc, ny, be->act_dtype, NAN);
    ae_ptr pa = act_is_g ? pg : ae_tb_new(&sc, ny, be->act_dtype, NAN);
    ae_gate_up_silu(be, pa, pg, pu, px, pwg, pwu, M, K, N);
    float *y = ae_tb_out(be, pa, ny);
    double *xd = ae_test_to_double(x, nx), *gd = ae_test_to_double(wg, nw);
    double *ud = ae_test_to_double(wu, nw), *g = dnew(ny), *u = dnew(ny), *ref = dnew(ny);
    ae_ref_matmul(g, xd, gd, M, K, N);
    ae_ref_matmul(u, xd, ud, M, K, N);
    ae_ref_silu_mul(ref, g, u, ny);
    char what[80];
    snprintf(what, sizeof what, "gate_up_silu M=%d K=%d N=%d%s", M, K, N, act_is_g ? " act == g" : "");
    ae_tb_check(be, what, y, ref, ny, ae_tb_tol_of(be, TOL_SWIGLU));
    free(x), free(wg), free(wu), free(y), free(xd), free(gd), free(ud), free(g), free(u), free(ref);
    ae_scratch_free(&sc);
}

// Decode rows (cuda: the fused GEMV for M <= 8 with K % 8 == 0, warps per tile 1, 2, 4 and 8 by
// K) and the two-op path (M = 17; K = 33, not a multiple of 8); odd N: partial 8-row tiles.
static void test_gate_up_silu(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 12);
    const int shapes[][3] = {{1, 8, 1},    {1, 64, 37},   {2, 264, 13},  {5, 40, 100},
                             {8, 1032, 257}, {3, 776, 64}, {17, 264, 33}, {3, 33, 20}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int a = 0; a < 2; a++)
            run_gate_up_silu(be, &r, shapes[s][0], shapes[s][1], shapes[s][2], a);
}

// ---------------------------------------------------------------- rmsnorm

// rmsnorm out of place and in place (y == x), and add_rmsnorm (x += dx; y = rmsnorm(x) ⊙ w).
static void test_rmsnorm(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    double tol = ae_tb_tol_of(be, TOL_F32_OP), tol_add = ae_tb_tol_of(be, TOL_ADD);
    ae_rng r;
    ae_rng_seed(&r, 2);
    int shapes[][2] = {{5, 24}, {1, 8}, {7, 128}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], D = shapes[s][1];
        size_t n = (size_t)M * D;
        float eps = 1e-6f;
        ae_scratch sc;
        ae_scratch_init(&sc, be);
        float *x = randn(&r, n, 1.0f), *w = randn(&r, (size_t)D, 1.0f), *dx = randn(&r, n, 0.5f);
        ae_ptr px = ae_tb_in(&sc, x, n, be->act_dtype);
        ae_ptr pw = ae_tb_in(&sc, w, (size_t)D, be->weight_dtype);
        ae_ptr py = ae_tb_new(&sc, n, be->act_dtype, NAN);
        double *xd = ae_test_to_double(x, n), *wd = ae_test_to_double(w, (size_t)D), *ref = dnew(n);
        ae_ref_rmsnorm(ref, xd, wd, M, D, eps);
        char what[80];
        be->rmsnorm(be, py, px, pw, M, D, D, eps);
        float *y = ae_tb_out(be, py, n);
        snprintf(what, sizeof what, "rmsnorm M=%d D=%d", M, D);
        ae_tb_check(be, what, y, ref, n, tol);
        be->rmsnorm(be, px, px, pw, M, D, D, eps); // in place
        float *yi = ae_tb_out(be, px, n);
        snprintf(what, sizeof what, "rmsnorm in place M=%d D=%d", M, D);
        ae_tb_check(be, what, yi, ref, n, tol);
        if (ae_tb_is_cpu(be)) assert_memory_equal(yi, y, sizeof(float) * n);

        // add_rmsnorm: the residual xo (F32) = x + dx (act), y (act) = rmsnorm(xo) ⊙ w; into
        // another buffer (x left as it was), then in place
        float *res = randn(&r, n, 1.0f);
        ae_ptr pres = ae_tb_in(&sc, res, n, AE_DT_F32), pxo = ae_tb_new(&sc, n, AE_DT_F32, NAN);
        ae_ptr pdx = ae_tb_in(&sc, dx, n, be->act_dtype);
        for (size_t i = 0; i < n; i++) xd[i] = (double)res[i] + dx[i];
        ae_ref_rmsnorm(ref, xd, wd, M, D, eps);
        be->add_rmsnorm(be, pxo, pres, pdx, py, pw, M, D, eps);
        float *sum = ae_tb_out(be, pxo, n), *y2 = ae_tb_out(be, py, n);
        float *x_after = ae_tb_out(be, pres, n);
        snprintf(what, sizeof what, "add_rmsnorm xo = x + dx M=%d D=%d", M, D);
        ae_tb_check(be, what, sum, xd, n, tol_add);
        snprintf(what, sizeof what, "add_rmsnorm y M=%d D=%d", M, D);
        ae_tb_check(be, what, y2, ref, n, tol);
        assert_memory_equal(x_after, res, sizeof(float) * n); // x unchanged
        be->add_rmsnorm(be, pres, pres, pdx, py, pw, M, D, eps);
        float *sum_in = ae_tb_out(be, pres, n), *y3 = ae_tb_out(be, py, n);
        assert_memory_equal(sum_in, sum, sizeof(float) * n); // in place: the same bits
        assert_memory_equal(y3, y2, sizeof(float) * n);
        free(x), free(w), free(dx), free(res), free(y), free(yi), free(sum), free(y2);
        free(x_after), free(sum_in), free(y3);
        free(xd), free(wd), free(ref);
        ae_scratch_free(&sc);
    }
}

// ---------------------------------------------------------------- rope

// Both conventions (pairs (i, i + rd/2) and (2i, 2i + 1)), full and partial rotary (rd < stride:
// dims rd.. untouched, bit for bit), positions from 0 (the identity) to 1000; rope_bwd undoes rope.
static void test_rope(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    double tol = ae_tb_tol_of(be, TOL_F32_OP);
    ae_rng r;
    ae_rng_seed(&r, 5);
    enum { T = 4, H = 3 };
    int32_t pos[T] = {0, 3, 17, 1000};
    int layouts[][2] = {{8, 8}, {10, 6}, {64, 64}, {12, 4}}; // stride, rd
    for (int mode = 0; mode < 2; mode++)
        for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
            int stride = layouts[l][0], rd = layouts[l][1];
            size_t n = (size_t)T * H * stride;
            ae_scratch sc;
            ae_scratch_init(&sc, be);
            float *x = randn(&r, n, 1.0f);
            ae_ptr px = ae_tb_in(&sc, x, n, be->act_dtype), ppos = ae_tb_in_i32(&sc, pos, T);
            double *xd = ae_test_to_double(x, n), *ref = dnew(n);
            ae_ref_rope(ref, xd, pos, T, H, stride, rd, 10000.0, (ae_rope_mode)mode);
            be->rope(be, px, ppos, T, H, stride, rd, 10000.0, (ae_rope_mode)mode);
            float *y = ae_tb_out(be, px, n);
            char what[96];
            snprintf(what, sizeof what, "rope mode=%d stride=%d rd=%d", mode, stride, rd);
            ae_tb_check(be, what, y, ref, n, tol);
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < stride; i++) {
                        size_t o = ((size_t)t * H + h) * stride + i;
                        if ((i >= rd || pos[t] == 0) && y[o] != x[o])
                            fail_msg("%s on %s: t=%d h=%d dim %d changed (%g -> %g): position 0 "
                                     "and dims >= rd must stay as they are", what, be->name, t,
                                     h, i, (double)x[o], (double)y[o]);
                    }
            be->rope_bwd(be, px, ppos, T, H, stride, rd, 10000.0, (ae_rope_mode)mode);
            float *back = ae_tb_out(be, px, n);
            snprintf(what, sizeof what, "rope_bwd(rope(x)) mode=%d stride=%d rd=%d", mode, stride, rd);
            ae_tb_check(be, what, back, xd, n, 2 * tol);
            free(x), free(y), free(back), free(xd), free(ref);
            ae_scratch_free(&sc);
        }
}

// ---------------------------------------------------------------- attention

typedef enum { LAYOUT_DENSE, LAYOUT_PADDED, LAYOUT_MLA } attn_layout;

typedef struct {
    int T, pos0, Hq, Hkv, dk, dv, window, sinks;
    attn_layout layout;
    int ring; // > 0: k and v in a ring of `ring` rows (position j at row j % ring)
} attn_case;

// The double reference reading q, k, v, sinks (host copies of the op's inputs) as a describes.
static double *attn_reference(const ae_attn_args *a, const float *q, const float *k,
                              const float *v, size_t nk, size_t nv, const float *sinks) {
    double *qd = ae_test_to_double(q, (size_t)a->T * a->Hq * a->dk);
    double *kd = ae_test_to_double(k, nk), *vd = ae_test_to_double(v, nv);
    double *sd = sinks ? ae_test_to_double(sinks, (size_t)a->Hq) : NULL; // (Hq) sink logits
    double *out = dnew((size_t)a->T * a->Hq * a->dv);
    ae_test_attn ra = {a->T, a->pos0, a->Hq, a->Hkv, a->dk, a->dv, (size_t)a->k_stride,
                       (size_t)a->v_stride, a->window, a->ring, a->scale, sd, NULL};
    ae_test_attention(out, &ra, qd, kd, vd);
    free(qd), free(kd), free(vd), free(sd);
    return out;
}

// One attention call against the double reference. A ring case also runs the full cache
// (rows = positions) and, on the cpu, must give the same bits (same keys, same order).
static void check_attention(const ae_backend *be, ae_rng *r, const attn_case *c) {
    int S = c->pos0 + c->T, rows = c->ring > 0 ? c->ring : S;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *sinks = c->sinks ? randn(r, (size_t)c->Hq, 1.0f) : NULL;
    ae_ptr psinks = sinks ? ae_tb_in(&sc, sinks, (size_t)c->Hq, AE_DT_F32) : ae_ptr_null();
    ae_attn_args a = ae_attn_dense(c->T, c->pos0, c->Hq, c->Hkv, c->dk, c->dv, c->window, 0.3f,
                                   psinks);
    if (c->layout == LAYOUT_PADDED) a.k_stride += 8, a.v_stride += 3;
    // absorbed MLA: one latent row per position (R + dr values); the key is the whole row
    // (dk = R + dr), the value its first R values (dv = R), Hkv = 1
    if (c->layout == LAYOUT_MLA) a.k_stride = a.v_stride = c->dk;
    size_t nk = (size_t)S * a.k_stride, nv = (size_t)S * a.v_stride;
    size_t nq = (size_t)c->T * c->Hq * c->dk, no = (size_t)c->T * c->Hq * c->dv;
    float *q = randn(r, nq, 1.0f), *k = randn(r, nk, 1.0f);
    float *v = c->layout == LAYOUT_MLA ? k : randn(r, nv, 1.0f);
    ae_dtype act = be->act_dtype;
    ae_ptr pq = ae_tb_in(&sc, q, nq, act), pk = ae_tb_in(&sc, k, nk, act);
    ae_ptr pv = v == k ? pk : ae_tb_in(&sc, v, nv, act), po = ae_tb_new(&sc, no, act, NAN);
    be->attention(be, &a, po, pq, pk, pv);
    float *o = ae_tb_out(be, po, no);
    double *ref = attn_reference(&a, q, k, v, nk, nv, sinks);
    char what[160];
    snprintf(what, sizeof what, "attention T=%d pos0=%d Hq=%d Hkv=%d dk=%d dv=%d W=%d sinks=%d "
             "layout=%d ring=%d", c->T, c->pos0, c->Hq, c->Hkv, c->dk, c->dv, c->window, c->sinks,
             (int)c->layout, c->ring);
    ae_tb_check(be, what, o, ref, no, ae_tb_tol_of(be, TOL_ATTN));
    if (c->ring > 0) { // the cache as written token by token: position j in row j % ring
        size_t kr = (size_t)rows * a.k_stride, vr = (size_t)rows * a.v_stride;
        float *kring = malloc(sizeof(float) * kr), *vring = malloc(sizeof(float) * vr);
        for (size_t i = 0; i < kr; i++) kring[i] = NAN; // never-written rows
        for (size_t i = 0; i < vr; i++) vring[i] = NAN;
        for (int j = 0; j < S; j++) {
            memcpy(kring + (size_t)(j % rows) * a.k_stride, k + (size_t)j * a.k_stride,
                   sizeof(float) * a.k_stride);
            memcpy(vring + (size_t)(j % rows) * a.v_stride, v + (size_t)j * a.v_stride,
                   sizeof(float) * a.v_stride);
        }
        ae_attn_args ar = a;
        ar.ring = c->ring;
        ae_ptr pkr = ae_tb_in(&sc, kring, kr, act), pvr = ae_tb_in(&sc, vring, vr, act);
        ae_ptr por = ae_tb_new(&sc, no, act, NAN);
        be->attention(be, &ar, por, pq, pkr, pvr);
        float *oring = ae_tb_out(be, por, no);
        ae_tb_check(be, what, oring, ref, no, ae_tb_tol_of(be, TOL_ATTN));
        if (ae_tb_is_cpu(be)) assert_memory_equal(oring, o, sizeof(float) * no);
        free(kring), free(vring), free(oring);
    }
    free(q), free(k), free(o), free(ref), free(sinks);
    if (v != k) free(v);
    ae_scratch_free(&sc);
}

// Causal GQA with windows, continuation chunks (pos0 > 0) and decode (T = 1); sinks; dk != dv;
// K/V rows wider than Hkv·d; absorbed MLA (v inside the key rows); head dims of the cuda flash
// kernels (64) and others (the reference kernel).
static void test_attention(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 4);
    const attn_case cases[] = {
        // T, pos0, Hq, Hkv, dk, dv, window, sinks, layout
        {6, 0, 4, 4, 8, 8, 0, 0, LAYOUT_DENSE, 0},   // MHA, full causal
        {6, 0, 4, 2, 8, 8, 0, 0, LAYOUT_DENSE, 0},   // GQA 2
        {5, 7, 4, 1, 8, 8, 0, 0, LAYOUT_DENSE, 0},   // GQA 4, pos0 > 0
        {9, 0, 4, 2, 8, 8, 3, 0, LAYOUT_DENSE, 0},   // window 3 < T
        {3, 20, 2, 1, 8, 8, 5, 0, LAYOUT_DENSE, 0},  // window, pos0 > 0
        {6, 0, 4, 2, 8, 8, 0, 1, LAYOUT_DENSE, 0},   // sinks
        {7, 3, 4, 1, 8, 8, 3, 1, LAYOUT_DENSE, 0},   // sinks + window + pos0
        {1, 12, 2, 2, 8, 8, 0, 1, LAYOUT_DENSE, 0},  // sinks, decode
        {5, 0, 4, 2, 12, 6, 0, 0, LAYOUT_DENSE, 0},  // dk > dv
        {5, 2, 2, 1, 4, 10, 3, 1, LAYOUT_DENSE, 0},  // dk < dv
        {6, 0, 4, 2, 8, 4, 0, 0, LAYOUT_PADDED, 0},  // k/v rows wider than Hkv·d
        {4, 5, 4, 2, 6, 6, 4, 1, LAYOUT_PADDED, 0},
        {6, 0, 4, 1, 10, 8, 0, 0, LAYOUT_MLA, 0},    // R = 8, dr = 2
        {1, 9, 4, 1, 10, 8, 0, 0, LAYOUT_MLA, 0},    // absorbed decode
        {5, 3, 8, 1, 10, 8, 4, 1, LAYOUT_MLA, 0},
        {33, 5, 4, 2, 64, 64, 0, 1, LAYOUT_DENSE, 0},   // flash-kernel head dims
        {40, 9, 4, 2, 64, 64, 16, 0, LAYOUT_DENSE, 0},  // ... with a window
        {1, 70, 8, 2, 64, 64, 0, 0, LAYOUT_DENSE, 0},   // decode
        // ring caches of `ring` rows (T + window − 1 <= ring)
        {1, 20, 4, 2, 6, 4, 5, 1, LAYOUT_DENSE, 8},
        {3, 20, 4, 2, 6, 4, 5, 1, LAYOUT_DENSE, 8},
        {4, 9, 2, 1, 6, 4, 4, 1, LAYOUT_DENSE, 7},
        {1, 3, 2, 2, 6, 4, 4, 1, LAYOUT_DENSE, 4},
        {2, 0, 2, 1, 6, 4, 3, 1, LAYOUT_DENSE, 4},
        {1, 37, 4, 1, 6, 4, 6, 1, LAYOUT_DENSE, 6},
        {4, 30, 4, 2, 64, 64, 8, 1, LAYOUT_DENSE, 11},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_attention(be, &r, &cases[i]);
}

// ---------------------------------------------------------------- gate_mul, silu_mul, add

// y = x ⊙ sigmoid(g), elementwise and per head, out of place and in place (y == x), with
// saturated gates; shapes from one element to a 1000-token prefill (the cuda grid's edges).
static void run_gate_mul(const ae_backend *be, ae_rng *r, int T, int H, int hd, int per_head,
                         int in_place) {
    size_t n = (size_t)T * H * hd, ng = per_head ? (size_t)T * H : n;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *x = randn(r, n, 1.0f), *g = randn(r, ng, 3.0f);
    g[0] = -200.0f; // saturated: exactly 0 (cpu)
    if (ng > 1) g[1] = 40.0f; // saturated: exactly x (cpu)
    ae_ptr px = ae_tb_in(&sc, x, n, be->act_dtype), pg = ae_tb_in(&sc, g, ng, be->act_dtype);
    ae_ptr py = in_place ? px : ae_tb_new(&sc, n, be->act_dtype, NAN);
    double *xd = ae_test_to_double(x, n), *gd = ae_test_to_double(g, ng), *ref = dnew(n);
    ae_ref_gate_mul(ref, xd, gd, T, H, hd, per_head);
    be->gate_mul(be, py, px, pg, T, H, hd, per_head);
    float *y = ae_tb_out(be, py, n);
    char what[96];
    snprintf(what, sizeof what, "gate_mul T=%d H=%d hd=%d %s%s", T, H, hd,
             per_head ? "per head" : "elementwise", in_place ? " in place" : "");
    ae_tb_check(be, what, y, ref, n, ae_tb_tol_of(be, TOL_EXP));
    if (ae_tb_is_cpu(be) && !per_head && n > 1) assert_true(y[0] == 0.0f && y[1] == x[1]);
    free(x), free(g), free(y), free(xd), free(gd), free(ref);
    ae_scratch_free(&sc);
}

static void test_gate_mul(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 8);
    const int shapes[][3] = {{3, 4, 5}, {1, 1, 1}, {7, 4, 32}, {5, 3, 40}, {300, 32, 128},
                             {1000, 16, 64}, {3, 5, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ph = 0; ph < 2; ph++)
            for (int ip = 0; ip < 2; ip++)
                run_gate_mul(be, &r, shapes[s][0], shapes[s][1], shapes[s][2], ph, ip);
}

// silu_mul (SwiGLU's product) with saturated and zero gates; alias 0: separate y, 1: y == g (as
// the model calls it), 2: y == u.
static void run_silu_mul(const ae_backend *be, ae_rng *r, size_t n, int alias) {
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *g = randn(r, n, 3.0f), *u = randn(r, n, 1.0f);
    g[0] = -30.0f;
    if (n > 2) g[1] = 25.0f, g[2] = 0.0f;
    ae_ptr pg = ae_tb_in(&sc, g, n, be->act_dtype), pu = ae_tb_in(&sc, u, n, be->act_dtype);
    ae_ptr py = alias == 1 ? pg : alias == 2 ? pu : ae_tb_new(&sc, n, be->act_dtype, NAN);
    double *gd = ae_test_to_double(g, n), *ud = ae_test_to_double(u, n), *ref = dnew(n);
    ae_ref_silu_mul(ref, gd, ud, n);
    be->silu_mul(be, py, pg, pu, n);
    float *y = ae_tb_out(be, py, n);
    char what[64];
    snprintf(what, sizeof what, "silu_mul n=%zu%s", n,
             alias == 1 ? " y == g" : alias == 2 ? " y == u" : "");
    ae_tb_check(be, what, y, ref, n, ae_tb_tol_of(be, TOL_EXP));
    free(g), free(u), free(y), free(gd), free(ud), free(ref);
    ae_scratch_free(&sc);
}

// y = a + b for y F32 or act, a and b F32 or act (one fp32 addition; an act y is rounded once
// more): y a third buffer (a and b left as they were), y = b, y = a (in place).
static void run_add(const ae_backend *be, ae_rng *r, size_t n, ae_dtype ydt, ae_dtype xdt) {
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *y = randn(r, n, 2.0f), *x = randn(r, n, 1.0f);
    ae_ptr py = ae_tb_in(&sc, y, n, ydt), px = ae_tb_in(&sc, x, n, xdt);
    ae_ptr pz = ae_tb_new(&sc, n, ydt, NAN), px2 = ae_tb_in(&sc, x, n, xdt);
    double *ref = dnew(n);
    for (size_t i = 0; i < n; i++) ref[i] = (double)y[i] + x[i];
    double tol = ae_tb_tol_of(be, ydt == AE_DT_F32 ? TOL_ADD : TOL_F32_OP);
    char what[80];
    be->add(be, pz, py, px, n);
    float *z = ae_tb_out(be, pz, n), *y0 = ae_tb_out(be, py, n), *x0 = ae_tb_out(be, px, n);
    snprintf(what, sizeof what, "add n=%zu z = y %s + x %s", n, ae_dtype_name(ydt), ae_dtype_name(xdt));
    ae_tb_check(be, what, z, ref, n, tol);
    assert_memory_equal(y0, y, sizeof(float) * n); // the inputs unchanged
    assert_memory_equal(x0, x, sizeof(float) * n);
    if (ydt == xdt) { // b as the output: x2 = y + x2
        be->add(be, px2, py, px2, n);
        float *x2 = ae_tb_out(be, px2, n);
        assert_memory_equal(x2, z, sizeof(float) * n);
        free(x2);
    }
    be->add(be, py, py, px, n);
    float *sum = ae_tb_out(be, py, n);
    snprintf(what, sizeof what, "add n=%zu y %s += x %s", n, ae_dtype_name(ydt), ae_dtype_name(xdt));
    ae_tb_check(be, what, sum, ref, n, tol);
    free(y), free(x), free(sum), free(ref), free(z), free(y0), free(x0);
    ae_scratch_free(&sc);
}

static void test_silu_mul_add(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 9);
    size_t sizes[] = {1, 7, 300, 1000, 4097, (1u << 20) + 3};
    ae_dtype act = be->act_dtype;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        for (int a = 0; a < 3; a++) run_silu_mul(be, &r, sizes[s], a);
        run_add(be, &r, sizes[s], AE_DT_F32, AE_DT_F32);
        if (act != AE_DT_F32) run_add(be, &r, sizes[s], AE_DT_F32, act);
        if (act != AE_DT_F32) run_add(be, &r, sizes[s], act, act);
    }
}

// ---------------------------------------------------------------- scores of logit rows

// Rows of std-3 logits, F32 or act. kind 0: zs = zt + small noise (small KL), 1: independent
// rows (large KL), 2: zs == zt (KL 0). nll_rows (target V − 1 in row 0) and kl_rows (finite and
// >= 0) against the one log-sum-exp reference; argmax_rows exactly, with ties (a row's maximum
// copied before and after it: the lowest index wins).
static void run_scores(const ae_backend *be, ae_rng *r, int T, int V, ae_dtype zdt, int kind) {
    double tol = ae_tb_tol_of(be, TOL_ROWS);
    size_t n = (size_t)T * V;
    ae_scratch sc;
    ae_scratch_init(&sc, be);
    float *zt = randn(r, n, 3.0f), *zs = randn(r, n, 3.0f);
    for (int t = 0; t < T && V > 2; t += 2) { // ties for argmax
        float *row = zt + (size_t)t * V;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (row[i] > row[best]) best = i;
        row[ae_rng_u64(r) % (uint64_t)V] = row[best];
        row[V - 1] = row[best];
    }
    if (kind != 1)
        for (size_t i = 0; i < n; i++) zs[i] = kind == 0 ? zt[i] + 0.3f * ae_rng_normal(r) : zt[i];
    int32_t *tg = malloc(sizeof(int32_t) * T), *arg = malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) tg[t] = (int32_t)(ae_rng_u64(r) % (uint64_t)V);
    tg[0] = V - 1;
    ae_ptr pt = ae_tb_in(&sc, zt, n, zdt), ps = ae_tb_in(&sc, zs, n, zdt);
    ae_ptr ptg = ae_tb_in_i32(&sc, tg, (size_t)T), pout = ae_tb_new(&sc, (size_t)T, AE_DT_F32, NAN);
    ae_ptr parg = ae_tb_new(&sc, (size_t)T, AE_DT_I32, -1);
    double *ref = dnew((size_t)T);
    char what[96];
    snprintf(what, sizeof what, "nll_rows T=%d V=%d z %s", T, V, ae_dtype_name(zdt));
    be->nll_rows(be, pout, pt, ptg, T, V);
    float *nll = ae_tb_out(be, pout, (size_t)T);
    for (int t = 0; t < T; t++) ref[t] = ae_ref_nll_row(zt + (size_t)t * V, V, tg[t]);
    ae_tb_check(be, what, nll, ref, (size_t)T, tol);
    snprintf(what, sizeof what, "kl_rows T=%d V=%d z %s kind %d", T, V, ae_dtype_name(zdt), kind);
    be->kl_rows(be, pout, pt, ps, T, V);
    float *kl = ae_tb_out(be, pout, (size_t)T);
    for (int t = 0; t < T; t++) {
        if (!isfinite(kl[t]) || kl[t] < 0)
            fail_msg("%s on %s: row %d is %g (must be finite and >= 0)", what, be->name, t,
                     (double)kl[t]);
        ref[t] = kind == 2 ? 0.0 : ae_ref_kl_row(zt + (size_t)t * V, zs + (size_t)t * V, V, 1.0f);
    }
    ae_tb_check(be, what, kl, ref, (size_t)T, tol);
    be->argmax_rows(be, parg, pt, T, V);
    if (be->download(be, arg, AE_DT_I32, parg, (size_t)T) != AE_OK)
        fail_msg("%s: argmax download: %s", be->name, ae_last_error());
    for (int t = 0; t < T; t++) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (zt[(size_t)t * V + v] > zt[(size_t)t * V + best]) best = v;
        if (arg[t] != best)
            fail_msg("argmax_rows T=%d V=%d z %s on %s: row %d gives %d, want %d", T, V,
                     ae_dtype_name(zdt), be->name, t, arg[t], best);
    }
    free(zt), free(zs), free(tg), free(arg), free(nll), free(kl), free(ref);
    ae_scratch_free(&sc);
}

// One row to a 300-row chunk; vocabularies from 1 to Qwen3's 151936 (at most 7 rows of it).
static void test_score_rows(void **state) {
    const ae_backend *be = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 10);
    const int shapes[][2] = {{5, 1000}, {1, 10}, {7, 10}, {300, 10}, {1, 8192}, {7, 8192},
                             {300, 8192}, {1, 151936}, {7, 151936}, {3, 4099}};
    ae_dtype zd[2] = {AE_DT_F32, be->act_dtype};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int d = 0; d < (zd[1] == AE_DT_F32 ? 1 : 2); d++)
            for (int kind = 0; kind < 3; kind++)
                run_scores(be, &r, shapes[s][0], shapes[s][1], zd[d], kind);
    run_scores(be, &r, 5, 1, AE_DT_F32, 2);
}

// ---------------------------------------------------------------- MoE routing (host)

static void test_moe_route(void **state) {
    (void)state;
    float p[5] = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f};
    int idx[3];
    float w[3];
    ae_moe_topk(p, 5, 3, 0, idx, w);
    assert_int_equal(idx[0], 1); // tie between 1 and 3: lower index first
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 4);
    assert_true(w[0] == 0.3f && w[2] == 0.25f);
    ae_moe_topk(p, 5, 2, 1, idx, w);
    assert_true(fabs(w[0] - 0.5) < 1e-7 && fabs(w[1] - 0.5) < 1e-7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        AE_TB_TESTS(test_copy_rows_rep), AE_TB_TESTS(test_matmul),
        AE_TB_TESTS(test_gate_up_silu), AE_TB_TESTS(test_rmsnorm),
        AE_TB_TESTS(test_rope),
        AE_TB_TESTS(test_attention), AE_TB_TESTS(test_gate_mul),    AE_TB_TESTS(test_silu_mul_add),
        AE_TB_TESTS(test_score_rows), cmocka_unit_test(test_moe_route),
    };
    return cmocka_run_group_tests(tests, ae_tb_setup, ae_tb_teardown);
}
