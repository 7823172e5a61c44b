// Sampling: greedy, determinism by seed, top-k / top-p restriction, frequencies.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "infer/sample.h"
#include "util/testutil.h"

static void test_greedy_ties_lowest(void **state) {
    (void)state;
    float l[4] = {1.0f, 3.0f, 3.0f, -1.0f};
    ae_sampler s;
    ae_sampler_params p = {.greedy = 1};
    assert_int_equal(ae_sampler_init(&s, &p, 4), AE_OK);
    assert_int_equal(ae_sampler_next(&s, l), 1);
    ae_sampler_free(&s);
}

static void draw(const ae_sampler_params *p, const float *l, int V, int n, int *hist) {
    ae_sampler s;
    assert_int_equal(ae_sampler_init(&s, p, V), AE_OK);
    memset(hist, 0, sizeof(int) * V);
    for (int i = 0; i < n; i++) hist[ae_sampler_next(&s, l)]++;
    ae_sampler_free(&s);
}

static void test_top_k_top_p_and_frequencies(void **state) {
    (void)state;
    float l[5] = {2.0f, 1.0f, 0.0f, -1.0f, 0.5f};
    int h[5], h2[5];
    ae_sampler_params p = {.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 3};
    draw(&p, l, 5, 4000, h);
    assert_int_equal(h[2] + h[3] + h[4], 0); // only the 2 most likely ids
    double p0 = exp(2.0) / (exp(2.0) + exp(1.0));
    assert_true(fabs(h[0] / 4000.0 - p0) < 0.03);
    draw(&p, l, 5, 4000, h2);
    assert_memory_equal(h, h2, sizeof h); // same seed, same draws
    ae_sampler_params q = {.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .seed = 3};
    draw(&q, l, 5, 1000, h);
    assert_int_equal(h[0], 1000); // p(id 0) = 0.52 >= 0.5: nucleus is one id
    ae_sampler_params t = {.temperature = 0.05f, .top_k = 0, .top_p = 1.0f, .seed = 9};
    draw(&t, l, 5, 500, h);
    assert_int_equal(h[0], 500); // near-zero temperature ~ argmax
}

// Top-p at the boundary: probabilities 0.5, 0.3, 0.2 (given to ids 2, 0, 1, so the sort
// matters). The nucleus is the shortest prefix whose mass reaches top_p: with top_p just below
// a cumulative sum (0.5, 0.8) it ends there, just above it takes the next id. 1e-6 is 5x the
// float rounding of the computed cumulative sums (probabilities from expf and a float
// normalisation: ~1e-7), so each case is decided by the rule, not by rounding.
static void test_top_p_boundary(void **state) {
    (void)state;
    float l[3] = {logf(0.3f), logf(0.2f), logf(0.5f)};
    struct {
        float top_p;
        int allowed[3]; // which ids may be drawn
    } cases[] = {
        {0.5f - 1e-6f, {0, 0, 1}}, {0.5f + 1e-6f, {1, 0, 1}},
        {0.8f - 1e-6f, {1, 0, 1}}, {0.8f + 1e-6f, {1, 1, 1}},
    };
    const int n = 3000;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int h[3];
        double kept = 0;
        for (int i = 0; i < 3; i++) kept += cases[c].allowed[i] ? expf(l[i]) : 0.0;
        for (uint64_t seed = 1; seed <= 3; seed++) { // several seeds, n draws each
            ae_sampler_params p = {.temperature = 1.0f, .top_k = 0, .top_p = cases[c].top_p, .seed = seed};
            draw(&p, l, 3, n, h);
            printf("top_p %.7f seed %d: counts %d %d %d\n", cases[c].top_p, (int)seed, h[0], h[1], h[2]);
            for (int i = 0; i < 3; i++) {
                if (!cases[c].allowed[i]) {
                    assert_int_equal(h[i], 0);
                    continue;
                }
                // renormalised frequency within the nucleus; 0.04 is > 4 standard deviations
                // (sqrt(0.25/3000) = 0.009) and < the 0.1 shift a wrong nucleus would cause
                double want = expf(l[i]) / kept;
                assert_true(h[i] > 0);
                assert_true(fabs(h[i] / (double)n - want) < 0.04);
            }
        }
    }
    // exactly on the boundary: four equal logits give probabilities of exactly 0.25 and a
    // cumulative sum of exactly 0.5 after two ids, which reaches top_p = 0.5: the nucleus is the
    // two lowest ids (ties sort by id)
    float eq[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    int h4[4];
    ae_sampler_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .seed = 5};
    draw(&p, eq, 4, n, h4);
    assert_int_equal(h4[2] + h4[3], 0);
    assert_true(fabs(h4[0] / (double)n - 0.5) < 0.04);
}

static void test_bad_params(void **state) {
    (void)state;
    ae_sampler s;
    ae_sampler_params p = {.temperature = -1.0f, .top_p = 1.0f};
    assert_int_equal(ae_sampler_init(&s, &p, 4), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "--temperature"));
    ae_sampler_params q = {.temperature = 1.0f, .top_p = 1.5f};
    assert_int_equal(ae_sampler_init(&s, &q, 4), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "--top-p"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties_lowest),
        cmocka_unit_test(test_top_k_top_p_and_frequencies),
        cmocka_unit_test(test_top_p_boundary),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
