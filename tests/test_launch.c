// The `--gpus N` launcher (dist/launch.h) on the cpu: this test program is its own program.
// ae_dist_launch execs /proc/self/exe, so the ranks it starts run this file's main with
// AE_DIST_RANK set: rank_main below writes what it saw (environment, argv, pid) to
// <dir>/rank<r>.txt and then behaves as its mode says. The launcher runs in a forked child of
// the test with stdout and stderr in files; need_gpus = 0 except where the GPU check is tested.
#define _GNU_SOURCE // prctl(PR_SET_CHILD_SUBREAPER), setenv
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist/launch.h"
#include "util/testutil.h"

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define LATE_S 30 // sleeping ranks create <dir>/late<r> after this long, unless stopped

// ---------------------------------------------------------------------------------------------
// the ranks: argv = {self, "--child-mode", MODE, DIR} once the launcher removed "--gpus N"

static void sleep_s(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static void sleep_then_mark(const char *dir, int rank) {
    sleep_s(LATE_S);
    char p[512];
    snprintf(p, sizeof p, "%s/late%d", dir, rank);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
}

static int rank_main(int argc, char **argv) {
    if (argc != 4 || strcmp(argv[1], "--child-mode") != 0) {
        fprintf(stderr, "rank: unexpected argv (argc %d)\n", argc);
        return 99;
    }
    const char *mode = argv[2], *dir = argv[3];
    int rank = atoi(getenv("AE_DIST_RANK"));
    char path[512];
    snprintf(path, sizeof path, "%s/rank%d.txt", dir, rank);
    FILE *f = fopen(path, "w");
    if (!f) return 98;
    const char *const vars[] = {"AE_DIST_RANK", "AE_DIST_SIZE", "AE_DIST_LOCAL_RANK",
                                "AE_DIST_LOCAL_SIZE", "AE_DIST_NCCL_ID", "AE_DIST_TIMEOUT",
                                "NCCL_NVLS_ENABLE", "OMPI_COMM_WORLD_RANK",
                                "OMPI_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        fprintf(f, "%s=%s\n", vars[i], getenv(vars[i]) ? getenv(vars[i]) : "(unset)");
    fprintf(f, "argv=");
    for (int i = 1; i < argc; i++) fprintf(f, "%s%s", argv[i], i + 1 < argc ? "|" : "\n");
    fprintf(f, "pid=%ld\n", (long)getpid());
    fclose(f);

    if (!strcmp(mode, "exit0")) {
        printf("stdout of rank %d\n", rank);
        fprintf(stderr, "hello from rank %d\n", rank);
        return 0;
    }
    if (!strcmp(mode, "fail1") || !strcmp(mode, "stubborn")) {
        if (rank == 1) {
            sleep_s(0.3);
            fprintf(stderr, "rank one fails\nno newline at the end");
            return 5;
        }
        if (rank == 2 && !strcmp(mode, "stubborn")) signal(SIGTERM, SIG_IGN);
        sleep_then_mark(dir, rank);
        return 0;
    }
    if (!strcmp(mode, "kill2")) {
        if (rank == 2) {
            sleep_s(0.3);
            raise(SIGKILL);
        }
        sleep_then_mark(dir, rank);
        return 0;
    }
    if (!strcmp(mode, "sleep")) {
        sleep_then_mark(dir, rank);
        return 0;
    }
    fprintf(stderr, "rank: unknown mode '%s'\n", mode);
    return 97;
}

// ---------------------------------------------------------------------------------------------
// running the launcher in a child with its output in files

typedef struct {
    pid_t pid;
    char out_path[64], err_path[64];
    double t0;
} launcher;

typedef struct {
    int rc;        // exit status, or 128 + signal
    char *out, *err;
    double seconds; // from start to exit
} launch_result;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// env: NULL-terminated "NAME=value" pairs set in the launcher's process only.
static void launcher_start(launcher *l, const char *const *args, int need_gpus,
                           const char *const *env) {
    snprintf(l->out_path, sizeof l->out_path, "/tmp/ae-launch-out-XXXXXX");
    snprintf(l->err_path, sizeof l->err_path, "/tmp/ae-launch-err-XXXXXX");
    int fo = mkstemp(l->out_path), fe = mkstemp(l->err_path);
    assert_true(fo >= 0 && fe >= 0);
    int argc = 0;
    while (args[argc]) argc++;
    fflush(stdout);
    fflush(stderr);
    l->t0 = now_s();
    l->pid = fork();
    assert_true(l->pid >= 0);
    if (l->pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        for (int i = 0; env && env[i]; i++) putenv((char *)env[i]);
        char **argv = calloc((size_t)argc + 1, sizeof *argv);
        for (int i = 0; i < argc; i++) argv[i] = (char *)args[i];
        int rc = ae_dist_launch(argc, argv, ae_dist_gpus_arg(argc, argv), need_gpus);
        free(argv);
        exit(rc); // exit, not _exit: the sanitizers check the launcher's leaks
    }
    close(fo);
    close(fe);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc((size_t)n + 1, 1);
    assert_true(fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    return b;
}

static void launcher_wait(launcher *l, launch_result *res) {
    int st = 0;
    assert_int_equal(waitpid(l->pid, &st, 0), l->pid);
    res->seconds = now_s() - l->t0;
    res->rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    res->out = slurp(l->out_path);
    res->err = slurp(l->err_path);
    unlink(l->out_path);
    unlink(l->err_path);
    if (getenv("AE_TEST_VERBOSE")) // what a user would see
        printf("---- launcher: status %d after %.1f s; stderr:\n%s----\n", res->rc, res->seconds,
               res->err);
}

static void launch(const char *const *args, int need_gpus, const char *const *env,
                   launch_result *res) {
    launcher l;
    launcher_start(&l, args, need_gpus, env);
    launcher_wait(&l, res);
}

static void result_free(launch_result *res) {
    free(res->out);
    free(res->err);
}

static char *rank_report(const char *dir, int rank) {
    char p[512];
    snprintf(p, sizeof p, "%s/rank%d.txt", dir, rank);
    struct stat st;
    return stat(p, &st) == 0 ? slurp(p) : NULL;
}

static pid_t report_pid(const char *report) {
    const char *p = strstr(report, "pid=");
    assert_non_null(p);
    return (pid_t)atol(p + 4);
}

// Waits until the n ranks wrote their reports (they run), at most 20 s.
static void wait_reports(const char *dir, int n, pid_t *pids) {
    double t0 = now_s();
    for (int r = 0; r < n; r++) {
        char *rep;
        while (!(rep = rank_report(dir, r)) || !strstr(rep, "pid=")) {
            free(rep);
            assert_true(now_s() - t0 < 20);
            sleep_s(0.02);
        }
        if (pids) pids[r] = report_pid(rep);
        free(rep);
    }
}

// A pid that no longer names a live process (or a zombie nobody reaped).
static int pid_gone(pid_t pid) {
    if (kill(pid, 0) != 0) return errno == ESRCH;
    char p[64], buf[256];
    snprintf(p, sizeof p, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(p, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

static int file_exists(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void assert_contains(const char *hay, const char *needle) {
    if (!strstr(hay, needle)) fail_msg("expected '%s' in:\n%s", needle, hay);
}

// ---------------------------------------------------------------------------------------------

static void test_gpus_arg(void **state) {
    (void)state;
    char *a[] = {"attnedit", "convert", "--gpus", "2", NULL};
    assert_int_equal(ae_dist_gpus_arg(4, a), 2);
    char *b[] = {"attnedit", "convert", "--gpus=2", "--gpu", NULL};
    assert_int_equal(ae_dist_gpus_arg(4, b), 0);
    char *c[] = {"--gpus", "x", NULL}; // argv[0] is never the option
    assert_int_equal(ae_dist_gpus_arg(2, c), 0);
}

static void test_all_exit0(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    launch_result res;
    // stray group variables of the launcher's own environment are replaced; others pass through
    launch(ARGS("test_launch", "--child-mode", "exit0", dir, "--gpus", "3"), 0,
           ARGS("AE_DIST_SIZE=7", "AE_DIST_NCCL_ID=stale", "AE_DIST_TIMEOUT=123",
                "NCCL_NVLS_ENABLE=0"),
           &res);
    if (res.rc != 0) fail_msg("rc %d, stderr:\n%s", res.rc, res.err);
    for (int r = 0; r < 3; r++) {
        char *rep = rank_report(dir, r), want[256];
        assert_non_null(rep);
        snprintf(want, sizeof want,
                 "AE_DIST_RANK=%d\nAE_DIST_SIZE=3\nAE_DIST_LOCAL_RANK=%d\nAE_DIST_LOCAL_SIZE=3\n"
                 "AE_DIST_NCCL_ID=(unset)\nAE_DIST_TIMEOUT=123\nNCCL_NVLS_ENABLE=0\n"
                 "OMPI_COMM_WORLD_RANK=(unset)\nOMPI_COMM_WORLD_SIZE=(unset)\n",
                 r, r);
        assert_int_equal(strncmp(rep, want, strlen(want)), 0);
        char argv_line[600];
        snprintf(argv_line, sizeof argv_line, "argv=--child-mode|exit0|%s\n", dir);
        assert_contains(rep, argv_line);
        free(rep);
        snprintf(want, sizeof want, "stdout of rank %d\n", r);
        assert_contains(res.out, want); // stdout: inherited, no prefix
    }
    assert_contains(res.err, "hello from rank 0\n");
    assert_null(strstr(res.err, "[rank 0]"));
    assert_contains(res.err, "[rank 1] hello from rank 1\n");
    assert_contains(res.err, "[rank 2] hello from rank 2\n");
    assert_null(strstr(res.err, "attnedit:")); // the launcher says nothing when all is well
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);

    // --gpus first, N = 1
    dir = ae_test_tmpdir();
    launch(ARGS("test_launch", "--gpus", "1", "--child-mode", "exit0", dir), 0, NULL, &res);
    assert_int_equal(res.rc, 0);
    char *rep = rank_report(dir, 0);
    assert_non_null(rep);
    assert_contains(rep, "AE_DIST_SIZE=1\n");
    assert_false(file_exists(dir, "rank1.txt"));
    free(rep);
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

// Rank 1 fails while ranks 0 and 2 sleep: they are stopped at once, the launcher returns 5.
static void test_rank_fails(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    launch_result res;
    launch(ARGS("test_launch", "--child-mode", "fail1", dir, "--gpus", "3"), 0, NULL, &res);
    assert_int_equal(res.rc, 5);
    assert_true(res.seconds < 15);
    const char *own = strstr(res.err, "[rank 1] rank one fails\n");
    const char *msg = strstr(res.err, "attnedit: rank 1 exited with status 5; stopping the other "
                                      "ranks (the last checkpoint, if any, stays valid)\n");
    if (!own || !msg || own > msg) fail_msg("stderr:\n%s", res.err);
    assert_contains(res.err, "[rank 1] no newline at the end\n");
    assert_null(strstr(res.err, "rank 0 ")); // the stopped ranks are no news
    assert_null(strstr(res.err, "rank 2 "));
    for (int r = 0; r < 3; r++) {
        char *rep = rank_report(dir, r);
        assert_non_null(rep);
        assert_true(pid_gone(report_pid(rep)));
        free(rep);
    }
    assert_false(file_exists(dir, "late0"));
    assert_false(file_exists(dir, "late2"));
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

// A rank that ignores SIGTERM gets SIGKILL 10 s later.
static void test_rank_ignores_sigterm(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    launch_result res;
    launch(ARGS("test_launch", "--gpus", "3", "--child-mode", "stubborn", dir), 0, NULL, &res);
    assert_int_equal(res.rc, 5);
    if (res.seconds < 9.5 || res.seconds > 15) fail_msg("took %.1f s", res.seconds);
    assert_contains(res.err, "attnedit: rank 1 exited with status 5; stopping the other ranks");
    assert_contains(res.err, "attnedit: 1 rank still running 10 s after SIGTERM: SIGKILL\n");
    char *rep = rank_report(dir, 2);
    assert_non_null(rep);
    assert_true(pid_gone(report_pid(rep)));
    free(rep);
    assert_false(file_exists(dir, "late2"));
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_rank_killed(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    launch_result res;
    launch(ARGS("test_launch", "--child-mode", "kill2", dir, "--gpus", "3"), 0, NULL, &res);
    assert_int_equal(res.rc, 137);
    assert_true(res.seconds < 15);
    assert_contains(res.err, "attnedit: rank 2 was killed by signal 9 (KILL); stopping the other "
                             "ranks (the last checkpoint, if any, stays valid)\n");
    for (int r = 0; r < 2; r++) {
        char *rep = rank_report(dir, r);
        assert_non_null(rep);
        assert_true(pid_gone(report_pid(rep)));
        free(rep);
    }
    assert_false(file_exists(dir, "late0"));
    assert_false(file_exists(dir, "late1"));
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

// SIGINT / SIGTERM to the launcher reach every rank; it returns 128 + the signal.
static void test_signal_forwarded(void **state) {
    (void)state;
    const int sigs[] = {SIGINT, SIGTERM};
    const char *names[] = {"INT", "TERM"};
    for (int i = 0; i < 2; i++) {
        char *dir = ae_test_tmpdir();
        launcher l;
        launcher_start(&l, ARGS("test_launch", "--child-mode", "sleep", dir, "--gpus", "2"), 0,
                       NULL);
        pid_t pids[2];
        wait_reports(dir, 2, pids);
        assert_int_equal(kill(l.pid, sigs[i]), 0);
        launch_result res;
        launcher_wait(&l, &res);
        assert_int_equal(res.rc, 128 + sigs[i]);
        assert_true(res.seconds < 15);
        char want[128];
        snprintf(want, sizeof want, "attnedit: got SIG%s; passing it to the 2 running ranks\n",
                 names[i]);
        assert_contains(res.err, want);
        assert_null(strstr(res.err, "stopping the other ranks")); // no rank failed of itself
        assert_true(pid_gone(pids[0]) && pid_gone(pids[1]));
        assert_false(file_exists(dir, "late0") || file_exists(dir, "late1"));
        result_free(&res);
        ae_test_rmtree(dir);
        free(dir);
    }
}

// The launcher killed with SIGKILL (no chance to clean up): its ranks get SIGTERM from the
// kernel (PR_SET_PDEATHSIG). This process is their subreaper, so it sees how they ended.
static void test_launcher_killed_no_orphans(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    launcher l;
    launcher_start(&l, ARGS("test_launch", "--child-mode", "sleep", dir, "--gpus", "2"), 0, NULL);
    pid_t pids[2];
    wait_reports(dir, 2, pids);
    assert_int_equal(kill(l.pid, SIGKILL), 0);
    launch_result res;
    launcher_wait(&l, &res);
    assert_int_equal(res.rc, 128 + SIGKILL);
    for (int r = 0; r < 2; r++) {
        int st = 0;
        double t0 = now_s();
        pid_t w;
        while ((w = waitpid(pids[r], &st, WNOHANG)) == 0 && now_s() - t0 < 10) sleep_s(0.02);
        assert_int_equal(w, pids[r]);
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), SIGTERM);
    }
    assert_false(file_exists(dir, "late0") || file_exists(dir, "late1"));
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_bad_count(void **state) {
    (void)state;
    static const char *const bad[] = {"0", "65", "x", "2x", "-1", "+2", " 2", "", "1e1", "100000"};
    char *dir = ae_test_tmpdir();
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        launch_result res;
        launch(ARGS("test_launch", "--child-mode", "exit0", dir, "--gpus", bad[i]), 0, NULL, &res);
        assert_int_equal(res.rc, 2);
        char want[128];
        snprintf(want, sizeof want,
                 "attnedit: --gpus '%s': expected the number of GPUs (ranks) to run on, a whole "
                 "number from 1 to 64\n", bad[i]);
        if (strcmp(res.err, want) != 0) fail_msg("--gpus '%s': stderr:\n%s", bad[i], res.err);
        result_free(&res);
    }
    launch_result res;
    launch(ARGS("test_launch", "--child-mode", "exit0", dir, "--gpus"), 0, NULL, &res);
    assert_int_equal(res.rc, 2);
    assert_string_equal(res.err, "attnedit: --gpus needs a value: the number of GPUs (ranks) to "
                                 "run on, 1 to 64\n");
    result_free(&res);
    launch(ARGS("test_launch", "--gpus", "2", "--child-mode", "exit0", dir, "--gpus", "3"), 0,
           NULL, &res);
    assert_int_equal(res.rc, 2);
    assert_string_equal(res.err, "attnedit: --gpus is given twice ('--gpus 2' and '--gpus 3')\n");
    result_free(&res);
    // started by mpirun as one of several ranks: refused; as a group of one: its variables dropped
    launch(ARGS("test_launch", "--child-mode", "exit0", dir, "--gpus", "2"), 0,
           ARGS("OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_RANK=1"), &res);
    assert_int_equal(res.rc, 2);
    assert_contains(res.err, "attnedit: --gpus 2 in a run started by mpirun as one of 4 ranks "
                             "(OMPI_COMM_WORLD_SIZE=4)");
    result_free(&res);
    assert_int_equal(ae_test_count_entries(dir), 0); // no rank started
    launch(ARGS("test_launch", "--child-mode", "exit0", dir, "--gpus", "2"), 0,
           ARGS("OMPI_COMM_WORLD_SIZE=1", "OMPI_COMM_WORLD_RANK=0"), &res);
    assert_int_equal(res.rc, 0);
    char *rep = rank_report(dir, 1);
    assert_non_null(rep);
    assert_contains(rep, "OMPI_COMM_WORLD_RANK=(unset)\nOMPI_COMM_WORLD_SIZE=(unset)\n");
    free(rep);
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

// need_gpus = 1: without the CUDA backend, refused; with it, 64 GPUs are more than any host here.
static void test_need_gpus(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    launch_result res;
    launch(ARGS("test_launch", "--child-mode", "exit0", dir, "--gpus", "64"), 1, NULL, &res);
    assert_int_equal(res.rc, 2);
#ifdef AE_HAVE_CUDA
    assert_contains(res.err, "attnedit: --gpus 64: this host has ");
#else
    assert_string_equal(res.err, "attnedit: --gpus needs a build with the CUDA backend (this "
                                 "attnedit was built without it)\n");
#endif
    assert_int_equal(ae_test_count_entries(dir), 0);
    result_free(&res);
    ae_test_rmtree(dir);
    free(dir);
}

int main(int argc, char **argv) {
    if (getenv("AE_DIST_RANK")) return rank_main(argc, argv); // a rank started by a test below
    // Ranks orphaned by a killed launcher come to this process (test_launcher_killed_no_orphans).
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpus_arg),
        cmocka_unit_test(test_all_exit0),
        cmocka_unit_test(test_rank_fails),
        cmocka_unit_test(test_rank_ignores_sigterm),
        cmocka_unit_test(test_rank_killed),
        cmocka_unit_test(test_signal_forwarded),
        cmocka_unit_test(test_launcher_killed_no_orphans),
        cmocka_unit_test(test_bad_count),
        cmocka_unit_test(test_need_gpus),
    };
    if (getenv("AE_TEST_FILTER")) cmocka_set_test_filter(getenv("AE_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
