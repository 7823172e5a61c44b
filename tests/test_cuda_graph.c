// CUDA graphs of the decode step (backend/cuda_graph.cu, ae_model_decode_step): the same model
// and prompt decoded op by op (cache graphs 0) and as graphs (graphs 1) must give the same
// logits bit for bit at every step. Models: small random ones shaped from the committed configs
// (tests/fixtures/configs, shrunk to 4 layers of width 256 and a 512-token vocabulary): the
// Qwen3-8B teacher (GQA 4:2, head dim 128), its MLA 512+64 student (absorbed decode: the 576/512
// latent kernel), its GateSWA student (window 64, sliding and full layers alternating, output
// gate; the ring cache wraps every 64 steps) and a Qwen3-30B-A3B-shaped MoE (8 experts, top 2).
// A 40-token prompt and 280 decode steps cross the boundaries where a step's graph changes
// shape: the split-KV threshold of the decode kernels (the combine kernel appears: a new
// executable graph), the growing number of splits (kernel arguments only: updated graphs), the
// ring wrap-arounds. The graph statistics must show the steps recorded (all but the first),
// updates and no failure.
// Fallback: a recording made to fail (ae_cuda_graph_fail_next: a call the capture refuses, in the
// first segment or after the first segment has run) prints one line on stderr, the step runs op
// by op with the same logits, and the later steps do too.
// Needs a CUDA build and a GPU (exit 77 = skipped otherwise; a failure with AE_REQUIRE_GPU=1).
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/file.h"
#include "model/model.h"
#include "util/testutil.h"

#define PROMPT 40
#define STEPS 280

static const ae_backend *g_gpu;
static char *g_tmp;

// tests/fixtures/configs/NAME shrunk (see the top) into g_tmp/NAME; returns that folder.
static char *small_config(const char *name) {
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/configs/%s/config.json", name);
    char *text = NULL;
    size_t len = 0;
    if (ae_file_read_all(ae_test_src(rel), &text, &len) != AE_OK) fail_msg("%s", ae_last_error());
    cJSON *c = cJSON_Parse(text);
    free(text);
    assert_non_null(c);
    const struct { const char *key; int value; } dims[] = {
        {"hidden_size", 256}, {"intermediate_size", 512}, {"num_hidden_layers", 4},
        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 512},
        {"num_experts", 8}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 128},
        {"sliding_window", 64}, {"max_window_layers", 4}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (cJSON_GetObjectItem(c, dims[i].key) && (strcmp(dims[i].key, "sliding_window") != 0 ||
                                                    cJSON_IsNumber(cJSON_GetObjectItem(c, dims[i].key))))
            cJSON_ReplaceItemInObject(c, dims[i].key, cJSON_CreateNumber(dims[i].value));
    if (cJSON_GetObjectItem(c, "attention_replaced_layers")) {
        const int all[4] = {0, 1, 2, 3};
        cJSON_ReplaceItemInObject(c, "attention_replaced_layers", cJSON_CreateIntArray(all, 4));
    }
    if (cJSON_GetObjectItem(c, "layer_types")) { // GateSWA: sliding and full alternating
        const char *types[4] = {"sliding_attention", "full_attention", "sliding_attention",
                                "full_attention"};
        cJSON_ReplaceItemInObject(c, "layer_types", cJSON_CreateStringArray(types, 4));
    }
    char *json = cJSON_Print(c);
    cJSON_Delete(c);
    assert_non_null(json);
    char *dir = ae_path_join(g_tmp, name);
    assert_non_null(dir);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    char *path = ae_path_join(dir, "config.json");
    assert_int_equal(ae_test_write_file(path, json, strlen(json)), 0);
    free(path);
    free(json);
    return dir;
}

// The logits (V) of the last forward or step, downloaded.
static void logits_of(ae_ptr d, float *out, int V) {
    if (g_gpu->download(g_gpu, out, AE_DT_F32, d, (size_t)V) != AE_OK)
        fail_msg("download: %s", ae_last_error());
}

typedef struct {
    ae_kv_cache c;
    ae_ptr logits; // (V) F32
    float *host;   // (V)
} seq;

static void seq_init(seq *s, const ae_model *m, int graphs, const int32_t *prompt) {
    int V = m->cfg.vocab_size;
    if (ae_kv_cache_init(&s->c, m, PROMPT + STEPS + 1) != AE_OK) fail_msg("%s", ae_last_error());
    s->c.graphs = graphs;
    s->logits = g_gpu->alloc(g_gpu, (size_t)V, AE_DT_F32);
    s->host = malloc(sizeof(float) * (size_t)V);
    assert_non_null(s->logits.data);
    assert_non_null(s->host);
    if (ae_model_forward(m, &s->c, prompt, PROMPT, s->logits, 0) != AE_OK)
        fail_msg("prefill: %s", ae_last_error());
}

static void seq_step(seq *s, const ae_model *m, int32_t id) {
    if (ae_model_decode_step(m, &s->c, id, s->logits) != AE_OK)
        fail_msg("decode step at %d: %s", s->c.n, ae_last_error());
    logits_of(s->logits, s->host, m->cfg.vocab_size);
}

static void seq_free(seq *s) {
    ae_kv_cache_free(&s->c);
    g_gpu->free(g_gpu, s->logits);
    free(s->host);
}

static ae_graph_stats stats_of(const seq *s) {
    ae_graph_stats gs;
    memset(&gs, 0, sizeof gs);
    assert_non_null(s->c.graph);
    g_gpu->graph_stats(g_gpu, s->c.graph, &gs);
    return gs;
}

// Steps of the prompt-forced ids: the same inputs for both sequences, whatever they compute.
static int32_t id_at(int i, int V) { return (int32_t)((i * 7919u + 11u) % (unsigned)V); }

// STEPS decode steps op by op and as graphs: logits equal bit for bit at every step.
static void check_config(const char *name, int expect_new_topology) {
    char *dir = small_config(name);
    ae_model *m = NULL;
    if (ae_model_random(dir, g_gpu, 5, &m) != AE_OK) fail_msg("%s: %s", name, ae_last_error());
    int V = m->cfg.vocab_size;
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = id_at(1000 + i, V);
    seq plain, graph;
    seq_init(&plain, m, 0, prompt);
    seq_init(&graph, m, 1, prompt);
    int differ = 0, first_differ = -1;
    for (int i = 0; i < STEPS; i++) {
        seq_step(&plain, m, id_at(i, V));
        seq_step(&graph, m, id_at(i, V));
        if (memcmp(plain.host, graph.host, sizeof(float) * (size_t)V) != 0) {
            if (first_differ < 0) first_differ = PROMPT + i;
            differ++;
        }
    }
    ae_graph_stats gs = stats_of(&graph);
    long per_step = gs.ran > 0 ? gs.segments / gs.ran : 0;
    printf("%-18s %d steps from position %d: %d differ (first at %d); graphs: %ld of %ld "
           "recorded, %ld segments (%ld per step), %ld updated, %ld instantiated, %ld retries, "
           "%ld failed\n", name, STEPS, PROMPT, differ, first_differ, gs.ran, gs.requests,
           gs.segments, per_step, gs.updated, gs.instantiated, gs.retries, gs.failed);
    fflush(stdout);
    assert_int_equal(differ, 0);
    assert_null(plain.c.graph); // graphs 0: no recording at all
    assert_int_equal(gs.requests, STEPS + gs.retries); // a retry asks again (workspace grew)
    assert_int_equal(gs.ran, STEPS - 1); // the first step runs unrecorded (one-time setup)
    assert_true(gs.retries >= 1);        // the first recording sized the workspace
    assert_int_equal(gs.failed, 0);
    assert_true(gs.updated > 0);
    assert_int_equal(gs.updated + gs.instantiated, gs.segments);
    // a step whose shape changed (split-KV on) needed new executable graphs after the first
    if (expect_new_topology) assert_true(gs.instantiated > per_step);
    seq_free(&plain);
    seq_free(&graph);
    ae_model_free(m);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_teacher(void **state) {
    (void)state;
    check_config("qwen3-8b", 0);
}

static void test_mla(void **state) {
    (void)state;
    // the latent decode kernel splits from 97 keys on: new executable graphs, unless the fused
    // decode (AE_MLA_FUSE, the default) runs, whose kernel E writes split partials at every length
    const char *fuse = getenv("AE_MLA_FUSE");
    check_config("qwen3-8b-mla", fuse && !strcmp(fuse, "0"));
}

static void test_gateswa(void **state) {
    (void)state;
    check_config("qwen3-8b-gateswa", 0);
}

static void test_moe(void **state) {
    (void)state;
    check_config("qwen3-30b-a3b", 0);
}

// One decode step of s with stderr going to a file; returns the lines it printed that name a
// failed graph recording.
static int failure_lines(seq *s, const ae_model *m, int32_t id) {
    char *path = ae_path_join(g_tmp, "stderr.txt");
    assert_non_null(path);
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    seq_step(s, m, id);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(ae_file_read_all(path, &text, &len), AE_OK);
    int n = 0;
    for (const char *p = text; (p = strstr(p, "CUDA graph recording failed")); p++) n++;
    printf("  stderr: %s", text);
    free(text);
    free(path);
    return n;
}

// A recording that fails in segment `segment` falls back to op-by-op launches: one line on
// stderr, the step's logits and every later step's equal to the op-by-op sequence's.
static void check_fallback(int segment) {
    char *dir = small_config("qwen3-8b-gateswa");
    ae_model *m = NULL;
    if (ae_model_random(dir, g_gpu, 9, &m) != AE_OK) fail_msg("%s", ae_last_error());
    int V = m->cfg.vocab_size;
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = id_at(2000 + i, V);
    seq plain, graph;
    seq_init(&plain, m, 0, prompt);
    seq_init(&graph, m, 1, prompt);
    const int before = 4, after = 30;
    for (int i = 0; i < before + 1 + after; i++) {
        seq_step(&plain, m, id_at(i, V));
        if (i == before) {
#ifdef AE_HAVE_CUDA // (a build without CUDA skips before this)
            ae_cuda_graph_fail_next(g_gpu, segment);
#endif
            assert_int_equal(failure_lines(&graph, m, id_at(i, V)), 1);
        } else {
            seq_step(&graph, m, id_at(i, V));
        }
        if (memcmp(plain.host, graph.host, sizeof(float) * (size_t)V) != 0)
            fail_msg("fallback in segment %d: step %d differs from the op-by-op run", segment, i);
    }
    ae_graph_stats gs = stats_of(&graph);
    printf("fallback in segment %d: %ld of %ld recorded before it, %ld failed; the %d steps "
           "after it op by op, all equal\n", segment, gs.ran, gs.requests, gs.failed, after);
    assert_int_equal(gs.failed, 1);
    assert_int_equal(gs.ran, before - 1);          // recorded until the failure, none after
    assert_int_equal(g_gpu->sync(g_gpu), AE_OK);   // the backend itself is not failed
    seq_free(&plain);
    seq_free(&graph);
    ae_model_free(m);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_fallback_first_segment(void **state) {
    (void)state;
    check_fallback(0);
}

static void test_fallback_after_a_segment_ran(void **state) {
    (void)state;
    check_fallback(1); // segment 0 (layer 0) ran from its graph; the step runs again op by op
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher),
        cmocka_unit_test(test_mla),
        cmocka_unit_test(test_gateswa),
        cmocka_unit_test(test_moe),
        cmocka_unit_test(test_fallback_first_segment),
        cmocka_unit_test(test_fallback_after_a_segment_ran),
    };
    unsetenv("AE_CUDA_GRAPHS"); // on (the default) whatever the caller's environment says
    unsetenv("AE_CUDA_GRAPH_SEGMENT");
    int rc = ae_test_open_gpu(&g_gpu, 1);
    if (rc) return rc;
    g_tmp = ae_test_tmpdir();
    if (!g_tmp) {
        printf("FAIL: cannot create a temporary folder\n");
        return 1;
    }
    printf("cuda backend: %s (%s)\n", g_gpu->name, g_gpu->device);
    fflush(stdout);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    ae_test_rmtree(g_tmp);
    free(g_tmp);
    ae_backend_close(g_gpu);
    return rc;
}
