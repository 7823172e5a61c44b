// The grouped expert GEMMs of the MoE block on the GPU in both implementations — k_expert_gemm
// (mma.sync, AE_MOE_WGMMA=0) and the Hopper wgmma kernel (backend/cuda_moe_wgmma.cu,
// AE_MOE_WGMMA=1) — through moe_ffn and expert_matmul's forward, against the CPU reference
// (backend/cpu_moe.c, the CPU's per-expert gemm calls). Needs a CUDA build and a GPU; prints
// "SKIP ..." and exits 77 (ctest: skipped) otherwise, or fails with AE_REQUIRE_GPU=1
// (scripts/test-gpu.sh).
//
// moe_ffn's grouped path runs with its default bf16 per-slot rows o and with fp32 rows
// (AE_MOE_DOWN_BF16=0), each in every mode: AE_MOE_WGMMA=0, =1 (the default wgmma kernel), and
// each wgmma kernel by name (sync: k_expert_gemm_wgmma; ws: the warp-specialised
// k_expert_gemm_ws, in each of its epilogues: AE_MOE_WS_EPI unset, 1, 0), ws bit for bit against
// sync (expert_matmul too).
//
// Shapes: Qwen3-30B-A3B's layer (D 2048, Im 768, E 128, K 8) at T = 1000 and 4096 tokens; odd
// sizes (D 136, Im 72, E 7, K 3, T 333) with one expert given no rows; every token on two
// experts (300 rows each: whole and partial 128-row tiles); a decode-like batch (T 3: one slot
// per expert, the sparse branch, which AE_MOE_WGMMA=1 also forces onto wgmma); and sizes the
// wgmma kernel refuses (D, Im not multiples of 8: both modes run k_expert_gemm).
//
// Decode (backend/cuda_moe_decode.cu: expert GEMVs, the expert read on the device): T = 1, 2, 3,
// 8 at the Qwen3-30B-A3B shape and at an odd small one (D 40, Im 24: depths not multiples of the
// 32-value chunk; E 5, K 3), y F32 and BF16, one slot with idx = -1, two tokens on the same
// expert (and at the odd shape 12 tokens whose 12 slots on one expert make two groups of the
// GEMV tile's 8 rows), each with AE_MOE_GEMV=1, =0 (bf16 rows), unset, and =0 with
// AE_MOE_DOWN_BF16=0 (fp32 rows) against the CPU and the GEMV path against the grouped ones;
// which path ran (ae_cuda_moe_last) is printed and asserted: "gemv" under =1 (and by default at
// T <= 32 with K = 8), "grouped" under =0 and where the GEMV path cannot run (D, Im not
// multiples of 8; T·K over its 256 slots).
//
// On a compute capability 9.0 GPU, AE_MOE_WGMMA=1 runs the wgmma kernel for every shape but the
// last (or keeps an error, failing the test: a build without sm_90a code); elsewhere =1 falls
// back and both modes test k_expert_gemm.
//
// Method: fixed seeds; every BF16 input is rounded on the host first (ae_tb_in), so both backends
// compute on identical numbers; the backend is opened with AE_CUDA_POISON=1 (new allocations
// NaN-filled, and moe_ffn's temporaries h and o too: a row of the GEMM outputs that is never
// written reaches y as NaN; expert_matmul's outputs start as y0, and rows past off[E] must keep
// it). Every GPU call
// runs twice and the results must be bit-identical (no atomics). Tolerances (relative L2; each
// check prints its measured error):
//   TOL_FFN     1e-2: moe_ffn (y F32) against the CPU: the GPU rounds h = silu(g)·u to bf16
//               between its two GEMMs (~2^-9 relative per value, ~2e-3 measured), the CPU keeps
//               fp32 — the bound test_backend_ops.c uses for moe_ffn (TOL_MOE).
//   TOL_MODES   1e-3: moe_ffn with AE_MOE_WGMMA=1 against =0: the same bf16 products summed in
//               fp32 in another order (~1e-6), and so the same h but for rare bf16 rounding
//               flips (~1e-4 in L2); a wrong row or column tile costs far more than 1e-3.
//   TOL_PATHS_F32 1e-3: moe_ffn with AE_MOE_GEMV=1 against =0 with fp32 rows
//               (AE_MOE_DOWN_BF16=0; y F32 or BF16): the same bf16 products summed in fp32 in
//               another order (~1e-6), the same combine, so the same h and y but for rare bf16
//               rounding flips (~1e-4); a wrong expert, a missed or doubled slot, or a wrong
//               column costs far more than 1e-3.
//   TOL_PATHS   5e-3: the grouped path's default bf16 rows o against fp32 ones (the GEMV path,
//               or the grouped path under AE_MOE_DOWN_BF16=0): each slot value rounded once more
//               (up to 2^-9 relative) before the fp32 combine, ~1.5e-3 in L2 measured; a wrong
//               or missed slot row still costs far more than 5e-3.
//   TOL_GEMM_F32 1e-4: expert_matmul F32 outputs: the same products in another fp32 order
//               (~1e-6 at depth 2048; as test_cuda_moe_train.c).
//   TOL_BF16_OUT 5e-3: expert_matmul BF16 outputs: the fp32 result rounded once (~1.5e-3).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#ifdef AE_HAVE_CUDA
#include "backend/cuda.h"
#endif
#include "core/dtype.h"
#include "core/rng.h"
#include "util/backends.h"
#include "util/testutil.h"

#define TOL_FFN 1e-2
#define TOL_MODES 1e-3
#define TOL_PATHS_F32 1e-3
#define TOL_PATHS 5e-3
#define TOL_GEMM_F32 1e-4
#define TOL_BF16_OUT 5e-3

static const ae_backend *g_gpu, *g_cpu;
// AE_MOE_WGMMA: the mma.sync kernel, the default wgmma kernel, and each wgmma kernel by name
// (k_expert_gemm_wgmma, the warp-specialised k_expert_gemm_ws), which must give the same bits
// (the same k16 products in the same order); ws in each of its epilogues for bf16 outputs:
// staged with the last block's rows deferred to the next tile (default), staged and written at
// once (AE_MOE_WS_EPI=1), fragment stores as sync's (=0).
enum { NMODES = 6, MODE_SYNC = 2 };
static const char *const g_modes[NMODES] = {"0", "1", "sync", "ws", "ws", "ws"};
static const char *const g_ws_epi[NMODES] = {NULL, NULL, NULL, NULL, "1", "0"};
static const char *const g_mode_names[NMODES] = {"0", "1", "sync", "ws", "ws AE_MOE_WS_EPI=1",
                                                 "ws AE_MOE_WS_EPI=0"};

// Sets mode m's variables; its name for the messages.
static const char *set_mode(int m) {
    setenv("AE_MOE_WGMMA", g_modes[m], 1);
    if (g_ws_epi[m]) setenv("AE_MOE_WS_EPI", g_ws_epi[m], 1);
    else unsetenv("AE_MOE_WS_EPI");
    return g_mode_names[m];
}
static void unset_mode(void) { unsetenv("AE_MOE_WGMMA"), unsetenv("AE_MOE_WS_EPI"); }
static const char *const g_rows[2] = {"1", "0"};  // AE_MOE_DOWN_BF16: bf16 rows (default), fp32

static float *hnormal(ae_rng *r, size_t n, float scale) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    ae_test_fill_normal(p, n, scale, r);
    return p;
}

// ||got − ref|| / ||ref|| <= tol, every value finite.
static void check_l2(const float *got, const float *ref, size_t n, double tol, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i]) || !isfinite(ref[i]))
            fail_msg("%s: [%zu] cuda %g, reference %g (never written, or a poisoned value read)",
                     what, i, (double)got[i], (double)ref[i]);
    double e = ae_test_rel_err(got, ref, n);
    printf("  %-88s rel L2 %.2e (tol %.0e)\n", what, e, tol);
    fflush(stdout);
    if (!(e <= tol)) fail_msg("%s: relative L2 error %.3g > %.3g", what, e, tol);
}

static void check_same(const float *a, const float *b, size_t n, const char *what) {
    if (memcmp(a, b, sizeof(float) * n) != 0)
        fail_msg("%s: not bit-identical (%zu values)", what, n);
}

// Distinct random experts per token, (T, K) of E, never expert `skip` (-1: none), or (hot) the
// experts 3 and 5 for every token (K = 2; the draws made all the same).
static int32_t *routing(ae_rng *r, int T, int K, int E, int skip, int hot) {
    int32_t *idx = ae_test_routing(r, T, K, E, skip);
    for (int t = 0; hot && t < T; t++)
        for (int k = 0; k < K; k++) idx[t * K + k] = 3 + 2 * ((t + k) & 1);
    return idx;
}

// ---- moe_ffn ------------------------------------------------------------------------------------

typedef struct {
    int D, Im, E;
    float *wg, *wu, *wd; // host, rounded to bf16: (E, Im, D), (E, Im, D), (E, D, Im)
    ae_ptr gwg, gwu, gwd;
    ae_scratch s;
} ffn_weights;

static void weights_new(ae_rng *r, ffn_weights *w, int D, int Im, int E) {
    size_t n = (size_t)E * Im * D;
    w->D = D, w->Im = Im, w->E = E;
    ae_scratch_init(&w->s, g_gpu);
    w->wg = hnormal(r, n, 1.0f / sqrtf((float)D));
    w->wu = hnormal(r, n, 1.0f / sqrtf((float)D));
    w->wd = hnormal(r, n, 1.0f / sqrtf((float)Im));
    w->gwg = ae_tb_in(&w->s, w->wg, n, AE_DT_BF16);
    w->gwu = ae_tb_in(&w->s, w->wu, n, AE_DT_BF16);
    w->gwd = ae_tb_in(&w->s, w->wd, n, AE_DT_BF16);
}

static void weights_free(ffn_weights *w) {
    ae_scratch_free(&w->s);
    free(w->wg), free(w->wu), free(w->wd);
}

// moe_ffn on T tokens routed by `routing` (positive weights summing to 1 per token): both modes
// with bf16 rows (default) and fp32 rows, each against the CPU and twice (bit-identical); the
// modes against each other, bf16 rows against fp32 ones. The grouped path always
// (AE_MOE_GEMV=0: the decode-sized case would take the GEMV path by default).
static void run_ffn(ae_rng *r, const ffn_weights *w, int T, int K, int skip, int hot) {
    const int D = w->D, Im = w->Im, E = w->E;
    size_t ny = (size_t)T * D;
    float *x = hnormal(r, ny, 1.0f);
    int32_t *idx = routing(r, T, K, E, skip, hot);
    float *wts = malloc(sizeof(float) * (size_t)T * K), *ref = malloc(sizeof(float) * ny);
    assert_non_null(wts), assert_non_null(ref);
    for (int t = 0; t < T; t++) {
        float s = 0;
        for (int k = 0; k < K; k++) s += (wts[t * K + k] = 0.05f + ae_rng_uniform(r));
        for (int k = 0; k < K; k++) wts[t * K + k] /= s;
    }
    ae_scratch s;
    ae_scratch_init(&s, g_gpu);
    ae_ptr gx = ae_tb_in(&s, x, ny, AE_DT_BF16); // x now holds the bf16 values
    ae_ptr gidx = ae_tb_in_i32(&s, idx, (size_t)T * K);
    ae_ptr gwts = ae_tb_in(&s, wts, (size_t)T * K, AE_DT_F32);
    g_cpu->moe_ffn(g_cpu, ae_host_f32(ref), ae_host_f32(x), ae_host_i32(idx), ae_host_f32(wts),
                   ae_host_f32(w->wg), ae_host_f32(w->wu), ae_host_f32(w->wd), T, D, Im, E, K);
    float *got[2][NMODES][2]; // [rows][mode][run]
    char what[240];
    setenv("AE_MOE_GEMV", "0", 1);
    for (int o = 0; o < 2; o++) {
        setenv("AE_MOE_DOWN_BF16", g_rows[o], 1);
        for (int m = 0; m < NMODES; m++) {
            const char *mode = set_mode(m);
            for (int run = 0; run < 2; run++) {
                ae_ptr gy = ae_tb_new(&s, ny, AE_DT_F32, NAN);
                g_gpu->moe_ffn(g_gpu, gy, gx, gidx, gwts, w->gwg, w->gwu, w->gwd, T, D, Im, E, K);
                got[o][m][run] = ae_tb_out(g_gpu, gy, ny);
            }
            snprintf(what, sizeof what,
                     "moe_ffn T=%d D=%d Im=%d E=%d K=%d%s%s AE_MOE_WGMMA=%s AE_MOE_DOWN_BF16=%s",
                     T, D, Im, E, K, skip >= 0 ? " (an expert without rows)" : "",
                     hot ? " (all on experts 3, 5)" : "", mode, g_rows[o]);
            check_l2(got[o][m][0], ref, ny, TOL_FFN, what);
            check_same(got[o][m][0], got[o][m][1], ny, what);
        }
        snprintf(what, sizeof what, "moe_ffn T=%d D=%d Im=%d E=%d K=%d AE_MOE_DOWN_BF16=%s: "
                 "AE_MOE_WGMMA=1 vs 0", T, D, Im, E, K, g_rows[o]);
        check_l2(got[o][1][0], got[o][0][0], ny, TOL_MODES, what);
        for (int m = 1; m < NMODES; m++) {
            if (m == MODE_SYNC) continue;
            snprintf(what, sizeof what, "moe_ffn T=%d D=%d Im=%d E=%d K=%d AE_MOE_DOWN_BF16=%s: "
                     "AE_MOE_WGMMA=%s vs sync", T, D, Im, E, K, g_rows[o], g_mode_names[m]);
            check_same(got[o][m][0], got[o][MODE_SYNC][0], ny, what);
        }
    }
    for (int m = 0; m < 2; m++) {
        snprintf(what, sizeof what, "moe_ffn T=%d D=%d Im=%d E=%d K=%d AE_MOE_WGMMA=%s: bf16 vs "
                 "fp32 rows", T, D, Im, E, K, g_modes[m]);
        check_l2(got[0][m][0], got[1][m][0], ny, TOL_PATHS, what);
    }
    unset_mode(), unsetenv("AE_MOE_GEMV"), unsetenv("AE_MOE_DOWN_BF16");
    ae_scratch_free(&s);
    for (int o = 0; o < 2; o++)
        for (int m = 0; m < NMODES; m++) free(got[o][m][0]), free(got[o][m][1]);
    free(x), free(idx), free(wts), free(ref);
}

// ---- moe_ffn at decode sizes: the GEMV path against the grouped path and the CPU --------------

// The path the last moe_ffn call took ("gemv" or "grouped").
static const char *moe_path(void) {
#ifdef AE_HAVE_CUDA
    return ae_cuda_moe_last();
#else
    return "(no cuda build)"; // not reached: the GPU tests skip first
#endif
}

// Routing tweaks of a decode case (bits). A token's K experts stay distinct (moe_route gives
// them so, and the CPU reference sizes its per-expert rows by T on that ground).
enum {
    DEC_INVALID = 1, // the last slot's expert is -1 (contributes nothing)
    DEC_SHARED = 2,  // token 1's slot 0 takes token 0's slot-1 expert (two tokens, one expert)
    DEC_HOT = 8,     // every token's slot 0 on expert 1 (T > 8: more slots than one GEMV tile)
};

// Distinct random experts per token (routing), then the tweaks.
static int32_t *decode_routing(ae_rng *r, int T, int K, int E, int tweaks) {
    int32_t *idx = routing(r, T, K, E, -1, 0);
    if ((tweaks & DEC_SHARED) && T >= 2 && K >= 2) { // keep token 1's experts distinct: swap
        int32_t want = idx[1];
        int j = 0;
        while (j < K && idx[K + j] != want) j++;
        if (j < K) idx[K + j] = idx[K];
        idx[K] = want;
    }
    if ((tweaks & DEC_HOT)) {
        for (int t = 0; t < T; t++) {
            int j = 0;
            while (j < K && idx[t * K + j] != 1) j++;
            if (j < K) idx[t * K + j] = idx[t * K];
            idx[t * K] = 1;
        }
    }
    if (tweaks & DEC_INVALID) idx[(size_t)T * K - 1] = -1;
    return idx;
}

// moe_ffn on T decode tokens, y of dtype ydt, under AE_MOE_GEMV=1 and =0 (and unset: the default
// must pick want_default; and =0 with fp32 rows, AE_MOE_DOWN_BF16=0): each against the CPU, twice
// (bit-identical), and =1 against =0 (TOL_PATHS) and, where =1 takes the GEMV path, against =0
// with fp32 rows (TOL_PATHS_F32).
// gemv_ok: the shape lets the GEMV path run (=1 must take it).
static void run_decode(ae_rng *r, const ffn_weights *w, int T, int K, ae_dtype ydt, int tweaks,
                       int gemv_ok, const char *want_default) {
    const int D = w->D, Im = w->Im, E = w->E;
    size_t ny = (size_t)T * D, ns = (size_t)T * K;
    float *x = hnormal(r, ny, 1.0f);
    int32_t *idx = decode_routing(r, T, K, E, tweaks);
    float *wts = malloc(sizeof(float) * ns), *ref = malloc(sizeof(float) * ny);
    assert_non_null(wts), assert_non_null(ref);
    for (size_t i = 0; i < ns; i++) wts[i] = 0.05f + ae_rng_uniform(r); // any positive weights
    ae_scratch s;
    ae_scratch_init(&s, g_gpu);
    ae_ptr gx = ae_tb_in(&s, x, ny, AE_DT_BF16); // x now holds the bf16 values
    ae_ptr gidx = ae_tb_in_i32(&s, idx, ns);
    ae_ptr gwts = ae_tb_in(&s, wts, ns, AE_DT_F32);
    g_cpu->moe_ffn(g_cpu, ae_host_f32(ref), ae_host_f32(x), ae_host_i32(idx), ae_host_f32(wts),
                   ae_host_f32(w->wg), ae_host_f32(w->wu), ae_host_f32(w->wd), T, D, Im, E, K);
    char what[240], tw[80];
    snprintf(tw, sizeof tw, "%s%s%s", tweaks & DEC_INVALID ? " idx=-1" : "",
             tweaks & DEC_SHARED ? " shared" : "",
             tweaks & DEC_HOT ? " hot" : "");
    // AE_MOE_GEMV (NULL: unset); the last with fp32 rows on the grouped path
    const char *modes[4] = {"1", "0", NULL, "0"};
    float *got[4][2];
    for (int m = 0; m < 4; m++) {
        if (modes[m]) setenv("AE_MOE_GEMV", modes[m], 1);
        else unsetenv("AE_MOE_GEMV");
        if (m == 3) setenv("AE_MOE_DOWN_BF16", "0", 1);
        const char *path[2];
        for (int run = 0; run < 2; run++) {
            ae_ptr gy = ae_tb_new(&s, ny, ydt, NAN);
            g_gpu->moe_ffn(g_gpu, gy, gx, gidx, gwts, w->gwg, w->gwu, w->gwd, T, D, Im, E, K);
            path[run] = moe_path();
            got[m][run] = ae_tb_out(g_gpu, gy, ny);
        }
        snprintf(what, sizeof what, "decode T=%d D=%d Im=%d E=%d K=%d y %s%s AE_MOE_GEMV=%s%s [%s]",
                 T, D, Im, E, K, ae_dtype_name(ydt), tw, modes[m] ? modes[m] : "unset",
                 m == 3 ? " AE_MOE_DOWN_BF16=0" : "", path[0]);
        const char *want = !modes[m] ? want_default : modes[m][0] == '1' && gemv_ok ? "gemv"
                                                                                    : "grouped";
        if (strcmp(path[0], want) || strcmp(path[1], want))
            fail_msg("%s: ran the %s path, expected %s", what, path[0], want);
        check_l2(got[m][0], ref, ny, TOL_FFN, what);
        check_same(got[m][0], got[m][1], ny, what);
    }
    snprintf(what, sizeof what, "decode T=%d D=%d Im=%d E=%d K=%d y %s%s: AE_MOE_GEMV=1 vs 0", T,
             D, Im, E, K, ae_dtype_name(ydt), tw);
    check_l2(got[0][0], got[1][0], ny, TOL_PATHS, what);
    if (gemv_ok) { // else =1 ran the grouped path with bf16 rows too
        snprintf(what, sizeof what, "decode T=%d D=%d Im=%d E=%d K=%d y %s%s: AE_MOE_GEMV=1 vs 0 "
                 "with fp32 rows", T, D, Im, E, K, ae_dtype_name(ydt), tw);
        check_l2(got[0][0], got[3][0], ny, TOL_PATHS_F32, what);
    }
    unsetenv("AE_MOE_GEMV"), unsetenv("AE_MOE_DOWN_BF16");
    ae_scratch_free(&s);
    for (int m = 0; m < 4; m++) free(got[m][0]), free(got[m][1]);
    free(x), free(idx), free(wts), free(ref);
}

// The decode cases at the Qwen3-30B-A3B shape, on test_moe_ffn_qwen3's weights (drawing 1.2 G
// values again would cost more than the cases).
static void decode_qwen3(ae_rng *r, const ffn_weights *w) {
    const int Ts[4] = {1, 2, 3, 8};
    for (int i = 0; i < 4; i++)
        for (int f = 0; f < 2; f++)
            run_decode(r, w, Ts[i], 8, f ? AE_DT_BF16 : AE_DT_F32, DEC_INVALID | DEC_SHARED, 1,
                       "gemv");
    run_decode(r, w, 16, 8, AE_DT_BF16, 0, 1, "gemv");
    run_decode(r, w, 32, 8, AE_DT_F32, 0, 1, "gemv"); // the default's (and the path's) largest T
    run_decode(r, w, 33, 8, AE_DT_F32, 0, 0, "grouped"); // 264 slots: the grouped path only
}

static void test_moe_ffn_decode_odd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 815);
    ffn_weights w;
    weights_new(&r, &w, 40, 24, 5);
    const int Ts[4] = {1, 2, 3, 8};
    for (int i = 0; i < 4; i++)
        for (int f = 0; f < 2; f++)
            run_decode(&r, &w, Ts[i], 3, f ? AE_DT_BF16 : AE_DT_F32,
                       DEC_INVALID | DEC_SHARED, 1, "gemv");
    run_decode(&r, &w, 12, 3, AE_DT_F32, DEC_HOT | DEC_INVALID, 1, "gemv"); // 12 slots on expert 1
    weights_free(&w);
    weights_new(&r, &w, 100, 36, 8); // not multiples of 8: the grouped path only
    run_decode(&r, &w, 2, 2, AE_DT_F32, DEC_INVALID, 0, "grouped");
    weights_free(&w);
}

static void test_moe_ffn_qwen3(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 811);
    ffn_weights w;
    weights_new(&r, &w, 2048, 768, 128);
    run_ffn(&r, &w, 1000, 8, -1, 0);
    run_ffn(&r, &w, 4096, 8, -1, 0);
    run_ffn(&r, &w, 3, 8, -1, 0); // decode: one slot per expert at most
    decode_qwen3(&r, &w);
    weights_free(&w);
}

static void test_moe_ffn_odd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 812);
    ffn_weights w;
    weights_new(&r, &w, 136, 72, 7);
    run_ffn(&r, &w, 333, 3, 2, 0); // expert 2 gets no rows
    run_ffn(&r, &w, 333, 3, 6, 0); // the last expert gets no rows
    weights_free(&w);
    weights_new(&r, &w, 256, 256, 8);
    run_ffn(&r, &w, 300, 2, -1, 1); // 300 rows on each of experts 3 and 5, none elsewhere
    weights_free(&w);
    weights_new(&r, &w, 100, 36, 8); // not multiples of 8: k_expert_gemm in both modes
    run_ffn(&r, &w, 200, 2, -1, 0);
    weights_free(&w);
}

// ---- expert_matmul (training's forward) --------------------------------------------------------

// n = 1 and 2, y of dtype ydt (preset to y0: rows past off[E] must keep it), rows grouped by
// the slot offsets off (E + 1) plus `tail` rows past them: both modes against the CPU, twice.
static void run_expert_matmul(ae_rng *r, const int32_t *off, int E, int tail, int N, int Kd,
                              ae_dtype ydt) {
    int S = off[E] + tail;
    size_t nx = (size_t)S * Kd, ny = (size_t)S * N, nw = (size_t)E * N * Kd;
    ae_scratch s;
    ae_scratch_init(&s, g_gpu);
    float *x = hnormal(r, nx, 1.0f), *y0 = hnormal(r, ny, 1.0f);
    float *w[2] = {hnormal(r, nw, 1.0f), hnormal(r, nw, 1.0f)};
    ae_ptr gx = ae_tb_in(&s, x, nx, AE_DT_BF16), goff = ae_tb_in_i32(&s, off, (size_t)E + 1);
    ae_ptr gw[2] = {ae_tb_in(&s, w[0], nw, AE_DT_BF16), ae_tb_in(&s, w[1], nw, AE_DT_BF16)};
    ae_ptr hw[2] = {ae_host_f32(w[0]), ae_host_f32(w[1])};
    ae_ptr gy0 = ae_tb_in(&s, y0, ny, ydt); // y0 now holds values of ydt
    double tol = ydt == AE_DT_BF16 ? TOL_BF16_OUT : TOL_GEMM_F32;
    size_t grouped = (size_t)off[E] * N;
    char what[200];
    for (int n = 1; n <= 2; n++) {
        float *ref[2] = {malloc(sizeof(float) * ny), malloc(sizeof(float) * ny)};
        assert_non_null(ref[0]), assert_non_null(ref[1]);
        ae_ptr href[2] = {ae_host_f32(ref[0]), ae_host_f32(ref[1])};
        for (int i = 0; i < n; i++) memcpy(ref[i], y0, sizeof(float) * ny);
        g_cpu->expert_matmul(g_cpu, n, href, ae_host_f32(x), hw, ae_host_i32(off), S, E, N, Kd);
        float *sync[2] = {NULL, NULL}; // the k_expert_gemm_wgmma outputs (mode "sync")
        for (int m = 0; m < NMODES; m++) {
            const char *mode = set_mode(m);
            float *got[2][2];
            ae_scratch sm; // this mode's outputs
            ae_scratch_init(&sm, g_gpu);
            for (int run = 0; run < 2; run++) {
                ae_ptr gy[2];
                for (int i = 0; i < n; i++) {
                    gy[i] = ae_scratch_alloc(&sm, ny, ydt);
                    if (ae_ptr_is_null(gy[i])) fail_msg("cuda alloc: %s", ae_last_error());
                    ae_copy(g_gpu, gy[i], gy0, ny);
                }
                g_gpu->expert_matmul(g_gpu, n, gy, gx, gw, goff, S, E, N, Kd);
                for (int i = 0; i < n; i++) got[i][run] = ae_tb_out(g_gpu, gy[i], ny);
            }
            ae_scratch_free(&sm);
            for (int i = 0; i < n; i++) {
                snprintf(what, sizeof what, "expert_matmul n=%d E=%d S=%d N=%d Kd=%d y[%d] %s "
                         "AE_MOE_WGMMA=%s", n, E, S, N, Kd, i, ae_dtype_name(ydt), mode);
                check_l2(got[i][0], ref[i], ny, tol, what);
                check_same(got[i][0], got[i][1], ny, what);
                if (grouped < ny) check_same(got[i][0] + grouped, y0 + grouped, ny - grouped, what);
                free(got[i][1]);
                if (m > MODE_SYNC) { // the named kernels after sync: its bits
                    strncat(what, " vs sync", sizeof what - strlen(what) - 1);
                    check_same(got[i][0], sync[i], ny, what);
                }
                if (m == MODE_SYNC) sync[i] = got[i][0];
                else free(got[i][0]);
            }
        }
        free(sync[0]), free(sync[1]);
        free(ref[0]), free(ref[1]);
    }
    unset_mode();
    ae_scratch_free(&s);
    free(x), free(y0), free(w[0]), free(w[1]);
}

// Slot offsets of E experts with counts[e] rows each.
static int32_t *offsets(const int *counts, int E) {
    int32_t *off = malloc(sizeof(int32_t) * ((size_t)E + 1));
    assert_non_null(off);
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + counts[e];
    return off;
}

static void test_expert_matmul(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 813);
    // Qwen3-30B-A3B's gate/up (N 768, Kd 2048) and down (N 2048, Kd 768) shapes, 128 experts of
    // 0 .. 126 rows (expert 5 none), 7 rows past off[E]
    int c128[128];
    for (int e = 0; e < 128; e++) c128[e] = e == 5 ? 0 : (int)(ae_rng_u64(&r) % 127);
    int32_t *off = offsets(c128, 128);
    run_expert_matmul(&r, off, 128, 7, 768, 2048, AE_DT_F32);
    run_expert_matmul(&r, off, 128, 7, 2048, 768, AE_DT_BF16);
    free(off);
    // odd sizes: 7 experts, expert 2 without rows, one with 300 (whole and partial tiles)
    const int c7[7] = {33, 1, 0, 300, 129, 128, 17};
    off = offsets(c7, 7);
    run_expert_matmul(&r, off, 7, 5, 72, 136, AE_DT_F32);
    run_expert_matmul(&r, off, 7, 0, 136, 72, AE_DT_BF16);
    free(off);
}

int main(void) {
    g_cpu = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moe_ffn_qwen3),
        cmocka_unit_test(test_moe_ffn_odd),
        cmocka_unit_test(test_moe_ffn_decode_odd),
        cmocka_unit_test(test_expert_matmul),
    };
    ae_test_gpu_group g = {.gpu = &g_gpu, .poison = 1};
    return ae_test_gpu_main(&g, tests);
}
