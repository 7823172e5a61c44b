// JSON text as Python writes it: json.dumps(json.loads(text), ensure_ascii=False), the form
// Hugging Face chat templates give a value through `tojson` (transformers overrides Jinja's
// filter with exactly that call) and the form vLLM's tool parsers give a tool call's
// arguments. What differs from the input's spelling: separators ", " and ": ", strings
// re-escaped (only '"', '\', and control characters; other characters raw), numbers as Python
// prints them (an integer literal as an int, -0 as 0; a literal with a fraction or an exponent
// as float's repr: 1.0, 1e-05, 1e+16, 0.0001; out of range: Infinity), and an object's repeated
// key once, at its first place, with its last value (a dict). Input: one JSON value (RFC 8259;
// raw control characters inside strings are taken as cJSON takes them).
#ifndef AE_SERVE_PYJSON_H
#define AE_SERVE_PYJSON_H

#include <stddef.h>

#include "core/error.h"

// The value at the start of [text, text + n) (leading whitespace skipped), written as above
// into *out (heap); *used (may be NULL): the bytes read, trailing whitespace included.
// AE_ERR_FORMAT (message: what and the byte offset) for text that is not one JSON value there,
// or nested deeper than 1000.
ae_status ae_pyjson_dump(const char *text, size_t n, char **out, size_t *used);

// The same reading without the writing: whether [text, text + n) starts with one JSON value,
// and *used its bytes, trailing whitespace included. AE_ERR_FORMAT as ae_pyjson_dump.
ae_status ae_pyjson_span(const char *text, size_t n, size_t *used);

// The member `key` of the JSON object at the start of [text, text + n): its value's raw span
// [*val, *val + *val_n). last = 1: the last member of that name (json.loads keeps the last),
// 0: the first (cJSON_GetObjectItem's). Returns 1 when found, 0 when the object has no such
// member, -1 when the text is not a JSON object.
int ae_pyjson_member(const char *text, size_t n, const char *key, int last, const char **val,
                     size_t *val_n);

#endif
