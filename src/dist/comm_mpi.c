// Groups of CPU ranks over MPI (the reference for data-parallel training, tested in CI with
// several ranks on one machine), and the MPI helpers that start NCCL under mpirun. Backend memory
// is host memory here, so every collective works on the buffers in place. Without MPI (a build
// where CMake found none) every entry point refuses with AE_ERR_UNSUPPORTED.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm_internal.h"

#ifdef AE_HAVE_MPI
#include <mpi.h>

// MPI counts are int: longer buffers go in pieces of this many elements.
#define AE_MPI_PIECE (1 << 30)

typedef struct {
    int ours; // we called MPI_Init_thread, so we call MPI_Finalize
} mpi_impl;

static ae_status mpi_fail(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING + 1] = "";
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return ae_errorf(AE_ERR_DEVICE, "rank %d: MPI %s failed: %s", rank, what, msg);
}

ae_status ae_mpi_start(const ae_dist_env *e, int *ours) {
    *ours = 0;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "rank %d: MPI was already finalized in this process (one group per "
                         "process)", e->rank);
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS)
            return ae_errorf(AE_ERR_DEVICE, "rank %d: MPI_Init_thread failed (error %d)", e->rank,
                             rc);
        *ours = 1;
    }
    // Errors come back as codes (turned into messages) instead of aborting every rank.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = -1, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank != e->rank || size != e->size) {
        ae_status st = ae_errorf(AE_ERR_ARG,
                                 "MPI says this process is rank %d of %d but its environment "
                                 "says rank %d of %d (%s): start the ranks with the mpirun of "
                                 "the MPI attnedit was built with", rank, size, e->rank, e->size,
                                 getenv("OMPI_COMM_WORLD_RANK") ? "OMPI_COMM_WORLD_RANK/SIZE"
                                 : getenv("PMI_RANK")          ? "PMI_RANK/PMI_SIZE"
                                                               : "AE_DIST_RANK/SIZE");
        ae_mpi_finish(*ours);
        *ours = 0;
        return st;
    }
    return AE_OK;
}

void ae_mpi_finish(int ours) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (ours && !finalized) MPI_Finalize();
}

ae_status ae_mpi_bcast_bytes(void *buf, size_t bytes, int root) {
    for (size_t off = 0; off < bytes; off += AE_MPI_PIECE) {
        size_t m = bytes - off < AE_MPI_PIECE ? bytes - off : AE_MPI_PIECE;
        int rc = MPI_Bcast((char *)buf + off, (int)m, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast");
    }
    return AE_OK;
}

ae_status ae_mpi_allgather_bytes(const void *mine, void *all, size_t bytes) {
    if (bytes > INT_MAX) return ae_errorf(AE_ERR_ARG, "allgather_host: %zu bytes per rank", bytes);
    int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? AE_OK : mpi_fail(rc, "allgather");
}

static ae_status mpi_allreduce_sum(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k) {
    for (int i = 0; i < k; i++) // MPI serves the cpu backend: F32 gradients (--grad-dtype fp32)
        if (ns[i] > 0 && xs[i].dtype != AE_DT_F32)
            return ae_errorf(AE_ERR_UNSUPPORTED, "allreduce over MPI: buffer %d is %s; MPI sums "
                             "F32 buffers only (--grad-dtype bf16 needs NCCL: cuda ranks)", i,
                             ae_dtype_name(xs[i].dtype));
    for (int i = 0; i < k; i++)
        for (size_t off = 0; off < ns[i]; off += AE_MPI_PIECE) {
            size_t m = ns[i] - off < AE_MPI_PIECE ? ns[i] - off : AE_MPI_PIECE;
            int rc = MPI_Allreduce(MPI_IN_PLACE, (float *)xs[i].data + off, (int)m, MPI_FLOAT,
                                   MPI_SUM, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) return mpi_fail(rc, "allreduce (sum of F32 buffers)");
        }
    return AE_OK;
}

static ae_status mpi_allreduce_host(ae_comm *c, double *x, int n) {
    int rc = MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? AE_OK : mpi_fail(rc, "allreduce (sum of host doubles)");
}

// Every piece of every buffer started (MPI_Ibcast, in the same order on every rank), then one
// wait for all of them.
static ae_status mpi_broadcast(ae_comm *c, const ae_ptr *xs, const size_t *ns, const int *roots,
                               int k) {
    size_t pieces = 0;
    for (int i = 0; i < k; i++)
        pieces += (ns[i] * ae_dtype_size(xs[i].dtype) + AE_MPI_PIECE - 1) / AE_MPI_PIECE;
    MPI_Request *req = malloc((pieces ? pieces : 1) * sizeof *req);
    if (!req)
        return ae_errorf(AE_ERR_NOMEM, "rank %d: out of memory for %zu broadcasts", c->rank, pieces);
    int rc = MPI_SUCCESS;
    size_t started = 0;
    for (int i = 0; i < k && rc == MPI_SUCCESS; i++) {
        size_t bytes = ns[i] * ae_dtype_size(xs[i].dtype);
        for (size_t off = 0; off < bytes && rc == MPI_SUCCESS; off += AE_MPI_PIECE) {
            size_t m = bytes - off < AE_MPI_PIECE ? bytes - off : AE_MPI_PIECE;
            rc = MPI_Ibcast((char *)xs[i].data + off, (int)m, MPI_BYTE, roots[i], MPI_COMM_WORLD,
                            &req[started]);
            if (rc == MPI_SUCCESS) started++;
        }
    }
    // the started ones are waited for also after a failure: MPI must not be left with them
    int rw = started ? MPI_Waitall((int)started, req, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    free(req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast (MPI_Ibcast)");
    return rw == MPI_SUCCESS ? AE_OK : mpi_fail(rw, "broadcast (MPI_Waitall)");
}

static ae_status mpi_allgather_host(ae_comm *c, const void *mine, void *all, size_t bytes) {
    return ae_mpi_allgather_bytes(mine, all, bytes);
}

static ae_status mpi_barrier(ae_comm *c) {
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? AE_OK : mpi_fail(rc, "barrier");
}

// Bytes in pieces of at most AE_MPI_PIECE (MPI counts are int), tag 0: ordered per pair.
static ae_status mpi_p2p(ae_comm *c, ae_ptr x, size_t bytes, int peer, int recv) {
    for (size_t off = 0; off < bytes; off += AE_MPI_PIECE) {
        size_t m = bytes - off < AE_MPI_PIECE ? bytes - off : AE_MPI_PIECE;
        char *p = (char *)x.data + off;
        int rc = recv ? MPI_Recv(p, (int)m, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE)
                      : MPI_Send(p, (int)m, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, recv ? "recv" : "send");
    }
    return AE_OK;
}

static ae_status mpi_send(ae_comm *c, ae_ptr x, size_t bytes, int peer) { return mpi_p2p(c, x, bytes, peer, 0); }
static ae_status mpi_recv(ae_comm *c, ae_ptr x, size_t bytes, int peer) { return mpi_p2p(c, x, bytes, peer, 1); }

static void mpi_close(ae_comm *c) {
    mpi_impl *m = c->impl;
    if (m) ae_mpi_finish(m->ours);
    free(m);
    c->impl = NULL;
}

static const ae_comm_ops k_mpi_ops = {mpi_allreduce_sum, mpi_allreduce_host, mpi_broadcast,
                                      mpi_allgather_host, mpi_barrier, NULL, NULL, mpi_send, mpi_recv,
                                      mpi_close};

ae_status ae_comm_mpi_open(ae_comm *c, const ae_dist_env *e) {
    mpi_impl *m = calloc(1, sizeof *m);
    if (!m) return ae_errorf(AE_ERR_NOMEM, "out of memory for the MPI communicator");
    ae_watchdog_enter(&c->wd, "MPI_Init");
    ae_status st = ae_mpi_start(e, &m->ours);
    ae_watchdog_leave(&c->wd);
    if (st != AE_OK) {
        free(m);
        return st;
    }
    c->impl = m;
    c->ops = &k_mpi_ops;
    c->kind = "mpi";
    return AE_OK;
}

#else // no MPI in this build

static ae_status no_mpi(const ae_dist_env *e) {
    if (e && e->launcher == AE_LAUNCH_MPI)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "rank %d of %d: this attnedit was built without MPI, so it cannot join "
                         "an mpirun group (install libopenmpi-dev and rebuild; GPU ranks can "
                         "also be started with --gpus N instead of mpirun)", e->rank, e->size);
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "this attnedit was built without MPI, which groups of CPU ranks need "
                     "(install libopenmpi-dev, rebuild, and start the ranks with mpirun -np N)");
}

ae_status ae_mpi_start(const ae_dist_env *e, int *ours) {
    *ours = 0;
    return no_mpi(e);
}
void ae_mpi_finish(int ours) { (void)ours; }
ae_status ae_mpi_bcast_bytes(void *buf, size_t bytes, int root) { return no_mpi(NULL); }
ae_status ae_mpi_allgather_bytes(const void *mine, void *all, size_t bytes) { return no_mpi(NULL); }
ae_status ae_comm_mpi_open(ae_comm *c, const ae_dist_env *e) { return no_mpi(e); }

#endif
