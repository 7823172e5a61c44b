// HTTP server of `attnedit serve` (serve/http.h) on libmicrohttpd.
#define _GNU_SOURCE // POLLRDHUP
#include "serve/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/mem.h"
#include "serve/netaddr.h"

struct ae_http {
    ae_http_opts o;
    struct MHD_Daemon *d;
    pthread_mutex_t mu;      // api.seed_counter and the counters below
    long requests, errors, next_id;
};

typedef struct {             // one HTTP request
    char *body;
    size_t len, cap;
    int too_big;
} conn_state;

// ---------------------------------------------------------------------------------------------
// Helpers

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *ctype,
                                 char *body) { // takes body (heap)
    if (!body) {
        body = ae_strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
        status = 500;
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(ae_http *h, struct MHD_Connection *c, const ae_api_error *e) {
    pthread_mutex_lock(&h->mu);
    h->errors++;
    pthread_mutex_unlock(&h->mu);
    return send_text(c, (unsigned)e->status, "application/json", ae_api_error_json(e));
}

static enum MHD_Result fail(ae_http *h, struct MHD_Connection *c, int status, const char *type,
                            const char *msg) {
    ae_api_error e;
    ae_api_error_set(&e, status, type, NULL, "%s", msg);
    return send_error(h, c, &e);
}

// 1 when the client closed its side of the connection (EOF or error on the socket).
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    int fd = ci->connect_fd;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL | POLLRDHUP)) return 1;
    if (p.revents & POLLIN) {
        char b;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return 0;
}

static void make_id(ae_http *h, const char *prefix, char *id, size_t n) {
    pthread_mutex_lock(&h->mu);
    long k = ++h->next_id;
    pthread_mutex_unlock(&h->mu);
    snprintf(id, n, "%s-%lx%04lx", prefix, (long)time(NULL), k & 0xffff);
}

// ---------------------------------------------------------------------------------------------
// GET endpoints

static enum MHD_Result get_models(ae_http *h, struct MHD_Connection *c) {
    char *b = ae_malloc(1024 + strlen(h->o.api.model_name) * 2);
    if (b)
        sprintf(b, "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\",\"created\":%ld,"
                   "\"owned_by\":\"attnedit\",\"max_model_len\":%d%s}]}",
                h->o.api.model_name, (long)time(NULL), h->o.api.max_model_len,
                h->o.api.random_weights ? ",\"weights\":\"random\"" : "");
    return send_text(c, 200, "application/json", b);
}

// The engine's step phases and decode throughput (serve/engine.h, ae_engine_phase), appended
// to b (cap bytes, n used; cut short at cap - 1, which 8 KiB never reaches).
static void metrics_engine_phases(char *b, size_t cap, size_t n, const ae_engine_stats *s) {
#define AE_PUT(...) (n += n < cap ? (size_t)snprintf(b + n, cap - n, __VA_ARGS__) : 0)
    AE_PUT("# HELP attnedit_engine_phase_seconds_total Seconds of the engine's steps by phase "
           "(admit, tables, forward: host launch, sync: waiting for the device, sample, lock, apply).\n"
           "# TYPE attnedit_engine_phase_seconds_total counter\n");
    for (int p = 0; p < AE_PHASE_COUNT; p++)
        AE_PUT("attnedit_engine_phase_seconds_total{phase=\"%s\"} %.6f\n",
               ae_engine_phase_name((ae_engine_phase)p), s->phase_s[p]);
    AE_PUT("# HELP attnedit_engine_step_seconds_total Wall seconds of all steps (the phases' sum).\n"
           "# TYPE attnedit_engine_step_seconds_total counter\nattnedit_engine_step_seconds_total %.6f\n"
           "# HELP attnedit_engine_wait_seconds_total Seconds the engine waited for work (idle).\n"
           "# TYPE attnedit_engine_wait_seconds_total counter\nattnedit_engine_wait_seconds_total %.6f\n"
           "# HELP attnedit_engine_rows_total Batch rows of all steps (decode and prefill tokens).\n"
           "# TYPE attnedit_engine_rows_total counter\nattnedit_engine_rows_total %lld\n"
           "# HELP attnedit_engine_decode_steps_total Steps with no prefill row.\n"
           "# TYPE attnedit_engine_decode_steps_total counter\nattnedit_engine_decode_steps_total %lld\n"
           "# HELP attnedit_engine_decode_step_seconds_total Wall seconds of the decode steps.\n"
           "# TYPE attnedit_engine_decode_step_seconds_total counter\n"
           "attnedit_engine_decode_step_seconds_total %.6f\n"
           "# HELP attnedit_engine_decode_tokens_total Tokens generated by the decode steps.\n"
           "# TYPE attnedit_engine_decode_tokens_total counter\nattnedit_engine_decode_tokens_total %lld\n",
           s->step_s, s->wait_s, (long long)s->rows, (long long)s->decode_steps, s->decode_step_s,
           (long long)s->decode_tokens);
#undef AE_PUT
}

// The prefix cache's counters (serve/engine.h) into b (cap bytes): the bytes written.
static size_t metrics_prefix_cache(char *b, size_t cap, const ae_engine_stats *s) {
    int n = snprintf(b, cap,
        "# HELP attnedit_prefix_cache_hit_tokens_total Prompt tokens served from the prefix cache.\n"
        "# TYPE attnedit_prefix_cache_hit_tokens_total counter\nattnedit_prefix_cache_hit_tokens_total %lld\n"
        "# HELP attnedit_prefix_cache_computed_tokens_total Prompt tokens computed (not in the cache).\n"
        "# TYPE attnedit_prefix_cache_computed_tokens_total counter\nattnedit_prefix_cache_computed_tokens_total %lld\n"
        "# HELP attnedit_prefix_cache_pages Pages holding a cached prompt block (held or evictable).\n"
        "# TYPE attnedit_prefix_cache_pages gauge\nattnedit_prefix_cache_pages %d\n"
        "# HELP attnedit_prefix_cache_evictions_total Cached pages evicted to be written again.\n"
        "# TYPE attnedit_prefix_cache_evictions_total counter\nattnedit_prefix_cache_evictions_total %lld\n",
        (long long)s->prefix_hit_tokens, (long long)s->prefix_computed_tokens, s->pages_cached,
        (long long)s->prefix_evictions);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap ? cap - 1 : 0;
}

static enum MHD_Result get_metrics(ae_http *h, struct MHD_Connection *c) {
    ae_engine_stats s;
    ae_engine_get_stats(h->o.engine, &s);
    pthread_mutex_lock(&h->mu);
    long req = h->requests, err = h->errors;
    pthread_mutex_unlock(&h->mu);
    size_t cap = 8192;
    char *b = ae_malloc(cap);
    if (b) {
        int n = snprintf(b, cap,
                         "# HELP attnedit_requests_running Sequences in the running batch.\n"
                         "# TYPE attnedit_requests_running gauge\nattnedit_requests_running %d\n"
                         "# HELP attnedit_requests_waiting Requests waiting for admission.\n"
                         "# TYPE attnedit_requests_waiting gauge\nattnedit_requests_waiting %d\n"
                         "# HELP attnedit_kv_pages_total Pages of the KV cache pool.\n"
                         "# TYPE attnedit_kv_pages_total gauge\nattnedit_kv_pages_total %d\n"
                         "# HELP attnedit_kv_pages_free Pages no sequence holds (free, or cached and evictable).\n"
                         "# TYPE attnedit_kv_pages_free gauge\nattnedit_kv_pages_free %d\n"
                         "# HELP attnedit_kv_pages_promised Free pages promised to admitted sequences.\n"
                         "# TYPE attnedit_kv_pages_promised gauge\nattnedit_kv_pages_promised %d\n"
                         "# HELP attnedit_kv_cache_usage_ratio Fraction of the pool's pages in use.\n"
                         "# TYPE attnedit_kv_cache_usage_ratio gauge\nattnedit_kv_cache_usage_ratio %.6f\n"
                         "# HELP attnedit_kv_page_bytes Bytes of one page.\n"
                         "# TYPE attnedit_kv_page_bytes gauge\nattnedit_kv_page_bytes %zu\n"
                         "# HELP attnedit_prompt_tokens_total Prompt tokens admitted.\n"
                         "# TYPE attnedit_prompt_tokens_total counter\nattnedit_prompt_tokens_total %lld\n"
                         "# HELP attnedit_generation_tokens_total Tokens generated.\n"
                         "# TYPE attnedit_generation_tokens_total counter\nattnedit_generation_tokens_total %lld\n"
                         "# HELP attnedit_requests_finished_total Requests finished (stop or length).\n"
                         "# TYPE attnedit_requests_finished_total counter\nattnedit_requests_finished_total %lld\n"
                         "# HELP attnedit_engine_steps_total Batched forward steps.\n"
                         "# TYPE attnedit_engine_steps_total counter\nattnedit_engine_steps_total %lld\n"
                         "# HELP attnedit_engine_graph_steps_total Steps that ran recorded as CUDA graphs.\n"
                         "# TYPE attnedit_engine_graph_steps_total counter\nattnedit_engine_graph_steps_total %lld\n"
                         "# HELP attnedit_generation_tokens_per_second Generated tokens per second (recent).\n"
                         "# TYPE attnedit_generation_tokens_per_second gauge\nattnedit_generation_tokens_per_second %.3f\n"
                         "# HELP attnedit_http_requests_total HTTP requests received.\n"
                         "# TYPE attnedit_http_requests_total counter\nattnedit_http_requests_total %ld\n"
                         "# HELP attnedit_http_errors_total HTTP requests answered with an error.\n"
                         "# TYPE attnedit_http_errors_total counter\nattnedit_http_errors_total %ld\n",
                         s.running, s.waiting, s.pages_total, s.pages_free, s.pages_promised,
                         s.pages_total ? 1.0 - (double)s.pages_free / s.pages_total : 0.0, s.page_bytes,
                         (long long)s.prompt_tokens, (long long)s.gen_tokens, (long long)s.requests_done,
                         (long long)s.steps, (long long)s.graph_steps, s.gen_tok_per_s, req, err);
        size_t used = n > 0 ? (size_t)n : 0;
        used += metrics_prefix_cache(b + used, used < cap ? cap - used : 0, &s);
        metrics_engine_phases(b, cap, used, &s);
    }
    return send_text(c, 200, "text/plain; version=0.0.4", b);
}

// ---------------------------------------------------------------------------------------------
// Completions

typedef struct {             // a streaming response
    ae_http *h;
    struct MHD_Connection *c;
    ae_req *r;
    ae_api_request q;
    char id[48];
    long created;
    size_t text_sent;        // text sent (a tool call's text is held back, never sent)
    size_t text_seen;        // r->text_len when the last event was made
    int tok_sent, first, done;
    char *out;               // pending bytes
    size_t out_len, out_off;
} stream_state;

static int append(stream_state *s, char *ev) {
    if (!ev) return 0;
    size_t n = strlen(ev);
    char *o = realloc(s->out, s->out_len - s->out_off + n + 1);
    if (!o) {
        free(ev);
        return 0;
    }
    if (s->out_off) memmove(o, o + s->out_off, s->out_len - s->out_off);
    s->out = o;
    s->out_len -= s->out_off;
    s->out_off = 0;
    memcpy(s->out + s->out_len, ev, n + 1);
    s->out_len += n;
    free(ev);
    return 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_state *s = cls;
    ae_engine *e = s->h->o.engine;
    (void)pos;
    while (s->out_off == s->out_len) {
        if (s->done) return MHD_CONTENT_READER_END_OF_STREAM;
        ae_engine_lock(e);
        ae_req *r = s->r;
        while (!r->finish && r->text_len == s->text_seen && r->n_out == s->tok_sent) {
            ae_engine_wait_locked(e, 0.05);
            if (r->finish || r->text_len != s->text_seen || r->n_out != s->tok_sent) break;
            ae_engine_unlock(e);
            int gone = client_gone(s->c);
            ae_engine_lock(e);
            if (gone) {
                ae_engine_cancel_locked(e, r);
                ae_engine_unlock(e);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        int ok = 1;
        if (r->finish == AE_FINISH_CANCELLED || r->finish == AE_FINISH_ERROR) {
            ae_api_error er;
            ae_api_error_set(&er, 500, "server_error", NULL, "%s",
                             r->finish == AE_FINISH_ERROR ? r->error : "the server is shutting down");
            char *j = ae_api_error_json(&er), *ev = j ? ae_malloc(strlen(j) + 40) : NULL;
            if (ev) sprintf(ev, "data: %s\n\ndata: [DONE]\n\n", j);
            free(j);
            ok = append(s, ev);
            s->done = 1;
        } else {
            int final = r->finish != AE_FINISH_NONE;
            size_t to = ae_api_stream_text_to(&s->q, r, final);
            if (to > s->text_sent || r->n_out > s->tok_sent || final) {
                ok = append(s, ae_api_stream_event(&s->h->o.api, &s->q, r, s->id, s->created,
                                                   s->text_sent, to, s->tok_sent, r->n_out,
                                                   s->first, final));
                s->first = 0;
                s->text_sent = to > s->text_sent ? to : s->text_sent;
                s->tok_sent = r->n_out;
            }
            s->text_seen = r->text_len;
            if (final && ok) {
                ok = append(s, ae_strdup("data: [DONE]\n\n"));
                s->done = 1;
            }
        }
        ae_engine_unlock(e);
        if (!ok) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->out_len - s->out_off < max ? s->out_len - s->out_off : max;
    memcpy(buf, s->out + s->out_off, n);
    s->out_off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream_state *s = cls;
    ae_engine *e = s->h->o.engine;
    ae_engine_lock(e);
    ae_engine_cancel_locked(e, s->r); // no-op when finished
    ae_engine_release_locked(e, s->r);
    ae_engine_unlock(e);
    ae_api_request_free(&s->q);
    free(s->out);
    free(s);
}

static enum MHD_Result post_completion(ae_http *h, struct MHD_Connection *c, ae_api_kind kind,
                                       const conn_state *cs) {
    ae_api_error err;
    ae_api_request q;
    pthread_mutex_lock(&h->mu);
    ae_api_ctx ctx = h->o.api;
    ctx.seed_counter = (uint64_t)++h->next_id;
    pthread_mutex_unlock(&h->mu);
    if (ae_api_parse(&ctx, kind, cs->body ? cs->body : "", cs->len, &q, &err)) return send_error(h, c, &err);
    int32_t *ids = q.ids;
    q.ids = NULL;
    ae_req_params rp = q.p;
    for (int i = 0; i < rp.n_stop; i++) q.p.stop[i] = NULL; // moved into the engine request
    q.p.n_stop = 0;
    ae_req *r = ae_req_new(ids, q.n_ids, &rp);
    if (!r) {
        ae_api_request_free(&q);
        return fail(h, c, 500, "server_error", "out of memory");
    }
    ae_engine *e = h->o.engine;
    ae_status st = ae_engine_submit(e, r);
    if (st != AE_OK) {
        ae_api_error_set(&err, st == AE_ERR_UNSUPPORTED ? 429 : st == AE_ERR_ARG ? 400 : 500,
                         st == AE_ERR_UNSUPPORTED ? "rate_limit_error"
                         : st == AE_ERR_ARG       ? "invalid_request_error"
                                                  : "server_error",
                         NULL, "%s", ae_last_error());
        ae_engine_lock(e);
        ae_engine_release_locked(e, r);
        ae_engine_unlock(e);
        ae_api_request_free(&q);
        return send_error(h, c, &err);
    }
    char id[48];
    make_id(h, kind == AE_API_CHAT ? "chatcmpl" : "cmpl", id, sizeof id);
    long created = (long)time(NULL);
    if (q.stream) {
        stream_state *s = ae_calloc(1, sizeof *s);
        struct MHD_Response *resp = s ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                                          stream_read, s, stream_free)
                                      : NULL;
        if (!resp) {
            ae_engine_lock(e);
            ae_engine_cancel_locked(e, r);
            ae_engine_release_locked(e, r);
            ae_engine_unlock(e);
            ae_api_request_free(&q);
            free(s);
            return fail(h, c, 500, "server_error", "out of memory");
        }
        s->h = h;
        s->c = c;
        s->r = r;
        s->q = q;
        s->first = 1;
        s->created = created;
        snprintf(s->id, sizeof s->id, "%s", id);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp); // stream_free runs when the connection is done with it
        return ret;
    }
    // Not streaming: wait for the end (or the client's hang-up), then answer at once.
    ae_engine_lock(e);
    while (!r->finish) {
        ae_engine_wait_locked(e, 0.05);
        if (r->finish) break;
        ae_engine_unlock(e);
        int gone = client_gone(c);
        ae_engine_lock(e);
        if (gone) ae_engine_cancel_locked(e, r);
    }
    enum MHD_Result ret;
    if (r->finish == AE_FINISH_STOP || r->finish == AE_FINISH_LENGTH) {
        char *body = ae_api_response_json(&h->o.api, &q, r, id, created);
        ae_engine_unlock(e);
        ret = send_text(c, 200, "application/json", body);
        ae_engine_lock(e);
    } else {
        ae_api_error_set(&err, 500, "server_error", NULL, "%s",
                         r->finish == AE_FINISH_ERROR ? r->error : "the request was cancelled");
        ae_engine_unlock(e);
        ret = send_error(h, c, &err);
        ae_engine_lock(e);
    }
    ae_engine_release_locked(e, r);
    ae_engine_unlock(e);
    ae_api_request_free(&q);
    return ret;
}

// ---------------------------------------------------------------------------------------------
// Dispatch

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
    ae_http *h = cls;
    (void)version;
    conn_state *cs = *con_cls;
    int post = !strcmp(method, "POST");
    if (!cs) { // first call: headers only
        cs = ae_calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        *con_cls = cs;
        pthread_mutex_lock(&h->mu);
        h->requests++;
        pthread_mutex_unlock(&h->mu);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body) cs->too_big = 1;
        return MHD_YES;
    }
    if (*upload_size) { // body bytes
        if (!cs->too_big) {
            if (cs->len + *upload_size > h->o.max_body) {
                cs->too_big = 1;
            } else {
                if (cs->len + *upload_size + 1 > cs->cap) {
                    size_t cap = cs->cap ? cs->cap : 4096;
                    while (cap < cs->len + *upload_size + 1) cap *= 2;
                    char *b = realloc(cs->body, cap);
                    if (!b) return MHD_NO;
                    cs->body = b;
                    cs->cap = cap;
                }
                memcpy(cs->body + cs->len, upload, *upload_size);
                cs->len += *upload_size;
                cs->body[cs->len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cs->too_big) {
        char msg[96];
        snprintf(msg, sizeof msg, "the request body exceeds %zu bytes", h->o.max_body);
        return fail(h, c, 413, "invalid_request_error", msg);
    }
    int get = !strcmp(method, "GET");
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
        if (!post) return fail(h, c, 405, "invalid_request_error", "use POST");
        return post_completion(h, c, url[4] == 'c' && url[5] == 'h' ? AE_API_CHAT : AE_API_COMPLETIONS, cs);
    }
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/health") || !strcmp(url, "/metrics")) {
        if (!get) return fail(h, c, 405, "invalid_request_error", "use GET");
        if (url[1] == 'v') return get_models(h, c);
        if (url[1] == 'h') return send_text(c, 200, "application/json", ae_strdup("{\"status\":\"ok\"}"));
        return get_metrics(h, c);
    }
    char msg[160];
    snprintf(msg, sizeof msg, "no such endpoint: %s %.100s", method, url);
    return fail(h, c, 404, "invalid_request_error", msg);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_state *cs = *con_cls;
    if (cs) {
        free(cs->body);
        free(cs);
    }
    *con_cls = NULL;
}

ae_status ae_http_start(const ae_http_opts *o, ae_http **out) {
    *out = NULL;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    const char *host = o->host ? o->host : "127.0.0.1";
    if (o->port < 0 || o->port > 65535) return ae_errorf(AE_ERR_ARG, "--port %d is out of range", o->port);
    int family = ae_net_addr(host, o->port, &addr, &addr_len);
    if (family < 0)
        return ae_errorf(AE_ERR_ARG, "--host '%s': expected an IPv4 or IPv6 address (e.g. 127.0.0.1, "
                         "0.0.0.0, ::1, ::)", host);
    // IPv6: dual stack, so "::" also takes IPv4 clients (as most servers bound to :: do)
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     (family == AF_INET6 ? MHD_USE_DUAL_STACK : 0);
    (void)addr_len; // libmicrohttpd takes the size from the family
    ae_http *h = ae_calloc(1, sizeof *h);
    if (!h) return AE_ERR_NOMEM;
    h->o = *o;
    pthread_mutex_init(&h->mu, NULL);
    // (no MHD_USE_ERROR_LOG: it reports every client that hangs up mid-stream, which is normal)
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, handler, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_END);
    if (!h->d) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        char hp[96];
        ae_net_hostport(host, o->port, hp, sizeof hp);
        return ae_errorf(AE_ERR_IO, "cannot listen on %s (in use, or not an address of this machine)", hp);
    }
    *out = h;
    return AE_OK;
}

int ae_http_port(const ae_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

void ae_http_stop(ae_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
