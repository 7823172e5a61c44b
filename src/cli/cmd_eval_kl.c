// attnedit eval kl --teacher T --model S[,S2,...] --file F [--ctx N] [--json]
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/mem.h"
#include "eval/kl.h"

static const char k_help[] =
    "usage: attnedit eval kl --teacher T --model S[,S2,...] --file F [--ctx N] [--json]\n"
    "         [--device cpu|cuda[:N]]\n"
    "  Teacher-vs-student agreement on a UTF-8 text (documents and windows as in eval ppl):\n"
    "  mean KL(teacher || student) in nats/token, top-1 agreement, both perplexities, and the\n"
    "  same by position in the window (0-127, 128-511, 512-1023, then doubling up to --ctx).\n"
    "  Several students (--model A,B) run side by side against one teacher pass.\n"
    "  --ctx: window in tokens (default: the teacher's max_position_embeddings); logits are\n"
    "  computed in chunks of 512 rows, never for the whole window at once.\n"
    "  --json keys: teacher, tokens, ppl_teacher, students [{model, kl, top1, ppl_teacher,\n"
    "  ppl_student, tokens, by_position}]; and the first student's kl, top1, ppl_student,\n"
    "  by_position at the top level. --device: where the models run (default: the first CUDA\n"
    "  GPU when there is one, else the CPU).\n";

static void acc_json(cJSON *o, const ae_kl_acc *a) {
    double n = a->tokens ? (double)a->tokens : 1.0;
    cJSON_AddNumberToObject(o, "tokens", (double)a->tokens);
    cJSON_AddNumberToObject(o, "kl", a->kl / n);
    cJSON_AddNumberToObject(o, "top1", a->top1 / n);
    cJSON_AddNumberToObject(o, "ppl_teacher", exp(a->nll_t / n));
    cJSON_AddNumberToObject(o, "ppl_student", exp(a->nll_s / n));
}

// The overall numbers and the by-position array of one student into o.
static void result_json(cJSON *o, const ae_kl_result *r) {
    acc_json(o, &r->all);
    cJSON *b = cJSON_AddArrayToObject(o, "by_position");
    for (int i = 0; i < r->n_buckets; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "from", r->bucket_lo[i]);
        cJSON_AddNumberToObject(e, "to", r->bucket_hi[i] - 1);
        acc_json(e, &r->bucket[i]);
        cJSON_AddItemToArray(b, e);
    }
}

static void print_json(const char *teacher, char **names, const ae_kl_result *r, int n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "teacher", teacher);
    result_json(o, &r[0]);
    cJSON *arr = cJSON_AddArrayToObject(o, "students");
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "model", names[i]);
        result_json(e, &r[i]);
        cJSON_AddItemToArray(arr, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *b = path + n;
    while (b > path && b[-1] != '/') b--;
    return b;
}

// A column label: the folder name, at most w characters (its end, where the names differ).
static void label(char *buf, size_t cap, const char *path, int w) {
    const char *b = base_name(path);
    size_t n = strlen(b);
    while (n > 1 && b[n - 1] == '/') n--;
    snprintf(buf, cap, "%.*s", (int)(n > (size_t)w ? (size_t)w : n), b + (n > (size_t)w ? n - (size_t)w : 0));
}

static void print_table(const char *teacher, char **names, const ae_kl_result *r, int n) {
    const ae_kl_acc *a0 = &r[0].all;
    double m0 = (double)a0->tokens;
    char lab[40];
    printf("tokens scored          %lld\n", (long long)a0->tokens);
    label(lab, sizeof lab, teacher, 24);
    printf("\n%-24s %10s %12s %8s\n", "model", "ppl", "KL(t||s)", "top1");
    printf("%-24s %10.3f %12s %8s\n", lab, exp(a0->nll_t / m0), "-", "-");
    for (int i = 0; i < n; i++) {
        const ae_kl_acc *a = &r[i].all;
        double m = (double)a->tokens;
        label(lab, sizeof lab, names[i], 24);
        printf("%-24s %10.3f %12.5f %8.4f\n", lab, exp(a->nll_s / m), a->kl / m, a->top1 / m);
    }
    printf("\nby position in the window: teacher ppl; per student KL(t||s) nats/token, top-1, ppl\n");
    printf("%-12s %8s %9s", "positions", "tokens", "ppl_t");
    for (int i = 0; i < n; i++) {
        label(lab, sizeof lab, names[i], 26);
        printf(" | %-26s", lab);
    }
    printf("\n%-12s %8s %9s", "", "", "");
    for (int i = 0; i < n; i++) printf(" | %9s %6s %9s", "KL", "top1", "ppl");
    putchar('\n');
    for (int b = 0; b < r[0].n_buckets; b++) {
        const ae_kl_acc *t = &r[0].bucket[b];
        char pl[32];
        snprintf(pl, sizeof pl, "%d-%d", r[0].bucket_lo[b], r[0].bucket_hi[b] - 1);
        if (!t->tokens) {
            printf("%-12s %8d\n", pl, 0);
            continue;
        }
        printf("%-12s %8lld %9.3f", pl, (long long)t->tokens, exp(t->nll_t / (double)t->tokens));
        for (int i = 0; i < n; i++) {
            const ae_kl_acc *s = &r[i].bucket[b];
            double m = (double)s->tokens;
            printf(" | %9.5f %6.4f %9.3f", s->kl / m, s->top1 / m, exp(s->nll_s / m));
        }
        putchar('\n');
    }
}

// Splits "a,b" into at most max names (pointers into s, which is modified).
static int split_models(char *s, char **names, int max) {
    int n = 0;
    for (char *p = s; n < max;) {
        char *c = strchr(p, ',');
        if (c) *c = '\0';
        if (!*p) return -1;
        names[n++] = p;
        if (!c) return n;
        p = c + 1;
    }
    return -2;
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
    char *list = ae_strndup(model, strlen(model)), *names[AE_KL_MAX_STUDENTS];
    int n = list ? split_models(list, names, AE_KL_MAX_STUDENTS) : 0;
    if (n <= 0) {
        if (n == -1) fprintf(stderr, "attnedit eval kl: --model: empty name in '%s'\n", model);
        else if (n == -2) fprintf(stderr, "attnedit eval kl: --model: more than %d students in '%s'\n",
                                  AE_KL_MAX_STUDENTS, model);
        free(list);
        return n == 0 ? ae_cli_fail("eval kl") : 2;
    }
    int rc = ae_cli_check_model("eval kl", teacher) ? 1 : 0;
    for (int i = 0; i < n && rc == 0; i++) rc = ae_cli_check_model("eval kl", names[i]) ? 1 : 0;
    char *text = NULL;
    size_t len;
    ae_model *t = NULL, *s[AE_KL_MAX_STUDENTS] = {0};
    const ae_backend *be = NULL;
    ae_tokenizer *tok = NULL;
    ae_kl_result *res = ae_calloc((size_t)n, sizeof *res);
    if (rc) goto done;
    if (!res || ae_file_read_all(file, &text, &len) != AE_OK || ae_check_utf8(text, len, file) != AE_OK ||
        ae_tokenizer_load(names[0], &tok) != AE_OK) {
        rc = ae_cli_fail("eval kl");
        goto done;
    }
    if (ae_cli_open_device("eval kl", device, &be)) {
        rc = 1;
        goto done;
    }
    if (ae_model_load(teacher, be, &t) != AE_OK) rc = ae_cli_fail("eval kl");
    for (int i = 0; i < n && rc == 0; i++)
        if (ae_model_load(names[i], be, &s[i]) != AE_OK) rc = ae_cli_fail("eval kl");
    if (rc) goto done;
    int max_pos = t->cfg.max_position_embeddings;
    if (ctx == 0) ctx = max_pos;
    if (ctx > max_pos) {
        fprintf(stderr, "attnedit eval kl: --ctx %d exceeds the teacher's max_position_embeddings (%d)\n",
                ctx, max_pos);
        rc = 1;
        goto done;
    }
    if (ae_kl_text(t, (const ae_model *const *)s, n, tok, text, len, ctx, 0, !json, res) != AE_OK) {
        rc = ae_cli_fail("eval kl");
        goto done;
    }
    if (res[0].all.tokens == 0) {
        fprintf(stderr, "attnedit eval kl: %s: nothing to score\n", file);
        rc = 1;
        goto done;
    }
    if (json) print_json(teacher, names, res, n);
    else print_table(teacher, names, res, n);
done:
    free(text);
    ae_model_free(t);
    for (int i = 0; i < n; i++) ae_model_free(s[i]);
    ae_backend_close(be);
    ae_tokenizer_free(tok);
    free(res);
    free(list);
    return rc;
}
