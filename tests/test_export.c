// Student folder names and export (C side): convert's students carry attnedit's own
// architecture names (refused by stock transformers), old-style students still load, every
// config.json name combination is checked; `export --format hf` writes DeepSeek-V3 folders
// (MLA), DeepSeek-V2 folders (MLA students of Qwen3-MoE teachers; DeepSeek-V2 routing attnedit
// cannot compute is refused naming the field) and remote-code Qwen3 folders (GateSWA) that
// attnedit loads back bit-identically
// (f32), converts to bf16 exactly by round-to-nearest-even, shards by size with an index,
// refuses what it cannot export with a message naming why, and leaves nothing behind on
// failure (disk full included). tests/test_export_hf.sh runs the folders in transformers.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/file.h"
#include "export/export_internal.h"
#include "io/safetensors.h"
#include "model/save.h"
#include "model/student.h"
#include "model/tensors.h"
#include "util/testutil.h"

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *micro(void) { return ae_test_src("models/qwen3-micro"); }

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static ae_status export_to(const char *model, const char *out, ae_dtype dt, uint64_t shard) {
    ae_export_opts o = {.dtype = dt, .shard_size = shard, .force = 1};
    return ae_export_hf(model, out, &o, NULL);
}

static void export_ok(const char *model, const char *out, ae_dtype dt, uint64_t shard) {
    if (export_to(model, out, dt, shard) != AE_OK) fail_msg("export %s: %s", model, ae_last_error());
}

// ---- tensors of two models, compared by name and bits

typedef struct {
    int n;
    char *names[4096];
    const float *data[4096];
    int64_t numel[4096];
} tensor_list;

static ae_status collect(void *ud, const ae_model_tensor *t) {
    tensor_list *l = ud;
    assert_true(l->n < 4096);
    assert_int_equal(t->data.dtype, AE_DT_F32);
    l->names[l->n] = strdup(t->name);
    l->data[l->n] = t->data.data;
    l->numel[l->n] = ae_model_tensor_numel(t);
    l->n++;
    return AE_OK;
}

static void list_free(tensor_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l);
}

// Every tensor of a and b (lm_head written out when tied) equal bit for bit, same names and order.
static void assert_same_tensors(const ae_model *a, const ae_model *b) {
    tensor_list *la = calloc(1, sizeof *la), *lb = calloc(1, sizeof *lb);
    assert_int_equal(ae_export_foreach_tensor(a, 1, collect, la), AE_OK);
    assert_int_equal(ae_export_foreach_tensor(b, 1, collect, lb), AE_OK);
    assert_int_equal(la->n, lb->n);
    for (int i = 0; i < la->n; i++) {
        assert_string_equal(la->names[i], lb->names[i]);
        assert_int_equal(la->numel[i], lb->numel[i]);
        assert_memory_equal(la->data[i], lb->data[i], sizeof(float) * (size_t)la->numel[i]);
    }
    list_free(la);
    list_free(lb);
}

static void assert_same_logits(const ae_model *a, const ae_model *b) {
    int V = a->cfg.vocab_size, T = 40;
    int32_t ids[40];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    float *la = malloc(sizeof(float) * (size_t)T * V), *lb = malloc(sizeof(float) * (size_t)T * V);
    ae_kv_cache ca, cb;
    assert_int_equal(ae_kv_cache_init(&ca, a, T), AE_OK);
    assert_int_equal(ae_kv_cache_init(&cb, b, T), AE_OK);
    assert_int_equal(ae_model_forward(a, &ca, ids, T, ae_host_f32(la), 1), AE_OK);
    assert_int_equal(ae_model_forward(b, &cb, ids, T, ae_host_f32(lb), 1), AE_OK);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)T * V);
    ae_kv_cache_free(&ca);
    ae_kv_cache_free(&cb);
    free(la);
    free(lb);
}

// ---------------------------------------------------------------------------------------------
// 1. student folder names

static void test_student_folder_names(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8};
    ae_student_spec gs = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 8,
                          .gate = AE_GATE_ELEMENTWISE};
    const ae_student_spec *specs[] = {&mla, &gs};
    static const char *const stock[] = {"qwen3", "qwen3_moe", "deepseek_v3", "deepseek_v2",
                                        "llama", "mistral"};
    for (int k = 0; k < 2; k++) {
        char *s = ae_test_save_student(micro(), specs[k], dir, k ? "gs" : "mla");
        // plain JSON: attnedit's own names, no architecture transformers knows
        cJSON *o = ae_test_read_json(s, "config.json");
        assert_string_equal(jstr(o, "architectures"), "AttneditStudentForCausalLM");
        assert_string_equal(jstr(o, "model_type"), "attnedit_student");
        assert_string_equal(jstr(o, "attnedit_base_architecture"), "Qwen3ForCausalLM");
        for (size_t i = 0; i < sizeof stock / sizeof *stock; i++)
            assert_string_not_equal(jstr(o, "model_type"), stock[i]);
        assert_null(strstr(jstr(o, "architectures"), "Qwen"));
        cJSON_Delete(o);
        ae_config c;
        assert_int_equal(ae_config_load(s, &c), AE_OK);
        assert_int_equal(c.folder, AE_FOLDER_STUDENT);
        assert_int_equal(c.arch, AE_ARCH_QWEN3);
        assert_string_equal(c.base_architecture, "Qwen3ForCausalLM");
        assert_int_equal(c.target, k ? AE_ATTN_GATESWA : AE_ATTN_MLA);
        ae_config_free(&c);
        free(s);
    }
    // a teacher saved by attnedit keeps its Qwen3 names
    ae_model *t = ae_test_load_cpu(micro());
    char *tdir = ae_test_path_in(dir, "teacher");
    ae_save_opts so = {.src_dir = micro()};
    assert_int_equal(ae_model_save(t, tdir, &so), AE_OK);
    cJSON *o = ae_test_read_json(tdir, "config.json");
    assert_string_equal(jstr(o, "architectures"), "Qwen3ForCausalLM");
    assert_string_equal(jstr(o, "model_type"), "qwen3");
    assert_null(cJSON_GetObjectItemCaseSensitive(o, "attnedit_base_architecture"));
    cJSON_Delete(o);
    ae_model_free(t);
    free(tdir);
    ae_test_rmtree(dir);
    free(dir);
}

// A student written before the rename (Qwen3 names + attention_target) loads as before: MLA
// (q_lora_rank 0 and 24) and GateSWA (per-head gate, sinks; elementwise, mixed layers).
static void test_old_style_student_loads(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    const ae_student_spec specs[] = {
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 6, .gate = AE_GATE_HEAD, .sinks = 1, .seed = 3},
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 6, .gate = AE_GATE_ELEMENTWISE,
         .layers = (int[]){0, 1}, .n_layers = 2, .seed = 4},
        {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8, .seed = 5},
        {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .q_lora_rank = 24, .qk_rope_dim = 8, .seed = 6},
    };
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        char *s = ae_test_save_student(micro(), &specs[k], dir, "s");
        ae_model *now = ae_test_load_cpu(s);
        cJSON *o = ae_test_read_json(s, "config.json");
        cJSON *arch = cJSON_CreateArray();
        cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3ForCausalLM"));
        cJSON_ReplaceItemInObjectCaseSensitive(o, "architectures", arch);
        cJSON_ReplaceItemInObjectCaseSensitive(o, "model_type", cJSON_CreateString("qwen3"));
        cJSON_DeleteItemFromObjectCaseSensitive(o, "attnedit_base_architecture");
        ae_test_write_json(s, "config.json", o);
        cJSON_Delete(o);
        ae_model *old = ae_test_load_cpu(s);
        assert_int_equal(old->cfg.folder, AE_FOLDER_QWEN3);
        assert_int_equal(old->cfg.target, specs[k].target);
        assert_int_equal(old->cfg.q_lora_rank, now->cfg.q_lora_rank);
        for (int l = 0; l < now->cfg.num_hidden_layers; l++)
            assert_int_equal(old->cfg.layer_attn[l], now->cfg.layer_attn[l]);
        assert_same_tensors(now, old);
        assert_same_logits(now, old);
        ae_model_free(old);
        ae_model_free(now);
        free(s);
        ae_test_rmtree(dir);
        assert_int_equal(mkdir(dir, 0700), 0);
    }
    printf("old-style student folders (Qwen3 names): MLA q_lora_rank 0/24, GateSWA head+sinks, "
           "mixed elementwise: same config, tensors and logits as today's folders\n");
    // the committed config-only fixtures are old-style students too
    ae_config c;
    assert_int_equal(ae_config_load(ae_test_src("tests/fixtures/configs/qwen3-8b-mla"), &c), AE_OK);
    assert_int_equal(c.target, AE_ATTN_MLA);
    assert_string_equal(c.architecture, "Qwen3ForCausalLM");
    ae_config_free(&c);
    ae_test_rmtree(dir);
    free(dir);
}

// config.json names: every wrong combination is one message naming the field.
static void expect_config_error(const char *json_tail, const char *key1, const char *key2) {
    static const char base[] =
        "{\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
        "\"num_key_value_heads\":4,\"head_dim\":16,\"intermediate_size\":64,\"vocab_size\":32,"
        "\"max_position_embeddings\":128,";
    char buf[2048];
    snprintf(buf, sizeof buf, "%s%s}", base, json_tail);
    ae_config c;
    ae_status st = ae_config_parse(buf, "s/config.json", &c);
    if (st == AE_OK) {
        ae_config_free(&c);
        fail_msg("accepted: %s", json_tail);
    }
    const char *e = ae_last_error();
    if (!strstr(e, "s/config.json") || !strstr(e, key1) || (key2 && !strstr(e, key2)))
        fail_msg("message '%s' lacks '%s' / '%s'", e, key1, key2 ? key2 : "");
}

#define MLA_FIELDS "\"q_lora_rank\":null,\"kv_lora_rank\":8,\"qk_nope_head_dim\":8,\"qk_rope_head_dim\":8,\"v_head_dim\":16"
// A DeepSeek-V2 config but n_routed_experts and n_shared_experts (the tests add them).
#define V2_FIELDS                                                                                   \
    "\"architectures\":[\"DeepseekV2ForCausalLM\"],\"first_k_dense_replace\":1,"                     \
    "\"num_experts_per_tok\":2,\"moe_intermediate_size\":32," MLA_FIELDS

static void test_config_names(void **state) {
    (void)state;
    expect_config_error("\"architectures\":[\"AttneditStudentForCausalLM\"],\"model_type\":\"attnedit_student\","
                        "\"attnedit_base_architecture\":\"Qwen3ForCausalLM\"",
                        "attention_target", "required");
    expect_config_error("\"architectures\":[\"AttneditStudentForCausalLM\"],\"attention_target\":\"mla\"," MLA_FIELDS,
                        "attnedit_base_architecture", "required");
    expect_config_error("\"architectures\":[\"AttneditStudentForCausalLM\"],\"attention_target\":\"mla\","
                        "\"attnedit_base_architecture\":\"LlamaForCausalLM\"," MLA_FIELDS,
                        "attnedit_base_architecture", "LlamaForCausalLM");
    expect_config_error("\"architectures\":[\"AttneditStudentForCausalLM\"],\"model_type\":\"qwen3\","
                        "\"attention_target\":\"mla\",\"attnedit_base_architecture\":\"Qwen3ForCausalLM\"," MLA_FIELDS,
                        "model_type", "attnedit_student");
    expect_config_error("\"architectures\":[\"AttneditGateSWAForCausalLM\"],\"attention_target\":\"mla\"," MLA_FIELDS,
                        "attention_target", "AttneditGateSWAForCausalLM");
    // DeepSeek-V3: only all-dense configs with every field stated
    expect_config_error("\"architectures\":[\"DeepseekV3ForCausalLM\"],\"first_k_dense_replace\":1," MLA_FIELDS,
                        "first_k_dense_replace", "MoE");
    expect_config_error("\"architectures\":[\"DeepseekV3ForCausalLM\"],\"first_k_dense_replace\":2,"
                        "\"kv_lora_rank\":8,\"qk_nope_head_dim\":8,\"qk_rope_head_dim\":8,\"v_head_dim\":16",
                        "q_lora_rank", "required");
    expect_config_error("\"architectures\":[\"DeepseekV3ForCausalLM\"],\"first_k_dense_replace\":null," MLA_FIELDS,
                        "first_k_dense_replace", "required");
    expect_config_error("\"architectures\":[\"DeepseekV3ForCausalLM\"],\"model_type\":\"deepseek_v2\","
                        "\"first_k_dense_replace\":2," MLA_FIELDS, "model_type", "deepseek_v3");
    expect_config_error("\"architectures\":[\"DeepseekV3ForCausalLM\"],\"first_k_dense_replace\":2,"
                        "\"attention_target\":\"gateswa\"," MLA_FIELDS, "attention_target", NULL);
    expect_config_error("\"architectures\":[\"DeepseekV3ForCausalLM\"],\"first_k_dense_replace\":2,"
                        "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}," MLA_FIELDS, "rope_scaling", "yarn");
    expect_config_error("\"architectures\":[\"DeepseekV4ForCausalLM\"]", "architectures[0]",
                        "DeepseekV2ForCausalLM");
    // DeepSeek-V2 (MoE MLA students): only Qwen3-MoE's routing, every MoE size stated
    expect_config_error("\"architectures\":[\"DeepseekV2ForCausalLM\"],\"first_k_dense_replace\":1,"
                        "\"n_routed_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":32,"
                        MLA_FIELDS, "n_shared_experts", "required");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":1", "n_shared_experts",
                        "shared experts");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"scoring_func\":\"sigmoid\"",
                        "scoring_func", "sigmoid");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,"
                        "\"topk_method\":\"group_limited_greedy\"", "topk_method", "group");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"topk_method\":\"noaux_tc\"",
                        "topk_method", "noaux_tc");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"n_group\":2,\"topk_group\":1",
                        "topk_group", "group-limited");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"routed_scaling_factor\":2.5",
                        "routed_scaling_factor", "2.5");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"moe_layer_freq\":2",
                        "moe_layer_freq", "dense layers between");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,"
                        "\"auto_map\":{\"AutoModelForCausalLM\":\"modeling_deepseek.DeepseekV2ForCausalLM\"}",
                        "auto_map.AutoModelForCausalLM", "modeling_deepseek.DeepseekV2ForCausalLM");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":1,\"n_shared_experts\":0",
                        "num_experts_per_tok", "n_routed_experts");
    expect_config_error("\"architectures\":[\"DeepseekV2ForCausalLM\"],\"first_k_dense_replace\":-1,"
                        "\"num_experts_per_tok\":2,\"moe_intermediate_size\":32,\"n_routed_experts\":4,"
                        "\"n_shared_experts\":null," MLA_FIELDS,
                        "first_k_dense_replace", ">= 0");
    expect_config_error(V2_FIELDS ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"attention_target\":\"gateswa\"",
                        "attention_target", "DeepseekV2ForCausalLM");
    // accepted: the names attnedit writes, architectures absent (model_type decides)
    ae_config c;
    const char *ok[] = {
        "{\"model_type\":\"attnedit_student\",\"attention_target\":\"mla\","
        "\"attnedit_base_architecture\":\"Qwen3ForCausalLM\"," MLA_FIELDS ",\"num_hidden_layers\":2}",
        "{\"architectures\":[\"DeepseekV3ForCausalLM\"],\"vocab_size\":32,\"hidden_size\":64,"
        "\"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
        "\"max_position_embeddings\":128,\"first_k_dense_replace\":2," MLA_FIELDS "}",
        "{\"architectures\":[\"AttneditGateSWAForCausalLM\"],\"model_type\":\"attnedit_gateswa\","
        "\"num_hidden_layers\":2,\"attn_output_gate\":\"head\"}",
    };
    // DeepSeek-V2 as export writes it (and with the equivalent spellings: null shared experts,
    // n_group = topk_group, absent scoring/top-k method): one leading dense layer, then MoE
    static const char *const v2_ok[] = {
        "{\"vocab_size\":32,\"hidden_size\":64,\"intermediate_size\":64,\"num_hidden_layers\":2,"
        "\"num_attention_heads\":4,\"num_key_value_heads\":4,\"max_position_embeddings\":128," V2_FIELDS
        ",\"n_routed_experts\":4,\"n_shared_experts\":0,\"scoring_func\":\"softmax\","
        "\"topk_method\":\"greedy\",\"n_group\":1,\"topk_group\":1,\"routed_scaling_factor\":1.0,"
        "\"moe_layer_freq\":1,\"norm_topk_prob\":true,\"auto_map\":{\"AutoModelForCausalLM\":"
        "\"modeling_attnedit_deepseek_v2.AttneditDeepseekV2ForCausalLM\"}}",
        "{\"vocab_size\":32,\"hidden_size\":64,\"intermediate_size\":64,\"num_hidden_layers\":2,"
        "\"num_attention_heads\":4,\"max_position_embeddings\":128," V2_FIELDS
        ",\"n_routed_experts\":4,\"n_shared_experts\":null,\"n_group\":4,\"topk_group\":4}",
    };
    for (int i = 0; i < 2; i++) {
        if (ae_config_parse(v2_ok[i], "ok/config.json", &c) != AE_OK) fail_msg("%s", ae_last_error());
        assert_int_equal(c.folder, AE_FOLDER_DEEPSEEK_V2);
        assert_int_equal(c.arch, AE_ARCH_QWEN3_MOE);
        assert_string_equal(c.base_architecture, "Qwen3MoeForCausalLM");
        assert_int_equal(c.target, AE_ATTN_MLA);
        assert_int_equal(c.layer_attn[0], AE_ATTN_MLA);
        assert_int_equal(c.layer_attn[1], AE_ATTN_MLA);
        assert_int_equal(c.num_key_value_heads, 4);
        assert_int_equal(c.num_experts, 4);
        assert_int_equal(c.num_experts_per_tok, 2);
        assert_int_equal(c.moe_intermediate_size, 32);
        assert_int_equal(c.norm_topk_prob, i == 0);
        assert_false(ae_config_layer_is_moe(&c, 0));
        assert_true(ae_config_layer_is_moe(&c, 1));
        ae_config_free(&c);
    }
    // MLA expands K/V per head: a DeepSeek config with fewer KV heads is not one transformers runs
    char gqa[1024];
    snprintf(gqa, sizeof gqa, "{\"num_key_value_heads\":2,%s", ok[1] + 1);
    assert_int_equal(ae_config_parse(gqa, "s/config.json", &c), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "num_key_value_heads"));
    for (int i = 0; i < 3; i++) {
        if (ae_config_parse(ok[i], "ok/config.json", &c) != AE_OK) fail_msg("%s", ae_last_error());
        assert_int_equal(c.target, i == 2 ? AE_ATTN_GATESWA : AE_ATTN_MLA);
        assert_int_equal(c.layer_attn[0], c.target);
        assert_int_equal(c.layer_attn[1], c.target);
        assert_int_equal(c.arch, AE_ARCH_QWEN3);
        ae_config_free(&c);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. export round trips

static void check_deepseek_config(const char *out, const ae_config *s) {
    cJSON *o = ae_test_read_json(out, "config.json");
    assert_string_equal(jstr(o, "architectures"), "DeepseekV3ForCausalLM");
    assert_string_equal(jstr(o, "model_type"), "deepseek_v3");
    assert_int_equal((int)jnum(o, "first_k_dense_replace"), s->num_hidden_layers);
    assert_int_equal((int)jnum(o, "n_routed_experts"), 1);
    assert_int_equal((int)jnum(o, "num_key_value_heads"), s->num_attention_heads);
    assert_int_equal((int)jnum(o, "kv_lora_rank"), s->kv_lora_rank);
    assert_int_equal((int)jnum(o, "num_nextn_predict_layers"), 0);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "q_lora_rank");
    if (s->q_lora_rank) assert_int_equal((int)q->valuedouble, s->q_lora_rank);
    else assert_true(cJSON_IsNull(q));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "rope_interleave")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "tie_word_embeddings")));
    assert_null(cJSON_GetObjectItemCaseSensitive(o, "head_dim"));
    assert_null(cJSON_GetObjectItemCaseSensitive(o, "attention_target"));
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(o, "rope_parameters");
    assert_string_equal(jstr(rp, "rope_type"), "default");
    assert_true(jnum(rp, "rope_theta") == s->rope_theta && jnum(o, "rope_theta") == s->rope_theta);
    assert_string_equal(jstr(o, "dtype"), "float32");
    cJSON_Delete(o);
}

// The config.json fields the serving engines' DeepSeek loaders read, as they read them:
// vLLM's vllm/model_executor/models/deepseek_v2.py (commit 002d6073: DeepseekV2DecoderLayer,
// DeepseekV2MLAAttention, DeepseekV2MoE, DeepseekV2Model.load_weights, DeepseekV2ForCausalLM)
// and SGLang's python/sglang/srt/models/deepseek_v2.py (commit 00114aef: DeepseekV2MoE, MoEGate).
// A field read as config.X (no default) must be there with a usable value; one read with
// getattr(config, X, default) must be there too when the default would compute something else
// (n_group / topk_group default to None in transformers' config, where vLLM/SGLang do
// arithmetic). Kinds: 'i' integer >= 0, 'p' integer > 0, 'n' number, 'b' bool, 'q' integer or
// null, 's' the string `value`.
typedef struct {
    const char *key;
    char kind;
    const char *value;
    int moe_only; // read only when some layer is MoE (DeepseekV2MoE / MoEGate)
} engine_field;

static const engine_field k_engine_fields[] = {
    {"model_type", 's', NULL, 0},           // use_mha: == "deepseek" would be plain MHA
    {"hidden_size", 'p', NULL, 0},          {"vocab_size", 'p', NULL, 0},
    {"num_hidden_layers", 'p', NULL, 0},    {"num_attention_heads", 'p', NULL, 0},
    {"num_key_value_heads", 'p', NULL, 0},  {"intermediate_size", 'p', NULL, 0},
    {"max_position_embeddings", 'p', NULL, 0},
    {"rms_norm_eps", 'n', NULL, 0},         {"hidden_act", 's', "silu", 0}, // else ValueError
    {"q_lora_rank", 'q', NULL, 0},          // None: q_proj, else fused q_a_proj + kv_a_proj
    {"kv_lora_rank", 'p', NULL, 0},         {"qk_nope_head_dim", 'p', NULL, 0},
    {"qk_rope_head_dim", 'p', NULL, 0},     {"v_head_dim", 'p', NULL, 0},
    {"first_k_dense_replace", 'i', NULL, 0}, // layer l is MoE iff l >= it (and freq, experts)
    {"moe_layer_freq", 'p', NULL, 0},       // ... and l % moe_layer_freq == 0
    {"n_routed_experts", 'p', NULL, 0},     // "is not None" decides MoE; expert mapping size
    {"num_experts_per_tok", 'p', NULL, 0},  {"moe_intermediate_size", 'p', NULL, 0},
    {"norm_topk_prob", 'b', NULL, 0},       // FusedMoE(renormalize=...)
    {"routed_scaling_factor", 'n', NULL, 0}, // fp16 residual scaling; SGLang reads it bare
    {"n_group", 'p', NULL, 0},              {"topk_group", 'p', NULL, 0},
    {"num_nextn_predict_layers", 'i', NULL, 0}, // spec-decode layers skipped on loading
    {"scoring_func", 's', "softmax", 1},    {"topk_method", 's', "greedy", 1},
};

// Fields whose mere presence changes what vLLM builds: index_topk (DeepSeek-V3.2's sparse
// indexer), rswa_window, llama_4_scaling (query scaling), rope_scaling (YaRN through vLLM's
// rope patching), is_causal (false: encoder-only attention).
static const char *const k_engine_absent[] = {"index_topk", "rswa_window", "llama_4_scaling",
                                              "rope_scaling", "is_causal"};

// The parameters of vLLM's DeepseekV2ForCausalLM as checkpoint names (its load_weights maps
// gate_proj + up_proj to gate_up_proj, q_a_proj + kv_a_proj_with_mqa to fused_qkv_a_proj, the
// experts to its FusedMoE), layer and expert numbers as N. A checkpoint tensor outside this set
// is a KeyError in its loader (params_dict[name]); transformers would only warn.
static const char *const k_engine_tensors[] = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
    "model.layers.N.input_layernorm.weight", "model.layers.N.post_attention_layernorm.weight",
    "model.layers.N.self_attn.q_proj.weight", "model.layers.N.self_attn.q_a_proj.weight",
    "model.layers.N.self_attn.q_a_layernorm.weight", "model.layers.N.self_attn.q_b_proj.weight",
    "model.layers.N.self_attn.kv_a_proj_with_mqa.weight",
    "model.layers.N.self_attn.kv_a_layernorm.weight", "model.layers.N.self_attn.kv_b_proj.weight",
    "model.layers.N.self_attn.o_proj.weight", "model.layers.N.mlp.gate_proj.weight",
    "model.layers.N.mlp.up_proj.weight", "model.layers.N.mlp.down_proj.weight",
    "model.layers.N.mlp.gate.weight", "model.layers.N.mlp.experts.N.gate_proj.weight",
    "model.layers.N.mlp.experts.N.up_proj.weight", "model.layers.N.mlp.experts.N.down_proj.weight",
};

// name with every all-digit component replaced by N ("model.layers.3.x" -> "model.layers.N.x")
static void number_free(const char *name, char *buf, size_t n) {
    size_t o = 0;
    for (const char *p = name; *p && o + 2 < n;) {
        const char *q = p;
        while (*q >= '0' && *q <= '9') q++;
        if (q > p && (p == name || p[-1] == '.') && (*q == '.' || !*q)) buf[o++] = 'N', p = q;
        else buf[o++] = *p++;
    }
    buf[o] = '\0';
}

static void check_engine_fields(const char *out, int moe, ae_export_engine engine) {
    cJSON *o = ae_test_read_json(out, "config.json");
    for (size_t i = 0; i < sizeof k_engine_fields / sizeof *k_engine_fields; i++) {
        const engine_field *f = &k_engine_fields[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f->key);
        if (f->moe_only && !moe) continue;
        int isint = cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
        int ok = f->kind == 'i'   ? isint && v->valuedouble >= 0
                 : f->kind == 'p' ? isint && v->valuedouble > 0
                 : f->kind == 'n' ? cJSON_IsNumber(v)
                 : f->kind == 'b' ? cJSON_IsBool(v)
                 : f->kind == 'q' ? cJSON_IsNull(v) || (isint && v->valuedouble > 0)
                                  : cJSON_IsString(v) && (!f->value || !strcmp(v->valuestring, f->value));
        if (!ok) fail_msg("%s/config.json: field %s missing or not of kind '%c'%s%s", out, f->key,
                          f->kind, f->value ? " = " : "", f->value ? f->value : "");
    }
    for (size_t i = 0; i < sizeof k_engine_absent / sizeof *k_engine_absent; i++)
        if (cJSON_GetObjectItemCaseSensitive(o, k_engine_absent[i]))
            fail_msg("%s/config.json: field %s must be absent", out, k_engine_absent[i]);
    // RoPE: vLLM reads rope_parameters["rope_type"] (not "default": DeepSeek YaRN) and the
    // interleaved (non-NeoX) rotation is vLLM's and SGLang's fixed choice for DeepSeek
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(o, "rope_parameters");
    assert_string_equal(jstr(rp, "rope_type"), "default");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "rope_interleave")));
    assert_true(jnum(o, "routed_scaling_factor") == 1.0);
    assert_int_equal((int)jnum(o, "num_nextn_predict_layers"), 0);
    // n_shared_experts: vLLM builds a shared MLP of moe_intermediate_size * n unless it is null
    // (and then requires its weights); SGLang and transformers >= 5 need an integer
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(o, "n_shared_experts");
    if (moe && engine == AE_EXPORT_FOR_VLLM) assert_true(cJSON_IsNull(sh));
    else assert_true(cJSON_IsNumber(sh) && sh->valuedouble == (moe ? 0 : 1));
    // dense: no layer is MoE in either engine (first_k_dense_replace = every layer)
    if (!moe) assert_int_equal((int)jnum(o, "first_k_dense_replace"), (int)jnum(o, "num_hidden_layers"));
    cJSON_Delete(o);
    // the tensors those engines' module trees hold: nothing else (no q_norm / k_norm, no shared
    // expert, no e_score_correction_bias), the query path q_lora_rank says, an explicit lm_head
    ae_st_set *st;
    assert_int_equal(ae_st_open_dir(out, &st), AE_OK);
    int q_plain = 0, q_lora = 0;
    for (size_t i = 0; i < ae_st_count(st); i++) {
        const char *name = ae_st_at(st, i)->name;
        char nf[160];
        number_free(name, nf, sizeof nf);
        size_t k = 0, nk = sizeof k_engine_tensors / sizeof *k_engine_tensors;
        while (k < nk && strcmp(nf, k_engine_tensors[k])) k++;
        if (k == nk) fail_msg("%s: tensor %s, which vLLM's DeepSeek model does not hold", out, name);
        q_plain |= !!strstr(name, "self_attn.q_proj.");
        q_lora |= !!strstr(name, "self_attn.q_a_proj.");
    }
    assert_true(q_plain != q_lora);
    assert_non_null(ae_st_find(st, "lm_head.weight"));
    ae_st_close(st);
    o = ae_test_read_json(out, "config.json");
    assert_int_equal(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "q_lora_rank")), q_plain);
    cJSON_Delete(o);
}

static void test_export_mla_f32_roundtrip(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    ae_student_spec specs[] = {
        {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .qk_rope_dim = 8, .init_teacher = 1},
        {.target = AE_ATTN_MLA, .kv_lora_rank = 24, .q_lora_rank = 32, .qk_rope_dim = 16, .seed = 5},
        {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8, .seed = 6}, // untied teacher
    };
    const char *teachers[] = {micro(), micro(), ae_test_src("tests/fixtures/models/dense_gqa2_untied")};
    for (int k = 0; k < 3; k++) {
        char *s = ae_test_save_student(teachers[k], &specs[k], dir, "s");
        char *out = ae_test_path_in(dir, "hf");
        export_ok(s, out, AE_DT_F32, 0);
        ae_model *a = ae_test_load_cpu(s), *b = ae_test_load_cpu(out);
        check_deepseek_config(out, &a->cfg);
        check_engine_fields(out, 0, AE_EXPORT_FOR_TRANSFORMERS);
        assert_int_equal(b->cfg.folder, AE_FOLDER_DEEPSEEK_V3);
        assert_int_equal(b->cfg.target, AE_ATTN_MLA);
        assert_int_equal(b->cfg.q_lora_rank, a->cfg.q_lora_rank);
        assert_int_equal(b->cfg.tie_word_embeddings, 0); // lm_head written out when tied
        assert_int_equal(b->n_params, a->n_params + (a->cfg.tie_word_embeddings
                                                         ? (int64_t)a->cfg.vocab_size * a->cfg.hidden_size
                                                         : 0));
        assert_same_tensors(a, b);
        assert_same_logits(a, b);
        printf("MLA q_lora_rank %d (%s): DeepSeek-V3 export (f32) reloads bit-identically, same "
               "logits\n", a->cfg.q_lora_rank, a->cfg.tie_word_embeddings ? "tied" : "untied");
        // only the tokenizer/generation files and the weights: no conversion.json
        char *conv = ae_test_path_in(out, "conversion.json");
        char *tok = ae_test_path_in(out, "tokenizer.json");
        assert_false(ae_path_exists(conv));
        assert_int_equal(ae_path_exists(tok), k < 2); // the fixture teacher has no tokenizer
        free(conv);
        free(tok);
        ae_model_free(a);
        ae_model_free(b);
        free(out);
        free(s);
    }
    ae_test_rmtree(dir);
    free(dir);
}

// b: a's DeepSeek-V2 export read back (f32): the same MoE MLA model (routing, dense layers,
// MLA sizes), every tensor bit-identical, the same logits.
static void assert_moe_roundtrip(const ae_model *a, const ae_model *b) {
    const ae_config *x = &a->cfg, *y = &b->cfg;
    assert_int_equal(y->folder, AE_FOLDER_DEEPSEEK_V2);
    assert_int_equal(y->arch, AE_ARCH_QWEN3_MOE);
    assert_int_equal(y->target, AE_ATTN_MLA);
    assert_int_equal(y->num_experts, x->num_experts);
    assert_int_equal(y->num_experts_per_tok, x->num_experts_per_tok);
    assert_int_equal(y->moe_intermediate_size, x->moe_intermediate_size);
    assert_int_equal(y->intermediate_size, x->intermediate_size);
    assert_int_equal(y->norm_topk_prob, x->norm_topk_prob);
    assert_int_equal(y->q_lora_rank, x->q_lora_rank);
    assert_int_equal(y->kv_lora_rank, x->kv_lora_rank);
    assert_int_equal(y->tie_word_embeddings, 0);
    for (int l = 0; l < x->num_hidden_layers; l++) {
        assert_int_equal(ae_config_layer_is_moe(y, l), ae_config_layer_is_moe(x, l));
        assert_int_equal(y->layer_attn[l], AE_ATTN_MLA);
    }
    assert_same_tensors(a, b);
    assert_same_logits(a, b);
}

// The folder out (one model.safetensors) as transformers' save_pretrained writes it after loading
// it with the shipped router: architectures[0] AttneditDeepseekV2ForCausalLM and, in the MoE
// layer `layer`, the empty shared-expert tensors of its zero-width shared MLP. The other
// tensors are kept; `extra` adds one non-empty shared-expert tensor (which must be refused).
static void resave_like_transformers(const char *out, int layer, int D, int extra) {
    char *path = ae_test_path_in(out, "model.safetensors");
    ae_st_set *st;
    ae_st_writer *w;
    assert_int_equal(ae_st_open_file(path, &st), AE_OK);
    assert_int_equal(ae_st_writer_init(&w), AE_OK);
    for (size_t i = 0; i < ae_st_count(st); i++) {
        const ae_st_tensor *t = ae_st_at(st, i);
        assert_int_equal(ae_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), AE_OK);
    }
    static const char *const proj[] = {"gate_proj", "up_proj", "down_proj"};
    static const float one[4] = {1, 1, 1, 1};
    char names[3][96];
    for (int k = 0; k < 3; k++) {
        int64_t shape[2] = {k == 2 ? D : 0, k == 2 ? 0 : D}; // (0, D) / (D, 0)
        if (extra && k == 0) shape[0] = 1, shape[1] = 4;
        snprintf(names[k], sizeof names[k], "model.layers.%d.mlp.shared_experts.%s.weight", layer, proj[k]);
        assert_int_equal(ae_st_writer_add(w, names[k], AE_DT_F32, 2, shape, one), AE_OK);
    }
    assert_int_equal(ae_st_writer_finish(w, path), AE_OK);
    ae_st_close(st);
    cJSON *o = ae_test_read_json(out, "config.json");
    cJSON_ReplaceItemInObjectCaseSensitive(o, "architectures", cJSON_CreateStringArray(
        (const char *const[]){"AttneditDeepseekV2ForCausalLM"}, 1));
    ae_test_write_json(out, "config.json", o);
    cJSON_Delete(o);
    free(path);
}

// MLA student of a Qwen3-MoE teacher -> DeepseekV2ForCausalLM: the routing fields, the leading
// dense layer as first_k_dense_replace, every tensor under the student's (= DeepSeek's) name
// with its shape and bits (f32), lm_head written out, the remote-code router only with
// norm_topk_prob.
static void test_export_moe_mla(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    for (int norm = 0; norm < 2; norm++) {
        char *t = ae_test_leading_dense_moe(dir, "moe2", norm);
        ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8,
                               .q_lora_rank = norm ? 24 : 0, .seed = 4};
        char *s = ae_test_save_student(t, &mla, dir, "s"), *out = ae_test_path_in(dir, "hf");
        ae_export_opts eo = {.dtype = AE_DT_F32, .force = 1};
        ae_export_report rep;
        if (ae_export_hf(s, out, &eo, &rep) != AE_OK) fail_msg("%s", ae_last_error());
        assert_int_equal(rep.kind, AE_EXPORT_DEEPSEEK_V2);
        assert_string_equal(rep.architecture, "DeepseekV2ForCausalLM");
        ae_model *a = ae_test_load_cpu(s);
        const ae_config *c = &a->cfg;
        cJSON *o = ae_test_read_json(out, "config.json");
        assert_string_equal(jstr(o, "architectures"), "DeepseekV2ForCausalLM");
        assert_string_equal(jstr(o, "model_type"), "deepseek_v2");
        assert_int_equal((int)jnum(o, "first_k_dense_replace"), 1);
        assert_int_equal((int)jnum(o, "moe_layer_freq"), 1);
        assert_int_equal((int)jnum(o, "n_routed_experts"), c->num_experts);
        assert_int_equal((int)jnum(o, "n_shared_experts"), 0);
        assert_int_equal((int)jnum(o, "num_experts_per_tok"), c->num_experts_per_tok);
        assert_int_equal((int)jnum(o, "moe_intermediate_size"), c->moe_intermediate_size);
        assert_int_equal((int)jnum(o, "intermediate_size"), c->intermediate_size);
        assert_int_equal((int)jnum(o, "n_group"), 1);
        assert_int_equal((int)jnum(o, "topk_group"), 1);
        assert_true(jnum(o, "routed_scaling_factor") == 1.0);
        assert_string_equal(jstr(o, "scoring_func"), "softmax");
        assert_string_equal(jstr(o, "topk_method"), "greedy");
        assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "norm_topk_prob")), norm);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "rope_interleave")));
        assert_int_equal((int)jnum(o, "num_key_value_heads"), c->num_attention_heads);
        assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "tie_word_embeddings")));
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "q_lora_rank");
        if (norm) assert_int_equal((int)q->valuedouble, 24);
        else assert_true(cJSON_IsNull(q));
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(o, "auto_map");
        char *py = ae_test_path_in(out, "modeling_attnedit_deepseek_v2.py"),
             *gpy = ae_test_path_in(out, "modeling_attnedit_gateswa.py");
        assert_int_equal(ae_path_exists(py), norm);
        assert_false(ae_path_exists(gpy));
        if (norm)
            assert_string_equal(jstr(map, "AutoModelForCausalLM"),
                                "modeling_attnedit_deepseek_v2.AttneditDeepseekV2ForCausalLM");
        else assert_null(map);
        cJSON_Delete(o);
        // every tensor: the student's name, shape and bits; lm_head explicit (untied already)
        ae_st_set *st;
        assert_int_equal(ae_st_open_dir(out, &st), AE_OK);
        tensor_list *l = calloc(1, sizeof *l);
        assert_int_equal(ae_export_foreach_tensor(a, 1, collect, l), AE_OK);
        assert_int_equal((size_t)l->n, ae_st_count(st));
        for (int i = 0; i < l->n; i++) {
            const ae_st_tensor *x = ae_st_find(st, l->names[i]);
            if (!x) fail_msg("no tensor %s", l->names[i]);
            float *v = malloc(sizeof(float) * (size_t)l->numel[i]);
            assert_int_equal(ae_st_to_f32(x, v), AE_OK);
            assert_memory_equal(v, l->data[i], sizeof(float) * (size_t)l->numel[i]);
            free(v);
        }
        const int64_t D = c->hidden_size, Im = c->moe_intermediate_size, E = c->num_experts;
        const ae_st_tensor *x = ae_st_find(st, "model.layers.1.mlp.experts.0.gate_proj.weight");
        assert_non_null(x);
        assert_int_equal(x->ndim, 2);
        assert_true(x->shape[0] == Im && x->shape[1] == D);
        char name[96];
        snprintf(name, sizeof name, "model.layers.1.mlp.experts.%lld.down_proj.weight", (long long)(E - 1));
        x = ae_st_find(st, name);
        assert_non_null(x);
        assert_true(x->shape[0] == D && x->shape[1] == Im);
        x = ae_st_find(st, "model.layers.1.mlp.gate.weight");
        assert_true(x && x->shape[0] == E && x->shape[1] == D);
        x = ae_st_find(st, "model.layers.0.mlp.up_proj.weight");
        assert_true(x && x->shape[0] == c->intermediate_size && x->shape[1] == D);
        assert_null(ae_st_find(st, "model.layers.0.mlp.gate.weight"));
        assert_non_null(ae_st_find(st, "lm_head.weight"));
        assert_non_null(ae_st_find(st, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"));
        ae_st_close(st);
        list_free(l);
        check_engine_fields(out, 1, AE_EXPORT_FOR_TRANSFORMERS);
        // attnedit reads the folder back as the same MoE MLA model
        ae_model *b = ae_test_load_cpu(out);
        assert_moe_roundtrip(a, b);
        ae_model_free(b);
        // --engine vllm: n_shared_experts null, everything else as above; attnedit reads it too
        char *vdir = ae_test_path_in(dir, "hf-vllm");
        ae_export_opts vo = {.dtype = AE_DT_F32, .force = 1, .engine = AE_EXPORT_FOR_VLLM};
        if (ae_export_hf(s, vdir, &vo, NULL) != AE_OK) fail_msg("%s", ae_last_error());
        check_engine_fields(vdir, 1, AE_EXPORT_FOR_VLLM);
        b = ae_test_load_cpu(vdir);
        assert_moe_roundtrip(a, b);
        ae_model_free(b);
        free(vdir);
        // as transformers saves it again (a student fine-tuned there): still the same model
        resave_like_transformers(out, 1, c->hidden_size, 0);
        b = ae_test_load_cpu(out);
        assert_moe_roundtrip(a, b);
        ae_model_free(b);
        // a shared-expert tensor that holds weights is never ignored
        export_ok(s, out, AE_DT_F32, 0);
        resave_like_transformers(out, 1, c->hidden_size, 1);
        assert_int_equal(ae_model_load(out, ae_backend_cpu(), &b), AE_ERR_UNSUPPORTED);
        assert_non_null(strstr(ae_last_error(), "shared_experts.gate_proj"));
        printf("MoE MLA student (norm_topk_prob %d): DeepseekV2ForCausalLM, first_k_dense_replace 1, "
               "%d experts top %d, tensors bit-identical (f32)%s; loads back, also as transformers "
               "re-saves it: same config, tensors, logits\n", norm, c->num_experts, c->num_experts_per_tok,
               norm ? ", remote-code router shipped" : "");
        ae_model_free(a);
        free(py);
        free(gpy);
        free(out);
        free(s);
        free(t);
        ae_test_rmtree(dir);
        assert_int_equal(mkdir(dir, 0700), 0);
    }
    ae_test_rmtree(dir);
    free(dir);
}

static void check_py_file(const char *out, const char *name) {
    char rel[256];
    snprintf(rel, sizeof rel, "src/export/hf/%s", name);
    char *p = ae_test_path_in(out, name), *a, *b;
    size_t la, lb;
    assert_int_equal(ae_file_read_all(p, &a, &la), AE_OK);
    assert_int_equal(ae_file_read_all(ae_test_src(rel), &b, &lb), AE_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    free(p);
}

static void test_export_gateswa_f32_roundtrip(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    ae_student_spec specs[] = {
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 8, .gate = AE_GATE_ELEMENTWISE, .seed = 1},
        {.target = AE_ATTN_GATESWA, .full_every = 3, .window = 5, .gate = AE_GATE_HEAD, .sinks = 1, .seed = 2},
        {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 4, .gate = AE_GATE_HEAD, .seed = 3,
         .layers = (int[]){1, 2}, .n_layers = 2}, // mixed: layers 0, 3 stay plain Qwen3
    };
    static const char *const gates[] = {"none", "elementwise", "head"};
    for (int k = 0; k < 3; k++) {
        char *s = ae_test_save_student(micro(), &specs[k], dir, "s");
        char *out = ae_test_path_in(dir, "hf");
        export_ok(s, out, AE_DT_F32, 0);
        ae_model *a = ae_test_load_cpu(s), *b = ae_test_load_cpu(out);
        cJSON *o = ae_test_read_json(out, "config.json");
        assert_string_equal(jstr(o, "architectures"), "AttneditGateSWAForCausalLM");
        assert_string_equal(jstr(o, "model_type"), "attnedit_gateswa");
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(o, "auto_map");
        assert_string_equal(jstr(map, "AutoConfig"), "configuration_attnedit_gateswa.AttneditGateSWAConfig");
        assert_string_equal(jstr(map, "AutoModelForCausalLM"),
                            "modeling_attnedit_gateswa.AttneditGateSWAForCausalLM");
        assert_string_equal(jstr(o, "attn_output_gate"), gates[a->cfg.attn_gate]);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "use_sliding_window")));
        assert_int_equal((int)jnum(o, "sliding_window"), a->cfg.sliding_window);
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(o, "layer_types");
        for (int l = 0; l < a->cfg.num_hidden_layers; l++)
            assert_string_equal(cJSON_GetArrayItem(lt, l)->valuestring,
                                a->cfg.layer_types[l] == AE_LAYER_SLIDING ? "sliding_attention"
                                                                           : "full_attention");
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "attention_replaced_layers")),
                         k == 2 ? 2 : a->cfg.num_hidden_layers);
        cJSON_Delete(o);
        check_py_file(out, "configuration_attnedit_gateswa.py");
        check_py_file(out, "modeling_attnedit_gateswa.py");
        assert_int_equal(b->cfg.folder, AE_FOLDER_GATESWA_HF);
        for (int l = 0; l < a->cfg.num_hidden_layers; l++)
            assert_int_equal(b->cfg.layer_attn[l], a->cfg.layer_attn[l]);
        assert_int_equal(b->n_params, a->n_params);
        assert_same_tensors(a, b);
        assert_same_logits(a, b);
        printf("GateSWA gate %s%s%s: export (f32) reloads bit-identically, same logits\n",
               gates[a->cfg.attn_gate], a->cfg.attn_sinks ? " + sinks" : "", k == 2 ? " (mixed)" : "");
        ae_model_free(a);
        ae_model_free(b);
        free(out);
        free(s);
    }
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 3. bf16 values, shards, index

typedef struct {
    const ae_st_set *st;
    int64_t checked;
} bf16_check;

static ae_status check_bf16(void *ud, const ae_model_tensor *t) {
    bf16_check *c = ud;
    const ae_st_tensor *f = ae_st_find(c->st, t->name);
    if (!f) fail_msg("tensor %s missing from the export", t->name);
    assert_int_equal(f->dtype, AE_DT_BF16);
    int64_t n = ae_model_tensor_numel(t);
    assert_int_equal(f->numel, n);
    const float *x = t->data.data;
    for (int64_t i = 0; i < n; i++) {
        uint16_t want = ae_f32_to_bf16(x[i]), got;
        memcpy(&got, f->data + 2 * i, 2);
        if (want != got) fail_msg("%s[%lld]: bf16 %04x, expected %04x", t->name, (long long)i, got, want);
    }
    c->checked++;
    return AE_OK;
}

static int64_t file_size(const char *path) {
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (int64_t)sb.st_size;
}

static void test_export_bf16_shards(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .q_lora_rank = 16, .qk_rope_dim = 8, .seed = 9};
    char *s = ae_test_save_student(micro(), &spec, dir, "s");
    char *out = ae_test_path_in(dir, "hf");
    const uint64_t limit = 1000000; // below the embedding's 2 MiB: it gets a file of its own
    export_ok(s, out, AE_DT_BF16, limit);
    ae_model *a = ae_test_load_cpu(s);
    // the index: every tensor, in the model's order, to a file holding it; files within the limit
    cJSON *idx = ae_test_read_json(out, "model.safetensors.index.json");
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map"), *e;
    tensor_list *names = calloc(1, sizeof *names);
    assert_int_equal(ae_export_foreach_tensor(a, 1, collect, names), AE_OK);
    assert_int_equal(cJSON_GetArraySize(wm), names->n);
    int i = 0, n_files = 0;
    int64_t total = 0;
    const char *prev = "";
    cJSON_ArrayForEach(e, wm) {
        assert_string_equal(e->string, names->names[i]);
        total += names->numel[i] * 2;
        i++;
        if (strcmp(prev, e->valuestring) != 0) {
            n_files++;
            char want[64];
            snprintf(want, sizeof want, "model-%05d-", n_files);
            assert_int_equal(strncmp(e->valuestring, want, strlen(want)), 0);
            prev = e->valuestring;
        }
    }
    assert_true(n_files >= 3);
    assert_int_equal((int64_t)jnum(cJSON_GetObjectItemCaseSensitive(idx, "metadata"), "total_size"), total);
    for (int f = 1; f <= n_files; f++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", f, n_files);
        char *p = ae_test_path_in(out, name);
        ae_st_set *st;
        assert_int_equal(ae_st_open_file(p, &st), AE_OK);
        assert_true(file_size(p) <= (int64_t)limit || ae_st_count(st) == 1);
        ae_st_close(st);
        free(p);
    }
    printf("bf16 export: %d tensors in %d files of <= %llu bytes (or one tensor each)\n", names->n,
           n_files, (unsigned long long)limit);
    list_free(names);
    cJSON_Delete(idx);
    // every value is the round-to-nearest-even bf16 of the student's f32
    ae_st_set *st;
    assert_int_equal(ae_st_open_dir(out, &st), AE_OK);
    bf16_check c = {st, 0};
    assert_int_equal(ae_export_foreach_tensor(a, 1, check_bf16, &c), AE_OK);
    assert_int_equal((size_t)c.checked, ae_st_count(st));
    ae_st_close(st);
    ae_model *b = ae_test_load_cpu(out); // and attnedit loads the sharded bf16 folder
    assert_int_equal(b->cfg.target, AE_ATTN_MLA);
    ae_model_free(b);
    // one file, no index, when everything fits
    export_ok(s, out, AE_DT_BF16, 0);
    char *single = ae_test_path_in(out, "model.safetensors");
    char *index = ae_test_path_in(out, "model.safetensors.index.json");
    assert_true(ae_path_exists(single));
    assert_false(ae_path_exists(index));
    free(single);
    free(index);
    ae_model_free(a);
    free(out);
    free(s);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 4. refusals: one message, nothing written

static void expect_refused(const char *model, const char *out, ae_dtype dt, int force,
                           const char *key1, const char *key2) {
    int existed = ae_path_exists(out);
    ae_export_opts o = {.dtype = dt, .force = force};
    ae_status st = ae_export_hf(model, out, &o, NULL);
    if (st == AE_OK) fail_msg("export of %s to %s succeeded", model, out);
    const char *e = ae_last_error();
    if (!strstr(e, key1) || (key2 && !strstr(e, key2)))
        fail_msg("message '%s' lacks '%s' / '%s'", e, key1, key2 ? key2 : "");
    assert_int_equal(ae_path_exists(out), existed);
}

static void test_export_refusals(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "out");
    expect_refused(micro(), out, AE_DT_BF16, 0, "teacher", "convert");
    ae_student_spec mixed = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8,
                             .layers = (int[]){1, 3}, .n_layers = 2};
    char *m = ae_test_save_student(micro(), &mixed, dir, "mixed");
    expect_refused(m, out, AE_DT_BF16, 0, "mixed", "0, 2");
    ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 8, .qk_rope_dim = 8};
    ae_student_spec gs = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 4, .gate = AE_GATE_HEAD};
    const char *moe_dir = ae_test_src("tests/fixtures/models/moe_norm_topk");
    char *moe_mla = ae_test_save_student(moe_dir, &mla, dir, "moe_mla");
    expect_refused(moe_mla, out, AE_DT_BF16, 0, "layer 1 has a dense MLP after a MoE layer",
                   "first_k_dense_replace");
    char *moe_gs = ae_test_save_student(moe_dir, &gs, dir, "moe_gs");
    expect_refused(moe_gs, out, AE_DT_BF16, 0, "GateSWA student of a Qwen3-MoE teacher", NULL);
    char *s = ae_test_save_student(micro(), &mla, dir, "s");
    // the output may not be the input, inside it, or contain it
    expect_refused(s, s, AE_DT_BF16, 1, "same", NULL);
    char *inside = ae_test_path_in(s, "hf");
    expect_refused(s, inside, AE_DT_BF16, 1, "inside", NULL);
    expect_refused(s, dir, AE_DT_BF16, 1, "contains", NULL);
    // an existing output needs force
    assert_int_equal(mkdir(out, 0755), 0);
    expect_refused(s, out, AE_DT_BF16, 0, "already exists", "--force");
    rmdir(out);
    expect_refused(s, out, AE_DT_I32, 0, "dtype", NULL);
    // a value beyond float16's range: refused naming the tensor, nothing left
    ae_model *big = ae_test_load_cpu(s);
    ((float *)big->layers[2].mla.wkvb.data)[7] = 1e6f;
    char *bigdir = ae_test_path_in(dir, "big");
    ae_save_opts so = {.src_dir = micro(), .force = 1};
    assert_int_equal(ae_model_save(big, bigdir, &so), AE_OK);
    ae_model_free(big);
    expect_refused(bigdir, out, AE_DT_F16, 0, "model.layers.2.self_attn.kv_b_proj.weight", "float16");
    export_ok(bigdir, out, AE_DT_BF16, 0); // bf16 holds it
    ae_test_assert_no_temp(dir);
    free(bigdir);
    free(inside);
    free(s);
    free(moe_gs);
    free(moe_mla);
    free(m);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

typedef struct {
    const char *model, *out;
} hf_job;

static ae_status export_job(void *p) {
    const hf_job *j = p;
    return export_to(j->model, j->out, AE_DT_F32, 0);
}

// Disk full half-way (a file-size limit makes the weights' write fail with EFBIG): the export
// fails and leaves neither the folder nor a temp folder.
static void test_export_disk_full(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *sub = ae_test_path_in(dir, "outs");
    char *out = ae_test_path_in(sub, "hf");
    ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8};
    char *s = ae_test_save_student(micro(), &mla, dir, "s");
    assert_int_equal(mkdir(sub, 0755), 0);
    hf_job job = {s, out};
    ae_test_write_fails_beyond(1 << 20, export_job, &job); // 1 MiB a file; f32 weights ~10 MiB
    assert_false(ae_path_exists(out));
    assert_int_equal(ae_test_count_entries(sub), 0);
    printf("disk full mid-export: error, nothing left in %s\n", sub);
    free(s);
    free(out);
    free(sub);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 5. the CLI

static void expect_cli_fail(const char *const *args, int rc, const char *key1, const char *key2) {
    ae_test_cli_result r = ae_test_cli(args);
    int ok = r.rc == rc && r.out[0] == '\0' && strstr(r.err, "attnedit") &&
             (!key1 || strstr(r.err, key1)) && (!key2 || strstr(r.err, key2));
    if (!ok) printf("exit %d\nstdout: %s\nstderr: %s\nexpected exit %d with '%s' / '%s'\n", r.rc,
                    r.out, r.err, rc, key1 ? key1 : "", key2 ? key2 : "");
    free(r.out);
    free(r.err);
    assert_true(ok);
}

static void test_cli_export(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "hf");
    ae_student_spec gs = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 4, .gate = AE_GATE_ELEMENTWISE};
    char *s = ae_test_save_student(micro(), &gs, dir, "s");
    ae_test_cli_result r = ae_test_cli(ARGS("inspect", s));
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "AttneditStudentForCausalLM (converted from Qwen3ForCausalLM)"));
    free(r.out);
    free(r.err);
    r = ae_test_cli(ARGS("export", "--help"));
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "--shard-size"));
    free(r.out);
    free(r.err);
    expect_cli_fail(ARGS("export", "--model", s), 2, "--format", NULL);
    expect_cli_fail(ARGS("export", "--model", s, "--format", "gguf", "--out", out), 1, "GateSWA", "llama.cpp");
    expect_cli_fail(ARGS("export", "--model", s, "--format", "onnx", "--out", out), 1, "--format", "hf");
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--dtype", "fp8"), 1,
                    "--dtype", "bf16");
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--shard-size", "0"), 1,
                    "--shard-size", NULL);
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--shard-size", "5XB"), 1,
                    "--shard-size", NULL);
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--shard-size", "-5"), 1,
                    "--shard-size", NULL);
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--bogus"), 1, "--bogus", NULL);
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--engine", "tgi"), 1,
                    "--engine", "vllm");
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--engine", "vllm"), 1,
                    "GateSWA", "vLLM");
    expect_cli_fail(ARGS("export", "--model", s, "--format", "gguf", "--out", out, "--engine", "vllm"), 1,
                    "--engine applies to --format hf", NULL);
    expect_cli_fail(ARGS("export", "--model", "/nonexistent/s", "--format", "hf", "--out", out), 1,
                    "/nonexistent/s", NULL);
    expect_cli_fail(ARGS("export", "--model", micro(), "--format", "hf", "--out", out), 1, "teacher", "convert");
    assert_false(ae_path_exists(out));
    r = ae_test_cli(
        ARGS("export", "--model", s, "--format", "hf", "--out", out, "--shard-size", "1MB"));
    if (r.rc != 0) printf("%s\n", r.err);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.err, "AttneditGateSWAForCausalLM"));
    assert_non_null(strstr(r.err, "wrote"));
    free(r.out);
    free(r.err);
    ae_config c;
    assert_int_equal(ae_config_load(out, &c), AE_OK);
    assert_int_equal(c.folder, AE_FOLDER_GATESWA_HF);
    ae_config_free(&c);
    expect_cli_fail(ARGS("export", "--model", s, "--format", "hf", "--out", out), 1, "already exists", "--force");
    r = ae_test_cli(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--force",
                         "--dtype", "f16", "--shard-size", "2GiB"));
    assert_int_equal(r.rc, 0);
    free(r.out);
    free(r.err);
    cJSON *o = ae_test_read_json(out, "config.json");
    assert_string_equal(jstr(o, "dtype"), "float16");
    cJSON_Delete(o);
    // attnedit runs the exported folder like any model
    r = ae_test_cli(ARGS("generate", "--model", out, "--prompt-ids", "1 2 3", "--max-new-tokens",
                         "4", "--print-ids", "--device", "cpu"));
    assert_int_equal(r.rc, 0);
    free(r.out);
    free(r.err);
    // export reads the student's files a tensor at a time and holds no copy of the model: under
    // an ATTNEDIT_MEM_LIMIT far below its f32 weights (7 MB; generate cannot load it) both
    // formats write the same bytes as without a limit
    for (int gguf = 0; gguf <= 1; gguf++) {
        ae_student_spec ms = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8};
        char *src = gguf ? ae_test_save_student(micro(), &ms, dir, "mla") : strdup(s);
        const char *fmt = gguf ? "gguf" : "hf";
        char *lim = ae_test_path_in(dir, gguf ? "limited.gguf" : "limited");
        char *free_out = ae_test_path_in(dir, gguf ? "free.gguf" : "free");
        r = ae_test_cli(ARGS("export", "--model", src, "--format", fmt, "--out", free_out, "--force"));
        assert_int_equal(r.rc, 0);
        free(r.out);
        free(r.err);
        setenv("ATTNEDIT_MEM_LIMIT", "256K", 1);
        r = ae_test_cli(ARGS("export", "--model", src, "--format", fmt, "--out", lim, "--force"));
        if (r.rc != 0) printf("%s\n", r.err);
        assert_int_equal(r.rc, 0);
        free(r.out);
        free(r.err);
        r = ae_test_cli(ARGS("generate", "--model", src, "--prompt-ids", "1 2", "--max-new-tokens", "1",
                             "--device", "cpu"));
        assert_int_not_equal(r.rc, 0);
        assert_non_null(strstr(r.err, "ATTNEDIT_MEM_LIMIT"));
        free(r.out);
        free(r.err);
        unsetenv("ATTNEDIT_MEM_LIMIT");
        const char *file = gguf ? "" : "/model.safetensors";
        char a[4096], b[4096];
        snprintf(a, sizeof a, "%s%s", free_out, file);
        snprintf(b, sizeof b, "%s%s", lim, file);
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        assert_int_equal(ae_file_read_all(a, &x, &nx), AE_OK);
        assert_int_equal(ae_file_read_all(b, &y, &ny), AE_OK);
        assert_true(nx == ny && nx > 1000000 && !memcmp(x, y, nx));
        free(x);
        free(y);
        free(src);
        free(lim);
        free(free_out);
    }
    free(s);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

// `attnedit eval ppl --json` of a model on data/sample.txt (ctx 128, cpu): its stdout line.
static char *ppl_json(const char *model) {
    ae_test_cli_result r =
        ae_test_cli(ARGS("eval", "ppl", "--model", model, "--file", ae_test_src("data/sample.txt"),
                         "--ctx", "128", "--json", "--device", "cpu"));
    if (r.rc != 0) fail_msg("eval ppl %s: %s", model, r.err);
    free(r.err);
    return r.out;
}

static double json_nll(const char *line) {
    cJSON *o = cJSON_Parse(line);
    assert_non_null(o);
    double v = jnum(o, "mean_nll");
    cJSON_Delete(o);
    return v;
}

// config.json of dir with one field replaced by JSON text.
static void set_config_field(const char *dir, const char *key, const char *json) {
    cJSON *o = ae_test_read_json(dir, "config.json"), *v = cJSON_Parse(json);
    assert_non_null(v);
    if (cJSON_GetObjectItemCaseSensitive(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else cJSON_AddItemToObject(o, key, v);
    ae_test_write_json(dir, "config.json", o);
    cJSON_Delete(o);
}

// The shared Qwen3-MoE teacher (../shared/teachers/qwen3-moe: 6 MoE layers, 8 experts top 2,
// norm_topk_prob): its MLA student (teacher init, q_lora_rank 32) exported through the CLI as
// DeepseekV2ForCausalLM and read back: f32 every tensor bit-identical, the same logits and the
// same `eval ppl` output; bf16 every value the RNE of the student's and the perplexity within
// bf16 rounding; a folder edited to routing attnedit cannot compute is refused naming the field.
static void test_export_moe_shared_roundtrip(void **state) {
    (void)state;
    const char *moe = ae_test_shared("teachers/qwen3-moe", "MoE MLA export round trip (qwen3-moe)");
    if (!moe) skip();
    char *dir = ae_test_tmpdir();
    ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .qk_rope_dim = 8,
                           .q_lora_rank = 32, .init_teacher = 1};
    char *s = ae_test_save_student(moe, &mla, dir, "s"), *out = ae_test_path_in(dir, "hf");
    char *out16 = ae_test_path_in(dir, "hf16");
    ae_test_cli_result r =
        ae_test_cli(ARGS("export", "--model", s, "--format", "hf", "--out", out, "--dtype", "f32"));
    if (r.rc != 0) fail_msg("%s", r.err);
    assert_non_null(strstr(r.err, "DeepseekV2ForCausalLM"));
    free(r.out);
    free(r.err);
    ae_model *a = ae_test_load_cpu(s), *b = ae_test_load_cpu(out);
    assert_true(a->cfg.norm_topk_prob);
    assert_moe_roundtrip(a, b);
    ae_model_free(b);
    char *pa = ppl_json(s), *pb = ppl_json(out);
    assert_string_equal(pa, pb);
    printf("qwen3-moe MLA student -> DeepseekV2ForCausalLM (f32) -> attnedit: tensors and logits "
           "bit-identical, eval ppl identical: %s", pb);
    // bf16: the values are the student's rounded; perplexity moves by bf16 rounding only
    r = ae_test_cli(ARGS("export", "--model", s, "--format", "hf", "--out", out16));
    if (r.rc != 0) fail_msg("%s", r.err);
    free(r.out);
    free(r.err);
    ae_st_set *st;
    assert_int_equal(ae_st_open_dir(out16, &st), AE_OK);
    bf16_check c = {st, 0};
    assert_int_equal(ae_export_foreach_tensor(a, 1, check_bf16, &c), AE_OK);
    assert_int_equal((size_t)c.checked, ae_st_count(st));
    ae_st_close(st);
    char *p16 = ppl_json(out16);
    double na = json_nll(pa), n16 = json_nll(p16);
    printf("bf16 export read back: mean NLL %.9f vs %.9f (rel. %.1e)\n", n16, na, fabs(n16 - na) / na);
    assert_true(fabs(n16 - na) / na < 1e-2);
    // routing attnedit does not compute: refused by name, never run
    static const struct {
        const char *key, *json, *msg;
    } bad[] = {
        {"n_shared_experts", "2", "shared experts"},
        {"scoring_func", "\"sigmoid\"", "softmax"},
        {"topk_method", "\"group_limited_greedy\"", "greedy"},
        {"routed_scaling_factor", "16.0", "scaled"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        export_ok(s, out, AE_DT_F32, 0);
        set_config_field(out, bad[i].key, bad[i].json);
        expect_cli_fail(ARGS("eval", "ppl", "--model", out, "--file", ae_test_src("data/sample.txt"),
                             "--device", "cpu"),
                        1, bad[i].key, bad[i].msg);
    }
    ae_model_free(a);
    free(pa);
    free(pb);
    free(p16);
    free(s);
    free(out);
    free(out16);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_student_folder_names),
        cmocka_unit_test(test_old_style_student_loads),
        cmocka_unit_test(test_config_names),
        cmocka_unit_test(test_export_mla_f32_roundtrip),
        cmocka_unit_test(test_export_moe_mla),
        cmocka_unit_test(test_export_gateswa_f32_roundtrip),
        cmocka_unit_test(test_export_bf16_shards),
        cmocka_unit_test(test_export_refusals),
        cmocka_unit_test(test_export_disk_full),
        cmocka_unit_test(test_cli_export),
        cmocka_unit_test(test_export_moe_shared_roundtrip),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
