// `attnedit serve --random-weights CONFIG_DIR` (the benchmarking mode) over real sockets on
// 127.0.0.1, CPU backend, on folders holding only a config.json (qwen3-micro's, and MLA and
// GateSWA students of it):
//   - token-id prompts are served: the ids (in the choice's token_ids, streamed or not) equal
//     ae_generate on ae_model_random of the same config and seed; logprob tokens read
//     "token_id:N"; /v1/models names the folder and says the weights are random;
//   - what needs a tokenizer gets a clear 400 (text prompts, stop strings, chat) and the server
//     keeps serving; a folder that has a tokenizer.json gets text as usual;
//   - `attnedit bench serve` against it prints a table with no failed request, --json parses,
//     --extra-body fields reach the server, --rounds sets the request count;
//   - the CLI refuses --model with --random-weights, --seed without it.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/ops.h"
#include "core/file.h"
#include "core/log.h"
#include "infer/generate.h"
#include "serve/http_client.h"
#include "serve/server.h"
#include "util/serve.h"
#include "util/testutil.h"

#define SEED 5

static const char *micro(void) { return ae_test_src("models/qwen3-micro"); }

// A folder `dir`/`name` with qwen3-micro's config.json, changed by `patch` (a JSON object whose
// fields replace the config's; NULL: none). Returns the folder (heap).
static char *config_dir(const char *dir, const char *name, const char *patch) {
    char src[4096], *text = NULL;
    size_t n = 0;
    snprintf(src, sizeof src, "%s/config.json", micro());
    assert_int_equal(ae_file_read_all(src, &text, &n), AE_OK);
    cJSON *cfg = cJSON_ParseWithLength(text, n), *p = patch ? cJSON_Parse(patch) : NULL;
    free(text);
    assert_non_null(cfg);
    for (cJSON *f = p ? p->child : NULL; f; f = f->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, f->string);
        cJSON_AddItemToObject(cfg, f->string, cJSON_Duplicate(f, 1));
    }
    char *out = malloc(4096), path[4096];
    snprintf(out, 4096, "%s/%s", dir, name);
    assert_int_equal(mkdir(out, 0755), 0);
    snprintf(path, sizeof path, "%s/config.json", out);
    char *js = cJSON_Print(cfg);
    assert_int_equal(ae_test_write_file(path, js, strlen(js)), 0);
    free(js);
    cJSON_Delete(cfg);
    cJSON_Delete(p);
    return out;
}

static ae_server *start(const char *dir, int *port) {
    ae_server_opts o = {.model_dir = dir, .random_weights = 1, .seed = SEED, .device = "cpu",
                        .port = 0, .cache_gb = 0.02, .max_seqs = 8, .max_batch_tokens = 32,
                        .max_model_len = 512, .quiet = 1};
    ae_server *s = NULL;
    if (ae_server_start(&o, &s) != AE_OK) fprintf(stderr, "server: %s\n", ae_last_error());
    assert_non_null(s);
    *port = ae_server_port(s);
    return s;
}

static int request(int port, const char *method, const char *path, const char *body,
                   ae_http_resp *r) {
    return ae_http_request("127.0.0.1", port, method, path, body, body ? strlen(body) : 0, NULL,
                           NULL, 120, r);
}

// Greedy ids of ae_generate on the random model of `dir` (the server's seed).
static void reference(const char *dir, const int32_t *prompt, int n, int max_new, ae_test_ids *out) {
    ae_model *m = NULL;
    assert_int_equal(ae_model_random(dir, ae_backend_cpu(), SEED, &m), AE_OK);
    ae_sampler_params sp = {.greedy = 1, .top_p = 1.0f};
    ae_sampler s;
    assert_int_equal(ae_sampler_init(&s, &sp, m->cfg.vocab_size), AE_OK);
    ae_gen_stats gs;
    out->n = 0;
    assert_int_equal(ae_generate(m, prompt, n, max_new, &s, -1, ae_test_collect_id, out, &gs), AE_OK);
    ae_sampler_free(&s);
    ae_model_free(m);
}

// Appends the numbers of array `a` to l.
static void add_ids(const cJSON *a, ae_test_ids *l) {
    assert_true(cJSON_IsArray(a));
    for (const cJSON *v = a->child; v; v = v->next) {
        assert_true(cJSON_IsNumber(v));
        if (l->n < AE_TEST_IDS_CAP) l->ids[l->n++] = (int32_t)v->valuedouble;
    }
}

// Adds the text and token_ids of one completion object (JSON text of n bytes).
static void add_choice(const char *js, size_t n, ae_test_ids *ids, char *text, size_t cap) {
    cJSON *j = cJSON_ParseWithLength(js, n);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *t = cJSON_GetObjectItem(c, "text");
    assert_true(cJSON_IsString(t));
    strncat(text, t->valuestring, cap - strlen(text) - 1);
    const cJSON *a = cJSON_GetObjectItem(c, "token_ids");
    if (a) add_ids(a, ids);
    cJSON_Delete(j);
}

// Token ids and text of a completion, or of all the events of a stream (which must end with
// [DONE]).
static void response_ids(const char *body, int stream, ae_test_ids *ids, char *text, size_t cap) {
    ids->n = 0;
    text[0] = 0;
    if (!stream) {
        add_choice(body, strlen(body), ids, text, cap);
        return;
    }
    int done = 0;
    for (const char *p = body; !done && (p = strstr(p, "data: ")); p += 6) {
        done = !strncmp(p + 6, "[DONE]", 6);
        const char *end = strstr(p + 6, "\n\n");
        if (!done) add_choice(p + 6, end ? (size_t)(end - p - 6) : strlen(p + 6), ids, text, cap);
    }
    assert_true(done);
}

static const int32_t k_prompt[] = {11, 200, 3000, 45, 7, 8000, 123, 9};
#define NPROMPT (int)(sizeof k_prompt / sizeof *k_prompt)
#define NGEN 12

static void check_served(const char *dir, const char *what) {
    int port;
    ae_server *s = start(dir, &port);
    ae_test_ids ref, got;
    reference(dir, k_prompt, NPROMPT, NGEN, &ref);
    assert_int_equal(ref.n, NGEN);
    char body[512], text[256];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"prompt\":[");
    for (int i = 0; i < NPROMPT; i++) n += (size_t)snprintf(body + n, sizeof body - n, i ? ",%d" : "%d", k_prompt[i]);
    for (int stream = 0; stream < 2; stream++) {
        snprintf(body + n, sizeof body - n, "],\"max_tokens\":%d,\"temperature\":0,"
                 "\"ignore_eos\":true,\"stream\":%s}", NGEN, stream ? "true" : "false");
        ae_http_resp r;
        assert_int_equal(request(port, "POST", "/v1/completions", body, &r), 0);
        if (r.status != 200) printf("%s\n", r.body);
        assert_int_equal(r.status, 200);
        response_ids(r.body, stream, &got, text, sizeof text);
        assert_string_equal(text, ""); // no tokenizer: no text
        assert_int_equal(got.n, NGEN);
        assert_memory_equal(got.ids, ref.ids, sizeof(int32_t) * NGEN);
        if (!stream) assert_non_null(strstr(r.body, "\"completion_tokens\":12"));
        ae_http_resp_free(&r);
    }
    printf("%s: served ids == ae_generate on the random model (%d ids, streamed and not)\n", what, NGEN);
    ae_server_stop(s);
}

static void test_teacher_ids(void **st) {
    (void)st;
    char *tmp = ae_test_tmpdir(), *dir = config_dir(tmp, "micro-random", NULL);
    check_served(dir, "teacher");
    // logprobs name the tokens by id; /v1/models names the folder
    int port;
    ae_server *s = start(dir, &port);
    ae_http_resp r;
    assert_int_equal(request(port, "POST", "/v1/completions",
                             "{\"prompt\":[1,2,3],\"max_tokens\":3,\"logprobs\":2,\"ignore_eos\":true}",
                             &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *ids = cJSON_GetObjectItem(c, "token_ids");
    const cJSON *toks = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "tokens");
    assert_int_equal(cJSON_GetArraySize(ids), 3);
    assert_int_equal(cJSON_GetArraySize(toks), 3);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "token_id:%d", (int)cJSON_GetArrayItem(ids, i)->valuedouble);
        assert_string_equal(cJSON_GetArrayItem(toks, i)->valuestring, want);
    }
    cJSON_Delete(j);
    ae_http_resp_free(&r);
    assert_int_equal(request(port, "GET", "/v1/models", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"id\":\"micro-random\""));
    assert_non_null(strstr(r.body, "\"weights\":\"random\""));
    ae_http_resp_free(&r);
    ae_server_stop(s);
    free(dir);
    ae_test_rmtree(tmp);
    free(tmp);
}

// The students bench_infer and the GPU serving benchmark run: ae_model_random makes them from
// their configs alone.
static void test_student_ids(void **st) {
    (void)st;
    char *tmp = ae_test_tmpdir();
    char *mla = config_dir(tmp, "micro-mla",
                           "{\"attention_target\":\"mla\",\"attention_replaced_layers\":[0,1,2,3],"
                           "\"q_lora_rank\":null,\"kv_lora_rank\":32,\"qk_nope_head_dim\":16,"
                           "\"qk_rope_head_dim\":16,\"v_head_dim\":32,\"rope_interleave\":true}");
    char *gswa = config_dir(tmp, "micro-gateswa",
                            "{\"attention_target\":\"gateswa\",\"attention_replaced_layers\":[0,1,2,3],"
                            "\"sliding_window\":4,\"use_sliding_window\":true,\"layer_types\":"
                            "[\"sliding_attention\",\"sliding_attention\",\"sliding_attention\","
                            "\"full_attention\"],\"attn_output_gate\":\"elementwise\","
                            "\"attn_sinks\":false}");
    check_served(mla, "MLA student");
    check_served(gswa, "GateSWA student (W = 4, shorter than prompt + generation)");
    free(mla);
    free(gswa);
    ae_test_rmtree(tmp);
    free(tmp);
}

static void expect_400(int port, const char *path, const char *body, const char *param,
                       const char *words) {
    ae_http_resp r;
    assert_int_equal(request(port, "POST", path, body, &r), 0);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(e, "message"));
    if (r.status != 400 || !msg || !strstr(msg, words)) printf("%s -> %d %s\n", body, r.status, r.body);
    assert_int_equal(r.status, 400);
    assert_non_null(msg);
    assert_non_null(strstr(msg, words));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(e, "param")), param);
    printf("refused: %s\n", msg);
    cJSON_Delete(j);
    ae_http_resp_free(&r);
}

static void test_needs_tokenizer(void **st) {
    (void)st;
    char *tmp = ae_test_tmpdir(), *dir = config_dir(tmp, "bare", NULL);
    int port;
    ae_server *s = start(dir, &port);
    expect_400(port, "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":4}",
               "prompt", "array of token ids");
    expect_400(port, "/v1/completions", "{\"prompt\":[\"Once\"],\"max_tokens\":4}", "prompt",
               "no tokenizer");
    expect_400(port, "/v1/completions", "{\"prompt\":[1,2],\"max_tokens\":4,\"stop\":\"x\"}", "stop",
               "stop strings need a tokenizer");
    expect_400(port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
               "messages", "no tokenizer");
    ae_http_resp r; // still serving
    assert_int_equal(request(port, "POST", "/v1/completions", "{\"prompt\":[5],\"max_tokens\":2}", &r), 0);
    assert_int_equal(r.status, 200);
    ae_http_resp_free(&r);
    ae_server_stop(s);
    // random weights in a folder with a tokenizer: text in, text out, no token_ids
    ae_server_opts o = {.model_dir = micro(), .random_weights = 1, .seed = SEED, .device = "cpu",
                        .cache_gb = 0.02, .max_model_len = 256, .quiet = 1};
    assert_int_equal(ae_server_start(&o, &s), AE_OK);
    port = ae_server_port(s);
    assert_int_equal(request(port, "POST", "/v1/completions",
                             "{\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"ignore_eos\":true}", &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_true(strlen(cJSON_GetStringValue(cJSON_GetObjectItem(c, "text"))) > 0);
    assert_null(cJSON_GetObjectItem(c, "token_ids"));
    cJSON_Delete(j);
    ae_http_resp_free(&r);
    ae_server_stop(s);
    free(dir);
    ae_test_rmtree(tmp);
    free(tmp);
}

// Data rows of bench serve's table: "conc reqs failed | ..."; checks each has 0 failed and the
// expected request count. Returns the number of rows.
static int table_rows(const char *out, const int *conc, const int *reqs) {
    int rows = 0;
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        int c, n, failed;
        if (sscanf(l, "%d %d %d |", &c, &n, &failed) != 3) continue;
        assert_int_equal(c, conc[rows]);
        assert_int_equal(n, reqs[rows]);
        assert_int_equal(failed, 0);
        rows++;
    }
    return rows;
}

static void test_bench_serve(void **st) {
    (void)st;
    char *tmp = ae_test_tmpdir(), *dir = config_dir(tmp, "bench", NULL);
    int port;
    ae_server *s = start(dir, &port);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    const char *args[] = {"bench", "serve", "--url", url, "--concurrency", "1,4", "--prompt-len",
                          "16", "--gen-len", "6", "--rounds", "2", NULL, NULL, NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
    printf("%s", out);
    assert_non_null(strstr(out, "ttft50"));
    const int conc[] = {1, 4}, reqs[] = {2, 8};
    assert_int_equal(table_rows(out, conc, reqs), 2);
    free(out);
    free(err);
    // --json: one object per level, every request done, generated tokens counted
    args[12] = "--json";
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
    cJSON *j = cJSON_Parse(out);
    assert_int_equal(cJSON_GetArraySize(j), 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *o = cJSON_GetArrayItem(j, i);
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "concurrency")), conc[i]);
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "requests")), reqs[i]);
        assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "failed")), 0);
        assert_true(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "output_tokens_per_s")) > 0);
        assert_true(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "ttft_ms"), "p50")) > 0);
    }
    cJSON_Delete(j);
    free(out);
    free(err);
    // --extra-body fields reach the server: a known one (top_k) is served, one attnedit does not
    // know (llama-server's cache_prompt) is refused, so every request fails (exit 1)
    args[12] = "--extra-body";
    args[13] = "{\"top_k\":1}";
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
    free(out);
    free(err);
    args[13] = "{\"cache_prompt\":false}";
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 1);
    assert_non_null(strstr(err, "cache_prompt"));
    free(out);
    free(err);
    args[13] = "[1]";
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 2);
    assert_non_null(strstr(err, "--extra-body must be a JSON object"));
    free(out);
    free(err);
    const char *both[] = {"bench", "serve", "--url", url, "--requests", "3", "--rounds", "2", NULL};
    assert_int_equal(ae_test_run_cli(both, NULL, &out, &err), 2);
    assert_non_null(strstr(err, "--requests and --rounds"));
    free(out);
    free(err);
    ae_server_stop(s);
    free(dir);
    ae_test_rmtree(tmp);
    free(tmp);
}

static void test_cli_refusals(void **st) {
    (void)st;
    struct {
        const char *args[8];
        int rc;
        const char *words;
    } cases[] = {
        {{"serve", "--model", micro(), "--random-weights", micro(), NULL}, 2, "one of them"},
        {{"serve", NULL}, 2, "need --model or --random-weights"},
        {{"serve", "--model", micro(), "--seed", "3", NULL}, 2, "--seed goes with --random-weights"},
        {{"serve", "--random-weights", "/nonexistent/cfg", NULL}, 1, "does not exist"},
        {{"serve", "--random-weights", micro(), "--seed", "x", NULL}, 1, "--seed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *out = NULL, *err = NULL;
        int rc = ae_test_run_cli(cases[i].args, NULL, &out, &err);
        if (rc != cases[i].rc || !strstr(err, cases[i].words)) printf("case %zu: rc %d: %s\n", i, rc, err);
        assert_int_equal(rc, cases[i].rc);
        assert_non_null(strstr(err, cases[i].words));
        free(out);
        free(err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher_ids),
        cmocka_unit_test(test_student_ids),
        cmocka_unit_test(test_needs_tokenizer),
        cmocka_unit_test(test_bench_serve),
        cmocka_unit_test(test_cli_refusals),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
