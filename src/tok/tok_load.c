// Loading tokenizer.json (+ tokenizer_config.json): the BPE model (vocab, merges in both the
// "a b" and ["a", "b"] forms), added tokens, the id tables used by decode; and the small
// accessors of the public API.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/file.h"
#include "core/log.h"
#include "core/mem.h"
#include "tok/tok_internal.h"

static ae_status json_id(const cJSON *v, int32_t *out, const char *path, const char *field,
                         const char *name) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= AE_TOK_MAX_ID ||
        v->valuedouble != floor(v->valuedouble))
        return ae_errorf(AE_ERR_FORMAT, "%s: field '%s': id of '%s' is not an integer in [0, %d)",
                         path, field, name, AE_TOK_MAX_ID);
    *out = (int32_t)v->valuedouble;
    return AE_OK;
}

static ae_status parse_model_options(ae_tokenizer *t, const cJSON *model) {
    const char *type, *s;
    AE_TRY(ae_tok_json_str(model, "type", &type, t->path, "model"));
    if (type && strcmp(type, "BPE") != 0)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field 'model.type': model type '%s' is not "
                         "supported (only BPE)",
                         t->path, type);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (d && !cJSON_IsNull(d) && !(cJSON_IsNumber(d) && d->valuedouble == 0.0))
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field 'model.dropout': only null is supported",
                         t->path);
    static const char *const empty_only[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        AE_TRY(ae_tok_json_str(model, empty_only[i], &s, t->path, "model"));
        if (s && *s)
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: field 'model.%s': only null or \"\" is "
                             "supported",
                             t->path, empty_only[i]);
    }
    AE_TRY(ae_tok_json_bool(model, "fuse_unk", 0, &t->fuse_unk, t->path, "model"));
    AE_TRY(ae_tok_json_bool(model, "byte_fallback", 0, &t->byte_fallback, t->path, "model"));
    AE_TRY(ae_tok_json_bool(model, "ignore_merges", 0, &t->ignore_merges, t->path, "model"));
    return AE_OK;
}

// Pass 1 over the vocab: the largest id and the bytes of all token strings.
static ae_status max_id(ae_tokenizer *t, const cJSON *vocab, int32_t *mx, size_t *vocab_bytes) {
    const cJSON *it;
    int32_t id = 0;
    *mx = -1;
    *vocab_bytes = 0;
    cJSON_ArrayForEach(it, vocab) {
        if (!it->string)
            return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.vocab': entry without a key",
                             t->path);
        AE_TRY(json_id(it, &id, t->path, "model.vocab", it->string));
        if (id > *mx) *mx = id;
        *vocab_bytes += strlen(it->string) + 1;
    }
    return AE_OK;
}

static ae_status parse_vocab(ae_tokenizer *t, const cJSON *vocab, size_t vocab_bytes) {
    const cJSON *it;
    AE_TRY(ae_strmap_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab)));
    if (!(t->model_blob = ae_malloc(vocab_bytes + 1))) return AE_ERR_NOMEM;
    size_t used = 0;
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble, prev; // validated by max_id
        if (t->model_str[id])
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: field 'model.vocab': id %d is given to both '%s' "
                             "and '%s'",
                             t->path, id, t->model_str[id], it->string);
        size_t len = strlen(it->string);
        if (ae_tok_utf8_invalid_at((const unsigned char *)it->string, len) != (size_t)-1)
            return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.vocab': token %d is not valid UTF-8",
                             t->path, id);
        t->model_str[id] = memcpy(t->model_blob + used, it->string, len + 1);
        used += len + 1;
        AE_TRY(ae_strmap_put(&t->vocab, t->model_str[id], len, id, &prev));
        if (prev >= 0)
            return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.vocab': token '%s' appears twice",
                             t->path, it->string);
    }
    return AE_OK;
}

static ae_status vocab_lookup(ae_tokenizer *t, const char *tok, size_t len, int rank, int32_t *id) {
    *id = ae_strmap_get(&t->vocab, tok, len);
    if (*id < 0)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field 'model.merges[%d]': token '%.*s' is not in "
                         "model.vocab",
                         t->path, rank, (int)(len > 200 ? 200 : len), tok);
    return AE_OK;
}

static ae_status parse_merges(ae_tokenizer *t, const cJSON *merges) {
    AE_TRY(ae_pairmap_init(&t->merges, (size_t)cJSON_GetArraySize(merges)));
    const cJSON *it;
    int rank = 0;
    ae_tok_buf cat = {0};
    ae_status st = AE_OK;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it) && it->valuestring) {
            a = it->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = ae_errorf(AE_ERR_FORMAT,
                               "%s: field 'model.merges[%d]': expected \"left "
                               "right\" (one space), got \"%.200s\"",
                               t->path, rank, a);
                break;
            }
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring;
            b = it->child->next->valuestring;
            la = strlen(a);
            lb = strlen(b);
        } else {
            st = ae_errorf(AE_ERR_FORMAT,
                           "%s: field 'model.merges[%d]': expected \"left right\" "
                           "or [\"left\", \"right\"]",
                           t->path, rank);
            break;
        }
        int32_t ia, ib, inew;
        cat.n = 0;
        if ((st = vocab_lookup(t, a, la, rank, &ia)) || (st = vocab_lookup(t, b, lb, rank, &ib)) ||
            (st = ae_tok_buf_put(&cat, a, la)) || (st = ae_tok_buf_put(&cat, b, lb)) ||
            (st = vocab_lookup(t, cat.p, cat.n, rank, &inew)) ||
            (st = ae_pairmap_put(&t->merges, ia, ib, rank, inew)))
            break;
        rank++;
    }
    free(cat.p);
    return st;
}

// Added tokens get their ids as HF's AddedVocabulary::add_tokens gives them, in file order (the
// "id" in the file is only checked, as HF only warns about it): the id of the same content
// added before, else its model vocab id, else the next free id above the model vocab.
static ae_status parse_added(ae_tokenizer *t, const cJSON *added, int32_t model_count) {
    int n = cJSON_GetArraySize(added), k = 0;
    t->added = ae_calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) return AE_ERR_NOMEM;
    AE_TRY(ae_strmap_init(&t->added_map, (size_t)n));
    int32_t max_added = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, added) {
        char f[48];
        snprintf(f, sizeof f, "added_tokens[%d]", k++);
        if (!cJSON_IsObject(it))
            return ae_errorf(AE_ERR_FORMAT, "%s: field '%s': expected an object", t->path, f);
        const char *content;
        AE_TRY(ae_tok_json_str(it, "content", &content, t->path, f));
        if (!content)
            return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.content' is missing", t->path, f);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!v) return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.id' is missing", t->path, f);
        int32_t file_id = 0;
        AE_TRY(json_id(v, &file_id, t->path, f, content));
        int fl[5] = {0};
        AE_TRY(ae_tok_json_bool(it, "special", 0, &fl[0], t->path, f));
        AE_TRY(ae_tok_json_bool(it, "lstrip", 0, &fl[1], t->path, f));
        AE_TRY(ae_tok_json_bool(it, "rstrip", 0, &fl[2], t->path, f));
        AE_TRY(ae_tok_json_bool(it, "single_word", 0, &fl[3], t->path, f));
        AE_TRY(ae_tok_json_bool(it, "normalized", 1, &fl[4], t->path, f));
        size_t len = strlen(content);
        if (len == 0) continue; // HF ignores empty added tokens
        if (ae_tok_utf8_invalid_at((const unsigned char *)content, len) != (size_t)-1)
            return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.content' is not valid UTF-8", t->path,
                             f);
        int32_t id = ae_strmap_get(&t->added_map, content, len);
        ae_tok_added *a = NULL;
        if (id >= 0) { // same content again: the later flags win (HF's id -> token map)
            for (int i = 0; i < t->n_added; i++)
                if (t->added[i].id == id && strcmp(t->added[i].content, content) == 0)
                    a = &t->added[i];
        } else {
            id = ae_strmap_get(&t->vocab, content, len);
            if (id < 0)
                id = max_added < 0                                    ? model_count
                     : (max_added >= model_count || model_count == 0) ? max_added + 1
                                                                      : model_count;
            if (id >= AE_TOK_MAX_ID)
                return ae_errorf(AE_ERR_FORMAT, "%s: field '%s': too many added tokens", t->path,
                                 f);
            a = &t->added[t->n_added++];
            a->id = id;
            a->content_len = len;
            if (!(a->content = ae_strdup(content))) return AE_ERR_NOMEM;
            AE_TRY(ae_strmap_put(&t->added_map, a->content, len, id, NULL));
            if (id > max_added) max_added = id;
        }
        if (id != file_id)
            ae_log_info("%s: added token '%s' gets id %d (the file says %d), as in HF tokenizers",
                        t->path, content, (int)id, (int)file_id);
        a->special = (unsigned char)fl[0];
        a->lstrip = (unsigned char)fl[1];
        a->rstrip = (unsigned char)fl[2];
        a->single_word = (unsigned char)fl[3];
        a->normalized = (unsigned char)fl[4];
        free(a->pattern);
        char *norm = NULL;
        size_t nlen = 0;
        if (a->normalized) AE_TRY(ae_tok_normalize(t, a->content, len, &norm, &nlen));
        if ((!norm || norm == a->content) && !(norm = ae_strndup(a->content, len)))
            return AE_ERR_NOMEM;
        a->pattern = norm;
        a->pattern_len = a->normalized ? nlen : len;
    }
    return AE_OK;
}

// cJSON ends a string at a NUL character, so a token holding one (a raw NUL byte, which is not
// valid JSON either, or the escape \u0000) would be cut short and silently become another token
// (even ""): refuse both, naming the byte. Outside strings a backslash is a JSON error anyway.
static ae_status check_nul(const char *path, const char *text, size_t len, int escapes) {
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\0')
            return ae_errorf(AE_ERR_FORMAT, "%s: contains a NUL byte (at byte %zu)", path, i);
        if (text[i] == '\\' && i + 1 < len) {
            if (escapes && i + 5 < len && memcmp(text + i + 1, "u0000", 5) == 0)
                return ae_errorf(AE_ERR_FORMAT,
                                 "%s: contains the escape \\u0000 (at byte %zu): strings with a "
                                 "NUL character are not supported",
                                 path, i);
            if (text[i + 1] != '\0') i++; // the escaped character (\\ starts no escape)
        }
    }
    return AE_OK;
}

static ae_status build_tables(ae_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        uint32_t cp = ae_tok_byte_to_cp((unsigned char)b);
        char u[3] = {0};
        if (cp < 0x80)
            u[0] = (char)cp;
        else {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
        }
        t->byte_id[b] = ae_strmap_get(&t->vocab, u, strlen(u));
        char fb[8];
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        t->byte_fallback_id[b] = t->byte_fallback ? ae_strmap_get(&t->vocab, fb, strlen(fb)) : -1;
    }
    // decoded bytes of every id; the blob exists even when every token decodes to nothing (a
    // vocab of "" alone), so that decode never offsets a NULL pointer
    ae_tok_buf blob = {0};
    if (ae_tok_buf_put(&blob, "", 0) != AE_OK) return AE_ERR_NOMEM;
    t->dec_off = ae_calloc((size_t)t->vocab_size + 1, sizeof *t->dec_off);
    if (!t->dec_off) {
        free(blob.p);
        return AE_ERR_NOMEM;
    }
    for (int i = 0; i < t->vocab_size; i++) {
        t->dec_off[i] = (uint32_t)blob.n;
        if (t->id_str[i]) {
            ae_status st = ae_tok_token_bytes(t->id_str[i], strlen(t->id_str[i]), &blob);
            if (st == AE_OK && blob.n > UINT32_MAX / 2)
                st = ae_errorf(AE_ERR_FORMAT, "%s: vocabulary too large", t->path);
            if (st != AE_OK) {
                free(blob.p);
                return st;
            }
        }
    }
    t->dec_off[t->vocab_size] = (uint32_t)blob.n;
    t->dec_blob = (unsigned char *)blob.p;
    return AE_OK;
}

static ae_status parse_tokenizer_json(ae_tokenizer *t, const cJSON *root) {
    if (!cJSON_IsObject(root))
        return ae_errorf(AE_ERR_FORMAT, "%s: expected a JSON object at the top level", t->path);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return ae_errorf(AE_ERR_FORMAT, "%s: field 'model' is missing or not an object", t->path);
    AE_TRY(parse_model_options(t, model));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.vocab' is missing or not an object",
                         t->path);
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges))
        return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.merges' is missing or not an array",
                         t->path);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return ae_errorf(AE_ERR_FORMAT, "%s: field 'added_tokens': expected an array", t->path);
    if (added && !cJSON_IsArray(added)) added = NULL;

    AE_TRY(ae_tok_parse_pipeline(t, root)); // normalizer first: added tokens use it
    int32_t mx = -1;
    size_t vocab_bytes = 0;
    AE_TRY(max_id(t, vocab, &mx, &vocab_bytes));
    if (mx < 0) return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.vocab' is empty", t->path);
    int32_t model_size = mx + 1;
    if (!(t->model_str = ae_calloc((size_t)model_size, sizeof *t->model_str))) return AE_ERR_NOMEM;
    AE_TRY(parse_vocab(t, vocab, vocab_bytes));
    AE_TRY(parse_merges(t, merges));
    const char *unk;
    AE_TRY(ae_tok_json_str(model, "unk_token", &unk, t->path, "model"));
    t->unk_id = -1;
    if (unk && (t->unk_id = ae_strmap_get(&t->vocab, unk, strlen(unk))) < 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field 'model.unk_token': '%s' is not in model.vocab",
                         t->path, unk);
    if (added)
        AE_TRY(parse_added(t, added, (int32_t)t->vocab.n));
    else if (!(t->added = ae_calloc(1, sizeof *t->added)))
        return AE_ERR_NOMEM;
    AE_TRY(ae_tok_matcher_build(t, &t->match_raw, 0));
    AE_TRY(ae_tok_matcher_build(t, &t->match_norm, 1));

    t->vocab_size = model_size;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id >= t->vocab_size) t->vocab_size = t->added[i].id + 1;
    size_t vs = (size_t)t->vocab_size;
    t->id_str = ae_calloc(vs, sizeof *t->id_str);
    t->is_special = ae_calloc(vs, 1);
    if (!t->id_str || !t->is_special) return AE_ERR_NOMEM;
    for (int32_t i = 0; i < model_size; i++) t->id_str[i] = t->model_str[i];
    for (int i = 0; i < t->n_added; i++) { // added tokens win over the model (HF id_to_token)
        const ae_tok_added *a = &t->added[i];
        t->id_str[a->id] = a->content;
        t->is_special[a->id] = a->special;
    }
    return build_tables(t);
}

static ae_status load_config(ae_tokenizer *t, const char *dir) {
    char *path = ae_path_join(dir, "tokenizer_config.json");
    if (!path) return AE_ERR_NOMEM;
    ae_status st = AE_OK;
    char *buf = NULL;
    size_t len;
    cJSON *root = NULL;
    if (!ae_path_exists(path)) goto done;
    if ((st = ae_file_read_all(path, &buf, &len)) != AE_OK) goto done;
    // \u0000 is allowed here: a chat template may hold one, and only eos_token is read
    if ((st = check_nul(path, buf, len, 0)) != AE_OK) goto done;
    root = cJSON_ParseWithLength(buf, len);
    if (!cJSON_IsObject(root)) {
        st = ae_errorf(AE_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token");
    if (cJSON_IsObject(eos)) eos = cJSON_GetObjectItemCaseSensitive(eos, "content");
    if (cJSON_IsString(eos) && eos->valuestring)
        t->eos_id = ae_tokenizer_token_id(t, eos->valuestring);
    else if (eos && !cJSON_IsNull(eos))
        st = ae_errorf(AE_ERR_FORMAT,
                       "%s: field 'eos_token': expected a string, "
                       "{\"content\": ...} or null",
                       path);
done:
    cJSON_Delete(root);
    free(buf);
    free(path);
    return st;
}

ae_status ae_tokenizer_load(const char *dir, ae_tokenizer **out) {
    *out = NULL;
    ae_tokenizer *t = ae_calloc(1, sizeof *t);
    if (!t) return AE_ERR_NOMEM;
    t->eos_id = t->unk_id = -1;
    t->path = ae_path_join(dir, "tokenizer.json");
    if (!t->path) {
        free(t);
        return AE_ERR_NOMEM;
    }
    char *buf = NULL;
    size_t len;
    ae_status st = ae_file_read_all(t->path, &buf, &len);
    if (st == AE_OK && (st = check_nul(t->path, buf, len, 1)) != AE_OK) {
        free(buf);
        buf = NULL;
    }
    if (st == AE_OK) {
        cJSON *root = cJSON_ParseWithLength(buf, len);
        if (!root) {
            const char *e = cJSON_GetErrorPtr();
            size_t off = e && e >= buf && e <= buf + len ? (size_t)(e - buf) : 0;
            st = ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", t->path, off);
        } else {
            st = parse_tokenizer_json(t, root);
            cJSON_Delete(root);
        }
        free(buf);
    }
    if (st == AE_OK) st = load_config(t, dir);
    if (st != AE_OK) {
        ae_tokenizer_free(t);
        return st;
    }
    *out = t;
    return AE_OK;
}

void ae_tokenizer_free(ae_tokenizer *t) {
    if (!t) return;
    free(t->model_str);
    free(t->model_blob);
    free(t->id_str);
    free(t->dec_off);
    free(t->dec_blob);
    free(t->is_special);
    ae_strmap_free(&t->vocab);
    ae_strmap_free(&t->added_map);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].pattern);
    }
    free(t->added);
    ae_tok_matcher_free(&t->match_raw);
    ae_tok_matcher_free(&t->match_norm);
    ae_pairmap_free(&t->merges);
    for (int i = 0; i < t->n_pretok; i++)
        if (t->pretok[i].re) ae_tok_regex_free(t->pretok[i].re);
    free(t->pretok);
    free(t->path);
    free(t);
}

int ae_tokenizer_vocab_size(const ae_tokenizer *t) {
    return t->vocab_size;
}

int ae_tokenizer_token_id(const ae_tokenizer *t, const char *token) {
    size_t len = strlen(token);
    int32_t id = ae_strmap_get(&t->added_map, token, len);
    return id >= 0 ? id : ae_strmap_get(&t->vocab, token, len);
}

int ae_tokenizer_eos_id(const ae_tokenizer *t) {
    return t->eos_id;
}

int ae_tokenizer_is_special(const ae_tokenizer *t, int id) {
    return id >= 0 && id < t->vocab_size && t->is_special[id];
}
