// Model parity with transformers (fp32): tiny random Qwen3 / Qwen3-MoE checkpoints built and
// saved by transformers (tests/fixtures/models, tools/gen_fixtures.py tiny), and the trained
// teachers (tests/fixtures/teachers; weights: models/qwen3-micro, ../shared/teachers/*).
// Checks: logits within 1e-4 of the logit scale, incremental decode == full recompute, greedy
// continuation == transformers' generate, eval-ppl protocol == the Python reference.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "eval/ppl.h"
#include "infer/generate.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "util/testutil.h"

typedef struct {
    int32_t *ids;    // (T)
    int T;
    float *logits;   // (T, V)
    int32_t *greedy; // (G)
    int G;
    int64_t ppl_tokens, ppl_ctx;
    double ppl_nll;
} expected;

static int32_t *read_i32(const ae_st_set *s, const char *name, int *n) {
    const ae_st_tensor *t = ae_st_find(s, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, AE_DT_I32);
    int32_t *v = malloc(t->nbytes + 4);
    memcpy(v, t->data, t->nbytes);
    *n = (int)t->numel;
    return v;
}

static void read_expected(const char *path, expected *e) {
    memset(e, 0, sizeof *e);
    ae_st_set *s;
    assert_int_equal(ae_st_open_file(path, &s), AE_OK);
    e->ids = read_i32(s, "input_ids", &e->T);
    e->greedy = read_i32(s, "greedy", &e->G);
    const ae_st_tensor *lg = ae_st_find(s, "logits");
    assert_non_null(lg);
    e->logits = malloc(sizeof(float) * (size_t)lg->numel);
    assert_int_equal(ae_st_to_f32(lg, e->logits), AE_OK);
    const ae_st_tensor *t;
    if ((t = ae_st_find(s, "ppl_tokens"))) memcpy(&e->ppl_tokens, t->data, 8);
    if ((t = ae_st_find(s, "ppl_ctx"))) memcpy(&e->ppl_ctx, t->data, 8);
    if ((t = ae_st_find(s, "ppl_mean_nll"))) memcpy(&e->ppl_nll, t->data, 8);
    ae_st_close(s);
}

static void free_expected(expected *e) {
    free(e->ids);
    free(e->greedy);
    free(e->logits);
}

static float max_abs(const float *x, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

// Full forward logits == transformers; one-token-at-a-time decode == full forward.
static void check_logits(const char *name, const ae_model *m, const expected *e) {
    int V = m->cfg.vocab_size, T = e->T;
    size_t n = (size_t)T * V;
    float *full = malloc(sizeof(float) * n), *inc = malloc(sizeof(float) * n);
    ae_kv_cache c;
    assert_int_equal(ae_kv_cache_init(&c, m, T), AE_OK);
    assert_int_equal(ae_model_forward(m, &c, e->ids, T, ae_host_f32(full), 1), AE_OK);
    float scale = max_abs(e->logits, n), err = max_abs_diff(full, e->logits, n);
    printf("%-26s T=%d V=%d max|logit| %.3f  max abs err vs transformers %.3g (%.2g of scale)\n",
           name, T, V, scale, err, err / scale);
    assert_true(err <= 1e-4f * scale);
    ae_kv_cache_reset(&c);
    // prefill half, then decode one token at a time
    int half = T / 2;
    assert_int_equal(ae_model_forward(m, &c, e->ids, half, ae_host_f32(inc), 1), AE_OK);
    for (int t = half; t < T; t++)
        assert_int_equal(ae_model_forward(m, &c, e->ids + t, 1, ae_host_f32(inc + (size_t)t * V), 1),
                         AE_OK);
    float derr = max_abs_diff(full, inc, n);
    printf("%-26s incremental decode vs full recompute: max abs diff %.3g\n", name, derr);
    assert_true(derr <= 1e-5f * scale);
    ae_kv_cache_free(&c);
    free(full);
    free(inc);
}

typedef struct {
    int32_t got[256];
    int n;
} collect;

static int on_tok(void *ud, int32_t id) {
    collect *c = ud;
    c->got[c->n++] = id;
    return 0;
}

static void check_greedy(const ae_model *m, const int32_t *prompt, int n_prompt,
                         const expected *e) {
    ae_sampler s;
    ae_sampler_params p = {.greedy = 1};
    assert_int_equal(ae_sampler_init(&s, &p, m->cfg.vocab_size), AE_OK);
    collect c = {.n = 0};
    ae_gen_stats gs;
    assert_int_equal(ae_generate(m, prompt, n_prompt, e->G, &s, -1, on_tok, &c, &gs), AE_OK);
    assert_int_equal(c.n, e->G);
    for (int i = 0; i < e->G; i++) assert_int_equal(c.got[i], e->greedy[i]);
    ae_sampler_free(&s);
}

static void run_tiny(const char *name) {
    char dir[512], exp_path[600];
    snprintf(dir, sizeof dir, "%s", ae_test_src("tests/fixtures/models/"));
    strncat(dir, name, sizeof dir - strlen(dir) - 1);
    snprintf(exp_path, sizeof exp_path, "%s/expected.safetensors", dir);
    ae_model *m;
    if (ae_model_load(dir, ae_backend_cpu(), &m) != AE_OK) fail_msg("%s", ae_last_error());
    expected e;
    read_expected(exp_path, &e);
    check_logits(name, m, &e);
    check_greedy(m, e.ids, 8, &e); // transformers continued the first 8 ids
    free_expected(&e);
    ae_model_free(m);
}

static void test_dense_gqa1(void **s) { (void)s; run_tiny("dense_gqa1"); }
static void test_dense_head_dim_default(void **s) { (void)s; run_tiny("dense_head_dim_default"); }
static void test_dense_gqa2_untied(void **s) { (void)s; run_tiny("dense_gqa2_untied"); }
static void test_dense_gqa4_bf16(void **s) { (void)s; run_tiny("dense_gqa4"); }
static void test_moe_norm_topk(void **s) { (void)s; run_tiny("moe_norm_topk"); }
static void test_moe_step2_f16(void **s) { (void)s; run_tiny("moe_sparse_step2_untied"); }

static void run_teacher(const char *name, const char *dir) {
    if (!dir) return; // skipped, reason printed
    char exp_path[512];
    snprintf(exp_path, sizeof exp_path, "%s/%s.safetensors", ae_test_src("tests/fixtures/teachers"), name);
    ae_model *m;
    if (ae_model_load(dir, ae_backend_cpu(), &m) != AE_OK) fail_msg("%s", ae_last_error());
    expected e;
    read_expected(exp_path, &e);
    check_logits(name, m, &e);
    check_greedy(m, e.ids, e.T, &e);
    // eval-ppl protocol on data/sample.txt
    ae_tokenizer *tok;
    assert_int_equal(ae_tokenizer_load(ae_test_src("models/qwen3-micro"), &tok), AE_OK);
    char *text;
    size_t len;
    assert_int_equal(ae_file_read_all(ae_test_src("data/sample.txt"), &text, &len), AE_OK);
    ae_ppl r;
    assert_int_equal(ae_ppl_text(m, tok, text, len, (int)e.ppl_ctx, 0, &r), AE_OK);
    double nll = r.nll_sum / r.tokens;
    printf("%-26s eval ppl ctx %lld: %lld tokens, mean nll %.6f (transformers %.6f)\n", name,
           (long long)e.ppl_ctx, (long long)r.tokens, nll, e.ppl_nll);
    assert_int_equal(r.tokens, e.ppl_tokens);
    assert_true(fabs(nll - e.ppl_nll) < 1e-4);
    free(text);
    ae_tokenizer_free(tok);
    free_expected(&e);
    ae_model_free(m);
}

static void test_teacher_micro(void **s) {
    (void)s;
    run_teacher("qwen3-micro", ae_test_src("models/qwen3-micro"));
}
static void test_teacher_small_sharded(void **s) {
    (void)s;
    run_teacher("qwen3-small", ae_test_shared("teachers/qwen3-small", "qwen3-small parity"));
}
static void test_teacher_moe(void **s) {
    (void)s;
    run_teacher("qwen3-moe", ae_test_shared("teachers/qwen3-moe", "qwen3-moe parity"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_gqa1),        cmocka_unit_test(test_dense_head_dim_default),
        cmocka_unit_test(test_dense_gqa2_untied),
        cmocka_unit_test(test_dense_gqa4_bf16),   cmocka_unit_test(test_moe_norm_topk),
        cmocka_unit_test(test_moe_step2_f16),     cmocka_unit_test(test_teacher_micro),
        cmocka_unit_test(test_teacher_small_sharded), cmocka_unit_test(test_teacher_moe),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
