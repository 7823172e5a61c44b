// Perplexity. Protocol (attnedit eval ppl): the text is split into documents on the literal
// "<|endoftext|>"; each document is tokenised without special tokens and scored in windows of
// `ctx` input tokens with stride ctx (eval/windows.h, shared with eval kl): window w feeds
// ids[w·ctx, w·ctx+ctx) and scores the next-token predictions of ids[w·ctx+1, w·ctx+ctx]. Every
// token of a document but its first is scored exactly once; each window starts with an empty
// cache. Documents of < 2 tokens add nothing.
#ifndef AE_EVAL_PPL_H
#define AE_EVAL_PPL_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "tok/tokenizer.h"

typedef struct {
    int64_t tokens;  // predictions scored
    double nll_sum;  // sum of -log p(target), nats
    int docs;
} ae_ppl;

// Adds the windows of one document to acc.
ae_status ae_ppl_add_doc(const ae_model *m, const int32_t *ids, size_t n, int ctx, ae_ppl *acc);
// llama-perplexity's protocol (its default mode, tools/perplexity in llama.cpp) on one
// document: consecutive chunks of exactly ctx tokens (a last partial chunk is dropped), each
// evaluated from an empty cache, scoring only the second half of each chunk: with
// first = ctx/2, the predictions made at chunk positions first .. ctx-2 (targets at positions
// first+1 .. ctx-1), ctx-1-first per chunk. No BOS is inserted (attnedit's vocabularies have
// add_bos_token false). Stops after max_chunks chunks in all (acc->docs counts chunks here;
// max_chunks <= 0: no limit).
ae_status ae_ppl_add_chunks(const ae_model *m, const int32_t *ids, size_t n, int ctx,
                            int max_chunks, ae_ppl *acc);
// Whole protocol over a UTF-8 text. progress: print a status line per window to stderr.
ae_status ae_ppl_text(const ae_model *m, const ae_tokenizer *tok, const char *text, size_t len,
                      int ctx, int progress, ae_ppl *out);
// The same text with ae_ppl_add_chunks per document: on a text without "<|endoftext|>" (one
// document) this is llama-perplexity -c ctx [--chunks max_chunks] on the same tokens.
ae_status ae_ppl_text_chunks(const ae_model *m, const ae_tokenizer *tok, const char *text,
                             size_t len, int ctx, int max_chunks, int progress, ae_ppl *out);
// Splits text into documents on "<|endoftext|>", tokenises each (no special tokens added) and
// calls fn on its ids; stops at the first error.
typedef ae_status (*ae_doc_fn)(void *ud, const int32_t *ids, size_t n);
ae_status ae_docs_foreach(const ae_tokenizer *tok, const char *text, size_t len, ae_doc_fn fn,
                          void *ud);

#endif
