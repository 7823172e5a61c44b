// attnedit serve (--model M | --random-weights CONFIG_DIR [--seed S]) [--host 127.0.0.1] [--port 8000] [--max-seqs N] [--cache-gb G]
//   [--device cpu|cuda[:N]] [--max-batch-tokens N] [--max-model-len N] [--served-model-name S]
//   [--max-queue N] [--max-connections N] [--max-body-mb N] [--page-positions N]
//   [--no-prefix-cache]
// An OpenAI-compatible HTTP server (docs/SERVE.md). Runs until SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "serve/server.h"

static const char k_help[] =
    "usage: attnedit serve (--model MODEL | --random-weights CONFIG_DIR [--seed S]) [--host 127.0.0.1]\n"
    "         [--port 8000] [--max-seqs N] [--cache-gb G] [--device cpu|cuda[:N]]\n"
    "         [--max-batch-tokens N] [--max-model-len N] [--served-model-name NAME]\n"
    "         [--max-queue N] [--max-connections N] [--max-body-mb N] [--page-positions N]\n"
    "         [--no-prefix-cache]\n"
    "  OpenAI-compatible server: POST /v1/completions, POST /v1/chat/completions (stream: SSE),\n"
    "  GET /v1/models, /health, /metrics. Continuous batching over a paged KV cache of --cache-gb\n"
    "  GiB (default: cpu 1, cuda 85% of the free memory); --max-seqs sequences at once (64),\n"
    "  --max-batch-tokens tokens per step (cpu 256, cuda 2048: decode tokens + prefill chunks),\n"
    "  prompt + max_tokens <= --max-model-len (default: the model's limit, at most 32768).\n"
    "  Listens on 127.0.0.1 unless --host says otherwise (an IPv4 or IPv6 address: 0.0.0.0 every\n"
    "  IPv4 interface, ::1 IPv6 loopback, :: every interface). --port 0: any free port.\n"
    "  Prefix caching (default on; --no-prefix-cache: off): a prompt starting with the tokens of\n"
    "  an earlier request reuses the KV pages of their whole blocks instead of computing them\n"
    "  (not for models with sliding-window layers, nor for echo requests).\n"
    "  --random-weights: a benchmarking mode; the model of CONFIG_DIR/config.json (a teacher or a\n"
    "  student) with random weights made on the device (--seed, default 0), no checkpoint read.\n"
    "  Without a CONFIG_DIR/tokenizer.json prompts must be token ids and responses carry\n"
    "  token_ids instead of text.\n";

int ae_cmd_serve(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "serve"};
    ae_server_opts o;
    memset(&o, 0, sizeof o);
    o.port = 8000;
    const char *v, *random_dir = NULL;
    int r, mb = 0, seed_given = 0;
    float gb = 0;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--model", &o.model_dir)) ||
            (r = ae_args_value(&a, "--host", &o.host)) ||
            (r = ae_args_value(&a, "--device", &o.device)) ||
            (r = ae_args_value(&a, "--served-model-name", &o.served_name)) ||
            (r = ae_args_value(&a, "--random-weights", &random_dir))) {
        } else if ((r = ae_args_value(&a, "--seed", &v))) {
            if (r > 0) st = ae_parse_u64(v, "--seed", &o.seed);
            seed_given = 1;
        } else if ((r = ae_args_value(&a, "--port", &v))) {
            if (r > 0) st = ae_parse_int(v, "--port", 0, 65535, &o.port);
        } else if ((r = ae_args_value(&a, "--max-seqs", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-seqs", 1, 65536, &o.max_seqs);
        } else if ((r = ae_args_value(&a, "--max-batch-tokens", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-batch-tokens", 1, 1 << 20, &o.max_batch_tokens);
        } else if ((r = ae_args_value(&a, "--max-model-len", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-model-len", 2, 1 << 24, &o.max_model_len);
        } else if ((r = ae_args_value(&a, "--max-queue", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-queue", 1, 1 << 24, &o.max_queue);
        } else if ((r = ae_args_value(&a, "--max-connections", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-connections", 1, 65536, &o.max_connections);
        } else if ((r = ae_args_value(&a, "--max-body-mb", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-body-mb", 1, 4096, &mb);
        } else if ((r = ae_args_value(&a, "--page-positions", &v))) {
            if (r > 0) st = ae_parse_int(v, "--page-positions", 1, 4096, &o.page_positions);
        } else if ((r = ae_args_value(&a, "--cache-gb", &v))) {
            if (r > 0) {
                st = ae_parse_float(v, "--cache-gb", &gb);
                if (st == AE_OK && !(gb > 0 && gb < 1e6))
                    st = ae_errorf(AE_ERR_ARG, "--cache-gb must be a positive number, got '%s'", v);
            }
        } else if (ae_args_flag(&a, "--no-prefix-cache")) {
            o.no_prefix_cache = 1;
        } else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("serve");
    }
    if (!o.model_dir == !random_dir) {
        fprintf(stderr, "attnedit serve: need --model or --random-weights (one of them)\n%s", k_help);
        return 2;
    }
    if (seed_given && !random_dir) {
        fprintf(stderr, "attnedit serve: --seed goes with --random-weights (a --model has its weights)\n");
        return 2;
    }
    if (random_dir) {
        o.model_dir = random_dir;
        o.random_weights = 1;
    }
    if (ae_cli_check_model("serve", o.model_dir)) return 1;
    o.cache_gb = gb;
    o.max_body = (size_t)mb << 20;
    // Signals are taken by sigwait below; every thread started from here inherits the mask.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    ae_server *srv = NULL;
    if (ae_server_start(&o, &srv) != AE_OK) return ae_cli_fail("serve");
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "attnedit serve: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    ae_server_stop(srv);
    return 0;
}
