// Op-level profiler: a backend that forwards every op to another one and measures each call.
//
// ae_backend_profile_wrap(inner) returns a backend with inner's name, dtypes and memory (tensors
// of one are tensors of the other) whose every non-NULL slot calls inner's op between two
// inner->sync calls and adds the wall time between the syncs to a counter of that op (NULL
// slots stay NULL). gemm calls are counted per shape class as well as in total, attention calls
// per query count (decode T = 1 or not), so the table shows which products and kernels cost the
// time. The syncs serialise host and device: a profiled run is slower than a plain one and its
// times are for shares ("where does a decode step go"), never for throughput.
//
// Ownership: the wrapper borrows inner (which must outlive it) and is released with
// ae_backend_profile_free, never with ae_backend_close. One thread uses it at a time.
#ifndef AE_BACKEND_PROFILE_H
#define AE_BACKEND_PROFILE_H

#include <stdio.h>

#include "backend/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// One counter: an op slot name ("rope"), or a class of calls ("gemm M<=8 batch>1 trans_b=0").
typedef struct {
    const char *name; // static storage
    long calls;
    double seconds;   // wall time between the syncs around the calls
} ae_profile_entry;

// NULL (message set) when out of memory.
const ae_backend *ae_backend_profile_wrap(const ae_backend *inner);
void ae_backend_profile_free(const ae_backend *prof); // null is a no-op
// Zeroes every counter.
void ae_backend_profile_reset(const ae_backend *prof);
// The counters with calls > 0, most time first, into out (at most max); returns how many there
// are in all (may exceed max). Class counters (gemm shapes, attention T) come as well as the
// op totals they split: see ae_profile_entry_is_class.
int ae_backend_profile_entries(const ae_backend *prof, ae_profile_entry *out, int max);
// 1 when the entry is one class of an op whose total is also listed (its name has a space).
int ae_profile_entry_is_class(const ae_profile_entry *e);
// The table to f: lines starting "profile |", each op's total per unit (a decoded token, a
// training step, a server's run) most time first, its classes (gemm shapes, attention T)
// indented under it; shares are of the sum of the op totals. label: the shape or model; what:
// the measured work ("decode at 4096, 8 steps"); n: how many units the counters cover; unit:
// their short name ("tok", "step"); plain_s: seconds per unit of the unprofiled measurement (0:
// unknown).
void ae_backend_profile_print(FILE *f, const char *label, const ae_backend *prof, const char *what,
                              int n, const char *unit, double plain_s);

#ifdef __cplusplus
}
#endif

#endif
