// Timing one operation on a backend for the benchmarks (bench_attn, bench_moe): a warm-up call,
// then reps calls each timed alone between two syncs (so a call's time includes the work it
// queued on an asynchronous backend, and none of the previous call's). Header-only (every
// bench/*.c is its own program).
#ifndef AE_BENCH_TIME_H
#define AE_BENCH_TIME_H

#include "backend/ops.h"
#include "core/log.h"

typedef struct {
    double best, mean; // seconds
} bench_timing;

// Runs op(ctx) once to warm up, then reps times; 0 on success, 1 when a sync fails.
static int bench_time_op(const ae_backend *be, void (*op)(void *), void *ctx, int reps,
                         bench_timing *out) {
    op(ctx);
    if (be->sync(be) != AE_OK) return 1;
    out->best = 1e30, out->mean = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = ae_time_now();
        op(ctx);
        if (be->sync(be) != AE_OK) return 1;
        double dt = ae_time_now() - t0;
        if (dt < out->best) out->best = dt;
        out->mean += dt / reps;
    }
    return 0;
}

#endif
