// The op profiler's table (backend/profile.h) as the benchmarks print it: lines starting
// "profile |", each op's total per unit (a decoded token, a training step) most time first, its
// classes (gemm shapes, attention T) indented under it; shares are of the sum of the op totals.
// Header-only (every bench/*.c is its own program).
#ifndef AE_BENCH_PROFILE_H
#define AE_BENCH_PROFILE_H

#include "backend/profile.h"

// The library's table (backend/profile.h) on stdout, as every benchmark prints it.
static void bench_print_profile(const char *label, const ae_backend *prof, const char *what, int n,
                                const char *unit, double plain_s) {
    ae_backend_profile_print(stdout, label, prof, what, n, unit, plain_s);
}

#endif
