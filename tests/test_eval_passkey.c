// attnedit eval passkey: prompt construction (length, depth, determinism), the exact-match rule,
// scoring on models/qwen3-micro and on a GateSWA student of it (sliding-window rings that wrap)
// against a token-by-token reference, the CLI's table / JSON / PNG, bad input refused with one
// message and no file, and a run on ../shared/teachers/qwen3-small (skipped when absent).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "eval/passkey.h"
#include "tok/tokenizer.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"

static ae_tokenizer *g_tok;
static char *g_tmp;
static char g_student[1024]; // GateSWA student of micro (window 64), made by attnedit convert

static char *tmp_path(const char *rel) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, rel);
    return buf[k];
}

// ---- prompts

static void test_prompt_lengths_and_depth(void **state) {
    (void)state;
    static const int lengths[] = {80, 100, 128, 256, 300, 512, 1000, 1024, 2048, 4096};
    static const double depths[] = {0, 0.1, 0.25, 0.5, 0.75, 0.9, 1};
    for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
        int prev_pos = -1;
        for (size_t di = 0; di < sizeof depths / sizeof *depths; di++) {
            int L = lengths[li];
            double d = depths[di];
            ae_passkey_prompt p;
            assert_int_equal(ae_passkey_build(g_tok, L, d, "71432", &p), AE_OK);
            // prompt + answer fill the length to within 2 tokens, never over it
            if (p.n + p.n_answer > L || p.n + p.n_answer < L - 2)
                fail_msg("length %d depth %g: %d prompt + %d answer tokens", L, d, p.n, p.n_answer);
            // the tokens are the text's; the answer is " 71432" as it follows the prompt
            int32_t *ids;
            size_t n;
            assert_int_equal(ae_tokenizer_encode(g_tok, p.text, strlen(p.text), &ids, &n), AE_OK);
            assert_int_equal((int)n, p.n);
            assert_memory_equal(ids, p.ids, n * sizeof(int32_t));
            free(ids);
            char *ans;
            size_t al;
            assert_int_equal(ae_tokenizer_decode(g_tok, p.answer, (size_t)p.n_answer, &ans, &al), AE_OK);
            assert_string_equal(ans, " 71432");
            free(ans);
            size_t tl = strlen(p.text);
            assert_true(tl > 15 && !strcmp(p.text + tl - 15, "The pass key is"));
            const char *ks = strstr(p.text, "The pass key is 71432. Remember it. 71432 is the pass key.");
            assert_non_null(ks);
            assert_null(strstr(ks + 58, "71432")); // nowhere else
            assert_true(strstr(p.text, "71432") == ks + 16);
            // the key sentence starts at token key_pos
            int32_t *pre;
            size_t np;
            assert_int_equal(ae_tokenizer_encode(g_tok, p.text, (size_t)(ks - p.text), &pre, &np), AE_OK);
            free(pre);
            assert_true(abs((int)np - p.key_pos) <= 1);
            // at the requested depth of the filler, within half a filler sentence (<= 5 tokens)
            double want = d * p.filler_tokens;
            if (fabs(p.filler_before - want) > 5 + 1)
                fail_msg("length %d depth %g: key after %d of %d filler tokens (want %.1f)", L, d,
                         p.filler_before, p.filler_tokens, want);
            assert_true(p.key_pos >= prev_pos); // deeper is later (or the same sentence)
            if (L >= 512 && di > 0) assert_true(p.key_pos > prev_pos + 10);
            prev_pos = p.key_pos;
            if (d == 0) assert_true(ks[-1] == '\n' && strchr(p.text, '\n') == ks - 1); // right after the task line
            if (d == 1) assert_true(!strncmp(ks + 58, "\nWhat is the pass key?", 22)); // right before the question
            ae_passkey_prompt_free(&p);
        }
    }
}

static void test_keys_and_sets_deterministic(void **state) {
    (void)state;
    char a[40], b[40], c[40];
    for (int digits = 1; digits <= AE_PASSKEY_MAX_DIGITS; digits += 7) {
        ae_passkey_make_key(7, 1024, 0.5, 3, digits, a);
        assert_int_equal((int)strlen(a), digits);
        assert_true(a[0] >= '1' && a[0] <= '9');
        assert_int_equal((int)strspn(a, "0123456789"), digits);
    }
    ae_passkey_make_key(7, 1024, 0.5, 3, 5, a);
    ae_passkey_make_key(7, 1024, 0.5, 3, 5, b);
    assert_string_equal(a, b);
    int differ_seed = 0, differ_trial = 0;
    for (int t = 0; t < 20; t++) {
        ae_passkey_make_key(7, 1024, 0.5, t, 8, a);
        ae_passkey_make_key(8, 1024, 0.5, t, 8, b);
        ae_passkey_make_key(7, 1024, 0.5, t + 1, 8, c);
        differ_seed += strcmp(a, b) != 0;
        differ_trial += strcmp(a, c) != 0;
    }
    assert_true(differ_seed >= 19 && differ_trial >= 19);
    // whole sets: the same seed gives the same prompts, another seed other keys
    int lengths[] = {128, 256};
    double depths[] = {0, 0.5, 1};
    ae_passkey_set s1, s2, s3;
    assert_int_equal(ae_passkey_set_build(&s1, g_tok, lengths, 2, depths, 3, 3, 5, 42), AE_OK);
    assert_int_equal(ae_passkey_set_build(&s2, g_tok, lengths, 2, depths, 3, 3, 5, 42), AE_OK);
    assert_int_equal(ae_passkey_set_build(&s3, g_tok, lengths, 2, depths, 3, 3, 5, 43), AE_OK);
    int same_other = 0;
    for (int i = 0; i < 18; i++) {
        assert_string_equal(s1.prompts[i].text, s2.prompts[i].text);
        assert_int_equal(s1.prompts[i].n, s2.prompts[i].n);
        same_other += !strcmp(s1.prompts[i].text, s3.prompts[i].text);
        assert_int_equal(s1.prompts[i].n, s3.prompts[i].n); // keys differ, lengths do not
    }
    assert_true(same_other <= 1);
    // a cell's keys do not depend on the other cells of the run
    int one[] = {256};
    ae_passkey_set s4;
    assert_int_equal(ae_passkey_set_build(&s4, g_tok, one, 1, depths + 2, 1, 3, 5, 42), AE_OK);
    for (int t = 0; t < 3; t++)
        assert_string_equal(s4.prompts[t].key, s1.prompts[ae_passkey_index(&s1, 1, 2, t)].key);
    ae_passkey_set_free(&s1);
    ae_passkey_set_free(&s2);
    ae_passkey_set_free(&s3);
    ae_passkey_set_free(&s4);
}

static void test_build_refusals(void **state) {
    (void)state;
    ae_passkey_prompt p;
    assert_int_equal(ae_passkey_build(g_tok, 20, 0.5, "71432", &p), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "20 tokens cannot hold the pass-key prompt"));
    assert_null(p.text);
    assert_int_equal(ae_passkey_build(g_tok, 512, 1.5, "71432", &p), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "depth 1.5 is outside [0, 1]"));
    assert_int_equal(ae_passkey_build(g_tok, 512, NAN, "71432", &p), AE_ERR_ARG);
    assert_int_equal(ae_passkey_build(g_tok, 512, 0.5, "71a32", &p), AE_ERR_ARG);
    assert_int_equal(ae_passkey_build(g_tok, 512, 0.5, "", &p), AE_ERR_ARG);
}

static void test_match(void **state) {
    (void)state;
    assert_true(ae_passkey_match("71432", " 71432"));
    assert_true(ae_passkey_match("71432", "71432"));
    assert_true(ae_passkey_match("71432", " 71432."));
    assert_true(ae_passkey_match("71432", "\n 71432 is the key"));
    assert_false(ae_passkey_match("71432", " 7143"));      // short
    assert_false(ae_passkey_match("71432", " 714321"));    // longer number
    assert_false(ae_passkey_match("71432", " 71433"));     // one digit off
    assert_false(ae_passkey_match("71432", " 17432"));
    assert_false(ae_passkey_match("71432", "key 71432")); // not first
    assert_false(ae_passkey_match("71432", " 7 1432"));
    assert_false(ae_passkey_match("71432", ""));
    assert_false(ae_passkey_match("71432", NULL));
    assert_false(ae_passkey_match("", " 71432"));
}

// ---- scoring against a token-by-token reference

// Reference of one prompt, one token at a time from an empty cache (the decode path): mean
// log-likelihood of the answer (double log-softmax) and the greedy continuation's text.
static void reference(const ae_model *m, const ae_passkey_prompt *p, double *ll, char **pred) {
    int V = m->cfg.vocab_size, n = p->n, k = p->n_answer;
    float *z = malloc(sizeof(float) * (size_t)V);
    int32_t *g = malloc(sizeof(int32_t) * (size_t)k);
    ae_kv_cache c;
    assert_int_equal(ae_kv_cache_init(&c, m, n + k), AE_OK);
    double s = 0;
    for (int i = 0; i < n + k - 1; i++) {
        int32_t id = i < n ? p->ids[i] : p->answer[i - n];
        assert_int_equal(ae_model_forward(m, &c, &id, 1, ae_host_f32(z), 0), AE_OK);
        if (i < n - 1) continue;
        s += z[p->answer[i - n + 1]] - ae_test_logsumexp(z, V, 1.0f, NULL);
    }
    *ll = s / k;
    ae_kv_cache_reset(&c);
    for (int i = 0; i < n; i++) assert_int_equal(ae_model_forward(m, &c, &p->ids[i], 1, ae_host_f32(z), 0), AE_OK);
    int eos = ae_tokenizer_eos_id(g_tok), ng = 0;
    while (ng < k) {
        int best = 0;
        for (int j = 1; j < V; j++)
            if (z[j] > z[best]) best = j;
        g[ng++] = best;
        if (best == eos || ng == k) break;
        assert_int_equal(ae_model_forward(m, &c, &g[ng - 1], 1, ae_host_f32(z), 0), AE_OK);
    }
    size_t len;
    assert_int_equal(ae_tokenizer_decode(g_tok, g, (size_t)ng, pred, &len), AE_OK);
    ae_kv_cache_free(&c);
    free(g);
    free(z);
}

static void check_run_against_reference(const char *dir, int lengths[], int nl) {
    ae_model *m;
    assert_int_equal(ae_model_load(dir, ae_backend_cpu(), &m), AE_OK);
    double depths[] = {0, 1};
    ae_passkey_set s;
    assert_int_equal(ae_passkey_set_build(&s, g_tok, lengths, nl, depths, 2, 2, 5, 3), AE_OK);
    int total = nl * 2 * 2;
    ae_passkey_score *sc = calloc((size_t)total, sizeof *sc);
    assert_int_equal(ae_passkey_run(m, g_tok, 0, &s, NULL, NULL, sc), AE_OK);
    for (int i = 0; i < total; i++) {
        const ae_passkey_prompt *p = &s.prompts[i];
        double ll;
        char *pred;
        reference(m, p, &ll, &pred);
        if (fabs(ll - sc[i].loglik) > 2e-3 || strcmp(pred, sc[i].pred) != 0)
            fail_msg("%s, length %d depth %g: loglik %.5f pred '%s', reference %.5f '%s'", dir, p->length,
                     p->depth, sc[i].loglik, sc[i].pred, ll, pred);
        assert_true(sc[i].loglik < 0 && sc[i].loglik > -30);
        assert_int_equal(sc[i].correct, ae_passkey_match(p->key, sc[i].pred));
        assert_int_equal(sc[i].n, p->n);
        free(pred);
    }
    for (int li = 0; li < nl; li++)
        for (int di = 0; di < 2; di++) {
            double acc, ll;
            ae_passkey_cell(&s, sc, li, di, &acc, &ll);
            assert_true(acc >= 0 && acc <= 1);
            double want = (sc[ae_passkey_index(&s, li, di, 0)].loglik + sc[ae_passkey_index(&s, li, di, 1)].loglik) / 2;
            assert_true(fabs(ll - want) < 1e-12);
        }
    // re-encoding with the same tokenizer changes nothing
    ae_passkey_score *sc2 = calloc((size_t)total, sizeof *sc2);
    assert_int_equal(ae_passkey_run(m, g_tok, 1, &s, NULL, NULL, sc2), AE_OK);
    for (int i = 0; i < total; i++) {
        assert_true(sc2[i].loglik == sc[i].loglik);
        assert_string_equal(sc2[i].pred, sc[i].pred);
    }
    ae_passkey_scores_free(sc, total);
    ae_passkey_scores_free(sc2, total);
    free(sc);
    free(sc2);
    ae_passkey_set_free(&s);
    ae_model_free(m);
}

static void test_score_micro(void **state) {
    (void)state;
    int lengths[] = {96, 160};
    check_run_against_reference(ae_test_src(MICRO), lengths, 2);
}

// Sliding layers of window 64 under prompts of 160 tokens: the rings wrap, and the greedy
// continuation after a wrong digit needs the rings restored.
static void test_score_gateswa_student(void **state) {
    (void)state;
    int lengths[] = {160};
    check_run_against_reference(g_student, lengths, 1);
}

// A model whose max_position_embeddings is smaller than a prompt: refused by the run.
static void test_run_refuses_over_limit(void **state) {
    (void)state;
    ae_model *m;
    assert_int_equal(ae_model_load(ae_test_src(MICRO), ae_backend_cpu(), &m), AE_OK);
    int lengths[] = {128};
    double depths[] = {0.5};
    ae_passkey_set s;
    assert_int_equal(ae_passkey_set_build(&s, g_tok, lengths, 1, depths, 1, 1, 5, 1), AE_OK);
    m->cfg.max_position_embeddings = 100;
    ae_passkey_score sc[1];
    assert_int_equal(ae_passkey_run(m, g_tok, 0, &s, NULL, NULL, sc), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "exceed the model's max_position_embeddings (100)"));
    ae_passkey_set_free(&s);
    ae_model_free(m);
}

// ---- the CLI

static int count_files(void) { return ae_test_count_entries(g_tmp); }

static void check_png(const char *path) {
    char *data;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &data, &len), AE_OK);
    assert_true(len > 1000 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8));
    unsigned w = (unsigned)(unsigned char)data[16] << 24 | (unsigned)(unsigned char)data[17] << 16 |
                 (unsigned)(unsigned char)data[18] << 8 | (unsigned char)data[19];
    unsigned h = (unsigned)(unsigned char)data[20] << 24 | (unsigned)(unsigned char)data[21] << 16 |
                 (unsigned)(unsigned char)data[22] << 8 | (unsigned char)data[23];
    assert_true(w >= 600 && h >= 200);
    free(data);
}

static cJSON *read_json(const char *path) {
    char *data;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &data, &len), AE_OK);
    cJSON *o = cJSON_Parse(data);
    free(data);
    assert_non_null(o);
    return o;
}

static void test_cli_outputs(void **state) {
    (void)state;
    int before = count_files();
    char *out, *err;
    const char *args[] = {"eval", "passkey", ae_test_src(MICRO), "--lengths", "100,160", "--depths", "0,1",
                          "--trials", "2", "--seed", "5", "--device", "cpu", "--json", tmp_path("pk.json"),
                          "--png", tmp_path("pk.png"), "--compare", g_student, NULL};
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc != 0) fail_msg("exit %d: %s", rc, err);
    assert_non_null(strstr(out, "qwen3-micro: exact match / key log-likelihood per token"));
    assert_non_null(strstr(out, "depth 0"));
    assert_non_null(strstr(out, "     160"));
    assert_int_equal(count_files(), before + 2); // the two files, no temp file left
    check_png(tmp_path("pk.png"));
    cJSON *o = read_json(tmp_path("pk.json"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "lengths")), 2);
    assert_int_equal((int)cJSON_GetObjectItem(o, "seed")->valuedouble, 5);
    cJSON *models = cJSON_GetObjectItem(o, "models");
    assert_int_equal(cJSON_GetArraySize(models), 2);
    cJSON *cells[2];
    for (int k = 0; k < 2; k++) {
        cJSON *mo = cJSON_GetArrayItem(models, k);
        assert_true(cJSON_IsString(cJSON_GetObjectItem(mo, "name")));
        cells[k] = cJSON_GetObjectItem(mo, "cells");
        assert_int_equal(cJSON_GetArraySize(cells[k]), 4);
    }
    for (int i = 0; i < 4; i++) {
        cJSON *c0 = cJSON_GetArrayItem(cells[0], i), *c1 = cJSON_GetArrayItem(cells[1], i);
        double acc = cJSON_GetObjectItem(c0, "accuracy")->valuedouble;
        double ll = cJSON_GetObjectItem(c0, "key_loglik")->valuedouble;
        assert_true(acc >= 0 && acc <= 1 && ll < 0 && ll > -30);
        cJSON *t0 = cJSON_GetObjectItem(c0, "trials"), *t1 = cJSON_GetObjectItem(c1, "trials");
        assert_int_equal(cJSON_GetArraySize(t0), 2);
        double sum = 0;
        for (int t = 0; t < 2; t++) {
            cJSON *a = cJSON_GetArrayItem(t0, t), *b = cJSON_GetArrayItem(t1, t);
            const char *key = cJSON_GetObjectItem(a, "key")->valuestring;
            // both models got the same prompts
            assert_string_equal(key, cJSON_GetObjectItem(b, "key")->valuestring);
            assert_int_equal(cJSON_GetObjectItem(a, "prompt_tokens")->valueint,
                             cJSON_GetObjectItem(b, "prompt_tokens")->valueint);
            const char *pred = cJSON_GetObjectItem(a, "prediction")->valuestring;
            assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(a, "correct")), ae_passkey_match(key, pred));
            sum += cJSON_GetObjectItem(a, "key_loglik")->valuedouble;
        }
        assert_true(fabs(sum / 2 - ll) < 1e-9);
    }
    cJSON_Delete(o);
    free(out);
    free(err);
    // the same seed again: the same JSON
    char *j1, *j2;
    size_t l1, l2;
    assert_int_equal(ae_file_read_all(tmp_path("pk.json"), &j1, &l1), AE_OK);
    rc = ae_test_run_cli(args, NULL, &out, &err);
    assert_int_equal(rc, 0);
    assert_int_equal(ae_file_read_all(tmp_path("pk.json"), &j2, &l2), AE_OK);
    assert_string_equal(j1, j2);
    free(j1);
    free(j2);
    free(out);
    free(err);
    unlink(tmp_path("pk.json"));
    unlink(tmp_path("pk.png"));
}

// Runs a command that must be refused: exit status, message, and no file written.
static void refused(const char *const *args, int want_rc, const char *want) {
    int before = count_files();
    char *out, *err;
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc != want_rc || !strstr(err, want))
        fail_msg("exit %d (want %d), stderr:\n%s\nwanted: %s", rc, want_rc, err, want);
    if (count_files() != before) fail_msg("a refused command left a file: %s", err);
    ae_test_catalogue_cli("eval passkey: options and models", args, NULL, err);
    free(out);
    free(err);
}

static void test_cli_bad_input(void **state) {
    (void)state;
    const char *micro = ae_test_src(MICRO);
    char j[1024], p[1024];
    snprintf(j, sizeof j, "%s", tmp_path("x.json"));
    snprintf(p, sizeof p, "%s", tmp_path("x.png"));
#define PK(...) ((const char *[]){"eval", "passkey", __VA_ARGS__, NULL})
    refused(PK("--lengths", "256"), 2, "need MODEL");
    refused(PK(tmp_path("nomodel"), "--json", j), 1, "nomodel' does not exist");
    refused(PK(micro, "--lengths", "1k,2k", "--json", j), 1, "--lengths: '1k,2k' is not a comma-separated list of integers");
    refused(PK(micro, "--lengths", "256,", "--lengths", "x"), 1, "--lengths: 'x' is not a comma-separated list");
    refused(PK(micro, "--lengths", "256,256", "--png", p), 1, "--lengths: 256 is listed twice");
    refused(PK(micro, "--depths", "0,1.5", "--png", p), 1, "--depths: 1.5 is outside [0, 1]");
    refused(PK(micro, "--depths", "-0.1"), 1, "--depths: -0.1 is outside [0, 1]");
    refused(PK(micro, "--depths", "half"), 1, "--depths: 'half' is not a comma-separated list of numbers");
    refused(PK(micro, "--depths", "0.5,nan"), 1, "--depths: '0.5,nan' is not a comma-separated list of numbers");
    refused(PK(micro, "--depths", "0.5,0.5"), 1, "--depths: 0.5 is listed twice");
    refused(PK(micro, "--trials", "0", "--json", j), 1, "--trials");
    refused(PK(micro, "--digits", "0"), 1, "--digits");
    refused(PK(micro, "--digits", "33"), 1, "--digits");
    refused(PK(micro, "--seed", "-1"), 1, "--seed");
    refused(PK(micro, "--lengths", "1024,40000", "--json", j, "--png", p), 1,
            "--lengths: 40000 exceeds the max_position_embeddings of");
    refused(PK(micro, "--lengths", "512", "--compare", tmp_path("nomodel")), 1,
            "--compare: MODEL2 folder '");
    refused(PK(micro, "--lengths", "20", "--json", j), 1,
            "--lengths: 20 tokens cannot hold the pass-key prompt: its task line, key sentence, question and "
            "answer take");
    refused(PK(micro, "--lengths", "128", "--png", tmp_path("no/such/dir/x.png")), 1, "--png:");
    refused(PK(micro, "--lengths", "128", "--json", tmp_path("no/such/dir/x.json")), 1, "--json:");
    refused(PK(micro, "--lengths", "128", "--json", j, "--png", j), 1, "--json and --png name the same file");
    refused(PK(micro, "--device", "tpu"), 1, "tpu");
    refused(PK(micro, "--frobnicate"), 1, "--frobnicate");
#undef PK
    // default lengths above a model's limit: the message says they were the defaults
    char small[1024];
    snprintf(small, sizeof small, "%s/small-ctx", g_tmp);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && sed -i 's/\"max_position_embeddings\": 32768/"
                              "\"max_position_embeddings\": 2048/' '%s/config.json'", micro, small, small);
    assert_int_equal(system(cmd), 0);
    refused((const char *[]){"eval", "passkey", small, NULL}, 1, "(2048) (the default --lengths is 1024,2048,4096)");
    refused((const char *[]){"eval", "passkey", micro, "--compare", small, "--lengths", "1024,3000", NULL}, 1,
            "--lengths: 3000 exceeds the max_position_embeddings of");
    ae_test_rmtree(small);
}

// ---- ../shared/teachers/qwen3-small at its training context (1024 tokens)

static void test_shared_small(void **state) {
    (void)state;
    const char *small = ae_test_shared("teachers/qwen3-small", "eval passkey on qwen3-small");
    if (!small) return;
    char *out, *err;
    const char *args[] = {"eval", "passkey", small, "--lengths", "1024", "--depths", "0,1", "--trials", "1",
                          "--device", "cpu", "--json", tmp_path("s.json"), NULL};
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc != 0) fail_msg("exit %d: %s", rc, err);
    cJSON *o = read_json(tmp_path("s.json"));
    cJSON *cells = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "models"), 0), "cells");
    assert_int_equal(cJSON_GetArraySize(cells), 2);
    for (int i = 0; i < 2; i++) {
        cJSON *c = cJSON_GetArrayItem(cells, i);
        double acc = cJSON_GetObjectItem(c, "accuracy")->valuedouble;
        double ll = cJSON_GetObjectItem(c, "key_loglik")->valuedouble;
        assert_true(acc >= 0 && acc <= 1 && ll < 0 && ll > -30);
        cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "trials"), 0);
        int n = cJSON_GetObjectItem(t, "prompt_tokens")->valueint + cJSON_GetObjectItem(t, "answer_tokens")->valueint;
        assert_true(n <= 1024 && n >= 1022);
    }
    cJSON_Delete(o);
    free(out);
    free(err);
    unlink(tmp_path("s.json"));
}

static int setup(void **state) {
    (void)state;
    g_tmp = ae_test_tmpdir();
    if (ae_tokenizer_load(ae_test_src(MICRO), &g_tok) != AE_OK) return -1;
    snprintf(g_student, sizeof g_student, "%s/student", g_tmp);
    char *err;
    const char *conv[] = {"convert", "--teacher", ae_test_src(MICRO), "--target", "gateswa", "--window", "64",
                          "--full-every", "2", "--init", "teacher", "--out", g_student, NULL};
    if (ae_test_run_cli(conv, NULL, NULL, &err) != 0) {
        fprintf(stderr, "convert failed: %s\n", err);
        free(err);
        return -1;
    }
    free(err);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ae_tokenizer_free(g_tok);
    ae_test_rmtree(g_tmp);
    free(g_tmp);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_lengths_and_depth),
        cmocka_unit_test(test_keys_and_sets_deterministic),
        cmocka_unit_test(test_build_refusals),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_score_micro),
        cmocka_unit_test(test_score_gateswa_student),
        cmocka_unit_test(test_run_refuses_over_limit),
        cmocka_unit_test(test_cli_outputs),
        cmocka_unit_test(test_cli_bad_input),
        cmocka_unit_test(test_shared_small),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, setup, teardown));
}
