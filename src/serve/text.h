// Text helper of the serve layer: the held-back tail of streamed text that could still become a
// stop string or a tool call.
#ifndef AE_SERVE_TEXT_H
#define AE_SERVE_TEXT_H

#include <string.h>

// Length of the longest suffix of s[0, n) that is a proper prefix of word (0 when none): text a
// stream holds back because the next tokens could complete word.
static inline size_t ae_text_partial_prefix(const char *s, size_t n, const char *word) {
    size_t L = strlen(word);
    for (size_t k = L - 1 < n ? L - 1 : n; k > 0; k--)
        if (memcmp(s + n - k, word, k) == 0) return k;
    return 0;
}

#endif
