// The Qwen3 chat template by its semantics (serve/chat.h):
//   tools: one system block, the first system message's content + "\n\n" (when there is one),
//     then "# Tools" and each tool's JSON on its own line inside <tools></tools>, and the
//     <tool_call> instructions; without tools a first system message is
//     <|im_start|>system\n{content}<|im_end|>\n
//   user (and later system): <|im_start|>{role}\n{content}<|im_end|>\n
//   assistant: its reasoning_content and content, or the content after the last </think>
//     (leading newlines stripped) and the text between <think> and the first </think>;
//     assistant turns after the last user message (one that is not a <tool_response>
//     wrapper) keep their reasoning as <think>\n{reasoning}\n</think>\n\n{content} when it
//     is the last message or has reasoning; then each tool call as <tool_call>\n{"name": ...,
//     "arguments": ...}\n</tool_call> (a newline before each but a first one without content);
//     then <|im_end|>\n
//   tool: consecutive tool messages make one user turn of <tool_response> blocks.
//   generation prompt: <|im_start|>assistant\n, plus <think>\n\n</think>\n\n when thinking is off.
#include "serve/chat.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "core/sbuf.h"

ae_chat_kind ae_chat_detect(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *text = NULL;
    size_t n = 0;
    if (ae_file_read_all(path, &text, &n) != AE_OK) return AE_CHAT_NONE;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    ae_chat_kind k = AE_CHAT_NONE;
    if (cJSON_IsString(t)) {
        const char *s = t->valuestring;
        k = strstr(s, "'<|im_start|>' + message.role + '\\n' + message.content") &&
                    strstr(s, "<|im_end|>") && strstr(s, "reasoning_content") &&
                    strstr(s, "enable_thinking")
                ? AE_CHAT_QWEN3
                : AE_CHAT_UNSUPPORTED;
    }
    cJSON_Delete(j);
    return k;
}

// Python's str.strip/lstrip/rstrip of '\n' on [s, s+n).
static void strip_nl(const char **s, size_t *n, int left, int right) {
    while (left && *n && **s == '\n') (*s)++, (*n)--;
    while (right && *n && (*s)[*n - 1] == '\n') (*n)--;
}

// The last occurrence of needle in [s, s+n), or NULL.
static const char *last_of(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (memcmp(s + i, needle, k) == 0) return s + i;
    return NULL;
}

static const char k_tools_intro[] =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
static const char k_tools_outro[] =
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";

// The system block: the tools list (with the first system message's content), or the first
// system message alone.
static void render_system(ae_sbuf *b, const ae_chat_msg *first, const ae_chat_opts *o) {
    int sys = !strcmp(first->role, "system");
    if (o->n_tools > 0) {
        ae_sbuf_adds(b, "<|im_start|>system\n");
        if (sys) {
            ae_sbuf_adds(b, first->content);
            ae_sbuf_adds(b, "\n\n");
        }
        ae_sbuf_adds(b, k_tools_intro);
        for (int t = 0; t < o->n_tools; t++) {
            ae_sbuf_adds(b, "\n");
            ae_sbuf_adds(b, o->tools[t]);
        }
        ae_sbuf_adds(b, k_tools_outro);
    } else if (sys) {
        ae_sbuf_adds(b, "<|im_start|>system\n");
        ae_sbuf_adds(b, first->content);
        ae_sbuf_adds(b, "<|im_end|>\n");
    }
}

// The index of the last user message that is not a <tool_response> wrapper (n - 1 when none).
static int last_query(const ae_chat_msg *msgs, int n) {
    for (int i = n - 1; i >= 0; i--) {
        const char *c = msgs[i].content;
        size_t L = strlen(c);
        int tool_resp = L >= 15 && !strncmp(c, "<tool_response>", 15) && L >= 16 &&
                        !strcmp(c + L - 16, "</tool_response>");
        if (!strcmp(msgs[i].role, "user") && !tool_resp) return i;
    }
    return n - 1;
}

static void render_assistant(ae_sbuf *b, const ae_chat_msg *m, int keep_think, int last) {
    const char *c = m->content, *content = c, *reason = "";
    size_t cn = strlen(c), rn = 0;
    if (m->reasoning) {
        reason = m->reasoning;
        rn = strlen(reason);
    } else if (strstr(c, "</think>")) {
        const char *end = strstr(c, "</think>");
        content = last_of(c, cn, "</think>") + 8;
        cn = strlen(content);
        strip_nl(&content, &cn, 1, 0);
        // reasoning: before the first </think> (newlines after it stripped), after the last
        // <think> there (newlines before it stripped)
        size_t pre = (size_t)(end - c);
        strip_nl(&c, &pre, 0, 1);
        const char *open = last_of(c, pre, "<think>");
        reason = open ? open + 7 : c;
        rn = (size_t)(c + pre - reason);
        strip_nl(&reason, &rn, 1, 0);
    }
    int has_content = cn > 0; // the template's `content`, before the lstrip below
    ae_sbuf_adds(b, "<|im_start|>assistant\n");
    if (keep_think && (last || rn > 0)) {
        strip_nl(&reason, &rn, 1, 1);
        ae_sbuf_adds(b, "<think>\n");
        ae_sbuf_add(b, reason, rn);
        ae_sbuf_adds(b, "\n</think>\n\n");
        strip_nl(&content, &cn, 1, 0);
    }
    ae_sbuf_add(b, content, cn);
    for (int k = 0; k < m->n_calls; k++) {
        if (k > 0 || has_content) ae_sbuf_adds(b, "\n");
        ae_sbuf_adds(b, "<tool_call>\n{\"name\": \"");
        ae_sbuf_adds(b, m->calls[k].name);
        ae_sbuf_adds(b, "\", \"arguments\": ");
        ae_sbuf_adds(b, m->calls[k].arguments);
        ae_sbuf_adds(b, "}\n</tool_call>");
    }
    ae_sbuf_adds(b, "<|im_end|>\n");
}

ae_status ae_chat_render(const ae_chat_msg *msgs, int n, const ae_chat_opts *o, char **out) {
    *out = NULL;
    if (n < 1) return ae_errorf(AE_ERR_ARG, "messages: at least one message is needed");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content ||
            (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") &&
             strcmp(msgs[i].role, "assistant") && strcmp(msgs[i].role, "tool")))
            return ae_errorf(AE_ERR_ARG,
                             "messages[%d]: role must be system, user, assistant or tool", i);
    ae_sbuf b = {0};
    render_system(&b, &msgs[0], o);
    int lq = last_query(msgs, n);
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role;
        if (!strcmp(role, "user") || (!strcmp(role, "system") && i > 0)) {
            ae_sbuf_adds(&b, "<|im_start|>");
            ae_sbuf_adds(&b, role);
            ae_sbuf_adds(&b, "\n");
            ae_sbuf_adds(&b, msgs[i].content);
            ae_sbuf_adds(&b, "<|im_end|>\n");
        } else if (!strcmp(role, "assistant")) {
            render_assistant(&b, &msgs[i], i > lq, i == n - 1);
        } else if (!strcmp(role, "tool")) {
            if (i == 0 || strcmp(msgs[i - 1].role, "tool")) ae_sbuf_adds(&b, "<|im_start|>user");
            ae_sbuf_adds(&b, "\n<tool_response>\n");
            ae_sbuf_adds(&b, msgs[i].content);
            ae_sbuf_adds(&b, "\n</tool_response>");
            if (i == n - 1 || strcmp(msgs[i + 1].role, "tool")) ae_sbuf_adds(&b, "<|im_end|>\n");
        }
    }
    ae_sbuf_adds(&b, "<|im_start|>assistant\n");
    if (!o->enable_thinking) ae_sbuf_adds(&b, "<think>\n\n</think>\n\n");
    *out = ae_sbuf_take(&b);
    return *out ? AE_OK : AE_ERR_NOMEM;
}
