// attnedit prepare-data, library side (see prepare.h).
#include "train/prepare.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "core/mem.h"
#include "core/progress.h"
#include "io/config.h"
#include "tok/tokenizer.h"
#include "train/data.h"

#define EOT "<|endoftext|>"
#define EOT_LEN (sizeof EOT - 1)

typedef struct {
    ae_atomic_file af;
    int open;
    const char *path;
    uint64_t docs, tokens;
} sink;

typedef struct {
    const ae_prepare_opts *o;
    ae_tokenizer *tok;
    uint32_t vocab, eos;
    sink out[2];
    uint64_t doc_index;
    uint64_t bytes_done; // bytes of finished input files
    ae_progress pg;
} prep;

static uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int ae_prepare_is_valid_doc(uint64_t index, double fraction) {
    if (!(fraction > 0)) return 0;
    uint64_t h = splitmix64(index ^ 0x61656476616c6964ull); // fixed seed ("aedvalid")
    return (double)(h >> 11) * (1.0 / 9007199254740992.0) < fraction;
}

// Offset of the first invalid UTF-8 sequence, or (size_t)-1.
static size_t utf8_invalid_at(const unsigned char *p, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) n = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            if (c == 0xe0) lo = 0xa0;
            else if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            if (c == 0xf0) lo = 0x90;
            else if (c == 0xf4) hi = 0x8f;
        } else return i;
        if (i + n > len) return i;
        for (size_t k = 1; k < n; k++) {
            unsigned b = p[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return i;
        }
        i += n;
    }
    return (size_t)-1;
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void progress(prep *P, uint64_t pos_in_file, int final) {
    if (!P->o->progress || !ae_progress_due(&P->pg, final)) return;
    double mb = (double)(P->bytes_done + pos_in_file) / 1e6, dt = ae_progress_elapsed(&P->pg);
    ae_progress_line(&P->pg, final, "prepare-data: %.1f MB read, %.2f MB/s, %llu tokens, %llu documents",
                     mb, dt > 0 ? mb / dt : 0.0,
                     (unsigned long long)(P->out[0].tokens + P->out[1].tokens),
                     (unsigned long long)(P->out[0].docs + P->out[1].docs));
}

static ae_status sink_open(sink *s, const char *path) {
    s->path = path;
    ae_status st = ae_atomic_open(&s->af, path);
    if (st != AE_OK) return ae_error_wrap(st, "cannot write output %s", path);
    s->open = 1;
    unsigned char zero[AE_TOKFILE_HEADER] = {0};
    return ae_atomic_write(&s->af, zero, sizeof zero);
}

static ae_status sink_put(sink *s, const int32_t *ids, size_t n, uint32_t eos) {
    AE_TRY(ae_atomic_write(&s->af, ids, n * sizeof *ids));
    AE_TRY(ae_atomic_write(&s->af, &eos, sizeof eos));
    s->docs++;
    s->tokens += n + 1;
    return AE_OK;
}

// Rewrites the header with the final count; the file is committed later.
static ae_status sink_finish(sink *s, const prep *P, const uint8_t hash[32]) {
    unsigned char hdr[AE_TOKFILE_HEADER];
    ae_tokfile_header(hdr, P->vocab, s->tokens, hash, P->eos);
    FILE *fp = s->af.fp;
    if (s->af.failed || fflush(fp) != 0 || fseek(fp, 0, SEEK_SET) != 0 ||
        fwrite(hdr, 1, sizeof hdr, fp) != sizeof hdr || fflush(fp) != 0) {
        s->af.failed = 1;
        return ae_errorf(AE_ERR_IO, "%s: write failed", s->path);
    }
    return AE_OK;
}

// Encodes one document (text[0..len), already valid UTF-8) and appends it to its split.
static ae_status put_doc(prep *P, const char *text, size_t len, const char *origin,
                         uint64_t where, int where_is_line) {
    if (len == 0) return AE_OK;
    int valid = ae_prepare_is_valid_doc(P->doc_index++, P->o->valid_fraction);
    int32_t *ids;
    size_t n;
    ae_status st = ae_tokenizer_encode(P->tok, text, len, &ids, &n);
    if (st != AE_OK)
        return ae_error_wrap(st, "%s: %s %llu", origin,
                             where_is_line ? "line" : "document at byte offset",
                             (unsigned long long)where);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= P->vocab) {
            free(ids);
            return ae_errorf(AE_ERR_FORMAT, "%s: tokenizer produced id %d outside [0, %u)",
                             origin, ids[i], P->vocab);
        }
    st = sink_put(&P->out[valid], ids, n, P->eos);
    free(ids);
    return st;
}

static ae_status put_trimmed(prep *P, const char *base, size_t a, size_t b, const char *origin) {
    while (a < b && is_ws((unsigned char)base[a])) a++;
    while (b > a && is_ws((unsigned char)base[b - 1])) b--;
    return put_doc(P, base + a, b - a, origin, a, 0);
}

static const char *find_eot(const char *s, size_t from, size_t len) {
    while (from + EOT_LEN <= len) {
        const char *p = memchr(s + from, '<', len - from - EOT_LEN + 1);
        if (!p) return NULL;
        if (!memcmp(p, EOT, EOT_LEN)) return p;
        from = (size_t)(p - s) + 1;
    }
    return NULL;
}

static ae_status do_text(prep *P, const char *s, size_t len, const char *origin) {
    if (find_eot(s, 0, len)) {
        size_t pos = 0;
        for (;;) {
            const char *e = find_eot(s, pos, len);
            size_t end = e ? (size_t)(e - s) : len;
            AE_TRY(put_trimmed(P, s, pos, end, origin));
            progress(P, end, 0);
            if (!e) break;
            pos = end + EOT_LEN;
        }
        return AE_OK;
    }
    // paragraphs separated by blank lines
    size_t pos = 0, doc_start = 0, doc_end = 0;
    int in_doc = 0;
    while (pos < len) {
        const char *nl = memchr(s + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - s) : len;
        int blank = 1;
        for (size_t i = pos; i < end && blank; i++)
            if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') blank = 0;
        if (!blank) {
            if (!in_doc) doc_start = pos;
            in_doc = 1;
            doc_end = end;
        } else if (in_doc) {
            AE_TRY(put_trimmed(P, s, doc_start, doc_end, origin));
            in_doc = 0;
            progress(P, end, 0);
        }
        pos = end + 1;
    }
    if (in_doc) AE_TRY(put_trimmed(P, s, doc_start, doc_end, origin));
    return AE_OK;
}

static ae_status do_jsonl(prep *P, const char *s, size_t len, const char *origin) {
    size_t pos = 0;
    uint64_t line = 0;
    while (pos < len) {
        const char *nl = memchr(s + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - s) : len;
        line++;
        size_t a = pos, b = end;
        while (a < b && is_ws((unsigned char)s[a])) a++;
        while (b > a && is_ws((unsigned char)s[b - 1])) b--;
        pos = end + 1;
        if (a == b) continue;
        const char *parse_end = NULL;
        cJSON *obj = cJSON_ParseWithLengthOpts(s + a, b - a, &parse_end, 0);
        if (!obj) {
            const char *ep = cJSON_GetErrorPtr();
            size_t col = ep && ep >= s + a && ep <= s + b ? (size_t)(ep - (s + a)) + 1 : 1;
            return ae_errorf(AE_ERR_FORMAT, "%s:%llu: malformed JSON (near column %zu)", origin,
                             (unsigned long long)line, col);
        }
        if (parse_end && parse_end < s + b) {
            cJSON_Delete(obj);
            return ae_errorf(AE_ERR_FORMAT,
                             "%s:%llu: malformed JSON line (extra text after the object at "
                             "column %zu)",
                             origin, (unsigned long long)line, (size_t)(parse_end - (s + a)) + 1);
        }
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            return ae_errorf(AE_ERR_FORMAT, "%s:%llu: expected a JSON object with a \"text\" string",
                             origin, (unsigned long long)line);
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "text");
        if (!t || !cJSON_IsString(t) || !t->valuestring) {
            cJSON_Delete(obj);
            return ae_errorf(AE_ERR_FORMAT, "%s:%llu: %s", origin, (unsigned long long)line,
                             t ? "\"text\" is not a string" : "no \"text\" field");
        }
        ae_status st = put_doc(P, t->valuestring, strlen(t->valuestring), origin, line, 1);
        cJSON_Delete(obj);
        AE_TRY(st);
        progress(P, end, 0);
    }
    return AE_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static ae_status do_file(prep *P, const char *path) {
    ae_mmap m;
    AE_TRY(ae_mmap_open(path, &m));
    const char *s = (const char *)m.data;
    size_t size = m.size;
    if (size >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) { // UTF-8 byte order mark
        s += 3;
        size -= 3;
    }
    size_t bad = utf8_invalid_at((const unsigned char *)s, size);
    ae_status st = AE_OK;
    if (bad != (size_t)-1) {
        uint64_t line = 1;
        for (size_t i = 0; i < bad; i++) line += s[i] == '\n';
        st = ae_errorf(AE_ERR_FORMAT,
                       "%s: not valid UTF-8 at byte offset %zu (line %llu, byte 0x%02X)", path,
                       bad + (size_t)(s - (const char *)m.data), (unsigned long long)line,
                       (unsigned char)s[bad]);
    } else if (ends_with(path, ".jsonl")) st = do_jsonl(P, s, size, path);
    else st = do_text(P, s, size, path);
    P->bytes_done += m.size;
    ae_mmap_close(&m);
    return st;
}

static ae_status find_eos(const char *model_dir, const ae_tokenizer *tok, uint32_t vocab,
                          uint32_t *eos) {
    int id = ae_tokenizer_eos_id(tok);
    if (id < 0) {
        ae_config cfg;
        char *cpath = ae_path_join(model_dir, "config.json");
        int have = cpath && ae_path_exists(cpath);
        free(cpath);
        if (have && ae_config_load(model_dir, &cfg) == AE_OK) {
            id = cfg.eos_token_id;
            ae_config_free(&cfg);
        }
    }
    if (id < 0)
        return ae_errorf(AE_ERR_ARG,
                         "%s: no eos token (neither tokenizer_config.json \"eos_token\" nor "
                         "config.json \"eos_token_id\")",
                         model_dir);
    if ((uint32_t)id >= vocab)
        return ae_errorf(AE_ERR_ARG, "%s: eos id %d is outside the tokenizer's vocabulary (%u)",
                         model_dir, id, vocab);
    *eos = (uint32_t)id;
    return AE_OK;
}

// Refuses outputs that are, hold or lie inside an input (the model folder, an input file) and a
// validation file that is the training file.
static ae_status check_outputs(const ae_prepare_opts *o, const char *vpath) {
    const char *outs[2] = {o->out, vpath};
    const char *what[2] = {"--out", o->valid_out ? "--valid-out" : "the validation file"};
    for (int k = 0; k < 2 && outs[k]; k++) {
        AE_TRY(ae_path_check_output(what[k], outs[k], "--model", o->model_dir));
        for (int i = 0; i < o->n_inputs; i++)
            AE_TRY(ae_path_check_output(what[k], outs[k], "input", o->inputs[i]));
        if (ae_path_is_dir(outs[k]))
            return ae_errorf(AE_ERR_ARG, "%s '%s' is a folder, expected the path of a token file",
                             what[k], outs[k]);
    }
    if (!vpath) return AE_OK;
    char *a = ae_path_canonical(vpath), *b = a ? ae_path_canonical(o->out) : NULL;
    ae_status st = a && b ? AE_OK : AE_ERR_IO;
    if (st == AE_OK && !strcmp(a, b))
        st = ae_errorf(AE_ERR_ARG, "%s '%s' is the same file as --out '%s' (%s); the validation "
                       "file must differ", what[1], vpath, o->out, a);
    free(a);
    free(b);
    return st;
}

ae_status ae_prepare_data(const ae_prepare_opts *o, ae_prepare_result *r) {
    memset(r, 0, sizeof *r);
    const uint32_t one = 1;
    if (*(const unsigned char *)&one != 1)
        return ae_errorf(AE_ERR_UNSUPPORTED, "token files are little-endian; this host is not");
    if (!(o->valid_fraction >= 0 && o->valid_fraction < 1))
        return ae_errorf(AE_ERR_ARG, "--valid-fraction %g must be in [0, 1)", o->valid_fraction);
    if (o->n_inputs < 1) return ae_errorf(AE_ERR_ARG, "no input files");
    for (int i = 0; i < o->n_inputs; i++)
        AE_TRY(ae_file_check_regular("input", o->inputs[i], "a text or .jsonl file"));
    int want_valid = o->valid_fraction > 0;
    char *vpath = NULL;
    if (want_valid) {
        if (o->valid_out) vpath = ae_strdup(o->valid_out);
        else if ((vpath = ae_malloc(strlen(o->out) + 7))) sprintf(vpath, "%s.valid", o->out);
        if (!vpath) return AE_ERR_NOMEM;
    }
    ae_status pst = check_outputs(o, vpath);
    if (pst != AE_OK) {
        free(vpath);
        return pst;
    }
    if (vpath) snprintf(r->valid_path, sizeof r->valid_path, "%s", vpath);
    prep P;
    memset(&P, 0, sizeof P);
    P.o = o;
    ae_progress_start(&P.pg, 0);
    uint8_t hash[32];
    ae_status st = ae_tokenizer_load(o->model_dir, &P.tok);
    if (st == AE_OK) st = ae_tokenizer_file_hash(o->model_dir, hash, r->tokenizer_sha256);
    if (st == AE_OK) {
        P.vocab = (uint32_t)ae_tokenizer_vocab_size(P.tok);
        st = find_eos(o->model_dir, P.tok, P.vocab, &P.eos);
    }
    if (st == AE_OK) st = sink_open(&P.out[0], o->out);
    if (st == AE_OK && want_valid) st = sink_open(&P.out[1], vpath);
    for (int i = 0; st == AE_OK && i < o->n_inputs; i++) st = do_file(&P, o->inputs[i]);
    if (st == AE_OK) progress(&P, 0, 1);
    if (st == AE_OK && P.out[0].tokens + P.out[1].tokens == 0)
        st = o->n_inputs == 1
                 ? ae_errorf(AE_ERR_ARG, "%s: no tokens (the file holds no text)", o->inputs[0])
                 : ae_errorf(AE_ERR_ARG, "no tokens: the %d input files hold no text", o->n_inputs);
    if (st == AE_OK && want_valid && (P.out[0].docs == 0 || P.out[1].docs == 0))
        st = ae_errorf(AE_ERR_ARG,
                       "--valid-fraction %g put %llu of the %llu documents in the validation "
                       "set, leaving the %s set empty; give more documents or change the fraction",
                       o->valid_fraction, (unsigned long long)P.out[1].docs,
                       (unsigned long long)(P.out[0].docs + P.out[1].docs),
                       P.out[0].docs == 0 ? "training" : "validation");
    for (int k = 0; st == AE_OK && k < 1 + want_valid; k++) st = sink_finish(&P.out[k], &P, hash);
    if (st == AE_OK && want_valid) {
        P.out[1].open = 0;
        st = ae_atomic_commit(&P.out[1].af);
        if (st == AE_OK) {
            P.out[0].open = 0;
            st = ae_atomic_commit(&P.out[0].af);
            if (st != AE_OK) unlink(vpath); // keep the pair consistent
        }
    } else if (st == AE_OK) {
        P.out[0].open = 0;
        st = ae_atomic_commit(&P.out[0].af);
    }
    for (int k = 0; k < 2; k++)
        if (P.out[k].open) ae_atomic_abort(&P.out[k].af);
    if (st == AE_OK) {
        for (int k = 0; k < 2; k++) {
            r->docs[k] = P.out[k].docs;
            r->tokens[k] = P.out[k].tokens;
        }
        r->bytes = P.bytes_done;
        r->vocab_size = P.vocab;
        r->eos_id = P.eos;
        r->seconds = ae_progress_elapsed(&P.pg);
    } else r->valid_path[0] = '\0';
    ae_tokenizer_free(P.tok);
    free(vpath);
    return st;
}
