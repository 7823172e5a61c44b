// The HTTP front of `attnedit serve`, on GNU libmicrohttpd (thread per connection):
//   POST /v1/completions, POST /v1/chat/completions  (serve/api.h; "stream": true -> SSE)
//   GET  /v1/models, /health, /metrics (Prometheus text)
// Errors are OpenAI-style JSON with a 4xx/5xx status; a client that disconnects (seen by a
// hang-up on its socket while its request runs) has its sequence cancelled.
#ifndef AE_SERVE_HTTP_H
#define AE_SERVE_HTTP_H

#include <stddef.h>

#include "serve/api.h"
#include "serve/engine.h"

typedef struct {
    const char *host;        // IPv4 address or "localhost" (default 127.0.0.1)
    int port;                // 0: any free port (ae_http_port tells which)
    int max_connections;     // beyond it new connections are closed at once
    size_t max_body;         // bytes; larger bodies get 413
    ae_engine *engine;
    ae_api_ctx api;          // tokenizer, model name, chat template, limits
} ae_http_opts;

typedef struct ae_http ae_http;

ae_status ae_http_start(const ae_http_opts *o, ae_http **out);
int ae_http_port(const ae_http *h);
void ae_http_stop(ae_http *h);

#endif
