// The OpenAI-compatible request and response bodies of `attnedit serve` (serve/http.c does
// the HTTP): parsing and validating /v1/completions and /v1/chat/completions requests into
// engine requests, and writing completion objects, stream chunks and error objects.
#ifndef AE_SERVE_API_H
#define AE_SERVE_API_H

#include <stddef.h>
#include <stdint.h>

#include "serve/chat.h"
#include "serve/engine.h"
#include "tok/tokenizer.h"

typedef enum { AE_API_COMPLETIONS = 0, AE_API_CHAT = 1 } ae_api_kind;

// An OpenAI-style error: HTTP status, type ("invalid_request_error", ...), the offending
// parameter (may be empty) and a message.
typedef struct {
    int status;
    char type[40];
    char code[40];
    char param[40];
    char message[400];
} ae_api_error;

typedef struct {
    const ae_tokenizer *tok;      // NULL: no tokenizer (random weights): token-id prompts only,
                                  // no stop strings; choices carry token_ids and no text, logprob
                                  // tokens read "token_id:N"
    int random_weights;           // shown by /v1/models
    const char *model_name;
    ae_chat_kind chat;
    int vocab, eos_id, im_end_id; // im_end_id: the chat end-of-turn token, or -1
    int max_model_len;
    uint64_t seed_counter;        // mixed into the seed of requests without one
} ae_api_ctx;

typedef struct {
    ae_api_kind kind;
    int stream, include_usage;
    char *prompt_text;            // the prompt as text (for echo), heap
    int32_t *ids;                 // (n_ids) heap
    int n_ids;
    ae_req_params p;              // stop strings heap (moved into the engine request)
    int tools;                    // chat: the reply is read for tool calls (tools given and
                                  // tool_choice not "none"; serve/tools.h)
    int parallel_tools;           // chat: every tool call of the reply is returned, not only
                                  // the first (parallel_tool_calls, default true)
} ae_api_request;

// Parses body into *out. Returns 0, or fills *err (4xx) and returns -1 (out is then freed).
int ae_api_parse(const ae_api_ctx *ctx, ae_api_kind kind, const char *body, size_t len,
                 ae_api_request *out, ae_api_error *err);
void ae_api_request_free(ae_api_request *r);

void ae_api_error_set(ae_api_error *e, int status, const char *type, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
// {"error": {...}} heap string.
char *ae_api_error_json(const ae_api_error *e);

// The whole response of a finished request (read under the engine lock), heap JSON.
char *ae_api_response_json(const ae_api_ctx *ctx, const ae_api_request *q, const ae_req *r,
                           const char *id, long created);
// How far a stream's text may go now: r->text_len, except for chat requests read for tool
// calls, whose text stops before the first <tool_call> (and, until the reply is final, before
// a tail that could begin one). Call under the engine lock.
size_t ae_api_stream_text_to(const ae_api_request *q, const ae_req *r, int final);
// One server-sent event for a stream: the text r->text[text_from..text_to) and the tokens
// [tok_from, tok_to) (their logprobs when asked), the finish reason when final (and usage when
// include_usage; chat read for tool calls: the calls). Heap "data: {...}\n\n" string. first:
// chat's opening role delta.
char *ae_api_stream_event(const ae_api_ctx *ctx, const ae_api_request *q, const ae_req *r,
                          const char *id, long created, size_t text_from, size_t text_to,
                          int tok_from, int tok_to, int first, int final);

#endif
