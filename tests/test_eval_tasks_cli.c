// attnedit eval tasks: bad input (one clear message each, non-zero exit), a run on the fixture
// tasks (table, --json, --samples agree with each other), and every task of ../shared/data/eval
// on a small slice with the bundled micro model and ../shared/teachers/qwen3-small side by side.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"
#define FIXTURE_DATA "tests/fixtures/eval_tasks/data"

static char *g_tmp;
// The files written since the last run (the robustness catalogue's note on a refusal).
static char g_note[1024];

// Runs the CLI; checks the exit status and that stderr contains `want` (when given).
static void run_expect(const char *const *args, int want_rc, const char *want, char **out_keep) {
    char *out, *err;
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc != want_rc || (want && !strstr(err, want)))
        fail_msg("exit %d (want %d), stderr:\n%s\nwanted: %s", rc, want_rc, err, want ? want : "");
    if (want_rc)
        ae_test_catalogue_cli("eval tasks: options, data folders, records", args,
                              g_note[0] ? g_note : NULL, err);
    g_note[0] = '\0';
    if (out_keep) *out_keep = out;
    else free(out);
    free(err);
}

static char *tmp_path(const char *rel) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, rel);
    return buf[k];
}

static void write_text(const char *rel, const char *text) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", tmp_path(rel));
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ae_test_write_file(tmp_path(rel), text, strlen(text)), 0);
    size_t n = strlen(g_note), cap = sizeof g_note - 2; // room for the closing ` and the NUL
    n += (size_t)snprintf(g_note + n, sizeof g_note - n, "%s<tmp>/%s holds `", n ? "; " : "", rel);
    if (n > cap) n = cap;
    for (const char *p = text; *p && n + 2 <= cap; p++) { // on one line: \n, \t
        if (*p == '\n' || *p == '\t') {
            g_note[n++] = '\\';
            g_note[n++] = *p == '\n' ? 'n' : 't';
        } else {
            g_note[n++] = *p;
        }
    }
    g_note[n++] = '`';
    g_note[n] = '\0';
}

static const char k_arc_ok[] =
    "{\"id\":\"a\",\"question\":{\"stem\":\"Q?\",\"choices\":[{\"text\":\"x\",\"label\":\"A\"},"
    "{\"text\":\"y\",\"label\":\"B\"}]},\"answerKey\":\"A\"}\n";

static void test_bad_input(void **state) {
    (void)state;
    const char *micro = ae_test_src(MICRO), *fx = ae_test_src(FIXTURE_DATA);
    unsetenv("AE_EVAL_DATA");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "arc_challenge", NULL}, 2,
               "no data folder: pass --data-dir DIR or set AE_EVAL_DATA", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "arc_challenge,nope", "--data-dir",
                                fx, NULL}, 1, "unknown task 'nope' (available: arc_easy arc_challenge", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "sciq,sciq", "--data-dir", fx, NULL},
               1, "task 'sciq' is listed twice", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "sciq", "--data-dir",
                                tmp_path("absent"), NULL}, 1, "absent' does not exist", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", tmp_path("nomodel"), "--tasks", "sciq", "--data-dir", fx,
                                NULL}, 1, "nomodel' does not exist", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "piqa", "--data-dir", fx, NULL}, 1,
               "no folder 'piqa' for task piqa", NULL);
    // the evaluation split's file is missing (only the validation file is there)
    write_text("d1/sciq/valid.json", "[]\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "sciq", "--data-dir", tmp_path("d1"),
                                NULL}, 1, "task sciq evaluates its test split: no such file (looked for test.json, test.jsonl)",
               NULL);
    // malformed records: file and line
    write_text("d2/arc_challenge/ARC-Challenge-Test.jsonl", "{\"id\":\"a\",\"question\":{\"stem\":\"Q?\"");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "arc_challenge", "--data-dir",
                                tmp_path("d2"), NULL}, 1, "ARC-Challenge-Test.jsonl:1: not a JSON object", NULL);
    char two[1024];
    snprintf(two, sizeof two, "%s\n%s", k_arc_ok,
             "{\"id\":\"b\",\"question\":{\"stem\":\"Q?\",\"choices\":[{\"text\":\"x\",\"label\":\"A\"}]}}");
    write_text("d3/arc_challenge/ARC-Challenge-Test.jsonl", two);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "arc_challenge", "--data-dir",
                                tmp_path("d3"), NULL}, 1, "ARC-Challenge-Test.jsonl:3: field \"answerKey\" is missing", NULL);
    snprintf(two, sizeof two, "%s%s", k_arc_ok, "{\"id\":\"b\",\"question\":{\"stem\":\"Q\",\"choices\":[{\"text\":"
                                                "\"x\",\"label\":\"A\"}]},\"answerKey\":\"C\"}\n");
    write_text("d4/arc_challenge/ARC-Challenge-Test.jsonl", two);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "arc_challenge", "--data-dir",
                                tmp_path("d4"), NULL}, 1, ":2: answerKey \"C\" is not one of the choice labels", NULL);
    write_text("d5/hellaswag/hellaswag_val_full.txt", "Ctx: a b\n1\ne1\ne2\ne3\ne4\nCtx: c\nx\ne1\ne2\ne3\ne4\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "hellaswag", "--data-dir",
                                tmp_path("d5"), NULL}, 1, "hellaswag_val_full.txt:8: expected the gold ending (0-3)", NULL);
    write_text("d6/openbookqa/test.tsv", "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
                                        "1\tWhat?\t(A) x (B) y\tWhat? (A) x (B) y\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "openbookqa", "--data-dir",
                                tmp_path("d6"), NULL}, 1, "test.tsv:2: expected 5 tab-separated columns, found 4", NULL);
    write_text("d7/boolq/val.jsonl", "{\"question\":\"q\",\"passage\":\"p\",\"label\":\"maybe\"}\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "boolq", "--data-dir", tmp_path("d7"),
                                NULL}, 1, "val.jsonl:1: field \"label\" is invalid", NULL);
    // a label far outside long's range (was: converted to long before any range check,
    // undefined behaviour; fuzz/crashes/fuzz_eval_tasks/huge-label.bin)
    write_text("d10/hellaswag/hellaswag_val.jsonl",
               "{\"activity_label\":\"a\",\"ctx_a\":\"b\",\"ctx_b\":\"c\",\"endings\":[\"d\",\"e\"],"
               "\"label\":7.7e85}\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "hellaswag", "--data-dir",
                                tmp_path("d10"), NULL}, 1,
               "hellaswag_val.jsonl:1: field \"label\": expected an index in 0..1", NULL);
    write_text("d8/lambada/lambada_test.jsonl", "{\"text\":\"a b\"}\n\xff\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "lambada_openai", "--data-dir",
                                tmp_path("d8"), NULL}, 1, "lambada_test.jsonl:2: not valid UTF-8", NULL);
    write_text("d9/piqa/valid.jsonl", "{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n"
                                      "{\"goal\":\"h\",\"sol1\":\"a\",\"sol2\":\"b\"}\n");
    write_text("d9/piqa/valid-labels.lst", "0\n\n1\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "piqa", "--data-dir", tmp_path("d9"),
                                NULL}, 1, "valid.jsonl: line 2: expected 0 or 1", NULL);
    // more shots than the few-shot split holds (3 dev questions)
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "arc_challenge", "--shots", "5",
                                "--data-dir", fx, NULL}, 1, "--shots 5 needs 5 examples but", NULL);
    // winogrande has no test split: lm-eval draws shots + 1 and drops the evaluated item
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "winogrande", "--shots", "3",
                                "--data-dir", fx, NULL}, 1, "--shots 3 needs 4 examples but", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "sciq", "--data-dir", fx, "--samples",
                                tmp_path("no/such/dir/s.jsonl"), NULL}, 1, "s.jsonl: cannot create", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "sciq", "--data-dir", fx, "--limit", "0",
                                NULL}, 1, "--limit", NULL);
}

// MMLU: a subject's missing file, malformed CSV records and answers, shots without dev
// examples, a subject named twice through a group.
static void test_mmlu_bad_input(void **state) {
    (void)state;
    const char *micro = ae_test_src(MICRO), *fx = ae_test_src(FIXTURE_DATA);
    write_text("m1/mmlu/data/test/abstract_algebra_test.csv", "Q?,a,b,c,d,A\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_stem", "--data-dir",
                                tmp_path("m1"), NULL}, 1,
               "task mmlu_anatomy evaluates its test split: no such file (looked for data/test/anatomy_test.csv, "
               "test/anatomy_test.csv, anatomy/test.jsonl, all/test.jsonl)", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_abstract_algebra", "--shots", "1",
                                "--data-dir", tmp_path("m1"), NULL}, 1,
               "mmlu_abstract_algebra: --shots 1: the task draws its shots from its dev split: no such file (looked "
               "for data/dev/abstract_algebra_dev.csv", NULL);
    write_text("m2/mmlu/data/test/anatomy_test.csv", "Q?,a,b,c,d,A\n\"Two\nlines\",a,b,c,d\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy", "--data-dir",
                                tmp_path("m2"), NULL}, 1,
               "anatomy_test.csv:2: expected 6 fields (question, A, B, C, D, answer letter), found 5", NULL);
    write_text("m3/mmlu/data/test/anatomy_test.csv", "Q?,a,b,c,d,A\nR?,a,b,c,d,E\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy", "--data-dir",
                                tmp_path("m3"), NULL}, 1, "anatomy_test.csv:2: answer \"E\" is not A, B, C or D", NULL);
    write_text("m4/mmlu/data/test/anatomy_test.csv", "Q?,a,b,c,d,A\n\"R?,a,b,c,d,B\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy", "--data-dir",
                                tmp_path("m4"), NULL}, 1,
               "anatomy_test.csv:2: the quoted field that starts on this line is not closed", NULL);
    write_text("m5/mmlu/anatomy/test.jsonl", "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":4}\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy", "--data-dir",
                                tmp_path("m5"), NULL}, 1, "anatomy/test.jsonl:1: field \"answer\": expected an index in 0..3",
               NULL);
    write_text("m6/mmlu/anatomy/test.jsonl", "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\"],\"answer\":0}\n");
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy", "--data-dir",
                                tmp_path("m6"), NULL}, 1, "anatomy/test.jsonl:1: field \"choices\": expected 4 choices, found 3",
               NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy", "--shots", "6",
                                "--data-dir", fx, NULL}, 1, "--shots 6 needs 6 examples but", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomy,mmlu_stem", "--data-dir",
                                fx, NULL}, 1, "task 'mmlu_anatomy' is listed twice (group mmlu_stem includes it)", NULL);
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_anatomyy", "--data-dir", fx, NULL},
               1, "unknown task 'mmlu_anatomyy'", NULL);
}

static const cJSON *get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) fail_msg("no \"%s\" in the JSON", k);
    return v;
}

// Two copies of the micro model on the fixture tasks: the JSON, the samples and the table agree.
static void test_run_fixture(void **state) {
    (void)state;
    const char *micro = ae_test_src(MICRO), *fx = ae_test_src(FIXTURE_DATA);
    char models[2048], *out;
    snprintf(models, sizeof models, "%s,%s/", micro, micro);
    const char *samples = tmp_path("samples.jsonl");
    run_expect((const char *[]){"eval", "tasks", "--model", models, "--tasks", "arc_challenge,winogrande,sciq",
                                "--shots", "1", "--data-dir", fx, "--device", "cpu", "--json", "--samples", samples,
                                "--max-length", "70", NULL},
               0, "sciq [qwen3-micro]: 1 of 3 items longer than 70 tokens: cut from the left", &out);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    const cJSON *tasks = get(o, "tasks");
    assert_int_equal(cJSON_GetArraySize(tasks), 3);
    // per-item accs from --samples, by task: sum over the first model's lines
    char *text;
    size_t len;
    assert_int_equal(ae_file_read_all(samples, &text, &len), AE_OK);
    double acc_sum[3] = {0};
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *s = cJSON_Parse(line);
        assert_non_null(s);
        const char *task = get(s, "task")->valuestring;
        int t = !strcmp(task, "arc_challenge") ? 0 : !strcmp(task, "winogrande") ? 1 : 2;
        const cJSON *ll = get(s, "loglikelihoods");
        int pred = 0;
        for (int j = 1; j < cJSON_GetArraySize(ll); j++)
            if (cJSON_GetArrayItem(ll, j)->valuedouble > cJSON_GetArrayItem(ll, pred)->valuedouble) pred = j;
        assert_int_equal(get(s, "pred")->valueint, pred);
        assert_int_equal(get(s, "acc")->valueint, pred == get(s, "target")->valueint);
        if (!strcmp(get(s, "model")->valuestring, micro)) acc_sum[t] += get(s, "acc")->valueint;
        cJSON_Delete(s);
    }
    assert_int_equal(lines, 2 * 9); // 2 models x 3 tasks x 3 items
    for (int t = 0; t < 3; t++) {
        const cJSON *acc = get(get(get(cJSON_GetArrayItem(tasks, t), "metrics"), "acc"), "value");
        assert_true(fabs(cJSON_GetArrayItem(acc, 0)->valuedouble - acc_sum[t] / 3) < 1e-12);
        assert_true(cJSON_GetArrayItem(acc, 0)->valuedouble == cJSON_GetArrayItem(acc, 1)->valuedouble);
        const cJSON *sig = get(get(get(cJSON_GetArrayItem(tasks, t), "metrics"), "acc"), "significant");
        assert_true(cJSON_IsFalse(cJSON_GetArrayItem(sig, 1))); // a model against itself
    }
    assert_int_equal(get(cJSON_GetArrayItem(tasks, 2), "n")->valueint, 3);
    assert_int_equal(cJSON_GetArrayItem(get(cJSON_GetArrayItem(tasks, 2), "truncated"), 0)->valueint, 1);
    cJSON_Delete(o);
    free(out);
    // --batch 1 (one request at a time, the contiguous forward) writes the same samples as the
    // default batch (many items per paged forward): every field equal, log-likelihoods to fp32
    // rounding
    const char *samples1 = tmp_path("samples-batch1.jsonl");
    run_expect((const char *[]){"eval", "tasks", "--model", models, "--tasks", "arc_challenge,winogrande,sciq",
                                "--shots", "1", "--data-dir", fx, "--device", "cpu", "--json", "--samples", samples1,
                                "--max-length", "70", "--batch", "1", NULL},
               0, NULL, NULL);
    char *text1;
    assert_int_equal(ae_file_read_all(samples1, &text1, &len), AE_OK);
    assert_int_equal(ae_file_read_all(samples, &text, &len), AE_OK); // strtok cut the first copy
    char *save0, *save1;
    int same = 0;
    for (char *a = strtok_r(text, "\n", &save0), *b = strtok_r(text1, "\n", &save1); a || b;
         a = strtok_r(NULL, "\n", &save0), b = strtok_r(NULL, "\n", &save1), same++) {
        assert_non_null(a);
        assert_non_null(b);
        cJSON *x = cJSON_Parse(a), *y = cJSON_Parse(b);
        const cJSON *lx = get(x, "loglikelihoods"), *ly = get(y, "loglikelihoods");
        assert_int_equal(cJSON_GetArraySize(lx), cJSON_GetArraySize(ly));
        for (int j = 0; j < cJSON_GetArraySize(lx); j++) {
            double u = cJSON_GetArrayItem(lx, j)->valuedouble, v = cJSON_GetArrayItem(ly, j)->valuedouble;
            if (fabs(u - v) > 1e-4) fail_msg("line %d choice %d: ll %.8f at --batch 1, %.8f batched", same, j, v, u);
        }
        cJSON_DeleteItemFromObjectCaseSensitive(x, "loglikelihoods");
        cJSON_DeleteItemFromObjectCaseSensitive(y, "loglikelihoods");
        char *px = cJSON_PrintUnformatted(x), *py = cJSON_PrintUnformatted(y);
        assert_string_equal(px, py);
        free(px);
        free(py);
        cJSON_Delete(x);
        cJSON_Delete(y);
    }
    assert_int_equal(same, 18);
    free(text);
    free(text1);
    // the table: a row per task and metric, a column per model, the difference
    run_expect((const char *[]){"eval", "tasks", "--model", models, "--tasks", "sciq", "--data-dir", fx, "--device",
                                "cpu", NULL}, 0, "3/3 items", &out);
    assert_non_null(strstr(out, "sciq            acc"));
    assert_non_null(strstr(out, "acc_norm"));
    assert_non_null(strstr(out, "diff qwen3-micro"));
    free(out);
}

static double num(const cJSON *o, const char *metric, const char *field) {
    return cJSON_GetArrayItem(get(get(get(o, "metrics"), metric), field), 0)->valuedouble;
}

// --tasks mmlu on the fixture: every subject (2 items each), the four categories and mmlu; each
// group's acc is the size-weighted mean of its subjects' (micro), acc_macro the plain mean, with
// lm-eval's pooled and unweighted standard errors.
static void test_mmlu_groups(void **state) {
    (void)state;
    const char *micro = ae_test_src(MICRO), *fx = ae_test_src(FIXTURE_DATA);
    char *out;
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu", "--limit", "3", "--data-dir", fx,
                                "--device", "cpu", "--json", NULL}, 0, NULL, &out);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    const cJSON *tasks = get(o, "tasks"), *groups = get(o, "groups");
    assert_int_equal(cJSON_GetArraySize(tasks), 57);
    assert_int_equal(cJSON_GetArraySize(groups), 5);
    static const char *const names[5] = {"mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem", "mmlu"};
    int total_subjects = 0;
    for (int g = 0; g < 5; g++) {
        const cJSON *go = cJSON_GetArrayItem(groups, g), *members = get(go, "tasks");
        assert_string_equal(get(go, "group")->valuestring, names[g]);
        double sum = 0, macro = 0, var = 0, se2 = 0;
        int n = 0, k = cJSON_GetArraySize(members);
        for (int i = 0; i < k; i++) {
            const char *name = cJSON_GetArrayItem(members, i)->valuestring;
            const cJSON *t = NULL;
            for (int j = 0; j < 57 && !t; j++)
                if (!strcmp(get(cJSON_GetArrayItem(tasks, j), "task")->valuestring, name)) t = cJSON_GetArrayItem(tasks, j);
            assert_non_null(t);
            int ni = get(t, "n")->valueint;
            double acc = num(t, "acc", "value"), se = num(t, "acc", "stderr");
            sum += acc * ni;
            macro += acc;
            var += (ni - 1.0) * se * se * ni;
            se2 += se * se;
            n += ni;
        }
        if (g < 4) total_subjects += k;
        assert_int_equal(get(go, "n")->valueint, n);
        assert_true(fabs(num(go, "acc", "value") - sum / n) < 1e-12);
        assert_true(fabs(num(go, "acc", "stderr") - sqrt(var / (n - k) / n)) < 1e-12);
        assert_true(fabs(num(go, "acc_macro", "value") - macro / k) < 1e-12);
        assert_true(fabs(num(go, "acc_macro", "stderr") - sqrt(se2) / k) < 1e-12);
    }
    assert_int_equal(total_subjects, 57);
    // the fixture's test files hold 2 to 5 items: min(n, 3) summed over the subjects
    assert_int_equal(get(cJSON_GetArrayItem(groups, 4), "n")->valueint, 154);
    cJSON_Delete(o);
    free(out);
    // the table: a subject's row, then the group rows (acc and acc_macro)
    run_expect((const char *[]){"eval", "tasks", "--model", micro, "--tasks", "mmlu_other", "--limit", "2",
                                "--data-dir", fx, "--device", "cpu", NULL}, 0, NULL, &out);
    assert_non_null(strstr(out, "\nmmlu_professional_accounting acc             2  ")); // 13 subjects x 2
    assert_non_null(strstr(out, "\n\nmmlu_other                   acc            26  "));
    assert_non_null(strstr(out, "\n                             acc_macro      26  "));
    assert_null(strstr(out, "mmlu_stem"));
    free(out);
}

// Every task with data in ../shared on a small slice: the micro model and the small teacher.
static void test_shared_tasks(void **state) {
    (void)state;
    const char *data = ae_test_shared("data/eval", "eval tasks on ../shared data");
    const char *small = ae_test_shared("teachers/qwen3-small", "eval tasks on qwen3-small");
    if (!data || !small) return;
    char models[2048], *out;
    snprintf(models, sizeof models, "%s,%s", ae_test_src(MICRO), small);
    static const char *const names[] = {"arc_easy", "hellaswag", "piqa", "boolq", "openbookqa", "lambada_openai"};
    run_expect((const char *[]){"eval", "tasks", "--model", models, "--tasks",
                                "arc_easy,hellaswag,piqa,boolq,openbookqa,lambada_openai", "--limit", "3", "--shots",
                                "1", "--data-dir", data, "--device", "cpu", "--json", NULL},
               0, NULL, &out);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    const cJSON *tasks = get(o, "tasks");
    assert_int_equal(cJSON_GetArraySize(tasks), 6);
    for (int t = 0; t < 6; t++) {
        const cJSON *x = cJSON_GetArrayItem(tasks, t);
        assert_string_equal(get(x, "task")->valuestring, names[t]);
        assert_int_equal(get(x, "n")->valueint, 3);
        const cJSON *acc = get(get(get(x, "metrics"), "acc"), "value");
        for (int i = 0; i < 2; i++) {
            double v = cJSON_GetArrayItem(acc, i)->valuedouble;
            assert_true(v >= 0 && v <= 1 && v * 3 == floor(v * 3 + 0.5)); // k of 3 items
        }
    }
    const cJSON *ppl = get(get(get(cJSON_GetArrayItem(tasks, 5), "metrics"), "perplexity"), "value");
    assert_true(cJSON_GetArrayItem(ppl, 1)->valuedouble > 1);
    cJSON_Delete(o);
    free(out);
}

static int setup(void **state) {
    (void)state;
    g_tmp = ae_test_tmpdir();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ae_test_rmtree(g_tmp);
    free(g_tmp);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_mmlu_bad_input),
        cmocka_unit_test(test_run_fixture),
        cmocka_unit_test(test_mmlu_groups),
        cmocka_unit_test(test_shared_tasks),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, setup, teardown));
}
