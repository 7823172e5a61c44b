// Collectives between the ranks of a data-parallel run (issue 12): one process per device, each
// on its own shard of every optimizer step's micro-batches, gradients summed over the ranks.
//
// Layer: above the backend (buffers are backend memory: ae_ptr), below train/. The standard
// engines do the work: NCCL between CUDA devices (one host or several), MPI between CPU ranks
// (the CPU reference, tested in CI with several ranks on one machine) and to start NCCL under
// mpirun. Nothing here is home-made networking.
//
// Launch. A run is one rank of a group when it was started by
//   mpirun -np N attnedit ...        (OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}, or
//                                     PMI_RANK/PMI_SIZE (MPICH); needs a build with MPI)
//   attnedit ... --gpus N            (dist/launch.h: starts N ranks of itself on this host, with
//                                     AE_DIST_RANK, AE_DIST_SIZE, AE_DIST_LOCAL_RANK,
//                                     AE_DIST_LOCAL_SIZE and AE_DIST_NCCL_ID set; no MPI needed)
// and otherwise a group of one (ae_comm_open gives the single-rank comm: every collective is the
// identity).
//
// Timeouts. Every blocking collective runs under a watchdog: a rank that waits longer than the
// timeout (AE_DIST_TIMEOUT seconds, default 600) for the others prints one line naming itself,
// the collective and the position the caller set (ae_comm_set_where: "stage 1, step 12") and
// exits with status 3, leaving files as they were (checkpoints are written atomically by rank 0
// only, so the last one stays valid). With NCCL the communicator is aborted first.
#ifndef AE_DIST_COMM_H
#define AE_DIST_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// Where this process stands in its group, read from the environment (above).
typedef struct {
    int rank, size;             // 0 ≤ rank < size; size 1 when not launched as a group
    int local_rank, local_size; // among the ranks on this host
    int launcher;               // AE_LAUNCH_NONE, AE_LAUNCH_ATTNEDIT (--gpus) or AE_LAUNCH_MPI
    char nccl_id[260];          // AE_DIST_NCCL_ID (hex of the ncclUniqueId) from --gpus; "" otherwise
} ae_dist_env;

enum { AE_LAUNCH_NONE = 0, AE_LAUNCH_ATTNEDIT = 1, AE_LAUNCH_MPI = 2 };

// Fills e from the environment. AE_ERR_ARG with a message naming the variable when a value is
// malformed or inconsistent (rank outside [0, size), local rank outside [0, local size)).
ae_status ae_dist_env_read(ae_dist_env *e);

// The device a rank uses when the user named none: in a group (size > 1), "cuda" becomes
// "cuda:<local rank>", and "auto" (or NULL) becomes what ae_backend_open("auto") would pick with
// the rank's GPU: ATTNEDIT_DEVICE's value treated the same way when set, else "cuda:<local rank>"
// when this host has a GPU (CUDA build), else "cpu". Every other name ("cpu", an explicit
// "cuda:N"), and every name of a group of one, is unchanged (NULL: "auto"). Writes into buf
// (size n) and returns it.
const char *ae_dist_device_name(const ae_dist_env *e, const char *name, char *buf, size_t n);

typedef struct ae_comm ae_comm;

// Opens the group's communicator over backend be (whose memory the buffer collectives take):
// size 1: the single-rank comm (no MPI, no NCCL touched); cuda: NCCL (its id from the launcher,
// or broadcast by MPI under mpirun); backends with host memory (cpu): MPI. Refusals, each
// AE_ERR_UNSUPPORTED or AE_ERR_ARG with one message: a group on cpu in a build without MPI; an
// mpirun launch in a build without MPI; NCCL missing from a cuda build; a rank on a host with
// fewer GPUs than ranks ("rank r: this host has k GPUs for its m ranks"), checked on every rank
// before NCCL starts so that all ranks stop with the same message (under mpirun every rank names
// the first such rank; under --gpus the launcher checked, and a rank checks only itself); a
// --gpus group on cpu (cpu groups are mpirun's); a malformed AE_DIST_TIMEOUT (AE_ERR_ARG naming
// it, also for a group of one). MPI is initialised by the first open if nobody did, and
// finalized by close then: one MPI group per process.
ae_status ae_comm_open(const ae_dist_env *e, const ae_backend *be, ae_comm **out);
// Finalizes NCCL/MPI as needed (before the backend is closed: NCCL uses its stream). NULL is a
// no-op.
void ae_comm_close(ae_comm *c);

int ae_comm_rank(const ae_comm *c);  // 0 for NULL
int ae_comm_size(const ae_comm *c);  // 1 for NULL
const char *ae_comm_kind(const ae_comm *c); // "single", "mpi" or "nccl"

// The caller's position for watchdog and error messages (copied; e.g. "stage 2, step 40").
//
// The collectives below take a NULL comm as the group of one (each is then the identity). Every
// rank calls them in the same order with the same sizes. Argument errors (a buffer neither F32
// nor BF16 for allreduce_sum, a root outside the group) are AE_ERR_ARG; an MPI or NCCL failure AE_ERR_DEVICE
// naming the rank and the library's message (an NCCL failure also aborts the communicator).
void ae_comm_set_where(ae_comm *c, const char *where);

// In place, over every rank: xs[i] (ns[i] values, F32, backend memory) = the sum of the ranks'
// xs[i], for i < k (one grouped operation). Blocks until done (watchdog above). BF16 buffers
// (--grad-dtype bf16 gradients) are summed in bf16 by NCCL (ncclBfloat16); MPI sums F32 only
// (AE_ERR_UNSUPPORTED for BF16: the cpu backend, MPI's, has no bf16 gradients).
ae_status ae_comm_allreduce_sum(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k);
// The same, overlapped with the work that follows: starts the sums after the work queued so far
// on the backend and returns at once (NCCL: on a second stream; MPI: done before it returns).
// xs must not be written, and nothing may read the sums, until ae_comm_wait. Several may be
// started (buckets: a layer's gradients as soon as its backward is done); every rank must start
// the same buckets in the same order, and no other collective may come between a start and the
// wait.
ae_status ae_comm_allreduce_start(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k);
// Waits for every started all-reduce (watchdog above).
ae_status ae_comm_wait(ae_comm *c);
// In place, host memory: x[i] = the sum over ranks of x[i], i < n (losses, counts, flags).
ae_status ae_comm_allreduce_host(ae_comm *c, double *x, int n);
// root's x (n values of x.dtype, backend memory) into every rank's x.
ae_status ae_comm_broadcast(ae_comm *c, ae_ptr x, size_t n, int root);
// Several broadcasts as one grouped operation (each tensor of a sharded optimizer from its
// owner): rank roots[i]'s xs[i] (ns[i] values of xs[i].dtype, backend memory) into every rank's
// xs[i], for i < k; the buffers must not overlap. The result is that of k calls of
// ae_comm_broadcast, with one wait (NCCL: ncclBroadcast calls in ncclGroupStart/End; MPI:
// MPI_Ibcast, then MPI_Waitall). A root outside the group or a null buffer is AE_ERR_ARG naming
// the buffer, before anything is sent.
ae_status ae_comm_broadcast_many(ae_comm *c, const ae_ptr *xs, const size_t *ns, const int *roots,
                                 int k);
// Host memory: every rank's `bytes` bytes at mine into all (size × bytes, rank order).
ae_status ae_comm_allgather_host(ae_comm *c, const void *mine, void *all, size_t bytes);
// Waits until every rank got here.
ae_status ae_comm_barrier(ae_comm *c);
// Point to point (the sharded states a checkpoint gathers on rank 0): x (n values of x.dtype,
// backend memory) to rank peer, which receives them with ae_comm_recv into a buffer of the same
// size and dtype. Messages between two ranks arrive in the order they were sent. Both block
// until done (watchdog above). A peer outside the group or this rank itself is AE_ERR_ARG.
ae_status ae_comm_send(ae_comm *c, ae_ptr x, size_t n, int peer);
ae_status ae_comm_recv(ae_comm *c, ae_ptr x, size_t n, int peer);

// Refuses a group whose ranks disagree: every rank passes the same 32-byte digest of what must
// match (ae_comm_check_same(c, digest, "binary", advice)); AE_ERR_ARG on every rank naming the
// first rank whose digest differs from rank 0's and `what`, with the first 8 hex digits of both
// digests and ": advice" unless advice is NULL or empty, e.g. "rank 1's binary differs from rank
// 0's (SHA-256 a1b2c3d4.. vs c3d4e5f6..): start every rank with the same attnedit build".
ae_status ae_comm_check_same(ae_comm *c, const uint8_t digest[32], const char *what,
                             const char *advice);
// SHA-256 of this process's executable (/proc/self/exe) into digest: read once per process (the
// first successful call; later calls copy it), so that convert's early check and ae_dp_start's
// (which library users get) do not read a multi-megabyte file twice.
ae_status ae_dist_exe_digest(uint8_t digest[32]);
// A fresh NCCL unique id as lowercase hex (2·128 chars + NUL) for AE_DIST_NCCL_ID (the --gpus
// launcher). AE_ERR_UNSUPPORTED in a build without NCCL.
ae_status ae_dist_nccl_id_hex(char out[260]);

#ifdef __cplusplus
}
#endif

#endif
