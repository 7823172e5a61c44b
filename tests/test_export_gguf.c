// attnedit export --format gguf: the GGUF v3 writer's files parsed back by a small reader here
// (header, metadata, tensor infos, offsets and 32-byte alignment, data bit-exact for f32);
// teacher (qwen3, qwen3moe with stacked experts, untied head) and MLA student (deepseek2, split
// attn_k_b / attn_v_b, q_lora_rank 0 and > 0) exports against the model's own tensors; bf16 by
// round-to-nearest-even with norms and the router kept f32; the tokenizer metadata (padding
// ids, token types, merges, special ids); MLA student of a Qwen3-MoE teacher (deepseek2 with
// leading dense layers, stacked experts, softmax gating, zero shared expert); refusals (GateSWA,
// MoE student with a dense layer after a MoE one, mixed student,
// sliding-window teacher, partly dense MoE, existing output without --force, a folder) with
// nothing written; disk full mid-write leaves nothing. tests/test_gguf_llama.sh runs the files
// in llama.cpp.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/file.h"
#include "export/export.h"
#include "export/gguf_write.h"
#include "model/save.h"
#include "model/student.h"
#include "util/testutil.h"

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *micro(void) { return ae_test_src("models/qwen3-micro"); }

// ---------------------------------------------------------------------------------------------
// A GGUF reader for the checks (independent of the writer).

typedef struct {
    char key[128];
    uint32_t type, arr_type;
    uint64_t n;                 // array length
    const unsigned char *val;   // value bytes (arrays: the first element)
} rkv;

typedef struct {
    char name[128];
    uint32_t ndim, type;
    uint64_t ne[4], off;
} rti;

typedef struct {
    char *buf;
    size_t len, pos, data;
    uint64_t n_t, n_kv;
    rkv *kv;
    rti *ti;
} rgguf;

static uint64_t rd(rgguf *r, int bytes) {
    assert_true(r->pos + (size_t)bytes <= r->len);
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)(unsigned char)r->buf[r->pos + i] << (8 * i);
    r->pos += (size_t)bytes;
    return v;
}

static void rd_str(rgguf *r, char *out, size_t cap) {
    uint64_t n = rd(r, 8);
    assert_true(r->pos + n <= r->len);
    if (out) {
        assert_true(n < cap);
        memcpy(out, r->buf + r->pos, n);
        out[n] = '\0';
    }
    r->pos += n;
}

static void skip_value(rgguf *r, uint32_t type) {
    static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert_true(type <= 12 && type != 9);
    if (type == 8) rd_str(r, NULL, 0);
    else r->pos += (size_t)size[type];
    assert_true(r->pos <= r->len);
}

static void gguf_read(const char *path, rgguf *r) {
    memset(r, 0, sizeof *r);
    assert_int_equal(ae_file_read_all(path, &r->buf, &r->len), AE_OK);
    assert_memory_equal(r->buf, "GGUF", 4);
    r->pos = 4;
    assert_int_equal(rd(r, 4), 3);
    r->n_t = rd(r, 8);
    r->n_kv = rd(r, 8);
    r->kv = calloc(r->n_kv + 1, sizeof *r->kv);
    r->ti = calloc(r->n_t + 1, sizeof *r->ti);
    for (uint64_t i = 0; i < r->n_kv; i++) {
        rkv *k = &r->kv[i];
        rd_str(r, k->key, sizeof k->key);
        k->type = (uint32_t)rd(r, 4);
        if (k->type == AE_GGUF_TYPE_ARRAY) {
            k->arr_type = (uint32_t)rd(r, 4);
            k->n = rd(r, 8);
            k->val = (const unsigned char *)r->buf + r->pos;
            for (uint64_t j = 0; j < k->n; j++) skip_value(r, k->arr_type);
        } else {
            k->val = (const unsigned char *)r->buf + r->pos;
            skip_value(r, k->type);
        }
    }
    uint32_t align = 32;
    for (uint64_t i = 0; i < r->n_t; i++) {
        rti *t = &r->ti[i];
        rd_str(r, t->name, sizeof t->name);
        t->ndim = (uint32_t)rd(r, 4);
        assert_true(t->ndim >= 1 && t->ndim <= 4);
        for (uint32_t d = 0; d < 4; d++) t->ne[d] = d < t->ndim ? rd(r, 8) : 1;
        t->type = (uint32_t)rd(r, 4);
        t->off = rd(r, 8);
        assert_int_equal(t->off % align, 0);
    }
    r->data = (r->pos + align - 1) / align * align;
    for (size_t i = r->pos; i < r->data; i++) assert_int_equal(r->buf[i], 0); // zero padding
    // tensors in order, without overlap, inside the file; the file ends at the last one's
    // padded end
    uint64_t end = 0;
    for (uint64_t i = 0; i < r->n_t; i++) {
        rti *t = &r->ti[i];
        uint64_t bytes = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] * (t->type == 0 ? 4 : 2);
        assert_true(t->off >= end);
        end = (t->off + bytes + align - 1) / align * align;
    }
    assert_int_equal(r->data + end, r->len);
}

static void gguf_close(rgguf *r) {
    free(r->buf);
    free(r->kv);
    free(r->ti);
}

static const rkv *kv(const rgguf *r, const char *key) {
    for (uint64_t i = 0; i < r->n_kv; i++)
        if (!strcmp(r->kv[i].key, key)) return &r->kv[i];
    return NULL;
}

static uint32_t kv_u32(const rgguf *r, const char *key) {
    const rkv *k = kv(r, key);
    if (!k) fail_msg("no key %s", key);
    assert_int_equal(k->type, AE_GGUF_TYPE_UINT32);
    return (uint32_t)k->val[0] | (uint32_t)k->val[1] << 8 | (uint32_t)k->val[2] << 16 |
           (uint32_t)k->val[3] << 24;
}

// String value (or element i of a string array) compared with s.
static int kv_str_is(const rgguf *r, const char *key, uint64_t i, const char *s) {
    const rkv *k = kv(r, key);
    if (!k) fail_msg("no key %s", key);
    const unsigned char *p = k->val;
    if (k->type == AE_GGUF_TYPE_ARRAY) {
        assert_int_equal(k->arr_type, AE_GGUF_TYPE_STRING);
        assert_true(i < k->n);
        for (uint64_t j = 0; j < i; j++) {
            uint64_t n = 0;
            for (int b = 0; b < 8; b++) n |= (uint64_t)p[b] << (8 * b);
            p += 8 + n;
        }
    } else assert_int_equal(k->type, AE_GGUF_TYPE_STRING);
    uint64_t n = 0;
    for (int b = 0; b < 8; b++) n |= (uint64_t)p[b] << (8 * b);
    return n == strlen(s) && !memcmp(p + 8, s, n);
}

static int32_t kv_arr_i32(const rgguf *r, const char *key, uint64_t i) {
    const rkv *k = kv(r, key);
    assert_non_null(k);
    assert_int_equal(k->arr_type, AE_GGUF_TYPE_INT32);
    assert_true(i < k->n);
    const unsigned char *p = k->val + 4 * i;
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static const rti *tensor(const rgguf *r, const char *name) {
    for (uint64_t i = 0; i < r->n_t; i++)
        if (!strcmp(r->ti[i].name, name)) return &r->ti[i];
    return NULL;
}

static const void *tdata(const rgguf *r, const rti *t) { return r->buf + r->data + t->off; }

static void assert_shape(const rti *t, uint32_t type, uint64_t n0, uint64_t n1, uint64_t n2) {
    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->ne[0], n0);
    assert_int_equal(t->ne[1], n1);
    assert_int_equal(t->ne[2], n2);
}

// ---------------------------------------------------------------------------------------------

static ae_status export_gguf(const char *model, const char *out, ae_dtype dt, int force) {
    ae_export_opts o = {.dtype = dt, .force = force};
    return ae_export_gguf(model, out, &o, NULL);
}

static void export_ok(const char *model, const char *out, ae_dtype dt) {
    if (export_gguf(model, out, dt, 1) != AE_OK) fail_msg("%s: %s", model, ae_last_error());
}

static void assert_f32_equal(const rgguf *r, const char *name, const float *want, size_t n) {
    const rti *t = tensor(r, name);
    if (!t) fail_msg("no tensor %s", name);
    assert_int_equal(t->type, AE_GGML_F32);
    assert_int_equal(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3], n);
    if (memcmp(tdata(r, t), want, n * 4)) fail_msg("tensor %s differs", name);
}

// The writer alone: metadata of every type, tensors of each type, offsets, alignment, data.
static void test_writer_roundtrip(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *path = ae_test_path_in(dir, "w.gguf");
    ae_gguf *g;
    assert_int_equal(ae_gguf_init(&g), AE_OK);
    const char *strs[] = {"a", "", "ĠThe"};
    int32_t ints[] = {1, -3, 5};
    assert_int_equal(ae_gguf_set_str(g, "general.architecture", "test"), AE_OK);
    assert_int_equal(ae_gguf_set_u32(g, "k.u32", 4000000000u), AE_OK);
    assert_int_equal(ae_gguf_set_f32(g, "k.f32", 1e-6f), AE_OK);
    assert_int_equal(ae_gguf_set_bool(g, "k.bool", 1), AE_OK);
    assert_int_equal(ae_gguf_set_arr_str(g, "k.strs", strs, 3), AE_OK);
    assert_int_equal(ae_gguf_set_arr_i32(g, "k.ints", ints, 3), AE_OK);
    assert_int_equal(ae_gguf_set_u32(g, "k.u32", 1), AE_ERR_ARG); // twice
    float a[3 * 5], b[7];
    uint16_t c[2 * 3 * 4];
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.25f - 1;
    for (int i = 0; i < 7; i++) b[i] = (float)-i;
    for (int i = 0; i < 24; i++) c[i] = (uint16_t)(i * 977);
    assert_int_equal(ae_gguf_add_tensor(g, "a", AE_GGML_F32, 2, (int64_t[]){5, 3}), AE_OK);
    assert_int_equal(ae_gguf_add_tensor(g, "b", AE_GGML_F32, 1, (int64_t[]){7}), AE_OK);
    assert_int_equal(ae_gguf_add_tensor(g, "c", AE_GGML_BF16, 3, (int64_t[]){4, 3, 2}), AE_OK);
    assert_int_equal(ae_gguf_add_tensor(g, "b", AE_GGML_F32, 1, (int64_t[]){7}), AE_ERR_ARG);
    assert_int_equal(ae_gguf_add_tensor(g, "z", AE_GGML_F32, 1, (int64_t[]){0}), AE_ERR_ARG);
    ae_atomic_file f;
    assert_int_equal(ae_atomic_open(&f, path), AE_OK);
    assert_int_equal(ae_gguf_write_header(g, &f), AE_OK);
    assert_int_equal(ae_gguf_write_tensor(g, &f, a, sizeof a), AE_OK);
    assert_int_equal(ae_gguf_check_complete(g), AE_ERR_ARG); // 2 of 3 missing
    assert_int_equal(ae_gguf_write_tensor(g, &f, b, 4), AE_ERR_ARG); // wrong size
    assert_int_equal(ae_gguf_write_tensor(g, &f, b, sizeof b), AE_OK);
    assert_int_equal(ae_gguf_write_tensor(g, &f, c, sizeof c), AE_OK);
    assert_int_equal(ae_gguf_check_complete(g), AE_OK);
    assert_int_equal(ae_atomic_commit(&f), AE_OK);
    ae_gguf_free(g);
    rgguf r;
    gguf_read(path, &r);
    assert_int_equal(r.n_kv, 6);
    assert_int_equal(r.n_t, 3);
    assert_true(kv_str_is(&r, "general.architecture", 0, "test"));
    assert_int_equal(kv_u32(&r, "k.u32"), 4000000000u);
    float e;
    memcpy(&e, kv(&r, "k.f32")->val, 4);
    assert_true(e == 1e-6f);
    assert_int_equal(kv(&r, "k.bool")->val[0], 1);
    assert_true(kv_str_is(&r, "k.strs", 0, "a") && kv_str_is(&r, "k.strs", 1, "") &&
                kv_str_is(&r, "k.strs", 2, "ĠThe"));
    assert_int_equal(kv_arr_i32(&r, "k.ints", 1), -3);
    assert_shape(tensor(&r, "a"), AE_GGML_F32, 5, 3, 1);
    assert_int_equal(tensor(&r, "a")->off, 0);
    assert_int_equal(tensor(&r, "b")->off, 64);  // 60 bytes, padded to 64
    assert_int_equal(tensor(&r, "c")->off, 96);  // 28 bytes, padded to 32
    assert_shape(tensor(&r, "c"), AE_GGML_BF16, 4, 3, 2);
    assert_memory_equal(tdata(&r, tensor(&r, "a")), a, sizeof a);
    assert_memory_equal(tdata(&r, tensor(&r, "b")), b, sizeof b);
    assert_memory_equal(tdata(&r, tensor(&r, "c")), c, sizeof c);
    assert_int_equal(r.data % 32, 0);
    gguf_close(&r);
    ae_test_rmtree(dir);
    free(path);
    free(dir);
}

// Every tensor of an f32 export equals the model's, bit for bit (walk of the GGUF names the
// exporter should produce from the model's tensors).
static void check_common(const rgguf *r, const ae_model *m, const char *arch) {
    const ae_config *c = &m->cfg;
    char key[128];
    assert_true(kv_str_is(r, "general.architecture", 0, arch));
    snprintf(key, sizeof key, "%s.block_count", arch);
    assert_int_equal(kv_u32(r, key), c->num_hidden_layers);
    snprintf(key, sizeof key, "%s.embedding_length", arch);
    assert_int_equal(kv_u32(r, key), c->hidden_size);
    snprintf(key, sizeof key, "%s.attention.head_count", arch);
    assert_int_equal(kv_u32(r, key), c->num_attention_heads);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    assert_non_null(kv(r, key));
    assert_int_equal(kv_u32(r, "general.file_type"), 0);
    assert_f32_equal(r, "token_embd.weight", m->embed.data, (size_t)c->vocab_size * c->hidden_size);
    assert_f32_equal(r, "output_norm.weight", m->final_norm.data, (size_t)c->hidden_size);
    if (c->tie_word_embeddings) assert_null(tensor(r, "output.weight"));
    else assert_f32_equal(r, "output.weight", m->lm_head.data, (size_t)c->vocab_size * c->hidden_size);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_layer *L = &m->layers[l];
        char n[96];
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", l);
        assert_f32_equal(r, n, L->input_norm.data, (size_t)c->hidden_size);
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", l);
        assert_f32_equal(r, n, L->post_norm.data, (size_t)c->hidden_size);
        if (!L->is_moe) {
            size_t sz = (size_t)c->intermediate_size * c->hidden_size;
            snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", l);
            assert_f32_equal(r, n, L->w_gate.data, sz);
            assert_shape(tensor(r, n), AE_GGML_F32, c->hidden_size, c->intermediate_size, 1);
            snprintf(n, sizeof n, "blk.%d.ffn_down.weight", l);
            assert_f32_equal(r, n, L->w_down.data, sz);
            assert_shape(tensor(r, n), AE_GGML_F32, c->intermediate_size, c->hidden_size, 1);
        }
    }
}

static void test_export_teacher_f32(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "t.gguf");
    export_ok(micro(), out, AE_DT_F32);
    ae_model *m = ae_test_load_cpu(micro());
    rgguf r;
    gguf_read(out, &r);
    check_common(&r, m, "qwen3");
    const ae_config *c = &m->cfg;
    assert_int_equal(r.n_t, 2 + 11 * c->num_hidden_layers); // tied: no output.weight
    assert_int_equal(kv_u32(&r, "qwen3.attention.head_count_kv"), c->num_key_value_heads);
    assert_int_equal(kv_u32(&r, "qwen3.attention.key_length"), c->head_dim);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_gswa *a = &m->layers[l].gqa;
        char n[96];
        snprintf(n, sizeof n, "blk.%d.attn_k.weight", l);
        assert_f32_equal(&r, n, a->wk.data, (size_t)c->num_key_value_heads * c->head_dim * c->hidden_size);
        assert_shape(tensor(&r, n), AE_GGML_F32, c->hidden_size, c->num_key_value_heads * c->head_dim, 1);
        snprintf(n, sizeof n, "blk.%d.attn_q_norm.weight", l);
        assert_f32_equal(&r, n, a->q_norm.data, (size_t)c->head_dim);
    }
    // tokenizer: the 8,189 BPE tokens, 3 special ones (control), merges, ids
    assert_true(kv_str_is(&r, "tokenizer.ggml.model", 0, "gpt2"));
    assert_true(kv_str_is(&r, "tokenizer.ggml.pre", 0, "qwen2"));
    assert_int_equal(kv(&r, "tokenizer.ggml.tokens")->n, 8192);
    assert_true(kv_str_is(&r, "tokenizer.ggml.tokens", 8189, "<|endoftext|>"));
    assert_true(kv_str_is(&r, "tokenizer.ggml.tokens", 0, "!"));
    assert_int_equal(kv_arr_i32(&r, "tokenizer.ggml.token_type", 8189), 3);
    assert_int_equal(kv_arr_i32(&r, "tokenizer.ggml.token_type", 8191), 3);
    assert_int_equal(kv_arr_i32(&r, "tokenizer.ggml.token_type", 100), 1);
    assert_int_equal(kv(&r, "tokenizer.ggml.merges")->n, 7933);
    assert_true(kv_str_is(&r, "tokenizer.ggml.merges", 0, "Ġ t"));
    assert_int_equal(kv_u32(&r, "tokenizer.ggml.eos_token_id"), 8189);
    assert_int_equal(kv_u32(&r, "tokenizer.ggml.bos_token_id"), 8189);
    // llama.cpp's key for the padding id (LLM_KV_TOKENIZER_PAD_ID), as its converter writes it
    assert_int_equal(kv_u32(&r, "tokenizer.ggml.padding_token_id"), 8189);
    assert_null(kv(&r, "tokenizer.ggml.pad_token_id"));
    assert_int_equal(kv(&r, "tokenizer.ggml.add_bos_token")->val[0], 0);
    gguf_close(&r);
    ae_model_free(m);
    // an untied dense teacher writes output.weight
    const char *untied = ae_test_src("tests/fixtures/models/dense_gqa2_untied");
    char *fx = ae_test_path_in(dir, "untied"), *tokp = ae_test_path_in(fx, "tokenizer.json");
    ae_model *u = ae_test_load_cpu(untied);
    ae_save_opts so = {.src_dir = untied, .force = 1};
    assert_int_equal(ae_model_save(u, fx, &so), AE_OK);
    ae_model_free(u);
    // a tokenizer of a few ids (the fixture has none): unused ids become [PAD<i>]
    static const char tok[] =
        "{\"added_tokens\":[{\"id\":5,\"content\":\"<|endoftext|>\",\"special\":true},"
        "{\"id\":6,\"content\":\"<think>\",\"special\":false}],"
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
        "{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?"
        "[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]},"
        "\"post_processor\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",\"b\"],[\"a b\",\"c\"]]}}";
    assert_int_equal(ae_test_write_file(tokp, tok, strlen(tok)), 0);
    export_ok(fx, out, AE_DT_F32);
    m = ae_test_load_cpu(fx);
    gguf_read(out, &r);
    check_common(&r, m, "qwen3");
    assert_int_equal(kv(&r, "tokenizer.ggml.tokens")->n, m->cfg.vocab_size);
    assert_true(kv_str_is(&r, "tokenizer.ggml.tokens", 3, "[PAD3]"));
    assert_int_equal(kv_arr_i32(&r, "tokenizer.ggml.token_type", 3), 5);
    assert_int_equal(kv_arr_i32(&r, "tokenizer.ggml.token_type", 5), 3);
    assert_int_equal(kv_arr_i32(&r, "tokenizer.ggml.token_type", 6), 4);
    assert_true(kv_str_is(&r, "tokenizer.ggml.merges", 1, "aĠb c"));
    gguf_close(&r);
    ae_model_free(m);
    // a tokenizer with another pre-tokenizer is refused
    cJSON *o = cJSON_Parse(tok);
    cJSON_ReplaceItemInObject(o, "pre_tokenizer", cJSON_CreateNull());
    char *text = cJSON_Print(o);
    assert_int_equal(ae_test_write_file(tokp, text, strlen(text)), 0);
    free(text);
    cJSON_Delete(o);
    unlink(out);
    assert_int_equal(export_gguf(fx, out, AE_DT_F32, 0), AE_ERR_UNSUPPORTED);
    assert_non_null(strstr(ae_last_error(), "pre-tokenizer"));
    assert_false(ae_path_exists(out));
    free(tokp);
    free(fx);
    ae_test_rmtree(dir);
    free(out);
    free(dir);
}

static char *with_tokenizer(const char *fixture, const char *dir, const char *name) {
    char *fx = ae_test_path_in(dir, name);
    ae_model *m = ae_test_load_cpu(fixture);
    ae_save_opts so = {.src_dir = fixture, .force = 1};
    assert_int_equal(ae_model_save(m, fx, &so), AE_OK);
    ae_model_free(m);
    static const char tok[] =
        "{\"added_tokens\":[],\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
        "\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
        "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|"
        "\\\\s+\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]},"
        "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    char *p = ae_test_path_in(fx, "tokenizer.json");
    assert_int_equal(ae_test_write_file(p, tok, strlen(tok)), 0);
    free(p);
    return fx;
}

// qwen3moe: experts stacked (ne {D, Im, E} / {Im, D, E}), router f32 even in bf16.
static void test_export_moe_teacher(void **state) {
    (void)state;
    // The repository's MoE fixtures have dense layers (refused); the shared teacher has none.
    const char *moe = ae_test_shared("teachers/qwen3-moe", "qwen3-moe teacher (qwen3moe GGUF)");
    if (!moe) return;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "moe.gguf"), *fx = strdup(moe);
    export_ok(fx, out, AE_DT_F32);
    ae_model *m = ae_test_load_cpu(fx);
    const ae_config *c = &m->cfg;
    int64_t D = c->hidden_size, Im = c->moe_intermediate_size, E = c->num_experts;
    rgguf r;
    gguf_read(out, &r);
    check_common(&r, m, "qwen3moe");
    assert_int_equal(kv_u32(&r, "qwen3moe.expert_count"), E);
    assert_int_equal(kv_u32(&r, "qwen3moe.expert_used_count"), c->num_experts_per_tok);
    assert_int_equal(kv_u32(&r, "qwen3moe.expert_feed_forward_length"), Im);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_layer *L = &m->layers[l];
        char n[96];
        snprintf(n, sizeof n, "blk.%d.ffn_gate_exps.weight", l);
        assert_shape(tensor(&r, n), AE_GGML_F32, D, Im, E);
        assert_f32_equal(&r, n, L->e_gate.data, (size_t)(E * Im * D));
        snprintf(n, sizeof n, "blk.%d.ffn_down_exps.weight", l);
        assert_shape(tensor(&r, n), AE_GGML_F32, Im, D, E);
        assert_f32_equal(&r, n, L->e_down.data, (size_t)(E * Im * D));
        snprintf(n, sizeof n, "blk.%d.ffn_gate_inp.weight", l);
        assert_f32_equal(&r, n, L->router.data, (size_t)(E * D));
    }
    gguf_close(&r);
    export_ok(fx, out, AE_DT_BF16);
    gguf_read(out, &r);
    assert_shape(tensor(&r, "blk.0.ffn_gate_inp.weight"), AE_GGML_F32, D, E, 1);
    assert_shape(tensor(&r, "blk.0.ffn_up_exps.weight"), AE_GGML_BF16, D, Im, E);
    assert_shape(tensor(&r, "blk.0.attn_norm.weight"), AE_GGML_F32, D, 1, 1);
    assert_int_equal(kv_u32(&r, "general.file_type"), 32);
    const uint16_t *h = tdata(&r, tensor(&r, "blk.0.ffn_up_exps.weight"));
    const float *f = m->layers[0].e_up.data;
    for (int64_t i = 0; i < E * Im * D; i++) assert_int_equal(h[i], ae_f32_to_bf16(f[i]));
    gguf_close(&r);
    ae_model_free(m);
    free(fx);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

// deepseek2: kv_b_proj (H·(dn+dv), R) split per head into attn_k_b = W_UKᵀ (ne {dn, R, H})
// and attn_v_b = W_UV (ne {R, dv, H}).
// A Qwen3-MoE teacher of 2 layers from the fixture moe_sparse_step2_untied (decoder_sparse_step
// 2: layer 0 dense, layer 1 MoE, i.e. one leading dense layer), norm_topk_prob as given, with a
// tokenizer.
static char *leading_dense_moe(const char *dir, const char *name, int norm_topk_prob) {
    char *raw = ae_test_leading_dense_moe(dir, "moe2-raw", norm_topk_prob);
    char *t = with_tokenizer(raw, dir, name);
    ae_test_rmtree(raw);
    free(raw);
    return t;
}

// An MLA student of a Qwen3-MoE teacher -> deepseek2 with MoE layers after the leading dense
// ones: Qwen3-MoE's router (softmax, top k, renormalised when norm_topk_prob), stacked experts,
// one all-zero shared expert per MoE layer (deepseek2 requires its tensors).
static void test_export_moe_mla(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "s.gguf");
    for (int norm = 0; norm < 2; norm++) {
        char *t = leading_dense_moe(dir, "moe2", norm);
        ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8, .seed = 3};
        char *s = ae_test_save_student(t, &mla, dir, "s");
        export_ok(s, out, AE_DT_F32);
        ae_model *m = ae_test_load_cpu(s);
        const ae_config *c = &m->cfg;
        int64_t D = c->hidden_size, Im = c->moe_intermediate_size, E = c->num_experts, I = c->intermediate_size;
        assert_int_equal(c->num_hidden_layers, 2);
        assert_false(m->layers[0].is_moe);
        assert_true(m->layers[1].is_moe);
        rgguf r;
        gguf_read(out, &r);
        check_common(&r, m, "deepseek2");
        assert_int_equal(kv_u32(&r, "deepseek2.leading_dense_block_count"), 1);
        assert_int_equal(kv_u32(&r, "deepseek2.feed_forward_length"), I);
        assert_int_equal(kv_u32(&r, "deepseek2.expert_count"), E);
        assert_int_equal(kv_u32(&r, "deepseek2.expert_used_count"), c->num_experts_per_tok);
        assert_int_equal(kv_u32(&r, "deepseek2.expert_feed_forward_length"), Im);
        assert_int_equal(kv_u32(&r, "deepseek2.expert_shared_count"), 1);
        assert_int_equal(kv_u32(&r, "deepseek2.expert_gating_func"), 1); // softmax
        assert_int_equal(kv(&r, "deepseek2.expert_weights_norm")->val[0], norm);
        float scale;
        memcpy(&scale, kv(&r, "deepseek2.expert_weights_scale")->val, 4);
        assert_true(scale == 1.0f);
        assert_non_null(tensor(&r, "blk.0.ffn_up.weight"));
        assert_null(tensor(&r, "blk.0.ffn_gate_inp.weight"));
        const ae_layer *L = &m->layers[1];
        assert_null(tensor(&r, "blk.1.ffn_gate.weight"));
        assert_shape(tensor(&r, "blk.1.ffn_gate_exps.weight"), AE_GGML_F32, D, Im, E);
        assert_f32_equal(&r, "blk.1.ffn_gate_exps.weight", L->e_gate.data, (size_t)(E * Im * D));
        assert_shape(tensor(&r, "blk.1.ffn_up_exps.weight"), AE_GGML_F32, D, Im, E);
        assert_f32_equal(&r, "blk.1.ffn_up_exps.weight", L->e_up.data, (size_t)(E * Im * D));
        assert_shape(tensor(&r, "blk.1.ffn_down_exps.weight"), AE_GGML_F32, Im, D, E);
        assert_f32_equal(&r, "blk.1.ffn_down_exps.weight", L->e_down.data, (size_t)(E * Im * D));
        assert_shape(tensor(&r, "blk.1.ffn_gate_inp.weight"), AE_GGML_F32, D, E, 1);
        assert_f32_equal(&r, "blk.1.ffn_gate_inp.weight", L->router.data, (size_t)(E * D));
        static const char *const sh[] = {"gate", "up", "down"};
        for (int i = 0; i < 3; i++) {
            char n[64];
            snprintf(n, sizeof n, "blk.1.ffn_%s_shexp.weight", sh[i]);
            const rti *st = tensor(&r, n);
            if (i == 2) assert_shape(st, AE_GGML_F32, Im, D, 1);
            else assert_shape(st, AE_GGML_F32, D, Im, 1);
            const float *v = tdata(&r, st);
            for (int64_t k = 0; k < D * Im; k++) assert_true(v[k] == 0.0f);
        }
        assert_null(tensor(&r, "blk.0.ffn_gate_shexp.weight"));
        gguf_close(&r);
        // bf16: experts bf16, router and norms f32
        export_ok(s, out, AE_DT_BF16);
        gguf_read(out, &r);
        assert_shape(tensor(&r, "blk.1.ffn_down_exps.weight"), AE_GGML_BF16, Im, D, E);
        assert_shape(tensor(&r, "blk.1.ffn_gate_inp.weight"), AE_GGML_F32, D, E, 1);
        gguf_close(&r);
        printf("MoE MLA student (norm_topk_prob %d): deepseek2, 1 leading dense layer, %lld experts "
               "top %d, zero shared expert\n", norm, (long long)E, c->num_experts_per_tok);
        ae_model_free(m);
        free(s);
        free(t);
    }
    ae_test_rmtree(dir);
    free(out);
    free(dir);
}

static void check_mla(int q_lora_rank) {
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "mla.gguf");
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8,
                            .q_lora_rank = q_lora_rank, .seed = 3};
    char *s = ae_test_save_student(micro(), &spec, dir, "s");
    export_ok(s, out, AE_DT_F32);
    ae_model *m = ae_test_load_cpu(s);
    const ae_config *c = &m->cfg;
    int64_t H = c->num_attention_heads, R = c->kv_lora_rank, dn = c->qk_nope_head_dim,
            dv = c->v_head_dim, dr = c->qk_rope_head_dim, D = c->hidden_size;
    rgguf r;
    gguf_read(out, &r);
    check_common(&r, m, "deepseek2");
    assert_int_equal(kv_u32(&r, "deepseek2.leading_dense_block_count"), c->num_hidden_layers);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.q_lora_rank"), q_lora_rank);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.kv_lora_rank"), R);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.head_count_kv"), 1);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.key_length"), R + dr);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.value_length"), R);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.key_length_mla"), dn + dr);
    assert_int_equal(kv_u32(&r, "deepseek2.attention.value_length_mla"), dv);
    assert_int_equal(kv_u32(&r, "deepseek2.rope.dimension_count"), dr);
    assert_int_equal(kv_u32(&r, "deepseek2.expert_shared_count"), 0);
    assert_non_null(kv(&r, "deepseek2.expert_feed_forward_length"));
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ae_mla *a = &m->layers[l].mla;
        char n[96];
        if (q_lora_rank) {
            snprintf(n, sizeof n, "blk.%d.attn_q_a.weight", l);
            assert_f32_equal(&r, n, a->wqa.data, (size_t)(q_lora_rank * D));
            snprintf(n, sizeof n, "blk.%d.attn_q_a_norm.weight", l);
            assert_f32_equal(&r, n, a->q_a_norm.data, (size_t)q_lora_rank);
            snprintf(n, sizeof n, "blk.%d.attn_q_b.weight", l);
            assert_shape(tensor(&r, n), AE_GGML_F32, q_lora_rank, H * (dn + dr), 1);
            assert_f32_equal(&r, n, a->wqb.data, (size_t)(H * (dn + dr) * q_lora_rank));
            snprintf(n, sizeof n, "blk.%d.attn_q.weight", l);
            assert_null(tensor(&r, n));
        } else {
            snprintf(n, sizeof n, "blk.%d.attn_q.weight", l);
            assert_f32_equal(&r, n, a->wq.data, (size_t)(H * (dn + dr) * D));
        }
        snprintf(n, sizeof n, "blk.%d.attn_kv_a_mqa.weight", l);
        assert_shape(tensor(&r, n), AE_GGML_F32, D, R + dr, 1);
        assert_f32_equal(&r, n, a->wkva.data, (size_t)((R + dr) * D));
        snprintf(n, sizeof n, "blk.%d.attn_kv_a_norm.weight", l);
        assert_f32_equal(&r, n, a->kv_a_norm.data, (size_t)R);
        snprintf(n, sizeof n, "blk.%d.attn_output.weight", l);
        assert_f32_equal(&r, n, a->wo.data, (size_t)(D * H * dv));
        const float *kvb = a->wkvb.data; // (H·(dn+dv), R)
        snprintf(n, sizeof n, "blk.%d.attn_k_b.weight", l);
        const rti *kb = tensor(&r, n);
        assert_shape(kb, AE_GGML_F32, dn, R, H);
        snprintf(n, sizeof n, "blk.%d.attn_v_b.weight", l);
        const rti *vb = tensor(&r, n);
        assert_shape(vb, AE_GGML_F32, R, dv, H);
        const float *k = tdata(&r, kb), *v = tdata(&r, vb);
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < R; j++) {
                for (int64_t d = 0; d < dn; d++) // k_b[h][j][d] = W_UK[h][d][j]
                    assert_true(k[(h * R + j) * dn + d] == kvb[(h * (dn + dv) + d) * R + j]);
                for (int64_t d = 0; d < dv; d++) // v_b[h][d][j] = W_UV[h][d][j]
                    assert_true(v[(h * dv + d) * R + j] == kvb[(h * (dn + dv) + dn + d) * R + j]);
            }
        snprintf(n, sizeof n, "blk.%d.attn_kv_b.weight", l);
        assert_null(tensor(&r, n));
    }
    gguf_close(&r);
    ae_model_free(m);
    free(s);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_export_mla_q0(void **state) {
    (void)state;
    check_mla(0);
}

static void test_export_mla_q16(void **state) {
    (void)state;
    check_mla(16);
}

static void expect_refused(const char *model, const char *out, int force, const char *k1,
                           const char *k2) {
    ae_status st = export_gguf(model, out, AE_DT_BF16, force);
    const char *msg = ae_last_error();
    if (st == AE_OK || (k1 && !strstr(msg, k1)) || (k2 && !strstr(msg, k2)))
        fail_msg("export of %s: status %d, message '%s' (expected '%s' / '%s')", model, st, msg,
                 k1 ? k1 : "", k2 ? k2 : "");
    printf("refused: %s\n", msg);
}

static void test_export_refusals(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "out.gguf");
    ae_student_spec gs = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 4, .gate = AE_GATE_HEAD, .sinks = 1};
    char *g = ae_test_save_student(micro(), &gs, dir, "gs");
    expect_refused(g, out, 0, "GateSWA", "no architecture");
    ae_student_spec mixed = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8,
                             .layers = (int[]){1, 3}, .n_layers = 2};
    char *mx = ae_test_save_student(micro(), &mixed, dir, "mixed");
    expect_refused(mx, out, 0, "mixed", "every layer");
    ae_student_spec mla = {.target = AE_ATTN_MLA, .kv_lora_rank = 8, .qk_rope_dim = 8};
    char *moe = with_tokenizer(ae_test_src("tests/fixtures/models/moe_norm_topk"), dir, "moe");
    char *moe_mla = ae_test_save_student(moe, &mla, dir, "moe_mla");
    expect_refused(moe_mla, out, 0, "layer 1 has a dense MLP after a MoE layer",
                   "leading_dense_block_count");
    char *sparse = with_tokenizer(ae_test_src("tests/fixtures/models/moe_sparse_step2_untied"), dir, "sparse");
    expect_refused(sparse, out, 0, "dense MLP", "qwen3moe");
    // configs the walk cannot reach from the fixtures: checked on the plan
    ae_config c;
    const char *arch;
    assert_int_equal(ae_config_load(micro(), &c), AE_OK);
    assert_int_equal(ae_export_gguf_plan(&c, "m", &arch), AE_OK);
    assert_string_equal(arch, "qwen3");
    c.layer_types[1] = AE_LAYER_SLIDING;
    assert_int_equal(ae_export_gguf_plan(&c, "m", &arch), AE_ERR_UNSUPPORTED);
    assert_non_null(strstr(ae_last_error(), "sliding window"));
    ae_config_free(&c);
    assert_int_equal(ae_config_load(moe, &c), AE_OK);
    c.n_mlp_only_layers = 0; // every layer MoE
    c.decoder_sparse_step = 1;
    assert_int_equal(ae_export_gguf_plan(&c, "m", &arch), AE_OK);
    assert_string_equal(arch, "qwen3moe");
    c.norm_topk_prob = 0;
    assert_int_equal(ae_export_gguf_plan(&c, "m", &arch), AE_ERR_UNSUPPORTED);
    assert_non_null(strstr(ae_last_error(), "norm_topk_prob"));
    ae_config_free(&c);
    assert_false(ae_path_exists(out));
    // an existing output needs force (and is left as it was); a folder is refused
    assert_int_equal(ae_test_write_file(out, "keep", 4), 0);
    expect_refused(micro(), out, 0, "already exists", "--force");
    char *text;
    size_t len;
    assert_int_equal(ae_file_read_all(out, &text, &len), AE_OK);
    assert_string_equal(text, "keep");
    free(text);
    export_ok(micro(), out, AE_DT_BF16);
    expect_refused(micro(), dir, 1, "folder", NULL);
    char *inside = ae_test_path_in(g, "x.gguf");
    expect_refused(g, inside, 1, "inside", NULL);
    ae_test_assert_no_temp(dir);
    free(inside);
    free(sparse);
    free(moe_mla);
    free(moe);
    free(mx);
    free(g);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static ae_status export_job(void *out) { return export_gguf(micro(), out, AE_DT_F32, 0); }

// Disk full half-way (a file-size limit makes the write fail with EFBIG): an error, no file,
// no temp file.
static void test_export_disk_full(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "full.gguf");
    ae_test_write_fails_beyond(1 << 20, export_job, out); // 1 MiB; the f32 file is ~7 MiB
    assert_false(ae_path_exists(out));
    assert_int_equal(ae_test_count_entries(dir), 0);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_cli(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *out = ae_test_path_in(dir, "m.gguf");
    ae_test_cli_result r =
        ae_test_cli(ARGS("export", "--model", micro(), "--format", "gguf", "--out", out));
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.err, "as qwen3 (bf16)"));
    free(r.out);
    free(r.err);
    r = ae_test_cli(ARGS("export", "--model", micro(), "--format", "gguf", "--out", out));
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "already exists"));
    free(r.out);
    free(r.err);
    // --shard-size is for folders: refused, not ignored
    r = ae_test_cli(ARGS("export", "--model", micro(), "--format", "gguf", "--out", out, "--force",
                         "--shard-size", "1GiB"));
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "--shard-size applies to --format hf"));
    free(r.out);
    free(r.err);
    // eval ppl --protocol llama: whole chunks only, second half scored
    char *txt = ae_test_path_in(dir, "t.txt");
    const char *t = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the "
                    "worst of times, it was the age of wisdom, it was the age of foolishness.";
    assert_int_equal(ae_test_write_file(txt, t, strlen(t)), 0);
    r = ae_test_cli(ARGS("eval", "ppl", "--model", micro(), "--file", txt, "--ctx", "8",
                         "--protocol", "llama", "--max-chunks", "3", "--json", "--device", "cpu"));
    assert_int_equal(r.rc, 0);
    cJSON *o = cJSON_Parse(r.out);
    assert_non_null(o);
    assert_int_equal(cJSON_GetObjectItem(o, "chunks")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(o, "tokens")->valueint, 3 * (8 - 1 - 4));
    cJSON_Delete(o);
    free(r.out);
    free(r.err);
    r = ae_test_cli(ARGS("eval", "ppl", "--model", micro(), "--file", txt, "--protocol", "x"));
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "--protocol"));
    free(r.out);
    free(r.err);
    free(txt);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_roundtrip),   cmocka_unit_test(test_export_teacher_f32),
        cmocka_unit_test(test_export_moe_teacher), cmocka_unit_test(test_export_mla_q0),
        cmocka_unit_test(test_export_mla_q16),     cmocka_unit_test(test_export_refusals),
        cmocka_unit_test(test_export_disk_full),   cmocka_unit_test(test_cli),
        cmocka_unit_test(test_export_moe_mla),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
