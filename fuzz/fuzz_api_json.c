// libFuzzer harness: the JSON bodies of `attnedit serve`'s POST /v1/completions and
// /v1/chat/completions (ae_api_parse, serve/api.h), with the real Qwen3 tokenizer (as
// fuzz_tokenize: ../shared/qwen3-tokenizer, $AE_FUZZ_TOKENIZER, else models/qwen3-micro). The
// first byte chooses: bit 0 the chat endpoint, bit 1 a model without a chat template, bit 2 a
// context of 64 tokens instead of 4096, bit 3 a server without a tokenizer (`serve
// --random-weights` of a bare config: token-id prompts only, no stop strings, no chat); the rest
// is the body. (The HTTP request itself is parsed
// by libmicrohttpd, not by attnedit.)
// Promises checked (serve/api.h): 0 with a request the engine can take (1 <= prompt ids, all in
// the vocabulary, prompt + max_tokens within the context, sampling parameters in range, at most
// AE_MAX_STOP non-empty stop strings), or -1 with a 4xx error whose JSON form parses; nothing
// leaks either way. Bit 4 of the first byte: the body is also taken as a model's reply to a
// chat request with tools (serve/tools.h): the response and the final stream event parse as
// JSON, tool calls come with finish_reason "tool_calls" and arguments that parse, and the
// streamed text never passes the reply's end.
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "fuzz_util.h"
#include "serve/api.h"
#include "tok/tokenizer.h"

static ae_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    (void)fz_dir();
    g_tok = fz_load_tokenizer();
    return 0;
}

// JSON text js (heap, freed) parsed, or a failed promise.
static cJSON *parsed(char *js, const char *what) {
    FZ_ASSERT(js, "%s: NULL", what);
    cJSON *o = cJSON_Parse(js);
    FZ_ASSERT(o, "%s does not parse: %s", what, js);
    free(js);
    return o;
}

static void check_choice(const cJSON *o, const char *msg_key) {
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, msg_key);
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    const cJSON *fin = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
    FZ_ASSERT(cJSON_IsString(fin), "no finish_reason");
    FZ_ASSERT(!calls == !!strcmp(fin->valuestring, "tool_calls"), "tool_calls vs finish_reason %s",
              fin->valuestring);
    for (const cJSON *t = calls ? calls->child : NULL; t; t = t->next) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "arguments");
        FZ_ASSERT(cJSON_IsString(a), "a call without arguments");
        if (strstr(a->valuestring, "Infinity")) continue; // Python's spelling of 1e400, not JSON
        cJSON *v = cJSON_Parse(a->valuestring);
        FZ_ASSERT(v, "arguments do not parse: %s", a->valuestring);
        cJSON_Delete(v);
    }
}

// data[0, n) as the reply of a chat request read for tool calls.
static void check_reply(const ae_api_ctx *ctx, const uint8_t *data, size_t n) {
    char *text = malloc(n + 1);
    FZ_ASSERT(text, "out of memory");
    memcpy(text, data, n);
    text[n] = 0;
    ae_api_request q = {.kind = AE_API_CHAT, .tools = 1, .parallel_tools = n & 1};
    ae_req r = {.text = text, .text_len = strlen(text), .finish = AE_FINISH_STOP};
    size_t partial = ae_api_stream_text_to(&q, &r, 0), whole = ae_api_stream_text_to(&q, &r, 1);
    FZ_ASSERT(partial <= whole && whole <= r.text_len, "stream limits %zu, %zu of %zu", partial,
              whole, r.text_len);
    cJSON *o = parsed(ae_api_response_json(ctx, &q, &r, "chatcmpl-1", 1), "the response");
    check_choice(o, "message");
    cJSON_Delete(o);
    char *ev = ae_api_stream_event(ctx, &q, &r, "chatcmpl-1", 1, partial, whole, 0, 0, 1, 1);
    FZ_ASSERT(ev && !strncmp(ev, "data: ", 6), "stream event");
    o = parsed(ae_strdup(ev + 6), "the stream event");
    free(ev);
    check_choice(o, "delta");
    cJSON_Delete(o);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned flags = data[0];
    ae_api_ctx ctx = {
        .tok = flags & 8 ? NULL : g_tok,
        .model_name = "qwen3",
        .chat = flags & 2 ? AE_CHAT_NONE : AE_CHAT_QWEN3,
        .vocab = ae_tokenizer_vocab_size(g_tok),
        .eos_id = ae_tokenizer_eos_id(g_tok),
        .im_end_id = ae_tokenizer_token_id(g_tok, "<|im_end|>"),
        .max_model_len = flags & 4 ? 64 : 4096,
        .seed_counter = 7,
    };
    ae_api_kind kind = flags & 1 ? AE_API_CHAT : AE_API_COMPLETIONS;
    if (flags & 16) check_reply(&ctx, data + 1, size - 1);
    // the body as the server gets it: a buffer of exactly its length (not NUL-terminated)
    size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    FZ_ASSERT(body, "out of memory");
    memcpy(body, data + 1, len);
    ae_api_request q;
    ae_api_error err;
    memset(&err, 0, sizeof err);
    fz_begin();
    int rc = ae_api_parse(&ctx, kind, body, len, &q, &err);
    free(body);
    FZ_ASSERT(rc == 0 || rc == -1, "ae_api_parse returned %d", rc);
    if (getenv("AE_FUZZ_VERBOSE"))
        fprintf(stderr, "ae_api_parse: %s%s\n", rc ? "" : "ok", rc ? err.message : "");
    if (rc < 0) {
        FZ_ASSERT(err.status >= 400 && err.status < 500, "error status %d", err.status);
        FZ_ASSERT(err.message[0] && err.type[0], "error without a message or type");
        FZ_ASSERT(!q.ids && !q.prompt_text && q.p.n_stop == 0, "failed parse kept allocations");
        char *js = ae_api_error_json(&err);
        FZ_ASSERT(js, "ae_api_error_json returned NULL");
        cJSON *o = cJSON_Parse(js);
        FZ_ASSERT(o && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "error")),
                  "error JSON does not parse: %s", js);
        cJSON_Delete(o);
        free(js);
        return 0;
    }
    const ae_req_params *p = &q.p;
    FZ_ASSERT(q.n_ids >= 1 && q.ids, "accepted request with %d prompt ids", q.n_ids);
    for (int i = 0; i < q.n_ids; i++)
        FZ_ASSERT(q.ids[i] >= 0 && q.ids[i] < ctx.vocab, "prompt id %d out of range", q.ids[i]);
    FZ_ASSERT(p->max_tokens >= 1 && q.n_ids + p->max_tokens <= ctx.max_model_len,
              "prompt %d + max_tokens %d vs context %d", q.n_ids, p->max_tokens,
              ctx.max_model_len);
    FZ_ASSERT(p->sp.temperature > 0 && p->sp.temperature <= 2, "temperature %g",
              (double)p->sp.temperature);
    FZ_ASSERT(p->sp.top_p > 0 && p->sp.top_p <= 1, "top_p %g", (double)p->sp.top_p);
    FZ_ASSERT(p->sp.top_k >= 0, "top_k %d", p->sp.top_k);
    FZ_ASSERT(p->logprobs >= -1 && p->logprobs <= AE_MAX_TOP_LOGPROBS, "logprobs %d", p->logprobs);
    FZ_ASSERT(p->n_stop >= 0 && p->n_stop <= AE_MAX_STOP, "%d stop strings", p->n_stop);
    for (int i = 0; i < p->n_stop; i++)
        FZ_ASSERT(p->stop[i] && p->stop[i][0], "stop string %d empty", i);
    FZ_ASSERT(p->n_stop_ids >= 0 && p->n_stop_ids <= 4, "%d stop ids", p->n_stop_ids);
    FZ_ASSERT(kind == AE_API_CHAT || !p->n_stop_ids, "stop ids on a completions request");
    FZ_ASSERT(ctx.tok || (kind == AE_API_COMPLETIONS && !p->n_stop && !q.prompt_text),
              "a request without a tokenizer needs token ids and no stop strings");
    ae_api_request_free(&q);
    return 0;
}
