// Op tests parameterised over backends (util/backends.h).
#include "util/backends.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/testutil.h"

ae_tb ae_tb_cpu = {"cpu", NULL, 0, ""}, ae_tb_cuda = {"cuda", NULL, 0, ""};

int ae_tb_setup(void **state) {
    (void)state;
    ae_tb_cpu.be = ae_backend_cpu();
    const ae_backend *gpu = NULL;
    int rc = ae_test_try_gpu(&gpu, 1, ae_tb_cuda.why, sizeof ae_tb_cuda.why);
    ae_tb_cuda.be = rc == 0 ? gpu : NULL;
    ae_tb_cuda.broken = rc == 1;
    printf("backends: cpu; cuda %s%s\n", rc == 0 ? gpu->device : "unavailable: ",
           rc == 0 ? "" : ae_tb_cuda.why);
    return 0;
}

int ae_tb_teardown(void **state) {
    (void)state;
    if (ae_tb_cuda.be) ae_backend_close(ae_tb_cuda.be);
    ae_tb_cuda.be = NULL;
    return 0;
}

const ae_backend *ae_tb_backend(void **state) {
    const ae_tb *t = *state;
    if (t->be) return t->be;
    const char *req = getenv("AE_REQUIRE_GPU");
    if (t->broken || (req && req[0] == '1'))
        fail_msg("%s backend required but unavailable: %s", t->name, t->why);
    print_message("SKIP on %s: %s\n", t->name, t->why);
    skip();
    return NULL;
}

int ae_tb_is_cpu(const ae_backend *be) { return be == ae_backend_cpu(); }

double ae_tb_tol_of(const ae_backend *be, ae_tb_tol t) { return ae_tb_is_cpu(be) ? t.cpu : t.cuda; }

static ae_ptr new_buf(ae_scratch *s, size_t n, ae_dtype dt) {
    ae_ptr p = ae_scratch_alloc(s, n ? n : 1, dt);
    if (s->failed)
        fail_msg("%s: allocating %zu %s values: %s", s->be->name, n, ae_dtype_name(dt),
                 ae_last_error());
    return p;
}

void ae_tb_get(const ae_backend *be, float *dst, ae_ptr p, size_t n) {
    ae_status st = be->download(be, dst, AE_DT_F32, p, n);
    if (st != AE_OK)
        fail_msg("%s: download of %zu %s values: %s (%s)", be->name, n, ae_dtype_name(p.dtype),
                 ae_last_error(), ae_status_name(st));
}

ae_ptr ae_tb_in(ae_scratch *s, float *x, size_t n, ae_dtype dt) {
    ae_ptr p = new_buf(s, n, dt);
    if (s->be->upload(s->be, p, x, AE_DT_F32, n) != AE_OK)
        fail_msg("%s: upload of %zu values: %s", s->be->name, n, ae_last_error());
    ae_tb_get(s->be, x, p, n); // the values the op will read
    return p;
}

ae_ptr ae_tb_in_i32(ae_scratch *s, const int32_t *x, size_t n) {
    ae_ptr p = new_buf(s, n, AE_DT_I32);
    if (s->be->upload(s->be, p, x, AE_DT_I32, n) != AE_OK)
        fail_msg("%s: upload of %zu I32 values: %s", s->be->name, n, ae_last_error());
    return p;
}

ae_ptr ae_tb_new(ae_scratch *s, size_t n, ae_dtype dt, float value) {
    ae_ptr p = new_buf(s, n, dt);
    s->be->fill(s->be, p, n, value);
    return p;
}

float *ae_tb_out(const ae_backend *be, ae_ptr p, size_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    if (!h) fail_msg("out of host memory");
    ae_tb_get(be, h, p, n);
    return h;
}

ae_ptr ae_tb_alloc(const ae_backend *be, size_t n, ae_dtype dt) {
    ae_ptr p = be->alloc(be, n ? n : 1, dt);
    if (ae_ptr_is_null(p))
        fail_msg("%s: allocating %zu %s values: %s", be->name, n, ae_dtype_name(dt), ae_last_error());
    return p;
}

void ae_tb_put(const ae_backend *be, ae_ptr p, const void *h, ae_dtype hdt, size_t n) {
    if (be->upload(be, p, h, hdt, n) != AE_OK)
        fail_msg("%s: upload of %zu %s values into a %s buffer: %s", be->name, n,
                 ae_dtype_name(hdt), ae_dtype_name(p.dtype), ae_last_error());
}

ae_ptr ae_tb_alloc_put(const ae_backend *be, const void *h, ae_dtype hdt, size_t n, ae_dtype dt) {
    ae_ptr p = ae_tb_alloc(be, n, dt);
    ae_tb_put(be, p, h, hdt, n);
    return p;
}

int32_t *ae_tb_out_i32(const ae_backend *be, ae_ptr p, size_t n) {
    int32_t *h = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!h) fail_msg("out of host memory");
    ae_status st = be->download(be, h, AE_DT_I32, p, n);
    if (st != AE_OK)
        fail_msg("%s: download of %zu I32 values: %s (%s)", be->name, n, ae_last_error(),
                 ae_status_name(st));
    return h;
}

double ae_tb_check(const ae_backend *be, const char *what, const float *got, const double *ref,
                   size_t n, double tol) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
        if (!(e <= tol))
            fail_msg("%s on %s: [%zu] %.7g vs reference %.7g (error %.3g > %.3g)", what, be->name,
                     i, (double)got[i], ref[i], e, tol);
        worst = fmax(worst, e);
    }
    return worst;
}
