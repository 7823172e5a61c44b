// Finite differences for the gradient tests: the one helper every test that checks a backward
// against its loss uses (a scalar loss, a direction in a float array, central or 4-point
// differences, and a ladder of steps for losses computed in fp32).
#ifndef AE_TEST_FD_H
#define AE_TEST_FD_H

#include <stdint.h>

// The loss at the current parameter values. The helpers move the parameters in place before
// each call and put them back afterwards, bit for bit. NAN: this point is unusable (e.g. an MoE
// routing decision flipped), which makes the difference NAN too (ae_fd_best skips it).
typedef double (*ae_fd_loss)(void *ctx);

// A direction in a float array: x[idx[j]] moves by t·v[j], j < n (idx NULL: x[j], dense).
typedef struct {
    float *x;
    const int64_t *idx; // (n) or NULL
    const float *v;     // (n)
    int64_t n;
} ae_fd_dir;

// The direction of the single element x[*i] (v = 1).
ae_fd_dir ae_fd_element(float *x, const int64_t *i);
// The RMS value of x, in double: the scale of a tensor's steps.   x: (n)
double ae_fd_rms(const float *x, int64_t n);

// The loss at x + t·v (each moved value rounded to float), x restored afterwards.
double ae_fd_loss_at(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double t);
// Central difference (ℓ(x + h·v) − ℓ(x − h·v)) / 2h: truncation O(h²). For a single element the
// divisor is the step the float value actually took, (fl(x + h·v) − fl(x − h·v)) / v.
double ae_fd_central(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double h);
// The same in one element *x of a double array (the double references of the op tests): x moves
// by ±h exactly and is put back.
double ae_fd_central_d(ae_fd_loss f, void *ctx, double *x, double h);
// The 4-point stencil (8(ℓ(h) − ℓ(−h)) − (ℓ(2h) − ℓ(−2h))) / 12h: truncation O(h⁴), so h can be
// large enough to swamp the fp32 rounding of a loss computed by a float forward.
double ae_fd_stencil4(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double h);

// For losses whose rounding noise σ matters (fp32 forwards through several layers): the noise of
// the estimate is ≈ σ/h and its truncation grows as h⁴, and the usable step differs between
// tensors (30× on the tests' models), so this tries 4-point stencils at steps scale × {0.03,
// 0.1, 0.01, 0.3, 0.003, 1} (likeliest first) and keeps the one agreeing best with the analytic
// derivative `an`. Returns the smallest |an − num| / (|num| + floor) over the usable steps
// (*num: the matching estimate); stops at the first step within `good`; -1 when every step was
// unusable (NAN).
double ae_fd_best(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double scale, double an,
                  double floor, double good, double *num);

#endif
