// eval/tasks: Python's random.sample, lm-eval's text helpers, the exact requests lm-eval builds
// (tests/fixtures/eval_tasks/lm_eval_requests.json, written by tools/gen_eval_task_fixtures.py
// from lm-eval 0.4.13's own task code), metrics on hand-computed cases, and log-likelihoods
// against a reference computed here (full forward from an empty cache, log-softmax in double)
// for the teacher, a sliding-window student whose ring forbids rewinding the cache and an MLA
// student, each scored one request at a time and many items per forward (the paged forward).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "eval/tasks_internal.h"
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
    int n = 0, n_mmlu = 0, n_plain = 0;
    for (const cJSON *t = root->child; t; t = t->next, n++) {
        check_task_requests(t->string, t);
        n_mmlu += !strncmp(t->string, "mmlu_", 5);
    }
    for (int i = 0; i < ae_task_count(); i++) n_plain += !ae_task_at(i)->subject;
    // every task but MMLU's has lm-eval's requests to match; MMLU four of its subjects
    assert_int_equal(n - n_mmlu, n_plain);
    assert_int_equal(n_mmlu, 4);
    cJSON_Delete(root);
    free(text);
}

// ---- MMLU ----
typedef struct {
    char out[2048];
    int n;
} csv_log;

// Appends "line:field|field|...;" per record.
static ae_status log_rec(void *ud, char **f, int n, int line) {
    csv_log *l = ud;
    size_t k = strlen(l->out);
    k += (size_t)snprintf(l->out + k, sizeof l->out - k, "%d:", line);
    for (int i = 0; i < n; i++) k += (size_t)snprintf(l->out + k, sizeof l->out - k, "%s%s", i ? "|" : "", f[i]);
    snprintf(l->out + k, sizeof l->out - k, ";");
    l->n++;
    return AE_OK;
}

static const char *csv_of(const char *dir, const char *text, ae_status want, csv_log *l) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/x.csv", dir);
    assert_int_equal(ae_test_write_file(path, text, strlen(text)), 0);
    memset(l, 0, sizeof *l);
    assert_int_equal(ae_csv_foreach(path, log_rec, l), want);
    return l->out;
}

static void test_csv_reader(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    csv_log l;
    // Expected records as Python 3.11's csv.reader gives them for the same bytes.
    assert_string_equal(csv_of(dir, "a,b,c\n\"x, y\",\"q\"\"q\",\n", AE_OK, &l), "1:a|b|c;2:x, y|q\"q|;");
    assert_string_equal(csv_of(dir, "\"multi\nline\r\nfield\",z\r\nnext,1", AE_OK, &l),
                        "1:multi\nline\r\nfield|z;4:next|1;");
    assert_string_equal(csv_of(dir, "5\" tall,\"ab\"c, \"d\"\n\n\r\nlast\r", AE_OK, &l), "1:5\" tall|abc| \"d\";4:last;");
    assert_string_equal(csv_of(dir, "\"\",,\n", AE_OK, &l), "1:||;");
    assert_int_equal(l.n, 1);
    csv_of(dir, "ok,1\n\"open,2\nmore\n", AE_ERR_FORMAT, &l);
    assert_non_null(strstr(ae_last_error(), "x.csv:2: the quoted field that starts on this line is not closed"));
    csv_of(dir, "\"two\nlines\",\"open\n", AE_ERR_FORMAT, &l); // the record starts on line 1
    assert_non_null(strstr(ae_last_error(), "x.csv:2: the quoted field that starts on this line is not closed"));
    csv_of(dir, "a,b\nc\rd\n", AE_ERR_FORMAT, &l);
    assert_non_null(strstr(ae_last_error(), "x.csv:2: a carriage return without a line feed outside quotes"));
    csv_of(dir, "a,\xff\n", AE_ERR_FORMAT, &l);
    assert_non_null(strstr(ae_last_error(), "x.csv:1: not valid UTF-8"));
    ae_test_rmtree(dir);
    free(dir);
}

static void load_build(const char *task, const char *dir, int shots, ae_task *t, ae_task_item **items, int *n) {
    char *d = strdup(dir);
    if (ae_task_load(ae_task_find(task), d, shots > 0, t) != AE_OK) fail_msg("%s: %s", task, ae_last_error());
    if (ae_task_build(t, shots, 0, 1234, items, n) != AE_OK) fail_msg("%s: %s", task, ae_last_error());
    free(d);
}

// Known prompts of the fixture (tools/gen_mmlu_fixture.py), written out by hand from lm-eval's
// template: the description, question.strip(), the four "X. choice" lines, "Answer:".
static void test_mmlu_prompts(void **state) {
    (void)state;
    ae_task t;
    ae_task_item *it;
    int n;
    load_build("mmlu_abstract_algebra", ae_test_src(FIXTURE_DATA), 0, &t, &it, &n);
    assert_int_equal(t.eval_split, AE_SPLIT_TEST);
    assert_int_equal(n, 4);
    assert_string_equal(it[0].ctx[0], "The following are multiple choice questions (with answers) about abstract "
                                      "algebra.\n\nLet G be a group, and let H = {e, g}. Which \"order\" can g have?\n"
                                      "A. 1\nB. 2\nC.  3\nD. \nAnswer:");
    assert_int_equal(it[0].n, 4);
    assert_string_equal(it[0].cont[0], " A");
    assert_string_equal(it[0].cont[3], " D");
    assert_int_equal(it[0].gold, 1);
    assert_int_equal(t.split[AE_SPLIT_TEST].docs[1].line, 2); // the record after a quoted one
    assert_int_equal(t.split[AE_SPLIT_TEST].docs[2].line, 5);
    ae_task_items_free(it, n);
    ae_task_free(&t);
    load_build("mmlu_high_school_us_history", ae_test_src(FIXTURE_DATA), 2, &t, &it, &n);
    // first_n: the first two dev questions, in order, for every item; then the stripped question
    const char *want = "The following are multiple choice questions (with answers) about high school us history.\n\n"
                       "A high school us history course has 8 lectures a week for 10 weeks. How many lectures is "
                       "that?\nA. 81\nB. 78\nC. 80\nD. 85\nAnswer: C\n\n"
                       "What is 5 plus 3?\nA. 9\nB. 8\nC. 6\nD. 13\nAnswer: B\n\n"
                       "In what year did the war end?\nA. 1783\nB. 1776\nC. 1812\nD. 1865\nAnswer:";
    assert_string_equal(it[1].ctx[0], want);
    assert_int_equal(it[1].gold, 0); // " A " stripped
    assert_non_null(strstr(it[0].ctx[0], "Answer: B\n\nThe 5\" rule of 1790 was about what?\nA. Tariffsish\n"));
    ae_task_items_free(it, n);
    ae_task_free(&t);
    char *desc = ae_task_description(ae_task_find("mmlu_high_school_government_and_politics"));
    assert_string_equal(desc, "The following are multiple choice questions (with answers) about high school "
                              "government and politics.\n\n");
    free(desc);
}

// The Hugging Face export (all/ with a subject field, and <subject>/) reads to the same docs as
// the CSVs; groups hold their subjects.
static void test_mmlu_layouts(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), path[1024];
    snprintf(path, sizeof path, "%s/mmlu/all", dir);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' '%s/../anatomy'", path, path);
    assert_int_equal(system(cmd), 0);
    static const char all[] =
        "{\"question\":\"Skip me\",\"subject\":\"astronomy\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0}\n"
        "{\"question\":\" Which \\/ bone? \",\"subject\":\"anatomy\",\"choices\":[\"x\",\"y\",\"\\u00e9\",\"w\"],"
        "\"answer\":2}\n";
    snprintf(path, sizeof path, "%s/mmlu/all/test.jsonl", dir);
    assert_int_equal(ae_test_write_file(path, all, strlen(all)), 0);
    ae_task t;
    ae_task_item *it;
    int n;
    load_build("mmlu_anatomy", dir, 0, &t, &it, &n);
    assert_int_equal(n, 1);
    assert_string_equal(it[0].ctx[0], "The following are multiple choice questions (with answers) about anatomy.\n\n"
                                      "Which / bone?\nA. x\nB. y\nC. \xc3\xa9\nD. w\nAnswer:");
    assert_int_equal(it[0].gold, 2);
    assert_int_equal(t.split[AE_SPLIT_TEST].docs[0].line, 2);
    ae_task_items_free(it, n);
    ae_task_free(&t);
    // <subject>/test.jsonl takes precedence over all/; a record of another subject is an error
    snprintf(path, sizeof path, "%s/mmlu/anatomy/test.jsonl", dir);
    static const char wrong[] = "{\"question\":\"q\",\"subject\":\"virology\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":1}\n";
    assert_int_equal(ae_test_write_file(path, wrong, strlen(wrong)), 0);
    char *d = strdup(dir);
    assert_int_equal(ae_task_load(ae_task_find("mmlu_anatomy"), d, 0, &t), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "anatomy/test.jsonl:1: subject \"virology\" in the file of subject anatomy"));
    // the all/ file holds one record of astronomy and none of nutrition
    assert_int_equal(ae_task_load(ae_task_find("mmlu_astronomy"), d, 0, &t), AE_OK);
    assert_int_equal(t.split[AE_SPLIT_TEST].n, 1);
    ae_task_free(&t);
    assert_int_equal(ae_task_load(ae_task_find("mmlu_nutrition"), d, 0, &t), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "all/test.jsonl: no records of subject nutrition"));
    free(d);
    ae_test_rmtree(dir);
    free(dir);
    // groups: 57 subjects in mmlu, split over the four categories
    int in[5] = {0};
    for (int i = 0; i < ae_task_count(); i++)
        for (int g = 0; g < ae_task_group_count(); g++) in[g] += ae_task_group_has(ae_task_group_at(g), ae_task_at(i));
    assert_int_equal(in[0] + in[1] + in[2] + in[3], 57);
    assert_int_equal(in[4], 57);
    assert_int_equal(in[3], 19); // stem
    assert_string_equal(ae_task_group_at(4)->name, "mmlu");
    assert_null(ae_task_group_find("mmlu_abstract_algebra"));
}

// Group aggregates as lm-eval computes them (values from Python: aggregate_subtask_metrics,
// pooled_sample_stderr, unweighted_mean_stderr).
static void test_group_aggregate(void **state) {
    (void)state;
    ae_metric_value v[3] = {{0.5, 0.5}, {0.25, 0.25}, {2.0 / 3, sqrt(1.0 / 3) / sqrt(3.0)}};
    int sizes[3] = {2, 4, 3};
    ae_metric_value g = ae_task_group_aggregate(v, sizes, 3, 1);
    assert_true(fabs(g.value - (0.5 * 2 + 0.25 * 4 + 2.0 / 3 * 3) / 9) < 1e-15); // 4/9
    // pooled: sqrt(((1)(0.25)(2) + (3)(0.0625)(4) + (2)(1/9)(3)) / (9 - 3) / 9)
    assert_true(fabs(g.stderr_ - sqrt((0.5 + 0.75 + 2.0 / 3) / 6 / 9)) < 1e-15);
    g = ae_task_group_aggregate(v, sizes, 3, 0);
    assert_true(fabs(g.value - (0.5 + 0.25 + 2.0 / 3) / 3) < 1e-15);
    assert_true(fabs(g.stderr_ - sqrt(0.25 + 0.0625 + 1.0 / 9) / 3) < 1e-15);
    v[1].stderr_ = NAN; // a task of one item: lm-eval's "N/A"
    assert_true(isnan(ae_task_group_aggregate(v, sizes, 3, 1).stderr_));
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
        int am = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > row[am]) am = v;
        int32_t tgt = seq[nc + t];
        ll += row[tgt] - ae_test_logsumexp(row, V, 1.0f, NULL);
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

static int progress_seen;
static void count_progress(void *ud, int done, int total) {
    assert_int_equal(total, *(const int *)ud);
    assert_true(done > progress_seen && done <= total); // items done only grow
    progress_seen = done;
}

static void check_scores_batch(const ae_model *m, const ae_tokenizer *tok, const char *task, int shots,
                               int max_len, int want_truncated, int batch) {
    ae_task t;
    ae_task_item *items;
    int n;
    char *d = strdup(ae_test_src(FIXTURE_DATA));
    assert_int_equal(ae_task_load(ae_task_find(task), d, shots > 0, &t), AE_OK);
    assert_int_equal(ae_task_build(&t, shots, 0, 1234, &items, &n), AE_OK);
    ae_task_scores s;
    progress_seen = 0;
    if (ae_task_score(m, tok, items, n, max_len, batch, count_progress, &n, &s) != AE_OK)
        fail_msg("%s", ae_last_error());
    assert_int_equal(progress_seen, n); // the last call reports every item done
    int n_trunc = 0;
    for (int i = 0; i < n; i++) {
        int any = 0;
        for (int j = 0; j < items[i].n; j++) {
            int g, tr, k = s.first[i] + j;
            double want = ref_ll(m, tok, items[i].ctx[j], items[i].cont[j], max_len, &g, &tr);
            any |= tr;
            if (fabs(s.ll[k] - want) > 1e-4 || s.greedy[k] != g)
                fail_msg("%s item %d choice %d (max_len %d, batch %d): ll %.6f greedy %d, reference %.6f greedy %d",
                         task, i, j, max_len, batch, s.ll[k], s.greedy[k], want, g);
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

// Every request against the reference, one request at a time (batch 1: the contiguous
// forward), two items per forward (batches end mid-task, prefixes of neighbouring items in one
// forward) and all items in one forward (the paged forward, shared prefix pages).
static void check_scores(const ae_model *m, const ae_tokenizer *tok, const char *task, int shots, int max_len,
                         int want_truncated) {
    static const int batches[] = {1, 2, 64};
    for (int b = 0; b < 3; b++) check_scores_batch(m, tok, task, shots, max_len, want_truncated, batches[b]);
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
    ae_task_item one = {.n = 1, .ctx = (char *[]){"Question: x\nAnswer:"}, .cont = (char *[]){" y"},
                        .len = (double[]){1}};
    ae_task_scores s;
    assert_int_equal(ae_task_score(m, tok, &one, 1, 64, 0, NULL, NULL, &s), AE_ERR_ARG); // --batch 0
    assert_non_null(strstr(ae_last_error(), "--batch must be >= 1"));
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
    assert_int_equal(ae_test_eval_student(m, AE_ATTN_GATESWA, 0), AE_OK);
    score_all(m, tok);
    ae_model_free(m);
    ae_tokenizer_free(tok);
}

// An MLA student: the paged forward runs its layers in the absorbed form, the contiguous one
// materialises keys and values; both must give the reference's log-likelihoods.
static void test_scores_mla(void **state) {
    (void)state;
    ae_model *m;
    ae_tokenizer *tok;
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &m), AE_OK);
    assert_int_equal(ae_tokenizer_load(ae_test_src(MICRO), &tok), AE_OK);
    assert_int_equal(ae_test_eval_student(m, AE_ATTN_MLA, 0), AE_OK);
    score_all(m, tok);
    ae_model_free(m);
    ae_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyrandom),
        cmocka_unit_test(test_text_helpers),
        cmocka_unit_test(test_lm_eval_requests),
        cmocka_unit_test(test_csv_reader),
        cmocka_unit_test(test_mmlu_prompts),
        cmocka_unit_test(test_mmlu_layouts),
        cmocka_unit_test(test_group_aggregate),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_scores_teacher),
        cmocka_unit_test(test_scores_sliding_window),
        cmocka_unit_test(test_scores_mla),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
