// The group's environment, the communicator's dispatch (single rank, MPI, NCCL), the argument
// checks every kind shares, the watchdog around each collective, and the group's sameness check
// (dist/comm.h).
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "core/sha256.h"
#include "dist/comm_internal.h"

// ---- hex -----------------------------------------------------------------------------------------

void ae_dist_hex(const void *bytes, size_t n, char *hex) {
    static const char d[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = d[b[i] >> 4];
        hex[2 * i + 1] = d[b[i] & 15];
    }
    hex[2 * n] = '\0';
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int ae_dist_unhex(const char *text, void *bytes, size_t n) {
    if (strlen(text) != 2 * n) return -1;
    unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

// ---- the environment -----------------------------------------------------------------------------

#define AE_DIST_MAX_RANKS (1 << 20)
#define AE_NCCL_ID_BYTES 128 // NCCL_UNIQUE_ID_BYTES

// One way of being started: the variables that carry rank, size, local rank and local size.
typedef struct {
    const char *rank, *size, *local_rank, *local_size;
    int launcher;
} env_scheme;

static const env_scheme k_schemes[] = {
    {"AE_DIST_RANK", "AE_DIST_SIZE", "AE_DIST_LOCAL_RANK", "AE_DIST_LOCAL_SIZE", AE_LAUNCH_ATTNEDIT},
    {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE", AE_LAUNCH_MPI},
    {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", AE_LAUNCH_MPI},
};

static const char *env_get(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

// A whole number 0..AE_DIST_MAX_RANKS from variable `name` (value v) into *out.
static ae_status env_int(const char *name, const char *v, int *out) {
    const char *p = v;
    while (*p >= '0' && *p <= '9') p++;
    errno = 0;
    long x = (p != v && *p == '\0' && p - v <= 8) ? strtol(v, NULL, 10) : -1;
    if (x < 0 || x > AE_DIST_MAX_RANKS)
        return ae_errorf(AE_ERR_ARG, "%s='%.40s': expected a whole number from 0 to %d", name, v,
                         AE_DIST_MAX_RANKS);
    *out = (int)x;
    return AE_OK;
}

ae_status ae_dist_env_read(ae_dist_env *e) {
    memset(e, 0, sizeof *e);
    e->size = e->local_size = 1;
    e->launcher = AE_LAUNCH_NONE;
    const env_scheme *s = NULL;
    for (size_t i = 0; i < sizeof k_schemes / sizeof k_schemes[0]; i++)
        if (env_get(k_schemes[i].rank) || env_get(k_schemes[i].size)) {
            s = &k_schemes[i];
            break;
        }
    if (s) {
        const char *rv = env_get(s->rank), *sv = env_get(s->size);
        if (!rv || !sv)
            return ae_errorf(AE_ERR_ARG, "%s is set but %s is not: a rank of a group needs both",
                             rv ? s->rank : s->size, rv ? s->size : s->rank);
        int rank = 0, size = 1, lrank, lsize;
        AE_TRY(env_int(s->rank, rv, &rank));
        AE_TRY(env_int(s->size, sv, &size));
        if (size < 1) return ae_errorf(AE_ERR_ARG, "%s=%s: a group has at least one rank", s->size, sv);
        if (rank >= size)
            return ae_errorf(AE_ERR_ARG, "%s=%d is outside 0..%d (%s=%d)", s->rank, rank, size - 1,
                             s->size, size);
        const char *lrv = env_get(s->local_rank), *lsv = env_get(s->local_size);
        lrank = rank; // without the local variables: one host
        lsize = size;
        if (lrv) AE_TRY(env_int(s->local_rank, lrv, &lrank));
        if (lsv) AE_TRY(env_int(s->local_size, lsv, &lsize));
        if (lsize < 1 || lsize > size)
            return ae_errorf(AE_ERR_ARG, "%s=%d is outside 1..%d (%s=%d)", s->local_size, lsize,
                             size, s->size, size);
        if (lrank >= lsize)
            return ae_errorf(AE_ERR_ARG, "%s=%d is outside 0..%d (%s=%d)", s->local_rank, lrank,
                             lsize - 1, s->local_size, lsize);
        e->rank = rank;
        e->size = size;
        e->local_rank = lrank;
        e->local_size = lsize;
        e->launcher = s->launcher;
    }
    const char *id = env_get("AE_DIST_NCCL_ID");
    if (id) {
        unsigned char raw[AE_NCCL_ID_BYTES];
        if (ae_dist_unhex(id, raw, sizeof raw) != 0)
            return ae_errorf(AE_ERR_ARG,
                             "AE_DIST_NCCL_ID: expected %d hex digits (the NCCL id made by the "
                             "--gpus launcher), got %zu characters%s", 2 * AE_NCCL_ID_BYTES,
                             strlen(id), strlen(id) == 2 * AE_NCCL_ID_BYTES ? " with a non-hex one" : "");
        ae_dist_hex(raw, sizeof raw, e->nccl_id);
    }
    return AE_OK;
}

const char *ae_dist_device_name(const ae_dist_env *e, const char *name, char *buf, size_t n) {
    if (!name || !*name) name = "auto";
    if (e && e->size > 1) {
        int cuda = strcmp(name, "cuda") == 0;
        if (strcmp(name, "auto") == 0) { // what ae_backend_open("auto") would choose
            const char *env = getenv("ATTNEDIT_DEVICE");
            if (env && *env && strcmp(env, "auto") != 0)
                return ae_dist_device_name(e, env, buf, n);
#ifdef AE_HAVE_CUDA
            cuda = ae_cuda_device_count() > 0;
#endif
            if (!cuda) name = "cpu";
        }
        if (cuda) {
            snprintf(buf, n, "cuda:%d", e->local_rank);
            return buf;
        }
    }
    snprintf(buf, n, "%s", name);
    return buf;
}

// ---- opening -------------------------------------------------------------------------------------

ae_status ae_comm_open(const ae_dist_env *e, const ae_backend *be, ae_comm **out) {
    *out = NULL;
    double timeout;
    AE_TRY(ae_watchdog_timeout_from_env(&timeout));
    if (e->size < 1 || e->rank < 0 || e->rank >= e->size || e->local_size < 1 ||
        e->local_rank < 0 || e->local_rank >= e->local_size)
        return ae_errorf(AE_ERR_ARG, "rank %d of %d (local %d of %d): not a rank of a group",
                         e->rank, e->size, e->local_rank, e->local_size);
    ae_comm *c = calloc(1, sizeof *c);
    if (!c) return ae_errorf(AE_ERR_NOMEM, "out of memory for the communicator");
    c->rank = e->rank;
    c->size = e->size;
    c->local_rank = e->local_rank;
    c->local_size = e->local_size;
    c->launcher = e->launcher;
    c->kind = "single";
    c->be = be;
    ae_watchdog_init(&c->wd, e->rank, timeout);
    if (e->size == 1) {
        *out = c;
        return AE_OK;
    }
    ae_status st;
    if (be->host_memory) {
        if (e->launcher == AE_LAUNCH_ATTNEDIT)
            st = ae_errorf(AE_ERR_UNSUPPORTED,
                           "rank %d of %d: --gpus starts ranks on GPUs; a group on %s is started "
                           "by mpirun -np %d (in a build with MPI)", e->rank, e->size, be->name,
                           e->size);
        else if ((st = ae_watchdog_start(&c->wd)) == AE_OK)
            st = ae_comm_mpi_open(c, e);
    } else {
#ifdef AE_HAVE_NCCL
        if ((st = ae_watchdog_start(&c->wd)) == AE_OK) st = ae_comm_nccl_open(c, e);
#else
        st = ae_errorf(AE_ERR_UNSUPPORTED,
                       "rank %d of %d on %s: this attnedit was built without NCCL, which groups "
                       "of GPUs need (install NCCL beside the CUDA toolkit and rebuild)", e->rank,
                       e->size, be->name);
#endif
    }
    if (st != AE_OK) {
        ae_watchdog_stop(&c->wd);
        free(c);
        return st;
    }
    *out = c;
    return AE_OK;
}

void ae_comm_close(ae_comm *c) {
    if (!c) return;
    if (c->ops && c->ops->close) { // NCCL's destroy and MPI_Finalize wait for the other ranks
        ae_watchdog_enter(&c->wd, "closing the group");
        c->ops->close(c);
        ae_watchdog_leave(&c->wd);
    }
    ae_watchdog_stop(&c->wd);
    free(c);
}

int ae_comm_rank(const ae_comm *c) { return c ? c->rank : 0; }
int ae_comm_size(const ae_comm *c) { return c ? c->size : 1; }
const char *ae_comm_kind(const ae_comm *c) { return c ? c->kind : "single"; }

void ae_comm_set_where(ae_comm *c, const char *where) {
    if (c) ae_watchdog_set_where(&c->wd, where);
}

// ---- the collectives -----------------------------------------------------------------------------

static int multi(const ae_comm *c) { return c && c->size > 1 && c->ops; }

ae_status ae_comm_allreduce_sum(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k) {
    if (k < 0 || (k > 0 && (!xs || !ns)))
        return ae_errorf(AE_ERR_ARG, "allreduce_sum: %d buffers", k);
    for (int i = 0; i < k; i++) {
        if (ns[i] == 0) continue;
        if (!xs[i].data || (xs[i].dtype != AE_DT_F32 && xs[i].dtype != AE_DT_BF16))
            return ae_errorf(AE_ERR_ARG, "allreduce_sum: buffer %d is %s (expected F32 or BF16 "
                             "values)", i, xs[i].data ? ae_dtype_name(xs[i].dtype) : "null");
    }
    if (!multi(c)) return AE_OK;
    ae_watchdog_enter(&c->wd, "allreduce_sum");
    ae_status st = c->ops->allreduce_sum(c, xs, ns, k);
    ae_watchdog_leave(&c->wd);
    return st;
}

ae_status ae_comm_allreduce_start(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k) {
    if (!multi(c) || !c->ops->allreduce_start) return ae_comm_allreduce_sum(c, xs, ns, k);
    for (int i = 0; i < k; i++)
        if (ns[i] > 0 && (!xs[i].data || (xs[i].dtype != AE_DT_F32 && xs[i].dtype != AE_DT_BF16)))
            return ae_errorf(AE_ERR_ARG, "allreduce_start: buffer %d is not F32 or BF16 values", i);
    return c->ops->allreduce_start(c, xs, ns, k); // queues work only: not under the watchdog
}

ae_status ae_comm_wait(ae_comm *c) {
    if (!multi(c) || !c->ops->wait) return AE_OK;
    ae_watchdog_enter(&c->wd, "allreduce (overlapped)");
    ae_status st = c->ops->wait(c);
    ae_watchdog_leave(&c->wd);
    return st;
}

ae_status ae_comm_allreduce_host(ae_comm *c, double *x, int n) {
    if (n < 0 || (n > 0 && !x)) return ae_errorf(AE_ERR_ARG, "allreduce_host: %d values", n);
    if (!multi(c) || n == 0) return AE_OK;
    ae_watchdog_enter(&c->wd, "allreduce_host");
    ae_status st = c->ops->allreduce_host(c, x, n);
    ae_watchdog_leave(&c->wd);
    return st;
}

// The broadcasts of xs[i] from roots[i], i < k, checked first; the messages name the call
// (ae_comm_broadcast_many's: and the buffer's index).
static ae_status broadcast(ae_comm *c, int many, const ae_ptr *xs, const size_t *ns,
                           const int *roots, int k) {
    const char *op = many ? "broadcast_many" : "broadcast";
    int size = ae_comm_size(c);
    if (k < 0 || (k > 0 && (!xs || !ns || !roots)))
        return ae_errorf(AE_ERR_ARG, "%s: %d buffers", op, k);
    size_t values = 0;
    for (int i = 0; i < k; i++) {
        char what[48] = "broadcast";
        if (many) snprintf(what, sizeof what, "broadcast_many: buffer %d", i);
        if (roots[i] < 0 || roots[i] >= size)
            return ae_errorf(AE_ERR_ARG, "%s: root rank %d is outside 0..%d", what, roots[i], size - 1);
        if (ns[i] > 0 && !xs[i].data) return ae_errorf(AE_ERR_ARG, "%s: null buffer", what);
        values += ns[i];
    }
    if (!multi(c) || values == 0) return AE_OK;
    ae_watchdog_enter(&c->wd, op);
    ae_status st = c->ops->broadcast(c, xs, ns, roots, k);
    ae_watchdog_leave(&c->wd);
    return st;
}

ae_status ae_comm_broadcast(ae_comm *c, ae_ptr x, size_t n, int root) {
    return broadcast(c, 0, &x, &n, &root, 1);
}

ae_status ae_comm_broadcast_many(ae_comm *c, const ae_ptr *xs, const size_t *ns, const int *roots,
                                 int k) {
    return broadcast(c, 1, xs, ns, roots, k);
}

ae_status ae_comm_allgather_host(ae_comm *c, const void *mine, void *all, size_t bytes) {
    if (bytes > 0 && (!mine || !all)) return ae_errorf(AE_ERR_ARG, "allgather_host: null buffer");
    if (bytes == 0) return AE_OK;
    if (!multi(c)) {
        if (all != mine) memmove(all, mine, bytes);
        return AE_OK;
    }
    ae_watchdog_enter(&c->wd, "allgather_host");
    ae_status st = c->ops->allgather_host(c, mine, all, bytes);
    ae_watchdog_leave(&c->wd);
    return st;
}

ae_status ae_comm_barrier(ae_comm *c) {
    if (!multi(c)) return AE_OK;
    ae_watchdog_enter(&c->wd, "barrier");
    ae_status st = c->ops->barrier(c);
    ae_watchdog_leave(&c->wd);
    return st;
}

static ae_status p2p(ae_comm *c, ae_ptr x, size_t n, int peer, int recv) {
    const char *op = recv ? "recv" : "send";
    if (peer < 0 || peer >= ae_comm_size(c) || peer == ae_comm_rank(c))
        return ae_errorf(AE_ERR_ARG, "%s: peer rank %d (this rank %d, %d ranks)", op, peer,
                         ae_comm_rank(c), ae_comm_size(c));
    if (n > 0 && !x.data) return ae_errorf(AE_ERR_ARG, "%s: null buffer", op);
    if (!multi(c) || n == 0) return AE_OK;
    ae_watchdog_enter(&c->wd, op);
    size_t bytes = n * ae_dtype_size(x.dtype);
    ae_status st = recv ? c->ops->recv(c, x, bytes, peer) : c->ops->send(c, x, bytes, peer);
    ae_watchdog_leave(&c->wd);
    return st;
}

ae_status ae_comm_send(ae_comm *c, ae_ptr x, size_t n, int peer) { return p2p(c, x, n, peer, 0); }
ae_status ae_comm_recv(ae_comm *c, ae_ptr x, size_t n, int peer) { return p2p(c, x, n, peer, 1); }

// ---- sameness ------------------------------------------------------------------------------------

ae_status ae_comm_check_same(ae_comm *c, const uint8_t digest[32], const char *what,
                             const char *advice) {
    int size = ae_comm_size(c);
    if (size == 1) return AE_OK;
    uint8_t *all = malloc((size_t)size * 32);
    if (!all) return ae_errorf(AE_ERR_NOMEM, "out of memory comparing the ranks' %s", what);
    ae_status st = ae_comm_allgather_host(c, digest, all, 32);
    if (st != AE_OK) {
        free(all);
        return st;
    }
    for (int r = 1; r < size; r++) {
        if (memcmp(all + (size_t)r * 32, all, 32) == 0) continue;
        char hr[65], h0[65];
        ae_sha256_hex(all + (size_t)r * 32, hr);
        ae_sha256_hex(all, h0);
        st = ae_errorf(AE_ERR_ARG, "rank %d's %s differs from rank 0's (SHA-256 %.8s.. vs %.8s..)%s%s",
                       r, what, hr, h0, advice && *advice ? ": " : "", advice ? advice : "");
        break;
    }
    free(all);
    return st;
}

// SHA-256 of /proc/self/exe, read from the file.
static ae_status exe_sha256(uint8_t digest[32]) {
    FILE *f = fopen("/proc/self/exe", "rb");
    if (!f)
        return ae_errorf(AE_ERR_IO, "/proc/self/exe: cannot open this program's file: %s",
                         strerror(errno));
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        fclose(f);
        return ae_errorf(AE_ERR_NOMEM, "out of memory reading /proc/self/exe");
    }
    ae_sha256_ctx s;
    ae_sha256_init(&s);
    size_t got;
    while ((got = fread(buf, 1, CHUNK, f)) > 0) ae_sha256_update(&s, buf, got);
    int bad = ferror(f);
    fclose(f);
    free(buf);
    if (bad) return ae_errorf(AE_ERR_IO, "/proc/self/exe: read error");
    ae_sha256_final(&s, digest);
    return AE_OK;
}

ae_status ae_dist_exe_digest(uint8_t digest[32]) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static uint8_t cached[32];
    static int have; // cached holds the digest (a failed read is tried again next time)
    pthread_mutex_lock(&mu);
    ae_status st = have ? AE_OK : exe_sha256(cached);
    if (st == AE_OK) {
        have = 1;
        memcpy(digest, cached, 32);
    }
    pthread_mutex_unlock(&mu);
    return st;
}

#ifndef AE_HAVE_NCCL
ae_status ae_dist_nccl_id_hex(char out[260]) {
    out[0] = '\0';
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "this attnedit was built without NCCL, which groups of GPUs need (install "
                     "NCCL beside the CUDA toolkit and rebuild)");
}
#endif
