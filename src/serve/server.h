// `attnedit serve` as a library: model + tokenizer + engine + HTTP server started together
// (the CLI and the tests use it).
#ifndef AE_SERVE_SERVER_H
#define AE_SERVE_SERVER_H

#include "serve/engine.h"
#include "serve/http.h"

typedef struct {
    const char *model_dir;     // a Hugging Face model folder; with random_weights a folder with
                               // config.json only (tokenizer.json optional)
    int random_weights;        // 1: weights drawn at random on the device (ae_model_random with
                               // seed), for benchmarks: no checkpoint is read
    uint64_t seed;
    const char *device;        // --device (NULL: auto)
    const char *served_name;   // NULL: the model folder's name
    const char *host;
    int port;
    double cache_gb;           // 0: default (cpu 1 GiB; cuda 85% of the free memory)
    int max_seqs, max_batch_tokens, max_model_len, max_queue, page_positions;
    int max_connections;
    size_t max_body;
    int no_prefix_cache;       // 1: no prefix caching (serve/engine.h)
    int quiet;                 // 1: print nothing
} ae_server_opts;

typedef struct ae_server ae_server;

// Fills defaults for the zero fields.
void ae_server_opts_defaults(ae_server_opts *o);
ae_status ae_server_start(const ae_server_opts *o, ae_server **out);
int ae_server_port(const ae_server *s);
ae_engine *ae_server_engine(ae_server *s);
void ae_server_stop(ae_server *s);

#endif
