// The serving engine (serve/engine.c) on the bundled qwen3-micro teacher and on MLA and GateSWA
// students made from it: continuous batching over the paged cache gives the tokens that
// ae_generate (one sequence, contiguous cache) gives for the same prompt, sampling parameters
// and seed — alone and with many requests interleaved in one batch, with prefill chunks
// smaller than the prompts and pages smaller than the window — and every page is back in the
// pool afterwards. The paged forward's logits equal ae_model_forward's (MLA: absorbed, or
// materialised from the latents gathered out of the pages, vs materialised prefill, to rounding).
// ae_engine_pause holds every step back (requests submitted meanwhile start together), and a
// CPU engine records no graph (the CPU backend has no graph ops: its steps run op by op).
// The step counters (phases, decode steps and tokens, rows) match the steps the requests need.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "infer/generate.h"
#include "model/student.h"
#include "serve/engine.h"
#include "util/serve.h"
#include "util/testutil.h"

static const char *micro(void) { return ae_test_src("models/qwen3-micro"); }

static ae_sampler_params sampling(int k) {
    ae_sampler_params sp = {.greedy = 1, .top_p = 1.0f};
    if (k % 3 == 1) sp = (ae_sampler_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 7 + k};
    if (k % 3 == 2) sp = (ae_sampler_params){.temperature = 1.3f, .top_p = 0.9f, .seed = 100 + k};
    return sp;
}

#define NREQ 12

// Runs NREQ requests through one engine, first one at a time, then all at once; each must give
// ae_generate's tokens.
static void engine_vs_generate(const ae_student_spec *spec, const char *what, int batch_tokens,
                               int page_positions) {
    ae_model *m = ae_test_micro_model(spec);
    ae_tokenizer *tok = NULL;
    assert_int_equal(ae_tokenizer_load(micro(), &tok), AE_OK);
    ae_engine_opts o = {.max_seqs = 8, .max_batch_tokens = batch_tokens, .max_model_len = 512,
                        .max_queue = 64, .cache_bytes = 4u << 20, .page_positions = page_positions};
    ae_engine *e = NULL;
    assert_int_equal(ae_engine_start(m, tok, &o, &e), AE_OK);
    int V = m->cfg.vocab_size;
    int32_t prompts[NREQ][80];
    int plen[NREQ], gen[NREQ];
    ae_test_ids ref[NREQ];
    for (int k = 0; k < NREQ; k++) {
        plen[k] = 1 + (k * 29) % 80;
        gen[k] = 1 + (k * 13) % 40;
        ae_test_fill_ids(prompts[k], plen[k], V, 50 + k);
        ae_test_generate(m, prompts[k], plen[k], gen[k], sampling(k), &ref[k]);
    }
    for (int round = 0; round < 2; round++) {
        ae_req *r[NREQ];
        int n_at_once = round == 0 ? 1 : NREQ;
        for (int k0 = 0; k0 < NREQ; k0 += n_at_once) {
            for (int k = k0; k < k0 + n_at_once; k++) {
                r[k] = ae_test_req(prompts[k], plen[k], gen[k], sampling(k), -1, 0);
                assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
            }
            ae_test_wait_all(e, r + k0, n_at_once);
        }
        int same = 0;
        for (int k = 0; k < NREQ; k++) {
            assert_int_equal(r[k]->finish, AE_FINISH_LENGTH);
            assert_int_equal(r[k]->n_out, ref[k].n);
            same += memcmp(r[k]->out_ids, ref[k].ids, sizeof(int32_t) * ref[k].n) == 0;
        }
        printf("%s, %s: %d of %d requests give generate's tokens\n", what,
               round == 0 ? "one at a time" : "all at once", same, NREQ);
        assert_int_equal(same, NREQ);
        ae_engine_lock(e);
        for (int k = 0; k < NREQ; k++) ae_engine_release_locked(e, r[k]);
        ae_engine_unlock(e);
    }
    ae_test_check_pool_idle(e);
    ae_engine_stop(e);
    ae_tokenizer_free(tok);
    ae_model_free(m);
}

static void test_teacher(void **st) {
    (void)st;
    engine_vs_generate(NULL, "teacher (GQA), chunks of 32", 32, 16);
    engine_vs_generate(NULL, "teacher (GQA), one big batch", 512, 4);
}

static void test_gateswa(void **st) {
    (void)st;
    ae_student_spec s = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 8,
                         .gate = AE_GATE_ELEMENTWISE, .sinks = 1, .seed = 1};
    engine_vs_generate(&s, "GateSWA W=8 (pages released behind the window)", 16, 4);
}

// The engine's echo log-probabilities of a 60-token prompt (chunks of 16 rows) on an MLA student
// against the contiguous forward's (materialised), within 1e-4. mat_min: the engine's
// AE_PAGED_MLA_MATERIALIZE_MIN (NULL: the default, every chunk absorbed here).
static void mla_echo_vs_forward(const char *mat_min, const char *what) {
    ae_student_spec s = {.target = AE_ATTN_MLA, .kv_lora_rank = 24, .qk_rope_dim = 8, .seed = 3};
    ae_model *m = ae_test_micro_model(&s);
    int V = m->cfg.vocab_size;
    int32_t ids[60];
    ae_test_fill_ids(ids, 60, V, 9);
    // reference: contiguous cache, full logits
    ae_kv_cache c;
    assert_int_equal(ae_kv_cache_init(&c, m, 60), AE_OK);
    float *ref = malloc(sizeof(float) * 60 * V);
    assert_int_equal(ae_model_forward(m, &c, ids, 60, ae_host_f32(ref), 1), AE_OK);
    ae_kv_cache_free(&c);
    // paged: two chunks through the engine's layout
    ae_tokenizer *tok = NULL;
    assert_int_equal(ae_tokenizer_load(micro(), &tok), AE_OK);
    ae_engine_opts o = {.max_seqs = 4, .max_batch_tokens = 16, .max_model_len = 256,
                        .max_queue = 8, .cache_bytes = 1u << 20, .page_positions = 8};
    ae_engine *e = NULL;
    if (mat_min) setenv("AE_PAGED_MLA_MATERIALIZE_MIN", mat_min, 1);
    assert_int_equal(ae_engine_start(m, tok, &o, &e), AE_OK);
    // echo scores every prompt token from the paged logits: compare with the reference's
    int32_t *p = malloc(sizeof ids);
    memcpy(p, ids, sizeof ids);
    ae_req_params rp = {.max_tokens = 4, .sp = {.greedy = 1, .top_p = 1}, .logprobs = 0,
                        .echo = 1, .ignore_eos = 1};
    ae_req *r = ae_req_new(p, 60, &rp);
    assert_int_equal(ae_engine_submit(e, r), AE_OK);
    ae_test_wait_all(e, &r, 1);
    double maxd = 0;
    for (int i = 1; i < 60; i++) {
        const float *z = ref + (size_t)(i - 1) * V;
        double lp = z[ids[i]] - ae_test_logsumexp(z, V, 1.0f, NULL);
        double d = fabs(lp - r->prompt_lp[i].logprob);
        maxd = d > maxd ? d : maxd;
    }
    printf("MLA: echo logprobs (paged, %s) vs contiguous materialised forward: max |diff| %.2g\n",
           what, maxd);
    assert_true(maxd < 1e-4);
    ae_engine_lock(e);
    ae_engine_release_locked(e, r);
    ae_engine_unlock(e);
    ae_test_check_pool_idle(e);
    ae_engine_stop(e);
    unsetenv("AE_PAGED_MLA_MATERIALIZE_MIN");
    ae_tokenizer_free(tok);
    free(ref);
    ae_model_free(m);
}

static void test_mla(void **st) {
    (void)st;
    mla_echo_vs_forward(NULL, "absorbed");
    // chunks of 16 materialised (the sequence's latents gathered out of its pages), the last
    // 12 rows and the decode rows absorbed
    mla_echo_vs_forward("13", "chunks of 16 materialised, 12 absorbed");
}

static void test_admission_and_refusals(void **st) {
    (void)st;
    ae_model *m = ae_test_micro_model(NULL);
    ae_tokenizer *tok = NULL;
    assert_int_equal(ae_tokenizer_load(micro(), &tok), AE_OK);
    // a pool of few pages: requests wait for pages, then all complete
    ae_engine_opts o = {.max_seqs = 8, .max_batch_tokens = 64, .max_model_len = 200,
                        .max_queue = 4, .cache_bytes = 0, .page_positions = 16};
    o.cache_bytes = (size_t)m->cfg.num_hidden_layers * 2 * m->cfg.num_key_value_heads *
                    m->cfg.head_dim * 4 * 16 * 14; // 14 pages: two sequences of <= 7 pages
    ae_engine *e = NULL;
    assert_int_equal(ae_engine_start(m, tok, &o, &e), AE_OK);
    ae_engine_stats s;
    ae_engine_get_stats(e, &s);
    assert_int_equal(s.pages_total, 14);
    int32_t prompt[100];
    ae_test_fill_ids(prompt, 100, m->cfg.vocab_size, 3);
    ae_sampler_params g = {.greedy = 1, .top_p = 1};
    ae_req *big = ae_test_req(prompt, 100, 150, g, -1, 0); // 250 > max_model_len
    assert_int_equal(ae_engine_submit(e, big), AE_ERR_ARG);
    ae_req *r[4];
    for (int k = 0; k < 4; k++) {
        r[k] = ae_test_req(prompt, 90, 10, g, -1, 0); // 100 positions = 7 pages each
        assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
    }
    ae_req *extra[8];
    int refused = 0, n_extra = 0;
    for (int k = 0; k < 8; k++) { // the queue holds 4
        extra[n_extra] = ae_test_req(prompt, 10, 2, g, -1, 0);
        if (ae_engine_submit(e, extra[n_extra]) == AE_ERR_UNSUPPORTED) {
            refused++;
            ae_engine_lock(e);
            ae_engine_release_locked(e, extra[n_extra]);
            ae_engine_unlock(e);
        } else {
            n_extra++;
        }
    }
    ae_test_wait_all(e, r, 4);
    ae_test_wait_all(e, extra, n_extra);
    printf("tight pool: 4 requests of 7 pages in 14 pages completed; %d of 8 more refused by the "
           "queue limit\n", refused);
    for (int k = 1; k < 4; k++) assert_memory_equal(r[k]->out_ids, r[0]->out_ids, sizeof(int32_t) * 10);
    ae_engine_lock(e);
    ae_engine_release_locked(e, big);
    for (int k = 0; k < 4; k++) ae_engine_release_locked(e, r[k]);
    for (int k = 0; k < n_extra; k++) ae_engine_release_locked(e, extra[k]);
    ae_engine_unlock(e);
    ae_test_check_pool_idle(e);
    ae_engine_stop(e);
    ae_tokenizer_free(tok);
    ae_model_free(m);
}

// Three requests submitted to a paused engine: 100 ms later no step has run and none has a token;
// resumed, they run together and give generate's tokens; no step ran recorded.
static void test_pause(void **st) {
    (void)st;
    ae_model *m = ae_test_micro_model(NULL);
    ae_engine_opts o = {.max_seqs = 4, .max_batch_tokens = 64, .max_model_len = 128,
                        .max_queue = 8, .cache_bytes = 1u << 20, .page_positions = 16};
    ae_engine *e = NULL;
    assert_int_equal(ae_engine_start(m, NULL, &o, &e), AE_OK);
    int32_t prompt[20];
    ae_test_fill_ids(prompt, 20, m->cfg.vocab_size, 77);
    ae_sampler_params g = {.greedy = 1, .top_p = 1};
    ae_test_ids ref;
    ae_test_generate(m, prompt, 20, 8, g, &ref);
    ae_engine_pause(e, 1);
    ae_req *r[3];
    for (int k = 0; k < 3; k++) {
        r[k] = ae_test_req(prompt, 20, 8, g, -1, 0);
        assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
    }
    nanosleep(&(struct timespec){.tv_nsec = 100000000}, NULL);
    ae_engine_stats s;
    ae_engine_get_stats(e, &s);
    assert_int_equal(s.steps, 0);
    assert_true(s.step_s == 0 && s.wait_s >= 0.09); // the pause so far counts as waiting
    ae_engine_lock(e);
    for (int k = 0; k < 3; k++) assert_int_equal(r[k]->n_out, 0);
    ae_engine_unlock(e);
    ae_engine_pause(e, 0);
    ae_test_wait_all(e, r, 3);
    ae_engine_get_stats(e, &s);
    printf("paused engine: no step in 100 ms; resumed: %lld steps (%lld recorded), the same "
           "tokens as generate\n", (long long)s.steps, (long long)s.graph_steps);
    assert_true(s.steps >= 8);
    assert_int_equal(s.graph_steps, 0);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(r[k]->n_out, ref.n);
        assert_memory_equal(r[k]->out_ids, ref.ids, sizeof(int32_t) * (size_t)ref.n);
    }
    ae_engine_lock(e);
    for (int k = 0; k < 3; k++) ae_engine_release_locked(e, r[k]);
    ae_engine_unlock(e);
    ae_test_check_pool_idle(e);
    ae_engine_stop(e);
    ae_model_free(m);
}

// Sum of the phases' seconds.
static double phase_sum(const ae_engine_stats *s) {
    double t = 0;
    for (int p = 0; p < AE_PHASE_COUNT; p++) t += s->phase_s[p];
    return t;
}

// The step counters of a run, against the steps the requests must take: one at a time, a
// request of n prompt tokens and g generated ones takes ceil(n / B) prefill steps (the last one
// samples the first token) and g - 1 decode steps of one token; at once, decode steps carry
// several tokens but rows are the same. The phases add up to the steps' wall time, which with
// the idle wait fits in the run's wall time.
static void test_step_counters(void **st) {
    (void)st;
    ae_model *m = ae_test_micro_model(NULL);
    enum { B = 16, NR = 6 };
    // the prompts share their first tokens: no prefix cache, so that every prompt row is computed
    ae_engine_opts o = {.max_seqs = 8, .max_batch_tokens = B, .max_model_len = 256,
                        .max_queue = 16, .cache_bytes = 2u << 20, .page_positions = 16,
                        .no_prefix_cache = 1};
    double t_start = ae_time_now();
    ae_engine *e = NULL;
    assert_int_equal(ae_engine_start(m, NULL, &o, &e), AE_OK);
    ae_sampler_params g = {.greedy = 1, .top_p = 1};
    int32_t prompt[40];
    ae_test_fill_ids(prompt, 40, m->cfg.vocab_size, 11);
    int plen[NR], gen[NR];
    int64_t want_steps = 0, want_decode = 0, want_rows = 0, want_gen = 0;
    for (int k = 0; k < NR; k++) {
        plen[k] = 5 + 7 * k;  // 5..40: one to three prefill chunks of 16
        gen[k] = 3 + k;       // >= 3: at least two decode steps each
        want_steps += (plen[k] + B - 1) / B + gen[k] - 1;
        want_decode += gen[k] - 1;
        want_rows += plen[k] + gen[k] - 1; // the last token is never fed back
        want_gen += gen[k];
    }
    ae_req *r[NR];
    for (int k = 0; k < NR; k++) { // one at a time
        r[k] = ae_test_req(prompt, plen[k], gen[k], g, -1, 0);
        assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
        ae_test_wait_all(e, &r[k], 1);
    }
    ae_engine_stats s;
    ae_engine_get_stats(e, &s);
    double wall = ae_time_now() - t_start, sum = phase_sum(&s);
    printf("one at a time: %lld steps (%lld decode, %lld tokens), %lld rows; phases %.4f s "
           "(forward %.4f, sync %.4f, sample %.4f) of steps %.4f s + wait %.4f s <= wall %.4f s\n",
           (long long)s.steps, (long long)s.decode_steps, (long long)s.decode_tokens,
           (long long)s.rows, sum, s.phase_s[AE_PHASE_FORWARD], s.phase_s[AE_PHASE_SYNC],
           s.phase_s[AE_PHASE_SAMPLE], s.step_s, s.wait_s, wall);
    assert_int_equal(s.steps, want_steps);
    assert_int_equal(s.decode_steps, want_decode);
    assert_int_equal(s.decode_tokens, want_decode); // one token per decode step, alone
    assert_int_equal(s.rows, want_rows);
    assert_int_equal(s.gen_tokens, want_gen);
    for (int p = 0; p < AE_PHASE_COUNT; p++) assert_true(s.phase_s[p] >= 0);
    assert_true(s.phase_s[AE_PHASE_FORWARD] > 0); // the CPU forward computes: never 0 s
    assert_true(fabs(sum - s.step_s) <= 1e-9 * s.steps + 1e-12); // consecutive stamps
    assert_true(s.decode_step_s > 0 && s.decode_step_s < s.step_s); // prefill steps excluded
    assert_true(s.wait_s > 0 && s.step_s + s.wait_s <= wall);
    ae_engine_lock(e);
    for (int k = 0; k < NR; k++) ae_engine_release_locked(e, r[k]);
    ae_engine_unlock(e);
    // all at once (paused until every one is queued): decode steps carry several tokens
    ae_engine_pause(e, 1);
    for (int k = 0; k < NR; k++) {
        r[k] = ae_test_req(prompt, plen[k], gen[k], g, -1, 0);
        assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
    }
    ae_engine_pause(e, 0);
    ae_test_wait_all(e, r, NR);
    ae_engine_stats s2;
    ae_engine_get_stats(e, &s2);
    wall = ae_time_now() - t_start;
    int64_t steps = s2.steps - s.steps, dec = s2.decode_steps - s.decode_steps,
            dec_tok = s2.decode_tokens - s.decode_tokens;
    printf("all at once: %lld steps (%lld decode, %lld tokens: %.2f a step), %lld rows\n",
           (long long)steps, (long long)dec, (long long)dec_tok, dec ? (double)dec_tok / dec : 0.0,
           (long long)(s2.rows - s.rows));
    assert_int_equal(s2.rows - s.rows, want_rows);
    assert_int_equal(s2.gen_tokens - s.gen_tokens, want_gen);
    assert_true(steps < want_steps); // batched: fewer steps than one at a time
    assert_true(dec > 0 && dec <= steps);
    assert_true(dec_tok > dec && dec_tok <= want_gen - NR); // several a step; first tokens are prefill's
    assert_true(fabs(phase_sum(&s2) - s2.step_s) <= 1e-9 * s2.steps + 1e-12);
    assert_true(s2.step_s + s2.wait_s <= wall);
    for (int p = 0; p < AE_PHASE_COUNT; p++) assert_true(s2.phase_s[p] >= s.phase_s[p]);
    ae_engine_lock(e);
    for (int k = 0; k < NR; k++) ae_engine_release_locked(e, r[k]);
    ae_engine_unlock(e);
    ae_test_check_pool_idle(e);
    ae_engine_stop(e);
    ae_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher),
        cmocka_unit_test(test_gateswa),
        cmocka_unit_test(test_mla),
        cmocka_unit_test(test_admission_and_refusals),
        cmocka_unit_test(test_pause),
        cmocka_unit_test(test_step_counters),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
