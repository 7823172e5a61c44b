// libFuzzer harness: the text and .jsonl files `attnedit prepare-data` reads (any bytes),
// through ae_prepare_data with a small real tokenizer (fuzz/data/tok-mini: the bundled
// qwen3-micro tokenizer cut down to its byte tokens and first merges). The first input byte
// picks the file kind (bit 0: .jsonl, else text) and the validation fraction (bit 1: 0.5, else
// none); the rest is the file.
// Promises checked (train/prepare.h, train/data.h): AE_OK or an error with a message; on error
// nothing is left at the output paths (no temp file either); on success each output is a token
// file that ae_tokfile_open accepts, with the counts and eos id the result reports, ending with
// an eos.
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "train/data.h"
#include "train/prepare.h"

static void copy_in(const char *from, const char *rel) {
    FILE *f = fopen(from, "rb");
    if (!f) fz_fail(__FILE__, __LINE__, "setup", "cannot open %s", from);
    size_t cap = 1 << 16, n = 0, k;
    char *buf = malloc(cap);
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += k) == cap) buf = realloc(buf, cap *= 2);
    fclose(f);
    if (!buf) abort();
    fz_write(rel, buf, n);
    free(buf);
}

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    copy_in(fz_src("fuzz/data/tok-mini/tokenizer.json"), "model/tokenizer.json");
    copy_in(fz_src("fuzz/data/tok-mini/tokenizer_config.json"), "model/tokenizer_config.json");
    fz_mkdir("out");
}

static int dir_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

static void check_output(const char *path, uint64_t tokens, uint64_t docs, const ae_prepare_result *r) {
    ae_tokfile f;
    fz_begin();
    ae_status st = ae_tokfile_open(path, &f);
    fz_check(st, "ae_tokfile_open");
    FZ_ASSERT(st == AE_OK, "prepare-data wrote a token file that does not open: %s", ae_last_error());
    FZ_ASSERT(f.n_tokens == tokens && f.vocab_size == r->vocab_size && f.eos_id == r->eos_id,
              "token file header disagrees with the result");
    FZ_ASSERT(docs > 0 && tokens >= 2 * docs, "%llu documents, %llu tokens",
              (unsigned long long)docs, (unsigned long long)tokens);
    FZ_ASSERT(f.ids[f.n_tokens - 1] == f.eos_id, "the last document is not followed by eos");
    uint64_t eos = 0;
    for (uint64_t i = 0; i < f.n_tokens; i++) eos += f.ids[i] == f.eos_id;
    FZ_ASSERT(eos >= docs, "%llu eos for %llu documents", (unsigned long long)eos,
              (unsigned long long)docs);
    ae_tokfile_close(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    setup();
    int jsonl = data[0] & 1, valid = (data[0] >> 1) & 1;
    const char *in_rel = jsonl ? "in/docs.jsonl" : "in/docs.txt";
    fz_remove("in");
    fz_write(in_rel, data + 1, size - 1);
    char in[4096], out[4096], vout[4096], model[4096];
    snprintf(in, sizeof in, "%s", fz_path(in_rel));
    snprintf(out, sizeof out, "%s", fz_path("out/train.tok"));
    snprintf(vout, sizeof vout, "%s", fz_path("out/train.tok.valid"));
    snprintf(model, sizeof model, "%s", fz_path("model"));
    const char *inputs[1] = {in};
    ae_prepare_opts o = {.model_dir = model, .out = out, .valid_fraction = valid ? 0.5 : 0.0,
                         .inputs = inputs, .n_inputs = 1};
    ae_prepare_result r;
    fz_begin();
    ae_status st = ae_prepare_data(&o, &r);
    fz_check(st, "ae_prepare_data");
    if (st != AE_OK) {
        FZ_ASSERT(dir_empty(fz_path("out")), "a failed prepare-data left files in the output folder");
        return 0;
    }
    check_output(out, r.tokens[0], r.docs[0], &r);
    if (valid) check_output(vout, r.tokens[1], r.docs[1], &r);
    else FZ_ASSERT(r.tokens[1] == 0 && r.docs[1] == 0, "validation tokens without a fraction");
    fz_remove("out/train.tok");
    fz_remove("out/train.tok.valid");
    return 0;
}
