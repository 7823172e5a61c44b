// The op profiler's table (backend/profile.h) as the benchmarks print it: lines starting
// "profile |", each op's total per unit (a decoded token, a training step) most time first, its
// classes (gemm shapes, attention T) indented under it; shares are of the sum of the op totals.
// Header-only (every bench/*.c is its own program).
#ifndef AE_BENCH_PROFILE_H
#define AE_BENCH_PROFILE_H

#include <stdio.h>
#include <string.h>

#include "backend/profile.h"

// label: the shape's name; what: the measured work ("decode at 4096, 8 steps"); n: how many
// units the counters cover; unit: their short name ("tok", "step"); plain_s: seconds per unit of
// the unprofiled measurement (0: unknown).
static void bench_print_profile(const char *label, const ae_backend *prof, const char *what, int n,
                                const char *unit, double plain_s) {
    ae_profile_entry e[96];
    int k = ae_backend_profile_entries(prof, e, 96);
    if (k > 96) k = 96;
    double total = 0;
    for (int i = 0; i < k; i++)
        if (!ae_profile_entry_is_class(&e[i])) total += e[i].seconds;
    printf("profile | %s | %s | %s: %.1f us/%s profiled (sum of ops)", label, prof->name, what,
           1e6 * total / n, unit);
    if (plain_s > 0) printf(", %.1f us/%s unprofiled", 1e6 * plain_s, unit);
    printf("\n");
    char calls[32], us[32];
    snprintf(calls, sizeof calls, "calls/%s", unit);
    snprintf(us, sizeof us, "us/%s", unit);
    printf("profile | %-32s | %10s | %10s | %6s\n", "op", calls, us, "share");
    for (int i = 0; i < k; i++) { // ops by time, each followed by its classes
        if (ae_profile_entry_is_class(&e[i])) continue;
        size_t len = strlen(e[i].name);
        for (int j = -1; j < k; j++) {
            const ae_profile_entry *x = j < 0 ? &e[i] : &e[j];
            int cls = j >= 0;
            if (cls && !(ae_profile_entry_is_class(x) && !strncmp(x->name, e[i].name, len) &&
                         x->name[len] == ' '))
                continue;
            printf("profile | %s%-*s | %10.2f | %10.1f | %5.1f%%\n", cls ? "  " : "",
                   cls ? 30 : 32, x->name, (double)x->calls / n, 1e6 * x->seconds / n,
                   total > 0 ? 100 * x->seconds / total : 0);
        }
    }
    fflush(stdout);
}

#endif
