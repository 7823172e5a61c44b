// Tool calling in chat completions (OpenAI "tools"), as vLLM serves Qwen3 with
// --enable-auto-tool-choice --tool-call-parser hermes: the request's tools go into the chat
// template as tojson writes them (serve/pyjson.h), and the model's reply is read for
// <tool_call>{"name": ..., "arguments": ...}</tool_call> blocks.
#ifndef AE_SERVE_TOOLS_H
#define AE_SERVE_TOOLS_H

#include <stddef.h>

#include "core/error.h"

typedef struct {
    char *name;      // heap
    char *arguments; // heap: the arguments' JSON as Python's json.dumps writes it
} ae_tool_call;

typedef struct {
    size_t content_len;  // the reply's text before the first <tool_call> (the message content)
    ae_tool_call *calls; // (n) heap
    int n;
} ae_tool_calls;

// Each element of the JSON array at the start of [text, text + n) as tojson writes it: *out a
// heap array of *count heap strings (ae_tools_free_list). AE_ERR_FORMAT when it is not an array.
ae_status ae_tools_dump_list(const char *text, size_t n, char ***out, int *count);
void ae_tools_free_list(char **list, int count);

// The tool calls of a reply, read as vLLM's hermes parser reads them: every <tool_call> up to
// the next </tool_call> (or, unclosed, to the end) holds one JSON object with a string "name"
// and an "arguments" value (a repeated key: its last value, as json.loads). Returns 1 with
// *out filled, or 0 when the reply has no <tool_call> or one of its blocks is not such an
// object: then the whole reply is content and *out is empty. -1: out of memory.
int ae_tool_calls_parse(const char *text, size_t n, ae_tool_calls *out);
void ae_tool_calls_free(ae_tool_calls *tc);

// How much of a reply still being generated may be streamed as content: the text before the
// first <tool_call>, less a tail that could be the start of one.
size_t ae_tool_calls_stream_limit(const char *text, size_t n);

#endif
