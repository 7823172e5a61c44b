// dist/comm (issue 12) on the cpu backend: the environment of a rank (AE_DIST_*, Open MPI's,
// MPICH's; malformed values refused naming the variable), the device a rank picks, the single-rank
// communicator (every collective the identity; send/recv have no peer to reach), the sameness
// check, the executable's digest (read once per process), and the watchdog (a process stuck in
// a collective stops with one line and status 3).
//
// Several ranks: when the build has MPI and `mpirun` is on PATH, this program runs itself under
// `mpirun -np 3 --oversubscribe` in child modes (argv[1] = "--rank-child"): the collectives with
// exact sums on every rank, send/recv (exact values, in order, from the right peer; a peer
// outside the group or the rank itself refused), the sameness check failing on every rank naming
// rank 1, broadcast_many (several buffers from different roots in one call, exact values), a
// rank whose MPI rank differs from its environment's refused, and a group whose rank 1 never
// joins a barrier (AE_DIST_TIMEOUT=2): the others stop with the watchdog's line and status 3
// within seconds. Without MPI or mpirun those tests are skipped with the reason printed.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/ops.h"
#include "core/sha256.h"
#include "dist/comm.h"
#include "dist/comm_internal.h"
#include "util/testutil.h"

static const char *const k_vars[] = {
    "AE_DIST_RANK", "AE_DIST_SIZE", "AE_DIST_LOCAL_RANK", "AE_DIST_LOCAL_SIZE", "AE_DIST_NCCL_ID",
    "AE_DIST_TIMEOUT", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE",
    "MPI_LOCALRANKID", "MPI_LOCALNRANKS", NULL};

static void clear_env(void) {
    for (int i = 0; k_vars[i]; i++) unsetenv(k_vars[i]);
}

// Sets "NAME=value" pairs (NULL-terminated) after clearing every variable a rank reads.
static void set_env(const char *const *kv) {
    clear_env();
    for (int i = 0; kv[i]; i++) {
        char name[64];
        const char *eq = strchr(kv[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv[i]), kv[i]);
        setenv(name, eq + 1, 1);
    }
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- the environment -----------------------------------------------------------------------------

static void test_env_none(void **state) {
    (void)state;
    clear_env();
    ae_dist_env e;
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    assert_int_equal(e.rank, 0);
    assert_int_equal(e.size, 1);
    assert_int_equal(e.local_rank, 0);
    assert_int_equal(e.local_size, 1);
    assert_int_equal(e.launcher, AE_LAUNCH_NONE);
    assert_string_equal(e.nccl_id, "");
}

static void test_env_launchers(void **state) {
    (void)state;
    char id[300], lower[300];
    for (int i = 0; i < 256; i++) {
        id[i] = "0123456789ABCDEFabcdef"[(i * 7) % 22];
        lower[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] - 'A' + 'a' : id[i]);
    }
    id[256] = lower[256] = '\0';
    char idvar[320];
    snprintf(idvar, sizeof idvar, "AE_DIST_NCCL_ID=%s", id);
    ae_dist_env e;
    // --gpus; AE_DIST_* wins over Open MPI's variables
    set_env((const char *const[]){"AE_DIST_RANK=2", "AE_DIST_SIZE=4", "AE_DIST_LOCAL_RANK=2",
                                  "AE_DIST_LOCAL_SIZE=4", idvar, "OMPI_COMM_WORLD_RANK=0",
                                  "OMPI_COMM_WORLD_SIZE=8", NULL});
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    assert_int_equal(e.rank, 2);
    assert_int_equal(e.size, 4);
    assert_int_equal(e.local_rank, 2);
    assert_int_equal(e.local_size, 4);
    assert_int_equal(e.launcher, AE_LAUNCH_ATTNEDIT);
    assert_string_equal(e.nccl_id, lower);
    // Open MPI: two hosts of 4
    set_env((const char *const[]){"OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=8",
                                  "OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=4",
                                  NULL});
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    assert_int_equal(e.rank, 5);
    assert_int_equal(e.size, 8);
    assert_int_equal(e.local_rank, 1);
    assert_int_equal(e.local_size, 4);
    assert_int_equal(e.launcher, AE_LAUNCH_MPI);
    assert_string_equal(e.nccl_id, "");
    // MPICH (hydra)
    set_env((const char *const[]){"PMI_RANK=1", "PMI_SIZE=2", "MPI_LOCALRANKID=0",
                                  "MPI_LOCALNRANKS=1", NULL});
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    assert_int_equal(e.rank, 1);
    assert_int_equal(e.size, 2);
    assert_int_equal(e.local_rank, 0);
    assert_int_equal(e.local_size, 1);
    assert_int_equal(e.launcher, AE_LAUNCH_MPI);
    // no local variables: one host
    set_env((const char *const[]){"PMI_RANK=2", "PMI_SIZE=3", NULL});
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    assert_int_equal(e.local_rank, 2);
    assert_int_equal(e.local_size, 3);
    clear_env();
}

static void test_env_malformed(void **state) {
    (void)state;
    char badhex[300], shortid[] = "AE_DIST_NCCL_ID=abcdef";
    memset(badhex, 'a', sizeof badhex);
    memcpy(badhex, "AE_DIST_NCCL_ID=", 16);
    badhex[16 + 100] = 'g';
    badhex[16 + 256] = '\0';
    struct {
        const char *vars[6];
        const char *want;
    } cases[] = {
        {{"AE_DIST_RANK=abc", "AE_DIST_SIZE=2"}, "AE_DIST_RANK='abc': expected a whole number"},
        {{"AE_DIST_RANK=-1", "AE_DIST_SIZE=2"}, "AE_DIST_RANK='-1'"},
        {{"AE_DIST_RANK=1 ", "AE_DIST_SIZE=2"}, "AE_DIST_RANK='1 '"},
        {{"AE_DIST_RANK=0", "AE_DIST_SIZE=99999999999"}, "AE_DIST_SIZE='99999999999'"},
        {{"AE_DIST_RANK=2", "AE_DIST_SIZE=2"}, "AE_DIST_RANK=2 is outside 0..1 (AE_DIST_SIZE=2)"},
        {{"AE_DIST_RANK=0", "AE_DIST_SIZE=0"}, "AE_DIST_SIZE=0: a group has at least one rank"},
        {{"AE_DIST_RANK=1"}, "AE_DIST_RANK is set but AE_DIST_SIZE is not"},
        {{"AE_DIST_SIZE=2"}, "AE_DIST_SIZE is set but AE_DIST_RANK is not"},
        {{"AE_DIST_RANK=1", "AE_DIST_SIZE=4", "AE_DIST_LOCAL_RANK=3", "AE_DIST_LOCAL_SIZE=2"},
         "AE_DIST_LOCAL_RANK=3 is outside 0..1 (AE_DIST_LOCAL_SIZE=2)"},
        {{"AE_DIST_RANK=1", "AE_DIST_SIZE=4", "AE_DIST_LOCAL_SIZE=5"},
         "AE_DIST_LOCAL_SIZE=5 is outside 1..4"},
        {{"AE_DIST_RANK=1", "AE_DIST_SIZE=4", "AE_DIST_LOCAL_RANK=x"}, "AE_DIST_LOCAL_RANK='x'"},
        {{"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=2x"}, "OMPI_COMM_WORLD_SIZE='2x'"},
        {{"PMI_RANK=1", "PMI_SIZE=1"}, "PMI_RANK=1 is outside 0..0 (PMI_SIZE=1)"},
        {{shortid}, "AE_DIST_NCCL_ID: expected 256 hex digits"},
        {{badhex}, "AE_DIST_NCCL_ID: expected 256 hex digits (the NCCL id made by the --gpus "
                   "launcher), got 256 characters with a non-hex one"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        set_env(cases[i].vars);
        ae_dist_env e;
        ae_status st = ae_dist_env_read(&e);
        if (st != AE_ERR_ARG || !strstr(ae_last_error(), cases[i].want)) {
            printf("case %zu (%s ...): status %s, message '%s'; wanted '%s'\n", i, cases[i].vars[0],
                   ae_status_name(st), ae_last_error(), cases[i].want);
            fail();
        }
        char input[400];
        snprintf(input, sizeof input, "%.120s%s%.120s", cases[i].vars[0], cases[i].vars[1] ? " " : "",
                 cases[i].vars[1] ? cases[i].vars[1] : "");
        ae_test_catalogue("the environment of a rank of a group (attnedit ... under mpirun or --gpus)",
                          input, ae_last_error());
    }
    clear_env();
}

static void test_device_name(void **state) {
    (void)state;
    char buf[32];
    const char *saved = getenv("ATTNEDIT_DEVICE");
    char *keep = saved ? strdup(saved) : NULL;
    ae_dist_env one = {.rank = 0, .size = 1, .local_rank = 0, .local_size = 1};
    assert_string_equal(ae_dist_device_name(&one, "cuda", buf, sizeof buf), "cuda");
    assert_string_equal(ae_dist_device_name(&one, "cpu", buf, sizeof buf), "cpu");
    assert_string_equal(ae_dist_device_name(&one, NULL, buf, sizeof buf), "auto");
    ae_dist_env g = {.rank = 7, .size = 8, .local_rank = 3, .local_size = 4};
    assert_string_equal(ae_dist_device_name(&g, "cuda", buf, sizeof buf), "cuda:3");
    assert_string_equal(ae_dist_device_name(&g, "cuda:1", buf, sizeof buf), "cuda:1");
    assert_string_equal(ae_dist_device_name(&g, "cpu", buf, sizeof buf), "cpu");
    setenv("ATTNEDIT_DEVICE", "cpu", 1);
    assert_string_equal(ae_dist_device_name(&g, NULL, buf, sizeof buf), "cpu");
    assert_string_equal(ae_dist_device_name(&g, "auto", buf, sizeof buf), "cpu");
    setenv("ATTNEDIT_DEVICE", "cuda", 1);
    assert_string_equal(ae_dist_device_name(&g, "auto", buf, sizeof buf), "cuda:3");
    unsetenv("ATTNEDIT_DEVICE");
#ifndef AE_HAVE_CUDA
    assert_string_equal(ae_dist_device_name(&g, "auto", buf, sizeof buf), "cpu");
#endif
    if (keep) setenv("ATTNEDIT_DEVICE", keep, 1);
    free(keep);
}

// ---- the single-rank communicator ----------------------------------------------------------------

static void test_single_comm(void **state) {
    (void)state;
    clear_env();
    const ae_backend *be;
    assert_int_equal(ae_backend_open("cpu", &be), AE_OK);
    ae_dist_env e;
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    ae_comm *c = NULL;
    assert_int_equal(ae_comm_open(&e, be, &c), AE_OK);
    assert_non_null(c);
    assert_string_equal(ae_comm_kind(c), "single");
    assert_int_equal(ae_comm_rank(c), 0);
    assert_int_equal(ae_comm_size(c), 1);
    ae_comm_set_where(c, "stage 1, step 3");

    float a[5] = {1, 2, 3, 4, 5}, b[2] = {-1, 0.5f};
    ae_ptr xs[2] = {ae_host_f32(a), ae_host_f32(b)};
    size_t ns[2] = {5, 2};
    assert_int_equal(ae_comm_allreduce_sum(c, xs, ns, 2), AE_OK);
    assert_true(a[4] == 5 && b[0] == -1 && b[1] == 0.5f);
    assert_int_equal(ae_comm_allreduce_sum(c, NULL, NULL, 0), AE_OK);
    int32_t ints[2] = {1, 2};
    ae_ptr bad[1] = {ae_host_i32(ints)};
    assert_int_equal(ae_comm_allreduce_sum(c, bad, ns, 1), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "buffer 0 is I32"));

    double h[3] = {1.5, -2, 1e300};
    assert_int_equal(ae_comm_allreduce_host(c, h, 3), AE_OK);
    assert_true(h[0] == 1.5 && h[1] == -2 && h[2] == 1e300);

    assert_int_equal(ae_comm_broadcast(c, ae_host_f32(a), 5, 0), AE_OK);
    assert_true(a[0] == 1);
    assert_int_equal(ae_comm_broadcast(c, ae_host_f32(a), 5, 1), AE_ERR_ARG);
    assert_string_equal(ae_last_error(), "broadcast: root rank 1 is outside 0..0");
    int roots[2] = {0, 0};
    assert_int_equal(ae_comm_broadcast_many(c, xs, ns, roots, 2), AE_OK);
    assert_true(a[0] == 1 && a[4] == 5 && b[0] == -1 && b[1] == 0.5f);
    assert_int_equal(ae_comm_broadcast_many(c, NULL, NULL, NULL, 0), AE_OK);
    roots[1] = 1;
    assert_int_equal(ae_comm_broadcast_many(c, xs, ns, roots, 2), AE_ERR_ARG);
    assert_string_equal(ae_last_error(), "broadcast_many: buffer 1: root rank 1 is outside 0..0");

    char mine[6] = "hello", all[6] = "";
    assert_int_equal(ae_comm_allgather_host(c, mine, all, 6), AE_OK);
    assert_string_equal(all, "hello");
    assert_int_equal(ae_comm_barrier(c), AE_OK);

    // point to point: no peer but this rank itself, which is refused
    assert_int_equal(ae_comm_send(c, ae_host_f32(a), 5, 0), AE_ERR_ARG);
    assert_string_equal(ae_last_error(), "send: peer rank 0 (this rank 0, 1 ranks)");
    assert_int_equal(ae_comm_recv(c, ae_host_f32(a), 5, 0), AE_ERR_ARG);
    assert_string_equal(ae_last_error(), "recv: peer rank 0 (this rank 0, 1 ranks)");
    assert_int_equal(ae_comm_send(c, ae_host_f32(a), 5, 1), AE_ERR_ARG);
    assert_int_equal(ae_comm_recv(c, ae_host_f32(a), 5, -1), AE_ERR_ARG);
    assert_true(a[0] == 1 && a[4] == 5);

    uint8_t d[32];
    ae_sha256("x", 1, d);
    assert_int_equal(ae_comm_check_same(c, d, "binary", "start every rank with the same build"),
                     AE_OK);
    ae_comm_close(c);

    // A NULL communicator is the single rank too.
    assert_int_equal(ae_comm_rank(NULL), 0);
    assert_int_equal(ae_comm_size(NULL), 1);
    assert_string_equal(ae_comm_kind(NULL), "single");
    assert_int_equal(ae_comm_barrier(NULL), AE_OK);
    assert_int_equal(ae_comm_allreduce_host(NULL, h, 3), AE_OK);
    assert_int_equal(ae_comm_send(NULL, ae_host_f32(a), 5, 0), AE_ERR_ARG);
    assert_int_equal(ae_comm_recv(NULL, ae_host_f32(a), 5, 0), AE_ERR_ARG);
    ae_comm_close(NULL);
    ae_backend_close(be);
}

static void test_timeout_env(void **state) {
    (void)state;
    const ae_backend *be;
    assert_int_equal(ae_backend_open("cpu", &be), AE_OK);
    const char *bad[] = {"abc", "0", "-5", "1e99", "10s", " 5", "nan", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clear_env();
        setenv("AE_DIST_TIMEOUT", bad[i], 1);
        ae_dist_env e;
        assert_int_equal(ae_dist_env_read(&e), AE_OK);
        ae_comm *c = (ae_comm *)&e; // must be reset to NULL
        ae_status st = ae_comm_open(&e, be, &c);
        if (st != AE_ERR_ARG || c || !strstr(ae_last_error(), "AE_DIST_TIMEOUT=")) {
            printf("AE_DIST_TIMEOUT='%s': status %s, message '%s'\n", bad[i], ae_status_name(st),
                   ae_last_error());
            fail();
        }
        char input[64];
        snprintf(input, sizeof input, "AE_DIST_TIMEOUT=%s", bad[i]);
        ae_test_catalogue("the environment of a rank of a group (attnedit ... under mpirun or --gpus)",
                          input, ae_last_error());
    }
    double t;
    setenv("AE_DIST_TIMEOUT", "2.5", 1);
    assert_int_equal(ae_watchdog_timeout_from_env(&t), AE_OK);
    assert_true(t == 2.5);
    unsetenv("AE_DIST_TIMEOUT");
    assert_int_equal(ae_watchdog_timeout_from_env(&t), AE_OK);
    assert_true(t == 600);
    ae_backend_close(be);
}

// Groups that cannot start on cpu here: --gpus ranks (cpu groups are mpirun's), and, in a build
// without MPI, mpirun ranks.
static void test_cpu_group_refused(void **state) {
    (void)state;
    const ae_backend *be;
    assert_int_equal(ae_backend_open("cpu", &be), AE_OK);
    set_env((const char *const[]){"AE_DIST_RANK=1", "AE_DIST_SIZE=2", NULL});
    ae_dist_env e;
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    ae_comm *c = NULL;
    assert_int_equal(ae_comm_open(&e, be, &c), AE_ERR_UNSUPPORTED);
    assert_null(c);
    assert_string_equal(ae_last_error(), "rank 1 of 2: --gpus starts ranks on GPUs; a group on cpu "
                                         "is started by mpirun -np 2 (in a build with MPI)");
#ifndef AE_HAVE_MPI
    set_env((const char *const[]){"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=2", NULL});
    assert_int_equal(ae_dist_env_read(&e), AE_OK);
    assert_int_equal(ae_comm_open(&e, be, &c), AE_ERR_UNSUPPORTED);
    assert_non_null(strstr(ae_last_error(), "built without MPI"));
#endif
    clear_env();
    ae_backend_close(be);
}

static void test_exe_digest(void **state) {
    (void)state;
    uint8_t d1[32], d2[32], want[32];
    assert_int_equal(ae_dist_exe_digest(d1), AE_OK);
    assert_int_equal(ae_dist_exe_digest(d2), AE_OK);
    assert_memory_equal(d1, d2, 32);
    FILE *f = fopen("/proc/self/exe", "rb");
    assert_non_null(f);
    ae_sha256_ctx s;
    ae_sha256_init(&s);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) ae_sha256_update(&s, buf, got);
    fclose(f);
    ae_sha256_final(&s, want);
    assert_memory_equal(d1, want, 32);
    // read once per process: with no file descriptor left to open, the digest still comes back
    struct rlimit was, none;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
    none = was;
    none.rlim_cur = 0;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
    FILE *blocked = fopen("/proc/self/exe", "rb");
    memset(d2, 0, sizeof d2);
    ae_status st = ae_dist_exe_digest(d2);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
    assert_null(blocked); // the limit does stop a second read
    assert_int_equal(st, AE_OK);
    assert_memory_equal(d2, want, 32);
}

// ---- the watchdog --------------------------------------------------------------------------------

static void hook_says(void *arg) {
    const char *msg = arg;
    ssize_t w = write(2, msg, strlen(msg));
    (void)w;
}

// Runs fn in a child whose stderr comes back in *err; returns its wait status.
static int run_child(void (*fn)(void), char **err, double *seconds) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    ssize_t n;
    while ((n = read(fds[0], text + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 2) text = realloc(text, cap *= 2);
    }
    text[len] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    *seconds = now_s() - t0;
    *err = text;
    return status;
}

static void stuck_in_collective(void) {
    ae_watchdog wd;
    ae_watchdog_init(&wd, 5, 1.0);
    ae_watchdog_set_hook(&wd, hook_says, "abort hook ran\n");
    if (ae_watchdog_start(&wd) != AE_OK) _exit(1);
    ae_watchdog_set_where(&wd, "unit test, step 2");
    for (int i = 0; i < 5; i++) { // collectives shorter than the timeout never fire
        ae_watchdog_enter(&wd, "barrier");
        sleep_ms(300);
        ae_watchdog_leave(&wd);
    }
    ae_watchdog_enter(&wd, "allreduce_sum");
    sleep(30);
    _exit(0);
}

static void stopped_watchdog(void) {
    ae_watchdog wd;
    ae_watchdog_init(&wd, 0, 1.0);
    if (ae_watchdog_start(&wd) != AE_OK) _exit(1);
    ae_watchdog_enter(&wd, "barrier");
    ae_watchdog_leave(&wd);
    ae_watchdog_stop(&wd); // joins promptly; nothing fires
    sleep(2);
    _exit(0);
}

static void test_watchdog(void **state) {
    (void)state;
    char *err;
    double secs;
    int status = run_child(stuck_in_collective, &err, &secs);
    printf("stuck child: status %d after %.1f s, stderr: %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
           secs, err);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
    assert_true(secs >= 2.0 && secs < 10.0);
    assert_non_null(strstr(err, "attnedit: rank 5: waited "));
    assert_non_null(strstr(err, " s for the other ranks in allreduce_sum at unit test, step 2: a rank "
                                "died or hangs; stopping (the last checkpoint, if any, stays valid)\n"));
    assert_non_null(strstr(err, "abort hook ran\n"));
    assert_null(strstr(err, "in barrier"));
    free(err);
    status = run_child(stopped_watchdog, &err, &secs);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_string_equal(err, "");
    free(err);
}

// ---- several ranks under mpirun ------------------------------------------------------------------

static int g_fails;
static int g_rank;

static char g_who[32] = ""; // "rank r: " once the rank is known
#define CHECK(cond, ...) AE_TEST_CHECK(g_fails, g_who, cond, __VA_ARGS__)

static int child_collectives(ae_comm *c, int r) {
    // allreduce_sum of F32 buffers: small integers and halves, so every sum is exact
    enum { NA = 100003, NB = 7 };
    float *a = malloc(NA * sizeof *a), b[NB];
    for (int i = 0; i < NA; i++) a[i] = (float)((r + 1) * (i % 1000));
    for (int j = 0; j < NB; j++) b[j] = 0.5f * (float)r + (float)j;
    ae_ptr xs[3] = {ae_host_f32(a), ae_host_f32(NULL), ae_host_f32(b)};
    size_t ns[3] = {NA, 0, NB};
    ae_status st = ae_comm_allreduce_sum(c, xs, ns, 3);
    CHECK(st == AE_OK, "allreduce_sum: %s", ae_last_error());
    int bad = 0;
    for (int i = 0; i < NA; i++) bad += a[i] != (float)(6 * (i % 1000));
    CHECK(bad == 0, "allreduce_sum: %d of %d values wrong (a[999] = %g)", bad, NA, a[999]);
    for (int j = 0; j < NB; j++) CHECK(b[j] == 1.5f + 3.0f * (float)j, "b[%d] = %g", j, b[j]);
    free(a);

    // sums that round: every rank must hold the same bits (the replicas of a data-parallel run
    // stay identical only then)
    enum { NR = 4099 };
    float *x = malloc(NR * sizeof *x);
    ae_rng rng;
    ae_rng_seed(&rng, 1234u + (uint64_t)r);
    ae_test_fill_normal(x, NR, 1.0f, &rng);
    ae_ptr px[1] = {ae_host_f32(x)};
    size_t nx[1] = {NR};
    st = ae_comm_allreduce_sum(c, px, nx, 1);
    CHECK(st == AE_OK, "allreduce_sum (random): %s", ae_last_error());
    uint8_t dx[32];
    ae_sha256(x, NR * sizeof *x, dx);
    st = ae_comm_check_same(c, dx, "sum of random values", NULL);
    CHECK(st == AE_OK, "allreduce_sum (random): %s", ae_last_error());
    free(x);

    double h[3] = {(double)r, 1.0, 0.25 * r};
    st = ae_comm_allreduce_host(c, h, 3);
    CHECK(st == AE_OK && h[0] == 3 && h[1] == 3 && h[2] == 0.75, "allreduce_host: %s %g %g %g",
          ae_last_error(), h[0], h[1], h[2]);

    float v[10];
    int32_t iv[4];
    for (int i = 0; i < 10; i++) v[i] = r == 2 ? 100.0f + (float)i : -1.0f;
    for (int i = 0; i < 4; i++) iv[i] = r == 2 ? 7 * i - 3 : 0;
    st = ae_comm_broadcast(c, ae_host_f32(v), 10, 2);
    CHECK(st == AE_OK, "broadcast: %s", ae_last_error());
    st = ae_comm_broadcast(c, ae_host_i32(iv), 4, 2);
    CHECK(st == AE_OK, "broadcast (I32): %s", ae_last_error());
    for (int i = 0; i < 10; i++) CHECK(v[i] == 100.0f + (float)i, "broadcast: v[%d] = %g", i, v[i]);
    for (int i = 0; i < 4; i++) CHECK(iv[i] == 7 * i - 3, "broadcast: iv[%d] = %d", i, iv[i]);
    st = ae_comm_broadcast(c, ae_host_f32(v), 10, 3);
    CHECK(st == AE_ERR_ARG, "broadcast from rank 3 of 3 accepted");

    // broadcast_many: buffers from all three roots in one call (F32 from rank 2, I32 from 0, an
    // empty one, BF16 bytes from 1, 200003 F32 values from 0); every rank starts with other
    // values, so a buffer taken from the wrong root shows
    enum { NL = 200003 };
    float f2[7], *big = malloc(NL * sizeof *big);
    int32_t i0[5];
    uint16_t b1[9];
    for (int i = 0; i < 7; i++) f2[i] = r == 2 ? 0.5f * (float)i - 1.0f : -7.0f - (float)r;
    for (int i = 0; i < 5; i++) i0[i] = r == 0 ? 1000 + i : -1 - r;
    for (int i = 0; i < 9; i++) b1[i] = r == 1 ? (uint16_t)(40000 + 3 * i) : (uint16_t)(7 * r);
    for (int i = 0; i < NL; i++) big[i] = r == 0 ? (float)(i % 4099) : -1.0f - (float)r;
    ae_ptr bx[5] = {ae_host_f32(f2), ae_host_i32(i0), ae_host_f32(NULL), ae_ptr_make(b1, AE_DT_BF16),
                    ae_host_f32(big)};
    size_t bn[5] = {7, 5, 0, 9, NL};
    int broots[5] = {2, 0, 1, 1, 0};
    st = ae_comm_broadcast_many(c, bx, bn, broots, 5);
    CHECK(st == AE_OK, "broadcast_many: %s", ae_last_error());
    for (int i = 0; i < 7; i++)
        CHECK(f2[i] == 0.5f * (float)i - 1.0f, "broadcast_many: f2[%d] = %g", i, f2[i]);
    for (int i = 0; i < 5; i++) CHECK(i0[i] == 1000 + i, "broadcast_many: i0[%d] = %d", i, i0[i]);
    for (int i = 0; i < 9; i++) CHECK(b1[i] == 40000 + 3 * i, "broadcast_many: b1[%d] = %u", i, b1[i]);
    int bad_big = 0;
    for (int i = 0; i < NL; i++) bad_big += big[i] != (float)(i % 4099);
    CHECK(bad_big == 0, "broadcast_many: %d of %d values of the large buffer wrong", bad_big, NL);
    // refused on every rank, naming the buffer, before anything is sent (no rank waits)
    broots[3] = 3;
    st = ae_comm_broadcast_many(c, bx, bn, broots, 5);
    CHECK(st == AE_ERR_ARG &&
              !strcmp(ae_last_error(), "broadcast_many: buffer 3: root rank 3 is outside 0..2"),
          "broadcast_many from rank 3: %s '%s'", ae_status_name(st), ae_last_error());
    broots[3] = 1;
    bn[2] = 4;
    st = ae_comm_broadcast_many(c, bx, bn, broots, 5);
    CHECK(st == AE_ERR_ARG && !strcmp(ae_last_error(), "broadcast_many: buffer 2: null buffer"),
          "broadcast_many into NULL: %s '%s'", ae_status_name(st), ae_last_error());
    free(big);

    int32_t mine[4] = {r, r * r, 7, r + 100}, all[12];
    st = ae_comm_allgather_host(c, mine, all, sizeof mine);
    CHECK(st == AE_OK, "allgather_host: %s", ae_last_error());
    for (int q = 0; q < 3; q++)
        CHECK(all[4 * q] == q && all[4 * q + 1] == q * q && all[4 * q + 2] == 7 &&
                  all[4 * q + 3] == q + 100, "allgather_host: rank %d's part", q);

    st = ae_comm_barrier(c);
    CHECK(st == AE_OK, "barrier: %s", ae_last_error());

    uint8_t same[32], other[32];
    ae_sha256("same", 4, same);
    ae_sha256("other", 5, other);
    st = ae_comm_check_same(c, same, "test digest", "advice");
    CHECK(st == AE_OK, "check_same (equal): %s", ae_last_error());
    uint8_t exe[32];
    CHECK(ae_dist_exe_digest(exe) == AE_OK, "exe digest: %s", ae_last_error());
    st = ae_comm_check_same(c, exe, "binary", "start every rank with the same attnedit build");
    CHECK(st == AE_OK, "check_same (binary): %s", ae_last_error());
    // ranks 1 and 2 differ from rank 0: every rank names rank 1 (the first)
    st = ae_comm_check_same(c, r == 0 ? same : other, "test digest", "use the same data");
    char h1[65], h0[65], want[200];
    ae_sha256_hex(other, h1);
    ae_sha256_hex(same, h0);
    snprintf(want, sizeof want,
             "rank 1's test digest differs from rank 0's (SHA-256 %.8s.. vs %.8s..): use the same data",
             h1, h0);
    CHECK(st == AE_ERR_ARG && strcmp(ae_last_error(), want) == 0,
          "check_same (different): status %s, '%s'; wanted '%s'", ae_status_name(st),
          ae_last_error(), want);
    return 0;
}

// Point to point (the gather of sharded optimizer states): rank 1 sends rank 0 an F32 buffer
// large enough for Open MPI's rendezvous protocol, then a BF16 one of 2000 bytes; rank 2 sends an
// I32 buffer of the same 2000 bytes at once, so that it is likely to reach rank 0 before rank 1's
// second: rank 0 receives rank 1's two in order, then rank 2's, and checks every value (a
// message taken from the wrong peer or out of order shows as wrong values). Then rank 0 sends
// rank 2 a reply. A peer outside 0..2, the rank itself or a NULL buffer is refused on every rank
// before anything is sent.
static void child_point_to_point(ae_comm *c, int r) {
    enum { NF = 100003, NH = 1000, NI = 500 }; // NH BF16 values and NI I32 values: 2000 bytes each
    float f[NF];
    uint16_t bf[NH];
    int32_t iv[NI];
    char want[120];
    int peers[3] = {-1, 3, r};
    for (int k = 0; k < 3; k++) {
        ae_status st = ae_comm_send(c, ae_host_f32(f), NF, peers[k]);
        snprintf(want, sizeof want, "send: peer rank %d (this rank %d, 3 ranks)", peers[k], r);
        CHECK(st == AE_ERR_ARG && !strcmp(ae_last_error(), want), "send to %d: %s '%s'", peers[k],
              ae_status_name(st), ae_last_error());
        st = ae_comm_recv(c, ae_host_i32(iv), NI, peers[k]);
        snprintf(want, sizeof want, "recv: peer rank %d (this rank %d, 3 ranks)", peers[k], r);
        CHECK(st == AE_ERR_ARG && !strcmp(ae_last_error(), want), "recv from %d: %s '%s'",
              peers[k], ae_status_name(st), ae_last_error());
    }
    int next = (r + 1) % 3;
    CHECK(ae_comm_send(c, ae_host_f32(NULL), 4, next) == AE_ERR_ARG, "send of NULL accepted");
    CHECK(ae_comm_recv(c, ae_host_f32(NULL), 4, next) == AE_ERR_ARG, "recv into NULL accepted");

    ae_ptr pbf = ae_ptr_make(bf, AE_DT_BF16);
    ae_status st = AE_OK;
    if (r == 1) {
        for (int i = 0; i < NF; i++) f[i] = 0.25f * (float)i - 1000.0f;
        for (int i = 0; i < NH; i++) bf[i] = (uint16_t)(i * 37 + 5);
        st = ae_comm_send(c, ae_host_f32(f), NF, 0);
        CHECK(st == AE_OK, "send F32: %s", ae_last_error());
        st = ae_comm_send(c, pbf, NH, 0);
        CHECK(st == AE_OK, "send BF16: %s", ae_last_error());
    } else if (r == 2) {
        for (int i = 0; i < NI; i++) iv[i] = -7 * i - 1;
        st = ae_comm_send(c, ae_host_i32(iv), NI, 0);
        CHECK(st == AE_OK, "send I32: %s", ae_last_error());
        st = ae_comm_recv(c, ae_host_i32(iv), NI, 0);
        CHECK(st == AE_OK, "recv (reply): %s", ae_last_error());
        int bad = 0;
        for (int i = 0; i < NI; i++) bad += iv[i] != 3 * i;
        CHECK(bad == 0, "recv (reply): %d of %d values wrong (iv[1] = %d)", bad, NI, iv[1]);
    } else {
        memset(f, 0xff, sizeof f);
        memset(bf, 0xff, sizeof bf);
        memset(iv, 0xff, sizeof iv);
        st = ae_comm_recv(c, ae_host_f32(f), NF, 1);
        CHECK(st == AE_OK, "recv F32: %s", ae_last_error());
        int bad = 0;
        for (int i = 0; i < NF; i++) bad += f[i] != 0.25f * (float)i - 1000.0f;
        CHECK(bad == 0, "recv F32: %d of %d values wrong (f[1] = %g)", bad, NF, f[1]);
        st = ae_comm_recv(c, pbf, NH, 1);
        CHECK(st == AE_OK, "recv BF16: %s", ae_last_error());
        bad = 0;
        for (int i = 0; i < NH; i++) bad += bf[i] != (uint16_t)(i * 37 + 5);
        CHECK(bad == 0, "recv BF16: %d of %d values wrong (bf[1] = %u)", bad, NH, bf[1]);
        st = ae_comm_recv(c, ae_host_i32(iv), NI, 2);
        CHECK(st == AE_OK, "recv I32: %s", ae_last_error());
        bad = 0;
        for (int i = 0; i < NI; i++) bad += iv[i] != -7 * i - 1;
        CHECK(bad == 0, "recv I32: %d of %d values wrong (iv[1] = %d)", bad, NI, iv[1]);
        for (int i = 0; i < NI; i++) iv[i] = 3 * i;
        st = ae_comm_send(c, ae_host_i32(iv), NI, 2);
        CHECK(st == AE_OK, "send (reply): %s", ae_last_error());
    }
    CHECK(ae_comm_barrier(c) == AE_OK, "barrier after send/recv: %s", ae_last_error());
}

static int rank_child(const char *mode) {
    ae_dist_env e;
    ae_status st = ae_dist_env_read(&e);
    if (st != AE_OK) {
        printf("rank ?: FAIL ae_dist_env_read: %s\n", ae_last_error());
        return 1;
    }
    g_rank = e.rank;
    snprintf(g_who, sizeof g_who, "rank %d: ", e.rank);
    CHECK(e.launcher == AE_LAUNCH_MPI && e.size == 3 && e.local_size == 3 && e.local_rank == e.rank,
          "environment: launcher %d, rank %d of %d, local %d of %d", e.launcher, e.rank, e.size,
          e.local_rank, e.local_size);
    const ae_backend *be;
    if (ae_backend_open("cpu", &be) != AE_OK) return 1;
    char dev[32];
    CHECK(strcmp(ae_dist_device_name(&e, "cpu", dev, sizeof dev), "cpu") == 0, "device %s", dev);
    if (strcmp(mode, "mismatch") == 0) {
        ae_dist_env wrong = e;
        wrong.rank = (e.rank + 1) % e.size;
        wrong.local_rank = wrong.rank;
        ae_comm *c = NULL;
        st = ae_comm_open(&wrong, be, &c);
        char want[160];
        snprintf(want, sizeof want, "MPI says this process is rank %d of 3 but its environment says "
                 "rank %d of 3 (OMPI_COMM_WORLD_RANK/SIZE)", e.rank, wrong.rank);
        CHECK(st == AE_ERR_ARG && !c && strstr(ae_last_error(), want), "status %s, '%s'",
              ae_status_name(st), ae_last_error());
    } else {
        ae_comm *c = NULL;
        st = ae_comm_open(&e, be, &c);
        CHECK(st == AE_OK, "ae_comm_open: %s", ae_last_error());
        if (st != AE_OK) return 1;
        CHECK(strcmp(ae_comm_kind(c), "mpi") == 0 && ae_comm_rank(c) == e.rank &&
                  ae_comm_size(c) == 3, "comm: %s, rank %d of %d", ae_comm_kind(c), ae_comm_rank(c),
              ae_comm_size(c));
        if (strcmp(mode, "watchdog") == 0) {
            ae_comm_set_where(c, "the watchdog test");
            if (e.rank == 1) {
                sleep(60); // never joins: the others' watchdogs stop them
                return 0;
            }
            st = ae_comm_barrier(c);
            printf("rank %d: FAIL the barrier returned (%s) without rank 1\n", e.rank,
                   ae_status_name(st));
            return 1;
        }
        child_collectives(c, e.rank);
        child_point_to_point(c, e.rank);
        ae_comm_close(c);
    }
    ae_backend_close(be);
    if (!g_fails) printf("rank %d: ok\n", e.rank);
    fflush(stdout);
    return g_fails ? 1 : 0;
}

#ifdef AE_HAVE_MPI
// The mpirun on PATH, or NULL.
static const char *find_mpirun(void) {
    static char path[4096];
    const char *p = getenv("PATH");
    while (p && *p) {
        const char *colon = strchr(p, ':');
        int len = colon ? (int)(colon - p) : (int)strlen(p);
        snprintf(path, sizeof path, "%.*s/mpirun", len, p);
        if (len > 0 && access(path, X_OK) == 0) return path;
        p = colon ? colon + 1 : NULL;
    }
    return NULL;
}
#endif

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

// `mpirun -np 3 --oversubscribe <this program> --rank-child mode` with the environment Open MPI
// needs in a container (as root, more ranks than cores, shared memory without CMA); returns the
// exit status (128 + signal, or -1 when it ran past 120 s and was killed) and its outputs.
static int run_mpirun(const char *mode, const char *timeout, char **out, char **err,
                      double *seconds) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *dir = ae_test_tmpdir();
    char fo[4200], fe[4200];
    snprintf(fo, sizeof fo, "%s/out", dir);
    snprintf(fe, sizeof fe, "%s/err", dir);
    // MPI keeps memory to its end: the ranks of a sanitizer build run without leak checks, also
    // when ASAN_OPTIONS is set (scripts/test.sh --sanitize: detect_leaks=1:...; the last setting
    // of a flag wins)
    const char *asan_was = getenv("ASAN_OPTIONS");
    char asan[1024];
    snprintf(asan, sizeof asan, "%s%sdetect_leaks=0", asan_was ? asan_was : "",
             asan_was && *asan_was ? ":" : "");
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        clear_env();
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
        setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
        setenv("OMPI_MCA_pml", "ob1", 1);
        setenv("OMPI_MCA_btl", "self,vader", 1);
        setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
        setenv("ASAN_OPTIONS", asan, 1);
        setenv("OMP_NUM_THREADS", "1", 1);
        if (timeout) setenv("AE_DIST_TIMEOUT", timeout, 1);
        int in = open("/dev/null", O_RDONLY), o = open(fo, O_WRONLY | O_CREAT | O_TRUNC, 0600),
            e = open(fe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in, 0);
        dup2(o, 1);
        dup2(e, 2);
        execlp("mpirun", "mpirun", "-np", "3", "--oversubscribe", self, "--rank-child", mode,
               (char *)NULL);
        _exit(127);
    }
    int status = 0, rc = -1;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        if (now_s() - t0 > 120) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(20);
    }
    *seconds = now_s() - t0;
    *out = slurp(fo);
    *err = slurp(fe);
    ae_test_rmtree(dir);
    free(dir);
    return rc;
}

// NULL when several ranks can run here, else the reason they cannot.
static const char *no_group_reason(void) {
#ifndef AE_HAVE_MPI
    return "this build has no MPI (AE_HAVE_MPI is not defined; install libopenmpi-dev)";
#else
    if (!find_mpirun()) return "mpirun is not on PATH (install openmpi-bin)";
    return NULL;
#endif
}

static void test_mpi_collectives(void **state) {
    (void)state;
    const char *why = no_group_reason();
    if (why) {
        printf("SKIP several ranks: %s\n", why);
        skip();
    }
    char *out, *err;
    double secs;
    int rc = run_mpirun("collectives", NULL, &out, &err, &secs);
    printf("mpirun -np 3 (collectives): exit %d after %.1f s\n", rc, secs);
    if (rc != 0 || !strstr(out, "rank 0: ok") || !strstr(out, "rank 1: ok") ||
        !strstr(out, "rank 2: ok"))
        printf("stdout:\n%s\nstderr:\n%s\n", out, err);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "rank 0: ok"));
    assert_non_null(strstr(out, "rank 1: ok"));
    assert_non_null(strstr(out, "rank 2: ok"));
    free(out);
    free(err);

    rc = run_mpirun("mismatch", NULL, &out, &err, &secs);
    printf("mpirun -np 3 (ranks that disagree with MPI): exit %d after %.1f s\n", rc, secs);
    if (rc != 0 || !strstr(out, "rank 2: ok")) printf("stdout:\n%s\nstderr:\n%s\n", out, err);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "rank 0: ok"));
    assert_non_null(strstr(out, "rank 2: ok"));
    free(out);
    free(err);
}

static void test_mpi_watchdog(void **state) {
    (void)state;
    const char *why = no_group_reason();
    if (why) {
        printf("SKIP several ranks: %s\n", why);
        skip();
    }
    char *out, *err;
    double secs;
    int rc = run_mpirun("watchdog", "2", &out, &err, &secs);
    printf("mpirun -np 3 (rank 1 never joins, AE_DIST_TIMEOUT=2): exit %d after %.1f s\n", rc, secs);
    const char *tail = " s for the other ranks in barrier at the watchdog test: a rank died or "
                       "hangs; stopping (the last checkpoint, if any, stays valid)";
    const char *m0 = strstr(err, "attnedit: rank 0: waited "),
               *m2 = strstr(err, "attnedit: rank 2: waited ");
    int ok = rc == 3 && (m0 || m2) && strstr(err, tail) && !strstr(err, "rank 1: waited") &&
             !strstr(out, "FAIL") && secs < 30;
    if (!ok) printf("stdout:\n%s\nstderr:\n%s\n", out, err);
    assert_int_equal(rc, 3);
    assert_true(m0 || m2);
    assert_non_null(strstr(err, tail));
    assert_null(strstr(err, "rank 1: waited"));
    assert_null(strstr(out, "FAIL"));
    assert_true(secs < 30);
    free(out);
    free(err);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--rank-child") == 0) return rank_child(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_none),
        cmocka_unit_test(test_env_launchers),
        cmocka_unit_test(test_env_malformed),
        cmocka_unit_test(test_device_name),
        cmocka_unit_test(test_single_comm),
        cmocka_unit_test(test_timeout_env),
        cmocka_unit_test(test_cpu_group_refused),
        cmocka_unit_test(test_exe_digest),
        cmocka_unit_test(test_watchdog),
        cmocka_unit_test(test_mpi_collectives),
        cmocka_unit_test(test_mpi_watchdog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
