// attnedit eval ppl --model MODEL --file F [--ctx N] [--json] [--protocol attnedit|llama]
//                   [--max-chunks N]
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "eval/ppl.h"
#include "io/config.h"

static const char k_help[] =
    "usage: attnedit eval ppl --model MODEL --file F [--ctx N] [--json] [--device cpu|cuda[:N]]\n"
    "                         [--protocol attnedit|llama] [--max-chunks N]\n"
    "  Perplexity of MODEL on a UTF-8 text file. Documents are split on <|endoftext|>, each is\n"
    "  tokenised without special tokens and scored in windows of N tokens (default: 512, or\n"
    "  max_position_embeddings if smaller) with stride N; every token but a document's first is\n"
    "  predicted once. Prints tokens scored, mean NLL (nats/token) and perplexity. --device:\n"
    "  where the model runs (default: the first CUDA GPU when there is one, else the CPU).\n"
    "  --protocol llama: llama.cpp's llama-perplexity protocol instead: each document is cut\n"
    "  into consecutive chunks of exactly N tokens (a partial last chunk is dropped), each\n"
    "  scored from an empty cache on its second half only (the predictions of the tokens at\n"
    "  chunk positions N/2+1 .. N-1); on a text without <|endoftext|> this is the number\n"
    "  llama-perplexity -c N prints (no BOS: add_bos_token is false). --max-chunks N: stop\n"
    "  after N chunks (llama-perplexity --chunks N). The JSON then has \"chunks\".\n";

static int eval_ppl(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "eval ppl"};
    const char *model = NULL, *file = NULL, *device = NULL, *v;
    int ctx = 0, json = 0, llama = 0, max_chunks = 0, r;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--model", &model)) || (r = ae_args_value(&a, "--file", &file)) ||
            (r = ae_args_value(&a, "--device", &device))) {
        } else if ((r = ae_args_value(&a, "--ctx", &v))) {
            if (r > 0) st = ae_parse_int(v, "--ctx", 2, 1 << 20, &ctx);
        } else if ((r = ae_args_value(&a, "--protocol", &v))) {
            if (r > 0 && !strcmp(v, "llama")) llama = 1;
            else if (r > 0 && strcmp(v, "attnedit") != 0)
                st = ae_errorf(AE_ERR_ARG, "--protocol: '%s' is not one of attnedit, llama", v);
        } else if ((r = ae_args_value(&a, "--max-chunks", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-chunks", 1, 1 << 30, &max_chunks);
        } else if (ae_args_flag(&a, "--json")) json = 1;
        else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("eval ppl");
    }
    if (!model || !file) {
        fprintf(stderr, "attnedit eval ppl: need --model and --file\n%s", k_help);
        return 2;
    }
    if (ae_cli_check_model("eval ppl", model)) return 1;
    char *text = NULL;
    size_t len;
    ae_model *m = NULL;
    const ae_backend *be = NULL;
    ae_tokenizer *tok = NULL;
    int rc = 0;
    ae_ppl res;
    // Everything that can be checked up front is, so that a bad byte at the end of a long file or
    // a too-large --ctx is reported before any scoring.
    ae_config cfg;
    if (ae_config_load(model, &cfg) != AE_OK) return ae_cli_fail("eval ppl");
    int max_pos = cfg.max_position_embeddings;
    ae_config_free(&cfg);
    if (ctx == 0) ctx = max_pos < 512 ? max_pos : 512;
    if (ctx > max_pos) {
        fprintf(stderr,
                "attnedit eval ppl: --ctx %d exceeds the model's max_position_embeddings (%d)\n",
                ctx, max_pos);
        return 1;
    }
    if (ae_file_read_all(file, &text, &len) != AE_OK || ae_check_utf8(text, len, file) != AE_OK ||
        ae_tokenizer_load(model, &tok) != AE_OK) {
        rc = ae_cli_fail("eval ppl");
        goto done;
    }
    if (ae_cli_open_device("eval ppl", device, &be)) {
        rc = 1;
        goto done;
    }
    if (ae_model_load(model, be, &m) != AE_OK) {
        rc = ae_cli_fail("eval ppl");
        goto done;
    }
    if ((llama ? ae_ppl_text_chunks(m, tok, text, len, ctx, max_chunks, !json, &res)
               : ae_ppl_text(m, tok, text, len, ctx, !json, &res)) != AE_OK) {
        ae_error_wrap(AE_ERR_ARG, "%s", file);
        rc = ae_cli_fail("eval ppl");
        goto done;
    }
    if (res.tokens == 0) {
        fprintf(stderr, "attnedit eval ppl: %s: %s; nothing to score\n", file,
                llama ? "no document has a whole chunk of --ctx tokens" : "no document has 2 or more tokens");
        rc = 1;
        goto done;
    }
    double nll = res.nll_sum / (double)res.tokens;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "tokens", (double)res.tokens);
        cJSON_AddNumberToObject(o, "mean_nll", nll);
        cJSON_AddNumberToObject(o, "ppl", exp(nll));
        cJSON_AddNumberToObject(o, "ctx", ctx);
        if (llama) {
            cJSON_AddStringToObject(o, "protocol", "llama");
            cJSON_AddNumberToObject(o, "chunks", res.docs);
        } else {
            cJSON_AddNumberToObject(o, "docs", res.docs);
        }
        char *s = cJSON_PrintUnformatted(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("tokens    %lld\nmean_nll  %.6f\nppl       %.4f\n", (long long)res.tokens, nll, exp(nll));
    }
done:
    free(text);
    ae_model_free(m);
    ae_backend_close(be);
    ae_tokenizer_free(tok);
    return rc;
}

int ae_cmd_eval(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "ppl")) return eval_ppl(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "kl")) return ae_cmd_eval_kl(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "tasks")) return ae_cmd_eval_tasks(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "passkey")) return ae_cmd_eval_passkey(argc - 1, argv + 1);
    fprintf(stderr, "attnedit eval: unknown evaluation '%s' (available: ppl, kl, tasks, passkey)\n%s",
            argc >= 1 ? argv[0] : "", k_help);
    return 2;
}
