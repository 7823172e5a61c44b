// OpenAI-compatible request parsing and response writing (serve/api.h).
#include "serve/api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mem.h"
#include "serve/api_internal.h"

void ae_api_error_set(ae_api_error *e, int status, const char *type, const char *param,
                      const char *fmt, ...) {
    memset(e, 0, sizeof *e);
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type);
    if (param) snprintf(e->param, sizeof e->param, "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *ae_api_error_json(const ae_api_error *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type);
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code[0]) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

void ae_api_request_free(ae_api_request *r) {
    free(r->prompt_text);
    free(r->ids);
    for (int i = 0; i < r->p.n_stop; i++) free(r->p.stop[i]);
    memset(r, 0, sizeof *r);
}

// An integer-valued JSON number in [lo, hi] into *out; 0 when absent or null, -1 when bad.
static int get_int(const cJSON *o, const char *key, double lo, double hi, long long *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return -1;
    *out = (long long)v->valuedouble;
    return 1;
}

static int get_num(const cJSON *o, const char *key, double lo, double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return -1;
    *out = v->valuedouble;
    return 1;
}

int ae_api_get_bool(const cJSON *o, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return -1;
    *out = cJSON_IsTrue(v);
    return 1;
}

static const char *const k_known_completions[] = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
    "stream_options", "logprobs", "echo", "n", "best_of", "ignore_eos", "user",
    "presence_penalty", "frequency_penalty", "logit_bias", "suffix", NULL};
static const char *const k_known_chat[] = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "seed", "stop", "stream", "stream_options", "logprobs", "top_logprobs", "n", "ignore_eos",
    "user", "presence_penalty", "frequency_penalty", "logit_bias", "chat_template_kwargs",
    "tools", "tool_choice", "parallel_tool_calls", NULL};

static int known(const char *const *list, const char *k) {
    for (; *list; list++)
        if (!strcmp(*list, k)) return 1;
    return 0;
}

// Prompt of a completions request: a string, an array of token ids, or a one-element array of
// either (several prompts in one request are refused).
static int parse_prompt(const ae_api_ctx *ctx, const cJSON *pr, ae_api_request *out,
                        ae_api_error *err) {
    if (cJSON_IsArray(pr) && cJSON_GetArraySize(pr) == 1 &&
        (cJSON_IsString(pr->child) || cJSON_IsArray(pr->child)))
        pr = pr->child;
    if (cJSON_IsString(pr)) {
        if (!ctx->tok)
            BAD("prompt", "prompt: this server has no tokenizer (random weights from a folder "
                "without tokenizer.json): send the prompt as an array of token ids");
        size_t n = 0;
        out->prompt_text = ae_strdup(pr->valuestring);
        if (!out->prompt_text ||
            ae_tokenizer_encode(ctx->tok, pr->valuestring, strlen(pr->valuestring), &out->ids, &n) != AE_OK)
            BAD("prompt", "prompt: %s", ae_last_error());
        out->n_ids = (int)n;
        return 0;
    }
    if (cJSON_IsArray(pr)) {
        int n = cJSON_GetArraySize(pr);
        if (n > 0 && !cJSON_IsNumber(pr->child))
            BAD("prompt", "prompt: several prompts in one request are not supported");
        out->ids = ae_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        if (!out->ids) BAD("prompt", "prompt: out of memory");
        int i = 0;
        for (const cJSON *v = pr->child; v; v = v->next, i++) {
            if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
                v->valuedouble >= ctx->vocab)
                BAD("prompt", "prompt[%d]: token ids must be integers in [0, %d)", i, ctx->vocab);
            out->ids[i] = (int32_t)v->valuedouble;
        }
        out->n_ids = n;
        char *txt = NULL;
        size_t tl = 0;
        if (ctx->tok && ae_tokenizer_decode(ctx->tok, out->ids, (size_t)n, &txt, &tl) == AE_OK)
            out->prompt_text = txt;
        return 0;
    }
    BAD("prompt", "prompt must be a string or an array of token ids");
fail:
    return -1;
}

int ae_api_parse(const ae_api_ctx *ctx, ae_api_kind kind, const char *body, size_t len,
                 ae_api_request *out, ae_api_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    cJSON *j = cJSON_ParseWithLength(body, len);
    long long iv = 0;
    double dv = 0;
    int bv = 0, r;
    if (!j) BAD(NULL, "the body is not valid JSON (near byte %ld)",
                (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - body : 0));
    if (!cJSON_IsObject(j)) BAD(NULL, "the body must be a JSON object");
    for (const cJSON *f = j->child; f; f = f->next)
        if (!known(kind == AE_API_CHAT ? k_known_chat : k_known_completions, f->string))
            BAD(f->string, "unrecognized request argument supplied: %.40s", f->string);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) BAD("model", "model must be a string");
        if (strcmp(model->valuestring, ctx->model_name)) {
            ae_api_error_set(err, 404, "invalid_request_error", "model",
                             "the model '%.100s' does not exist (this server serves '%.100s')",
                             model->valuestring, ctx->model_name);
            snprintf(err->code, sizeof err->code, "model_not_found");
            goto fail;
        }
    }
    ae_req_params *p = &out->p;
    p->max_tokens = 16;
    p->logprobs = -1;
    p->sp.temperature = 1.0f;
    p->sp.top_p = 1.0f;
    if ((r = get_int(j, "n", 1, 1, &iv)) < 0) BAD("n", "n must be 1 (one choice per request)");
    if ((r = get_int(j, "best_of", 1, 1, &iv)) < 0) BAD("best_of", "best_of must be 1");
    const char *mt = kind == AE_API_CHAT && cJSON_GetObjectItemCaseSensitive(j, "max_completion_tokens")
                         ? "max_completion_tokens" : "max_tokens";
    if (kind == AE_API_CHAT) p->max_tokens = -1; // default: up to the context limit
    if ((r = get_int(j, mt, 1, 1e9, &iv)) < 0) BAD(mt, "%s must be an integer >= 1", mt);
    if (r > 0) p->max_tokens = iv > ctx->max_model_len ? ctx->max_model_len + 1 : (int)iv;
    if ((r = get_num(j, "temperature", 0, 2, &dv)) < 0)
        BAD("temperature", "temperature must be a number in [0, 2]");
    if (r > 0) p->sp.temperature = (float)dv;
    if ((r = get_num(j, "top_p", 0, 1, &dv)) < 0 || (r > 0 && dv <= 0))
        BAD("top_p", "top_p must be a number in (0, 1]");
    if (r > 0) p->sp.top_p = (float)dv;
    if ((r = get_int(j, "top_k", -1, 1e9, &iv)) < 0) BAD("top_k", "top_k must be an integer >= -1");
    if (r > 0) p->sp.top_k = iv < 0 ? 0 : (int)iv;
    p->sp.greedy = p->sp.temperature == 0.0f;
    if (p->sp.greedy) p->sp.temperature = 1.0f;
    if ((r = get_int(j, "seed", -9.2e18, 9.2e18, &iv)) < 0) BAD("seed", "seed must be an integer");
    if (r > 0) p->sp.seed = (uint64_t)iv;
    else p->sp.seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull + ctx->seed_counter;
    for (const char *pen[] = {"presence_penalty", "frequency_penalty", NULL}, **q = pen; *q; q++) {
        if ((r = get_num(j, *q, -2, 2, &dv)) < 0 || (r > 0 && dv != 0))
            BAD(*q, "%s is not supported (only 0)", *q);
    }
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(j, "logit_bias");
    if (lb && !cJSON_IsNull(lb) && !(cJSON_IsObject(lb) && !lb->child))
        BAD("logit_bias", "logit_bias is not supported");
    const cJSON *sfx = cJSON_GetObjectItemCaseSensitive(j, "suffix");
    if (sfx && !cJSON_IsNull(sfx)) BAD("suffix", "suffix is not supported");
    if ((r = ae_api_get_bool(j, "stream", &out->stream)) < 0) BAD("stream", "stream must be a boolean");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) BAD("stream_options", "stream_options must be an object");
        if (ae_api_get_bool(so, "include_usage", &out->include_usage) < 0)
            BAD("stream_options", "stream_options.include_usage must be a boolean");
    }
    if ((r = ae_api_get_bool(j, "ignore_eos", &p->ignore_eos)) < 0) BAD("ignore_eos", "ignore_eos must be a boolean");
    if (kind == AE_API_COMPLETIONS) {
        if ((r = get_int(j, "logprobs", 0, AE_MAX_TOP_LOGPROBS, &iv)) < 0)
            BAD("logprobs", "logprobs must be an integer in [0, %d]", AE_MAX_TOP_LOGPROBS);
        if (r > 0) p->logprobs = (int)iv;
        if ((r = ae_api_get_bool(j, "echo", &p->echo)) < 0) BAD("echo", "echo must be a boolean");
    } else {
        if ((r = ae_api_get_bool(j, "logprobs", &bv)) < 0) BAD("logprobs", "logprobs must be a boolean");
        if (bv) p->logprobs = 0;
        if ((r = get_int(j, "top_logprobs", 0, AE_MAX_TOP_LOGPROBS, &iv)) < 0)
            BAD("top_logprobs", "top_logprobs must be an integer in [0, %d]", AE_MAX_TOP_LOGPROBS);
        if (r > 0) {
            if (!bv) BAD("top_logprobs", "top_logprobs needs logprobs: true");
            p->logprobs = (int)iv;
        }
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(j, "stop");
    if (stop && !cJSON_IsNull(stop) && !ctx->tok)
        BAD("stop", "stop strings need a tokenizer (this server has none: random weights from a "
            "folder without tokenizer.json)");
    if (stop && !cJSON_IsNull(stop)) {
        if (cJSON_IsString(stop)) {
            if (!stop->valuestring[0]) BAD("stop", "stop strings must not be empty");
            p->stop[p->n_stop++] = ae_strdup(stop->valuestring);
        } else if (cJSON_IsArray(stop) && cJSON_GetArraySize(stop) <= AE_MAX_STOP) {
            for (const cJSON *s = stop->child; s; s = s->next) {
                if (!cJSON_IsString(s) || !s->valuestring[0])
                    BAD("stop", "stop must be a string or an array of up to %d non-empty strings",
                        AE_MAX_STOP);
                p->stop[p->n_stop++] = ae_strdup(s->valuestring);
            }
        } else {
            BAD("stop", "stop must be a string or an array of up to %d non-empty strings", AE_MAX_STOP);
        }
    }
    if (kind == AE_API_COMPLETIONS) {
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        if (!pr) BAD("prompt", "prompt is required");
        if (parse_prompt(ctx, pr, out, err)) goto fail;
    } else {
        if (ae_api_parse_chat(ctx, j, body, len, out, err)) goto fail;
        if (ctx->im_end_id >= 0) p->stop_ids[p->n_stop_ids++] = ctx->im_end_id;
    }
    if (out->n_ids < 1) BAD("prompt", "the prompt is empty");
    if (p->max_tokens < 0) { // chat without a limit: the rest of the context
        p->max_tokens = ctx->max_model_len - out->n_ids;
        if (p->max_tokens < 1) p->max_tokens = 1;
    }
    if (out->n_ids + p->max_tokens > ctx->max_model_len) {
        ae_api_error_set(err, 400, "invalid_request_error", out->kind == AE_API_CHAT ? "messages" : "prompt",
                         "this model's maximum context length is %d tokens, but %d tokens were "
                         "requested (%d in the prompt, %d for the completion)",
                         ctx->max_model_len, out->n_ids + p->max_tokens, out->n_ids, p->max_tokens);
        snprintf(err->code, sizeof err->code, "context_length_exceeded");
        goto fail;
    }
    cJSON_Delete(j);
    return 0;
fail:
    cJSON_Delete(j);
    ae_api_request_free(out);
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Responses

// The text of one token; without a tokenizer "token_id:N" (as vLLM's
// --return-tokens-as-token-ids writes it).
static char *token_text(const ae_api_ctx *ctx, int32_t id) {
    char *t = NULL;
    size_t n = 0;
    if (!ctx->tok) {
        char b[32];
        snprintf(b, sizeof b, "token_id:%d", (int)id);
        return ae_strdup(b);
    }
    if (ae_tokenizer_decode(ctx->tok, &id, 1, &t, &n) != AE_OK) return ae_strdup("");
    return t;
}

// Without a tokenizer a choice carries the ids it generated, [from, to), as "token_ids".
static void add_token_ids(const ae_api_ctx *ctx, cJSON *choice, const ae_req *r, int from, int to) {
    if (ctx->tok) return;
    cJSON *a = cJSON_AddArrayToObject(choice, "token_ids");
    for (int i = from; i < to; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(r->out_ids[i]));
}

static void add_token_str(cJSON *o, const char *key, const ae_api_ctx *ctx, int32_t id) {
    char *t = token_text(ctx, id);
    cJSON_AddStringToObject(o, key, t ? t : "");
    free(t);
}

// Completions logprobs object of entries lp[0..n) (lp[i] NULL: no logprob, the first prompt
// token); text offsets from `offset`.
static cJSON *completion_logprobs(const ae_api_ctx *ctx, const ae_tok_lp *const *lp,
                                  const int32_t *ids, int n, size_t offset) {
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
    cJSON *tlp = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *off = cJSON_AddArrayToObject(o, "text_offset");
    for (int i = 0; i < n; i++) {
        char *t = token_text(ctx, ids[i]);
        cJSON_AddItemToArray(toks, cJSON_CreateString(t ? t : ""));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        offset += t && ctx->tok ? strlen(t) : 0; // no tokenizer: no text, offsets 0
        free(t);
        if (!lp[i]) {
            cJSON_AddItemToArray(tlp, cJSON_CreateNull());
            cJSON_AddItemToArray(top, cJSON_CreateNull());
            continue;
        }
        cJSON_AddItemToArray(tlp, cJSON_CreateNumber(lp[i]->logprob));
        cJSON *d = cJSON_CreateObject();
        for (int k = 0; k < lp[i]->n_top; k++) {
            char *a = token_text(ctx, lp[i]->top_id[k]);
            if (!cJSON_GetObjectItemCaseSensitive(d, a ? a : ""))
                cJSON_AddNumberToObject(d, a ? a : "", lp[i]->top_lp[k]);
            free(a);
        }
        cJSON_AddItemToArray(top, d);
    }
    return o;
}

static cJSON *chat_logprobs(const ae_api_ctx *ctx, const ae_tok_lp *lp, int n) {
    cJSON *o = cJSON_CreateObject(), *c = cJSON_AddArrayToObject(o, "content");
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        add_token_str(e, "token", ctx, lp[i].id);
        cJSON_AddNumberToObject(e, "logprob", lp[i].logprob);
        cJSON_AddNullToObject(e, "bytes");
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < lp[i].n_top; k++) {
            cJSON *t = cJSON_CreateObject();
            add_token_str(t, "token", ctx, lp[i].top_id[k]);
            cJSON_AddNumberToObject(t, "logprob", lp[i].top_lp[k]);
            cJSON_AddNullToObject(t, "bytes");
            cJSON_AddItemToArray(top, t);
        }
        cJSON_AddItemToArray(c, e);
    }
    return o;
}

static void add_usage(cJSON *o, const ae_req *r) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", r->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", r->n_out);
    cJSON_AddNumberToObject(u, "total_tokens", r->n_prompt + r->n_out);
}

static cJSON *envelope(const ae_api_ctx *ctx, const ae_api_request *q, const char *id,
                       long created, int chunk) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", q->kind == AE_API_CHAT
                                             ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                             : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", ctx->model_name);
    return o;
}

const char *ae_api_finish_str(const ae_req *r) {
    return r->finish == AE_FINISH_LENGTH ? "length" : "stop";
}

// Completions logprobs of generated tokens [from, to), optionally preceded by the prompt's.
static cJSON *gen_logprobs(const ae_api_ctx *ctx, const ae_api_request *q, const ae_req *r,
                           int from, int to, int with_prompt, size_t offset) {
    int np = with_prompt ? r->n_prompt : 0, n = np + (to - from);
    const ae_tok_lp **lp = ae_calloc((size_t)(n > 0 ? n : 1), sizeof *lp);
    int32_t *ids = ae_malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    cJSON *o = NULL;
    if (lp && ids) {
        for (int i = 0; i < np; i++) {
            ids[i] = r->prompt[i];
            lp[i] = i >= 1 && r->prompt_lp ? &r->prompt_lp[i] : NULL;
        }
        for (int i = from; i < to; i++) {
            ids[np + i - from] = r->out_ids[i];
            lp[np + i - from] = r->out_lp ? &r->out_lp[i] : NULL;
        }
        o = completion_logprobs(ctx, lp, ids, n, offset);
    }
    free(lp);
    free(ids);
    (void)q;
    return o ? o : cJSON_CreateNull();
}

char *ae_api_response_json(const ae_api_ctx *ctx, const ae_api_request *q, const ae_req *r,
                           const char *id, long created) {
    cJSON *o = envelope(ctx, q, id, created, 0);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (q->kind == AE_API_CHAT) {
        ae_api_chat_message(c, q, r, id);
        if (r->out_lp) cJSON_AddItemToObject(c, "logprobs", chat_logprobs(ctx, r->out_lp, r->n_out));
        else cJSON_AddNullToObject(c, "logprobs");
    } else {
        const char *text = r->text ? r->text : "";
        const char *pt = q->p.echo && q->prompt_text ? q->prompt_text : "";
        size_t pl = strlen(pt), tl = strlen(text);
        char *full = ae_malloc(pl + tl + 1);
        if (full) {
            memcpy(full, pt, pl);
            memcpy(full + pl, text, tl + 1);
        }
        cJSON_AddStringToObject(c, "text", full ? full : text);
        free(full);
        if (q->p.logprobs >= 0 || q->p.echo) {
            if (q->p.logprobs >= 0 || q->p.echo)
                cJSON_AddItemToObject(c, "logprobs", gen_logprobs(ctx, q, r, 0, r->n_out, q->p.echo, 0));
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
        add_token_ids(ctx, c, r, 0, r->n_out);
        cJSON_AddStringToObject(c, "finish_reason", ae_api_finish_str(r));
    }
    add_usage(o, r);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *ae_api_stream_event(const ae_api_ctx *ctx, const ae_api_request *q, const ae_req *r,
                          const char *id, long created, size_t text_from, size_t text_to,
                          int tok_from, int tok_to, int first, int final) {
    cJSON *o = envelope(ctx, q, id, created, 1);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", 0);
    int want_lp = q->p.logprobs >= 0 && r->out_lp;
    if (q->kind == AE_API_CHAT) {
        ae_api_chat_delta(c, q, r, id, text_from, text_to, first, final);
        if (want_lp && tok_to > tok_from)
            cJSON_AddItemToObject(c, "logprobs", chat_logprobs(ctx, r->out_lp + tok_from, tok_to - tok_from));
        else cJSON_AddNullToObject(c, "logprobs");
    } else {
        const char *pt = first && q->p.echo && q->prompt_text ? q->prompt_text : "";
        size_t pl = strlen(pt), n = text_to > text_from ? text_to - text_from : 0;
        char *full = ae_malloc(pl + n + 1);
        if (full) {
            memcpy(full, pt, pl);
            if (n) memcpy(full + pl, r->text + text_from, n);
            full[pl + n] = 0;
        }
        cJSON_AddStringToObject(c, "text", full ? full : "");
        free(full);
        if (want_lp && tok_to > tok_from)
            cJSON_AddItemToObject(c, "logprobs", gen_logprobs(ctx, q, r, tok_from, tok_to, 0, text_from));
        else cJSON_AddNullToObject(c, "logprobs");
        add_token_ids(ctx, c, r, tok_from, tok_to);
        if (final) cJSON_AddStringToObject(c, "finish_reason", ae_api_finish_str(r));
        else cJSON_AddNullToObject(c, "finish_reason");
    }
    if (final && q->include_usage) add_usage(o, r);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!js) return NULL;
    size_t L = strlen(js);
    char *ev = ae_malloc(L + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, js, L);
        memcpy(ev + 6 + L, "\n\n", 3);
    }
    free(js);
    return ev;
}
