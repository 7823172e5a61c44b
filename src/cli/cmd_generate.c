// attnedit generate --model MODEL (--prompt S | --prompt-ids "1 2 3") [--max-new-tokens N]
//   [--greedy | --temperature T --top-k K --top-p P --seed S] [--print-ids] [--ignore-eos]
// Streams the continuation to stdout; prompt and decode speed go to stderr.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "infer/generate.h"
#include "tok/tokenizer.h"

static const char k_help[] =
    "usage: attnedit generate --model MODEL (--prompt S | --prompt-ids \"1 2 3\")\n"
    "         [--max-new-tokens N] [--greedy | --temperature T [--top-k K] [--top-p P] [--seed S]]\n"
    "         [--print-ids] [--ignore-eos] [--device cpu|cuda[:N]]\n"
    "  Streams the continuation (text, or the new ids with --print-ids). Greedy unless\n"
    "  --temperature is given (defaults: top-k 0 = off, top-p 1.0, seed 0). Stops at the\n"
    "  model's eos token unless --ignore-eos. Default --max-new-tokens 64. --device: where the\n"
    "  model runs (default: the first CUDA GPU when there is one, else the CPU).\n";

typedef struct {
    const ae_tokenizer *tok;
    ae_decode_stream ds;
    int print_ids, count;
    ae_status st;
} stream_state;

static int on_token(void *ud, int32_t id) {
    stream_state *s = ud;
    if (s->print_ids) {
        printf(s->count++ ? " %d" : "%d", id);
    } else {
        char *txt;
        size_t n;
        s->st = ae_tokenizer_decode_next(s->tok, &s->ds, id, &txt, &n);
        if (s->st != AE_OK) return 1;
        fwrite(txt, 1, n, stdout);
        free(txt);
    }
    fflush(stdout);
    return 0;
}

typedef struct {
    const char *model, *prompt, *prompt_ids, *device;
    const char *temperature_s, *top_p_s; // as given, for messages
    int max_new, greedy_flag, sampling_flag, print_ids, ignore_eos;
    ae_sampler_params sp;
} gen_opts;

static int parse(int argc, char **argv, gen_opts *o) {
    ae_args a = {argc, argv, 0, "generate"};
    const char *v;
    int r;
    memset(o, 0, sizeof *o);
    o->max_new = 64;
    o->sp.greedy = 1;
    o->sp.top_p = 1.0f;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--model", &o->model)) ||
            (r = ae_args_value(&a, "--prompt", &o->prompt)) ||
            (r = ae_args_value(&a, "--prompt-ids", &o->prompt_ids)) ||
            (r = ae_args_value(&a, "--device", &o->device))) {
        } else if ((r = ae_args_value(&a, "--max-new-tokens", &v))) {
            if (r > 0) st = ae_parse_int(v, "--max-new-tokens", 1, 1 << 24, &o->max_new);
        } else if ((r = ae_args_value(&a, "--temperature", &v))) {
            if (r > 0) {
                st = ae_parse_float(v, "--temperature", &o->sp.temperature);
                o->temperature_s = v;
                o->sampling_flag = 1;
            }
        } else if ((r = ae_args_value(&a, "--top-k", &v))) {
            if (r > 0) st = ae_parse_int(v, "--top-k", 0, 1 << 30, &o->sp.top_k);
            o->sampling_flag = 1;
        } else if ((r = ae_args_value(&a, "--top-p", &v))) {
            if (r > 0) {
                st = ae_parse_float(v, "--top-p", &o->sp.top_p);
                o->top_p_s = v;
                o->sampling_flag = 1;
            }
        } else if ((r = ae_args_value(&a, "--seed", &v))) {
            if (r > 0) st = ae_parse_u64(v, "--seed", &o->sp.seed);
            o->sampling_flag = 1;
        } else if (ae_args_flag(&a, "--greedy")) o->greedy_flag = 1;
        else if (ae_args_flag(&a, "--print-ids")) o->print_ids = 1;
        else if (ae_args_flag(&a, "--ignore-eos")) o->ignore_eos = 1;
        else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            exit(0);
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("generate");
    }
    if (!o->model || (!o->prompt == !o->prompt_ids)) {
        fprintf(stderr,
                "attnedit generate: need --model and exactly one of --prompt / --prompt-ids\n%s",
                k_help);
        return 2;
    }
    if (o->greedy_flag && o->sampling_flag) {
        fprintf(stderr, "attnedit generate: --greedy cannot be combined with "
                        "--temperature/--top-k/--top-p/--seed\n");
        return 2;
    }
    if (o->temperature_s && !(o->sp.temperature > 0.0f)) {
        fprintf(stderr,
                "attnedit generate: --temperature must be a positive number, got '%s' (use "
                "--greedy for argmax decoding)\n",
                o->temperature_s);
        return 1;
    }
    if (o->top_p_s && !(o->sp.top_p > 0.0f && o->sp.top_p <= 1.0f)) {
        fprintf(stderr, "attnedit generate: --top-p must be in (0, 1], got '%s'\n", o->top_p_s);
        return 1;
    }
    if (o->sampling_flag) {
        o->sp.greedy = 0;
        if (!o->temperature_s) o->sp.temperature = 1.0f;
    }
    return 0;
}

int ae_cmd_generate(int argc, char **argv) {
    gen_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    ae_model *m = NULL;
    const ae_backend *be = NULL;
    ae_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int n = 0;
    ae_sampler smp = {0};
    if (ae_cli_check_model("generate", o.model)) return 1;
    if (!o.print_ids || o.prompt) {
        if (ae_tokenizer_load(o.model, &tok) != AE_OK) return ae_cli_fail("generate");
    }
    if (o.prompt) {
        size_t nn;
        if (ae_tokenizer_encode(tok, o.prompt, strlen(o.prompt), &ids, &nn) != AE_OK) {
            ae_error_wrap(AE_ERR_ARG, "--prompt");
            rc = ae_cli_fail("generate");
            goto done;
        }
        n = (int)nn;
        if (n == 0) {
            fprintf(stderr, "attnedit generate: --prompt is empty (it encodes to no tokens)\n");
            rc = 1;
            goto done;
        }
    }
    if (ae_cli_open_device("generate", o.device, &be)) {
        rc = 1;
        goto done;
    }
    if (ae_model_load(o.model, be, &m) != AE_OK) {
        rc = ae_cli_fail("generate");
        goto done;
    }
    if (o.prompt_ids && ae_parse_ids(o.prompt_ids, "--prompt-ids", m->cfg.vocab_size, &ids, &n) != AE_OK) {
        rc = ae_cli_fail("generate");
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "attnedit generate: --prompt-ids is empty (no token ids given)\n");
        rc = 1;
        goto done;
    }
    if ((long)n + o.max_new > m->cfg.max_position_embeddings) {
        fprintf(stderr,
                "attnedit generate: prompt (%d tokens) + --max-new-tokens (%d) exceeds the model's "
                "max_position_embeddings (%d)\n",
                n, o.max_new, m->cfg.max_position_embeddings);
        rc = 1;
        goto done;
    }
    if (ae_sampler_init(&smp, &o.sp, m->cfg.vocab_size) != AE_OK) {
        rc = ae_cli_fail("generate");
        goto done;
    }
    stream_state ss = {.tok = tok, .print_ids = o.print_ids, .st = AE_OK};
    ae_gen_stats gs;
    int eos = o.ignore_eos ? -1 : m->cfg.eos_token_id;
    if (ae_generate(m, ids, n, o.max_new, &smp, eos, on_token, &ss, &gs) != AE_OK ||
        ss.st != AE_OK) {
        rc = ae_cli_fail("generate");
        goto done;
    }
    if (!o.print_ids) {
        char *tail;
        size_t tl;
        if (ae_tokenizer_decode_flush(tok, &ss.ds, &tail, &tl) == AE_OK) {
            fwrite(tail, 1, tl, stdout);
            free(tail);
        }
    }
    putchar('\n');
    fflush(stdout); // the text before the timing line, also when both go to one file
    fprintf(stderr, "prompt: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s)\n",
            gs.prompt_tokens, gs.prefill_s, gs.prompt_tokens / (gs.prefill_s + 1e-12),
            gs.new_tokens, gs.decode_s,
            gs.new_tokens > 1 ? (gs.new_tokens - 1) / (gs.decode_s + 1e-12) : 0.0);
done:
    ae_sampler_free(&smp);
    free(ids);
    ae_model_free(m);
    ae_backend_close(be);
    ae_tokenizer_free(tok);
    return rc;
}
