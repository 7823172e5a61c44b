// eval tasks and eval kl on the GPU against the CPU reference: models/qwen3-micro, a GateSWA
// student of it (window 8, every other layer sliding: most requests are longer than the window)
// and an MLA student (32 + 8), both made here (teacher init) and saved. Per model:
//   - eval tasks (the fixture's arc_challenge 2-shot, winogrande 1-shot, sciq 0-shot and
//     2-shot cut to 24 tokens) scored on the GPU one request at a time (the contiguous forward)
//     and many items per forward (batch 64: the paged forward, prefixes on the tensor-core
//     runs, shared prefix pages copied on write), each request's log-likelihood within TOL of the
//     CPU's (batch 1), and the two GPU paths within TOL of each other;
//   - eval kl (teacher vs both students in one pass, data/sample.txt, windows of 200 tokens in
//     chunks of 64: the chunked forward over the KV cache) within TOL_KL_REL of the CPU's.
// A batch that read a wrong prefix page moves a continuation's log-likelihood by nats (the CPU
// test catches it at 1e-4); bf16 moves one token's by ~1e-2. Needs a CUDA build and a GPU
// (exit 77 = skipped otherwise).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "eval/kl.h"
#include "eval/tasks.h"
#include "model/save.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"
#define FIXTURE_DATA "tests/fixtures/eval_tasks/data"
// |Δ log-likelihood| of one continuation of n tokens: TOL_TOKEN per token + TOL_REL of the value
#define TOL_TOKEN 0.05
#define TOL_REL 0.02
#define TOL_KL_REL 0.05 // eval kl's mean KL and perplexities, relative

static const ae_backend *g_gpu, *g_cpu;
static char *g_tmp, *g_gswa_dir, *g_mla_dir;

static ae_model *load(const char *dir, const ae_backend *be) {
    ae_model *m = NULL;
    if (ae_model_load(dir, be, &m) != AE_OK) fail_msg("load %s on %s: %s", dir, be->name, ae_last_error());
    return m;
}

static void score(const ae_model *m, const ae_tokenizer *tok, const ae_task_item *items, int n, int max_len,
                  int batch, ae_task_scores *s) {
    if (ae_task_score(m, tok, items, n, max_len, batch, NULL, NULL, s) != AE_OK)
        fail_msg("score on %s, batch %d: %s", m->be->name, batch, ae_last_error());
}

// Requests a and b agree to bf16 rounding; returns the largest |Δ| per token.
static double compare(const char *what, const ae_task_scores *a, const ae_task_scores *b) {
    double worst = 0;
    for (int k = 0; k < a->n_req; k++) {
        double d = fabs(a->ll[k] - b->ll[k]), tol = TOL_TOKEN * a->n_tokens[k] + TOL_REL * fabs(a->ll[k]);
        if (!(d <= tol))
            fail_msg("%s: request %d (%d tokens): ll %.5f vs %.5f, |diff| %.4f > %.4f", what, k, a->n_tokens[k],
                     a->ll[k], b->ll[k], d, tol);
        if (d / a->n_tokens[k] > worst) worst = d / a->n_tokens[k];
    }
    return worst;
}

static void check_task(const char *label, const char *dir, const char *task, int shots, int max_len) {
    ae_task t;
    ae_task_item *items;
    int n;
    char *data = strdup(ae_test_src(FIXTURE_DATA));
    assert_int_equal(ae_task_load(ae_task_find(task), data, shots > 0, &t), AE_OK);
    assert_int_equal(ae_task_build(&t, shots, 0, 1234, &items, &n), AE_OK);
    ae_tokenizer *tok = NULL;
    assert_int_equal(ae_tokenizer_load(dir, &tok), AE_OK);
    ae_task_scores cpu, one, many;
    ae_model *m = load(dir, g_cpu);
    score(m, tok, items, n, max_len, 1, &cpu);
    ae_model_free(m);
    m = load(dir, g_gpu);
    score(m, tok, items, n, max_len, 1, &one);
    score(m, tok, items, n, max_len, 64, &many);
    ae_model_free(m);
    char what[128];
    snprintf(what, sizeof what, "%s %s %d-shot: gpu batch 1 vs cpu", label, task, shots);
    double w1 = compare(what, &cpu, &one);
    snprintf(what, sizeof what, "%s %s %d-shot: gpu batch 64 vs cpu", label, task, shots);
    double w64 = compare(what, &cpu, &many);
    snprintf(what, sizeof what, "%s %s %d-shot: gpu batch 64 vs gpu batch 1", label, task, shots);
    compare(what, &one, &many);
    assert_int_equal(many.n_truncated, cpu.n_truncated);
    printf("%-14s %-14s %d-shot: %3d requests, worst |diff| per token vs cpu: batch 1 %.4f, batch 64 %.4f\n",
           label, task, shots, cpu.n_req, w1, w64);
    ae_task_scores_free(&cpu);
    ae_task_scores_free(&one);
    ae_task_scores_free(&many);
    ae_tokenizer_free(tok);
    ae_task_items_free(items, n);
    ae_task_free(&t);
    free(data);
}

static void check_tasks(const char *label, const char *dir) {
    check_task(label, dir, "arc_challenge", 2, 4096); // shared prefixes over several pages
    check_task(label, dir, "winogrande", 1, 4096);    // a context per choice
    check_task(label, dir, "sciq", 0, 4096);
    check_task(label, dir, "sciq", 2, 24);            // cut from the left
}

static void test_tasks(void **state) {
    (void)state;
    check_tasks("teacher", ae_test_src(MICRO));
    check_tasks("gateswa W8", g_gswa_dir);
    check_tasks("mla 32+8", g_mla_dir);
}

static void same_rel(const char *what, double gpu, double cpu) {
    double rel = fabs(gpu - cpu) / (fabs(cpu) + 1e-12);
    if (!(rel < TOL_KL_REL)) fail_msg("eval kl %s: gpu %.6f vs cpu %.6f (relative %.3f)", what, gpu, cpu, rel);
}

static void test_kl(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(ae_file_read_all(ae_test_src("data/sample.txt"), &text, &len), AE_OK);
    ae_tokenizer *tok = NULL;
    assert_int_equal(ae_tokenizer_load(ae_test_src(MICRO), &tok), AE_OK);
    static ae_kl_result res[2][2]; // [cpu, gpu][student]
    const ae_backend *bes[2] = {g_cpu, g_gpu};
    for (int d = 0; d < 2; d++) {
        ae_model *t = load(ae_test_src(MICRO), bes[d]);
        const ae_model *s[2] = {load(g_gswa_dir, bes[d]), load(g_mla_dir, bes[d])};
        if (ae_kl_text(t, s, 2, tok, text, len, 200, 64, 0, res[d]) != AE_OK)
            fail_msg("eval kl on %s: %s", bes[d]->name, ae_last_error());
        ae_model_free(t);
        ae_model_free((ae_model *)s[0]);
        ae_model_free((ae_model *)s[1]);
    }
    for (int i = 0; i < 2; i++) {
        const ae_kl_acc *c = &res[0][i].all, *g = &res[1][i].all;
        assert_int_equal(g->tokens, c->tokens);
        printf("eval kl student %d: KL cpu %.5f gpu %.5f, top1 cpu %.4f gpu %.4f\n", i, c->kl / c->tokens,
               g->kl / g->tokens, (double)c->top1 / c->tokens, (double)g->top1 / g->tokens);
        same_rel("KL", g->kl / g->tokens, c->kl / c->tokens);
        same_rel("teacher NLL", g->nll_t / g->tokens, c->nll_t / c->tokens);
        same_rel("student NLL", g->nll_s / g->tokens, c->nll_s / c->tokens);
        for (int b = 0; b < res[0][i].n_buckets; b++)
            assert_int_equal(res[1][i].bucket[b].tokens, res[0][i].bucket[b].tokens);
    }
    ae_tokenizer_free(tok);
    free(text);
}

// The eval tests' student of the micro teacher (ae_test_eval_student, teacher init), saved under
// g_tmp; NULL (message printed) on failure.
static char *make_student(ae_attn_kind target, const char *name) {
    ae_model *m = NULL;
    char *out = ae_path_join(g_tmp, name);
    ae_save_opts so = {.src_dir = ae_test_src(MICRO), .force = 1};
    if (!out || ae_model_load(ae_test_src(MICRO), g_cpu, &m) != AE_OK ||
        ae_test_eval_student(m, target, 1) != AE_OK || ae_model_save(m, out, &so) != AE_OK) {
        printf("FAIL: student %s: %s\n", name, ae_last_error());
        free(out);
        out = NULL;
    }
    ae_model_free(m);
    return out;
}

static int setup(void **state) {
    (void)state;
    g_gswa_dir = make_student(AE_ATTN_GATESWA, "gateswa");
    g_mla_dir = make_student(AE_ATTN_MLA, "mla");
    return g_gswa_dir && g_mla_dir ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tasks),
        cmocka_unit_test(test_kl),
    };
    g_cpu = ae_backend_cpu();
    ae_test_gpu_group g = {.gpu = &g_gpu, .tmp = &g_tmp, .setup = setup};
    int rc = ae_test_gpu_main(&g, tests);
    free(g_gswa_dir);
    free(g_mla_dir);
    return rc;
}
