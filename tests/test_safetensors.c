// io/safetensors: reading real checkpoints (single file and sharded), writer -> reader round trip,
// and one crafted bad file per validation rule (each error names the offending file).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "util/testutil.h"

// ---- helpers ------------------------------------------------------------------------------------

// Writes <8-byte LE hlen><header><data> (hlen = strlen(header) unless hlen_override >= 0).
static void craft(const char *path, const char *header, const void *data, size_t data_len,
                  long long hlen_override) {
    size_t hl = strlen(header);
    uint64_t claim = hlen_override >= 0 ? (uint64_t)hlen_override : hl;
    size_t total = 8 + hl + data_len;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(claim >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    assert_int_equal(ae_test_write_file(path, buf, total), 0);
    free(buf);
}

// What is wrong with the next file or folder refused (the robustness catalogue).
static char g_what[512];

// Opens path and expects failure with `want`, a message naming the file and containing `what`.
static void expect_bad_file(const char *path, ae_status want, const char *what) {
    ae_st_set *s = (ae_st_set *)0x1;
    ae_error_clear();
    ae_status st = ae_st_open_file(path, &s);
    if (st != want || !strstr(ae_last_error(), path) || (what && !strstr(ae_last_error(), what)))
        fail_msg("%s: got %s \"%s\", want %s mentioning \"%s\"", path, ae_status_name(st),
                 ae_last_error(), ae_status_name(want), what ? what : "");
    assert_null(s);
    ae_test_catalogue("safetensors files", g_what, ae_last_error());
}

static int64_t numel_sum(const ae_st_set *s) {
    int64_t n = 0;
    for (size_t i = 0; i < ae_st_count(s); i++) n += ae_st_at(s, i)->numel;
    return n;
}

static void assert_shape2(const ae_st_tensor *t, int64_t a, int64_t b) {
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], a);
    assert_int_equal(t->shape[1], b);
}

static const unsigned char k_data16[16] = {0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64};

// ---- real checkpoints ---------------------------------------------------------------------------

static void test_read_micro(void **state) {
    (void)state;
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_dir(ae_test_src("models/qwen3-micro"), &s), AE_OK);
    assert_int_equal(ae_st_count(s), 2 + 4 * 11); // embed, norm, 4 layers x 11 (tied: no lm_head)
    const ae_st_tensor *emb = ae_st_find(s, "model.embed_tokens.weight");
    assert_shape2(emb, 8192, 128);
    assert_int_equal(emb->dtype, AE_DT_BF16);
    assert_int_equal(emb->nbytes, 8192 * 128 * 2);
    assert_non_null(strstr(emb->file, "models/qwen3-micro/model.safetensors"));
    assert_shape2(ae_st_find(s, "model.layers.0.self_attn.q_proj.weight"), 128, 128);
    assert_shape2(ae_st_find(s, "model.layers.3.self_attn.k_proj.weight"), 64, 128);
    assert_shape2(ae_st_find(s, "model.layers.2.mlp.down_proj.weight"), 128, 384);
    assert_null(ae_st_find(s, "lm_head.weight"));
    assert_null(ae_st_find(s, "model.layers.4.mlp.down_proj.weight"));
    assert_int_equal(numel_sum(s), 1836416);
    // tensors are listed in data-offset order, each exactly after the previous one
    for (size_t i = 1; i < ae_st_count(s); i++)
        assert_ptr_equal(ae_st_at(s, i)->data, ae_st_at(s, i - 1)->data + ae_st_at(s, i - 1)->nbytes);
    assert_null(ae_st_at(s, ae_st_count(s)));

    // bf16 -> f32 agrees with a byte-wise decode
    const ae_st_tensor *qn = ae_st_find(s, "model.layers.1.self_attn.q_norm.weight");
    float buf[32];
    int64_t shp[1] = {32};
    assert_int_equal(ae_st_load_f32(s, qn->name, 1, shp, buf), AE_OK);
    for (int i = 0; i < 32; i++) {
        uint16_t h = (uint16_t)(qn->data[2 * i] | qn->data[2 * i + 1] << 8);
        assert_true(buf[i] == ae_bf16_to_f32(h));
    }
    // wrong shape: "<file>: tensor <name>: shape [32], expected [16, 2]"
    int64_t bad[2] = {16, 2};
    assert_int_equal(ae_st_load_f32(s, qn->name, 2, bad, buf), AE_ERR_FORMAT);
    char want[512];
    snprintf(want, sizeof want, "%s: tensor %s: shape [32], expected [16, 2]", qn->file, qn->name);
    assert_string_equal(ae_last_error(), want);
    assert_int_equal(ae_st_load_f32(s, "nope", 1, shp, buf), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "nope"));
    ae_st_close(s);
}

static void test_read_fixtures(void **state) {
    (void)state;
    static const char *dirs[] = {"dense_gqa1", "dense_gqa2_untied", "dense_gqa4", "moe_norm_topk",
                                 "moe_sparse_step2_untied"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s", dirs[i]);
        ae_st_set *s = NULL;
        assert_int_equal(ae_st_open_dir(ae_test_src(rel), &s), AE_OK);
        assert_true(ae_st_count(s) > 10);
        assert_non_null(ae_st_find(s, "model.norm.weight"));
        ae_st_close(s);
        snprintf(rel, sizeof rel, "tests/fixtures/models/%s/expected.safetensors", dirs[i]);
        assert_int_equal(ae_st_open_file(ae_test_src(rel), &s), AE_OK);
        const ae_st_tensor *ids = ae_st_find(s, "input_ids");
        assert_non_null(ids);
        assert_int_equal(ids->dtype, AE_DT_I32);
        float tmp[1];
        assert_int_equal(ae_st_to_f32(ids, tmp), AE_ERR_UNSUPPORTED); // I32 -> f32 refused
        assert_non_null(strstr(ae_last_error(), "input_ids"));
        ae_st_close(s);
    }
    // dense_gqa1: f32 tensors
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_dir(ae_test_src("tests/fixtures/models/dense_gqa1"), &s), AE_OK);
    assert_shape2(ae_st_find(s, "model.layers.1.self_attn.k_proj.weight"), 64, 64);
    assert_int_equal(ae_st_find(s, "model.norm.weight")->dtype, AE_DT_F32);
    ae_st_close(s);
    // moe fixture: per-expert tensors + router
    assert_int_equal(ae_st_open_dir(ae_test_src("tests/fixtures/models/moe_norm_topk"), &s), AE_OK);
    assert_shape2(ae_st_find(s, "model.layers.2.mlp.experts.3.down_proj.weight"), 64, 32);
    assert_shape2(ae_st_find(s, "model.layers.0.mlp.gate.weight"), 4, 64);
    assert_null(ae_st_find(s, "model.layers.1.mlp.gate.weight")); // mlp-only layer
    ae_st_close(s);
}

static void test_read_shared_teachers(void **state) {
    (void)state;
    const char *small = ae_test_shared("teachers/qwen3-small", "qwen3-small teacher");
    if (small) {
        ae_st_set *s = NULL;
        assert_int_equal(ae_st_open_dir(small, &s), AE_OK);
        assert_shape2(ae_st_find(s, "model.embed_tokens.weight"), 8192, 384);
        assert_shape2(ae_st_find(s, "model.layers.7.self_attn.q_proj.weight"), 6 * 64, 384);
        assert_shape2(ae_st_find(s, "model.layers.7.self_attn.k_proj.weight"), 2 * 64, 384);
        ae_st_close(s);
    }
    const char *moe = ae_test_shared("teachers/qwen3-moe", "qwen3-moe teacher");
    if (moe) {
        ae_st_set *s = NULL;
        assert_int_equal(ae_st_open_dir(moe, &s), AE_OK);
        assert_shape2(ae_st_find(s, "model.embed_tokens.weight"), 8192, 256);
        assert_shape2(ae_st_find(s, "model.layers.5.mlp.gate.weight"), 8, 256);
        assert_non_null(ae_st_find(s, "model.layers.5.mlp.experts.7.down_proj.weight"));
        ae_st_close(s);
    }
}

// ---- writer -------------------------------------------------------------------------------------

static void test_roundtrip(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *path = ae_path_join(dir, "rt.safetensors");
    char *path2 = ae_path_join(dir, "rt2.safetensors");

    float f32[6] = {1.5f, -2.25f, 3.0e-38f, 1e30f, -0.0f, 7.0f};
    uint16_t bf16[5] = {0x3f80, 0xbf80, 0x7f80, 0x0001, 0x7fc1};
    uint16_t f16[3] = {0x3c00, 0x8001, 0x7bff};
    int32_t i32[4] = {-1, 0, 2147483647, -2147483647 - 1};
    float scalar = 42.0f;
    int64_t s_f32[2] = {2, 3}, s_bf16[1] = {5}, s_f16[3] = {1, 3, 1}, s_i32[2] = {4, 1},
            s_empty[2] = {0, 7};

    ae_st_writer *w = NULL;
    assert_int_equal(ae_st_writer_init(&w), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "b.f32", AE_DT_F32, 2, s_f32, f32), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "a.bf16", AE_DT_BF16, 1, s_bf16, bf16), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "c.f16", AE_DT_F16, 3, s_f16, f16), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "d.i32", AE_DT_I32, 2, s_i32, i32), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "e.scalar", AE_DT_F32, 0, NULL, &scalar), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "f.empty", AE_DT_BF16, 2, s_empty, NULL), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "na\"me\\with\nodd ü", AE_DT_I32, 1, s_i32, i32), AE_OK);
    // rejected: duplicate, reserved name, negative dim
    assert_int_equal(ae_st_writer_add(w, "d.i32", AE_DT_I32, 2, s_i32, i32), AE_ERR_ARG);
    assert_int_equal(ae_st_writer_add(w, "__metadata__", AE_DT_I32, 2, s_i32, i32), AE_ERR_ARG);
    int64_t neg[1] = {-1};
    assert_int_equal(ae_st_writer_add(w, "neg", AE_DT_I32, 1, neg, i32), AE_ERR_ARG);
    assert_int_equal(ae_st_writer_metadata(w, "format", "pt"), AE_OK);
    assert_int_equal(ae_st_writer_metadata(w, "note", "quote \" slash \\ tab \t ünï"), AE_OK);
    assert_int_equal(ae_st_writer_metadata(w, "format", "pt"), AE_OK); // replaces, no duplicate
    assert_int_equal(ae_st_writer_finish(w, path), AE_OK);

    // header length is a multiple of 8, padded with spaces
    char *raw;
    size_t raw_len;
    assert_int_equal(ae_file_read_all(path, &raw, &raw_len), AE_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (unsigned char)raw[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(raw[8], '{');
    size_t data_len = 24 + 10 + 6 + 16 + 4 + 0 + 16;
    assert_int_equal(raw_len, 8 + hl + data_len);

    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_file(path, &s), AE_OK);
    assert_int_equal(ae_st_count(s), 7);
    assert_string_equal(ae_st_metadata(s, "format"), "pt");
    assert_string_equal(ae_st_metadata(s, "note"), "quote \" slash \\ tab \t ünï");
    assert_null(ae_st_metadata(s, "missing"));
    struct {
        const char *name;
        ae_dtype dt;
        int nd;
        const int64_t *shape;
        const void *data;
        size_t nbytes;
    } want[] = {
        {"b.f32", AE_DT_F32, 2, s_f32, f32, 24},     {"a.bf16", AE_DT_BF16, 1, s_bf16, bf16, 10},
        {"c.f16", AE_DT_F16, 3, s_f16, f16, 6},      {"d.i32", AE_DT_I32, 2, s_i32, i32, 16},
        {"e.scalar", AE_DT_F32, 0, NULL, &scalar, 4}, {"f.empty", AE_DT_BF16, 2, s_empty, NULL, 0},
        {"na\"me\\with\nodd ü", AE_DT_I32, 1, s_i32, i32, 16},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const ae_st_tensor *t = ae_st_find(s, want[i].name);
        assert_non_null(t);
        assert_ptr_equal(t, ae_st_at(s, i)); // insertion order == offset order
        assert_int_equal(t->dtype, want[i].dt);
        assert_int_equal(t->ndim, want[i].nd);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], want[i].shape[d]);
        assert_int_equal(t->nbytes, want[i].nbytes);
        if (want[i].nbytes) assert_memory_equal(t->data, want[i].data, want[i].nbytes);
    }
    assert_int_equal(ae_st_find(s, "e.scalar")->numel, 1);
    assert_int_equal(ae_st_find(s, "f.empty")->numel, 0);
    float out[6];
    assert_int_equal(ae_st_to_f32(ae_st_find(s, "b.f32"), out), AE_OK);
    assert_memory_equal(out, f32, sizeof f32);
    assert_int_equal(ae_st_to_f32(ae_st_find(s, "c.f16"), out), AE_OK);
    assert_true(out[0] == 1.0f && out[2] == 65504.0f);

    // re-writing what we read gives a byte-identical file
    assert_int_equal(ae_st_writer_init(&w), AE_OK);
    assert_int_equal(ae_st_writer_metadata(w, "format", ae_st_metadata(s, "format")), AE_OK);
    assert_int_equal(ae_st_writer_metadata(w, "note", ae_st_metadata(s, "note")), AE_OK);
    for (size_t i = 0; i < ae_st_count(s); i++) {
        const ae_st_tensor *t = ae_st_at(s, i);
        assert_int_equal(ae_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), AE_OK);
    }
    assert_int_equal(ae_st_writer_finish(w, path2), AE_OK);
    char *raw2;
    size_t raw2_len;
    assert_int_equal(ae_file_read_all(path2, &raw2, &raw2_len), AE_OK);
    assert_int_equal(raw2_len, raw_len);
    assert_memory_equal(raw, raw2, raw_len);
    ae_st_close(s);
    free(raw);
    free(raw2);

    // writing into a missing folder fails with the path named, and leaves nothing behind
    char *bad = ae_path_join(dir, "no/such/x.safetensors");
    assert_int_equal(ae_st_writer_init(&w), AE_OK);
    assert_int_equal(ae_st_writer_add(w, "x", AE_DT_F32, 0, NULL, &scalar), AE_OK);
    assert_int_equal(ae_st_writer_finish(w, bad), AE_ERR_IO);
    assert_non_null(strstr(ae_last_error(), "no/such/x.safetensors"));
    free(bad);

    // a file with no tensors and no metadata is valid
    assert_int_equal(ae_st_writer_init(&w), AE_OK);
    assert_int_equal(ae_st_writer_finish(w, path), AE_OK);
    assert_int_equal(ae_st_open_file(path, &s), AE_OK);
    assert_int_equal(ae_st_count(s), 0);
    assert_null(ae_st_metadata(s, "format"));
    ae_st_close(s);

    free(path);
    free(path2);
    ae_test_rmtree(dir);
    free(dir);
}

// Data pointers may be unaligned: an F32/BF16 tensor after a 1-byte U8 tensor.
static void test_unaligned_data(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *path = ae_path_join(dir, "u.safetensors");
    unsigned char data[1 + 8 + 4];
    data[0] = 7;
    float v[2] = {1.25f, -3.5f};
    memcpy(data + 1, v, 8);
    uint16_t b[2] = {ae_f32_to_bf16(0.5f), ae_f32_to_bf16(-2.0f)};
    memcpy(data + 9, b, 4);
    craft(path,
          "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
          "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
          "\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[9,13]}}",
          data, sizeof data, -1);
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_file(path, &s), AE_OK);
    float out[2];
    assert_int_equal(ae_st_to_f32(ae_st_find(s, "f"), out), AE_OK);
    assert_true(out[0] == 1.25f && out[1] == -3.5f);
    assert_int_equal(ae_st_to_f32(ae_st_find(s, "h"), out), AE_OK);
    assert_true(out[0] == 0.5f && out[1] == -2.0f);
    ae_st_close(s);
    free(path);
    ae_test_rmtree(dir);
    free(dir);
}

// ---- negative: one crafted file per rule --------------------------------------------------------

#define T_A "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_bad_files(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char path[4096];
#define BAD(fname, header, dlen, hl, want, what)                                              \
    do {                                                                                      \
        snprintf(path, sizeof path, "%s/%s", dir, fname);                                     \
        craft(path, header, k_data16, dlen, hl);                                              \
        if ((hl) < 0)                                                                         \
            snprintf(g_what, sizeof g_what, "header `%s`, %d data bytes", header, (int)(dlen)); \
        else                                                                                  \
            snprintf(g_what, sizeof g_what, "header `%s` with header length %lld, %d data bytes", \
                     header, (long long)(hl), (int)(dlen));                                   \
        expect_bad_file(path, want, what);                                                    \
    } while (0)

    // sanity: the base file is fine
    snprintf(path, sizeof path, "%s/ok.safetensors", dir);
    craft(path, "{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
          k_data16, 12, -1);
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_file(path, &s), AE_OK);
    ae_st_close(s);

    BAD("start.st", " {" T_A "}", 8, -1, AE_ERR_FORMAT, "start with '{'");
    BAD("array.st", "[1,2]   ", 0, -1, AE_ERR_FORMAT, "start with '{'");
    BAD("hlen.st", "{" T_A "}", 8, 4000, AE_ERR_FORMAT, "exceeds the file size");
    BAD("huge.st", "{" T_A "}", 8, 100000001, AE_ERR_FORMAT, "limit");
    BAD("oob.st", "{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 12,
        -1, AE_ERR_FORMAT, "out of bounds");
    BAD("gap.st", "{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 16,
        -1, AE_ERR_FORMAT, "gap");
    BAD("overlap.st", "{" T_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        8, -1, AE_ERR_FORMAT, "overlaps");
    BAD("count.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, -1,
        AE_ERR_FORMAT, "needs 12 bytes");
    BAD("trail.st", "{" T_A "}", 16, -1, AE_ERR_FORMAT, "trailing bytes");
    BAD("trunc.st", "{" T_A "}", 6, -1, AE_ERR_FORMAT, "out of bounds");
    BAD("dup.st", "{" T_A ",\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
        -1, AE_ERR_FORMAT, "duplicate tensor name \"a\"");
    BAD("dtype.st", "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1,
        AE_ERR_FORMAT, "unknown dtype \"F33\"");
    BAD("meta.st", "{\"__metadata__\":{\"k\":1}," T_A "}", 8, -1, AE_ERR_FORMAT, "__metadata__");
    BAD("meta2.st", "{\"__metadata__\":[\"k\"]," T_A "}", 8, -1, AE_ERR_FORMAT, "__metadata__");
    BAD("negdim.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, -1,
        AE_ERR_FORMAT, "shape[0]");
    BAD("fracdim.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, -1,
        AE_ERR_FORMAT, "shape[0]");
    BAD("overflow.st",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}",
        8, -1, AE_ERR_FORMAT, "overflow");
    BAD("backwards.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, -1,
        AE_ERR_FORMAT, "end < begin");
    BAD("offs.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, -1,
        AE_ERR_FORMAT, "data_offsets");
    BAD("nodtype.st", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1, AE_ERR_FORMAT,
        "dtype");
    BAD("json.st", "{\"a\":{\"dtype\":\"F32\",", 0, -1, AE_ERR_FORMAT, "not valid JSON");
    BAD("garbage.st", "{" T_A "}xx", 8, -1, AE_ERR_FORMAT, "trailing characters");
    BAD("utf8.st", "{\"\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, -1,
        AE_ERR_FORMAT, "UTF-8");
    BAD("dims.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}",
        8, -1, AE_ERR_UNSUPPORTED, "dimensions");
    // NUL padding is not whitespace
    snprintf(path, sizeof path, "%s/nulpad.st", dir);
    {
        const char h[] = "{" T_A "}\0\0\0";
        unsigned char buf[8 + sizeof h - 1 + 8];
        uint64_t hl = sizeof h - 1;
        for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hl >> (8 * i));
        memcpy(buf + 8, h, hl);
        memcpy(buf + 8 + hl, k_data16, 8);
        assert_int_equal(ae_test_write_file(path, buf, sizeof buf), 0);
        snprintf(g_what, sizeof g_what, "header `{" T_A "}` padded with NUL bytes");
        expect_bad_file(path, AE_ERR_FORMAT, "trailing characters");
    }
    // shorter than the 8-byte length prefix, and empty
    snprintf(path, sizeof path, "%s/tiny.st", dir);
    assert_int_equal(ae_test_write_file(path, "\x10\0\0", 3), 0);
    snprintf(g_what, sizeof g_what, "a file of 3 bytes");
    expect_bad_file(path, AE_ERR_FORMAT, "too small");
    snprintf(path, sizeof path, "%s/empty.st", dir);
    assert_int_equal(ae_test_write_file(path, "", 0), 0);
    snprintf(g_what, sizeof g_what, "an empty file");
    expect_bad_file(path, AE_ERR_FORMAT, "too small");
    // missing file
    snprintf(path, sizeof path, "%s/missing.st", dir);
    snprintf(g_what, sizeof g_what, "a file that does not exist");
    expect_bad_file(path, AE_ERR_IO, NULL);
    // empty folder
    assert_int_equal(ae_st_open_dir(dir, &s), AE_ERR_IO);
    assert_non_null(strstr(ae_last_error(), dir));
#undef BAD
    ae_test_rmtree(dir);
    free(dir);
}

// ---- sharded folders ----------------------------------------------------------------------------

static void write_shard(const char *dir, const char *fname, const char *const *names, int n) {
    static const float vals[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    ae_st_writer *w = NULL;
    assert_int_equal(ae_st_writer_init(&w), AE_OK);
    assert_int_equal(ae_st_writer_metadata(w, "format", "pt"), AE_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(ae_st_writer_add(w, names[i], AE_DT_F32, 1, shape, vals), AE_OK);
    char *p = ae_path_join(dir, fname);
    assert_int_equal(ae_st_writer_finish(w, p), AE_OK);
    free(p);
}

static void write_index(const char *dir, const char *json) {
    char *p = ae_path_join(dir, "model.safetensors.index.json");
    assert_int_equal(ae_test_write_file(p, json, strlen(json)), 0);
    free(p);
}

static void expect_bad_dir(const char *dir, ae_status want, const char *what1, const char *what2) {
    ae_st_set *s = (ae_st_set *)0x1;
    ae_status st = ae_st_open_dir(dir, &s);
    const char *m = ae_last_error();
    if (st != want || !strstr(m, what1) || (what2 && !strstr(m, what2)))
        fail_msg("%s: got %s \"%s\", want %s mentioning \"%s\" and \"%s\"", dir,
                 ae_status_name(st), m, ae_status_name(want), what1, what2 ? what2 : "");
    assert_null(s);
    ae_test_catalogue("sharded folders: model.safetensors.index.json", g_what, m);
}

#define SH1 "model-00001-of-00002.safetensors"
#define SH2 "model-00002-of-00002.safetensors"

static void test_sharded(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    static const char *const n1[] = {"model.embed_tokens.weight", "model.layers.0.w"};
    static const char *const n2[] = {"model.layers.1.w", "model.norm.weight"};
    write_shard(dir, SH1, n1, 2);
    write_shard(dir, SH2, n2, 2);
    // metadata is not trusted (nonsense total_size is ignored)
    write_index(dir, "{\"metadata\":{\"total_size\":\"bogus\"},\"weight_map\":{"
                     "\"model.norm.weight\":\"" SH2 "\",\"model.layers.1.w\":\"" SH2 "\","
                     "\"model.layers.0.w\":\"" SH1 "\",\"model.embed_tokens.weight\":\"" SH1 "\"}}");
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_dir(dir, &s), AE_OK);
    assert_int_equal(ae_st_count(s), 4);
    const ae_st_tensor *t = ae_st_find(s, "model.layers.1.w");
    assert_non_null(t);
    assert_non_null(strstr(t->file, SH2));
    assert_non_null(strstr(ae_st_find(s, "model.embed_tokens.weight")->file, SH1));
    assert_string_equal(ae_st_metadata(s, "format"), "pt");
    float out[4];
    int64_t shp[1] = {4};
    assert_int_equal(ae_st_load_f32(s, "model.norm.weight", 1, shp, out), AE_OK);
    assert_true(out[3] == 4.0f);
    ae_st_close(s);

    // a shard the index names is missing
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":\"" SH2 "\",\"model.layers.1.w\":\""
                     SH2 "\",\"model.layers.0.w\":\"" SH1 "\",\"model.embed_tokens.weight\":\"" SH1
                     "\",\"model.extra\":\"model-00003-of-00003.safetensors\"}}");
    snprintf(g_what, sizeof g_what, "the index names a shard that is not there");
    expect_bad_dir(dir, AE_ERR_IO, "model-00003-of-00003.safetensors", "index.json");
    // the index puts a tensor in a shard that does not hold it
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":\"" SH2 "\",\"model.layers.1.w\":\""
                     SH2 "\",\"model.layers.0.w\":\"" SH1 "\",\"model.embed_tokens.weight\":\"" SH1
                     "\",\"model.ghost\":\"" SH1 "\"}}");
    snprintf(g_what, sizeof g_what, "the index puts a tensor in a shard that does not hold it");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.ghost", SH1);
    // ... or in the wrong shard
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":\"" SH1 "\",\"model.layers.1.w\":\""
                     SH2 "\",\"model.layers.0.w\":\"" SH1 "\",\"model.embed_tokens.weight\":\"" SH1
                     "\"}}");
    snprintf(g_what, sizeof g_what, "the index puts a tensor in the wrong shard");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.norm.weight", SH2);
    // a shard holds a tensor the index does not list
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":\"" SH2 "\",\"model.layers.0.w\":\""
                     SH1 "\",\"model.embed_tokens.weight\":\"" SH1 "\"}}");
    snprintf(g_what, sizeof g_what, "a shard holds a tensor the index does not list");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.layers.1.w", SH2);
    // malformed index JSON, missing weight_map, non-string shard, path escape
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":");
    snprintf(g_what, sizeof g_what, "the index is `{\"weight_map\":{\"model.norm.weight\":`");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.safetensors.index.json", "not valid JSON");
    write_index(dir, "{\"metadata\":{}}");
    snprintf(g_what, sizeof g_what, "the index is `{\"metadata\":{}}`");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.safetensors.index.json", "weight_map");
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":2}}");
    snprintf(g_what, sizeof g_what,
             "a shard name that is not a string: `{\"weight_map\":{\"model.norm.weight\":2}}`");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.safetensors.index.json", "model.norm.weight");
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}");
    snprintf(g_what, sizeof g_what,
             "a shard name outside the folder: "
             "`{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}`");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.safetensors.index.json", "model.norm.weight");
    // a bad shard file is reported by its own name
    char *p = ae_path_join(dir, SH2);
    assert_int_equal(ae_test_write_file(p, "\x04\0\0\0\0\0\0\0[]  ", 12), 0);
    write_index(dir, "{\"weight_map\":{\"model.norm.weight\":\"" SH2 "\"}}");
    snprintf(g_what, sizeof g_what, "a shard whose header is `[]`");
    expect_bad_dir(dir, AE_ERR_FORMAT, SH2, "start with '{'");
    free(p);
    // the same tensor in two shards
    write_shard(dir, SH2, n1, 1);
    write_index(dir, "{\"weight_map\":{\"model.embed_tokens.weight\":\"" SH1
                     "\",\"model.layers.0.w\":\"" SH1 "\",\"model.x\":\"" SH2 "\"}}");
    snprintf(g_what, sizeof g_what, "the same tensor in two shards");
    expect_bad_dir(dir, AE_ERR_FORMAT, "model.embed_tokens.weight", SH2);

    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_micro),     cmocka_unit_test(test_read_fixtures),
        cmocka_unit_test(test_read_shared_teachers), cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_unaligned_data), cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_sharded),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
