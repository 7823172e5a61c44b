// Sampling: greedy, determinism by seed, top-k / top-p restriction, frequencies.
#include <math.h>
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
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
