#define _XOPEN_SOURCE 700
#include "fuzz_util.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

#ifndef AE_FUZZ_NAME
#define AE_FUZZ_NAME "harness"
#endif

static char g_dir[4096];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_tree(const char *p) { nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void cleanup(void) {
    if (g_dir[0]) rm_tree(g_dir);
}

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "\n==FUZZ== %s:%d: broken promise (%s): ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *fz_dir(void) {
    if (g_dir[0]) return g_dir;
    ae_log_set_level(AE_LOG_QUIET);
    const char *base = getenv("AE_FUZZ_TMP");
    if (!base || !*base) base = is_dir("/dev/shm") && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (!base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/aefuzz-%s-XXXXXX", base, AE_FUZZ_NAME);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "fuzz: cannot create a scratch folder in %s: %s\n", base, strerror(errno));
        abort();
    }
    atexit(cleanup);
    return g_dir;
}

const char *fz_path(const char *rel) {
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", fz_dir(), rel);
    return b;
}

void fz_mkdir(const char *rel) {
    const char *p = fz_path(rel);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: mkdir %s: %s\n", p, strerror(errno));
        abort();
    }
}

void fz_write(const char *rel, const void *data, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s", fz_path(rel));
    for (char *s = strchr(path + strlen(fz_dir()) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) abort();
        *s = '/';
    }
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
}

void fz_remove(const char *rel) { rm_tree(fz_path(rel)); }

void fz_begin(void) { ae_error_clear(); }

void fz_check(ae_status st, const char *what) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("AE_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "%s: %s\n", what, st == AE_OK ? "ok" : ae_last_error());
    if (st == AE_OK) return;
    FZ_ASSERT(st > AE_OK && st <= AE_ERR_DEVICE, "%s returned status %d", what, (int)st);
    const char *msg = ae_last_error();
    FZ_ASSERT(msg && *msg && strcmp(msg, "unknown error") != 0,
              "%s failed (%s) without a message", what, ae_status_name(st));
}

const char *fz_src(const char *rel) {
    static char buf[4][4096];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", AE_SOURCE_DIR, rel);
    return b;
}

const char *fz_shared(const char *rel) {
    static char buf[4096];
    const char *env = getenv("AE_SHARED_DIR");
    if (env && *env) snprintf(buf, sizeof buf, "%s/%s", env, rel);
    else snprintf(buf, sizeof buf, "%s/../shared/%s", AE_SOURCE_DIR, rel);
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

char *fz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fz_check_decode_stream(const ae_tokenizer *t, const int32_t *ids, size_t n, const char *text,
                            size_t len) {
    ae_decode_stream ds = {0};
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        char *piece = NULL;
        size_t plen = 0;
        fz_begin();
        ae_status st = i < n ? ae_tokenizer_decode_next(t, &ds, ids[i], &piece, &plen)
                             : ae_tokenizer_decode_flush(t, &ds, &piece, &plen);
        fz_check(st, "ae_tokenizer_decode_next");
        FZ_ASSERT(st == AE_OK, "streaming decode failed where decode succeeded: %s",
                  ae_last_error());
        FZ_ASSERT(at + plen <= len && memcmp(text + at, piece, plen) == 0,
                  "streaming decode differs at byte %zu", at);
        at += plen;
        free(piece);
    }
    FZ_ASSERT(at == len, "streaming decode gave %zu bytes, decode %zu", at, len);
}

ae_tokenizer *fz_load_tokenizer(void) {
    const char *dir = getenv("AE_FUZZ_TOKENIZER");
    if (!dir || !*dir) dir = fz_shared("qwen3-tokenizer");
    if (!dir) dir = fz_src("models/qwen3-micro");
    char path[4096]; // fz_shared's and fz_src's buffers are reused by later calls
    snprintf(path, sizeof path, "%s", dir);
    ae_tokenizer *tok = NULL;
    if (ae_tokenizer_load(path, &tok) != AE_OK) {
        fprintf(stderr, "%s: cannot load %s: %s\n", AE_FUZZ_NAME, path, ae_last_error());
        abort();
    }
    fprintf(stderr, "%s: tokenizer %s (%d ids)\n", AE_FUZZ_NAME, path,
            ae_tokenizer_vocab_size(tok));
    return tok;
}
