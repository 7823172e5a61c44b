// tokenizer.json -> GGUF tokenizer metadata (see gguf_vocab.h).
#include "export/gguf_vocab.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

// The Qwen2 / Qwen3 pre-tokenizer pattern (tokenizer.json, Split with behavior Isolated), which
// llama.cpp implements as the "qwen2" pre-tokenizer.
static const char k_qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum { TOK_NORMAL = 1, TOK_CONTROL = 3, TOK_USER_DEFINED = 4, TOK_UNUSED = 5 };

// The special tokens as tokenizer_config.json / config.json name them ("<name>_token",
// "<name>_token_id") and their GGUF keys (llama.cpp's LLM_KV_TOKENIZER_*_ID, spelling included).
static const char *const k_special[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
static const char *const k_special_key[] = {
    "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",   "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",   "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.mask_token_id"};
#define N_SPECIAL 7

static cJSON *load_json(const char *dir, const char *name, int required, ae_status *st) {
    char *path = ae_path_join(dir, name), *text = NULL;
    size_t len;
    *st = AE_OK;
    if (!path) {
        *st = AE_ERR_NOMEM;
        return NULL;
    }
    if (!required && !ae_path_exists(path)) {
        free(path);
        return NULL;
    }
    *st = ae_file_read_all(path, &text, &len);
    cJSON *o = *st == AE_OK ? cJSON_Parse(text) : NULL;
    if (*st == AE_OK && !cJSON_IsObject(o)) {
        *st = ae_errorf(AE_ERR_FORMAT, "%s: not a JSON object", path);
        cJSON_Delete(o);
        o = NULL;
    }
    free(text);
    free(path);
    return o;
}

static const cJSON *get(const cJSON *o, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int is_type(const cJSON *o, const char *type) {
    const cJSON *t = get(o, "type");
    return cJSON_IsString(t) && !strcmp(t->valuestring, type);
}

// Byte-level BPE with exactly the Qwen2 pre-tokenizer and a ByteLevel post-processor.
static ae_status check_kind(const cJSON *tj, const char *origin) {
    const cJSON *model = get(tj, "model"), *pre = get(tj, "pre_tokenizer");
    const cJSON *post = get(tj, "post_processor");
    if (!is_type(model, "BPE"))
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: model type is not BPE: only byte-level BPE "
                         "tokenizers (llama.cpp's \"gpt2\" tokenizer model) are exported to GGUF", origin);
    const cJSON *split = NULL, *bl = NULL;
    if (is_type(pre, "Sequence") && cJSON_GetArraySize(get(pre, "pretokenizers")) == 2) {
        split = cJSON_GetArrayItem(get(pre, "pretokenizers"), 0);
        bl = cJSON_GetArrayItem(get(pre, "pretokenizers"), 1);
    }
    const cJSON *re = split ? get(get(split, "pattern"), "Regex") : NULL;
    const cJSON *beh = split ? get(split, "behavior") : NULL;
    if (!is_type(split, "Split") || !cJSON_IsString(re) || strcmp(re->valuestring, k_qwen2_regex) ||
        !cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") || !is_type(bl, "ByteLevel") ||
        cJSON_IsTrue(get(bl, "use_regex")))
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: the pre-tokenizer is not Qwen2/Qwen3's (Split on the Qwen2 regex, "
                         "then ByteLevel): llama.cpp would split text with its \"qwen2\" "
                         "pre-tokenizer differently, so the GGUF would tokenise wrongly", origin);
    if (post && !cJSON_IsNull(post) && !is_type(post, "ByteLevel"))
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: post-processor '%s' is not ByteLevel (Qwen's); "
                         "exporting its special-token rules to GGUF is not supported", origin,
                         cJSON_IsString(get(post, "type")) ? get(post, "type")->valuestring : "?");
    return AE_OK;
}

// "<|...|>" and the few other texts llama.cpp's converter treats as control tokens.
static int looks_special(const char *s) {
    size_t n = strlen(s);
    if (!strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") || !strcmp(s, "[@BOS@]"))
        return 1;
    if (n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>")) return 1;
    static const char fl[] = "<\xEF\xBD\x9C", fr[] = "\xEF\xBD\x9C>"; // "<｜", "｜>"
    if (n >= 8 && !strncmp(s, fl, 4) && !strcmp(s + n - 4, fr)) return 1;
    return n >= 8 && !strncmp(s, "<unused", 7) && s[n - 1] == '>';
}

typedef struct {
    const char **tokens; // (V) borrowed from the JSON, or pads[i]
    char **pads;         // (V) "[PAD<i>]" or NULL
    int32_t *types;      // (V)
    const char **merges;
    char **merge_buf;    // (n_merges) joined pair-form merges
    size_t n_merges;
    int special[N_SPECIAL]; // ids, -1 unset
    int add_bos, add_eos;   // -1 unset
} vocab;

static void vocab_free(vocab *v, int V) {
    for (int i = 0; v->pads && i < V; i++) free(v->pads[i]);
    for (size_t i = 0; v->merge_buf && i < v->n_merges; i++) free(v->merge_buf[i]);
    free(v->pads);
    free(v->tokens);
    free(v->types);
    free((void *)v->merges);
    free(v->merge_buf);
}

static ae_status fill_tokens(vocab *v, const cJSON *tj, int V, const char *origin) {
    v->tokens = calloc((size_t)V, sizeof *v->tokens);
    v->pads = calloc((size_t)V, sizeof *v->pads);
    v->types = calloc((size_t)V, sizeof *v->types);
    if (!v->tokens || !v->pads || !v->types) return AE_ERR_NOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, get(get(tj, "model"), "vocab")) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= V)
            return ae_errorf(AE_ERR_FORMAT, "%s: token '%s' has id %g, outside [0, vocab_size %d)",
                             origin, e->string, cJSON_IsNumber(e) ? e->valuedouble : -1.0, V);
        v->tokens[e->valueint] = e->string;
        v->types[e->valueint] = TOK_NORMAL;
    }
    cJSON_ArrayForEach(e, get(tj, "added_tokens")) {
        const cJSON *id = get(e, "id"), *content = get(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || id->valuedouble < 0 || id->valuedouble >= V)
            return ae_errorf(AE_ERR_FORMAT, "%s: an added token has no content or an id outside "
                             "[0, vocab_size %d)", origin, V);
        v->tokens[id->valueint] = content->valuestring;
        v->types[id->valueint] = cJSON_IsTrue(get(e, "special")) || looks_special(content->valuestring)
                                     ? TOK_CONTROL : TOK_USER_DEFINED;
    }
    for (int i = 0; i < V; i++) {
        if (v->tokens[i]) continue;
        char name[32];
        snprintf(name, sizeof name, "[PAD%d]", i);
        if (!(v->pads[i] = strdup(name))) return AE_ERR_NOMEM;
        v->tokens[i] = v->pads[i];
        v->types[i] = TOK_UNUSED;
    }
    return AE_OK;
}

// "a b" strings as they are, or ["a", "b"] pairs joined with a space (a space inside a part
// becomes U+0120, as the converter writes it).
static ae_status fill_merges(vocab *v, const cJSON *tj, const char *origin) {
    const cJSON *ms = get(get(tj, "model"), "merges"), *e;
    size_t n = (size_t)cJSON_GetArraySize(ms), i = 0;
    v->merges = calloc(n + 1, sizeof *v->merges);
    v->merge_buf = calloc(n + 1, sizeof *v->merge_buf);
    if (!v->merges || !v->merge_buf) return AE_ERR_NOMEM;
    v->n_merges = n;
    cJSON_ArrayForEach(e, ms) {
        if (cJSON_IsString(e)) {
            v->merges[i++] = e->valuestring;
            continue;
        }
        const cJSON *a = cJSON_GetArrayItem(e, 0), *b = cJSON_GetArrayItem(e, 1);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2 || !cJSON_IsString(a) || !cJSON_IsString(b))
            return ae_errorf(AE_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", origin, i);
        size_t la = strlen(a->valuestring), lb = strlen(b->valuestring);
        char *s = malloc(2 * (la + lb) + 2), *p = s;
        if (!s) return AE_ERR_NOMEM;
        for (int part = 0; part < 2; part++) {
            for (const char *c = part ? b->valuestring : a->valuestring; *c; c++) {
                if (*c == ' ') {
                    *p++ = (char)0xC4;
                    *p++ = (char)0xA0;
                } else *p++ = *c;
            }
            if (!part) *p++ = ' ';
        }
        *p = '\0';
        v->merge_buf[i] = s;
        v->merges[i++] = s;
    }
    return AE_OK;
}

static int added_id(const cJSON *tj, const char *content) {
    const cJSON *e;
    cJSON_ArrayForEach(e, get(tj, "added_tokens")) {
        const cJSON *c = get(e, "content"), *id = get(e, "id");
        if (cJSON_IsString(c) && cJSON_IsNumber(id) && !strcmp(c->valuestring, content)) return id->valueint;
    }
    return -1;
}

static void fill_special(vocab *v, const cJSON *tj, const cJSON *tc, const cJSON *cfg, int V) {
    const cJSON *post = get(tj, "post_processor");
    v->add_bos = v->add_eos = -1;
    if (is_type(post, "ByteLevel")) v->add_bos = v->add_eos = 0;
    for (int k = 0; k < N_SPECIAL; k++) {
        char key[32];
        v->special[k] = -1;
        snprintf(key, sizeof key, "add_%s_token", k_special[k]);
        const cJSON *add = get(tc, key);
        if (cJSON_IsBool(add) && k == 0 && v->add_bos < 0) v->add_bos = cJSON_IsTrue(add);
        if (cJSON_IsBool(add) && k == 1 && v->add_eos < 0) v->add_eos = cJSON_IsTrue(add);
        snprintf(key, sizeof key, "%s_token", k_special[k]);
        const cJSON *ent = get(tc, key);
        if (cJSON_IsObject(ent)) ent = get(ent, "content");
        if (cJSON_IsString(ent)) v->special[k] = added_id(tj, ent->valuestring);
    }
    for (int k = 0; k < N_SPECIAL; k++) { // config.json fills the ones still unset
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", k_special[k]);
        const cJSON *id = get(cfg, key);
        if (v->special[k] < 0 && cJSON_IsNumber(id) && id->valuedouble >= 0 && id->valuedouble < V &&
            id->valuedouble == (double)id->valueint)
            v->special[k] = id->valueint;
    }
}

static ae_status write_all(ae_gguf *g, const vocab *v, int V, const char *chat_template) {
    AE_TRY(ae_gguf_set_str(g, "tokenizer.ggml.model", "gpt2"));
    AE_TRY(ae_gguf_set_str(g, "tokenizer.ggml.pre", "qwen2"));
    AE_TRY(ae_gguf_set_arr_str(g, "tokenizer.ggml.tokens", v->tokens, (size_t)V));
    AE_TRY(ae_gguf_set_arr_i32(g, "tokenizer.ggml.token_type", v->types, (size_t)V));
    AE_TRY(ae_gguf_set_arr_str(g, "tokenizer.ggml.merges", v->merges, v->n_merges));
    for (int k = 0; k < N_SPECIAL; k++)
        if (v->special[k] >= 0) AE_TRY(ae_gguf_set_u32(g, k_special_key[k], (uint32_t)v->special[k]));
    if (v->add_bos >= 0) AE_TRY(ae_gguf_set_bool(g, "tokenizer.ggml.add_bos_token", v->add_bos));
    if (v->add_eos >= 0) AE_TRY(ae_gguf_set_bool(g, "tokenizer.ggml.add_eos_token", v->add_eos));
    if (chat_template) AE_TRY(ae_gguf_set_str(g, "tokenizer.chat_template", chat_template));
    return AE_OK;
}

ae_status ae_gguf_write_vocab(ae_gguf *g, const char *model_dir, int vocab_size) {
    ae_status st;
    char *origin = ae_path_join(model_dir, "tokenizer.json"), *jinja = NULL;
    if (!origin) return AE_ERR_NOMEM;
    cJSON *tj = load_json(model_dir, "tokenizer.json", 1, &st), *tc = NULL, *cfg = NULL;
    if (st == AE_OK) tc = load_json(model_dir, "tokenizer_config.json", 0, &st);
    if (st == AE_OK) cfg = load_json(model_dir, "config.json", 0, &st);
    vocab v = {0};
    if (st == AE_OK) st = check_kind(tj, origin);
    if (st == AE_OK) st = fill_tokens(&v, tj, vocab_size, origin);
    if (st == AE_OK) st = fill_merges(&v, tj, origin);
    const char *tmpl = NULL;
    if (st == AE_OK) {
        fill_special(&v, tj, tc, cfg, vocab_size);
        const cJSON *ct = get(tc, "chat_template");
        char *jp = ae_path_join(model_dir, "chat_template.jinja");
        size_t len;
        if (cJSON_IsString(ct)) tmpl = ct->valuestring;
        else if (jp && ae_path_exists(jp) && ae_file_read_all(jp, &jinja, &len) == AE_OK) tmpl = jinja;
        free(jp);
        st = write_all(g, &v, vocab_size, tmpl);
    }
    vocab_free(&v, vocab_size);
    free(jinja);
    cJSON_Delete(tj);
    cJSON_Delete(tc);
    cJSON_Delete(cfg);
    free(origin);
    return st;
}
