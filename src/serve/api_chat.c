// Chat completions (serve/api_internal.h): messages, tools and tool_choice into the prompt;
// the reply as a message with content and tool calls, whole or as stream deltas.
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/sbuf.h"
#include "serve/api_internal.h"
#include "serve/chat.h"
#include "serve/pyjson.h"
#include "serve/tools.h"

// What a request's messages own while the prompt is rendered.
typedef struct {
    ae_chat_msg *msg;   // (n)
    ae_chat_call *call; // every message's calls, one array
    ae_strv owned;      // strings made here (joined text parts, arguments as JSON)
    int n;
} chat_req;

static void chat_req_free(chat_req *c) {
    ae_strv_free(&c->owned);
    free(c->call);
    free(c->msg);
}

// Keeps s (heap) until the request is rendered; NULL when s is NULL or out of memory.
static char *own(chat_req *c, char *s) { return ae_strv_push(&c->owned, s); }

// A message's content: a string, an array of text parts (joined), or, for an assistant
// message, null or absent (""). NULL when it is none of these.
static const char *content_of(chat_req *c, const cJSON *content, int assistant) {
    if (cJSON_IsString(content)) return content->valuestring;
    if (assistant && (!content || cJSON_IsNull(content))) return "";
    if (!cJSON_IsArray(content)) return NULL;
    size_t total = 1;
    for (const cJSON *p = content->child; p; p = p->next) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx))
            return NULL;
        total += strlen(tx->valuestring);
    }
    char *s = own(c, ae_malloc(total));
    if (!s) return NULL;
    s[0] = 0;
    for (const cJSON *p = content->child; p; p = p->next)
        strcat(s, cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring);
    return s;
}

// An assistant message's tool_calls, [{type: "function", function: {name, arguments}}]:
// arguments a string (written as is) or a JSON value (written as tojson would). Returns the
// number read, or -1 with *why set.
static int read_calls(chat_req *c, const cJSON *tc, ae_chat_call *out, const char **why) {
    int k = 0;
    for (const cJSON *t = tc->child; t; t = t->next, k++) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsObject(t) || (ty && !cJSON_IsNull(ty) && !(cJSON_IsString(ty) &&
                                                               !strcmp(ty->valuestring, "function")))) {
            *why = "must be an object of type \"function\"";
            return -1;
        }
        if (!cJSON_IsObject(fn) || !cJSON_IsString(name) || !args || cJSON_IsNull(args)) {
            *why = "needs function.name (a string) and function.arguments";
            return -1;
        }
        out[k].name = name->valuestring;
        if (cJSON_IsString(args)) {
            out[k].arguments = args->valuestring;
            continue;
        }
        char *raw = cJSON_PrintUnformatted(args), *py = NULL;
        if (raw) ae_pyjson_dump(raw, strlen(raw), &py, NULL);
        free(raw);
        if (!(out[k].arguments = own(c, py))) {
            *why = "out of memory";
            return -1;
        }
    }
    return k;
}

// messages[] into c->msg.
static int read_messages(const cJSON *ms, chat_req *c, ae_api_error *err) {
    if (!cJSON_IsArray(ms) || (c->n = cJSON_GetArraySize(ms)) < 1)
        BAD("messages", "messages must be a non-empty array");
    int n_calls = 0;
    for (const cJSON *m = ms->child; m; m = m->next)
        n_calls += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"));
    c->msg = ae_calloc((size_t)c->n, sizeof *c->msg);
    c->call = ae_calloc((size_t)(n_calls > 0 ? n_calls : 1), sizeof *c->call);
    if (!c->msg || !c->call) BAD("messages", "out of memory");
    int i = 0, used = 0;
    for (const cJSON *m = ms->child; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role))
            BAD("messages", "messages[%d] must be an object with a string role", i);
        const char *r = role->valuestring;
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool"))
            BAD("messages", "messages[%d].role '%.40s' is not supported (system, user, assistant, "
                "tool)", i, r);
        int assistant = !strcmp(r, "assistant");
        ae_chat_msg *g = &c->msg[i];
        g->role = r;
        g->content = content_of(c, cJSON_GetObjectItemCaseSensitive(m, "content"), assistant);
        if (!g->content)
            BAD("messages", "messages[%d].content must be a string or an array of text parts%s", i,
                assistant ? " (or null)" : "");
        if (!assistant) continue;
        const cJSON *rc = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
        if (rc && !cJSON_IsNull(rc) && !cJSON_IsString(rc))
            BAD("messages", "messages[%d].reasoning_content must be a string or null", i);
        g->reasoning = cJSON_IsString(rc) ? rc->valuestring : NULL;
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        if (!tc || cJSON_IsNull(tc)) continue;
        if (!cJSON_IsArray(tc)) BAD("messages", "messages[%d].tool_calls must be an array", i);
        const char *why = NULL;
        int k = read_calls(c, tc, c->call + used, &why);
        if (k < 0) BAD("messages", "messages[%d].tool_calls: each call %s", i, why);
        g->calls = c->call + used;
        g->n_calls = k;
        used += k;
    }
    return 0;
fail:
    return -1;
}

// tools[] (each {"type": "function", "function": {"name": ...}}) as the template writes them,
// from the body's own text; tool_choice and parallel_tool_calls. *list NULL when the prompt
// has no tools (none given, or tool_choice "none").
static int read_tools(const cJSON *j, const char *body, size_t len, ae_api_request *out,
                      char ***list, int *n, ae_api_error *err) {
    *list = NULL;
    *n = 0;
    out->parallel_tools = 1;
    if (ae_api_get_bool(j, "parallel_tool_calls", &out->parallel_tools) < 0)
        BAD("parallel_tool_calls", "parallel_tool_calls must be a boolean");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(j, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(j, "tool_choice");
    int has_tools = tools && !cJSON_IsNull(tools), has_choice = choice && !cJSON_IsNull(choice);
    if (has_choice && !has_tools) BAD("tool_choice", "tool_choice needs tools");
    if (!has_tools) return 0;
    if (!cJSON_IsArray(tools)) BAD("tools", "tools must be an array");
    int i = 0;
    for (const cJSON *t = tools->child; t; t = t->next, i++) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function") || !cJSON_IsString(name) ||
            !name->valuestring[0])
            BAD("tools", "tools[%d] must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                i);
    }
    if (has_choice) {
        if (cJSON_IsString(choice) && !strcmp(choice->valuestring, "none")) return 0;
        if (!cJSON_IsString(choice) || strcmp(choice->valuestring, "auto"))
            BAD("tool_choice", "tool_choice must be \"auto\" or \"none\" (\"required\" and a named "
                "function need constrained decoding, which attnedit does not do)");
    }
    if (i == 0) return 0;
    const char *span = NULL;
    size_t span_n = 0;
    // the first "tools" member, the one cJSON read above
    if (ae_pyjson_member(body, len, "tools", 0, &span, &span_n) != 1 ||
        ae_tools_dump_list(span, span_n, list, n) != AE_OK)
        BAD("tools", "tools: %s", ae_last_error());
    out->tools = 1;
    return 0;
fail:
    return -1;
}

int ae_api_parse_chat(const ae_api_ctx *ctx, const cJSON *j, const char *body, size_t len,
                      ae_api_request *out, ae_api_error *err) {
    chat_req c = {0};
    char **tools = NULL;
    int n_tools = 0, rc = -1;
    if (!ctx->tok)
        BAD("messages", "this server has no tokenizer (random weights from a folder without "
            "tokenizer.json); use /v1/completions with token-id prompts");
    if (ctx->chat == AE_CHAT_NONE)
        BAD("messages", "this model has no chat template (tokenizer_config.json chat_template); "
            "use /v1/completions");
    if (ctx->chat != AE_CHAT_QWEN3)
        BAD("messages", "this model's chat template is not supported (attnedit renders the "
            "Qwen3 template only); use /v1/completions with a rendered prompt");
    ae_chat_opts o = {.enable_thinking = 1};
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(j, "chat_template_kwargs");
    if (kw && !cJSON_IsNull(kw) &&
        (!cJSON_IsObject(kw) || ae_api_get_bool(kw, "enable_thinking", &o.enable_thinking) < 0))
        BAD("chat_template_kwargs", "chat_template_kwargs must be an object; enable_thinking a "
            "boolean");
    if (read_tools(j, body, len, out, &tools, &n_tools, err)) goto fail;
    if (read_messages(cJSON_GetObjectItemCaseSensitive(j, "messages"), &c, err)) goto fail;
    o.tools = (const char *const *)tools;
    o.n_tools = n_tools;
    char *prompt = NULL;
    if (ae_chat_render(c.msg, c.n, &o, &prompt) != AE_OK) BAD("messages", "%s", ae_last_error());
    out->prompt_text = prompt;
    size_t nid = 0;
    if (ae_tokenizer_encode(ctx->tok, prompt, strlen(prompt), &out->ids, &nid) != AE_OK)
        BAD("messages", "messages: %s", ae_last_error());
    out->n_ids = (int)nid;
    rc = 0;
fail:
    ae_tools_free_list(tools, n_tools);
    chat_req_free(&c);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The reply

// The reply's tool calls when the request reads them: 1 and *tc filled, else 0.
static int reply_calls(const ae_api_request *q, const ae_req *r, ae_tool_calls *tc) {
    memset(tc, 0, sizeof *tc);
    if (!q->tools || !r->text) return 0;
    if (ae_tool_calls_parse(r->text, r->text_len, tc) != 1) return 0;
    if (!q->parallel_tools) {
        for (int k = 1; k < tc->n; k++) free(tc->calls[k].name), free(tc->calls[k].arguments);
        tc->n = 1;
    }
    return 1;
}

// [{"index": k (stream only), "id": ..., "type": "function", "function": {"name", "arguments"}}]
static void add_calls(cJSON *to, const ae_tool_calls *tc, const char *id, int with_index) {
    cJSON *a = cJSON_AddArrayToObject(to, "tool_calls");
    const char *tail = strrchr(id, '-');
    for (int k = 0; k < tc->n; k++) {
        cJSON *t = cJSON_CreateObject();
        char cid[80];
        snprintf(cid, sizeof cid, "call_%s_%d", tail ? tail + 1 : id, k);
        if (with_index) cJSON_AddNumberToObject(t, "index", k);
        cJSON_AddStringToObject(t, "id", cid);
        cJSON_AddStringToObject(t, "type", "function");
        cJSON *f = cJSON_AddObjectToObject(t, "function");
        cJSON_AddStringToObject(f, "name", tc->calls[k].name);
        cJSON_AddStringToObject(f, "arguments", tc->calls[k].arguments);
        cJSON_AddItemToArray(a, t);
    }
}

// text[from, to) as a JSON string member.
static void add_text(cJSON *o, const char *key, const char *text, size_t from, size_t to) {
    size_t n = to > from ? to - from : 0;
    char *s = ae_malloc(n + 1);
    if (!s) return;
    if (n) memcpy(s, text + from, n);
    s[n] = 0;
    cJSON_AddStringToObject(o, key, s);
    free(s);
}

void ae_api_chat_message(cJSON *c, const ae_api_request *q, const ae_req *r, const char *id) {
    cJSON *m = cJSON_AddObjectToObject(c, "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    const char *text = r->text ? r->text : "";
    ae_tool_calls tc;
    int called = reply_calls(q, r, &tc);
    if (!called) add_text(m, "content", text, 0, strlen(text));
    else if (tc.content_len == 0) cJSON_AddNullToObject(m, "content");
    else add_text(m, "content", text, 0, tc.content_len);
    if (called) add_calls(m, &tc, id, 0);
    cJSON_AddStringToObject(c, "finish_reason", called ? "tool_calls" : ae_api_finish_str(r));
    ae_tool_calls_free(&tc);
}

size_t ae_api_stream_text_to(const ae_api_request *q, const ae_req *r, int final) {
    if (q->kind != AE_API_CHAT || !q->tools || !r->text) return r->text_len;
    if (!final) return ae_tool_calls_stream_limit(r->text, r->text_len);
    ae_tool_calls tc;
    size_t to = reply_calls(q, r, &tc) ? tc.content_len : r->text_len;
    ae_tool_calls_free(&tc);
    return to;
}

void ae_api_chat_delta(cJSON *c, const ae_api_request *q, const ae_req *r, const char *id,
                       size_t from, size_t to, int first, int final) {
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    if (first) cJSON_AddStringToObject(d, "role", "assistant");
    if (to > from || first) add_text(d, "content", r->text ? r->text : "", from, to);
    ae_tool_calls tc;
    int called = final && reply_calls(q, r, &tc);
    if (called) {
        add_calls(d, &tc, id, 1);
        ae_tool_calls_free(&tc);
    }
    if (final) cJSON_AddStringToObject(c, "finish_reason", called ? "tool_calls" : ae_api_finish_str(r));
    else cJSON_AddNullToObject(c, "finish_reason");
}
