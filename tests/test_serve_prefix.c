// Prefix caching in the serving engine (serve/prefix_cache.c, kv_pool.c, engine.c) on the
// bundled qwen3-micro teacher (full pages), an MLA student (latent pages) and an MLA student
// with one MLA layer (full and latent pages of different sizes: the rows between the two
// groups' cached ends are recomputed without writing the shared pages):
// - requests sharing a prefix of several blocks and a partial one give the same tokens
//   (greedy and sampled) and log-probabilities as an engine with the cache off and as
//   ae_generate, while the later ones are served their prefix from the cache (metrics);
// - echo requests compute every prompt position (the same prompt logprobs as uncached);
// - a soak of a few hundred requests with random shared prefixes, lengths and cancellations in
//   a small pool ends with no page held, every page free or evictable, and the books straight;
// - more distinct prefixes than the pool holds evict cached pages and all complete correctly;
// - a GateSWA model (sliding layers) runs with the cache off and says why.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/rng.h"
#include "infer/generate.h"
#include "model/student.h"
#include "serve/engine.h"
#include "util/serve.h"
#include "util/testutil.h"

static ae_sampler_params sampling(int k) {
    if (k % 2) return (ae_sampler_params){.temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = 5 + k};
    return (ae_sampler_params){.greedy = 1, .top_p = 1.0f};
}

static void release_all(ae_engine *e, ae_req **r, int n) {
    ae_engine_lock(e);
    for (int i = 0; i < n; i++) ae_engine_release_locked(e, r[i]);
    ae_engine_unlock(e);
}

static ae_engine *start(const ae_model *m, int cache_off, size_t cache_bytes, int page_positions) {
    ae_engine_opts o = {.max_seqs = 4, .max_batch_tokens = 16, .max_model_len = 256,
                        .max_queue = 64, .cache_bytes = cache_bytes,
                        .page_positions = page_positions, .no_prefix_cache = cache_off};
    ae_engine *e = NULL;
    assert_int_equal(ae_engine_start(m, NULL, &o, &e), AE_OK);
    return e;
}

// An engine whose pool holds n_pages pages of page_positions positions (cache on).
static ae_engine *start_pages(const ae_model *m, int n_pages, int page_positions) {
    ae_engine *e = start(m, 0, 1u << 20, page_positions); // for its page size
    ae_engine_stats s0;
    ae_engine_get_stats(e, &s0);
    ae_engine_stop(e);
    return start(m, 0, s0.page_bytes * (size_t)n_pages, page_positions);
}

enum { NP = 8, PREFIX = 45 };

typedef struct {
    int32_t prompt[NP][PREFIX + 16];
    int plen[NP], gen[NP];
} prefix_set;

// NP prompts: the same PREFIX tokens (5 blocks of 8 and 5 more), then 0..12 own tokens.
static void make_prefix_set(prefix_set *ps, int V) {
    int32_t prefix[PREFIX];
    ae_test_fill_ids(prefix, PREFIX, V, 42);
    for (int k = 0; k < NP; k++) {
        ps->plen[k] = PREFIX + (k * 7) % 13;
        ps->gen[k] = 5 + k % 4;
        memcpy(ps->prompt[k], prefix, sizeof prefix);
        ae_test_fill_ids(ps->prompt[k] + PREFIX, ps->plen[k] - PREFIX, V, 100 + k);
    }
}

// Request 0 alone, then the others at once (paused until all are queued), logprobs 2.
static void run_set(ae_engine *e, const prefix_set *ps, ae_req **r) {
    r[0] = ae_test_req(ps->prompt[0], ps->plen[0], ps->gen[0], sampling(0), 2, 0);
    assert_int_equal(ae_engine_submit(e, r[0]), AE_OK);
    ae_test_wait_all(e, r, 1);
    ae_engine_pause(e, 1);
    for (int k = 1; k < NP; k++) {
        r[k] = ae_test_req(ps->prompt[k], ps->plen[k], ps->gen[k], sampling(k), 2, 0);
        assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
    }
    ae_engine_pause(e, 0);
    ae_test_wait_all(e, r, NP);
}

// The largest difference of two requests' token log-probabilities (ids equal, else fail).
static double lp_diff(const ae_req *a, const ae_req *b) {
    double d = 0;
    assert_int_equal(a->n_out, b->n_out);
    assert_memory_equal(a->out_ids, b->out_ids, sizeof(int32_t) * (size_t)a->n_out);
    for (int i = 0; i < a->n_out; i++) {
        d = fmax(d, fabs(a->out_lp[i].logprob - b->out_lp[i].logprob));
        assert_int_equal(a->out_lp[i].n_top, b->out_lp[i].n_top);
        for (int t = 0; t < a->out_lp[i].n_top; t++) {
            assert_int_equal(a->out_lp[i].top_id[t], b->out_lp[i].top_id[t]);
            d = fmax(d, fabs(a->out_lp[i].top_lp[t] - b->out_lp[i].top_lp[t]));
        }
    }
    return d;
}

// (1) + (2): the shared-prefix set on a cached and an uncached engine, then an echo request.
static void cached_vs_uncached(const ae_student_spec *spec, const char *what, int page_positions) {
    ae_model *m = ae_test_micro_model(spec);
    int V = m->cfg.vocab_size;
    prefix_set ps;
    make_prefix_set(&ps, V);
    ae_engine *on = start(m, 0, 2u << 20, page_positions), *off = start(m, 1, 2u << 20, page_positions);
    ae_engine_stats s_on, s_off;
    ae_engine_get_stats(on, &s_on);
    ae_engine_get_stats(off, &s_off);
    assert_string_equal(s_on.prefix_cache, "on (full/latent pages)");
    assert_string_equal(s_off.prefix_cache, "off (--no-prefix-cache)");
    ae_req *ra[NP], *rb[NP];
    run_set(on, &ps, ra);
    run_set(off, &ps, rb);
    double maxd = 0;
    for (int k = 0; k < NP; k++) {
        assert_int_equal(ra[k]->finish, AE_FINISH_LENGTH);
        maxd = fmax(maxd, lp_diff(ra[k], rb[k]));
        ae_test_ids ref;
        ae_test_generate(m, ps.prompt[k], ps.plen[k], ps.gen[k], sampling(k), &ref);
        assert_int_equal(ra[k]->n_out, ref.n);
        assert_memory_equal(ra[k]->out_ids, ref.ids, sizeof(int32_t) * (size_t)ref.n);
    }
    ae_engine_get_stats(on, &s_on);
    ae_engine_get_stats(off, &s_off);
    // Which positions the cache can serve: each shared group's whole blocks within the 45 shared
    // tokens (request 0 is done), the least of them over the groups
    int served = PREFIX;
    for (int g = 0; g < 3; g++)
        if (g != 1 && s_on.page_size[g]) served = served < PREFIX / s_on.page_size[g] * s_on.page_size[g]
                                                      ? served : PREFIX / s_on.page_size[g] * s_on.page_size[g];
    int64_t want_hit = (int64_t)(NP - 1) * served, prompt_total = 0;
    for (int k = 0; k < NP; k++) prompt_total += ps.plen[k];
    printf("%s: page sizes full %d latent %d (%d positions served); %lld of %lld prompt tokens served from the "
           "cache (want %lld), %d pages cached; tokens == uncached == generate, logprobs max |diff| "
           "%.3g\n", what, s_on.page_size[0], s_on.page_size[2], served,
           (long long)s_on.prefix_hit_tokens, (long long)prompt_total, (long long)want_hit,
           s_on.pages_cached, maxd);
    assert_true(want_hit > 0); // the test's prefix covers a block of each group: else it tests nothing
    assert_int_equal(s_on.prefix_hit_tokens, want_hit);
    assert_int_equal(s_on.prefix_hit_tokens + s_on.prefix_computed_tokens, prompt_total);
    assert_int_equal(s_off.prefix_hit_tokens, 0);
    assert_int_equal(s_off.prefix_computed_tokens, prompt_total);
    // fewer rows computed: the cached positions are not prefilled again
    assert_int_equal(s_off.rows - s_on.rows, want_hit);
    // tokens exactly; log-probabilities to fp32 rounding: the cached K/V rows were computed in
    // another step's batch (other rows next to them in the CPU matmuls' blocks), ~5e-6 here
    assert_true(maxd <= 5e-5);
    assert_true(s_on.pages_cached > 0);
    assert_int_equal(s_off.pages_cached, 0);
    release_all(on, ra, NP);
    release_all(off, rb, NP);
    // (2) echo: the prompt is cached but every position is computed and scored
    ae_req *ea = ae_test_req(ps.prompt[3], ps.plen[3], 3, sampling(0), 1, 1);
    ae_req *eb = ae_test_req(ps.prompt[3], ps.plen[3], 3, sampling(0), 1, 1);
    assert_int_equal(ae_engine_submit(on, ea), AE_OK);
    assert_int_equal(ae_engine_submit(off, eb), AE_OK);
    ae_test_wait_all(on, &ea, 1);
    ae_test_wait_all(off, &eb, 1);
    ae_engine_stats s_echo;
    ae_engine_get_stats(on, &s_echo);
    assert_int_equal(s_echo.prefix_hit_tokens, s_on.prefix_hit_tokens); // nothing reused
    assert_int_equal(ea->prompt_scored, ps.plen[3]);
    double ed = lp_diff(ea, eb);
    for (int i = 1; i < ps.plen[3]; i++) {
        assert_int_equal(ea->prompt_lp[i].id, ps.prompt[3][i]);
        ed = fmax(ed, fabs(ea->prompt_lp[i].logprob - eb->prompt_lp[i].logprob));
        assert_true(isfinite(ea->prompt_lp[i].logprob) && ea->prompt_lp[i].logprob < 0);
    }
    printf("%s: echo of a cached prompt scores all %d positions, max |diff| vs uncached %.3g\n",
           what, ps.plen[3], ed);
    assert_true(ed <= 5e-5); // fp32 rounding of other batch compositions, as above
    release_all(on, &ea, 1);
    release_all(off, &eb, 1);
    ae_test_check_pool_idle(on);
    ae_test_check_pool_idle(off);
    ae_engine_stop(on);
    ae_engine_stop(off);
    ae_model_free(m);
}

static void test_teacher(void **st) {
    (void)st;
    cached_vs_uncached(NULL, "teacher (full pages of 8)", 8);
}

static void test_mla(void **st) {
    (void)st;
    ae_student_spec s = {.target = AE_ATTN_MLA, .kv_lora_rank = 24, .qk_rope_dim = 8, .seed = 3};
    cached_vs_uncached(&s, "MLA student (latent pages)", 8);
    int one[] = {1};
    ae_student_spec mixed = {.target = AE_ATTN_MLA, .layers = one, .n_layers = 1,
                             .kv_lora_rank = 24, .qk_rope_dim = 8, .seed = 3};
    // full pages of 2, latent of 24: 24 positions served, the full group's blocks up to 44
    // attached too (rows 24..43 recompute them without writing the shared full pages)
    cached_vs_uncached(&mixed, "MLA in layer 1 (full + latent pages)", 2);
}

// (3) A soak: waves of requests whose prompts start with one of 4 shared prefixes (or none),
// cut at random lengths, with random own tails and lengths, some cancelled while they run, in a
// pool small enough to evict. Every 5th completed greedy request is checked against generate.
static void test_soak(void **st) {
    (void)st;
    ae_model *m = ae_test_micro_model(NULL);
    int V = m->cfg.vocab_size;
    ae_engine *e = start_pages(m, 40, 8); // 4-5 sequences of up to 80 positions
    enum { WAVES = 20, PER = 16, MAXP = 72 };
    int32_t prefixes[4][MAXP];
    for (int k = 0; k < 4; k++) ae_test_fill_ids(prefixes[k], MAXP, V, 900 + k);
    ae_rng rng;
    ae_rng_seed(&rng, 2024);
    int done = 0, cancelled = 0, checked = 0;
    for (int w = 0; w < WAVES; w++) {
        ae_req *r[PER];
        int32_t prompt[PER][MAXP];
        int plen[PER], gen[PER];
        for (int k = 0; k < PER; k++) {
            int which = (int)(ae_rng_uniform(&rng) * 5); // 4: no shared prefix
            int shared = which < 4 ? 1 + (int)(ae_rng_uniform(&rng) * 48) : 0;
            plen[k] = shared + 1 + (int)(ae_rng_uniform(&rng) * (MAXP - 48 - 1));
            gen[k] = 1 + (int)(ae_rng_uniform(&rng) * 6);
            if (shared) memcpy(prompt[k], prefixes[which], sizeof(int32_t) * (size_t)shared);
            ae_test_fill_ids(prompt[k] + shared, plen[k] - shared, V, 5000 + (uint64_t)(w * PER + k));
            r[k] = ae_test_req(prompt[k], plen[k], gen[k], sampling(0), -1, 0);
            assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
        }
        for (int k = 0; k < PER; k++) { // a client hangs up now and then, at a random step
            if (ae_rng_uniform(&rng) >= 0.15) continue;
            ae_engine_lock(e);
            int steps = (int)(ae_rng_uniform(&rng) * 4);
            for (int i = 0; i < steps && r[k]->finish == AE_FINISH_NONE; i++)
                ae_engine_wait_locked(e, 0.05);
            ae_engine_cancel_locked(e, r[k]);
            ae_engine_unlock(e);
        }
        ae_test_wait_all(e, r, PER);
        for (int k = 0; k < PER; k++) {
            if (r[k]->finish == AE_FINISH_CANCELLED) {
                cancelled++;
                continue;
            }
            assert_int_equal(r[k]->finish, AE_FINISH_LENGTH);
            assert_int_equal(r[k]->n_out, gen[k]);
            if (done++ % 5 == 0) {
                ae_test_ids ref;
                ae_test_generate(m, prompt[k], plen[k], gen[k], sampling(0), &ref);
                assert_memory_equal(r[k]->out_ids, ref.ids, sizeof(int32_t) * (size_t)gen[k]);
                checked++;
            }
        }
        release_all(e, r, PER);
        if (ae_engine_check_pool(e) != AE_OK) fail_msg("wave %d: %s", w, ae_last_error());
    }
    ae_engine_stats s = ae_test_check_pool_idle(e);
    printf("soak: %d requests (%d completed, %d cancelled, %d checked against generate) in %d "
           "pages: %lld prompt tokens from the cache, %lld computed, %lld evictions, %d pages "
           "cached at the end; no page held, the pool's books straight\n", WAVES * PER, done,
           cancelled, checked, s.pages_total, (long long)s.prefix_hit_tokens,
           (long long)s.prefix_computed_tokens, (long long)s.prefix_evictions, s.pages_cached);
    assert_true(cancelled > 0 && done > WAVES * PER / 2);
    assert_true(s.prefix_hit_tokens > 0);
    assert_true(s.prefix_evictions > 0);
    assert_true(s.pages_cached > 0 && s.pages_cached <= s.pages_total);
    ae_engine_stop(e);
    ae_model_free(m);
}

// (4) Twelve distinct 40-token prefixes (5 blocks each) through a 24-page pool, one request at
// a time, twice over with different tails: the cache holds about four of them, so the second
// round's early prefixes were evicted and later ones partly hit; every request gives generate's
// tokens either way.
static void test_eviction(void **st) {
    (void)st;
    ae_model *m = ae_test_micro_model(NULL);
    int V = m->cfg.vocab_size;
    ae_engine *e = start_pages(m, 24, 8);
    enum { NPFX = 12, LEN = 40 };
    int ok = 0;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < NPFX; i++) {
            int k = round == 0 ? i : NPFX - 1 - i; // back in reverse: the last ones are cached
            int32_t prompt[LEN + 4];
            ae_test_fill_ids(prompt, LEN, V, 300 + k);
            ae_test_fill_ids(prompt + LEN, 4, V, 700 + (uint64_t)(round * NPFX + k));
            ae_req *r = ae_test_req(prompt, LEN + 4, 4, sampling(k), -1, 0);
            assert_int_equal(ae_engine_submit(e, r), AE_OK);
            ae_test_wait_all(e, &r, 1);
            ae_test_ids ref;
            ae_test_generate(m, prompt, LEN + 4, 4, sampling(k), &ref);
            assert_int_equal(r->n_out, ref.n);
            ok += memcmp(r->out_ids, ref.ids, sizeof(int32_t) * (size_t)ref.n) == 0;
            release_all(e, &r, 1);
        }
    ae_engine_stats s = ae_test_check_pool_idle(e);
    printf("eviction: %d distinct prefixes twice through %d pages: %d of %d requests give "
           "generate's tokens; %lld evictions, %lld prompt tokens from the cache\n", NPFX,
           s.pages_total, ok, 2 * NPFX, (long long)s.prefix_evictions,
           (long long)s.prefix_hit_tokens);
    assert_int_equal(ok, 2 * NPFX);
    assert_true(s.prefix_evictions >= NPFX * 5 - 24); // more blocks published than pages
    assert_true(s.prefix_hit_tokens >= 2 * LEN); // at least the first two of round two
    assert_true(s.pages_cached <= s.pages_total);
    ae_engine_stop(e);
    ae_model_free(m);
}

// (5) GateSWA: sliding layers, no prefix cache (the start line's reason); the same shared-prefix
// requests still give generate's tokens, nothing is served from or kept in a cache.
static void test_gateswa_off(void **st) {
    (void)st;
    ae_student_spec spec = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 8,
                            .gate = AE_GATE_ELEMENTWISE, .sinks = 1, .seed = 1};
    ae_model *m = ae_test_micro_model(&spec);
    ae_engine *e = start(m, 0, 2u << 20, 8);
    ae_engine_stats s;
    ae_engine_get_stats(e, &s);
    printf("GateSWA: prefix cache %s\n", s.prefix_cache);
    assert_non_null(strstr(s.prefix_cache, "off (the model has sliding-window layers"));
    prefix_set ps;
    make_prefix_set(&ps, m->cfg.vocab_size);
    ae_req *r[NP];
    run_set(e, &ps, r);
    for (int k = 0; k < NP; k++) {
        ae_test_ids ref;
        ae_test_generate(m, ps.prompt[k], ps.plen[k], ps.gen[k], sampling(k), &ref);
        assert_int_equal(r[k]->n_out, ref.n);
        assert_memory_equal(r[k]->out_ids, ref.ids, sizeof(int32_t) * (size_t)ref.n);
    }
    release_all(e, r, NP);
    s = ae_test_check_pool_idle(e);
    assert_int_equal(s.prefix_hit_tokens, 0);
    assert_int_equal(s.pages_cached, 0);
    ae_engine_stop(e);
    ae_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher),
        cmocka_unit_test(test_mla),
        cmocka_unit_test(test_soak),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_gateswa_off),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
