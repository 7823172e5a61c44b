// `--gpus N` (dist/launch.h): the launcher that starts N ranks of this program on this host and
// watches them. Linux only (/proc/self/exe, signalfd, prctl): the GPU machines we target.
//
// Shape: the signals the launcher reacts to (SIGINT, SIGTERM, SIGCHLD) are blocked before
// anything else (so that threads created later, e.g. NCCL's bootstrap root made by
// ncclGetUniqueId, never take them) and read from a signalfd; one poll() loop then waits on
// that fd and on the stderr pipes of ranks > 0, whose lines it copies with a "[rank r] " prefix.
// Everything a child needs (argv, environment) is built before fork(): between fork and exec
// the child calls only async-signal-safe functions.
#define _GNU_SOURCE // signalfd, pipe2, prctl, environ
#include "dist/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "dist/comm.h"
#ifdef AE_HAVE_CUDA
#include "backend/cuda.h"
#endif

extern char **environ;

enum {
    MAX_RANKS = 64,
    LINE_MAX_BYTES = 4096, // a longer stderr line of a rank is copied in pieces of this size
    KILL_AFTER_S = 10,     // SIGTERM, then SIGKILL to the ranks still alive this much later
    EXIT_USAGE = 2,        // bad --gpus value, too few GPUs, no NCCL id
};

static const char k_stop_note[] = "stopping the other ranks (the last checkpoint, if any, stays valid)";

// The environment variables a rank's environment gets from the launcher; inherited values of
// these (and of an outer MPI launch's rank variables, refused or dropped below) are left out.
static const char *const k_own_vars[] = {
    "AE_DIST_RANK", "AE_DIST_SIZE", "AE_DIST_LOCAL_RANK", "AE_DIST_LOCAL_SIZE", "AE_DIST_NCCL_ID",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
    NULL};

typedef struct {
    pid_t pid;         // 0: not started
    int running;       // started and not yet reaped
    int err_fd;        // read end of its stderr pipe (ranks > 0), -1 when none or at EOF
    char line[LINE_MAX_BYTES + 16]; // "[rank r] " + the partial line read so far
    size_t prefix_len, line_len;    // line_len counts the prefix
    char **envp;       // NULL-terminated; the strings past env_own are ours
    int env_own;
} rank_proc;

int ae_dist_gpus_arg(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (argv[i] && !strcmp(argv[i], "--gpus")) return i;
    return 0;
}

static const char *signal_abbrev(int sig) {
    static const struct {
        int sig;
        const char *name;
    } k_names[] = {{SIGHUP, "HUP"},   {SIGINT, "INT"},   {SIGQUIT, "QUIT"}, {SIGILL, "ILL"},
                   {SIGTRAP, "TRAP"}, {SIGABRT, "ABRT"}, {SIGBUS, "BUS"},   {SIGFPE, "FPE"},
                   {SIGKILL, "KILL"}, {SIGUSR1, "USR1"}, {SIGSEGV, "SEGV"}, {SIGUSR2, "USR2"},
                   {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"}, {SIGTERM, "TERM"}, {SIGXCPU, "XCPU"},
                   {SIGXFSZ, "XFSZ"}, {SIGSYS, "SYS"}};
    for (size_t i = 0; i < sizeof k_names / sizeof *k_names; i++)
        if (k_names[i].sig == sig) return k_names[i].name;
    return "?";
}

// Strictly a whole number 1..64 in decimal digits: *n and 0, or 2 after one message.
static int parse_count(int argc, char **argv, int gi, int *n) {
    if (gi + 1 >= argc) {
        fprintf(stderr, "attnedit: --gpus needs a value: the number of GPUs (ranks) to run on, "
                        "1 to %d\n", MAX_RANKS);
        return EXIT_USAGE;
    }
    const char *s = argv[gi + 1];
    size_t len = strlen(s);
    int digits = len > 0 && len <= 3;
    for (size_t i = 0; digits && i < len; i++) digits = s[i] >= '0' && s[i] <= '9';
    int v = digits ? atoi(s) : 0;
    if (!digits || v < 1 || v > MAX_RANKS) {
        fprintf(stderr, "attnedit: --gpus '%s': expected the number of GPUs (ranks) to run on, a "
                        "whole number from 1 to %d\n", s, MAX_RANKS);
        return EXIT_USAGE;
    }
    for (int i = gi + 2; i < argc; i++)
        if (!strcmp(argv[i], "--gpus")) {
            fprintf(stderr, "attnedit: --gpus is given twice ('--gpus %s' and '--gpus %s')\n", s,
                    i + 1 < argc ? argv[i + 1] : "");
            return EXIT_USAGE;
        }
    *n = v;
    return 0;
}

// A run started by mpirun (or srun) as one of several ranks must not start ranks of its own.
static int check_not_under_mpi(int n) {
    static const char *const k_size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(k_size_vars[i]);
        if (v && atoi(v) > 1) {
            fprintf(stderr, "attnedit: --gpus %d in a run started by mpirun as one of %s ranks "
                            "(%s=%s): use one or the other (mpirun -np N attnedit ... without "
                            "--gpus starts the N ranks itself)\n", n, v, k_size_vars[i], v);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int check_gpus(int n) {
#ifdef AE_HAVE_CUDA
    int have = ae_cuda_device_count();
    if (have < n) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        fprintf(stderr, "attnedit: --gpus %d: this host has %d usable CUDA device%s%s%s%s\n", n,
                have, have == 1 ? "" : "s", vis ? " (CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "",
                vis ? ")" : "");
        return EXIT_USAGE;
    }
    return 0;
#else
    (void)n;
    fprintf(stderr, "attnedit: --gpus needs a build with the CUDA backend (this attnedit was "
                    "built without it)\n");
    return EXIT_USAGE;
#endif
}

static int is_own_var(const char *kv) {
    for (int i = 0; k_own_vars[i]; i++) {
        size_t len = strlen(k_own_vars[i]);
        if (!strncmp(kv, k_own_vars[i], len) && kv[len] == '=') return 1;
    }
    return 0;
}

// The environment of rank r: this process's minus k_own_vars, plus the group's variables.
static int make_env(rank_proc *p, int r, int n, const char *nccl_id) {
    int count = 0;
    while (environ[count]) count++;
    p->envp = calloc((size_t)count + 6, sizeof *p->envp);
    if (!p->envp) return -1;
    int k = 0;
    for (int i = 0; i < count; i++)
        if (!is_own_var(environ[i])) p->envp[k++] = environ[i];
    p->env_own = k;
    char buf[64];
    const char *fmt[] = {"AE_DIST_RANK=%d", "AE_DIST_SIZE=%d", "AE_DIST_LOCAL_RANK=%d",
                         "AE_DIST_LOCAL_SIZE=%d"};
    const int val[] = {r, n, r, n};
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, fmt[i], val[i]);
        if (!(p->envp[k++] = strdup(buf))) return -1;
    }
    if (nccl_id) {
        size_t len = strlen("AE_DIST_NCCL_ID=") + strlen(nccl_id) + 1;
        if (!(p->envp[k] = malloc(len))) return -1;
        snprintf(p->envp[k++], len, "AE_DIST_NCCL_ID=%s", nccl_id);
    }
    return 0;
}

static void free_env(rank_proc *p) {
    if (!p->envp) return;
    for (int i = p->env_own; p->envp[i]; i++) free(p->envp[i]);
    free(p->envp);
    p->envp = NULL;
}

static void write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; // stderr gone: nothing better to do with the text
        s += w;
        n -= (size_t)w;
    }
}

// Copies what rank p wrote to its stderr pipe and is there now (the fd is non-blocking), line
// by line with its prefix. Closes the fd at EOF, ending a last line that lacks its newline.
static void pump_stderr(rank_proc *p) {
    char buf[4096];
    while (p->err_fd >= 0) {
        ssize_t got = read(p->err_fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return; // EAGAIN: nothing more now
        if (got == 0) {
            if (p->line_len > p->prefix_len) {
                p->line[p->line_len++] = '\n';
                write_all(2, p->line, p->line_len);
            }
            p->line_len = p->prefix_len;
            close(p->err_fd);
            p->err_fd = -1;
            return;
        }
        for (ssize_t i = 0; i < got; i++) {
            p->line[p->line_len++] = buf[i];
            if (buf[i] == '\n' || p->line_len - p->prefix_len >= LINE_MAX_BYTES) {
                write_all(2, p->line, p->line_len);
                p->line_len = p->prefix_len;
            }
        }
    }
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void signal_running(rank_proc *ranks, int n, int sig) {
    for (int r = 0; r < n; r++)
        if (ranks[r].running) kill(ranks[r].pid, sig);
}

static int count_running(const rank_proc *ranks, int n) {
    int k = 0;
    for (int r = 0; r < n; r++) k += ranks[r].running;
    return k;
}

// The child side of fork(): async-signal-safe calls only (the launcher may have threads).
static void exec_rank(int r, int err_w, char **argv, char **envp, const sigset_t *old_mask,
                      const struct sigaction *old_chld, pid_t launcher) {
    if (r > 0 && dup2(err_w, 2) < 0) _exit(127);
    sigaction(SIGCHLD, old_chld, NULL);
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    // The launcher never leaves orphans: if it dies (even of SIGKILL), its ranks get SIGTERM.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != launcher) _exit(1); // it died before prctl took effect
    execve("/proc/self/exe", argv, envp);
    static const char msg[] = "attnedit: cannot run /proc/self/exe for a rank of --gpus\n";
    write_all(2, msg, sizeof msg - 1);
    _exit(127);
}

// Reaps the ranks that ended. The first failure (when the launcher is not already stopping
// the group) is reported and stops the others. *status: the first failing rank's status.
static void reap(rank_proc *ranks, int n, int *stopping, double *deadline, int *status) {
    for (int r = 0; r < n; r++) {
        rank_proc *p = &ranks[r];
        if (!p->running) continue;
        int st = 0;
        pid_t w = waitpid(p->pid, &st, WNOHANG);
        if (w == 0 || (w < 0 && errno == EINTR)) continue;
        p->running = 0;
        if (w < 0) continue; // not ours any more (cannot happen: the disposition is SIG_DFL)
        pump_stderr(p); // its last lines before the launcher's message about it
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
        if (code == 0) continue;
        if (*status == 0) *status = code;
        if (*stopping) continue; // stopped by the launcher or the user: no news
        int others = count_running(ranks, n);
        if (WIFSIGNALED(st))
            fprintf(stderr, "attnedit: rank %d was killed by signal %d (%s)%s%s\n", r,
                    WTERMSIG(st), signal_abbrev(WTERMSIG(st)), others ? "; " : "",
                    others ? k_stop_note : "");
        else
            fprintf(stderr, "attnedit: rank %d exited with status %d%s%s\n", r, code,
                    others ? "; " : "", others ? k_stop_note : "");
        *stopping = 1;
        *deadline = now_s() + KILL_AFTER_S;
        signal_running(ranks, n, SIGTERM);
    }
}

// Starts the ranks and watches them until every one has ended (the launcher's whole life
// after the checks). Returns the launcher's exit status.
static int run_ranks(rank_proc *ranks, int n, char **child_argv, int sfd, const sigset_t *old_mask,
                     const struct sigaction *old_chld) {
    int status = 0, stopping = 0, killed = 0;
    double deadline = 0;
    pid_t self = getpid();
    for (int r = 0; r < n && !stopping; r++) {
        rank_proc *p = &ranks[r];
        int pfd[2] = {-1, -1};
        if (r > 0 && pipe2(pfd, O_CLOEXEC) != 0) {
            fprintf(stderr, "attnedit: --gpus: cannot make a pipe for rank %d: %s\n", r,
                    strerror(errno));
            status = 1;
            break;
        }
        fflush(NULL); // nothing buffered is written twice
        pid_t pid = fork();
        if (pid == 0) exec_rank(r, pfd[1], child_argv, p->envp, old_mask, old_chld, self);
        if (pfd[1] >= 0) close(pfd[1]);
        if (pid < 0) {
            fprintf(stderr, "attnedit: --gpus: cannot start rank %d: %s\n", r, strerror(errno));
            if (pfd[0] >= 0) close(pfd[0]);
            status = 1;
            break;
        }
        p->pid = pid;
        p->running = 1;
        p->err_fd = pfd[0];
        if (p->err_fd >= 0) fcntl(p->err_fd, F_SETFL, fcntl(p->err_fd, F_GETFL) | O_NONBLOCK);
        p->prefix_len = p->line_len = (size_t)snprintf(p->line, sizeof p->line, "[rank %d] ", r);
    }
    if (status != 0) { // could not start them all: stop those that run
        stopping = 1;
        deadline = now_s() + KILL_AFTER_S;
        signal_running(ranks, n, SIGTERM);
    }
    while (count_running(ranks, n) > 0) {
        struct pollfd fds[MAX_RANKS + 1];
        int map[MAX_RANKS + 1], nf = 0;
        fds[nf] = (struct pollfd){.fd = sfd, .events = POLLIN};
        map[nf++] = -1;
        for (int r = 0; r < n; r++)
            if (ranks[r].err_fd >= 0) {
                fds[nf] = (struct pollfd){.fd = ranks[r].err_fd, .events = POLLIN};
                map[nf++] = r;
            }
        // A tick of 1 s besides SIGCHLD: a lost wake-up costs at most that.
        int timeout_ms = 1000;
        if (stopping && !killed) {
            double left = deadline - now_s();
            if (left < 1.0) timeout_ms = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        int ready = poll(fds, (nfds_t)nf, timeout_ms);
        if (ready < 0 && errno != EINTR) {
            fprintf(stderr, "attnedit: --gpus: poll failed: %s\n", strerror(errno));
            ready = 0;
        }
        for (int i = 0; ready > 0 && i < nf; i++) {
            if (!fds[i].revents) continue;
            if (map[i] >= 0) {
                pump_stderr(&ranks[map[i]]);
                continue;
            }
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                int sig = (int)si.ssi_signo;
                if (sig != SIGINT && sig != SIGTERM) continue; // SIGCHLD: reaped below
                if (!stopping)
                    fprintf(stderr, "attnedit: got SIG%s; passing it to the %d running rank%s\n",
                            signal_abbrev(sig), count_running(ranks, n),
                            count_running(ranks, n) == 1 ? "" : "s");
                signal_running(ranks, n, sig);
                if (!stopping) deadline = now_s() + KILL_AFTER_S;
                stopping = 1;
            }
        }
        reap(ranks, n, &stopping, &deadline, &status);
        if (stopping && !killed && now_s() >= deadline && count_running(ranks, n) > 0) {
            fprintf(stderr, "attnedit: %d rank%s still running %d s after SIGTERM: SIGKILL\n",
                    count_running(ranks, n), count_running(ranks, n) == 1 ? "" : "s",
                    KILL_AFTER_S);
            signal_running(ranks, n, SIGKILL);
            killed = 1;
        }
    }
    for (int r = 0; r < n; r++) // what is left in the pipes (grandchildren may hold them open)
        if (ranks[r].err_fd >= 0) {
            pump_stderr(&ranks[r]);
            if (ranks[r].line_len > ranks[r].prefix_len) {
                ranks[r].line[ranks[r].line_len++] = '\n';
                write_all(2, ranks[r].line, ranks[r].line_len);
            }
            close(ranks[r].err_fd);
            ranks[r].err_fd = -1;
        }
    return status;
}

int ae_dist_launch(int argc, char **argv, int gi, int need_gpus) {
    int n = 0, rc = 0;
    if (gi < 1 || gi >= argc) {
        fprintf(stderr, "attnedit: --gpus: no such argument (internal error)\n");
        return EXIT_USAGE;
    }
    if ((rc = parse_count(argc, argv, gi, &n)) != 0 || (rc = check_not_under_mpi(n)) != 0)
        return rc;

    // Block before anything may start a thread (CUDA, NCCL): threads inherit the mask.
    sigset_t mask, old_mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &mask, &old_mask);
    // SIGCHLD at SIG_IGN (inherited) would reap the ranks before waitpid could see them.
    struct sigaction dfl = {.sa_handler = SIG_DFL}, old_chld;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &old_chld);

    rank_proc *ranks = calloc((size_t)n, sizeof *ranks);
    char **child_argv = calloc((size_t)argc, sizeof *child_argv);
    int sfd = -1;
    char nccl_id[260];
    if (!ranks || !child_argv) {
        fprintf(stderr, "attnedit: --gpus: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int r = 0; r < n; r++) ranks[r].err_fd = -1;
    if (need_gpus) {
        if ((rc = check_gpus(n)) != 0) goto done;
        if (ae_dist_nccl_id_hex(nccl_id) != AE_OK) {
            fprintf(stderr, "attnedit: --gpus %d: %s\n", n, ae_last_error());
            rc = EXIT_USAGE;
            goto done;
        }
    }
    for (int i = 0, k = 0; i < argc; i++)
        if (i != gi && i != gi + 1) child_argv[k++] = argv[i];
    for (int r = 0; r < n; r++)
        if (make_env(&ranks[r], r, n, need_gpus ? nccl_id : NULL) != 0) {
            fprintf(stderr, "attnedit: --gpus: out of memory\n");
            rc = 1;
            goto done;
        }
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        fprintf(stderr, "attnedit: --gpus: signalfd failed: %s\n", strerror(errno));
        rc = 1;
        goto done;
    }
    rc = run_ranks(ranks, n, child_argv, sfd, &old_mask, &old_chld);

done:
    if (sfd >= 0) { // consume what arrived at the end, so that unblocking delivers nothing
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        }
        close(sfd);
    }
    sigaction(SIGCHLD, &old_chld, NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    for (int r = 0; ranks && r < n; r++) free_env(&ranks[r]);
    free(ranks);
    free(child_argv);
    return rc;
}
