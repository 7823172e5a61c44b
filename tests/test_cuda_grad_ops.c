// The CUDA backward ops (backend/cuda_backward.cu, cuda_attention_bwd.cu) against the CPU
// reference (the backward slots of backend/cpu*.c, themselves checked against finite differences
// in test_grad_ops.c): rmsnorm_bwd, rope_bwd, gate_mul_bwd, silu_mul_bwd, attention_bwd, and
// ae_matmul_bwd's weight gradient into a BF16 dw (--grad-dtype bf16). Needs a
// CUDA build and a GPU; prints "SKIP ..." and exits 77 (ctest: skipped) otherwise. The small
// rmsnorm_bwd / rope_bwd cases that tests/test_grad_ops.c runs on cuda against the double
// reference are not repeated here.
//
// Method (as test_backend_ops): inputs are drawn with fixed seeds and rounded to bf16 first, so
// both backends compute on identical numbers; the CUDA backend is opened with AE_CUDA_POISON=1
// (new allocations NaN-filled: an element an op forgets to write, or a value it reads that it
// should not, shows up as NaN). Every case prints its measured error and its tolerance.
//
// rmsnorm_bwd's BF16 dw (--grad-dtype bf16) must also equal the GPU's F32 dw from the same start
// rounded to bf16 (one pass: the same fp32 sum, one rounding). Accumulating outputs ("+=": rmsnorm's dx and dw, attention's dk, dv, dsinks) start from random
// non-zero values on both sides, and their error is measured relative to the gradient itself:
// ||gpu − cpu|| / ||cpu − start||, so a dropped or doubled "+=" fails. Overwritten outputs (dq,
// gate/silu gradients) start from NaN on the GPU. Aliasing the contract allows (gate_mul_bwd /
// silu_mul_bwd output == dy; attention's dk == dv for absorbed MLA) is exercised. Determinism:
// the same call on the same inputs twice must give bit-identical outputs (no float atomics).
//
// Tolerances (relative L2 unless said otherwise):
//   TOL_F32       1e-5: F32 outputs of the same fp32 formulas (norm sums in fp32 vs double on
//                 the CPU, expf within a few ulp): ~1e-7..1e-6.
//   TOL_BF16_OUT  5e-3: a BF16 output is the fp32 result rounded once (~1.5e-3 for random data).
//   TOL_ATTN_REF  1e-3: attention gradients from the CUDA-core kernels: fp32 throughout on the
//                 same bf16 inputs, exp2 of log2-unit scores instead of exp; measured ~1e-6..1e-5
//                 expected. A lost term (the −D of ds, a key tile, a GQA head) costs >= 1e-1.
//   TOL_ATTN_BF16 1e-2: the same with BF16 dq / dk / dv outputs (one rounding each, and a
//                 BF16 dk / dv accumulator read back and rounded again).
//   TOL_ATTN_TC   2e-2: attention gradients from the tensor-core path (cuda_attention_bwd_tc.cu,
//                 and the Hopper kernels of cuda_attention_bwd_wgmma.cu: the same roundings),
//                 F32 or BF16 outputs: P and dS are rounded to bf16 (relative 2^-9 per element,
//                 ~1e-3 rms) as mma operands, D comes from the bf16 forward output, an F32 dout is
//                 used in bf16; expected ~2e-3..6e-3. A lost term (a key or query tile, a GQA
//                 head, the −D of ds, a masked tile not skipped) costs >= 1e-1. The same bound
//                 holds the wgmma run against the split run where the two may differ (see
//                 check_wgmma_vs_split: tilings that associate the fp32 sums differently).
//   TOL_LSE       1e-4: the forward's per-row log-sum-exp (ae_attn_args.lse, log2 units), max
//                 |cuda − cpu| / max(1, |cpu|) over the rows: the same bf16 inputs, fp32 scores
//                 (mma or CUDA-core sums vs the CPU's loop), log2f/exp2f vs double log/exp;
//                 expected ~1e-6..1e-5. A row missing a key tile or its sink is off by >= 1e-2.
//   TOL_ATTN_OUT  1e-2: the forward's bf16 out against the cpu's fp32 (as test_backend_ops'
//                 TOL_ATTN: the output's rounding, and P in bf16 in the flash kernel's P·V).
// The CUDA-core gradients given the saved forward (out, lse) are compared with the cpu given the
// same saved out and lse (TOL_ATTN_REF): D = dout·out then comes from the same bf16 out on both
// sides. Against the recomputing cpu the bf16 rounding of out (2^-9) would be amplified by
// 1/(1 − p) in dp − D (one key and a sink: 7.5e-3 measured).
// Which path ran is checked two ways: cases the tensor-core path takes (bwd_fast, mirroring the
// dispatcher) must differ from the forced CUDA-core run in some bit, the others must equal it;
// and every run asks the dispatcher which kernels it runs (ae_cuda_attn_bwd_kernels, the
// dispatcher's own decision), which must be the ones the case and AE_CUDA_ATTN_BWD call for
// (check_kernels). The tensor-core path runs four ways: split (AE_CUDA_ATTN_BWD=split: dQ in
// its own kernel), fused (=fused: dQ added over key tiles in a fixed order through counters),
// wgmma (=wgmma: the split path on Hopper's warpgroup multiplies, for dk/dv 128/128 and 192/128
// on a compute capability 9.0 GPU, else split) and wgfused (=wgfused: wgmma's dK/dV kernel adding
// dQ in a fixed order, where wgmma runs; twice: the same bits; dk, dv wgmma's bits), each held
// to TOL_ATTN_TC, and the default (wgmma where it is on, else split: it must give the bits of
// the run the dispatcher names); the default and wgmma twice must give the same bits (no
// atomics). wgmma against split: bit for bit where the two do the same sums in the same order,
// else within TOL_ATTN_TC (check_wgmma_vs_split).
// Saved forward (training: the forward keeps out and lse, the backward skips recomputing them):
// on the tensor-core path the backward given them must be bit-identical to the recomputing call.
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

#define TOL_F32 1e-5
#define TOL_BF16_OUT 5e-3
#define TOL_ATTN_REF 1e-3
#define TOL_ATTN_BF16 1e-2
#define TOL_ATTN_TC 2e-2
#define TOL_LSE 1e-4
#define TOL_ATTN_OUT 1e-2

static const ae_backend *g_gpu, *g_cpu;

// ---- host helpers --------------------------------------------------------------------------

// scale · N(0, 1) rounded to bf16: every input here is bf16 (both backends then see the same
// values)
static float *hnormal(ae_rng *r, size_t n, float scale) {
    return ae_test_normal(r, n, scale, AE_DT_BF16);
}

static const char *dtn(ae_dtype dt) { return ae_dtype_name(dt); }

// ---- device helpers ------------------------------------------------------------------------

static ae_ptr dnew(size_t n, ae_dtype dt) { return ae_tb_alloc(g_gpu, n, dt); }
static ae_ptr dnew_put(const float *h, size_t n, ae_dtype dt) {
    return ae_tb_alloc_put(g_gpu, h, AE_DT_F32, n, dt);
}
static float *dget(ae_ptr p, size_t n) { return ae_tb_out(g_gpu, p, n); }
static void dfree(ae_ptr p) { g_gpu->free(g_gpu, p); }

// ---- comparisons ---------------------------------------------------------------------------

static char g_what[400];

// ||got − ref|| / ||ref − base|| (base null: ||ref||); fails on non-finite values or > tol.
static double check(const float *got, const float *ref, const float *base, size_t n, double tol,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static double check(const float *got, const float *ref, const float *base, size_t n, double tol,
                    const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_what, sizeof g_what, fmt, ap);
    va_end(ap);
    double num = 0, den = 0, worst = -1;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ref[i]))
            fail_msg("%s: cpu reference [%zu] = %g is not finite (a bug in the test)", g_what, i,
                     (double)ref[i]);
        if (!isfinite(got[i]))
            fail_msg("%s: cuda output [%zu] of %zu = %g, cpu %g (non-finite: never written, or a "
                     "poisoned value read)", g_what, i, n, (double)got[i], (double)ref[i]);
        double d = (double)got[i] - ref[i], g = (double)ref[i] - (base ? base[i] : 0.0f);
        num += d * d;
        den += g * g;
        if (fabs(d) > worst) worst = fabs(d), wi = i;
    }
    double e = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  %-86s rel L2 %.2e (tol %.0e)%s\n", g_what, e, tol, base ? " [of the gradient]" : "");
    fflush(stdout);
    if (!(e <= tol))
        fail_msg("%s: relative L2 error %.3g > tolerance %.3g (largest difference at [%zu]: cuda "
                 "%g, cpu %g%s)", g_what, e, tol, wi, (double)got[wi], (double)ref[wi],
                 base ? ", before the call " : "");
    return e;
}

// Bit-identical downloads of two runs (as F32: BF16 values convert exactly).
static void check_same(const float *a, const float *b, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void check_same(const float *a, const float *b, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_what, sizeof g_what, fmt, ap);
    va_end(ap);
    if (memcmp(a, b, sizeof(float) * n) != 0) {
        size_t i = 0;
        while (i < n && memcmp(a + i, b + i, sizeof(float)) == 0) i++;
        fail_msg("%s: runs differ at [%zu] of %zu: %.9g vs %.9g", g_what, i, n, (double)a[i],
                 (double)b[i]);
    }
    printf("  %-86s bit-identical (%zu values)\n", g_what, n);
    fflush(stdout);
}

// max_i |got − ref| / max(1, |ref|) <= tol; fails on non-finite values.
static void check_max(const float *got, const float *ref, size_t n, double tol, const char *fmt,
                      ...) __attribute__((format(printf, 5, 6)));
static void check_max(const float *got, const float *ref, size_t n, double tol, const char *fmt,
                      ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_what, sizeof g_what, fmt, ap);
    va_end(ap);
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!isfinite(got[i]) || !isfinite(ref[i]))
            fail_msg("%s: [%zu] cuda %g, cpu %g (non-finite)", g_what, i, (double)got[i],
                     (double)ref[i]);
        if (e > worst) worst = e, wi = i;
    }
    printf("  %-86s max rel %.2e (tol %.0e)\n", g_what, worst, tol);
    fflush(stdout);
    if (!(worst <= tol))
        fail_msg("%s: error %.3g > tolerance %.3g at [%zu]: cuda %.9g, cpu %.9g", g_what, worst,
                 tol, wi, (double)got[wi], (double)ref[wi]);
}

// The error that storing ref in bf16 alone makes, relative to the gradient ref − base: an
// accumulator whose start dwarfs the gradient loses the gradient's low bits to bf16 rounding.
static double bf16_noise(const float *ref, const float *base, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)ae_test_bf16(ref[i]) - ref[i], g = (double)ref[i] - base[i];
        num += d * d;
        den += g * g;
    }
    return den > 0 ? sqrt(num / den) : 0.0;
}

static double tol_for(ae_dtype dt) { return dt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_F32; }

// =============================================================================================
// rmsnorm_bwd: dx += ..., dw += Σ_rows ...

static void run_rmsnorm(ae_rng *r, int M, int D, ae_dtype in_dt, ae_dtype dx_dt, ae_dtype dw_dt,
                        int with_dw) {
    size_t n = (size_t)M * D;
    float eps = 1e-6f;
    float *x = hnormal(r, n, 1.0f), *dy = hnormal(r, n, 1.0f), *w = hnormal(r, (size_t)D, 0.3f);
    for (int d = 0; d < D; d++) w[d] = ae_test_bf16(1.0f + w[d]);
    // starting values of the accumulators, representable in their dtypes
    float *dx0 = hnormal(r, n, 0.5f), *dw0 = hnormal(r, (size_t)D, 2.0f);
    float *dxc = ae_test_floats_copy(dx0, n), *dwc = ae_test_floats_copy(dw0, (size_t)D);
    g_cpu->rmsnorm_bwd(g_cpu, ae_host_f32(dxc), with_dw ? ae_host_f32(dwc) : ae_ptr_null(),
                       ae_host_f32(dy), ae_host_f32(x), ae_host_f32(w), M, D, eps);
    ae_ptr gx = dnew_put(x, n, in_dt), gdy = dnew_put(dy, n, in_dt);
    ae_ptr gw = dnew_put(w, (size_t)D, g_gpu->weight_dtype);
    float *res[2][2];
    for (int run = 0; run < 2; run++) {
        ae_ptr gdx = dnew_put(dx0, n, dx_dt), gdw = dnew_put(dw0, (size_t)D, dw_dt);
        g_gpu->rmsnorm_bwd(g_gpu, gdx, with_dw ? gdw : ae_ptr_null(), gdy, gx, gw, M, D, eps);
        res[run][0] = dget(gdx, n);
        res[run][1] = dget(gdw, (size_t)D);
        dfree(gdx), dfree(gdw);
    }
    char name[200];
    snprintf(name, sizeof name, "M=%d D=%d x,dy %s dx %s dw %s", M, D, dtn(in_dt), dtn(dx_dt),
             with_dw ? dtn(dw_dt) : "null");
    check(res[0][0], dxc, dx0, n, tol_for(dx_dt), "rmsnorm_bwd dx %s", name);
    if (with_dw)
        check(res[0][1], dwc, dw0, (size_t)D, tol_for(dw_dt), "rmsnorm_bwd dw %s", name);
    else
        check_same(res[0][1], dw0, (size_t)D, "rmsnorm_bwd dw untouched when null %s", name);
    check_same(res[0][0], res[1][0], n, "rmsnorm_bwd dx determinism %s", name);
    check_same(res[0][1], res[1][1], (size_t)D, "rmsnorm_bwd dw determinism %s", name);
    if (with_dw && dw_dt == AE_DT_BF16) { // --grad-dtype bf16: the F32 dw's sum, rounded once
        ae_ptr gdx = dnew_put(dx0, n, dx_dt), gdw = dnew_put(dw0, (size_t)D, AE_DT_F32);
        g_gpu->rmsnorm_bwd(g_gpu, gdx, gdw, gdy, gx, gw, M, D, eps);
        float *f = dget(gdw, (size_t)D);
        for (int d = 0; d < D; d++) f[d] = ae_test_bf16(f[d]);
        check_same(res[0][1], f, (size_t)D, "rmsnorm_bwd BF16 dw == bf16(F32 dw) %s", name);
        dfree(gdx), dfree(gdw);
        free(f);
    }
    dfree(gx), dfree(gdy), dfree(gw);
    free(x), free(dy), free(w), free(dx0), free(dw0), free(dxc), free(dwc);
    for (int run = 0; run < 2; run++) free(res[run][0]), free(res[run][1]);
}

static void test_rmsnorm_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 801);
    // (M, D): one row; odd; a head dim (qk-norm rows); hidden sizes; many rows (several dw
    // chunks, and > 32 rows per chunk at M = 40000)
    // (M = 1, D = 8 with an F32 dx is test_grad_ops's rmsnorm_bwd case on cuda, against the
    // double reference: only its BF16-dx variant stays here)
    run_rmsnorm(&r, 1, 8, AE_DT_BF16, AE_DT_BF16, AE_DT_F32, 1);
    const int shapes[][2] = {{7, 33}, {300, 128}, {1030, 2048}, {129, 4096}, {40000, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s][0], D = shapes[s][1];
        run_rmsnorm(&r, M, D, AE_DT_BF16, AE_DT_F32, AE_DT_F32, 1);
        run_rmsnorm(&r, M, D, AE_DT_BF16, AE_DT_BF16, AE_DT_F32, 1);
    }
    run_rmsnorm(&r, 77, 200, AE_DT_F32, AE_DT_F32, AE_DT_F32, 0);
    run_rmsnorm(&r, 77, 200, AE_DT_BF16, AE_DT_BF16, AE_DT_BF16, 1);
    // BF16 dw (--grad-dtype bf16: norm weights' gradients), qk-norm rows and a hidden size
    run_rmsnorm(&r, 4096, 128, AE_DT_BF16, AE_DT_BF16, AE_DT_BF16, 1);
    run_rmsnorm(&r, 1030, 2048, AE_DT_BF16, AE_DT_BF16, AE_DT_BF16, 1);
}

// =============================================================================================
// ae_matmul_bwd's weight gradient dw += dyᵀ · x into a BF16 dw (--grad-dtype bf16: every
// Linear weight's gradient): against the CPU's F32 dw from the same bf16 start (TOL_BF16_OUT of
// the gradient), and against the GPU's own F32 dw rounded to bf16: within one bf16 ulp of the
// value (TOL_DW_ULP: the product goes into an F32 temporary and is added with one rounding, but
// a beta-0 product may run another cuBLASLt algorithm, i.e. another fp32 summation order, than
// the F32 dw's beta-1 one; plus a floor of 1e-4 of the gradient's rms for values where the sum
// cancels). Deterministic: two runs bit-identical. (A GEMM straight into the bf16 dw failed
// this at M 1030, K 256, N 512 on the H200: 0.0625 against 0.0471, split-K partial sums rounded
// to bf16.)

#define TOL_DW_ULP (1.0 / 128) // one bf16 ulp, relative to the larger of the two values

static void run_matmul_dw(ae_rng *r, int M, int K, int N) {
    size_t nx = (size_t)M * K, ny = (size_t)M * N, nw = (size_t)N * K;
    float *x = hnormal(r, nx, 1.0f), *dy = hnormal(r, ny, 1.0f), *w = hnormal(r, nw, 0.1f);
    float *dw0 = hnormal(r, nw, 2.0f), *ref = ae_test_floats_copy(dw0, nw); // bf16-exact start
    ae_matmul_bwd(g_cpu, ae_ptr_null(), ae_host_f32(ref), ae_host_f32(dy), ae_host_f32(x),
                  ae_host_f32(w), M, K, N);
    ae_ptr gx = dnew_put(x, nx, AE_DT_BF16), gdy = dnew_put(dy, ny, AE_DT_BF16);
    ae_ptr gw = dnew_put(w, nw, AE_DT_BF16);
    float *got[3]; // BF16 dw twice, then F32 dw
    for (int run = 0; run < 3; run++) {
        ae_ptr gdw = dnew_put(dw0, nw, run < 2 ? AE_DT_BF16 : AE_DT_F32);
        ae_matmul_bwd(g_gpu, ae_ptr_null(), gdw, gdy, gx, gw, M, K, N);
        got[run] = dget(gdw, nw);
        dfree(gdw);
    }
    char name[120];
    snprintf(name, sizeof name, "M=%d K=%d N=%d", M, K, N);
    check(got[0], ref, dw0, nw, TOL_BF16_OUT, "matmul_bwd BF16 dw %s vs cpu F32", name);
    check_same(got[0], got[1], nw, "matmul_bwd BF16 dw determinism %s", name);
    // a value where the sum nearly cancels: the two fp32 orders may differ by more than its ulp;
    // the floor (1e-4 of the gradient's rms, ~100x the fp32 order's difference) covers it
    double gss = 0, worst = 0;
    for (size_t i = 0; i < nw; i++) gss += ((double)ref[i] - dw0[i]) * ((double)ref[i] - dw0[i]);
    double fl = 1e-4 * sqrt(gss / (double)nw);
    size_t wi = 0;
    for (size_t i = 0; i < nw; i++) {
        double b = ae_test_bf16(got[2][i]), d = fabs(got[0][i] - b);
        double e = d / (fmax(fabs(b), fabs((double)got[0][i])) + fl / TOL_DW_ULP);
        if (d > 0 && e > worst) worst = e, wi = i;
    }
    printf("  %-86s max %.2e of the value (tol %.2e)\n", "matmul_bwd BF16 dw vs bf16(F32 dw)",
           worst, TOL_DW_ULP);
    if (!(worst <= TOL_DW_ULP))
        fail_msg("matmul_bwd BF16 dw %s: [%zu] %.9g vs bf16(F32 dw) %.9g", name, wi,
                 (double)got[0][wi], (double)ae_test_bf16(got[2][wi]));
    dfree(gx), dfree(gdy), dfree(gw);
    free(x), free(dy), free(w), free(dw0), free(ref);
    for (int run = 0; run < 3; run++) free(got[run]);
}

static void test_matmul_bwd_dw_bf16(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 805);
    run_matmul_dw(&r, 1, 8, 8);       // one row
    run_matmul_dw(&r, 7, 33, 65);     // odd shapes (cuBLASLt alignment, or the plain kernel)
    run_matmul_dw(&r, 1030, 256, 512); // training-like: many rows, depth M
    run_matmul_dw(&r, 4096, 2048, 576); // MLA kv_a_proj_with_mqa at Qwen3-1.7B, 4096 tokens
}

// =============================================================================================
// rope_bwd (in place)

static void run_rope(ae_rng *r, int T, int H, int stride, int rd, ae_rope_mode mode, ae_dtype dt) {
    size_t n = (size_t)T * H * stride;
    float *x = hnormal(r, n, 1.0f);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    for (int t = 0; t < T; t++) pos[t] = t % 3 == 0 ? t : (int32_t)(ae_rng_u64(r) % 40000);
    float *xc = ae_test_floats_copy(x, n);
    g_cpu->rope_bwd(g_cpu, ae_host_f32(xc), ae_host_i32(pos), T, H, stride, rd, 1e6, mode);
    ae_ptr gp = dnew(T, AE_DT_I32);
    if (g_gpu->upload(g_gpu, gp, pos, AE_DT_I32, (size_t)T) != AE_OK)
        fail_msg("upload pos: %s", ae_last_error());
    ae_ptr gx = dnew_put(x, n, dt);
    g_gpu->rope_bwd(g_gpu, gx, gp, T, H, stride, rd, 1e6, mode);
    float *got = dget(gx, n);
    check(got, xc, NULL, n, tol_for(dt), "rope_bwd T=%d H=%d stride=%d rd=%d %s %s", T, H, stride,
          rd, mode == AE_ROPE_HALF ? "half" : "interleaved", dtn(dt));
    dfree(gx), dfree(gp);
    free(x), free(pos), free(xc), free(got);
}

static void test_rope_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 802);
    // (the small full-rotary F32 case is test_grad_ops's rope_bwd on cuda: T 4, H 3, stride 8)
    for (int mode = 0; mode < 2; mode++) {
        ae_rope_mode m = (ae_rope_mode)mode;
        run_rope(&r, 37, 8, 128, 128, m, AE_DT_F32);
        run_rope(&r, 37, 8, 128, 128, m, AE_DT_BF16);
        run_rope(&r, 19, 5, 192, 64, m, AE_DT_BF16);   // MLA: rope dims at the start of a row
        run_rope(&r, 300, 3, 70, 34, m, AE_DT_F32);     // odd stride, partial rotary
    }
}

// =============================================================================================
// gate_mul_bwd, silu_mul_bwd (overwritten outputs; output == dy allowed)

static void run_gate(ae_rng *r, int T, int H, int hd, int per_head, ae_dtype in_dt,
                     ae_dtype out_dt) {
    size_t n = (size_t)T * H * hd, ng = per_head ? (size_t)T * H : n;
    float *x = hnormal(r, n, 1.0f), *g = hnormal(r, ng, 2.0f), *dy = hnormal(r, n, 1.0f);
    float *dxc = ae_test_floats(n), *dgc = ae_test_floats(ng);
    g_cpu->gate_mul_bwd(g_cpu, ae_host_f32(dxc), ae_host_f32(dgc), ae_host_f32(dy), ae_host_f32(x),
                        ae_host_f32(g), T, H, hd, per_head);
    ae_ptr gx = dnew_put(x, n, in_dt), gg = dnew_put(g, ng, in_dt), gdy = dnew_put(dy, n, in_dt);
    ae_ptr gdx = dnew(n, out_dt), gdg = dnew(ng, out_dt);
    g_gpu->gate_mul_bwd(g_gpu, gdx, gdg, gdy, gx, gg, T, H, hd, per_head);
    float *dx = dget(gdx, n), *dg = dget(gdg, ng);
    char name[160];
    snprintf(name, sizeof name, "T=%d H=%d hd=%d %s in %s out %s", T, H, hd,
             per_head ? "per-head" : "elementwise", dtn(in_dt), dtn(out_dt));
    check(dx, dxc, NULL, n, tol_for(out_dt), "gate_mul_bwd dx %s", name);
    check(dg, dgc, NULL, ng, tol_for(out_dt), "gate_mul_bwd dg %s", name);
    if (in_dt == out_dt) { // dx == dy: the same results
        ae_ptr gdy2 = dnew_put(dy, n, in_dt), gdg2 = dnew(ng, out_dt);
        g_gpu->gate_mul_bwd(g_gpu, gdy2, gdg2, gdy2, gx, gg, T, H, hd, per_head);
        float *dx2 = dget(gdy2, n), *dg2 = dget(gdg2, ng);
        check_same(dx2, dx, n, "gate_mul_bwd dx == dy %s", name);
        check_same(dg2, dg, ng, "gate_mul_bwd dg with dx == dy %s", name);
        dfree(gdy2), dfree(gdg2);
        free(dx2), free(dg2);
    }
    dfree(gx), dfree(gg), dfree(gdy), dfree(gdx), dfree(gdg);
    free(x), free(g), free(dy), free(dxc), free(dgc), free(dx), free(dg);
}

static void test_gate_mul_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 803);
    for (int per_head = 0; per_head < 2; per_head++) {
        run_gate(&r, 3, 4, 6, per_head, AE_DT_F32, AE_DT_F32);
        run_gate(&r, 17, 5, 128, per_head, AE_DT_BF16, AE_DT_BF16);
        run_gate(&r, 17, 5, 128, per_head, AE_DT_BF16, AE_DT_F32);
        run_gate(&r, 64, 32, 128, per_head, AE_DT_BF16, AE_DT_BF16);
        run_gate(&r, 9, 3, 45, per_head, AE_DT_BF16, AE_DT_BF16);
    }
}

static void run_silu(ae_rng *r, size_t n, ae_dtype in_dt, ae_dtype out_dt) {
    float *g = hnormal(r, n, 3.0f), *u = hnormal(r, n, 1.0f), *dy = hnormal(r, n, 1.0f);
    if (n > 3) g[0] = -30.0f, g[1] = 25.0f, g[2] = 0.0f; // saturated both ways, the origin
    float *dgc = ae_test_floats(n), *duc = ae_test_floats(n);
    g_cpu->silu_mul_bwd(g_cpu, ae_host_f32(dgc), ae_host_f32(duc), ae_host_f32(dy), ae_host_f32(g),
                        ae_host_f32(u), n);
    ae_ptr gg = dnew_put(g, n, in_dt), gu = dnew_put(u, n, in_dt), gdy = dnew_put(dy, n, in_dt);
    ae_ptr gdg = dnew(n, out_dt), gdu = dnew(n, out_dt);
    g_gpu->silu_mul_bwd(g_gpu, gdg, gdu, gdy, gg, gu, n);
    float *dg = dget(gdg, n), *du = dget(gdu, n);
    check(dg, dgc, NULL, n, tol_for(out_dt), "silu_mul_bwd dg n=%zu in %s out %s", n, dtn(in_dt),
          dtn(out_dt));
    check(du, duc, NULL, n, tol_for(out_dt), "silu_mul_bwd du n=%zu in %s out %s", n, dtn(in_dt),
          dtn(out_dt));
    if (in_dt == out_dt) { // dg == dy, then du == dy
        for (int which = 0; which < 2; which++) {
            ae_ptr gdy2 = dnew_put(dy, n, in_dt), other = dnew(n, out_dt);
            if (which == 0)
                g_gpu->silu_mul_bwd(g_gpu, gdy2, other, gdy2, gg, gu, n);
            else
                g_gpu->silu_mul_bwd(g_gpu, other, gdy2, gdy2, gg, gu, n);
            float *a = dget(gdy2, n), *b = dget(other, n);
            check_same(a, which == 0 ? dg : du, n, "silu_mul_bwd %s == dy n=%zu %s",
                       which == 0 ? "dg" : "du", n, dtn(in_dt));
            check_same(b, which == 0 ? du : dg, n, "silu_mul_bwd %s with %s == dy n=%zu %s",
                       which == 0 ? "du" : "dg", which == 0 ? "dg" : "du", n, dtn(in_dt));
            dfree(gdy2), dfree(other);
            free(a), free(b);
        }
    }
    dfree(gg), dfree(gu), dfree(gdy), dfree(gdg), dfree(gdu);
    free(g), free(u), free(dy), free(dgc), free(duc), free(dg), free(du);
}

static void test_silu_mul_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 804);
    const size_t sizes[] = {1, 7, 1000, (1u << 20) + 3};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        run_silu(&r, sizes[s], AE_DT_F32, AE_DT_F32);
        run_silu(&r, sizes[s], AE_DT_BF16, AE_DT_BF16);
        run_silu(&r, sizes[s], AE_DT_BF16, AE_DT_F32);
    }
}

// =============================================================================================
// attention_bwd

typedef struct {
    int T, pos0, Hq, Hkv, dk, dv;
    int window, ring;
    int sinks;      // per-head sinks log(visible keys) + U(-2, 2), carrying real mass
    int kpad, vpad; // extra values per K / V storage row
    int absorbed;   // MLA absorbed: v = the first dv values of k's rows, dk == dv aliased
    float qscale;   // q ~ N(0, qscale²) (0: 1)
    int dout_f32;   // dout given as F32 (else BF16)
    int dq_odd;     // dq starts one element past an allocation (F32: not 8-byte aligned)
} bwd_case;

// Every query sees exactly one key and there is no sink: its probability is 1, so dS = 0 in exact
// arithmetic (dS = P ⊙ (dP − D) with D = dP) and neither dq nor the dk increment gets anything. A relative error against the reference would
// compare rounding with rounding (the CPU forms D = dout·out and leaves ~1e-7), so both sides are
// held to an absolute bound instead.
static int one_key(const bwd_case *c) {
    return !c->sinks && ((c->T == 1 && c->pos0 == 0) || c->window == 1);
}

// max |x − base| <= 1e-5 (base null: 0; inputs of unit scale: a real gradient is O(1e-1) or more)
static void check_tiny(const float *x, const float *base, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void check_tiny(const float *x, const float *base, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_what, sizeof g_what, fmt, ap);
    va_end(ap);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) fail_msg("%s: [%zu] = %g is not finite", g_what, i, (double)x[i]);
        double d = fabs((double)x[i] - (base ? base[i] : 0.0f));
        if (d > worst) worst = d;
    }
    printf("  %-86s max |x| %.2e (bound 1e-05: exactly 0 in exact arithmetic)\n", g_what, worst);
    fflush(stdout);
    if (!(worst <= 1e-5)) fail_msg("%s: max |x| %.3g > 1e-5 (should be 0: one visible key)", g_what, worst);
}

// dq and dk (dkv when absorbed) of one attention_bwd call against the cpu: relative L2 (dk: of
// the increment over its start, hk0 on the gpu side, ck0 on the cpu's), or, when every query sees
// one key (one_key), both sides' dq and dk increment held to rounding.
static void check_dq_dk(const bwd_case *c, const char *kind, const char *pn, const char *name,
                        const float *hq, const float *cq, size_t nq, double tol_q, const float *hk,
                        const float *hk0, const float *ck, const float *ck0, size_t nk,
                        double tol_k) {
    if (one_key(c)) {
        check_tiny(hq, NULL, nq, "attention_bwd %s%s dq (cuda) %s", kind, pn, name);
        check_tiny(cq, NULL, nq, "attention_bwd %s%s dq (cpu)  %s", kind, pn, name);
    } else {
        check(hq, cq, NULL, nq, tol_q, "attention_bwd %s%s dq %s", kind, pn, name);
    }
    if (one_key(c) && !c->absorbed) {
        check_tiny(hk, hk0, nk, "attention_bwd %s%s dk increment (cuda) %s", kind, pn, name);
        check_tiny(ck, ck0, nk, "attention_bwd %s%s dk increment (cpu)  %s", kind, pn, name);
    } else {
        check(hk, ck, hk0, nk, tol_k, "attention_bwd %s%s %s %s", kind, pn,
              c->absorbed ? "dkv" : "dk ", name);
    }
}

// The cases the tensor-core path takes (the dispatcher's conditions in cuda_attention_bwd.cu;
// buffers from the backend's allocator are 16-byte aligned).
static int bwd_fast(const bwd_case *c) {
    int dims = (c->dk == c->dv && (c->dk == 32 || c->dk == 64 || c->dk == 128)) ||
               (c->dk == 192 && c->dv == 128);
    return dims && !c->absorbed && c->Hq % c->Hkv == 0 &&
           (c->ring == 0 || c->ring >= c->pos0 + c->T) && c->kpad % 8 == 0 && c->vpad % 8 == 0;
}

static void bwd_case_name(const bwd_case *c, char *buf, size_t cap) {
    snprintf(buf, cap, "T=%d pos0=%d Hq=%d Hkv=%d dk=%d dv=%d W=%d ring=%d%s%s%s%s%s%s [%s]",
             c->T, c->pos0, c->Hq, c->Hkv, c->dk, c->dv, c->window, c->ring,
             c->sinks ? " sinks" : "", c->kpad || c->vpad ? " padded" : "",
             c->absorbed ? " absorbed(dk==dv)" : "", c->qscale > 1.0f ? " peaky" : "",
             c->dout_f32 ? " dout F32" : "", c->dq_odd ? " dq odd" : "",
             bwd_fast(c) ? "tc" : "ref");
}

// One case's inputs and results for run_attn_saved.
typedef struct {
    const bwd_case *c;
    const char *name;
    ae_attn_args ac, ag;            // cpu and gpu arguments (sinks on each side; lse null)
    size_t nq, no, nk, nv;
    const float *q, *k, *v, *dout;  // host inputs (bf16-rounded)
    ae_ptr gq, gk, gv, gdo;         // gpu inputs
    const float *cq, *ck, *cv, *cs; // cpu gradients (dk, dv, dsinks include their start)
    const float *dk0, *dv0, *ds0;   // starting values of the accumulators
    float *const *rec;              // F32 dq, dk, dv, dsinks of the recomputing default run
} attn_io;

// attention_bwd on the gpu, F32 outputs from the starting values, given out (null: recomputed)
// and ag->lse; downloads into res (dv null when absorbed, dsinks null without sinks).
static void gpu_bwd(const attn_io *io, const ae_attn_args *ag, ae_ptr out, float *res[4]) {
    const int absorbed = io->c->absorbed, Hq = io->c->Hq;
    ae_ptr g_dq = dnew(io->nq, AE_DT_F32), g_dk = dnew_put(io->dk0, io->nk, AE_DT_F32);
    ae_ptr g_dv = absorbed ? g_dk : dnew_put(io->dv0, io->nv, AE_DT_F32);
    ae_ptr g_ds = io->c->sinks ? dnew_put(io->ds0, (size_t)Hq, AE_DT_F32) : ae_ptr_null();
    g_gpu->attention_bwd(g_gpu, ag, g_dq, g_dk, g_dv, g_ds, io->gdo, out, io->gq, io->gk, io->gv);
    res[0] = dget(g_dq, io->nq), res[1] = dget(g_dk, io->nk);
    res[2] = absorbed ? NULL : dget(g_dv, io->nv);
    res[3] = io->c->sinks ? dget(g_ds, (size_t)Hq) : NULL;
    dfree(g_dq), dfree(g_dk);
    if (!absorbed) dfree(g_dv);
    if (io->c->sinks) dfree(g_ds);
}

// The cpu backward given a saved forward (out: io->no values, lse: T·Hq rows, from the gpu):
// *sq (dq), *sk, *sv (dk, dv from their starting values; one buffer when absorbed), *ss (dsinks
// from theirs; null without sinks).
static void cpu_bwd_saved(const attn_io *io, const float *out, const float *lse, float **sq,
                          float **sk, float **sv, float **ss) {
    const bwd_case *c = io->c;
    ae_attn_args ac = io->ac;
    ac.lse = ae_host_f32(lse);
    *sq = ae_test_floats(io->nq), *sk = ae_test_floats_copy(io->dk0, io->nk);
    *sv = c->absorbed ? *sk : ae_test_floats_copy(io->dv0, io->nv);
    *ss = c->sinks ? ae_test_floats_copy(io->ds0, (size_t)c->Hq) : NULL;
    g_cpu->attention_bwd(g_cpu, &ac, ae_host_f32(*sq), ae_host_f32(*sk), ae_host_f32(*sv),
                         *ss ? ae_host_f32(*ss) : ae_ptr_null(), ae_host_f32(io->dout),
                         ae_host_f32(out), ae_host_f32(io->q), ae_host_f32(io->k),
                         ae_host_f32(io->v));
}

// The saved forward of training: `attention` with ae_attn_args.lse on the gpu (default dispatch,
// then the CUDA-core kernel forced by AE_CUDA_ATTN=ref) against the cpu's out and lse; then
// attention_bwd given the default forward's out and lse: on the tensor-core path bit-identical to
// the recomputing call; on the CUDA-core kernels (the default where the tensor-core path does not
// take the case, and AE_CUDA_ATTN_BWD=ref for every case) within TOL_ATTN_REF of the cpu given the
// same out and lse (both form D = dout·out from the same bf16 out: fp32 against double sums).
static void run_attn_saved(const attn_io *io) {
    const bwd_case *c = io->c;
    const size_t rows = (size_t)c->T * c->Hq;
    float *cpu_out = ae_test_floats(io->no), *clse = ae_test_floats(rows);
    ae_attn_args ac = io->ac, ag = io->ag;
    ac.lse = ae_host_f32(clse);
    g_cpu->attention(g_cpu, &ac, ae_host_f32(cpu_out), ae_host_f32(io->q), ae_host_f32(io->k),
                     ae_host_f32(io->v));
    ag.lse = dnew(rows, AE_DT_F32);
    ae_ptr gout = dnew(io->no, AE_DT_BF16);
    for (int fwd_ref = 1; fwd_ref >= 0; fwd_ref--) { // ends with the default forward's out, lse
        if (fwd_ref) setenv("AE_CUDA_ATTN", "ref", 1);
        g_gpu->attention(g_gpu, &ag, gout, io->gq, io->gk, io->gv);
        if (fwd_ref) unsetenv("AE_CUDA_ATTN");
        float *ho = dget(gout, io->no), *hl = dget(ag.lse, rows);
        const char *fn = fwd_ref ? "ref    " : "default";
        check(ho, cpu_out, NULL, io->no, TOL_ATTN_OUT, "attention+lse %s out %s", fn, io->name);
        check_max(hl, clse, rows, TOL_LSE, "attention+lse %s lse %s", fn, io->name);
        free(ho), free(hl);
    }
    float *saved_out = dget(gout, io->no), *saved_lse = dget(ag.lse, rows);
    float *sq, *sk, *sv, *ss; // the cpu given the gpu's saved forward
    cpu_bwd_saved(io, saved_out, saved_lse, &sq, &sk, &sv, &ss);
    float *res[4];
    for (int bwd_ref = 0; bwd_ref < 2; bwd_ref++) {
        if (bwd_ref) setenv("AE_CUDA_ATTN_BWD", "ref", 1);
        gpu_bwd(io, &ag, gout, res);
        if (bwd_ref) unsetenv("AE_CUDA_ATTN_BWD");
        const char *pn = bwd_ref ? "ref    " : "default";
        if (!bwd_ref && bwd_fast(c)) {
            check_same(res[0], io->rec[0], io->nq, "attention_bwd saved == recomputed dq %s",
                       io->name);
            check_same(res[1], io->rec[1], io->nk, "attention_bwd saved == recomputed dk %s",
                       io->name);
            if (res[2])
                check_same(res[2], io->rec[2], io->nv, "attention_bwd saved == recomputed dv %s",
                           io->name);
            if (res[3])
                check_same(res[3], io->rec[3], (size_t)c->Hq,
                           "attention_bwd saved == recomputed dsinks %s", io->name);
        } else { // the CUDA-core kernels against the cpu given the same saved forward
            check_dq_dk(c, "saved ", pn, io->name, res[0], sq, io->nq, TOL_ATTN_REF, res[1],
                        io->dk0, sk, io->dk0, io->nk, TOL_ATTN_REF);
            if (res[2])
                check(res[2], sv, io->dv0, io->nv, TOL_ATTN_REF, "attention_bwd saved %s dv  %s",
                      pn, io->name);
            if (res[3])
                check(res[3], ss, io->ds0, (size_t)c->Hq, TOL_ATTN_REF,
                      "attention_bwd saved %s dsinks %s", pn, io->name);
        }
        for (int i = 0; i < 4; i++) free(res[i]);
    }
    dfree(ag.lse), dfree(gout);
    free(cpu_out), free(clse), free(saved_out), free(saved_lse);
    free(sq), free(sk), free(ss);
    if (!c->absorbed) free(sv);
}

// The gpu runs of one case (AE_CUDA_ATTN_BWD, output dtype): the CUDA-core kernels (ref); the
// default dispatch twice (the second checks determinism: bit-identical to the first); the fused
// tensor-core kernel (dQ added in key-tile order); split (the mma.sync split path, forced);
// wgmma three times (the Hopper split path, cuda_attention_bwd_wgmma.cu, forced where it takes the
// shape: first with the default dQ form, dQ from stored dS where bwd_ds holds, else the
// warp-specialised kernel; then with the synchronous dQ kernel (AE_CUDA_ATTN_BWD_DQ=sync),
// bit-identical to the first where that ran ws, else dk, dv (and dsinks) bit-identical and dq
// against the cpu; then with the warp-specialised one (=ws), bit-identical to the synchronous
// run); wgfused twice (the Hopper dK/dV kernel adding dQ
// over key tiles in a fixed order through counters: the second bit-identical to the first, dk
// and dv bit-identical to wgmma's, whose loop it is); with BF16 outputs (also_bf16) the default,
// fused, wgmma and wgfused again.
enum {
    RUN_REF, RUN_DEFAULT, RUN_DEFAULT2, RUN_FUSED, RUN_SPLIT, RUN_WGMMA, RUN_WGMMA2, RUN_WGMMA3,
    RUN_WGFUSED, RUN_WGFUSED2, RUN_F32
};
typedef struct {
    const char *env; // AE_CUDA_ATTN_BWD (null: unset)
    ae_dtype odt;    // dq, dk, dv
    const char *label;
    int same_as;     // >= 0: must equal that run bit for bit (instead of the cpu comparison)
    const char *dq;  // AE_CUDA_ATTN_BWD_DQ (set_dq_kernels; null: unset)
} bwd_run;
static const bwd_run k_bwd_runs[] = {
    [RUN_REF] = {"ref", AE_DT_F32, "ref    ", -1},
    [RUN_DEFAULT] = {NULL, AE_DT_F32, "default", -1},
    [RUN_DEFAULT2] = {NULL, AE_DT_F32, "default", RUN_DEFAULT},
    [RUN_FUSED] = {"fused", AE_DT_F32, "fused  ", -1},
    [RUN_SPLIT] = {"split", AE_DT_F32, "split  ", -1},
    [RUN_WGMMA] = {"wgmma", AE_DT_F32, "wgmma  ", -1},
    [RUN_WGMMA2] = {"wgmma", AE_DT_F32, "wgmma sync", RUN_WGMMA, "sync"},
    [RUN_WGMMA3] = {"wgmma", AE_DT_F32, "wgmma ws", RUN_WGMMA2, "ws"},
    [RUN_WGFUSED] = {"wgfused", AE_DT_F32, "wgfused", -1},
    [RUN_WGFUSED2] = {"wgfused", AE_DT_F32, "wgfused", RUN_WGFUSED},
    {NULL, AE_DT_BF16, "bf16out", -1},
    {"fused", AE_DT_BF16, "bf16out fused", -1},
    {"wgmma", AE_DT_BF16, "bf16out wgmma", -1},
    {"wgfused", AE_DT_BF16, "bf16out wgfused", -1},
};

// Sets (dq: "sync" or "ws") or clears (null) the variables that make the Hopper backward run that
// dQ kernel and its dK/dV kernel with Q and dO by cp.async, instead of the defaults (dQ from
// stored dS where it can run, else the warp-specialised dQ kernel; Q and dO by TMA where the GQA
// group divides 64), cuda_attention_bwd_wgmma.cu.
static void set_dq_kernels(const char *dq) {
    if (dq) {
        setenv("AE_CUDA_ATTN_BWD_DQ", dq, 1);
        setenv("AE_CUDA_ATTN_BWD_KV", "cp", 1);
    } else {
        unsetenv("AE_CUDA_ATTN_BWD_DQ");
        unsetenv("AE_CUDA_ATTN_BWD_KV");
    }
}

// Whether the device is a compute capability 9.0 GPU (H100 / H200 / H800 / H20 / GH200; the
// backend names it in ->device), where AE_CUDA_ATTN_BWD=wgmma runs the Hopper kernels.
static int g_hopper;

// The cases the Hopper backward takes when forced (pick_kernels in cuda_attention_bwd.cu):
// tensor-core cases with dk/dv 128/128 or 192/128, on a Hopper GPU.
static int bwd_wgmma(const bwd_case *c) {
    return g_hopper && bwd_fast(c) && (c->dk == 128 || c->dk == 192) && c->dv == 128;
}

// The cases whose Hopper backward takes dq from stored dS by default (launch_ds in
// cuda_attention_bwd_wgmma.cu): Hq == Hkv (MLA's materialised layout), pos0 = 0, no window.
static int bwd_ds(const bwd_case *c) {
    return bwd_wgmma(c) && c->Hq == c->Hkv && c->pos0 == 0 && c->window <= 0;
}

// The dQ form the last Hopper backward ran ("ds", "ws", "sync"; "none" without CUDA).
static const char *gpu_dq_form(void) {
#ifdef AE_HAVE_CUDA
    return ae_cuda_attn_bwd_dq_last();
#else
    return "none";
#endif
}

// The kernels the dispatcher says it runs for `a` under the current AE_CUDA_ATTN_BWD
// (ae_cuda_attn_bwd_kernels: its own decision).
static const char *gpu_bwd_kernels(const ae_attn_args *a) {
#ifdef AE_HAVE_CUDA // (a build without CUDA skips in main, before any test)
    return ae_cuda_attn_bwd_kernels(g_gpu, a);
#else
    (void)a;
    return "(no cuda build)";
#endif
}

// The kernels a case must run under AE_CUDA_ATTN_BWD=env (null: unset), as the dispatcher's
// conditions say (file header of cuda_attention_bwd.cu); fast: the tensor-core path takes the
// case (bwd_fast), wgmma: the Hopper kernels do when forced (bwd_wgmma). The default is "wgmma or
// split" where the Hopper kernels take the case, with or without a window (WGMMA_BWD_DEFAULT_ON
// and WGMMA_BWD_WINDOW_DEFAULT_ON decide; the default run must then give the bits of the run the
// dispatcher names).
static const char *kernels_want(int fast, int wgmma, const char *env) {
    if (!fast || (env && !strcmp(env, "ref"))) return "ref";
    if (env && !strcmp(env, "fused")) return "fused";
    if (env && !strcmp(env, "wgmma")) return wgmma ? "wgmma" : "split";
    if (env && !strcmp(env, "wgfused")) return wgmma ? "wgfused" : "split";
    if (!env && wgmma) return "wgmma or split";
    return "split";
}

// Fails unless the dispatcher runs (ran: gpu_bwd_kernels) the kernels kernels_want names.
static void check_kernels(const char *ran, int fast, int wgmma, const char *env,
                          const char *name) {
    const char *want = kernels_want(fast, wgmma, env);
    const int ok = !strcmp(ran, want) || (!strcmp(want, "wgmma or split") &&
                                          (!strcmp(ran, "wgmma") || !strcmp(ran, "split")));
    if (!ok)
        fail_msg("attention_bwd %s: with AE_CUDA_ATTN_BWD=%s the dispatcher runs the %s kernels "
                 "(ae_cuda_attn_bwd_kernels); the case calls for %s", name, env ? env : "(unset)",
                 ran, want);
}

// The outputs of the wgmma run that must equal the split run's bit for bit where the Hopper
// kernels take the case (taken): both accumulate the same k16 products in fp32 in the same order
// and round P and dS to bf16 the same way, except where their tilings differ:
//   dk 192: split's dK/dV kernel steps over 32 query rows (64 in wgmma), visiting them last to
//     first, and its dQ kernel over 32 keys: the products are added in another order (dq, dk, dv
//     within TOL_ATTN_TC);
//   a window, dk 128: the dQ kernels start their key steps at the first key their block's rows
//     see, blocks of 64 rows in split and 128 in wgmma, so the keys of a k16 product can differ
//     (dq within TOL_ATTN_TC). dK/dV keep their bits: the same 64-row query tiles from the same
//     first row, wgmma's 128-key blocks only adding tiles masked to exact zeros.
// dq from stored dS (ds): its products run over the dK/dV kernel's dS tiles, 64 keys at a time
//   in key order, so dq is within TOL_ATTN_TC of split's, never bit for bit.
// dsinks always: D and the sums over tokens run before and after either kernels. Where the
// Hopper kernels do not take the case, forcing wgmma runs split: every output.
static int wg_same_dq(int taken, int dk, int window, int ds) {
    return !taken || (dk == 128 && window <= 0 && !ds);
}
static int wg_same_dkdv(int taken, int dk) { return !taken || dk == 128; }

// One output of the wgmma run against split's: bit for bit when `same`, else within TOL_ATTN_TC
// (base: the accumulator's start, null for dq), not compared when `skip` (one visible key: the
// dq and dk increments are rounding, held to 1e-5 against the cpu instead).
static void wg_vs_split(const float *w, const float *sp, const float *base, size_t n, int same,
                        int skip, const char *what, const char *name) {
    if (same)
        check_same(w, sp, n, "attention_bwd wgmma == split %s %s", what, name);
    else if (!skip)
        check(w, sp, base, n, TOL_ATTN_TC, "attention_bwd wgmma vs split %s %s", what, name);
}

// The wgmma run against the split run (both F32 outputs, the same starting values of dk, dv,
// dsinks): see wg_same_dq.
static void check_wgmma_vs_split(const bwd_case *c, const char *name, float *const w[4],
                                 float *const sp[4], const float *dk0, const float *dv0,
                                 size_t nq, size_t nk, size_t nv) {
    const int taken = bwd_wgmma(c), one = one_key(c);
    const int same_q = wg_same_dq(taken, c->dk, c->window, bwd_ds(c));
    const int same_kv = wg_same_dkdv(taken, c->dk);
    printf("  attention_bwd path wgmma   %s: %s\n", name,
           taken ? "Hopper wgmma kernels" : "(not taken: split's kernels)");
    wg_vs_split(w[0], sp[0], NULL, nq, same_q, one, "dq", name);
    wg_vs_split(w[1], sp[1], dk0, nk, same_kv, one, "dk", name);
    if (w[2]) wg_vs_split(w[2], sp[2], dv0, nv, same_kv, 0, "dv", name);
    if (w[3])
        check_same(w[3], sp[3], (size_t)c->Hq, "attention_bwd wgmma == split dsinks %s", name);
}

// The default run (def) against the forced run of the kernels the dispatcher named for it
// (`kernels`: wgmma or split; named: that run's outputs): bit for bit.
static void check_default_is(const bwd_case *c, const char *name, const char *kernels,
                             float *const def[4], float *const named[4], size_t nq, size_t nk,
                             size_t nv) {
    check_same(def[0], named[0], nq, "attention_bwd default == %s dq %s", kernels, name);
    check_same(def[1], named[1], nk, "attention_bwd default == %s dk %s", kernels, name);
    if (def[2])
        check_same(def[2], named[2], nv, "attention_bwd default == %s dv %s", kernels, name);
    if (def[3])
        check_same(def[3], named[3], (size_t)c->Hq, "attention_bwd default == %s dsinks %s",
                   kernels, name);
}

// x0 with the key (or value) parts of the storage rows zeroed: rows 0 .. nstore − 1 of `stride`
// values, the first `width` of each (the parts attention_bwd writes under ae_attn_args.dkv_set).
static float *zero_parts(const float *x0, size_t n, const bwd_case *c, int stride, int width) {
    int S = c->pos0 + c->T, nstore = c->ring > 0 && c->ring < S ? c->ring : S;
    float *z = ae_test_floats_copy(x0, n);
    for (int row = 0; row < nstore; row++) memset(z + (size_t)row * stride, 0, sizeof(float) * width);
    return z;
}

// ae_attn_args.dkv_set under the run's kernels (its environment set by the caller): setting dk
// and dv over starting values dk0, dv0 gives the bits of adding into starting values that are 0
// on the storage rows' key and value parts and dk0, dv0 elsewhere (row padding, rows past S):
// every row part written as from zero, nothing else touched; dq and dsinks as without it.
static void check_dkv_set(const bwd_case *c, const ae_attn_args *ag, ae_ptr gq, ae_ptr gk,
                          ae_ptr gv, ae_ptr gdo, const float *dk0, const float *dv0,
                          const float *ds0, size_t nq, size_t nk, size_t nv, ae_dtype odt,
                          const char *label, const char *name) {
    float *zk = zero_parts(dk0, nk, c, ag->k_stride, c->Hkv * c->dk);
    // absorbed: v's parts lie inside k's rows (dv <= dk), zeroed with them
    float *zv = c->absorbed ? zk : zero_parts(dv0, nv, c, ag->v_stride, c->Hkv * c->dv);
    float *h[2][4];
    for (int set = 0; set < 2; set++) {
        ae_attn_args a = *ag;
        a.dkv_set = set;
        ae_ptr g_dq = dnew(nq, odt), g_dk = dnew_put(set ? dk0 : zk, nk, odt);
        ae_ptr g_dv = c->absorbed ? g_dk : dnew_put(set ? dv0 : zv, nv, odt);
        ae_ptr g_ds = c->sinks ? dnew_put(ds0, (size_t)c->Hq, AE_DT_F32) : ae_ptr_null();
        g_gpu->attention_bwd(g_gpu, &a, g_dq, g_dk, g_dv, g_ds, gdo, ae_ptr_null(), gq, gk, gv);
        h[set][0] = dget(g_dq, nq), h[set][1] = dget(g_dk, nk);
        h[set][2] = c->absorbed ? NULL : dget(g_dv, nv);
        h[set][3] = c->sinks ? dget(g_ds, (size_t)c->Hq) : NULL;
        dfree(g_dq), dfree(g_dk);
        if (!c->absorbed) dfree(g_dv);
        if (c->sinks) dfree(g_ds);
    }
    check_same(h[1][0], h[0][0], nq, "attention_bwd %s dkv_set: dq %s", label, name);
    check_same(h[1][1], h[0][1], nk, "attention_bwd %s dkv_set: dk == added from zeroed parts %s",
               label, name);
    if (h[1][2])
        check_same(h[1][2], h[0][2], nv, "attention_bwd %s dkv_set: dv == added from zeroed parts %s",
                   label, name);
    if (h[1][3])
        check_same(h[1][3], h[0][3], (size_t)c->Hq, "attention_bwd %s dkv_set: dsinks %s", label,
                   name);
    for (int set = 0; set < 2; set++)
        for (int i = 0; i < 4; i++) free(h[set][i]);
    if (zv != zk) free(zv);
    free(zk);
}

// One case: the cpu once, then the gpu runs of k_bwd_runs, each checked against the cpu (the
// repeated runs against their first bit for bit instead; the F32 default, fused, split and wgmma
// runs must differ from the ref run where the tensor-core path applies, equal it elsewhere; every
// run's kernels as ae_cuda_attn_bwd_kernels names them: check_kernels; wgmma against split:
// check_wgmma_vs_split; the default against the run it names: check_default_is). K/V storage
// has 5 rows past the last position (with no ring) holding NaN, which must not reach any
// output; the gradients of those rows and of row padding must stay at their starting values.
static void run_attn_bwd(ae_rng *r, const bwd_case *c, int also_bf16) {
    int T = c->T, S = c->pos0 + T, Hq = c->Hq, Hkv = c->Hkv, dk = c->dk, dv = c->dv;
    ae_attn_args a = ae_attn_dense(T, c->pos0, Hq, Hkv, dk, dv, c->window,
                                   1.0f / sqrtf((float)dk), ae_ptr_null());
    a.ring = c->ring;
    a.k_stride = Hkv * dk + c->kpad;
    a.v_stride = c->absorbed ? a.k_stride : Hkv * dv + c->vpad;
    int rows = c->ring > 0 ? c->ring : S + 5;
    size_t nq = (size_t)T * Hq * dk, no = (size_t)T * Hq * dv;
    size_t nk = (size_t)rows * a.k_stride, nv = (size_t)rows * a.v_stride;
    float *q = hnormal(r, nq, c->qscale > 0 ? c->qscale : 1.0f);
    float *k = hnormal(r, nk, 1.0f), *v = c->absorbed ? k : hnormal(r, nv, 1.0f);
    float *dout = hnormal(r, no, 1.0f);
    for (int row = S; row < rows; row++) { // never written cache rows
        for (int i = 0; i < a.k_stride; i++) k[(size_t)row * a.k_stride + i] = NAN;
        if (!c->absorbed)
            for (int i = 0; i < a.v_stride; i++) v[(size_t)row * a.v_stride + i] = NAN;
    }
    float *sinks = NULL;
    if (c->sinks) {
        int vis = c->window > 0 && c->window < S ? c->window : S;
        sinks = ae_test_floats((size_t)Hq);
        for (int h = 0; h < Hq; h++) sinks[h] = logf((float)vis) + 4.0f * ae_rng_uniform(r) - 2.0f;
    }
    // starting values of the accumulators (dk == dv share one buffer when absorbed)
    float *dk0 = hnormal(r, nk, 0.05f), *dv0 = c->absorbed ? dk0 : hnormal(r, nv, 0.05f);
    float *ds0 = hnormal(r, (size_t)Hq, 0.5f);

    // cpu
    float *cq = ae_test_floats(nq), *ck = ae_test_floats_copy(dk0, nk);
    float *cv = c->absorbed ? ck : ae_test_floats_copy(dv0, nv);
    float *cs = ae_test_floats_copy(ds0, (size_t)Hq);
    ae_attn_args ac = a;
    ac.sinks = sinks ? ae_host_f32(sinks) : ae_ptr_null();
    g_cpu->attention_bwd(g_cpu, &ac, ae_host_f32(cq), ae_host_f32(ck), ae_host_f32(cv),
                         sinks ? ae_host_f32(cs) : ae_ptr_null(), ae_host_f32(dout),
                         ae_ptr_null(), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));

    // gpu inputs
    ae_ptr gq = dnew_put(q, nq, AE_DT_BF16), gk = dnew_put(k, nk, AE_DT_BF16);
    ae_ptr gv = c->absorbed ? gk : dnew_put(v, nv, AE_DT_BF16);
    ae_ptr gdo = dnew_put(dout, no, c->dout_f32 ? AE_DT_F32 : AE_DT_BF16);
    ae_attn_args ag = a;
    ag.sinks = sinks ? dnew_put(sinks, (size_t)Hq, AE_DT_F32) : ae_ptr_null();
    char name[200];
    bwd_case_name(c, name, sizeof name);

    float *res[RUN_F32][4]; // the F32 runs' dq, dk, dv (null: absorbed), dsinks (null: none)
    memset(res, 0, sizeof res);
    const int fast = bwd_fast(c);
    const char *default_kernels = NULL; // what the dispatcher runs by default (RUN_DEFAULT)
    const int nruns = also_bf16 ? (int)(sizeof k_bwd_runs / sizeof *k_bwd_runs) : RUN_F32;
    for (int run = 0; run < nruns; run++) {
        const bwd_run *br = &k_bwd_runs[run];
        ae_dtype odt = br->odt;
        ae_ptr g_dq0 = dnew(nq + 1, odt); // overwritten: stays NaN-poisoned until written
        ae_ptr g_dq = ae_ptr_at(g_dq0, c->dq_odd ? 1 : 0);
        ae_ptr g_dk = dnew_put(dk0, nk, odt), g_dv = c->absorbed ? g_dk : dnew_put(dv0, nv, odt);
        ae_ptr g_ds = sinks ? dnew_put(ds0, (size_t)Hq, AE_DT_F32) : ae_ptr_null();
        if (br->env) setenv("AE_CUDA_ATTN_BWD", br->env, 1);
        if (br->dq) set_dq_kernels(br->dq);
        g_gpu->attention_bwd(g_gpu, &ag, g_dq, g_dk, g_dv, g_ds, gdo, ae_ptr_null(), gq, gk, gv);
        const char *kernels = gpu_bwd_kernels(&ag);
        const char *dq_form = strcmp(kernels, "wgmma") ? "-" : gpu_dq_form();
        if (br->same_as < 0)
            check_dkv_set(c, &ag, gq, gk, gv, gdo, dk0, dv0, ds0, nq, nk, nv, odt, br->label, name);
        if (br->env) unsetenv("AE_CUDA_ATTN_BWD");
        if (br->dq) set_dq_kernels(NULL);
        check_kernels(kernels, fast, bwd_wgmma(c), br->env, name);
        if (!strcmp(kernels, "wgmma")) { // the dQ form asked for, or the default's
            const char *want = br->dq ? br->dq : bwd_ds(c) ? "ds" : "ws";
            if (strcmp(dq_form, want))
                fail_msg("attention_bwd %s: %s ran dq as %s, the case calls for %s", name,
                         br->label, dq_form, want);
        }
        if (run == RUN_DEFAULT) default_kernels = kernels;
        float *hq = dget(g_dq, nq), *hk = dget(g_dk, nk), *hv = c->absorbed ? NULL : dget(g_dv, nv);
        float *hs = sinks ? dget(g_ds, (size_t)Hq) : NULL;
        float *const *refr = res[RUN_REF];
        if (run > RUN_REF && run < RUN_F32 && br->same_as < 0) {
            // which path ran: tensor cores differ from the reference
            size_t nv_ = hv ? nv : 0;
            int same = !memcmp(hq, refr[0], sizeof(float) * nq) &&
                       !memcmp(hk, refr[1], sizeof(float) * nk) &&
                       (!hv || !memcmp(hv, refr[2], sizeof(float) * nv_));
            if (fast && S >= 17 && same)
                fail_msg("attention_bwd %s: %s gave the CUDA-core results bit for bit (the "
                         "tensor-core path did not run)", name, br->label);
            if (!fast && !same)
                fail_msg("attention_bwd %s: %s differs from the CUDA-core kernels on a case the "
                         "tensor-core path does not take", name, br->label);
            printf("  attention_bwd path %s %s: %s, kernels %s, dq %s\n", br->label, name,
                   fast ? (S >= 17 ? "tensor cores (differs from ref)" : "tensor cores")
                        : "CUDA cores (== ref)", kernels, dq_form);
        }
        if (run == RUN_SPLIT && fast) { // informative: dK, dV come from the same loop in both
            float *const *fu = res[RUN_FUSED];
            printf("  attention_bwd split vs fused %s: dk %s, dv %s\n", name,
                   memcmp(hk, fu[1], sizeof(float) * nk) ? "differs" : "bit-identical",
                   !hv ? "(absorbed)"
                       : memcmp(hv, fu[2], sizeof(float) * nv) ? "differs" : "bit-identical");
        }
        if (run == RUN_WGMMA && fast) {
            float *const w[4] = {hq, hk, hv, hs};
            check_wgmma_vs_split(c, name, w, res[RUN_SPLIT], dk0, dv0, nq, nk, nv);
            check_default_is(c, name, default_kernels, res[RUN_DEFAULT],
                             strcmp(default_kernels, "wgmma") ? res[RUN_SPLIT] : w, nq, nk, nv);
        }
        if (run == RUN_WGFUSED && fast) { // dK, dV: wgmma's loop, the same bits
            float *const *wm = res[RUN_WGMMA];
            check_same(hk, wm[1], nk, "attention_bwd wgfused == wgmma dk %s", name);
            if (hv) check_same(hv, wm[2], nv, "attention_bwd wgfused == wgmma dv %s", name);
            if (!bwd_wgmma(c)) // not taken: split ran both times
                check_same(hq, wm[0], nq, "attention_bwd wgfused == wgmma dq %s", name);
        }
        if (br->same_as >= 0) { // the same call again: bit-identical
            float *const *f = res[br->same_as];
            const char *pn = br->label;
            if (run == RUN_WGMMA2 && bwd_ds(c)) // dq from stored dS before: its own sums
                check_dq_dk(c, "", pn, name, hq, cq, nq, TOL_ATTN_TC, hk, dk0, ck, dk0, nk,
                            TOL_ATTN_TC);
            else
                check_same(hq, f[0], nq, "attention_bwd %s dq determinism %s", pn, name);
            check_same(hk, f[1], nk, "attention_bwd %s dk determinism %s", pn, name);
            if (hv) check_same(hv, f[2], nv, "attention_bwd %s dv determinism %s", pn, name);
            if (hs)
                check_same(hs, f[3], (size_t)Hq, "attention_bwd %s dsinks determinism %s", pn,
                           name);
        } else {
            double tol = TOL_ATTN_REF, tol_k = TOL_ATTN_REF, tol_v = TOL_ATTN_REF;
            if (run > 0 && fast) tol = tol_k = tol_v = TOL_ATTN_TC;
            if (odt == AE_DT_BF16) {
                if (!fast) tol = tol_k = tol_v = TOL_ATTN_BF16;
                double nk_ = bf16_noise(ck, dk0, nk), nv_ = bf16_noise(cv, dv0, nv);
                if (3 * nk_ > tol_k) tol_k = 3 * nk_;
                if (3 * nv_ > tol_v) tol_v = 3 * nv_;
            }
            float *bk0 = dk0, *bv0 = dv0;
            if (odt == AE_DT_BF16) { // the starting values as the bf16 buffers held them
                bk0 = ae_test_floats_copy(dk0, nk);
                for (size_t i = 0; i < nk; i++) bk0[i] = ae_test_bf16(bk0[i]);
                bv0 = bk0;
                if (!c->absorbed) {
                    bv0 = ae_test_floats_copy(dv0, nv);
                    for (size_t i = 0; i < nv; i++) bv0[i] = ae_test_bf16(bv0[i]);
                }
            }
            const char *pn = br->label;
            check_dq_dk(c, "", pn, name, hq, cq, nq, tol, hk, bk0, ck, dk0, nk, tol_k);
            if (hv) check(hv, cv, bv0, nv, tol_v, "attention_bwd %s dv  %s", pn, name);
            if (hs) check(hs, cs, ds0, (size_t)Hq, tol, "attention_bwd %s dsinks %s", pn, name);
            if (bk0 != dk0) free(bk0);
            if (bv0 != dv0 && bv0 != bk0) free(bv0);
        }
        if (run < RUN_F32) {
            res[run][0] = hq, res[run][1] = hk, res[run][2] = hv, res[run][3] = hs;
        } else {
            free(hq), free(hk), free(hv), free(hs);
        }
        dfree(g_dq0), dfree(g_dk);
        if (!c->absorbed) dfree(g_dv);
        if (sinks) dfree(g_ds);
    }
    attn_io io = {.c = c, .name = name, .ac = ac, .ag = ag, .nq = nq, .no = no, .nk = nk,
                  .nv = nv, .q = q, .k = k, .v = v, .dout = dout, .gq = gq, .gk = gk, .gv = gv,
                  .gdo = gdo, .cq = cq, .ck = ck, .cv = cv, .cs = cs, .dk0 = dk0, .dv0 = dv0,
                  .ds0 = ds0, .rec = res[RUN_DEFAULT]};
    run_attn_saved(&io);
    for (int run = 0; run < RUN_F32; run++)
        for (int i = 0; i < 4; i++) free(res[run][i]);
    dfree(gq), dfree(gk), dfree(gdo);
    if (!c->absorbed) dfree(gv);
    if (sinks) dfree(ag.sinks);
    free(q), free(k), free(dout), free(sinks), free(dk0), free(ds0), free(cq), free(ck), free(cs);
    if (!c->absorbed) free(v), free(dv0), free(cv);
}

static void run_bwd_cases(const bwd_case *cases, size_t n, int also_bf16, uint64_t seed) {
    ae_rng r;
    ae_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) run_attn_bwd(&r, &cases[i], also_bf16);
}

// Full causal and GQA at the head dims of the flash kernels (32, 64, 128), T around and off
// tile multiples.
static void test_attention_bwd_causal(void **state) {
    (void)state;
    const bwd_case cases[] = {
        // T, pos0, Hq, Hkv, dk, dv, window, ring, sinks, kpad, vpad, absorbed, qscale, dout_f32, dq_odd
        {1, 0, 2, 2, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {17, 0, 4, 4, 32, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {64, 0, 8, 2, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0},     // GQA 4:1, one tile
        {77, 0, 8, 2, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},   // GQA 4:1, T not a tile multiple
        {77, 0, 8, 2, 128, 128, 0, 0, 1, 0, 0, 0, 0, 0, 0},   // + sinks
        {130, 0, 4, 1, 128, 128, 0, 0, 1, 0, 0, 0, 3, 0, 0},  // GQA 4:1 (Hkv 1), peaky softmax
        {300, 0, 16, 4, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // several tiles of both loops
    };
    run_bwd_cases(cases, sizeof cases / sizeof *cases, 1, 901);
}

// Sliding windows (smaller and larger than T), continuation chunks (pos0 > 0), ring caches.
static void test_attention_bwd_window(void **state) {
    (void)state;
    const bwd_case cases[] = {
        {200, 0, 8, 2, 64, 64, 33, 0, 1, 0, 0, 0, 0, 0, 0},   // W < T, sinks
        {200, 0, 8, 2, 128, 128, 64, 0, 0, 0, 0, 0, 0, 0, 0}, // W = a tile
        {50, 0, 4, 2, 32, 32, 300, 0, 0, 0, 0, 0, 0, 0, 0},   // W > T
        {130, 37, 4, 1, 128, 128, 64, 0, 1, 0, 0, 0, 0, 0, 0}, // continuation with a window
        {40, 100, 8, 8, 64, 64, 0, 0, 1, 0, 0, 0, 0, 0, 0},   // continuation, full causal
        {3, 20, 4, 2, 64, 64, 8, 10, 1, 0, 0, 0, 0, 0, 0},    // ring: T + W − 1 = ring slots
        {1, 50, 4, 2, 128, 128, 16, 16, 0, 0, 0, 0, 0, 0, 0}, // ring, one-token decode
        {20, 0, 4, 2, 64, 64, 6, 25, 0, 0, 0, 0, 0, 0, 0},    // ring that never wraps
        {24, 0, 4, 1, 64, 64, 5, 30, 1, 0, 0, 0, 0, 0, 0},    // ring larger than the sequence
        {6, 0, 2, 1, 64, 64, 3, 4, 1, 0, 0, 0, 0, 0, 0},      // ring that wraps within the call
    };
    run_bwd_cases(cases, sizeof cases / sizeof *cases, 0, 902);
}

// MLA shapes (materialised 192/128 with padded rows, absorbed 576/512 and 288/256 with dk == dv
// aliased), and dims no flash kernel has (the fallback), unaligned strides.
static void test_attention_bwd_mla_odd(void **state) {
    (void)state;
    const bwd_case cases[] = {
        {100, 0, 4, 4, 192, 128, 0, 0, 0, 8, 8, 0, 0, 0, 0},  // MLA materialised, padded rows
        {70, 0, 4, 4, 192, 128, 32, 0, 1, 0, 0, 0, 0, 0, 0},  // + window, sinks
        {40, 0, 8, 1, 576, 512, 0, 0, 0, 0, 0, 1, 0, 0, 0},   // absorbed: k == v rows, dk == dv
        {33, 9, 16, 1, 288, 256, 16, 0, 1, 0, 0, 1, 0, 0, 0}, // absorbed, window, sinks, pos0
        {33, 0, 6, 3, 40, 24, 0, 0, 1, 3, 5, 0, 0, 0, 0},     // odd dims, unaligned strides
        {21, 4, 4, 2, 8, 6, 5, 0, 0, 1, 0, 0, 0, 0, 0},       // tiny dims
    };
    run_bwd_cases(cases, sizeof cases / sizeof *cases, 1, 903);
}

// The shape classes of the tensor-core path (cuda_attention_bwd_tc.cu): Qwen3 / GateSWA heads
// (128), the test teachers' (64, 32), MLA materialised (192/128, Hq == Hkv); T = 1, odd T and T
// off the 64-row tiles; GQA groups 1 and 4; windows below, at and above T (fully masked tiles
// skipped); sinks; strided K/V rows; continuation chunks (pos0 > 0); F32 and BF16 dout.
static void test_attention_bwd_fast(void **state) {
    (void)state;
    const bwd_case cases[] = {
        // T, pos0, Hq, Hkv, dk, dv, window, ring, sinks, kpad, vpad, absorbed, qscale, dout_f32, dq_odd
        {1, 0, 4, 1, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},      // one token, GQA 4
        {1, 0, 2, 2, 192, 128, 0, 0, 1, 0, 0, 0, 0, 0, 0},      // MLA, one token, sink
        {17, 0, 4, 4, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},     // GQA 1, odd T
        {100, 0, 8, 2, 128, 128, 0, 0, 1, 0, 0, 0, 0, 1, 0},    // GQA 4, sinks, F32 dout
        {257, 0, 8, 2, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},    // several tiles of both kernels
        {257, 0, 4, 4, 128, 128, 100, 0, 1, 8, 16, 0, 0, 0, 0}, // W < T, sinks, strided rows
        {257, 0, 8, 2, 128, 128, 64, 0, 0, 0, 0, 0, 0, 1, 0},   // W = one tile, F32 dout
        {100, 0, 8, 2, 128, 128, 1000, 0, 1, 0, 0, 0, 0, 0, 0}, // W > T
        {200, 0, 4, 1, 128, 128, 0, 0, 0, 0, 0, 0, 3, 0, 0},    // peaky softmax
        {257, 0, 4, 1, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0},      // d 64 (test teachers), GQA 4
        {257, 0, 8, 2, 64, 64, 33, 0, 1, 0, 0, 0, 0, 0, 0},     // d 64, W < T, sinks
        {100, 0, 4, 4, 32, 32, 17, 0, 1, 0, 0, 0, 0, 0, 0},     // d 32 (qwen3-micro), W, sinks
        {257, 0, 4, 2, 32, 32, 0, 0, 0, 8, 8, 0, 0, 1, 0},      // d 32, strided, F32 dout
        {257, 0, 4, 4, 192, 128, 0, 0, 0, 8, 8, 0, 0, 0, 0},    // MLA materialised, padded rows
        {100, 0, 4, 4, 192, 128, 50, 0, 1, 0, 0, 0, 0, 1, 0},   // MLA, W < T, sinks, F32 dout
        {130, 60, 8, 2, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},   // continuation chunk
        {77, 31, 4, 2, 64, 64, 40, 0, 1, 0, 0, 0, 0, 0, 0},     // continuation, W, sinks
        {129, 0, 8, 2, 192, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},    // MLA dims, GQA 4, T = 2 tiles + 1
        {300, 21, 4, 2, 192, 128, 100, 0, 1, 0, 0, 0, 0, 1, 0}, // MLA dims, pos0, W over tiles
        {450, 0, 16, 8, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},   // qwen3-1.7B heads, 8 key tiles
        {200, 0, 8, 2, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 1}, // dq at an odd float offset
    };
    run_bwd_cases(cases, sizeof cases / sizeof *cases, 1, 905);
}

// The shapes of the Hopper backward (cuda_attention_bwd_wgmma.cu: 128-key dK/dV blocks, 64-row
// query steps; 128-row dQ blocks, 64-key steps): d 128 with GQA groups 1, 4 and 8 (the teachers'
// and GateSWA's full layers), T = 1, T off every tile size, T in the thousands (1100: 9 key
// blocks, 70 query steps of G = 8 packed rows), sinks on and off; MLA materialised 192/128
// (Hq = Hkv) at T 1 and 1030. The runs of k_bwd_runs include wgmma (forced) and split.
static void test_attention_bwd_wgmma(void **state) {
    (void)state;
    const bwd_case cases[] = {
        // T, pos0, Hq, Hkv, dk, dv, window, ring, sinks, kpad, vpad, absorbed, qscale, dout_f32, dq_odd
        {1, 0, 8, 1, 128, 128, 0, 0, 1, 0, 0, 0, 0, 0, 0},      // one token, GQA 8, sink
        {200, 0, 2, 2, 128, 128, 0, 0, 1, 0, 0, 0, 0, 0, 0},    // GQA 1, sinks
        {333, 0, 16, 2, 128, 128, 0, 0, 0, 0, 0, 0, 0, 1, 0},   // GQA 8, F32 dout
        {333, 0, 16, 2, 128, 128, 0, 0, 1, 8, 8, 0, 0, 0, 0},   // GQA 8, sinks, strided rows
        {1100, 0, 8, 1, 128, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},   // GQA 8, T in the thousands
        {1030, 0, 8, 2, 128, 128, 0, 0, 1, 0, 0, 0, 2, 0, 0},   // GQA 4, sinks, peakier
        {1, 0, 4, 4, 192, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0},      // MLA, one token
        {1030, 0, 4, 4, 192, 128, 0, 0, 1, 0, 0, 0, 0, 0, 0},   // MLA, T in the thousands, sinks
        {250, 70, 4, 4, 192, 128, 0, 0, 0, 0, 0, 0, 0, 1, 1},   // MLA, pos0, F32 dout, dq odd
    };
    run_bwd_cases(cases, sizeof cases / sizeof *cases, 1, 906);
}

// attention_bwd at a training size (T 4096 full causal: 64 key tiles): no CPU reference at this
// size, but two default runs must be bit-identical, the backward from a saved forward (out and
// lse kept by `attention`) must give the same bits, likewise two wgmma runs (AE_CUDA_ATTN_BWD=
// wgmma: the Hopper kernels; the second with the synchronous dQ kernel (set_dq_kernels), the
// first with the default dQ form: dq from stored dS where Hq == Hkv (then dk, dv the same bits,
// dq within TOL_ATTN_TC), else the warp-specialised kernel; a third with the warp-specialised
// kernel forced, bit-identical to the synchronous one; then with the dS tiles' budget at half
// the heads (AE_CUDA_ATTN_BWD_DS_MB: two chunks, bit-identical to all at once) and at 0
// (dq from the warp-specialised kernel, bit-identical to it)) and wgmma from the saved forward; the fused kernel
// (AE_CUDA_ATTN_BWD=fused: dQ sums chained through its counters over the 64 key tiles) must
// agree with the default within TOL_ATTN_TC, and wgmma with split (AE_CUDA_ATTN_BWD=split) as
// check_wgmma_vs_split says (d 128: bit for bit; dk 192: within TOL_ATTN_TC); two wgfused runs
// from the saved forward (dQ chained through counters over the 32 key tiles of 128) the same
// bits, their dk and dv wgmma's bits and dq within TOL_ATTN_TC of wgmma's. Each run's kernels
// are the ones the dispatcher names (check_kernels), the default's bits those of that run.
static void training_size_attn(int T, int Hq, int Hkv, int dk, int dv, uint64_t seed) {
    size_t nq = (size_t)T * Hq * dk, no = (size_t)T * Hq * dv;
    size_t nk = (size_t)T * Hkv * dk, nv = (size_t)T * Hkv * dv;
    ae_attn_args a = ae_attn_dense(T, 0, Hq, Hkv, dk, dv, 0, 1.0f / sqrtf((float)dk),
                                   ae_ptr_null());
    ae_ptr q = dnew(nq, AE_DT_BF16), k = dnew(nk, AE_DT_BF16), v = dnew(nv, AE_DT_BF16);
    ae_ptr dout = dnew(no, AE_DT_BF16), out = dnew(no, AE_DT_BF16);
    g_gpu->fill_normal(g_gpu, q, nq, 1.0f, seed);
    g_gpu->fill_normal(g_gpu, k, nk, 1.0f, seed + 1);
    g_gpu->fill_normal(g_gpu, v, nv, 1.0f, seed + 2);
    g_gpu->fill_normal(g_gpu, dout, no, 1.0f, seed + 3);
    ae_attn_args al = a; // the training forward: out and lse kept
    al.lse = dnew((size_t)T * Hq, AE_DT_F32);
    g_gpu->attention(g_gpu, &al, out, q, k, v);
    char shape[96];
    snprintf(shape, sizeof shape, "T=%d Hq=%d Hkv=%d dk=%d dv=%d", T, Hq, Hkv, dk, dv);
    enum { DEF, DEF2, DEF_SAVED, FUSED, SPLIT, WG, WG2, WG3, WG_SAVED, WF, WF2, WG_CHUNK, WG_NODS,
           NRUNS };
    // the stored dS tiles' budget (AE_CUDA_ATTN_BWD_DS_MB): half the heads' tiles and half a
    // head's (the heads in two chunks: at T 4096, 16 heads, 8 x 32 dK/dV blocks a chunk, over
    // the H200's 132 SMs), and 0 (dq from the warp-specialised kernel instead)
    char half_mb[24];
    const int ntq = (T + 63) / 64;
    const double head_mb = (double)ntq * (ntq + 1) / 2 * 8192 / 1048576.0;
    snprintf(half_mb, sizeof half_mb, "%.0f", ceil(head_mb * (Hkv / 2 + 0.5)));
    const struct {
        const char *env;   // AE_CUDA_ATTN_BWD (null: unset)
        int saved;         // given the forward's out and lse
        const char *dq;    // AE_CUDA_ATTN_BWD_DQ (set_dq_kernels; null: unset)
        const char *ds_mb; // AE_CUDA_ATTN_BWD_DS_MB (null: unset)
    } runs[NRUNS] = {{NULL, 0, NULL, NULL},      {NULL, 0, NULL, NULL},
                     {NULL, 1, NULL, NULL},      {"fused", 0, NULL, NULL},
                     {"split", 0, NULL, NULL},   {"wgmma", 0, NULL, NULL},
                     {"wgmma", 0, "sync", NULL}, {"wgmma", 0, "ws", NULL},
                     {"wgmma", 1, NULL, NULL},   {"wgfused", 1, NULL, NULL},
                     {"wgfused", 1, NULL, NULL}, {"wgmma", 0, NULL, half_mb},
                     {"wgmma", 0, NULL, "0"}};
    float *res[NRUNS][3];
    const char *kernels[NRUNS], *dq_form[NRUNS];
    const int wgmma = g_hopper && (dk == 128 || dk == 192) && dv == 128;
    const int ds = wgmma && Hq == Hkv; // dq from stored dS by default (launch_ds)
    for (int run = 0; run < NRUNS; run++) {
        ae_ptr dq = dnew(nq, AE_DT_F32), dk_ = dnew(nk, AE_DT_F32), dv_ = dnew(nv, AE_DT_F32);
        g_gpu->fill(g_gpu, dk_, nk, 0.0f);
        g_gpu->fill(g_gpu, dv_, nv, 0.0f);
        if (runs[run].env) setenv("AE_CUDA_ATTN_BWD", runs[run].env, 1);
        if (runs[run].dq) set_dq_kernels(runs[run].dq);
        if (runs[run].ds_mb) setenv("AE_CUDA_ATTN_BWD_DS_MB", runs[run].ds_mb, 1);
        g_gpu->attention_bwd(g_gpu, runs[run].saved ? &al : &a, dq, dk_, dv_, ae_ptr_null(), dout,
                             runs[run].saved ? out : ae_ptr_null(), q, k, v);
        if (runs[run].ds_mb) unsetenv("AE_CUDA_ATTN_BWD_DS_MB");
        kernels[run] = gpu_bwd_kernels(runs[run].saved ? &al : &a);
        dq_form[run] = strcmp(kernels[run], "wgmma") ? "-" : gpu_dq_form();
        if (runs[run].env) unsetenv("AE_CUDA_ATTN_BWD");
        if (runs[run].dq) set_dq_kernels(NULL);
        check_kernels(kernels[run], 1, wgmma, runs[run].env, shape);
        if (!strcmp(kernels[run], "wgmma")) {
            const char *want = runs[run].dq ? runs[run].dq : ds && run != WG_NODS ? "ds" : "ws";
            if (strcmp(dq_form[run], want))
                fail_msg("attention_bwd %s: run %d ran dq as %s, not %s", shape, run, dq_form[run],
                         want);
        }
        if (g_gpu->sync(g_gpu) != AE_OK) fail_msg("attention_bwd %s: %s", shape, ae_last_error());
        res[run][0] = dget(dq, nq), res[run][1] = dget(dk_, nk), res[run][2] = dget(dv_, nv);
        dfree(dq), dfree(dk_), dfree(dv_);
    }
    const size_t n[3] = {nq, nk, nv};
    const char *names[3] = {"dq", "dk", "dv"};
    printf("  attention_bwd kernels %s: default %s (dq %s), fused %s, split %s, wgmma %s (dq %s), "
           "wgfused %s\n", shape, kernels[DEF], dq_form[DEF], kernels[FUSED], kernels[SPLIT],
           kernels[WG], dq_form[WG], kernels[WF]);
    const int def_wg = !strcmp(kernels[DEF], "wgmma");
    const int same_kv = wg_same_dkdv(wgmma, dk), same[3] = {wg_same_dq(wgmma, dk, 0, ds), same_kv,
                                                           same_kv};
    for (int i = 0; i < 3; i++) {
        check_same(res[DEF2][i], res[DEF][i], n[i], "attention_bwd %s determinism %s", names[i],
                   shape);
        check_same(res[DEF_SAVED][i], res[DEF][i], n[i], "attention_bwd saved == recomputed %s %s",
                   names[i], shape);
        if (i == 0 && ds) // dq from stored dS (WG) against the synchronous dQ kernel's
            check(res[WG2][i], res[WG][i], NULL, n[i], TOL_ATTN_TC, "attention_bwd wgmma dq, "
                  "synchronous dQ kernel vs dQ from stored dS %s", shape);
        else
            check_same(res[WG2][i], res[WG][i], n[i], "attention_bwd wgmma %s, synchronous dQ "
                       "kernel == default (%s) %s", names[i], dq_form[WG], shape);
        check_same(res[WG3][i], res[WG2][i], n[i], "attention_bwd wgmma %s, warp-specialised dQ "
                   "kernel == synchronous %s", names[i], shape);
        check_same(res[WG_CHUNK][i], res[WG][i], n[i], "attention_bwd wgmma %s, dS tiles half the "
                   "heads at a time (AE_CUDA_ATTN_BWD_DS_MB=%s) == all heads %s", names[i], half_mb,
                   shape);
        check_same(res[WG_NODS][i], res[WG3][i], n[i], "attention_bwd wgmma %s, no room for the "
                   "dS tiles (AE_CUDA_ATTN_BWD_DS_MB=0) == the warp-specialised dQ kernel %s",
                   names[i], shape);
        check_same(res[WG_SAVED][i], res[WG][i], n[i],
                   "attention_bwd wgmma saved == recomputed %s %s", names[i], shape);
        check(res[FUSED][i], res[DEF][i], NULL, n[i], TOL_ATTN_TC,
              "attention_bwd fused vs default %s %s", names[i], shape);
        wg_vs_split(res[WG][i], res[SPLIT][i], NULL, n[i], same[i], 0, names[i], shape);
        check_same(res[WF2][i], res[WF][i], n[i], "attention_bwd wgfused %s determinism %s",
                   names[i], shape);
        if (i > 0 || !wgmma) // dK, dV: wgmma's loop (and split for both where wgmma is not taken)
            check_same(res[WF][i], res[WG][i], n[i], "attention_bwd wgfused == wgmma %s %s",
                       names[i], shape);
        else
            check(res[WF][i], res[WG][i], NULL, n[i], TOL_ATTN_TC, "attention_bwd wgfused vs "
                  "wgmma %s %s", names[i], shape);
        check_same(res[DEF][i], res[def_wg ? WG : SPLIT][i], n[i],
                   "attention_bwd default == %s %s %s", kernels[DEF], names[i], shape);
    }
    for (int run = 0; run < NRUNS; run++)
        for (int i = 0; i < 3; i++) free(res[run][i]);
    dfree(q), dfree(k), dfree(v), dfree(dout), dfree(out), dfree(al.lse);
}

// Training sizes: Qwen3-8B attention (Hq 32, Hkv 8, d 128) and the MLA student of Qwen3-1.7B
// (Hq = Hkv = 16, dk 192, dv 128) at T 4096; the 8B hidden-size norm. Timing: bench/bench_attn.c.
static void test_training_size(void **state) {
    (void)state;
    training_size_attn(4096, 32, 8, 128, 128, 1);
    training_size_attn(4096, 16, 16, 192, 128, 11);

    int M = 4096, D = 4096;
    size_t n = (size_t)M * D;
    ae_ptr x = dnew(n, AE_DT_BF16), dy = dnew(n, AE_DT_BF16), w = dnew(D, AE_DT_BF16);
    g_gpu->fill_normal(g_gpu, x, n, 1.0f, 5);
    g_gpu->fill_normal(g_gpu, dy, n, 1.0f, 6);
    g_gpu->fill(g_gpu, w, D, 1.0f);
    float *rw[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr dx = dnew(n, AE_DT_BF16), dw = dnew(D, AE_DT_F32);
        g_gpu->fill(g_gpu, dx, n, 0.0f);
        g_gpu->fill(g_gpu, dw, D, 0.0f);
        g_gpu->rmsnorm_bwd(g_gpu, dx, dw, dy, x, w, M, D, 1e-6f);
        if (g_gpu->sync(g_gpu) != AE_OK) fail_msg("rmsnorm_bwd: %s", ae_last_error());
        rw[run] = dget(dw, D);
        dfree(dx), dfree(dw);
    }
    check_same(rw[0], rw[1], (size_t)D, "rmsnorm_bwd dw determinism at M=%d D=%d", M, D);
    free(rw[0]), free(rw[1]);
    dfree(x), dfree(dy), dfree(w);
}

int main(void) {
    int rc = ae_test_open_gpu(&g_gpu, 1);
    if (rc) return rc;
    g_cpu = ae_backend_cpu();
    if (!g_gpu->rmsnorm_bwd || !g_gpu->rope_bwd || !g_gpu->attention_bwd || !g_gpu->gate_mul_bwd ||
        !g_gpu->silu_mul_bwd) {
        printf("FAIL: the cuda backend leaves backward slots NULL\n");
        return 1;
    }
    const char *dev = g_gpu->device;
    g_hopper = strstr(dev, "H100") || strstr(dev, "H200") || strstr(dev, "H800") ||
               strstr(dev, "H20") || strstr(dev, "GH200");
    printf("device: %s (%s)\n", dev, g_hopper ? "Hopper: wgmma runs checked" : "not Hopper");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_bwd),
        cmocka_unit_test(test_matmul_bwd_dw_bf16),
        cmocka_unit_test(test_rope_bwd),
        cmocka_unit_test(test_gate_mul_bwd),
        cmocka_unit_test(test_silu_mul_bwd),
        cmocka_unit_test(test_attention_bwd_causal),
        cmocka_unit_test(test_attention_bwd_window),
        cmocka_unit_test(test_attention_bwd_mla_odd),
        cmocka_unit_test(test_attention_bwd_fast),
        cmocka_unit_test(test_attention_bwd_wgmma),
        cmocka_unit_test(test_training_size),
    };
    int fails = cmocka_run_group_tests(tests, NULL, NULL);
    ae_backend_close(g_gpu);
    return fails ? 1 : 0;
}
