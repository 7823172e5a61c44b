// The CUDA backend against the CPU reference, op by op ("test-backend-ops"): every forward op of
// the table (backend/ops.h) on random inputs of many shapes, run once on each backend, the CPU's
// fp32 result taken as the expectation. Needs a CUDA build and a GPU; prints "SKIP ..." and exits
// 77 (ctest: skipped) otherwise. gate_mul, silu_mul and the scores of logit rows (nll, kl, argmax)
// are checked on cuda by tests/test_ops.c instead, against its double references (its "[cuda]"
// half, with the shapes, aliases and dtypes that were here).
//
// Method: host inputs are drawn with fixed seeds; every input the CUDA op sees as BF16 is first
// rounded to a bf16-representable value, so that both backends compute on identical numbers and
// the difference measures only the CUDA op's arithmetic and output rounding. The backend is
// opened with AE_CUDA_POISON=1: new device allocations are NaN-filled, so an output element an
// op forgets to write shows up as NaN, and every comparison fails on any NaN/Inf. Each case
// prints one line with its measured error, so the log shows the margins. AE_TEST_FILTER=PATTERN
// runs only the matching tests (e.g. 'test_attention_wgmma*').
//
// Tolerances (relative L2 error, ||cuda - cpu|| / ||cpu||, unless said otherwise). Each test
// names the one it uses; the reasons:
//   TOL_EXACT      copies and conversions of bf16-representable values, integer outputs: exact.
//   TOL_BF16_OUT   5e-3: an output stored as bf16 is the fp32 result rounded once to 8
//                  significant bits; for random data that rounding alone is ~1.5e-3 relative L2.
//                  5e-3 leaves 3x margin; a wrong element, a lost term or a bf16 intermediate
//                  where the contract says fp32 costs >= 1e-2.
//   TOL_GEMM_F32   5e-5: F32 output of a product of bf16 inputs: the products are exact in fp32
//                  and both sides accumulate in fp32, only the order differs (and tensor-core
//                  accumulators may truncate): ~1e-5 at K = 4096. A bf16 intermediate would be
//                  >= 1e-3.
//   TOL_F32_NORM   1e-5: F32 output of rmsnorm: one fp32 sum of squares (double on the cpu) and
//                  one rsqrt per row, ~1e-6.
//   TOL_F32_ADD    1e-6: F32 output of the same single fp32 addition on both sides (bit-identical
//                  in IEEE arithmetic; the margin only forgives a contraction into an FMA).
//   TOL_ATTN       1e-2: attention output is bf16 (1.5e-3), and a flash kernel multiplies the
//                  probabilities in bf16 with V (another ~2e-3, averaged over keys).
//   TOL_LSE        1e-4: attention's per-row log-sum-exp (log2 units), max |cuda − cpu| /
//                  max(1, |cpu|): fp32 scores and sums on both sides (tensor-core vs the cpu's
//                  loop order), ~1e-6; a row missing a key tile or its sink is off by >= 1e-2.
//   TOL_MOE        1e-2: the expert MLP stores gate/up/product as bf16 activations (act dtype)
//                  before the down projection: three roundings of ~1.5e-3 plus the output's.
//   TOL_SWIGLU     1e-2: gate_up_silu rounds g, u and act to bf16 (three roundings of ~1.5e-3,
//                  where the cpu keeps g and u in fp32); a gate row paired with the wrong up row
//                  or a lost chunk of K is O(1). Against the CUDA two-op path: exact.
//   TOL_ROUTE_W    1e-5: router weights are F32 softmax values of identical F32 logits.
//   TOL_QK_F32     1e-5: F32 qk_norm_rope: the rmsnorm's fp32 sum of squares (double on the
//                  cpu) plus cos/sin within an ulp of the cpu's cosf/sinf, ~1e-6. Its bf16 cases
//                  use TOL_BF16_OUT: the kernel keeps the normed values in fp32 (as the fp32
//                  reference does) and rounds once, on output.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "util/backends.h"
#include "util/testutil.h"

#define TOL_BF16_OUT 5e-3
#define TOL_GEMM_F32 5e-5
#define TOL_F32_NORM 1e-5
#define TOL_F32_ADD 1e-6
#define TOL_ATTN 1e-2
#define TOL_LSE 1e-4
#define TOL_MOE 1e-2
#define TOL_SWIGLU 1e-2
#define TOL_ROUTE_W 1e-5
#define TOL_QK_F32 1e-5

static const ae_backend *g_gpu; // the CUDA backend under test
static const ae_backend *g_cpu; // the fp32 reference

// =============================================================================================
// Host helpers

static int32_t *inew(size_t n) {
    int32_t *p = malloc(sizeof(int32_t) * (n ? n : 1));
    assert_non_null(p);
    return p;
}

static float *hconst(size_t n, float v) {
    float *p = ae_test_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static int rand_int(ae_rng *r, int n) { return (int)(ae_rng_u64(r) % (uint64_t)n); }

// Random permutation of 0..n-1 into p.
static void rand_perm(ae_rng *r, int *p, int n) {
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = rand_int(r, i + 1), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static const char *dtn(ae_dtype dt) { return ae_dtype_name(dt); }

// =============================================================================================
// Device helpers on g_gpu (util/backends.h: every failure names the call and carries the
// backend's message)

static ae_ptr dnew(size_t n, ae_dtype dt) { return ae_tb_alloc(g_gpu, n, dt); }
static ae_ptr dnew_put(const float *h, size_t n, ae_dtype dt) {
    return ae_tb_alloc_put(g_gpu, h, AE_DT_F32, n, dt);
}
static ae_ptr dnew_put_i32(const int32_t *h, size_t n) {
    return ae_tb_alloc_put(g_gpu, h, AE_DT_I32, n, AE_DT_I32);
}
// Downloads n values as F32; a failed kernel queued before shows up here (AE_ERR_DEVICE).
static float *dget(ae_ptr p, size_t n) { return ae_tb_out(g_gpu, p, n); }
static int32_t *dget_i32(ae_ptr p, size_t n) { return ae_tb_out_i32(g_gpu, p, n); }
static void dfree(ae_ptr p) { g_gpu->free(g_gpu, p); }

// =============================================================================================
// Comparisons

static char g_what[512]; // the current case, for messages

static void set_what(const char *fmt, va_list ap) { vsnprintf(g_what, sizeof g_what, fmt, ap); }

// Index of the largest |got - ref|.
static size_t worst_index(const float *got, const float *ref, size_t n) {
    size_t w = 0;
    double m = -1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (d > m) m = d, w = i;
    }
    return w;
}

// Fails on a non-finite output (with poisoned allocations, NaN marks an element the op never
// wrote or a poisoned value it read) and when ||got - ref|| / ||ref|| > tol. Prints the error.
static double expect_close(const float *got, const float *ref, size_t n, double tol,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static double expect_close(const float *got, const float *ref, size_t n, double tol,
                           const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_what(fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(ref[i]))
            fail_msg("%s: cpu reference [%zu] = %g is not finite (a bug in the test)", g_what, i,
                     (double)ref[i]);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i]))
            fail_msg("%s: cuda output [%zu] of %zu = %g, cpu %g (non-finite: an element never "
                     "written, or a poisoned/out-of-range value read)",
                     g_what, i, n, (double)got[i], (double)ref[i]);
    double e = ae_test_rel_err(got, ref, n);
    printf("  %-78s rel L2 %.2e (tol %.0e)\n", g_what, e, tol);
    fflush(stdout);
    if (!(e <= tol)) {
        size_t w = worst_index(got, ref, n);
        fail_msg("%s: relative L2 error %.3g > tolerance %.3g (largest difference at [%zu]: "
                 "cuda %g, cpu %g)", g_what, e, tol, w, (double)got[w], (double)ref[w]);
    }
    return e;
}

// Exact equality of float values (NaN equals NaN: used for untouched poisoned elements).
static void expect_exact(const float *got, const float *ref, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void expect_exact(const float *got, const float *ref, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_what(fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == ref[i] || (isnan(got[i]) && isnan(ref[i]))))
            fail_msg("%s: [%zu] of %zu is %.9g, expected exactly %.9g", g_what, i, n,
                     (double)got[i], (double)ref[i]);
    printf("  %-78s exact (%zu values)\n", g_what, n);
    fflush(stdout);
}

static void expect_exact_i32(const int32_t *got, const int32_t *ref, size_t n, const char *fmt,
                             ...) __attribute__((format(printf, 4, 5)));
static void expect_exact_i32(const int32_t *got, const int32_t *ref, size_t n, const char *fmt,
                             ...) {
    va_list ap;
    va_start(ap, fmt);
    set_what(fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i])
            fail_msg("%s: [%zu] of %zu is %d, expected %d", g_what, i, n, got[i], ref[i]);
    printf("  %-78s exact (%zu values)\n", g_what, n);
    fflush(stdout);
}

// =============================================================================================
// Memory: upload / download, copy_rows, fill, embed

// F32 host values -> tensor of dtype dt -> F32 host: dt F32 is exact; BF16 holds each value
// rounded to nearest even (the contract), which for bf16-representable inputs is exact too.
static void roundtrip_f32(ae_rng *r, size_t n, ae_dtype dt, int representable) {
    float *x = ae_test_normal(r, n, 3.0f, representable ? dt : AE_DT_F32);
    // magnitudes over many binades, and halfway cases of bf16 rounding (ties to even)
    size_t specials = n < 8 ? n : 8;
    const float sp[8] = {0.0f, -0.0f, 1e-30f, -3e30f, 1.00390625f, 1.01171875f, -1.00390625f, 65504.0f};
    for (size_t i = 0; i < specials; i++)
        x[i * (n / specials)] = representable ? ae_test_bf16(sp[i]) : sp[i];
    ae_ptr d = dnew_put(x, n, dt);
    float *y = dget(d, n);
    float *want = ae_test_floats_copy(x, n);
    ae_test_round_to(want, n, dt);
    expect_exact(y, want, n, "upload F32 -> %s -> download F32, n=%zu%s", dtn(dt), n,
                 dt == AE_DT_BF16 ? (representable ? " (bf16 values)" : " (rounded RNE)") : "");
    // a sub-range through an offset pointer
    if (n > 10) {
        float *part = ae_test_floats(n - 7);
        ae_status st = g_gpu->download(g_gpu, part, AE_DT_F32, ae_ptr_at(d, 7), n - 7);
        if (st != AE_OK) fail_msg("download at offset 7: %s", ae_last_error());
        expect_exact(part, want + 7, n - 7, "download of %s at element offset 7, n=%zu", dtn(dt), n - 7);
        free(part);
    }
    dfree(d);
    free(x), free(y), free(want);
}

// 16-bit sources (F16, BF16) into F32 and BF16 tensors: the value converted exactly to f32,
// then rounded to nearest even for a BF16 tensor.
static void roundtrip_16bit(ae_rng *r, size_t n, ae_dtype src_dt, ae_dtype dt) {
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    float *want = ae_test_floats(n);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++) {
        float v = 4.0f * ae_rng_normal(r);
        h[i] = src_dt == AE_DT_F16 ? ae_f32_to_f16(v) : ae_f32_to_bf16(v);
        want[i] = src_dt == AE_DT_F16 ? ae_f16_to_f32(h[i]) : ae_bf16_to_f32(h[i]);
    }
    ae_test_round_to(want, n, dt);
    ae_ptr d = dnew(n, dt);
    ae_status st = g_gpu->upload(g_gpu, d, h, src_dt, n);
    if (st != AE_OK) fail_msg("upload %s -> %s: %s", dtn(src_dt), dtn(dt), ae_last_error());
    float *y = dget(d, n);
    expect_exact(y, want, n, "upload %s -> %s -> download F32, n=%zu", dtn(src_dt), dtn(dt), n);
    dfree(d);
    free(h), free(want), free(y);
}

static void roundtrip_i32(ae_rng *r, size_t n) {
    int32_t *x = inew(n);
    for (size_t i = 0; i < n; i++) x[i] = (int32_t)(uint32_t)ae_rng_u64(r);
    x[0] = INT32_MIN;
    if (n > 1) x[n - 1] = INT32_MAX;
    ae_ptr d = dnew_put_i32(x, n);
    int32_t *y = dget_i32(d, n);
    expect_exact_i32(y, x, n, "upload I32 -> download I32, n=%zu", n);
    dfree(d);
    free(x), free(y);
}

static void test_upload_download(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 101);
    size_t sizes[] = {1, 7, 1000, (1u << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        roundtrip_f32(&r, sizes[i], AE_DT_F32, 0);
        roundtrip_f32(&r, sizes[i], AE_DT_BF16, 1);
        roundtrip_f32(&r, sizes[i], AE_DT_BF16, 0);
        roundtrip_16bit(&r, sizes[i], AE_DT_F16, AE_DT_BF16);
        roundtrip_16bit(&r, sizes[i], AE_DT_F16, AE_DT_F32);
        roundtrip_16bit(&r, sizes[i], AE_DT_BF16, AE_DT_BF16);
        roundtrip_16bit(&r, sizes[i], AE_DT_BF16, AE_DT_F32);
        roundtrip_i32(&r, sizes[i]);
    }
    // more than one 64 Mi-value staging chunk of the converting upload
    roundtrip_f32(&r, ((size_t)64 << 20) + 1001, AE_DT_BF16, 0);
    assert_int_equal(g_gpu->sync(g_gpu), AE_OK);
}

// copy_rows: dst row r (cols values at dst + r·ldd) = src row r (at src + r·lds), converted.
// dst starts as a pattern of its own: every element outside the copied rows must keep it.
static void run_copy_rows(ae_rng *r, int rows, int cols, int64_t lds, int64_t ldd,
                          ae_dtype sdt, ae_dtype ddt, size_t soff, size_t doff) {
    size_t ns = soff + (size_t)(rows - 1) * lds + cols, nd = doff + (size_t)(rows - 1) * ldd + cols;
    float *src = ae_test_normal(r, ns, 1.0f, sdt);
    float *dst0 = ae_test_normal(r, nd, 10.0f, ddt);
    // reference: the cpu copy of F32 rows, then the destination's rounding
    float *want = ae_test_floats_copy(dst0, nd);
    g_cpu->copy_rows(g_cpu, ae_host_f32(want + doff), ldd, ae_host_f32(src + soff), lds, rows, cols);
    for (int i = 0; i < rows; i++)
        ae_test_round_to(want + doff + (size_t)i * ldd, (size_t)cols, ddt);
    ae_ptr ds = dnew_put(src, ns, sdt), dd = dnew_put(dst0, nd, ddt);
    g_gpu->copy_rows(g_gpu, ae_ptr_at(dd, doff), ldd, ae_ptr_at(ds, soff), lds, rows, cols);
    float *got = dget(dd, nd);
    expect_exact(got, want, nd, "copy_rows %s->%s rows=%d cols=%d lds=%lld ldd=%lld off=%zu/%zu",
                 dtn(sdt), dtn(ddt), rows, cols, (long long)lds, (long long)ldd, soff, doff);
    dfree(ds), dfree(dd);
    free(src), free(dst0), free(want), free(got);
}

static void test_copy_rows(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 102);
    const ae_dtype dts[2] = {AE_DT_F32, AE_DT_BF16};
    // rows, cols, lds, ldd
    const int shapes[][4] = {{1, 1, 1, 1},       {5, 64, 64, 64},     {7, 100, 131, 100},
                             {33, 129, 258, 130}, {300, 1000, 1000, 1024}, {2, 5000, 5002, 5000},
                             {1, 70000, 70000, 70000}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                run_copy_rows(&r, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], dts[a],
                              dts[b], 0, 0);
    // the MLA layouts (attn_mla.c): split [k_nope | v] rows (S·H rows of dn + dv = 256) into K
    // (dq = 192 per head) and V; the shared rope key (offset R = 512 in a 576-wide latent row)
    // into every head's K at offset h·dq + dn with row stride H·dq.
    run_copy_rows(&r, 300 * 16, 128, 256, 192, AE_DT_BF16, AE_DT_BF16, 0, 0);
    run_copy_rows(&r, 300 * 16, 128, 256, 128, AE_DT_BF16, AE_DT_BF16, 128, 0);
    run_copy_rows(&r, 300, 64, 576, 16 * 192, AE_DT_BF16, AE_DT_BF16, 512, 5 * 192 + 128);
    // ae_copy (one contiguous row)
    float *x = ae_test_normal(&r, 12345, 1.0f, AE_DT_F32);
    ae_ptr dx = dnew_put(x, 12345, AE_DT_F32), dy = dnew(12345, AE_DT_BF16);
    ae_copy(g_gpu, dy, dx, 12345);
    float *got = dget(dy, 12345);
    ae_test_round_to(x, 12345, AE_DT_BF16);
    expect_exact(got, x, 12345, "ae_copy F32->BF16 n=12345");
    dfree(dx), dfree(dy);
    free(x), free(got);
}

// copy_rows_rep: dst row i·rep + j (cols values at dst + (i·rep + j)·ldd) = src row i (at
// src + i·lds), converted; every other element of dst keeps its own pattern. TOL_EXACT: the cpu
// copy of the same F32 rows, then the destination's rounding (F32 -> BF16: nearest even).
static void run_copy_rows_rep(ae_rng *r, int rows, int rep, int cols, int64_t lds, int64_t ldd,
                              ae_dtype sdt, ae_dtype ddt, size_t soff, size_t doff) {
    size_t ns = soff + (size_t)(rows - 1) * lds + cols;
    size_t nd = doff + ((size_t)rows * rep - 1) * ldd + cols;
    float *src = ae_test_normal(r, ns, 1.0f, sdt);
    float *dst0 = ae_test_normal(r, nd, 10.0f, ddt);
    float *want = ae_test_floats_copy(dst0, nd);
    g_cpu->copy_rows_rep(g_cpu, ae_host_f32(want + doff), ldd, ae_host_f32(src + soff), lds, rows,
                         rep, cols);
    for (size_t i = 0; i < (size_t)rows * rep; i++)
        ae_test_round_to(want + doff + i * ldd, (size_t)cols, ddt);
    ae_ptr ds = dnew_put(src, ns, sdt), dd = dnew_put(dst0, nd, ddt);
    g_gpu->copy_rows_rep(g_gpu, ae_ptr_at(dd, doff), ldd, ae_ptr_at(ds, soff), lds, rows, rep,
                         cols);
    float *got = dget(dd, nd);
    expect_exact(got, want, nd,
                 "copy_rows_rep %s->%s rows=%d rep=%d cols=%d lds=%lld ldd=%lld off=%zu/%zu",
                 dtn(sdt), dtn(ddt), rows, rep, cols, (long long)lds, (long long)ldd, soff, doff);
    dfree(ds), dfree(dd);
    free(src), free(dst0), free(want), free(got);
}

static void test_copy_rows_rep(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 103);
    const ae_dtype dts[2] = {AE_DT_F32, AE_DT_BF16};
    // rows, rep, cols, lds, ldd: one element; rep 1 (copy_rows, contiguous and strided); odd
    // sizes; packed destination rows; a long source row broadcast (more chunks than threads)
    const int shapes[][5] = {{1, 1, 1, 1, 1},      {5, 1, 64, 64, 64},    {7, 1, 100, 131, 100},
                             {1, 1, 9000, 9000, 9000}, {7, 3, 5, 6, 11}, {33, 32, 129, 258, 130},
                             {2, 4, 100, 100, 100}, {3, 2, 5000, 5002, 5000}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                run_copy_rows_rep(&r, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                                  shapes[s][4], dts[a], dts[b], 0, 0);
    // the MLA rope-key broadcast (attn_mla.c mla_kv_up): the last dr = 64 values of 576-wide
    // latent rows (offset R = 512) into the 32 heads' K rows (dn + dr = 192 wide at offset
    // dn = 128: DeepSeek's dims; 128 wide at offset 64: the Qwen3-8B student's, a 4K prefill)
    run_copy_rows_rep(&r, 1, 32, 64, 576, 192, AE_DT_BF16, AE_DT_BF16, 512, 128);
    run_copy_rows_rep(&r, 300, 32, 64, 576, 192, AE_DT_BF16, AE_DT_BF16, 512, 128);
    run_copy_rows_rep(&r, 4096, 32, 64, 576, 128, AE_DT_BF16, AE_DT_BF16, 512, 64);
}

// sum_rows_rep (copy_rows_rep's adjoint): dst row i = Σ_j src row i·rep + j, fp32 in order j.
// TOL_EXACT: the same sums of the same values as the cpu, then the destination's rounding; the
// padding of dst's rows keeps its pattern.
static void run_sum_rows_rep(ae_rng *r, int rows, int rep, int cols, int64_t lds, int64_t ldd,
                             ae_dtype sdt, ae_dtype ddt) {
    size_t ns = ((size_t)rows * rep - 1) * lds + cols, nd = (size_t)(rows - 1) * ldd + cols;
    float *src = ae_test_normal(r, ns, 1.0f, sdt);
    float *dst0 = ae_test_normal(r, nd, 10.0f, ddt);
    float *want = ae_test_floats_copy(dst0, nd);
    g_cpu->sum_rows_rep(g_cpu, ae_host_f32(want), ldd, ae_host_f32(src), lds, rows, rep, cols);
    for (int i = 0; i < rows; i++) ae_test_round_to(want + (size_t)i * ldd, (size_t)cols, ddt);
    ae_ptr ds = dnew_put(src, ns, sdt), dd = dnew_put(dst0, nd, ddt);
    g_gpu->sum_rows_rep(g_gpu, dd, ldd, ds, lds, rows, rep, cols);
    float *got = dget(dd, nd);
    expect_exact(got, want, nd, "sum_rows_rep %s->%s rows=%d rep=%d cols=%d lds=%lld ldd=%lld",
                 dtn(sdt), dtn(ddt), rows, rep, cols, (long long)lds, (long long)ldd);
    dfree(ds), dfree(dd);
    free(src), free(dst0), free(want), free(got);
}

static void test_sum_rows_rep(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 104);
    const ae_dtype dts[2] = {AE_DT_F32, AE_DT_BF16};
    // rows, rep, cols, lds, ldd: one element; odd sizes (single values); 4-value chunks; the
    // MLA backward's rope-key gradient at Qwen3-1.7B (16 heads' 192-wide rows into 576-wide ones)
    const int shapes[][5] = {{1, 1, 1, 1, 1}, {7, 3, 5, 6, 11}, {33, 32, 128, 260, 132},
                             {4096, 16, 64, 192, 576}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                run_sum_rows_rep(&r, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3],
                                 shapes[s][4], dts[a], dts[b]);
}

// fill: dst[i] = value for i < n; the elements after n keep their values.
static void run_fill(ae_rng *r, size_t n, ae_dtype dt, float value, size_t off) {
    size_t tot = off + n + 16;
    if (dt == AE_DT_I32) {
        int32_t *h = inew(tot);
        for (size_t i = 0; i < tot; i++) h[i] = (int32_t)(ae_rng_u64(r) % 1000) - 500;
        ae_ptr d = dnew_put_i32(h, tot);
        g_gpu->fill(g_gpu, ae_ptr_at(d, off), n, value);
        for (size_t i = off; i < off + n; i++) h[i] = (int32_t)value;
        int32_t *got = dget_i32(d, tot);
        expect_exact_i32(got, h, tot, "fill I32 n=%zu value=%g off=%zu", n, (double)value, off);
        dfree(d);
        free(h), free(got);
        return;
    }
    float *h = ae_test_normal(r, tot, 1.0f, dt);
    ae_ptr d = dnew_put(h, tot, dt);
    g_gpu->fill(g_gpu, ae_ptr_at(d, off), n, value);
    float want = dt == AE_DT_BF16 ? ae_test_bf16(value) : value;
    for (size_t i = off; i < off + n; i++) h[i] = want;
    float *got = dget(d, tot);
    expect_exact(got, h, tot, "fill %s n=%zu value=%g off=%zu", dtn(dt), n, (double)value, off);
    dfree(d);
    free(h), free(got);
}

static void test_fill(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 103);
    size_t sizes[] = {1, 3, 1000, (1u << 20) + 5};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        run_fill(&r, sizes[i], AE_DT_F32, 0.1f, 0);
        run_fill(&r, sizes[i], AE_DT_F32, -30.0f, 0);
        run_fill(&r, sizes[i], AE_DT_BF16, 0.1f, 0); // stored rounded
        run_fill(&r, sizes[i], AE_DT_BF16, 0.0f, 0);
        run_fill(&r, sizes[i], AE_DT_I32, 7.0f, 0);
        run_fill(&r, sizes[i], AE_DT_I32, -2.0f, 0);
    }
}

// embed: y[t] = table[ids[t]] (a copy of bf16 table values: exact into F32 and into BF16).
static void run_embed(ae_rng *r, int V, int D, int T, ae_dtype ydt) {
    float *table = ae_test_normal(r, (size_t)V * D, 1.0f, AE_DT_BF16);
    int32_t *ids = inew((size_t)T);
    for (int t = 0; t < T; t++) ids[t] = rand_int(r, V);
    ids[0] = V - 1;
    if (T > 1) ids[1] = 0;
    if (T > 2) ids[2] = ids[1]; // repeated id
    float *want = ae_test_floats((size_t)T * D);
    g_cpu->embed(g_cpu, ae_host_f32(want), ae_host_f32(table), ae_host_i32(ids), T, D);
    ae_ptr dt = dnew_put(table, (size_t)V * D, g_gpu->weight_dtype);
    ae_ptr di = dnew_put_i32(ids, (size_t)T), dy = dnew((size_t)T * D, ydt);
    g_gpu->embed(g_gpu, dy, dt, di, T, D);
    float *got = dget(dy, (size_t)T * D);
    expect_exact(got, want, (size_t)T * D, "embed V=%d D=%d T=%d y %s", V, D, T, dtn(ydt));
    dfree(dt), dfree(di), dfree(dy);
    free(table), free(ids), free(want), free(got);
}

static void test_embed(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 104);
    const int shapes[][3] = {{10, 1, 1}, {10, 7, 5}, {8192, 128, 300}, {8192, 384, 1},
                             {151936, 257, 17}, {1000, 4096, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        run_embed(&r, shapes[s][0], shapes[s][1], shapes[s][2], AE_DT_F32);
        run_embed(&r, shapes[s][0], shapes[s][1], shapes[s][2], AE_DT_BF16);
    }
}

// =============================================================================================
// GEMM

static ae_gemm_args gemm_packed(int M, int N, int K, int ta, int tb) {
    ae_gemm_args g = {.M = M, .N = N, .K = K, .batch = 1, .trans_a = ta, .trans_b = tb,
                      .lda = ta ? M : K, .ldb = tb ? K : N, .ldy = N, .alpha = 1.0f, .beta = 0.0f};
    g.sa = (int64_t)(ta ? K : M) * g.lda;
    g.sb = (int64_t)(tb ? N : K) * g.ldb;
    g.sy = (int64_t)M * g.ldy;
    return g;
}

// Elements spanned by `batch` blocks of `rows` rows of `cols` values (strides s, ld).
static size_t span(int batch, int64_t s, int rows, int64_t ld, int cols) {
    return (size_t)((int64_t)(batch - 1) * s + (int64_t)(rows - 1) * ld + cols);
}

// One gemm on both backends; a, b rounded to bf16 (the cuda contract: a, b BF16). beta != 0: y
// starts from the same random values on both (rounded for a BF16 y) and every element of y
// outside the M x N blocks must keep its value; beta == 0: the cuda y starts as NaN everywhere
// (it must not be read) and outside the blocks must stay NaN.
static void run_gemm(ae_rng *r, const ae_gemm_args *g, ae_dtype ydt, size_t aoff, size_t boff,
                     const char *label) {
    int ra = g->trans_a ? g->K : g->M, ca = g->trans_a ? g->M : g->K;
    int rb = g->trans_b ? g->N : g->K, cb = g->trans_b ? g->K : g->N;
    size_t na = aoff + span(g->batch, g->sa, ra, g->lda, ca);
    size_t nb = boff + span(g->batch, g->sb, rb, g->ldb, cb);
    size_t ny = span(g->batch, g->sy, g->M, g->ldy, g->N);
    float *a = ae_test_normal(r, na, 1.0f, AE_DT_BF16);
    float *b = ae_test_normal(r, nb, 1.0f, AE_DT_BF16);
    float *y0 = g->beta != 0.0f ? ae_test_normal(r, ny, 4.0f, ydt) : hconst(ny, NAN);
    float *yc = g->beta != 0.0f ? ae_test_floats_copy(y0, ny) : hconst(ny, 0.0f);
    g_cpu->gemm(g_cpu, g, ae_host_f32(yc), ae_host_f32(a + aoff), ae_host_f32(b + boff));
    ae_ptr da = dnew_put(a, na, g_gpu->weight_dtype), db = dnew_put(b, nb, g_gpu->weight_dtype);
    ae_ptr dy = dnew_put(y0, ny, ydt);
    g_gpu->gemm(g_gpu, g, dy, ae_ptr_at(da, aoff), ae_ptr_at(db, boff));
    float *yg = dget(dy, ny);
    // the M x N blocks, gathered
    size_t nl = (size_t)g->batch * g->M * g->N;
    float *lg = ae_test_floats(nl), *lc = ae_test_floats(nl);
    unsigned char *inside = calloc(ny, 1);
    assert_non_null(inside);
    size_t k = 0;
    for (int i = 0; i < g->batch; i++)
        for (int m = 0; m < g->M; m++)
            for (int n = 0; n < g->N; n++, k++) {
                size_t o = (size_t)((int64_t)i * g->sy + (int64_t)m * g->ldy + n);
                lg[k] = yg[o], lc[k] = yc[o], inside[o] = 1;
            }
    char what[256];
    snprintf(what, sizeof what, "%s M=%d N=%d K=%d b=%d t=%d%d ld=%lld/%lld/%lld a=%g b=%g y %s",
             label, g->M, g->N, g->K, g->batch, g->trans_a, g->trans_b, (long long)g->lda,
             (long long)g->ldb, (long long)g->ldy, (double)g->alpha, (double)g->beta, dtn(ydt));
    expect_close(lg, lc, nl, ydt == AE_DT_F32 ? TOL_GEMM_F32 : TOL_BF16_OUT, "gemm %s", what);
    for (size_t o = 0; o < ny; o++)
        if (!inside[o] && !(yg[o] == y0[o] || (isnan(yg[o]) && isnan(y0[o]))))
            fail_msg("gemm %s: y[%zu], outside the M x N blocks, changed from %g to %g", what, o,
                     (double)y0[o], (double)yg[o]);
    dfree(da), dfree(db), dfree(dy);
    free(a), free(b), free(y0), free(yc), free(yg), free(lg), free(lc), free(inside);
}

// ae_matmul y = x·wᵀ (the Linear layout) over a spread of shapes, y BF16 (activations) and F32
// (logits).
static void test_gemm_matmul(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 201);
    // M, K, N
    const int shapes[][3] = {{1, 1, 1},     {1, 7, 5},       {3, 16, 9},       {17, 33, 4},
                             {64, 64, 64},  {65, 100, 130},  {300, 1000, 520}, {300, 520, 1000},
                             {513, 4096, 257}, {1000, 1024, 3072}, {1024, 128, 8192}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int yd = 0; yd < 2; yd++) {
            int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            ae_gemm_args g = gemm_packed(M, N, K, 0, 1); // what ae_matmul passes
            run_gemm(&r, &g, yd ? AE_DT_F32 : AE_DT_BF16, 0, 0, "matmul");
        }
    // ae_matmul itself (the helper over the table) on one shape
    int M = 37, K = 200, N = 301;
    float *x = ae_test_normal(&r, (size_t)M * K, 1.0f, AE_DT_BF16);
    float *w = ae_test_normal(&r, (size_t)N * K, 1.0f, AE_DT_BF16);
    float *yc = ae_test_floats((size_t)M * N);
    ae_matmul(g_cpu, ae_host_f32(yc), ae_host_f32(x), ae_host_f32(w), M, K, N);
    ae_ptr dx = dnew_put(x, (size_t)M * K, AE_DT_BF16), dw = dnew_put(w, (size_t)N * K, AE_DT_BF16);
    ae_ptr dy = dnew((size_t)M * N, AE_DT_F32);
    ae_matmul(g_gpu, dy, dx, dw, M, K, N);
    float *yg = dget(dy, (size_t)M * N);
    expect_close(yg, yc, (size_t)M * N, TOL_GEMM_F32, "ae_matmul M=%d K=%d N=%d y F32", M, K, N);
    dfree(dx), dfree(dw), dfree(dy);
    free(x), free(w), free(yc), free(yg);
}

// Decode GEMV path: M = 1..8 rows against one large weight (uploaded once), y BF16 and F32.
static void gemv_sweep(ae_rng *r, int K, int N, const int *Ms, int nM) {
    float *w = ae_test_normal(r, (size_t)N * K, 1.0f, AE_DT_BF16);
    ae_ptr dw = dnew_put(w, (size_t)N * K, AE_DT_BF16);
    for (int i = 0; i < nM; i++) {
        int M = Ms[i];
        float *x = ae_test_normal(r, (size_t)M * K, 1.0f, AE_DT_BF16);
        float *yc = ae_test_floats((size_t)M * N);
        ae_matmul(g_cpu, ae_host_f32(yc), ae_host_f32(x), ae_host_f32(w), M, K, N);
        ae_ptr dx = dnew_put(x, (size_t)M * K, AE_DT_BF16);
        for (int yd = 0; yd < 2; yd++) {
            ae_dtype ydt = yd ? AE_DT_F32 : AE_DT_BF16;
            ae_ptr dy = dnew((size_t)M * N, ydt);
            ae_matmul(g_gpu, dy, dx, dw, M, K, N);
            float *yg = dget(dy, (size_t)M * N);
            expect_close(yg, yc, (size_t)M * N, yd ? TOL_GEMM_F32 : TOL_BF16_OUT,
                         "matmul decode M=%d K=%d N=%d y %s", M, K, N, dtn(ydt));
            dfree(dy);
            free(yg);
        }
        dfree(dx);
        free(x), free(yc);
    }
    dfree(dw);
    free(w);
}

static void test_gemm_decode(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 202);
    const int all[8] = {1, 2, 3, 4, 5, 6, 7, 8}, few[3] = {1, 3, 8};
    gemv_sweep(&r, 4096, 20000, all, 8);
    gemv_sweep(&r, 4096, 4096, all, 8);
    gemv_sweep(&r, 100, 20000, few, 3);
    gemv_sweep(&r, 4095, 19997, few, 3);
    gemv_sweep(&r, 1, 33, few, 3);
    gemv_sweep(&r, 129, 1, few, 3);
    const int one[1] = {1};
    gemv_sweep(&r, 1024, 151936, one, 1); // a Qwen3 lm_head at decode
}

// Raw ae_gemm_args: all four transposes, leading dimensions wider than the rows, alpha/beta
// (beta = 1 accumulates, as the backward matmuls do), batches with strides.
static void test_gemm_raw(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 203);
    const int shapes[][3] = {{37, 45, 29}, {128, 256, 64}, {1, 300, 100}, {300, 1, 100}, {5, 7, 1}};
    const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.5f, 0.25f}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                for (size_t k = 0; k < sizeof ab / sizeof *ab; k++)
                    for (int yd = 0; yd < 2; yd++) {
                        ae_gemm_args g = gemm_packed(shapes[s][0], shapes[s][1], shapes[s][2], ta, tb);
                        g.lda += 3, g.ldb += 5, g.ldy += 7;
                        g.alpha = ab[k][0], g.beta = ab[k][1];
                        run_gemm(&r, &g, yd ? AE_DT_F32 : AE_DT_BF16, 0, 0, "raw");
                    }
    // batches with gaps between the blocks, every transpose; one with a shared b (sb = 0)
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int yd = 0; yd < 2; yd++) {
                ae_gemm_args g = gemm_packed(33, 65, 48, ta, tb);
                g.batch = 3;
                g.lda += 2, g.ldb += 4, g.ldy += 6;
                g.sa = (int64_t)(ta ? g.K : g.M) * g.lda + 11;
                g.sb = (int64_t)(tb ? g.N : g.K) * g.ldb + 13;
                g.sy = (int64_t)g.M * g.ldy + 17;
                g.beta = yd ? 1.0f : 0.0f;
                run_gemm(&r, &g, yd ? AE_DT_F32 : AE_DT_BF16, 0, 0, "batched");
            }
    // the decode GEMV shape (M <= 8, Linear layout, rows 16-byte aligned) with alpha, beta and
    // ldy > N
    for (int M = 1; M <= 8; M += 3)
        for (int yd = 0; yd < 2; yd++) {
            ae_gemm_args g = gemm_packed(M, 1000, 256, 0, 1);
            g.lda = g.ldb = 264, g.ldy = 1010, g.alpha = 0.5f, g.beta = 1.0f;
            run_gemm(&r, &g, yd ? AE_DT_F32 : AE_DT_BF16, 0, 0, "gemv-shaped");
        }
    ae_gemm_args sh = gemm_packed(20, 40, 64, 0, 1);
    sh.batch = 4, sh.sb = 0;
    run_gemm(&r, &sh, AE_DT_BF16, 0, 0, "batched shared-b");
    // the matmul backward layouts (backend.c): dx (M, K) += dy (M, N)·w (N, K);
    // dw (N, K) += dyᵀ (N, M)·x (M, K)
    for (int M = 1; M <= 300; M += 299) {
        int K = 96, N = 160;
        ae_gemm_args dx = {.M = M, .N = K, .K = N, .batch = 1, .lda = N, .ldb = K, .ldy = K,
                           .alpha = 1.0f, .beta = 1.0f};
        run_gemm(&r, &dx, AE_DT_F32, 0, 0, "matmul_bwd dx");
        ae_gemm_args dw = {.M = N, .N = K, .K = M, .batch = 1, .trans_a = 1, .lda = N, .ldb = K,
                           .ldy = K, .alpha = 1.0f, .beta = 1.0f};
        run_gemm(&r, &dw, AE_DT_F32, 0, 0, "matmul_bwd dw");
    }
    // the MLA layouts (attn_mla.c), DeepSeek dims H = 16, dn = 128, dr = 64, R = 512, dv = 128:
    int H = 16, dn = 128, dr = 64, R = 512, dv = 128, dq = dn + dr, dkv = dn + dv, Cd = R + dr;
    for (int T = 1; T <= 37; T += 36) {
        // q̃_nope per head: batches interleaved inside the rows of q and of qt (sa < lda)
        ae_gemm_args qa = {.M = T, .N = R, .K = dn, .batch = H, .lda = (int64_t)H * dq, .sa = dq,
                           .ldb = R, .sb = (int64_t)dkv * R, .ldy = (int64_t)H * Cd, .sy = Cd,
                           .alpha = 1.0f};
        run_gemm(&r, &qa, AE_DT_BF16, 0, 0, "mla q-absorb");
        // o_h = ctx_h · Wuv_hᵀ, b offset to the value rows of kv_b_proj
        ae_gemm_args ov = {.M = T, .N = dv, .K = R, .batch = H, .trans_b = 1, .lda = (int64_t)H * R,
                           .sa = R, .ldb = R, .sb = (int64_t)dkv * R, .ldy = (int64_t)H * dv,
                           .sy = dv, .alpha = 1.0f};
        run_gemm(&r, &ov, AE_DT_BF16, 0, (size_t)dn * R, "mla out-absorb");
    }
    // [k_nope | v] of every cached position from the latents (lda = R + dr > K = R)
    ae_gemm_args kv = {.M = 300, .N = H * dkv, .K = R, .batch = 1, .trans_b = 1, .lda = Cd,
                       .ldb = R, .ldy = (int64_t)H * dkv, .alpha = 1.0f};
    run_gemm(&r, &kv, AE_DT_BF16, 0, 0, "mla kv_b");
    // the materialised up-projection straight into K and V (attn_mla.c mla_kv_up): H products
    // of the same latents (sa = 0), head h's rows of kv_b_proj (sb = (dn+dv)·R, b offset dn·R
    // to the value rows for V), out at y + h·sy inside rows of H·sy; the Qwen3-8B student's dims
    // (H = 32, dn = 64, dv = 128) at 300 positions (cuBLASLt) and 5 (the batched GEMV path)
    const int Ss[2] = {300, 5};
    for (int i = 0; i < 2; i++) {
        int S = Ss[i], H8 = 32, dn8 = 64, dv8 = 128, dq8 = dn8 + dr, dkv8 = dn8 + dv8;
        ae_gemm_args kn = {.M = S, .N = dn8, .K = R, .batch = H8, .trans_b = 1, .lda = Cd,
                           .sa = 0, .ldb = R, .sb = (int64_t)dkv8 * R, .ldy = (int64_t)H8 * dq8,
                           .sy = dq8, .alpha = 1.0f};
        run_gemm(&r, &kn, AE_DT_BF16, 0, 0, "mla kv_up k_nope");
        ae_gemm_args vv = {.M = S, .N = dv8, .K = R, .batch = H8, .trans_b = 1, .lda = Cd,
                           .sa = 0, .ldb = R, .sb = (int64_t)dkv8 * R, .ldy = (int64_t)H8 * dv8,
                           .sy = dv8, .alpha = 1.0f};
        run_gemm(&r, &vv, AE_DT_BF16, 0, (size_t)dn8 * R, "mla kv_up v");
    }
}

// Batched products with few rows: the per-head decode products of absorbed MLA (path 2 of
// cuda_gemm.cu: q̃_h = q_nope_h·Wuk_h with b (K, N), o_h = ctx_h·Wuv_hᵀ with b (N, K)) and their
// neighbours on other paths: batch 1..32, M 1..8, both transposes; odd N and K (trans_b = 0
// takes any N and K on the GEMV path; trans_b = 1 needs K % 8 == 0 there, so K = 63 checks the
// cuBLASLt fallback); leading dimensions and batch strides with gaps; beta 0, and beta 1 with
// alpha 0.75; F32 and BF16 y. Tolerances as every gemm: TOL_GEMM_F32 / TOL_BF16_OUT.
static void test_gemm_batched_small_m(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 204);
    const int batches[] = {1, 2, 5, 32};
    // (N, K) for trans_b = 0, then trans_b = 1
    const int shapes[2][3][2] = {{{512, 64}, {37, 29}, {8, 200}}, {{128, 512}, {33, 64}, {20, 63}}};
    for (int tb = 0; tb < 2; tb++)
        for (int s = 0; s < 3; s++)
            for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++)
                for (int M = 1; M <= 8; M++)
                    for (int c = 0; c < 4; c++) {
                        int N = shapes[tb][s][0], K = shapes[tb][s][1];
                        ae_gemm_args g = gemm_packed(M, N, K, 0, tb);
                        g.batch = batches[bi];
                        int brow = tb ? K : N;
                        g.lda = K + 8;
                        g.ldb = (brow + 7) / 8 * 8 + 8;
                        g.ldy = N + 3;
                        g.sa = (int64_t)M * g.lda + 8;
                        g.sb = (int64_t)(tb ? N : K) * g.ldb + 16;
                        g.sy = (int64_t)M * g.ldy + 5;
                        if (c >= 2) g.alpha = 0.75f, g.beta = 1.0f;
                        run_gemm(&r, &g, c % 2 ? AE_DT_F32 : AE_DT_BF16, 0, 0, "batched small-M");
                    }
    // a at an odd offset (trans_b = 0 reads x element by element: still the GEMV path;
    // trans_b = 1 falls back), b at an odd offset (both fall back)
    for (int tb = 0; tb < 2; tb++)
        for (int off = 0; off < 2; off++) {
            ae_gemm_args g = gemm_packed(3, 64, 64, 0, tb);
            g.batch = 4;
            run_gemm(&r, &g, AE_DT_BF16, off ? 0 : 1, off ? 1 : 0, "batched small-M offset");
        }
    // the decode layouts of the Qwen3-8B MLA student (H = 32, dn = 64, dr = 64, R = 512,
    // dv = 128) at T = 1, 2, 8: q read from the rows of q (sa < lda), q̃ written into the rows
    // of qt (sy < ldy), b offset to the value rows of kv_b_proj for the output product
    int H = 32, dn = 64, dr = 64, R = 512, dv = 128, dq = dn + dr, dkv = dn + dv, Cd = R + dr;
    const int Ts[3] = {1, 2, 8};
    for (int i = 0; i < 3; i++) {
        int T = Ts[i];
        ae_gemm_args qa = {.M = T, .N = R, .K = dn, .batch = H, .lda = (int64_t)H * dq, .sa = dq,
                           .ldb = R, .sb = (int64_t)dkv * R, .ldy = (int64_t)H * Cd, .sy = Cd,
                           .alpha = 1.0f};
        run_gemm(&r, &qa, AE_DT_BF16, 0, 0, "8b-mla q-absorb");
        ae_gemm_args ov = {.M = T, .N = dv, .K = R, .batch = H, .trans_b = 1,
                           .lda = (int64_t)H * R, .sa = R, .ldb = R, .sb = (int64_t)dkv * R,
                           .ldy = (int64_t)H * dv, .sy = dv, .alpha = 1.0f};
        run_gemm(&r, &ov, AE_DT_BF16, 0, (size_t)dn * R, "8b-mla out-absorb");
    }
}

// =============================================================================================
// Norms

// rmsnorm of M rows of D values at row stride ld; y at the same stride, or y == x (in place).
// The elements between rows (ld > D) must keep their values.
static void run_rmsnorm(ae_rng *r, int M, int D, int64_t ld, ae_dtype xdt, ae_dtype ydt,
                        int in_place, float eps) {
    size_t n = (size_t)(M - 1) * ld + D;
    float *x = ae_test_normal(r, n, 2.0f, xdt);
    float *w = ae_test_normal(r, (size_t)D, 1.0f, AE_DT_BF16);
    if (M > 2) memset(x + ld, 0, sizeof(float) * (size_t)D); // an all-zero row: eps keeps it finite
    float *y0 = ae_test_normal(r, n, 1.0f, ydt); // distinct values between the rows
    float *yc = in_place ? ae_test_floats_copy(x, n) : ae_test_floats_copy(y0, n);
    g_cpu->rmsnorm(g_cpu, ae_host_f32(yc), in_place ? ae_host_f32(yc) : ae_host_f32(x),
                   ae_host_f32(w), M, D, ld, eps);
    ae_ptr dx = dnew_put(x, n, xdt), dw = dnew_put(w, (size_t)D, g_gpu->weight_dtype);
    ae_ptr dy = in_place ? dx : dnew_put(y0, n, ydt);
    g_gpu->rmsnorm(g_gpu, dy, dx, dw, M, D, ld, eps);
    float *yg = dget(dy, n);
    size_t nl = (size_t)M * D;
    float *lg = ae_test_floats(nl), *lc = ae_test_floats(nl);
    for (int i = 0; i < M; i++) {
        memcpy(lg + (size_t)i * D, yg + (size_t)i * ld, sizeof(float) * D);
        memcpy(lc + (size_t)i * D, yc + (size_t)i * ld, sizeof(float) * D);
    }
    ae_dtype odt = in_place ? xdt : ydt;
    expect_close(lg, lc, nl, odt == AE_DT_F32 ? TOL_F32_NORM : TOL_BF16_OUT,
                 "rmsnorm M=%d D=%d ld=%lld x %s -> y %s%s eps=%g", M, D, (long long)ld, dtn(xdt),
                 dtn(odt), in_place ? " in place" : "", (double)eps);
    // between the rows: untouched (cpu and cuda both keep what was there)
    for (int i = 0; i + 1 < M; i++)
        for (int64_t c = D; c < ld; c++) {
            size_t o = (size_t)i * ld + c;
            if (yg[o] != yc[o])
                fail_msg("rmsnorm M=%d D=%d ld=%lld: element %zu between rows changed (%g, want %g)",
                         M, D, (long long)ld, o, (double)yg[o], (double)yc[o]);
        }
    if (!in_place) dfree(dy);
    dfree(dx), dfree(dw);
    free(x), free(w), free(y0), free(yc), free(yg), free(lg), free(lc);
}

static void test_rmsnorm(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 301);
    // M, D, ld
    const int shapes[][3] = {{1, 1, 1},        {3, 128, 128},     {5, 100, 131},
                             {64, 4096, 4096}, {300, 2560, 2600}, {1000, 64, 64},
                             {7, 5000, 5003},  {2, 16384, 16384}, {4800, 128, 192}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], D = shapes[s][1], ld = shapes[s][2];
        run_rmsnorm(&r, M, D, ld, AE_DT_F32, AE_DT_F32, 0, 1e-6f);
        run_rmsnorm(&r, M, D, ld, AE_DT_F32, AE_DT_BF16, 0, 1e-6f); // residual -> activation
        run_rmsnorm(&r, M, D, ld, AE_DT_BF16, AE_DT_BF16, 0, 1e-5f);
        run_rmsnorm(&r, M, D, ld, AE_DT_BF16, AE_DT_BF16, 1, 1e-6f); // q/k norm, MLA latents
        run_rmsnorm(&r, M, D, ld, AE_DT_F32, AE_DT_F32, 1, 1e-6f);
    }
    // the MLA latent norm: R = 512 of each 576-wide row, in place
    run_rmsnorm(&r, 300, 512, 576, AE_DT_BF16, AE_DT_BF16, 1, 1e-6f);
}

// add_rmsnorm: xo (F32 residual) = x + dx; y (act) = rmsnorm(xo) ⊙ w, in place (xo = x) or
// into another buffer (then x must be left as it was, bit for bit). Both xo and y are compared.
static void run_add_rmsnorm(ae_rng *r, int M, int D, ae_dtype dxdt, int inplace) {
    size_t n = (size_t)M * D;
    float *x = ae_test_normal(r, n, 3.0f, AE_DT_F32), *dx = ae_test_normal(r, n, 1.0f, dxdt);
    float *w = ae_test_normal(r, (size_t)D, 1.0f, AE_DT_BF16);
    float *xc = ae_test_floats_copy(x, n), *yc = ae_test_floats(n);
    g_cpu->add_rmsnorm(g_cpu, ae_host_f32(xc), ae_host_f32(xc), ae_host_f32(dx), ae_host_f32(yc),
                       ae_host_f32(w), M, D, 1e-6f);
    ae_ptr gx = dnew_put(x, n, AE_DT_F32), gdx = dnew_put(dx, n, dxdt);
    ae_ptr gxo = inplace ? gx : dnew(n, AE_DT_F32);
    ae_ptr gw = dnew_put(w, (size_t)D, g_gpu->weight_dtype), gy = dnew(n, g_gpu->act_dtype);
    g_gpu->add_rmsnorm(g_gpu, gxo, gx, gdx, gy, gw, M, D, 1e-6f);
    float *xg = dget(gxo, n), *yg = dget(gy, n);
    const char *how = inplace ? "in place" : "out of place";
    expect_close(xg, xc, n, TOL_F32_ADD, "add_rmsnorm %s M=%d D=%d dx %s: residual x + dx", how, M,
                 D, dtn(dxdt));
    expect_close(yg, yc, n, TOL_BF16_OUT, "add_rmsnorm %s M=%d D=%d dx %s: y (act)", how, M, D,
                 dtn(dxdt));
    if (!inplace) {
        float *x_after = dget(gx, n);
        if (memcmp(x_after, x, sizeof(float) * n))
            fail_msg("add_rmsnorm out of place M=%d D=%d: x changed", M, D);
        free(x_after);
        dfree(gxo);
    }
    dfree(gx), dfree(gdx), dfree(gw), dfree(gy);
    free(x), free(dx), free(w), free(xc), free(yc), free(xg), free(yg);
}

static void test_add_rmsnorm(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 302);
    const int shapes[][2] = {{1, 5}, {1, 128}, {7, 4096}, {300, 1000}, {33, 2561}, {1024, 384}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        run_add_rmsnorm(&r, shapes[s][0], shapes[s][1], AE_DT_BF16, 1); // sub-block output (act)
        run_add_rmsnorm(&r, shapes[s][0], shapes[s][1], AE_DT_F32, 1);
        run_add_rmsnorm(&r, shapes[s][0], shapes[s][1], AE_DT_BF16, 0);
    }
}

// =============================================================================================
// RoPE

// rope on the vectors starting at x + off + (t·H + h)·stride (rd of stride dims rotated); every
// other element of the buffer must be unchanged. Positions drawn in [pmin, pmax].
static void run_rope(ae_rng *r, int T, int H, int stride, int rd, size_t off, int pmin, int pmax,
                     double theta, ae_rope_mode mode) {
    size_t n = off + (size_t)T * H * stride;
    float *x = ae_test_normal(r, n, 1.0f, AE_DT_BF16);
    int32_t *pos = inew((size_t)T);
    for (int t = 0; t < T; t++) pos[t] = pmin + rand_int(r, pmax - pmin + 1);
    pos[0] = pmin;
    if (T > 1) pos[T - 1] = pmax;
    float *xc = ae_test_floats_copy(x, n);
    g_cpu->rope(g_cpu, ae_host_f32(xc + off), ae_host_i32(pos), T, H, stride, rd, theta, mode);
    ae_ptr dx = dnew_put(x, n, g_gpu->act_dtype), dp = dnew_put_i32(pos, (size_t)T);
    g_gpu->rope(g_gpu, ae_ptr_at(dx, off), dp, T, H, stride, rd, theta, mode);
    float *xg = dget(dx, n);
    size_t nl = (size_t)T * H * rd;
    float *lg = ae_test_floats(nl), *lc = ae_test_floats(nl);
    unsigned char *rot = calloc(n, 1);
    assert_non_null(rot);
    for (size_t v = 0, k = 0; v < (size_t)T * H; v++)
        for (int i = 0; i < rd; i++, k++) {
            size_t o = off + v * stride + i;
            lg[k] = xg[o], lc[k] = xc[o], rot[o] = 1;
        }
    expect_close(lg, lc, nl, TOL_BF16_OUT, "rope %s T=%d H=%d stride=%d rd=%d off=%zu pos %d..%d theta=%g",
                 mode == AE_ROPE_HALF ? "half" : "interleaved", T, H, stride, rd, off, pmin, pmax,
                 theta);
    for (size_t o = 0; o < n; o++)
        if (!rot[o] && xg[o] != x[o])
            fail_msg("rope T=%d H=%d stride=%d rd=%d off=%zu: element %zu outside the rotated dims "
                     "changed (%g -> %g)", T, H, stride, rd, off, o, (double)x[o], (double)xg[o]);
    dfree(dx), dfree(dp);
    free(x), free(pos), free(xc), free(xg), free(lg), free(lc), free(rot);
}

// Positions up to 100000 (angles of 1e5 rad: sin/cos must reduce large arguments accurately);
// the cpu takes the angle as float(pos)·float(inv_freq), as transformers does. An implementation
// whose angle differs by an ulp (~1e-2 rad at 1e5) moves a high-frequency pair by ~1e-2, but
// only the few pairs with angles >~ 1e4 rad, so the relative L2 over a head stays ~2e-3 (within
// TOL_BF16_OUT); a fast __sinf-style reduction or a half-precision angle is far off.
static void test_rope(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 401);
    for (int m = 0; m < 2; m++) {
        ae_rope_mode mode = (ae_rope_mode)m;
        run_rope(&r, 1, 1, 2, 2, 0, 0, 0, 1e4, mode);
        run_rope(&r, 1, 1, 2, 2, 0, 5, 5, 1e4, mode);
        run_rope(&r, 7, 4, 128, 128, 0, 0, 100, 1e6, mode);
        run_rope(&r, 300, 8, 64, 64, 0, 0, 4096, 1e6, mode);
        run_rope(&r, 5, 3, 40, 40, 0, 0, 1000, 1e4, mode);
        run_rope(&r, 33, 2, 100, 64, 0, 0, 500, 1e4, mode); // stride > rd: dims rd.. untouched
        run_rope(&r, 1000, 16, 128, 128, 0, 0, 32767, 1e6, mode);
        run_rope(&r, 64, 8, 128, 128, 0, 90000, 100000, 1e6, mode); // large positions
        run_rope(&r, 64, 8, 128, 128, 0, 90000, 100000, 1e4, mode);
        run_rope(&r, 17, 2, 64, 32, 0, 99000, 100000, 1e4, mode);
    }
    // MLA (interleaved, on the rope part of each row): q rows [nope 128 | rope 64] of 16 heads;
    // latent rows [c 512 | kr 64]; the small student's q [16 | 16] and latents [128 | 16]
    run_rope(&r, 37, 16, 192, 64, 128, 0, 5000, 1e6, AE_ROPE_INTERLEAVED);
    run_rope(&r, 300, 1, 576, 64, 512, 0, 5000, 1e6, AE_ROPE_INTERLEAVED);
    run_rope(&r, 1, 16, 192, 64, 128, 100000, 100000, 1e6, AE_ROPE_INTERLEAVED);
    run_rope(&r, 96, 4, 32, 16, 16, 0, 96, 1e6, AE_ROPE_INTERLEAVED);
    run_rope(&r, 96, 1, 144, 16, 128, 0, 96, 1e6, AE_ROPE_INTERLEAVED);
}

// =============================================================================================
// Fused q/k norm + rope (qk_norm_rope) and grouped GEMV (matmul_group)

// qk_norm_rope on q rows at stride ldq and k rows at stride ldk from offset koff (a cache slot),
// both of dtype dt; the cpu's qk_norm_rope (== rmsnorm + rope, tests/test_fused_ops.c) is the
// reference. Every element outside the head rows (row padding, before koff) must keep its value.
static void run_qk_norm_rope(ae_rng *r, int M, int Hq, int Hkv, int hd, int rd, int64_t ldq,
                             int64_t ldk, size_t koff, int pmax, ae_rope_mode mode, ae_dtype dt,
                             int with_q, int with_k) {
    size_t nq = (size_t)M * ldq, nk = koff + (size_t)M * ldk;
    float *q = ae_test_normal(r, nq, 2.0f, dt), *k = ae_test_normal(r, nk, 2.0f, dt);
    float *wq = ae_test_normal(r, (size_t)hd, 1.0f, AE_DT_BF16);
    float *wk = ae_test_normal(r, (size_t)hd, 1.0f, AE_DT_BF16);
    int32_t *pos = inew((size_t)M);
    for (int t = 0; t < M; t++) pos[t] = rand_int(r, pmax + 1);
    pos[0] = pmax;
    float *qc = ae_test_floats_copy(q, nq), *kc = ae_test_floats_copy(k, nk);
    ae_qk_norm_rope_args a = {.M = M, .Hq = Hq, .Hkv = Hkv, .hd = hd, .rd = rd, .ldq = ldq,
                              .ldk = ldk, .eps = 1e-6f, .theta = 1e6, .mode = mode};
    g_cpu->qk_norm_rope(g_cpu, &a, with_q ? ae_host_f32(qc) : ae_ptr_null(),
                        with_k ? ae_host_f32(kc + koff) : ae_ptr_null(), ae_host_f32(wq),
                        ae_host_f32(wk), ae_host_i32(pos));
    ae_ptr dq = dnew_put(q, nq, dt), dk = dnew_put(k, nk, dt), dp = dnew_put_i32(pos, (size_t)M);
    ae_ptr dwq = dnew_put(wq, (size_t)hd, g_gpu->weight_dtype);
    ae_ptr dwk = dnew_put(wk, (size_t)hd, g_gpu->weight_dtype);
    g_gpu->qk_norm_rope(g_gpu, &a, with_q ? dq : ae_ptr_null(),
                        with_k ? ae_ptr_at(dk, koff) : ae_ptr_null(), dwq, dwk, dp);
    float *qg = dget(dq, nq), *kg = dget(dk, nk);
    char what[200];
    snprintf(what, sizeof what, "qk_norm_rope %s %s M=%d Hq=%d Hkv=%d hd=%d rd=%d ldq=%lld ldk=%lld "
             "koff=%zu pos<=%d q%d k%d", mode == AE_ROPE_HALF ? "half" : "interleaved", dtn(dt), M,
             Hq, Hkv, hd, rd, (long long)ldq, (long long)ldk, koff, pmax, with_q, with_k);
    // the prefill kernels compute the same values in the same order: the prefetching one over a
    // full persistent grid (default, giving qg, kg), with 5 blocks (each takes many tokens), the
    // register form (AE_QKN_PF=0) and the row-by-row one (AE_QKN_REG=0)
    static const char *const var[3][3] = {{"AE_QKN_PF", "5", "prefetched by 5 blocks"},
                                          {"AE_QKN_PF", "0", "in registers"},
                                          {"AE_QKN_REG", "0", "by rows"}};
    for (int v = 0; v < 3 && M >= 64; v++) {
        ae_ptr dq0 = dnew_put(q, nq, dt), dk0 = dnew_put(k, nk, dt);
        setenv(var[v][0], var[v][1], 1);
        g_gpu->qk_norm_rope(g_gpu, &a, with_q ? dq0 : ae_ptr_null(),
                            with_k ? ae_ptr_at(dk0, koff) : ae_ptr_null(), dwq, dwk, dp);
        unsetenv(var[v][0]);
        float *q0 = dget(dq0, nq), *k0 = dget(dk0, nk);
        for (size_t i = 0; i < nq; i++)
            if (memcmp(&q0[i], &qg[i], sizeof(float)))
                fail_msg("%s: q element %zu: %g %s, %g by default", what, i, (double)q0[i],
                         var[v][2], (double)qg[i]);
        for (size_t i = 0; i < nk; i++)
            if (memcmp(&k0[i], &kg[i], sizeof(float)))
                fail_msg("%s: k element %zu: %g %s, %g by default", what, i, (double)k0[i],
                         var[v][2], (double)kg[i]);
        dfree(dq0), dfree(dk0), free(q0), free(k0);
    }
    double tol = dt == AE_DT_F32 ? TOL_QK_F32 : TOL_BF16_OUT;
    for (int which = 0; which < 2; which++) { // q, then k
        int H = which ? Hkv : Hq, on = which ? with_k : with_q;
        int64_t ld = which ? ldk : ldq;
        size_t off = which ? koff : 0, n = which ? nk : nq;
        const float *got = which ? kg : qg, *ref = which ? kc : qc, *orig = which ? k : q;
        size_t nl = (size_t)M * H * hd;
        float *lg = ae_test_floats(nl), *lc = ae_test_floats(nl);
        unsigned char *row = calloc(n, 1);
        assert_non_null(row);
        for (int t = 0; t < M; t++)
            for (int i = 0; i < H * hd; i++) {
                size_t o = off + (size_t)t * ld + i, j = (size_t)t * H * hd + i;
                lg[j] = got[o], lc[j] = ref[o], row[o] = on;
            }
        if (on) expect_close(lg, lc, nl, tol, "%s: %s", what, which ? "k" : "q");
        for (size_t o = 0; o < n; o++)
            if (!row[o] && got[o] != orig[o])
                fail_msg("%s: %s element %zu outside the head rows changed (%g -> %g)", what,
                         which ? "k" : "q", o, (double)orig[o], (double)got[o]);
        free(lg), free(lc), free(row);
    }
    dfree(dq), dfree(dk), dfree(dp), dfree(dwq), dfree(dwk);
    free(q), free(k), free(wq), free(wk), free(pos), free(qc), free(kc), free(qg), free(kg);
}

static void test_qk_norm_rope(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 451);
    for (int m = 0; m < 2; m++) {
        ae_rope_mode mode = (ae_rope_mode)m;
        for (int d = 0; d < 2; d++) {
            ae_dtype dt = d ? AE_DT_F32 : AE_DT_BF16;
            // Qwen3-8B decode (hd 128, Hq 16 / Hkv 2 per shard-like slice), k in a cache row
            run_qk_norm_rope(&r, 1, 16, 2, 128, 128, 16 * 128, 2 * 128, 37 * 256, 30000, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 1, 32, 8, 128, 128, 32 * 128, 8 * 128, 0, 100000, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 5, 16, 2, 128, 128, 16 * 128, 2 * 128, 3 * 256, 5000, mode, dt, 1, 1);
            // odd head dims (rd < hd), padded row strides, cache offset
            run_qk_norm_rope(&r, 1, 16, 2, 41, 40, 16 * 41, 2 * 41, 5 * 82, 1000, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 5, 16, 2, 33, 32, 16 * 33 + 3, 2 * 33 + 1, 7, 1000, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 5, 3, 1, 33, 16, 3 * 33, 33, 0, 1000, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 3, 5, 5, 2, 2, 10, 10, 0, 100, mode, dt, 1, 1);
            // prefill-sized, head dims 64 and 256; q only and k only
            run_qk_norm_rope(&r, 300, 8, 2, 64, 64, 8 * 64, 2 * 64, 0, 4096, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 17, 4, 2, 256, 256, 4 * 256, 2 * 256, 0, 4096, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 9, 16, 2, 128, 128, 16 * 128, 2 * 128, 0, 4096, mode, dt, 1, 0);
            run_qk_norm_rope(&r, 9, 16, 2, 128, 128, 16 * 128, 2 * 128 + 8, 64, 4096, mode, dt, 0, 1);
            // from 64 tokens a block takes all head rows of its token (Qwen3-30B-A3B's 32 + 4)
            run_qk_norm_rope(&r, 70, 32, 4, 128, 128, 32 * 128, 4 * 128, 0, 4096, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 64, 32, 4, 128, 128, 32 * 128, 4 * 128, 0, 4096, mode, dt, 0, 1);
            run_qk_norm_rope(&r, 64, 32, 4, 128, 128, 32 * 128, 4 * 128, 0, 4096, mode, dt, 1, 0);
            // cuda's register form: hd 256 and 64, rows past one pass of its block (72), a cache
            // offset; rd < hd stays on the row-by-row kernel
            run_qk_norm_rope(&r, 65, 6, 3, 256, 256, 6 * 256, 3 * 256 + 16, 40, 50000, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 66, 64, 8, 128, 128, 64 * 128, 8 * 128, 0, 4096, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 64, 7, 1, 64, 64, 7 * 64 + 2, 64, 0, 4096, mode, dt, 1, 1);
            run_qk_norm_rope(&r, 64, 4, 2, 64, 32, 4 * 64, 2 * 64, 0, 4096, mode, dt, 1, 1);
        }
    }
}

// mla_decode_prep (absorbed-MLA decode: latent rmsnorm, rope of the shared key, rope of each
// head's q_rope into the absorbed query row) in dtype dt: kv rows at row stride ldkv, an element
// offset koff (a cache row); qt's latent half and padding, q, and kv past R + dr must stay as
// they were. The cpu's op (the separate reference ops) is the expectation: TOL_BF16_OUT for bf16
// outputs (one rounding each), TOL_QK_F32 for F32 (the norm's fp32 sum and cos/sin within an ulp).
static void run_mla_prep(ae_rng *r, int T, int H, int R, int dr, int dn, int64_t ldkv, size_t koff,
                         int pmax, ae_dtype dt) {
    int Cd = R + dr, dq = dn + dr;
    size_t nkv = koff + (size_t)T * ldkv, nq = (size_t)T * H * dq, nqt = (size_t)T * H * Cd;
    float *kv = ae_test_normal(r, nkv, 2.0f, dt), *q = ae_test_normal(r, nq, 1.0f, dt);
    float *qt = ae_test_normal(r, nqt, 1.0f, dt);
    float *w = ae_test_normal(r, (size_t)R, 1.0f, AE_DT_BF16);
    int32_t *pos = inew((size_t)T);
    for (int t = 0; t < T; t++) pos[t] = rand_int(r, pmax + 1);
    pos[T - 1] = pmax;
    float *kvc = ae_test_floats_copy(kv, nkv), *qc = ae_test_floats_copy(q, nq);
    float *qtc = ae_test_floats_copy(qt, nqt);
    ae_mla_prep_args a = {.T = T, .H = H, .R = R, .dr = dr, .dn = dn, .ldkv = ldkv, .eps = 1e-6f,
                          .theta = 1e6, .mode = AE_ROPE_INTERLEAVED};
    g_cpu->mla_decode_prep(g_cpu, &a, ae_host_f32(kvc + koff), ae_host_f32(qc), ae_host_f32(qtc),
                           ae_host_f32(w), ae_host_i32(pos));
    ae_ptr dkv = dnew_put(kv, nkv, dt), dqv = dnew_put(q, nq, dt), dqt = dnew_put(qt, nqt, dt);
    ae_ptr dw = dnew_put(w, (size_t)R, g_gpu->weight_dtype), dp = dnew_put_i32(pos, (size_t)T);
    g_gpu->mla_decode_prep(g_gpu, &a, ae_ptr_at(dkv, koff), dqv, dqt, dw, dp);
    float *kvg = dget(dkv, nkv), *qg = dget(dqv, nq), *qtg = dget(dqt, nqt);
    char what[200];
    snprintf(what, sizeof what, "mla_decode_prep %s T=%d H=%d R=%d dr=%d dn=%d ldkv=%lld koff=%zu "
             "pos<=%d", dtn(dt), T, H, R, dr, dn, (long long)ldkv, koff, pmax);
    double tol = dt == AE_DT_F32 ? TOL_QK_F32 : TOL_BF16_OUT;
    // the latents, the rope keys, the query rope parts: gathered and compared
    size_t nl = (size_t)T * R, nr = (size_t)T * dr, nqr = (size_t)T * H * dr;
    float *lg = ae_test_floats(nl), *lc = ae_test_floats(nl), *rg = ae_test_floats(nr);
    float *rc = ae_test_floats(nr);
    float *qrg = ae_test_floats(nqr), *qrc = ae_test_floats(nqr);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < R; i++) {
            size_t o = koff + (size_t)t * ldkv + i;
            lg[(size_t)t * R + i] = kvg[o], lc[(size_t)t * R + i] = kvc[o];
        }
        for (int i = 0; i < dr; i++) {
            size_t o = koff + (size_t)t * ldkv + R + i;
            rg[(size_t)t * dr + i] = kvg[o], rc[(size_t)t * dr + i] = kvc[o];
        }
    }
    for (size_t v = 0; v < (size_t)T * H; v++)
        for (int i = 0; i < dr; i++)
            qrg[v * dr + i] = qtg[v * Cd + R + i], qrc[v * dr + i] = qtc[v * Cd + R + i];
    expect_close(lg, lc, nl, tol, "%s: latent", what);
    expect_close(rg, rc, nr, tol, "%s: rope key", what);
    expect_close(qrg, qrc, nqr, tol, "%s: query rope", what);
    // everything else unchanged
    for (size_t o = 0; o < nkv; o++) {
        int in_row = o >= koff && (int64_t)((o - koff) % (size_t)ldkv) < Cd;
        if (!in_row && kvg[o] != kv[o])
            fail_msg("%s: kv element %zu outside the rows changed", what, o);
    }
    for (size_t o = 0; o < nq; o++)
        if (qg[o] != q[o]) fail_msg("%s: q element %zu changed", what, o);
    for (size_t o = 0; o < nqt; o++)
        if ((int)(o % (size_t)Cd) < R && qtg[o] != qt[o])
            fail_msg("%s: qt element %zu (the latent half) changed", what, o);
    dfree(dkv), dfree(dqv), dfree(dqt), dfree(dw), dfree(dp);
    free(kv), free(q), free(qt), free(w), free(pos), free(kvc), free(qc), free(qtc);
    free(kvg), free(qg), free(qtg), free(lg), free(lc), free(rg), free(rc), free(qrg), free(qrc);
}

static void test_mla_decode_prep(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 461);
    for (int d = 0; d < 2; d++) {
        ae_dtype dt = d ? AE_DT_F32 : AE_DT_BF16;
        // Qwen3-8B MLA student decode: R 512, dr 64, dn 64, 32 heads, a cache row at 4096
        run_mla_prep(&r, 1, 32, 512, 64, 64, 576, (size_t)4096 * 576, 4096, dt);
        run_mla_prep(&r, 1, 32, 512, 64, 64, 576, 0, 32768, dt);
        // DeepSeek dims (dn 128, 16 / 128 heads), chunks of T tokens, large positions
        run_mla_prep(&r, 4, 16, 512, 64, 128, 576, 576, 100000, dt);
        run_mla_prep(&r, 2, 128, 512, 64, 128, 576, 0, 5000, dt);
        // small students: R 256 / dr 32; R 32 / dr 8; odd R, padded rows, dn 0
        run_mla_prep(&r, 3, 6, 256, 32, 32, 288, 288 * 7, 1000, dt);
        run_mla_prep(&r, 5, 4, 32, 8, 8, 40, 3, 300, dt);
        run_mla_prep(&r, 2, 3, 33, 8, 16, 41 + 5, 1, 77, dt);
        run_mla_prep(&r, 1, 4, 128, 16, 0, 144, 0, 9, dt);
        run_mla_prep(&r, 300, 8, 512, 64, 64, 576, 0, 4096, dt); // a prefill-sized call
    }
}

// matmul_group: n products of one x (M, K) at element offset xoff, each y[i] (M, N[i]) in its own
// allocation with 8 NaN-poisoned elements after it that must stay NaN; the cpu's one ae_matmul
// per product is the reference. M <= 8 with K % 8 == 0 and aligned x runs one GEMV launch;
// otherwise one gemm per product (cuBLASLt for M > 8).
static void run_matmul_group(ae_rng *r, int n, int M, int K, const int *N, ae_dtype ydt,
                             size_t xoff) {
    const size_t guard = 8;
    float *x = ae_test_normal(r, xoff + (size_t)M * K, 1.0f, AE_DT_BF16);
    ae_ptr dx = dnew_put(x, xoff + (size_t)M * K, AE_DT_BF16);
    ae_ptr dy[AE_MATMUL_GROUP_MAX], dw[AE_MATMUL_GROUP_MAX];
    float *w[AE_MATMUL_GROUP_MAX], *yc[AE_MATMUL_GROUP_MAX];
    for (int i = 0; i < n; i++) {
        w[i] = ae_test_normal(r, (size_t)N[i] * K, 1.0f, AE_DT_BF16);
        yc[i] = ae_test_floats((size_t)M * N[i]);
        if (N[i] > 0)
            ae_matmul(g_cpu, ae_host_f32(yc[i]), ae_host_f32(x + xoff), ae_host_f32(w[i]), M, K, N[i]);
        dw[i] = dnew_put(w[i], (size_t)N[i] * K, AE_DT_BF16);
        dy[i] = dnew((size_t)M * N[i] + guard, ydt); // NaN (poisoned allocations)
    }
    g_gpu->matmul_group(g_gpu, n, dy, ae_ptr_at(dx, xoff), dw, N, M, K);
    for (int i = 0; i < n; i++) {
        size_t ny = (size_t)M * N[i];
        float *yg = dget(dy[i], ny + guard);
        expect_close(yg, yc[i], ny, ydt == AE_DT_F32 ? TOL_GEMM_F32 : TOL_BF16_OUT,
                     "matmul_group n=%d M=%d K=%d xoff=%zu y %s: product %d N=%d", n, M, K, xoff,
                     dtn(ydt), i, N[i]);
        for (size_t j = ny; j < ny + guard; j++)
            if (!isnan(yg[j]))
                fail_msg("matmul_group n=%d M=%d K=%d: product %d wrote past its end (y[%zu] = %g)",
                         n, M, K, i, j, (double)yg[j]);
        dfree(dy[i]), dfree(dw[i]);
        free(w[i]), free(yc[i]), free(yg);
    }
    dfree(dx);
    free(x);
}

static void test_matmul_group(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 461);
    const int odd[AE_MATMUL_GROUP_MAX] = {1001, 129, 129, 17}; // odd N: partial 8-row tiles
    const int Ms[] = {1, 3, 8, 9};                            // 9: cuBLASLt, one call each
    for (int n = 1; n <= AE_MATMUL_GROUP_MAX; n++)
        for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++)
            for (int yd = 0; yd < 2; yd++)
                run_matmul_group(&r, n, Ms[m], 1024, odd, yd ? AE_DT_F32 : AE_DT_BF16, 0);
    // Qwen3-8B decode shapes: q/k/v (4096, 1024, 1024 of 4096), gate/up (12288 x 2)
    const int qkv[3] = {4096, 1024, 1024}, gu[2] = {12288, 12288};
    for (int M = 1; M <= 8; M += 7) {
        run_matmul_group(&r, 3, M, 4096, qkv, AE_DT_BF16, 0);
        run_matmul_group(&r, 2, M, 4096, gu, AE_DT_BF16, 0);
    }
    // a small K (fewer chunks than warps), K not a multiple of 8 (no GEMV: gemm per product), an
    // empty product among others, x at an odd element offset (no GEMV)
    const int small[3] = {40, 7, 300};
    run_matmul_group(&r, 3, 2, 64, small, AE_DT_BF16, 0);
    run_matmul_group(&r, 3, 2, 100, small, AE_DT_BF16, 0);
    const int with0[3] = {33, 0, 65};
    run_matmul_group(&r, 3, 1, 256, with0, AE_DT_F32, 0);
    run_matmul_group(&r, 2, 4, 256, odd, AE_DT_BF16, 1);
}

// gate_up_silu: act (M, N) = silu(x·wgᵀ) ⊙ (x·wuᵀ) against the cpu's op on the same bf16 inputs
// (TOL_SWIGLU), and bit for bit against what it replaces on cuda: matmul_group into bf16 g, u
// then silu_mul (the fused GEMV must add the same products in the same order and round as the
// two ops do). act (or g, when act is g) is followed by 8 NaN-poisoned elements that must stay
// NaN. x at element offset xoff (odd: no GEMV, the op's two-op path).
static void run_gate_up_silu(ae_rng *r, int M, int K, int N, size_t xoff, int act_is_g) {
    const size_t guard = 8, ny = (size_t)M * N, nw = (size_t)N * K, nx = xoff + (size_t)M * K;
    float *x = ae_test_normal(r, nx, 1.0f, AE_DT_BF16);
    // g ~ N(0, 4): saturating
    float *wg = ae_test_normal(r, nw, 2.0f / sqrtf((float)K), AE_DT_BF16);
    float *wu = ae_test_normal(r, nw, 1.0f / sqrtf((float)K), AE_DT_BF16);
    float *gc = ae_test_floats(ny), *uc = ae_test_floats(ny), *ac = ae_test_floats(ny);
    g_cpu->gate_up_silu(g_cpu, ae_host_f32(ac), ae_host_f32(gc), ae_host_f32(uc),
                        ae_host_f32(x + xoff), ae_host_f32(wg), ae_host_f32(wu), M, K, N);
    ae_ptr dx = dnew_put(x, nx, AE_DT_BF16), dwg = dnew_put(wg, nw, AE_DT_BF16);
    ae_ptr dwu = dnew_put(wu, nw, AE_DT_BF16);
    ae_ptr dg = dnew(ny + guard, AE_DT_BF16), du = dnew(ny + guard, AE_DT_BF16);
    ae_ptr da = act_is_g ? dg : dnew(ny + guard, AE_DT_BF16);
    g_gpu->gate_up_silu(g_gpu, da, dg, du, ae_ptr_at(dx, xoff), dwg, dwu, M, K, N);
    float *ag = dget(da, ny + guard);
    expect_close(ag, ac, ny, TOL_SWIGLU, "gate_up_silu M=%d K=%d N=%d xoff=%zu%s", M, K, N, xoff,
                 act_is_g ? " act == g" : "");
    for (size_t j = ny; j < ny + guard; j++)
        if (!isnan(ag[j]))
            fail_msg("gate_up_silu M=%d K=%d N=%d: act[%zu] past its end = %g", M, K, N, j,
                     (double)ag[j]);
    ae_ptr g2 = dnew(ny, AE_DT_BF16), u2 = dnew(ny, AE_DT_BF16);
    ae_ptr ys[2] = {g2, u2}, ws[2] = {dwg, dwu};
    const int Ns[2] = {N, N};
    g_gpu->matmul_group(g_gpu, 2, ys, ae_ptr_at(dx, xoff), ws, Ns, M, K);
    g_gpu->silu_mul(g_gpu, g2, g2, u2, ny);
    float *a2 = dget(g2, ny);
    expect_exact(ag, a2, ny, "gate_up_silu M=%d K=%d N=%d xoff=%zu = matmul_group + silu_mul", M,
                 K, N, xoff);
    if (!act_is_g) dfree(da);
    dfree(dx), dfree(dwg), dfree(dwu), dfree(dg), dfree(du), dfree(g2), dfree(u2);
    free(x), free(wg), free(wu), free(gc), free(uc), free(ac), free(ag), free(a2);
}

static void test_gate_up_silu(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 467);
    // K picks the warps per tile of the GEMV (1 at 40, 2 at 264, 4 at 776, 8 at 1032: then one
    // block does the gate tile, then the up tile), none a multiple of 32; odd N; M = 17: the
    // two-op path (cuBLASLt)
    const int KN[][2] = {{40, 100}, {264, 37}, {776, 64}, {1032, 257}};
    const int Ms[] = {1, 2, 5, 8, 17};
    for (size_t k = 0; k < sizeof KN / sizeof *KN; k++)
        for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++)
            run_gate_up_silu(&r, Ms[m], KN[k][0], KN[k][1], 0, (int)(m & 1));
    // Qwen3-8B's MLP (4096 -> 2 x 12288); K not a multiple of 8 and x at an odd offset (no GEMV:
    // the two-op path inside the op); one row of one output
    for (int M = 1; M <= 8; M += 7) run_gate_up_silu(&r, M, 4096, 12288, 0, 1);
    run_gate_up_silu(&r, 3, 100, 45, 0, 0);
    run_gate_up_silu(&r, 4, 256, 99, 1, 1);
    run_gate_up_silu(&r, 1, 8, 1, 0, 0);
}

// =============================================================================================
// Elementwise: add (gate_mul and silu_mul: the double references of tests/test_ops.c on every
// backend; add too, kept here for the unaligned views below)

// add: y += x in place, and y = a + b into a third buffer of another dtype; the F32 results
// are one fp32 addition of identical values on both sides.
static void run_add(ae_rng *r, size_t n, ae_dtype ydt, ae_dtype xdt) {
    float *y = ae_test_normal(r, n, 2.0f, ydt), *x = ae_test_normal(r, n, 1.0f, xdt);
    float *yc = ae_test_floats_copy(y, n);
    g_cpu->add(g_cpu, ae_host_f32(yc), ae_host_f32(yc), ae_host_f32(x), n);
    ae_ptr dy = dnew_put(y, n, ydt), dx = dnew_put(x, n, xdt);
    ae_ptr dz = dnew(n, AE_DT_F32); // z = y + x, y and x left as they were
    g_gpu->add(g_gpu, dz, dy, dx, n);
    g_gpu->add(g_gpu, dy, dy, dx, n);
    float *yg = dget(dy, n), *zg = dget(dz, n);
    expect_close(yg, yc, n, ydt == AE_DT_F32 ? TOL_F32_ADD : TOL_BF16_OUT, "add n=%zu y %s += x %s",
                 n, dtn(ydt), dtn(xdt));
    for (size_t i = 0; i < n; i++) yc[i] = y[i] + x[i]; // one fp32 addition, kept in F32
    expect_close(zg, yc, n, TOL_F32_ADD, "add n=%zu z F32 = y %s + x %s", n, dtn(ydt), dtn(xdt));
    dfree(dy), dfree(dx), dfree(dz);
    free(y), free(x), free(yc), free(yg), free(zg);
}

// =============================================================================================
// Attention

typedef struct {
    int T, pos0, Hq, Hkv, dk, dv;
    int window, ring;
    int sinks;       // 1: per-head sinks, log(visible keys) + U(-2, 2), so they carry real mass
    int kpad, vpad;  // extra values per K / V storage row (k_stride = Hkv·dk + kpad)
    int absorbed;    // MLA absorbed: v is the first dv values of the same rows as k (Hkv = 1)
    float qscale;    // q ~ N(0, qscale²): larger is a peakier softmax
    float scale;     // 0: 1/sqrt(dk)
    int splits;      // > 0: AE_CUDA_MLA_SPLITS for the call (split-KV boundaries of kernels D, E)
} attn_case;

static void attn_case_name(const attn_case *c, char *buf, size_t cap) {
    char sp[32] = "";
    if (c->splits > 0) snprintf(sp, sizeof sp, " splits=%d", c->splits);
    snprintf(buf, cap, "T=%d pos0=%d Hq=%d Hkv=%d dk=%d dv=%d W=%d ring=%d%s%s%s%s%s", c->T,
             c->pos0, c->Hq, c->Hkv, c->dk, c->dv, c->window, c->ring, c->sinks ? " sinks" : "",
             c->kpad || c->vpad ? " padded" : "", c->absorbed ? " absorbed" : "",
             c->qscale > 1.0f ? " peaky" : "", sp);
}

// The rows' log-sum-exp (ae_attn_args.lse, log2 units): fails on a non-finite value (with the
// poisoned buffer: a row never written) and when max |cuda - cpu| / max(1, |cpu|) > tol.
static void expect_lse(const float *got, const float *ref, size_t n, double tol, const char *what) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            fail_msg("%s: lse [%zu] of %zu = %g, cpu %g (non-finite: a row never written)", what,
                     i, n, (double)got[i], (double)ref[i]);
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (d > worst) worst = d, wi = i;
    }
    printf("  %-78s lse max rel %.2e (tol %.0e)\n", what, worst, tol);
    fflush(stdout);
    if (!(worst <= tol))
        fail_msg("%s: lse [%zu] = %g, cpu %g: error %.3g > tolerance %.3g", what, wi,
                 (double)got[wi], (double)ref[wi], worst, tol);
}

// Whether kernel F (cuda_attention_wgmma.cu: Hopper wgmma) takes a case when asked to
// (AE_ATTN_WGMMA=1): dk = dv = 128 or dk = 192 / dv = 128, any window or ring, separate k and v.
static int attn_wgmma_shape(const attn_case *c) {
    return (c->dk == 128 || c->dk == 192) && c->dv == 128 && !c->absorbed &&
           c->Hq % c->Hkv == 0 && c->kpad % 8 == 0 && c->vpad % 8 == 0;
}

// K/V storage rows past the S positions a case holds (the never-written rest of a cache; none
// with a ring of at most S slots) set to NaN, which must not reach an output.   k, v: (rows,
// stride) each; v == k when K and V share their rows (absorbed MLA).
static void nan_unwritten_rows(float *k, float *v, int S, int rows, const ae_attn_args *a) {
    for (int row = S; row < rows; row++) {
        for (int i = 0; i < a->k_stride; i++) k[(size_t)row * a->k_stride + i] = NAN;
        if (v != k)
            for (int i = 0; i < a->v_stride; i++) v[(size_t)row * a->v_stride + i] = NAN;
    }
}

// A case's per-head sinks, log(visible keys) +- 2 (comparable to the keys' total weight), or NULL
// without sinks.   (Hq)
static float *case_sinks(ae_rng *r, const attn_case *c, int S) {
    if (!c->sinks) return NULL;
    int vis = c->window > 0 && c->window < S ? c->window : S;
    float *sinks = ae_test_floats((size_t)c->Hq);
    for (int h = 0; h < c->Hq; h++) sinks[h] = logf((float)vis) + 4.0f * ae_rng_uniform(r) - 2.0f;
    return sinks;
}

// One case on the cpu and on cuda with both the default dispatch and the reference kernel
// (AE_CUDA_ATTN=ref); shapes kernel F takes also with AE_ATTN_WGMMA=sync and =simple (kernel
// F's synchronous form with its two schedules on an sm_90 GPU of an sm_90a build, else the
// default choice; dk = 192: the unpipelined one both times), AE_ATTN_WGMMA=0 (kernel B) and, for
// contiguous keys, =ws (F's warp-specialised form: bit for bit the synchronous form's output and
// log-sum-exp), each with the rows' log-sum-exp (ae_attn_args.lse) compared too (TOL_LSE), and
// AE_ATTN_WGMMA=1 (F's default form) without it;
// absorbed MLA shapes of the tensor-core kernels (576/512, 288/256) also
// with each MLA kernel forced (AE_CUDA_MLA_KERNEL=old: kernel D; new64: kernel E with 64-key
// tiles; the default takes kernel E with 32-key tiles up to 64 rows). K/V storage: the S = pos0 + T positions (or, with a ring, the slots of
// the last `ring` positions); 5 rows past the last position (the rest of a KV cache, never
// written) and never-written ring slots hold NaN, which must not reach the output. Values
// between heads' rows (padding) are finite.
static void run_attention(ae_rng *r, const attn_case *c) {
    int T = c->T, S = c->pos0 + T, Hq = c->Hq, Hkv = c->Hkv, dk = c->dk, dv = c->dv;
    ae_attn_args a = ae_attn_dense(T, c->pos0, Hq, Hkv, dk, dv, c->window,
                                   c->scale > 0 ? c->scale : 1.0f / sqrtf((float)dk), ae_ptr_null());
    a.ring = c->ring;
    a.k_stride = Hkv * dk + c->kpad;
    a.v_stride = c->absorbed ? a.k_stride : Hkv * dv + c->vpad;
    int rows = c->ring > 0 ? c->ring : S + 5;
    size_t nq = (size_t)T * Hq * dk, no = (size_t)T * Hq * dv;
    size_t nk = (size_t)rows * a.k_stride, nv = (size_t)rows * a.v_stride;
    float *q = ae_test_normal(r, nq, c->qscale > 0 ? c->qscale : 1.0f, AE_DT_BF16);
    float *k = ae_test_normal(r, nk, 1.0f, AE_DT_BF16);
    float *v = c->absorbed ? k : ae_test_normal(r, nv, 1.0f, AE_DT_BF16);
    nan_unwritten_rows(k, v, S, rows, &a);
    float *sinks = case_sinks(r, c, S);
    char name[200];
    attn_case_name(c, name, sizeof name);
    // cpu
    const size_t nl = (size_t)T * Hq;
    float *oc = ae_test_floats(no), *lc = ae_test_floats(nl);
    ae_attn_args ac = a;
    ac.sinks = sinks ? ae_host_f32(sinks) : ae_ptr_null();
    ac.lse = ae_host_f32(lc);
    g_cpu->attention(g_cpu, &ac, ae_host_f32(oc), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    // cuda
    ae_ptr dq = dnew_put(q, nq, g_gpu->act_dtype), dk_ = dnew_put(k, nk, g_gpu->act_dtype);
    ae_ptr dv_ = c->absorbed ? dk_ : dnew_put(v, nv, g_gpu->act_dtype);
    ae_attn_args ag = a;
    ag.sinks = sinks ? dnew_put(sinks, (size_t)Hq, AE_DT_F32) : ae_ptr_null();
    int mla = c->absorbed && ((dk == 576 && dv == 512) || (dk == 288 && dv == 256));
    static const char *const mla_kernels[] = {"old", "new64"};
    char sp[16];
    snprintf(sp, sizeof sp, "%d", c->splits);
    if (c->splits > 0) setenv("AE_CUDA_MLA_SPLITS", sp, 1);
    // runs: default, ref, then the MLA kernels, or kernel F's synchronous form (AE_ATTN_WGMMA=
    // sync), its unpipelined schedule (=simple), kernel B (=0), F's default form without the
    // log-sum-exp (=1), and for contiguous keys F's warp-specialised form (=ws), which must give
    // the synchronous form's bits (output and log-sum-exp: the same arithmetic)
    static const char *const wgmma_env[] = {"sync", "simple", "0", "1", "ws"};
    static const char *const wgmma_names[] = {"wgmma", "wgmma-s", "flash", "wgmma-nolse", "wgmma-ws"};
    const int wg = attn_wgmma_shape(c);
    const int wg_runs = c->ring > 0 ? 4 : 5;
    float *o_sync = NULL, *l_sync = NULL; // the synchronous form's results (run 2)
    for (int run = 0; run < 2 + (mla ? 2 : wg ? wg_runs : 0); run++) {
        int ref = run == 1;
        const char *kern = run >= 2 && mla ? mla_kernels[run - 2] : NULL;
        const char *wenv = run >= 2 && wg ? wgmma_env[run - 2] : NULL;
        const int want_lse = wenv && run != 5;
        const char *label = ref ? "ref" : kern ? kern : wenv ? wgmma_names[run - 2] : "default";
        ae_ptr dout = dnew(no, g_gpu->act_dtype); // fresh: NaN-poisoned
        ae_ptr dlse = want_lse ? dnew(nl, AE_DT_F32) : ae_ptr_null();
        ae_attn_args ar = ag;
        ar.lse = dlse;
        if (ref) setenv("AE_CUDA_ATTN", "ref", 1);
        if (kern) setenv("AE_CUDA_MLA_KERNEL", kern, 1);
        if (wenv) setenv("AE_ATTN_WGMMA", wenv, 1);
        g_gpu->attention(g_gpu, &ar, dout, dq, dk_, dv_);
        if (ref) unsetenv("AE_CUDA_ATTN");
        if (kern) unsetenv("AE_CUDA_MLA_KERNEL");
        if (wenv) unsetenv("AE_ATTN_WGMMA");
        float *og = dget(dout, no);
        expect_close(og, oc, no, TOL_ATTN, "attention %-7s %s", label, name);
        float *lg = want_lse ? dget(dlse, nl) : NULL;
        if (want_lse) {
            char what[300];
            snprintf(what, sizeof what, "attention %-7s %s", label, name);
            expect_lse(lg, lc, nl, TOL_LSE, what);
            dfree(dlse);
        }
        if (wenv && run == 2) {
            o_sync = og, l_sync = lg;
            og = lg = NULL;
        }
        if (wenv && run == 6) { // bit for bit the synchronous form (both B off Hopper)
            size_t od = 0, ld = 0;
            for (size_t i = 0; i < no; i++) od += memcmp(&og[i], &o_sync[i], sizeof *og) != 0;
            for (size_t i = 0; i < nl; i++) ld += memcmp(&lg[i], &l_sync[i], sizeof *lg) != 0;
            if (od || ld)
                fail_msg("attention wgmma-ws %s: %zu of %zu outputs and %zu of %zu log-sum-exps "
                         "differ from the synchronous form's bits", name, od, no, ld, nl);
        }
        dfree(dout);
        free(og);
        free(lg);
    }
    free(o_sync);
    free(l_sync);
    if (c->splits > 0) unsetenv("AE_CUDA_MLA_SPLITS");
    dfree(dq), dfree(dk_);
    if (!c->absorbed) dfree(dv_);
    if (sinks) dfree(ag.sinks);
    free(q), free(k), free(oc), free(lc), free(sinks);
    if (!c->absorbed) free(v);
}

static void run_attention_cases(ae_rng *r, const attn_case *cases, size_t n) {
    for (size_t i = 0; i < n; i++) run_attention(r, &cases[i]);
}

// One-token decode over S = 1 .. 5000 cached positions (tile edges around 64/128/256).
static void test_attention_decode(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 601);
    const int S[] = {1, 2, 3, 16, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 2048, 4097, 5000};
    for (size_t i = 0; i < sizeof S / sizeof *S; i++) {
        attn_case c = {.T = 1, .pos0 = S[i] - 1, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128};
        run_attention(&r, &c);
    }
    const int S2[] = {1, 300, 5000};
    for (size_t i = 0; i < 3; i++) {
        attn_case c = {.T = 1, .pos0 = S2[i] - 1, .Hq = 32, .Hkv = 8, .dk = 64, .dv = 64};
        run_attention(&r, &c);
        c.sinks = 1;
        run_attention(&r, &c);
    }
}

// Kernel G (cuda_attention_decode.cu: T·G <= 64 packed rows, dk = dv in {64, 128}, the split
// merge folded into its launch) on its own, with AE_ATTN_DECODE=1 whatever the compiled default:
// the dispatcher must say it ran "decode" (ae_cuda_attn_last); out within TOL_ATTN of the cpu
// (the tolerance of every attention case: bf16 out, fp32 softmax; G keeps P in fp32, so its
// error is below kernel B's); three calls in a row (fresh NaN-poisoned outputs) give the same
// bits as the first — a ticket counter left non-zero by a call would make the next call's merge
// skip rows (NaN) or run early; with AE_ATTN_DECODE=0 kernel B runs again ("flash (B)") and is
// close too. dec_split: AE_ATTN_DEC_SPLIT for G's runs (T = 1 calls read it) or NULL; min_splits:
// the plan must have at least this many splits (the folded merge really ran).
static const char *attn_last_plan(void) {
#ifdef AE_HAVE_CUDA // (a build without CUDA skips in main, before any test)
    return ae_cuda_attn_last();
#else
    return "none";
#endif
}

static void expect_attn_kernel(const char *want, int min_splits, const char *what) {
    const char *plan = attn_last_plan();
    if (strncmp(plan, want, strlen(want)) != 0)
        fail_msg("%s: the dispatcher ran \"%s\", expected kernel \"%s\"", what, plan, want);
    int splits = 1;
    const char *sp = strstr(plan, "splits ");
    if (sp) splits = atoi(sp + 7);
    if (splits < min_splits)
        fail_msg("%s: plan \"%s\" has %d splits, expected at least %d", what, plan, splits,
                 min_splits);
}

// With AE_ATTN_DECODE unset: single-token calls of GQA groups wider than 4 run kernel B (its
// splits whole 64-key tiles, none empty: (splits − 1) · chunk < keys), the others kernel G; out
// within TOL_ATTN of the cpu's oc either way.
static void expect_default_decode(const ae_attn_args *ag, const attn_case *c, ae_ptr dq, ae_ptr dk,
                                  ae_ptr dv, const float *oc, size_t no, const char *name) {
    const int wide = c->T == 1 && c->Hq / c->Hkv > 4;
    char what[320];
    snprintf(what, sizeof what, "attention default %s", name);
    ae_ptr dout = dnew(no, g_gpu->act_dtype);
    g_gpu->attention(g_gpu, ag, dout, dq, dk, dv);
    expect_attn_kernel(wide ? "flash (B)" : "decode", 1, what);
    const char *plan = attn_last_plan(), *sp = strstr(plan, "splits "), *kp = strstr(plan, "keys ");
    if (wide && sp && kp) {
        const long n = atol(sp + 7), keys = atol(kp + 5), chunk = ((keys + n - 1) / n + 63) / 64 * 64;
        if (n > 1 && (n - 1) * chunk >= keys)
            fail_msg("%s: plan \"%s\" leaves its last split empty", what, plan);
    }
    float *og = dget(dout, no);
    expect_close(og, oc, no, TOL_ATTN, "%s", what);
    free(og);
    dfree(dout);
}

static void run_decode_kernel(ae_rng *r, const attn_case *c, const char *dec_split, int min_splits) {
    int T = c->T, S = c->pos0 + T, Hq = c->Hq, Hkv = c->Hkv, dk = c->dk, dv = c->dv;
    ae_attn_args a = ae_attn_dense(T, c->pos0, Hq, Hkv, dk, dv, c->window, 1.0f / sqrtf((float)dk),
                                   ae_ptr_null());
    a.ring = c->ring;
    int rows = c->ring > 0 ? c->ring : S + 5;
    size_t nq = (size_t)T * Hq * dk, no = (size_t)T * Hq * dv;
    size_t nk = (size_t)rows * a.k_stride, nv = (size_t)rows * a.v_stride;
    float *q = ae_test_normal(r, nq, 1.0f, AE_DT_BF16);
    float *k = ae_test_normal(r, nk, 1.0f, AE_DT_BF16);
    float *v = ae_test_normal(r, nv, 1.0f, AE_DT_BF16);
    nan_unwritten_rows(k, v, S, rows, &a);
    float *sinks = case_sinks(r, c, S);
    char name[200];
    attn_case_name(c, name, sizeof name);
    float *oc = ae_test_floats(no);
    ae_attn_args ac = a;
    ac.sinks = sinks ? ae_host_f32(sinks) : ae_ptr_null();
    g_cpu->attention(g_cpu, &ac, ae_host_f32(oc), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    ae_ptr dq = dnew_put(q, nq, g_gpu->act_dtype), dk_ = dnew_put(k, nk, g_gpu->act_dtype);
    ae_ptr dv_ = dnew_put(v, nv, g_gpu->act_dtype);
    ae_attn_args ag = a;
    ag.sinks = sinks ? dnew_put(sinks, (size_t)Hq, AE_DT_F32) : ae_ptr_null();
    char what[320];
    float *first = NULL;
    setenv("AE_ATTN_DECODE", "1", 1);
    if (dec_split) setenv("AE_ATTN_DEC_SPLIT", dec_split, 1);
    for (int call = 0; call < 3; call++) {
        ae_ptr dout = dnew(no, g_gpu->act_dtype); // fresh: NaN-poisoned
        g_gpu->attention(g_gpu, &ag, dout, dq, dk_, dv_);
        snprintf(what, sizeof what, "attention decode  %s%s%s", name, dec_split ? " split=" : "",
                 dec_split ? dec_split : "");
        expect_attn_kernel("decode", min_splits, what);
        float *og = dget(dout, no);
        if (call == 0) {
            printf("  %s: %s\n", what, attn_last_plan());
            expect_close(og, oc, no, TOL_ATTN, "%s", what);
            first = og;
        } else {
            expect_exact(og, first, no, "%s: call %d == call 1", what, call + 1);
            free(og);
        }
        dfree(dout);
    }
    if (dec_split) unsetenv("AE_ATTN_DEC_SPLIT");
    setenv("AE_ATTN_DECODE", "0", 1); // the switch back to kernel B
    ae_ptr dout = dnew(no, g_gpu->act_dtype);
    g_gpu->attention(g_gpu, &ag, dout, dq, dk_, dv_);
    snprintf(what, sizeof what, "attention flash   %s (AE_ATTN_DECODE=0)", name);
    expect_attn_kernel("flash (B)", 1, what);
    float *ob = dget(dout, no);
    expect_close(ob, oc, no, TOL_ATTN, "%s", what);
    unsetenv("AE_ATTN_DECODE");
    if (!dec_split) expect_default_decode(&ag, c, dq, dk_, dv_, oc, no, name);
    dfree(dout), dfree(dq), dfree(dk_), dfree(dv_);
    if (sinks) dfree(ag.sinks);
    free(ob), free(first), free(q), free(k), free(v), free(oc), free(sinks);
}

// T = 1 and 2 tokens; G = 1, 4, 5 (padding rows), 8, 16 (two head groups); 1 .. 33000 keys;
// each case also with the default choice (expect_default_decode: kernel B for T = 1 and G > 4);
// windows below and above the key count; rings past their wrap; sinks; d 64 and 128. Cases of
// >= 1000 keys must split (the merge of the launch's last block) under the default heuristic;
// forced splits: one key per split (7 keys, asked 64), 7 uneven splits, unsplit at 4096 keys,
// and 1024 splits at 33000 keys.
static void test_attention_decode_kernel(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 611);
    attn_case cases[] = {
        {.T = 1, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 128, .dv = 128},
        {.T = 1, .pos0 = 6, .Hq = 8, .Hkv = 2, .dk = 64, .dv = 64, .sinks = 1},
        {.T = 1, .pos0 = 63, .Hq = 16, .Hkv = 2, .dk = 128, .dv = 128},
        {.T = 1, .pos0 = 999, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .sinks = 1},
        {.T = 1, .pos0 = 4095, .Hq = 16, .Hkv = 2, .dk = 64, .dv = 64},
        {.T = 1, .pos0 = 32999, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128},
        {.T = 1, .pos0 = 32999, .Hq = 2, .Hkv = 2, .dk = 64, .dv = 64, .window = 4096, .sinks = 1},
        {.T = 1, .pos0 = 999, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 2000},
        {.T = 1, .pos0 = 4999, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 1024, .ring = 1024, .sinks = 1},
        {.T = 1, .pos0 = 100, .Hq = 8, .Hkv = 1, .dk = 64, .dv = 64, .window = 7, .ring = 7},
        {.T = 1, .pos0 = 299, .Hq = 32, .Hkv = 2, .dk = 128, .dv = 128},
        {.T = 1, .pos0 = 4095, .Hq = 32, .Hkv = 4, .dk = 128, .dv = 128}, // Qwen3-30B-A3B's heads
        {.T = 1, .pos0 = 1299, .Hq = 10, .Hkv = 2, .dk = 64, .dv = 64, .sinks = 1},
        {.T = 2, .pos0 = 0, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128},
        {.T = 2, .pos0 = 5, .Hq = 16, .Hkv = 2, .dk = 64, .dv = 64, .sinks = 1},
        {.T = 2, .pos0 = 998, .Hq = 4, .Hkv = 4, .dk = 128, .dv = 128},
        {.T = 2, .pos0 = 4094, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 512, .ring = 600},
        {.T = 2, .pos0 = 32998, .Hq = 16, .Hkv = 2, .dk = 128, .dv = 128, .sinks = 1},
        {.T = 16, .pos0 = 200, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 49, .ring = 64, .sinks = 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const attn_case *c = &cases[i];
        const int S = c->pos0 + c->T;
        const int keys = c->window > 0 && c->window < S ? c->window : S;
        run_decode_kernel(&r, c, NULL, keys >= 1000 ? 2 : 1);
    }
    attn_case one_key = {.T = 1, .pos0 = 6, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .sinks = 1};
    run_decode_kernel(&r, &one_key, "64", 7);
    attn_case uneven = {.T = 1, .pos0 = 999, .Hq = 8, .Hkv = 1, .dk = 64, .dv = 64};
    run_decode_kernel(&r, &uneven, "7", 7);
    attn_case unsplit = {.T = 1, .pos0 = 4095, .Hq = 32, .Hkv = 8, .dk = 128, .dv = 128};
    run_decode_kernel(&r, &unsplit, "1", 1);
    attn_case many = {.T = 1, .pos0 = 32999, .Hq = 4, .Hkv = 1, .dk = 128, .dv = 128, .sinks = 1};
    run_decode_kernel(&r, &many, "1024", 1024);
}

// Prefill T in {1, 17, 64, 65, 200, 1000} after pos0 in {0, 37} cached positions.
static void test_attention_prefill(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 602);
    const int Ts[] = {1, 17, 64, 65, 200, 1000}, P[] = {0, 37};
    for (size_t i = 0; i < sizeof Ts / sizeof *Ts; i++)
        for (int p = 0; p < 2; p++) {
            attn_case c = {.T = Ts[i], .pos0 = P[p], .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128};
            run_attention(&r, &c);
        }
    // short query chunks over a long context (split-KV), with sinks
    attn_case longctx[] = {
        {.T = 17, .pos0 = 4000, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .sinks = 1},
        {.T = 2, .pos0 = 3000, .Hq = 4, .Hkv = 4, .dk = 64, .dv = 64},
    };
    run_attention_cases(&r, longctx, sizeof longctx / sizeof *longctx);
    attn_case peaky = {.T = 64, .pos0 = 37, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128, .qscale = 4.0f};
    run_attention(&r, &peaky);
    attn_case sinks[] = {
        {.T = 17, .pos0 = 0, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .sinks = 1},
        {.T = 200, .pos0 = 37, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .sinks = 1},
        {.T = 64, .pos0 = 0, .Hq = 8, .Hkv = 8, .dk = 128, .dv = 128, .sinks = 1},
    };
    run_attention_cases(&r, sinks, sizeof sinks / sizeof *sinks);
}

// GQA groups G = Hq/Hkv in {1, 2, 4, 8} with Hkv in {1, 2, 4}; head dims 32, 64, 128 and the odd
// 24, 40; dk != dv.
static void test_attention_heads(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 603);
    const int G[] = {1, 2, 4, 8}, Hkv[] = {1, 2, 4};
    for (int g = 0; g < 4; g++)
        for (int h = 0; h < 3; h++) {
            attn_case c = {.T = 33, .pos0 = 5, .Hq = G[g] * Hkv[h], .Hkv = Hkv[h], .dk = 64, .dv = 64};
            run_attention(&r, &c);
            attn_case d = {.T = 1, .pos0 = 299, .Hq = G[g] * Hkv[h], .Hkv = Hkv[h], .dk = 128, .dv = 128};
            run_attention(&r, &d);
        }
    const int hd[] = {32, 64, 128, 24, 40};
    for (int i = 0; i < 5; i++) {
        attn_case c = {.T = 50, .pos0 = 10, .Hq = 4, .Hkv = 2, .dk = hd[i], .dv = hd[i], .sinks = i & 1};
        run_attention(&r, &c);
        attn_case d = {.T = 1, .pos0 = 776, .Hq = 4, .Hkv = 2, .dk = hd[i], .dv = hd[i]};
        run_attention(&r, &d);
    }
    attn_case mixed[] = {
        {.T = 40, .pos0 = 3, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 32},
        {.T = 1, .pos0 = 500, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 32},
        {.T = 40, .pos0 = 3, .Hq = 4, .Hkv = 2, .dk = 24, .dv = 40},
        // MLA materialised: dk = dn + dr = 192, dv = 128, Hq = Hkv (DeepSeek dims)
        {.T = 1, .pos0 = 50, .Hq = 16, .Hkv = 16, .dk = 192, .dv = 128},
        {.T = 100, .pos0 = 0, .Hq = 16, .Hkv = 16, .dk = 192, .dv = 128},
        {.T = 257, .pos0 = 50, .Hq = 16, .Hkv = 16, .dk = 192, .dv = 128},
        {.T = 1100, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 192, .dv = 128}, // >= 1024 packed rows
        // the small teachers' MLA students (head_dim 32 and 64)
        {.T = 96, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 32, .dv = 32},
        {.T = 256, .pos0 = 0, .Hq = 6, .Hkv = 6, .dk = 64, .dv = 64},
    };
    run_attention_cases(&r, mixed, sizeof mixed / sizeof *mixed);
}

// Shapes of kernel F (Hopper wgmma, dk = dv = 128; run_attention runs both its schedules,
// AE_ATTN_WGMMA=1 and =simple, next to kernel B with =0): packed row counts T·G that are not multiples of its 128-row tiles
// (nor of 64), GQA groups G = 1, 2, 4, 8, key counts around its 128-key tiles, pos0 = 0 (every
// block has diagonal tiles) and pos0 >> T (chunks over a long cached prefix: nearly every tile
// unmasked), sinks, a peaky softmax, padded K/V rows, a multi-block prefill of the 8B teacher's
// heads (32 q / 8 kv).
static void test_attention_wgmma(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 607);
    attn_case wg[] = {
        {.T = 1, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 128, .dv = 128},
        {.T = 31, .pos0 = 0, .Hq = 4, .Hkv = 1, .dk = 128, .dv = 128},        // G = 4
        {.T = 129, .pos0 = 0, .Hq = 2, .Hkv = 2, .dk = 128, .dv = 128},       // G = 1
        {.T = 255, .pos0 = 0, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128},       // G = 2
        {.T = 97, .pos0 = 0, .Hq = 16, .Hkv = 2, .dk = 128, .dv = 128},       // G = 8
        {.T = 300, .pos0 = 1, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .sinks = 1},
        {.T = 77, .pos0 = 3000, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128},     // long prefix
        {.T = 200, .pos0 = 127, .Hq = 4, .Hkv = 1, .dk = 128, .dv = 128, .sinks = 1},
        {.T = 130, .pos0 = 129, .Hq = 2, .Hkv = 1, .dk = 128, .dv = 128, .qscale = 4.0f},
        {.T = 150, .pos0 = 20, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128, .kpad = 8, .vpad = 24},
        {.T = 700, .pos0 = 0, .Hq = 32, .Hkv = 8, .dk = 128, .dv = 128},      // 8B teacher heads
        {.T = 2049, .pos0 = 0, .Hq = 2, .Hkv = 1, .dk = 128, .dv = 128},      // 32 row tiles
    };
    run_attention_cases(&r, wg, sizeof wg / sizeof *wg);
}

// Kernel F with sliding windows (run_attention: AE_ATTN_WGMMA=1 and =simple with and without
// lse, against the CPU reference and kernel B): window < T and > T, windows that are not a
// multiple of its 128-key tiles (its tiles then start at lo(first row), unaligned), a window of
// 1 (every row its own key only: both mask edges in one tile), pos0 > 0 (chunks after a cached
// prefix, some blocks with no diagonal tile but a window edge), GQA groups 1, 4, 8, sinks, the
// GateSWA students' W = 1024 over a multi-block prefill, and ring buffers (ring >= window + T
// slots, as attn_gateswa.c keeps them).
static void test_attention_wgmma_window(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 608);
    attn_case win[] = {
        {.T = 300, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 128, .dv = 128, .window = 128},  // G = 1
        {.T = 500, .pos0 = 0, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 200},  // G = 4
        {.T = 257, .pos0 = 37, .Hq = 16, .Hkv = 2, .dk = 128, .dv = 128, .window = 77}, // G = 8
        {.T = 90, .pos0 = 11, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 1000}, // W > S
        {.T = 130, .pos0 = 5, .Hq = 4, .Hkv = 1, .dk = 128, .dv = 128, .window = 1},    // itself
        {.T = 400, .pos0 = 2500, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 300,
         .sinks = 1}, // a chunk far past the window's start
        {.T = 1, .pos0 = 999, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 129},
        {.T = 700, .pos0 = 100, .Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .window = 129,
         .sinks = 1, .qscale = 3.0f},
        {.T = 2100, .pos0 = 0, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128, .window = 1024,
         .sinks = 1}, // GateSWA, 33 row tiles
        {.T = 64, .pos0 = 500, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 100,
         .ring = 200, .sinks = 1},
        {.T = 300, .pos0 = 1000, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128, .window = 256,
         .ring = 600, .kpad = 8},
    };
    run_attention_cases(&r, win, sizeof win / sizeof *win);
}

// Kernel F at dk = 192, dv = 128 (the MLA student's materialised attention; its unpipelined
// schedule, Q and K tiles of three 64-column halves): GQA-free Hq = Hkv as the student runs it and
// grouped heads, packed rows not a multiple of 128, pos0 > 0, sinks, a window, padded K/V rows,
// a multi-block prefill.
static void test_attention_wgmma_dk192(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 609);
    const float sc = 1.0f / sqrtf(192.0f);
    attn_case c192[] = {
        {.T = 1, .pos0 = 0, .Hq = 2, .Hkv = 2, .dk = 192, .dv = 128, .scale = sc},
        {.T = 200, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 192, .dv = 128, .scale = sc},
        {.T = 131, .pos0 = 300, .Hq = 8, .Hkv = 2, .dk = 192, .dv = 128, .sinks = 1},
        {.T = 333, .pos0 = 7, .Hq = 4, .Hkv = 4, .dk = 192, .dv = 128, .window = 150},
        {.T = 150, .pos0 = 20, .Hq = 4, .Hkv = 2, .dk = 192, .dv = 128, .kpad = 16, .vpad = 8,
         .qscale = 3.0f},
        {.T = 1500, .pos0 = 0, .Hq = 4, .Hkv = 4, .dk = 192, .dv = 128, .scale = sc},
    };
    run_attention_cases(&r, c192, sizeof c192 / sizeof *c192);
}

// Sliding windows (window < T and window > T), ring buffers (decode past the ring size, and
// T > 1 on a ring larger than the window), and the linear staging buffer of a ring prefill
// (attn_gateswa.c: L = min(p0, W-1) cached positions then C new ones, window W, pos0 = L).
static void test_attention_window_ring(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 604);
    attn_case win[] = {
        {.T = 200, .pos0 = 0, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 64},
        {.T = 65, .pos0 = 37, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 16},
        {.T = 17, .pos0 = 37, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 100}, // W > T
        {.T = 300, .pos0 = 37, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 1024}, // W > S
        {.T = 1000, .pos0 = 0, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 128, .sinks = 1},
        {.T = 1, .pos0 = 999, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 128},
        {.T = 5, .pos0 = 3, .Hq = 2, .Hkv = 1, .dk = 64, .dv = 64, .window = 1}, // itself only
        {.T = 64, .pos0 = 0, .Hq = 4, .Hkv = 2, .dk = 32, .dv = 32, .window = 7, .sinks = 1},
    };
    run_attention_cases(&r, win, sizeof win / sizeof *win);
    // ring = W, one-token decode: before the ring fills, at the wrap, and long after
    const int P[] = {0, 10, 62, 63, 64, 65, 100, 1000, 4999};
    for (size_t i = 0; i < sizeof P / sizeof *P; i++) {
        attn_case c = {.T = 1, .pos0 = P[i], .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 64,
                       .ring = 64, .sinks = (int)(i & 1)};
        run_attention(&r, &c);
    }
    attn_case ring[] = {
        {.T = 1, .pos0 = 2000, .Hq = 8, .Hkv = 2, .dk = 64, .dv = 64, .window = 1024, .ring = 1024},
        {.T = 1, .pos0 = 100, .Hq = 4, .Hkv = 1, .dk = 64, .dv = 64, .window = 7, .ring = 7, .sinks = 1},
        {.T = 1, .pos0 = 333, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 64, .ring = 100},
        {.T = 4, .pos0 = 30, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 8, .ring = 11},
        {.T = 16, .pos0 = 200, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128, .window = 49, .ring = 64, .sinks = 1},
        {.T = 16, .pos0 = 3000, .Hq = 8, .Hkv = 2, .dk = 64, .dv = 64, .window = 1000, .ring = 1024},
    };
    run_attention_cases(&r, ring, sizeof ring / sizeof *ring);
    // the ring-prefill staging buffer: C new queries after L staged positions, window W
    attn_case staged[] = {
        {.T = 100, .pos0 = 63, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 64, .sinks = 1},
        {.T = 30, .pos0 = 20, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .window = 64},
        {.T = 512, .pos0 = 63, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .window = 64},
        {.T = 512, .pos0 = 1023, .Hq = 4, .Hkv = 2, .dk = 128, .dv = 128, .window = 1024, .sinks = 1},
    };
    run_attention_cases(&r, staged, sizeof staged / sizeof *staged);
}

// K/V rows wider than Hkv·d (an even padding here; odd strides are in test_unaligned_views),
// and MLA's absorbed decode: Hkv = 1, k = v = the latent rows [c (R) | kr (dr)], dv = R.
static void test_attention_strided_absorbed(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 605);
    attn_case pad[] = {
        {.T = 50, .pos0 = 7, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .kpad = 24, .vpad = 8},
        {.T = 1, .pos0 = 700, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .kpad = 64, .vpad = 16, .sinks = 1},
        {.T = 1, .pos0 = 100, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .kpad = 8, .vpad = 8, .window = 64, .ring = 64},
        {.T = 200, .pos0 = 0, .Hq = 4, .Hkv = 1, .dk = 64, .dv = 32, .kpad = 32, .vpad = 96, .window = 50},
    };
    run_attention_cases(&r, pad, sizeof pad / sizeof *pad);
    // DeepSeek dims: R = 512, dr = 64: dk = 576, dv = 512, scale 1/sqrt(dn + dr) = 1/sqrt(192)
    const int Hq[] = {16, 32}, S[] = {1, 100, 3000};
    for (int h = 0; h < 2; h++)
        for (int T = 1; T <= 2; T++)
            for (int s = 0; s < 3; s++) {
                if (S[s] < T) continue;
                attn_case c = {.T = T, .pos0 = S[s] - T, .Hq = Hq[h], .Hkv = 1, .dk = 576, .dv = 512,
                               .absorbed = 1, .scale = 1.0f / sqrtf(192.0f)};
                run_attention(&r, &c);
            }
    // the decode kernel E (T·Hq <= 64 rows; more rows fall back to kernel D): T 1..4, Hq 16/32/
    // 64, key counts at and around its 32/64-key tiles and Qwen3-8B's decode positions
    const int He[] = {16, 32, 64}, Se[] = {1, 31, 33, 4095};
    for (int h = 0; h < 3; h++)
        for (int T = 1; T <= 4; T++)
            for (int s = 0; s < 4; s++) {
                if (Se[s] < T || (T * He[h] > 64 && s != 2)) continue;
                attn_case c = {.T = T, .pos0 = Se[s] - T, .Hq = He[h], .Hkv = 1, .dk = 576,
                               .dv = 512, .absorbed = 1, .scale = 1.0f / sqrtf(128.0f)};
                run_attention(&r, &c);
            }
    // split-KV boundaries: forced split counts (not dividing the tiles; more splits than tiles:
    // empty splits), odd key counts, 24 rows (a half-padded second row group), a peaky softmax
    attn_case splits[] = {
        {.T = 1, .pos0 = 1000, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 3},
        {.T = 1, .pos0 = 1000, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 7},
        {.T = 1, .pos0 = 100, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 9},
        {.T = 1, .pos0 = 63, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 1},
        {.T = 2, .pos0 = 2046, .Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 31},
        {.T = 3, .pos0 = 776, .Hq = 8, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1},
        {.T = 1, .pos0 = 5000, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .qscale = 4.0f},
        {.T = 1, .pos0 = 3000, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .sinks = 1},
        {.T = 2, .pos0 = 3000, .Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1,
         .window = 1000, .ring = 1024},
        {.T = 1, .pos0 = 3000, .Hq = 16, .Hkv = 1, .dk = 288, .dv = 256, .absorbed = 1, .splits = 5},
        {.T = 4, .pos0 = 600, .Hq = 16, .Hkv = 1, .dk = 288, .dv = 256, .absorbed = 1, .sinks = 1},
        // Qwen3-8B's 32K decode: 32768 keys, the default split count (~130 splits of 8 tiles)
        {.T = 1, .pos0 = 32767, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1},
        // its split shape at a smaller size: 8 tiles per split over 2 splits and a remainder
        {.T = 1, .pos0 = 600, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 2},
    };
    run_attention_cases(&r, splits, sizeof splits / sizeof *splits);
    // batch-1 decode shapes of kernel E (the default up to 64 rows; D and E64 alongside): a last
    // 32-key tile of 1 key (Qwen3-8B's 4K and 1K decode: 4097 and 1025 keys, default splits), a
    // peaky softmax there, forced splits of about one tile, more splits than tiles at 16 rows
    // (RG = 1: empty splits), 20 and 24 rows (a padded second row group and padded softmax
    // rows), 48 rows (two row tiles, the second half padding) over a window, the ring, and
    // 288/256. Each against the cpu within TOL_ATTN (1e-2: bf16 P and output, as every
    // attention kernel).
    attn_case dec[] = {
        {.T = 1, .pos0 = 4096, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1},
        {.T = 1, .pos0 = 1024, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1},
        {.T = 1, .pos0 = 4096, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .qscale = 4.0f},
        {.T = 1, .pos0 = 95, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 3},
        {.T = 1, .pos0 = 200, .Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 40},
        {.T = 1, .pos0 = 2000, .Hq = 20, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .sinks = 1},
        {.T = 1, .pos0 = 777, .Hq = 24, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .splits = 5},
        {.T = 3, .pos0 = 1500, .Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1, .window = 700},
        {.T = 1, .pos0 = 5000, .Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .absorbed = 1,
         .window = 1024, .ring = 1024},
        {.T = 1, .pos0 = 4096, .Hq = 32, .Hkv = 1, .dk = 288, .dv = 256, .absorbed = 1},
        {.T = 1, .pos0 = 70, .Hq = 8, .Hkv = 1, .dk = 288, .dv = 256, .absorbed = 1, .splits = 4},
    };
    run_attention_cases(&r, dec, sizeof dec / sizeof *dec);
    // many heads (DeepSeek-V3: 128)
    const int Hbig[] = {64, 128};
    for (int h = 0; h < 2; h++) {
        attn_case c = {.T = 1, .pos0 = 1999, .Hq = Hbig[h], .Hkv = 1, .dk = 576, .dv = 512,
                       .absorbed = 1, .scale = 1.0f / sqrtf(192.0f)};
        run_attention(&r, &c);
    }
    // the MLA students of the head_dim 64 teachers: R = 256, dr = 32 (dk = 288, dv = 256)
    const int Hs[] = {4, 6, 16};
    for (int h = 0; h < 3; h++)
        for (int T = 1; T <= 2; T++)
            for (int s = 0; s < 3; s++) {
                if (S[s] < T) continue;
                attn_case c = {.T = T, .pos0 = S[s] - T, .Hq = Hs[h], .Hkv = 1, .dk = 288, .dv = 256,
                               .absorbed = 1, .scale = 1.0f / sqrtf(64.0f)};
                run_attention(&r, &c);
            }
    // small: R = 32, dr = 8; and the qwen3-micro MLA student (R = 128, dr = 16, 4 heads)
    const int Ts[] = {1, 2, 7}, S2[] = {1, 50, 300};
    for (int t = 0; t < 3; t++)
        for (int s = 0; s < 3; s++) {
            if (S2[s] < Ts[t]) continue;
            attn_case c = {.T = Ts[t], .pos0 = S2[s] - Ts[t], .Hq = 4, .Hkv = 1, .dk = 40, .dv = 32,
                           .absorbed = 1, .scale = 1.0f / sqrtf(16.0f)};
            run_attention(&r, &c);
        }
    const int S3[] = {1, 96, 255};
    for (int s = 0; s < 3; s++) {
        attn_case c = {.T = 1, .pos0 = S3[s] - 1, .Hq = 4, .Hkv = 1, .dk = 144, .dv = 128,
                       .absorbed = 1, .scale = 1.0f / sqrtf(32.0f)};
        run_attention(&r, &c);
    }
}

// =============================================================================================
// MoE

// Router logits without near-ties: row t is 0.08·π_t(e) + U(-0.02, 0.02) for a random
// permutation π_t (neighbouring ranks differ by >= 0.04 in logit, 4% in probability), plus a
// per-row offset (softmax must subtract the max).
static float *route_logits(ae_rng *r, int T, int E) {
    float *z = ae_test_floats((size_t)T * E);
    int *perm = malloc(sizeof(int) * (size_t)E);
    assert_non_null(perm);
    for (int t = 0; t < T; t++) {
        rand_perm(r, perm, E);
        float off = 5.0f * ae_rng_normal(r);
        for (int e = 0; e < E; e++)
            z[(size_t)t * E + e] = off + 0.08f * (float)perm[e] + 0.04f * (ae_rng_uniform(r) - 0.5f);
    }
    free(perm);
    return z;
}

// moe_route: idx must match exactly, except in a slot where the cpu probabilities of the two
// experts involved are within 1e-6 relative (a near-tie that fp32 rounding may order either
// way; route_logits makes none, so the count printed should be 0); wts and the probabilities
// (the training variant's output) within TOL_ROUTE_W.
static void run_moe_route(ae_rng *r, int T, int E, int K, int renorm) {
    float *z = route_logits(r, T, E);
    int32_t *ic = inew((size_t)T * K);
    float *wc = ae_test_floats((size_t)T * K), *pc = ae_test_floats((size_t)T * E);
    g_cpu->moe_route(g_cpu, ae_host_i32(ic), ae_host_f32(wc), ae_host_f32(pc), ae_host_f32(z), T,
                     E, K, renorm);
    ae_ptr dz = dnew_put(z, (size_t)T * E, AE_DT_F32), dp = dnew((size_t)T * E, AE_DT_F32);
    ae_ptr di = dnew((size_t)T * K, AE_DT_I32), dw = dnew((size_t)T * K, AE_DT_F32);
    g_gpu->moe_route(g_gpu, di, dw, dp, dz, T, E, K, renorm);
    int32_t *ig = dget_i32(di, (size_t)T * K);
    float *wg = dget(dw, (size_t)T * K), *pg = dget(dp, (size_t)T * E);
    float *p = ae_test_floats((size_t)E);
    int exempt = 0;
    for (int t = 0; t < T; t++) {
        memcpy(p, z + (size_t)t * E, sizeof(float) * (size_t)E);
        ae_moe_softmax(p, E);
        for (int j = 0; j < K; j++) {
            int a = ic[t * K + j], b = ig[t * K + j];
            if (a == b) continue;
            if (b < 0 || b >= E)
                fail_msg("moe_route T=%d E=%d K=%d: token %d slot %d: expert %d out of range", T, E,
                         K, t, j, b);
            if (fabsf(p[a] - p[b]) <= 1e-6f * p[a]) {
                exempt++;
                continue;
            }
            fail_msg("moe_route T=%d E=%d K=%d renorm=%d: token %d slot %d is expert %d (p %.7g), "
                     "cpu %d (p %.7g)", T, E, K, renorm, t, j, b, (double)p[b], a, (double)p[a]);
        }
    }
    printf("  moe_route T=%d E=%d K=%d renorm=%d: idx exact (%d near-tie slots exempted)\n", T, E,
           K, renorm, exempt);
    expect_close(wg, wc, (size_t)T * K, TOL_ROUTE_W, "moe_route T=%d E=%d K=%d renorm=%d: wts", T,
                 E, K, renorm);
    expect_close(pg, pc, (size_t)T * E, TOL_ROUTE_W, "moe_route T=%d E=%d K=%d renorm=%d: probs",
                 T, E, K, renorm);
    dfree(dz), dfree(di), dfree(dw), dfree(dp);
    free(z), free(ic), free(wc), free(pc), free(ig), free(wg), free(pg), free(p);
}

static void test_moe_route(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 701);
    const int Ts[] = {1, 7, 300, 4096};
    for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++)
        for (int renorm = 0; renorm < 2; renorm++) {
            run_moe_route(&r, Ts[t], 8, 2, renorm);
            run_moe_route(&r, Ts[t], 128, 8, renorm);
        }
    run_moe_route(&r, 33, 60, 4, 1);
    run_moe_route(&r, 5, 8, 8, 1); // K = E
}

// moe_ffn on given routing (idx/wts built here: distinct experts per token, positive weights);
// `hot` sends every token to experts 3 and 5 (one large batch per expert, the others idle).
static void run_moe_ffn(ae_rng *r, int T, int E, int K, int D, int Im, int hot) {
    size_t ngu = (size_t)E * Im * D;
    float *x = ae_test_normal(r, (size_t)T * D, 1.0f, AE_DT_BF16);
    float *wg = ae_test_normal(r, ngu, 1.0f / sqrtf((float)D), AE_DT_BF16);
    float *wu = ae_test_normal(r, ngu, 1.0f / sqrtf((float)D), AE_DT_BF16);
    float *wd = ae_test_normal(r, ngu, 1.0f / sqrtf((float)Im), AE_DT_BF16);
    int32_t *idx = inew((size_t)T * K);
    float *wts = ae_test_floats((size_t)T * K);
    int *perm = malloc(sizeof(int) * (size_t)E);
    assert_non_null(perm);
    for (int t = 0; t < T; t++) {
        rand_perm(r, perm, E);
        if (hot) perm[0] = 3 + 2 * (t & 1), perm[1] = 8 - perm[0]; // {3, 5} or {5, 3}
        float s = 0;
        for (int j = 0; j < K; j++) {
            idx[t * K + j] = perm[j];
            s += (wts[t * K + j] = 0.05f + ae_rng_uniform(r));
        }
        for (int j = 0; j < K; j++) wts[t * K + j] /= s;
    }
    float *yc = ae_test_floats((size_t)T * D);
    g_cpu->moe_ffn(g_cpu, ae_host_f32(yc), ae_host_f32(x), ae_host_i32(idx), ae_host_f32(wts),
                   ae_host_f32(wg), ae_host_f32(wu), ae_host_f32(wd), T, D, Im, E, K);
    ae_dtype wt = g_gpu->weight_dtype, at = g_gpu->act_dtype;
    ae_ptr dx = dnew_put(x, (size_t)T * D, at), dg = dnew_put(wg, ngu, wt);
    ae_ptr du = dnew_put(wu, ngu, wt), dd = dnew_put(wd, ngu, wt);
    ae_ptr di = dnew_put_i32(idx, (size_t)T * K), dw = dnew_put(wts, (size_t)T * K, AE_DT_F32);
    ae_ptr dy = dnew((size_t)T * D, at);
    g_gpu->moe_ffn(g_gpu, dy, dx, di, dw, dg, du, dd, T, D, Im, E, K);
    float *yg = dget(dy, (size_t)T * D);
    expect_close(yg, yc, (size_t)T * D, TOL_MOE, "moe_ffn T=%d E=%d K=%d D=%d Im=%d%s", T, E, K, D,
                 Im, hot ? " (all tokens on experts 3, 5)" : "");
    dfree(dx), dfree(dg), dfree(du), dfree(dd), dfree(di), dfree(dw), dfree(dy);
    free(x), free(wg), free(wu), free(wd), free(idx), free(wts), free(perm), free(yc), free(yg);
}

static void test_moe_ffn(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 702);
    const int Ts[] = {1, 3, 50, 300};
    for (size_t t = 0; t < sizeof Ts / sizeof *Ts; t++) {
        run_moe_ffn(&r, Ts[t], 8, 2, 64, 48, 0);
        run_moe_ffn(&r, Ts[t], 128, 8, 256, 64, 0);
    }
    run_moe_ffn(&r, 300, 8, 2, 64, 48, 1);
    run_moe_ffn(&r, 17, 8, 2, 100, 36, 0); // D, Im not multiples of 8 (no 16-byte vectors)
    run_moe_ffn(&r, 1000, 8, 2, 256, 256, 0); // the qwen3-moe teacher's dims, a long prefill
    run_moe_ffn(&r, 7, 32, 8, 2048, 768, 0); // Qwen3-30B-A3B's D and Im (fewer experts)
}

// =============================================================================================
// Views the contract allows but the model rarely makes: odd element offsets and odd strides of
// bf16 tensors (2-byte aligned rows: a kernel that assumes 16-byte vectors faults or reads the
// wrong values), and the less common float dtype pairs. Last in the run, so that a kernel fault
// here (which poisons the backend) cannot hide the results of the tests above. Odd strides are
// reachable: an MLA student with an odd --kv-lora-rank has latent rows of odd width R + dr.
static void test_unaligned_views(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 901);
    run_copy_rows(&r, 7, 100, 131, 101, AE_DT_BF16, AE_DT_BF16, 1, 3);
    run_copy_rows(&r, 33, 257, 259, 261, AE_DT_F32, AE_DT_BF16, 5, 1);
    run_copy_rows(&r, 33, 257, 259, 261, AE_DT_BF16, AE_DT_F32, 1, 2);
    run_copy_rows_rep(&r, 13, 32, 8, 41, 65, AE_DT_BF16, AE_DT_BF16, 33, 57); // R = 33, dr = 8
    run_copy_rows_rep(&r, 13, 5, 33, 41, 35, AE_DT_F32, AE_DT_BF16, 1, 3);
    run_fill(&r, 1001, AE_DT_BF16, 0.5f, 3);
    run_fill(&r, 1001, AE_DT_F32, 0.5f, 1);
    run_rmsnorm(&r, 9, 33, 41, AE_DT_BF16, AE_DT_BF16, 1, 1e-6f); // MLA latents, R = 33 of 41
    run_rmsnorm(&r, 5, 100, 131, AE_DT_BF16, AE_DT_F32, 0, 1e-6f);
    run_add(&r, 1001, AE_DT_BF16, AE_DT_F32);
    run_rope(&r, 50, 1, 41, 8, 33, 0, 100, 1e6, AE_ROPE_INTERLEAVED);
    run_rope(&r, 50, 3, 25, 8, 17, 0, 100, 1e6, AE_ROPE_INTERLEAVED);
    // gemm on odd leading dimensions and an odd offset of b
    ae_gemm_args g = gemm_packed(37, 45, 29, 0, 1);
    g.lda = 31, g.ldb = 33, g.ldy = 47;
    run_gemm(&r, &g, AE_DT_BF16, 1, 1, "odd ld");
    ae_gemm_args g2 = gemm_packed(3, 1001, 333, 0, 1);
    run_gemm(&r, &g2, AE_DT_BF16, 0, 1, "odd offset");
    // attention: odd row strides; absorbed MLA with R = 33, dr = 8 (dk = 41, dv = 33)
    attn_case odd[] = {
        {.T = 50, .pos0 = 7, .Hq = 4, .Hkv = 2, .dk = 64, .dv = 64, .kpad = 1, .vpad = 3},
        {.T = 1, .pos0 = 300, .Hq = 8, .Hkv = 2, .dk = 128, .dv = 128, .kpad = 1, .vpad = 1},
        {.T = 1, .pos0 = 49, .Hq = 4, .Hkv = 1, .dk = 41, .dv = 33, .absorbed = 1},
        {.T = 2, .pos0 = 298, .Hq = 16, .Hkv = 1, .dk = 41, .dv = 33, .absorbed = 1},
    };
    run_attention_cases(&r, odd, sizeof odd / sizeof *odd);
}

// =============================================================================================


int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_download),
        cmocka_unit_test(test_copy_rows),
        cmocka_unit_test(test_copy_rows_rep),
        cmocka_unit_test(test_sum_rows_rep),
        cmocka_unit_test(test_fill),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_gemm_matmul),
        cmocka_unit_test(test_gemm_decode),
        cmocka_unit_test(test_gemm_raw),
        cmocka_unit_test(test_gemm_batched_small_m),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_add_rmsnorm),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_qk_norm_rope),
        cmocka_unit_test(test_mla_decode_prep),
        cmocka_unit_test(test_matmul_group),
        cmocka_unit_test(test_gate_up_silu),
        cmocka_unit_test(test_attention_decode),
        cmocka_unit_test(test_attention_decode_kernel),
        cmocka_unit_test(test_attention_prefill),
        cmocka_unit_test(test_attention_heads),
        cmocka_unit_test(test_attention_window_ring),
        cmocka_unit_test(test_attention_wgmma),
        cmocka_unit_test(test_attention_wgmma_window),
        cmocka_unit_test(test_attention_wgmma_dk192),
        cmocka_unit_test(test_attention_strided_absorbed),
        cmocka_unit_test(test_moe_route),
        cmocka_unit_test(test_moe_ffn),
        cmocka_unit_test(test_unaligned_views),
    };
    unsetenv("AE_CUDA_ATTN"); // the default dispatch unless a case asks for the reference
    int rc = ae_test_open_gpu(&g_gpu, 1);
    if (rc) return rc;
    g_cpu = ae_backend_cpu();
    printf("cuda backend: %s (%s), act %s, weights %s; cpu reference: %s\n", g_gpu->name,
           g_gpu->device, dtn(g_gpu->act_dtype), dtn(g_gpu->weight_dtype), g_cpu->device);
    fflush(stdout);
    if (getenv("AE_TEST_FILTER")) cmocka_set_test_filter(getenv("AE_TEST_FILTER"));
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    ae_backend_close(g_gpu);
    return rc;
}
