// The pipeline fields of tokenizer.json around the BPE model: normalizer (NFC or none),
// pre_tokenizer (Split regex steps + ByteLevel), decoder (ByteLevel). Anything whose behaviour we
// do not reproduce is AE_ERR_UNSUPPORTED naming the field, never silently ignored.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/mem.h"
#include "tok/tok_internal.h"

// The regex HF's ByteLevel pre-tokenizer uses when use_regex is true (GPT-2's).
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

ae_status ae_tok_json_bool(const cJSON *obj, const char *key, int def, int *out, const char *path,
                           const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return AE_OK;
    }
    if (!cJSON_IsBool(v))
        return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.%s': expected true or false", path, field,
                         key);
    *out = cJSON_IsTrue(v);
    return AE_OK;
}

ae_status ae_tok_json_str(const cJSON *obj, const char *key, const char **out, const char *path,
                          const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return AE_OK;
    if (!cJSON_IsString(v) || !v->valuestring)
        return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.%s': expected a string", path, field, key);
    *out = v->valuestring;
    return AE_OK;
}

static ae_status get_type(const cJSON *obj, const char **type, const char *path,
                          const char *field) {
    if (!cJSON_IsObject(obj))
        return ae_errorf(AE_ERR_FORMAT, "%s: field '%s': expected an object or null", path, field);
    AE_TRY(ae_tok_json_str(obj, "type", type, path, field));
    if (!*type) return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.type' is missing", path, field);
    return AE_OK;
}

static ae_status parse_normalizer(ae_tokenizer *t, const cJSON *n, const char *field) {
    if (!n || cJSON_IsNull(n)) return AE_OK;
    const char *type;
    AE_TRY(get_type(n, &type, t->path, field));
    if (strcmp(type, "NFC") == 0) {
        t->nfc = 1;
        return AE_OK;
    }
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.normalizers': expected an array",
                             t->path, field);
        const cJSON *it;
        int k = 0;
        cJSON_ArrayForEach(it, list) {
            char sub[64];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", field, k++);
            if (cJSON_IsNull(it))
                return ae_errorf(AE_ERR_FORMAT, "%s: field '%s': expected an object", t->path, sub);
            // NFC twice is NFC once
            AE_TRY(parse_normalizer(t, it, sub));
        }
        return AE_OK;
    }
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "%s: field '%s': normalizer type '%s' is not supported (only NFC, a Sequence "
                     "of NFC, or null)",
                     t->path, field, type);
}

static ae_status push_step(ae_tokenizer *t, ae_tok_pretok step) {
    ae_tok_pretok *p = ae_realloc(t->pretok, (size_t)(t->n_pretok + 1) * sizeof *p);
    if (!p) {
        if (step.re) ae_tok_regex_free(step.re);
        return AE_ERR_NOMEM;
    }
    t->pretok = p;
    t->pretok[t->n_pretok++] = step;
    return AE_OK;
}

static ae_status parse_split(ae_tokenizer *t, const cJSON *p, const char *field) {
    char f[96];
    snprintf(f, sizeof f, "%s.pattern", field);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    if (!cJSON_IsObject(pat))
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field '%s': expected {\"Regex\": ...} or {\"String\": ...}", t->path,
                         f);
    const char *regex, *string, *behavior;
    AE_TRY(ae_tok_json_str(pat, "Regex", &regex, t->path, f));
    AE_TRY(ae_tok_json_str(pat, "String", &string, t->path, f));
    if (!regex && !string)
        return ae_errorf(AE_ERR_FORMAT,
                         "%s: field '%s': expected {\"Regex\": ...} or {\"String\": ...}", t->path,
                         f);
    AE_TRY(ae_tok_json_str(p, "behavior", &behavior, t->path, field));
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field '%s.behavior': '%s' is not supported (only Isolated)", t->path,
                         field, behavior ? behavior : "(missing)");
    int invert = 0;
    AE_TRY(ae_tok_json_bool(p, "invert", 0, &invert, t->path, field));
    if (invert)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field '%s.invert': true is not supported",
                         t->path, field);
    snprintf(f, sizeof f, "%s.pattern.%s", field, regex ? "Regex" : "String");
    ae_tok_pretok step = {AE_PRETOK_SPLIT, NULL, 0};
    AE_TRY(ae_tok_regex_compile(regex ? regex : string, !regex, &step.re, t->path, f));
    return push_step(t, step);
}

static ae_status parse_bytelevel(ae_tokenizer *t, const cJSON *p, const char *field) {
    int add_prefix_space = 1, use_regex = 1, trim = 1;
    AE_TRY(ae_tok_json_bool(p, "add_prefix_space", 1, &add_prefix_space, t->path, field));
    AE_TRY(ae_tok_json_bool(p, "use_regex", 1, &use_regex, t->path, field));
    AE_TRY(ae_tok_json_bool(p, "trim_offsets", 1, &trim, t->path, field)); // offsets only
    ae_tok_pretok step = {AE_PRETOK_BYTELEVEL, NULL, add_prefix_space};
    if (use_regex) AE_TRY(ae_tok_regex_compile(GPT2_PATTERN, 0, &step.re, t->path, field));
    return push_step(t, step);
}

static ae_status parse_pretok(ae_tokenizer *t, const cJSON *p, const char *field, int depth) {
    const char *type;
    AE_TRY(get_type(p, &type, t->path, field));
    if (strcmp(type, "Split") == 0) return parse_split(t, p, field);
    if (strcmp(type, "ByteLevel") == 0) return parse_bytelevel(t, p, field);
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return ae_errorf(AE_ERR_FORMAT, "%s: field '%s.pretokenizers': expected an array",
                             t->path, field);
        const cJSON *it;
        int k = 0;
        cJSON_ArrayForEach(it, list) {
            char sub[64];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", field, k++);
            AE_TRY(parse_pretok(t, it, sub, depth + 1));
        }
        return AE_OK;
    }
    return ae_errorf(AE_ERR_UNSUPPORTED,
                     "%s: field '%s': pre-tokenizer type '%s' is not supported (only Split, "
                     "ByteLevel, or a Sequence of them)",
                     t->path, field, type);
}

ae_status ae_tok_parse_pipeline(ae_tokenizer *t, const cJSON *root) {
    const cJSON *v;
    AE_TRY(parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizer"));

    v = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!v || cJSON_IsNull(v))
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field 'pre_tokenizer' is missing (a ByteLevel pre-tokenizer is "
                         "required)",
                         t->path);
    AE_TRY(parse_pretok(t, v, "pre_tokenizer", 0));
    int nbl = 0;
    for (int i = 0; i < t->n_pretok; i++) nbl += t->pretok[i].kind == AE_PRETOK_BYTELEVEL;
    if (nbl != 1 || t->pretok[t->n_pretok - 1].kind != AE_PRETOK_BYTELEVEL)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field 'pre_tokenizer': exactly one ByteLevel step, placed last, is "
                         "required (byte-level BPE)",
                         t->path);

    v = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const char *type;
    if (!v || cJSON_IsNull(v))
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field 'decoder' is missing (ByteLevel required)",
                         t->path);
    AE_TRY(get_type(v, &type, t->path, "decoder"));
    if (strcmp(type, "ByteLevel") != 0)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: field 'decoder': type '%s' is not supported (only ByteLevel)",
                         t->path, type);

    // truncation / padding change what encode returns; we implement neither.
    static const char *const absent[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(root, absent[i]);
        if (v && !cJSON_IsNull(v))
            return ae_errorf(AE_ERR_UNSUPPORTED, "%s: field '%s': only null is supported", t->path,
                             absent[i]);
    }
    return AE_OK;
}
