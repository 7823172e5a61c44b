// tok/: byte-level BPE against goldens from HF tokenizers, the two merges serialisations,
// added-token flags, malformed tokenizer.json files, invalid input, streaming decode.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "tok/tok_internal.h" // test_nul_and_empty_tokens: the decode table
#include "tok/tokenizer.h"
#include "util/testutil.h"

#define QWEN_REGEX                                                                                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "              \
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"

// ---------------------------------------------------------------- goldens

static char *decode_all(const ae_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    char *text = NULL;
    assert_int_equal(ae_tokenizer_decode(t, ids, n, &text, len), AE_OK);
    return text;
}

// Streams ids one at a time through decode_next + flush and checks the concatenation.
static void check_stream(const ae_tokenizer *t, const int32_t *ids, size_t n, const char *want,
                         size_t want_len) {
    ae_decode_stream s = {0};
    char *acc = malloc(want_len + 64 * (n + 1) + 1);
    size_t alen = 0;
    for (size_t i = 0; i <= n; i++) {
        char *piece;
        size_t plen;
        if (i < n)
            assert_int_equal(ae_tokenizer_decode_next(t, &s, ids[i], &piece, &plen), AE_OK);
        else
            assert_int_equal(ae_tokenizer_decode_flush(t, &s, &piece, &plen), AE_OK);
        assert_true(alen + plen <= want_len + 64 * (n + 1));
        memcpy(acc + alen, piece, plen);
        alen += plen;
        free(piece);
    }
    assert_int_equal(alen, want_len);
    assert_memory_equal(acc, want, want_len);
    free(acc);
}

static int32_t *json_ids(const cJSON *arr, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(arr);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) ids[i++] = (int32_t)it->valuedouble;
    return ids;
}

// The value of "key": "..." in a JSON line, unescaped with its length (cJSON would stop at an
// escaped U+0000). NULL when the key is absent.
static char *json_str_field(const char *line, const char *key, size_t *len) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": \"", key);
    const char *p = strstr(line, pat);
    if (!p) return NULL;
    p += strlen(pat);
    char *out = malloc(strlen(p) * 4 + 1);
    size_t n = 0;
    while (*p && *p != '"') {
        if (*p != '\\') {
            out[n++] = *p++;
            continue;
        }
        p++;
        char e = *p++;
        unsigned cp = 0;
        switch (e) {
        case 'n':
            out[n++] = '\n';
            continue;
        case 'r':
            out[n++] = '\r';
            continue;
        case 't':
            out[n++] = '\t';
            continue;
        case 'b':
            out[n++] = '\b';
            continue;
        case 'f':
            out[n++] = '\f';
            continue;
        case 'u':
            break;
        default:
            out[n++] = e;
            continue;
        }
        sscanf(p, "%4x", &cp);
        p += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
            unsigned lo = 0;
            sscanf(p + 2, "%4x", &lo);
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp < 0x80)
            out[n++] = (char)cp;
        else if (cp < 0x800) {
            out[n++] = (char)(0xC0 | (cp >> 6));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[n++] = (char)(0xE0 | (cp >> 12));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[n++] = (char)(0xF0 | (cp >> 18));
            out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[n] = '\0';
    *len = n;
    return out;
}

// Checks one golden line: encode(text) == ids and decode(ids) == decoded (also streamed), or
// decode(decode_ids) == decoded.
static void check_line(const ae_tokenizer *t, const char *line, int lineno) {
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    size_t tlen, want_len;
    char *text = json_str_field(line, "text", &tlen);
    char *want_dec = json_str_field(line, "decoded", &want_len);
    assert_non_null(want_dec);
    int32_t *ids = NULL;
    size_t n = 0;
    if (text) {
        size_t n_want;
        int32_t *want = json_ids(cJSON_GetObjectItem(j, "ids"), &n_want);
        if (ae_tokenizer_encode(t, text, tlen, &ids, &n) != AE_OK)
            fail_msg("encode line %d: %s", lineno, ae_last_error());
        if (n != n_want || memcmp(ids, want, n * sizeof *ids) != 0) {
            printf("MISMATCH line %d: %s\n  got :", lineno, line);
            for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
            printf("\n");
            fail();
        }
        free(want);
    } else {
        ids = json_ids(cJSON_GetObjectItem(j, "decode_ids"), &n);
    }
    size_t dlen;
    char *dec = decode_all(t, ids, n, &dlen);
    if (dlen != want_len || memcmp(dec, want_dec, dlen) != 0)
        fail_msg("decode line %d: got \"%s\" want \"%s\"", lineno, dec, want_dec);
    check_stream(t, ids, n, dec, dlen);
    free(dec);
    free(ids);
    free(text);
    free(want_dec);
    cJSON_Delete(j);
}

static void run_golden(const char *model_dir, const char *golden) {
    ae_tokenizer *t = NULL;
    // (load time is measured by bench/bench_tokenize, not asserted here)
    ae_status st = ae_tokenizer_load(model_dir, &t);
    if (st != AE_OK) fail_msg("load %s: %s", model_dir, ae_last_error());
    char *buf;
    size_t blen;
    assert_int_equal(ae_file_read_all(golden, &buf, &blen), AE_OK);
    int ncases = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        check_line(t, line, ++ncases);
    assert_true(ncases >= 80);
    free(buf);
    ae_tokenizer_free(t);
}

static void test_golden_teacher(void **state) {
    (void)state;
    run_golden(ae_test_src("models/qwen3-micro"),
               ae_test_src("tests/fixtures/tok/golden_teacher.jsonl"));
}

static void test_golden_qwen3(void **state) {
    (void)state;
    const char *dir = ae_test_shared("qwen3-tokenizer", "real Qwen3 tokenizer goldens");
    if (!dir) return;
    char d[4096];
    snprintf(d, sizeof d, "%s", dir);
    run_golden(d, ae_test_src("tests/fixtures/tok/golden_qwen3.jsonl"));
}

static void test_eos_and_specials(void **state) {
    (void)state;
    ae_tokenizer *t;
    assert_int_equal(ae_tokenizer_load(ae_test_src("models/qwen3-micro"), &t), AE_OK);
    assert_int_equal(ae_tokenizer_vocab_size(t), 8192);
    assert_int_equal(ae_tokenizer_eos_id(t), 8189);
    assert_int_equal(ae_tokenizer_token_id(t, "<|im_end|>"), 8191);
    assert_int_equal(ae_tokenizer_token_id(t, "no such token"), -1);
    assert_true(ae_tokenizer_is_special(t, 8190));
    assert_false(ae_tokenizer_is_special(t, 39));
    assert_false(ae_tokenizer_is_special(t, 1 << 30));
    ae_tokenizer_free(t);
    const char *q = ae_test_shared("qwen3-tokenizer", "real Qwen3 tokenizer eos");
    if (!q) return;
    char d[4096];
    snprintf(d, sizeof d, "%s", q);
    assert_int_equal(ae_tokenizer_load(d, &t), AE_OK);
    assert_int_equal(ae_tokenizer_vocab_size(t), 151669);
    assert_int_equal(ae_tokenizer_eos_id(t), 151645);
    assert_true(ae_tokenizer_is_special(t, 151643));
    assert_false(ae_tokenizer_is_special(t, 151667)); // <think> is added but not special
    ae_tokenizer_free(t);
}

// ---------------------------------------------------------------- hand-written tokenizers

static const char *TINY_FMT =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
    " \"added_tokens\": [%s],\n"
    " \"normalizer\": {\"type\": \"NFC\"},\n"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
    "   {\"type\": \"Split\", \"pattern\": {\"Regex\": \"" QWEN_REGEX "\"}, \"behavior\": "
    "\"Isolated\", \"invert\": false},\n"
    "   {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
    "\"use_regex\": false}]},\n"
    " \"post_processor\": null,\n"
    " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
    "\"use_regex\": false},\n"
    " \"model\": {\"type\": \"%s\", \"dropout\": null, \"unk_token\": null, "
    "\"continuing_subword_prefix\": \"\", \"end_of_word_suffix\": \"\", \"fuse_unk\": false, "
    "\"byte_fallback\": false, \"ignore_merges\": false,\n"
    "   \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"\\u0120\": 3, \"ab\": 4, \"abc\": 5, "
    "\"\\u0120a\": 6, \"\\u0120ab\": 7, \"bc\": 8, \"z\": 9},\n"
    "   \"merges\": %s}}\n";

static const char *MERGES_STR = "[\"a b\", \"ab c\", \"\\u0120 a\", \"\\u0120a b\", \"b c\"]";
static const char *MERGES_LIST = "[[\"a\", \"b\"], [\"ab\", \"c\"], [\"\\u0120\", \"a\"], "
                                 "[\"\\u0120a\", \"b\"], [\"b\", \"c\"]]";
static const char *ADDED_X =
    "{\"id\": 10, \"content\": \"<|x|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": "
    "false, \"normalized\": false, \"special\": true}";

// Writes tokenizer.json (and optionally tokenizer_config.json) into a fresh temp dir.
static char *write_tok(const char *json, const char *config) {
    char *dir = ae_test_tmpdir();
    assert_non_null(dir);
    char *p = ae_path_join(dir, "tokenizer.json");
    assert_int_equal(ae_test_write_file(p, json, strlen(json)), 0);
    free(p);
    if (config) {
        p = ae_path_join(dir, "tokenizer_config.json");
        assert_int_equal(ae_test_write_file(p, config, strlen(config)), 0);
        free(p);
    }
    return dir;
}

static char *tiny_json(const char *added, const char *model_type, const char *merges) {
    size_t n = strlen(TINY_FMT) + strlen(added) + strlen(model_type) + strlen(merges) + 1;
    char *s = malloc(n);
    snprintf(s, n, TINY_FMT, added, model_type, merges);
    return s;
}

static void expect_encode(const ae_tokenizer *t, const char *text, const int32_t *want,
                          size_t nwant) {
    int32_t *ids;
    size_t n;
    if (ae_tokenizer_encode(t, text, strlen(text), &ids, &n) != AE_OK)
        fail_msg("encode \"%s\": %s", text, ae_last_error());
    if (n != nwant || memcmp(ids, want, n * sizeof *ids) != 0) {
        printf("encode \"%s\": got", text);
        for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
        printf("\n");
        fail();
    }
    free(ids);
}

static void test_merges_both_forms(void **state) {
    (void)state;
    static const int32_t want[] = {5, 3, 4, 3, 8, 10, 5, 2};
    const char *text = "abc ab bc<|x|>abcc";
    const char *forms[2] = {MERGES_STR, MERGES_LIST};
    for (int f = 0; f < 2; f++) {
        char *json = tiny_json(ADDED_X, "BPE", forms[f]);
        char *dir = write_tok(json, "{\"eos_token\": {\"content\": \"<|x|>\"}}");
        ae_tokenizer *t = NULL;
        if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
        expect_encode(t, text, want, 8);
        assert_int_equal(ae_tokenizer_eos_id(t), 10);
        assert_int_equal(ae_tokenizer_vocab_size(t), 11);
        size_t len;
        char *dec = decode_all(t, want, 8, &len);
        assert_string_equal(dec, text);
        free(dec);
        ae_tokenizer_free(t);
        ae_test_rmtree(dir);
        free(dir);
        free(json);
    }
    // a hole in the model vocab: "z" moved from 9 to 12, so id 9 decodes to nothing -> error;
    // <|x|> still gets 10 (the model has 10 entries), whatever its "id" in the file
    char *json = tiny_json(ADDED_X, "BPE", MERGES_STR);
    char *z = strstr(json, "\"z\": 9");
    memmove(z + 6, z + 5, strlen(z + 5) + 1);
    z[5] = '1';
    z[6] = '2';
    char *dir = write_tok(json, NULL);
    ae_tokenizer *t = NULL;
    if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(ae_tokenizer_vocab_size(t), 13);
    assert_int_equal(ae_tokenizer_token_id(t, "z"), 12);
    assert_int_equal(ae_tokenizer_token_id(t, "<|x|>"), 10);
    int32_t gap = 9;
    char *out = NULL;
    size_t len;
    assert_int_equal(ae_tokenizer_decode(t, &gap, 1, &out, &len), AE_ERR_ARG);
    expect_encode(t, "z<|x|>", (const int32_t[]){12, 10}, 2);
    ae_tokenizer_free(t);
    ae_test_rmtree(dir);
    free(dir);
    free(json);
}

static void test_added_token_flags(void **state) {
    (void)state;
    char added[1024];
    snprintf(added, sizeof added,
             "%s, {\"id\": 11, \"content\": \"<m>\", \"lstrip\": true, \"rstrip\": true, "
             "\"normalized\": false, \"special\": true},"
             " {\"id\": 12, \"content\": \"zz\", \"single_word\": true, \"normalized\": false},"
             " {\"id\": 13, \"content\": \"\\u00e9\", \"normalized\": true}",
             ADDED_X);
    char *json = tiny_json(added, "BPE", MERGES_LIST);
    char *dir = write_tok(json, NULL);
    ae_tokenizer *t = NULL;
    if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(ae_tokenizer_eos_id(t), -1);
    // lstrip / rstrip eat the white space around the token
    expect_encode(t, "a <m>  b", (const int32_t[]){0, 11, 1}, 3);
    expect_encode(t,
                  "a\t<m>\xe2\x80\x80"
                  "b",
                  (const int32_t[]){0, 11, 1}, 3); // U+2000 is white space
    // single_word: the middle "zz" touches a word character and is not split out
    expect_encode(t, "zz azz zz", (const int32_t[]){12, 6, 9, 9, 3, 12}, 6);
    // normalized=true: matched after NFC, so the decomposed e + U+0301 matches U+00E9
    expect_encode(t, "ae\xcc\x81", (const int32_t[]){0, 13}, 2);
    expect_encode(t, "a\xc3\xa9", (const int32_t[]){0, 13}, 2);
    // the longest added token wins at a position
    ae_tokenizer_free(t);
    ae_test_rmtree(dir);
    free(dir);
    free(json);
}

// ---------------------------------------------------------------- more HF behaviour

// HF tokenizers 0.23.2 on qwen3-micro: code points where Unicode versions differ
static const char *const HF_MICRO_LINES[] = {
    "{\"text\": \"x\\u0085y \\u0085\\u0085 9\\u0085\\n\\u0085's\\u0085 \\u0085\\u0301 'S\", "
    "\"ids\": [87, 126, 227, 88, 8097, 227, 126, 227, 220, 24, 126, 227, 198, 126, 227, 1145, 126, "
    "227, 220, 126, 227, 136, 223, 2241, 50], \"decoded\": \"x\\u0085y \\u0085\\u0085 "
    "9\\u0085\\n\\u0085's\\u0085 \\u0085\\u0301 'S\"}",
    "{\"text\": \"x\\u180ey \\u180e\\u180e 9\\u180e\\n\\u180e's\\u180e \\u180e\\u0301 'S\", "
    "\"ids\": [87, 157, 254, 236, 88, 220, 157, 254, 236, 157, 254, 236, 220, 24, 157, 254, 236, "
    "198, 157, 254, 236, 6, 82, 157, 254, 236, 220, 157, 254, 236, 136, 223, 2241, 50], "
    "\"decoded\": \"x\\u180ey \\u180e\\u180e 9\\u180e\\n\\u180e's\\u180e \\u180e\\u0301 'S\"}",
    "{\"text\": \"x\\u1c89y \\u1c89\\u1c89 9\\u1c89\\n\\u1c89's\\u1c89 \\u1c89\\u0301 'S\", "
    "\"ids\": [87, 157, 110, 231, 88, 220, 157, 110, 231, 157, 110, 231, 220, 24, 157, 110, 231, "
    "198, 157, 110, 231, 1145, 157, 110, 231, 220, 157, 110, 231, 136, 223, 2241, 50], "
    "\"decoded\": \"x\\u1c89y \\u1c89\\u1c89 9\\u1c89\\n\\u1c89's\\u1c89 \\u1c89\\u0301 'S\"}",
    "{\"text\": \"x\\u1df6y \\u1df6\\u1df6 9\\u1df6\\n\\u1df6's\\u1df6 \\u1df6\\u0301 'S\", "
    "\"ids\": [87, 157, 115, 114, 88, 220, 157, 115, 114, 157, 115, 114, 220, 24, 157, 115, 114, "
    "198, 157, 115, 114, 6, 82, 157, 115, 114, 220, 157, 115, 114, 136, 223, 2241, 50], "
    "\"decoded\": \"x\\u1df6y \\u1df6\\u1df6 9\\u1df6\\n\\u1df6's\\u1df6 \\u1df6\\u0301 'S\"}",
    "{\"text\": \"x\\u2028y \\u2028\\u2028 9\\u2028\\n\\u2028's\\u2028 \\u2028\\u0301 'S\", "
    "\"ids\": [87, 269, 101, 88, 220, 269, 101, 269, 101, 220, 24, 269, 101, 198, 269, 101, 1145, "
    "269, 101, 220, 269, 101, 136, 223, 2241, 50], \"decoded\": \"x\\u2028y \\u2028\\u2028 "
    "9\\u2028\\n\\u2028's\\u2028 \\u2028\\u0301 'S\"}",
    "{\"text\": \"x\\u3000y \\u3000\\u3000 9\\u3000\\n\\u3000's\\u3000 \\u3000\\u0301 'S\", "
    "\"ids\": [87, 159, 222, 222, 88, 220, 159, 222, 222, 159, 222, 222, 220, 24, 159, 222, 222, "
    "198, 159, 222, 222, 1145, 159, 222, 222, 220, 159, 222, 222, 136, 223, 2241, 50], "
    "\"decoded\": \"x\\u3000y \\u3000\\u3000 9\\u3000\\n\\u3000's\\u3000 \\u3000\\u0301 'S\"}",
    "{\"text\": \"x\\ufeffy \\ufeff\\ufeff 9\\ufeff\\n\\ufeff's\\ufeff \\ufeff\\u0301 'S\", "
    "\"ids\": [87, 171, 119, 123, 88, 220, 171, 119, 123, 171, 119, 123, 220, 24, 171, 119, 123, "
    "198, 171, 119, 123, 6, 82, 171, 119, 123, 220, 171, 119, 123, 136, 223, 2241, 50], "
    "\"decoded\": \"x\\ufeffy \\ufeff\\ufeff 9\\ufeff\\n\\ufeff's\\ufeff \\ufeff\\u0301 'S\"}",
    NULL};
// HF tokenizers 0.23.2 on the flags variant of qwen3-micro (see make_flags_tokenizer)
static const char *const HF_FLAGS_LINES[] = {
    "{\"text\": \"'\\u017f 'K 'Ll \\u212a 'D\", \"ids\": [6, 129, 123, 2241, 42, 2241, 43, 75, "
    "815, 2241, 35], \"decoded\": \"'\\u017f 'K 'Ll K 'D\"}",
    "{\"text\": \"a\\u0085\\u0085 b\", \"ids\": [64, 126, 227, 126, 227, 271], \"decoded\": "
    "\"a\\u0085\\u0085 b\"}",
    "{\"text\": \" \\u00a0 \\u00a0x\", \"ids\": [8097, 254, 220, 126, 254, 87], \"decoded\": \" "
    "\\u00a0 \\u00a0x\"}",
    "{\"text\": \"\\u3000\\u3000\", \"ids\": [159, 222, 222, 159, 222, 222], \"decoded\": "
    "\"\\u3000\\u3000\"}",
    "{\"text\": \"x\\u2028\\u2028 y\", \"ids\": [87, 269, 101, 269, 101, 316], \"decoded\": "
    "\"x\\u2028\\u2028 y\"}",
    "{\"text\": \"\\ufeff\\ufeffz\", \"ids\": [171, 119, 123, 171, 119, 123, 89], \"decoded\": "
    "\"\\ufeff\\ufeffz\"}",
    "{\"text\": \"a  \\n  b\", \"ids\": [64, 340, 198, 220, 271], \"decoded\": \"a  \\n  b\"}",
    "{\"text\": \"\\t\\t\\n\\n\\r\\r  x\", \"ids\": [197, 197, 295, 201, 201, 220, 6908], "
    "\"decoded\": \"\\t\\t\\n\\n\\r\\r  x\"}",
    "{\"text\": \"<|im_start|> <|im_end|>  <|im_start|>x<|im_end|>y\", \"ids\": [8190, 8191, 8190, "
    "87, 27, 91, 310, 62, 656, 91, 29, 88], \"decoded\": "
    "\"<|im_start|><|im_end|><|im_start|>x<|im_end|>y\"}",
    "{\"text\": \"A<|im_end|>B <|im_end|> C<|im_end|>\", \"ids\": [32, 27, 91, 310, 62, 656, 91, "
    "29, 33, 220, 8191, 431, 27, 91, 310, 62, 656, 91, 29], \"decoded\": \"A<|im_end|>B <|im_end|> "
    "C<|im_end|>\"}",
    "{\"text\": \" e\\u0301 \\u00e9 caf\\u00e9<|im_start|>e\\u0301\", \"ids\": [220, 165, 220, "
    "165, 1228, 69, 165, 8190, 165], \"decoded\": \" \\ufffd \\ufffd "
    "caf\\ufffd<|im_start|>\\ufffd\"}",
    "{\"text\": \"\\u00e9\\u00e9 x\\u00e9y \\u00e9\", \"ids\": [165, 165, 6908, 165, 88, 220, "
    "165], \"decoded\": \"\\ufffd\\ufffd x\\ufffdy \\ufffd\"}",
    "{\"text\": \"<|endoftext|><|endoftext|>\", \"ids\": [8189, 8189], \"decoded\": "
    "\"<|endoftext|><|endoftext|>\"}",
    "{\"text\": \"x <|im_start|>\\t\\n y\", \"ids\": [87, 8190, 88], \"decoded\": "
    "\"x<|im_start|>y\"}",
    NULL};

// qwen3-micro's tokenizer.json with the added-token flags changed the way tools used to make
// HF_FLAGS_LINES: <|im_start|> lstrip+rstrip, <|im_end|> single_word, <|endoftext|> normalized,
// and three more tokens ("\u00e9" normalized, which HF gives the model id of the byte-level
// char; "e\u0301x" lstrip; "<|im" special). Returns the temp dir.
static char *make_flags_tokenizer(void) {
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(ae_test_src("models/qwen3-micro/tokenizer.json"), &buf, &len),
                     AE_OK);
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    assert_non_null(root);
    cJSON *added = cJSON_GetObjectItem(root, "added_tokens"), *it;
    cJSON_ArrayForEach(it, added) {
        const char *c = cJSON_GetObjectItem(it, "content")->valuestring;
        const char *flag = strcmp(c, "<|im_start|>") == 0 ? "lstrip"
                           : strcmp(c, "<|im_end|>") == 0 ? "single_word"
                                                          : "normalized";
        cJSON_ReplaceItemInObject(it, flag, cJSON_CreateTrue());
        if (strcmp(c, "<|im_start|>") == 0)
            cJSON_ReplaceItemInObject(it, "rstrip", cJSON_CreateTrue());
    }
    static const char *more[] = {
        "{\"id\": 8192, \"content\": \"\\u00e9\", \"single_word\": false, \"lstrip\": false, "
        "\"rstrip\": false, \"normalized\": true, \"special\": false}",
        "{\"id\": 8193, \"content\": \"e\\u0301x\", \"single_word\": false, \"lstrip\": true, "
        "\"rstrip\": false, \"normalized\": false, \"special\": false}",
        "{\"id\": 8194, \"content\": \"<|im\", \"single_word\": false, \"lstrip\": false, "
        "\"rstrip\": false, \"normalized\": false, \"special\": true}",
    };
    for (int i = 0; i < 3; i++) cJSON_AddItemToArray(added, cJSON_Parse(more[i]));
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    char *dir = write_tok(json, NULL);
    free(json);
    return dir;
}

static void test_hf_unicode_and_flags(void **state) {
    (void)state;
    ae_tokenizer *t;
    assert_int_equal(ae_tokenizer_load(ae_test_src("models/qwen3-micro"), &t), AE_OK);
    for (int i = 0; HF_MICRO_LINES[i]; i++) check_line(t, HF_MICRO_LINES[i], i + 1);
    ae_tokenizer_free(t);
    char *dir = make_flags_tokenizer();
    ae_log_level lvl = ae_log_get_level();
    ae_log_set_level(AE_LOG_QUIET); // the id notes about the three extra tokens
    if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
    ae_log_set_level(lvl);
    assert_int_equal(ae_tokenizer_token_id(t, "\xc3\xa9"), 165); // the model id, not 8192
    assert_int_equal(ae_tokenizer_token_id(t, "e\xcc\x81x"), 8192);
    assert_int_equal(ae_tokenizer_token_id(t, "<|im"), 8193);
    assert_int_equal(ae_tokenizer_vocab_size(t), 8194);
    for (int i = 0; HF_FLAGS_LINES[i]; i++) check_line(t, HF_FLAGS_LINES[i], i + 1);
    ae_tokenizer_free(t);
    ae_test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------- errors

// What is wrong with the next tokenizer.json refused (the robustness catalogue); NULL: the text
// of the file itself.
static char g_what[512];

static void expect_load_error(const char *json, ae_status want, const char *needle) {
    char *dir = write_tok(json, NULL);
    ae_tokenizer *t = (ae_tokenizer *)(uintptr_t)1;
    ae_status st = ae_tokenizer_load(dir, &t);
    if (st != want)
        fail_msg("want %s, got %s (%s)", ae_status_name(want), ae_status_name(st),
                 st ? ae_last_error() : "ok");
    assert_null(t);
    const char *msg = ae_last_error();
    if (!strstr(msg, "tokenizer.json") || (needle && !strstr(msg, needle)))
        fail_msg("message \"%s\" should name tokenizer.json and \"%s\"", msg, needle ? needle : "");
    char input[600];
    if (g_what[0]) snprintf(input, sizeof input, "%s", g_what);
    else snprintf(input, sizeof input, "the file is `%s`", json);
    ae_test_catalogue("tokenizer.json", input, msg);
    g_what[0] = '\0';
    ae_test_rmtree(dir);
    free(dir);
}

static void test_malformed(void **state) {
    (void)state;
    expect_load_error("this is { not json", AE_ERR_FORMAT, "JSON");
    expect_load_error("", AE_ERR_FORMAT, "JSON");
    expect_load_error("[1, 2]", AE_ERR_FORMAT, NULL);
    expect_load_error("{\"model\": 3}", AE_ERR_FORMAT, "model");
    char *j;
    j = tiny_json(ADDED_X, "BPE", "{\"a\": \"b\"}");
    snprintf(g_what, sizeof g_what, "`model.merges` is an object, `{\"a\": \"b\"}`");
    expect_load_error(j, AE_ERR_FORMAT, "model.merges");
    free(j);
    j = tiny_json(ADDED_X, "BPE", "[\"a q\"]");
    snprintf(g_what, sizeof g_what, "a merge of a token not in the vocab, `\"a q\"`");
    expect_load_error(j, AE_ERR_FORMAT, "model.merges[0]");
    free(j);
    j = tiny_json(ADDED_X, "BPE", "[\"a b\", \"a c\"]"); // "ac" is not in the vocab
    snprintf(g_what, sizeof g_what, "a merge whose result `ac` is not in the vocab");
    expect_load_error(j, AE_ERR_FORMAT, "model.merges[1]");
    free(j);
    j = tiny_json(ADDED_X, "BPE", "[\"ab\"]");
    snprintf(g_what, sizeof g_what, "a merge without its space, `\"ab\"`");
    expect_load_error(j, AE_ERR_FORMAT, "model.merges[0]");
    free(j);
    j = tiny_json(ADDED_X, "BPE", "[[\"a\", 3]]");
    snprintf(g_what, sizeof g_what, "a merge `[\"a\", 3]`");
    expect_load_error(j, AE_ERR_FORMAT, "model.merges[0]");
    free(j);
    j = tiny_json(ADDED_X, "WordPiece", MERGES_STR);
    snprintf(g_what, sizeof g_what, "`model.type` is `\"WordPiece\"`");
    expect_load_error(j, AE_ERR_UNSUPPORTED, "model.type");
    free(j);
    j = tiny_json("{\"id\": \"nine\", \"content\": \"<|x|>\"}", "BPE", MERGES_STR);
    snprintf(g_what, sizeof g_what, "an added token with `\"id\": \"nine\"`");
    expect_load_error(j, AE_ERR_FORMAT, "added_tokens[0]");
    free(j);
    j = tiny_json("{\"id\": 9}", "BPE", MERGES_STR);
    snprintf(g_what, sizeof g_what, "an added token without content");
    expect_load_error(j, AE_ERR_FORMAT, "added_tokens[0].content");
    free(j);
    j = tiny_json("{\"id\": -4, \"content\": \"q\"}", "BPE", MERGES_STR);
    snprintf(g_what, sizeof g_what, "an added token with `\"id\": -4`");
    expect_load_error(j, AE_ERR_FORMAT, "added_tokens[0]");
    free(j);

    // edits of a valid file
    char *base = tiny_json(ADDED_X, "BPE", MERGES_STR);
    struct {
        const char *from, *to;
        ae_status st;
        const char *needle;
    } edits[] = {
        {"\"vocab\": {", "\"vocabulary\": {", AE_ERR_FORMAT, "model.vocab"},
        {"\"vocab\": {\"a\": 0", "\"vocab\": {\"a\": \"zero\"", AE_ERR_FORMAT, "model.vocab"},
        {"\"vocab\": {\"a\": 0", "\"vocab\": {\"a\": 1.5", AE_ERR_FORMAT, "model.vocab"},
        {"\"b\": 1,", "\"b\": 0,", AE_ERR_FORMAT, "model.vocab"},
        {"\"vocab\": {", "\"vocab\": [{", AE_ERR_FORMAT, NULL}, // unbalanced -> not JSON
        {"{\"type\": \"NFC\"}", "{\"type\": \"Lowercase\"}", AE_ERR_UNSUPPORTED, "normalizer"},
        {"{\"type\": \"NFC\"}", "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKC\"}]}",
         AE_ERR_UNSUPPORTED, "normalizer.normalizers[0]"},
        {"{\"type\": \"NFC\"}", "null", AE_OK, NULL},
        {"\"behavior\": \"Isolated\"", "\"behavior\": \"Removed\"", AE_ERR_UNSUPPORTED, "behavior"},
        {"\"invert\": false", "\"invert\": true", AE_ERR_UNSUPPORTED, "invert"},
        {"\"Regex\": \"(?i:", "\"Regex\": \"((?i:", AE_ERR_UNSUPPORTED, "Regex"},
        {"\"pre_tokenizer\": {\"type\": \"Sequence\"",
         "\"pre_tokenizer\": {\"type\": \"Whitespace\"", AE_ERR_UNSUPPORTED, "pre_tokenizer"},
        {"\"decoder\": {\"type\": \"ByteLevel\"", "\"decoder\": {\"type\": \"WordPiece\"",
         AE_ERR_UNSUPPORTED, "decoder"},
        {"\"dropout\": null", "\"dropout\": 0.1", AE_ERR_UNSUPPORTED, "dropout"},
        {"\"unk_token\": null", "\"unk_token\": \"<unk>\"", AE_ERR_FORMAT, "unk_token"},
        {"\"truncation\": null", "\"truncation\": {\"max_length\": 5}", AE_ERR_UNSUPPORTED,
         "truncation"},
        {"\"fuse_unk\": false", "\"fuse_unk\": \"no\"", AE_ERR_FORMAT, "fuse_unk"},
        {"\"added_tokens\": [", "\"added_tokens\": {\"x\": [", AE_ERR_FORMAT, NULL},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        const char *at = strstr(base, edits[i].from);
        assert_non_null(at);
        size_t n = strlen(base) + strlen(edits[i].to) + 1;
        char *e = malloc(n);
        snprintf(e, n, "%.*s%s%s", (int)(at - base), base, edits[i].to, at + strlen(edits[i].from));
        if (edits[i].st == AE_OK) {
            char *dir = write_tok(e, NULL);
            ae_tokenizer *t;
            assert_int_equal(ae_tokenizer_load(dir, &t), AE_OK);
            ae_tokenizer_free(t);
            ae_test_rmtree(dir);
            free(dir);
        } else {
            snprintf(g_what, sizeof g_what, "a valid file with `%s` changed to `%s`", edits[i].from,
                     edits[i].to);
            expect_load_error(e, edits[i].st, edits[i].needle);
        }
        free(e);
    }

    // no tokenizer.json at all
    char *dir = ae_test_tmpdir();
    ae_tokenizer *t;
    assert_int_not_equal(ae_tokenizer_load(dir, &t), AE_OK);
    assert_non_null(strstr(ae_last_error(), "tokenizer.json"));
    // bad tokenizer_config.json next to a good tokenizer.json
    char *p = ae_path_join(dir, "tokenizer.json");
    assert_int_equal(ae_test_write_file(p, base, strlen(base)), 0);
    free(p);
    p = ae_path_join(dir, "tokenizer_config.json");
    assert_int_equal(ae_test_write_file(p, "{\"eos_token\": 5}", 16), 0);
    free(p);
    assert_int_equal(ae_tokenizer_load(dir, &t), AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), "tokenizer_config.json"));
    ae_test_catalogue("tokenizer_config.json", "the file is `{\"eos_token\": 5}`", ae_last_error());
    ae_test_rmtree(dir);
    free(dir);

    // every truncation and many single-byte corruptions: an error or a tokenizer, never a crash
    size_t blen = strlen(base);
    char *cut = malloc(blen + 1);
    unsigned seed = 12345;
    for (size_t n = 0; n < blen - 1; n += 3) { // base ends with "}\n"
        memcpy(cut, base, n);
        cut[n] = '\0';
        dir = write_tok(cut, NULL);
        assert_int_equal(ae_tokenizer_load(dir, &t), AE_ERR_FORMAT);
        ae_test_rmtree(dir);
        free(dir);
    }
    static const char junk[] = "\"{}[],:0-9ae \\\x80\xff";
    for (int k = 0; k < 300; k++) {
        memcpy(cut, base, blen + 1);
        seed = seed * 1103515245u + 12345u;
        size_t pos = (seed >> 8) % blen;
        seed = seed * 1103515245u + 12345u;
        cut[pos] = junk[(seed >> 8) % (sizeof junk - 1)];
        dir = write_tok(cut, NULL);
        if (ae_tokenizer_load(dir, &t) == AE_OK) {
            int32_t *ids;
            size_t n;
            if (ae_tokenizer_encode(t, "abc ab<|x|> zz", 14, &ids, &n) == AE_OK) {
                char *d;
                size_t dl;
                ae_tokenizer_decode(t, ids, n, &d, &dl) == AE_OK ? free(d) : (void)0;
                free(ids);
            }
            ae_tokenizer_free(t);
        }
        ae_test_rmtree(dir);
        free(dir);
    }
    free(cut);
    free(base);
}

// Writes tokenizer.json of exactly n bytes (NUL bytes included) into a fresh temp dir.
static char *write_tok_n(const char *json, size_t n) {
    char *dir = ae_test_tmpdir();
    assert_non_null(dir);
    char *p = ae_path_join(dir, "tokenizer.json");
    assert_int_equal(ae_test_write_file(p, json, n), 0);
    free(p);
    return dir;
}

static const char *MIN_FMT = "{\"model\": {\"type\": \"BPE\", \"vocab\": {%s}, \"merges\": []}, "
                             "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, "
                             "\"decoder\": {\"type\": \"ByteLevel\"}}";

// A vocab whose only token is "" loads and its id decodes to "": decode used to offset a NULL
// pointer (no token had any bytes, so no byte table was allocated; UBSan: "applying zero offset
// to null pointer", found by fuzz_tokenizer_json, fuzz/crashes/fuzz_tokenizer_json/). A NUL
// character inside a string would silently cut the token short (cJSON ends strings there; a
// raw NUL byte is not valid JSON either): refused, naming the byte, whether raw or \u0000.
static void test_nul_and_empty_tokens(void **state) {
    (void)state;
    char json[512];
    snprintf(json, sizeof json, MIN_FMT, "\"\": 0");
    char *dir = write_tok(json, NULL);
    ae_tokenizer *t = NULL;
    if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(ae_tokenizer_vocab_size(t), 1);
    assert_non_null(t->dec_blob); // what decode offsets (only UBSan of clang sees NULL + 0)
    int32_t id = 0;
    char *dec = NULL;
    size_t len = 7;
    assert_int_equal(ae_tokenizer_decode(t, &id, 1, &dec, &len), AE_OK);
    assert_string_equal(dec, "");
    assert_int_equal(len, 0);
    free(dec);
    check_stream(t, &id, 1, "", 0);
    ae_tokenizer_free(t);
    ae_test_rmtree(dir);
    free(dir);

    // raw NUL bytes: in a token (the fuzzer's input had several), and at the end of the file
    snprintf(json, sizeof json, MIN_FMT, "\"a#b\": 0");
    size_t n = strlen(json), at = (size_t)(strchr(json, '#') - json);
    json[at] = '\0';
    for (int k = 0; k < 2; k++) {
        if (k) { // the NUL after the closing brace instead
            json[at] = '#';
            at = n++;
            json[at] = '\0';
        }
        dir = write_tok_n(json, n);
        t = (ae_tokenizer *)(uintptr_t)1;
        assert_int_equal(ae_tokenizer_load(dir, &t), AE_ERR_FORMAT);
        assert_null(t);
        char want[64];
        snprintf(want, sizeof want, "contains a NUL byte (at byte %zu)", at);
        if (!strstr(ae_last_error(), "tokenizer.json") || !strstr(ae_last_error(), want))
            fail_msg("\"%s\" lacks \"%s\"", ae_last_error(), want);
        ae_test_catalogue("tokenizer.json", k ? "a NUL byte after the JSON object"
                                              : "a NUL byte inside a token of `model.vocab`",
                          ae_last_error());
        ae_test_rmtree(dir);
        free(dir);
    }
    // the escape \u0000; an escaped backslash before "u0000" is the 6-character token \u0000
    snprintf(json, sizeof json, MIN_FMT, "\"a\\u0000b\": 0");
    dir = write_tok(json, NULL);
    t = (ae_tokenizer *)(uintptr_t)1;
    assert_int_equal(ae_tokenizer_load(dir, &t), AE_ERR_FORMAT);
    assert_null(t);
    snprintf(json, sizeof json, "contains the escape \\u0000 (at byte %zu)",
             (size_t)(strstr(MIN_FMT, "%s") - MIN_FMT) + 2);
    if (!strstr(ae_last_error(), json)) fail_msg("\"%s\" lacks \"%s\"", ae_last_error(), json);
    ae_test_catalogue("tokenizer.json", "a token of `model.vocab` holding the escape `\\u0000`",
                      ae_last_error());
    ae_test_rmtree(dir);
    free(dir);
    snprintf(json, sizeof json, MIN_FMT, "\"\\\\u0000\": 0, \"\\\\\\\\u0000\": 1");
    dir = write_tok(json, NULL);
    if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
    assert_int_equal(ae_tokenizer_token_id(t, "\\u0000"), 0);
    assert_int_equal(ae_tokenizer_token_id(t, "\\\\u0000"), 1);
    ae_tokenizer_free(t);
    // tokenizer_config.json: a raw NUL byte is refused; \u0000 is not (only eos_token is read,
    // and a chat template may hold one)
    char *cfg = ae_path_join(dir, "tokenizer_config.json");
    assert_int_equal(ae_test_write_file(cfg, "{\"eos_token\": null}\0", 20), 0);
    assert_int_equal(ae_tokenizer_load(dir, &t), AE_ERR_FORMAT);
    if (!strstr(ae_last_error(), "tokenizer_config.json: contains a NUL byte (at byte 19)"))
        fail_msg("%s", ae_last_error());
    ae_test_catalogue("tokenizer_config.json", "a NUL byte after the JSON object",
                      ae_last_error());
    const char ok[] = "{\"chat_template\": \"a\\u0000b\", \"eos_token\": null}";
    assert_int_equal(ae_test_write_file(cfg, ok, sizeof ok - 1), 0);
    if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s", ae_last_error());
    ae_tokenizer_free(t);
    free(cfg);
    ae_test_rmtree(dir);
    free(dir);
}

// A Split pre-tokenizer with a {"String": ...} pattern splits on that literal text: it used to
// be refused ("invalid option bits with PCRE2_LITERAL": PCRE2 takes no UCP with LITERAL). A
// literal without regex metacharacters splits as the same regex does; one with them still loads.
static void test_split_literal(void **state) {
    (void)state;
    char *base = tiny_json(ADDED_X, "BPE", MERGES_STR);
    const char *rx = "{\"Regex\": \"" QWEN_REGEX "\"}";
    char *at = strstr(base, rx);
    assert_non_null(at);
    static const char *const pats[] = {"{\"Regex\": \"c\"}", "{\"String\": \"c\"}",
                                       "{\"String\": \"(?[\"}"};
    // split at every "c": ab|c|ab |c|b|c; the literal "(?[" is not in the text: one piece
    static const int32_t want_c[] = {4, 2, 4, 3, 2, 1, 2}, want_none[] = {5, 4, 3, 2, 8};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(base) + strlen(pats[i]) + 1;
        char *e = malloc(n);
        snprintf(e, n, "%.*s%s%s", (int)(at - base), base, pats[i], at + strlen(rx));
        char *dir = write_tok(e, NULL);
        ae_tokenizer *t = NULL;
        if (ae_tokenizer_load(dir, &t) != AE_OK) fail_msg("%s: %s", pats[i], ae_last_error());
        if (i < 2) expect_encode(t, "abcab cbc", want_c, 7);
        else expect_encode(t, "abcab cbc", want_none, 5);
        ae_tokenizer_free(t);
        ae_test_rmtree(dir);
        free(dir);
        free(e);
    }
    free(base);
}

static void test_bad_input(void **state) {
    (void)state;
    ae_tokenizer *t;
    assert_int_equal(ae_tokenizer_load(ae_test_src("models/qwen3-micro"), &t), AE_OK);
    static const struct {
        const char *s;
        size_t off;
    } bad[] = {
        {"abc\xff"
         "def",
         3},
        {"ok \xc3", 3},
        {"\x80", 0},
        {"x\xc0\xaf", 1},
        {"ab\xed\xa0\x80", 2},
        {"\xf4\x90\x80\x80", 0},
        {"caf\xc3\xa9 \xe6\x97", 6},
        {"<|endoftext|>\xfe", 13},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = (int32_t *)(uintptr_t)1;
        size_t n = 7;
        assert_int_equal(ae_tokenizer_encode(t, bad[i].s, strlen(bad[i].s), &ids, &n), AE_ERR_ARG);
        assert_null(ids);
        assert_int_equal(n, 0);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", bad[i].off);
        if (!strstr(ae_last_error(), want)) fail_msg("\"%s\" lacks \"%s\"", ae_last_error(), want);
        char input[64];
        snprintf(input, sizeof input, "`%s`", bad[i].s);
        ae_test_catalogue("text to tokenise", input, ae_last_error());
    }
    // embedded NUL is valid text
    int32_t *ids;
    size_t n;
    assert_int_equal(ae_tokenizer_encode(t, "a\0b", 3, &ids, &n), AE_OK);
    char *dec;
    size_t dl;
    assert_int_equal(ae_tokenizer_decode(t, ids, n, &dec, &dl), AE_OK);
    assert_int_equal(dl, 3);
    assert_memory_equal(dec, "a\0b", 3);
    free(dec);
    free(ids);

    int32_t out_of_range[] = {39, 8192};
    dec = (char *)(uintptr_t)1;
    assert_int_equal(ae_tokenizer_decode(t, out_of_range, 2, &dec, &dl), AE_ERR_ARG);
    assert_null(dec);
    assert_non_null(strstr(ae_last_error(), "8192"));
    int32_t neg = -1;
    assert_int_equal(ae_tokenizer_decode(t, &neg, 1, &dec, &dl), AE_ERR_ARG);
    ae_decode_stream s = {0};
    assert_int_equal(ae_tokenizer_decode_next(t, &s, 9000, &dec, &dl), AE_ERR_ARG);
    // empty decode is an empty string
    assert_int_equal(ae_tokenizer_decode(t, NULL, 0, &dec, &dl), AE_OK);
    assert_string_equal(dec, "");
    free(dec);
    ae_tokenizer_free(t);
}

// A long text, encoded whole vs. in lines, and decode(encode(x)) == x.
static void test_roundtrip_corpus(void **state) {
    (void)state;
    ae_tokenizer *t;
    assert_int_equal(ae_tokenizer_load(ae_test_src("models/qwen3-micro"), &t), AE_OK);
    const char *corpus = ae_test_shared("data/corpus/general/valid.txt", "corpus round trip");
    char *buf;
    size_t len;
    if (corpus) {
        assert_int_equal(ae_file_read_all(corpus, &buf, &len), AE_OK);
        if (len > 300000) len = 300000;
        while (len > 0 && ((unsigned char)buf[len] & 0xC0) == 0x80) len--; // whole characters
    } else {
        const char *s =
            "Hello world!\n  Some text, with 123 numbers and \xe6\x97\xa5\xe6\x9c\xac. ";
        len = strlen(s) * 200;
        buf = malloc(len + 1);
        for (size_t i = 0; i < 200; i++) memcpy(buf + i * strlen(s), s, strlen(s));
    }
    int32_t *ids;
    size_t n;
    assert_int_equal(ae_tokenizer_encode(t, buf, len, &ids, &n), AE_OK);
    assert_true(n > 0 && n < len);
    char *dec;
    size_t dl;
    assert_int_equal(ae_tokenizer_decode(t, ids, n, &dec, &dl), AE_OK);
    assert_int_equal(dl, len);
    assert_memory_equal(dec, buf, len);
    check_stream(t, ids, n, dec, dl);
    free(dec);
    free(ids);
    free(buf);
    ae_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_teacher),    cmocka_unit_test(test_golden_qwen3),
        cmocka_unit_test(test_eos_and_specials),  cmocka_unit_test(test_merges_both_forms),
        cmocka_unit_test(test_added_token_flags), cmocka_unit_test(test_hf_unicode_and_flags),
        cmocka_unit_test(test_malformed),         cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_roundtrip_corpus),  cmocka_unit_test(test_nul_and_empty_tokens),
        cmocka_unit_test(test_split_literal),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
