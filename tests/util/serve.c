#include "util/serve.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "util/testutil.h"

ae_model *ae_test_micro_model(const ae_student_spec *spec) {
    ae_model *m = NULL;
    assert_int_equal(ae_model_load(ae_test_src("models/qwen3-micro"), ae_backend_cpu(), &m), AE_OK);
    if (spec) {
        ae_init_report rep;
        assert_int_equal(ae_student_make(m, spec, &rep), AE_OK);
    }
    return m;
}

void ae_test_fill_ids(int32_t *ids, int n, int V, uint64_t seed) {
    ae_rng r;
    ae_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(ae_rng_uniform(&r) * (V - 1));
}

int ae_test_collect_id(void *ud, int32_t id) {
    ae_test_ids *l = ud;
    if (l->n < AE_TEST_IDS_CAP) l->ids[l->n++] = id;
    return 0;
}

void ae_test_generate(const ae_model *m, const int32_t *prompt, int n, int max_new,
                      ae_sampler_params sp, ae_test_ids *out) {
    ae_sampler s;
    assert_int_equal(ae_sampler_init(&s, &sp, m->cfg.vocab_size), AE_OK);
    ae_gen_stats gs;
    out->n = 0;
    assert_int_equal(ae_generate(m, prompt, n, max_new, &s, -1, ae_test_collect_id, out, &gs),
                     AE_OK);
    ae_sampler_free(&s);
}

ae_req *ae_test_req(const int32_t *prompt, int n, int max_new, ae_sampler_params sp,
                    int logprobs, int echo) {
    int32_t *p = malloc(sizeof(int32_t) * (size_t)n);
    assert_non_null(p);
    memcpy(p, prompt, sizeof(int32_t) * (size_t)n);
    ae_req_params rp = {.max_tokens = max_new, .sp = sp, .logprobs = logprobs, .echo = echo,
                        .ignore_eos = 1};
    ae_req *r = ae_req_new(p, n, &rp);
    assert_non_null(r);
    return r;
}

void ae_test_wait_all(ae_engine *e, ae_req **r, int n) {
    ae_engine_lock(e);
    for (;;) {
        int done = 1;
        for (int i = 0; i < n; i++) done &= r[i]->finish != AE_FINISH_NONE;
        if (done) break;
        ae_engine_wait_locked(e, 0.5);
    }
    ae_engine_unlock(e);
}

ae_engine_stats ae_test_check_pool_idle(ae_engine *e) {
    ae_engine_stats st;
    for (int i = 0; i < 100; i++) { // the engine drops finished sequences at the end of a step
        ae_engine_get_stats(e, &st);
        if (st.running == 0 && st.waiting == 0) break;
    }
    assert_int_equal(st.running, 0);
    assert_int_equal(st.pages_held, 0);
    assert_int_equal(st.pages_free, st.pages_total);
    assert_int_equal(st.pages_promised, 0);
    if (ae_engine_check_pool(e) != AE_OK) fail_msg("%s", ae_last_error());
    return st;
}
