// Chat prompts: the model's chat template (tokenizer_config.json "chat_template") applied to
// role/content messages. A Jinja renderer is not built in; the Qwen3 template (and its Qwen2.5
// ancestor's im_start/im_end format without a default system prompt) is implemented by its
// semantics for system/user/assistant/tool messages, reasoning, tool calls and a tools list,
// and any other template is refused by name, so a chat request never silently gets a wrong
// prompt.
#ifndef AE_SERVE_CHAT_H
#define AE_SERVE_CHAT_H

#include "core/error.h"

typedef enum { AE_CHAT_NONE = 0, AE_CHAT_QWEN3 = 1, AE_CHAT_UNSUPPORTED = 2 } ae_chat_kind;

// An assistant turn's tool call: written as <tool_call>\n{"name": "NAME", "arguments": ARGS}
// \n</tool_call>, ARGS as is (the OpenAI API sends arguments as a JSON string; an object is
// given here as tojson writes it, serve/pyjson.h).
typedef struct {
    const char *name;
    const char *arguments;
} ae_chat_call;

typedef struct {
    const char *role;          // "system", "user", "assistant", "tool"
    const char *content;       // never NULL ("" for an assistant turn of tool calls only)
    const char *reasoning;     // assistant: its reasoning_content; NULL: read from content's
                               // <think> ... </think>, as the template does
    const ae_chat_call *calls; // (n_calls) assistant: its tool calls
    int n_calls;
} ae_chat_msg;

typedef struct {
    const char *const *tools; // (n_tools) each tool's JSON as tojson writes it (serve/pyjson.h)
    int n_tools;
    int enable_thinking;      // 0: the empty think block after the generation prompt
} ae_chat_opts;

// Reads dir/tokenizer_config.json's chat_template: NONE when absent, QWEN3 when it is the
// Qwen3 template (recognised by its distinctive pieces), UNSUPPORTED otherwise.
ae_chat_kind ae_chat_detect(const char *dir);
// Renders the messages (add_generation_prompt = true) into a heap string, as the Qwen3
// template does with tools = o->tools (none when n_tools is 0). AE_ERR_ARG naming the message
// for an unknown role.
ae_status ae_chat_render(const ae_chat_msg *msgs, int n, const ae_chat_opts *o, char **out);

#endif
