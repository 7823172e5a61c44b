// Out of memory mid-run (issue 8, "Bad input"), on the cpu backend with ATTNEDIT_MEM_LIMIT:
// the limit's parser and the cpu backend's byte count; a run whose micro-batch does not fit
// stops with one message naming the stage, the step, the micro-batch that did not fit, the
// largest one that ran on the same sequences and the command that continues; nothing of the
// failed attempt stays allocated; the run folder (checkpoint, metrics, model) is left as it
// was; `convert --resume OUT --batch b --accum a` finishes the run with the same sequences per
// step, its final KL within 1e-4 (relative) of an uninterrupted run's, and a product b x a other
// than the run's is refused. When no checkpoint exists yet the command is --restart; when not
// even one sequence fits, the message says the context does not fit.
//
// The limits are measured, not guessed: each scenario's runs are made once without a limit in
// this process, their peak of live backend bytes (ae_cpu_mem_peak) giving what each micro-batch
// needs, and the limit is set between the needs.
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/cpu.h"
#include "backend/mem_limit.h"
#include "core/file.h"
#include "model/model.h"
#include "model/student.h"
#include "train/data.h"
#include "train/distill.h"
#include "train/oom.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"

static char *g_dir, *g_tokens;

// ---------------------------------------------------------------------------------------------
// helpers

static char *join(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

// Runs the CLI with ATTNEDIT_MEM_LIMIT=limit (NULL: unset) in the child's environment.
static int run_cli(const char *const *args, const char *limit, char **err) {
    if (limit) setenv(AE_MEM_LIMIT_ENV, limit, 1);
    int rc = ae_test_run_cli(args, NULL, NULL, err);
    unsetenv(AE_MEM_LIMIT_ENV);
    return rc;
}

// The whole content of dir/file (NULL when unreadable).
static char *read_all(const char *dir, const char *file) {
    char *p = join(dir, file), *buf = NULL;
    size_t n;
    if (ae_file_read_all(p, &buf, &n) != AE_OK) buf = NULL;
    free(p);
    return buf;
}

// The files a stopped or refused run must leave as they were.
static const char *const k_run_files[] = {"checkpoint/params.safetensors", "checkpoint/state.json",
                                          "conversion.json", "metrics.jsonl", "model.safetensors",
                                          NULL};

// A number of conversion.json: "train.batch", "result.stage2_final_loss".
static double spec_number(const char *dir, const char *dotted) {
    char *text = read_all(dir, "conversion.json");
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    char key[64];
    snprintf(key, sizeof key, "%s", dotted);
    char *dot = strchr(key, '.');
    assert_non_null(dot);
    *dot = '\0';
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, key), dot + 1);
    assert_true(cJSON_IsNumber(v));
    double x = v->valuedouble;
    cJSON_Delete(j);
    return x;
}

static void expect_in(const char *text, const char *needle) {
    if (!strstr(text, needle)) fail_msg("expected '%s' in:\n%s", needle, text);
}

// ---- runs in this process, as `attnedit convert` makes them: the MLA student of the micro
// teacher sharing its frozen tensors (attention-only training).

typedef struct {
    ae_model *t, *s;
    ae_tokfile data;
} pair;

static void pair_load(pair *p) {
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &p->t), AE_OK);
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .qk_rope_dim = 8};
    ae_init_report rep;
    assert_int_equal(ae_student_resolve(&p->t->cfg, &spec), AE_OK);
    assert_int_equal(ae_model_share(p->t, &p->s), AE_OK);
    assert_int_equal(ae_student_make(p->s, &spec, &rep), AE_OK);
    assert_int_equal(ae_tokfile_open(g_tokens, &p->data), AE_OK);
}

static void pair_free(pair *p) {
    ae_tokfile_close(&p->data);
    ae_model_free(p->s);
    ae_model_free(p->t);
}

static ae_distill_opts opts(int ctx, int batch, int accum, int64_t s1, int64_t s2) {
    return (ae_distill_opts){.ctx = ctx, .batch = batch, .accum = accum, .stage_tokens = {s1, s2},
                             .lr = {1e-3f, 3e-4f}, .warmup_frac = 0.05f, .min_lr_ratio = 0.1f,
                             .weight_decay = 0.01f, .clip = 1.0f, .tau = 1.0f, .cos_weight = 0.1f,
                             .save_every = 1, .log_every = 1};
}

// A run in a fresh folder; *live0: the backend's live bytes once the models are loaded (before
// the run), *need: the peak of the run above them. Returns the run's status.
static ae_status run_in_process(const ae_distill_opts *o, size_t limit, size_t *live0, size_t *need) {
    pair p;
    pair_load(&p);
    char *out = join(g_dir, "in-process");
    ae_test_rmtree(out);
    assert_int_equal(mkdir(out, 0755), 0);
    size_t before = ae_cpu_mem_live();
    ae_cpu_mem_peak(1);
    ae_cpu_set_mem_limit(limit);
    ae_distill_result res;
    ae_status st = ae_distill_run(p.t, p.s, &p.data, o, out, 0, &res);
    ae_cpu_set_mem_limit(0);
    if (need) *need = ae_cpu_mem_peak(0) - before;
    if (live0) *live0 = before;
    // nothing of the run (the failed attempt and the probes included) stays allocated
    if (ae_cpu_mem_live() != before)
        fail_msg("%zu bytes live after the run, %zu before (%s)", ae_cpu_mem_live(), before,
                 ae_last_error());
    pair_free(&p);
    ae_test_rmtree(out);
    free(out);
    return st;
}

// What a run of these options needs above the loaded models (no limit).
static size_t need_of(int ctx, int batch, int64_t s1, int64_t s2) {
    ae_distill_opts o = opts(ctx, batch, 1, s1, s2);
    size_t need;
    assert_int_equal(run_in_process(&o, 0, NULL, &need), AE_OK);
    return need;
}

static size_t live_models(void) {
    pair p;
    pair_load(&p);
    size_t live = ae_cpu_mem_live();
    pair_free(&p);
    return live;
}

// `convert` of the micro teacher to MLA into out: ctx 32, the batch and budgets given, a
// checkpoint every step.
static int convert(const char *out, int batch, const char *s1, const char *s2, const char *limit,
                   char **err) {
    char b[16];
    snprintf(b, sizeof b, "%d", batch);
    const char *args[] = {"convert", "--teacher", ae_test_src(MICRO), "--target", "mla",
                          "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--data", g_tokens,
                          "--ctx", "32", "--batch", b, "--stage1-tokens", s1, "--stage2-tokens", s2,
                          "--save-every", "1", "--log-every", "1", "--out", out, NULL};
    ae_test_rmtree(out);
    return run_cli(args, limit, err);
}

static int resume(const char *dir, const char *batch, const char *accum, const char *limit, char **err) {
    const char *args[8] = {"convert", "--resume", dir};
    int n = 3;
    if (batch) args[n++] = "--batch", args[n++] = batch;
    if (accum) args[n++] = "--accum", args[n++] = accum;
    args[n] = NULL;
    return run_cli(args, limit, err);
}

static void bytes_text(size_t n, char buf[32]) { snprintf(buf, 32, "%zu", n); }

static int setup(void **state) {
    (void)state;
    int rc = ae_test_prepare_tokens(MICRO, &g_dir, &g_tokens);
    unsetenv(AE_MEM_LIMIT_ENV);
    return rc;
}

static int teardown(void **state) {
    (void)state;
    ae_test_rmtree(g_dir);
    free(g_dir);
    free(g_tokens);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// 1. the limit's parser, the cpu backend's count and refusal, a bad value at backend open

static void test_limit_parse(void **state) {
    (void)state;
    static const struct {
        const char *text;
        size_t bytes;
    } ok[] = {{"1", 1},           {"4096", 4096},     {"64K", 65536},          {"64k", 65536},
              {"64KiB", 65536},    {"2M", 2u << 20},   {"2MB", 2u << 20},        {"1.5G", 3u << 29},
              {".5K", 512},        {"3g", (size_t)3 << 30}, {"12582912", 12582912}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        size_t b = 0;
        if (ae_mem_limit_parse("X", ok[i].text, &b) != AE_OK || b != ok[i].bytes)
            fail_msg("'%s': %zu bytes (%s), expected %zu", ok[i].text, b, ae_last_error(), ok[i].bytes);
    }
    static const char *bad[] = {"", "0", "0.2", "-1", "abc", "1T", "1.2.3", "K", "1e9", " 5", "5 ",
                                "8MiBs", "99999999999999999999G", "1KK"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t b = 7;
        if (ae_mem_limit_parse(AE_MEM_LIMIT_ENV, bad[i], &b) != AE_ERR_ARG || b != 7 ||
            !strstr(ae_last_error(), AE_MEM_LIMIT_ENV))
            fail_msg("'%s' accepted (%zu) or the message does not name the variable: %s", bad[i], b,
                     ae_last_error());
        printf("%-24s -> %s\n", bad[i], ae_last_error());
    }
    // unset or empty: no limit
    size_t b = 7;
    unsetenv(AE_MEM_LIMIT_ENV);
    assert_int_equal(ae_mem_limit_from_env(&b), AE_OK);
    assert_int_equal(b, 0);
    setenv(AE_MEM_LIMIT_ENV, "", 1);
    assert_int_equal(ae_mem_limit_from_env(&b), AE_OK);
    assert_int_equal(b, 0);
    setenv(AE_MEM_LIMIT_ENV, "3M", 1);
    assert_int_equal(ae_mem_limit_from_env(&b), AE_OK);
    assert_int_equal(b, 3u << 20);
    unsetenv(AE_MEM_LIMIT_ENV);
}

static void test_cpu_count_and_refusal(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    size_t live = ae_cpu_mem_live();
    ae_ptr a = be->alloc(be, 1000, AE_DT_F32);
    assert_false(ae_ptr_is_null(a));
    size_t one = ae_cpu_mem_live() - live;
    assert_true(one >= 4000 && one < 4000 + 256);
    ae_cpu_set_mem_limit(live + one + 65536);
    ae_mem_clear_refusal();
    ae_ptr big = be->alloc(be, 1 << 16, AE_DT_F32); // 256 KiB: over the limit
    assert_true(ae_ptr_is_null(big));
    printf("refused: %s\n", ae_last_error());
    expect_in(ae_last_error(), "cpu: out of memory allocating 0.25 MiB");
    expect_in(ae_last_error(), "of the " AE_MEM_LIMIT_ENV " of");
    assert_string_equal(ae_mem_last_refusal(), ae_last_error());
    assert_int_equal(ae_cpu_mem_live(), live + one); // nothing counted for the refusal
    ae_ptr small = be->alloc(be, 1 << 12, AE_DT_I32); // 16 KiB: fits
    assert_false(ae_ptr_is_null(small));
    be->free(be, small);
    be->free(be, a);
    ae_cpu_set_mem_limit(0);
    assert_int_equal(ae_cpu_mem_live(), live);
    big = be->alloc(be, 1 << 16, AE_DT_F32); // no limit
    assert_false(ae_ptr_is_null(big));
    be->free(be, big);
}

static void test_bad_limit_at_open(void **state) {
    (void)state;
    const ae_backend *be = NULL;
    setenv(AE_MEM_LIMIT_ENV, "lots", 1);
    assert_int_equal(ae_backend_open("cpu", &be), AE_ERR_ARG);
    expect_in(ae_last_error(), AE_MEM_LIMIT_ENV " 'lots' is not a memory size");
    unsetenv(AE_MEM_LIMIT_ENV);
    // from the command line: refused before anything is read
    const char *args[] = {"convert", "--resume", g_dir, NULL};
    char *err = NULL;
    int rc = run_cli(args, "12Q", &err);
    printf("convert with " AE_MEM_LIMIT_ENV "=12Q: exit %d: %s", rc, err);
    assert_int_equal(rc, 1);
    expect_in(err, "attnedit convert: " AE_MEM_LIMIT_ENV " '12Q' is not a memory size");
    ae_test_catalogue("environment: " AE_MEM_LIMIT_ENV, "`" AE_MEM_LIMIT_ENV "=12Q attnedit convert --resume RUN`", err);
    free(err);
}

static void test_divisors(void **state) {
    (void)state;
    assert_int_equal(ae_oom_divisor_at_most(8, 4), 4);
    assert_int_equal(ae_oom_divisor_at_most(8, 3), 2);
    assert_int_equal(ae_oom_divisor_at_most(6, 2), 2);
    assert_int_equal(ae_oom_divisor_at_most(5, 2), 1);
    assert_int_equal(ae_oom_divisor_at_most(15, 7), 5);
    assert_int_equal(ae_oom_divisor_at_most(4, 0), 1);
    assert_int_equal(ae_oom_divisor_at_most(3, 9), 3);
}

// ---------------------------------------------------------------------------------------------
// 2. in this process: the stop, its message and no bytes left behind

static void test_stop_in_process(void **state) {
    (void)state;
    size_t n4 = need_of(32, 4, 256, 0), n2 = need_of(32, 2, 256, 0), n1 = need_of(32, 1, 256, 0);
    printf("stage 1 needs %zu / %zu / %zu bytes at batch 4 / 2 / 1\n", n4, n2, n1);
    assert_true(n4 > n2 && n2 > n1);
    size_t live0 = live_models();
    ae_distill_opts o = opts(32, 4, 1, 256, 0);
    ae_status st = run_in_process(&o, live0 + (n2 + n4) / 2, NULL, NULL); // 2 fits, 4 does not
    printf("%s\n", ae_last_error());
    assert_int_equal(st, AE_ERR_NOMEM);
    expect_in(ae_last_error(), "out of memory at stage 1, step 1 of 2: a micro-batch of 4 sequences "
                               "x 32 tokens does not fit");
    expect_in(ae_last_error(), "no checkpoint had been written yet");
    expect_in(ae_last_error(), "2 sequences x 32 tokens fit");
    expect_in(ae_last_error(), "--restart ");
    expect_in(ae_last_error(), " --batch 2 --accum 2");
    expect_in(ae_last_error(), AE_MEM_LIMIT_ENV);
    // with --batch 2 --accum 2 under the same limit, the same run finishes
    o = opts(32, 2, 2, 256, 0);
    assert_int_equal(run_in_process(&o, live0 + (n2 + n4) / 2, NULL, NULL), AE_OK);
    // only 1 fits: --batch 1 --accum 12 for batch 4 x accum 3
    o = opts(32, 4, 3, 384, 0);
    st = run_in_process(&o, live0 + (n1 + n2) / 2, NULL, NULL);
    assert_int_equal(st, AE_ERR_NOMEM);
    expect_in(ae_last_error(), "1 sequence x 32 tokens fit");
    expect_in(ae_last_error(), " --batch 1 --accum 12");
    // batch 6: the probe tries 3 (a divisor of 6 x 1), which fits
    size_t n6 = need_of(32, 6, 384, 0), n3 = need_of(32, 3, 384, 0);
    assert_true(n6 > n3);
    o = opts(32, 6, 1, 384, 0);
    st = run_in_process(&o, live0 + (n3 + n6) / 2, NULL, NULL);
    assert_int_equal(st, AE_ERR_NOMEM);
    expect_in(ae_last_error(), "6 sequences x 32 tokens does not fit");
    expect_in(ae_last_error(), "3 sequences x 32 tokens fit");
    expect_in(ae_last_error(), " --batch 3 --accum 2");
}

// Not even one sequence fits: the context is named, with the power-of-two context that ran.
static void test_context_does_not_fit(void **state) {
    (void)state;
    size_t n32 = need_of(32, 1, 256, 0), n16 = need_of(16, 1, 256, 0);
    assert_true(n32 > n16);
    size_t live0 = live_models();
    ae_distill_opts o = opts(32, 2, 1, 256, 0);
    ae_status st = run_in_process(&o, live0 + (n16 + n32) / 2, NULL, NULL);
    printf("%s\n", ae_last_error());
    assert_int_equal(st, AE_ERR_NOMEM);
    expect_in(ae_last_error(), "a micro-batch of 2 sequences x 32 tokens does not fit");
    expect_in(ae_last_error(), "not even one sequence of 32 tokens fits");
    expect_in(ae_last_error(), "smaller --ctx (one sequence of 16 tokens ran)");
}

// ---------------------------------------------------------------------------------------------
// 3. the command line: stage 2 does not fit at batch 4, the folder stays, --resume with the
// batch named finishes close to the uninterrupted run; a wrong product is refused

static void test_cli_stop_and_resume(void **state) {
    (void)state;
    // stage 1 at batch 4 and stage 2 at batch 1 fit, stage 2 at batch 4 does not
    size_t s1_4 = need_of(32, 4, 256, 0), s2_4 = need_of(32, 4, 0, 256), s2_1 = need_of(32, 1, 0, 256);
    size_t fits = s1_4 > s2_1 ? s1_4 : s2_1;
    printf("stage 1 at batch 4 needs %zu bytes, stage 2 at batch 4 %zu, at batch 1 %zu\n", s1_4, s2_4,
           s2_1);
    assert_true(s2_4 > fits);
    char limit[32];
    bytes_text(live_models() + fits + (s2_4 - fits) / 4, limit);
    char *ref = join(g_dir, "ref"), *run = join(g_dir, "oom"), *err = NULL;
    assert_int_equal(convert(ref, 4, "256", "256", NULL, &err), 0);
    free(err);

    int rc = convert(run, 4, "256", "256", limit, &err);
    printf("convert, %s=%s: exit %d\n%s", AE_MEM_LIMIT_ENV, limit, rc, err);
    assert_int_equal(rc, 1);
    char want[4400];
    snprintf(want, sizeof want, "attnedit convert --resume %s --batch ", run);
    expect_in(err, "attnedit convert: out of memory at stage 2, step 1 of 2: a micro-batch of 4 "
                   "sequences x 32 tokens does not fit");
    expect_in(err, "the last checkpoint (stage 2, step 0) is kept");
    expect_in(err, "not bit-identical");
    expect_in(err, want);
    expect_in(err, AE_MEM_LIMIT_ENV);
    assert_null(strstr(err, "(the run can be continued with"));
    // the command of the message, parsed back: --batch b --accum a with b x a = 4
    int b = 0, a = 0;
    assert_int_equal(sscanf(strstr(err, want) + strlen(want), "%d --accum %d", &b, &a), 2);
    assert_true(b >= 1 && b < 4 && b * a == 4);
    free(err);
    size_t n0, n1;
    char *state0 = ae_test_folder_state(run, k_run_files, &n0);

    // resumed as it was: the same stop, nothing written
    rc = resume(run, NULL, NULL, limit, &err);
    assert_int_equal(rc, 1);
    expect_in(err, "a micro-batch of 4 sequences x 32 tokens does not fit");
    free(err);
    char *state1 = ae_test_folder_state(run, k_run_files, &n1);
    assert_true(ae_test_same_state(state0, n0, state1, n1));
    free(state1);

    // a product other than the run's is refused, naming both, the folder as it was
    char bs[16], as[16];
    snprintf(bs, sizeof bs, "%d", b);
    snprintf(as, sizeof as, "%d", a + 1);
    rc = resume(run, bs, as, limit, &err);
    printf("--batch %s --accum %s: exit %d: %s", bs, as, rc, err);
    assert_int_equal(rc, 1);
    char msg[200];
    snprintf(msg, sizeof msg, "--batch %d x --accum %d is %d sequences per optimizer step, but the run "
             "takes 4 (train.batch 4 x train.accum 1 in ", b, a + 1, b * (a + 1));
    expect_in(err, msg);
    free(err);
    rc = resume(run, "3", NULL, limit, &err); // --batch alone: accum stays the run's (1)
    assert_int_equal(rc, 1);
    expect_in(err, "--batch 3 x --accum 1 is 3 sequences per optimizer step");
    ae_test_catalogue_cli("run folders: --resume with other micro-batches",
                          ((const char *const[]){"convert", "--resume", "RUN", "--batch", "3", NULL}),
                          "the run takes batch 4 x accum 1", err);
    free(err);
    state1 = ae_test_folder_state(run, k_run_files, &n1);
    assert_true(ae_test_same_state(state0, n0, state1, n1));
    free(state1);

    // the command of the message finishes the run under the same limit
    snprintf(as, sizeof as, "%d", a);
    rc = resume(run, bs, as, limit, &err);
    printf("--resume --batch %s --accum %s: exit %d\n%s", bs, as, rc, err);
    assert_int_equal(rc, 0);
    free(err);
    assert_int_equal((int)spec_number(run, "train.batch"), b);
    assert_int_equal((int)spec_number(run, "train.accum"), a);
    double kl = spec_number(run, "result.stage2_final_loss");
    double kl_ref = spec_number(ref, "result.stage2_final_loss");
    double s1 = spec_number(run, "result.stage1_final_loss");
    double s1_ref = spec_number(ref, "result.stage1_final_loss");
    printf("final KL %.9g (resumed with batch %d x accum %d) vs %.9g (uninterrupted, batch 4); "
           "stage 1 %.9g vs %.9g\n", kl, b, a, kl_ref, s1, s1_ref);
    assert_true(fabs(kl - kl_ref) <= 1e-4 * fabs(kl_ref));
    assert_true(s1 == s1_ref); // stage 1 ran with batch 4 in both
    // later resumes read the recorded values: the run is finished
    rc = resume(run, NULL, NULL, NULL, &err);
    assert_int_equal(rc, 0);
    expect_in(err, "already finished");
    free(err);
    free(state0);
    ae_test_rmtree(run);
    ae_test_rmtree(ref);
    free(run);
    free(ref);
}

// No checkpoint yet (stage 1, step 1): the message gives --restart with the batch that fits,
// and that command finishes the run.
static void test_cli_restart(void **state) {
    (void)state;
    size_t n4 = need_of(32, 4, 256, 0), n2 = need_of(32, 2, 256, 0);
    char limit[32];
    bytes_text(live_models() + (n2 + n4) / 2, limit);
    char *run = join(g_dir, "oom-restart"), *err = NULL;
    int rc = convert(run, 4, "256", "0", limit, &err);
    printf("convert, %s=%s: exit %d\n%s", AE_MEM_LIMIT_ENV, limit, rc, err);
    assert_int_equal(rc, 1);
    char want[4400];
    snprintf(want, sizeof want, "attnedit convert --restart %s --batch 2 --accum 2", run);
    expect_in(err, want);
    expect_in(err, "no checkpoint had been written yet");
    free(err);
    const char *args[] = {"convert", "--restart", run, "--batch", "2", "--accum", "2", NULL};
    rc = run_cli(args, limit, &err);
    printf("restart: exit %d\n%s", rc, err);
    assert_int_equal(rc, 0);
    free(err);
    assert_int_equal((int)spec_number(run, "train.batch"), 2);
    assert_int_equal((int)spec_number(run, "train.accum"), 2);
    ae_test_rmtree(run);
    free(run);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_parse),
        cmocka_unit_test(test_cpu_count_and_refusal),
        cmocka_unit_test(test_bad_limit_at_open),
        cmocka_unit_test(test_divisors),
        cmocka_unit_test(test_stop_in_process),
        cmocka_unit_test(test_context_does_not_fit),
        cmocka_unit_test(test_cli_stop_and_resume),
        cmocka_unit_test(test_cli_restart),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, setup, teardown));
}
