// The MoE training ops on the GPU (backend/cuda_moe_train.cu) against the CPU reference
// (backend/cpu_moe_train.c, itself checked against its definition and finite differences in
// test_grad_ops.c), the grouped expert GEMMs (expert_matmul and its input gradient,
// backend/cuda_moe.cu: slot offsets read on the device) against the CPU's per-expert gemm calls,
// expert_matmul_bwd's weight gradients into BF16 buffers (--grad-dtype bf16),
// and the whole MoE block's training forward and backward (train/moe_train.c:
// the same code on both backends) cuda vs cpu, and the training forward's streams kept in bf16
// for the cosine term (AE_KEEP_ACT: test_kept_streams). Needs a CUDA build and a GPU; prints "SKIP ..."
// and exits 77 (ctest: skipped) otherwise, or fails with AE_REQUIRE_GPU=1 (scripts/test-gpu.sh).
//
// Method (as test_cuda_train_ops): fixed seeds; every value a BF16 tensor holds is rounded to
// bf16 on the host first, so both backends compute on identical numbers; the backend is opened
// with AE_CUDA_POISON=1 (new allocations NaN-filled: an output the op forgets to write shows up
// as NaN). Every call is made twice on fresh outputs and the two results must be bit-identical
// (no float atomics). Shapes include T = 1, K = 1, E = 1, odd D, and the Qwen3-30B-A3B layer's
// experts at 1024 tokens (E 128, K 8, D 2048).
//
// Tolerances (each check prints its measured error):
//   EXACT        moe_plan: off, pos, tok equal the CPU's (both are the stable sort by expert).
//   TOL_F32      1e-6 relative L2: F32 outputs of the same fp32 / double formulas (combine: the
//                same k-order sum, FMA contraction on the GPU; combine_bwd dw and route_bwd dz:
//                double sums in another order, one rounding to float).
//   TOL_GEMM_F32 1e-4: F32 outputs of the grouped expert GEMMs: the same bf16 products summed in
//                fp32 in another order (mma tiles vs OpenBLAS; expected ~1e-6 at depth 2048, the
//                bound allowing for the tensor cores' accumulation); a bf16 rounding costs ~2e-3.
//   TOL_BF16_OUT 5e-3: a BF16 output is the fp32 result rounded once (~1.5e-3).
//   TOL_BLOCK    3e-2: the MoE block of a tiny model (moe_norm_topk) with the CPU's weights and
//                inputs rounded to bf16 (so both route identically): the GPU keeps gate, up,
//                silu(gate)⊙up, the router-logit gradient and the slot gradients in bf16 between
//                its GEMMs (each ~2^-9 relative), the CPU in fp32; expected ~3e-3..1e-2. A lost
//                term (the routing weight in the expert gradient, the renormalisation, a slot
//                row in the scatter) costs >= 1e-1.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "model/model.h"
#include "train/model_train.h"
#include "train/moe_train.h"
#include "util/backends.h"
#include "util/testutil.h"

#define TOL_F32 1e-6
#define TOL_GEMM_F32 1e-4
#define TOL_BF16_OUT 5e-3
#define TOL_BLOCK 3e-2

static const ae_backend *g_gpu, *g_cpu;

// ---- host and device helpers -----------------------------------------------------------------

static float bf16r(float x) { return ae_bf16_to_f32(ae_f32_to_bf16(x)); }

// scale · N(0, 1), rounded to bf16 when dt is BF16 (both backends then see the same values)
static float *hnormal(ae_rng *r, size_t n, float scale, ae_dtype dt) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    ae_test_fill_normal(p, n, scale, r);
    if (dt == AE_DT_BF16)
        for (size_t i = 0; i < n; i++) p[i] = bf16r(p[i]);
    return p;
}

static ae_ptr dnew(size_t n, ae_dtype dt) { return ae_tb_alloc(g_gpu, n, dt); }
static ae_ptr dput(const void *h, ae_dtype hdt, size_t n, ae_dtype dt) {
    return ae_tb_alloc_put(g_gpu, h, hdt, n, dt);
}
static float *dget(ae_ptr p, size_t n) { return ae_tb_out(g_gpu, p, n); }

static char g_what[300];

// ||got − ref|| / ||ref|| <= tol, every value finite.
static void check_l2(const float *got, const float *ref, size_t n, double tol, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void check_l2(const float *got, const float *ref, size_t n, double tol, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_what, sizeof g_what, fmt, ap);
    va_end(ap);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i]))
            fail_msg("%s: [%zu] cuda %g, cpu %g (never written, or a poisoned value read)", g_what,
                     i, (double)got[i], (double)ref[i]);
        double d = (double)got[i] - ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    double e = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  %-80s rel L2 %.2e (tol %.0e)\n", g_what, e, tol);
    fflush(stdout);
    if (!(e <= tol)) fail_msg("%s: relative L2 error %.3g > %.3g", g_what, e, tol);
}

// Bit-identical 4-byte arrays (floats or ints).
static void check_same(const void *a, const void *b, size_t n, const char *what) {
    if (memcmp(a, b, 4 * n) != 0) fail_msg("%s: not bit-identical (%zu values)", what, n);
    printf("  %-80s bit-identical (%zu values)\n", what, n);
    fflush(stdout);
}

// =============================================================================================
// moe_plan, moe_combine, moe_combine_bwd

typedef struct {
    int T, K, E;
    int32_t *idx, *off, *pos, *tok; // host: the routing and the cpu plan
    ae_ptr gidx, gpos;              // device: the routing and the cuda plan's pos
} plan_case;

// The routing, the cpu plan, and the cuda plan compared with it (twice: deterministic).
static void plan_init(plan_case *c, ae_rng *r, int T, int K, int E) {
    size_t S = (size_t)T * K;
    c->T = T, c->K = K, c->E = E;
    c->idx = ae_test_routing(r, T, K, E, -1);
    c->off = malloc(sizeof(int32_t) * (size_t)(E + 1));
    c->pos = malloc(sizeof(int32_t) * S), c->tok = malloc(sizeof(int32_t) * S);
    g_cpu->moe_plan(g_cpu, ae_host_i32(c->off), ae_host_i32(c->pos), ae_host_i32(c->tok),
                    ae_host_i32(c->idx), T, K, E);
    c->gidx = dput(c->idx, AE_DT_I32, S, AE_DT_I32);
    char what[120];
    for (int run = 0; run < 2; run++) {
        ae_ptr off = dnew((size_t)E + 1, AE_DT_I32), pos = dnew(S, AE_DT_I32), tok = dnew(S, AE_DT_I32);
        g_gpu->moe_plan(g_gpu, off, pos, tok, c->gidx, T, K, E);
        int32_t *ho = ae_tb_out_i32(g_gpu, off, (size_t)E + 1), *hp = ae_tb_out_i32(g_gpu, pos, S);
        int32_t *ht = ae_tb_out_i32(g_gpu, tok, S);
        snprintf(what, sizeof what, "moe_plan T=%d K=%d E=%d run %d: off, pos, tok == cpu", T, K,
                 E, run);
        check_same(ho, c->off, (size_t)E + 1, what);
        check_same(hp, c->pos, S, what);
        check_same(ht, c->tok, S, what);
        free(ho), free(hp), free(ht);
        g_gpu->free(g_gpu, off), g_gpu->free(g_gpu, tok);
        if (run == 0) c->gpos = pos;
        else g_gpu->free(g_gpu, pos);
    }
}

static void plan_free(plan_case *c) {
    g_gpu->free(g_gpu, c->gidx), g_gpu->free(g_gpu, c->gpos);
    free(c->idx), free(c->off), free(c->pos), free(c->tok);
}

// moe_combine with weights (y dtype ydt, o dtype odt) and without (accumulating).
static void run_combine(ae_rng *r, const plan_case *c, int D, ae_dtype ydt, ae_dtype odt) {
    int T = c->T, K = c->K;
    size_t S = (size_t)T * K, ny = (size_t)T * D, no = S * D;
    float *o = hnormal(r, no, 1.0f, odt), *w = hnormal(r, S, 0.5f, AE_DT_F32);
    float *y0 = hnormal(r, ny, 1.0f, ydt), *ref = malloc(sizeof(float) * ny);
    ae_ptr go = dput(o, AE_DT_F32, no, odt), gw = dput(w, AE_DT_F32, S, AE_DT_F32);
    double tol = ydt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_F32;
    for (int weighted = 1; weighted >= 0; weighted--) {
        memcpy(ref, y0, sizeof(float) * ny);
        g_cpu->moe_combine(g_cpu, ae_host_f32(ref), ae_host_f32(o), ae_host_i32(c->pos),
                           weighted ? ae_host_f32(w) : ae_ptr_null(), T, K, D, !weighted);
        float *got[2];
        for (int run = 0; run < 2; run++) {
            ae_ptr gy = weighted ? dnew(ny, ydt) : dput(y0, AE_DT_F32, ny, ydt);
            g_gpu->moe_combine(g_gpu, gy, go, c->gpos, weighted ? gw : ae_ptr_null(), T, K, D,
                               !weighted);
            got[run] = dget(gy, ny);
            g_gpu->free(g_gpu, gy);
        }
        check_l2(got[0], ref, ny, tol, "moe_combine T=%d K=%d D=%d y %s o %s %s", T, K, D,
                 ae_dtype_name(ydt), ae_dtype_name(odt),
                 weighted ? "weighted" : "unweighted, accumulate");
        check_same(got[0], got[1], ny, "moe_combine determinism");
        free(got[0]), free(got[1]);
    }
    g_gpu->free(g_gpu, go), g_gpu->free(g_gpu, gw);
    free(o), free(w), free(y0), free(ref);
}

// moe_combine_bwd: dye in dtype edt, dy in ddt, o F32 (as the training pass keeps it).
static void run_combine_bwd(ae_rng *r, const plan_case *c, int D, ae_dtype edt, ae_dtype ddt) {
    int T = c->T, K = c->K;
    size_t S = (size_t)T * K, ny = (size_t)T * D, no = S * D;
    float *o = hnormal(r, no, 1.0f, AE_DT_F32), *w = hnormal(r, S, 0.5f, AE_DT_F32);
    float *dy = hnormal(r, ny, 1.0f, ddt);
    float *dye = malloc(sizeof(float) * no), *dw = malloc(sizeof(float) * S);
    g_cpu->moe_combine_bwd(g_cpu, ae_host_f32(dye), ae_host_f32(dw), ae_host_f32(dy),
                           ae_host_f32(o), ae_host_i32(c->pos), ae_host_f32(w), T, K, D);
    ae_ptr go = dput(o, AE_DT_F32, no, AE_DT_F32), gw = dput(w, AE_DT_F32, S, AE_DT_F32);
    ae_ptr gdy = dput(dy, AE_DT_F32, ny, ddt);
    float *ge[2], *gd[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr e = dnew(no, edt), d = dnew(S, AE_DT_F32);
        g_gpu->moe_combine_bwd(g_gpu, e, d, gdy, go, c->gpos, gw, T, K, D);
        ge[run] = dget(e, no), gd[run] = dget(d, S);
        g_gpu->free(g_gpu, e), g_gpu->free(g_gpu, d);
    }
    check_l2(ge[0], dye, no, edt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_F32,
             "moe_combine_bwd T=%d K=%d D=%d dye %s (dy %s)", T, K, D, ae_dtype_name(edt),
             ae_dtype_name(ddt));
    check_l2(gd[0], dw, S, TOL_F32, "moe_combine_bwd T=%d K=%d D=%d dw", T, K, D);
    check_same(ge[0], ge[1], no, "moe_combine_bwd dye determinism");
    check_same(gd[0], gd[1], S, "moe_combine_bwd dw determinism");
    g_gpu->free(g_gpu, go), g_gpu->free(g_gpu, gw), g_gpu->free(g_gpu, gdy);
    free(o), free(w), free(dy), free(dye), free(dw), free(ge[0]), free(ge[1]), free(gd[0]),
        free(gd[1]);
}

static void test_plan_combine(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 2001);
    const int shapes[][4] = {{1, 1, 1, 8}, {1, 2, 8, 7}, {37, 2, 8, 65}, {300, 4, 60, 257},
                             {4096, 8, 128, 2048}}; // T, K, E, D
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        plan_case c;
        plan_init(&c, &r, shapes[i][0], shapes[i][1], shapes[i][2]);
        int D = shapes[i][3];
        run_combine(&r, &c, D, AE_DT_F32, AE_DT_F32);
        run_combine(&r, &c, D, AE_DT_BF16, AE_DT_F32);
        run_combine(&r, &c, D, AE_DT_BF16, AE_DT_BF16);
        run_combine_bwd(&r, &c, D, AE_DT_F32, AE_DT_F32);
        run_combine_bwd(&r, &c, D, AE_DT_BF16, AE_DT_BF16);
        plan_free(&c);
    }
}

// =============================================================================================
// moe_route_bwd

static void run_route_bwd(ae_rng *r, int T, int E, int K, int renorm, ae_dtype zdt) {
    size_t nz = (size_t)T * E, nk = (size_t)T * K;
    float *z = hnormal(r, nz, 2.0f, AE_DT_F32), *dw = hnormal(r, nk, 1.0f, AE_DT_F32);
    float *p = malloc(sizeof(float) * nz), *w = malloc(sizeof(float) * nk);
    float *dz = malloc(sizeof(float) * nz);
    int32_t *idx = malloc(sizeof(int32_t) * nk);
    g_cpu->moe_route(g_cpu, ae_host_i32(idx), ae_host_f32(w), ae_host_f32(p), ae_host_f32(z), T, E,
                     K, renorm);
    g_cpu->moe_route_bwd(g_cpu, ae_host_f32(dz), ae_host_f32(dw), ae_host_f32(p),
                         ae_host_i32(idx), T, E, K, renorm);
    // the cpu's probabilities and selection as inputs: the op alone is compared
    ae_ptr gp = dput(p, AE_DT_F32, nz, AE_DT_F32), gdw = dput(dw, AE_DT_F32, nk, AE_DT_F32);
    ae_ptr gi = dput(idx, AE_DT_I32, nk, AE_DT_I32);
    float *got[2];
    for (int run = 0; run < 2; run++) {
        ae_ptr gdz = dnew(nz, zdt);
        g_gpu->moe_route_bwd(g_gpu, gdz, gdw, gp, gi, T, E, K, renorm);
        got[run] = dget(gdz, nz);
        g_gpu->free(g_gpu, gdz);
    }
    check_l2(got[0], dz, nz, zdt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_F32,
             "moe_route_bwd T=%d E=%d K=%d renorm=%d dz %s", T, E, K, renorm, ae_dtype_name(zdt));
    check_same(got[0], got[1], nz, "moe_route_bwd determinism");
    g_gpu->free(g_gpu, gp), g_gpu->free(g_gpu, gdw), g_gpu->free(g_gpu, gi);
    free(z), free(dw), free(p), free(w), free(dz), free(idx), free(got[0]), free(got[1]);
}

static void test_route_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 2002);
    for (int renorm = 0; renorm < 2; renorm++) {
        run_route_bwd(&r, 1, 1, 1, renorm, AE_DT_F32);
        run_route_bwd(&r, 9, 8, 2, renorm, AE_DT_F32);
        run_route_bwd(&r, 33, 60, 4, renorm, AE_DT_BF16);
        run_route_bwd(&r, 5, 8, 8, renorm, AE_DT_F32); // K = E
        run_route_bwd(&r, 4096, 128, 8, renorm, AE_DT_BF16);
    }
}

// =============================================================================================
// expert_matmul, expert_matmul_bwd: the grouped expert GEMMs (cuda_moe.cu) against the CPU's
// per-expert gemm calls, on the same bf16 values, with the slot offsets on the device

// One output of both backends: initial values y0 (also the rows past off[E], which must keep
// them), the CPU reference, and two GPU runs (bit-identical).
static void check_expert_out(float *got[2], const float *ref, const float *y0, size_t n,
                             size_t grouped, double tol, const char *what) {
    check_l2(got[0], ref, n, tol, "%s", what);
    char w[300];
    snprintf(w, sizeof w, "%s: rows past off[E] untouched", what);
    if (grouped < n) check_same(got[0] + grouped, y0 + grouped, n - grouped, w);
    snprintf(w, sizeof w, "%s: determinism", what);
    check_same(got[0], got[1], n, w);
    free(got[0]), free(got[1]);
}

// Forward with n = 1 and 2 (y in ydt) and backward with n = 1 and 2, overwriting dx (in ydt)
// without weight gradients, then accumulating into dx and into F32 weight gradients (k_expert_dw),
// for the slot groups off (E + 1) and `tail` rows past them.
static void run_expert_matmul(ae_rng *r, const int32_t *off, int E, int tail, int N, int Kd,
                              ae_dtype ydt) {
    int S = off[E] + tail;
    size_t nx = (size_t)S * Kd, ny = (size_t)S * N, nw = (size_t)E * N * Kd;
    float *x = hnormal(r, nx, 1.0f, AE_DT_BF16), *x0 = hnormal(r, nx, 1.0f, ydt);
    float *y0 = hnormal(r, ny, 1.0f, ydt);
    float *w[2] = {hnormal(r, nw, 1.0f, AE_DT_BF16), hnormal(r, nw, 1.0f, AE_DT_BF16)};
    float *dy[2] = {hnormal(r, ny, 1.0f, AE_DT_BF16), hnormal(r, ny, 1.0f, AE_DT_BF16)};
    float *dw0 = hnormal(r, nw, 1.0f, AE_DT_F32); // the weight gradients' earlier contents
    ae_ptr goff = dput(off, AE_DT_I32, (size_t)E + 1, AE_DT_I32);
    ae_ptr gx = dput(x, AE_DT_F32, nx, AE_DT_BF16);
    ae_ptr gw[2], gdy[2], hw[2], hdy[2];
    for (int i = 0; i < 2; i++) {
        gw[i] = dput(w[i], AE_DT_F32, nw, AE_DT_BF16), gdy[i] = dput(dy[i], AE_DT_F32, ny, AE_DT_BF16);
        hw[i] = ae_host_f32(w[i]), hdy[i] = ae_host_f32(dy[i]);
    }
    // F32 outputs: the same bf16 products summed in fp32 in another order (~1e-6); BF16: one
    // rounding of the fp32 result (and of dx + the sum when accumulating).
    double tol = ydt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_GEMM_F32;
    char what[200];
    for (int n = 1; n <= 2; n++) {
        float *ref[2] = {malloc(sizeof(float) * ny), malloc(sizeof(float) * ny)}, *got[2][2];
        ae_ptr href[2] = {ae_host_f32(ref[0]), ae_host_f32(ref[1])};
        for (int i = 0; i < n; i++) memcpy(ref[i], y0, sizeof(float) * ny);
        g_cpu->expert_matmul(g_cpu, n, href, ae_host_f32(x), hw, ae_host_i32(off), S, E, N, Kd);
        for (int run = 0; run < 2; run++) {
            ae_ptr gy[2];
            for (int i = 0; i < n; i++) gy[i] = dput(y0, AE_DT_F32, ny, ydt);
            g_gpu->expert_matmul(g_gpu, n, gy, gx, gw, goff, S, E, N, Kd);
            for (int i = 0; i < n; i++) got[i][run] = dget(gy[i], ny), g_gpu->free(g_gpu, gy[i]);
        }
        for (int i = 0; i < n; i++) {
            snprintf(what, sizeof what, "expert_matmul n=%d E=%d S=%d N=%d Kd=%d y[%d] %s", n, E, S,
                     N, Kd, i, ae_dtype_name(ydt));
            check_expert_out(got[i], ref[i], y0, ny, (size_t)off[E] * N, tol, what);
        }
        free(ref[0]), free(ref[1]);
        for (int acc = 0; acc < 2; acc++) {
            // dx (overwritten, then accumulated into) and, on the second pass, the weight
            // gradients too (accumulated into F32 buffers holding dw0: --train all)
            float *dref = malloc(sizeof(float) * nx), *dgot[2], *wref[2], *wgot[2][2];
            ae_ptr hwg[2];
            memcpy(dref, x0, sizeof(float) * nx);
            for (int i = 0; i < n; i++) {
                wref[i] = malloc(sizeof(float) * nw), memcpy(wref[i], dw0, sizeof(float) * nw);
                hwg[i] = ae_host_f32(wref[i]);
            }
            g_cpu->expert_matmul_bwd(g_cpu, n, ae_host_f32(dref), acc ? hwg : NULL, hdy,
                                     ae_host_f32(x), hw, ae_host_i32(off), S, E, N, Kd, acc);
            for (int run = 0; run < 2; run++) {
                ae_ptr gdx = dput(x0, AE_DT_F32, nx, ydt), gwg[2];
                for (int i = 0; i < n; i++) gwg[i] = dput(dw0, AE_DT_F32, nw, AE_DT_F32);
                g_gpu->expert_matmul_bwd(g_gpu, n, gdx, acc ? gwg : NULL, gdy, gx, gw, goff, S, E,
                                         N, Kd, acc);
                dgot[run] = dget(gdx, nx);
                g_gpu->free(g_gpu, gdx);
                for (int i = 0; i < n; i++) wgot[i][run] = dget(gwg[i], nw), g_gpu->free(g_gpu, gwg[i]);
            }
            snprintf(what, sizeof what, "expert_matmul_bwd n=%d E=%d S=%d N=%d Kd=%d dx %s%s", n,
                     E, S, N, Kd, ae_dtype_name(ydt), acc ? " accumulate" : "");
            check_expert_out(dgot, dref, x0, nx, (size_t)off[E] * Kd, tol, what);
            for (int i = 0; i < n; i++) {
                snprintf(what, sizeof what, "expert_matmul_bwd n=%d E=%d S=%d N=%d Kd=%d dw[%d] F32 "
                         "%s", n, E, S, N, Kd, i, acc ? "(+= dw0)" : "(not asked: dw0 kept)");
                // not asked for (dw null): the buffers must keep dw0 exactly
                check_expert_out(wgot[i], acc ? wref[i] : dw0, dw0, nw, acc ? nw : 0,
                                 TOL_GEMM_F32, what);
                free(wref[i]);
            }
            free(dref);
        }
    }
    g_gpu->free(g_gpu, goff), g_gpu->free(g_gpu, gx);
    for (int i = 0; i < 2; i++) g_gpu->free(g_gpu, gw[i]), g_gpu->free(g_gpu, gdy[i]), free(w[i]), free(dy[i]);
    free(x), free(x0), free(y0), free(dw0);
}

// expert_matmul_bwd's weight gradients into BF16 buffers (--grad-dtype bf16, --train all) with
// n = 2 and no dx: against the CPU's F32 dw from the same bf16 start (TOL_BF16_OUT), and equal to
// the GPU's F32 dw rounded to bf16 (k_expert_dw: the same fp32 tile sums, one rounding of
// start + sum). Two runs bit-identical.
static void run_expert_dw_bf16(ae_rng *r, const int32_t *off, int E, int tail, int N, int Kd) {
    int S = off[E] + tail;
    size_t nx = (size_t)S * Kd, ny = (size_t)S * N, nw = (size_t)E * N * Kd;
    float *x = hnormal(r, nx, 1.0f, AE_DT_BF16), *dw0 = hnormal(r, nw, 1.0f, AE_DT_BF16);
    float *w[2] = {hnormal(r, nw, 1.0f, AE_DT_BF16), hnormal(r, nw, 1.0f, AE_DT_BF16)};
    float *dy[2] = {hnormal(r, ny, 1.0f, AE_DT_BF16), hnormal(r, ny, 1.0f, AE_DT_BF16)};
    float *ref[2];
    ae_ptr hw[2], hdy[2], href[2], gw[2], gdy[2];
    for (int i = 0; i < 2; i++) {
        ref[i] = malloc(sizeof(float) * nw), memcpy(ref[i], dw0, sizeof(float) * nw);
        hw[i] = ae_host_f32(w[i]), hdy[i] = ae_host_f32(dy[i]), href[i] = ae_host_f32(ref[i]);
        gw[i] = dput(w[i], AE_DT_F32, nw, AE_DT_BF16), gdy[i] = dput(dy[i], AE_DT_F32, ny, AE_DT_BF16);
    }
    g_cpu->expert_matmul_bwd(g_cpu, 2, ae_ptr_null(), href, hdy, ae_host_f32(x), hw,
                             ae_host_i32(off), S, E, N, Kd, 0);
    ae_ptr goff = dput(off, AE_DT_I32, (size_t)E + 1, AE_DT_I32);
    ae_ptr gx = dput(x, AE_DT_F32, nx, AE_DT_BF16);
    float *got[3][2]; // runs 0, 1: BF16 dw; run 2: F32 dw
    for (int run = 0; run < 3; run++) {
        ae_ptr gdw[2];
        for (int i = 0; i < 2; i++) gdw[i] = dput(dw0, AE_DT_F32, nw, run < 2 ? AE_DT_BF16 : AE_DT_F32);
        g_gpu->expert_matmul_bwd(g_gpu, 2, ae_ptr_null(), gdw, gdy, gx, gw, goff, S, E, N, Kd, 0);
        for (int i = 0; i < 2; i++) got[run][i] = dget(gdw[i], nw), g_gpu->free(g_gpu, gdw[i]);
    }
    char what[200];
    for (int i = 0; i < 2; i++) {
        // measured against the gradient (ref − dw0), so a lost "+=" fails
        float *gg = malloc(sizeof(float) * nw), *rg = malloc(sizeof(float) * nw);
        for (size_t j = 0; j < nw; j++) gg[j] = got[0][i][j] - dw0[j], rg[j] = ref[i][j] - dw0[j];
        snprintf(what, sizeof what, "expert_matmul_bwd E=%d S=%d N=%d Kd=%d dw[%d] BF16 (+= dw0) vs cpu",
                 E, S, N, Kd, i);
        check_l2(gg, rg, nw, TOL_BF16_OUT, "%s", what);
        for (size_t j = 0; j < nw; j++) got[2][i][j] = bf16r(got[2][i][j]);
        snprintf(what, sizeof what, "expert_matmul_bwd dw[%d] BF16 == bf16(F32 dw) E=%d N=%d Kd=%d", i,
                 E, N, Kd);
        check_same(got[0][i], got[2][i], nw, what);
        snprintf(what, sizeof what, "expert_matmul_bwd dw[%d] BF16 determinism", i);
        check_same(got[0][i], got[1][i], nw, what);
        free(gg), free(rg);
    }
    g_gpu->free(g_gpu, goff), g_gpu->free(g_gpu, gx);
    for (int i = 0; i < 2; i++) {
        g_gpu->free(g_gpu, gw[i]), g_gpu->free(g_gpu, gdy[i]);
        free(w[i]), free(dy[i]), free(ref[i]);
        for (int run = 0; run < 3; run++) free(got[run][i]);
    }
    free(x), free(dw0);
}

// off (E + 1) from slot counts per expert.
static void offsets_of(const int *counts, int E, int32_t *off) {
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + counts[e];
}

static void test_expert_matmul(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 2004);
    int32_t off[8];
    // empty first, middle and last experts; an expert over two row tiles (70 > 64); N and Kd
    // off the tiles (65, 40: 16-byte loads, a partial depth tile)
    const int c1[] = {0, 3, 0, 1, 70, 0};
    offsets_of(c1, 6, off);
    run_expert_matmul(&r, off, 6, 3, 65, 40, AE_DT_BF16);
    run_expert_matmul(&r, off, 6, 3, 65, 40, AE_DT_F32);
    // odd N and Kd (element loads, unpaired stores), an expert over three tiles
    const int c2[] = {2, 0, 129, 1, 0};
    offsets_of(c2, 5, off);
    run_expert_matmul(&r, off, 5, 0, 33, 37, AE_DT_BF16);
    // one expert, one row
    const int c3[] = {1};
    offsets_of(c3, 1, off);
    run_expert_matmul(&r, off, 1, 1, 8, 8, AE_DT_F32);
    // BF16 weight gradients (--grad-dtype bf16): paired stores (even Kd) and odd shapes
    offsets_of(c1, 6, off);
    run_expert_dw_bf16(&r, off, 6, 3, 65, 40);
    offsets_of(c2, 5, off);
    run_expert_dw_bf16(&r, off, 5, 0, 33, 37);
    // Qwen3-30B-A3B's experts: 1024 tokens routed to 8 of 128 experts (about 64 slots an expert,
    // some over two row tiles); gate/up (N 768, Kd 2048, act) and down (N 2048, Kd 768, F32 as
    // the training pass keeps o). 1024, not a training step's 4096: the cpu reference's 14
    // grouped products and the 800 MB weight-gradient compares made this program the GPU suite's
    // longest (308 s of its 370 at 8 programs at a time, H200 2026-12-01); test_cuda_moe_ffn
    // runs the forward at 4096.
    int T = 1024, K = 8, E = 128;
    int32_t *idx = ae_test_routing(&r, T, K, E, -1), *pos = malloc(sizeof(int32_t) * (size_t)T * K);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)T * K), *offb = malloc(sizeof(int32_t) * (E + 1));
    g_cpu->moe_plan(g_cpu, ae_host_i32(offb), ae_host_i32(pos), ae_host_i32(tok), ae_host_i32(idx),
                    T, K, E);
    run_expert_matmul(&r, offb, E, 0, 768, 2048, AE_DT_BF16);
    run_expert_matmul(&r, offb, E, 0, 2048, 768, AE_DT_F32);
    run_expert_dw_bf16(&r, offb, E, 0, 768, 2048);
    free(idx), free(pos), free(tok), free(offb);
}

// =============================================================================================
// the MoE block: ae_moe_train_forward / ae_moe_train_backward on both backends

static ae_model *load(const char *dir, const ae_backend *be) {
    ae_model *m = NULL;
    if (ae_model_load(dir, be, &m) != AE_OK) fail_msg("%s: %s", dir, ae_last_error());
    return m;
}

static void round_bf16(ae_ptr t, size_t n) {
    float *p = ae_f32(t);
    for (size_t i = 0; i < n; i++) p[i] = bf16r(p[i]);
}

// One block pass on be: y, dx and the router / expert gradients downloaded to host arrays.
typedef struct {
    float *y, *dx, *dR, *dg, *du, *dd;
} block_out;

// grads 0: no parameter gradients (gL null: stage 2's attention-only training); out's router
// and expert gradients are then null.
static void block_pass(const ae_model *m, int l, const float *x, const float *dy, int M,
                       int grads, block_out *out) {
    const ae_backend *be = m->be;
    const ae_config *c = &m->cfg;
    size_t md = (size_t)M * c->hidden_size, ne = (size_t)c->num_experts;
    size_t nr = ne * c->hidden_size, nx = ne * c->moe_intermediate_size * c->hidden_size;
    ae_model *g = NULL;
    if (ae_model_grads_like(m, 0, &g) != AE_OK) fail_msg("grads: %s", ae_last_error());
    ae_ptr gx = be->alloc(be, md, be->act_dtype), gy = be->alloc(be, md, be->act_dtype);
    ae_ptr gdy = be->alloc(be, md, be->act_dtype), gdx = be->alloc(be, md, be->act_dtype);
    if (ae_ptr_is_null(gx) || ae_ptr_is_null(gy) || ae_ptr_is_null(gdy) || ae_ptr_is_null(gdx))
        fail_msg("alloc: %s", ae_last_error());
    be->upload(be, gx, x, AE_DT_F32, md);
    be->upload(be, gdy, dy, AE_DT_F32, md);
    be->fill(be, gdx, md, 0.0f);
    ae_moe_acts a;
    const ae_layer *L = &m->layers[l];
    ae_layer *G = &g->layers[l];
    if (ae_moe_train_forward(m, L, gx, M, gy, &a) != AE_OK ||
        ae_moe_train_backward(m, L, &a, gx, gdy, gdx, grads ? G : NULL) != AE_OK)
        fail_msg("MoE block on %s: %s", be->name, ae_last_error());
    ae_moe_acts_free(&a);
    float *bufs[6] = {NULL};
    ae_ptr src[6] = {gy, gdx, G->router, G->e_gate, G->e_up, G->e_down};
    size_t n[6] = {md, md, nr, nx, nx, nx};
    for (int i = 0; i < (grads ? 6 : 2); i++) {
        bufs[i] = malloc(sizeof(float) * n[i]);
        if (be->download(be, bufs[i], AE_DT_F32, src[i], n[i]) != AE_OK)
            fail_msg("download: %s", ae_last_error());
    }
    *out = (block_out){bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5]};
    be->free(be, gx), be->free(be, gy), be->free(be, gdy), be->free(be, gdx);
    ae_model_free(g);
}

static void block_out_free(block_out *o) {
    free(o->y), free(o->dx), free(o->dR), free(o->dg), free(o->du), free(o->dd);
}

static void test_moe_block(void **state) {
    (void)state;
    const char *dir = ae_test_src("tests/fixtures/models/moe_norm_topk");
    ae_model *mc = load(dir, g_cpu), *mg = load(dir, g_gpu);
    const ae_config *c = &mc->cfg;
    int l = 0;
    while (l < c->num_hidden_layers && !mc->layers[l].is_moe) l++;
    assert_true(l < c->num_hidden_layers);
    // the cpu's weights as the GPU holds them (bf16), so both route alike
    size_t ne = (size_t)c->num_experts, D = (size_t)c->hidden_size;
    size_t nx = ne * c->moe_intermediate_size * D;
    ae_layer *L = &mc->layers[l];
    round_bf16(L->router, ne * D), round_bf16(L->e_gate, nx), round_bf16(L->e_up, nx);
    round_bf16(L->e_down, nx);
    ae_rng r;
    ae_rng_seed(&r, 2003);
    int Ms[] = {1, 37, 256};
    for (size_t i = 0; i < 3; i++) {
        int M = Ms[i];
        float *x = hnormal(&r, (size_t)M * D, 1.0f, AE_DT_BF16);
        float *dy = hnormal(&r, (size_t)M * D, 1.0f, AE_DT_BF16);
        block_out ref, got[2];
        block_out nog;
        block_pass(mc, l, x, dy, M, 1, &ref);
        block_pass(mg, l, x, dy, M, 1, &got[0]);
        block_pass(mg, l, x, dy, M, 1, &got[1]);
        block_pass(mg, l, x, dy, M, 0, &nog);
        size_t md = (size_t)M * D;
        check_l2(got[0].y, ref.y, md, TOL_BLOCK, "MoE block M=%d y", M);
        check_l2(got[0].dx, ref.dx, md, TOL_BLOCK, "MoE block M=%d dx", M);
        check_l2(got[0].dR, ref.dR, ne * D, TOL_BLOCK, "MoE block M=%d d router", M);
        check_l2(got[0].dg, ref.dg, nx, TOL_BLOCK, "MoE block M=%d d experts.gate_proj", M);
        check_l2(got[0].du, ref.du, nx, TOL_BLOCK, "MoE block M=%d d experts.up_proj", M);
        check_l2(got[0].dd, ref.dd, nx, TOL_BLOCK, "MoE block M=%d d experts.down_proj", M);
        check_same(got[0].dx, got[1].dx, md, "MoE block dx determinism");
        check_same(got[0].dR, got[1].dR, ne * D, "MoE block d router determinism");
        check_same(got[0].dg, got[1].dg, nx, "MoE block d gate determinism");
        check_same(got[0].dd, got[1].dd, nx, "MoE block d down determinism");
        // without parameter gradients (no weight-gradient launches) the same y and dx
        check_same(nog.y, got[0].y, md, "MoE block without parameter gradients: y");
        check_same(nog.dx, got[0].dx, md, "MoE block without parameter gradients: dx");
        block_out_free(&ref), block_out_free(&got[0]), block_out_free(&got[1]), block_out_free(&nog);
        free(x), free(dy);
    }
    ae_model_free(mc), ae_model_free(mg);
}

// The training forward's kept streams on the GPU (train/model_train.c; the MoE fixture's dense
// and MoE layers): AE_KEEP_ACT (the cosine term's teacher side) keeps BF16 streams; AE_KEEP_NONE
// keeps no stream and the same final hidden, bit for bit (both are frozen forwards: attention
// through ae_layer_attn_forward_batch). Against the F32-kept forward (the training forward's
// attention, whose q/k norm and RoPE round to bf16 in between where qk_norm_rope keeps fp32):
// the streams rounded to bf16 and the final hidden within 1e-2 relative L2 (the embedding, stream
// 0, bit for bit). A backward from AE_KEEP_ACT streams is refused (it recomputes from F32).
static void test_kept_streams(void **state) {
    (void)state;
    ae_model *m = load(ae_test_src("tests/fixtures/models/moe_norm_topk"), g_gpu);
    const int B = 2, T = 19, L = m->cfg.num_hidden_layers;
    const size_t nd = (size_t)B * T * m->cfg.hidden_size;
    int32_t ids[2 * 19];
    for (int i = 0; i < B * T; i++) ids[i] = (i * 7919 + 3) % m->cfg.vocab_size;
    ae_train_acts *af = NULL, *aa = NULL, *an = NULL;
    if (ae_model_train_forward(m, ids, B, T, AE_KEEP_F32, &af) != AE_OK ||
        ae_model_train_forward(m, ids, B, T, AE_KEEP_ACT, &aa) != AE_OK ||
        ae_model_train_forward(m, ids, B, T, AE_KEEP_NONE, &an) != AE_OK)
        fail_msg("train forward: %s", ae_last_error());
    for (int l = 0; l <= L; l++) {
        ae_ptr hf = ae_train_acts_hidden(af, l), ha = ae_train_acts_hidden(aa, l);
        assert_int_equal(hf.dtype, AE_DT_F32);
        assert_int_equal(ha.dtype, AE_DT_BF16);
        assert_null(ae_train_acts_hidden(an, l).data);
        float *f = dget(hf, nd), *a = dget(ha, nd);
        for (size_t i = 0; i < nd; i++) f[i] = bf16r(f[i]);
        if (l == 0) {
            check_same(a, f, nd, "kept stream 0 (the embedding): AE_KEEP_ACT == bf16(AE_KEEP_F32)");
        } else {
            check_l2(a, f, nd, 1e-2, "kept stream %d: AE_KEEP_ACT ~ bf16(AE_KEEP_F32)", l);
        }
        free(f), free(a);
    }
    float *ff = dget(ae_train_acts_final(af), nd), *fa = dget(ae_train_acts_final(aa), nd);
    float *fn = dget(ae_train_acts_final(an), nd);
    check_same(fn, fa, nd, "final hidden: AE_KEEP_NONE == AE_KEEP_ACT");
    check_l2(fa, ff, nd, 1e-2, "final hidden: AE_KEEP_ACT ~ AE_KEEP_F32");
    ae_model *g = NULL;
    assert_int_equal(ae_model_zeros_like(m, &g), AE_OK);
    ae_ptr d = dnew(nd, AE_DT_F32);
    g_gpu->fill(g_gpu, d, nd, 0.0f);
    assert_int_equal(ae_model_train_backward(m, aa, d, NULL, NULL, g, 0), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "keep_hidden"));
    g_gpu->free(g_gpu, d);
    free(ff), free(fa), free(fn);
    ae_train_acts_free(af), ae_train_acts_free(aa), ae_train_acts_free(an);
    ae_model_free(g), ae_model_free(m);
}

int main(void) {
    g_cpu = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_combine),
        cmocka_unit_test(test_route_bwd),
        cmocka_unit_test(test_expert_matmul),
        cmocka_unit_test(test_moe_block),
        cmocka_unit_test(test_kept_streams),
    };
    ae_test_gpu_group g = {.gpu = &g_gpu, .poison = 1};
    return ae_test_gpu_main(&g, tests);
}
