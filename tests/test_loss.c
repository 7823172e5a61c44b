// Distillation losses through the cpu backend's ops: the vocabulary-chunked KD loss against a
// direct full-logit computation in double (several chunk sizes, including ones that do not
// divide V, two token blocks, τ = 1 and 2), its gradients (dhs, dWs) against the double
// reference's, whose formula is checked against central differences; grad_scale scales both
// gradients (exactly, for a power of two) and null gradients leave the loss alone; the zero case
// (student == teacher), the top-1 count; cosine and MSE losses and gradients against a double
// reference checked against finite differences.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "train/loss.h"
#include "util/fd.h"
#include "util/testutil.h"

typedef struct {
    int N, D, V;
    double tau;
    const float *ht, *Wt, *hs, *Ws;
} kd_case;

// Mean τ²·KL over tokens, all V logits at once in double; optional exact gradients (double).
static double kd_ref(const kd_case *c, double *dhs, double *dWs, int *top1) {
    int N = c->N, D = c->D, V = c->V;
    double *zt = malloc(sizeof(double) * V), *zs = malloc(sizeof(double) * V);
    double total = 0.0;
    int agree = 0;
    if (dhs) memset(dhs, 0, sizeof(double) * N * D);
    if (dWs) memset(dWs, 0, sizeof(double) * V * D);
    for (int i = 0; i < N; i++) {
        int at = 0, as = 0;
        double bt = -INFINITY, bs = -INFINITY;
        for (int v = 0; v < V; v++) {
            double a = 0, b = 0;
            for (int d = 0; d < D; d++) {
                a += (double)c->ht[i * D + d] * c->Wt[v * D + d];
                b += (double)c->hs[i * D + d] * c->Ws[v * D + d];
            }
            if (a > bt) bt = a, at = v;
            if (b > bs) bs = b, as = v;
            zt[v] = a / c->tau;
            zs[v] = b / c->tau;
        }
        agree += at == as;
        double lt = ae_ref_logsumexp(zt, V, NULL), ls = ae_ref_logsumexp(zs, V, NULL), kl = 0;
        for (int v = 0; v < V; v++) {
            double pt = exp(zt[v] - lt), ps = exp(zs[v] - ls);
            kl += pt * ((zt[v] - lt) - (zs[v] - ls));
            double g = c->tau * (ps - pt) / N;
            for (int d = 0; d < D; d++) {
                if (dhs) dhs[i * D + d] += g * c->Ws[v * D + d];
                if (dWs) dWs[v * D + d] += g * c->hs[i * D + d];
            }
        }
        total += kl;
    }
    free(zt);
    free(zs);
    if (top1) *top1 = agree;
    return c->tau * c->tau * total / N;
}

static float *randn(size_t n, float std, ae_rng *r) {
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = std * ae_rng_normal(r);
    return x;
}

static double kd_ref_loss(void *c) { return kd_ref(c, NULL, NULL, NULL); }

// Central difference of the double reference in one float element (uses the actual float step).
static double fd_kd(kd_case *c, float *x, size_t i) {
    int64_t e = (int64_t)i;
    ae_fd_dir d = ae_fd_element(x, &e);
    return ae_fd_central(kd_ref_loss, c, &d, 1e-3);
}

static void run_kd(int N, int D, int V, float tau, const int *chunks, int n_chunks, uint64_t seed,
                   int fd) {
    ae_rng r;
    ae_rng_seed(&r, seed);
    float *ht = randn((size_t)N * D, 1.0f, &r), *hs = randn((size_t)N * D, 1.0f, &r);
    float *Wt = randn((size_t)V * D, 3.0f / sqrtf(D), &r), *Ws = randn((size_t)V * D, 3.0f / sqrtf(D), &r);
    kd_case c = {N, D, V, tau, ht, Wt, hs, Ws};
    double *rdh = malloc(sizeof(double) * N * D), *rdW = malloc(sizeof(double) * V * D);
    int rtop1;
    double rl = kd_ref(&c, rdh, rdW, &rtop1);
    float *dhs = malloc(sizeof(float) * N * D), *dWs = malloc(sizeof(float) * V * D);
    float *dhs4 = malloc(sizeof(float) * N * D), *dWs4 = malloc(sizeof(float) * V * D);
    const ae_backend *be = ae_backend_cpu();
    for (int k = 0; k < n_chunks; k++) {
        for (int i = 0; i < V * D; i++) dWs[i] = 0.5f; // accumulates on top
        for (int i = 0; i < N * D; i++) dhs[i] = 123.0f; // overwritten
        double loss, loss4, loss0;
        int top1 = -1, top1_0 = -1;
        assert_int_equal(ae_kd_loss(be, ae_host_f32(ht), ae_host_f32(Wt), ae_host_f32(hs), ae_host_f32(Ws),
                                    N, D, V, tau, chunks[k], 1.0f, ae_host_f32(dhs), ae_host_f32(dWs),
                                    &loss, &top1), AE_OK);
        // grad_scale 1/4 scales both gradients exactly; no gradient: the same loss and top-1
        for (int i = 0; i < V * D; i++) dWs4[i] = 0.125f; // a quarter of dWs's start
        assert_int_equal(ae_kd_loss(be, ae_host_f32(ht), ae_host_f32(Wt), ae_host_f32(hs), ae_host_f32(Ws),
                                    N, D, V, tau, chunks[k], 0.25f, ae_host_f32(dhs4), ae_host_f32(dWs4),
                                    &loss4, NULL), AE_OK);
        assert_int_equal(ae_kd_loss(be, ae_host_f32(ht), ae_host_f32(Wt), ae_host_f32(hs), ae_host_f32(Ws),
                                    N, D, V, tau, chunks[k], 1.0f, ae_ptr_null(), ae_ptr_null(), &loss0,
                                    &top1_0), AE_OK);
        assert_true(loss4 == loss && loss0 == loss);
        assert_int_equal(top1_0, top1);
        for (int i = 0; i < N * D; i++) assert_true(dhs4[i] == 0.25f * dhs[i]);
        for (int i = 0; i < V * D; i++) assert_true(dWs4[i] == 0.25f * dWs[i]);
        if (!(fabs(loss - rl) <= 1e-5 * fmax(1.0, fabs(rl))))
            fail_msg("N %d V %d tau %g chunk %d: loss %.9g, reference %.9g", N, V, (double)tau,
                     chunks[k], loss, rl);
        assert_int_equal(top1, rtop1);
        double gmax = 0;
        for (int i = 0; i < N * D; i++) gmax = fmax(gmax, fabs(rdh[i]));
        for (int i = 0; i < N * D; i++)
            if (!(fabs(dhs[i] - rdh[i]) <= 1e-4 * gmax + 1e-6))
                fail_msg("chunk %d dhs[%d] %.7g vs %.7g", chunks[k], i, (double)dhs[i], rdh[i]);
        gmax = 0;
        for (int i = 0; i < V * D; i++) gmax = fmax(gmax, fabs(rdW[i]));
        for (int i = 0; i < V * D; i++)
            if (!(fabs(dWs[i] - 0.5 - rdW[i]) <= 1e-4 * gmax + 1e-6))
                fail_msg("chunk %d dWs[%d] %.7g vs %.7g", chunks[k], i, dWs[i] - 0.5, rdW[i]);
        printf("kd N %d D %d V %d tau %g chunk %d: loss %.6f (ref %.6f) top1 %d/%d\n", N, D, V,
               (double)tau, chunks[k], loss, rl, top1, N);
    }
    if (fd) { // the reference's own gradient formula against finite differences
        for (int k = 0; k < 24; k++) {
            size_t i = ae_rng_u64(&r) % ((size_t)N * D), j = ae_rng_u64(&r) % ((size_t)V * D);
            double nh = fd_kd(&c, hs, i), nw = fd_kd(&c, Ws, j);
            // the float-path gradient from the last call (dWs minus its 0.5 offset)
            if (!(fabs(dhs[i] - nh) <= 1e-3 * fmax(1e-2, fabs(nh))))
                fail_msg("dhs[%zu]: analytic %.7g, numeric %.7g", i, (double)dhs[i], nh);
            if (!(fabs((dWs[j] - 0.5) - nw) <= 1e-3 * fmax(1e-2, fabs(nw))))
                fail_msg("dWs[%zu]: analytic %.7g, numeric %.7g", j, dWs[j] - 0.5, nw);
        }
    }
    free(ht), free(hs), free(Wt), free(Ws), free(rdh), free(rdW), free(dhs), free(dWs), free(dhs4),
        free(dWs4);
}

static void test_kd_matches_full_logits(void **state) {
    (void)state;
    int chunks[] = {1, 7, 16, 53, 100, 0};
    run_kd(7, 12, 53, 1.0f, chunks, 6, 1, 1);
    run_kd(7, 12, 53, 2.0f, chunks, 6, 2, 1);
    int chunks2[] = {10, 37};
    run_kd(AE_KD_ROWS + 44, 8, 37, 1.0f, chunks2, 2, 3, 0); // two token blocks
}

// Pass 2 reads the logits pass 1 held, or recomputes the chunks past the AE_KD_HOLD_MIB budget:
// the same GEMMs, so every budget gives the same bits (loss, dhs and dWs compared exactly).
static void test_kd_hold_budget(void **state) {
    (void)state;
    const int N = AE_KD_ROWS + 13, D = 8, V = 61, C = 16; // two token blocks, four chunks
    ae_rng r;
    ae_rng_seed(&r, 11);
    float *ht = randn((size_t)N * D, 1.0f, &r), *hs = randn((size_t)N * D, 1.0f, &r);
    float *Wt = randn((size_t)V * D, 1.0f, &r), *Ws = randn((size_t)V * D, 1.0f, &r);
    const double per = 2.0 * 4.0 * AE_KD_ROWS * C / 1048576.0; // MiB a held chunk takes
    const double budget[] = {-1.0, 0.0, 1.5 * per, 3.2 * per}; // all (unset), none, 1, 3 chunks
    float *dh[4], *dW[4];
    double loss[4];
    int top1[4];
    const ae_backend *be = ae_backend_cpu();
    for (int k = 0; k < 4; k++) {
        char v[64];
        snprintf(v, sizeof v, "%.9f", budget[k]);
        if (budget[k] < 0) assert_int_equal(unsetenv("AE_KD_HOLD_MIB"), 0);
        else assert_int_equal(setenv("AE_KD_HOLD_MIB", v, 1), 0);
        dh[k] = malloc(sizeof(float) * N * D);
        dW[k] = calloc((size_t)V * D, sizeof(float));
        assert_int_equal(ae_kd_loss(be, ae_host_f32(ht), ae_host_f32(Wt), ae_host_f32(hs),
                                    ae_host_f32(Ws), N, D, V, 1.5f, C, 1.0f, ae_host_f32(dh[k]),
                                    ae_host_f32(dW[k]), &loss[k], &top1[k]),
                         AE_OK);
    }
    assert_int_equal(unsetenv("AE_KD_HOLD_MIB"), 0);
    for (int k = 1; k < 4; k++) {
        assert_true(loss[k] == loss[0]);
        assert_int_equal(top1[k], top1[0]);
        assert_memory_equal(dh[k], dh[0], sizeof(float) * N * D);
        assert_memory_equal(dW[k], dW[0], sizeof(float) * V * D);
    }
    printf("kd hold budgets (all, none, 1 and 3 of 4 chunks): the same bits, loss %.6f\n", loss[0]);
    for (int k = 0; k < 4; k++) free(dh[k]), free(dW[k]);
    free(ht), free(hs), free(Wt), free(Ws);
}

static void test_kd_zero_when_equal(void **state) {
    (void)state;
    int N = 9, D = 16, V = 41;
    ae_rng r;
    ae_rng_seed(&r, 7);
    float *hh = randn((size_t)N * D, 1.0f, &r), *hW = randn((size_t)V * D, 1.0f, &r);
    float *dhs = malloc(sizeof(float) * N * D), *dWs = calloc((size_t)V * D, sizeof(float));
    ae_ptr h = ae_host_f32(hh), W = ae_host_f32(hW), gh = ae_host_f32(dhs), gW = ae_host_f32(dWs);
    const ae_backend *be = ae_backend_cpu();
    double loss;
    int top1;
    float taus[] = {1.0f, 2.0f};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(ae_kd_loss(be, h, W, h, W, N, D, V, taus[k], 16, 1.0f, gh, gW, &loss, &top1),
                         AE_OK);
        assert_true(fabs(loss) < 1e-12);
        assert_int_equal(top1, N);
        for (int i = 0; i < N * D; i++) assert_true(dhs[i] == 0.0f);
        for (int i = 0; i < V * D; i++) assert_true(dWs[i] == 0.0f);
    }
    // bad arguments
    assert_int_equal(ae_kd_loss(be, h, W, h, W, N, D, V, 0.0f, 16, 1.0f, gh, gW, &loss, NULL), AE_ERR_ARG);
    assert_int_equal(ae_kd_loss(be, h, W, h, W, 0, D, V, 1.0f, 16, 1.0f, gh, gW, &loss, NULL), AE_ERR_ARG);
    free(hh), free(hW), free(dhs), free(dWs);
}

// A row loss through the ops: kind 0 cosine, 1 MSE (mode: normalized).
static double row_op(int kind, int mode, const float *y, const float *t, int N, int D, float gs,
                     float *dy) {
    const ae_backend *be = ae_backend_cpu();
    ae_ptr py = ae_host_f32(y), pt = ae_host_f32(t), pd = dy ? ae_host_f32(dy) : ae_ptr_null();
    double loss = NAN;
    ae_status st = kind == 0 ? ae_cosine_loss(be, py, pt, N, D, gs, pd, &loss)
                             : ae_mse_loss(be, py, pt, N, D, mode, gs, pd, &loss);
    assert_int_equal(st, AE_OK);
    return loss;
}

// The same loss in double, and its gradient (dy may be NULL).
static double row_ref(int kind, int mode, const float *y, const float *t, int N, int D, double *dy) {
    double total = 0;
    for (int i = 0; i < N; i++) {
        double ab = 0, aa = 0, bb = 0, se = 0;
        for (int d = 0; d < D; d++) {
            double a = y[i * D + d], b = t[i * D + d];
            ab += a * b, aa += a * a, bb += b * b, se += (a - b) * (a - b);
        }
        double cs = ab / sqrt(aa * bb), den = mode ? bb + 1e-6 : D;
        total += kind == 0 ? 1 - cs : se / den;
        for (int d = 0; dy && d < D; d++) {
            double a = y[i * D + d], b = t[i * D + d];
            dy[i * D + d] = (kind == 0 ? -b / sqrt(aa * bb) + cs * a / aa : 2 * (a - b) / den) / N;
        }
    }
    return total / N;
}

// row_ref's loss for util/fd.h.
typedef struct {
    int kind, mode;
    const float *y, *t; // (N, D) each
    int N, D;
} row_case;

static double row_ref_loss(void *ctx) {
    const row_case *c = ctx;
    return row_ref(c->kind, c->mode, c->y, c->t, c->N, c->D, NULL);
}

static void check_row_loss(const char *what, int kind, int mode) {
    int N = 5, D = 11;
    ae_rng r;
    ae_rng_seed(&r, 11 + mode + 2 * kind);
    float *y = randn((size_t)N * D, 1.0f, &r), *t = randn((size_t)N * D, 1.0f, &r);
    for (int i = 0; i < N * D; i++) t[i] = 0.6f * t[i] + 0.8f * y[i]; // correlated
    float *dy = malloc(sizeof(float) * N * D), *dy4 = malloc(sizeof(float) * N * D);
    double *ref = malloc(sizeof(double) * N * D);
    double loss = row_op(kind, mode, y, t, N, D, 1.0f, dy), want = row_ref(kind, mode, y, t, N, D, ref);
    // cosine rows are F32 (rounding 6e-8 of each 1 − cos), MSE rows F64
    double tol = kind == 0 ? 1e-6 : 1e-9;
    if (!(fabs(loss - want) <= tol * fmax(1, fabs(want))))
        fail_msg("%s: loss %.12g, reference %.12g", what, loss, want);
    assert_true(row_op(kind, mode, y, t, N, D, 1.0f, NULL) == loss);
    assert_true(row_op(kind, mode, y, t, N, D, 0.25f, dy4) == loss);
    double gmax = 0;
    for (int i = 0; i < N * D; i++) gmax = fmax(gmax, fabs(ref[i]));
    row_case rc = {kind, mode, y, t, N, D};
    for (int i = 0; i < N * D; i++) {
        if (!(fabs(dy[i] - ref[i]) <= 1e-5 * gmax))
            fail_msg("%s d[%d]: op %.7g, reference %.7g", what, i, (double)dy[i], ref[i]);
        assert_true(dy4[i] == 0.25f * dy[i]); // grad_scale, exactly for a power of two
        // the reference's gradient against central differences of the reference
        int64_t e = i;
        ae_fd_dir d = ae_fd_element(y, &e);
        double num = ae_fd_central(row_ref_loss, &rc, &d, 1e-3);
        if (!(fabs(ref[i] - num) <= 1e-3 * fmax(1e-2, fabs(num))))
            fail_msg("%s d[%d]: reference %.7g, numeric %.7g", what, i, ref[i], num);
    }
    printf("%s: loss %.6f, gradient matches the reference and finite differences\n", what, loss);
    free(y), free(t), free(dy), free(dy4), free(ref);
}

static void test_cosine_mse(void **state) {
    (void)state;
    check_row_loss("cosine", 0, 0);
    check_row_loss("mse", 1, 0);
    check_row_loss("mse normalized", 1, 1);
    // identical rows: zero loss and gradient; a zero row: cos counted as 0, no gradient
    float a[4] = {1, 2, 3, 4}, z[4] = {0}, da[4];
    assert_true(fabs(row_op(0, 0, a, a, 1, 4, 1.0f, da)) < 1e-7);
    for (int i = 0; i < 4; i++) assert_true(fabsf(da[i]) < 1e-7f);
    assert_true(row_op(0, 0, z, a, 1, 4, 1.0f, da) == 1.0);
    for (int i = 0; i < 4; i++) assert_true(da[i] == 0.0f);
    assert_true(row_op(1, 1, a, a, 1, 4, 1.0f, da) == 0.0);
    double l;
    assert_int_equal(ae_cosine_loss(ae_backend_cpu(), ae_host_f32(a), ae_host_f32(a), 0, 4, 1.0f,
                                    ae_ptr_null(), &l), AE_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kd_matches_full_logits),
        cmocka_unit_test(test_kd_hold_budget),
        cmocka_unit_test(test_kd_zero_when_equal),
        cmocka_unit_test(test_cosine_mse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
