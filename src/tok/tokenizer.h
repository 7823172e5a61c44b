// Byte-level BPE tokenizer as Qwen2/Qwen3 use it, loaded from a Hugging Face tokenizer.json
// (+ tokenizer_config.json). Encode: added tokens split out first (their lstrip/rstrip/
// single_word/normalized flags respected), NFC on the rest, the pre-tokenizer Split regex
// (read from tokenizer.json), GPT-2 byte<->unicode map, BPE merges by rank. Decode: ids ->
// bytes, invalid UTF-8 replaced by U+FFFD exactly as HF (Rust from_utf8_lossy) does.
//
// Matches HF tokenizers 0.23 (checked on every code point and on whole corpora), including its
// Unicode versions (tok/unicode_compat.c) and its way of giving added tokens their ids (the id
// of the same string in the model vocab, else the next free one; the file's "id" is only
// checked). Not reproduced, and refused with AE_ERR_UNSUPPORTED naming the field: normalizers
// other than NFC, pre-tokenizers other than Split (Isolated) + ByteLevel, decoders other than
// ByteLevel, BPE dropout / subword prefixes and suffixes, truncation and padding. The
// post_processor is not applied (it only adds special tokens on request). Approximated: the
// word test of single_word added tokens (Rust regex \w; tok/utf8.c). Unlike HF, decoding an
// unknown id is an error instead of being skipped.
#ifndef AE_TOK_TOKENIZER_H
#define AE_TOK_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct ae_tokenizer ae_tokenizer;

// Reads dir/tokenizer.json (and dir/tokenizer_config.json when present).
ae_status ae_tokenizer_load(const char *dir, ae_tokenizer **out);
void ae_tokenizer_free(ae_tokenizer *t);

int ae_tokenizer_vocab_size(const ae_tokenizer *t); // max id + 1, added tokens included
// id of a token string (vocab or added), or -1.
int ae_tokenizer_token_id(const ae_tokenizer *t, const char *token);
// eos token id from tokenizer_config.json ("eos_token"), or -1.
int ae_tokenizer_eos_id(const ae_tokenizer *t);
int ae_tokenizer_is_special(const ae_tokenizer *t, int id);

// Encodes UTF-8 text (no special tokens added; special tokens in the text are recognised).
// Invalid UTF-8 input is AE_ERR_ARG with the byte offset. *ids is heap-allocated.
ae_status ae_tokenizer_encode(const ae_tokenizer *t, const char *text, size_t len, int32_t **ids,
                              size_t *n);
// Decodes ids to a NUL-terminated heap string (special tokens kept). Out-of-range id -> AE_ERR_ARG.
ae_status ae_tokenizer_decode(const ae_tokenizer *t, const int32_t *ids, size_t n, char **text,
                              size_t *len);

// Streaming decode for generation: feed ids one at a time; emits the text that is complete
// (never splits a UTF-8 character across calls). *out is heap-allocated (may be empty).
// Zero-initialise the stream before the first id; the concatenation of every piece and the
// final flush equals ae_tokenizer_decode of all the ids.
typedef struct {
    unsigned char pending[8];
    int npending;
} ae_decode_stream;
ae_status ae_tokenizer_decode_next(const ae_tokenizer *t, ae_decode_stream *s, int32_t id,
                                   char **out, size_t *len);
// Flushes pending bytes (as U+FFFD where invalid).
ae_status ae_tokenizer_decode_flush(const ae_tokenizer *t, ae_decode_stream *s, char **out,
                                    size_t *len);

#endif
