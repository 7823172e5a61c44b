// attnedit prepare-data --model MODEL --out FILE [--valid-fraction F] [--valid-out FILE2]
//                       [--quiet] INPUT...
// Tokenises text / jsonl files into a token file (train/data.h, train/prepare.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/mem.h"
#include "train/prepare.h"

static const char k_help[] =
    "usage: attnedit prepare-data --model MODEL --out FILE [--valid-fraction F]\n"
    "                             [--valid-out FILE2] [--quiet] INPUT...\n"
    "  Tokenises INPUT files with MODEL/tokenizer.json into a token file (uint32 ids after a\n"
    "  64-byte header holding the vocabulary size and the tokenizer's SHA-256), one eos id after\n"
    "  every document.\n"
    "  Documents: in a text file, the pieces between '<|endoftext|>' markers, or when it has none,\n"
    "  paragraphs separated by blank lines (surrounding whitespace trimmed); in a .jsonl file, the\n"
    "  \"text\" string of each line's JSON object.\n"
    "  --valid-fraction F  in [0, 1): a fixed, hash-chosen fraction of the documents goes to the\n"
    "                      validation file FILE.valid (or --valid-out FILE2) instead.\n"
    "  --quiet             no progress lines on stderr.\n"
    "  Output files are written atomically: on any error none is left.\n";

int ae_cmd_prepare_data(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "prepare-data"};
    const char *model = NULL, *out = NULL, *vfrac = NULL, *vout = NULL;
    int quiet = 0, r, n_in = 0;
    const char **inputs = ae_malloc(sizeof *inputs * (size_t)(argc > 0 ? argc : 1));
    if (!inputs) return ae_cli_fail("prepare-data");
    while (a.i < a.argc) {
        if ((r = ae_args_value(&a, "--model", &model)) || (r = ae_args_value(&a, "--out", &out)) ||
            (r = ae_args_value(&a, "--valid-fraction", &vfrac)) ||
            (r = ae_args_value(&a, "--valid-out", &vout))) {
            if (r < 0) {
                free(inputs);
                return ae_cli_fail("prepare-data");
            }
        } else if (ae_args_flag(&a, "--quiet")) quiet = 1;
        else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            free(inputs);
            return 0;
        } else if (argv[a.i][0] == '-' && argv[a.i][1] != '\0') {
            free(inputs);
            return ae_cli_fail((ae_args_unknown(&a), "prepare-data"));
        } else inputs[n_in++] = argv[a.i++];
    }
    if (!model || !out || n_in == 0) {
        fprintf(stderr, "attnedit prepare-data: need --model, --out and at least one INPUT file\n%s",
                k_help);
        free(inputs);
        return 2;
    }
    float frac = 0;
    if (vfrac && ae_parse_float(vfrac, "--valid-fraction", &frac) != AE_OK) {
        free(inputs);
        return ae_cli_fail("prepare-data");
    }
    if (!(frac >= 0 && frac < 1)) {
        fprintf(stderr, "attnedit prepare-data: --valid-fraction %s must be in [0, 1)\n", vfrac);
        free(inputs);
        return 1;
    }
    if (vout && frac == 0) {
        fprintf(stderr, "attnedit prepare-data: --valid-out needs a --valid-fraction above 0\n");
        free(inputs);
        return 2;
    }
    if (ae_cli_check_model("prepare-data", model)) {
        free(inputs);
        return 1;
    }
    ae_prepare_opts o = {model, out, vout, frac, inputs, n_in, !quiet};
    ae_prepare_result res;
    ae_status st = ae_prepare_data(&o, &res);
    free(inputs);
    if (st != AE_OK) return ae_cli_fail("prepare-data");
    double mb = (double)res.bytes / 1e6;
    printf("prepare-data: %s: %llu documents, %llu tokens", out, (unsigned long long)res.docs[0],
           (unsigned long long)res.tokens[0]);
    if (res.valid_path[0])
        printf("; %s: %llu documents, %llu tokens", res.valid_path,
               (unsigned long long)res.docs[1], (unsigned long long)res.tokens[1]);
    printf(" (vocab %u, eos %u, tokenizer sha256 %.16s; %.2f MB in %.2f s, %.2f MB/s)\n",
           res.vocab_size, res.eos_id, res.tokenizer_sha256, mb, res.seconds,
           res.seconds > 0 ? mb / res.seconds : 0.0);
    return 0;
}
