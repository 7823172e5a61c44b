// The collectives' watchdog (comm_internal.h): a rank stuck waiting for the others stops with
// one line and exit status 3 instead of hanging the run forever.
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist/comm_internal.h"

#define AE_DIST_TIMEOUT_DEFAULT 600.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

ae_status ae_watchdog_timeout_from_env(double *seconds) {
    *seconds = AE_DIST_TIMEOUT_DEFAULT;
    const char *v = getenv("AE_DIST_TIMEOUT");
    if (!v || !*v) return AE_OK;
    char *end = NULL;
    errno = 0;
    double t = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(t) || t <= 0 || t > 1e7 ||
        !((v[0] >= '0' && v[0] <= '9') || v[0] == '.'))
        return ae_errorf(AE_ERR_ARG,
                         "AE_DIST_TIMEOUT='%.40s': expected the seconds a rank waits for the "
                         "others in one collective (a number > 0, e.g. 600)", v);
    *seconds = t;
    return AE_OK;
}

void ae_watchdog_init(ae_watchdog *wd, int rank, double timeout) {
    memset(wd, 0, sizeof *wd);
    wd->rank = rank;
    wd->timeout = timeout;
    snprintf(wd->where, sizeof wd->where, "the start of the run");
}

static void alarm_exit(int sig) {
    (void)sig;
    _exit(3);
}

// Never returns: the line, the hook, _exit(3).
static void fire(ae_watchdog *wd, double waited, const char *op, const char *where) {
    char line[512];
    int n = snprintf(line, sizeof line,
                     "attnedit: rank %d: waited %.0f s for the other ranks in %s at %s: a rank "
                     "died or hangs; stopping (the last checkpoint, if any, stays valid)\n",
                     wd->rank, floor(waited), op, where);
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
    __atomic_store_n(&wd->fired, 1, __ATOMIC_SEQ_CST);
    if (wd->abort_hook) {
        // The hook (ncclCommAbort) may itself wait on a peer: end the process regardless.
        signal(SIGALRM, alarm_exit);
        alarm(10);
        wd->abort_hook(wd->abort_arg);
    }
    _exit(3);
}

static void *watch(void *arg) {
    ae_watchdog *wd = arg;
    pthread_mutex_lock(&wd->mu);
    while (!wd->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
        if (wd->stopping) break;
        if (wd->since > 0) {
            double waited = now_s() - wd->since;
            if (waited > wd->timeout) {
                char where[sizeof wd->where];
                const char *op = wd->op ? wd->op : "a collective";
                memcpy(where, wd->where, sizeof where);
                pthread_mutex_unlock(&wd->mu);
                fire(wd, waited, op, where);
            }
        }
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

ae_status ae_watchdog_start(ae_watchdog *wd) {
    if (wd->started) return AE_OK;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e1 = pthread_mutex_init(&wd->mu, NULL);
    int e2 = pthread_cond_init(&wd->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (e1 || e2) {
        if (!e1) pthread_mutex_destroy(&wd->mu);
        if (!e2) pthread_cond_destroy(&wd->cv);
        return ae_errorf(AE_ERR_NOMEM, "cannot start the collectives' watchdog: %s",
                         strerror(e1 ? e1 : e2));
    }
    wd->stopping = 0;
    wd->since = 0;
    int e = pthread_create(&wd->thread, NULL, watch, wd);
    if (e) {
        pthread_mutex_destroy(&wd->mu);
        pthread_cond_destroy(&wd->cv);
        return ae_errorf(AE_ERR_NOMEM, "cannot start the collectives' watchdog thread: %s",
                         strerror(e));
    }
    wd->started = 1;
    return AE_OK;
}

void ae_watchdog_set_hook(ae_watchdog *wd, void (*hook)(void *), void *arg) {
    if (wd->started) pthread_mutex_lock(&wd->mu);
    wd->abort_hook = hook;
    wd->abort_arg = arg;
    if (wd->started) pthread_mutex_unlock(&wd->mu);
}

void ae_watchdog_set_where(ae_watchdog *wd, const char *where) {
    if (wd->started) pthread_mutex_lock(&wd->mu);
    snprintf(wd->where, sizeof wd->where, "%s", where && *where ? where : "an unnamed position");
    if (wd->started) pthread_mutex_unlock(&wd->mu);
}

void ae_watchdog_enter(ae_watchdog *wd, const char *op) {
    if (!wd->started) return;
    pthread_mutex_lock(&wd->mu);
    wd->op = op;
    wd->since = now_s();
    pthread_mutex_unlock(&wd->mu);
}

void ae_watchdog_leave(ae_watchdog *wd) {
    if (!wd->started) return;
    pthread_mutex_lock(&wd->mu);
    wd->since = 0;
    wd->op = NULL;
    pthread_mutex_unlock(&wd->mu);
}

void ae_watchdog_stop(ae_watchdog *wd) {
    if (!wd->started) return;
    pthread_mutex_lock(&wd->mu);
    wd->stopping = 1;
    pthread_cond_signal(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->thread, NULL);
    pthread_mutex_destroy(&wd->mu);
    pthread_cond_destroy(&wd->cv);
    wd->started = 0;
}
