// Chat prompts: the model's chat template (tokenizer_config.json "chat_template") applied to
// role/content messages. A Jinja renderer is not built in; the Qwen3 template (and its Qwen2.5
// ancestor's im_start/im_end format without a default system prompt) is implemented by its
// semantics for system/user/assistant messages with string content, and any other template is
// refused by name, so a chat request never silently gets a wrong prompt.
#ifndef AE_SERVE_CHAT_H
#define AE_SERVE_CHAT_H

#include "core/error.h"

typedef enum { AE_CHAT_NONE = 0, AE_CHAT_QWEN3 = 1, AE_CHAT_UNSUPPORTED = 2 } ae_chat_kind;

typedef struct {
    const char *role;    // "system", "user", "assistant"
    const char *content;
} ae_chat_msg;

// Reads dir/tokenizer_config.json's chat_template: NONE when absent, QWEN3 when it is the
// Qwen3 template (recognised by its distinctive pieces), UNSUPPORTED otherwise.
ae_chat_kind ae_chat_detect(const char *dir);
// Renders the messages (add_generation_prompt = true) into a heap string. enable_thinking = 0
// appends the empty think block as Qwen3's template does. AE_ERR_ARG naming the message for an
// unknown role.
ae_status ae_chat_render(const ae_chat_msg *msgs, int n, int enable_thinking, char **out);

#endif
