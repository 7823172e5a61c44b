// Model folders: model.safetensors.index.json (sharded) or model.safetensors. Of the index only
// "weight_map" is trusted; the shards themselves are validated like any single file, and the
// index and the shard headers must agree exactly (same tensor set, each tensor in its shard).
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/file.h"
#include "core/mem.h"
#include "io/safetensors.h"
#include "io/st_internal.h"

typedef struct {
    const char *tensor;
    const char *shard;
    size_t file; // index into the set's files
} wm_entry;

static int cmp_wm(const void *a, const void *b) {
    return strcmp(((const wm_entry *)a)->tensor, ((const wm_entry *)b)->tensor);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// A shard name must be a plain file name inside the folder.
static int shard_name_ok(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static ae_status open_index(const char *dir, const char *index_path, ae_st_set **out) {
    char *text = NULL;
    size_t len = 0;
    AE_TRY(ae_file_read_all(index_path, &text, &len));
    if (strlen(text) != len) {
        free(text);
        return ae_errorf(AE_ERR_FORMAT, "%s: contains a NUL byte", index_path);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        ae_status st = ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON (at byte %lld)", index_path,
                                 end ? (long long)(end - text) : -1LL);
        free(text);
        return st;
    }
    free(text);

    ae_status st = AE_OK;
    wm_entry *wm = NULL;
    const char **shards = NULL;
    ae_st_set *s = NULL;
    size_t n_wm = 0, n_shards = 0;

    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(map)) {
        st = ae_errorf(AE_ERR_FORMAT, "%s: \"weight_map\" missing or not an object", index_path);
        goto done;
    }
    n_wm = (size_t)cJSON_GetArraySize(map);
    if (n_wm == 0) {
        st = ae_errorf(AE_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    wm = ae_calloc(n_wm, sizeof *wm);
    shards = ae_calloc(n_wm, sizeof *shards);
    if (!wm || !shards) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            st = ae_errorf(AE_ERR_FORMAT,
                           "%s: weight_map[\"%s\"] must be a shard file name in the folder",
                           index_path, e->string);
            goto done;
        }
        wm[i].tensor = e->string;
        wm[i].shard = e->valuestring;
        shards[i] = e->valuestring;
        i++;
    }
    qsort(wm, n_wm, sizeof *wm, cmp_wm);
    for (i = 1; i < n_wm; i++) {
        if (strcmp(wm[i].tensor, wm[i - 1].tensor) == 0) {
            st = ae_errorf(AE_ERR_FORMAT, "%s: weight_map names tensor \"%s\" twice", index_path,
                           wm[i].tensor);
            goto done;
        }
    }
    // Each distinct shard once, in name order.
    qsort(shards, n_wm, sizeof *shards, cmp_str_ptr);
    for (i = 0; i < n_wm; i++)
        if (i == 0 || strcmp(shards[i], shards[n_shards - 1]) != 0) shards[n_shards++] = shards[i];

    s = ae_calloc(1, sizeof *s);
    if (!s || !(s->origin = ae_strdup(dir)) || !(s->files = ae_calloc(n_shards, sizeof *s->files))) {
        st = AE_ERR_NOMEM;
        goto done;
    }
    s->n_files = n_shards;
    for (i = 0; i < n_shards; i++) {
        ae_st_file *f = &s->files[i];
        f->path = ae_path_join(dir, shards[i]);
        if (!f->path) {
            st = AE_ERR_NOMEM;
            goto done;
        }
        if (!ae_path_exists(f->path)) {
            st = ae_errorf(AE_ERR_IO, "%s: weight_map names shard \"%s\", but %s does not exist",
                           index_path, shards[i], f->path);
            goto done;
        }
        ae_st_tensor *t = NULL;
        size_t n = 0;
        st = ae_st_parse_file(f, &t, &n);
        if (st != AE_OK) goto done;
        ae_st_tensor *grown = ae_realloc(s->tensors, (s->n + n + 1) * sizeof *grown);
        if (!grown) {
            for (size_t k = 0; k < n; k++) free(t[k].name);
            free(t);
            st = AE_ERR_NOMEM;
            goto done;
        }
        s->tensors = grown;
        memcpy(s->tensors + s->n, t, n * sizeof *t);
        s->n += n;
        free(t);
    }
    st = ae_st_set_index(s);
    if (st != AE_OK) goto done;

    // Every listed tensor is in the shard the index names.
    for (i = 0; i < n_wm; i++) {
        const ae_st_tensor *t = ae_st_find(s, wm[i].tensor);
        const char *base = t ? strrchr(t->file, '/') : NULL;
        base = base ? base + 1 : (t ? t->file : NULL);
        if (!t) {
            st = ae_errorf(AE_ERR_FORMAT,
                           "%s: weight_map puts tensor \"%s\" in shard \"%s\", which does not "
                           "contain it",
                           index_path, wm[i].tensor, wm[i].shard);
            goto done;
        }
        if (strcmp(base, wm[i].shard) != 0) {
            st = ae_errorf(AE_ERR_FORMAT,
                           "%s: weight_map puts tensor \"%s\" in shard \"%s\", but it is in %s",
                           index_path, wm[i].tensor, wm[i].shard, t->file);
            goto done;
        }
    }
    // ... and no shard holds a tensor the index does not list.
    if (s->n != n_wm) {
        for (i = 0; i < s->n; i++) {
            wm_entry key = {.tensor = s->tensors[i].name};
            if (!bsearch(&key, wm, n_wm, sizeof *wm, cmp_wm)) {
                st = ae_errorf(AE_ERR_FORMAT, "%s: tensor \"%s\" is not listed in %s's weight_map",
                               s->tensors[i].file, s->tensors[i].name, index_path);
                goto done;
            }
        }
    }

done:
    free(wm);
    free(shards);
    cJSON_Delete(root);
    if (st != AE_OK) {
        ae_st_close(s);
        return st;
    }
    *out = s;
    return AE_OK;
}

ae_status ae_st_open_dir(const char *dir, ae_st_set **out) {
    *out = NULL;
    char *index = ae_path_join(dir, "model.safetensors.index.json");
    if (!index) return AE_ERR_NOMEM;
    ae_status st;
    if (ae_path_exists(index)) {
        st = open_index(dir, index, out);
    } else {
        char *single = ae_path_join(dir, "model.safetensors");
        if (!single) {
            free(index);
            return AE_ERR_NOMEM;
        }
        if (ae_path_exists(single))
            st = ae_st_open_file(single, out);
        else
            st = ae_errorf(AE_ERR_IO,
                           "%s: no model.safetensors.index.json or model.safetensors in this "
                           "folder",
                           dir);
        free(single);
    }
    free(index);
    return st;
}
