// attnedit bench serve --url URL [--concurrency 1,8,32] [--prompt-len N] [--gen-len M]
//   [--requests N | --rounds R] [--model NAME] [--extra-body JSON] [--seed S] [--json]
// Load generator for an OpenAI-compatible server (attnedit serve, llama-server, vLLM, ...):
// at each concurrency level, that many client threads send streaming /v1/completions requests
// back to back (random token-id prompts of --prompt-len, --gen-len tokens each, eos ignored,
// greedy) until --requests are done, and report time to first token, time per output token,
// end-to-end latency (p50/p90/p99) and throughput. TTFT ends at the first server-sent event
// ("data:"), so SSE comments a server sends while a long prompt is read (llama-server's pings)
// do not count as the first token.
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/log.h"
#include "core/rng.h"
#include "serve/http_client.h"

static const char k_help[] =
    "usage: attnedit bench serve --url URL [--concurrency 1,8,32] [--prompt-len N] [--gen-len M]\n"
    "         [--requests N | --rounds R] [--model NAME] [--extra-body JSON] [--seed S] [--json]\n"
    "  Streams --requests completions (or R x concurrency with --rounds; default: 4 x\n"
    "  concurrency, at least 8) at each concurrency level against URL (http://HOST:PORT),\n"
    "  prompts of --prompt-len random token ids (default 128), --gen-len new tokens each\n"
    "  (default 64; greedy, ignore_eos). --extra-body: a JSON object whose fields are added to\n"
    "  every request (another server's extensions, e.g. '{\"cache_prompt\":false}' for\n"
    "  llama-server). Prints TTFT, TPOT and end-to-end latency percentiles (ms) and throughput\n"
    "  (tokens/s), or JSON with --json.\n";

typedef struct {
    double ttft, tpot, e2e;
    int tokens, ok;
} sample;

typedef struct {
    const char *host, *model;
    const char *extra;        // ",\"k\":v..." fields added to every body, or ""
    int port, prompt_len, gen_len, n_req;
    uint64_t seed;
    pthread_mutex_t mu;
    int next, reported;       // reported: a failure was printed (the first of the level)
    sample *s;
} job;

typedef struct {
    double t0, first;
    int matched;              // bytes of "data:" matched so far (across chunks)
} timing;

static int on_data(void *ud, const char *d, size_t n) {
    static const char k_event[] = "data:";
    timing *t = ud;
    for (size_t i = 0; i < n && !t->first; i++) {
        t->matched = d[i] == k_event[t->matched] ? t->matched + 1 : d[i] == k_event[0];
        if (t->matched == (int)sizeof k_event - 1) t->first = ae_time_now();
    }
    return 0;
}

static void *worker(void *arg) {
    job *j = arg;
    size_t cap = (size_t)j->prompt_len * 8 + 512 + strlen(j->extra);
    char *body = malloc(cap);
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int i = j->next < j->n_req ? j->next++ : -1;
        pthread_mutex_unlock(&j->mu);
        if (i < 0 || !body) break;
        ae_rng r;
        ae_rng_seed(&r, j->seed + (uint64_t)i);
        size_t n = (size_t)snprintf(body, cap, "{%s%s%s\"prompt\":[", j->model ? "\"model\":\"" : "",
                                    j->model ? j->model : "", j->model ? "\"," : "");
        for (int k = 0; k < j->prompt_len; k++)
            n += (size_t)snprintf(body + n, cap - n, k ? ",%d" : "%d", 100 + (int)(ae_rng_uniform(&r) * 900));
        n += (size_t)snprintf(body + n, cap - n,
                              "],\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,"
                              "\"stream\":true,\"stream_options\":{\"include_usage\":true}%s}",
                              j->gen_len, j->extra);
        timing t = {.t0 = ae_time_now()};
        ae_http_resp resp;
        int rc = ae_http_request(j->host, j->port, "POST", "/v1/completions", body, n, on_data, &t,
                                 600.0, &resp);
        double end = ae_time_now();
        sample *s = &j->s[i];
        const char *u = resp.body ? strstr(resp.body, "\"completion_tokens\":") : NULL;
        s->ok = rc == 0 && resp.status == 200 && u && strstr(resp.body, "data: [DONE]");
        pthread_mutex_lock(&j->mu);
        int report = !s->ok && !j->reported;
        if (report) j->reported = 1;
        pthread_mutex_unlock(&j->mu);
        if (report)
            fprintf(stderr, "bench serve: request failed (status %d%s%s): %.200s\n", resp.status,
                    resp.err[0] ? ", " : "", resp.err, resp.body ? resp.body : "");
        s->tokens = u ? atoi(u + 20) : 0;
        s->e2e = end - t.t0;
        s->ttft = (t.first ? t.first : end) - t.t0;
        s->tpot = s->tokens > 1 ? (s->e2e - s->ttft) / (s->tokens - 1) : 0;
        ae_http_resp_free(&resp);
    }
    free(body);
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    if (n == 0) return 0;
    int k = (int)ceil(p / 100.0 * n) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

// --extra-body: a JSON object, turned into ",\"k\":v,..." to splice into each request body
// (*out heap; "" without the option). Returns 0, or prints why it is refused and returns 1.
static int extra_fields(const char *json, char **out) {
    *out = NULL;
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    if (json && !cJSON_IsObject(j)) {
        fprintf(stderr, "attnedit bench serve: --extra-body must be a JSON object, e.g. "
                        "'{\"cache_prompt\":false}' (got '%.80s')\n", json);
        cJSON_Delete(j);
        return 1;
    }
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    size_t L = s ? strlen(s) : 0;
    *out = malloc(L + 1);
    if (!*out) {
        free(s);
        return 1;
    }
    (*out)[0] = 0;
    if (L > 2) { // "{...}" -> ",..."
        (*out)[0] = ',';
        memcpy(*out + 1, s + 1, L - 2);
        (*out)[L - 1] = 0;
    }
    free(s);
    return 0;
}

static int bench_serve(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "bench serve"};
    const char *url = NULL, *conc = "1,8,32", *model = NULL, *extra_json = NULL, *v;
    int prompt_len = 128, gen_len = 64, n_req = 0, rounds = 0, json = 0, r;
    uint64_t seed = 1;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--url", &url)) || (r = ae_args_value(&a, "--concurrency", &conc)) ||
            (r = ae_args_value(&a, "--model", &model)) ||
            (r = ae_args_value(&a, "--extra-body", &extra_json))) {
        } else if ((r = ae_args_value(&a, "--prompt-len", &v))) {
            if (r > 0) st = ae_parse_int(v, "--prompt-len", 1, 1 << 20, &prompt_len);
        } else if ((r = ae_args_value(&a, "--gen-len", &v))) {
            if (r > 0) st = ae_parse_int(v, "--gen-len", 1, 1 << 20, &gen_len);
        } else if ((r = ae_args_value(&a, "--requests", &v))) {
            if (r > 0) st = ae_parse_int(v, "--requests", 1, 1 << 24, &n_req);
        } else if ((r = ae_args_value(&a, "--rounds", &v))) {
            if (r > 0) st = ae_parse_int(v, "--rounds", 1, 1 << 16, &rounds);
        } else if ((r = ae_args_value(&a, "--seed", &v))) {
            if (r > 0) st = ae_parse_u64(v, "--seed", &seed);
        } else if (ae_args_flag(&a, "--json")) {
            json = 1;
        } else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("bench serve");
    }
    char host[256];
    int port = 0;
    if (!url || ae_http_parse_url(url, host, sizeof host, &port)) {
        fprintf(stderr, "attnedit bench serve: need --url http://HOST:PORT\n%s", k_help);
        return 2;
    }
    if (n_req && rounds) {
        fprintf(stderr, "attnedit bench serve: --requests and --rounds exclude each other\n");
        return 2;
    }
    char *extra = NULL;
    if (extra_fields(extra_json, &extra)) return 2;
    int *levels = NULL, nl = 0;
    if (ae_parse_int_list(conc, "--concurrency", 1, 4096, &levels, &nl) != AE_OK) {
        free(extra);
        return ae_cli_fail("bench serve");
    }
    if (json) printf("[");
    else
        printf("%5s %5s %8s | %8s %8s %8s | %7s %7s %7s | %8s %8s %8s | %9s %7s\n", "conc", "reqs",
               "failed", "ttft50", "ttft90", "ttft99", "tpot50", "tpot90", "tpot99", "e2e50",
               "e2e90", "e2e99", "tok/s", "req/s");
    int rc = 0;
    for (int li = 0; li < nl; li++) {
        int c = levels[li], n = n_req ? n_req : rounds ? rounds * c : (4 * c > 8 ? 4 * c : 8);
        job j = {.host = host, .model = model, .extra = extra, .port = port, .prompt_len = prompt_len,
                 .gen_len = gen_len, .n_req = n, .seed = seed * 1000003u};
        pthread_mutex_init(&j.mu, NULL);
        j.s = calloc((size_t)n, sizeof *j.s);
        pthread_t *th = calloc((size_t)c, sizeof *th);
        double t0 = ae_time_now();
        for (int k = 0; k < c; k++) pthread_create(&th[k], NULL, worker, &j);
        for (int k = 0; k < c; k++) pthread_join(th[k], NULL);
        double wall = ae_time_now() - t0;
        double *tt = malloc(sizeof(double) * n), *tp = malloc(sizeof(double) * n),
               *ee = malloc(sizeof(double) * n);
        int ok = 0;
        long toks = 0;
        for (int i = 0; i < n; i++) {
            if (!j.s[i].ok) continue;
            tt[ok] = j.s[i].ttft * 1e3;
            tp[ok] = j.s[i].tpot * 1e3;
            ee[ok] = j.s[i].e2e * 1e3;
            toks += j.s[i].tokens;
            ok++;
        }
        qsort(tt, ok, sizeof *tt, cmp_d);
        qsort(tp, ok, sizeof *tp, cmp_d);
        qsort(ee, ok, sizeof *ee, cmp_d);
        if (ok < n) rc = 1;
        if (json)
            printf("%s{\"concurrency\":%d,\"requests\":%d,\"failed\":%d,\"prompt_len\":%d,"
                   "\"gen_len\":%d,\"ttft_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f},"
                   "\"tpot_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f},"
                   "\"e2e_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f},"
                   "\"output_tokens_per_s\":%.3f,\"requests_per_s\":%.4f,\"wall_s\":%.3f}",
                   li ? "," : "", c, n, n - ok, prompt_len, gen_len, pct(tt, ok, 50),
                   pct(tt, ok, 90), pct(tt, ok, 99), pct(tp, ok, 50), pct(tp, ok, 90),
                   pct(tp, ok, 99), pct(ee, ok, 50), pct(ee, ok, 90), pct(ee, ok, 99),
                   toks / wall, ok / wall, wall);
        else
            printf("%5d %5d %8d | %8.1f %8.1f %8.1f | %7.2f %7.2f %7.2f | %8.1f %8.1f %8.1f | "
                   "%9.1f %7.2f\n",
                   c, n, n - ok, pct(tt, ok, 50), pct(tt, ok, 90), pct(tt, ok, 99), pct(tp, ok, 50),
                   pct(tp, ok, 90), pct(tp, ok, 99), pct(ee, ok, 50), pct(ee, ok, 90),
                   pct(ee, ok, 99), toks / wall, ok / wall);
        fflush(stdout);
        free(tt);
        free(tp);
        free(ee);
        free(th);
        free(j.s);
        pthread_mutex_destroy(&j.mu);
    }
    if (json) printf("]\n");
    else printf("(ms; prompt %d tokens, %d generated per request; tok/s = generated tokens / wall)\n",
                prompt_len, gen_len);
    free(levels);
    free(extra);
    return rc;
}

int ae_cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "serve")) return bench_serve(argc - 1, argv + 1);
    fprintf(stderr, "usage: attnedit bench serve --url URL ... (see attnedit bench serve --help)\n");
    return 2;
}
