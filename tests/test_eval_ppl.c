// `attnedit eval ppl` on students: the numbers it prints for an MLA and a GateSWA student saved
// by `attnedit convert` equal a reference computed here in double from a student built
// in-process with the same spec (never saved or loaded), run one token at a time (the decode
// path: absorbed MLA over the latent cache, the sliding-window ring buffer), a different code
// path from eval's prefill. Documents are split on "<|endoftext|>" here and scored in windows
// of ctx tokens with stride ctx, each from an empty cache (the protocol of eval/ppl.h).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "model/student.h"
#include "tok/tokenizer.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"
#define CTX 64

static ae_tokenizer *g_tok;
static char *g_dir, *g_text_path, *g_text;
static size_t g_text_len;

typedef struct {
    const ae_model *m;
    int ctx;
    float *z;       // (V) one position's logits
    double sum;     // of -log p(next token)
    int64_t tokens;
} nll_acc;

// One document: windows of ctx tokens, stride ctx, each decoded one token at a time.
static void nll_doc(const int32_t *ids, size_t n, void *p) {
    nll_acc *a = p;
    int V = a->m->cfg.vocab_size;
    for (size_t w = 0; w + 1 < n; w += (size_t)a->ctx) {
        int T = (int)(n - 1 - w < (size_t)a->ctx ? n - 1 - w : (size_t)a->ctx);
        ae_kv_cache c;
        assert_int_equal(ae_kv_cache_init(&c, a->m, T), AE_OK);
        for (int i = 0; i < T; i++) {
            ae_status st = ae_model_forward(a->m, &c, ids + w + i, 1, ae_host_f32(a->z), 0);
            assert_int_equal(st, AE_OK);
            a->sum += ae_test_logsumexp(a->z, V, 1.0f, NULL) - a->z[ids[w + (size_t)i + 1]];
            a->tokens++;
        }
        ae_kv_cache_free(&c);
    }
}

// Sum of -log p(next token) in double over the protocol's windows, decoding one token at a time.
static void ref_nll(const ae_model *m, const char *text, size_t len, int ctx, double *sum,
                    int64_t *tokens) {
    nll_acc a = {.m = m, .ctx = ctx, .z = malloc(sizeof(float) * (size_t)m->cfg.vocab_size)};
    ae_test_each_doc(g_tok, text, len, nll_doc, &a);
    free(a.z);
    *sum = a.sum;
    *tokens = a.tokens;
}

// convert (extra options) -> eval ppl --json -> compared with the in-process student's reference.
static void check_student(const char *name, const char *const *conv_extra, const ae_student_spec *spec) {
    char *out = ae_path_join(g_dir, name), *err;
    const char *conv[32] = {"convert", "--teacher", ae_test_src(MICRO), "--out", out};
    int k = 5;
    for (int i = 0; conv_extra[i]; i++) conv[k++] = conv_extra[i];
    conv[k] = NULL;
    int rc = ae_test_run_cli(conv, NULL, NULL, &err);
    if (rc != 0) fail_msg("convert %s: %s", name, err);
    free(err);
    char ctx[16];
    snprintf(ctx, sizeof ctx, "%d", CTX);
    const char *ev[] = {"eval", "ppl", "--model", out, "--file", g_text_path, "--ctx", ctx, "--json",
                        "--device", "cpu", NULL};
    char *js;
    rc = ae_test_run_cli(ev, NULL, &js, &err);
    if (rc != 0) fail_msg("eval ppl %s: %s", name, err);
    cJSON *o = cJSON_Parse(js);
    assert_non_null(o);
    ae_model *m;
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &m), AE_OK);
    ae_init_report rep;
    assert_int_equal(ae_student_make(m, spec, &rep), AE_OK);
    double sum;
    int64_t tokens;
    ref_nll(m, g_text, g_text_len, CTX, &sum, &tokens);
    double want = sum / (double)tokens, got = ae_test_json_num(o, "mean_nll");
    printf("%s: eval ppl mean NLL %.7f (ppl %.4f), reference (in-process student, token by token) "
           "%.7f, %lld tokens\n", name, got, ae_test_json_num(o, "ppl"), want, (long long)tokens);
    assert_int_equal((int64_t)ae_test_json_num(o, "tokens"), tokens);
    // Tolerance 2e-5 nats/token: the prefill and decode paths agree to ~1e-6 relative on the
    // logits (tests/test_student.c bounds the difference by 1e-5 of the largest logit), and
    // the NLL is averaged over the tokens (measured: agreement to 1e-7).
    const double tol = 2e-5;
    assert_true(fabs(got - want) < tol);
    assert_true(fabs(ae_test_json_num(o, "ppl") - exp(got)) < 1e-9 * exp(got));
    // the check can tell the student from its teacher: their mean NLLs differ by > 100 x tol
    static double teacher_nll = -1; // computed once
    if (teacher_nll < 0) {
        ae_model *t;
        assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &t), AE_OK);
        double tsum;
        int64_t tt;
        ref_nll(t, g_text, g_text_len, CTX, &tsum, &tt);
        teacher_nll = tsum / (double)tt;
        ae_model_free(t);
    }
    printf("  teacher's mean NLL on the same text %.5f\n", teacher_nll);
    assert_true(fabs(teacher_nll - want) > 100 * tol);
    ae_model_free(m);
    cJSON_Delete(o);
    free(js);
    free(err);
    free(out);
}

// Teacher-initialised students: their attention matters (a random-init module's output is
// small), so a student loaded or scored wrongly moves the NLL far beyond the tolerance.
static void test_eval_ppl_mla_student(void **state) {
    (void)state;
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .qk_rope_dim = 8, .init_teacher = 1};
    check_student("mla", (const char *[]){"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8",
                                          "--init", "teacher", NULL}, &spec);
}

// Window 16 < ctx 64 (the sliding layers forget), per-head gate, sinks.
static void test_eval_ppl_gateswa_student(void **state) {
    (void)state;
    ae_student_spec spec = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 16, .gate = AE_GATE_HEAD,
                            .sinks = 1, .init_teacher = 1};
    check_student("gateswa", (const char *[]){"--target", "gateswa", "--full-every", "2", "--window", "16",
                                              "--gate", "head", "--sinks", "--init", "teacher", NULL}, &spec);
}

// Random init with a query bottleneck (q_lora_rank) on layers 1 and 3 only (mixed student).
static void test_eval_ppl_mla_random_mixed(void **state) {
    (void)state;
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 24, .q_lora_rank = 48, .qk_rope_dim = 16,
                            .layers = (int[]){1, 3}, .n_layers = 2, .seed = 11};
    check_student("mla-random", (const char *[]){"--target", "mla", "--kv-lora-rank", "24", "--q-lora-rank", "48",
                                                 "--qk-rope-dim", "16", "--layers", "1,3", "--seed", "11",
                                                 "--init", "random", NULL},
                  &spec);
}

static int setup(void **state) {
    (void)state;
    if (ae_tokenizer_load(ae_test_src(MICRO), &g_tok) != AE_OK) return -1;
    g_dir = ae_test_tmpdir();
    // two documents: the first 1200 bytes of each of data/sample.txt's two (~650 tokens)
    g_text = ae_test_sample_docs(1200, &g_text_len);
    if (!g_text) return -1;
    g_text_path = ae_path_join(g_dir, "text.txt");
    return ae_test_write_file(g_text_path, g_text, g_text_len);
}

static int teardown(void **state) {
    (void)state;
    ae_tokenizer_free(g_tok);
    ae_test_rmtree(g_dir);
    free(g_dir);
    free(g_text_path);
    free(g_text);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_ppl_mla_student),
        cmocka_unit_test(test_eval_ppl_gateswa_student),
        cmocka_unit_test(test_eval_ppl_mla_random_mixed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
