// Library side of `attnedit prepare-data`: tokenises text and jsonl files into token files
// (format in train/data.h).
//
// Documents:
//   - text file that contains the literal "<|endoftext|>": the pieces between separators;
//   - other text files: paragraphs separated by one or more blank lines (a line holding only
//     spaces, tabs or a CR counts as blank);
//   - "*.jsonl": one JSON object per line with a string field "text" (blank lines skipped);
// Text-file documents have leading and trailing whitespace (space, tab, CR, LF) removed; jsonl
// texts are used as they are. Empty documents are skipped. A leading UTF-8 byte order mark is
// dropped; anything else that is not UTF-8 is an error naming the file and byte offset. Each
// document is encoded on its own (special tokens written in the text are recognised) and is
// followed by one eos id.
//
// Validation split: document i (0-based over all inputs, in the order given, empty documents not
// counted) goes to the validation file when ae_prepare_is_valid_doc(i, fraction) — a hash of i
// with a fixed seed, so the split depends only on the document order and the fraction.
#ifndef AE_TRAIN_PREPARE_H
#define AE_TRAIN_PREPARE_H

#include <stdint.h>

#include "core/error.h"

typedef struct {
    const char *model_dir;         // folder with tokenizer.json (+ tokenizer_config.json)
    const char *out;               // training token file
    const char *valid_out;         // validation token file; NULL: "<out>.valid"
    double valid_fraction;         // in [0, 1); 0: no validation file
    const char *const *inputs;
    int n_inputs;
    int progress;                  // progress lines (MB/s, tokens) on stderr, at most every 0.5 s
} ae_prepare_opts;

typedef struct {
    uint64_t docs[2], tokens[2];   // [0] training, [1] validation; tokens include the eos ids
    uint64_t bytes;                // input bytes read
    uint32_t vocab_size, eos_id;
    char tokenizer_sha256[65];     // hex
    char valid_path[4096];         // the validation file written ("" when none)
    double seconds;
} ae_prepare_result;

// Writes the token file(s) atomically: on any error nothing is left at the output paths (a
// previous file there stays as it was). Errors name the input file (and line or byte offset).
// Inputs must be regular files (they are mapped, not read into memory, so they have no size
// limit); an output that is, contains or lies inside an input or the model folder is refused
// before anything is written.
ae_status ae_prepare_data(const ae_prepare_opts *o, ae_prepare_result *r);

// 1 if document `index` belongs to the validation set for this fraction.
int ae_prepare_is_valid_doc(uint64_t index, double fraction);

#endif
