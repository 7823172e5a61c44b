// Students as models: convert (library and CLI), save -> load round trip, mixed students,
// incremental decode == full recompute through every attention kind, inspect's KV figures for
// the Qwen3-8B / 30B-A3B configs, and convert's bad-input handling.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "io/safetensors.h"
#include "infer/generate.h"
#include "model/save.h"
#include "model/student.h"
#include "util/testutil.h"

static const char *micro(void) { return ae_test_src("models/qwen3-micro"); }

static ae_model *load_or_fail(const char *dir) {
    ae_model *m = NULL;
    if (ae_model_load(dir, ae_backend_cpu(), &m) != AE_OK) fail_msg("%s", ae_last_error());
    return m;
}

static void greedy(const ae_model *m, const int32_t *prompt, int n, int new_tokens, int32_t *out) {
    ae_sampler s;
    ae_sampler_params p = {.greedy = 1};
    assert_int_equal(ae_sampler_init(&s, &p, m->cfg.vocab_size), AE_OK);
    ae_kv_cache c;
    assert_int_equal(ae_kv_cache_init(&c, m, n + new_tokens), AE_OK);
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    assert_int_equal(ae_model_forward(m, &c, prompt, n, ae_host_f32(logits), 0), AE_OK);
    for (int i = 0; i < new_tokens; i++) {
        out[i] = ae_sampler_next(&s, logits);
        assert_int_equal(ae_model_forward(m, &c, &out[i], 1, ae_host_f32(logits), 0), AE_OK);
    }
    free(logits);
    ae_kv_cache_free(&c);
    ae_sampler_free(&s);
}

// Full-sequence logits vs prefill of `split` tokens then one token at a time.
static float decode_vs_full(const ae_model *m, const int32_t *ids, int T, int split) {
    int V = m->cfg.vocab_size;
    float *a = malloc(sizeof(float) * (size_t)T * V), *b = malloc(sizeof(float) * (size_t)T * V);
    ae_kv_cache c;
    assert_int_equal(ae_kv_cache_init(&c, m, T), AE_OK);
    assert_int_equal(ae_model_forward(m, &c, ids, T, ae_host_f32(a), 1), AE_OK);
    ae_kv_cache_reset(&c);
    assert_int_equal(ae_model_forward(m, &c, ids, split, ae_host_f32(b), 1), AE_OK);
    for (int t = split; t < T; t++)
        assert_int_equal(ae_model_forward(m, &c, ids + t, 1, ae_host_f32(b + (size_t)t * V), 1),
                         AE_OK);
    float err = 0, scale = 0;
    for (size_t i = 0; i < (size_t)T * V; i++) {
        err = fmaxf(err, fabsf(a[i] - b[i]));
        scale = fmaxf(scale, fabsf(a[i]));
    }
    ae_kv_cache_free(&c);
    free(a);
    free(b);
    return err / scale;
}

static void fill_ids(int32_t *ids, int n, int V) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
}

static void test_gateswa_teacher_init_is_neutral(void **state) {
    (void)state;
    const char *dirs[2] = {micro(), ae_test_shared("teachers/qwen3-small", "qwen3-small GateSWA")};
    for (int k = 0; k < 2; k++) {
        if (!dirs[k]) continue;
        ae_model *t = load_or_fail(dirs[k]), *s = load_or_fail(dirs[k]);
        ae_student_spec spec = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 64,
                                .gate = AE_GATE_ELEMENTWISE, .init_teacher = 1};
        ae_init_report rep;
        assert_int_equal(ae_student_make(s, &spec, &rep), AE_OK);
        assert_int_equal(rep.n_layers, s->cfg.num_hidden_layers);
        int32_t prompt[16], gt[40], gs[40];
        fill_ids(prompt, 16, s->cfg.vocab_size);
        greedy(t, prompt, 16, 40, gt); // 56 tokens < window 64
        greedy(s, prompt, 16, 40, gs);
        assert_memory_equal(gt, gs, sizeof gt);
        printf("%s: GateSWA teacher-init student generates the teacher's 40 greedy tokens\n", dirs[k]);
        ae_model_free(t);
        ae_model_free(s);
    }
}

static void test_decode_equals_full_all_kinds(void **state) {
    (void)state;
    ae_student_spec specs[] = {
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 8, .gate = AE_GATE_ELEMENTWISE, .seed = 1},
        {.target = AE_ATTN_GATESWA, .full_every = 3, .window = 5, .gate = AE_GATE_HEAD, .sinks = 1, .seed = 2},
        {.target = AE_ATTN_MLA, .kv_lora_rank = 24, .qk_rope_dim = 8, .seed = 3},
        {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .q_lora_rank = 48, .qk_rope_dim = 16, .seed = 4},
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        ae_model *m = load_or_fail(micro());
        ae_init_report rep;
        assert_int_equal(ae_student_make(m, &specs[i], &rep), AE_OK);
        int32_t ids[40];
        fill_ids(ids, 40, m->cfg.vocab_size);
        float rel = decode_vs_full(m, ids, 40, 11);
        printf("student %zu (%s): incremental decode vs full recompute, max rel diff %.2g\n", i,
               ae_attn_kind_name(m->cfg.target), rel);
        assert_true(rel < 1e-5f);
        ae_model_free(m);
    }
}

static void test_save_load_roundtrip_mixed(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *out = ae_path_join(dir, "student");
    ae_student_spec specs[] = {
        {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8, .layers = (int[]){1, 3}, .n_layers = 2},
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 6, .gate = AE_GATE_HEAD, .sinks = 1},
    };
    for (size_t i = 0; i < 2; i++) {
        ae_model *m = load_or_fail(micro());
        ae_init_report rep;
        assert_int_equal(ae_student_make(m, &specs[i], &rep), AE_OK);
        ae_save_opts so = {.src_dir = micro(), .force = 1};
        assert_int_equal(ae_model_save(m, out, &so), AE_OK);
        ae_model *r = load_or_fail(out);
        assert_int_equal(r->cfg.target, m->cfg.target);
        for (int l = 0; l < 4; l++) assert_int_equal(r->layers[l].kind, m->layers[l].kind);
        assert_int_equal(r->n_params, m->n_params);
        assert_int_equal(r->n_params, ae_config_param_count(&r->cfg));
        int V = m->cfg.vocab_size, T = 12;
        int32_t ids[12];
        fill_ids(ids, T, V);
        float *a = malloc(sizeof(float) * T * V), *b = malloc(sizeof(float) * T * V);
        ae_kv_cache c1, c2;
        assert_int_equal(ae_kv_cache_init(&c1, m, T), AE_OK);
        assert_int_equal(ae_kv_cache_init(&c2, r, T), AE_OK);
        assert_int_equal(ae_model_forward(m, &c1, ids, T, ae_host_f32(a), 1), AE_OK);
        assert_int_equal(ae_model_forward(r, &c2, ids, T, ae_host_f32(b), 1), AE_OK);
        assert_memory_equal(a, b, sizeof(float) * T * V); // F32 attention + exact bf16 rest
        ae_kv_cache_free(&c1);
        ae_kv_cache_free(&c2);
        free(a);
        free(b);
        ae_model_free(r);
        ae_model_free(m);
        if (i == 0) { // mixed: layer 0 kept the teacher's attention, byte for byte and dtype
            ae_st_set *st_s, *st_t;
            assert_int_equal(ae_st_open_dir(out, &st_s), AE_OK);
            assert_int_equal(ae_st_open_dir(micro(), &st_t), AE_OK);
            const ae_st_tensor *a0 = ae_st_find(st_s, "model.layers.0.self_attn.q_proj.weight");
            const ae_st_tensor *t0 = ae_st_find(st_t, "model.layers.0.self_attn.q_proj.weight");
            assert_non_null(a0);
            assert_int_equal(a0->dtype, t0->dtype);
            assert_int_equal(a0->nbytes, t0->nbytes);
            assert_memory_equal(a0->data, t0->data, t0->nbytes);
            assert_non_null(ae_st_find(st_s, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"));
            assert_null(ae_st_find(st_s, "model.layers.1.self_attn.k_proj.weight"));
            ae_st_close(st_s);
            ae_st_close(st_t);
        }
    }
    ae_test_rmtree(dir);
    free(out);
    free(dir);
}

// A student sharing the teacher's tensors computes what a separately loaded one does, owns only
// its new modules (ASan checks the frees), and leaves the teacher untouched.
static void test_shared_student(void **state) {
    (void)state;
    ae_student_spec specs[] = {
        {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8, .layers = (int[]){0, 2}, .n_layers = 2, .seed = 5},
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 6, .gate = AE_GATE_HEAD, .seed = 6},
    };
    for (size_t i = 0; i < 2; i++) {
        ae_model *t = load_or_fail(micro()), *own = load_or_fail(micro()), *sh = NULL;
        assert_int_equal(ae_model_share(t, &sh), AE_OK);
        ae_init_report r1, r2;
        assert_int_equal(ae_student_make(own, &specs[i], &r1), AE_OK);
        assert_int_equal(ae_student_make(sh, &specs[i], &r2), AE_OK);
        assert_ptr_equal(sh->layers[1].w_up.data, t->layers[1].w_up.data);
        assert_int_equal(t->cfg.target, AE_ATTN_GQA); // the base keeps its own config
        int32_t ids[20];
        fill_ids(ids, 20, t->cfg.vocab_size);
        int V = t->cfg.vocab_size;
        float *a = malloc(sizeof(float) * 20 * V), *b = malloc(sizeof(float) * 20 * V);
        ae_kv_cache c1, c2;
        assert_int_equal(ae_kv_cache_init(&c1, own, 20), AE_OK);
        assert_int_equal(ae_kv_cache_init(&c2, sh, 20), AE_OK);
        assert_int_equal(ae_model_forward(own, &c1, ids, 20, ae_host_f32(a), 1), AE_OK);
        assert_int_equal(ae_model_forward(sh, &c2, ids, 20, ae_host_f32(b), 1), AE_OK);
        assert_memory_equal(a, b, sizeof(float) * 20 * V);
        ae_kv_cache_free(&c1);
        ae_kv_cache_free(&c2);
        free(a);
        free(b);
        ae_model_free(sh);
        ae_model_free(own);
        // the teacher still runs after its sharer is gone
        assert_true(decode_vs_full(t, ids, 20, 7) < 1e-5f);
        ae_model_free(t);
    }
}

static long long json_int(const char *json, const char *key) {
    const char *p = strstr(json, key);
    assert_non_null(p);
    return atoll(p + strlen(key) + 1);
}

static double json_num(const char *json, const char *key) {
    const char *p = strstr(json, key);
    assert_non_null(p);
    return atof(p + strlen(key) + 1);
}

static void test_inspect_kv_figures(void **state) {
    (void)state;
    struct {
        const char *dir;
        long long per_token;
        const char *ctx;
        double pct;
    } cases[] = {
        {"tests/fixtures/configs/qwen3-8b-mla", 41472, "\"4096\"", -71.875},
        {"tests/fixtures/configs/qwen3-8b-gateswa", 0, "\"32768\"", -80.729},
        {"tests/fixtures/configs/qwen3-30b-a3b-mla", 55296, "\"4096\"", -43.75},
    };
    for (size_t i = 0; i < 3; i++) {
        char *out, *err;
        const char *args[] = {"inspect", ae_test_src(cases[i].dir), "--json", NULL};
        assert_int_equal(ae_test_run_cli(args, NULL, &out, &err), 0);
        if (cases[i].per_token) assert_int_equal(json_int(out, "\"kv_bytes_per_token\""), cases[i].per_token);
        const char *pct = strstr(out, "\"kv_change_vs_full_gqa_pct\"");
        assert_non_null(pct);
        double v = json_num(pct, cases[i].ctx);
        printf("%s: %s KV change %.2f%%\n", cases[i].dir, cases[i].ctx, v);
        assert_true(fabs(v - cases[i].pct) < 0.01);
        free(out);
        free(err);
    }
}

static int run(const char *const *args, char **err) {
    char *out;
    int rc = ae_test_run_cli(args, NULL, &out, err);
    free(out);
    return rc;
}

static void test_cli_convert_and_generate(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *out = ae_path_join(dir, "gswa");
    char *err;
    const char *conv[] = {"convert", "--teacher", micro(), "--target", "gateswa", "--full-every", "2",
                          "--window", "256", "--init", "teacher", "--out", out, NULL};
    assert_int_equal(run(conv, &err), 0);
    free(err);
    char *t_out, *s_out;
    const char *gt[] = {"generate", "--model", micro(), "--prompt", "The old man said", "--greedy",
                        "--max-new-tokens", "24", "--print-ids", NULL};
    const char *gs[] = {"generate", "--model", out, "--prompt", "The old man said", "--greedy",
                        "--max-new-tokens", "24", "--print-ids", NULL};
    assert_int_equal(ae_test_run_cli(gt, NULL, &t_out, NULL), 0);
    assert_int_equal(ae_test_run_cli(gs, NULL, &s_out, NULL), 0);
    assert_string_equal(t_out, s_out);
    char *conv_json = ae_path_join(out, "conversion.json");
    assert_true(ae_path_exists(conv_json));
    free(conv_json);
    // existing output folder: refused without --force, nothing changed
    assert_int_equal(run(conv, &err), 1);
    assert_non_null(strstr(err, "already exists"));
    free(err);
    // MLA with random init, then ppl runs on it
    char *mla = ae_path_join(dir, "mla");
    const char *cm[] = {"convert", "--teacher", micro(), "--target", "mla", "--kv-lora-rank", "32",
                        "--qk-rope-dim", "8", "--out", mla, NULL};
    assert_int_equal(run(cm, &err), 0);
    free(err);
    const char *ppl[] = {"eval", "ppl", "--model", mla, "--file", ae_test_src("data/sample.txt"),
                         "--ctx", "64", "--json", NULL};
    char *pout;
    assert_int_equal(ae_test_run_cli(ppl, NULL, &pout, NULL), 0);
    assert_non_null(strstr(pout, "\"ppl\""));
    free(pout);
    free(t_out);
    free(s_out);
    free(mla);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static void expect_convert_fails(const char *const *extra, const char *needle) {
    char *dir = ae_test_tmpdir();
    char *out = ae_path_join(dir, "s");
    const char *args[32] = {"convert", "--teacher", micro(), "--out", out};
    int n = 5;
    for (int i = 0; extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    char *o, *err;
    int rc = ae_test_run_cli(args, NULL, &o, &err);
    if (rc == 0 || rc >= 128 || !strstr(err, needle))
        fail_msg("convert %s: rc %d, stderr: %s", extra[0], rc, err);
    assert_string_equal(o, "");
    assert_int_equal(ae_test_count_entries(dir), 0); // nothing half-written, no temp folder left
    free(o);
    free(err);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_convert_bad_input(void **state) {
    (void)state;
    expect_convert_fails((const char *[]){"--target", "mla", "--kv-lora-rank", "4096", NULL}, "--kv-lora-rank");
    expect_convert_fails((const char *[]){"--target", "mla", "--qk-rope-dim", "7", NULL}, "--qk-rope-dim");
    expect_convert_fails((const char *[]){"--target", "mla", "--q-lora-rank", "999", NULL}, "--q-lora-rank");
    expect_convert_fails((const char *[]){"--target", "mla", "--init", "teacher", "--qk-rope-dim", "12", NULL},
                         "--qk-rope-dim");
    expect_convert_fails((const char *[]){"--target", "gateswa", "--window", "0", NULL}, "--window");
    expect_convert_fails((const char *[]){"--target", "gateswa", "--window", "-3", NULL}, "--window");
    expect_convert_fails((const char *[]){"--target", "gateswa", "--full-layers", "0,7", NULL}, "--full-layers");
    expect_convert_fails((const char *[]){"--target", "gateswa", "--layers", "1,1", NULL}, "--layers");
    expect_convert_fails((const char *[]){"--target", "gqa", NULL}, "--target");
    expect_convert_fails((const char *[]){"--target", "gateswa", "--gate", "sometimes", NULL}, "--gate");
    expect_convert_fails((const char *[]){"--target", "mla", "--init", "svd", NULL}, "--init");
    expect_convert_fails((const char *[]){"--target", "gateswa", "--init", "transmla", NULL}, "--init transmla");
    expect_convert_fails((const char *[]){"--target", "mla", "--init", "mha2mla", "--qk-rope-dim", "12", NULL},
                         "--init mha2mla: --qk-rope-dim");
}

static void test_student_config_missing_fields(void **state) {
    (void)state;
    ae_config c;
    const char *base = "{\"architectures\":[\"Qwen3ForCausalLM\"],\"hidden_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                       "\"head_dim\":16,\"intermediate_size\":64,\"vocab_size\":32,";
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\"attention_target\":\"mla\",\"kv_lora_rank\":8}", base);
    assert_int_equal(ae_config_parse(buf, "s/config.json", &c), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "qk_nope_head_dim"));
    snprintf(buf, sizeof buf, "%s\"attention_target\":\"gateswa\"}", base);
    assert_int_equal(ae_config_parse(buf, "s/config.json", &c), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "attn_output_gate"));
    snprintf(buf, sizeof buf, "%s\"attention_target\":\"mamba\"}", base);
    assert_int_equal(ae_config_parse(buf, "s/config.json", &c), AE_ERR_UNSUPPORTED);
    snprintf(buf, sizeof buf,
             "%s\"attention_target\":\"gateswa\",\"attn_output_gate\":\"head\","
             "\"attention_replaced_layers\":[0,5]}", base);
    assert_int_equal(ae_config_parse(buf, "s/config.json", &c), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "attention_replaced_layers"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gateswa_teacher_init_is_neutral),
        cmocka_unit_test(test_decode_equals_full_all_kinds),
        cmocka_unit_test(test_save_load_roundtrip_mixed),
        cmocka_unit_test(test_shared_student),
        cmocka_unit_test(test_inspect_kv_figures),
        cmocka_unit_test(test_cli_convert_and_generate),
        cmocka_unit_test(test_convert_bad_input),
        cmocka_unit_test(test_student_config_missing_fields),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
