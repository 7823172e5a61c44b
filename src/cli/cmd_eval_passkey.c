// attnedit eval passkey MODEL [--lengths L,...] [--depths D,...] [--trials N] [--seed S]
//                      [--digits K] [--device cpu|cuda[:N]] [--json FILE] [--png FILE]
//                      [--compare MODEL2]
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/mem.h"
#include "core/progress.h"
#include "eval/passkey.h"
#include "io/config.h"

static const char k_help[] =
    "usage: attnedit eval passkey MODEL [--lengths 1024,2048,4096] [--depths 0,0.25,0.5,0.75,1]\n"
    "         [--trials N] [--seed S] [--digits K] [--device cpu|cuda[:N]] [--json FILE]\n"
    "         [--png FILE] [--compare MODEL2]\n"
    "  Pass-key retrieval: a random K-digit key (default 5) hidden in filler text at each depth\n"
    "  (fraction of the filler, 0 = start, 1 = end) of prompts of each length (tokens of the\n"
    "  model's tokenizer, prompt + answer), then asked for at the end. Per cell (length x depth,\n"
    "  N trials, default 10): exact-match accuracy of greedy generation, and the mean\n"
    "  log-likelihood per token of the true key after the prompt (teacher-forced). Keys come from\n"
    "  --seed (default 1): the same prompts for every model. --json FILE: every cell and trial\n"
    "  (key, prediction); --png FILE: heat maps of both numbers. --compare MODEL2: the same\n"
    "  prompts on a second model (teacher vs student), tables and one PNG with both. --device:\n"
    "  where the models run (default: the first CUDA GPU when there is one, else the CPU).\n"
    "  Lengths above a model's max_position_embeddings are refused. docs/EVAL.md has details.\n";

// "0,0.5,1" -> fractions in [0, 1], each listed once.
static ae_status parse_depths(const char *s, double **out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = 0;
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno == ERANGE || (*end && *end != ',') || !isfinite(d)) {
            free(*out);
            *out = NULL;
            return ae_errorf(AE_ERR_ARG, "--depths: '%s' is not a comma-separated list of numbers "
                                         "(fractions of the filler in [0, 1], e.g. 0,0.5,1)", s);
        }
        if (d < 0 || d > 1) {
            free(*out);
            *out = NULL;
            return ae_errorf(AE_ERR_ARG, "--depths: %g is outside [0, 1] (0: the key at the start of "
                                         "the filler, 1: at its end)", d);
        }
        for (int i = 0; i < *n; i++)
            if ((*out)[i] == d) {
                free(*out);
                *out = NULL;
                return ae_errorf(AE_ERR_ARG, "--depths: %g is listed twice", d);
            }
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            double *nv = ae_realloc(*out, sizeof(double) * (size_t)cap);
            if (!nv) {
                free(*out);
                *out = NULL;
                return AE_ERR_NOMEM;
            }
            *out = nv;
        }
        (*out)[(*n)++] = d;
        if (!*end) break;
        p = end + 1;
    }
    return AE_OK;
}

// The folder's last component, for tables and titles.
static const char *model_name(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(buf, cap, "%.*s", (int)(n - b), path + b);
    return buf;
}

// Refuses an output path that cannot be written (before any model runs); nothing is left.
static int check_output(const char *opt, const char *path) {
    ae_atomic_file f;
    if (ae_atomic_open(&f, path) != AE_OK) {
        fprintf(stderr, "attnedit eval passkey: %s: %s\n", opt, ae_last_error());
        return 1;
    }
    ae_atomic_abort(&f);
    return 0;
}

typedef struct {
    const char *name;
    ae_progress pg;
} progress_ud;

static void progress(void *ud, int done, int total) {
    progress_ud *p = ud;
    if (!ae_progress_due(&p->pg, done == total)) return;
    ae_progress_line(&p->pg, done == total, "eval passkey: %s %d/%d prompts, %.2f prompts/s", p->name,
                     done, total, done / (ae_progress_elapsed(&p->pg) + 1e-9));
}

static void print_table(const ae_passkey_set *s, const ae_passkey_model *mo) {
    printf("%s: exact match / key log-likelihood per token (nats), %d trials per cell\n", mo->name,
           s->trials);
    printf("%8s", "tokens");
    for (int di = 0; di < s->n_depths; di++) {
        char h[32];
        snprintf(h, sizeof h, "depth %g", s->depths[di]);
        printf("  %13s", h);
    }
    printf("  %13s\n", "mean");
    double ta = 0, tl = 0;
    for (int li = 0; li < s->n_lengths; li++) {
        printf("%8d", s->lengths[li]);
        double ra = 0, rl = 0;
        for (int di = 0; di < s->n_depths; di++) {
            double a, l;
            ae_passkey_cell(s, mo->scores, li, di, &a, &l);
            printf("  %5.2f %7.3f", a, l);
            ra += a;
            rl += l;
        }
        printf("  %5.2f %7.3f\n", ra / s->n_depths, rl / s->n_depths);
        ta += ra;
        tl += rl;
    }
    int cells = s->n_lengths * s->n_depths;
    printf("all cells: exact match %.3f, key log-likelihood %.3f nats/token\n\n", ta / cells, tl / cells);
}

int ae_cmd_eval_passkey(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "eval passkey"};
    const char *model = NULL, *compare = NULL, *device = NULL, *json = NULL, *png = NULL, *v;
    const char *lengths_s = "1024,2048,4096", *depths_s = "0,0.25,0.5,0.75,1";
    int trials = 10, digits = 5, r, lengths_given = 0;
    uint64_t seed = 1;
    while (a.i < a.argc) {
        ae_status st = AE_OK;
        if ((r = ae_args_value(&a, "--model", &model)) || (r = ae_args_value(&a, "--compare", &compare)) ||
            (r = ae_args_value(&a, "--device", &device)) || (r = ae_args_value(&a, "--json", &json)) ||
            (r = ae_args_value(&a, "--png", &png)) || (r = ae_args_value(&a, "--depths", &depths_s))) {
        } else if ((r = ae_args_value(&a, "--lengths", &lengths_s))) {
            lengths_given = 1;
        } else if ((r = ae_args_value(&a, "--trials", &v))) {
            if (r > 0) st = ae_parse_int(v, "--trials", 1, 100000, &trials);
        } else if ((r = ae_args_value(&a, "--digits", &v))) {
            if (r > 0) st = ae_parse_int(v, "--digits", 1, AE_PASSKEY_MAX_DIGITS, &digits);
        } else if ((r = ae_args_value(&a, "--seed", &v))) {
            if (r > 0) st = ae_parse_u64(v, "--seed", &seed);
        } else if (ae_args_flag(&a, "--help") || ae_args_flag(&a, "-h")) {
            fputs(k_help, stdout);
            return 0;
        } else if (a.argv[a.i][0] != '-' && !model) {
            model = a.argv[a.i++];
        } else st = ae_args_unknown(&a);
        if (r < 0 || st != AE_OK) return ae_cli_fail("eval passkey");
    }
    if (!model) {
        fprintf(stderr, "attnedit eval passkey: need MODEL (a model folder)\n%s", k_help);
        return 2;
    }
    int *lengths = NULL, n_lengths = 0, n_depths = 0, rc = 0;
    double *depths = NULL;
    if (ae_parse_int_list(lengths_s, "--lengths", 1, 1 << 24, &lengths, &n_lengths) != AE_OK ||
        parse_depths(depths_s, &depths, &n_depths) != AE_OK)
        rc = ae_cli_fail("eval passkey");
    for (int i = 0; rc == 0 && i < n_lengths; i++)
        for (int j = 0; j < i; j++)
            if (lengths[i] == lengths[j] && rc == 0) {
                fprintf(stderr, "attnedit eval passkey: --lengths: %d is listed twice\n", lengths[i]);
                rc = 1;
            }
    const char *paths[2] = {model, compare};
    int n_models = compare ? 2 : 1;
    if (rc == 0) rc = ae_cli_check_model("eval passkey", model);
    if (rc == 0 && compare && !ae_path_is_dir(compare)) {
        fprintf(stderr, "attnedit eval passkey: --compare: MODEL2 folder '%s' %s\n", compare,
                ae_path_exists(compare) ? "is not a folder" : "does not exist");
        rc = 1;
    }
    // Lengths against each model's limit, before anything is loaded.
    int max_pos[2] = {0, 0};
    for (int k = 0; rc == 0 && k < n_models; k++) {
        ae_config cfg;
        if (ae_config_load(paths[k], &cfg) != AE_OK) {
            rc = ae_cli_fail("eval passkey");
            break;
        }
        max_pos[k] = cfg.max_position_embeddings;
        ae_config_free(&cfg);
        for (int i = 0; i < n_lengths && rc == 0; i++)
            if (lengths[i] > max_pos[k]) {
                fprintf(stderr, "attnedit eval passkey: --lengths: %d exceeds the max_position_embeddings "
                                "of %s (%d)%s\n", lengths[i], paths[k], max_pos[k],
                        lengths_given ? "" : " (the default --lengths is 1024,2048,4096)");
                rc = 1;
            }
    }
    if (rc == 0 && json && check_output("--json", json)) rc = 1;
    if (rc == 0 && png && check_output("--png", png)) rc = 1;
    if (rc == 0 && json && png && !strcmp(json, png)) {
        fprintf(stderr, "attnedit eval passkey: --json and --png name the same file '%s'\n", json);
        rc = 1;
    }
    ae_tokenizer *tok[2] = {NULL, NULL};
    ae_passkey_set set = {0};
    for (int k = 0; rc == 0 && k < n_models; k++)
        if (ae_tokenizer_load(paths[k], &tok[k]) != AE_OK) rc = ae_cli_fail("eval passkey");
    if (rc == 0) {
        ae_status st = ae_passkey_set_build(&set, tok[0], lengths, n_lengths, depths, n_depths, trials,
                                            digits, seed);
        if (st == AE_ERR_ARG) ae_error_wrap(st, "--lengths"); // a length too short for the prompt
        if (st != AE_OK) rc = ae_cli_fail("eval passkey");
    }
    const ae_backend *be = NULL;
    if (rc == 0 && ae_cli_open_device("eval passkey", device, &be)) rc = 1;
    int total = n_lengths * n_depths * trials;
    ae_passkey_score *scores[2] = {NULL, NULL};
    ae_passkey_model mo[2];
    char names[2][256];
    for (int k = 0; rc == 0 && k < n_models; k++) {
        mo[k] = (ae_passkey_model){model_name(paths[k], names[k], sizeof names[k]), paths[k], max_pos[k], NULL};
        scores[k] = ae_calloc((size_t)total, sizeof *scores[k]);
        ae_model *m = NULL;
        if (!scores[k] || ae_model_load(paths[k], be, &m) != AE_OK) {
            rc = ae_cli_fail("eval passkey");
            break;
        }
        progress_ud pu = {mo[k].name, {0}};
        ae_progress_start(&pu.pg, 1);
        if (ae_passkey_run(m, tok[k], k > 0, &set, progress, &pu, scores[k]) != AE_OK)
            rc = ae_cli_fail("eval passkey");
        ae_model_free(m);
        mo[k].scores = scores[k];
    }
    if (rc == 0 && n_models == 2 && !strcmp(mo[0].name, mo[1].name)) { // same folder names
        mo[0].name = paths[0];
        mo[1].name = paths[1];
    }
    if (rc == 0) {
        printf("pass key: %d-digit keys, seed %llu, prompts of %s tokens (prompt + answer)\n\n", digits,
               (unsigned long long)seed, lengths_s);
        for (int k = 0; k < n_models; k++) print_table(&set, &mo[k]);
        if (json && ae_passkey_write_json(json, &set, mo, n_models) != AE_OK) rc = ae_cli_fail("eval passkey");
        else if (json) fprintf(stderr, "wrote %s\n", json);
    }
    if (rc == 0 && png) {
        if (ae_passkey_write_png(png, &set, mo, n_models) != AE_OK) rc = ae_cli_fail("eval passkey");
        else fprintf(stderr, "wrote %s\n", png);
    }
    for (int k = 0; k < 2; k++) {
        ae_passkey_scores_free(scores[k], scores[k] ? total : 0);
        free(scores[k]);
        ae_tokenizer_free(tok[k]);
    }
    ae_passkey_set_free(&set);
    ae_backend_close(be);
    free(lengths);
    free(depths);
    return rc;
}
