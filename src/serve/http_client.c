// Blocking HTTP/1.1 client (serve/http_client.h).
#include "serve/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve/netaddr.h"

void ae_http_resp_free(ae_http_resp *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

int ae_http_parse_url(const char *url, char *host, size_t hn, int *port) {
    if (strncmp(url, "http://", 7)) return -1;
    const char *h = url + 7, *end_host, *c;
    if (*h == '[') { // an IPv6 address: http://[::1]:8000
        h++;
        end_host = strchr(h, ']');
        if (!end_host || end_host[1] != ':') return -1;
        c = end_host + 1;
    } else {
        c = strchr(h, ':');
        const char *sl = strchr(h, '/');
        if (!c || (sl && sl < c)) return -1;
        end_host = c;
    }
    if ((size_t)(end_host - h) >= hn || end_host == h) return -1;
    memcpy(host, h, (size_t)(end_host - h));
    host[end_host - h] = 0;
    char *end;
    long p = strtol(c + 1, &end, 10);
    if (end == c + 1 || (*end && *end != '/') || p <= 0 || p > 65535) return -1;
    *port = (int)p;
    return 0;
}

static char *find_crlf(char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '\r' && s[i + 1] == '\n') return s + i;
    return NULL;
}

typedef struct {
    int fd;
    double timeout_s;
    char buf[65536];
    size_t n, off;
} conn;

// Reads more bytes into c->buf (compacting); returns bytes read, 0 at EOF, -1 on error/timeout.
static long fill(conn *c) {
    if (c->off) {
        memmove(c->buf, c->buf + c->off, c->n - c->off);
        c->n -= c->off;
        c->off = 0;
    }
    if (c->n == sizeof c->buf) return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r = poll(&p, 1, (int)(c->timeout_s * 1000));
    if (r <= 0) return -1;
    ssize_t k = recv(c->fd, c->buf + c->n, sizeof c->buf - c->n, 0);
    if (k < 0) return -1;
    c->n += (size_t)k;
    return (long)k;
}

static int append(ae_http_resp *o, const char *d, size_t n) {
    char *b = realloc(o->body, o->len + n + 1);
    if (!b) return -1;
    memcpy(b + o->len, d, n);
    o->body = b;
    o->len += n;
    b[o->len] = 0;
    return 0;
}

// Delivers n body bytes: to the response and the callback. 1 when the callback wants to stop.
static int deliver(ae_http_resp *o, const char *d, size_t n, ae_http_data_fn fn, void *ud) {
    if (append(o, d, n)) return 1;
    return fn && n ? fn(ud, d, n) != 0 : 0;
}

int ae_http_request(const char *host, int port, const char *method, const char *path,
                    const char *body, size_t body_len, ae_http_data_fn fn, void *ud,
                    double timeout_s, ae_http_resp *out) {
    memset(out, 0, sizeof *out);
    out->body = calloc(1, 1);
    struct sockaddr_storage a;
    socklen_t alen;
    int family = ae_net_addr(host, port, &a, &alen);
    if (family < 0) {
        snprintf(out->err, sizeof out->err, "bad host %s (an IPv4 or IPv6 address expected)", host);
        return -1;
    }
    conn c = {.fd = socket(family, SOCK_STREAM, 0), .timeout_s = timeout_s};
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&a, alen) != 0) {
        snprintf(out->err, sizeof out->err, "connect %s:%d: %s", host, port, strerror(errno));
        if (c.fd >= 0) close(c.fd);
        return -1;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char head[1024], hp[96];
    ae_net_hostport(host, port, hp, sizeof hp);
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, hp, body ? body_len : 0);
    int rc = -1;
    if (send(c.fd, head, (size_t)hl, MSG_NOSIGNAL) != hl) goto sendfail;
    for (size_t sent = 0; body && sent < body_len;) {
        ssize_t k = send(c.fd, body + sent, body_len - sent, MSG_NOSIGNAL);
        if (k <= 0) goto sendfail;
        sent += (size_t)k;
    }
    // headers
    char *eoh;
    for (;;) {
        c.buf[c.n < sizeof c.buf ? c.n : sizeof c.buf - 1] = 0;
        if ((eoh = strstr(c.buf, "\r\n\r\n"))) break;
        if (fill(&c) <= 0) {
            snprintf(out->err, sizeof out->err, "no response headers");
            goto done;
        }
    }
    if (sscanf(c.buf, "HTTP/1.%*d %d", &out->status) != 1) {
        snprintf(out->err, sizeof out->err, "bad status line");
        goto done;
    }
    long clen = -1;
    int chunked = 0;
    for (char *l = strstr(c.buf, "\r\n") + 2; l < eoh; l = strstr(l, "\r\n") + 2) {
        if (!strncasecmp(l, "Content-Length:", 15)) clen = strtol(l + 15, NULL, 10);
        if (!strncasecmp(l, "Transfer-Encoding:", 18) && strstr(l, "chunked") &&
            strstr(l, "chunked") < strstr(l, "\r\n"))
            chunked = 1;
    }
    c.off = (size_t)(eoh + 4 - c.buf);
    if (chunked) {
        for (;;) {
            char *crlf;
            while (!(crlf = find_crlf(c.buf + c.off, c.n - c.off)))
                if (fill(&c) <= 0) goto truncated;
            long sz = strtol(c.buf + c.off, NULL, 16);
            c.off = (size_t)(crlf + 2 - c.buf);
            if (sz < 0) goto truncated;
            if (sz == 0) break;
            while ((long)(c.n - c.off) < sz + 2)
                if (fill(&c) <= 0) goto truncated;
            if (deliver(out, c.buf + c.off, (size_t)sz, fn, ud)) {
                rc = 0;
                snprintf(out->err, sizeof out->err, "closed by the client");
                goto done;
            }
            c.off += (size_t)sz + 2;
        }
    } else {
        long got = 0;
        for (;;) {
            size_t avail = c.n - c.off;
            if (clen >= 0 && (long)avail > clen - got) avail = (size_t)(clen - got);
            if (avail) {
                if (deliver(out, c.buf + c.off, avail, fn, ud)) {
                    rc = 0;
                    goto done;
                }
                got += (long)avail;
                c.off += avail;
            }
            if (clen >= 0 && got >= clen) break;
            long k = fill(&c);
            if (k == 0 && clen < 0) break;
            if (k <= 0) goto truncated;
        }
    }
    rc = 0;
    goto done;
truncated:
    snprintf(out->err, sizeof out->err, "the response ended early");
    goto done;
sendfail:
    snprintf(out->err, sizeof out->err, "send: %s", strerror(errno));
done:
    close(c.fd);
    return rc;
}
