// eval/tasks: Python's random.sample, lm-eval's text helpers, the exact requests lm-eval builds
// (tests/fixtures/eval_tasks/lm_eval_requests.json, written by tools/gen_eval_task_fixtures.py
// from lm-eval 0.4.13's own task code), metrics on hand-computed cases, and log-likelihoods
// against a reference computed here (full forward from an empty cache, log-softmax in double)
// for the teacher and a sliding-window student whose ring forbids rewinding the cache.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "eval/tasks_internal.h"
#include "model/student.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"
#define FIXTURE_DATA "tests/fixtures/eval_tasks/data"

static void test_pyrandom(void **state) {
    (void)state;
    // Python 3.11: r = random.Random(1234); r.sample(range(570), 5); r.sample(range(570), 5);
    // r.sample(range(10), 4); r.sample(range(3), 3); r.sample(range(100000), 7)
    static const int want[] = {451, 119, 7, 92, 35, 85, 100, 363, 242, 17, 0, 9, 5, 7, 2, 1, 0,
                               19471, 11965, 23998, 93508, 14996, 1916, 65940};
    static const int pop[] = {570, 570, 10, 3, 100000}, k[] = {5, 5, 4, 3, 7};
    ae_pyrandom r;
    ae_pyrandom_seed(&r, 1234);
    int got[24], n = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ae_pyrandom_sample(&r, pop[i], k[i], got + n), AE_OK);
        n += k[i];
    }
    for (int i = 0; i < n; i++) assert_int_equal(got[i], want[i]);
    ae_pyrandom_seed(&r, 0); // random.Random(0).sample(range(50), 3)
    assert_int_equal(ae_pyrandom_sample(&r, 50, 3, got), AE_OK);
    assert_int_equal(got[0], 24);
    assert_int_equal(got[1], 48);
    assert_int_equal(got[2], 26);
    ae_pyrandom_seed(&r, (1ull << 40) + 5); // two 32-bit key words
    assert_int_equal(ae_pyrandom_sample(&r, 1000, 3, got), AE_OK);
    assert_int_equal(got[0], 516);
    assert_int_equal(got[1], 529);
    assert_int_equal(got[2], 275);
    assert_int_not_equal(ae_pyrandom_sample(&r, 3, 4, got), AE_OK); // more than the population
}

static void check_str(char *got, const char *want) {
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_text_helpers(void **state) {
    (void)state;
    // Expected strings printed by Python 3.11 with lm-eval's hellaswag/utils.py preprocess.
    check_str(ae_hellaswag_preprocess("  Removing ice from car: [header] How to remove ice [title] Use a "
                                      "scraper.   [step] Scrape it. "),
              "Removing ice from car: How to remove ice. Use a scraper.  Scrape it.");
    check_str(ae_hellaswag_preprocess("a [b\nc] d [e]f"), "a [b\nc] d f");
    check_str(ae_hellaswag_preprocess("x  [title] y\t"), "x . y");
    check_str(ae_hellaswag_preprocess("\xc2\xa0Hello [unclosed"), "Hello [unclosed");
    check_str(ae_py_capitalize("hELLO wORLD"), "Hello world");
    check_str(ae_py_capitalize("\xc3\xa9" "COLE"), "\xc3\x89" "cole");          // éCOLE -> École
    check_str(ae_py_capitalize("\xc7\x86" "emal"), "\xc7\x85" "emal");          // title case ǅ
    check_str(ae_py_capitalize(""), "");
    check_str(ae_py_strip(" \t\nab c\r\n\xe3\x80\x80", 1, 1), "ab c");           // U+3000 is space
    check_str(ae_py_strip("  ab  ", 1, 0), "ab  ");
    assert_int_equal(ae_py_rstrip_len("Answer: \n ", 10), 7);
    assert_true(ae_py_len("h\xc3\xa9llo \xe2\x82\xac") == 7.0); // code points, not bytes
}

// ---- requests against lm-eval's own ----
static void check_task_requests(const char *name, const cJSON *spec) {
    const char *src = cJSON_GetObjectItem(spec, "data")->valuestring;
    const char *dir = !strcmp(src, "shared") ? ae_test_shared("data/eval", name) : ae_test_src(FIXTURE_DATA);
    if (!dir) return;
    const ae_task_def *def = ae_task_find(name);
    assert_non_null(def);
    const cJSON *shots = cJSON_GetObjectItem(spec, "shots");
    for (const cJSON *s = shots->child; s; s = s->next) {
        int k = atoi(s->string);
        ae_task t;
        ae_task_item *items;
        int n;
        char *d = strdup(dir);
        if (ae_task_load(def, d, k > 0, &t) != AE_OK) fail_msg("%s: %s", name, ae_last_error());
        if (ae_task_build(&t, k, cJSON_GetArraySize(s), 1234, &items, &n) != AE_OK)
            fail_msg("%s: %s", name, ae_last_error());
        assert_int_equal(n, cJSON_GetArraySize(s));
        for (int i = 0; i < n; i++) {
            const cJSON *doc = cJSON_GetArrayItem(s, i), *ctx = cJSON_GetObjectItem(doc, "ctx");
            const cJSON *cont = cJSON_GetObjectItem(doc, "cont");
            assert_int_equal(items[i].n, cJSON_GetArraySize(cont));
            for (int j = 0; j < items[i].n; j++) {
                const char *want_ctx = cJSON_IsString(ctx) ? ctx->valuestring : cJSON_GetArrayItem(ctx, j)->valuestring;
                if (strcmp(items[i].ctx[j], want_ctx) || strcmp(items[i].cont[j], cJSON_GetArrayItem(cont, j)->valuestring))
                    fail_msg("%s %d-shot doc %d request %d:\n got  (%s | %s)\n want (%s | %s)", name, k, i, j,
                             items[i].ctx[j], items[i].cont[j], want_ctx, cJSON_GetArrayItem(cont, j)->valuestring);
            }
        }
        ae_task_items_free(items, n);
        ae_task_free(&t);
        free(d);
    }
}

static void test_lm_eval_requests(void **state) {
    (void)state;
    char *text;
    size_t len;
    assert_int_equal(ae_file_read_all(ae_test_src("tests/fixtures/eval_tasks/lm_eval_requests.json"), &text, &len), AE_OK);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    int n = 0;
    for (const cJSON *t = root->child; t; t = t->next, n++) check_task_requests(t->string, t);
    assert_int_equal(n, ae_task_count()); // every task has lm-eval's requests to match
    cJSON_Delete(root);
    free(text);
}

// ---- metrics ----
static void test_metrics(void **state) {
    (void)state;
    // Three 2-choice items; lls chosen so that acc and acc_norm disagree on item 1.
    char *ctx[2] = {"q", "q"}, *cont[2] = {" a", " bbbb"};
    double len0[2] = {1, 1}, len1[2] = {1, 4}, len2[2] = {2, 2};
    ae_task_item it[3] = {{2, ctx, cont, len0, 0, 0}, {2, ctx, cont, len1, 1, 1}, {2, ctx, cont, len2, 1, 2}};
    int first[4] = {0, 2, 4, 6};
    double ll[6] = {-1, -2, -3, -4.0 + 1e-9, -5, -5}; // item 2: a tie -> the first choice
    unsigned char greedy[6] = {0}, trunc[3] = {0};
    int ntok[6] = {1, 1, 1, 1, 1, 1};
    ae_task_scores s = {3, 6, first, ll, greedy, ntok, trunc, 0};
    double v[3];
    ae_task_metric_values(it, &s, AE_METRIC_ACC, v);
    assert_true(v[0] == 1 && v[1] == 0 && v[2] == 0); // preds 0, 0 (-3 > -4), 0 (tie)
    ae_task_metric_values(it, &s, AE_METRIC_ACC_NORM, v);
    assert_true(v[0] == 1 && v[1] == 1 && v[2] == 0); // -4/4 = -1 > -3/1
    ae_metric_value m = ae_task_aggregate(AE_METRIC_ACC_NORM, v, 3);
    assert_true(fabs(m.value - 2.0 / 3) < 1e-15);
    // sample std of {1,1,0} = sqrt(1/3); / sqrt(3) = 1/3
    assert_true(fabs(m.stderr_ - 1.0 / 3) < 1e-15);
    double lls[3] = {-1, -2, -3};
    m = ae_task_aggregate(AE_METRIC_PPL, lls, 3); // exp(2), stderr exp(2) * 1/sqrt(3)
    assert_true(fabs(m.value - exp(2.0)) < 1e-12 && fabs(m.stderr_ - exp(2.0) / sqrt(3.0)) < 1e-12);
    double a[4] = {1, 0, 1, 1}, b[4] = {1, 1, 0, 0};
    m = ae_task_paired_diff(AE_METRIC_ACC, a, b, 4); // d = {0, 1, -1, -1}: mean -1/4
    double sd = sqrt(((0.25 * 0.25) + 1.25 * 1.25 + 2 * 0.75 * 0.75) / 3);
    assert_true(fabs(m.value + 0.25) < 1e-15 && fabs(m.stderr_ - sd / 2) < 1e-15);
    assert_true(isnan(ae_task_aggregate(AE_METRIC_ACC, a, 1).stderr_)); // one item: no error
}

// ---- log-likelihoods against a reference ----
// lm-eval's protocol written out again: encode(ctx.rstrip()), encode(ctx + cont), split, cut
// from the left to max_len + 1, one forward from an empty cache, log-softmax in double.
static double ref_ll(const ae_model *m, const ae_tokenizer *tok, const char *ctx, const char *cont, int max_len,
                     int *greedy, int *truncated) {
    int32_t *c, *w;
    size_t nc, nw, keep = strlen(ctx);
    while (keep && (ctx[keep - 1] == ' ' || ctx[keep - 1] == '\n')) keep--;
    char *whole = malloc(strlen(ctx) + strlen(cont) + 1);
    sprintf(whole, "%s%s", ctx, cont);
    assert_int_equal(ae_tokenizer_encode(tok, ctx, keep, &c, &nc), AE_OK);
    assert_int_equal(ae_tokenizer_encode(tok, whole, strlen(whole), &w, &nw), AE_OK);
    size_t nk = nw - nc, total = nw, start = total > (size_t)max_len + 1 ? total - (size_t)max_len - 1 : 0;
    int32_t *seq = malloc(sizeof(int32_t) * total);
    memcpy(seq, c, sizeof(int32_t) * nc);
    memcpy(seq + nc, w + nc, sizeof(int32_t) * nk);
    int T = (int)(total - 1 - start), V = m->cfg.vocab_size;
    float *z = malloc(sizeof(float) * (size_t)T * V);
    ae_kv_cache kv;
    assert_int_equal(ae_kv_cache_init(&kv, m, T), AE_OK);
    assert_int_equal(ae_model_forward(m, &kv, seq + start, T, ae_host_f32(z), 1), AE_OK);
    double ll = 0;
    *greedy = 1;
    for (size_t t = 0; t < nk; t++) {
        const float *row = z + (size_t)(T - (int)nk + (int)t) * V;
        double mx = row[0], s = 0;
        int am = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > mx) mx = row[v], am = v;
        for (int v = 0; v < V; v++) s += exp(row[v] - mx);
        int32_t tgt = seq[nc + t];
        ll += row[tgt] - mx - log(s);
        *greedy &= am == tgt;
    }
    *truncated = start > 0;
    ae_kv_cache_free(&kv);
    free(z);
    free(seq);
    free(c);
    free(w);
    free(whole);
    return ll;
}

static void check_scores(const ae_model *m, const ae_tokenizer *tok, const char *task, int shots, int max_len,
                         int want_truncated) {
    ae_task t;
    ae_task_item *items;
    int n;
    char *d = strdup(ae_test_src(FIXTURE_DATA));
    assert_int_equal(ae_task_load(ae_task_find(task), d, shots > 0, &t), AE_OK);
    assert_int_equal(ae_task_build(&t, shots, 0, 1234, &items, &n), AE_OK);
    ae_task_scores s;
    if (ae_task_score(m, tok, items, n, max_len, NULL, NULL, &s) != AE_OK) fail_msg("%s", ae_last_error());
    int n_trunc = 0;
    for (int i = 0; i < n; i++) {
        int any = 0;
        for (int j = 0; j < items[i].n; j++) {
            int g, tr, k = s.first[i] + j;
            double want = ref_ll(m, tok, items[i].ctx[j], items[i].cont[j], max_len, &g, &tr);
            any |= tr;
            if (fabs(s.ll[k] - want) > 1e-4 || s.greedy[k] != g)
                fail_msg("%s item %d choice %d (max_len %d): ll %.6f greedy %d, reference %.6f greedy %d", task, i,
                         j, max_len, s.ll[k], s.greedy[k], want, g);
        }
        assert_int_equal(s.truncated[i], any);
        n_trunc += any;
    }
    assert_int_equal(s.n_truncated, n_trunc);
    if (want_truncated) assert_true(n_trunc > 0);
    else assert_int_equal(n_trunc, 0);
    ae_task_scores_free(&s);
    ae_task_items_free(items, n);
    ae_task_free(&t);
    free(d);
}

static void score_all(const ae_model *m, const ae_tokenizer *tok) {
    check_scores(m, tok, "arc_challenge", 0, 4096, 0);
    check_scores(m, tok, "arc_challenge", 2, 4096, 0); // longer shared prefixes
    check_scores(m, tok, "winogrande", 1, 4096, 0);    // a context per choice
    check_scores(m, tok, "sciq", 0, 4096, 0);
    check_scores(m, tok, "sciq", 2, 24, 1);            // cut from the left
}

static void test_scores_teacher(void **state) {
    (void)state;
    ae_model *m;
    ae_tokenizer *tok;
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &m), AE_OK);
    assert_int_equal(ae_tokenizer_load(ae_test_src(MICRO), &tok), AE_OK);
    score_all(m, tok);
    ae_model_free(m);
    ae_tokenizer_free(tok);
}

// A GateSWA student with a window of 8: most requests are longer than the ring, so the scorer
// must run their prefix again instead of rewinding into overwritten slots.
static void test_scores_sliding_window(void **state) {
    (void)state;
    ae_model *m;
    ae_tokenizer *tok;
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &m), AE_OK);
    assert_int_equal(ae_tokenizer_load(ae_test_src(MICRO), &tok), AE_OK);
    ae_student_spec spec = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 8, .gate = AE_GATE_ELEMENTWISE,
                            .seed = 3};
    assert_int_equal(ae_student_resolve(&m->cfg, &spec), AE_OK);
    ae_init_report rep;
    assert_int_equal(ae_student_make(m, &spec, &rep), AE_OK);
    score_all(m, tok);
    ae_model_free(m);
    ae_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyrandom),
        cmocka_unit_test(test_text_helpers),
        cmocka_unit_test(test_lm_eval_requests),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_scores_teacher),
        cmocka_unit_test(test_scores_sliding_window),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
