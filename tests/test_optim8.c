// 8-bit AdamW moments (backend/adam8.h, the cpu adamw8 op through ae_adamw with cfg.state8):
// the two codes against their definition written out by hand, the round trip's error bound
// over many decades, and several optimizer steps of the quantised algorithm against a double
// computation of the same algorithm (decode, update, block absmax, nearest code), including a
// block of zero gradients and a block whose small second moments sit 10^9 below its largest.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/adam8.h"
#include "backend/ops.h"
#include "train/optim.h"
#include "util/testutil.h"

// ---- the codes ----------------------------------------------------------------------------------

// Magnitude of code k as the header defines it (e = k >> mbits, f = k mod 2^mbits: f for e = 0,
// (2^mbits + f)·2^(e-1) otherwise), divided by the largest: in double.
static double ref_val(int k, int mbits, int n) {
    int e = k >> mbits, f = k & ((1 << mbits) - 1);
    double top = ldexp((double)((1 << mbits) + (1 << mbits) - 1), ((n - 1) >> mbits) - 1);
    return (e == 0 ? f : ldexp((double)((1 << mbits) + f), e - 1)) / top;
}

// Nearest code to u >= 0 by exhaustive search, ties to the larger: in double.
static int ref_nearest(double u, int mbits, int n) {
    int best = 0;
    for (int k = 1; k < n; k++)
        if (fabs(u - ref_val(k, mbits, n)) <= fabs(u - ref_val(best, mbits, n))) best = k;
    return best;
}

static void test_codes(void **state) {
    (void)state;
    ae_q8_code c;
    ae_q8_code_init(&c);
    // hand values: m (e4m3-like, largest 15·2^14 = 245760), sqrt(v) (e4m4-like, 31·2^14)
    assert_true(c.m_val[0] == 0.0f && c.m_val[127] == 1.0f && c.v_val[0] == 0.0f && c.v_val[255] == 1.0f);
    assert_true(c.m_val[1] == (float)(1.0 / 245760) && c.m_val[8] == (float)(8.0 / 245760));
    assert_true(c.m_val[119] == 0.5f && c.m_val[120] == (float)(131072.0 / 245760));
    assert_true(c.v_val[1] == (float)(1.0 / 507904) && c.v_val[16] == (float)(16.0 / 507904));
    for (int k = 0; k < 128; k++) assert_true(c.m_val[k] == (float)ref_val(k, 3, 128));
    for (int k = 0; k < 256; k++) assert_true(c.v_val[k] == (float)ref_val(k, 4, 256));
    for (int k = 0; k + 1 < 128; k++) assert_true(c.m_val[k] < c.m_mid[k] && c.m_mid[k] < c.m_val[k + 1]);
    for (int k = 0; k + 1 < 256; k++) assert_true(c.v_val[k] < c.v_mid[k] && c.v_mid[k] < c.v_val[k + 1]);
    // every code encodes to itself, with either sign for m
    for (int k = 0; k < 128; k++) {
        assert_int_equal(ae_q8_encode_m(&c, c.m_val[k], 1.0f), k);
        assert_int_equal(ae_q8_encode_m(&c, -c.m_val[k], 1.0f), k ? (k | 0x80) : 0);
    }
    for (int k = 1; k < 256; k++) assert_int_equal(ae_q8_encode_v(&c, c.v_val[k], 1.0f), k);
    // a zero block encodes to 0; a non-zero sqrt(v) never does
    assert_int_equal(ae_q8_encode_m(&c, 0.0f, 0.0f), 0);
    assert_int_equal(ae_q8_encode_v(&c, 1e-30f, 1.0f), 1);
    assert_int_equal(ae_q8_encode_v(&c, 0.0f, 1.0f), 0);
}

// The encoders' guessed search (ae_q8_nearest_guess) against the index it must find, the number
// of midpoints <= u (ae_q8_nearest, a binary search, defines it):
//   - every float u in [0, 1.5] of both codes (2^31 values; the encoders' u is at most 1 up to
//     rounding), in increasing order, against a running count of the midpoints passed (the
//     same number, one step a value instead of a search; the count itself checked against
//     ae_q8_nearest at every 9973rd value);
//   - the 256 floats on either side of every midpoint and every code value against
//     ae_q8_nearest (where the answer or the guess changes);
//   - NaN, ±0, Inf, values above the largest code.
static void check_guess(const float *mid, int n_mid, int mbits, float u) {
    int want = ae_q8_nearest(mid, n_mid, u), got = ae_q8_nearest_guess(mid, n_mid, mbits, u);
    if (want != got) fail_msg("nearest code of %a (mbits %d): guessed %d, binary search %d", u, mbits, got, want);
}

// Every float of [0, 1.5] in increasing bit order (= increasing value), the guess against the
// running count; returns the values checked.
static size_t sweep_all(const float *mid, int n_mid, int mbits) {
    int count = 0; // midpoints <= u
    size_t n = 0;
    for (uint32_t b = 0; b <= 0x3fc00000u; b++, n++) {
        float u;
        memcpy(&u, &b, sizeof u);
        while (count < n_mid && mid[count] <= u) count++;
        if (b % 9973 == 0 && ae_q8_nearest(mid, n_mid, u) != count)
            fail_msg("running count %d != binary search %d at %a", count, ae_q8_nearest(mid, n_mid, u), u);
        if (ae_q8_nearest_guess(mid, n_mid, mbits, u) != count)
            fail_msg("nearest code of %a (mbits %d): guessed %d, want %d", u, mbits,
                     ae_q8_nearest_guess(mid, n_mid, mbits, u), count);
    }
    return n;
}

static void test_nearest_guess(void **state) {
    (void)state;
    ae_q8_code c;
    ae_q8_code_init(&c);
    const float *mids[2] = {c.m_mid, c.v_mid}, *vals[2] = {c.m_val, c.v_val};
    const int n_mid[2] = {127, 255}, mbits[2] = {3, 4};
    size_t checked = 0;
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k <= n_mid[t]; k++) {
            float pts[2] = {vals[t][k], k < n_mid[t] ? mids[t][k] : 1.0f};
            for (int i = 0; i < 2; i++) {
                uint32_t b0;
                memcpy(&b0, &pts[i], sizeof b0);
                for (uint32_t b = b0 > 256 ? b0 - 256 : 0; b <= b0 + 256; b++) {
                    float u;
                    memcpy(&u, &b, sizeof u);
                    check_guess(mids[t], n_mid[t], mbits[t], u);
                    checked++;
                }
            }
        }
        checked += sweep_all(mids[t], n_mid[t], mbits[t]);
        const float special[] = {NAN, 0.0f, -0.0f, INFINITY, 1.0f, 1.5f, 3.0f, 1e30f, 1e-45f};
        for (size_t i = 0; i < sizeof special / sizeof *special; i++)
            check_guess(mids[t], n_mid[t], mbits[t], special[i]);
    }
    printf("  guessed nearest code == midpoints <= u at %zu points of both codes (every float in "
           "[0, 1.5] among them)\n", checked);
}

// Round trip x -> code -> x' for values from 1 down to 1e-8 of the block's absmax: m within
// 2^-4·|x| (half of the 3-bit mantissa's step) or half the smallest step (1/245760/2, below the
// normal range); sqrt(v) within 2^-5·s or the smallest code (a non-zero s never decodes to 0).
static void test_round_trip_bound(void **state) {
    (void)state;
    ae_q8_code c;
    ae_q8_code_init(&c);
    ae_rng r;
    ae_rng_seed(&r, 7);
    const float amax = 3.7e-3f;
    double worst_rel_m = 0, worst_rel_v = 0;
    for (int i = 0; i < 200000; i++) {
        double u = pow(10.0, -8.0 * ae_rng_uniform(&r)); // 1 .. 1e-8, log-uniform
        float x = (float)(u * amax) * (i & 1 ? -1.0f : 1.0f);
        float xm = ae_q8_decode_m(&c, ae_q8_encode_m(&c, x, ae_q8_inv(amax)), amax);
        double em = fabs((double)xm - x), bm = fmax(ldexp(fabs(x), -4), amax * 0.5 / 245760);
        if (em > bm * (1 + 1e-6)) fail_msg("m round trip of %.9g: %.9g (error %.3g > %.3g)", x, xm, em, bm);
        float s = fabsf(x);
        float sv = ae_q8_decode_v(&c, ae_q8_encode_v(&c, s, ae_q8_inv(amax)), amax);
        double ev = fabs((double)sv - s), bv = fmax(ldexp(s, -5), amax / 507904.0);
        if (ev > bv * (1 + 1e-6)) fail_msg("sqrt(v) round trip of %.9g: %.9g (error %.3g > %.3g)", s, sv, ev, bv);
        assert_true(sv > 0.0f);
        if (u > 1e-4) { // the normal ranges of both codes
            worst_rel_m = fmax(worst_rel_m, em / fabs(x));
            worst_rel_v = fmax(worst_rel_v, ev / s);
        }
    }
    printf("round trip above 1e-4 of absmax: worst relative error m %.4f (bound 0.0625), "
           "sqrt(v) %.4f (bound 0.03125)\n", worst_rel_m, worst_rel_v);
    assert_true(worst_rel_m > 0.05 && worst_rel_v > 0.025); // the bounds are reached, not loose
}

// ---- optimizer steps against a double computation of the quantised algorithm ------------------

typedef struct {
    int64_t n;
    double *w;
    uint8_t *mq, *vq; // codes as the reference rounds them
    double *ms, *vs;  // block absmax
} ref8;

// One step of one tensor, block by block, in double.
static void ref8_step(ref8 *t, const float *g, double gscale, double lr, double b1, double b2,
                      double eps, double wd, int step) {
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (int64_t j0 = 0; j0 < t->n; j0 += AE_Q8_BLOCK) {
        int64_t len = t->n - j0 < AE_Q8_BLOCK ? t->n - j0 : AE_Q8_BLOCK, b = j0 / AE_Q8_BLOCK;
        double m[AE_Q8_BLOCK], s[AE_Q8_BLOCK], mmax = 0, smax = 0;
        for (int64_t i = 0; i < len; i++) {
            int64_t j = j0 + i;
            double m0 = ref_val(t->mq[j] & 127, 3, 128) * t->ms[b] * (t->mq[j] & 0x80 ? -1 : 1);
            double s0 = ref_val(t->vq[j], 4, 256) * t->vs[b];
            double gj = g[j] * gscale;
            m[i] = b1 * m0 + (1 - b1) * gj;
            double v = b2 * s0 * s0 + (1 - b2) * gj * gj;
            t->w[j] -= lr * ((m[i] / bc1) / (sqrt(v / bc2) + eps) + wd * t->w[j]);
            s[i] = sqrt(v);
            mmax = fmax(mmax, fabs(m[i]));
            smax = fmax(smax, s[i]);
        }
        for (int64_t i = 0; i < len; i++) {
            int k = mmax > 0 ? ref_nearest(fabs(m[i]) / mmax, 3, 128) : 0;
            t->mq[j0 + i] = (uint8_t)(k | (m[i] < 0 && k ? 0x80 : 0));
            k = smax > 0 ? ref_nearest(s[i] / smax, 4, 256) : 0;
            t->vq[j0 + i] = (uint8_t)(k == 0 && s[i] > 0 ? 1 : k);
        }
        t->ms[b] = mmax;
        t->vs[b] = smax;
    }
}

static void test_adamw8_steps(void **state) {
    (void)state;
    // a tensor of 2 full blocks + a partial one, one exactly a block, one short tensor, and one
    // whose second block gets only zero gradients
    enum { NT = 4, STEPS = 6 };
    int64_t numel[NT] = {700, 256, 5, 300};
    int decay[NT] = {1, 0, 1, 1};
    ae_adamw_cfg cfg = {.lr = 2e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.3f,
                        .warmup = 2, .total = 6, .min_lr_ratio = 0.1f, .clip = 1.0f, .state8 = 1};
    ae_opt_param ps[NT];
    float *W[NT], *G[NT];
    ref8 ref[NT];
    ae_rng r;
    ae_rng_seed(&r, 11);
    for (int i = 0; i < NT; i++) {
        size_t n = (size_t)numel[i], nb = ae_q8_blocks(n);
        W[i] = calloc(n, sizeof(float));
        G[i] = calloc(n, sizeof(float));
        ae_test_fill_normal(W[i], n, 1.0f, &r);
        ps[i] = (ae_opt_param){.param = ae_host_f32(W[i]), .grad = ae_host_f32(G[i]),
                               .numel = numel[i], .decay = decay[i]};
        ref[i] = (ref8){.n = numel[i], .w = malloc(sizeof(double) * n), .mq = calloc(n, 1),
                        .vq = calloc(n, 1), .ms = calloc(nb, sizeof(double)), .vs = calloc(nb, sizeof(double))};
        for (size_t j = 0; j < n; j++) ref[i].w[j] = W[i][j];
    }
    ae_adamw o;
    assert_int_equal(ae_adamw_init(&o, ae_backend_cpu(), &cfg, ps, NT), AE_OK);
    assert_true(o.ms && o.vs && o.m[0].dtype == AE_DT_U8);
    double worst_w = 0, worst_amax = 0;
    long code_diff = 0, codes = 0;
    for (int s = 1; s <= STEPS; s++) {
        double ss = 0;
        for (int i = 0; i < NT; i++) {
            ae_test_fill_normal(G[i], (size_t)numel[i], s == 2 ? 3.0f : 0.05f, &r); // step 2 clips
            for (int64_t j = 0; j < numel[i]; j++) G[i][j] *= (float)(1 + (j % 7)); // spread per block
            if (i == 3) memset(G[i] + 256, 0, sizeof(float) * 44);               // a zero block
            if (i == 0) G[i][3] = 1e3f * (s == 1), G[i][4] = 1e-6f;               // v 1e-18 vs 1e5
            for (int64_t j = 0; j < numel[i]; j++) ss += (double)G[i][j] * G[i][j];
        }
        double norm = sqrt(ss), scale = norm > cfg.clip ? cfg.clip / norm : 1.0;
        double lr = ae_lr_at(&cfg, s); // the schedule is test_optim's; here the update
        for (int i = 0; i < NT; i++)
            ref8_step(&ref[i], G[i], scale, lr, cfg.beta1, cfg.beta2, cfg.eps,
                      decay[i] ? cfg.weight_decay : 0, s);
        double got_norm;
        assert_int_equal(ae_adamw_step(&o, &got_norm), AE_OK);
        assert_int_equal(o.nonfinite, -1);
        for (int i = 0; i < NT; i++) {
            const uint8_t *mq = o.m[i].data, *vq = o.v[i].data;
            const float *ms = ae_f32(o.ms[i]), *vs = ae_f32(o.vs[i]);
            for (int64_t j = 0; j < numel[i]; j++) {
                worst_w = fmax(worst_w, fabs(W[i][j] - ref[i].w[j]));
                code_diff += (mq[j] != ref[i].mq[j]) + (vq[j] != ref[i].vq[j]);
                codes += 2;
            }
            for (size_t b = 0; b < ae_q8_blocks((size_t)numel[i]); b++) {
                worst_amax = fmax(worst_amax, fabs(ms[b] - ref[i].ms[b]) / fmax(ref[i].ms[b], 1e-30));
                worst_amax = fmax(worst_amax, fabs(vs[b] - ref[i].vs[b]) / fmax(ref[i].vs[b], 1e-30));
            }
        }
        // the zero block stays exactly zero; the tiny v next to a 1e3 gradient keeps a code
        assert_true(ae_f32(o.ms[3])[1] == 0.0f && ae_f32(o.vs[3])[1] == 0.0f);
        assert_true(((const uint8_t *)o.v[0].data)[4] >= 1);
    }
    // Tolerances: w is O(1), stored in float and moved 6 times by <= lr·|update| computed in
    // float (relative ~1e-6): 2e-6. Codes: the float and double roundings pick the same code
    // unless a value lies within ~1 float ulp of a midpoint (odds ~1e-6 each): none expected
    // here. absmax: a float against a double, one update apart: 1e-5 relative. A wrong code
    // table, rounding rule, absmax or decode moves m or v by a code step (>= 3%) and w by
    // >= 1e-4 somewhere over these steps.
    printf("adamw8 over %d steps: worst |w - ref| %.2e, codes differing %ld of %ld, worst absmax "
           "rel %.2e\n", STEPS, worst_w, code_diff, codes, worst_amax);
    assert_true(worst_w < 2e-6);
    assert_int_equal(code_diff, 0);
    assert_true(worst_amax < 1e-5);
    ae_adamw_free(&o);
    for (int i = 0; i < NT; i++) {
        free(W[i]), free(G[i]);
        free(ref[i].w), free(ref[i].mq), free(ref[i].vq), free(ref[i].ms), free(ref[i].vs);
    }
}

// A backend without adamw8 is refused by name when 8-bit states are asked for.
static void test_unsupported_backend(void **state) {
    (void)state;
    ae_backend be = *ae_backend_cpu();
    be.adamw8 = NULL;
    float w[1] = {0}, g[1] = {0};
    ae_opt_param p = {.param = ae_host_f32(w), .grad = ae_host_f32(g), .numel = 1};
    ae_adamw_cfg cfg = {.lr = 1e-3f, .state8 = 1};
    ae_adamw o;
    assert_int_equal(ae_adamw_init(&o, &be, &cfg, &p, 1), AE_ERR_UNSUPPORTED);
    assert_non_null(strstr(ae_last_error(), "adamw8"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_nearest_guess),
        cmocka_unit_test(test_round_trip_bound),
        cmocka_unit_test(test_adamw8_steps),
        cmocka_unit_test(test_unsupported_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
