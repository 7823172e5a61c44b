// io/config: both config.json vintages, the real Qwen3-8B / Qwen3-30B-A3B values, parameter count
// against the real tensors, KV-cache bytes, and one negative case per rule (message names the
// file and the field).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "util/testutil.h"

static int64_t numel_sum_dir(const char *dir) {
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_dir(dir, &s), AE_OK);
    int64_t n = 0;
    for (size_t i = 0; i < ae_st_count(s); i++) n += ae_st_at(s, i)->numel;
    ae_st_close(s);
    return n;
}

static void load_ok(const char *dir, ae_config *c) {
    ae_status st = ae_config_load(dir, c);
    if (st != AE_OK) fail_msg("%s: %s", dir, ae_last_error());
}

typedef struct {
    const char *dir;
    ae_arch arch;
    int vocab, hidden, inter, layers, heads, kv, head_dim;
    double theta;
    int tie, max_pos, bos, eos;
    int experts, topk, moe_inter, norm_topk, step, n_mlp_only;
    const char *moe_pattern; // per layer '1' = MoE, '0' = dense MLP
} expect;

static void check(const expect *e, const char *dir) {
    ae_config c;
    load_ok(dir, &c);
    assert_int_equal(c.arch, e->arch);
    assert_string_equal(c.architecture,
                        e->arch == AE_ARCH_QWEN3 ? "Qwen3ForCausalLM" : "Qwen3MoeForCausalLM");
    assert_int_equal(c.vocab_size, e->vocab);
    assert_int_equal(c.hidden_size, e->hidden);
    assert_int_equal(c.intermediate_size, e->inter);
    assert_int_equal(c.num_hidden_layers, e->layers);
    assert_int_equal(c.num_attention_heads, e->heads);
    assert_int_equal(c.num_key_value_heads, e->kv);
    assert_int_equal(c.head_dim, e->head_dim);
    assert_true(c.rope_theta == e->theta);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_true(c.initializer_range == 0.02);
    assert_int_equal(c.tie_word_embeddings, e->tie);
    assert_int_equal(c.max_position_embeddings, e->max_pos);
    assert_int_equal(c.bos_token_id, e->bos);
    assert_int_equal(c.eos_token_id, e->eos);
    assert_int_equal(c.num_experts, e->experts);
    assert_int_equal(c.num_experts_per_tok, e->topk);
    assert_int_equal(c.moe_intermediate_size, e->moe_inter);
    assert_int_equal(c.norm_topk_prob, e->norm_topk);
    assert_int_equal(c.decoder_sparse_step, e->step);
    assert_int_equal(c.n_mlp_only_layers, e->n_mlp_only);
    assert_int_equal(c.use_sliding_window, 0);
    assert_int_equal(c.sliding_window, 0);
    assert_non_null(c.layer_types);
    for (int l = 0; l < c.num_hidden_layers; l++) {
        assert_int_equal(c.layer_types[l], AE_LAYER_FULL);
        int want = e->moe_pattern ? e->moe_pattern[l] == '1' : 0;
        assert_int_equal(ae_config_layer_is_moe(&c, l), want);
    }
    ae_config_free(&c);
    assert_null(c.layer_types);
}

static const expect k_fixtures[] = {
    // old vintage: rope_theta at top level
    {"dense_gqa1", AE_ARCH_QWEN3, 320, 64, 128, 2, 4, 4, 16, 10000.0, 1, 512, 0, 1, 0, 0, 0, 0, 1,
     0, NULL},
    // no head_dim: transformers' default 128 (not hidden / heads = 32)
    {"dense_head_dim_default", AE_ARCH_QWEN3, 320, 64, 64, 1, 2, 1, 128, 1e6, 1, 512, 0, 1, 0, 0,
     0, 0, 1, 0, NULL},
    {"dense_gqa2_untied", AE_ARCH_QWEN3, 320, 64, 96, 3, 4, 2, 24, 1e6, 0, 512, 0, 1, 0, 0, 0, 0,
     1, 0, NULL},
    {"dense_gqa4", AE_ARCH_QWEN3, 320, 96, 160, 2, 8, 2, 16, 500000.0, 1, 512, 0, 1, 0, 0, 0, 0, 1,
     0, NULL},
    // old vintage: num_experts
    {"moe_norm_topk", AE_ARCH_QWEN3_MOE, 320, 64, 96, 3, 4, 2, 16, 1e6, 1, 512, 0, 1, 4, 2, 32, 1,
     1, 1, "101"},
    // transformers 5: num_local_experts
    {"moe_sparse_step2_untied", AE_ARCH_QWEN3_MOE, 320, 48, 80, 4, 4, 1, 20, 10000.0, 0, 512, 0, 1,
     6, 3, 24, 0, 2, 0, "0101"},
};

static void test_fixture_models(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof k_fixtures / sizeof *k_fixtures; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s", k_fixtures[i].dir);
        const char *dir = ae_test_src(rel);
        check(&k_fixtures[i], dir);
        ae_config c;
        load_ok(dir, &c);
        assert_int_equal(ae_config_param_count(&c), numel_sum_dir(dir));
        ae_config_free(&c);
    }
    ae_config c;
    load_ok(ae_test_src("tests/fixtures/models/moe_norm_topk"), &c);
    assert_int_equal(c.mlp_only_layers[0], 1);
    ae_config_free(&c);
}

static void test_teachers(void **state) {
    (void)state;
    const expect micro = {"qwen3-micro", AE_ARCH_QWEN3, 8192, 128, 384, 4, 4, 2, 32, 1e6, 1, 32768,
                          8189, 8189, 0, 0, 0, 0, 1, 0, NULL};
    const char *dir = ae_test_src("models/qwen3-micro");
    check(&micro, dir);
    ae_config c;
    load_ok(dir, &c);
    assert_int_equal(ae_config_param_count(&c), 1836416);
    assert_int_equal(numel_sum_dir(dir), 1836416);
    // 4 layers x 2 kv heads x 32 dims x (K+V) x 2 bytes = 1024 bytes/token
    assert_int_equal(ae_config_kv_bytes(&c, 1), 1024);
    assert_int_equal(ae_config_kv_bytes(&c, 512), 512 * 1024);
    ae_config_free(&c);

    const char *small = ae_test_shared("teachers/qwen3-small", "qwen3-small teacher config");
    if (small) {
        const expect e = {"qwen3-small", AE_ARCH_QWEN3, 8192, 384, 1152, 8, 6, 2, 64, 1e6, 1,
                          32768, 8189, 8189, 0, 0, 0, 0, 1, 0, NULL};
        check(&e, small);
        load_ok(small, &c);
        assert_int_equal(ae_config_param_count(&c), numel_sum_dir(small));
        assert_int_equal(ae_config_param_count(&c), 16915840); // index.json total_parameters
        ae_config_free(&c);
    }
    const char *moe = ae_test_shared("teachers/qwen3-moe", "qwen3-moe teacher config");
    if (moe) {
        const expect e = {"qwen3-moe", AE_ARCH_QWEN3_MOE, 8192, 256, 768, 6, 4, 2, 64, 1e6, 1,
                          32768, 8189, 8189, 8, 2, 256, 1, 1, 0, "111111"};
        check(&e, moe);
        load_ok(moe, &c);
        assert_int_equal(ae_config_param_count(&c), numel_sum_dir(moe));
        ae_config_free(&c);
    }
}

static void test_real_qwen3_configs(void **state) {
    (void)state;
    const expect q8 = {"qwen3-8b", AE_ARCH_QWEN3, 151936, 4096, 12288, 36, 32, 8, 128, 1e6, 0,
                       40960, 151643, 151645, 0, 0, 0, 0, 1, 0, NULL};
    const char *d8 = ae_test_src("tests/fixtures/configs/qwen3-8b");
    check(&q8, d8);
    ae_config c;
    load_ok(d8, &c);
    assert_int_equal(c.max_window_layers, 36);
    assert_int_equal(ae_config_kv_bytes(&c, 1), 147456); // 144 KiB per token
    assert_int_equal(ae_config_kv_bytes(&c, 4096), 147456LL * 4096);
    assert_int_equal(ae_config_kv_bytes(&c, 32768), 147456LL * 32768);   // 4.5 GiB
    assert_int_equal(ae_config_kv_bytes(&c, 131072), 147456LL * 131072); // 18 GiB
    assert_int_equal(ae_config_param_count(&c), 8190735360LL);          // "8.2B"
    ae_config_free(&c);

    const expect q30 = {"qwen3-30b-a3b", AE_ARCH_QWEN3_MOE, 151936, 2048, 6144, 48, 32, 4, 128,
                        1e6, 0, 40960, 151643, 151645, 128, 8, 768, 1, 1, 0,
                        "111111111111111111111111111111111111111111111111"};
    const char *d30 = ae_test_src("tests/fixtures/configs/qwen3-30b-a3b");
    check(&q30, d30);
    load_ok(d30, &c);
    assert_int_equal(ae_config_kv_bytes(&c, 1), 98304); // 96 KiB per token
    assert_int_equal(ae_config_kv_bytes(&c, 4096), 98304LL * 4096);
    assert_int_equal(ae_config_kv_bytes(&c, 32768), 98304LL * 32768);
    assert_int_equal(ae_config_kv_bytes(&c, 131072), 98304LL * 131072);
    assert_int_equal(ae_config_param_count(&c), 30532122624LL); // "30.5B"
    ae_config_free(&c);
}

// ---- JSON variations on a small valid config ----------------------------------------------------

static const char *k_base =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"vocab_size\":320,"
    "\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":4,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":16,\"hidden_act\":\"silu\","
    "\"rope_parameters\":{\"rope_theta\":1000000.0,\"rope_type\":\"default\"},"
    "\"attention_bias\":false,\"tie_word_embeddings\":true,\"sliding_window\":null,"
    "\"use_sliding_window\":false,\"max_window_layers\":28}";

// Parses k_base with key=value edits (value JSON text; NULL deletes the key).
static ae_status parse_edited(ae_config *c, const char *const *edits) {
    cJSON *root = cJSON_Parse(k_base);
    assert_non_null(root);
    for (int i = 0; edits && edits[i]; i += 2) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, edits[i]);
        if (edits[i + 1]) {
            cJSON *v = cJSON_Parse(edits[i + 1]);
            assert_non_null(v);
            cJSON_AddItemToObject(root, edits[i], v);
        }
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    ae_status st = ae_config_parse(text, "edited/config.json", c);
    free(text);
    return st;
}

static void expect_bad(ae_status want, const char *field, const char *const *edits) {
    ae_config c;
    ae_error_clear();
    ae_status st = parse_edited(&c, edits);
    const char *m = ae_last_error();
    if (st != want || !strstr(m, "edited/config.json") || !strstr(m, field))
        fail_msg("got %s \"%s\", want %s naming field %s", ae_status_name(st), m,
                 ae_status_name(want), field);
    char input[1024] = "a valid Qwen3 config.json with";
    for (int i = 0; edits && edits[i]; i += 2) {
        size_t n = strlen(input);
        if (edits[i + 1])
            snprintf(input + n, sizeof input - n, "%s `\"%s\": %s`", i ? "," : "", edits[i],
                     edits[i + 1]);
        else
            snprintf(input + n, sizeof input - n, "%s no `%s`", i ? "," : "", edits[i]);
    }
    ae_test_catalogue("config.json", input, m);
    assert_null(c.layer_types);
    assert_null(c.mlp_only_layers);
}

#define EDITS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_defaults_and_vintages(void **state) {
    (void)state;
    ae_config c;
    assert_int_equal(parse_edited(&c, NULL), AE_OK);
    assert_true(c.rope_theta == 1e6);
    ae_config_free(&c);
    // absent fields take transformers' Qwen3Config defaults
    assert_int_equal(parse_edited(&c, EDITS("rope_parameters", NULL, "tie_word_embeddings", NULL,
                                            "num_key_value_heads", NULL, "sliding_window", NULL,
                                            "max_window_layers", NULL, "head_dim", NULL)),
                     AE_OK);
    assert_true(c.rope_theta == 10000.0);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_int_equal(c.max_window_layers, 28);
    assert_int_equal(c.sliding_window, 0); // use_sliding_window false -> None
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.eos_token_id, -1);
    ae_config_free(&c);
    // old vintage rope_theta, rope_scaling null, head_dim null, eos list
    assert_int_equal(parse_edited(&c, EDITS("rope_parameters", NULL, "rope_theta", "5e5",
                                            "rope_scaling", "null", "head_dim", "null",
                                            "eos_token_id", "[7, 9]", "bos_token_id", "null")),
                     AE_OK);
    assert_true(c.rope_theta == 5e5);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.eos_token_id, 7);
    assert_int_equal(c.bos_token_id, -1);
    ae_config_free(&c);
    // rope_scaling {"type": "default"} is plain RoPE
    assert_int_equal(parse_edited(&c, EDITS("rope_scaling", "{\"type\":\"default\"}")), AE_OK);
    ae_config_free(&c);
    // MoE defaults (Qwen3MoeConfig): 128 experts, top-8, 768, norm_topk_prob false, step 1
    assert_int_equal(parse_edited(&c, EDITS("architectures", "[\"Qwen3MoeForCausalLM\"]",
                                            "model_type", "\"qwen3_moe\"")),
                     AE_OK);
    assert_int_equal(c.arch, AE_ARCH_QWEN3_MOE);
    assert_int_equal(c.num_experts, 128);
    assert_int_equal(c.num_experts_per_tok, 8);
    assert_int_equal(c.moe_intermediate_size, 768);
    assert_int_equal(c.norm_topk_prob, 0);
    assert_int_equal(c.decoder_sparse_step, 1);
    assert_int_equal(c.n_mlp_only_layers, 0);
    for (int l = 0; l < 4; l++) assert_true(ae_config_layer_is_moe(&c, l));
    ae_config_free(&c);
    // dense configs never have MoE layers, even with stray MoE fields
    assert_int_equal(parse_edited(&c, EDITS("num_experts", "8")), AE_OK);
    assert_int_equal(c.num_experts, 0);
    assert_false(ae_config_layer_is_moe(&c, 0));
    ae_config_free(&c);
}

static void test_sliding_window(void **state) {
    (void)state;
    ae_config c;
    const int64_t per_layer = 2 * 2 * 16 * 2; // K+V x kv heads x head_dim x bf16 = 128 bytes
    // derived like transformers: sliding iff use_sliding_window and layer >= max_window_layers
    assert_int_equal(parse_edited(&c, EDITS("use_sliding_window", "true", "sliding_window", "1024",
                                            "max_window_layers", "2")),
                     AE_OK);
    assert_int_equal(c.sliding_window, 1024);
    assert_int_equal(c.layer_types[0], AE_LAYER_FULL);
    assert_int_equal(c.layer_types[1], AE_LAYER_FULL);
    assert_int_equal(c.layer_types[2], AE_LAYER_SLIDING);
    assert_int_equal(c.layer_types[3], AE_LAYER_SLIDING);
    assert_int_equal(ae_config_kv_bytes(&c, 512), 4 * per_layer * 512);
    assert_int_equal(ae_config_kv_bytes(&c, 4096), per_layer * (2 * 4096 + 2 * 1024));
    assert_int_equal(ae_config_kv_bytes(&c, 131072), per_layer * (2 * 131072 + 2 * 1024));
    ae_config_free(&c);
    // sliding_window absent -> 4096 default
    assert_int_equal(parse_edited(&c, EDITS("use_sliding_window", "true", "sliding_window", NULL,
                                            "max_window_layers", "0")),
                     AE_OK);
    assert_int_equal(c.sliding_window, 4096);
    assert_int_equal(ae_config_kv_bytes(&c, 32768), 4 * per_layer * 4096);
    ae_config_free(&c);
    // use_sliding_window false: sliding_window is ignored (transformers sets it to None)
    assert_int_equal(parse_edited(&c, EDITS("sliding_window", "1024", "max_window_layers", "0")),
                     AE_OK);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(c.layer_types[3], AE_LAYER_FULL);
    ae_config_free(&c);
    // explicit layer_types win over max_window_layers
    assert_int_equal(parse_edited(&c, EDITS("use_sliding_window", "true", "sliding_window", "256",
                                            "layer_types",
                                            "[\"sliding_attention\",\"full_attention\","
                                            "\"sliding_attention\",\"full_attention\"]")),
                     AE_OK);
    assert_int_equal(c.layer_types[0], AE_LAYER_SLIDING);
    assert_int_equal(c.layer_types[1], AE_LAYER_FULL);
    assert_int_equal(ae_config_kv_bytes(&c, 1000), per_layer * (2 * 1000 + 2 * 256));
    assert_int_equal(ae_config_kv_bytes(&c, 100), per_layer * 4 * 100);
    ae_config_free(&c);
}

static void test_negative(void **state) {
    (void)state;
    expect_bad(AE_ERR_UNSUPPORTED, "architectures[0]",
               EDITS("architectures", "[\"LlamaForCausalLM\"]"));
    expect_bad(AE_ERR_FORMAT, "architectures", EDITS("architectures", "[]"));
    expect_bad(AE_ERR_FORMAT, "architectures", EDITS("architectures", NULL, "model_type", NULL));
    expect_bad(AE_ERR_FORMAT, "model_type", EDITS("model_type", "\"qwen2\""));
    expect_bad(AE_ERR_UNSUPPORTED, "rope_scaling.type",
               EDITS("rope_scaling", "{\"type\":\"yarn\",\"factor\":4.0}"));
    expect_bad(AE_ERR_UNSUPPORTED, "rope_scaling.rope_type",
               EDITS("rope_scaling", "{\"rope_type\":\"dynamic\",\"factor\":2.0}"));
    expect_bad(AE_ERR_UNSUPPORTED, "rope_parameters.rope_type",
               EDITS("rope_parameters", "{\"rope_theta\":10000.0,\"rope_type\":\"linear\"}"));
    expect_bad(AE_ERR_UNSUPPORTED, "partial_rotary_factor",
               EDITS("partial_rotary_factor", "0.5"));
    expect_bad(AE_ERR_FORMAT, "rope_parameters", EDITS("rope_parameters", "\"default\""));
    expect_bad(AE_ERR_UNSUPPORTED, "attention_bias", EDITS("attention_bias", "true"));
    expect_bad(AE_ERR_FORMAT, "attention_bias", EDITS("attention_bias", "\"no\""));
    expect_bad(AE_ERR_UNSUPPORTED, "hidden_act", EDITS("hidden_act", "\"gelu\""));
    expect_bad(AE_ERR_FORMAT, "hidden_size", EDITS("hidden_size", "\"64\""));
    expect_bad(AE_ERR_FORMAT, "hidden_size", EDITS("hidden_size", "64.5"));
    expect_bad(AE_ERR_FORMAT, "vocab_size", EDITS("vocab_size", "0"));
    expect_bad(AE_ERR_FORMAT, "head_dim", EDITS("head_dim", "-16"));
    expect_bad(AE_ERR_FORMAT, "rms_norm_eps", EDITS("rms_norm_eps", "[1e-6]"));
    expect_bad(AE_ERR_FORMAT, "tie_word_embeddings", EDITS("tie_word_embeddings", "1"));
    expect_bad(AE_ERR_FORMAT, "num_key_value_heads", EDITS("num_key_value_heads", "3"));
    expect_bad(AE_ERR_FORMAT, "head_dim", EDITS("head_dim", "null", "num_attention_heads", "3",
                                                "num_key_value_heads", "1"));
    expect_bad(AE_ERR_FORMAT, "layer_types",
               EDITS("layer_types", "[\"full_attention\",\"full_attention\"]"));
    expect_bad(AE_ERR_UNSUPPORTED, "layer_types[1]",
               EDITS("layer_types", "[\"full_attention\",\"linear_attention\",\"full_attention\","
                                    "\"full_attention\"]"));
    expect_bad(AE_ERR_FORMAT, "layer_types[0]",
               EDITS("layer_types", "[\"sliding_attention\",\"full_attention\",\"full_attention\","
                                    "\"full_attention\"]"));
    expect_bad(AE_ERR_FORMAT, "sliding_window",
               EDITS("use_sliding_window", "true", "sliding_window", "\"big\""));
    // MoE-specific
    const char *moe_arch = "[\"Qwen3MoeForCausalLM\"]";
    expect_bad(AE_ERR_FORMAT, "num_local_experts",
               EDITS("architectures", moe_arch, "model_type", NULL, "num_experts", "8",
                     "num_local_experts", "4"));
    expect_bad(AE_ERR_FORMAT, "num_experts_per_tok",
               EDITS("architectures", moe_arch, "model_type", NULL, "num_experts", "4",
                     "num_experts_per_tok", "8"));
    expect_bad(AE_ERR_FORMAT, "mlp_only_layers[1]",
               EDITS("architectures", moe_arch, "model_type", NULL, "mlp_only_layers", "[0, 4]"));
    expect_bad(AE_ERR_FORMAT, "mlp_only_layers",
               EDITS("architectures", moe_arch, "model_type", NULL, "mlp_only_layers", "3"));
    expect_bad(AE_ERR_FORMAT, "decoder_sparse_step",
               EDITS("architectures", moe_arch, "model_type", NULL, "decoder_sparse_step", "0"));
    expect_bad(AE_ERR_FORMAT, "norm_topk_prob",
               EDITS("architectures", moe_arch, "model_type", NULL, "norm_topk_prob", "\"yes\""));
    expect_bad(AE_ERR_UNSUPPORTED, "use_sliding_window",
               EDITS("architectures", moe_arch, "model_type", NULL, "use_sliding_window", "true",
                     "sliding_window", "512"));

    // malformed JSON / not an object / missing file
    ae_config c;
    assert_int_equal(ae_config_parse("{\"architectures\": [\"Qwen3ForCausalLM\"],\n  \"x\": }",
                                     "bad/config.json", &c),
                     AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "bad/config.json"));
    assert_non_null(strstr(ae_last_error(), "line 2"));
    assert_int_equal(ae_config_parse("[1]", "arr/config.json", &c), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "arr/config.json"));
    assert_int_equal(ae_config_load("/nonexistent-dir", &c), AE_ERR_IO);
    assert_non_null(strstr(ae_last_error(), "/nonexistent-dir/config.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_models),  cmocka_unit_test(test_teachers),
        cmocka_unit_test(test_real_qwen3_configs), cmocka_unit_test(test_defaults_and_vintages),
        cmocka_unit_test(test_sliding_window),  cmocka_unit_test(test_negative),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
