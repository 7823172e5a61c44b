// Minimal, strict option parsing shared by the subcommands: every value is validated and a bad
// one yields one message naming the option.
#ifndef AE_CLI_ARGS_H
#define AE_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct {
    int argc;
    char **argv;
    int i;             // next argument
    const char *cmd;   // subcommand name, for messages
} ae_args;

// 1 if argv[i] equals `name` (and consumes it).
int ae_args_flag(ae_args *a, const char *name);
// If argv[i] equals `name`, consumes it and its value into *val (error if missing).
// Returns 1 matched, 0 not matched, -1 error (message set).
int ae_args_value(ae_args *a, const char *name, const char **val);
ae_status ae_parse_int(const char *s, const char *opt, long lo, long hi, int *out);
ae_status ae_parse_u64(const char *s, const char *opt, uint64_t *out);
ae_status ae_parse_float(const char *s, const char *opt, float *out);
// Space/comma separated ids, each in [0, vocab).  *ids heap-allocated.
ae_status ae_parse_ids(const char *s, const char *what, int vocab, int32_t **ids, int *n);
ae_status ae_args_unknown(const ae_args *a);
// "0,5,11" -> {0, 5, 11}, each in [lo, hi].  *vals heap-allocated.
ae_status ae_parse_int_list(const char *s, const char *opt, int lo, int hi, int **vals, int *n);
// AE_ERR_ARG "<origin>: not valid UTF-8 (... at byte offset N)" unless s[0..len) is UTF-8.
ae_status ae_check_utf8(const char *s, size_t len, const char *origin);

#endif
