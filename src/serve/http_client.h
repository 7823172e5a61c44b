// A small blocking HTTP/1.1 client over plain sockets (one request per connection), for the
// load generator (`attnedit bench serve`) and the server tests: sends a request, reads the
// status and the body (Content-Length, chunked or until close), handing each piece of the
// body to a callback as it arrives (server-sent events).
#ifndef AE_SERVE_HTTP_CLIENT_H
#define AE_SERVE_HTTP_CLIENT_H

#include <stddef.h>

typedef struct {
    int status;     // HTTP status, 0 when no response came
    char *body;     // heap, NUL-terminated (all of it, also when streamed to the callback)
    size_t len;
    char err[160];  // why status is 0
} ae_http_resp;

// Return non-zero to close the connection early (a client that disconnects).
typedef int (*ae_http_data_fn)(void *ud, const char *data, size_t n);

// 0 on a complete response, -1 otherwise (out->err says why; out->body holds what came).
// body may be NULL (no body). timeout_s bounds each wait for the server.
int ae_http_request(const char *host, int port, const char *method, const char *path,
                    const char *body, size_t body_len, ae_http_data_fn fn, void *ud,
                    double timeout_s, ae_http_resp *out);
void ae_http_resp_free(ae_http_resp *r);
// "http://HOST:PORT[/...]" (an IPv6 HOST in brackets: "http://[::1]:8000") -> host (buffer of hn
// bytes, without brackets) and port; 0 on success.
int ae_http_parse_url(const char *url, char *host, size_t hn, int *port);

#endif
