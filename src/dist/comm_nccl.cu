// Groups of GPU ranks over NCCL (dist/comm.h). Every collective is queued on the cuda backend's
// one stream (so it follows the ops that made its buffers), then the host waits for that stream
// by polling (cudaStreamQuery every ~50 us) under the watchdog, checking NCCL's asynchronous
// error at each poll: a peer that fails shows up as an error here, a peer that hangs as the
// watchdog's line. Host-memory collectives (allreduce_host, allgather_host, barrier) go through a
// small device buffer and a pinned host buffer of the comm.
//
// Bootstrap: the NCCL id comes from the --gpus launcher (AE_DIST_NCCL_ID), or under mpirun rank 0
// makes it and MPI broadcasts it (a build with MPI). NCCL_NVLS_ENABLE defaults to 0 here: NVLink
// multicast (NVLS) is never used unless the user asks for it.
#ifdef AE_HAVE_NCCL

#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda_internal.h"
#include "dist/comm_internal.h"

namespace {

struct nccl_impl {
    ncclComm_t comm;
    int aborted;          // ncclCommAbort was called (then never destroy)
    int mpi_ours;         // MPI was initialised by us (mpirun bootstrap): finalize at close
    int device;
    cudaStream_t stream;  // the backend's
    cudaStream_t side;    // the overlapped all-reduces' (allreduce_start .. wait)
    cudaEvent_t ready;    // recorded on stream at each start: side waits for it
    int pending;          // an overlapped all-reduce was started and not waited for
    void *dev_buf;        // scratch for the host-memory collectives (device, cap bytes)
    void *host_buf;       // the same size, pinned host memory
    size_t cap;
};

nccl_impl *impl_of(ae_comm *c) { return (nccl_impl *)c->impl; }

void abort_hook(void *arg) {
    nccl_impl *m = (nccl_impl *)arg;
    if (m && m->comm && !m->aborted) {
        m->aborted = 1;
        ncclCommAbort(m->comm);
    }
}

ae_status nccl_error(ae_comm *c, ncclResult_t r, const char *what) {
    nccl_impl *m = impl_of(c);
    const char *last = m && m->comm ? ncclGetLastError(m->comm) : NULL;
    return ae_errorf(AE_ERR_DEVICE, "rank %d: NCCL %s failed: %s%s%s%s", c->rank, what,
                     ncclGetErrorString(r), last && *last ? " (" : "", last ? last : "",
                     last && *last ? ")" : "");
}

ae_status cuda_error(ae_comm *c, cudaError_t e, const char *what) {
    cuda_check(c->be, e, what); // the backend keeps it too: its later ops do nothing
    return ae_errorf(AE_ERR_DEVICE, "rank %d: CUDA error in %s: %s", c->rank, what,
                     cudaGetErrorString(e));
}

// Waits for stream s (and so for the collective queued on it).
ae_status wait_on(ae_comm *c, cudaStream_t s, const char *what) {
    nccl_impl *m = impl_of(c);
    struct timespec nap = {0, 50000};
    for (;;) {
        while (ae_watchdog_fired(&c->wd)) nanosleep(&nap, NULL); // aborting: _exit(3) follows
        cudaError_t e = cudaStreamQuery(s);
        if (e == cudaSuccess) return AE_OK;
        if (e != cudaErrorNotReady) return cuda_error(c, e, what);
        (void)cudaGetLastError(); // "not ready" is no error; never leave it for the backend's checks
        ncclResult_t async = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(m->comm, &async);
        if (r != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
            ae_status st = nccl_error(c, r != ncclSuccess ? r : async, what);
            abort_hook(m); // the kernel on the stream would otherwise wait for ever
            return st;
        }
        nanosleep(&nap, NULL);
    }
}

// Waits for the backend's stream.
ae_status wait_stream(ae_comm *c, const char *what) { return wait_on(c, impl_of(c)->stream, what); }

// Refuses a collective after an earlier NCCL failure (the communicator is aborted) or with the
// backend's kept error, if any (its stream holds no valid data then).
ae_status backend_ok(ae_comm *c) {
    if (impl_of(c)->aborted)
        return ae_errorf(AE_ERR_DEVICE, "rank %d: the NCCL communicator was aborted after an "
                         "earlier failure", c->rank);
    if (!cuda_failed(c->be)) return AE_OK;
    return ae_error_wrap(c->be->sync(c->be), "rank %d", c->rank);
}

ae_status scratch(ae_comm *c, size_t bytes) {
    nccl_impl *m = impl_of(c);
    if (bytes <= m->cap) return AE_OK;
    size_t cap = m->cap ? m->cap : 4096;
    while (cap < bytes) cap *= 2;
    if (m->dev_buf) cudaFree(m->dev_buf);
    if (m->host_buf) cudaFreeHost(m->host_buf);
    m->dev_buf = m->host_buf = NULL;
    m->cap = 0;
    cudaError_t e = cudaMalloc(&m->dev_buf, cap);
    if (e == cudaSuccess) e = cudaMallocHost(&m->host_buf, cap);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return ae_errorf(AE_ERR_NOMEM, "rank %d: cannot allocate %zu bytes for a collective: %s",
                         c->rank, cap, cudaGetErrorString(e));
    }
    m->cap = cap;
    return AE_OK;
}

// Queues op(i) for every i < k with ns[i] > 0, in NCCL groups of at most kGroupMax operations
// (NCCL before 2.12 refuses more than 2048 in one group; a MoE model has thousands of tensors).
// Each group is one launch; they run one after the other on the stream the operations name.
constexpr int kGroupMax = 1024;

template <class Op> ncclResult_t grouped(const size_t *ns, int k, Op op) {
    for (int i0 = 0; i0 < k; i0 += kGroupMax) {
        ncclResult_t r = ncclGroupStart();
        for (int i = i0; i < k && i < i0 + kGroupMax && r == ncclSuccess; i++)
            if (ns[i] > 0) r = op(i);
        ncclResult_t r2 = ncclGroupEnd(); // also after a failure: the group must be closed
        if (r != ncclSuccess || r2 != ncclSuccess) return r != ncclSuccess ? r : r2;
    }
    return ncclSuccess;
}

// The sums of xs[i] (ns[i] values, i < k) on stream s: F32, or BF16 (--grad-dtype bf16
// gradients: NCCL adds in bf16, each partial sum rounded, in an order fixed by the ring).
ncclResult_t queue_sums(nccl_impl *m, const ae_ptr *xs, const size_t *ns, int k, cudaStream_t s) {
    return grouped(ns, k, [&](int i) {
        ncclDataType_t t = xs[i].dtype == AE_DT_BF16 ? ncclBfloat16 : ncclFloat;
        return ncclAllReduce(xs[i].data, xs[i].data, ns[i], t, ncclSum, m->comm, s);
    });
}

ae_status nccl_allreduce_sum(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k) {
    nccl_impl *m = impl_of(c);
    AE_TRY(backend_ok(c));
    ncclResult_t r = queue_sums(m, xs, ns, k, m->stream);
    if (r != ncclSuccess) return nccl_error(c, r, "allreduce (sum of F32/BF16 buffers)");
    return wait_stream(c, "allreduce_sum");
}

// The sums on the side stream once the backend's stream has made the buffers.
ae_status nccl_allreduce_start(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k) {
    nccl_impl *m = impl_of(c);
    AE_TRY(backend_ok(c));
    cudaError_t e = cudaSuccess;
    int least = 0, greatest = 0; // the priority of the backend's stream (backend/cuda.cu)
    if (!m->side && (e = cudaDeviceGetStreamPriorityRange(&least, &greatest)) == cudaSuccess)
        e = cudaStreamCreateWithPriority(&m->side, cudaStreamNonBlocking, greatest);
    if (e == cudaSuccess && !m->ready) e = cudaEventCreateWithFlags(&m->ready, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(m->ready, m->stream);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(m->side, m->ready, 0);
    if (e != cudaSuccess) return cuda_error(c, e, "allreduce_start (the side stream)");
    ncclResult_t r = queue_sums(m, xs, ns, k, m->side);
    if (r != ncclSuccess) return nccl_error(c, r, "allreduce (overlapped sum of F32/BF16 buffers)");
    m->pending = 1;
    return AE_OK;
}

// Every started sum done: the backend's later work, queued after this returns, reads them.
ae_status nccl_wait(ae_comm *c) {
    nccl_impl *m = impl_of(c);
    if (!m->pending) return AE_OK;
    m->pending = 0;
    return wait_on(c, m->side, "allreduce (overlapped)");
}

ae_status nccl_allreduce_host(ae_comm *c, double *x, int n) {
    nccl_impl *m = impl_of(c);
    AE_TRY(backend_ok(c));
    size_t bytes = (size_t)n * sizeof(double);
    AE_TRY(scratch(c, bytes));
    memcpy(m->host_buf, x, bytes);
    cudaError_t e = cudaMemcpyAsync(m->dev_buf, m->host_buf, bytes, cudaMemcpyHostToDevice, m->stream);
    if (e != cudaSuccess) return cuda_error(c, e, "allreduce_host (copy to the device)");
    ncclResult_t r = ncclAllReduce(m->dev_buf, m->dev_buf, (size_t)n, ncclFloat64, ncclSum, m->comm,
                                   m->stream);
    if (r != ncclSuccess) return nccl_error(c, r, "allreduce (sum of host doubles)");
    e = cudaMemcpyAsync(m->host_buf, m->dev_buf, bytes, cudaMemcpyDeviceToHost, m->stream);
    if (e != cudaSuccess) return cuda_error(c, e, "allreduce_host (copy to the host)");
    AE_TRY(wait_stream(c, "allreduce_host"));
    memcpy(x, m->host_buf, bytes);
    return AE_OK;
}

// Every buffer from its root (as bytes), grouped, then one wait.
ae_status nccl_broadcast(ae_comm *c, const ae_ptr *xs, const size_t *ns, const int *roots, int k) {
    nccl_impl *m = impl_of(c);
    AE_TRY(backend_ok(c));
    ncclResult_t r = grouped(ns, k, [&](int i) {
        return ncclBroadcast(xs[i].data, xs[i].data, ns[i] * ae_dtype_size(xs[i].dtype), ncclUint8,
                             roots[i], m->comm, m->stream);
    });
    if (r != ncclSuccess) return nccl_error(c, r, "broadcast");
    return wait_stream(c, "broadcast");
}

ae_status nccl_allgather_host(ae_comm *c, const void *mine, void *all, size_t bytes) {
    nccl_impl *m = impl_of(c);
    AE_TRY(backend_ok(c));
    size_t total = bytes * (size_t)c->size;
    AE_TRY(scratch(c, total));
    char *h = (char *)m->host_buf, *d = (char *)m->dev_buf;
    size_t off = bytes * (size_t)c->rank;
    memcpy(h + off, mine, bytes);
    cudaError_t e = cudaMemcpyAsync(d + off, h + off, bytes, cudaMemcpyHostToDevice, m->stream);
    if (e != cudaSuccess) return cuda_error(c, e, "allgather_host (copy to the device)");
    ncclResult_t r = ncclAllGather(d + off, d, bytes, ncclUint8, m->comm, m->stream); // in place
    if (r != ncclSuccess) return nccl_error(c, r, "allgather");
    e = cudaMemcpyAsync(h, d, total, cudaMemcpyDeviceToHost, m->stream);
    if (e != cudaSuccess) return cuda_error(c, e, "allgather_host (copy to the host)");
    AE_TRY(wait_stream(c, "allgather_host"));
    memcpy(all, h, total);
    return AE_OK;
}

ae_status nccl_barrier(ae_comm *c) {
    double one = 1.0;
    return nccl_allreduce_host(c, &one, 1);
}

void release(nccl_impl *m) {
    if (m->comm && !m->aborted) ncclCommDestroy(m->comm);
    if (m->dev_buf) cudaFree(m->dev_buf);
    if (m->host_buf) cudaFreeHost(m->host_buf);
    if (m->ready) cudaEventDestroy(m->ready);
    if (m->side) cudaStreamDestroy(m->side);
    (void)cudaGetLastError();
    ae_mpi_finish(m->mpi_ours);
    free(m);
}

void nccl_close(ae_comm *c) {
    nccl_impl *m = impl_of(c);
    if (!m) return;
    ae_watchdog_set_hook(&c->wd, NULL, NULL);
    release(m);
    c->impl = NULL;
}

ae_status nccl_p2p(ae_comm *c, ae_ptr x, size_t bytes, int peer, int recv) {
    nccl_impl *m = impl_of(c);
    AE_TRY(backend_ok(c));
    ncclResult_t r = recv ? ncclRecv(x.data, bytes, ncclUint8, peer, m->comm, m->stream)
                          : ncclSend(x.data, bytes, ncclUint8, peer, m->comm, m->stream);
    if (r != ncclSuccess) return nccl_error(c, r, recv ? "recv" : "send");
    return wait_stream(c, recv ? "recv" : "send");
}

ae_status nccl_send(ae_comm *c, ae_ptr x, size_t bytes, int peer) { return nccl_p2p(c, x, bytes, peer, 0); }
ae_status nccl_recv(ae_comm *c, ae_ptr x, size_t bytes, int peer) { return nccl_p2p(c, x, bytes, peer, 1); }

const ae_comm_ops k_nccl_ops = {nccl_allreduce_sum, nccl_allreduce_host, nccl_broadcast,
                                nccl_allgather_host, nccl_barrier, nccl_allreduce_start, nccl_wait, nccl_send, nccl_recv, nccl_close};

// "rank r: this host has k GPUs for its m ranks" for rank r (every rank gets the same message).
ae_status gpu_count_error(int r, int k, int m) {
    return ae_errorf(AE_ERR_UNSUPPORTED, "rank %d: this host has %d GPU%s for its %d ranks", r, k,
                     k == 1 ? "" : "s", m);
}

// Under mpirun: MPI, the GPU count check on every rank (every rank learns every outcome before
// anyone blocks in ncclCommInitRank), then rank 0's NCCL id to all.
ae_status mpi_bootstrap(ae_comm *c, const ae_dist_env *e, nccl_impl *m, ncclUniqueId *id) {
#ifndef AE_HAVE_MPI
    (void)m;
    (void)id;
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "rank %d of %d: this attnedit was built without MPI: start the ranks with "
                     "--gpus %d instead of mpirun", e->rank, e->size, e->size);
#else
    ae_watchdog_enter(&c->wd, "MPI_Init");
    ae_status st = ae_mpi_start(e, &m->mpi_ours);
    ae_watchdog_leave(&c->wd);
    if (st != AE_OK) return st;
    int mine[3] = {ae_cuda_device_count(), e->local_rank, e->local_size};
    int *all = (int *)malloc(sizeof mine * (size_t)e->size);
    if (!all) return ae_errorf(AE_ERR_NOMEM, "out of memory for the GPU count check");
    ae_watchdog_enter(&c->wd, "the GPU count check");
    st = ae_mpi_allgather_bytes(mine, all, sizeof mine);
    ae_watchdog_leave(&c->wd);
    for (int r = 0; st == AE_OK && r < e->size; r++)
        if (all[3 * r] <= all[3 * r + 1]) st = gpu_count_error(r, all[3 * r], all[3 * r + 2]);
    free(all);
    if (st != AE_OK) return st;
    ncclResult_t nr = ncclSuccess;
    if (e->rank == 0) nr = ncclGetUniqueId(id);
    // rank 0 tells everyone whether it has an id: a failure stops every rank with one message
    char msg[1 + sizeof *id];
    msg[0] = (char)(nr == ncclSuccess);
    memcpy(msg + 1, id, sizeof *id);
    ae_watchdog_enter(&c->wd, "the NCCL id broadcast");
    st = ae_mpi_bcast_bytes(msg, sizeof msg, 0);
    ae_watchdog_leave(&c->wd);
    if (st != AE_OK) return st;
    if (!msg[0])
        return ae_errorf(AE_ERR_DEVICE, "rank %d: rank 0 could not make the NCCL id%s%s", e->rank,
                         e->rank == 0 ? ": " : "", e->rank == 0 ? ncclGetErrorString(nr) : "");
    memcpy(id, msg + 1, sizeof *id);
    return AE_OK;
#endif
}

} // namespace

extern "C" ae_status ae_dist_nccl_id_hex(char out[260]) {
    ncclUniqueId id;
    out[0] = '\0';
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
        return ae_errorf(AE_ERR_DEVICE, "cannot make an NCCL id: %s", ncclGetErrorString(r));
    ae_dist_hex(&id, sizeof id, out);
    return AE_OK;
}

extern "C" ae_status ae_comm_nccl_open(ae_comm *c, const ae_dist_env *e) {
    static_assert(sizeof(ncclUniqueId) * 2 < sizeof e->nccl_id, "nccl_id too small");
    const ae_backend *be = c->be;
    if (be->alloc != ae_cuda_alloc)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "rank %d: NCCL needs the cuda backend itself (%s is wrapped, e.g. by the "
                         "op profiler)", e->rank, be->name);
    nccl_impl *m = (nccl_impl *)calloc(1, sizeof *m);
    if (!m) return ae_errorf(AE_ERR_NOMEM, "out of memory for the NCCL communicator");
    m->device = cu(be)->device;
    m->stream = cu(be)->stream;
    c->impl = m;
    setenv("NCCL_NVLS_ENABLE", "0", 0); // never NVLink multicast unless asked for (before any
                                        // NCCL call of this process reads its settings)
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ae_status st = AE_OK;
    if (e->nccl_id[0]) { // --gpus: the launcher checked the GPU count for all; check mine here
        if (ae_dist_unhex(e->nccl_id, &id, sizeof id) != 0)
            st = ae_errorf(AE_ERR_ARG, "AE_DIST_NCCL_ID: not %zu hex digits", 2 * sizeof id);
        else if (ae_cuda_device_count() <= e->local_rank)
            st = gpu_count_error(e->rank, ae_cuda_device_count(), e->local_size);
    } else if (e->launcher == AE_LAUNCH_MPI) {
        st = mpi_bootstrap(c, e, m, &id);
    } else {
        st = ae_errorf(AE_ERR_ARG,
                       "rank %d of %d: AE_DIST_NCCL_ID is not set (the --gpus launcher sets it "
                       "for every rank it starts)", e->rank, e->size);
    }
    if (st == AE_OK) {
        cudaError_t ce = cudaSetDevice(m->device);
        if (ce != cudaSuccess) {
            st = ae_errorf(AE_ERR_DEVICE, "rank %d: cuda:%d: %s", e->rank, m->device,
                           cudaGetErrorString(ce));
        } else {
            ae_watchdog_enter(&c->wd, "ncclCommInitRank");
            ncclResult_t r = ncclCommInitRank(&m->comm, e->size, id, e->rank);
            ae_watchdog_leave(&c->wd);
            if (r != ncclSuccess) {
                m->comm = NULL;
                st = ae_errorf(AE_ERR_DEVICE, "rank %d of %d on cuda:%d: NCCL could not start the "
                               "group (ncclCommInitRank): %s", e->rank, e->size, m->device,
                               ncclGetErrorString(r));
            }
        }
    }
    if (st != AE_OK) {
        release(m);
        c->impl = NULL;
        return st;
    }
    ae_watchdog_set_hook(&c->wd, abort_hook, m);
    c->ops = &k_nccl_ops;
    c->kind = "nccl";
    return AE_OK;
}

#endif // AE_HAVE_NCCL
