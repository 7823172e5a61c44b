// AdamW and the learning-rate schedule (src/train/optim.c) against a hand computation in double:
// the schedule (linear warmup from lr/warmup, cosine to the floor lr·min_lr_ratio, the floor
// after the last step, no warmup, total <= warmup), and several AdamW steps over a mix of
// decayed (decay = 1) and undecayed (decay = 0: norms, gates, sinks) tensors with global
// gradient-norm clipping active on some steps and not on others. Every stored quantity
// (parameters, both moments, the returned pre-clip norm) is compared.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "train/optim.h"
#include "util/testutil.h"

static const double k_pi = 3.14159265358979323846;

// The documented schedule, in double.
static double ref_lr(double lr, int64_t warmup, int64_t total, double min_ratio, int64_t s) {
    if (warmup > 0 && s <= warmup) return lr * (double)s / (double)warmup;
    if (total <= warmup) return lr;
    double t = (double)(s - warmup) / (double)(total - warmup);
    if (t > 1.0) t = 1.0;
    double floor = lr * min_ratio;
    return floor + (lr - floor) * 0.5 * (1.0 + cos(k_pi * t));
}

static void test_lr_schedule(void **state) {
    (void)state;
    // {warmup, total}: the usual case, no warmup, warmup of 1 step, total == warmup, total < warmup
    int64_t cases[][2] = {{4, 20}, {0, 10}, {1, 5}, {6, 6}, {8, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        ae_adamw_cfg cfg = {.lr = 3e-3f, .warmup = cases[c][0], .total = cases[c][1], .min_lr_ratio = 0.1f};
        for (int64_t s = 1; s <= cases[c][1] + 3; s++) {
            double want = ref_lr(cfg.lr, cfg.warmup, cfg.total, cfg.min_lr_ratio, s);
            double got = ae_lr_at(&cfg, s);
            // float result of a double formula: relative 1e-6 (float epsilon 6e-8, a few roundings)
            if (fabs(got - want) > 1e-6 * fabs(want))
                fail_msg("warmup %lld total %lld step %lld: lr %.9g, want %.9g", (long long)cfg.warmup,
                         (long long)cfg.total, (long long)s, got, want);
        }
    }
    // landmarks written out (independent of ref_lr): warmup 4, total 20, peak 3e-3, floor 3e-4
    ae_adamw_cfg cfg = {.lr = 3e-3f, .warmup = 4, .total = 20, .min_lr_ratio = 0.1f};
    assert_true(fabs(ae_lr_at(&cfg, 1) - 0.75e-3) < 1e-9);  // lr/warmup at step 1
    assert_true(fabs(ae_lr_at(&cfg, 2) - 1.5e-3) < 1e-9);   // linear
    assert_true(fabs(ae_lr_at(&cfg, 4) - 3e-3) < 1e-9);     // peak at the end of warmup
    assert_true(fabs(ae_lr_at(&cfg, 12) - 1.65e-3) < 1e-9); // half-way through the cosine: mean
    assert_true(fabs(ae_lr_at(&cfg, 20) - 3e-4) < 1e-9);    // the floor at the last step
    assert_true(fabs(ae_lr_at(&cfg, 25) - 3e-4) < 1e-9);    // and after it
    double prev = 1.0; // strictly decreasing after warmup
    for (int64_t s = 5; s <= 20; s++) {
        assert_true(ae_lr_at(&cfg, s) < prev);
        prev = ae_lr_at(&cfg, s);
    }
}

// Reference AdamW state of one tensor, in double.
typedef struct {
    double *w, *m, *v;
} ref_tensor;

static void test_adamw_steps(void **state) {
    (void)state;
    // 2 decayed matrices and 2 undecayed vectors (a norm weight and sinks), interleaved
    enum { NT = 4, STEPS = 7 };
    int64_t numel[NT] = {24, 8, 15, 4};
    int decay[NT] = {1, 0, 1, 0};
    ae_adamw_cfg cfg = {.lr = 2e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.3f,
                        .warmup = 2, .total = 6, .min_lr_ratio = 0.1f, .clip = 0.7f};
    // gradient norm per step: > clip (clipped) on steps 2, 4 and 7, < clip on the others (clip
    // != 1 so that a clip factor computed as 1/norm instead of clip/norm shows)
    double gnorm[STEPS] = {0.5, 4.0, 0.3, 2.5, 0.6, 0.4, 7.0};
    ae_opt_param ps[NT];
    float *W[NT], *G[NT]; // host views of each tensor and its gradient (cpu backend)
    ref_tensor ref[NT];
    ae_rng r;
    ae_rng_seed(&r, 42);
    for (int i = 0; i < NT; i++) {
        W[i] = calloc((size_t)numel[i], sizeof(float));
        G[i] = calloc((size_t)numel[i], sizeof(float));
        ps[i] = (ae_opt_param){.param = ae_host_f32(W[i]), .grad = ae_host_f32(G[i]),
                               .numel = numel[i], .decay = decay[i]};
        ae_test_fill_normal(W[i], (size_t)numel[i], 1.0f, &r);
        for (int64_t j = 0; j < numel[i]; j++) W[i][j] += decay[i] ? 0.0f : 1.0f; // norm-like
        ref[i].w = malloc(sizeof(double) * (size_t)numel[i]);
        ref[i].m = calloc((size_t)numel[i], sizeof(double));
        ref[i].v = calloc((size_t)numel[i], sizeof(double));
        for (int64_t j = 0; j < numel[i]; j++) ref[i].w[j] = W[i][j];
    }
    ae_adamw o;
    assert_int_equal(ae_adamw_init(&o, ae_backend_cpu(), &cfg, ps, NT), AE_OK);
    double worst_w = 0, worst_m = 0, worst_v = 0;
    for (int s = 1; s <= STEPS; s++) {
        // gradients: N(0,1) rescaled to the step's global norm; some exact zeros
        double ss = 0;
        for (int i = 0; i < NT; i++) {
            ae_test_fill_normal(G[i], (size_t)numel[i], 1.0f, &r);
            if (s == 3) G[i][0] = 0.0f;
            for (int64_t j = 0; j < numel[i]; j++) ss += (double)G[i][j] * G[i][j];
        }
        float k = (float)(gnorm[s - 1] / sqrt(ss));
        double ss2 = 0;
        for (int i = 0; i < NT; i++)
            for (int64_t j = 0; j < numel[i]; j++) {
                G[i][j] *= k;
                ss2 += (double)G[i][j] * G[i][j];
            }
        double norm = sqrt(ss2);
        // reference step
        double scale = (cfg.clip > 0 && norm > cfg.clip) ? cfg.clip / norm : 1.0;
        double lr = ref_lr(cfg.lr, cfg.warmup, cfg.total, cfg.min_lr_ratio, s);
        double b1 = cfg.beta1, b2 = cfg.beta2;
        double bc1 = 1.0 - pow(b1, s), bc2 = 1.0 - pow(b2, s);
        for (int i = 0; i < NT; i++) {
            double wd = decay[i] ? cfg.weight_decay : 0.0;
            for (int64_t j = 0; j < numel[i]; j++) {
                double g = G[i][j] * scale;
                ref[i].m[j] = b1 * ref[i].m[j] + (1 - b1) * g;
                ref[i].v[j] = b2 * ref[i].v[j] + (1 - b2) * g * g;
                double mh = ref[i].m[j] / bc1, vh = ref[i].v[j] / bc2;
                ref[i].w[j] -= lr * (mh / (sqrt(vh) + cfg.eps) + wd * ref[i].w[j]);
            }
        }
        double got_norm;
        assert_int_equal(ae_adamw_step(&o, &got_norm), AE_OK);
        // the returned norm is the pre-clip one (double accumulation of float squares)
        assert_true(fabs(got_norm - norm) < 1e-9 * norm);
        assert_int_equal(o.step, s);
        for (int i = 0; i < NT; i++)
            for (int64_t j = 0; j < numel[i]; j++) {
                worst_w = fmax(worst_w, fabs(W[i][j] - ref[i].w[j]));
                worst_m = fmax(worst_m, fabs(ae_f32(o.m[i])[j] - ref[i].m[j]));
                worst_v = fmax(worst_v, fabs(ae_f32(o.v[i])[j] - ref[i].v[j]));
            }
        printf("step %d: lr %.5f, grad norm %.2f (%s), worst |w - ref| so far %.2e\n", s, lr, norm,
               scale < 1 ? "clipped" : "not clipped", worst_w);
    }
    // Tolerances. Parameters are O(1) and stored in float (ulp 1.2e-7 at 1), updated 7 times by
    // amounts <= 2e-2 each computed in float with ~1e-6 relative error: 2e-6 absolute. The
    // smallest effect a wrong update has is far above that: decaying the decay = 0 tensors moves
    // them by lr·wd·|w| >= 2e-3·0.3·0.5 = 3e-4 per step; dropping either bias correction
    // changes the first update by a factor 10 (beta1) or 4.5 (beta2); a wrong schedule or
    // clipping changes updates by >= 10%, i.e. >= 2e-4.
    printf("AdamW over %d steps: worst |w - ref| %.2e, |m - ref| %.2e, |v - ref| %.2e\n", STEPS,
           worst_w, worst_m, worst_v);
    assert_true(worst_w < 2e-6);
    assert_true(worst_m < 1e-6); // |m| <= 1, float: 1e-6
    assert_true(worst_v < 1e-6); // |v| <= 1, float: 1e-6
    // zero_grad clears every gradient
    ae_adamw_zero_grad(&o);
    for (int i = 0; i < NT; i++)
        for (int64_t j = 0; j < numel[i]; j++) assert_true(G[i][j] == 0.0f);
    ae_adamw_free(&o);
    for (int i = 0; i < NT; i++) {
        free(W[i]), free(G[i]);
        free(ref[i].w), free(ref[i].m), free(ref[i].v);
    }
}

// The first update of a parameter whose gradient keeps its sign is lr·(sign(g) + wd·w): the bias
// corrections make the first step independent of beta1 and beta2 (hand value, no reference
// implementation involved).
static void test_adamw_first_step_by_hand(void **state) {
    (void)state;
    float w[2] = {0.5f, 0.5f}, g[2] = {0.25f, -0.001f};
    float w0[1] = {2.0f}, g0[1] = {-3.0f};
    ae_opt_param ps[2] = {{.param = ae_host_f32(w), .grad = ae_host_f32(g), .numel = 2, .decay = 1},
                          {.param = ae_host_f32(w0), .grad = ae_host_f32(g0), .numel = 1, .decay = 0}};
    ae_adamw_cfg cfg = {.lr = 0.1f, .beta1 = 0.8f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.5f,
                        .warmup = 0, .total = 1, .min_lr_ratio = 1.0f, .clip = 0.0f};
    ae_adamw o;
    assert_int_equal(ae_adamw_init(&o, ae_backend_cpu(), &cfg, ps, 2), AE_OK);
    double norm;
    assert_int_equal(ae_adamw_step(&o, &norm), AE_OK);
    // w -= lr·(g/|g| + wd·w): 0.5 - 0.1·(1 + 0.25), 0.5 - 0.1·(-1 + 0.25); w0 (no decay): 2 + 0.1.
    // Tolerance 1e-6: float arithmetic on O(1) values (eps/|g| = 1e-5 relative on the second).
    assert_true(fabsf(w[0] - 0.375f) < 1e-6f);
    assert_true(fabsf(w[1] - 0.575f) < 2e-6f);
    assert_true(fabsf(w0[0] - 2.1f) < 1e-6f);
    ae_adamw_free(&o);
}

// Non-finite values: a NaN or Inf gradient changes nothing (parameters, moments, step count)
// and names its tensor; an update that overflows a parameter (lr·wd·|w| > FLT_MAX) names the
// tensor it made non-finite; finite steps report none.
static void test_adamw_nonfinite(void **state) {
    (void)state;
    float w0[3] = {1, 2, 3}, g0[3] = {0.1f, 0.2f, 0.3f}, w1[2] = {1, 1}, g1[2] = {0.5f, NAN};
    ae_opt_param ps[2] = {{.param = ae_host_f32(w0), .grad = ae_host_f32(g0), .numel = 3, .decay = 1},
                          {.param = ae_host_f32(w1), .grad = ae_host_f32(g1), .numel = 2, .decay = 1}};
    ae_adamw_cfg cfg = {.lr = 1.0f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 10.0f,
                        .warmup = 0, .total = 10, .min_lr_ratio = 1.0f, .clip = 1.0f};
    ae_adamw o;
    assert_int_equal(ae_adamw_init(&o, ae_backend_cpu(), &cfg, ps, 2), AE_OK);
    for (int k = 0; k < 2; k++) {
        g1[1] = k ? -INFINITY : NAN;
        double norm;
        assert_int_equal(ae_adamw_step(&o, &norm), AE_OK);
        assert_false(isfinite(norm));
        assert_int_equal(o.nonfinite, 1);
        assert_int_equal(o.step, 0);
        assert_true(w0[0] == 1 && w0[2] == 3 && w1[0] == 1 && w1[1] == 1);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < ps[i].numel; j++)
                assert_true(ae_f32(o.m[i])[j] == 0 && ae_f32(o.v[i])[j] == 0);
    }
    g1[1] = 0.25f;
    double norm;
    assert_int_equal(ae_adamw_step(&o, &norm), AE_OK);
    assert_int_equal(o.nonfinite, -1);
    assert_int_equal(o.step, 1);
    w0[1] = 3e38f; // decay: w -= lr·wd·w = -27e38: overflows to -Inf
    assert_int_equal(ae_adamw_step(&o, &norm), AE_OK);
    assert_int_equal(o.nonfinite, 0);
    assert_true(isinf(w0[1]));
    ae_adamw_free(&o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_adamw_steps),
        cmocka_unit_test(test_adamw_first_step_by_hand),
        cmocka_unit_test(test_adamw_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
