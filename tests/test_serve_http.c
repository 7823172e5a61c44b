// `attnedit serve` over real sockets on 127.0.0.1 (CPU backend, the bundled qwen3-micro):
//   - completions equal `attnedit generate` for the same prompt, sampling parameters and seed;
//   - 32 concurrent streaming clients all get complete streams ([DONE], finish_reason) whose
//     text equals the same request answered alone;
//   - echo logprobs equal `attnedit eval ppl`'s per-token NLL;
//   - a soak of a few hundred requests (random lengths, streamed or not, random client
//     disconnects) ends with every page back in the pool and the server healthy;
//   - bad input gets an OpenAI-style JSON error with the right 4xx status and the server keeps
//     serving; chat completions with the Qwen3 template, with tools too (streamed = whole);
//   - GET /metrics parses as Prometheus text and its engine step counters (phases, decode steps
//     and tokens, rows) match the steps that greedy requests take; `attnedit bench serve`
//     reports them per level (ms per step by phase, decode tok/s).
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/rng.h"
#include "serve/http_client.h"
#include "serve/server.h"
#include "util/testutil.h"

static ae_server *g_srv;
static int g_port;
static double g_t_start; // before the server started: every step of its engine came later

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *micro(void) { return ae_test_src("models/qwen3-micro"); }

static int start(void **st) {
    (void)st;
    ae_server_opts o = {.model_dir = micro(), .device = "cpu", .port = 0, .cache_gb = 0.05,
                        .max_seqs = 16, .max_batch_tokens = 64, .max_model_len = 1024,
                        .max_queue = 256, .max_connections = 128, .max_body = 1 << 20,
                        .quiet = 1};
    g_t_start = ae_time_now();
    if (ae_server_start(&o, &g_srv) != AE_OK) {
        fprintf(stderr, "server: %s\n", ae_last_error());
        return -1;
    }
    g_port = ae_server_port(g_srv);
    return 0;
}

static int stop(void **st) {
    (void)st;
    ae_server_stop(g_srv);
    return 0;
}

static int post(const char *path, const char *body, ae_http_resp *r) {
    return ae_http_request("127.0.0.1", g_port, "POST", path, body, strlen(body), NULL, NULL, 300, r);
}

// choices[0].text of a completion response (heap), or NULL.
static char *completion_text(const char *json) {
    cJSON *j = cJSON_Parse(json);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *t = cJSON_GetObjectItem(c, "text");
    char *s = cJSON_IsString(t) ? strdup(t->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}

// Concatenated text of an SSE stream; *done = saw [DONE]; *finish = had a finish_reason.
static char *stream_text(const char *body, int *done, int *finish) {
    size_t cap = strlen(body) + 1, n = 0;
    char *out = calloc(1, cap);
    *done = *finish = 0;
    for (const char *p = body; (p = strstr(p, "data: ")); p += 6) {
        if (!strncmp(p + 6, "[DONE]", 6)) {
            *done = 1;
            continue;
        }
        const char *end = strstr(p, "\n\n");
        cJSON *j = cJSON_ParseWithLength(p + 6, end ? (size_t)(end - p - 6) : strlen(p + 6));
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        const cJSON *t = cJSON_GetObjectItem(c, "text");
        if (!t) t = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "content");
        if (cJSON_IsString(t)) {
            size_t L = strlen(t->valuestring);
            memcpy(out + n, t->valuestring, L);
            n += L;
        }
        if (cJSON_IsString(cJSON_GetObjectItem(c, "finish_reason"))) *finish = 1;
        cJSON_Delete(j);
    }
    return out;
}

static void test_equals_generate(void **st) {
    (void)st;
    struct {
        const char *prompt;
        int n;
        const char *temp, *top_p, *seed;
    } cases[] = {
        {"Once upon a time", 24, NULL, NULL, NULL},
        {"The king said", 30, "0.8", "0.9", "42"},
        {"It was a dark and stormy night;", 16, "1.2", "1.0", "7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":%s,\"top_p\":%s,"
                 "\"seed\":%s,\"ignore_eos\":true}",
                 cases[i].prompt, cases[i].n, cases[i].temp ? cases[i].temp : "0",
                 cases[i].top_p ? cases[i].top_p : "1", cases[i].seed ? cases[i].seed : "0");
        ae_http_resp r;
        assert_int_equal(post("/v1/completions", body, &r), 0);
        assert_int_equal(r.status, 200);
        char *text = completion_text(r.body);
        char nbuf[16];
        snprintf(nbuf, sizeof nbuf, "%d", cases[i].n);
        const char *args[20] = {"generate", "--model", micro(), "--device", "cpu", "--prompt",
                                cases[i].prompt, "--max-new-tokens", nbuf, "--ignore-eos"};
        int k = 10;
        if (cases[i].temp) {
            args[k++] = "--temperature";
            args[k++] = cases[i].temp;
            args[k++] = "--top-p";
            args[k++] = cases[i].top_p;
            args[k++] = "--seed";
            args[k++] = cases[i].seed;
        }
        args[k] = NULL;
        char *out = NULL, *err = NULL;
        assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
        size_t L = strlen(out);
        if (L && out[L - 1] == '\n') out[--L] = 0;
        if (strcmp(text, out)) printf("server:   %s\ngenerate: %s\n", text, out);
        assert_string_equal(text, out);
        printf("case %zu: server == generate (%zu bytes)\n", i, L);
        free(text);
        free(out);
        free(err);
        ae_http_resp_free(&r);
    }
}

static void test_stop_strings(void **st) {
    (void)st;
    const char *base = "{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0,"
                       "\"ignore_eos\":true";
    char body[512];
    snprintf(body, sizeof body, "%s}", base);
    ae_http_resp r;
    assert_int_equal(post("/v1/completions", body, &r), 0);
    char *full = completion_text(r.body);
    ae_http_resp_free(&r);
    size_t L = strlen(full);
    assert_true(L > 20);
    char stop[8]; // a plain piece from the middle of the text: the answer ends just before it
    size_t at = L / 2;
    for (; at + 5 <= L; at++) {
        int plain = 1;
        for (int k = 0; k < 5; k++) {
            char ch = full[at + k];
            plain &= (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == ' ';
        }
        if (plain) break;
    }
    assert_true(at + 5 <= L);
    memcpy(stop, full + at, 5);
    stop[5] = 0;
    for (int stream = 0; stream < 2; stream++) {
        snprintf(body, sizeof body, "%s,\"stop\":[\"zzzz\",\"%s\"],\"stream\":%s}", base, stop,
                 stream ? "true" : "false");
        assert_int_equal(post("/v1/completions", body, &r), 0);
        assert_int_equal(r.status, 200);
        int done = 1, fin = 1;
        char *t = stream ? stream_text(r.body, &done, &fin) : completion_text(r.body);
        const char *cut = strstr(full, stop);
        assert_true(done && fin);
        assert_int_equal(strlen(t), (size_t)(cut - full));
        assert_memory_equal(t, full, strlen(t));
        assert_non_null(strstr(r.body, "\"finish_reason\":\"stop\""));
        free(t);
        ae_http_resp_free(&r);
    }
    printf("stop '%s': text cut before it, finish_reason stop (streamed and not)\n", stop);
    free(full);
}

#define NCLIENT 32

typedef struct {
    char body[512];
    ae_http_resp r;
    int rc;
} client;

static void *run_client(void *arg) {
    client *c = arg;
    c->rc = post("/v1/completions", c->body, &c->r);
    return NULL;
}

static void test_concurrent_streams(void **st) {
    (void)st;
    static client c[NCLIENT];
    char *expect[4];
    for (int k = 0; k < 4; k++) { // the answers alone (non-streamed)
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\":\"Chapter %d. The\",\"max_tokens\":%d,"
                 "\"temperature\":%s,\"seed\":%d,\"ignore_eos\":true}",
                 k, 20 + 7 * k, k % 2 ? "0.9" : "0", 100 + k);
        ae_http_resp r;
        assert_int_equal(post("/v1/completions", body, &r), 0);
        assert_int_equal(r.status, 200);
        expect[k] = completion_text(r.body);
        ae_http_resp_free(&r);
    }
    pthread_t th[NCLIENT];
    for (int i = 0; i < NCLIENT; i++) {
        int k = i % 4;
        snprintf(c[i].body, sizeof c[i].body, "{\"prompt\":\"Chapter %d. The\",\"max_tokens\":%d,"
                 "\"temperature\":%s,\"seed\":%d,\"ignore_eos\":true,\"stream\":true}",
                 k, 20 + 7 * k, k % 2 ? "0.9" : "0", 100 + k);
        pthread_create(&th[i], NULL, run_client, &c[i]);
    }
    int good = 0;
    for (int i = 0; i < NCLIENT; i++) {
        pthread_join(th[i], NULL);
        int done, fin;
        char *t = c[i].rc == 0 && c[i].r.status == 200 ? stream_text(c[i].r.body, &done, &fin) : NULL;
        good += t && done && fin && !strcmp(t, expect[i % 4]);
        if (!(t && done && fin && !strcmp(t, expect[i % 4])))
            printf("client %d: rc %d status %d done %d: '%s' vs '%s'\n", i, c[i].rc, c[i].r.status,
                   t ? done : -1, t ? t : "", expect[i % 4]);
        free(t);
        ae_http_resp_free(&c[i].r);
    }
    printf("%d of %d concurrent streams complete and equal to the request answered alone\n", good, NCLIENT);
    assert_int_equal(good, NCLIENT);
    for (int k = 0; k < 4; k++) free(expect[k]);
}

// Sampling on the device (sample_rows) with many sequences in each step: 8 concurrent requests
// at temperature 0.8, top_p 0.9, each with its own prompt and seed, each equal to what
// `attnedit generate` prints for that prompt and seed (one sequence, sampled the same way).
#define NSAMPLED 8
static void test_concurrent_sampled_equal_generate(void **st) {
    (void)st;
    static client c[NSAMPLED];
    char prompt[NSAMPLED][64];
    pthread_t th[NSAMPLED];
    for (int i = 0; i < NSAMPLED; i++) {
        snprintf(prompt[i], sizeof prompt[i], "The %d travellers came to", 3 + i);
        snprintf(c[i].body, sizeof c[i].body, "{\"prompt\":\"%s\",\"max_tokens\":%d,"
                 "\"temperature\":0.8,\"top_p\":0.9,\"seed\":%d,\"ignore_eos\":true}",
                 prompt[i], 12 + 3 * i, 300 + i);
        pthread_create(&th[i], NULL, run_client, &c[i]);
    }
    for (int i = 0; i < NSAMPLED; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NSAMPLED; i++) {
        assert_int_equal(c[i].rc, 0);
        assert_int_equal(c[i].r.status, 200);
        char *text = completion_text(c[i].r.body);
        assert_non_null(text);
        char nbuf[16], sbuf[16];
        snprintf(nbuf, sizeof nbuf, "%d", 12 + 3 * i);
        snprintf(sbuf, sizeof sbuf, "%d", 300 + i);
        const char *args[] = {"generate", "--model", micro(), "--device", "cpu", "--prompt",
                              prompt[i], "--max-new-tokens", nbuf, "--ignore-eos",
                              "--temperature", "0.8", "--top-p", "0.9", "--seed", sbuf, NULL};
        char *out = NULL, *err = NULL;
        assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
        size_t L = strlen(out);
        if (L && out[L - 1] == '\n') out[--L] = 0;
        if (strcmp(text, out)) printf("request %d:\nserver:   %s\ngenerate: %s\n", i, text, out);
        assert_string_equal(text, out);
        free(text);
        free(out);
        free(err);
        ae_http_resp_free(&c[i].r);
    }
    printf("%d concurrent sampled requests (T 0.8, top_p 0.9) == generate with their seeds\n",
           NSAMPLED);
}

static void test_echo_equals_eval(void **st) {
    (void)st;
    const char *text = "The old man looked at the sea and said nothing for a long while, and then "
                       "he rose and went into the house.";
    char *dir = ae_test_tmpdir(), path[4096];
    snprintf(path, sizeof path, "%s/t.txt", dir);
    assert_int_equal(ae_test_write_file(path, text, strlen(text)), 0);
    const char *args[] = {"eval", "ppl", "--model", micro(), "--device", "cpu", "--file", path,
                          "--json", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
    cJSON *ej = cJSON_Parse(out);
    double mean = cJSON_GetObjectItem(ej, "mean_nll")->valuedouble;
    int tokens = cJSON_GetObjectItem(ej, "tokens")->valueint;
    char body[1024];
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":1,\"echo\":true,\"logprobs\":0,"
             "\"temperature\":0}", text);
    ae_http_resp r;
    assert_int_equal(post("/v1/completions", body, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *lp = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(
                                              cJSON_GetObjectItem(j, "choices"), 0), "logprobs"),
                                          "token_logprobs");
    double sum = 0;
    int n = 0, i = 0;
    for (const cJSON *v = lp->child; v; v = v->next, i++) {
        if (i == 0) assert_true(cJSON_IsNull(v));
        else if (i <= tokens) { // prompt tokens (the last entry is the generated one)
            sum -= v->valuedouble;
            n++;
        }
    }
    printf("echo: %d prompt tokens scored, mean NLL %.7f; eval ppl: %d tokens, %.7f\n", n, sum / n,
           tokens, mean);
    assert_int_equal(n, tokens);
    assert_true(fabs(sum / n - mean) < 1e-5);
    cJSON_Delete(j);
    cJSON_Delete(ej);
    ae_http_resp_free(&r);
    free(out);
    free(err);
    ae_test_rmtree(dir);
    free(dir);
}

// ---- soak ----

typedef struct {
    int id, drop_after, n_bytes;
} soak_ctx;

static int soak_data(void *ud, const char *d, size_t n) {
    soak_ctx *s = ud;
    (void)d;
    s->n_bytes += (int)n;
    return s->drop_after > 0 && s->n_bytes >= s->drop_after;
}

static int g_soak_next, g_soak_ok, g_soak_dropped, g_soak_fail;
static pthread_mutex_t g_soak_mu = PTHREAD_MUTEX_INITIALIZER;
#define NSOAK 240

static void *soak_worker(void *arg) {
    (void)arg;
    char *body = malloc(8192);
    for (;;) {
        pthread_mutex_lock(&g_soak_mu);
        int i = g_soak_next < NSOAK ? g_soak_next++ : -1;
        pthread_mutex_unlock(&g_soak_mu);
        if (i < 0) break;
        ae_rng r;
        ae_rng_seed(&r, 5000 + (uint64_t)i);
        int plen = 1 + (int)(ae_rng_uniform(&r) * 200), gen = 1 + (int)(ae_rng_uniform(&r) * 40);
        int stream = ae_rng_uniform(&r) < 0.5, drop = ae_rng_uniform(&r) < 0.3;
        size_t n = (size_t)sprintf(body, "{\"prompt\":[");
        for (int k = 0; k < plen; k++) n += (size_t)sprintf(body + n, k ? ",%d" : "%d", 10 + (int)(ae_rng_uniform(&r) * 8000));
        sprintf(body + n, "],\"max_tokens\":%d,\"temperature\":0.9,\"seed\":%d,\"stream\":%s,"
                "\"ignore_eos\":true}", gen, i, stream ? "true" : "false");
        soak_ctx sc = {.id = i, .drop_after = drop ? 1 + (int)(ae_rng_uniform(&r) * 600) : 0};
        ae_http_resp resp;
        double timeout = drop && !stream ? 0.05 + ae_rng_uniform(&r) * 0.3 : 300; // hang up early
        int rc = ae_http_request("127.0.0.1", g_port, "POST", "/v1/completions", body, strlen(body),
                                 soak_data, &sc, timeout, &resp);
        pthread_mutex_lock(&g_soak_mu);
        if (rc == 0 && resp.status == 200 && (drop || strstr(resp.body, "\"finish_reason\":\"length\"")))
            g_soak_ok++;
        if (drop) g_soak_dropped++;
        pthread_mutex_unlock(&g_soak_mu);
        if (!drop && !(rc == 0 && resp.status == 200)) g_soak_fail++;
        if (!drop && !(rc == 0 && resp.status == 200))
            printf("soak %d: rc %d status %d %s %.200s\n", i, rc, resp.status, resp.err, resp.body);
        ae_http_resp_free(&resp);
    }
    free(body);
    return NULL;
}

static void test_soak(void **st) {
    (void)st;
    pthread_t th[12];
    double t0 = ae_time_now();
    for (int i = 0; i < 12; i++) pthread_create(&th[i], NULL, soak_worker, NULL);
    for (int i = 0; i < 12; i++) pthread_join(th[i], NULL);
    ae_engine_stats s;
    for (int k = 0; k < 600; k++) { // cancelled sequences leave at the next step
        ae_engine_get_stats(ae_server_engine(g_srv), &s);
        if (s.running == 0 && s.waiting == 0 && s.pages_free == s.pages_total) break;
        nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    printf("soak: %d requests (%d with the client hanging up) in %.1f s, %d complete, %d failed; "
           "pool %d/%d pages free, %d promised, %d running\n", NSOAK, g_soak_dropped,
           ae_time_now() - t0, g_soak_ok, g_soak_fail, s.pages_free, s.pages_total,
           s.pages_promised, s.running);
    assert_int_equal(g_soak_fail, 0);
    assert_true(g_soak_ok >= NSOAK - g_soak_dropped);
    assert_int_equal(s.running, 0);
    assert_int_equal(s.waiting, 0);
    assert_int_equal(s.pages_free, s.pages_total);
    assert_int_equal(s.pages_promised, 0);
    ae_http_resp r;
    assert_int_equal(ae_http_request("127.0.0.1", g_port, "GET", "/health", NULL, 0, NULL, NULL, 10, &r), 0);
    assert_int_equal(r.status, 200);
    ae_http_resp_free(&r);
    assert_int_equal(ae_http_request("127.0.0.1", g_port, "GET", "/metrics", NULL, 0, NULL, NULL, 10, &r), 0);
    assert_non_null(strstr(r.body, "attnedit_requests_running 0\n"));
    ae_http_resp_free(&r);
}

// ---- bad input ----

static void expect_error(const char *method, const char *path, const char *body, int status) {
    ae_http_resp r;
    assert_int_equal(ae_http_request("127.0.0.1", g_port, method, path, body, body ? strlen(body) : 0,
                                     NULL, NULL, 30, &r), 0);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    if (r.status != status || !cJSON_IsString(cJSON_GetObjectItem(e, "message")))
        printf("%s %s %s -> %d %s\n", method, path, body ? body : "", r.status, r.body);
    assert_int_equal(r.status, status);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "message")));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(e, "type")));
    cJSON_Delete(j);
    ae_http_resp_free(&r);
}

static void test_bad_input(void **st) {
    (void)st;
    const char *c = "/v1/completions";
    struct {
        const char *body;
        int status;
    } bad[] = {
        {"", 400}, {"{", 400}, {"[1,2]", 400}, {"null", 400}, {"{\"prompt\":null}", 400},
        {"{\"max_tokens\":3}", 400}, {"{\"prompt\":\"x\",\"max_tokens\":0}", 400},
        {"{\"prompt\":\"x\",\"max_tokens\":-5}", 400}, {"{\"prompt\":\"x\",\"max_tokens\":1.5}", 400},
        {"{\"prompt\":\"x\",\"max_tokens\":\"4\"}", 400}, {"{\"prompt\":\"x\",\"temperature\":-1}", 400},
        {"{\"prompt\":\"x\",\"top_p\":0}", 400}, {"{\"prompt\":\"x\",\"top_p\":1.5}", 400},
        {"{\"prompt\":\"x\",\"logprobs\":99}", 400}, {"{\"prompt\":\"x\",\"stream\":1}", 400},
        {"{\"prompt\":\"x\",\"n\":2}", 400}, {"{\"prompt\":\"x\",\"stop\":5}", 400},
        {"{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]}", 400},
        {"{\"prompt\":\"x\",\"bogus\":true}", 400}, {"{\"prompt\":[-1]}", 400},
        {"{\"prompt\":[1.5]}", 400}, {"{\"prompt\":[]}", 400}, {"{\"prompt\":\"\"}", 400},
        {"{\"prompt\":[\"a\",\"b\"]}", 400}, {"{\"prompt\":\"x\",\"max_tokens\":5000}", 400},
        {"{\"prompt\":\"x\",\"model\":\"other\"}", 404}, {"{\"prompt\":\"x\",\"presence_penalty\":1}", 400},
        {"{\"prompt\":\"\\ud800\"}", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) expect_error("POST", c, bad[i].body, bad[i].status);
    // raw invalid UTF-8 inside a JSON string
    expect_error("POST", c, "{\"prompt\":\"a\xff\xfe b\"}", 400);
    // a long prompt over the context
    char *big = malloc(200000);
    size_t n = (size_t)sprintf(big, "{\"prompt\":[");
    for (int i = 0; i < 1100; i++) n += (size_t)sprintf(big + n, i ? ",%d" : "%d", 100);
    sprintf(big + n, "]}");
    expect_error("POST", c, big, 400);
    // a body over the limit (1 MiB here)
    char *huge = malloc((2u << 20) + 1);
    memset(huge, ' ', 2u << 20);
    huge[2u << 20] = 0;
    expect_error("POST", c, huge, 413);
    free(huge);
    free(big);
    expect_error("GET", c, NULL, 405);
    expect_error("POST", "/v1/models", "{}", 405);
    expect_error("GET", "/v2/nothing", NULL, 404);
    expect_error("POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400);
    // garbage that is not HTTP at all, and a connection closed mid-request
    for (int k = 0; k < 2; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        const char *g = k ? "POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pro"
                          : "\x01\x02 garbage \r\n\r\n";
        assert_true(send(fd, g, strlen(g), MSG_NOSIGNAL) > 0);
        close(fd);
    }
    ae_http_resp r; // still serving
    assert_int_equal(post(c, "{\"prompt\":\"still alive\",\"max_tokens\":3}", &r), 0);
    assert_int_equal(r.status, 200);
    ae_http_resp_free(&r);
}

// ---- chat, on a copy of the model with Qwen3's chat template ----

static void test_chat(void **st) {
    (void)st;
    char *dir = ae_test_tmpdir(), dst[4096], src[4096];
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s/%s", micro(), files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        assert_int_equal(symlink(src, dst), 0);
    }
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    assert_int_equal(symlink(ae_test_src("tests/fixtures/serve/tokenizer_config_qwen3.json"), dst), 0);
    ae_server_opts o = {.model_dir = dir, .device = "cpu", .port = 0, .cache_gb = 0.02,
                        .max_model_len = 512, .served_name = "chatty", .quiet = 1};
    ae_server *s = NULL;
    assert_int_equal(ae_server_start(&o, &s), AE_OK);
    int port = ae_server_port(s);
    const char *body = "{\"model\":\"chatty\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Tell a story.\"}]}],"
                       "\"max_tokens\":12,\"temperature\":0,\"logprobs\":true,\"top_logprobs\":2}";
    ae_http_resp r;
    assert_int_equal(ae_http_request("127.0.0.1", port, "POST", "/v1/chat/completions", body,
                                     strlen(body), NULL, NULL, 60, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "role")->valuestring, "assistant");
    int completion = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint;
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content")), completion);
    char *text = strdup(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "content")->valuestring);
    cJSON_Delete(j);
    ae_http_resp_free(&r);
    // streamed: chunks, the role first, the same text
    const char *sbody = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                        "{\"role\":\"user\",\"content\":\"Tell a story.\"}],\"max_tokens\":12,"
                        "\"temperature\":0,\"stream\":true}";
    assert_int_equal(ae_http_request("127.0.0.1", port, "POST", "/v1/chat/completions", sbody,
                                     strlen(sbody), NULL, NULL, 60, &r), 0);
    assert_int_equal(r.status, 200);
    int done, fin;
    char *st_text = stream_text(r.body, &done, &fin);
    assert_true(done && fin);
    assert_non_null(strstr(r.body, "\"object\":\"chat.completion.chunk\""));
    assert_non_null(strstr(r.body, "\"role\":\"assistant\""));
    assert_string_equal(st_text, text);
    printf("chat: '%s'\n", text);
    free(st_text);
    free(text);
    ae_http_resp_free(&r);
    // with tools (and a tool round in the messages): the prompt grows by the tools block, and
    // the reply (text: the micro model calls no tool) streams the same as it answers whole
    const char *tbody = "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},{\"role\":"
                        "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c0\",\"type\":\"function\","
                        "\"function\":{\"name\":\"w\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
                        "\"tool_call_id\":\"c0\",\"content\":\"sunny\"}],\"tools\":[{\"type\":\"function\","
                        "\"function\":{\"name\":\"w\",\"parameters\":{\"type\":\"object\"}}}],"
                        "\"max_tokens\":10,\"temperature\":0%s}";
    char tb[1024];
    int prompt_tokens[2];
    char *replies[2] = {NULL, NULL};
    for (int stream = 0; stream <= 1; stream++) {
        snprintf(tb, sizeof tb, tbody, stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}" : "");
        assert_int_equal(ae_http_request("127.0.0.1", port, "POST", "/v1/chat/completions", tb,
                                         strlen(tb), NULL, NULL, 60, &r), 0);
        assert_int_equal(r.status, 200);
        const char *u = strstr(r.body, "\"prompt_tokens\":");
        assert_non_null(u);
        prompt_tokens[stream] = atoi(u + 16);
        if (stream) {
            replies[1] = stream_text(r.body, &done, &fin);
            assert_true(done && fin);
        } else {
            j = cJSON_Parse(r.body);
            const cJSON *m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
            assert_null(cJSON_GetObjectItem(m, "tool_calls"));
            replies[0] = strdup(cJSON_GetObjectItem(m, "content")->valuestring);
            cJSON_Delete(j);
        }
        ae_http_resp_free(&r);
    }
    assert_int_equal(prompt_tokens[0], prompt_tokens[1]);
    assert_true(prompt_tokens[0] > 100); // the tools block's instructions alone are ~100 tokens
    assert_string_equal(replies[0], replies[1]);
    printf("chat with tools: %d prompt tokens, '%s'\n", prompt_tokens[0], replies[0]);
    free(replies[0]);
    free(replies[1]);
    snprintf(tb, sizeof tb, tbody, ",\"tool_choice\":\"required\"");
    assert_int_equal(ae_http_request("127.0.0.1", port, "POST", "/v1/chat/completions", tb,
                                     strlen(tb), NULL, NULL, 60, &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"param\":\"tool_choice\""));
    ae_http_resp_free(&r);
    expect_error("POST", "/v1/chat/completions", "{\"messages\":[]}", 400); // on the other server
    ae_server_stop(s);
    ae_test_rmtree(dir);
    free(dir);
}

// ---- addresses: IPv6, URLs ----

// 1 when this machine can listen on ::1 (CI containers may have no IPv6).
static int have_ipv6_loopback(void) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

// --host takes IPv6 addresses (bracketed or not; "::" takes IPv4 clients too), the client and
// `bench serve --url http://[::1]:PORT` reach it; a host that is no address is refused by name.
static void test_ipv6(void **st) {
    (void)st;
    char host[64];
    int port = 0;
    assert_int_equal(ae_http_parse_url("http://[::1]:8000/v1", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8000);
    assert_int_equal(ae_http_parse_url("http://127.0.0.1:80", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    const char *bad_urls[] = {"http://[::1:8000", "http://[::1]8000", "http://[]:80", "http://::1:80/",
                              "https://[::1]:80", "http://[::1]:0", "http://[::1]:x"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++)
        assert_int_equal(ae_http_parse_url(bad_urls[i], host, sizeof host, &port), -1);
    ae_server_opts o = {.model_dir = micro(), .device = "cpu", .port = 0, .cache_gb = 0.02,
                        .max_model_len = 256, .quiet = 1, .host = "example.com"};
    ae_server *s = NULL;
    assert_int_not_equal(ae_server_start(&o, &s), AE_OK);
    assert_non_null(strstr(ae_last_error(), "'example.com': expected an IPv4 or IPv6 address"));
    if (!have_ipv6_loopback()) {
        printf("SKIP ipv6 serving: this machine cannot listen on ::1\n");
        return;
    }
    const char *hosts[] = {"::1", "[::1]", "::"};
    for (size_t i = 0; i < 3; i++) {
        o.host = hosts[i];
        assert_int_equal(ae_server_start(&o, &s), AE_OK);
        int p = ae_server_port(s);
        ae_http_resp r;
        const char *body = "{\"prompt\":[1,2,3],\"max_tokens\":2,\"temperature\":0}";
        assert_int_equal(ae_http_request("::1", p, "POST", "/v1/completions", body, strlen(body),
                                         NULL, NULL, 30, &r), 0);
        assert_int_equal(r.status, 200);
        ae_http_resp_free(&r);
        // "::" is dual stack: an IPv4 client reaches it too; "::1" is IPv6 loopback only
        int v4 = ae_http_request("127.0.0.1", p, "GET", "/health", NULL, 0, NULL, NULL, 30, &r);
        assert_int_equal(v4 == 0 && r.status == 200, i == 2);
        ae_http_resp_free(&r);
        if (i == 0) { // bench serve against a bracketed URL
            char url[64];
            snprintf(url, sizeof url, "http://[::1]:%d", p);
            ae_test_cli_result c = ae_test_cli(ARGS("bench", "serve", "--url", url, "--concurrency",
                                                    "1", "--requests", "2", "--prompt-len", "8",
                                                    "--gen-len", "2"));
            if (c.rc != 0) printf("%s\n", c.err);
            assert_int_equal(c.rc, 0);
            free(c.out);
            free(c.err);
        }
        ae_server_stop(s);
    }
    printf("served on ::1, [::1] and :: (dual stack)\n");
}

// ---- /metrics: the engine's step counters ----

#define MAX_SAMPLES 128

typedef struct {
    char key[128]; // name with its labels
    double v;
} metric;

// Parses Prometheus text: every sample line "KEY VALUE" with a finite value, and every name in a
// "# TYPE" line has a sample. Returns the number of samples (fails the test otherwise).
static int parse_metrics(const char *text, metric *out) {
    int n = 0;
    for (const char *l = text; *l; l = strchr(l, '\n') + 1) {
        const char *eol = strchr(l, '\n');
        assert_non_null(eol); // every line ends with a newline
        if (*l == '#') {
            char name[128];
            if (sscanf(l, "# TYPE %127s", name) == 1) { // a sample of this name follows
                size_t L = strlen(name);
                const char *nx = eol + 1;
                assert_true(!strncmp(nx, name, L) && (nx[L] == ' ' || nx[L] == '{'));
            }
            continue;
        }
        const char *sp = memchr(l, ' ', (size_t)(eol - l));
        assert_non_null(sp);
        assert_true(n < MAX_SAMPLES && (size_t)(sp - l) < sizeof out[n].key);
        memcpy(out[n].key, l, (size_t)(sp - l));
        out[n].key[sp - l] = 0;
        char *end;
        out[n].v = strtod(sp + 1, &end);
        if (end != eol || !isfinite(out[n].v)) printf("bad sample line: %.*s\n", (int)(eol - l), l);
        assert_true(end == eol && isfinite(out[n].v));
        n++;
    }
    return n;
}

static double metric_get(const metric *m, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(m[i].key, key)) return m[i].v;
    printf("/metrics has no %s\n", key);
    fail();
    return 0;
}

static int scrape(metric *m) {
    ae_http_resp r;
    assert_int_equal(ae_http_request("127.0.0.1", g_port, "GET", "/metrics", NULL, 0, NULL, NULL, 10, &r), 0);
    assert_int_equal(r.status, 200);
    int n = parse_metrics(r.body, m);
    ae_http_resp_free(&r);
    return n;
}

static const char *const k_phases[] = {"admit", "tables", "forward", "sync", "sample", "lock", "apply"};

static double phase_seconds(const metric *m, int n, int p) {
    char key[96];
    snprintf(key, sizeof key, "attnedit_engine_phase_seconds_total{phase=\"%s\"}", k_phases[p]);
    return metric_get(m, n, key);
}

// Four greedy requests one after another (16-token prompts: one prefill step each, as
// max_batch_tokens is 64; then max_tokens - 1 decode steps of one token): the counters' changes
// are exactly those steps; the phases add up to the steps' seconds, which with the idle wait
// fit in the server's lifetime.
static void test_metrics_counters(void **st) {
    (void)st;
    static metric a[MAX_SAMPLES], b[MAX_SAMPLES];
    assert_int_equal(sizeof k_phases / sizeof *k_phases, AE_PHASE_COUNT);
    int na = scrape(a);
    const int gen[4] = {3, 5, 8, 4};
    int want_steps = 0, want_decode = 0, want_rows = 0;
    for (int k = 0; k < 4; k++) {
        char body[512];
        int n = sprintf(body, "{\"prompt\":[");
        for (int i = 0; i < 16; i++) n += sprintf(body + n, i ? ",%d" : "%d", 300 + 17 * i + k);
        sprintf(body + n, "],\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,\"stream\":%s}",
                gen[k], k % 2 ? "true" : "false");
        ae_http_resp r;
        assert_int_equal(post("/v1/completions", body, &r), 0);
        assert_int_equal(r.status, 200);
        ae_http_resp_free(&r);
        want_steps += 1 + gen[k] - 1;
        want_decode += gen[k] - 1;
        want_rows += 16 + gen[k] - 1;
    }
    int nb = scrape(b);
    double life = ae_time_now() - g_t_start;
#define D(name) (metric_get(b, nb, name) - metric_get(a, na, name))
    double steps = D("attnedit_engine_steps_total"), dec = D("attnedit_engine_decode_steps_total");
    double dec_tok = D("attnedit_engine_decode_tokens_total"), rows = D("attnedit_engine_rows_total");
    double dec_s = D("attnedit_engine_decode_step_seconds_total");
    double gen_tok = D("attnedit_generation_tokens_total");
#undef D
    double step_s = metric_get(b, nb, "attnedit_engine_step_seconds_total");
    double wait_s = metric_get(b, nb, "attnedit_engine_wait_seconds_total"), sum = 0;
    for (int p = 0; p < AE_PHASE_COUNT; p++) {
        double v = phase_seconds(b, nb, p);
        assert_true(v >= 0 && v >= phase_seconds(a, na, p));
        sum += v;
    }
    printf("/metrics: %d samples; 4 requests: %.0f steps (%.0f decode: %.0f tokens in %.4f s = "
           "%.0f tok/s), %.0f rows; phases %.4f s = steps %.4f s, + wait %.3f s <= %.3f s of "
           "server life\n", nb, steps, dec, dec_tok, dec_s, dec_s > 0 ? dec_tok / dec_s : 0, rows,
           sum, step_s, wait_s, life);
    assert_int_equal((int)steps, want_steps);
    assert_int_equal((int)dec, want_decode);
    assert_int_equal((int)dec_tok, want_decode); // one token a decode step, alone
    assert_int_equal((int)rows, want_rows);
    assert_int_equal((int)gen_tok, 3 + 5 + 8 + 4);
    assert_true(dec_tok <= gen_tok && dec_tok > 0 && dec_s > 0);
    assert_true(fabs(sum - step_s) <= 1e-6 * (step_s + 1)); // printed with 6 decimals
    assert_true(metric_get(b, nb, "attnedit_engine_decode_step_seconds_total") <= step_s);
    assert_true(step_s + wait_s <= life);
    assert_true(metric_get(b, nb, "attnedit_engine_decode_tokens_total") <=
                metric_get(b, nb, "attnedit_generation_tokens_total"));
    assert_true(metric_get(b, nb, "attnedit_engine_decode_steps_total") <=
                metric_get(b, nb, "attnedit_engine_steps_total"));
}

// bench serve against this server: the engine's columns filled (not "-"), and in --json the
// level of one client took exactly its requests' steps (2 x (1 prefill + 5 decode)); the phases
// add up to the step time; decode tok/s is positive.
static void test_bench_serve_engine(void **st) {
    (void)st;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", g_port);
    const char *args[] = {"bench", "serve", "--url", url, "--concurrency", "1,3", "--prompt-len",
                          "16", "--gen-len", "6", "--rounds", "2", NULL, NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
    printf("%s", out);
    assert_non_null(strstr(out, "dec tok/s"));
    int rows = 0;
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        int c, n, failed;
        if (sscanf(l, "%d %d %d |", &c, &n, &failed) != 3) continue;
        const char *eol = strchr(l, '\n'), *bar = l; // the engine's columns: after the 5th '|'
        for (int k = 0; k < 5 && bar; k++) bar = strchr(bar + 1, '|');
        assert_true(bar && bar < eol);
        double v[AE_PHASE_COUNT];
        assert_int_equal(sscanf(bar + 1, "%lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3],
                                &v[4], &v[5], &v[6]), AE_PHASE_COUNT);
        double dec = 0;
        assert_int_equal(sscanf(strchr(bar + 1, '|') + 1, "%lf", &dec), 1);
        assert_true(v[2] > 0 && dec > 0); // forward, decode tok/s
        assert_null(memchr(l, '-', (size_t)(eol - l)));
        rows++;
    }
    assert_int_equal(rows, 2);
    free(out);
    free(err);
    args[12] = "--json";
    assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
    cJSON *j = cJSON_Parse(out);
    assert_int_equal(cJSON_GetArraySize(j), 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *o = cJSON_GetArrayItem(j, i), *e = cJSON_GetObjectItem(o, "engine");
        assert_true(cJSON_IsObject(e));
        double steps = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "steps"));
        double dec = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "decode_steps"));
        double step_ms = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "step_ms")), sum = 0;
        const cJSON *ph = cJSON_GetObjectItem(e, "phase_ms_per_step");
        for (int p = 0; p < AE_PHASE_COUNT; p++) {
            double v = cJSON_GetNumberValue(cJSON_GetObjectItem(ph, k_phases[p]));
            assert_true(isfinite(v) && v >= 0);
            sum += v;
        }
        double dts = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "decode_tokens_per_s"));
        double rows_d = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "rows"));
        printf("level %d: %.0f steps (%.0f decode), %.0f rows, %.3f ms a step (phases %.3f), decode "
               "%.1f tok/s\n", i, steps, dec, rows_d, step_ms, sum, dts);
        int reqs = i == 0 ? 2 : 6;
        assert_int_equal((int)rows_d, reqs * (16 + 5)); // however they were batched
        if (i == 0) { // one client: one request at a time
            assert_int_equal((int)steps, 2 * 6);
            assert_int_equal((int)dec, 2 * 5);
        }
        assert_true(dec > 0 && dec <= steps && dts > 0);
        assert_true(fabs(sum - step_ms) <= 1e-3 * AE_PHASE_COUNT + 1e-6 * step_ms); // %.4f each
    }
    cJSON_Delete(j);
    free(out);
    free(err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_generate),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_concurrent_streams),
        cmocka_unit_test(test_concurrent_sampled_equal_generate),
        cmocka_unit_test(test_echo_equals_eval),
        cmocka_unit_test(test_metrics_counters),
        cmocka_unit_test(test_bench_serve_engine),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_soak),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_ipv6),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, start, stop));
}
