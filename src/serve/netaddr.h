// Numeric socket addresses for the server and its client: IPv4 ("127.0.0.1", "0.0.0.0") and
// IPv6 ("::1", "::", with or without brackets: "[::1]"); "localhost" is 127.0.0.1. No name
// lookups: a server binds to an address of its own machine, and a benchmark names one.
#ifndef AE_SERVE_NETADDR_H
#define AE_SERVE_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

// host:port into *ss (*len its size). Returns AF_INET or AF_INET6, or -1 for anything else.
int ae_net_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len);
// "host:port", or "[host]:port" for an IPv6 host (URLs and Host headers), into buf.
void ae_net_hostport(const char *host, int port, char *buf, size_t n);

#endif
