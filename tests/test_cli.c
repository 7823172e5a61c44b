// The attnedit CLI end to end: happy paths on the bundled qwen3-micro model and config-only
// fixtures, and one test per kind of bad input. A failing command must exit non-zero without a
// crash (status < 128), say on stderr which file/field/option is wrong, and print nothing on
// stdout.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/file.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"
#define LIT(s) s, sizeof(s) - 1
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

// ---------------------------------------------------------------------------------------------
// helpers

typedef struct {
    int rc;
    char *out, *err;
} cli_result;

static cli_result run_cli(const char *const *args) {
    cli_result r;
    r.rc = ae_test_run_cli(args, NULL, &r.out, &r.err);
    return r;
}

static void result_free(cli_result *r) {
    free(r->out);
    free(r->err);
}

static void dump(const char *what, const cli_result *r) {
    printf("--- %s: exit %d\n--- stdout:\n%s\n--- stderr:\n%s\n", what, r->rc, r->out, r->err);
    fflush(stdout);
}

// Runs a command that must succeed; returns its result (caller frees).
static cli_result run_ok(const char *const *args) {
    cli_result r = run_cli(args);
    if (r.rc != 0) dump(args[0], &r);
    assert_int_equal(r.rc, 0);
    return r;
}

// What the command line of the next refusal does not show, e.g. what was done to the model
// folder (the robustness catalogue; kept until changed).
static const char *g_note;

// Runs a command that must fail cleanly: exit status in [1, 127], empty stdout, and stderr
// containing every non-NULL key (e.g. the file/option named and the word saying what is wrong).
static void expect_fail(const char *const *args, const char *key1, const char *key2) {
    cli_result r = run_cli(args);
    int ok = r.rc > 0 && r.rc < 128 && r.out[0] == '\0' && strstr(r.err, "attnedit") &&
             (!key1 || strstr(r.err, key1)) && (!key2 || strstr(r.err, key2)) &&
             !strstr(r.err, "Sanitizer") && !strstr(r.err, "runtime error");
    if (ok) ae_test_catalogue_cli("commands: options, model folders, text", args, g_note, r.err);
    if (!ok) {
        dump(args[0], &r);
        printf("expected: non-zero exit < 128, empty stdout, stderr with '%s' and '%s'\n",
               key1 ? key1 : "", key2 ? key2 : "");
    }
    result_free(&r);
    assert_true(ok);
}

static char *path_in(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

static void copy_file(const char *src, const char *dst) {
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(src, &buf, &len), AE_OK);
    assert_int_equal(ae_test_write_file(dst, buf, len), 0);
    free(buf);
}

// A writable copy of the micro model in a fresh temporary folder (caller: ae_test_rmtree, free).
static char *copy_micro(void) {
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors",
                                  "tokenizer.json", "tokenizer_config.json"};
    char *dir = ae_test_tmpdir();
    assert_non_null(dir);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, MICRO "/%s", files[i]);
        char *dst = path_in(dir, files[i]);
        copy_file(ae_test_src(rel), dst);
        free(dst);
    }
    return dir;
}

static void remove_tmp(char *dir) {
    ae_test_rmtree(dir);
    free(dir);
}

// Replaces the first occurrence of `from` by `to` in dir/name (which must contain it).
static void edit_file(const char *dir, const char *name, const char *from, const char *to) {
    char *path = path_in(dir, name), *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &buf, &len), AE_OK);
    char *hit = strstr(buf, from);
    assert_non_null(hit);
    size_t pre = (size_t)(hit - buf), fl = strlen(from), tl = strlen(to);
    char *nb = malloc(len - fl + tl + 1);
    memcpy(nb, buf, pre);
    memcpy(nb + pre, to, tl);
    memcpy(nb + pre + tl, hit + fl, len - pre - fl);
    assert_int_equal(ae_test_write_file(path, nb, len - fl + tl), 0);
    free(nb);
    free(buf);
    free(path);
}

static void write_text(const char *dir, const char *name, const char *text, size_t len) {
    char *path = path_in(dir, name);
    assert_int_equal(ae_test_write_file(path, text, len), 0);
    free(path);
}

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

// Rewrites a safetensors file with consistent offsets: drops tensor `drop` (may be NULL) and
// gives tensor `retype` (may be NULL) the dtype `dtype`, its data replaced by zeros of the
// matching size, so that the file stays valid and only the model loader can object.
static void st_rewrite(const char *path, const char *drop, const char *retype, const char *dtype) {
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &buf, &len), AE_OK);
    const unsigned char *u = (const unsigned char *)buf;
    uint64_t hl = load_le64(u);
    assert_true(hl + 8 <= len);
    const unsigned char *data = u + 8 + hl;
    cJSON *h = cJSON_ParseWithLength(buf + 8, (size_t)hl);
    assert_non_null(h);
    unsigned char *nd = calloc(1, len * 2);
    size_t off = 0;
    int dropped = 0, retyped = 0;
    cJSON *e = h->child;
    while (e) {
        cJSON *next = e->next;
        if (strcmp(e->string, "__metadata__") == 0) {
            e = next;
            continue;
        }
        if (drop && strcmp(e->string, drop) == 0) {
            cJSON_DeleteItemFromObjectCaseSensitive(h, drop);
            dropped = 1;
            e = next;
            continue;
        }
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        size_t b = (size_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
        size_t n = (size_t)cJSON_GetArrayItem(offs, 1)->valuedouble - b;
        if (retype && strcmp(e->string, retype) == 0) {
            ae_dtype dt;
            assert_int_equal(ae_dtype_from_name(dtype, &dt), 0);
            size_t numel = 1;
            cJSON *d;
            cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(e, "shape")) {
                numel *= (size_t)d->valuedouble;
            }
            n = numel * ae_dtype_size(dt); // zeros (calloc)
            cJSON_ReplaceItemInObjectCaseSensitive(e, "dtype", cJSON_CreateString(dtype));
            retyped = 1;
        } else {
            memcpy(nd + off, data + b, n);
        }
        cJSON_ReplaceItemInObjectCaseSensitive(
            e, "data_offsets",
            cJSON_CreateIntArray((const int[]){(int)off, (int)(off + n)}, 2));
        off += n;
        assert_true(off <= len * 2);
        e = next;
    }
    assert_true(!drop || dropped);
    assert_true(!retype || retyped);
    char *hs = cJSON_PrintUnformatted(h);
    size_t hn = strlen(hs), padded = (hn + 7) / 8 * 8;
    size_t total = 8 + padded + off;
    unsigned char *o = malloc(total);
    for (int i = 0; i < 8; i++) o[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(o + 8, hs, hn);
    memset(o + 8 + hn, ' ', padded - hn);
    memcpy(o + 8 + padded, nd, off);
    assert_int_equal(ae_test_write_file(path, o, total), 0);
    free(o);
    free(hs);
    free(nd);
    cJSON_Delete(h);
    free(buf);
}

static cJSON *parse_json_line(const char *out) {
    cJSON *o = cJSON_Parse(out);
    if (!o) printf("not JSON: %s\n", out);
    assert_non_null(o);
    return o;
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) printf("missing number '%s'\n", key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

// Count of ids in a line of the form "12 34 5\n" (single spaces, no leading/trailing space).
static int count_ids(const char *s) {
    int n = 0;
    const char *p = s;
    for (;;) {
        if (*p < '0' || *p > '9') return -1;
        while (*p >= '0' && *p <= '9') p++;
        n++;
        if (*p == '\n' && p[1] == '\0') return n;
        if (*p != ' ') return -1;
        p++;
    }
}

// ---------------------------------------------------------------------------------------------
// (a) happy paths

// params must lie in [params_lo, params_hi].
static void check_inspect_json(const char *model, const char *arch, double params_lo,
                               double params_hi, int layers, double per_tok) {
    cli_result r = run_ok(ARGS("inspect", model, "--json"));
    cJSON *o = parse_json_line(r.out);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "architecture");
    assert_true(cJSON_IsString(a));
    assert_string_equal(a->valuestring, arch);
    double params = json_num(o, "params");
    if (!(params >= params_lo && params <= params_hi)) printf("params %.0f\n", params);
    assert_true(params >= params_lo && params <= params_hi);
    assert_int_equal((int)json_num(o, "layers"), layers);
    assert_true(json_num(o, "kv_bytes_per_token") == per_tok);
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(o, "kv_bytes");
    assert_true(cJSON_IsObject(kv));
    static const char *keys[] = {"4096", "32768", "131072"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(kv, keys[i]);
        assert_true(cJSON_IsNumber(v));
        assert_true(v->valuedouble == per_tok * atof(keys[i]));
    }
    cJSON_Delete(o);
    result_free(&r);
}

static void test_inspect_micro(void **state) {
    (void)state;
    const char *model = ae_test_src(MICRO);
    check_inspect_json(model, "Qwen3ForCausalLM", 1836416, 1836416, 4, 1024);
    cli_result r = run_ok(ARGS("inspect", model));
    assert_non_null(strstr(r.out, "Qwen3ForCausalLM"));
    assert_non_null(strstr(r.out, "1836416"));
    assert_non_null(strstr(r.out, "1024 bytes/token"));
    assert_string_equal(r.err, "");
    result_free(&r);
}

static void test_inspect_config_only(void **state) {
    (void)state;
    char p8[4096], p30[4096];
    snprintf(p8, sizeof p8, "%s", ae_test_src("tests/fixtures/configs/qwen3-8b"));
    snprintf(p30, sizeof p30, "%s", ae_test_src("tests/fixtures/configs/qwen3-30b-a3b"));
    check_inspect_json(p8, "Qwen3ForCausalLM", 8.0e9, 8.3e9, 36, 147456);
    check_inspect_json(p30, "Qwen3MoeForCausalLM", 30.0e9, 31.0e9, 48, 98304);
    cli_result r = run_ok(ARGS("inspect", p8));
    assert_non_null(strstr(r.out, "147456 bytes/token"));
    char want[64];
    snprintf(want, sizeof want, "%lld bytes", 147456LL * 32768);
    assert_non_null(strstr(r.out, want));
    result_free(&r);
}

static void test_tokenize_roundtrip(void **state) {
    (void)state;
    const char *model = ae_test_src(MICRO);
    const char *text = "The Time Traveller (for so it will be convenient to speak of him) was "
                       "expounding a recondite matter to us.";
    cli_result r = run_ok(ARGS("tokenize", "--model", model, "--text", text));
    int n = count_ids(r.out);
    if (n < 0) dump("tokenize", &r);
    assert_true(n > 5);
    char ids[4096];
    snprintf(ids, sizeof ids, "%s", r.out);
    result_free(&r);
    cli_result d = run_ok(ARGS("tokenize", "--model", model, "--text", ids, "--decode"));
    char want[4096];
    snprintf(want, sizeof want, "%s\n", text);
    assert_string_equal(d.out, want);
    result_free(&d);

    // the same through --file
    char *dir = ae_test_tmpdir();
    write_text(dir, "t.txt", text, strlen(text));
    char *f = path_in(dir, "t.txt");
    cli_result r2 = run_ok(ARGS("tokenize", "--model", model, "--file", f));
    assert_string_equal(r2.out, ids);
    result_free(&r2);
    write_text(dir, "ids.txt", ids, strlen(ids));
    char *fi = path_in(dir, "ids.txt");
    cli_result d2 = run_ok(ARGS("tokenize", "--model", model, "--file", fi, "--decode"));
    assert_string_equal(d2.out, want);
    result_free(&d2);
    free(f);
    free(fi);
    remove_tmp(dir);
}

static void test_generate_greedy(void **state) {
    (void)state;
    const char *model = ae_test_src(MICRO);
    cli_result r = run_ok(ARGS("generate", "--model", model, "--prompt", "The Time Traveller",
                               "--greedy", "--print-ids", "--max-new-tokens", "8"));
    int n = count_ids(r.out);
    if (n != 8) dump("generate", &r);
    assert_int_equal(n, 8);
    assert_non_null(strstr(r.err, "tok/s"));
    // greedy is deterministic and the default
    cli_result r2 = run_ok(ARGS("generate", "--model", model, "--prompt", "The Time Traveller",
                                "--print-ids", "--max-new-tokens", "8"));
    assert_string_equal(r.out, r2.out);
    result_free(&r2);
    // text mode prints the decoded ids
    cli_result t = run_ok(ARGS("generate", "--model", model, "--prompt", "The Time Traveller",
                               "--greedy", "--max-new-tokens", "8"));
    char ids[1024];
    snprintf(ids, sizeof ids, "%s", r.out);
    ids[strcspn(ids, "\n")] = '\0';
    cli_result d = run_ok(ARGS("tokenize", "--model", model, "--text", ids, "--decode"));
    assert_string_equal(t.out, d.out);
    result_free(&d);
    result_free(&t);
    result_free(&r);
}

static char *sample(const char *seed) {
    cli_result r = run_ok(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids",
                               "8189 785 882", "--temperature", "0.8", "--top-k", "40", "--top-p",
                               "0.9", "--seed", seed, "--print-ids", "--max-new-tokens", "16",
                               "--ignore-eos"));
    assert_int_equal(count_ids(r.out), 16);
    free(r.err);
    return r.out;
}

static void test_generate_sampling_seeded(void **state) {
    (void)state;
    char *a = sample("7"), *b = sample("7");
    assert_string_equal(a, b);
    int differs = 0;
    const char *seeds[] = {"8", "9", "12345"};
    for (int i = 0; i < 3 && !differs; i++) {
        char *c = sample(seeds[i]);
        differs = strcmp(a, c) != 0;
        free(c);
    }
    assert_true(differs);
    free(a);
    free(b);
}

static void test_eval_ppl(void **state) {
    (void)state;
    cli_result r = run_ok(ARGS("eval", "ppl", "--model", ae_test_src(MICRO), "--file",
                               ae_test_src("data/sample.txt"), "--ctx", "64", "--json"));
    cJSON *o = parse_json_line(r.out);
    assert_int_equal((int)json_num(o, "tokens"), 1708);
    double nll = json_num(o, "mean_nll");
    if (fabs(nll - 4.190657) >= 1e-4) printf("mean_nll %.7f, reference 4.190657\n", nll);
    assert_true(fabs(nll - 4.190657) < 1e-4);
    assert_true(fabs(json_num(o, "ppl") - exp(nll)) < 1e-6 * exp(nll));
    cJSON_Delete(o);
    result_free(&r);
}

// ---------------------------------------------------------------------------------------------
// (b) bad input: one test per case

static void test_bad_missing_model_dir(void **state) {
    (void)state;
    g_note = NULL;
    char *dir = ae_test_tmpdir();
    char *nope = path_in(dir, "no-such-model");
    expect_fail(ARGS("inspect", nope), "no-such-model", "not exist");
    expect_fail(ARGS("generate", "--model", nope, "--prompt", "hi"), "no-such-model", "not exist");
    expect_fail(ARGS("tokenize", "--model", nope, "--text", "hi"), "no-such-model", "not exist");
    expect_fail(ARGS("eval", "ppl", "--model", nope, "--file", ae_test_src("data/sample.txt")),
                "no-such-model", "not exist");
    free(nope);
    remove_tmp(dir);
}

static void test_bad_no_config(void **state) {
    (void)state;
    g_note = "config.json removed";
    char *dir = copy_micro();
    char *cfg = path_in(dir, "config.json");
    assert_int_equal(remove(cfg), 0);
    expect_fail(ARGS("inspect", dir), "config.json", NULL);
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "config.json", NULL);
    free(cfg);
    remove_tmp(dir);
}

static void test_bad_config_malformed(void **state) {
    (void)state;
    g_note = "config.json with `\"head_dim\": 32,,`";
    char *dir = copy_micro();
    edit_file(dir, "config.json", "\"head_dim\": 32,", "\"head_dim\": 32,,");
    expect_fail(ARGS("inspect", dir), "config.json", "JSON");
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "config.json", "JSON");
    remove_tmp(dir);
}

static void test_bad_config_architecture(void **state) {
    (void)state;
    g_note = "config.json says LlamaForCausalLM, llama";
    char *dir = copy_micro();
    edit_file(dir, "config.json", "Qwen3ForCausalLM", "LlamaForCausalLM");
    edit_file(dir, "config.json", "\"qwen3\"", "\"llama\"");
    expect_fail(ARGS("inspect", dir), "config.json", "LlamaForCausalLM");
    expect_fail(ARGS("eval", "ppl", "--model", dir, "--file", ae_test_src("data/sample.txt")),
                "config.json", "LlamaForCausalLM");
    remove_tmp(dir);
}

static void test_bad_config_rope_yarn(void **state) {
    (void)state;
    g_note = "config.json with a yarn rope_scaling";
    char *dir = copy_micro();
    edit_file(dir, "config.json", "{",
              "{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0, "
              "\"original_max_position_embeddings\": 32768},");
    expect_fail(ARGS("inspect", dir), "rope_scaling", "yarn");
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "rope_scaling", "yarn");
    remove_tmp(dir);
}

static void test_bad_safetensors_truncated(void **state) {
    (void)state;
    g_note = "model.safetensors cut to half its size";
    char *dir = copy_micro();
    char *st = path_in(dir, "model.safetensors"), *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(st, &buf, &len), AE_OK);
    assert_int_equal(ae_test_write_file(st, buf, len / 2), 0);
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "model.safetensors", NULL);
    expect_fail(ARGS("eval", "ppl", "--model", dir, "--file", ae_test_src("data/sample.txt")),
                "model.safetensors", NULL);
    // cut inside the header
    assert_int_equal(ae_test_write_file(st, buf, 100), 0);
    g_note = "model.safetensors cut to 100 bytes";
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "model.safetensors",
                "truncated");
    // shorter than the length prefix
    assert_int_equal(ae_test_write_file(st, buf, 5), 0);
    g_note = "model.safetensors cut to 5 bytes";
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "model.safetensors", "small");
    free(buf);
    free(st);
    remove_tmp(dir);
}

static void test_bad_safetensors_header(void **state) {
    (void)state;
    g_note = "model.safetensors header `{!model...`";
    char *dir = copy_micro();
    char *st = path_in(dir, "model.safetensors"), *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(st, &buf, &len), AE_OK);
    buf[9] = '!'; // {"model... -> {!model...
    assert_int_equal(ae_test_write_file(st, buf, len), 0);
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "model.safetensors", "header");
    buf[9] = '"';
    memset(buf, 0xff, 8); // absurd header length
    g_note = "model.safetensors header length 2^64 - 1";
    assert_int_equal(ae_test_write_file(st, buf, len), 0);
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "model.safetensors", "header");
    free(buf);
    free(st);
    remove_tmp(dir);
}

static void test_bad_shape_vs_config(void **state) {
    (void)state;
    g_note = "config.json intermediate_size 384 -> 320";
    char *dir = copy_micro();
    edit_file(dir, "config.json", "\"intermediate_size\": 384", "\"intermediate_size\": 320");
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"), "mlp.gate_proj", "shape");
    edit_file(dir, "config.json", "\"intermediate_size\": 320", "\"intermediate_size\": 384");
    edit_file(dir, "config.json", "\"hidden_size\": 128", "\"hidden_size\": 256");
    g_note = "config.json hidden_size 128 -> 256";
    expect_fail(ARGS("eval", "ppl", "--model", dir, "--file", ae_test_src("data/sample.txt")),
                "embed_tokens", "shape");
    remove_tmp(dir);
}

static void test_bad_weight_dtype(void **state) {
    (void)state;
    g_note = "model.layers.1.self_attn.k_norm.weight stored as I32";
    char *dir = copy_micro();
    char *st = path_in(dir, "model.safetensors");
    st_rewrite(st, NULL, "model.layers.1.self_attn.k_norm.weight", "I32");
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"),
                "model.layers.1.self_attn.k_norm.weight", "I32");
    free(st);
    remove_tmp(dir);
}

static void test_bad_missing_tensor(void **state) {
    (void)state;
    g_note = "model.layers.2.mlp.up_proj.weight removed";
    char *dir = copy_micro();
    char *st = path_in(dir, "model.safetensors");
    st_rewrite(st, "model.layers.2.mlp.up_proj.weight", NULL, NULL);
    expect_fail(ARGS("generate", "--model", dir, "--prompt", "hi"),
                "model.layers.2.mlp.up_proj.weight", "missing");
    free(st);
    remove_tmp(dir);
}

static void test_bad_tokenize_non_utf8(void **state) {
    (void)state;
    g_note = "bad.txt holds the bytes ff fe";
    char *dir = ae_test_tmpdir();
    write_text(dir, "bad.txt", LIT("hello \xff\xfe world\n"));
    char *f = path_in(dir, "bad.txt");
    expect_fail(ARGS("tokenize", "--model", ae_test_src(MICRO), "--file", f), "bad.txt", "UTF-8");
    g_note = NULL;
    expect_fail(ARGS("tokenize", "--model", ae_test_src(MICRO), "--text", "caf\xc3"), "--text",
                "UTF-8");
    free(f);
    remove_tmp(dir);
}

static void test_bad_eval_non_utf8(void **state) {
    (void)state;
    g_note = "bad.txt holds the overlong c0 af after a valid document";
    char *dir = ae_test_tmpdir();
    // a valid document first: the bad byte (an overlong '/') must still be reported, and before
    // any scoring
    write_text(dir, "bad.txt",
               LIT("The Time Traveller smiled.<|endoftext|>Then \xc0\xaf he said.\n"));
    char *f = path_in(dir, "bad.txt");
    expect_fail(ARGS("eval", "ppl", "--model", ae_test_src(MICRO), "--file", f, "--json"),
                "bad.txt", "UTF-8");
    expect_fail(ARGS("eval", "ppl", "--model", ae_test_src(MICRO), "--file", f), "bad.txt",
                "UTF-8");
    free(f);
    remove_tmp(dir);
}

static void test_bad_empty_prompt(void **state) {
    (void)state;
    g_note = NULL;
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", ""), "prompt", "empty");
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids", " "), "prompt",
                "empty");
}

static void test_bad_prompt_ids_range(void **state) {
    (void)state;
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids", "1 2 8192"),
                "--prompt-ids", "8192");
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids", "-1"),
                "--prompt-ids", "range");
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids",
                     "99999999999999999999"),
                "--prompt-ids", NULL);
}

static void test_bad_prompt_ids_garbage(void **state) {
    (void)state;
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids", "1 2 x3"),
                "--prompt-ids", "x3");
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids", "12abc"),
                "--prompt-ids", "12abc");
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt-ids", "1.5"),
                "--prompt-ids", NULL);
}

static void test_bad_max_new_tokens(void **state) {
    (void)state;
    static const char *vals[] = {"0", "-5", "abc", "1e9", "", "7x", "99999999999999999999"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi",
                         "--max-new-tokens", vals[i]),
                    "--max-new-tokens", vals[i]);
    // valid but beyond the context the model supports
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi",
                     "--max-new-tokens", "40000"),
                "--max-new-tokens", "max_position_embeddings");
    // missing value
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi",
                     "--max-new-tokens"),
                "--max-new-tokens", "value");
}

static void test_bad_temperature(void **state) {
    (void)state;
    static const char *vals[] = {"-1", "0", "nan", "inf", "hot"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi",
                         "--temperature", vals[i]),
                    "--temperature", NULL);
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi", "--greedy",
                     "--temperature", "0.8"),
                "--greedy", "--temperature");
}

static void test_bad_top_p(void **state) {
    (void)state;
    static const char *vals[] = {"1.5", "0", "-0.2"};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi",
                         "--temperature", "0.8", "--top-p", vals[i]),
                    "--top-p", vals[i]);
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi", "--top-k", "-3"),
                "--top-k", "-3");
    expect_fail(ARGS("generate", "--model", ae_test_src(MICRO), "--prompt", "hi", "--seed", "-3"),
                "--seed", "-3");
}

static void test_bad_unknown_option(void **state) {
    (void)state;
    const char *m = ae_test_src(MICRO);
    expect_fail(ARGS("generate", "--model", m, "--prompt", "hi", "--bogus"), "--bogus", "unknown");
    expect_fail(ARGS("tokenize", "--model", m, "--text", "hi", "--bogus"), "--bogus", "unknown");
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", "x", "--bogus"), "--bogus", "unknown");
    expect_fail(ARGS("inspect", m, "--bogus"), "--bogus", "unknown");
    expect_fail(ARGS("inspect", m, m), m, "unknown");
    expect_fail(ARGS("frobnicate"), "frobnicate", "unknown");
    expect_fail(ARGS("eval", "bleu"), "bleu", "unknown");
}

static void test_bad_missing_required(void **state) {
    (void)state;
    const char *m = ae_test_src(MICRO);
    expect_fail(ARGS("generate", "--prompt", "hi"), "--model", NULL);
    expect_fail(ARGS("generate", "--model", m), "--prompt", NULL);
    expect_fail(ARGS("generate", "--model", m, "--prompt", "a", "--prompt-ids", "1"), "--prompt",
                "exactly one");
    expect_fail(ARGS("tokenize", "--model", m), "--text", NULL);
    expect_fail(ARGS("tokenize", "--text", "hi"), "--model", NULL);
    expect_fail(ARGS("eval", "ppl", "--model", m), "--file", NULL);
    expect_fail(ARGS("eval", "ppl", "--file", "x"), "--model", NULL);
    expect_fail(ARGS("inspect", "--json"), "MODEL", NULL);
    expect_fail(ARGS("tokenize", "--model"), "--model", "value");
    expect_fail(ARGS("eval"), "ppl", NULL);
}

static void test_bad_eval_ctx(void **state) {
    (void)state;
    const char *m = ae_test_src(MICRO), *f = ae_test_src("data/sample.txt");
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", f, "--ctx", "40000"), "--ctx",
                "max_position_embeddings");
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", f, "--ctx", "1"), "--ctx", NULL);
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", f, "--ctx", "abc"), "--ctx", "abc");
}

static void test_bad_eval_file(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *nope = path_in(dir, "missing.txt");
    expect_fail(ARGS("eval", "ppl", "--model", ae_test_src(MICRO), "--file", nope), "missing.txt",
                NULL);
    expect_fail(ARGS("tokenize", "--model", ae_test_src(MICRO), "--file", nope), "missing.txt",
                NULL);
    write_text(dir, "empty.txt", "", 0);
    g_note = "empty.txt is empty";
    char *empty = path_in(dir, "empty.txt");
    expect_fail(ARGS("eval", "ppl", "--model", ae_test_src(MICRO), "--file", empty, "--json"),
                "empty.txt", "nothing to score");
    g_note = NULL;
    free(empty);
    free(nope);
    remove_tmp(dir);
}

static void test_bad_decode_range(void **state) {
    (void)state;
    g_note = NULL;
    const char *m = ae_test_src(MICRO);
    expect_fail(ARGS("tokenize", "--model", m, "--text", "1 2 999999", "--decode"), "999999",
                "range");
    expect_fail(ARGS("tokenize", "--model", m, "--text", "1 two", "--decode"), "two", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inspect_micro),
        cmocka_unit_test(test_inspect_config_only),
        cmocka_unit_test(test_tokenize_roundtrip),
        cmocka_unit_test(test_generate_greedy),
        cmocka_unit_test(test_generate_sampling_seeded),
        cmocka_unit_test(test_eval_ppl),
        cmocka_unit_test(test_bad_missing_model_dir),
        cmocka_unit_test(test_bad_no_config),
        cmocka_unit_test(test_bad_config_malformed),
        cmocka_unit_test(test_bad_config_architecture),
        cmocka_unit_test(test_bad_config_rope_yarn),
        cmocka_unit_test(test_bad_safetensors_truncated),
        cmocka_unit_test(test_bad_safetensors_header),
        cmocka_unit_test(test_bad_shape_vs_config),
        cmocka_unit_test(test_bad_weight_dtype),
        cmocka_unit_test(test_bad_missing_tensor),
        cmocka_unit_test(test_bad_tokenize_non_utf8),
        cmocka_unit_test(test_bad_eval_non_utf8),
        cmocka_unit_test(test_bad_empty_prompt),
        cmocka_unit_test(test_bad_prompt_ids_range),
        cmocka_unit_test(test_bad_prompt_ids_garbage),
        cmocka_unit_test(test_bad_max_new_tokens),
        cmocka_unit_test(test_bad_temperature),
        cmocka_unit_test(test_bad_top_p),
        cmocka_unit_test(test_bad_unknown_option),
        cmocka_unit_test(test_bad_missing_required),
        cmocka_unit_test(test_bad_eval_ctx),
        cmocka_unit_test(test_bad_eval_file),
        cmocka_unit_test(test_bad_decode_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
