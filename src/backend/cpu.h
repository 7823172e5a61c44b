// Host routines of the CPU reference that host-side code (the MoE training pass) shares with
// the cpu backend's ops, so both route tokens with one implementation.
#ifndef AE_BACKEND_CPU_H
#define AE_BACKEND_CPU_H

#include <stddef.h>

// Router softmax over all experts of one token, in place (double accumulation).   z: (n)
void ae_moe_softmax(float *z, int n);
// Top-k of probabilities p (n): indices in descending order of value (ties -> lower index),
// weights renormalised to sum 1 when `renorm`. idx, wts: (k)
void ae_moe_topk(const float *p, int n, int k, int renorm, int *idx, float *wts);

// The cpu backend's memory (cpu_memory.c): the bytes of its live buffers, their high-water mark
// since the start or the last reset (reset: the mark restarts from the live bytes), and the
// limit its allocations are refused above (0: none; ae_backend_open sets it from
// ATTNEDIT_MEM_LIMIT, backend/mem_limit.h).
size_t ae_cpu_mem_live(void);
size_t ae_cpu_mem_peak(int reset);
void ae_cpu_set_mem_limit(size_t bytes);

#endif
