// Private to dist/ (comm.c, watchdog.c, comm_mpi.c, comm_nccl.cu): the communicator's state, the
// table each kind of group fills in, the watchdog and the MPI helpers the NCCL bootstrap uses.
// Included from C and from CUDA C++ (comm_nccl.cu).
#ifndef AE_DIST_COMM_INTERNAL_H
#define AE_DIST_COMM_INTERNAL_H

#include <pthread.h>
#include <stddef.h>

#include "dist/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- the watchdog (watchdog.c) -------------------------------------------------------------------
// A thread that looks once per second whether the process has been inside one blocking
// collective (ae_watchdog_enter .. ae_watchdog_leave) for longer than `timeout` seconds; then it
// writes one line to stderr,
//   attnedit: rank r: waited N s for the other ranks in <op> at <where>: a rank died or hangs;
//   stopping (the last checkpoint, if any, stays valid)
// calls the abort hook (if any; NCCL: ncclCommAbort), and ends the process with _exit(3) (also
// when the hook itself hangs: a SIGALRM 10 s later ends it with status 3 too).
typedef struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;        // signalled by stop (the thread sleeps on it, 1 s at a time)
    int started, stopping;
    int rank;
    double timeout;           // seconds
    double since;             // CLOCK_MONOTONIC seconds when the current collective began; 0: none
    const char *op;           // the current collective (static string)
    char where[160];          // ae_comm_set_where's position
    void (*abort_hook)(void *arg);
    void *abort_arg;
    int fired;                // set (atomically) just before the hook runs: a thread polling a
                              // collective then stops touching the library (ae_watchdog_fired)
} ae_watchdog;

// 1 once the watchdog has fired (the process is about to _exit(3)): callers in a polling loop
// park instead of calling into a communicator the hook is aborting.
static inline int ae_watchdog_fired(ae_watchdog *wd) {
    return __atomic_load_n(&wd->fired, __ATOMIC_SEQ_CST);
}

// Initialises wd (not yet running): where = "the start of the run".
void ae_watchdog_init(ae_watchdog *wd, int rank, double timeout);
// Starts the thread; AE_ERR_NOMEM when no thread can be created.
ae_status ae_watchdog_start(ae_watchdog *wd);
// The hook called before _exit(3) (set before or after start; NULL: none).
void ae_watchdog_set_hook(ae_watchdog *wd, void (*hook)(void *), void *arg);
void ae_watchdog_set_where(ae_watchdog *wd, const char *where);
// Around each blocking collective (op: a static string such as "allreduce_sum").
void ae_watchdog_enter(ae_watchdog *wd, const char *op);
void ae_watchdog_leave(ae_watchdog *wd);
// Stops and joins the thread (a no-op when it was never started); wd can be started again.
void ae_watchdog_stop(ae_watchdog *wd);
// AE_DIST_TIMEOUT: *seconds = its value (a number > 0, at most 1e7) or 600 when unset or empty;
// AE_ERR_ARG naming the variable otherwise.
ae_status ae_watchdog_timeout_from_env(double *seconds);

// ---- the communicator ----------------------------------------------------------------------------
// What one kind of group does; comm.c checks the arguments, handles NULL, size 1, and runs each
// call under the watchdog before calling these.
typedef struct {
    ae_status (*allreduce_sum)(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k);
    ae_status (*allreduce_host)(ae_comm *c, double *x, int n);
    ae_status (*broadcast)(ae_comm *c, const ae_ptr *xs, const size_t *ns, const int *roots,
                           int k); // ae_comm_broadcast_many (ae_comm_broadcast: k = 1)
    ae_status (*allgather_host)(ae_comm *c, const void *mine, void *all, size_t bytes);
    ae_status (*barrier)(ae_comm *c);
    ae_status (*allreduce_start)(ae_comm *c, const ae_ptr *xs, const size_t *ns, int k); // NULL:
    ae_status (*wait)(ae_comm *c); // allreduce_sum at start, wait does nothing (MPI: host memory)
    ae_status (*send)(ae_comm *c, ae_ptr x, size_t bytes, int peer);
    ae_status (*recv)(ae_comm *c, ae_ptr x, size_t bytes, int peer);
    void (*close)(ae_comm *c); // releases impl (after the watchdog stopped)
} ae_comm_ops;

struct ae_comm {
    int rank, size, local_rank, local_size;
    int launcher;              // AE_LAUNCH_*
    const char *kind;          // "single", "mpi", "nccl"
    const ae_backend *be;
    const ae_comm_ops *ops;    // NULL for the single-rank comm
    void *impl;                // the kind's state
    ae_watchdog wd;
};

// Fill c->ops, c->impl and c->kind (c's ranks, be and watchdog are set and the watchdog runs).
// On failure they leave a message and release what they made.
ae_status ae_comm_mpi_open(ae_comm *c, const ae_dist_env *e);
#ifdef AE_HAVE_NCCL
ae_status ae_comm_nccl_open(ae_comm *c, const ae_dist_env *e);
#endif

// ---- MPI helpers for the NCCL bootstrap under mpirun (comm_mpi.c; AE_ERR_UNSUPPORTED without
// MPI). Collective over MPI_COMM_WORLD; call them under the watchdog.
// Initialises MPI if nobody did (MPI_THREAD_FUNNELED; *ours = 1 then) and checks that MPI's rank
// and size are e's (AE_ERR_ARG naming both otherwise).
ae_status ae_mpi_start(const ae_dist_env *e, int *ours);
// MPI_Finalize when ours (and MPI not yet finalized).
void ae_mpi_finish(int ours);
ae_status ae_mpi_bcast_bytes(void *buf, size_t bytes, int root);
ae_status ae_mpi_allgather_bytes(const void *mine, void *all, size_t bytes);

// Hex helpers (comm.c): 2·n lowercase hex digits + NUL into hex; parse: 0 on success, -1 when
// text is not exactly 2·n hex digits.
void ae_dist_hex(const void *bytes, size_t n, char *hex);
int ae_dist_unhex(const char *text, void *bytes, size_t n);

#ifdef __cplusplus
}
#endif

#endif
