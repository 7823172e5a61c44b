// The scoring windows of one document, shared by eval ppl (eval/ppl.h) and eval kl (eval/kl.h):
// windows of up to ctx input tokens with stride ctx, each from an empty cache. Window k feeds
// ids[start, start+len) with start = k·ctx and len = min(ctx, n-1-start), and scores the
// next-token predictions of ids[start+1, start+len]: every token but the first is scored exactly
// once. A document of < 2 tokens has no window.
#ifndef AE_EVAL_WINDOWS_H
#define AE_EVAL_WINDOWS_H

#include <stddef.h>

typedef struct {
    size_t start; // first input position in the document
    int len;      // inputs (= predictions scored), 1 .. ctx
} ae_window;

typedef struct {
    size_t n, next; // document length, start of the next window
    int ctx;
} ae_windows;

// ctx >= 1 (callers check it and report the option).
void ae_windows_init(ae_windows *it, size_t n, int ctx);
// Fills *w with the next window; 0 when there is none left.
int ae_windows_next(ae_windows *it, ae_window *w);
// The longest window's len (0 when n < 2): the cache size a document needs.
int ae_windows_longest(size_t n, int ctx);

#endif
