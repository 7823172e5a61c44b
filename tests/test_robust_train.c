// Non-finite values in training (`attnedit convert`): a run whose loss, gradient or update
// becomes Inf or NaN stops at that step with exit 1 and a message naming the stage, the step and
// the layer; the checkpoint on disk stays bit-identical to the last good one (the one an
// interrupted run killed right after that checkpoint holds), model.safetensors is not
// rewritten and nothing non-finite reaches metrics.jsonl. Resuming repeats the same stop. A
// checkpoint holding a NaN or Inf (parameter, frozen tensor or AdamW moment) is refused on
// --resume, naming the tensor, with the folder left as it was. The trigger is a realistic one:
// the largest learning rate and weight decay the options accept (10 and 10) make the weights
// grow ~100x per step until a float overflows, after a few good steps.
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "train/data.h"
#include "train/distill.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"

static char *g_dir, *g_tokens;

// ---------------------------------------------------------------------------------------------
// helpers

static int run_cli(const char *const *args, const char *env, char **err) {
    if (env) putenv((char *)env); // "NAME=value", inherited by the child
    int rc = ae_test_run_cli(args, NULL, NULL, err);
    if (env) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(strchr(env, '=') - env), env);
        unsetenv(name);
    }
    return rc;
}

static char *join(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

static char *read_all(const char *dir, const char *file, size_t *len) {
    char *p = join(dir, file), *buf;
    size_t n;
    ae_status st = ae_file_read_all(p, &buf, &n);
    free(p);
    if (len) *len = st == AE_OK ? n : 0;
    return st == AE_OK ? buf : NULL;
}

// 1 when dir_a/file and dir_b/file exist and hold the same bytes.
static int same_bytes(const char *dir_a, const char *dir_b, const char *file) {
    size_t na, nb;
    char *a = read_all(dir_a, file, &na), *b = read_all(dir_b, file, &nb);
    int same = a && b && na == nb && memcmp(a, b, na) == 0;
    if (!same) printf("%s differs between %s and %s\n", file, dir_a, dir_b);
    free(a);
    free(b);
    return same;
}

// The files of a run folder that a stopped run must leave as they were.
static const char *k_kept[] = {"checkpoint/params.safetensors", "checkpoint/state.json",
                               "model.safetensors", "config.json"};

static void copy_tree(const char *src, const char *dst) {
    char cmd[8192];
    ae_test_rmtree(dst);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", src, dst);
    assert_int_equal(system(cmd), 0);
}

// `convert --teacher MICRO <args> --out out`, with env set for the child.
static int convert(const char *out, const char *const *args, const char *env, char **err) {
    const char *argv[64] = {"convert", "--teacher", ae_test_src(MICRO)};
    int n = 3;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n++] = "--out";
    argv[n++] = out;
    argv[n] = NULL;
    return run_cli(argv, env, err);
}

static int resume(const char *dir, char **err) {
    const char *argv[] = {"convert", "--resume", dir, NULL};
    return run_cli(argv, NULL, err);
}

// Sets element `index` of the F32 tensor `name` of a safetensors file to v, in place.
static void poke_f32(const char *path, const char *name, int64_t index, float v) {
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &buf, &len), AE_OK);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)buf[i];
    char *js = malloc(hlen + 1);
    memcpy(js, buf + 8, hlen);
    js[hlen] = '\0';
    cJSON *h = cJSON_Parse(js), *t = cJSON_GetObjectItemCaseSensitive(h, name);
    assert_non_null(t);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, "F32");
    size_t off = 8 + hlen + (size_t)cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(t, "data_offsets"), 0)->valuedouble;
    memcpy(buf + off + 4 * (size_t)index, &v, 4); // little-endian host
    assert_int_equal(ae_test_write_file(path, buf, len), 0);
    cJSON_Delete(h);
    free(js);
    free(buf);
}

// The step of "non-finite value in training at stage S, step K of N" in err, or -1.
static long long stopped_step(const char *err, int stage) {
    const char *p = strstr(err, "non-finite value in training at stage ");
    int s;
    long long k;
    if (!p || sscanf(p, "non-finite value in training at stage %d, step %lld", &s, &k) != 2 || s != stage)
        return -1;
    return k;
}

static int setup(void **state) {
    (void)state;
    return ae_test_prepare_tokens(MICRO, &g_dir, &g_tokens);
}

static int teardown(void **state) {
    (void)state;
    ae_test_rmtree(g_dir);
    free(g_dir), free(g_tokens);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// 1. a diverging run stops at the step, keeps the last good checkpoint, exits 1

// Runs `convert args` uninterrupted (it must stop at stage `stage` with every needle on stderr),
// then the same run killed (SIGKILL) right after the last checkpoint before the stop: both
// folders must hold the same checkpoint and model bytes. Then --resume of the stopped run stops
// again at the same step, changing none of them. s1_steps: stage 1's steps (stage 2 counts
// after them in the kill hook), save_every: the run's --save-every.
static void expect_stop(const char *name, const char *const *args, int stage, int s1_steps,
                        int save_every, const char *const *needles) {
    char *a = join(g_dir, name), bname[64];
    snprintf(bname, sizeof bname, "%s-killed", name);
    char *b = join(g_dir, bname), *err = NULL;
    ae_test_rmtree(a), ae_test_rmtree(b);
    int rc = convert(a, args, NULL, &err);
    printf("%s: exit %d: %s", name, rc, err);
    assert_int_equal(rc, 1);
    assert_null(strstr(err, "runtime error"));
    assert_null(strstr(err, "can be continued")); // resuming would diverge again
    for (int i = 0; needles[i]; i++)
        if (!strstr(err, needles[i])) fail_msg("%s: stderr lacks '%s'", name, needles[i]);
    long long k = stopped_step(err, stage);
    assert_true(k >= 1);
    long long last = (k - 1) / save_every * save_every; // the last checkpoint of the stage
    if (last < 2) fail_msg("%s: stopped at step %lld, before a checkpoint inside the stage: pick a "
                           "later-diverging setting", name, k);
    char kept[96];
    snprintf(kept, sizeof kept, "the last good checkpoint (stage %d, step %lld) is kept", stage, last);
    assert_non_null(strstr(err, kept));
    free(err);
    // nothing non-finite was logged, the run is not "done", no temporary folder is left
    char *metrics = read_all(a, "metrics.jsonl", NULL), *meta = read_all(a, "conversion.json", NULL);
    assert_non_null(metrics);
    assert_null(strstr(metrics, "nan"));
    assert_null(strstr(metrics, "inf"));
    assert_null(strstr(meta, "\"done\""));
    free(metrics), free(meta);
    // the same run killed right after that checkpoint: the same bytes on disk
    char env[64];
    snprintf(env, sizeof env, "AE_TEST_KILL_AT_STEP=%lld", last + (stage == 2 ? s1_steps : 0));
    rc = convert(b, args, env, &err);
    if (rc != 128 + SIGKILL) printf("killed run: exit %d\n%s\n", rc, err);
    assert_int_equal(rc, 128 + SIGKILL);
    free(err);
    for (size_t i = 0; i < sizeof k_kept / sizeof *k_kept; i++) assert_true(same_bytes(a, b, k_kept[i]));
    assert_int_equal(ae_test_count_entries(a), ae_test_count_entries(b));
    char *ck = join(a, "checkpoint");
    assert_int_equal(ae_test_count_entries(ck), 2);
    free(ck);
    // --resume repeats the same steps and stops at the same one, writing nothing
    rc = resume(a, &err);
    printf("%s --resume: exit %d\n", name, rc);
    assert_int_equal(rc, 1);
    assert_int_equal(stopped_step(err, stage), k);
    free(err);
    for (size_t i = 0; i < sizeof k_kept / sizeof *k_kept; i++) assert_true(same_bytes(a, b, k_kept[i]));
    ae_test_rmtree(a), ae_test_rmtree(b);
    free(a), free(b);
}

// Stage 1, MLA: the gradient overflows first (clipping keeps the updates finite).
static void test_stage1_gradient(void **state) {
    (void)state;
    const char *args[] = {"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--data", g_tokens,
                          "--ctx", "32", "--batch", "2", "--stage1-tokens", "2560", "--stage2-tokens", "640",
                          "--stage1-lr", "10", "--weight-decay", "10", "--warmup", "0", "--save-every", "2",
                          "--log-every", "1", NULL};
    const char *needles[] = {"the gradient of model.layers.", "(layer ", "holds Inf or NaN",
                             "a lower --stage1-lr (this run: 10)", NULL};
    expect_stop("s1-grad", args, 1, 40, 2, needles);
}

// Stage 1, GateSWA without clipping: an update overflows a second moment.
static void test_stage1_update(void **state) {
    (void)state;
    const char *args[] = {"--target", "gateswa", "--window", "8", "--full-every", "2", "--sinks", "--data",
                          g_tokens, "--ctx", "32", "--batch", "2", "--stage1-tokens", "2560",
                          "--stage1-lr", "10", "--weight-decay", "10", "--clip", "0", "--warmup", "0",
                          "--save-every", "3", "--log-every", "1", NULL};
    const char *needles[] = {"the update (gradient norm", "(layer ", "second moment hold Inf or NaN", NULL};
    expect_stop("s1-update", args, 1, 40, 3, needles);
}

// Stage 2 after a stage 1 (GateSWA): the KL loss is NaN; the message names the first layer
// after which the student's residual stream is not finite.
static void test_stage2_loss(void **state) {
    (void)state;
    const char *args[] = {"--target", "gateswa", "--window", "8", "--full-every", "2", "--data", g_tokens,
                          "--ctx", "32", "--batch", "2", "--stage1-tokens", "128", "--stage2-tokens", "1280",
                          "--stage2-lr", "10", "--weight-decay", "10", "--warmup", "0", "--save-every", "2",
                          "--log-every", "1", NULL};
    const char *needles[] = {"loss is", "residual stream first holds Inf or NaN after layer",
                             "(model.layers.", "a lower --stage2-lr (this run: 10)", NULL};
    expect_stop("s2-loss", args, 2, 2, 2, needles);
}

// ---------------------------------------------------------------------------------------------
// 2. a teacher whose own activations overflow is named as the cause (library API: the loader
//    refuses non-finite weights on disk, so the teacher is poisoned in memory)

// The initialised MLA student of the micro teacher, trained from in memory by ae_distill_run with
// the teacher's embedding row of one token of the data (data.ids[40]) set to +Inf: stage_tokens
// and cos_weight as given. Returns the run's status; the message is ae_last_error().
static ae_status run_poisoned_teacher(const char *name, int64_t s1, int64_t s2, float cos_weight) {
    char *out = join(g_dir, name), *err = NULL;
    ae_test_rmtree(out);
    const char *args[] = {"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", NULL};
    assert_int_equal(convert(out, args, NULL, &err), 0); // the initialised student, no training
    free(err);
    ae_model *t, *s;
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &t), AE_OK);
    assert_int_equal(ae_model_load(out, ae_backend_cpu(), &s), AE_OK);
    ae_tokfile data;
    assert_int_equal(ae_tokfile_open(g_tokens, &data), AE_OK);
    int D = t->cfg.hidden_size;
    float *emb = ae_f32(t->embed); // (V, D): one token's row set to +Inf
    for (int d = 0; d < D; d++) emb[(size_t)data.ids[40] * D + d] = INFINITY;
    ae_distill_opts o = {.ctx = 32, .batch = 2, .accum = 1, .stage_tokens = {s1, s2}, .lr = {1e-3f, 3e-4f},
                         .warmup_frac = 0.05f, .min_lr_ratio = 0.1f, .weight_decay = 0.01f, .clip = 1.0f,
                         .tau = 1.0f, .cos_weight = cos_weight, .save_every = 2, .log_every = 1};
    ae_distill_result res;
    ae_status st = ae_distill_run(t, s, &data, &o, out, 0, &res);
    printf("%s: teacher with an Inf embedding row: %s: %s\n", name, ae_status_name(st), ae_last_error());
    ae_tokfile_close(&data);
    ae_model_free(s);
    ae_model_free(t);
    ae_test_rmtree(out);
    free(out);
    return st;
}

static void test_teacher_overflow(void **state) {
    (void)state;
    assert_int_equal(run_poisoned_teacher("teacher-inf", 640, 0, 0.1f), AE_ERR_NONFINITE);
    assert_non_null(strstr(ae_last_error(), "the teacher's attention input of layer 0 holds Inf or NaN"));
    assert_non_null(strstr(ae_last_error(), "check the teacher's weights"));
}

// Stage 2 alone: the KL is NaN and the teacher is named. Without the cosine term the teacher's
// forward keeps no stream, so the diagnosis runs it again keeping them; with the term it reads
// the kept ones.
static void test_teacher_overflow_stage2(void **state) {
    (void)state;
    float cw[] = {0.0f, 0.1f};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(run_poisoned_teacher("teacher-inf-s2", 0, 640, cw[k]), AE_ERR_NONFINITE);
        assert_non_null(strstr(ae_last_error(), "at stage 2, step "));
        assert_non_null(strstr(ae_last_error(), "the KL loss is NaN: the teacher's embeddings hold Inf or NaN"));
        assert_non_null(strstr(ae_last_error(), "check the teacher's weights"));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. a checkpoint holding NaN or Inf is refused on --resume, naming the tensor

static void test_checkpoint_nonfinite(void **state) {
    (void)state;
    char *killed = join(g_dir, "ck-killed"), *run = join(g_dir, "ck-edited"), *err = NULL;
    ae_test_rmtree(killed);
    const char *args[] = {"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--data", g_tokens,
                          "--ctx", "32", "--batch", "2", "--stage1-tokens", "256", "--stage2-tokens", "256",
                          "--save-every", "2", "--log-every", "1", NULL};
    int rc = convert(killed, args, "AE_TEST_KILL_AT_STEP=3", &err); // checkpoint at stage 1, step 2
    assert_int_equal(rc, 128 + SIGKILL);
    free(err);
    struct {
        const char *tensor;
        int64_t index;
        float value;
    } cases[] = {
        {"model.layers.1.self_attn.kv_b_proj.weight", 7, NAN},          // a trained parameter
        {"adam.v/model.layers.0.self_attn.q_proj.weight", 100, INFINITY}, // an AdamW moment
        {"adam.m/model.layers.3.self_attn.o_proj.weight", 0, -INFINITY},
        {"model.layers.2.self_attn.kv_a_proj_with_mqa.weight", 3, NAN}, // (frozen tensors are
                                                                          // not in checkpoints)
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        copy_tree(killed, run);
        char *pp = join(run, "checkpoint/params.safetensors");
        poke_f32(pp, cases[c].tensor, cases[c].index, cases[c].value);
        size_t nb;
        char *before = read_all(run, "checkpoint/params.safetensors", &nb);
        rc = resume(run, &err);
        char want[256];
        snprintf(want, sizeof want, "params.safetensors: tensor '%s' holds a non-finite value (Inf or "
                 "NaN) at element %lld", cases[c].tensor, (long long)cases[c].index);
        printf("checkpoint with %g in %s: exit %d: %s", (double)cases[c].value, cases[c].tensor, rc, err);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(err, want));
        // nothing was written: the folder is the damaged copy, byte for byte
        for (size_t i = 0; i < sizeof k_kept / sizeof *k_kept; i++)
            if (strcmp(k_kept[i], "checkpoint/params.safetensors")) assert_true(same_bytes(run, killed, k_kept[i]));
        size_t na;
        char *after = read_all(run, "checkpoint/params.safetensors", &na);
        assert_true(na == nb && memcmp(before, after, nb) == 0);
        free(before), free(after), free(err), free(pp);
    }
    // the same edit with a finite value resumes and finishes: the refusal is about the value
    copy_tree(killed, run);
    char *pp = join(run, "checkpoint/params.safetensors");
    poke_f32(pp, cases[0].tensor, cases[0].index, 0.25f);
    rc = resume(run, &err);
    if (rc) printf("resume with a finite edit: %s\n", err);
    assert_int_equal(rc, 0);
    free(err), free(pp);
    ae_test_rmtree(run), ae_test_rmtree(killed);
    free(run), free(killed);
}

// ---------------------------------------------------------------------------------------------
// 4. a killed and resumed run ends as the uninterrupted one: model, checkpoint, conversion.json
//    (but its wall time) and every metrics.jsonl record (but its timings), also when a progress
//    line spans the resume point and when two checkpoint writes in a row die between renames

// Entries of dir whose name starts with prefix.
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

// metrics.jsonl without timings (tokens_per_s, elapsed_s), as sorted distinct lines.
static char *metrics_set(const char *dir) {
    char *text = read_all(dir, "metrics.jsonl", NULL);
    assert_non_null(text);
    char *lines[512];
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        assert_true(n < 512);
        char *t = strstr(l, ",\"tokens_per_s\":"), *e = t ? strstr(t, "\"elapsed_s\":") : NULL;
        if (e) {
            e += strcspn(e, ",}");
            memmove(t, e, strlen(e) + 1);
        }
        lines[n++] = l;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(lines[j - 1], lines[j]) > 0; j--) {
            char *x = lines[j];
            lines[j] = lines[j - 1];
            lines[j - 1] = x;
        }
    size_t cap = 1, len = 0;
    for (int i = 0; i < n; i++) cap += strlen(lines[i]) + 1;
    char *out = malloc(cap);
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        if (i == 0 || strcmp(lines[i], lines[i - 1])) len += (size_t)sprintf(out + len, "%s\n", lines[i]);
    free(text);
    return out;
}

// conversion.json without result.wall_s.
static char *meta_without_wall(const char *dir) {
    size_t len;
    char *text = read_all(dir, "conversion.json", &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"done\""));
    const char *w = strstr(text, "\"wall_s\"");
    size_t cut = w ? (size_t)(w - text) : len;
    text[cut] = '\0';
    return text;
}

static void expect_same_result(const char *run, const char *ref) {
    const char *files[] = {"model.safetensors", "config.json", "checkpoint/params.safetensors",
                           "checkpoint/state.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) assert_true(same_bytes(run, ref, files[i]));
    char *a = meta_without_wall(run), *b = meta_without_wall(ref);
    assert_string_equal(a, b);
    free(a), free(b);
    a = metrics_set(run), b = metrics_set(ref);
    if (strcmp(a, b)) printf("metrics.jsonl records differ:\n--- resumed\n%s--- uninterrupted\n%s", a, b);
    assert_string_equal(a, b);
    free(a), free(b);
    assert_int_equal(ae_test_count_entries(run), ae_test_count_entries(ref)); // no temp or .old left
}

static void test_resume_same_records(void **state) {
    (void)state;
    // --init teacher: conversion.json then holds the init's figures of merit, which the resumed
    // run must write again (it does not recompute them)
    const char *args[] = {"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--init", "teacher",
                          "--data", g_tokens, "--ctx", "32", "--batch", "2", "--stage1-tokens", "384",
                          "--stage2-tokens", "128", "--save-every", "2", "--log-every", "3", NULL};
    char *ref = join(g_dir, "rec-ref"), *run = join(g_dir, "rec-run"), *err = NULL;
    ae_test_rmtree(ref);
    assert_int_equal(convert(ref, args, NULL, &err), 0);
    free(err);
    // killed after step 4 (checkpoint at 4, one step into the progress line of steps 4-6)
    ae_test_rmtree(run);
    assert_int_equal(convert(run, args, "AE_TEST_KILL_AT_STEP=4", &err), 128 + SIGKILL);
    free(err);
    int rc = resume(run, &err);
    if (rc) printf("resume: %s\n", err);
    assert_int_equal(rc, 0);
    free(err);
    expect_same_result(run, ref);
    // killed between the renames of the checkpoint at step 4 (pass 1 is the student folder's
    // write, 2 the checkpoint at step 2): checkpoint.old (step 2) is the only checkpoint; the
    // resumed run is killed at the same point of its next checkpoint write, which must keep
    // checkpoint.old until its own is in place; a third run finishes
    ae_test_rmtree(run);
    assert_int_equal(convert(run, args, "AE_TEST_KILL_POINT=dir-old-moved:3", &err), 128 + SIGKILL);
    free(err);
    char *ck = join(run, "checkpoint"), *old = join(run, "checkpoint.old");
    assert_false(ae_path_exists(ck));
    assert_true(ae_path_exists(old));
    const char *argv[] = {"convert", "--resume", run, NULL};
    assert_int_equal(run_cli(argv, "AE_TEST_KILL_POINT=dir-old-moved:1", &err), 128 + SIGKILL);
    free(err);
    assert_true(ae_path_exists(old));
    rc = resume(run, &err);
    if (rc) printf("resume: %s\n", err);
    assert_int_equal(rc, 0);
    free(err);
    expect_same_result(run, ref);
    // killed after the renames of the final checkpoint (pass 5: folder, steps 2 and 4 of stage
    // 1, its end, the end of stage 2), before checkpoint.old is removed: the resume writes no
    // checkpoint, and must still leave no checkpoint.old behind
    ae_test_rmtree(run);
    assert_int_equal(convert(run, args, "AE_TEST_KILL_POINT=dir-renamed:5", &err), 128 + SIGKILL);
    free(err);
    assert_true(ae_path_exists(old));
    rc = resume(run, &err);
    if (rc) printf("resume: %s\n", err);
    assert_int_equal(rc, 0);
    free(err);
    expect_same_result(run, ref);
    // a --restart killed while filling the new folder leaves the run as it was (resumable) and
    // rec-run.tmp.<pid> beside it, which the resume removes
    ae_test_rmtree(run);
    assert_int_equal(convert(run, args, "AE_TEST_KILL_AT_STEP=4", &err), 128 + SIGKILL);
    free(err);
    const char *restart[] = {"convert", "--restart", run, NULL};
    assert_int_equal(run_cli(restart, "AE_TEST_KILL_POINT=dir-filled:1", &err), 128 + SIGKILL);
    free(err);
    assert_int_equal(count_prefixed(g_dir, "rec-run.tmp."), 1);
    rc = resume(run, &err);
    if (rc) printf("resume: %s\n", err);
    assert_int_equal(rc, 0);
    free(err);
    expect_same_result(run, ref);
    assert_int_equal(count_prefixed(g_dir, "rec-run.tmp."), 0);
    ae_test_rmtree(run), ae_test_rmtree(ref);
    free(run), free(ref), free(ck), free(old);
}

// state.json's interval (the sums since the last progress line) is checked like every other
// field; a checkpoint without it (written before it was recorded) still resumes.
static void set_interval_field(const char *dir, const char *key, const char *value) {
    size_t len;
    char *text = read_all(dir, "checkpoint/state.json", &len);
    assert_non_null(text);
    cJSON *root = cJSON_Parse(text), *iv = cJSON_GetObjectItemCaseSensitive(root, "interval");
    free(text);
    assert_non_null(iv);
    if (!key) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "interval");
        if (value) cJSON_AddItemToObject(root, "interval", cJSON_Parse(value));
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(iv, key);
        cJSON_AddItemToObject(iv, key, cJSON_Parse(value));
    }
    char *out = cJSON_Print(root), *path = join(dir, "checkpoint/state.json");
    assert_int_equal(ae_test_write_file(path, out, strlen(out)), 0);
    free(out), free(path);
    cJSON_Delete(root);
}

static void test_state_interval_fields(void **state) {
    (void)state;
    const char *args[] = {"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--data", g_tokens,
                          "--ctx", "32", "--batch", "2", "--stage1-tokens", "384", "--stage2-tokens", "0",
                          "--save-every", "2", "--log-every", "3", NULL};
    char *killed = join(g_dir, "iv-killed"), *run = join(g_dir, "iv-edited"), *err = NULL;
    ae_test_rmtree(killed);
    assert_int_equal(convert(killed, args, "AE_TEST_KILL_AT_STEP=4", &err), 128 + SIGKILL);
    free(err);
    struct {
        const char *key, *value, *needle;
    } cases[] = {
        {"steps", "2", "state.json: interval.steps is 2; must be 1"}, // step 4 mod log-every 3
        {"steps", "\"1\"", "interval.steps must be a number"},
        {"top1", "-1", "interval.top1 is -1"},
        {"top1", "65", "interval.top1 is 65; must be in [0, 64]"},    // 1 step x 64 predictions
        {"loss_sum", "\"x\"", "interval.loss_sum must be a number"},
        {"cos_sum", "null", "interval.cos_sum"},
        {"layer_sum", "[1, 2]", "interval.layer_sum must be an array of 4 finite numbers"},
        {"layer_sum", "[1, 2, 3, \"4\"]", "interval.layer_sum must be an array of 4"},
        {NULL, "[]", "interval must be an object"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        copy_tree(killed, run);
        set_interval_field(run, cases[c].key, cases[c].value);
        size_t nb;
        char *before = read_all(run, "checkpoint/state.json", &nb);
        int rc = resume(run, &err);
        printf("interval.%s = %s: exit %d: %s", cases[c].key ? cases[c].key : "", cases[c].value, rc, err);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(err, cases[c].needle));
        for (size_t i = 0; i < sizeof k_kept / sizeof *k_kept; i++)
            if (strcmp(k_kept[i], "checkpoint/state.json")) assert_true(same_bytes(run, killed, k_kept[i]));
        size_t na;
        char *after = read_all(run, "checkpoint/state.json", &na);
        assert_true(na == nb && memcmp(before, after, nb) == 0);
        free(before), free(after), free(err);
    }
    copy_tree(killed, run);
    set_interval_field(run, NULL, NULL); // an older checkpoint
    int rc = resume(run, &err);
    if (rc) printf("resume without interval: %s\n", err);
    assert_int_equal(rc, 0);
    free(err);
    ae_test_rmtree(run), ae_test_rmtree(killed);
    free(run), free(killed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage1_gradient),
        cmocka_unit_test(test_stage1_update),
        cmocka_unit_test(test_stage2_loss),
        cmocka_unit_test(test_teacher_overflow),
        cmocka_unit_test(test_teacher_overflow_stage2),
        cmocka_unit_test(test_checkpoint_nonfinite),
        cmocka_unit_test(test_resume_same_records),
        cmocka_unit_test(test_state_interval_fields),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
