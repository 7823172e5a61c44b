// Hostile run folders for `attnedit convert --resume` / `--restart`: a finished run, a run
// whose checkpoint was deleted, and conversion.json / checkpoint/state.json with edited fields.
// Every bad input must get one message naming the file and the field, an exit status in
// [1, 127] (never a crash), and leave every file of the run folder as it was (same bytes, same
// inode, same mtime). Resuming a finished run says so, exits 0 and changes nothing.
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "train/distill.h"
#include "util/testutil.h"

static char *g_dir, *g_tokens;
static char *g_done;   // finished MLA run: stage 1 and 2, 4 steps each, checkpoint every 2
static char *g_killed; // the same run killed after global step 3 (checkpoint at stage 1, step 2)
static char *g_gswa;   // finished GateSWA run (window 8, full every 2, sinks)

// ---------------------------------------------------------------------------------------------
// helpers

typedef struct {
    int rc;
    char *err;
} cli_result;

static cli_result run_cli(const char *const *args, const char *env) {
    cli_result r;
    if (env) putenv((char *)env); // "NAME=value", inherited by the child
    r.rc = ae_test_run_cli(args, NULL, NULL, &r.err);
    if (env) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(strchr(env, '=') - env), env);
        unsetenv(name);
    }
    return r;
}

static char *join(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    assert_int_equal(system(cmd), 0);
}

// A fresh copy of a run folder (caller: ae_test_rmtree + free).
static char *copy_run(const char *src, const char *name) {
    char *dst = join(g_dir, name);
    ae_test_rmtree(dst);
    sh("cp -a '%s' '%s'", src, dst);
    return dst;
}

// Runs `convert --resume DIR` (or --restart).
static cli_result resume(const char *flag, const char *dir) {
    const char *args[] = {"convert", flag, dir, NULL};
    return run_cli(args, NULL);
}

// ---- snapshot of a folder: every entry's path, type, size, inode, mtime and content hash
typedef struct {
    char path[512];
    unsigned mode;
    long long size, ino, mtime_s, mtime_ns;
    uint64_t hash;
} entry;

static entry g_snap[256];
static int g_nsnap;
static size_t g_root_len;

static uint64_t file_hash(const char *path) {
    char *buf;
    size_t len;
    if (ae_file_read_all(path, &buf, &len) != AE_OK) return 0;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)buf[i]) * 1099511628211ull;
    free(buf);
    return h;
}

static int snap_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)flag, (void)ftw;
    if (g_nsnap == 256) return 1;
    entry *e = &g_snap[g_nsnap++];
    snprintf(e->path, sizeof e->path, "%s", path + g_root_len);
    e->mode = sb->st_mode;
    e->size = sb->st_size;
    e->ino = (long long)sb->st_ino;
    e->mtime_s = sb->st_mtim.tv_sec;
    e->mtime_ns = sb->st_mtim.tv_nsec;
    e->hash = S_ISREG(sb->st_mode) ? file_hash(path) : 0;
    return 0;
}

// Snapshot of dir, sorted by path (heap array of *n entries).
static entry *snapshot(const char *dir, int *n) {
    g_nsnap = 0;
    g_root_len = strlen(dir);
    assert_int_equal(nftw(dir, snap_cb, 16, FTW_PHYS), 0);
    entry *s = malloc(sizeof(entry) * (size_t)(g_nsnap ? g_nsnap : 1));
    memcpy(s, g_snap, sizeof(entry) * (size_t)g_nsnap);
    *n = g_nsnap;
    for (int i = 1; i < *n; i++) // insertion sort by path (nftw order is the directory's)
        for (int j = i; j > 0 && strcmp(s[j - 1].path, s[j].path) > 0; j--) {
            entry t = s[j];
            s[j] = s[j - 1];
            s[j - 1] = t;
        }
    return s;
}

// 1 if the snapshots are equal; prints the differences otherwise.
static int same_snapshot(const entry *a, int na, const entry *b, int nb) {
    int same = na == nb;
    if (na != nb) printf("folder had %d entries, now %d\n", na, nb);
    for (int i = 0; i < na && i < nb; i++)
        if (strcmp(a[i].path, b[i].path) || a[i].mode != b[i].mode || a[i].size != b[i].size ||
            a[i].ino != b[i].ino || a[i].mtime_s != b[i].mtime_s || a[i].mtime_ns != b[i].mtime_ns ||
            a[i].hash != b[i].hash) {
            printf("changed: '%s' (size %lld -> %lld, inode %lld -> %lld, content %s) vs '%s'\n",
                   a[i].path, a[i].size, b[i].size, a[i].ino, b[i].ino,
                   a[i].hash == b[i].hash ? "same" : "differs", b[i].path);
            same = 0;
        }
    return same;
}

// Runs `convert FLAG DIR`; it must fail cleanly, say every non-NULL needle on stderr, and leave
// the folder exactly as it was.
static void expect_refused(const char *flag, const char *dir, const char *n1, const char *n2,
                           const char *what) {
    int na, nb;
    entry *before = snapshot(dir, &na);
    cli_result r = resume(flag, dir);
    entry *after = snapshot(dir, &nb);
    int same = same_snapshot(before, na, after, nb);
    int ok = r.rc > 0 && r.rc < 128 && strstr(r.err, "attnedit convert") &&
             (!n1 || strstr(r.err, n1)) && (!n2 || strstr(r.err, n2)) &&
             !strstr(r.err, "Sanitizer") && !strstr(r.err, "runtime error") && same;
    if (!ok)
        printf("--- %s: convert %s: exit %d, folder %s\n--- stderr:\n%s\nexpected: exit in [1, 127], "
               "stderr with '%s' and '%s', folder unchanged\n",
               what, flag, r.rc, same ? "unchanged" : "CHANGED", r.err, n1 ? n1 : "", n2 ? n2 : "");
    else {
        printf("%-44s -> %.*s", what, (int)strcspn(r.err, "\n") + 1, r.err);
        char input[256];
        int n = (int)strlen(what);
        if (n > 12 && !strcmp(what + n - 12, " (--restart)")) n -= 12; // said by the command
        snprintf(input, sizeof input, "`attnedit convert %s RUN`: %.*s", flag, n, what);
        const char *section =
            !strncmp(what, "conversion.json ", 16) || !strncmp(what, "train.", 6)
                ? "run folders: conversion.json edited"
            : (!strncmp(what, "checkpoint/state.json ", 22) && strstr(what, " = ")) ||
                    !strncmp(what, "state.json ", 11)
                ? "run folders: checkpoint/state.json edited"
                : "run folders: other damage";
        ae_test_catalogue(section, input, r.err);
    }
    fflush(stdout);
    free(r.err);
    free(before);
    free(after);
    assert_true(ok);
}

// Sets field `dotted` ("train.ctx", "loader_rng") of dir/file to the JSON text `value`, or
// removes it when value is NULL.
static void set_field(const char *dir, const char *file, const char *dotted, const char *value) {
    char *path = join(dir, file), *text;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &text, &len), AE_OK);
    cJSON *root = cJSON_Parse(text), *obj = root;
    free(text);
    assert_non_null(root);
    char key[128];
    snprintf(key, sizeof key, "%s", dotted);
    char *dot = strchr(key, '.'), *leaf = key;
    if (dot) {
        *dot = '\0';
        obj = cJSON_GetObjectItemCaseSensitive(root, key);
        assert_non_null(obj);
        leaf = dot + 1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, leaf);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        assert_non_null(v);
        cJSON_AddItemToObject(obj, leaf, v);
    }
    char *out = cJSON_Print(root);
    assert_int_equal(ae_test_write_file(path, out, strlen(out)), 0);
    free(out);
    cJSON_Delete(root);
    free(path);
}

static char *read_text(const char *dir, const char *file) {
    char *path = join(dir, file), *text;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &text, &len), AE_OK);
    free(path);
    return text;
}

static void write_text(const char *dir, const char *file, const char *text) {
    char *path = join(dir, file);
    assert_int_equal(ae_test_write_file(path, text, strlen(text)), 0);
    free(path);
}

static int same_file(const char *dir_a, const char *dir_b, const char *file) {
    char *pa = join(dir_a, file), *pb = join(dir_b, file);
    uint64_t a = file_hash(pa), b = file_hash(pb);
    free(pa);
    free(pb);
    return a != 0 && a == b;
}

// ---------------------------------------------------------------------------------------------
// the runs every test starts from

static void convert_run(const char *out, const char *target, const char *env, int want_rc) {
    const char *mla[] = {"convert", "--teacher", ae_test_src("models/qwen3-micro"), "--target", "mla",
                         "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--data", g_tokens,
                         "--ctx", "32", "--batch", "2", "--stage1-tokens", "256", "--stage2-tokens",
                         "256", "--save-every", "2", "--log-every", "1", "--out", out, NULL};
    const char *gswa[] = {"convert", "--teacher", ae_test_src("models/qwen3-micro"), "--target",
                          "gateswa", "--window", "8", "--full-every", "2", "--sinks", "--data",
                          g_tokens, "--ctx", "32", "--batch", "2", "--stage1-tokens", "64",
                          "--out", out, NULL};
    cli_result r = run_cli(strcmp(target, "mla") ? gswa : mla, env);
    if (r.rc != want_rc) fprintf(stderr, "convert %s: exit %d\n%s\n", out, r.rc, r.err);
    free(r.err);
    assert_int_equal(r.rc, want_rc);
}

static int setup(void **state) {
    (void)state;
    g_dir = ae_test_tmpdir();
    g_tokens = ae_path_join(g_dir, "train.tok");
    const char *args[] = {"prepare-data", "--model", ae_test_src("models/qwen3-micro"), "--out", g_tokens,
                          ae_test_src("data/sample.txt"), NULL};
    char *err;
    int rc = ae_test_run_cli(args, NULL, NULL, &err);
    if (rc != 0) fprintf(stderr, "prepare-data failed: %s\n", err);
    free(err);
    g_done = ae_path_join(g_dir, "done");
    g_killed = ae_path_join(g_dir, "killed");
    g_gswa = ae_path_join(g_dir, "gswa");
    return rc;
}

static int teardown(void **state) {
    (void)state;
    ae_test_rmtree(g_dir);
    free(g_dir), free(g_tokens), free(g_done), free(g_killed), free(g_gswa);
    return 0;
}

// Made on first use (each test can run alone).
static void need_runs(void) {
    if (!ae_path_exists(g_done)) convert_run(g_done, "mla", NULL, 0);
    if (!ae_path_exists(g_killed)) convert_run(g_killed, "mla", "AE_TEST_KILL_AT_STEP=3", 128 + 9);
}

// ---------------------------------------------------------------------------------------------
// 1. resuming a finished run says so, exits 0 and changes nothing

static void test_resume_finished_run(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_done, "finished");
    for (int k = 0; k < 2; k++) {
        int na, nb;
        entry *before = snapshot(run, &na);
        cli_result r = resume("--resume", run);
        entry *after = snapshot(run, &nb);
        printf("resume of a finished run: exit %d: %s", r.rc, r.err);
        assert_int_equal(r.rc, 0);
        assert_non_null(strstr(r.err, "already finished"));
        assert_null(strstr(r.err, "runtime error"));
        assert_true(same_snapshot(before, na, after, nb));
        free(r.err), free(before), free(after);
    }
    ae_test_rmtree(run);
    free(run);
}

// A run that died after its final checkpoint (stage 2 = done) but before conversion.json said
// "done": --resume finishes it (writes the model and conversion.json) without training.
static void test_resume_after_final_checkpoint(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_done, "final-ckpt");
    set_field(run, "conversion.json", "status", "\"training\"");
    set_field(run, "conversion.json", "result", NULL);
    char *model = join(run, "model.safetensors");
    assert_int_equal(remove(model), 0); // not yet rewritten: a stale one is not used either
    sh("cp '%s/model.safetensors' '%s'", g_killed, model);
    cli_result r = resume("--resume", run);
    printf("resume after the final checkpoint: exit %d: %s", r.rc, r.err);
    assert_int_equal(r.rc, 0);
    assert_null(strstr(r.err, "runtime error"));
    assert_true(same_file(run, g_done, "model.safetensors"));
    char *meta = read_text(run, "conversion.json");
    assert_non_null(strstr(meta, "\"done\""));
    assert_non_null(strstr(meta, "stage2_tokens_done"));
    free(meta), free(r.err), free(model);
    ae_test_rmtree(run);
    free(run);
}

// ---------------------------------------------------------------------------------------------
// 2. train.batch 0 and no checkpoint (was: division by zero, SIGFPE)

static void test_batch_zero_without_checkpoint(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_killed, "batch0");
    char *ck = join(run, "checkpoint");
    ae_test_rmtree(ck);
    set_field(run, "conversion.json", "train.batch", "0");
    expect_refused("--resume", run, "conversion.json: train.batch is 0", "[1, ", "train.batch 0");
    expect_refused("--restart", run, "conversion.json: train.batch is 0", NULL, "train.batch 0 (--restart)");
    free(ck);
    ae_test_rmtree(run);
    free(run);
}

// ---------------------------------------------------------------------------------------------
// 3. state.json stage 7 or -1 (was: out-of-bounds index, silently "done")

static void test_state_stage_out_of_range(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_killed, "stage7");
    char *orig = read_text(run, "checkpoint/state.json");
    const char *stages[] = {"7", "-1", "3", "1.5", "\"0\""};
    for (size_t i = 0; i < sizeof stages / sizeof *stages; i++) {
        write_text(run, "checkpoint/state.json", orig);
        set_field(run, "checkpoint/state.json", "stage", stages[i]);
        char what[64];
        snprintf(what, sizeof what, "state.json stage %s", stages[i]);
        expect_refused("--resume", run, "checkpoint/state.json: stage", NULL, what);
    }
    free(orig);
    ae_test_rmtree(run);
    free(run);
}

// ---------------------------------------------------------------------------------------------
// 4. state.json loader_rng as numbers (was: NULL into strtoull, segfault)

static void test_state_rng_numbers(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_killed, "rng-numbers");
    set_field(run, "checkpoint/state.json", "loader_rng", "[1, 2, 3, 4]");
    expect_refused("--resume", run, "checkpoint/state.json: loader_rng", "16 hex digits",
                   "state.json loader_rng numbers");
    ae_test_rmtree(run);
    free(run);
}

// ---------------------------------------------------------------------------------------------
// 5. --resume without a checkpoint refuses (was: silently restarted from step 0) and names
//    --restart, which starts the run over with the same settings

static void test_missing_checkpoint_and_restart(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_killed, "no-ckpt");
    char *sj = join(run, "checkpoint/state.json");
    assert_int_equal(remove(sj), 0);
    expect_refused("--resume", run, "no checkpoint", "--restart", "checkpoint/state.json deleted");
    char *ck = join(run, "checkpoint");
    ae_test_rmtree(ck);
    expect_refused("--resume", run, "no checkpoint", "--restart", "checkpoint/ deleted");
    // --restart takes nothing else
    const char *bad[] = {"convert", "--restart", run, "--ctx", "64", NULL};
    cli_result r = run_cli(bad, NULL);
    assert_true(r.rc > 0 && r.rc < 128 && strstr(r.err, "--restart"));
    free(r.err);
    const char *both[] = {"convert", "--restart", run, "--resume", run, NULL};
    r = run_cli(both, NULL);
    assert_true(r.rc > 0 && r.rc < 128 && strstr(r.err, "--restart"));
    free(r.err);
    // start over: same settings, same result as the uninterrupted run
    r = resume("--restart", run);
    printf("restart: exit %d: %s", r.rc, r.err);
    assert_int_equal(r.rc, 0);
    assert_true(same_file(run, g_done, "model.safetensors"));
    assert_true(same_file(run, g_done, "checkpoint/params.safetensors"));
    char *meta = read_text(run, "conversion.json");
    assert_non_null(strstr(meta, "\"done\""));
    free(meta), free(r.err);
    // the restarted run is finished: --resume says so
    r = resume("--resume", run);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.err, "already finished"));
    free(r.err), free(sj), free(ck);
    ae_test_rmtree(run);
    free(run);
}

// --restart replaces the folder: it refuses one that holds the run's own data file (which
// --resume can still use)
static void test_restart_keeps_inputs(void **state) {
    (void)state;
    need_runs();
    char *run = copy_run(g_killed, "data-inside");
    char *tok = join(run, "train.tok");
    sh("cp '%s' '%s'", g_tokens, tok);
    char value[4200];
    snprintf(value, sizeof value, "\"%s\"", tok);
    set_field(run, "conversion.json", "data", value);
    expect_refused("--restart", run, "its data file", "train.tok", "data file inside the run folder");
    cli_result r = resume("--resume", run);
    if (r.rc) printf("resume: %s\n", r.err);
    assert_int_equal(r.rc, 0);
    assert_true(same_file(run, g_done, "model.safetensors"));
    assert_true(ae_path_exists(tok));
    free(r.err), free(tok);
    ae_test_rmtree(run);
    free(run);
}

// ---------------------------------------------------------------------------------------------
// 6. every field read back from conversion.json and state.json is checked

typedef struct {
    const char *field, *value, *needle;
} edit;

static void refuse_edits(const char *src, const char *file, const edit *e, size_t n) {
    char *run = copy_run(src, "edited");
    char *orig = read_text(run, file);
    for (size_t i = 0; i < n; i++) {
        write_text(run, file, orig);
        set_field(run, file, e[i].field, e[i].value);
        char what[160], needle[160];
        snprintf(what, sizeof what, "%s %s = %.40s", file, e[i].field, e[i].value ? e[i].value : "(none)");
        if (e[i].needle && strstr(e[i].needle, ".json: ")) // names another file
            snprintf(needle, sizeof needle, "%s", e[i].needle);
        else
            snprintf(needle, sizeof needle, "%s: %s", file, e[i].needle ? e[i].needle : e[i].field);
        expect_refused("--resume", run, needle, NULL, what);
    }
    free(orig);
    ae_test_rmtree(run);
    free(run);
}

static void test_conversion_json_fields(void **state) {
    (void)state;
    need_runs();
    static const edit e[] = {
        {"train.ctx", "-5", "train.ctx is -5; must be in [2, 16777216]"},
        {"train.ctx", "\"32\"", NULL},
        {"train.ctx", NULL, NULL},
        {"train.ctx", "64", "checkpoint/state.json: ctx is 32 but conversion.json has train.ctx 64"},
        {"train.batch", "0", "train.batch is 0"},
        {"train.batch", "1e300", "train.batch is 1e+300"},
        {"train.accum", "1.5", "train.accum is 1.5"},
        {"train.stage1_tokens", "-100", "train.stage1_tokens is -100"},
        {"train.stage2_tokens", "1e300", NULL},
        {"train.stage2_tokens", "2560",
         "checkpoint/state.json: stage2_tokens is 256 but conversion.json has train.stage2_tokens 2560"},
        {"train.stage1_lr", "-1", NULL},
        {"train.stage2_lr", "11", NULL},
        {"train.warmup_frac", "2", NULL},
        {"train.min_lr_ratio", "-0.5", NULL},
        {"train.weight_decay", "100", NULL},
        {"train.clip", "-1", NULL},
        {"train.tau", "0", NULL},
        {"train.cos_weight", "1e9", NULL},
        {"train.stage1_block", "-1", NULL},
        {"train.stage1_loss", "\"l1\"", NULL},
        {"train.train", "\"some\"", NULL},
        {"train.train", "true", NULL},
        {"train.save_every", "-1", NULL},
        {"train.log_every", "1e9", NULL},
        {"train.seed", "\"12x\"", NULL},
        {"train.seed", "\"-1\"", NULL},
        {"train.seed", "\"99999999999999999999999\"", NULL},
        {"train.seed", "\"1\"", "train.seed is 1 but target.seed is 0"},
        {"train", "[]", NULL},
        {"target.kind", "\"gqa\"", NULL},
        {"target.kind", "\"gateswa\"", "target.full_every is 0; must be in [1, "}, // GateSWA needs it
        {"target.kv_lora_rank", "64", "target.kv_lora_rank is 64 but"},
        {"target.kv_lora_rank", "-3", "target.kv_lora_rank is -3"},
        {"target.q_lora_rank", "8", NULL},
        {"target.qk_rope_dim", "16", NULL},
        {"target.qk_nope_dim", "1e9", NULL},
        {"target.v_head_dim", "0", NULL},
        {"target.layers", "[0, 9]", "target.layers[1] is 9"},
        {"target.layers", "[0, 0, 1, 2, 3]", "target.layers[1] is 0"},
        {"target.layers", "[1, 2]", "target.layers"},
        {"target.layers", "\"all\"", NULL},
        {"target.layers", "[0.5, 1, 2, 3]", NULL},
        {"target.layers", "[]", NULL},
        {"target.full_every", "-1", NULL},
        {"target.window", "-2", NULL},
        {"target.full_layers", "[-1]", NULL},
        {"target.gate", "\"x\"", NULL},
        {"target.sinks", "1", NULL},
        {"target.init", "\"zeros\"", NULL},
        {"target.seed", "7", NULL},
        {"target.seed", "\"-1\"", NULL},
        {"teacher", "5", NULL},
        {"teacher", "\"\"", NULL},
        {"teacher_sha256", "\"abc\"", NULL},
        {"data", "\"\"", NULL},
        {"data_sha256", "\"ZZ\"", NULL},
        {"status", "\"paused\"", NULL},
        {"status", NULL, NULL},
        {"target", NULL, NULL},
    };
    refuse_edits(g_killed, "conversion.json", e, sizeof e / sizeof *e);
    // both budgets 0: the folder was written without training
    char *run = copy_run(g_killed, "no-budget");
    set_field(run, "conversion.json", "train.stage1_tokens", "0");
    set_field(run, "conversion.json", "train.stage2_tokens", "0");
    expect_refused("--resume", run, "conversion.json: train.stage1_tokens and train.stage2_tokens",
                   "nothing to", "both budgets 0");
    expect_refused("--restart", run, "conversion.json: train.stage1_tokens and train.stage2_tokens",
                   "nothing to", "both budgets 0 (--restart)");
    ae_test_rmtree(run);
    free(run);
    // a finished run is checked before it is reported finished
    static const edit done[] = {{"train.ctx", "-5", "train.ctx is -5"}};
    refuse_edits(g_done, "conversion.json", done, 1);
}

static void test_conversion_json_gateswa_fields(void **state) {
    (void)state;
    if (!ae_path_exists(g_gswa)) convert_run(g_gswa, "gateswa", NULL, 0);
    static const edit e[] = {
        {"target.window", "16", "target.window is 16 but"},
        {"target.window", "0", NULL},
        {"target.gate", "\"head\"", "target.gate is \"head\" but"},
        {"target.sinks", "false", "target.sinks is false but"},
        {"target.full_every", "0", NULL},
        {"target.full_every", "3", "target.full_every"},
        {"target.full_layers", "[1]", "target.full_layers"},
        {"target.full_layers", "[7]", "target.full_layers[0] is 7"},
        {"target.kv_lora_rank", "-1", NULL},
    };
    refuse_edits(g_gswa, "conversion.json", e, sizeof e / sizeof *e);
}

static void test_state_json_fields(void **state) {
    (void)state;
    need_runs();
    static const edit e[] = {
        {"version", "2", NULL},
        {"stage", NULL, NULL},
        {"step", "999999", "step is 999999; must be in [0, 4]"},
        {"step", "-1", NULL},
        {"step", "2.5", NULL},
        {"opt_step", "3", "opt_step is 3 but step is 2"},
        {"loader_draws", "\"abc\"", NULL},
        {"loader_draws", "\"-4\"", NULL},
        {"loader_draws", "\"\"", NULL},
        {"loader_draws", "\"5\"", "loader_draws is 5 but"},
        {"loader_draws", "4", NULL},
        {"loader_rng", "[\"0\", \"1\", \"2\"]", NULL},
        {"loader_rng", "[\"xyzxyzxyzxyzxyzx\", \"0000000000000001\", \"0000000000000001\", \"0000000000000001\"]", NULL},
        {"loader_rng", "[\"00000000000000001\", \"0000000000000001\", \"0000000000000001\", \"0000000000000001\"]", NULL},
        {"loader_rng", "[\"0000000000000000\", \"0000000000000000\", \"0000000000000000\", \"0000000000000000\"]", NULL},
        {"loader_rng", "{}", NULL},
        {"ctx", "64", "ctx is 64 but conversion.json has train.ctx 32"},
        {"stage1_tokens", "2560", "stage1_tokens is 2560 but conversion.json has train.stage1_tokens 256"},
        {"stage2_tokens", "\"256\"", NULL},
        {"ctx", "\"32\"", NULL},
        {"batch", "3", NULL},
        {"accum", "2", NULL},
        {"seed", "\"9\"", NULL},
        {"seed", "0", NULL},
        {"final_loss", "\"x\"", NULL},
        {"final_loss", "[1]", NULL},
        {"final_loss", "[1, \"a\"]", NULL},
    };
    refuse_edits(g_killed, "checkpoint/state.json", e, sizeof e / sizeof *e);
    // not JSON, and a checkpoint without its parameters
    char *run = copy_run(g_killed, "state-broken");
    write_text(run, "checkpoint/state.json", "{\"stage\": ");
    expect_refused("--resume", run, "checkpoint/state.json", "JSON", "state.json not JSON");
    ae_test_rmtree(run);
    free(run);
    run = copy_run(g_killed, "no-params");
    char *pp = join(run, "checkpoint/params.safetensors");
    assert_int_equal(remove(pp), 0);
    expect_refused("--resume", run, "params.safetensors", NULL, "params.safetensors deleted");
    free(pp);
    ae_test_rmtree(run);
    free(run);
    // the untouched checkpoint still resumes, to the uninterrupted run's result
    run = copy_run(g_killed, "resumed");
    cli_result r = resume("--resume", run);
    if (r.rc) printf("resume: %s\n", r.err);
    assert_int_equal(r.rc, 0);
    assert_true(same_file(run, g_done, "model.safetensors"));
    free(r.err);
    ae_test_rmtree(run);
    free(run);
}

// The run-folder fuzzer's reproducer (fuzz/crashes/fuzz_run_json): a conversion.json whose
// ctx x batch x accum overflows int64 when the steps of a stage are computed. Refused with a
// message naming the product, in the library and from the CLI (--resume).
static void test_step_tokens_overflow(void **state) {
    (void)state;
    ae_distill_opts o = {.ctx = 1677716, .batch = 16777216, .accum = 16777216,
                         .stage_tokens = {256, 256}};
    assert_int_equal(ae_distill_stage_steps(&o, 0), 0);
    char *dir = ae_test_tmpdir(), path[4096], *text = NULL;
    size_t n;
    snprintf(path, sizeof path, "%s/%s", ae_test_src("fuzz/crashes/fuzz_run_json"),
             "stage-steps-overflow.json");
    assert_int_equal(ae_file_read_all(path, &text, &n), AE_OK);
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/conversion.json", dir);
    assert_int_equal(ae_test_write_file(dst, text, n), 0);
    free(text);
    const char *args[] = {"convert", "--resume", dir, NULL};
    char *out = NULL, *err = NULL;
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc < 1 || rc > 127) fail_msg("convert --resume on the reproducer: rc %d\n%s", rc, err);
    ae_test_catalogue("run folders: conversion.json edited",
                      "`attnedit convert --resume RUN`: conversion.json train.ctx 1677716, "
                      "train.batch and "
                      "train.accum 16777216 (fuzz/crashes/fuzz_run_json/stage-steps-overflow.json)",
                      err);
    free(out);
    free(err);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_finished_run),
        cmocka_unit_test(test_resume_after_final_checkpoint),
        cmocka_unit_test(test_batch_zero_without_checkpoint),
        cmocka_unit_test(test_state_stage_out_of_range),
        cmocka_unit_test(test_state_rng_numbers),
        cmocka_unit_test(test_missing_checkpoint_and_restart),
        cmocka_unit_test(test_restart_keeps_inputs),
        cmocka_unit_test(test_conversion_json_fields),
        cmocka_unit_test(test_conversion_json_gateswa_fields),
        cmocka_unit_test(test_state_json_fields),
        cmocka_unit_test(test_step_tokens_overflow),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
