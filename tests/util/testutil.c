#define _XOPEN_SOURCE 700
#include "util/testutil.h"

#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/file.h"
#include "model/save.h"

#include <cjson/cJSON.h>
#include <math.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *ae_test_cli_path(void) {
    const char *env = getenv("AE_TEST_CLI"); // a prebuilt test run elsewhere (GPU machine)
    return env && *env ? env : AE_CLI_PATH;
}

const char *ae_test_src(const char *rel) {
    static char bufs[8][4096];
    static int slot;
    char *b = bufs[slot++ & 7];
    const char *root = getenv("AE_TEST_SOURCE_DIR"); // a prebuilt test run elsewhere (GPU machine)
    snprintf(b, 4096, "%s/%s", root && *root ? root : AE_SOURCE_DIR, rel);
    return b;
}

const char *ae_test_shared_dir(void) {
    static char buf[4096];
    const char *env = getenv("AE_SHARED_DIR");
    if (env && *env) snprintf(buf, sizeof buf, "%s", env);
    else snprintf(buf, sizeof buf, "%s/../shared", AE_SOURCE_DIR);
    struct stat st;
    return (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) ? buf : NULL;
}

static int g_skips; // checks skipped for lack of ../shared

const char *ae_test_shared(const char *rel, const char *what) {
    static char bufs[8][4096];
    static int slot;
    const char *dir = ae_test_shared_dir();
    struct stat st;
    if (dir) {
        char *b = bufs[slot++ & 7];
        snprintf(b, 4096, "%.2000s/%.2000s", dir, rel);
        if (stat(b, &st) == 0) return b;
    }
    const char *req = getenv("AE_REQUIRE_SHARED");
    if (req && req[0] == '1') {
        printf("FAIL %s: %s/%s not found and AE_REQUIRE_SHARED=1\n", what,
               dir ? dir : "../shared", rel);
        fflush(stdout);
        exit(1);
    }
    printf("SKIP %s: %s/%s not found (needs the project's ../shared folder)\n", what,
           dir ? dir : "../shared", rel);
    fflush(stdout);
    g_skips++;
    return NULL;
}

int ae_test_finish(int failures) {
    if (failures) return 1;
    if (g_skips) {
        printf("%d check(s) skipped: ../shared not found; reporting the program as skipped\n",
               g_skips);
        return 77;
    }
    return 0;
}

int ae_test_try_gpu(const ae_backend **be, int poison, char *why, size_t cap) {
#ifndef AE_HAVE_CUDA
    (void)be;
    (void)poison;
    snprintf(why, cap, "this build has no CUDA backend (AE_HAVE_CUDA is not defined; configure "
             "with a CUDA toolkit, -DAE_CUDA=ON)");
    return 77;
#else
    if (ae_cuda_device_count() <= 0) {
        snprintf(why, cap, "ae_cuda_device_count() = 0 (no CUDA driver or device here)");
        return 77;
    }
    if (poison) setenv("AE_CUDA_POISON", "1", 1); // read when the backend opens
    ae_status st = ae_backend_open("cuda", be);
    if (st == AE_OK) return 0;
    snprintf(why, cap, "ae_backend_open(\"cuda\"): %s", ae_last_error());
    return st == AE_ERR_UNSUPPORTED ? 77 : 1; // unsupported: e.g. a GPU too old
#endif
}

int ae_test_open_gpu(const ae_backend **be, int poison) {
    char why[512];
    int rc = ae_test_try_gpu(be, poison, why, sizeof why);
    if (rc == 1) {
        printf("FAIL: %s\n", why);
    } else if (rc == 77) {
        const char *req = getenv("AE_REQUIRE_GPU");
        if (req && req[0] == '1') {
            printf("FAIL: AE_REQUIRE_GPU=1 but %s\n", why);
            return 1;
        }
        printf("SKIP no GPU: %s\n", why);
    }
    return rc;
}

int ae_test_gpu_run(const ae_test_gpu_group *g, const char *name, const struct CMUnitTest *tests,
                    size_t n) {
    int rc = ae_test_open_gpu(g->gpu, g->poison);
    if (rc) return rc;
    if (g->tmp && !(*g->tmp = ae_test_tmpdir())) {
        printf("FAIL: cannot create a temporary folder\n");
        rc = 1;
    }
    if (!rc && g->before) rc = g->before();
    if (!rc) rc = ae_test_finish(_cmocka_run_group_tests(name, tests, n, g->setup, g->teardown));
    if (g->tmp && *g->tmp) {
        ae_test_rmtree(*g->tmp);
        free(*g->tmp);
        *g->tmp = NULL;
    }
    ae_backend_close(*g->gpu);
    *g->gpu = NULL;
    return rc;
}

ae_status ae_test_eval_student(ae_model *m, ae_attn_kind target, int init_teacher) {
    ae_student_spec gateswa = {.target = AE_ATTN_GATESWA, .init_teacher = init_teacher, .seed = 3,
                               .window = 8, .full_every = 2, .gate = AE_GATE_ELEMENTWISE};
    ae_student_spec mla = {.target = AE_ATTN_MLA, .init_teacher = init_teacher, .seed = 5,
                           .kv_lora_rank = 32, .qk_rope_dim = 8};
    ae_init_report rep;
    return ae_student_make(m, target == AE_ATTN_MLA ? &mla : &gateswa, &rep);
}

char *ae_test_tmpdir(void) {
    char tmpl[] = "/tmp/ae-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ae_test_rmtree(const char *dir) {
    if (dir) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int ae_test_prepare_tokens(const char *model_rel, char **dir, char **tokens) {
    *dir = ae_test_tmpdir();
    *tokens = *dir ? ae_path_join(*dir, "train.tok") : NULL;
    if (!*tokens) return -1;
    const char *args[] = {"prepare-data", "--model", ae_test_src(model_rel), "--out", *tokens,
                          ae_test_src("data/sample.txt"), NULL};
    char *err = NULL;
    int rc = ae_test_run_cli(args, NULL, NULL, &err);
    if (rc != 0) fprintf(stderr, "prepare-data failed: %s\n", err ? err : "");
    free(err);
    return rc;
}

char *ae_test_folder_state(const char *dir, const char *const *files, size_t *len) {
    size_t n_all = 0;
    char *all = calloc(1, 1);
    for (size_t i = 0; all && files[i]; i++) {
        char *p = ae_path_join(dir, files[i]), *buf = NULL;
        size_t n = 0;
        if (!p || ae_file_read_all(p, &buf, &n) != AE_OK) n = 0;
        char *grown = realloc(all, n_all + n + 64 + strlen(files[i]));
        if (!grown) {
            free(all);
            all = NULL;
        } else {
            all = grown;
            n_all += (size_t)sprintf(all + n_all, "\n== %s %zu\n", files[i], n);
            if (n) memcpy(all + n_all, buf, n);
            n_all += n;
        }
        free(buf);
        free(p);
    }
    *len = all ? n_all : 0;
    return all;
}

int ae_test_same_state(const char *a, size_t na, const char *b, size_t nb) {
    return a && b && na == nb && memcmp(a, b, na) == 0;
}

int ae_test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (n + 1 >= cap) b = realloc(b, cap *= 2);
        ssize_t r = read(fd, b + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    b[n] = '\0';
    return b;
}

int ae_test_run_cli(const char *const *args, const char *stdin_text, char **out, char **err) {
    char outp[] = "/tmp/ae-cli-out-XXXXXX", errp[] = "/tmp/ae-cli-err-XXXXXX";
    char inp[] = "/tmp/ae-cli-in-XXXXXX";
    int fo = mkstemp(outp), fe = mkstemp(errp), fi = mkstemp(inp);
    if (stdin_text) {
        size_t len = strlen(stdin_text);
        if (write(fi, stdin_text, len) != (ssize_t)len) return -1;
        lseek(fi, 0, SEEK_SET);
    }
    int argc = 0;
    while (args[argc]) argc++;
    char **argv = calloc((size_t)argc + 2, sizeof *argv);
    argv[0] = (char *)ae_test_cli_path();
    for (int i = 0; i < argc; i++) argv[i + 1] = (char *)args[i];
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(ae_test_cli_path(), argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    free(argv);
    lseek(fo, 0, SEEK_SET);
    lseek(fe, 0, SEEK_SET);
    char *o = slurp_fd(fo), *e = slurp_fd(fe);
    close(fo);
    close(fe);
    close(fi);
    unlink(outp);
    unlink(errp);
    unlink(inp);
    if (out) *out = o;
    else free(o);
    if (err) *err = e;
    else free(e);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

ae_test_cli_result ae_test_cli(const char *const *args) {
    ae_test_cli_result r;
    r.rc = ae_test_run_cli(args, NULL, &r.out, &r.err);
    return r;
}

void ae_test_fill_normal(float *x, size_t n, float scale, ae_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = scale * ae_rng_normal(rng);
}

double ae_test_rel_err(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

double *ae_test_to_double(const float *x, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    if (!d) abort();
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

int ae_test_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

// ---- robustness catalogue

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f); // other bytes as they are (the script reads invalid UTF-8 too)
    }
    fputc('"', f);
}

void ae_test_catalogue_at(const char *file, const char *section, const char *input,
                          const char *message) {
    const char *path = getenv("AE_CATALOGUE");
    if (!path || !*path) return;
    // one line per record, written with one write(2) on an O_APPEND descriptor, so that test
    // programs run side by side do not interleave their records
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return;
    fputs("{\"file\": ", m);
    json_str(m, file);
    fputs(", \"section\": ", m);
    json_str(m, section);
    fputs(", \"input\": ", m);
    json_str(m, input);
    fputs(", \"message\": ", m);
    json_str(m, message);
    fputs("}\n", m);
    fclose(m);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (write(fd, buf, len) != (ssize_t)len) fprintf(stderr, "AE_CATALOGUE: short write\n");
        close(fd);
    }
    free(buf);
}

void ae_test_catalogue_cli_at(const char *file, const char *section, const char *const *args,
                              const char *note, const char *message) {
    if (!getenv("AE_CATALOGUE")) return;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return;
    fputs("`attnedit", m);
    for (int i = 0; args[i]; i++) {
        const char *a = args[i];
        int plain = *a != '\0';
        for (const char *p = a; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+",
                        *p))
                plain = 0;
        if (plain) {
            fprintf(m, " %s", a);
        } else { // single quotes, a ' written as '\''
            fputs(" '", m);
            for (const char *p = a; *p; p++) *p == '\'' ? fputs("'\\''", m) : fputc(*p, m);
            fputc('\'', m);
        }
    }
    fputc('`', m);
    if (note) fprintf(m, ": %s", note);
    fclose(m);
    ae_test_catalogue_at(file, section, buf, message);
    free(buf);
}

double ae_test_run_number(const char *dir, const char *obj, const char *key) {
    char *p = ae_path_join(dir, "conversion.json"), *text = NULL;
    size_t n;
    double x = NAN;
    if (p && ae_file_read_all(p, &text, &n) == AE_OK) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, obj), key);
        if (cJSON_IsNumber(v)) x = v->valuedouble;
        cJSON_Delete(j);
    }
    free(text);
    free(p);
    return x;
}

// dir/metrics.jsonl (caller frees), NULL when absent.
static char *metrics_text(const char *dir) {
    char *p = ae_path_join(dir, "metrics.jsonl"), *text = NULL;
    size_t n;
    if (!p || ae_file_read_all(p, &text, &n) != AE_OK) text = NULL;
    free(p);
    return text;
}

// The records (lines) of a metrics.jsonl text (NULL: none).
static int metric_lines(const char *text) {
    int lines = 0;
    for (const char *q = text; q && *q; lines++) {
        q = strchr(q, '\n');
        q = q ? q + 1 : NULL;
    }
    return lines;
}

int ae_test_metric_records(const char *dir) {
    char *text = metrics_text(dir);
    const int lines = metric_lines(text);
    free(text);
    return lines;
}

double ae_test_metric(const char *dir, int k, const char *key) {
    char *text = metrics_text(dir);
    const int lines = metric_lines(text), want = k < 0 ? lines + k : k;
    double x = NAN;
    char *line = text;
    for (int i = 0; i < want && line; i++) {
        line = strchr(line, '\n');
        if (line) line++;
    }
    if (text && want >= 0 && want < lines && line) {
        char *eol = strchr(line, '\n');
        if (eol) *eol = '\0';
        cJSON *j = cJSON_Parse(line);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
        if (cJSON_IsNumber(v)) x = v->valuedouble;
        cJSON_Delete(j);
    }
    free(text);
    return x;
}

// ---- host arrays

float ae_test_bf16(float x) { return ae_bf16_to_f32(ae_f32_to_bf16(x)); }

void ae_test_round_to(float *x, size_t n, ae_dtype dt) {
    if (dt == AE_DT_BF16)
        for (size_t i = 0; i < n; i++) x[i] = ae_test_bf16(x[i]);
}

float *ae_test_floats(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    return p;
}

float *ae_test_floats_copy(const float *x, size_t n) {
    float *p = ae_test_floats(n);
    memcpy(p, x, sizeof(float) * n);
    return p;
}

float *ae_test_normal(ae_rng *r, size_t n, float scale, ae_dtype dt) {
    float *p = ae_test_floats(n);
    ae_test_fill_normal(p, n, scale, r);
    ae_test_round_to(p, n, dt);
    return p;
}

int32_t *ae_test_routing(ae_rng *r, int T, int K, int E, int skip) {
    int32_t *idx = malloc(sizeof(int32_t) * ((size_t)T * K + 1));
    int *perm = malloc(sizeof(int) * ((size_t)E + 1));
    assert_non_null(idx), assert_non_null(perm);
    const int n = skip >= 0 ? E - 1 : E; // the experts to draw from
    for (int t = 0; t < T; t++) {
        for (int e = 0; e < n; e++) perm[e] = skip >= 0 && e >= skip ? e + 1 : e;
        for (int k = 0; k < K; k++) {
            int j = k + (int)(ae_rng_u64(r) % (uint64_t)(n - k)), tmp = perm[k];
            perm[k] = perm[j], perm[j] = tmp;
            idx[(size_t)t * K + k] = perm[k];
        }
    }
    free(perm);
    return idx;
}

// ---- the eval tests' texts

static const char k_doc_sep[] = "<|endoftext|>";

size_t ae_test_cut_at_line(const char *s, size_t len, size_t max) {
    size_t n = len < max ? len : max;
    while (n > 0 && s[n - 1] != '\n') n--;
    return n;
}

char *ae_test_sample_docs(size_t max, size_t *len) {
    char *sample = NULL;
    size_t sl, ns = strlen(k_doc_sep);
    if (ae_file_read_all(ae_test_src("data/sample.txt"), &sample, &sl) != AE_OK) return NULL;
    char *second = strstr(sample, k_doc_sep);
    if (!second) {
        free(sample);
        return NULL;
    }
    second += ns;
    size_t n1 = ae_test_cut_at_line(sample, (size_t)(second - sample), max);
    size_t n2 = ae_test_cut_at_line(second, sl - (size_t)(second - sample), max);
    char *text = malloc(n1 + ns + n2 + 1);
    if (text) {
        memcpy(text, sample, n1);
        memcpy(text + n1, k_doc_sep, ns);
        memcpy(text + n1 + ns, second, n2);
        text[n1 + ns + n2] = '\0';
        *len = n1 + ns + n2;
    }
    free(sample);
    return text;
}

void ae_test_each_doc(const ae_tokenizer *tok, const char *text, size_t len, ae_test_doc_fn doc,
                      void *ctx) {
    char *copy = malloc(len + 1); // NUL-terminated for strstr
    assert_non_null(copy);
    memcpy(copy, text, len);
    copy[len] = '\0';
    for (char *p = copy;;) {
        char *hit = strstr(p, k_doc_sep);
        size_t dl = hit ? (size_t)(hit - p) : strlen(p);
        int32_t *ids;
        size_t n;
        assert_int_equal(ae_tokenizer_encode(tok, p, dl, &ids, &n), AE_OK);
        doc(ids, n, ctx);
        free(ids);
        if (!hit) break;
        p = hit + strlen(k_doc_sep);
    }
    free(copy);
}

double ae_test_json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number %s in the JSON", key);
    return v->valuedouble;
}

// ---- models and files on disk

char *ae_test_path_in(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

ae_model *ae_test_load_cpu(const char *dir) {
    ae_model *m = NULL;
    if (ae_model_load(dir, ae_backend_cpu(), &m) != AE_OK) fail_msg("%s: %s", dir, ae_last_error());
    return m;
}

char *ae_test_save_student(const char *teacher, const ae_student_spec *spec, const char *dir,
                           const char *name) {
    ae_model *m = ae_test_load_cpu(teacher);
    ae_init_report rep;
    if (ae_student_make(m, spec, &rep) != AE_OK) fail_msg("%s", ae_last_error());
    char *out = ae_test_path_in(dir, name);
    ae_save_opts so = {.src_dir = teacher, .force = 1};
    if (ae_model_save(m, out, &so) != AE_OK) fail_msg("%s", ae_last_error());
    ae_model_free(m);
    return out;
}

cJSON *ae_test_read_json(const char *dir, const char *name) {
    char *p = ae_test_path_in(dir, name), *text;
    size_t len;
    assert_int_equal(ae_file_read_all(p, &text, &len), AE_OK);
    cJSON *o = cJSON_Parse(text);
    assert_non_null(o);
    free(text);
    free(p);
    return o;
}

void ae_test_write_json(const char *dir, const char *name, const cJSON *o) {
    char *p = ae_test_path_in(dir, name), *text = cJSON_Print(o);
    assert_int_equal(ae_test_write_file(p, text, strlen(text)), 0);
    free(text);
    free(p);
}

char *ae_test_leading_dense_moe(const char *dir, const char *name, int norm_topk_prob) {
    const char *fx = ae_test_src("tests/fixtures/models/moe_sparse_step2_untied");
    char *cfgdir = ae_test_path_in(dir, "moe2-config");
    cJSON *o = ae_test_read_json(fx, "config.json");
    cJSON_ReplaceItemInObject(o, "num_hidden_layers", cJSON_CreateNumber(2));
    cJSON_ReplaceItemInObject(o, "norm_topk_prob", cJSON_CreateBool(norm_topk_prob));
    mkdir(cfgdir, 0755);
    ae_test_write_json(cfgdir, "config.json", o);
    cJSON_Delete(o);
    ae_model *m = ae_test_load_cpu(fx);
    int L = m->cfg.num_hidden_layers;
    m->cfg.num_hidden_layers = 2; // the first two layers' tensors
    char *out = ae_test_path_in(dir, name);
    ae_save_opts so = {.src_dir = cfgdir, .force = 1};
    ae_status st = ae_model_save(m, out, &so);
    m->cfg.num_hidden_layers = L;
    ae_model_free(m);
    if (st != AE_OK) fail_msg("%s", ae_last_error());
    ae_test_rmtree(cfgdir);
    free(cfgdir);
    return out;
}

void ae_test_assert_no_temp(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) fail_msg("temp entry left: %s/%s", dir, e->d_name);
    closedir(d);
}

void ae_test_write_fails_beyond(size_t limit, ae_status (*attempt)(void *ctx), void *ctx) {
    fflush(stdout); // the child's exit must not print the parent's buffered lines again
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
        setrlimit(RLIMIT_FSIZE, &rl);
        ae_status st = attempt(ctx);
        if (st != AE_OK) fprintf(stderr, "(expected) %s\n", ae_last_error());
        _exit(st == AE_OK ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}
