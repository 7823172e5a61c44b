// Measured ceilings of a device for the benchmarks (bench_infer, bench_distill): the bf16 GEMM
// rate and the copy bandwidth, each the median of 5 timed runs through the backend's own ops.
// Header-only (every bench/*.c is its own program).
#ifndef AE_BENCH_PEAKS_H
#define AE_BENCH_PEAKS_H

#include <stdlib.h>

#include "backend/ops.h"
#include "core/log.h"

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Median of n values (sorts v).
static double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The GEMM rate (FLOP/s) of an n³ product through the backend's gemm (act x weight dtype),
// random data (zeros run faster), one warm-up, median of 5 runs of 4 products; 0 when the
// buffers do not fit.
static double bench_peak_gemm(const ae_backend *be, int n) {
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr a = ae_scratch_alloc(&s, (size_t)n * n, be->act_dtype);
    ae_ptr b = ae_scratch_alloc(&s, (size_t)n * n, be->weight_dtype);
    ae_ptr y = ae_scratch_alloc(&s, (size_t)n * n, be->act_dtype);
    if (s.failed) {
        ae_scratch_free(&s);
        return 0;
    }
    be->fill_normal(be, a, (size_t)n * n, 1.0f, 1);
    be->fill_normal(be, b, (size_t)n * n, 1.0f, 2);
    double t[5];
    ae_matmul(be, y, a, b, n, n, n); // warm-up
    be->sync(be);
    for (int r = 0; r < 5; r++) {
        double t0 = ae_time_now();
        for (int k = 0; k < 4; k++) ae_matmul(be, y, a, b, n, n, n);
        be->sync(be);
        t[r] = (ae_time_now() - t0) / 4;
    }
    ae_scratch_free(&s);
    return 2.0 * n * (double)n * n / bench_median(t, 5);
}

#endif
