// A cap on the memory a backend hands out: ATTNEDIT_MEM_LIMIT (bytes, or with a suffix K, M or
// G, powers of 1024: "512M", "1.5G"). For testing what happens when memory runs out, and for a
// GPU shared with other jobs. The cpu backend counts the bytes of its live buffers; the cuda
// backend reads the used bytes of the device's memory pool (op workspaces included). An
// allocation that would take them above the limit is refused as a real out-of-memory is
// (AE_ERR_NOMEM, naming the limit). The variable is read when a backend is opened; a malformed
// value is refused there.
#ifndef AE_BACKEND_MEM_LIMIT_H
#define AE_BACKEND_MEM_LIMIT_H

#include <stddef.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AE_MEM_LIMIT_ENV "ATTNEDIT_MEM_LIMIT"

// text: decimal digits with an optional fraction, then an optional K, M or G (either case; an
// optional "B" or "iB" after it: "64KiB"). *bytes > 0. AE_ERR_ARG naming `what` (the variable)
// for anything else: empty, zero, negative, an unknown suffix, more than SIZE_MAX bytes.
ae_status ae_mem_limit_parse(const char *what, const char *text, size_t *bytes);
// ATTNEDIT_MEM_LIMIT from the environment: *bytes = 0 (no limit) when unset or empty.
ae_status ae_mem_limit_from_env(size_t *bytes);
// The refusal of an allocation of `bytes` with `in_use` bytes already handed out under
// `limit`: sets the message ("<backend>: out of memory allocating 1.50 MiB: 6.20 MiB of the
// ATTNEDIT_MEM_LIMIT of 8.00 MiB in use") and remembers it (ae_mem_last_refusal); returns
// AE_ERR_NOMEM.
ae_status ae_mem_limit_refuse(const char *backend, size_t bytes, size_t in_use, size_t limit);
// Remembers the current error message as the last allocation refusal (a real out-of-memory).
void ae_mem_note_refusal(void);
// The message of this thread's last refused allocation ("" when none since the last clear): the
// callers up the stack often replace it by their own ("out of cpu memory for a stage-1
// micro-batch"); a report of what did not fit shows both.
const char *ae_mem_last_refusal(void);
void ae_mem_clear_refusal(void);

#ifdef __cplusplus
}
#endif

#endif
