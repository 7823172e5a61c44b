// Internal state of the tokenizer shared by the tok/*.c files. Not part of the public API.
#ifndef AE_TOK_INTERNAL_H
#define AE_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tok/tok_hash.h"
#include "tok/tokenizer.h"

struct pcre2_real_code_8;

// Largest id accepted in tokenizer.json (guards the id-indexed tables against absurd values).
#define AE_TOK_MAX_ID (1 << 24)

// Growable byte / id buffers used along the encode and decode paths.
typedef struct {
    char *p;
    size_t n, cap;
} ae_tok_buf;
ae_status ae_tok_buf_put(ae_tok_buf *b, const void *data, size_t n);
typedef struct {
    int32_t *p;
    size_t n, cap;
} ae_tok_ids;
ae_status ae_tok_ids_push(ae_tok_ids *v, int32_t id);

typedef struct {
    char *content; // as written in tokenizer.json
    size_t content_len;
    char *pattern; // what is matched: content, or NFC(content) when normalized
    size_t pattern_len;
    int32_t id;
    unsigned char special, lstrip, rstrip, single_word, normalized;
} ae_tok_added;

// Leftmost-longest matcher over one set of added tokens (the non-normalized or the normalized).
typedef struct {
    int *idx;       // indices into t->added, grouped by first byte, longest first
    int start[257]; // idx[start[b] .. start[b+1]) begin with byte b
} ae_tok_matcher;

enum { AE_PRETOK_SPLIT = 1, AE_PRETOK_BYTELEVEL = 2 };
typedef struct {
    int kind;
    struct pcre2_real_code_8 *re; // SPLIT, or BYTELEVEL with use_regex (the GPT-2 pattern)
    int add_prefix_space;         // BYTELEVEL
} ae_tok_pretok;

struct ae_tokenizer {
    char *path;        // tokenizer.json path, for messages
    int vocab_size;    // max id + 1 over model vocab and added tokens
    char **id_str;     // [vocab_size] token string (added content wins), NULL for unused ids
    uint32_t *dec_off; // [vocab_size + 1] decoded bytes of id i: dec_blob[dec_off[i]..dec_off[i+1])
    unsigned char *dec_blob;
    unsigned char *is_special; // [vocab_size]

    char **model_str; // [vocab_size] model vocab strings (in model_blob), NULL if unused
    char *model_blob;
    ae_strmap vocab;     // model vocab: token string -> id (keys point into model_str)
    ae_strmap added_map; // added content -> id

    ae_tok_added *added;
    int n_added;
    ae_tok_matcher match_raw;  // added tokens with normalized=false
    ae_tok_matcher match_norm; // added tokens with normalized=true

    // BPE model
    ae_pairmap merges;             // (left id, right id) -> (rank, merged id)
    int32_t byte_id[256];          // id of the GPT-2 char of each byte, or -1
    int32_t byte_fallback_id[256]; // id of "<0xXX>" when byte_fallback, else -1
    int32_t unk_id;                // -1 when none
    int fuse_unk, byte_fallback, ignore_merges;

    int nfc; // normalizer: NFC (1) or none (0)
    ae_tok_pretok *pretok;
    int n_pretok;

    int32_t eos_id;
};

// tok_config.c: normalizer, pre_tokenizer, decoder and the other pipeline fields of
// tokenizer.json (root is the parsed cJSON object).
struct cJSON;
ae_status ae_tok_parse_pipeline(ae_tokenizer *t, const struct cJSON *root);
// Reads an optional boolean member (null or absent -> def).
ae_status ae_tok_json_bool(const struct cJSON *obj, const char *key, int def, int *out,
                           const char *path, const char *field);
// Reads an optional string member: *out is NULL when null or absent.
ae_status ae_tok_json_str(const struct cJSON *obj, const char *key, const char **out,
                          const char *path, const char *field);

// bytemap.c: the GPT-2 byte <-> unicode table.
uint32_t ae_tok_byte_to_cp(unsigned char b);
int ae_tok_cp_to_byte(uint32_t cp); // -1 when cp is not in the table
// Converts a token string to its bytes: the inverse byte map when every char is in the table,
// else the token's own UTF-8 (as HF's ByteLevel decoder does). Appends to out.
ae_status ae_tok_token_bytes(const char *tok, size_t len, ae_tok_buf *out);

// utf8.c
// Returns the byte offset of the first invalid UTF-8 sequence, or (size_t)-1 when valid.
size_t ae_tok_utf8_invalid_at(const unsigned char *s, size_t n);
// Decodes one code point of valid UTF-8 at s (n > 0); returns its length.
int ae_tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
// Decodes the code point ending at s[n-1] of valid UTF-8; returns its length.
int ae_tok_utf8_prev(const unsigned char *s, size_t n, uint32_t *cp);
// Appends s with invalid sequences replaced by U+FFFD (one per maximal invalid subpart, as
// Rust's String::from_utf8_lossy). When final is 0, a trailing incomplete-but-valid prefix is
// not consumed; returns the number of bytes consumed.
size_t ae_tok_utf8_lossy(const unsigned char *s, size_t n, int final, ae_tok_buf *out,
                         ae_status *st);
int ae_tok_is_white_space(uint32_t cp); // Unicode White_Space (Rust regex \s, Oniguruma \s)
int ae_tok_is_word(uint32_t cp);        // Rust regex \w (approximation: see utf8.c)

// unicode_compat.c: what HF tokenizers' Unicode tables have that ours lack (see there).
const char *ae_tok_class_extra(char cls); // extra ranges for \p{L} ('L') or \p{N} ('N')
int ae_tok_nfc_opaque(uint32_t cp);       // code points HF's NFC leaves alone

// pretok.c
ae_status ae_tok_regex_compile(const char *pattern, int literal, struct pcre2_real_code_8 **out,
                               const char *path, const char *field);
void ae_tok_regex_free(struct pcre2_real_code_8 *re);
// Pre-tokenizes one normalized segment and BPE-encodes each piece into ids.
typedef struct ae_tok_bpe_cache ae_tok_bpe_cache;
ae_status ae_tok_pretok_encode(const ae_tokenizer *t, const char *s, size_t n,
                               ae_tok_bpe_cache *cache, ae_tok_ids *ids);

// bpe.c
ae_tok_bpe_cache *ae_tok_bpe_cache_new(void);
void ae_tok_bpe_cache_free(ae_tok_bpe_cache *c);
// BPE-encodes the raw bytes of one pre-token (byte-level) and appends the ids.
ae_status ae_tok_bpe_word(const ae_tokenizer *t, const unsigned char *s, size_t n,
                          ae_tok_bpe_cache *cache, ae_tok_ids *ids);

// added.c
ae_status ae_tok_matcher_build(ae_tokenizer *t, ae_tok_matcher *m, int normalized);
void ae_tok_matcher_free(ae_tok_matcher *m);
// Splits s into added-token matches and gaps exactly as HF's AddedVocabulary::find_matches.
// Each split is (start, end, id) with id -1 for a gap. *splits is heap-allocated.
typedef struct {
    size_t start, end;
    int32_t id;
} ae_tok_split;
ae_status ae_tok_find_added(const ae_tokenizer *t, const ae_tok_matcher *m, const char *s, size_t n,
                            ae_tok_split **splits, size_t *nsplits);

// normalize.c
// NFC of valid UTF-8 (when t->nfc), into a heap buffer; *out == s (not allocated) when unchanged.
ae_status ae_tok_normalize(const ae_tokenizer *t, const char *s, size_t n, char **out,
                           size_t *out_len);

#endif
