// Hostile-user robustness of the commands that read and write files: an output that is, holds
// or lies inside one of its inputs; target options given to the other target; inputs that never
// end or are too large; folders given as files; temp files left by killed runs. Every refusal
// must be one message naming the path or option, a non-zero exit below 128 (no crash), nothing
// on stdout and nothing half-written.
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/file.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define GIB (1ull << 30)

// ---------------------------------------------------------------------------------------------
// running the CLI: like ae_test_run_cli, plus a time limit, an address-space limit (so that an
// unbounded read fails instead of eating the machine), an optional file-size limit and stdin fd.

typedef struct {
    int rc;
    char *out, *err;
} cli_result;

typedef struct {
    int stdin_fd;     // -1: /dev/null
    long long fsize;  // RLIMIT_FSIZE for the child (0: none)
} run_opts;

static pid_t spawn_cli(const char *const *args, const run_opts *ro, int fo, int fe) {
    int argc = 0;
    while (args[argc]) argc++;
    char **argv = calloc((size_t)argc + 2, sizeof *argv);
    assert_non_null(argv);
    argv[0] = (char *)AE_CLI_PATH;
    for (int i = 0; i < argc; i++) argv[i + 1] = (char *)args[i];
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int in = ro && ro->stdin_fd >= 0 ? ro->stdin_fd : open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        if (ro && ro->fsize > 0) {
            struct rlimit rl = {(rlim_t)ro->fsize, (rlim_t)ro->fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
#if !defined(__SANITIZE_ADDRESS__)
        struct rlimit as = {(rlim_t)4 * GIB, (rlim_t)4 * GIB};
        setrlimit(RLIMIT_AS, &as);
#endif
        alarm(120); // survives exec: a hang ends as SIGALRM, reported as 128 + 14
        execv(AE_CLI_PATH, argv);
        _exit(127);
    }
    free(argv);
    assert_true(pid > 0);
    return pid;
}

static char *slurp(int fd) {
    lseek(fd, 0, SEEK_SET);
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

static int wait_rc(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

static cli_result run_cli_opts(const char *const *args, const run_opts *ro) {
    char outp[] = "/tmp/ae-rob-out-XXXXXX", errp[] = "/tmp/ae-rob-err-XXXXXX";
    int fo = mkstemp(outp), fe = mkstemp(errp);
    assert_true(fo >= 0 && fe >= 0);
    unlink(outp);
    unlink(errp);
    cli_result r;
    r.rc = wait_rc(spawn_cli(args, ro, fo, fe));
    r.out = slurp(fo);
    r.err = slurp(fe);
    close(fo);
    close(fe);
    return r;
}

static cli_result run_cli(const char *const *args) { return run_cli_opts(args, NULL); }

static void result_free(cli_result *r) {
    free(r->out);
    free(r->err);
}

static void dump(const char *const *args, const cli_result *r) {
    printf("--- attnedit");
    for (int i = 0; args[i]; i++) printf(" %s", args[i]);
    printf("\n--- exit %d\n--- stdout:\n%s\n--- stderr:\n%s\n", r->rc, r->out, r->err);
    fflush(stdout);
}

// A clean failure: exit in [1, 127], empty stdout, "attnedit" on stderr with every non-NULL key.
static int failed_cleanly(const cli_result *r, const char *k1, const char *k2, const char *k3) {
    return r->rc > 0 && r->rc < 128 && r->out[0] == '\0' && strstr(r->err, "attnedit") &&
           (!k1 || strstr(r->err, k1)) && (!k2 || strstr(r->err, k2)) &&
           (!k3 || strstr(r->err, k3)) && !strstr(r->err, "Sanitizer") &&
           !strstr(r->err, "runtime error");
}

// The robustness catalogue (ae_test_catalogue): the kind of input each test tries, and an
// optional note on the next refusal (what the command line does not show).
static const char *g_section, *g_note;

static void expect_fail_opts(const char *const *args, const run_opts *ro, const char *k1,
                             const char *k2, const char *k3) {
    cli_result r = run_cli_opts(args, ro);
    int ok = failed_cleanly(&r, k1, k2, k3);
    if (ok) {
        char note[128];
        snprintf(note, sizeof note, "%s", g_note ? g_note : "");
        if (ro && ro->stdin_fd >= 0) snprintf(note, sizeof note, "stdin: a pipe that never ends");
        if (ro && ro->fsize > 0)
            snprintf(note, sizeof note, "under a file-size limit (ulimit -f) of %lld KiB",
                     ro->fsize / 1024);
        ae_test_catalogue_cli(g_section, args, note[0] ? note : NULL, r.err);
    }
    g_note = NULL;
    if (!ok) {
        dump(args, &r);
        printf("expected: exit in [1, 127], empty stdout, stderr with '%s', '%s' and '%s'\n",
               k1 ? k1 : "", k2 ? k2 : "", k3 ? k3 : "");
    }
    result_free(&r);
    assert_true(ok);
}

static void expect_fail(const char *const *args, const char *k1, const char *k2, const char *k3) {
    expect_fail_opts(args, NULL, k1, k2, k3);
}

static void expect_ok(const char *const *args) {
    cli_result r = run_cli(args);
    if (r.rc != 0) dump(args, &r);
    result_free(&r);
    assert_int_equal(r.rc, 0);
}

// ---------------------------------------------------------------------------------------------
// files

static char *join(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

static void write_str(const char *path, const char *s) {
    assert_int_equal(ae_test_write_file(path, s, strlen(s)), 0);
}

static char *read_file(const char *path, size_t *len) {
    char *buf;
    if (ae_file_read_all(path, &buf, len) != AE_OK) fail_msg("%s", ae_last_error());
    return buf;
}

static void copy_file(const char *src, const char *dst) {
    size_t len;
    char *buf = read_file(src, &len);
    assert_int_equal(ae_test_write_file(dst, buf, len), 0);
    free(buf);
}

// A writable copy of the micro model in dir/name (caller frees the path).
static char *copy_micro(const char *dir, const char *name) {
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors",
                                  "tokenizer.json", "tokenizer_config.json"};
    char *m = join(dir, name);
    assert_int_equal(mkdir(m, 0755), 0);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, MICRO "/%s", files[i]);
        char *dst = join(m, files[i]);
        copy_file(ae_test_src(rel), dst);
        free(dst);
    }
    return m;
}

// 1 if the two files have the same bytes.
static int same_bytes(const char *a, const char *b) {
    size_t la, lb;
    char *x = read_file(a, &la), *y = read_file(b, &lb);
    int same = la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

// Text of about `bytes` bytes in paragraphs (documents for prepare-data).
static void write_text_of(const char *path, size_t bytes) {
    static const char para[] =
        "The Time Traveller (for so it will be convenient to speak of him) was expounding a "
        "recondite matter to us. His grey eyes shone and twinkled, and his usually pale face "
        "was flushed and animated.\n\n";
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t n = 0; n < bytes; n += sizeof para - 1) fputs(para, f);
    assert_int_equal(fclose(f), 0);
}

// Names in dir that start with prefix (count).
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d) closedir(d);
    return n;
}

// A pid that is certainly not running any more (a child that exited and was reaped).
static pid_t dead_pid(void) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    assert_true(p > 0);
    waitpid(p, NULL, 0);
    return p;
}

// ---------------------------------------------------------------------------------------------
// 1. outputs that are, hold or lie inside an input

static void test_prepare_out_is_input(void **state) {
    (void)state;
    g_section = "prepare-data: an output that is, holds or lies inside an input";
    char *dir = ae_test_tmpdir();
    char *m = copy_micro(dir, "model");
    char *in = join(dir, "in.txt"), *keep = join(dir, "keep.txt"), *hl = join(dir, "hl.txt");
    char *dotted = join(dir, "sub/../in.txt"), *sub = join(dir, "sub"), *other = join(dir, "o.tok");
    char *other2 = join(dir, "./o.tok");
    assert_int_equal(mkdir(sub, 0755), 0);
    write_str(in, "Some text to tokenise.\n\nAnother document.\n");
    copy_file(in, keep);
    assert_int_equal(link(in, hl), 0); // a hard link: the same file under another name

    expect_fail(ARGS("prepare-data", "--model", m, "--out", in, in), "--out", in, "same");
    expect_fail(ARGS("prepare-data", "--model", m, "--out", dotted, in), dotted, in, "same");
    g_note = "hl.txt is a hard link to in.txt";
    expect_fail(ARGS("prepare-data", "--model", m, "--out", hl, in), hl, in, "same");
    expect_fail(ARGS("prepare-data", "--model", m, "--out", other, "--valid-fraction", "0.5",
                     "--valid-out", in, in),
                "--valid-out", in, "same");
    expect_fail(ARGS("prepare-data", "--model", m, "--out", other, "--valid-fraction", "0.5",
                     "--valid-out", other2, in),
                "--valid-out", other2, "same");
    // --out inside the model folder, and --out the model folder itself
    char *inmodel = join(m, "tokens.tok");
    expect_fail(ARGS("prepare-data", "--model", m, "--out", inmodel, in), inmodel, "--model",
                "inside");
    free(inmodel);
    expect_fail(ARGS("prepare-data", "--model", m, "--out", m, in), "--model", "same", NULL);
    // an input that is the default validation file (--out + ".valid")
    char *v = join(dir, "o.tok.valid");
    write_str(v, "Text of a file that would be overwritten.\n\nMore.\n");
    g_note = "the input is the default validation output, --out + .valid";
    expect_fail(ARGS("prepare-data", "--model", m, "--out", other, "--valid-fraction", "0.5", v),
                v, "same", NULL);
    assert_true(same_bytes(in, keep));
    assert_true(same_bytes(in, hl));
    assert_int_equal(ae_test_count_entries(dir), 6); // model, in, keep, hl, sub, o.tok.valid
    assert_int_equal(ae_test_count_entries(m), 5);
    expect_ok(ARGS("prepare-data", "--model", m, "--quiet", "--out", other, in)); // still works
    free(v);
    free(m);
    free(in);
    free(keep);
    free(hl);
    free(dotted);
    free(sub);
    free(other);
    free(other2);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_convert_out_is_input(void **state) {
    (void)state;
    g_section = "convert: an output that is, holds or lies inside an input";
    char *dir = ae_test_tmpdir();
    char *t = copy_micro(dir, "teacher");
    char *cfg = join(t, "config.json"), *cfg_keep = join(dir, "config.keep");
    copy_file(cfg, cfg_keep);
    char *tdot = join(dir, "teacher/."), *inside = join(t, "student");
    char *datadir = join(dir, "data"), *tok = join(dir, "data/train.tok");
    assert_int_equal(mkdir(datadir, 0755), 0);
    expect_ok(ARGS("prepare-data", "--model", t, "--quiet", "--out", tok,
                   ae_test_src("data/sample.txt")));

    const char *mla[] = {"--target", "mla"};
    expect_fail(ARGS("convert", "--teacher", t, mla[0], mla[1], "--out", t, "--force"), "--out",
                "--teacher", "same");
    expect_fail(ARGS("convert", "--teacher", t, mla[0], mla[1], "--out", tdot, "--force"), tdot,
                "--teacher", "same");
    expect_fail(ARGS("convert", "--teacher", t, mla[0], mla[1], "--out", dir, "--force"), dir,
                "--teacher", "contains");
    expect_fail(ARGS("convert", "--teacher", t, mla[0], mla[1], "--out", inside), inside,
                "--teacher", "inside");
    expect_fail(ARGS("convert", "--teacher", t, mla[0], mla[1], "--data", tok, "--out", datadir,
                     "--force"),
                datadir, "--data", "contains");
    expect_fail(ARGS("convert", "--teacher", t, mla[0], mla[1], "--data", tok, "--out", tok,
                     "--force"),
                tok, "--data", "same");
    assert_true(same_bytes(cfg, cfg_keep));
    assert_int_equal(ae_test_count_entries(t), 5);
    assert_int_equal(ae_test_count_entries(datadir), 1);
    assert_int_equal(ae_test_count_entries(dir), 3); // teacher, config.keep, data

    // a sibling output is fine
    char *ok = join(dir, "student");
    expect_ok(ARGS("convert", "--teacher", t, mla[0], mla[1], "--data", tok, "--out", ok));
    assert_true(ae_path_is_dir(ok));
    free(ok);
    free(cfg);
    free(cfg_keep);
    free(tdot);
    free(inside);
    free(datadir);
    free(tok);
    free(t);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 2. options of the other target

static void test_convert_target_options(void **state) {
    (void)state;
    g_section = "convert: options of the other target";
    char *dir = ae_test_tmpdir(), *out = join(dir, "s");
    const char *t = ae_test_src(MICRO);
    static const char *const swa[][2] = {{"--window", "64"}, {"--full-every", "2"},
                                         {"--full-layers", "1"}, {"--gate", "head"},
                                         {"--sinks", NULL}};
    static const char *const mla[][2] = {{"--kv-lora-rank", "32"}, {"--q-lora-rank", "0"},
                                         {"--qk-rope-dim", "8"}, {"--qk-nope-dim", "8"},
                                         {"--v-head-dim", "16"}};
    for (size_t i = 0; i < 5; i++) {
        const char *v = swa[i][1];
        if (v) expect_fail(ARGS("convert", "--teacher", t, "--target", "mla", swa[i][0], v, "--out",
                                out), swa[i][0], "mla", NULL);
        else expect_fail(ARGS("convert", "--teacher", t, "--target", "mla", swa[i][0], "--out",
                              out), swa[i][0], "mla", NULL);
        // also when the option comes before --target
        if (v) expect_fail(ARGS("convert", swa[i][0], v, "--teacher", t, "--target", "mla", "--out",
                                out), swa[i][0], "mla", NULL);
        expect_fail(ARGS("convert", "--teacher", t, "--target", "gateswa", mla[i][0], mla[i][1],
                         "--out", out), mla[i][0], "gateswa", NULL);
    }
    assert_int_equal(ae_test_count_entries(dir), 0);
    // the matching target takes them
    expect_ok(ARGS("convert", "--teacher", t, "--target", "gateswa", "--window", "64", "--gate",
                   "head", "--sinks", "--full-every", "2", "--out", out));
    ae_test_rmtree(out);
    expect_ok(ARGS("convert", "--teacher", t, "--target", "mla", "--kv-lora-rank", "32",
                   "--qk-rope-dim", "8", "--out", out));
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 3. inputs read whole are bounded (1 GiB)

static void test_read_bounded(void **state) {
    (void)state;
    g_section = "inputs read whole: bounded to 1 GiB";
    const char *m = ae_test_src(MICRO);
    char *dir = ae_test_tmpdir(), *big = join(dir, "big.txt"), *out = join(dir, "o.tok");
    // a sparse file one byte over the limit (no disk used)
    int fd = open(big, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)(GIB + 1)), 0);
    close(fd);

    expect_fail(ARGS("tokenize", "--model", m, "--file", "/dev/zero"), "/dev/zero", NULL, NULL);
    g_note = "big.txt: 1 GiB + 1 byte";
    expect_fail(ARGS("tokenize", "--model", m, "--file", big), big, "1 GiB", NULL);
    g_note = "big.txt: 1 GiB + 1 byte";
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", big), big, "1 GiB", NULL);
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", "/dev/zero"), "/dev/zero", NULL, NULL);
    expect_fail(ARGS("eval", "kl", "--teacher", m, "--model", m, "--file", "/dev/zero"),
                "/dev/zero", NULL, NULL);
    expect_fail(ARGS("prepare-data", "--model", m, "--out", out, "/dev/zero"), "/dev/zero", NULL,
                NULL);
    assert_int_equal(ae_test_count_entries(dir), 1);

    // a pipe that never ends: read up to the limit, then one message
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t writer = fork();
    if (writer == 0) {
        close(p[0]);
        static char chunk[1 << 16];
        memset(chunk, 'a', sizeof chunk);
        while (write(p[1], chunk, sizeof chunk) > 0) {
        }
        _exit(0);
    }
    close(p[1]);
    run_opts ro = {p[0], 0};
    expect_fail_opts(ARGS("tokenize", "--model", m, "--file", "/dev/stdin"), &ro, "/dev/stdin",
                     "1 GiB", NULL);
    close(p[0]); // the writer gets SIGPIPE
    waitpid(writer, NULL, 0);

    // a small file and a pipe that ends are read as before
    char *small = join(dir, "small.txt");
    write_str(small, "hello world");
    size_t len;
    char *buf = read_file(small, &len);
    assert_int_equal(len, 11);
    assert_string_equal(buf, "hello world");
    free(buf);
    free(small);
    free(big);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 4. a folder where a file is expected

static void test_folder_as_file(void **state) {
    (void)state;
    g_section = "a folder where a file is expected";
    const char *m = ae_test_src(MICRO);
    char *dir = ae_test_tmpdir(), *d = join(dir, "folder"), *out = join(dir, "s");
    assert_int_equal(mkdir(d, 0755), 0);
    expect_fail(ARGS("convert", "--teacher", m, "--target", "mla", "--data", d, "--stage1-tokens",
                     "100", "--out", out),
                d, "is a folder", "prepare-data");
    expect_fail(ARGS("convert", "--teacher", m, "--target", "mla", "--data", d, "--out", out), d,
                "is a folder", NULL);
    expect_fail(ARGS("convert", "--teacher", m, "--target", "mla", "--data", "/dev/zero", "--out",
                     out),
                "/dev/zero", "--data", NULL);
    expect_fail(ARGS("tokenize", "--model", m, "--file", d), d, "is a folder", NULL);
    expect_fail(ARGS("eval", "ppl", "--model", m, "--file", d), d, "is a folder", NULL);
    expect_fail(ARGS("eval", "kl", "--teacher", m, "--model", m, "--file", d), d, "is a folder",
                NULL);
    expect_fail(ARGS("prepare-data", "--model", m, "--out", out, d), d, "is a folder", NULL);
    expect_fail(ARGS("prepare-data", "--model", m, "--out", d, ae_test_src("data/sample.txt")), d,
                "is a folder", NULL);
    assert_int_equal(ae_test_count_entries(dir), 1);
    assert_int_equal(ae_test_count_entries(d), 0);
    free(d);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------
// 5. temp files of killed runs

// Runs prepare-data on a large input, sends `sig` as soon as its temp file exists, and checks
// that the process died of the signal leaving nothing behind.
static void kill_prepare(const char *dir, const char *in, int sig) {
    char *out = join(dir, "o.tok");
    const char *const *args = ARGS("prepare-data", "--model", ae_test_src(MICRO), "--quiet",
                                   "--out", out, in);
    char errp[] = "/tmp/ae-rob-err-XXXXXX";
    int fe = mkstemp(errp), fo = open("/dev/null", O_WRONLY);
    unlink(errp);
    pid_t pid = spawn_cli(args, NULL, fo, fe);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)pid);
    int seen = 0;
    for (int i = 0; i < 60000 && !seen; i++) { // up to 60 s
        seen = ae_path_exists(tmp);
        if (!seen && waitpid(pid, NULL, WNOHANG) == pid) break;
        if (!seen) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    if (!seen) fail_msg("prepare-data ended before its temp file %s was seen", tmp);
    assert_int_equal(kill(pid, sig), 0);
    int rc = wait_rc(pid);
    char *err = slurp(fe);
    close(fe);
    close(fo);
    if (rc != 128 + sig || count_prefixed(dir, "o.tok") != 0)
        printf("--- signal %d: exit %d, %d o.tok* left, stderr:\n%s\n", sig, rc,
               count_prefixed(dir, "o.tok"), err);
    assert_int_equal(rc, 128 + sig);
    assert_int_equal(count_prefixed(dir, "o.tok"), 0); // neither o.tok nor o.tok.tmp.<pid>
    free(err);
    free(out);
}

static void test_prepare_killed_cleans_up(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *in = join(dir, "in.txt");
    write_text_of(in, 16u << 20); // ~0.5 s of tokenising; killed long before the end
    kill_prepare(dir, in, SIGINT);
    kill_prepare(dir, in, SIGTERM);
    assert_int_equal(ae_test_count_entries(dir), 1);
    free(in);
    ae_test_rmtree(dir);
    free(dir);
}

// A file-size limit (SIGXFSZ): the write fails, the temp file goes, one message names the output.
static void test_prepare_file_size_limit(void **state) {
    (void)state;
    g_section = "prepare-data: the output cannot be written";
    char *dir = ae_test_tmpdir(), *in = join(dir, "in.txt"), *out = join(dir, "o.tok");
    write_text_of(in, 1u << 20); // ~1 MB of token ids
    run_opts ro = {-1, 64 << 10};
    expect_fail_opts(ARGS("prepare-data", "--model", ae_test_src(MICRO), "--quiet", "--out", out,
                          in),
                     &ro, out, "too large", NULL);
    assert_int_equal(ae_test_count_entries(dir), 1);
    free(in);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

// Fills a temp folder with one finished file and one being written, then is killed by the
// signal in *ud while both exist.
static ae_status fill_and_die(void *ud, const char *tmp) {
    char *done = join(tmp, "done.json"), *busy = join(tmp, "busy.bin");
    ae_atomic_file f;
    if (ae_atomic_open(&f, done) != AE_OK || ae_atomic_write(&f, "{}", 2) != AE_OK ||
        ae_atomic_commit(&f) != AE_OK || ae_atomic_open(&f, busy) != AE_OK ||
        ae_atomic_write(&f, "half", 4) != AE_OK || fflush(f.fp) != 0)
        _exit(3);
    raise(*(const int *)ud);
    _exit(4); // not reached
}

// The same for the atomic folder writer (convert's student, checkpoints): a killed writer
// leaves neither its temp folder nor the temp file inside it.
static void test_dir_write_killed_cleans_up(void **state) {
    (void)state;
    static const int sigs[] = {SIGINT, SIGTERM};
    for (size_t k = 0; k < sizeof sigs / sizeof *sigs; k++) {
        char *dir = ae_test_tmpdir(), *out = join(dir, "student");
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            signal(sigs[k], SIG_DFL);
            ae_dir_write_atomic(out, fill_and_die, (void *)&sigs[k]);
            _exit(5);
        }
        assert_true(pid > 0);
        int rc = wait_rc(pid);
        if (rc != 128 + sigs[k] || ae_test_count_entries(dir) != 0)
            printf("signal %d: exit %d, %d entries left in %s\n", sigs[k], rc,
                   ae_test_count_entries(dir), dir);
        assert_int_equal(rc, 128 + sigs[k]);
        assert_int_equal(ae_test_count_entries(dir), 0);
        free(out);
        ae_test_rmtree(dir);
        free(dir);
    }
}

// OUT.tmp.<pid> of a process that is gone is removed by the next run; one of a live process
// (this test) and other names are kept.
static void test_stale_temps_removed(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *in = join(dir, "in.txt"), *out = join(dir, "o.tok");
    write_str(in, "Some text to tokenise.\n\nAnother document.\n");
    char dead[4200], live[4200], other[4200], sdead[4200], sfile[4300];
    snprintf(dead, sizeof dead, "%s.tmp.%ld", out, (long)dead_pid());
    snprintf(live, sizeof live, "%s.tmp.%ld", out, (long)getpid());
    snprintf(other, sizeof other, "%s.tmp.12x", out);
    write_str(dead, "half-written");
    write_str(live, "being written");
    write_str(other, "not a temp file");
    expect_ok(ARGS("prepare-data", "--model", ae_test_src(MICRO), "--quiet", "--out", out, in));
    assert_false(ae_path_exists(dead));
    assert_true(ae_path_exists(live));
    assert_true(ae_path_exists(other));
    assert_true(ae_path_exists(out));

    // the same for folders (convert's student, written through a temp folder)
    char *s = join(dir, "s");
    snprintf(sdead, sizeof sdead, "%s.tmp.%ld", s, (long)dead_pid());
    assert_int_equal(mkdir(sdead, 0755), 0);
    snprintf(sfile, sizeof sfile, "%s/model.safetensors", sdead);
    write_str(sfile, "half-written");
    expect_ok(ARGS("convert", "--teacher", ae_test_src(MICRO), "--target", "mla", "--out", s));
    assert_false(ae_path_exists(sdead));
    assert_true(ae_path_is_dir(s));
    assert_int_equal(ae_test_count_entries(dir), 5); // in.txt, o.tok, live, other, s
    free(s);
    free(in);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_out_is_input),
        cmocka_unit_test(test_convert_out_is_input),
        cmocka_unit_test(test_convert_target_options),
        cmocka_unit_test(test_read_bounded),
        cmocka_unit_test(test_folder_as_file),
        cmocka_unit_test(test_prepare_killed_cleans_up),
        cmocka_unit_test(test_prepare_file_size_limit),
        cmocka_unit_test(test_dir_write_killed_cleans_up),
        cmocka_unit_test(test_stale_temps_removed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
