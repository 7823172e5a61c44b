// The CUDA training ops (backend/cuda_train.cu) against the CPU reference (backend/cpu_train.c,
// itself checked against double references and finite differences in test_train_ops.c):
// embed_bwd, mse_rows, cosine_rows, softmax_stats, kd_chunk, sumsq, axpby, adamw, adamw8. Needs
// a CUDA build and a GPU; prints "SKIP ..." and exits 77 (ctest: skipped) otherwise, or fails with
// AE_REQUIRE_GPU=1 (scripts/test-gpu.sh).
//
// Method (as test_cuda_grad_ops): inputs are drawn with fixed seeds; every value a BF16 tensor
// holds is rounded to bf16 on the host first, so both backends compute on identical numbers. The
// backend is opened with AE_CUDA_POISON=1 (new allocations NaN-filled): an output the op forgets
// to write, or an input it should not read (axpby's y when beta == 0), shows up as NaN. Shapes
// include N = 1, odd D (not a multiple of 8 or of the 256-thread block), chunks of the
// vocabulary that are not multiples of the block, row strides larger than the chunk, and
// pointers one element off 16-byte alignment (the scalar paths of the vectorised kernels).
// Every call is made twice on fresh outputs and the two results must be bit-identical.
//
// Tolerances (each check prints its measured error):
//   EXACT        embed_bwd (the same float additions in token order; a BF16 table, as
//                --grad-dtype bf16 has it: the CPU's F32 sum from the same bf16 start rounded
//                to bf16 once), axpby (the same float
//                operations; BF16 y: the CPU's result rounded to bf16), adamw w/m/v (the CPU's
//                float operations in its order, rounded intrinsics, no contraction), argmax:
//                bit-identical. adamw's BF16 param must equal bf16(w) exactly. adamw8: w, every
//                code and every block absmax bit-identical (the same tables, float operations
//                and correctly rounded sqrt/division on both sides), also with several
//                blocks a warp. adamw / adamw8 with a BF16
//                gradient (--grad-dtype bf16): the same, against the CPU given the bf16 values
//                as F32 (the kernels widen bf16 exactly).
//   TOL_ROW      1e-6 relative per row: mse/cosine losses, double sums in another order, one
//                float rounding (6e-8) at the end.
//   TOL_F32      1e-5 relative L2: F32 gradients (mse dy, cosine da: double on both sides,
//                ~1e-7; kd dzs: expf of the same arguments, a few ulp).
//   TOL_BF16_OUT 5e-3 relative L2: a BF16 output is the fp32 result rounded once (~1.5e-3).
//   TOL_SE       2e-6 relative: softmax_stats' se (expf, 2 ulp, vs the CPU's double exp, summed
//                in double; se is stored as float after every chunk on both sides). mx: exact.
//   TOL_KL       1e-5 relative + 2e-6 absolute per row: KD chunk sums, expf of arguments formed
//                in double; terms pt·(lpt − lps) with pt off by ~2 ulp.
//   SUMSQ        1 float ulp (2^-23 relative): double sums in another order, rounded to float;
//                an F64 output: 1e-9 relative to a sequential double sum in the test (whose own
//                rounding error grows with n: ~2e-12 measured at n = 5e7; a float-rounded
//                result would be off by ~6e-8).
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/adam8.h"
#include "backend/cpu.h"
#include "backend/ops.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "util/backends.h"
#include "util/testutil.h"

#define TOL_ROW 1e-6
#define TOL_F32 1e-5
#define TOL_BF16_OUT 5e-3
#define TOL_SE 2e-6
#define TOL_KL_REL 1e-5
#define TOL_KL_ABS 2e-6

static const ae_backend *g_gpu, *g_cpu;

// ---- host helpers --------------------------------------------------------------------------

static const char *dtn(ae_dtype dt) { return ae_dtype_name(dt); }

// ---- device helpers ------------------------------------------------------------------------

static ae_ptr dnew(size_t n, ae_dtype dt) { return ae_tb_alloc(g_gpu, n, dt); }
static void dput(ae_ptr p, const void *h, ae_dtype hdt, size_t n) { ae_tb_put(g_gpu, p, h, hdt, n); }
static ae_ptr dnew_put(const float *h, size_t n, ae_dtype dt) {
    return ae_tb_alloc_put(g_gpu, h, AE_DT_F32, n, dt);
}
static float *dget(ae_ptr p, size_t n) { return ae_tb_out(g_gpu, p, n); }
static int32_t *dget_i(ae_ptr p, size_t n) { return ae_tb_out_i32(g_gpu, p, n); }
static void dfree(ae_ptr p) { g_gpu->free(g_gpu, p); }

static void dsync(const char *what) {
    if (g_gpu->sync(g_gpu) != AE_OK) fail_msg("%s: %s", what, ae_last_error());
}

// ---- comparisons ---------------------------------------------------------------------------

static char g_what[400];

static void name_it(const char *fmt, va_list ap) { vsnprintf(g_what, sizeof g_what, fmt, ap); }

// ||got − ref|| / ||ref||; fails on non-finite values or > tol.
static void check_l2(const float *got, const float *ref, size_t n, double tol, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));
static void check_l2(const float *got, const float *ref, size_t n, double tol, const char *fmt,
                     ...) {
    va_list ap;
    va_start(ap, fmt);
    name_it(fmt, ap);
    va_end(ap);
    double num = 0, den = 0, worst = -1;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ref[i])) fail_msg("%s: cpu [%zu] = %g is not finite", g_what, i, ref[i]);
        if (!isfinite(got[i]))
            fail_msg("%s: cuda [%zu] of %zu = %g, cpu %g (never written, or a poisoned value "
                     "read)", g_what, i, n, (double)got[i], (double)ref[i]);
        double d = (double)got[i] - ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
        if (fabs(d) > worst) worst = fabs(d), wi = i;
    }
    double e = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  %-84s rel L2 %.2e (tol %.0e)\n", g_what, e, tol);
    fflush(stdout);
    if (!(e <= tol))
        fail_msg("%s: relative L2 error %.3g > %.3g (largest difference at [%zu]: cuda %.9g, cpu "
                 "%.9g)", g_what, e, tol, wi, (double)got[wi], (double)ref[wi]);
}

// Per element |got − ref| <= rel·|ref| + abs; prints the largest relative error.
static void check_each(const float *got, const float *ref, size_t n, double rel, double abs,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void check_each(const float *got, const float *ref, size_t n, double rel, double abs,
                       const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    name_it(fmt, ap);
    va_end(ap);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= rel * fabs(ref[i]) + abs))
            fail_msg("%s: [%zu] cuda %.9g, cpu %.9g (tol %.1e rel + %.1e abs)", g_what, i,
                     (double)got[i], (double)ref[i], rel, abs);
        double e = d / (fabs(ref[i]) > 0 ? fabs(ref[i]) : 1.0);
        if (e > worst) worst = e;
    }
    printf("  %-84s max rel %.2e (tol %.0e + %.0e abs)\n", g_what, worst, rel, abs);
    fflush(stdout);
}

// Bit-identical float arrays (F32 downloads; BF16 values convert exactly).
static void check_same(const float *a, const float *b, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void check_same(const float *a, const float *b, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    name_it(fmt, ap);
    va_end(ap);
    if (memcmp(a, b, sizeof(float) * n) != 0) {
        size_t i = 0;
        while (i < n && memcmp(a + i, b + i, sizeof(float)) == 0) i++;
        fail_msg("%s: differ at [%zu] of %zu: %.9g vs %.9g", g_what, i, n, (double)a[i],
                 (double)b[i]);
    }
    printf("  %-84s bit-identical (%zu values)\n", g_what, n);
    fflush(stdout);
}

static float *bf16_all(const float *x, size_t n) {
    float *p = ae_test_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = ae_test_bf16(x[i]);
    return p;
}

// =============================================================================================
// embed_bwd

// tab_dt: the table's dtype (BF16: a --grad-dtype bf16 gradient; its start values bf16 already)
static void run_embed_tab(ae_rng *r, int T, int D, int V, int distinct, ae_dtype dy_dt,
                          ae_dtype tab_dt) {
    size_t nt = (size_t)T * D, nv = (size_t)V * D;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(ae_rng_u64(r) % (uint64_t)distinct);
    if (T > 2) ids[T - 1] = V - 1, ids[0] = V - 1; // the last row, first and last token
    float *dy = ae_test_normal(r, nt, 1.0f, dy_dt), *tab0 = ae_test_normal(r, nv, 2.0f, tab_dt);
    float *ref = ae_test_floats_copy(tab0, nv);
    g_cpu->embed_bwd(g_cpu, ae_host_f32(ref), ae_host_f32(dy), ae_host_i32(ids), T, D);
    if (tab_dt == AE_DT_BF16) // the same fp32 sum, rounded once
        for (size_t i = 0; i < nv; i++) ref[i] = ae_test_bf16(ref[i]);
    ae_ptr gdy = dnew_put(dy, nt, dy_dt), gids = dnew(T, AE_DT_I32);
    dput(gids, ids, AE_DT_I32, (size_t)T);
    float *res[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr gtab = dnew_put(tab0, nv, tab_dt);
        dsync("embed_bwd upload");
        g_gpu->embed_bwd(g_gpu, gtab, gdy, gids, T, D);
        dsync("embed_bwd");
        res[run] = dget(gtab, nv);
        dfree(gtab);
    }
    check_same(res[0], ref, nv, "embed_bwd T=%d D=%d V=%d distinct=%d dy %s table %s vs cpu%s", T,
               D, V, distinct, dtn(dy_dt), dtn(tab_dt),
               tab_dt == AE_DT_BF16 ? " rounded to bf16" : "");
    check_same(res[0], res[1], nv, "embed_bwd determinism T=%d D=%d", T, D);
    dfree(gdy), dfree(gids);
    free(ids), free(dy), free(tab0), free(ref), free(res[0]), free(res[1]);
}

static void run_embed(ae_rng *r, int T, int D, int V, int distinct, ae_dtype dy_dt) {
    run_embed_tab(r, T, D, V, distinct, dy_dt, AE_DT_F32);
}

static void test_embed_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1001);
    run_embed(&r, 1, 8, 5, 5, AE_DT_F32);
    run_embed(&r, 37, 33, 11, 4, AE_DT_BF16);     // many repeats, odd D
    run_embed(&r, 300, 1000, 50, 50, AE_DT_F32);  // D over several column blocks
    run_embed(&r, 5000, 72, 3, 1, AE_DT_BF16);    // one row takes almost every token
    run_embed(&r, 1029, 257, 4000, 4000, AE_DT_BF16);
    // training size: Qwen3-8B hidden size, a batch of 8192 tokens (table cut to 32000 rows to
    // keep the host reference small); ids spread over the table, then all alike (padding)
    run_embed(&r, 8192, 4096, 32000, 32000, AE_DT_BF16);
    run_embed(&r, 8192, 4096, 32000, 1, AE_DT_BF16);
    // BF16 tables (--grad-dtype bf16): odd D, repeats, one row taking most tokens, training size
    run_embed_tab(&r, 1, 8, 5, 5, AE_DT_F32, AE_DT_BF16);
    run_embed_tab(&r, 37, 33, 11, 4, AE_DT_BF16, AE_DT_BF16);
    run_embed_tab(&r, 5000, 72, 3, 1, AE_DT_BF16, AE_DT_BF16);
    run_embed_tab(&r, 8192, 4096, 32000, 32000, AE_DT_BF16, AE_DT_BF16);
}

// =============================================================================================
// mse_rows, cosine_rows

static void run_rows(ae_rng *r, int cosine, int N, int D, int normalized, ae_dtype in_dt,
                     ae_dtype g_dt, int with_grad) {
    size_t n = (size_t)N * D;
    float scale = 0.73f;
    float *y = ae_test_normal(r, n, 1.0f, in_dt), *t = ae_test_normal(r, n, 1.0f, in_dt);
    if (cosine && N > 2)
        for (int d = 0; d < D; d++) y[D + d] = 0.0f, t[2 * (size_t)D + d] = 0.0f; // zero rows
    float *out = ae_test_floats((size_t)N), *g = ae_test_floats(n);
    if (cosine)
        g_cpu->cosine_rows(g_cpu, ae_host_f32(out), ae_host_f32(g), ae_host_f32(y),
                           ae_host_f32(t), N, D, scale);
    else
        g_cpu->mse_rows(g_cpu, ae_host_f32(out), ae_host_f32(g), ae_host_f32(y), ae_host_f32(t),
                        N, D, normalized, scale);
    ae_ptr gy = dnew_put(y, n, in_dt), gt = dnew_put(t, n, in_dt);
    float *ro[2], *rg[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr gout = dnew((size_t)N, AE_DT_F32), gg = with_grad ? dnew(n, g_dt) : ae_ptr_null();
        if (cosine)
            g_gpu->cosine_rows(g_gpu, gout, gg, gy, gt, N, D, scale);
        else
            g_gpu->mse_rows(g_gpu, gout, gg, gy, gt, N, D, normalized, scale);
        ro[run] = dget(gout, (size_t)N);
        rg[run] = with_grad ? dget(gg, n) : NULL;
        dfree(gout), dfree(gg);
    }
    const char *op = cosine ? "cosine_rows" : normalized ? "mse_rows(normalized)" : "mse_rows";
    char name[160];
    snprintf(name, sizeof name, "N=%d D=%d in %s grad %s", N, D, dtn(in_dt),
             with_grad ? dtn(g_dt) : "null");
    check_each(ro[0], out, (size_t)N, TOL_ROW, 1e-7, "%s loss %s", op, name);
    check_same(ro[0], ro[1], (size_t)N, "%s loss determinism %s", op, name);
    if (with_grad) {
        check_l2(rg[0], g, n, g_dt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_F32, "%s grad %s", op, name);
        check_same(rg[0], rg[1], n, "%s grad determinism %s", op, name);
        if (cosine && N > 2)
            for (size_t k = (size_t)D; k < 3 * (size_t)D; k++)
                if (rg[0][k] != 0.0f) fail_msg("cosine_rows: zero row gradient [%zu] = %g", k, rg[0][k]);
        free(rg[0]), free(rg[1]);
    }
    dfree(gy), dfree(gt);
    free(y), free(t), free(out), free(g), free(ro[0]), free(ro[1]);
}

static void test_mse_cosine_rows(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1002);
    const int shapes[][2] = {{1, 1}, {1, 4096}, {7, 33}, {300, 1000}, {64, 4099}, {2048, 256}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int N = shapes[s][0], D = shapes[s][1];
        for (int cosine = 0; cosine < 2; cosine++)
            for (int norm = 0; norm < (cosine ? 1 : 2); norm++) {
                run_rows(&r, cosine, N, D, norm, AE_DT_BF16, AE_DT_F32, 1);
                run_rows(&r, cosine, N, D, norm, AE_DT_F32, AE_DT_BF16, 1);
            }
    }
    run_rows(&r, 0, 9, 100, 1, AE_DT_F32, AE_DT_F32, 0);
    run_rows(&r, 1, 9, 100, 0, AE_DT_BF16, AE_DT_F32, 0);
}

// =============================================================================================
// softmax_stats + kd_chunk over the chunks of a vocabulary

typedef struct {
    int N, V, chunk;
    float tau;
    int close; // student = teacher + small noise (a realistic, small KL)
    ae_dtype dz_dt;
} kd_case;

// Stats and KD over the chunks of (N, V) logits (row stride V) on one backend.
//   st, ss: (N, 2);  at: (N) teacher argmax;  kl: (N);  dz: (N, V)
static void kd_run(const ae_backend *be, const kd_case *c, ae_ptr zt, ae_ptr zs, ae_ptr st,
                   ae_ptr ss, ae_ptr at, ae_ptr kl, ae_ptr dz) {
    float it = 1.0f / c->tau, gscale = c->tau / c->N;
    for (int v0 = 0; v0 < c->V; v0 += c->chunk) {
        int vc = c->V - v0 < c->chunk ? c->V - v0 : c->chunk;
        be->softmax_stats(be, st, at, ae_ptr_at(zt, (size_t)v0), c->V, c->N, vc, v0, it);
        be->softmax_stats(be, ss, ae_ptr_null(), ae_ptr_at(zs, (size_t)v0), c->V, c->N, vc, v0,
                          it);
    }
    for (int v0 = 0; v0 < c->V; v0 += c->chunk) {
        int vc = c->V - v0 < c->chunk ? c->V - v0 : c->chunk;
        be->kd_chunk(be, kl, ae_ptr_at(dz, (size_t)v0), c->V, ae_ptr_at(zt, (size_t)v0),
                     ae_ptr_at(zs, (size_t)v0), c->V, st, ss, c->N, vc, it, gscale);
    }
}

static void run_kd(ae_rng *r, const kd_case *c) {
    size_t n = (size_t)c->N * c->V;
    float *zt = ae_test_normal(r, n, 3.0f, AE_DT_F32), *zs = ae_test_normal(r, n, 3.0f, AE_DT_F32);
    if (c->close)
        for (size_t k = 0; k < n; k++) zs[k] = zt[k] + 0.05f * zs[k];
    // row 0: its maximum tied at a column of the first chunk and one of the last chunk
    int lo = c->chunk / 3 < c->V ? c->chunk / 3 : 0, hi = c->V - 1;
    zt[lo] = zt[hi] = 25.0f;
    float *st = ae_test_floats(2 * (size_t)c->N), *ss = ae_test_floats(2 * (size_t)c->N);
    float *kl = ae_test_floats((size_t)c->N);
    float *dz = ae_test_floats(n);
    int32_t *at = malloc(sizeof(int32_t) * (size_t)c->N);
    for (int i = 0; i < c->N; i++) kl[i] = 0.5f;
    kd_run(g_cpu, c, ae_host_f32(zt), ae_host_f32(zs), ae_host_f32(st), ae_host_f32(ss),
           ae_host_i32(at), ae_host_f32(kl), ae_host_f32(dz));
    if (at[0] != lo) fail_msg("cpu argmax of row 0: %d, want %d (tie)", at[0], lo);
    ae_ptr gzt = dnew_put(zt, n, AE_DT_F32), gzs = dnew_put(zs, n, AE_DT_F32);
    float *rst[2], *rss[2], *rkl[2], *rdz[2];
    int32_t *rat[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr gst = dnew(2 * (size_t)c->N, AE_DT_F32), gss = dnew(2 * (size_t)c->N, AE_DT_F32);
        ae_ptr gat = dnew((size_t)c->N, AE_DT_I32), gkl = dnew((size_t)c->N, AE_DT_F32);
        ae_ptr gdz = dnew(n, c->dz_dt);
        g_gpu->fill(g_gpu, gkl, (size_t)c->N, 0.5f); // kl accumulates: the cpu's start too
        kd_run(g_gpu, c, gzt, gzs, gst, gss, gat, gkl, gdz);
        rst[run] = dget(gst, 2 * (size_t)c->N), rss[run] = dget(gss, 2 * (size_t)c->N);
        rat[run] = dget_i(gat, (size_t)c->N), rkl[run] = dget(gkl, (size_t)c->N);
        rdz[run] = dget(gdz, n);
        dfree(gst), dfree(gss), dfree(gat), dfree(gkl), dfree(gdz);
    }
    char name[160];
    snprintf(name, sizeof name, "N=%d V=%d chunk=%d tau=%g%s dzs %s", c->N, c->V, c->chunk,
             (double)c->tau, c->close ? " close" : "", dtn(c->dz_dt));
    for (int i = 0; i < c->N; i++) {
        if (rst[0][2 * i] != st[2 * i] || rss[0][2 * i] != ss[2 * i])
            fail_msg("softmax_stats mx row %d %s: cuda %.9g / %.9g, cpu %.9g / %.9g", i, name,
                     (double)rst[0][2 * i], (double)rss[0][2 * i], (double)st[2 * i],
                     (double)ss[2 * i]);
        if (rat[0][i] != at[i])
            fail_msg("softmax_stats argmax row %d %s: cuda %d, cpu %d", i, name, rat[0][i], at[i]);
    }
    float *se_g = ae_test_floats(2 * (size_t)c->N), *se_c = ae_test_floats(2 * (size_t)c->N);
    for (int i = 0; i < c->N; i++)
        se_g[2 * i] = rst[0][2 * i + 1], se_g[2 * i + 1] = rss[0][2 * i + 1],
        se_c[2 * i] = st[2 * i + 1], se_c[2 * i + 1] = ss[2 * i + 1];
    check_each(se_g, se_c, 2 * (size_t)c->N, TOL_SE, 0.0, "softmax_stats se %s", name);
    check_each(rkl[0], kl, (size_t)c->N, TOL_KL_REL, TOL_KL_ABS, "kd_chunk kl %s", name);
    if (c->dz_dt == AE_DT_BF16) {
        float *dzb = bf16_all(dz, n);
        check_l2(rdz[0], dzb, n, TOL_BF16_OUT, "kd_chunk dzs %s", name);
        free(dzb);
    } else {
        check_l2(rdz[0], dz, n, TOL_F32, "kd_chunk dzs %s", name);
    }
    check_same(rst[0], rst[1], 2 * (size_t)c->N, "softmax_stats determinism %s", name);
    check_same(rkl[0], rkl[1], (size_t)c->N, "kd_chunk kl determinism %s", name);
    check_same(rdz[0], rdz[1], n, "kd_chunk dzs determinism %s", name);
    if (memcmp(rat[0], rat[1], sizeof(int32_t) * (size_t)c->N) != 0)
        fail_msg("softmax_stats argmax differs between runs %s", name);
    dfree(gzt), dfree(gzs);
    free(zt), free(zs), free(st), free(ss), free(kl), free(dz), free(at), free(se_g), free(se_c);
    for (int run = 0; run < 2; run++)
        free(rst[run]), free(rss[run]), free(rat[run]), free(rkl[run]), free(rdz[run]);
}

static void test_softmax_stats_kd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1003);
    const kd_case cases[] = {
        {1, 1000, 1000, 1.0f, 0, AE_DT_F32},
        {1, 33000, 16384, 1.0f, 0, AE_DT_BF16},  // two full chunks and a tail of 232
        {7, 5000, 999, 2.0f, 0, AE_DT_F32},      // chunks not a multiple of the block
        {7, 5000, 999, 2.0f, 1, AE_DT_BF16},
        {300, 4099, 4099, 1.0f, 1, AE_DT_F32},   // one chunk
        {300, 20000, 16384, 0.5f, 0, AE_DT_F32},
        {64, 777, 100, 1.0f, 0, AE_DT_F32},      // many small chunks (se rounded each time)
        {5, 300, 1, 1.0f, 0, AE_DT_F32},         // one column per chunk
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_kd(&r, &cases[i]);
}

// =============================================================================================
// sumsq

static void run_sumsq(ae_rng *r, size_t n, ae_dtype dt, int offset) {
    float *x = ae_test_normal(r, n + 1, 1.5f, dt), ref;
    g_cpu->sumsq(g_cpu, ae_host_f32(&ref), ae_host_f32(x + offset), n);
    ae_ptr gx = dnew_put(x, n + 1, dt);
    float res[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr go = dnew(1, AE_DT_F32);
        g_gpu->sumsq(g_gpu, go, ae_ptr_at(gx, (size_t)offset), n);
        float *h = dget(go, 1);
        res[run] = h[0];
        free(h), dfree(go);
    }
    check_each(res, &ref, 1, 1.2e-7, 0.0, "sumsq n=%zu %s offset %d", n, dtn(dt), offset);
    check_same(&res[0], &res[1], 1, "sumsq determinism n=%zu %s offset %d", n, dtn(dt), offset);
    // an F64 output keeps the double sum: against a sequential double sum here, 1e-9 relative
    // (the order of the additions differs; the sequential sum's own error grows with n)
    double want = 0.0, got = 0.0;
    for (size_t j = 0; j < n; j++) want += (double)x[offset + j] * x[offset + j];
    ae_ptr g64 = dnew(1, AE_DT_F64);
    g_gpu->sumsq(g_gpu, g64, ae_ptr_at(gx, (size_t)offset), n);
    if (g_gpu->download(g_gpu, &got, AE_DT_F64, g64, 1) != AE_OK)
        fail_msg("download of an F64 sum: %s", ae_last_error());
    if (!(fabs(got - want) <= 1e-9 * want))
        fail_msg("sumsq F64 n=%zu %s offset %d: %.17g, want %.17g", n, dtn(dt), offset, got, want);
    dfree(g64);
    dfree(gx), free(x);
}

static float gpu_sumsq_of(const float *x, size_t n, ae_dtype dt) {
    ae_ptr gx = dnew_put(x, n, dt), go = dnew(1, AE_DT_F32);
    g_gpu->sumsq(g_gpu, go, gx, n);
    float *h = dget(go, 1), v = h[0];
    free(h), dfree(gx), dfree(go);
    return v;
}

static void test_sumsq(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1004);
    const size_t sizes[] = {1, 3, 1000, 65537, 1000003, 50000001};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (int off = 0; off < 2; off++) {
            run_sumsq(&r, sizes[s], AE_DT_F32, off);
            run_sumsq(&r, sizes[s], AE_DT_BF16, off);
        }
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    for (int k = 0; k < 2; k++) {
        ae_dtype dt = k ? AE_DT_BF16 : AE_DT_F32;
        if (gpu_sumsq_of(x, 9, dt) != 285.0f) fail_msg("sumsq 1..9 %s", dtn(dt));
        float y[9];
        memcpy(y, x, sizeof y);
        y[7] = INFINITY;
        float v = gpu_sumsq_of(y, 9, dt);
        if (!(isinf(v) && v > 0)) fail_msg("sumsq with Inf %s: %g", dtn(dt), v);
        y[2] = NAN;
        if (!isnan(gpu_sumsq_of(y, 9, dt))) fail_msg("sumsq with Inf and NaN %s", dtn(dt));
        y[7] = 1.0f;
        if (!isnan(gpu_sumsq_of(y, 9, dt))) fail_msg("sumsq with NaN %s", dtn(dt));
        float big[3] = {3e19f, 3e19f, 1.0f}; // the sum exceeds float's range
        v = gpu_sumsq_of(big, 3, dt);
        if (!isinf(v)) fail_msg("sumsq beyond FLT_MAX %s: %g", dtn(dt), v);
    }
    printf("  sumsq: Inf -> Inf, NaN -> NaN, overflow -> Inf (F32 and BF16)\n");
}

// =============================================================================================
// axpby

static void run_axpby(ae_rng *r, size_t n, ae_dtype ydt, ae_dtype xdt, float beta, int offset) {
    float alpha = -0.37f;
    float *x = ae_test_normal(r, n + 1, 1.0f, xdt), *y = ae_test_normal(r, n + 1, 1.0f, ydt);
    float *ref = ae_test_floats_copy(y, n + 1);
    g_cpu->axpby(g_cpu, ae_host_f32(ref + offset), alpha, ae_host_f32(x + offset), beta, n);
    if (ydt == AE_DT_BF16)
        for (size_t i = 0; i <= n; i++) ref[i] = ae_test_bf16(ref[i]);
    ae_ptr gx = dnew_put(x, n + 1, xdt);
    float *res[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr gy = dnew(n + 1, ydt); // NaN-poisoned
        if (beta != 0.0f) dput(gy, y, AE_DT_F32, n + 1);
        g_gpu->axpby(g_gpu, ae_ptr_at(gy, (size_t)offset), alpha, ae_ptr_at(gx, (size_t)offset),
                     beta, n);
        res[run] = dget(gy, n + 1);
        dfree(gy);
    }
    check_same(res[0] + offset, ref + offset, n, "axpby n=%zu y %s x %s beta=%g offset %d", n,
               dtn(ydt), dtn(xdt), (double)beta, offset);
    check_same(res[0], res[1], n + 1, "axpby determinism n=%zu", n);
    dfree(gx);
    free(x), free(y), free(ref), free(res[0]), free(res[1]);
}

static void test_axpby(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1005);
    const size_t sizes[] = {1, 7, 4096, 1000003};
    for (size_t s = 0; s < 4; s++)
        for (int off = 0; off < 2; off++) {
            run_axpby(&r, sizes[s], AE_DT_F32, AE_DT_F32, 0.9f, off);
            run_axpby(&r, sizes[s], AE_DT_F32, AE_DT_BF16, 0.0f, off);
            run_axpby(&r, sizes[s], AE_DT_BF16, AE_DT_F32, -2.0f, off);
            run_axpby(&r, sizes[s], AE_DT_BF16, AE_DT_BF16, 0.0f, off);
        }
}

// =============================================================================================
// adamw

// gdt: the gradient's dtype (BF16: --grad-dtype bf16; the CPU gets the same bf16 values as F32)
static void run_adamw_g(ae_rng *r, size_t n, ae_dtype pdt, int with_param, int offset, int steps,
                        ae_dtype gdt) {
    size_t na = n + 1;
    float *w = ae_test_normal(r, na, 1.0f, AE_DT_F32), *m = ae_test_floats(na);
    float *v = ae_test_floats(na);
    for (size_t j = 0; j < na; j++) m[j] = 0.0f, v[j] = 0.0f;
    ae_ptr gw = dnew_put(w, na, AE_DT_F32), gm = dnew_put(m, na, AE_DT_F32);
    ae_ptr gv = dnew_put(v, na, AE_DT_F32), gg = dnew(na, gdt);
    ae_ptr gp = with_param ? dnew(na, pdt) : ae_ptr_null(), gf = dnew(1, AE_DT_I32);
    int32_t zero = 0, flag = 0;
    dput(gf, &zero, AE_DT_I32, 1);
    char name[120];
    snprintf(name, sizeof name, "n=%zu param %s offset %d grad %s", n,
             with_param ? dtn(pdt) : "null", offset, dtn(gdt));
    for (int step = 1; step <= steps; step++) {
        float *g = ae_test_normal(r, na, 0.01f * step, gdt);
        ae_adamw_args a = {.lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                           .weight_decay = step % 2 ? 0.1f : 0.0f,
                           .bc1 = 1.0f - powf(0.9f, (float)step),
                           .bc2 = 1.0f - powf(0.95f, (float)step), .gscale = 0.8f};
        g_cpu->adamw(g_cpu, &a, ae_host_f32(w + offset), ae_host_f32(m + offset),
                     ae_host_f32(v + offset), ae_host_f32(g + offset), ae_ptr_null(),
                     ae_host_i32(&flag), n);
        dput(gg, g, AE_DT_F32, na);
        g_gpu->adamw(g_gpu, &a, ae_ptr_at(gw, offset), ae_ptr_at(gm, offset),
                     ae_ptr_at(gv, offset), ae_ptr_at(gg, offset), ae_ptr_at(gp, offset),
                     ae_ptr_at(gf, 0), n);
        float *rw = dget(gw, na), *rm = dget(gm, na), *rv = dget(gv, na);
        check_same(rw, w, na, "adamw w step %d %s (vs cpu)", step, name);
        check_same(rm, m, na, "adamw m step %d %s (vs cpu)", step, name);
        check_same(rv, v, na, "adamw v step %d %s (vs cpu)", step, name);
        if (with_param) {
            float *rp = dget(gp, na);
            float *want = pdt == AE_DT_BF16 ? bf16_all(rw, na) : ae_test_floats_copy(rw, na);
            check_same(rp + offset, want + offset, n, "adamw param == %s(w) step %d %s",
                       dtn(pdt), step, name);
            free(rp), free(want);
        }
        free(rw), free(rm), free(rv), free(g);
    }
    int32_t *f = dget_i(gf, 1);
    if (f[0] != 0 || flag != 0) fail_msg("adamw flag set on finite steps %s", name);
    free(f);
    dfree(gw), dfree(gm), dfree(gv), dfree(gg), dfree(gp), dfree(gf);
    free(w), free(m), free(v);
}

// flag after one GPU step with g[bad] = value (bad >= n: all finite), starting from flag0
static int32_t adamw_flag(size_t n, size_t bad, float value, int32_t flag0) {
    float *h = ae_test_floats(n);
    for (size_t j = 0; j < n; j++) h[j] = 0.01f;
    ae_ptr gw = dnew_put(h, n, AE_DT_F32), gm = dnew_put(h, n, AE_DT_F32);
    ae_ptr gv = dnew_put(h, n, AE_DT_F32);
    if (bad < n) h[bad] = value;
    ae_ptr gg = dnew_put(h, n, AE_DT_F32), gp = dnew(n, AE_DT_BF16), gf = dnew(1, AE_DT_I32);
    dput(gf, &flag0, AE_DT_I32, 1);
    ae_adamw_args a = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                       .weight_decay = 0.1f, .bc1 = 0.1f, .bc2 = 0.001f, .gscale = 1.0f};
    g_gpu->adamw(g_gpu, &a, gw, gm, gv, gg, gp, gf, n);
    int32_t *f = dget_i(gf, 1), r = f[0];
    free(f), free(h);
    dfree(gw), dfree(gm), dfree(gv), dfree(gg), dfree(gp), dfree(gf);
    return r;
}

static void run_adamw(ae_rng *r, size_t n, ae_dtype pdt, int with_param, int offset, int steps) {
    run_adamw_g(r, n, pdt, with_param, offset, steps, AE_DT_F32);
}

static void test_adamw(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1006);
    const size_t sizes[] = {1, 5, 1000, 1000003};
    for (size_t s = 0; s < 4; s++)
        for (int off = 0; off < 2; off++) {
            run_adamw(&r, sizes[s], AE_DT_BF16, 1, off, 3);
            run_adamw(&r, sizes[s], AE_DT_F32, 1, off, 2);
            run_adamw(&r, sizes[s], AE_DT_F32, 0, off, 2);
            run_adamw_g(&r, sizes[s], AE_DT_BF16, 1, off, 3, AE_DT_BF16); // --grad-dtype bf16
        }
    size_t n = 100003;
    if (adamw_flag(n, n, 0.0f, 0) != 0) fail_msg("adamw: flag set on a finite step");
    if (adamw_flag(n, 4, INFINITY, 0) != 1) fail_msg("adamw: flag not set by an Inf gradient");
    if (adamw_flag(n, n - 1, NAN, 0) != 1) fail_msg("adamw: flag not set by a NaN gradient (tail)");
    if (adamw_flag(n, 77, 1e30f, 0) != 1) fail_msg("adamw: flag not set by v overflowing");
    if (adamw_flag(n, n, 0.0f, 1) != 1) fail_msg("adamw: a finite step cleared the flag");
    printf("  adamw flag: set by Inf / NaN gradients and an overflowing v, never cleared\n");
}

// =============================================================================================
// adamw8: the same float operations and the same code tables as the cpu, so w, every code and
// every block absmax must be bit-identical to the CPU's (and a BF16 param exactly bf16(w)).

// Device codes of n values: a buffer of ceil(n/4) F32 words viewed as U8, as train/optim.c
// allocates them; zeroed.
static ae_ptr dcodes(size_t n) {
    size_t words = (n + 3) / 4;
    float *z = ae_test_floats(words);
    for (size_t j = 0; j < words; j++) z[j] = 0.0f;
    ae_ptr p = dnew_put(z, words, AE_DT_F32);
    free(z);
    return ae_ptr_make(p.data, AE_DT_U8);
}

static uint8_t *dget_codes(ae_ptr p, size_t n) {
    float *w = dget(ae_ptr_make(p.data, AE_DT_F32), (n + 3) / 4);
    return (uint8_t *)w; // the first n bytes are the codes
}

// gdt: the gradient's dtype, as run_adamw_g's. mis: w, g, param one value past an allocation's
// start and the codes 4 bytes past theirs (the kernel's unaligned path, no vector accesses).
static void run_adamw8_g(ae_rng *r, size_t n, ae_dtype pdt, int with_param, int steps,
                         ae_dtype gdt, int mis) {
    const size_t nb = ae_q8_blocks(n);
    float *w = ae_test_normal(r, n, 1.0f, AE_DT_F32), *ms = ae_test_floats(nb);
    float *vs = ae_test_floats(nb);
    uint8_t *mq = calloc(n, 1), *vq = calloc(n, 1);
    for (size_t b = 0; b < nb; b++) ms[b] = 0.0f, vs[b] = 0.0f;
    const size_t o = mis ? 1 : 0;
    ae_ptr bw = dnew(n + o, AE_DT_F32), gms = dnew_put(ms, nb, AE_DT_F32);
    ae_ptr gvs = dnew_put(vs, nb, AE_DT_F32), bmq = dcodes(n + 4 * o), bvq = dcodes(n + 4 * o);
    ae_ptr bg = dnew(n + o, gdt), bp = with_param ? dnew(n + o, pdt) : ae_ptr_null();
    ae_ptr gf = dnew(1, AE_DT_I32);
    ae_ptr gw = ae_ptr_at(bw, o), gg = ae_ptr_at(bg, o);
    ae_ptr gp = with_param ? ae_ptr_at(bp, o) : ae_ptr_null();
    ae_ptr gmq = ae_ptr_make((char *)bmq.data + 4 * o, AE_DT_U8);
    ae_ptr gvq = ae_ptr_make((char *)bvq.data + 4 * o, AE_DT_U8);
    dput(gw, w, AE_DT_F32, n);
    int32_t zero = 0, flag = 0;
    dput(gf, &zero, AE_DT_I32, 1);
    char name[120];
    snprintf(name, sizeof name, "n=%zu param %s grad %s%s", n, with_param ? dtn(pdt) : "null",
             dtn(gdt), mis ? " unaligned" : "");
    for (int step = 1; step <= steps; step++) {
        float *g = ae_test_normal(r, n, 0.01f * step, AE_DT_F32);
        for (size_t j = 0; j < n; j++) g[j] *= (float)(1 + (j / 97) % 5); // scales vary per block
        if (n > 300) for (size_t j = 256; j < 300; j++) g[j] = 0.0f;        // a zero stretch
        if (gdt == AE_DT_BF16) // the values a bf16 gradient holds, for both sides
            for (size_t j = 0; j < n; j++) g[j] = ae_test_bf16(g[j]);
        ae_adamw_args a = {.lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                           .weight_decay = step % 2 ? 0.1f : 0.0f,
                           .bc1 = 1.0f - powf(0.9f, (float)step),
                           .bc2 = 1.0f - powf(0.95f, (float)step), .gscale = 0.8f};
        g_cpu->adamw8(g_cpu, &a, ae_host_f32(w), ae_ptr_make(mq, AE_DT_U8), ae_host_f32(ms),
                      ae_ptr_make(vq, AE_DT_U8), ae_host_f32(vs), ae_host_f32(g), ae_ptr_null(),
                      ae_host_i32(&flag), n);
        dput(gg, g, AE_DT_F32, n);
        g_gpu->adamw8(g_gpu, &a, gw, gmq, gms, gvq, gvs, gg, gp, gf, n);
        float *rw = dget(gw, n), *rms = dget(gms, nb), *rvs = dget(gvs, nb);
        uint8_t *rmq = dget_codes(gmq, n), *rvq = dget_codes(gvq, n);
        check_same(rw, w, n, "adamw8 w step %d %s (vs cpu)", step, name);
        check_same(rms, ms, nb, "adamw8 m absmax step %d %s (vs cpu)", step, name);
        check_same(rvs, vs, nb, "adamw8 sqrt(v) absmax step %d %s (vs cpu)", step, name);
        if (memcmp(rmq, mq, n) || memcmp(rvq, vq, n))
            fail_msg("adamw8 codes step %d %s differ from the cpu's", step, name);
        if (with_param) {
            float *rp = dget(gp, n);
            float *want = pdt == AE_DT_BF16 ? bf16_all(rw, n) : ae_test_floats_copy(rw, n);
            check_same(rp, want, n, "adamw8 param == %s(w) step %d %s", dtn(pdt), step, name);
            free(rp), free(want);
        }
        free(rw), free(rms), free(rvs), free(rmq), free(rvq), free(g);
    }
    int32_t *f = dget_i(gf, 1);
    if (f[0] != 0 || flag != 0) fail_msg("adamw8 flag set on finite steps %s", name);
    free(f);
    dfree(bw), dfree(gms), dfree(gvs), dfree(bmq), dfree(bvq), dfree(bg), dfree(bp), dfree(gf);
    free(w), free(ms), free(vs), free(mq), free(vq);
}

static void run_adamw8(ae_rng *r, size_t n, ae_dtype pdt, int with_param, int steps) {
    run_adamw8_g(r, n, pdt, with_param, steps, AE_DT_F32, 0);
}

static void test_adamw8(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1008);
    const size_t sizes[] = {1, 5, 256, 257, 1000, 1000003};
    for (size_t s = 0; s < 6; s++) {
        run_adamw8(&r, sizes[s], AE_DT_BF16, 1, 4);
        run_adamw8(&r, sizes[s], AE_DT_F32, 0, 2);
        run_adamw8_g(&r, sizes[s], AE_DT_BF16, 1, 4, AE_DT_BF16, 0); // --grad-dtype bf16
    }
    run_adamw8_g(&r, 1000, AE_DT_BF16, 1, 2, AE_DT_BF16, 1);
    run_adamw8_g(&r, 4099, AE_DT_F32, 1, 2, AE_DT_F32, 1);
    // several quantisation blocks a warp (the grid is at most 8 blocks of 8 warps an SM: 8,448
    // warps on an H200): the grid-stride loop's later blocks
    run_adamw8_g(&r, 5000011, AE_DT_BF16, 1, 2, AE_DT_BF16, 0);
    run_adamw8_g(&r, 3000017, AE_DT_F32, 1, 2, AE_DT_F32, 1);
    // a NaN gradient sets the flag (the optimizer never passes one: it checks the norm first)
    size_t n = 1000;
    float *h = ae_test_floats(n);
    for (size_t j = 0; j < n; j++) h[j] = j == 999 ? NAN : 0.01f;
    ae_ptr gw = dnew_put(h, n, AE_DT_F32), gg = dnew_put(h, n, AE_DT_F32);
    float zero4[4] = {0, 0, 0, 0}; // the block absmax of 1000 values
    ae_ptr gmq = dcodes(n), gvq = dcodes(n), gms = dnew_put(zero4, 4, AE_DT_F32);
    ae_ptr gvs = dnew_put(zero4, 4, AE_DT_F32);
    ae_ptr gf = dnew(1, AE_DT_I32);
    int32_t zero = 0;
    dput(gf, &zero, AE_DT_I32, 1);
    ae_adamw_args a = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                       .weight_decay = 0.1f, .bc1 = 0.1f, .bc2 = 0.001f, .gscale = 1.0f};
    g_gpu->adamw8(g_gpu, &a, gw, gmq, gms, gvq, gvs, gg, ae_ptr_null(), gf, n);
    int32_t *f = dget_i(gf, 1);
    if (f[0] != 1) fail_msg("adamw8: flag not set by a NaN gradient");
    free(f), free(h);
    dfree(gw), dfree(gg), dfree(gmq), dfree(gvq), dfree(gms), dfree(gvs), dfree(gf);
    printf("  adamw8: w, codes and absmax bit-identical to the cpu; flag set by a NaN gradient\n");
}

// =============================================================================================
// training sizes: determinism at the sizes training uses (no CPU reference); their speed is
// measured in bench/, not here

static void test_training_size(void **state) {
    (void)state;
    // stage 2: a vocabulary chunk of 16384 columns for 8192 rows (Qwen3: 151936 = 9.3 chunks)
    int N = 8192, Vc = 16384;
    size_t n = (size_t)N * Vc;
    ae_ptr zt = dnew(n, AE_DT_F32), zs = dnew(n, AE_DT_F32), dz = dnew(n, AE_DT_BF16);
    ae_ptr st = dnew(2 * (size_t)N, AE_DT_F32), ss = dnew(2 * (size_t)N, AE_DT_F32);
    ae_ptr at = dnew((size_t)N, AE_DT_I32), kl = dnew((size_t)N, AE_DT_F32);
    g_gpu->fill_normal(g_gpu, zt, n, 3.0f, 11);
    g_gpu->fill_normal(g_gpu, zs, n, 3.0f, 12);
    float *kls[2];
    for (int run = 0; run < 2; run++) {
        g_gpu->fill(g_gpu, kl, (size_t)N, 0.0f);
        g_gpu->softmax_stats(g_gpu, st, at, zt, Vc, N, Vc, 0, 1.0f);
        g_gpu->softmax_stats(g_gpu, ss, ae_ptr_null(), zs, Vc, N, Vc, 0, 1.0f);
        g_gpu->kd_chunk(g_gpu, kl, dz, Vc, zt, zs, Vc, st, ss, N, Vc, 1.0f, 1.0f / N);
        dsync("kd_chunk");
        kls[run] = dget(kl, (size_t)N);
    }
    check_same(kls[0], kls[1], (size_t)N, "kd_chunk determinism N=%d Vc=%d", N, Vc);
    free(kls[0]), free(kls[1]);
    dfree(zt), dfree(zs), dfree(dz), dfree(st), dfree(ss), dfree(at), dfree(kl);

    // optimizer over 8B parameters' worth of one big tensor (Qwen3-8B embedding: 622M values)
    size_t np = (size_t)151936 * 4096;
    ae_ptr w = dnew(np, AE_DT_F32), m = dnew(np, AE_DT_F32), v = dnew(np, AE_DT_F32);
    ae_ptr g = dnew(np, AE_DT_F32), p = dnew(np, AE_DT_BF16), f = dnew(1, AE_DT_I32);
    ae_ptr o = dnew(1, AE_DT_F32);
    g_gpu->fill_normal(g_gpu, w, np, 1.0f, 13);
    g_gpu->fill_normal(g_gpu, g, np, 1e-3f, 14);
    g_gpu->fill(g_gpu, m, np, 0.0f);
    g_gpu->fill(g_gpu, v, np, 0.0f);
    g_gpu->fill(g_gpu, f, 1, 0.0f);
    ae_adamw_args a = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                       .weight_decay = 0.1f, .bc1 = 0.1f, .bc2 = 0.05f, .gscale = 1.0f};
    float ss2[2];
    for (int run = 0; run < 2; run++) {
        g_gpu->sumsq(g_gpu, o, g, np);
        g_gpu->adamw(g_gpu, &a, w, m, v, g, p, f, np);
        dsync("adamw");
        float *h = dget(o, 1);
        ss2[run] = h[0];
        free(h);
    }
    check_same(&ss2[0], &ss2[1], 1, "sumsq determinism n=%zu", np);
    dfree(w), dfree(m), dfree(v), dfree(g), dfree(p), dfree(f), dfree(o);
}

// After the GPU opened: every training op slot filled.
static int before(void) {
    if (!g_gpu->embed_bwd || !g_gpu->mse_rows || !g_gpu->cosine_rows || !g_gpu->softmax_stats ||
        !g_gpu->kd_chunk || !g_gpu->sumsq || !g_gpu->axpby || !g_gpu->adamw || !g_gpu->adamw8) {
        printf("FAIL: the cuda backend leaves training op slots NULL\n");
        return 1;
    }
    printf("device: %s\n", g_gpu->device);
    return 0;
}

int main(void) {
    g_cpu = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_bwd),     cmocka_unit_test(test_mse_cosine_rows),
        cmocka_unit_test(test_softmax_stats_kd), cmocka_unit_test(test_sumsq),
        cmocka_unit_test(test_axpby),         cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adamw8),
        cmocka_unit_test(test_training_size),
    };
    ae_test_gpu_group g = {.gpu = &g_gpu, .poison = 1, .before = before};
    return ae_test_gpu_main(&g, tests);
}
