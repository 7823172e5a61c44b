// Helpers of the serving tests (test_serve_engine, test_serve_prefix, test_serve_random): token
// ids as a request or ae_generate gives them, ae_generate's reference run, engine requests.
#ifndef AE_TEST_SERVE_H
#define AE_TEST_SERVE_H

#include <stdint.h>

#include "infer/generate.h"
#include "model/student.h"
#include "serve/engine.h"

#define AE_TEST_IDS_CAP 256

// Up to AE_TEST_IDS_CAP token ids (more are dropped).
typedef struct {
    int32_t ids[AE_TEST_IDS_CAP];
    int n;
} ae_test_ids;

// The bundled qwen3-micro teacher on the cpu, made into the student of spec unless null.
ae_model *ae_test_micro_model(const ae_student_spec *spec);
// n random token ids in [0, V − 1) from seed.
void ae_test_fill_ids(int32_t *ids, int n, int V, uint64_t seed);

// ae_generate's token callback: appends id to the ae_test_ids ud; 0 (go on).
int ae_test_collect_id(void *ud, int32_t id);
// ae_generate's tokens for prompt (n ids), max_new new ones with sampling sp (one sequence,
// contiguous cache: the reference the engine must equal).
void ae_test_generate(const ae_model *m, const int32_t *prompt, int n, int max_new,
                      ae_sampler_params sp, ae_test_ids *out);
// A request for the engine (a copy of the prompt; ignore_eos): logprobs −1 for none, echo 0/1.
ae_req *ae_test_req(const int32_t *prompt, int n, int max_new, ae_sampler_params sp,
                    int logprobs, int echo);
// Waits until each of the n requests has finished.
void ae_test_wait_all(ae_engine *e, ae_req **r, int n);
// After every request is done: waits for the engine to drop its finished sequences, then asserts
// an idle pool (nothing running, no page held or promised, every page free or evictable, the
// pool's books straight: ae_engine_check_pool); returns the engine's stats.
ae_engine_stats ae_test_check_pool_idle(ae_engine *e);

#endif
