// attnedit eval kl --teacher T --model S --file F [--ctx N] [--json]
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "eval/kl.h"

static const char k_help[] =
    "usage: attnedit eval kl --teacher T --model S --file F [--ctx N] [--json]\n"
    "         [--device cpu|cuda[:N]]\n"
    "  Teacher-vs-student agreement on a UTF-8 text (documents and windows as in eval ppl):\n"
    "  mean KL(teacher || student) in nats/token, top-1 agreement, both perplexities, and the\n"
    "  same by position in the window (0-127, 128-511, 512-1023, ...). --json keys: kl, top1,\n"
    "  ppl_teacher, ppl_student, tokens, by_position. --device: where both models run\n"
    "  (default: the first CUDA GPU when there is one, else the CPU).\n";

static void acc_json(cJSON *o, const ae_kl_acc *a) {
    double n = a->tokens ? (double)a->tokens : 1.0;
    cJSON_AddNumberToObject(o, "tokens", (double)a->tokens);
    cJSON_AddNumberToObject(o, "kl", a->kl / n);
    cJSON_AddNumberToObject(o, "top1", a->top1 / n);
    cJSON_AddNumberToObject(o, "ppl_teacher", exp(a->nll_t / n));
    cJSON_AddNumberToObject(o, "ppl_student", exp(a->nll_s / n));
}

static void print_result(const ae_kl_result *r, int json) {
    if (json) {
        cJSON *o = cJSON_CreateObject();
        acc_json(o, &r->all);
        cJSON *b = cJSON_AddArrayToObject(o, "by_position");
        for (int i = 0; i < r->n_buckets; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "from", r->bucket_lo[i]);
            cJSON_AddNumberToObject(e, "to", r->bucket_hi[i] - 1);
            acc_json(e, &r->bucket[i]);
            cJSON_AddItemToArray(b, e);
        }
        char *s = cJSON_PrintUnformatted(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    const ae_kl_acc *a = &r->all;
    double n = (double)a->tokens;
    printf("tokens scored          %lld\n", (long long)a->tokens);
    printf("perplexity             teacher %.3f   student %.3f\n", exp(a->nll_t / n), exp(a->nll_s / n));
    printf("KL(teacher||student)   %.5f nats/token\n", a->kl / n);
    printf("top-1 agreement        %.4f\n", a->top1 / n);
    printf("\n%-12s %8s %10s %8s %10s %10s\n", "positions", "tokens", "KL", "top1", "ppl_t", "ppl_s");
    for (int i = 0; i < r->n_buckets; i++) {
        const ae_kl_acc *b = &r->bucket[i];
        char lab[32];
        snprintf(lab, sizeof lab, "%d-%d", r->bucket_lo[i], r->bucket_hi[i] - 1);
        if (!b->tokens) {
            printf("%-12s %8d\n", lab, 0);
            continue;
        }
        double m = (double)b->tokens;
        printf("%-12s %8lld %10.5f %8.4f %10.3f %10.3f\n", lab, (long long)b->tokens, b->kl / m,
               b->top1 / m, exp(b->nll_t / m), exp(b->nll_s / m));
    }
}

int ae_cmd_eval_kl(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "eval kl"};
    const char *teacher = NULL, *model = NULL, *file = NULL, *device = NULL, *v;
    int ctx = 0, json = 0, r;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--teacher", &teacher)) || (r = ae_args_value(&a, "--model", &model)) ||
            (r = ae_args_value(&a, "--file", &file)) || (r = ae_args_value(&a, "--device", &device))) {
        } else if ((r = ae_args_value(&a, "--ctx", &v))) {
            if (r > 0) st = ae_parse_int(v, "--ctx", 2, 1 << 20, &ctx);
        } else if (ae_args_flag(&a, "--json")) json = 1;
        else if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            return 0;
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("eval kl");
    }
    if (!teacher || !model || !file) {
        fprintf(stderr, "attnedit eval kl: need --teacher, --model and --file\n%s", k_help);
        return 2;
    }
    if (ae_cli_check_model("eval kl", teacher) || ae_cli_check_model("eval kl", model)) return 1;
    char *text = NULL;
    size_t len;
    ae_model *t = NULL, *s = NULL;
    const ae_backend *be = NULL;
    ae_tokenizer *tok = NULL;
    int rc = 0;
    static ae_kl_result res;
    if (ae_file_read_all(file, &text, &len) != AE_OK || ae_check_utf8(text, len, file) != AE_OK ||
        ae_tokenizer_load(model, &tok) != AE_OK) {
        rc = ae_cli_fail("eval kl");
        goto done;
    }
    if (ae_cli_open_device("eval kl", device, &be)) {
        rc = 1;
        goto done;
    }
    if (ae_model_load(teacher, be, &t) != AE_OK || ae_model_load(model, be, &s) != AE_OK) {
        rc = ae_cli_fail("eval kl");
        goto done;
    }
    int max_pos = t->cfg.max_position_embeddings;
    if (ctx == 0) ctx = max_pos < 512 ? max_pos : 512;
    if (ctx > max_pos) {
        fprintf(stderr, "attnedit eval kl: --ctx %d exceeds the teacher's max_position_embeddings (%d)\n",
                ctx, max_pos);
        rc = 1;
        goto done;
    }
    if (ae_kl_text(t, s, tok, text, len, ctx, !json, &res) != AE_OK) {
        rc = ae_cli_fail("eval kl");
        goto done;
    }
    if (res.all.tokens == 0) {
        fprintf(stderr, "attnedit eval kl: %s: nothing to score\n", file);
        rc = 1;
        goto done;
    }
    print_result(&res, json);
done:
    free(text);
    ae_model_free(t);
    ae_model_free(s);
    ae_backend_close(be);
    ae_tokenizer_free(tok);
    return rc;
}
