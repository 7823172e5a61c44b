// Hostile model folders: each must be refused with one message naming the file and what is
// wrong, a non-zero exit and no crash (also under ASan), before any large allocation.
//   - config sizes that do not match the weights (hidden_size, vocab_size 10^9; a student's
//     kv_lora_rank 10^8): refused by the tensor shape check, before memory is allocated from them
//   - non-finite weights (NaN, Inf; BF16 and F32 files): refused naming the tensor
//   - a safetensors header naming one tensor twice: "duplicate", not "overlapping"
//   - configs whose sizes overflow what is computed from them (the fuzzer's reproducers in
//     fuzz/crashes/fuzz_config): refused at parse time naming the field
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/file.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"

static const char *k_files[] = {"config.json", "generation_config.json", "tokenizer.json",
                                "tokenizer_config.json", "model.safetensors"};

static void copy_file(const char *from, const char *to) {
    char *buf = NULL;
    size_t n = 0;
    assert_int_equal(ae_file_read_all(from, &buf, &n), AE_OK);
    assert_int_equal(ae_test_write_file(to, buf, n), 0);
    free(buf);
}

// A copy of the demo model in a fresh folder (heap path; ae_test_rmtree + free when done).
static char *copy_micro(void) {
    char *dir = ae_test_tmpdir();
    assert_non_null(dir);
    for (size_t i = 0; i < sizeof k_files / sizeof *k_files; i++) {
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s", ae_test_src(MICRO), k_files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, k_files[i]);
        copy_file(from, to);
    }
    return dir;
}

// Replaces the integer field `key` of dir/config.json.
static void set_config_int(const char *dir, const char *key, double value) {
    char path[4096], *text = NULL;
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(ae_file_read_all(path, &text, &n), AE_OK);
    cJSON *o = cJSON_Parse(text);
    assert_non_null(o);
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    cJSON_AddNumberToObject(o, key, value);
    char *out = cJSON_Print(o);
    assert_int_equal(ae_test_write_file(path, out, strlen(out)), 0);
    free(out);
    free(text);
    cJSON_Delete(o);
}

// What the model folder of the next refusal has wrong (the robustness catalogue).
static char g_what[256];

// Runs the CLI; asserts a clean failure whose stderr contains every non-NULL key.
static void expect_refused(const char *const *args, const char *k1, const char *k2) {
    char *out = NULL, *err = NULL;
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc < 1 || rc > 127 || (k1 && !strstr(err, k1)) || (k2 && !strstr(err, k2)))
        fail_msg("expected a clean refusal naming '%s' and '%s'; rc %d, stderr:\n%s", k1 ? k1 : "",
                 k2 ? k2 : "", rc, err);
    ae_test_catalogue_cli("model folders: sizes and weights", args, g_what[0] ? g_what : NULL,
                          err);
    free(out);
    free(err);
}

static void eval_refused(const char *dir, const char *k1, const char *k2) {
    char file[4096];
    snprintf(file, sizeof file, "%s", ae_test_src("data/sample.txt"));
    const char *args[] = {"eval", "ppl", "--model", dir, "--file", file, "--device", "cpu", NULL};
    expect_refused(args, k1, k2);
}

// 10^9 is over the config limits (refused at parse time); the largest accepted value does not
// match the weights (refused by the shape check, before anything of that size is allocated).
static void test_absurd_config_sizes(void **state) {
    (void)state;
    static const struct {
        const char *field;
        double max;
    } f[] = {{"hidden_size", AE_MAX_WIDTH}, {"vocab_size", AE_MAX_VOCAB},
             {"intermediate_size", AE_MAX_WIDTH}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        char *dir = copy_micro();
        set_config_int(dir, f[i].field, 1e9);
        snprintf(g_what, sizeof g_what, "config.json %s = 1e9", f[i].field);
        eval_refused(dir, f[i].field, "exceeds the supported maximum");
        set_config_int(dir, f[i].field, f[i].max);
        snprintf(g_what, sizeof g_what, "config.json %s = %.0f (the limit; the weights are smaller)",
                 f[i].field, f[i].max);
        eval_refused(dir, "shape", "expected");
        ae_test_rmtree(dir);
        free(dir);
    }
}

static void test_absurd_student_rank(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), out[4096];
    snprintf(out, sizeof out, "%s/mla", dir);
    const char *conv[] = {"convert", "--teacher", ae_test_src(MICRO), "--target", "mla",
                          "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--out", out, NULL};
    char *o = NULL, *e = NULL;
    int rc = ae_test_run_cli(conv, NULL, &o, &e);
    if (rc != 0) fail_msg("convert failed: %s", e);
    free(o);
    free(e);
    set_config_int(out, "kv_lora_rank", 1e8);
    snprintf(g_what, sizeof g_what, "an MLA student's config.json kv_lora_rank = 1e8");
    eval_refused(out, "kv_lora_rank", "exceeds the supported maximum");
    set_config_int(out, "kv_lora_rank", AE_MAX_WIDTH);
    snprintf(g_what, sizeof g_what,
             "an MLA student's config.json kv_lora_rank = %d (the limit; the weights are smaller)",
             AE_MAX_WIDTH);
    eval_refused(out, "kv_a_proj_with_mqa", "expected");
    ae_test_rmtree(dir);
    free(dir);
}

// Offset of tensor `name`'s data in a safetensors file image.
static size_t tensor_offset(const unsigned char *img, const char *name) {
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)img[i] << (8 * i);
    char *hdr = malloc(hlen + 1);
    memcpy(hdr, img + 8, hlen);
    hdr[hlen] = '\0';
    cJSON *o = cJSON_Parse(hdr), *t = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_non_null(t);
    size_t off = 8 + hlen + (size_t)cJSON_GetArrayItem(cJSON_GetObjectItem(t, "data_offsets"), 0)->valuedouble;
    cJSON_Delete(o);
    free(hdr);
    return off;
}

// Writes a non-finite value into element `at` of a BF16 tensor of dir's weights.
static void poison_bf16(const char *dir, const char *name, size_t at, uint16_t bits) {
    char path[4096], *img = NULL;
    size_t n;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(ae_file_read_all(path, &img, &n), AE_OK);
    size_t off = tensor_offset((unsigned char *)img, name) + 2 * at;
    img[off] = (char)(bits & 0xff);
    img[off + 1] = (char)(bits >> 8);
    assert_int_equal(ae_test_write_file(path, img, n), 0);
    free(img);
}

static void test_nonfinite_weights(void **state) {
    (void)state;
    struct {
        const char *tensor;
        size_t at;
        uint16_t bits;
        const char *element;
    } cases[] = {
        {"model.layers.1.mlp.down_proj.weight", 17, 0x7fc0, "element 17"},   // NaN
        {"model.norm.weight", 0, 0x7f80, "element 0"},                         // +Inf
        {"model.layers.0.self_attn.k_proj.weight", 4095, 0xff80, "element 4095"}, // -Inf
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = copy_micro();
        poison_bf16(dir, cases[i].tensor, cases[i].at, cases[i].bits);
        snprintf(g_what, sizeof g_what, "%s %s = bf16 0x%04x (%s)", cases[i].tensor,
                 cases[i].element, cases[i].bits,
                 cases[i].bits == 0x7fc0 ? "NaN" : cases[i].bits == 0x7f80 ? "+Inf" : "-Inf");
        eval_refused(dir, cases[i].tensor, cases[i].element);
        const char *gen[] = {"generate", "--model", dir, "--prompt", "The", "--device", "cpu", NULL};
        expect_refused(gen, cases[i].tensor, "non-finite");
        ae_test_rmtree(dir);
        free(dir);
    }
}

// A header with one tensor named twice, both entries over the same bytes (so the data also
// "overlaps"): the message must name the real fault, the duplicate name.
static void test_duplicate_tensor_name(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), path[4096];
    snprintf(path, sizeof path, "%s/dup.safetensors", dir);
    const char hdr[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    size_t hl = (sizeof hdr - 1 + 7) / 8 * 8, n = 8 + hl + 4;
    unsigned char *img = calloc(1, n);
    for (int i = 0; i < 8; i++) img[i] = (unsigned char)(hl >> (8 * i));
    memset(img + 8, ' ', hl);
    memcpy(img + 8, hdr, sizeof hdr - 1);
    assert_int_equal(ae_test_write_file(path, img, n), 0);
    free(img);
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_file(path, &s), AE_ERR_FORMAT);
    if (!strstr(ae_last_error(), "duplicate tensor name \"a\""))
        fail_msg("message does not say duplicate: %s", ae_last_error());
    ae_test_catalogue("safetensors files", "a header naming tensor \"a\" twice, over the same bytes",
                      ae_last_error());
    ae_test_rmtree(dir);
    free(dir);
}

// Each reproducer the config fuzzer found (signed overflow in the parameter, attention and KV
// byte counts) is refused when parsed, naming a field; the sizes of an accepted config can be
// computed without overflow at the largest accepted values.
static void test_config_size_limits(void **state) {
    (void)state;
    static const char *repro[] = {"attn-params-overflow.json", "kv-bytes-overflow.json",
                                  "param-count-overflow.json"};
    for (size_t i = 0; i < sizeof repro / sizeof *repro; i++) {
        char path[4096], *text = NULL;
        size_t n;
        snprintf(path, sizeof path, "%s/%s", ae_test_src("fuzz/crashes/fuzz_config"), repro[i]);
        assert_int_equal(ae_file_read_all(path, &text, &n), AE_OK);
        ae_config c;
        assert_int_equal(ae_config_parse(text, repro[i], &c), AE_ERR_UNSUPPORTED);
        if (!strstr(ae_last_error(), "exceeds the supported maximum"))
            fail_msg("%s: %s", repro[i], ae_last_error());
        char input[256];
        snprintf(input, sizeof input, "fuzz/crashes/fuzz_config/%s", repro[i]);
        ae_test_catalogue("config.json", input, ae_last_error());
        free(text);
    }
    char big[1024];
    snprintf(big, sizeof big,
             "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"vocab_size\":%d,\"hidden_size\":%d,"
             "\"intermediate_size\":%d,\"moe_intermediate_size\":%d,\"num_hidden_layers\":%d,"
             "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"head_dim\":%d,"
             "\"num_experts\":%d,\"num_experts_per_tok\":8,\"max_position_embeddings\":%d}",
             AE_MAX_VOCAB, AE_MAX_WIDTH, AE_MAX_WIDTH, AE_MAX_WIDTH, AE_MAX_LAYERS, AE_MAX_HEADS,
             AE_MAX_HEADS, AE_MAX_HEAD_DIM, AE_MAX_EXPERTS, AE_MAX_POSITIONS);
    ae_config c;
    if (ae_config_parse(big, "largest", &c) != AE_OK) fail_msg("%s", ae_last_error());
    int64_t params = ae_config_param_count(&c), kv = ae_config_kv_bytes(&c, 131072);
    assert_true(params > 0 && kv > 0); // UBSan (the sanitizer build) checks the arithmetic
    ae_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absurd_config_sizes),
        cmocka_unit_test(test_absurd_student_rank),
        cmocka_unit_test(test_nonfinite_weights),
        cmocka_unit_test(test_duplicate_tensor_name),
        cmocka_unit_test(test_config_size_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
