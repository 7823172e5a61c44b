// Tool calling (serve/tools.h): the request's tool list, the reply's <tool_call> blocks.
#include "serve/tools.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "serve/pyjson.h"
#include "serve/text.h"

static const char k_open[] = "<tool_call>", k_close[] = "</tool_call>";

void ae_tools_free_list(char **list, int count) {
    for (int i = 0; list && i < count; i++) free(list[i]);
    free(list);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

ae_status ae_tools_dump_list(const char *text, size_t n, char ***out, int *count) {
    *out = NULL;
    *count = 0;
    size_t i = 0;
    while (i < n && is_ws(text[i])) i++;
    if (i >= n || text[i] != '[') return ae_errorf(AE_ERR_FORMAT, "tools must be an array");
    i++;
    char **list = NULL;
    int k = 0;
    ae_status st = AE_OK;
    for (;;) {
        while (i < n && is_ws(text[i])) i++;
        if (i < n && text[i] == ']' && k == 0) break;
        char *one = NULL;
        size_t used = 0;
        if ((st = ae_pyjson_dump(text + i, n - i, &one, &used)) != AE_OK) break;
        char **g = ae_realloc(list, sizeof *list * (size_t)(k + 1));
        if (!g) {
            free(one);
            st = AE_ERR_NOMEM;
            break;
        }
        list = g;
        list[k++] = one;
        i += used;
        if (i < n && text[i] == ',') {
            i++;
            continue;
        }
        if (i < n && text[i] == ']') break;
        st = ae_errorf(AE_ERR_FORMAT, "tools: ',' or ']' expected at byte %zu", i);
        break;
    }
    if (st != AE_OK) {
        ae_tools_free_list(list, k);
        return st;
    }
    *out = list;
    *count = k;
    return AE_OK;
}

void ae_tool_calls_free(ae_tool_calls *tc) {
    for (int i = 0; i < tc->n; i++) free(tc->calls[i].name), free(tc->calls[i].arguments);
    free(tc->calls);
    memset(tc, 0, sizeof *tc);
}

// Finds needle in [s, s + n), or NULL.
static const char *find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

// One block's JSON, [s, s + n): 1 and *call when it is an object with a string name and
// arguments, 0 when not, -1 out of memory.
static int parse_call(const char *s, size_t n, ae_tool_call *call) {
    size_t used = 0;
    if (ae_pyjson_span(s, n, &used) != AE_OK || used != n) return 0; // not one JSON value
    const char *name_at = NULL, *args_at = NULL;
    size_t name_n = 0, args_n = 0;
    if (ae_pyjson_member(s, n, "name", 1, &name_at, &name_n) != 1 ||
        ae_pyjson_member(s, n, "arguments", 1, &args_at, &args_n) != 1)
        return 0;
    cJSON *name = cJSON_ParseWithLength(name_at, name_n);
    int ok = cJSON_IsString(name);
    if (ok) {
        call->name = ae_strdup(name->valuestring);
        if (!call->name || ae_pyjson_dump(args_at, args_n, &call->arguments, NULL) != AE_OK) {
            free(call->name);
            call->name = NULL;
            ok = -1;
        }
    }
    cJSON_Delete(name);
    return ok;
}

int ae_tool_calls_parse(const char *text, size_t n, ae_tool_calls *out) {
    memset(out, 0, sizeof *out);
    const char *first = find(text, n, k_open);
    if (!first) return 0;
    const char *p = first, *end = text + n;
    int rc = 1;
    while (p && rc == 1) {
        const char *body = p + strlen(k_open), *close = find(body, (size_t)(end - body), k_close);
        size_t len = close ? (size_t)(close - body) : (size_t)(end - body);
        ae_tool_call call = {0};
        rc = parse_call(body, len, &call);
        if (rc != 1) break;
        ae_tool_call *g = ae_realloc(out->calls, sizeof *g * (size_t)(out->n + 1));
        if (!g) {
            free(call.name), free(call.arguments);
            rc = -1;
            break;
        }
        out->calls = g;
        out->calls[out->n++] = call;
        p = close ? find(close, (size_t)(end - close), k_open) : NULL;
    }
    if (rc != 1) {
        ae_tool_calls_free(out);
        return rc;
    }
    out->content_len = (size_t)(first - text);
    return 1;
}

size_t ae_tool_calls_stream_limit(const char *text, size_t n) {
    const char *first = find(text, n, k_open);
    if (first) return (size_t)(first - text);
    return n - ae_text_partial_prefix(text, n, k_open);
}
