// The absorbed-MLA decode in three launches (issue 7) against the CPU reference, op by op, and
// the whole model's decode fused against unfused (AE_MLA_FUSE=0):
//   mla_decode_absorb (cuda_mla_prep.cu: the prep and q̃_nope = q_nope_h·Wuk_h in one launch):
//     the kv rows and qt's rope part bit for bit what the GPU's mla_decode_prep writes (the same
//     arithmetic in the same kernel code), qt's latent part within TOL_ABSORB of the cpu op
//     (relative L2: bf16 output, one rounding of 2^-9, fp32 sums in another order), and within
//     TOL_ABSORB of the GPU's unfused form (prep + the batched-GEMV gemm);
//   mla_decode_attend (kernel E's partials merged and multiplied by Wuv in one launch,
//     cuda_mla_decode.cu): o within TOL_ATTEND of the cpu op (relative L2: P rounded to bf16
//     inside kernel E, 2^-9 a weight, and o rounded to bf16; test_backend_ops' TOL_ATTN for the
//     same kernel), within TOL_ATTEND of the GPU's unfused form (AE_CUDA_MLA_KERNEL=old: kernel
//     D, the combine and the gemm), within TOL_MERGE of the merge by row slices (k_mla_merge_wuv,
//     AE_MLA_MERGE_Q=0) where the merge by latent parts (k_mla_merge_q, from 64 splits) runs,
//     bit-identical over two calls (fixed merge order), and the plan (ae_cuda_mla_last) names
//     the fused merge and which kernel merged, with one split at 2 keys and several from 4096
//     keys on;
// at T = 1, 2, 4 tokens and positions 1, 63, 64, 65, 4095, 32768 (Qwen3-8B MLA dims: 32 heads,
// R 512, dr 64, dn 64, dv 128; T = 4 with 16 heads so that T·H stays within kernel E's 64 rows,
// and T = 4 with 32 heads: the unfused fallback inside the op), plus small odd students.
// Model: a 2-layer MLA student with the 8B's attention dims decodes 12 steps across positions
// 60..71 fused and unfused (graphs off): logits within TOL_MODEL relative L2 at every step.
// Needs a CUDA build and a GPU (exit 77 = skipped otherwise).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/dtype.h"
#include "core/file.h"
#include "core/rng.h"
#include "model/model.h"
#include "util/testutil.h"
#ifdef AE_HAVE_CUDA
#include "backend/cuda.h"
#endif

#define TOL_ABSORB 4e-3 // relative L2: bf16 rounding of qt (~1.1e-3 rms), sum order ~1e-6
#define TOL_ATTEND 1e-2 // relative L2: bf16 P in kernel E and bf16 o (~2e-3 measured on D/E)
#define TOL_MODEL 2e-2  // relative L2 of logits after 2 layers of bf16 activations
#define TOL_MERGE 4e-3  // relative L2: the two merges add the same fp32 values in other orders

static const ae_backend *g_gpu, *g_cpu;

static const int POSITIONS[] = {1, 63, 64, 65, 4095, 32768};
#define N_POS ((int)(sizeof POSITIONS / sizeof POSITIONS[0]))

// ---- device helpers -----------------------------------------------------------------------------

static ae_ptr dput(const float *h, size_t n, ae_dtype dt) {
    ae_ptr p = g_gpu->alloc(g_gpu, n, dt);
    if (ae_ptr_is_null(p)) fail_msg("cuda alloc of %zu values: %s", n, ae_last_error());
    if (g_gpu->upload(g_gpu, p, h, AE_DT_F32, n) != AE_OK)
        fail_msg("cuda upload of %zu values: %s", n, ae_last_error());
    return p;
}

static ae_ptr dput_i32(const int32_t *h, size_t n) {
    ae_ptr p = g_gpu->alloc(g_gpu, n, AE_DT_I32);
    if (ae_ptr_is_null(p) || g_gpu->upload(g_gpu, p, h, AE_DT_I32, n) != AE_OK)
        fail_msg("cuda upload of %zu I32 values: %s", n, ae_last_error());
    return p;
}

// Downloads n values as F32 (a failed kernel shows up here).
static float *dget(ae_ptr p, size_t n) {
    float *h = ae_test_floats(n);
    if (g_gpu->download(g_gpu, h, AE_DT_F32, p, n) != AE_OK)
        fail_msg("cuda download of %zu values: %s", n, ae_last_error());
    return h;
}

static void expect_rel(const float *got, const float *want, size_t n, double tol, const char *what) {
    double e = ae_test_rel_err(got, want, n);
    printf("  %-70s rel err %.2e (tol %.0e)\n", what, e, tol);
    if (!(e <= tol)) fail_msg("%s: relative L2 error %.3e > %.1e", what, e, tol);
}

static void expect_same(const float *a, const float *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s: element %zu differs (%.9g vs %.9g)", what, i, a[i], b[i]);
}

static const char *mla_plan(void) {
#ifdef AE_HAVE_CUDA
    return ae_cuda_mla_last();
#else
    return "none";
#endif
}

// ---- mla_decode_absorb ---------------------------------------------------------------------------

typedef struct {
    int H, R, dr, dn, dv;
} mla_shape;

static const mla_shape QWEN8B = {32, 512, 64, 64, 128};

// One call at T tokens whose last position is pmax: the cpu op, the fused GPU op, and the GPU's
// unfused form (mla_decode_prep then the per-head gemm) on the same inputs.
static void run_absorb(ae_rng *r, int T, mla_shape s, int pmax) {
    const int H = s.H, R = s.R, dr = s.dr, dn = s.dn, Cd = R + dr, dq = dn + dr, dkw = dn + s.dv;
    const size_t nkv = (size_t)T * Cd, nq = (size_t)T * H * dq, nqt = (size_t)T * H * Cd;
    const size_t nw = (size_t)H * dkw * R;
    float *kv = ae_test_normal(r, nkv, 2.0f, AE_DT_BF16), *q = ae_test_normal(r, nq, 1.0f, AE_DT_BF16);
    float *qt = ae_test_normal(r, nqt, 1.0f, AE_DT_BF16); // overwritten everywhere
    float *w = ae_test_normal(r, (size_t)R, 1.0f, AE_DT_BF16);
    float *wkvb = ae_test_normal(r, nw, 0.05f, AE_DT_BF16);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    assert_non_null(pos);
    for (int t = 0; t < T; t++) pos[t] = pmax - (T - 1) + t > 0 ? pmax - (T - 1) + t : 0;
    ae_mla_prep_args a = {.T = T, .H = H, .R = R, .dr = dr, .dn = dn, .ldkv = Cd, .eps = 1e-6f,
                          .theta = 1e6, .mode = AE_ROPE_INTERLEAVED};
    const int64_t sw = (int64_t)dkw * R;
    // cpu reference
    float *kvc = ae_test_floats_copy(kv, nkv), *qtc = ae_test_floats_copy(qt, nqt);
    g_cpu->mla_decode_absorb(g_cpu, &a, ae_host_f32(kvc), ae_host_f32(q), ae_host_f32(qtc),
                             ae_host_f32(w), ae_host_f32(wkvb), sw, ae_host_i32(pos));
    // GPU fused
    ae_ptr dkv = dput(kv, nkv, AE_DT_BF16), dq_ = dput(q, nq, AE_DT_BF16);
    ae_ptr dqt = dput(qt, nqt, AE_DT_BF16), dw = dput(w, (size_t)R, AE_DT_BF16);
    ae_ptr dwk = dput(wkvb, nw, AE_DT_BF16), dp = dput_i32(pos, (size_t)T);
    g_gpu->mla_decode_absorb(g_gpu, &a, dkv, dq_, dqt, dw, dwk, sw, dp);
    float *kvg = dget(dkv, nkv), *qtg = dget(dqt, nqt);
    // GPU unfused: the prep op, then the gemm (zeros first without a nope part)
    ae_ptr ukv = dput(kv, nkv, AE_DT_BF16), uqt = dput(qt, nqt, AE_DT_BF16);
    if (dn == 0) g_gpu->fill(g_gpu, uqt, nqt, 0.0f);
    g_gpu->mla_decode_prep(g_gpu, &a, ukv, dq_, uqt, dw, dp);
    if (dn > 0) {
        ae_gemm_args g = {.M = T, .N = R, .K = dn, .batch = H, .lda = (int64_t)H * dq, .sa = dq,
                          .ldb = R, .sb = sw, .ldy = (int64_t)H * Cd, .sy = Cd, .alpha = 1.0f};
        g_gpu->gemm(g_gpu, &g, uqt, dq_, dwk);
    }
    float *kvu = dget(ukv, nkv), *qtu = dget(uqt, nqt);
    char what[160];
    snprintf(what, sizeof what, "absorb T=%d H=%d R=%d dr=%d dn=%d pos<=%d", T, H, R, dr, dn, pmax);
    // the prep's outputs: the same kernel code as mla_decode_prep, so the same bits
    expect_same(kvg, kvu, nkv, what);
    float *lat_g = ae_test_floats((size_t)T * H * R), *lat_c = ae_test_floats((size_t)T * H * R);
    float *lat_u = ae_test_floats((size_t)T * H * R);
    for (size_t v = 0; v < (size_t)T * H; v++) {
        for (int i = 0; i < R; i++) {
            lat_g[v * R + i] = qtg[v * Cd + i], lat_c[v * R + i] = qtc[v * Cd + i];
            lat_u[v * R + i] = qtu[v * Cd + i];
        }
        for (int i = R; i < Cd; i++)
            if (memcmp(&qtg[v * Cd + i], &qtu[v * Cd + i], sizeof(float)) != 0)
                fail_msg("%s: query rope part of row %zu differs from mla_decode_prep's", what, v);
    }
    char w2[200];
    snprintf(w2, sizeof w2, "%s: kv rows vs cpu", what);
    expect_rel(kvg, kvc, nkv, TOL_ABSORB, w2);
    if (dn > 0) {
        snprintf(w2, sizeof w2, "%s: latent part vs cpu", what);
        expect_rel(lat_g, lat_c, (size_t)T * H * R, TOL_ABSORB, w2);
        snprintf(w2, sizeof w2, "%s: latent part vs unfused", what);
        expect_rel(lat_g, lat_u, (size_t)T * H * R, TOL_ABSORB, w2);
    } else {
        for (size_t i = 0; i < (size_t)T * H * R; i++)
            if (lat_g[i] != 0.0f) fail_msg("%s: latent part %zu not zero without dn", what, i);
    }
    g_gpu->free(g_gpu, dkv), g_gpu->free(g_gpu, dq_), g_gpu->free(g_gpu, dqt);
    g_gpu->free(g_gpu, dw), g_gpu->free(g_gpu, dwk), g_gpu->free(g_gpu, dp);
    g_gpu->free(g_gpu, ukv), g_gpu->free(g_gpu, uqt);
    free(kv), free(q), free(qt), free(w), free(wkvb), free(pos), free(kvc), free(qtc);
    free(kvg), free(qtg), free(kvu), free(qtu), free(lat_g), free(lat_c), free(lat_u);
}

static void test_absorb(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 7001);
    for (int i = 0; i < N_POS; i++) {
        run_absorb(&r, 1, QWEN8B, POSITIONS[i]);
        run_absorb(&r, 2, QWEN8B, POSITIONS[i]);
        run_absorb(&r, 4, QWEN8B, POSITIONS[i]);
    }
    run_absorb(&r, 3, (mla_shape){6, 256, 32, 32, 32}, 1000); // small student, R 256
    run_absorb(&r, 2, (mla_shape){4, 40, 8, 24, 16}, 77);    // R not a multiple of 64
    run_absorb(&r, 1, (mla_shape){4, 128, 16, 0, 32}, 9);    // no nope part
    run_absorb(&r, 9, QWEN8B, 300);                          // T > 8: the unfused form inside
}

// ---- mla_decode_attend ---------------------------------------------------------------------------

// o (T, H, dv) of T query tokens at positions pos0 .. pos0 + T − 1 over a latent cache of
// pos0 + T rows: the cpu op, the fused GPU op (twice), and the GPU op with AE_CUDA_MLA_KERNEL=old
// (attention by kernel D + combine, then the gemm). fused: the plan must name the merge.
static void run_attend(ae_rng *r, int T, mla_shape s, int pos0, int fused) {
    const int H = s.H, R = s.R, dn = s.dn, dv = s.dv, Cd = R + s.dr, dkv = dn + dv, S = pos0 + T;
    const size_t nc = (size_t)S * Cd, nq = (size_t)T * H * Cd, no = (size_t)T * H * dv;
    const size_t nw = (size_t)H * dkv * R;
    float *cache = ae_test_normal(r, nc, 1.0f, AE_DT_BF16);
    // scores of a few units: q · latent over 576 dims of N(0,1) · N(0, 0.05) values
    float *qt = ae_test_normal(r, nq, 0.05f, AE_DT_BF16);
    float *wkvb = ae_test_normal(r, nw, 0.05f, AE_DT_BF16);
    const int64_t sw = (int64_t)dkv * R;
    ae_attn_args a = {.T = T, .pos0 = pos0, .Hq = H, .Hkv = 1, .dk = Cd, .dv = R,
                      .k_stride = Cd, .v_stride = Cd, .scale = 1.0f / sqrtf((float)(dn + s.dr)),
                      .sinks = ae_ptr_null()};
    float *oc = ae_test_floats(no);
    g_cpu->mla_decode_attend(g_cpu, &a, ae_host_f32(oc), ae_host_f32(qt), ae_host_f32(cache),
                             ae_host_f32(wkvb + (size_t)dn * R), sw, dv);
    ae_ptr dc = dput(cache, nc, AE_DT_BF16), dq_ = dput(qt, nq, AE_DT_BF16);
    ae_ptr dw = dput(wkvb, nw, AE_DT_BF16), d_o = g_gpu->alloc(g_gpu, no, AE_DT_BF16);
    assert_non_null(d_o.data);
    ae_ptr wuv = ae_ptr_at(dw, (size_t)dn * R);
    g_gpu->mla_decode_attend(g_gpu, &a, d_o, dq_, dc, wuv, sw, dv);
    float *og = dget(d_o, no);
    char plan[200];
    snprintf(plan, sizeof plan, "%s", mla_plan());
    g_gpu->mla_decode_attend(g_gpu, &a, d_o, dq_, dc, wuv, sw, dv);
    float *og2 = dget(d_o, no);
    assert_int_equal(setenv("AE_MLA_MERGE_Q", "0", 1), 0); // the merge by row slices
    g_gpu->mla_decode_attend(g_gpu, &a, d_o, dq_, dc, wuv, sw, dv);
    unsetenv("AE_MLA_MERGE_Q");
    char plan_w[200];
    snprintf(plan_w, sizeof plan_w, "%s", mla_plan());
    float *ow = dget(d_o, no);
    assert_int_equal(setenv("AE_CUDA_MLA_KERNEL", "old", 1), 0);
    g_gpu->mla_decode_attend(g_gpu, &a, d_o, dq_, dc, wuv, sw, dv);
    unsetenv("AE_CUDA_MLA_KERNEL");
    float *ou = dget(d_o, no);
    char what[200];
    snprintf(what, sizeof what, "attend T=%d H=%d R=%d dv=%d keys=%d", T, H, R, dv, S);
    printf("  %s: %s\n", what, plan);
    expect_same(og, og2, no, what); // deterministic merge
    char w2[260];
    snprintf(w2, sizeof w2, "%s vs cpu", what);
    expect_rel(og, oc, no, TOL_ATTEND, w2);
    snprintf(w2, sizeof w2, "%s vs unfused", what);
    expect_rel(og, ou, no, TOL_ATTEND, w2);
#ifdef AE_HAVE_CUDA
    if (fused) {
        if (!strstr(plan, "merge_wuv")) fail_msg("%s: the fused path did not run (%s)", what, plan);
        const char *sp = strstr(plan, "splits ");
        assert_non_null(sp);
        const int splits = atoi(sp + 7);
        // the merge by latent parts where it takes the call (R % 128 == 0, dv <= 128, at least
        // 64 splits), else by row slices
        const int by_parts = R % 128 == 0 && dv <= 128 && splits >= 64;
        const char *want = by_parts ? "merge by k_mla_merge_q" : "merge by k_mla_merge_wuv";
        if (!strstr(plan, want)) fail_msg("%s: plan without \"%s\" (%s)", what, want, plan);
        if (!strstr(plan_w, "merge by k_mla_merge_wuv"))
            fail_msg("%s: AE_MLA_MERGE_Q=0 did not merge by row slices (%s)", what, plan_w);
        snprintf(w2, sizeof w2, "%s vs the merge by row slices", what);
        expect_rel(og, ow, no, TOL_MERGE, w2);
        if (S <= 2 && splits != 1) fail_msg("%s: %d splits over %d keys", what, splits, S);
        if (S >= 4096 && splits < 2) fail_msg("%s: one split over %d keys", what, S);
    } else if (strstr(plan, "merge_wuv")) {
        fail_msg("%s: %d rows took the fused path (%s)", what, T * H, plan);
    }
#else
    (void)fused;
#endif
    g_gpu->free(g_gpu, dc), g_gpu->free(g_gpu, dq_), g_gpu->free(g_gpu, dw);
    g_gpu->free(g_gpu, d_o);
    free(cache), free(qt), free(wkvb), free(oc), free(og), free(og2), free(ou), free(ow);
}

static void test_attend(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 7002);
    mla_shape h16 = QWEN8B;
    h16.H = 16;
    for (int i = 0; i < N_POS; i++) {
        run_attend(&r, 1, QWEN8B, POSITIONS[i], 1);
        run_attend(&r, 2, QWEN8B, POSITIONS[i], 1);
        run_attend(&r, 4, h16, POSITIONS[i], 1);
    }
    run_attend(&r, 4, QWEN8B, 4095, 0);                         // 128 rows: attention + gemm
    run_attend(&r, 2, (mla_shape){6, 256, 32, 32, 40}, 3000, 1); // R 256 (288/256), dv 40
    run_attend(&r, 1, (mla_shape){6, 256, 32, 32, 40}, 32767, 1); // the same by two latent parts
}

// ---- the whole model ----------------------------------------------------------------------------

// tests/fixtures/configs/qwen3-8b-mla with 2 layers, hidden 512, vocab 512 (the attention dims
// kept) in dir/config.json.
static void small_mla_config(const char *dir) {
    char *text = NULL;
    size_t len = 0;
    if (ae_file_read_all(ae_test_src("tests/fixtures/configs/qwen3-8b-mla/config.json"), &text,
                         &len) != AE_OK)
        fail_msg("%s", ae_last_error());
    cJSON *c = cJSON_Parse(text);
    free(text);
    assert_non_null(c);
    const struct { const char *key; int value; } dims[] = {
        {"hidden_size", 512}, {"intermediate_size", 1024}, {"num_hidden_layers", 2},
        {"vocab_size", 512}, {"max_window_layers", 2}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        cJSON_ReplaceItemInObject(c, dims[i].key, cJSON_CreateNumber(dims[i].value));
    const int all[2] = {0, 1};
    cJSON_ReplaceItemInObject(c, "attention_replaced_layers", cJSON_CreateIntArray(all, 2));
    char *json = cJSON_Print(c);
    cJSON_Delete(c);
    char *path = ae_path_join(dir, "config.json");
    assert_int_equal(ae_test_write_file(path, json, strlen(json)), 0);
    free(path);
    free(json);
}

#define PROMPT 60
#define STEPS 12

static void test_model_fused_vs_unfused(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    small_mla_config(dir);
    ae_model *m = NULL;
    if (ae_model_random(dir, g_gpu, 11, &m) != AE_OK) fail_msg("%s", ae_last_error());
    const int V = m->cfg.vocab_size;
    int32_t ids[PROMPT + STEPS];
    for (int i = 0; i < PROMPT + STEPS; i++) ids[i] = (int32_t)((i * 7919u + 11u) % (unsigned)V);
    ae_kv_cache c[2];
    ae_ptr logits = g_gpu->alloc(g_gpu, (size_t)V, AE_DT_F32);
    assert_non_null(logits.data);
    float *host[2] = {ae_test_floats((size_t)V), ae_test_floats((size_t)V)};
    for (int k = 0; k < 2; k++) { // the same prefill for both
        assert_int_equal(ae_kv_cache_init(&c[k], m, PROMPT + STEPS + 1), AE_OK);
        c[k].graphs = 0;
        if (ae_model_forward(m, &c[k], ids, PROMPT, logits, 0) != AE_OK)
            fail_msg("prefill: %s", ae_last_error());
    }
    for (int i = 0; i < STEPS; i++) {
        for (int k = 0; k < 2; k++) { // k = 0 fused (default), k = 1 AE_MLA_FUSE=0
            if (k) assert_int_equal(setenv("AE_MLA_FUSE", "0", 1), 0);
            ae_status st = ae_model_decode_step(m, &c[k], ids[PROMPT + i], logits);
            unsetenv("AE_MLA_FUSE");
            if (st != AE_OK) fail_msg("decode step %d: %s", i, ae_last_error());
            if (k == 0 && !strstr(mla_plan(), "merge_wuv") && strcmp(mla_plan(), "none") != 0)
                fail_msg("step %d: the fused decode did not run (%s)", i, mla_plan());
            if (g_gpu->download(g_gpu, host[k], AE_DT_F32, logits, (size_t)V) != AE_OK)
                fail_msg("download: %s", ae_last_error());
        }
        char what[80];
        snprintf(what, sizeof what, "model decode at position %d: fused vs unfused", PROMPT + i);
        expect_rel(host[0], host[1], (size_t)V, TOL_MODEL, what);
    }
    for (int k = 0; k < 2; k++) ae_kv_cache_free(&c[k]), free(host[k]);
    g_gpu->free(g_gpu, logits);
    ae_model_free(m);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    int rc = ae_test_open_gpu(&g_gpu, 1);
    if (rc) return rc;
    g_cpu = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absorb),
        cmocka_unit_test(test_attend),
        cmocka_unit_test(test_model_fused_vs_unfused),
    };
    rc = ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
    ae_backend_close(g_gpu);
    return rc;
}
