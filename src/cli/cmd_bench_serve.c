// attnedit bench serve --url URL [--concurrency 1,8,32] [--prompt-len N] [--gen-len M]
//   [--requests N | --rounds R] [--model NAME] [--extra-body JSON] [--seed S]
//   [--temperature T] [--top-p P] [--shared-prefix N] [--json]
// Load generator for an OpenAI-compatible server (attnedit serve, llama-server, vLLM, ...):
// at each concurrency level, that many client threads send streaming /v1/completions requests
// back to back (random token-id prompts of --prompt-len, --gen-len tokens each, eos ignored,
// greedy unless --temperature says otherwise) until --requests are done, and report time to first token, time per output token,
// end-to-end latency (p50/p90/p99) and throughput. TTFT ends at the first server-sent event
// ("data:"), so SSE comments a server sends while a long prompt is read (llama-server's pings)
// do not count as the first token. Against attnedit serve it also reads the engine's counters
// from GET /metrics before and after each level: the step phases (ms per step) and the
// server-side decode throughput (tokens of decode-only steps / their seconds).
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
#include "serve/engine.h"
#include "serve/http_client.h"

static const char k_help[] =
    "usage: attnedit bench serve --url URL [--concurrency 1,8,32] [--prompt-len N] [--gen-len M]\n"
    "         [--requests N | --rounds R] [--model NAME] [--extra-body JSON] [--seed S]\n"
    "         [--temperature T] [--top-p P] [--shared-prefix N] [--json]\n"
    "  Streams --requests completions (or R x concurrency with --rounds; default: 4 x\n"
    "  concurrency, at least 8) at each concurrency level against URL (http://HOST:PORT; IPv6:\n"
    "  http://[::1]:PORT),\n"
    "  prompts of --prompt-len random token ids (default 128), --gen-len new tokens each\n"
    "  (default 64; ignore_eos). --temperature T (default 0: greedy) and --top-p P (default 1)\n"
    "  are sent in every request: T > 0 measures a sampled load (chat clients' default).\n"
    "  --shared-prefix N: the first N of the --prompt-len ids are the same in every request (a\n"
    "  system prompt), the rest its own: measures a server's prefix caching (default 0).\n"
    "  --extra-body: a JSON object whose fields are added to\n"
    "  every request (another server's extensions, e.g. '{\"cache_prompt\":false}' for\n"
    "  llama-server). Prints TTFT, TPOT and end-to-end latency percentiles (ms) and throughput\n"
    "  (tokens/s), or JSON with --json.\n"
    "  Against attnedit serve, the engine's counters from GET /metrics before and after each\n"
    "  level add (\"-\" for another server): ms per engine step in each phase (admit: admission\n"
    "  and batch; tables: step tables upload; fwd: the forward's host launch time; sync: the\n"
    "  host waiting for the device; sample: sampling and detokenizing; lock: taking the lock\n"
    "  back from the HTTP threads; apply: publishing the tokens) and dec tok/s, the server's\n"
    "  decode throughput (tokens of steps without prefill rows / those steps' seconds); --json:\n"
    "  \"engine\" (null for another server).\n";

typedef struct {
    double ttft, tpot, e2e;
    int tokens, ok;
} sample;

typedef struct {
    const char *host, *model;
    const char *extra;        // ",\"k\":v..." fields added to every body, or ""
    int port, prompt_len, gen_len, n_req;
    int shared_prefix;        // the first ids of every prompt, the same for all requests
    float temperature, top_p; // sent in every request (0: greedy)
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
        ae_rng r, shared; // the shared prefix's ids are drawn from one seed for every request
        ae_rng_seed(&r, j->seed + (uint64_t)i);
        ae_rng_seed(&shared, j->seed ^ 0x5eedull);
        size_t n = (size_t)snprintf(body, cap, "{%s%s%s\"prompt\":[", j->model ? "\"model\":\"" : "",
                                    j->model ? j->model : "", j->model ? "\"," : "");
        for (int k = 0; k < j->prompt_len; k++)
            n += (size_t)snprintf(body + n, cap - n, k ? ",%d" : "%d",
                                  100 + (int)(ae_rng_uniform(k < j->shared_prefix ? &shared : &r) * 900));
        n += (size_t)snprintf(body + n, cap - n,
                              "],\"max_tokens\":%d,\"temperature\":%.9g,\"top_p\":%.9g,"
                              "\"ignore_eos\":true,\"stream\":true,"
                              "\"stream_options\":{\"include_usage\":true}%s}",
                              j->gen_len, j->temperature, j->top_p, j->extra);
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

// The engine counters of attnedit serve's GET /metrics (serve/http.c); ok = 0 when the server
// has not all of them (another server, or no /metrics).
typedef struct {
    int ok;
    double phase_s[AE_PHASE_COUNT];
    double steps, step_s, wait_s, rows, gen_tokens, decode_steps, decode_step_s, decode_tokens;
} engine_counters;

// The value of the sample `key` (name with its labels) in Prometheus text; 0 when absent.
static int metric_value(const char *text, const char *key, double *v) {
    size_t L = strlen(key);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, L) || l[L] != ' ') continue;
        char *end;
        *v = strtod(l + L + 1, &end);
        return end != l + L + 1 && isfinite(*v);
    }
    return 0;
}

static void scrape_engine(const char *host, int port, engine_counters *ec) {
    memset(ec, 0, sizeof *ec);
    ae_http_resp r;
    if (ae_http_request(host, port, "GET", "/metrics", NULL, 0, NULL, NULL, 30.0, &r) != 0 ||
        r.status != 200 || !r.body) {
        ae_http_resp_free(&r);
        return;
    }
    struct {
        const char *name;
        double *v;
    } k[] = {{"attnedit_engine_steps_total", &ec->steps},
             {"attnedit_engine_step_seconds_total", &ec->step_s},
             {"attnedit_engine_wait_seconds_total", &ec->wait_s},
             {"attnedit_engine_rows_total", &ec->rows},
             {"attnedit_generation_tokens_total", &ec->gen_tokens},
             {"attnedit_engine_decode_steps_total", &ec->decode_steps},
             {"attnedit_engine_decode_step_seconds_total", &ec->decode_step_s},
             {"attnedit_engine_decode_tokens_total", &ec->decode_tokens}};
    int ok = 1;
    for (size_t i = 0; i < sizeof k / sizeof *k; i++) ok &= metric_value(r.body, k[i].name, k[i].v);
    for (int p = 0; p < AE_PHASE_COUNT; p++) {
        char key[96];
        snprintf(key, sizeof key, "attnedit_engine_phase_seconds_total{phase=\"%s\"}",
                 ae_engine_phase_name((ae_engine_phase)p));
        ok &= metric_value(r.body, key, &ec->phase_s[p]);
    }
    ec->ok = ok;
    ae_http_resp_free(&r);
}

// One level's engine numbers: the counters' differences (after - before).
typedef struct {
    int ok;                   // both scrapes had the counters and at least one step ran
    double steps, decode_steps, rows, wait_s;
    double phase_ms[AE_PHASE_COUNT]; // per step
    double step_ms, decode_step_ms;  // per step, per decode step
    double decode_tok_s, step_tok_s; // decode steps' tokens / their seconds; all steps' likewise
} engine_delta;

static engine_delta engine_diff(const engine_counters *a, const engine_counters *b) {
    engine_delta d;
    memset(&d, 0, sizeof d);
    d.steps = b->steps - a->steps;
    d.ok = a->ok && b->ok && d.steps > 0;
    if (!d.ok) return d;
    d.decode_steps = b->decode_steps - a->decode_steps;
    d.rows = b->rows - a->rows;
    d.wait_s = b->wait_s - a->wait_s;
    for (int p = 0; p < AE_PHASE_COUNT; p++) d.phase_ms[p] = (b->phase_s[p] - a->phase_s[p]) * 1e3 / d.steps;
    double step_s = b->step_s - a->step_s, dec_s = b->decode_step_s - a->decode_step_s;
    d.step_ms = step_s * 1e3 / d.steps;
    d.decode_step_ms = d.decode_steps > 0 ? dec_s * 1e3 / d.decode_steps : 0;
    d.decode_tok_s = dec_s > 0 ? (b->decode_tokens - a->decode_tokens) / dec_s : 0;
    d.step_tok_s = step_s > 0 ? (b->gen_tokens - a->gen_tokens) / step_s : 0;
    return d;
}

static void print_engine_json(const engine_delta *d) {
    if (!d->ok) {
        printf(",\"engine\":null");
        return;
    }
    printf(",\"engine\":{\"steps\":%.0f,\"decode_steps\":%.0f,\"rows\":%.0f,\"phase_ms_per_step\":{",
           d->steps, d->decode_steps, d->rows);
    for (int p = 0; p < AE_PHASE_COUNT; p++)
        printf("%s\"%s\":%.4f", p ? "," : "", ae_engine_phase_name((ae_engine_phase)p), d->phase_ms[p]);
    printf("},\"step_ms\":%.4f,\"decode_step_ms\":%.4f,\"decode_tokens_per_s\":%.3f,"
           "\"step_tokens_per_s\":%.3f,\"wait_s\":%.4f}",
           d->step_ms, d->decode_step_ms, d->decode_tok_s, d->step_tok_s, d->wait_s);
}

// The table's engine columns: ms per step by phase, then decode tok/s ("-" without them).
static void print_engine_cols(const engine_delta *d) {
    printf(" |");
    for (int p = 0; p < AE_PHASE_COUNT; p++) {
        if (d->ok) printf(" %6.3f", d->phase_ms[p]);
        else printf(" %6s", "-");
    }
    if (d->ok && d->decode_steps > 0) printf(" | %9.1f", d->decode_tok_s);
    else printf(" | %9s", "-");
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
    int prompt_len = 128, gen_len = 64, n_req = 0, rounds = 0, json = 0, r, shared_prefix = 0;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 1;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--url", &url)) || (r = ae_args_value(&a, "--concurrency", &conc)) ||
            (r = ae_args_value(&a, "--model", &model)) ||
            (r = ae_args_value(&a, "--extra-body", &extra_json))) {
        } else if ((r = ae_args_value(&a, "--prompt-len", &v))) {
            if (r > 0) st = ae_parse_int(v, "--prompt-len", 1, 1 << 20, &prompt_len);
        } else if ((r = ae_args_value(&a, "--shared-prefix", &v))) {
            if (r > 0) st = ae_parse_int(v, "--shared-prefix", 0, 1 << 20, &shared_prefix);
        } else if ((r = ae_args_value(&a, "--gen-len", &v))) {
            if (r > 0) st = ae_parse_int(v, "--gen-len", 1, 1 << 20, &gen_len);
        } else if ((r = ae_args_value(&a, "--requests", &v))) {
            if (r > 0) st = ae_parse_int(v, "--requests", 1, 1 << 24, &n_req);
        } else if ((r = ae_args_value(&a, "--rounds", &v))) {
            if (r > 0) st = ae_parse_int(v, "--rounds", 1, 1 << 16, &rounds);
        } else if ((r = ae_args_value(&a, "--temperature", &v))) {
            if (r > 0) st = ae_parse_float(v, "--temperature", &temperature);
            if (st == AE_OK && !(temperature >= 0.0f && temperature <= 100.0f))
                st = ae_errorf(AE_ERR_ARG, "--temperature must be in [0, 100], got %s", v);
        } else if ((r = ae_args_value(&a, "--top-p", &v))) {
            if (r > 0) st = ae_parse_float(v, "--top-p", &top_p);
            if (st == AE_OK && !(top_p > 0.0f && top_p <= 1.0f))
                st = ae_errorf(AE_ERR_ARG, "--top-p must be in (0, 1], got %s", v);
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
    if (shared_prefix > prompt_len) {
        fprintf(stderr, "attnedit bench serve: --shared-prefix %d is longer than --prompt-len %d "
                        "(the shared ids are the first of the prompt)\n", shared_prefix, prompt_len);
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
        printf("%5s %5s %8s | %8s %8s %8s | %7s %7s %7s | %8s %8s %8s | %9s %7s | %6s %6s %6s %6s "
               "%6s %6s %6s | %9s\n", "conc", "reqs", "failed", "ttft50", "ttft90", "ttft99",
               "tpot50", "tpot90", "tpot99", "e2e50", "e2e90", "e2e99", "tok/s", "req/s", "admit",
               "tables", "fwd", "sync", "sample", "lock", "apply", "dec tok/s");
    int rc = 0;
    for (int li = 0; li < nl; li++) {
        int c = levels[li], n = n_req ? n_req : rounds ? rounds * c : (4 * c > 8 ? 4 * c : 8);
        job j = {.host = host, .model = model, .extra = extra, .port = port, .prompt_len = prompt_len,
                 .gen_len = gen_len, .n_req = n, .temperature = temperature, .top_p = top_p,
                 .seed = seed * 1000003u, .shared_prefix = shared_prefix};
        pthread_mutex_init(&j.mu, NULL);
        j.s = calloc((size_t)n, sizeof *j.s);
        pthread_t *th = calloc((size_t)c, sizeof *th);
        engine_counters before, after;
        scrape_engine(host, port, &before);
        double t0 = ae_time_now();
        for (int k = 0; k < c; k++) pthread_create(&th[k], NULL, worker, &j);
        for (int k = 0; k < c; k++) pthread_join(th[k], NULL);
        double wall = ae_time_now() - t0;
        // every request has its last token: the steps that made them are counted (the engine
        // counts a step before it publishes the step's tokens)
        scrape_engine(host, port, &after);
        engine_delta ed = engine_diff(&before, &after);
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
        if (json) {
            printf("%s{\"concurrency\":%d,\"requests\":%d,\"failed\":%d,\"prompt_len\":%d,"
                   "\"shared_prefix\":%d,\"gen_len\":%d,\"temperature\":%g,\"top_p\":%g,\"ttft_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f},"
                   "\"tpot_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f},"
                   "\"e2e_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f},"
                   "\"output_tokens_per_s\":%.3f,\"requests_per_s\":%.4f,\"wall_s\":%.3f",
                   li ? "," : "", c, n, n - ok, prompt_len, shared_prefix, gen_len, temperature, top_p,
                   pct(tt, ok, 50),
                   pct(tt, ok, 90), pct(tt, ok, 99), pct(tp, ok, 50), pct(tp, ok, 90),
                   pct(tp, ok, 99), pct(ee, ok, 50), pct(ee, ok, 90), pct(ee, ok, 99),
                   toks / wall, ok / wall, wall);
            print_engine_json(&ed);
            printf("}");
        } else {
            printf("%5d %5d %8d | %8.1f %8.1f %8.1f | %7.2f %7.2f %7.2f | %8.1f %8.1f %8.1f | "
                   "%9.1f %7.2f",
                   c, n, n - ok, pct(tt, ok, 50), pct(tt, ok, 90), pct(tt, ok, 99), pct(tp, ok, 50),
                   pct(tp, ok, 90), pct(tp, ok, 99), pct(ee, ok, 50), pct(ee, ok, 90),
                   pct(ee, ok, 99), toks / wall, ok / wall);
            print_engine_cols(&ed);
            printf("\n");
        }
        fflush(stdout);
        free(tt);
        free(tp);
        free(ee);
        free(th);
        free(j.s);
        pthread_mutex_destroy(&j.mu);
    }
    if (json) printf("]\n");
    else printf("(ms; prompt %d tokens (%d shared), %d generated per request, temperature %g, top_p %g; tok/s = generated tokens / wall;\n"
                " admit..apply: the server's ms per engine step by phase, sync = waiting for the GPU;\n"
                " dec tok/s: the server's tokens of decode-only steps / their seconds)\n",
                prompt_len, shared_prefix, gen_len, temperature, top_p);
    free(levels);
    free(extra);
    return rc;
}

int ae_cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "serve")) return bench_serve(argc - 1, argv + 1);
    fprintf(stderr, "usage: attnedit bench serve --url URL ... (see attnedit bench serve --help)\n");
    return 2;
}
