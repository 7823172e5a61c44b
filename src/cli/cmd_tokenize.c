// attnedit tokenize --model MODEL (--text S | --file F) [--decode]
// Encode: prints the ids on one line separated by single spaces. --decode: reads ids (spaces,
// commas or newlines between them) and prints the text.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "tok/tokenizer.h"

static const char k_help[] =
    "usage: attnedit tokenize --model MODEL (--text S | --file F) [--decode]\n"
    "  Encodes UTF-8 text with MODEL/tokenizer.json (no special tokens added; special tokens\n"
    "  written in the text are recognised) and prints the ids separated by spaces.\n"
    "  --decode reads token ids instead and prints their text.\n";

static int run(const char *model, const char *text, size_t len, const char *origin, int decode) {
    ae_tokenizer *tok;
    if (ae_tokenizer_load(model, &tok) != AE_OK) return ae_cli_fail("tokenize");
    int rc = 0;
    if (decode) {
        int32_t *ids;
        int n;
        char *out;
        size_t outlen;
        if (ae_parse_ids(text, origin, ae_tokenizer_vocab_size(tok), &ids, &n) != AE_OK)
            rc = ae_cli_fail("tokenize");
        else {
            if (ae_tokenizer_decode(tok, ids, (size_t)n, &out, &outlen) != AE_OK)
                rc = ae_cli_fail("tokenize");
            else {
                fwrite(out, 1, outlen, stdout);
                fputc('\n', stdout);
                free(out);
            }
            free(ids);
        }
    } else {
        int32_t *ids;
        size_t n;
        if (ae_tokenizer_encode(tok, text, len, &ids, &n) != AE_OK) {
            ae_error_wrap(AE_ERR_ARG, "%s", origin);
            rc = ae_cli_fail("tokenize");
        } else {
            for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
            putchar('\n');
            free(ids);
        }
    }
    ae_tokenizer_free(tok);
    return rc;
}

int ae_cmd_tokenize(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "tokenize"};
    const char *model = NULL, *text = NULL, *file = NULL;
    int decode = 0, r;
    while (a.i < a.argc) {
        if ((r = ae_args_value(&a, "--model", &model)) ||
            (r = ae_args_value(&a, "--text", &text)) || (r = ae_args_value(&a, "--file", &file))) {
            if (r < 0) return ae_cli_fail("tokenize");
        } else if (ae_args_flag(&a, "--decode")) decode = 1;
        else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else return ae_cli_fail((ae_args_unknown(&a), "tokenize"));
    }
    if (!model || (!text == !file)) {
        fprintf(stderr, "attnedit tokenize: need --model and exactly one of --text / --file\n%s",
                k_help);
        return 2;
    }
    if (ae_cli_check_model("tokenize", model)) return 1;
    if (text) return run(model, text, strlen(text), "--text", decode);
    char *buf;
    size_t len;
    if (ae_file_read_all(file, &buf, &len) != AE_OK) return ae_cli_fail("tokenize");
    int rc = run(model, buf, len, file, decode);
    free(buf);
    return rc;
}
