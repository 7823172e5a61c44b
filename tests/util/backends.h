// Op and gradient tests parameterised over backends (issue 14): one test body per op runs on
// every backend of the build, with its inputs in the backend's own buffers and its outputs
// compared with the double-precision references of util/ref.h, within a tolerance per backend
// and dtype that the test states. cpu (fp32) always; cuda (bf16 activations) when the build has
// it and a GPU is present, else each cuda entry is a cmocka skip that prints the reason (a
// failure instead with AE_REQUIRE_GPU=1, as scripts/test-gpu.sh sets).
//
//   static void test_x(void **state) { const ae_backend *be = ae_tb_backend(state); ... }
//   const struct CMUnitTest tests[] = {AE_TB_TESTS(test_x), ...};
//   return cmocka_run_group_tests(tests, ae_tb_setup, ae_tb_teardown);
#ifndef AE_TEST_BACKENDS_H
#define AE_TEST_BACKENDS_H

#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"

typedef struct {
    const char *name;      // "cpu", "cuda"
    const ae_backend *be;  // NULL when unavailable
    int broken;            // 1: the backend exists but failed to open (a failure, not a skip)
    char why[512];         // why unavailable
} ae_tb;

extern ae_tb ae_tb_cpu, ae_tb_cuda;

// cmocka group setup and teardown: open cpu and (where possible) cuda, with AE_CUDA_POISON=1
// (new cuda allocations NaN-filled: a value an op forgets to write shows up), and close them.
int ae_tb_setup(void **state);
int ae_tb_teardown(void **state);

// One test body as two cmocka entries, "fn [cpu]" and "fn [cuda]".
#define AE_TB_TESTS(fn)                                                                            \
    {#fn " [cpu]", fn, NULL, NULL, &ae_tb_cpu}, {#fn " [cuda]", fn, NULL, NULL, &ae_tb_cuda}

// The backend of this entry; when it is unavailable, prints why and skips the test (cmocka
// skip), or fails it when the backend failed to open or AE_REQUIRE_GPU=1.
const ae_backend *ae_tb_backend(void **state);
// 1 on the fp32 reference backend (checks that hold only there: bit-identities of the cpu code).
int ae_tb_is_cpu(const ae_backend *be);

// A tolerance per backend: cpu's for its fp32 tensors, cuda's for the dtypes the test uses there
// (bf16 inputs and activations; the test says which outputs are F32).
typedef struct {
    double cpu, cuda;
} ae_tb_tol;
double ae_tb_tol_of(const ae_backend *be, ae_tb_tol t);

// ---- buffers (all of one case in an ae_scratch, freed with ae_scratch_free) ----
// A new backend buffer of dtype dt holding x (n host floats; dt float); x is then overwritten
// with the values the buffer holds (rounded to dt), so that a reference computed from x sees
// exactly the op's inputs.
ae_ptr ae_tb_in(ae_scratch *s, float *x, size_t n, ae_dtype dt);
// A new I32 buffer holding x (n values).
ae_ptr ae_tb_in_i32(ae_scratch *s, const int32_t *x, size_t n);
// A new backend buffer of n values of dt, each `value` (NAN: an output that must be written).
ae_ptr ae_tb_new(ae_scratch *s, size_t n, ae_dtype dt, float value);
// The n values of a backend buffer as a new host float array (caller frees); fails the test on
// a device error.
float *ae_tb_out(const ae_backend *be, ae_ptr p, size_t n);
// The n values of a backend buffer into host floats.
void ae_tb_get(const ae_backend *be, float *dst, ae_ptr p, size_t n);

// ---- single buffers (the caller frees them with be->free); a failure fails the test, naming the
// call and carrying the backend's message ----
// A new buffer of n values of dt (at least one).
ae_ptr ae_tb_alloc(const ae_backend *be, size_t n, ae_dtype dt);
// n host values of dtype hdt into p.
void ae_tb_put(const ae_backend *be, ae_ptr p, const void *h, ae_dtype hdt, size_t n);
// A new buffer of n values of dt holding the n host values h of dtype hdt.
ae_ptr ae_tb_alloc_put(const ae_backend *be, const void *h, ae_dtype hdt, size_t n, ae_dtype dt);
// The n values of an I32 buffer as a new host array (caller frees).
int32_t *ae_tb_out_i32(const ae_backend *be, ae_ptr p, size_t n);

// got[i] against ref[i]: |got − ref| <= tol · max(1, |ref|) for every i (NaN fails); the first
// element outside names `what` on `be`. Returns the worst |got − ref| / max(1, |ref|).
double ae_tb_check(const ae_backend *be, const char *what, const float *got, const double *ref,
                   size_t n, double tol);

#endif
