// The Qwen3 chat template by its semantics (serve/chat.h). For messages without tools:
//   a first system message:  <|im_start|>system\n{content}<|im_end|>\n
//   user (and later system): <|im_start|>{role}\n{content}<|im_end|>\n
//   assistant: the content after the last </think> (leading newlines stripped); assistant turns
//     after the last user message keep their reasoning (the text between <think> and </think>)
//     as <think>\n{reasoning}\n</think>\n\n{content} when it is the last message or has
//     reasoning; then <|im_end|>\n
//   generation prompt: <|im_start|>assistant\n, plus <think>\n\n</think>\n\n when thinking is off.
#include "serve/chat.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"

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

typedef struct {
    char *p;
    size_t n, cap;
    int fail;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->fail) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->fail = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

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

ae_status ae_chat_render(const ae_chat_msg *msgs, int n, int enable_thinking, char **out) {
    *out = NULL;
    if (n < 1) return ae_errorf(AE_ERR_ARG, "messages: at least one message is needed");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content ||
            (strcmp(msgs[i].role, "system") && strcmp(msgs[i].role, "user") &&
             strcmp(msgs[i].role, "assistant")))
            return ae_errorf(AE_ERR_ARG, "messages[%d]: role must be system, user or assistant",
                             i);
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        const char *c = msgs[i].content;
        size_t L = strlen(c);
        int tool_resp = L >= 15 && !strncmp(c, "<tool_response>", 15) &&
                        L >= 16 && !strcmp(c + L - 16, "</tool_response>");
        if (!strcmp(msgs[i].role, "user") && !tool_resp) {
            last_query = i;
            break;
        }
    }
    sbuf b = {0};
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role, *c = msgs[i].content;
        if (!strcmp(role, "user") || !strcmp(role, "system")) {
            puts_(&b, "<|im_start|>");
            puts_(&b, role);
            puts_(&b, "\n");
            puts_(&b, c);
            puts_(&b, "<|im_end|>\n");
            continue;
        }
        const char *content = c, *reason = "";
        size_t cn = strlen(c), rn = 0;
        const char *end = strstr(c, "</think>");
        if (end) {
            const char *last = last_of(c, strlen(c), "</think>");
            content = last + 8;
            cn = strlen(content);
            strip_nl(&content, &cn, 1, 0);
            // reasoning: before the first </think>, after the last <think> there
            size_t pre = (size_t)(end - c);
            const char *open = last_of(c, pre, "<think>");
            reason = open ? open + 7 : c;
            rn = (size_t)(end - reason);
            strip_nl(&reason, &rn, 1, 1);
        }
        puts_(&b, "<|im_start|>assistant\n");
        if (i > last_query && (i == n - 1 || rn > 0)) {
            puts_(&b, "<think>\n");
            put(&b, reason, rn);
            puts_(&b, "\n</think>\n\n");
            strip_nl(&content, &cn, 1, 0);
        }
        put(&b, content, cn);
        puts_(&b, "<|im_end|>\n");
    }
    puts_(&b, "<|im_start|>assistant\n");
    if (!enable_thinking) puts_(&b, "<think>\n\n</think>\n\n");
    if (b.fail) {
        free(b.p);
        return AE_ERR_NOMEM;
    }
    *out = b.p;
    return AE_OK;
}
