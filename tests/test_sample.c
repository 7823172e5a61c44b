// Sampling: greedy, determinism by seed, top-k / top-p restriction, frequencies; the rule
// (ae_sample_row, the cpu backend's sample_rows) against a direct transcription of it on crafted
// rows: ties, top_k 1, top_p tiny and 1, temperature small and large, u at 0 and near 1.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
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

// The rule written out plainly (backend/ops.h, ae_sample_param), with the reference's arithmetic
// (expf of the scaled logit, a double sum, float probabilities, double running sums): an
// insertion sort by probability descending, ties by the lower id, then the cuts and the walk.
static int rule(const float *z, int V, float T, int top_k, float top_p, float u) {
    int best = 0;
    for (int i = 1; i < V; i++) best = z[i] > z[best] ? i : best;
    if (T == 0.0f) return best;
    float p[64];
    int ord[64];
    double sum = 0;
    for (int i = 0; i < V; i++) sum += (p[i] = expf((z[i] - z[best]) / T));
    for (int i = 0; i < V; i++) p[i] = (float)(p[i] / sum);
    for (int i = 0; i < V; i++) { // insert id i after every id of higher or equal probability
        int k = i;
        while (k > 0 && p[ord[k - 1]] < p[i]) ord[k] = ord[k - 1], k--;
        ord[k] = i;
    }
    int keep = top_k > 0 && top_k < V ? top_k : V;
    double cum = 0;
    for (int i = 0; i < keep; i++)
        if ((cum += p[ord[i]]) >= top_p) {
            keep = i + 1;
            break;
        }
    double mass = 0, acc = 0;
    for (int i = 0; i < keep; i++) mass += p[ord[i]];
    for (int i = 0; i < keep; i++)
        if (u * mass < (acc += p[ord[i]])) return ord[i];
    return ord[keep - 1];
}

// Every combination of crafted rows and parameters: ae_sample_row == the transcription, and the
// cpu backend's sample_rows over all of them at once == ae_sample_row row by row.
static void test_rule_crafted(void **state) {
    (void)state;
    enum { V = 7 };
    const float rows[][V] = {
        {1.0f, 3.0f, 3.0f, 3.0f, 0.0f, -1.0f, 3.0f},      // four ties at the top
        {0.5f, -2.0f, 4.0f, 4.0f, -2.0f, 1.0f, -0.0f},     // ties at the top and in the middle
        {-1e4f, 2.0f, -1e4f, 1.9999f, 0.0f, 0.0f, -30.0f}, // near-ties, zero probabilities
        {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f},        // flat
    };
    const float temps[] = {0.0f, 0.01f, 0.7f, 1.0f, 100.0f};
    const int top_ks[] = {0, 1, 2, 4, 6, 7, 50};
    const float top_ps[] = {1e-6f, 0.3f, 0.5f, 0.9f, 1.0f};
    const float us[] = {0.0f, 1e-7f, 0.25f, 0.5f, 0.999f, 1.0f - 1.0f / 16777216.0f};
    enum { NR = 4 * 5 * 7 * 5 * 6 };
    static float z[NR * V];
    static ae_sample_param prm[NR];
    static int32_t want[NR], got[NR];
    ae_sample_pair scratch[V];
    int n = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 5; b++)
            for (int c = 0; c < 7; c++)
                for (int d = 0; d < 5; d++)
                    for (int e = 0; e < 6; e++, n++) {
                        memcpy(z + (size_t)n * V, rows[a], sizeof rows[a]);
                        prm[n] = (ae_sample_param){temps[b], top_ps[d], top_ks[c], us[e]};
                        want[n] = rule(rows[a], V, temps[b], top_ks[c], top_ps[d], us[e]);
                        int id = ae_sample_row(rows[a], V, &prm[n], scratch);
                        if (id != want[n])
                            fail_msg("row %d T %g top_k %d top_p %g u %.9g: %d, the rule says %d", a,
                                     temps[b], top_ks[c], top_ps[d], us[e], id, want[n]);
                    }
    const ae_backend *be = ae_backend_cpu();
    be->sample_rows(be, ae_ptr_make(got, AE_DT_I32), ae_ptr_make(z, AE_DT_F32),
                    ae_ptr_make(prm, AE_DT_I32), NR, V);
    assert_memory_equal(got, want, sizeof want);
    // what the rule means on row 0 (ties 1, 2, 3, 6 at the top, then 0, 4, 5)
    ae_sample_param p = {1.0f, 1.0f, 1, 0.999f};
    assert_int_equal(ae_sample_row(rows[0], V, &p, scratch), 1); // top_k 1: the lowest tied id
    p = (ae_sample_param){100.0f, 1.0f, 0, 1.0f - 1.0f / 16777216.0f};
    assert_int_equal(ae_sample_row(rows[0], V, &p, scratch), 5); // u near 1, flat: the last id
    p = (ae_sample_param){0.7f, 1e-6f, 0, 0.999f};
    assert_int_equal(ae_sample_row(rows[0], V, &p, scratch), 1); // tiny top_p: the first id
    p = (ae_sample_param){100.0f, 1.0f, 0, 0.5f};
    assert_int_equal(ae_sample_row(rows[0], V, &p, scratch), 6); // the 4th of 7 near-equal ids
    p = (ae_sample_param){0.0f, 0.5f, 3, 0.5f};
    assert_int_equal(ae_sample_row(rows[1], V, &p, scratch), 2); // temperature 0: argmax
}

// ae_sampler_next is ae_sample_row with one draw of the sampler's generator per token.
static void test_sampler_draws(void **state) {
    (void)state;
    enum { V = 7 };
    const float z[V] = {0.5f, -2.0f, 4.0f, 4.0f, -2.0f, 1.0f, 0.0f};
    ae_sampler_params sp = {.temperature = 2.0f, .top_k = 5, .top_p = 0.95f, .seed = 11};
    ae_sampler s;
    assert_int_equal(ae_sampler_init(&s, &sp, V), AE_OK);
    ae_rng rng;
    ae_rng_seed(&rng, 11);
    ae_sample_pair scratch[V];
    for (int i = 0; i < 200; i++) {
        ae_sample_param p = {2.0f, 0.95f, 5, ae_rng_uniform(&rng)};
        assert_int_equal(ae_sampler_next(&s, z), ae_sample_row(z, V, &p, scratch));
    }
    ae_sample_param g = ae_sampler_row(&s);
    assert_true(g.temperature > 0);
    ae_sampler_free(&s);
    ae_sampler_params gp = {.greedy = 1};
    assert_int_equal(ae_sampler_init(&s, &gp, V), AE_OK);
    g = ae_sampler_row(&s);
    assert_true(g.temperature == 0.0f); // greedy: the argmax row, no draw
    ae_sampler_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties_lowest),
        cmocka_unit_test(test_top_k_top_p_and_frequencies),
        cmocka_unit_test(test_top_p_boundary),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_rule_crafted),
        cmocka_unit_test(test_sampler_draws),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
