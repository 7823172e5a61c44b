// Internal to serve/api*.c: the request helpers both parsers use, and the chat parts
// (api_chat.c: messages, tools and tool calls).
#ifndef AE_SERVE_API_INTERNAL_H
#define AE_SERVE_API_INTERNAL_H

#include <cjson/cJSON.h>

#include "serve/api.h"

// A 400 invalid_request_error naming `param`, then `goto fail` (err and fail in scope).
#define BAD(param, ...) \
    do { \
        ae_api_error_set(err, 400, "invalid_request_error", param, __VA_ARGS__); \
        goto fail; \
    } while (0)

// A JSON boolean o[key] into *out: 0 when absent or null, 1 when read, -1 when not a boolean.
int ae_api_get_bool(const cJSON *o, const char *key, int *out);

// The chat request's prompt (body j, whose text is body[0, len)): chat_template_kwargs,
// tools, tool_choice, parallel_tool_calls and messages rendered by the chat template and
// tokenised into out->prompt_text and out->ids; out->tools set when the reply is to be read
// for tool calls. Returns 0, or fills *err and returns -1.
int ae_api_parse_chat(const ae_api_ctx *ctx, const cJSON *j, const char *body, size_t len,
                      ae_api_request *out, ae_api_error *err);

// The reply of a finished chat request, into choice c: "message" (content, and tool_calls
// when the reply holds some) and "finish_reason". id: the response's id (the calls' ids
// derive from it).
void ae_api_chat_message(cJSON *c, const ae_api_request *q, const ae_req *r, const char *id);
// A stream chunk's delta for the text [from, to) of r->text, into choice c (final: the tool
// calls, when the reply holds some, and the finish reason). first: the role delta.
void ae_api_chat_delta(cJSON *c, const ae_api_request *q, const ae_req *r, const char *id,
                       size_t from, size_t to, int first, int final);

// "length" or "stop": the finish reason of a reply without tool calls.
const char *ae_api_finish_str(const ae_req *r);

#endif
