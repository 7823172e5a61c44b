// libFuzzer harness: model.safetensors.index.json of a sharded model folder, read by
// ae_st_open_dir. The input is the index; the folder also holds two valid shards
// (model-00001-of-00002.safetensors: model.embed_tokens.weight, model.norm.weight;
// model-00002-of-00002.safetensors: lm_head.weight, model.layers.0.self_attn.q_proj.weight),
// a valid single-file model.safetensors, a corrupt shard (bad.safetensors), an empty one
// (empty.safetensors) and a folder named like a shard (folder.safetensors). An empty input
// means "no index" (the single-file path).
// Promises checked (io/safetensors.h): AE_OK or an error with a message; on success the set
// holds exactly the tensors the weight_map lists, each found by name.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_util.h"
#include "io/safetensors.h"

static void write_shard(const char *name, int which) {
    static const uint16_t bf16[8] = {0x3f80, 0x4000, 0x4040, 0x4080, 0xbf80, 0xc000, 0x0000, 0x3f00};
    static const uint16_t f16[8] = {0x3c00, 0x4000, 0x4200, 0x4400, 0xbc00, 0xc000, 0x0000, 0x3800};
    static const float f32[4] = {1.0f, -2.0f, 0.5f, 0.25f};
    ae_st_writer *w = NULL;
    int64_t s42[2] = {4, 2}, s2[1] = {2}, s22[2] = {2, 2};
    ae_status st = ae_st_writer_init(&w);
    if (which == 1 || which == 0) {
        if (st == AE_OK) st = ae_st_writer_add(w, "model.embed_tokens.weight", AE_DT_BF16, 2, s42, bf16);
        if (st == AE_OK) st = ae_st_writer_add(w, "model.norm.weight", AE_DT_F32, 1, s2, f32);
    }
    if (which == 2 || which == 0) {
        if (st == AE_OK) st = ae_st_writer_add(w, "lm_head.weight", AE_DT_F16, 2, s42, f16);
        if (st == AE_OK)
            st = ae_st_writer_add(w, "model.layers.0.self_attn.q_proj.weight", AE_DT_F32, 2, s22, f32);
    }
    if (st == AE_OK) st = ae_st_writer_finish(w, fz_path(name));
    else ae_st_writer_free(w);
    if (st != AE_OK) fz_fail(__FILE__, __LINE__, "setup", "writing %s: %s", name, ae_last_error());
}

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    fz_mkdir("m");
    write_shard("m/model-00001-of-00002.safetensors", 1);
    write_shard("m/model-00002-of-00002.safetensors", 2);
    write_shard("m/model.safetensors", 0);
    fz_write("m/bad.safetensors", "\x10\0\0\0\0\0\0\0{\"a\":1}        ", 24);
    fz_write("m/empty.safetensors", "", 0);
    fz_mkdir("m/folder.safetensors");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size) fz_write("m/model.safetensors.index.json", data, size);
    else fz_remove("m/model.safetensors.index.json");
    ae_st_set *s = NULL;
    fz_begin();
    ae_status st = ae_st_open_dir(fz_path("m"), &s);
    fz_check(st, "ae_st_open_dir");
    if (st != AE_OK) {
        FZ_ASSERT(s == NULL, "failed open left a set");
        return 0;
    }
    size_t n = ae_st_count(s);
    for (size_t i = 0; i < n; i++) {
        const ae_st_tensor *t = ae_st_at(s, i);
        FZ_ASSERT(ae_st_find(s, t->name) == t, "ae_st_find(\"%s\")", t->name);
        float f[8];
        FZ_ASSERT(t->numel <= 8, "tensor %s has %lld elements", t->name, (long long)t->numel);
        fz_begin();
        fz_check(ae_st_to_f32(t, f), "ae_st_to_f32");
    }
    if (size) {
        // Success means the index and the shards agree exactly.
        char *text = fz_cstr(data, size);
        cJSON *root = cJSON_Parse(text);
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map"), *e;
        FZ_ASSERT(cJSON_IsObject(wm), "accepted an index without a weight_map object");
        size_t listed = 0;
        cJSON_ArrayForEach(e, wm) {
            listed++;
            const ae_st_tensor *t = ae_st_find(s, e->string);
            FZ_ASSERT(t, "weight_map lists \"%s\", not in the set", e->string);
            const char *base = strrchr(t->file, '/');
            FZ_ASSERT(cJSON_IsString(e) && strcmp(base ? base + 1 : t->file, e->valuestring) == 0,
                      "tensor \"%s\" is in %s, the index says otherwise", e->string, t->file);
        }
        FZ_ASSERT(listed == n, "weight_map lists %zu tensors, the set has %zu", listed, n);
        cJSON_Delete(root);
        free(text);
    } else {
        FZ_ASSERT(n == 4, "single-file model: %zu tensors", n);
    }
    ae_st_close(s);
    return 0;
}
