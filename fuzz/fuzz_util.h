// Helpers shared by the libFuzzer harnesses (fuzz/fuzz_*.c): a private scratch folder on tmpfs
// for the readers that only take paths, writing an input there as a file, and the one check
// every harness makes on what a reader returns (AE_OK, or an error status with a message).
#ifndef AE_FUZZ_UTIL_H
#define AE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "tok/tokenizer.h"

// The harness's scratch folder, created on first use: $AE_FUZZ_TMP, else /dev/shm, else $TMPDIR
// or /tmp, as "<base>/aefuzz-<name>-XXXXXX"; removed at exit. Also silences the library's log.
const char *fz_dir(void);
// "<fz_dir()>/<rel>" in one of a few rotating static buffers.
const char *fz_path(const char *rel);
// Writes n bytes to fz_path(rel) (creating parent folders); aborts if it cannot (harness bug).
void fz_write(const char *rel, const void *data, size_t n);
void fz_mkdir(const char *rel);
// Removes fz_path(rel), file or folder, if present.
void fz_remove(const char *rel);
// Clears the library's error message before a call.
void fz_begin(void);
// The reader's promise: st is AE_OK or a known error status with a non-empty message. With
// AE_FUZZ_VERBOSE set, every checked call prints "what: ok" or its message to stderr.
void fz_check(ae_status st, const char *what);
// abort() with a message unless cond (a broken promise; libFuzzer saves the input).
#define FZ_ASSERT(cond, ...) \
    do { \
        if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));
// A path under the source tree (AE_SOURCE_DIR, compiled in), or under ../shared
// ($AE_SHARED_DIR overrides); NULL for the latter when it does not exist.
const char *fz_src(const char *rel);
const char *fz_shared(const char *rel);
// A NUL-terminated heap copy of the input.
char *fz_cstr(const uint8_t *data, size_t size);
// The Qwen3 tokenizer the text harnesses use, loaded once by the caller: $AE_FUZZ_TOKENIZER, else
// ../shared/qwen3-tokenizer, else the bundled models/qwen3-micro; prints "<harness>: tokenizer
// <dir> (<n> ids)" on stderr, and aborts naming the folder when it does not load.
ae_tokenizer *fz_load_tokenizer(void);
// Streaming decode of ids (ae_tokenizer_decode_next over each id, then _flush) checked against
// the one-shot decode's output text (len bytes): every call succeeds and the pieces concatenate
// to exactly text.   ids: (n)
void fz_check_decode_stream(const ae_tokenizer *t, const int32_t *ids, size_t n, const char *text,
                            size_t len);

#endif
