// train/data + train/prepare + `attnedit prepare-data`: SHA-256, token files (format and strict
// validation), tokenizer check, deterministic resumable loader, document splitting and the
// validation split, bad input.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "train/data.h"
#include "train/prepare.h"
#include "core/sha256.h"
#include "util/testutil.h"

static ae_tokenizer *g_tok;
static char g_model[4096];

static int setup(void **state) {
    (void)state;
    snprintf(g_model, sizeof g_model, "%s", ae_test_src("models/qwen3-micro"));
    return ae_tokenizer_load(g_model, &g_tok) == AE_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    ae_tokenizer_free(g_tok);
    return 0;
}

// ---------------------------------------------------------------- helpers

typedef struct {
    int32_t *p;
    size_t n, cap;
} idvec;

static void iv_push(idvec *v, int32_t x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->p = realloc(v->p, v->cap * sizeof *v->p);
        assert_non_null(v->p);
    }
    v->p[v->n++] = x;
}

// Appends encode(doc) + eos.
static void iv_doc(idvec *v, const char *doc) {
    int32_t *ids;
    size_t n;
    assert_int_equal(ae_tokenizer_encode(g_tok, doc, strlen(doc), &ids, &n), AE_OK);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) iv_push(v, ids[i]);
    iv_push(v, ae_tokenizer_eos_id(g_tok));
    free(ids);
}

static void expect_ids(const char *path, const idvec *want) {
    ae_tokfile f;
    if (ae_tokfile_open(path, &f) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(f.n_tokens, want->n);
    for (size_t i = 0; i < want->n; i++)
        if ((int32_t)f.ids[i] != want->p[i]) fail_msg("%s: id %zu: %u != %d", path, i, f.ids[i], want->p[i]);
    ae_tokfile_close(&f);
}

static char *join(const char *dir, const char *name) {
    char *p = ae_path_join(dir, name);
    assert_non_null(p);
    return p;
}

static void write_str(const char *path, const char *s) {
    assert_int_equal(ae_test_write_file(path, s, strlen(s)), 0);
}

// Runs `attnedit prepare-data --quiet --model micro ARGS...`; returns the exit status.
static int prepare_cli(const char *const *args, char **out, char **err) {
    const char *argv[32];
    int n = 0;
    argv[n++] = "prepare-data";
    argv[n++] = "--quiet";
    argv[n++] = "--model";
    argv[n++] = g_model;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    return ae_test_run_cli(argv, NULL, out, err);
}

static ae_status prepare_lib(const char *out, const char *valid_out, double frac,
                             const char *const *inputs, int n, ae_prepare_result *r) {
    ae_prepare_opts o = {g_model, out, valid_out, frac, inputs, n, 0};
    return ae_prepare_data(&o, r);
}

// Writes a token file by hand.
static void write_tokfile(const char *path, uint32_t vocab, uint64_t n_header, const uint32_t *ids,
                          size_t n, uint32_t eos, const uint8_t hash[32]) {
    size_t bytes = AE_TOKFILE_HEADER + 4 * n;
    unsigned char *buf = calloc(1, bytes);
    assert_non_null(buf);
    ae_tokfile_header(buf, vocab, n_header, hash, eos);
    memcpy(buf + AE_TOKFILE_HEADER, ids, 4 * n);
    assert_int_equal(ae_test_write_file(path, buf, bytes), 0);
    free(buf);
}

static void hex_of(const void *data, size_t n, char hex[65]) {
    uint8_t d[32];
    ae_sha256(data, n, d);
    ae_sha256_hex(d, hex);
}

// ---------------------------------------------------------------- SHA-256

static void test_sha256_fips_vectors(void **state) {
    (void)state;
    char hex[65];
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // 1,000,000 x 'a', one shot and fed in uneven pieces
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    hex_of(a, n, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    ae_sha256_ctx c;
    ae_sha256_init(&c);
    size_t pos = 0, step = 1;
    while (pos < n) {
        size_t k = step < n - pos ? step : n - pos;
        ae_sha256_update(&c, a + pos, k);
        pos += k;
        step = step * 3 % 997 + 1;
    }
    uint8_t d[32];
    ae_sha256_final(&c, d);
    ae_sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_tokenizer_file_hash(void **state) {
    (void)state;
    char *buf;
    size_t len;
    char *tj = join(g_model, "tokenizer.json");
    assert_int_equal(ae_file_read_all(tj, &buf, &len), AE_OK);
    char want[65], hex[65];
    hex_of(buf, len, want);
    uint8_t h[32];
    assert_int_equal(ae_tokenizer_file_hash(g_model, h, hex), AE_OK);
    assert_string_equal(hex, want);
    assert_int_equal(ae_tokenizer_file_hash("/nonexistent-model", h, NULL), AE_ERR_IO);
    assert_non_null(strstr(ae_last_error(), "/nonexistent-model/tokenizer.json"));
    free(buf);
    free(tj);
}

// ---------------------------------------------------------------- prepare-data

static void test_prepare_endoftext(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *in = join(dir, "a.txt"), *out = join(dir, "a.tok");
    // blank lines inside a document do not split it when the file has <|endoftext|>
    write_str(in, "Hello world.\n\nSame document.\n<|endoftext|>\n  Second doc, 123 é.\n"
                  "<|endoftext|>\n\n<|endoftext|>Third<|endoftext|>\n");
    char *o, *e;
    const char *args[] = {"--out", out, in, NULL};
    int rc = prepare_cli(args, &o, &e);
    if (rc) fail_msg("%s", e);
    assert_non_null(strstr(o, "3 documents"));
    idvec want = {0};
    iv_doc(&want, "Hello world.\n\nSame document.");
    iv_doc(&want, "Second doc, 123 é.");
    iv_doc(&want, "Third");
    expect_ids(out, &want);

    // header fields, read raw
    char *raw;
    size_t len;
    assert_int_equal(ae_file_read_all(out, &raw, &len), AE_OK);
    assert_int_equal(len, 64 + 4 * want.n);
    const unsigned char *p = (const unsigned char *)raw;
    assert_memory_equal(p, "AETOKENS", 8);
    uint32_t u32;
    uint64_t u64;
    memcpy(&u32, p + 8, 4);
    assert_int_equal(u32, 1);
    memcpy(&u32, p + 12, 4);
    assert_int_equal(u32, ae_tokenizer_vocab_size(g_tok));
    memcpy(&u64, p + 16, 8);
    assert_int_equal(u64, want.n);
    uint8_t h[32];
    assert_int_equal(ae_tokenizer_file_hash(g_model, h, NULL), AE_OK);
    assert_memory_equal(p + 24, h, 32);
    memcpy(&u32, p + 56, 4);
    assert_int_equal(u32, 8189); // <|endoftext|> of qwen3-micro
    memcpy(&u32, p + 60, 4);
    assert_int_equal(u32, 0);
    ae_tokfile f;
    assert_int_equal(ae_tokfile_open(out, &f), AE_OK);
    assert_int_equal(f.version, 1);
    assert_int_equal(f.eos_id, 8189);
    assert_memory_equal(f.tokenizer_hash, h, 32);
    assert_int_equal(ae_tokfile_check_model(&f, out, g_model, 8192), AE_OK);
    ae_tokfile_close(&f);
    assert_int_equal(ae_test_count_entries(dir), 2); // no temp file left
    free(raw);
    free(want.p);
    free(o);
    free(e);
    free(in);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_prepare_blank_lines_and_jsonl(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *t = join(dir, "p.txt"), *j = join(dir, "d.jsonl"), *out = join(dir, "o.tok");
    write_str(t, "\xEF\xBB\xBF\n\nPara one, line 1\nline 2\n\n\n  \t\nPara two\r\n\r\nPara three");
    write_str(j, "{\"text\": \"json \\u00e9 doc\\nline\", \"id\": 1}\n\n"
                 "  {\"meta\": [1, 2], \"text\": \"  kept as is  \"}  \r\n"
                 "{\"text\": \"\"}\n"
                 "{\"text\": \"special <|im_start|> inside\"}");
    const char *in[] = {t, j};
    ae_prepare_result r;
    if (prepare_lib(out, NULL, 0, in, 2, &r) != AE_OK) fail_msg("%s", ae_last_error());
    idvec want = {0};
    iv_doc(&want, "Para one, line 1\nline 2");
    iv_doc(&want, "Para two");
    iv_doc(&want, "Para three");
    iv_doc(&want, "json \xc3\xa9 doc\nline");
    iv_doc(&want, "  kept as is  ");
    iv_doc(&want, "special <|im_start|> inside"); // the empty text is skipped
    expect_ids(out, &want);
    assert_int_equal(r.docs[0], 6);
    assert_int_equal(r.tokens[0], want.n);
    assert_int_equal(r.docs[1], 0);
    assert_string_equal(r.valid_path, "");
    free(want.p);
    free(t);
    free(j);
    free(out);
    ae_test_rmtree(dir);
    free(dir);
}

static void test_prepare_valid_split(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *in = join(dir, "docs.jsonl"), *out = join(dir, "t.tok"), *out2 = join(dir, "t2.tok");
    char *vout = join(dir, "v.tok");
    enum { ND = 60 };
    char docs[ND][64];
    size_t cap = 8192, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int i = 0; i < ND; i++) {
        snprintf(docs[i], sizeof docs[i], "Document number %d says %d.", i, i * 7919 % 1000);
        len += (size_t)snprintf(text + len, cap - len, "{\"text\": \"%s\"}\n", docs[i]);
    }
    write_str(in, text);
    free(text);
    const double frac = 0.25;
    idvec want[2] = {{0}, {0}};
    int nvalid = 0;
    for (int i = 0; i < ND; i++) {
        int v = ae_prepare_is_valid_doc((uint64_t)i, frac);
        nvalid += v;
        iv_doc(&want[v], docs[i]);
    }
    assert_true(nvalid > 0 && nvalid < ND);
    assert_int_equal(ae_prepare_is_valid_doc(3, 0), 0);

    // default validation name FILE.valid; summary reports both counts
    char *o, *e;
    const char *args[] = {"--valid-fraction", "0.25", "--out", out, in, NULL};
    int rc = prepare_cli(args, &o, &e);
    if (rc) fail_msg("%s", e);
    char *vdefault = malloc(strlen(out) + 7);
    sprintf(vdefault, "%s.valid", out);
    char expect[256];
    snprintf(expect, sizeof expect, "%d documents", ND - nvalid);
    assert_non_null(strstr(o, expect));
    snprintf(expect, sizeof expect, "%s: %d documents", vdefault, nvalid);
    assert_non_null(strstr(o, expect));
    // exactly the predicted partition: disjoint, covering, in order
    expect_ids(out, &want[0]);
    expect_ids(vdefault, &want[1]);
    free(o);
    free(e);

    // deterministic: a second run (library, --valid-out) gives the same bytes
    ae_prepare_result r;
    const char *ins[] = {in};
    if (prepare_lib(out2, vout, frac, ins, 1, &r) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(r.docs[0] + r.docs[1], ND);
    assert_int_equal(r.docs[1], nvalid);
    assert_string_equal(r.valid_path, vout);
    const char *pairs[2][2] = {{out, out2}, {vdefault, vout}};
    for (int k = 0; k < 2; k++) {
        char *a, *b;
        size_t la, lb;
        assert_int_equal(ae_file_read_all(pairs[k][0], &a, &la), AE_OK);
        assert_int_equal(ae_file_read_all(pairs[k][1], &b, &lb), AE_OK);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, la);
        free(a);
        free(b);
    }
    // the fraction is honoured roughly on many documents
    int cnt = 0;
    for (uint64_t i = 0; i < 20000; i++) cnt += ae_prepare_is_valid_doc(i, 0.1);
    assert_true(cnt > 1800 && cnt < 2200);
    free(want[0].p);
    free(want[1].p);
    free(vdefault);
    free(in);
    free(out);
    free(out2);
    free(vout);
    ae_test_rmtree(dir);
    free(dir);
}

// Each bad input: failure, a message with the expected pieces, no output (and no temp file).
// Through the CLI (exit 1, "attnedit prepare-data: " prefix) when cli is set, else through the
// library (args: --valid-fraction F? --out FILE INPUT...).
static void bad_case(const char *dir, int cli, const char *const *args, const char *want1,
                     const char *want2) {
    int before = ae_test_count_entries(dir);
    char *o = NULL, *e = NULL;
    int rc;
    if (cli) rc = prepare_cli(args, &o, &e);
    else {
        int i = 0;
        double frac = 0;
        if (!strcmp(args[i], "--valid-fraction")) {
            frac = atof(args[i + 1]);
            i += 2;
        }
        assert_string_equal(args[i], "--out");
        const char *outp = args[i + 1];
        i += 2;
        int n = 0;
        while (args[i + n]) n++;
        ae_prepare_result r;
        rc = prepare_lib(outp, NULL, frac, args + i, n, &r) != AE_OK;
        e = strdup(ae_last_error());
    }
    if (rc != 1 || !strstr(e, want1) || (want2 && !strstr(e, want2)))
        fail_msg("rc %d, message: %s (wanted '%s' and '%s')", rc, e, want1, want2 ? want2 : "");
    if (cli) assert_non_null(strstr(e, "attnedit prepare-data: "));
    assert_int_equal(ae_test_count_entries(dir), before);
    free(o);
    free(e);
}

static void test_prepare_bad_input(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *out = join(dir, "out.tok"), *good = join(dir, "good.txt"), *bin = join(dir, "bin.txt");
    char *bj = join(dir, "bad.jsonl"), *nt = join(dir, "notext.jsonl"), *nots = join(dir, "num.jsonl");
    char *empty = join(dir, "empty.txt"), *missing = join(dir, "missing.txt");
    char *arr = join(dir, "arr.jsonl");
    write_str(good, "Some good text.");
    assert_int_equal(ae_test_write_file(bin, "line one\nab\xff\xfe", 12), 0);
    write_str(bj, "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
    write_str(nt, "{\"body\": \"x\"}\n");
    write_str(nots, "{\"text\": \"a\"}\n\n{\"text\": 5}\n");
    write_str(arr, "[\"text\"]\n");
    write_str(empty, "\n\n  \n\t\n");
    {
        const char *a[] = {"--out", out, good, missing, NULL};
        bad_case(dir, 1, a, missing, "does not exist");
    }
    {
        const char *a[] = {"--out", out, good, bin, NULL};
        bad_case(dir, 1, a, bin, "byte offset 11");
    }
    {
        const char *a[] = {"--out", out, bj, NULL};
        char w[4200];
        snprintf(w, sizeof w, "%s:2:", bj);
        bad_case(dir, 1, a, w, "malformed JSON");
    }
    {
        const char *a[] = {"--out", out, nt, NULL};
        char w[4200];
        snprintf(w, sizeof w, "%s:1:", nt);
        bad_case(dir, 0, a, w, "\"text\"");
    }
    {
        const char *a[] = {"--out", out, nots, NULL};
        char w[4200];
        snprintf(w, sizeof w, "%s:3:", nots);
        bad_case(dir, 0, a, w, "not a string");
    }
    {
        const char *a[] = {"--out", out, arr, NULL};
        bad_case(dir, 0, a, arr, "object");
    }
    {
        const char *a[] = {"--out", out, empty, NULL};
        bad_case(dir, 0, a, empty, "no tokens");
    }
    {
        const char *a[] = {"--out", "/nonexistent-dir/x/out.tok", good, NULL};
        bad_case(dir, 1, a, "/nonexistent-dir/x/out.tok", "cannot");
    }
    {
        const char *a[] = {"--valid-fraction", "1.5", "--out", out, good, NULL};
        bad_case(dir, 1, a, "--valid-fraction", "[0, 1)");
    }
    {
        // one document cannot be split into two non-empty sets
        const char *a[] = {"--valid-fraction", "0.5", "--out", out, good, NULL};
        bad_case(dir, 0, a, "--valid-fraction", "empty");
    }
    // a previous output stays untouched when a run fails
    write_str(out, "previous");
    {
        const char *a[] = {"--out", out, good, bin, NULL};
        bad_case(dir, 0, a, bin, "UTF-8");
    }
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(out, &buf, &len), AE_OK);
    assert_string_equal(buf, "previous");
    free(buf);
    // usage errors
    char *o, *e;
    const char *u[] = {"--out", out, NULL};
    assert_int_equal(prepare_cli(u, &o, &e), 2);
    free(o);
    free(e);
    const char *u2[] = {"--bogus", "--out", out, good, NULL};
    assert_int_equal(prepare_cli(u2, &o, &e), 1);
    assert_non_null(strstr(e, "--bogus"));
    free(o);
    free(e);
    char *f[] = {out, good, bin, bj, nt, nots, empty, missing, arr};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) free(f[i]);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------- token file validation

// What is wrong with the next token file refused (the robustness catalogue).
static const char *g_what;

static void expect_open_fails(const char *path, const char *what) {
    ae_tokfile f;
    ae_status st = ae_tokfile_open(path, &f);
    if (st == AE_OK) fail_msg("%s opened (wanted '%s')", path, what);
    assert_int_equal(st, AE_ERR_FORMAT);
    if (!strstr(ae_last_error(), path) || !strstr(ae_last_error(), what))
        fail_msg("message '%s' lacks '%s'", ae_last_error(), what);
    ae_test_catalogue("token files (.tok)", g_what, ae_last_error());
}

static void test_tokfile_open_negatives(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *p = join(dir, "x.tok");
    uint8_t hash[32];
    for (int i = 0; i < 32; i++) hash[i] = (uint8_t)i;
    uint32_t ids[6] = {1, 2, 3, 9, 0, 5};

    write_tokfile(p, 10, 6, ids, 6, 9, hash);
    ae_tokfile f;
    assert_int_equal(ae_tokfile_open(p, &f), AE_OK);
    assert_int_equal(f.n_tokens, 6);
    assert_int_equal(f.vocab_size, 10);
    assert_int_equal(f.eos_id, 9);
    assert_memory_equal(f.tokenizer_hash, hash, 32);
    assert_int_equal(f.ids[3], 9);
    ae_tokfile_close(&f);

    write_tokfile(p, 10, 6, ids, 5, 9, hash); // truncated ids
    g_what = "a header for 6 tokens and 5 token ids";
    expect_open_fails(p, "truncated");
    write_tokfile(p, 10, 5, ids, 6, 9, hash); // trailing bytes
    g_what = "a header for 5 tokens and 6 token ids";
    expect_open_fails(p, "oversized");
    write_tokfile(p, 10, UINT64_MAX / 2, ids, 6, 9, hash); // absurd count
    g_what = "a header for 2^63 - 1 tokens";
    expect_open_fails(p, "truncated");
    write_tokfile(p, 9, 6, ids, 6, 8, hash); // id 9 >= vocab 9
    g_what = "token id 9 in a file of vocabulary size 9";
    expect_open_fails(p, "token 3 has id 9 >= vocabulary size 9");
    write_tokfile(p, 10, 6, ids, 6, 10, hash); // eos outside the vocabulary
    g_what = "eos id 10 in a file of vocabulary size 10";
    expect_open_fails(p, "eos id 10");

    unsigned char hdr[AE_TOKFILE_HEADER];
    ae_tokfile_header(hdr, 10, 0, hash, 9);
    assert_int_equal(ae_test_write_file(p, hdr, 40), 0); // header cut short
    g_what = "the header cut after 40 bytes";
    expect_open_fails(p, "truncated");
    assert_int_equal(ae_test_write_file(p, hdr, 0), 0); // empty file
    g_what = "an empty file";
    expect_open_fails(p, "magic");
    memcpy(hdr, "AETOKENZ", 8);
    g_what = "the magic `AETOKENZ`";
    assert_int_equal(ae_test_write_file(p, hdr, sizeof hdr), 0);
    expect_open_fails(p, "magic");
    ae_tokfile_header(hdr, 10, 0, hash, 9);
    hdr[8] = 2; // version 2
    g_what = "version 2";
    assert_int_equal(ae_test_write_file(p, hdr, sizeof hdr), 0);
    expect_open_fails(p, "unsupported token file version 2");
    ae_tokfile_header(hdr, 10, 0, hash, 9);
    hdr[61] = 1; // reserved
    g_what = "a reserved header byte set";
    assert_int_equal(ae_test_write_file(p, hdr, sizeof hdr), 0);
    expect_open_fails(p, "reserved");
    ae_tokfile_header(hdr, 0, 0, hash, 0);
    g_what = "vocabulary size 0";
    assert_int_equal(ae_test_write_file(p, hdr, sizeof hdr), 0);
    expect_open_fails(p, "vocabulary size 0");

    assert_int_equal(ae_tokfile_open("/nonexistent/x.tok", &f), AE_ERR_IO);
    assert_non_null(strstr(ae_last_error(), "/nonexistent/x.tok"));
    free(p);
    ae_test_rmtree(dir);
    free(dir);
}

// Copies qwen3-micro's tokenizer into dir with one added token (a real, different tokenizer).
static void make_other_tokenizer(const char *dir) {
    char *src = join(g_model, "tokenizer.json"), *dst = join(dir, "tokenizer.json");
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(src, &buf, &len), AE_OK);
    const char *key = "\"<|im_end|>\"";
    char *at = strstr(buf, key);
    assert_non_null(at);
    char *close = strchr(at, '}');
    assert_non_null(close);
    const char *add = ", {\"id\": 8192, \"content\": \"<|extra|>\", \"single_word\": false, "
                      "\"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                      "\"special\": true}";
    size_t head = (size_t)(close + 1 - buf), alen = strlen(add);
    char *nb = malloc(len + alen);
    assert_non_null(nb);
    memcpy(nb, buf, head);
    memcpy(nb + head, add, alen);
    memcpy(nb + head + alen, buf + head, len - head);
    assert_int_equal(ae_test_write_file(dst, nb, len + alen), 0);
    free(nb);
    free(buf);
    free(src);
    free(dst);
}

static void test_check_model(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *in = join(dir, "a.txt"), *out = join(dir, "a.tok"), *other = join(dir, "other");
    write_str(in, "A small document.\n\nAnother one.");
    ae_prepare_result r;
    const char *ins[] = {in};
    if (prepare_lib(out, NULL, 0, ins, 1, &r) != AE_OK) fail_msg("%s", ae_last_error());
    ae_tokfile f;
    assert_int_equal(ae_tokfile_open(out, &f), AE_OK);
    assert_int_equal(ae_tokfile_check_model(&f, out, g_model, 8192), AE_OK);
    // the model's embedding may have more rows than the tokenizer has tokens, not fewer
    assert_int_equal(ae_tokfile_check_model(&f, out, g_model, 9000), AE_OK);
    assert_int_equal(ae_tokfile_check_model(&f, out, g_model, 4096), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "vocabulary size"));

    assert_int_equal(mkdir(other, 0755), 0);
    make_other_tokenizer(other);
    ae_tokenizer *t2;
    if (ae_tokenizer_load(other, &t2) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(ae_tokenizer_vocab_size(t2), 8193);
    ae_tokenizer_free(t2);
    assert_int_equal(ae_tokfile_check_model(&f, out, other, 8193), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), out));
    assert_non_null(strstr(ae_last_error(), "different tokenizer"));

#ifdef __SANITIZE_ADDRESS__
    // same code path as above; hashing the 11 MB file unoptimised under ASan costs seconds
    printf("SKIP check_model vs real Qwen3 tokenizer: sanitizer build\n");
    const char *real = NULL;
#else
    const char *real = ae_test_shared("qwen3-tokenizer/tokenizer.json", "check_model vs real Qwen3");
#endif
    if (real) {
        const char *rdir = ae_test_shared("qwen3-tokenizer", "check_model vs real Qwen3");
        assert_int_equal(ae_tokfile_check_model(&f, out, rdir, 151936), AE_ERR_ARG);
        assert_non_null(strstr(ae_last_error(), "different tokenizer"));
    }
    ae_tokfile_close(&f);
    free(in);
    free(out);
    free(other);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------- loader

// Token file whose ids are 0 .. n-1, so a window's content reveals its start.
static void make_iota(const char *path, uint32_t n) {
    uint32_t *ids = malloc(4 * n);
    assert_non_null(ids);
    for (uint32_t i = 0; i < n; i++) ids[i] = i;
    uint8_t hash[32] = {0};
    write_tokfile(path, n, n, ids, n, 0, hash);
    free(ids);
}

static void test_loader(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *p = join(dir, "iota.tok");
    const uint32_t N = 1000;
    const int ctx = 16, B = 4, W = ctx + 1, steps = 25;
    make_iota(p, N);
    ae_tokfile f;
    assert_int_equal(ae_tokfile_open(p, &f), AE_OK);

    ae_loader a, b, c;
    assert_int_equal(ae_loader_init(&a, &f, ctx, 42), AE_OK);
    assert_int_equal(ae_loader_init(&b, &f, ctx, 42), AE_OK);
    assert_int_equal(ae_loader_init(&c, &f, ctx, 43), AE_OK);
    int32_t *x = malloc(sizeof *x * (size_t)(B * W * steps)), *y = malloc(sizeof *y * (size_t)(B * W * steps));
    int32_t *z = malloc(sizeof *z * (size_t)(B * W * steps));
    ae_loader saved;
    const int k = 9; // interrupt after k batches
    for (int s = 0; s < steps; s++) {
        if (s == k) saved = a; // what a checkpoint would store
        ae_loader_next(&a, B, x + (size_t)s * B * W);
        ae_loader_next(&b, B, y + (size_t)s * B * W);
        ae_loader_next(&c, B, z + (size_t)s * B * W);
    }
    assert_int_equal(a.draws, (uint64_t)B * steps);
    assert_memory_equal(x, y, sizeof *x * (size_t)(B * W * steps)); // same seed, same windows
    assert_memory_not_equal(x, z, sizeof *x * (size_t)(B * W * steps)); // other seed differs
    for (int w = 0; w < B * steps; w++) { // each window is ctx+1 consecutive tokens of the file
        const int32_t *win = x + (size_t)w * W;
        assert_true(win[0] >= 0 && win[0] + ctx < (int32_t)N);
        for (int i = 1; i < W; i++) assert_int_equal(win[i], win[0] + i);
    }
    // resume from the copied struct, and from (seed, draws) alone
    ae_loader r2;
    assert_int_equal(ae_loader_restore(&r2, &f, ctx, 42, saved.draws), AE_OK);
    assert_memory_equal(&r2.rng, &saved.rng, sizeof r2.rng);
    for (int s = k; s < steps; s++) {
        ae_loader_next(&saved, B, y);
        assert_memory_equal(y, x + (size_t)s * B * W, sizeof *y * (size_t)(B * W));
        ae_loader_next(&r2, B, y);
        assert_memory_equal(y, x + (size_t)s * B * W, sizeof *y * (size_t)(B * W));
    }
    ae_tokfile_close(&f);

    // every start, both ends included, is drawn: file of 8 tokens, ctx 4 -> starts 0..3
    make_iota(p, 8);
    assert_int_equal(ae_tokfile_open(p, &f), AE_OK);
    assert_int_equal(ae_loader_init(&a, &f, 4, 7), AE_OK);
    int seen[8] = {0};
    for (int i = 0; i < 400; i++) {
        uint64_t s0 = ae_loader_next_start(&a);
        assert_true(s0 <= 3);
        seen[s0]++;
    }
    for (int i = 0; i < 4; i++) assert_true(seen[i] > 50);
    // a file shorter than one window, and ctx < 1
    assert_int_equal(ae_loader_init(&a, &f, 7, 1), AE_OK);
    assert_int_equal(ae_loader_init(&a, &f, 8, 1), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "8 tokens"));
    assert_int_equal(ae_loader_init(&a, &f, 0, 1), AE_ERR_ARG);
    ae_tokfile_close(&f);
    free(x);
    free(y);
    free(z);
    free(p);
    ae_test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_fips_vectors),
        cmocka_unit_test(test_tokenizer_file_hash),
        cmocka_unit_test(test_prepare_endoftext),
        cmocka_unit_test(test_prepare_blank_lines_and_jsonl),
        cmocka_unit_test(test_prepare_valid_split),
        cmocka_unit_test(test_prepare_bad_input),
        cmocka_unit_test(test_tokfile_open_negatives),
        cmocka_unit_test(test_check_model),
        cmocka_unit_test(test_loader),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, setup, teardown));
}
