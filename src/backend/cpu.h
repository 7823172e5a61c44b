// Host routines of the CPU reference that host-side code (the MoE training pass) shares with
// the cpu backend's ops, so both route tokens with one implementation.
#ifndef AE_BACKEND_CPU_H
#define AE_BACKEND_CPU_H

// Router softmax over all experts of one token, in place (double accumulation).   z: (n)
void ae_moe_softmax(float *z, int n);
// Top-k of probabilities p (n): indices in descending order of value (ties -> lower index),
// weights renormalised to sum 1 when `renorm`. idx, wts: (k)
void ae_moe_topk(const float *p, int n, int k, int renorm, int *idx, float *wts);

#endif
