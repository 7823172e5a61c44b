// Pass-key retrieval (Mohtashami & Jaggi 2023, the long-context check LongLoRA and others use):
// a random K-digit key hidden at a chosen depth of a long, dull text, then asked for at the end.
//
// Prompt (eval/passkey_prompt.c; filler and task line are our own):
//   <task line>\n<filler> ... The pass key is 71432. Remember it. 71432 is the pass key. <filler>
//   ...\nWhat is the pass key? The pass key is
// The filler is a short cycle of neutral sentences repeated until prompt + answer fill the
// target length in tokens of the model's tokenizer, topped up with shorter sentences (so it is
// within a token or two of the length, never over); the key sentence goes at the sentence
// boundary nearest depth x the filler's tokens. The answer is the key as it follows the
// prompt: encode(prompt + " " + key) minus encode(prompt).
//
// Scoring (eval/passkey_score.c), per trial: the prompt runs once into the KV cache; the answer
// tokens run teacher-forced after it (mean log-likelihood per answer token); greedy generation
// of as many tokens as the answer has gives the prediction, and the trial is correct when the
// prediction is the key (ae_passkey_match).
#ifndef AE_EVAL_PASSKEY_H
#define AE_EVAL_PASSKEY_H

#include <stdint.h>

#include "model/model.h"
#include "tok/tokenizer.h"

#define AE_PASSKEY_MAX_DIGITS 32

typedef struct {
    char *text;                            // the prompt, ending with "The pass key is"
    char key[AE_PASSKEY_MAX_DIGITS + 1];   // the digits
    int length;                            // target tokens (prompt + answer)
    double depth;                          // requested depth in [0, 1]
    int32_t *ids;                          // (n) prompt tokens
    int n;
    int32_t *answer;                       // (n_answer) tokens of " <key>" after the prompt
    int n_answer;
    int sentences, key_after;              // filler sentences, and how many precede the key
    int key_pos;                           // token index where the key sentence starts
    int filler_tokens, filler_before;      // tokens of the filler (key sentence excluded), and
                                           // of the filler before the key sentence
} ae_passkey_prompt;

// The key of one trial: `digits` decimal digits (the first not 0) drawn from a generator seeded
// by (seed, length, depth, trial), so a cell's keys do not depend on which other cells run.
// out holds digits + 1 bytes; digits in [1, AE_PASSKEY_MAX_DIGITS].
void ae_passkey_make_key(uint64_t seed, int length, double depth, int trial, int digits, char *out);

// Builds the prompt of `length` tokens (prompt + answer) with `key` at `depth`. AE_ERR_ARG when
// the length cannot hold the task line, the key sentence, the question and the answer (the
// message gives the least length that can), or depth is outside [0, 1].
ae_status ae_passkey_build(const ae_tokenizer *tok, int length, double depth, const char *key,
                           ae_passkey_prompt *out);
// The tokens of prompt text and answer " key" for another tokenizer (same rule as the build).
// *ids and *answer heap-allocated.
ae_status ae_passkey_encode(const ae_tokenizer *tok, const char *text, const char *key,
                            int32_t **ids, int *n, int32_t **answer, int *n_answer);
void ae_passkey_prompt_free(ae_passkey_prompt *p);

// 1 when the generated text `pred` states the key: after leading white space, exactly the key's
// digits, followed by the end or by a character that is not a digit (" 71432", "71432.",
// " 71432 is"); 0 otherwise (" 7143", " 714321", "key 71432", "").
int ae_passkey_match(const char *key, const char *pred);

// Every prompt of a run: lengths x depths x trials, cell-major (trial fastest).
typedef struct {
    int n_lengths, n_depths, trials, digits;
    uint64_t seed;
    int *lengths;                // (n_lengths)
    double *depths;              // (n_depths)
    ae_passkey_prompt *prompts;  // (n_lengths * n_depths * trials)
} ae_passkey_set;

ae_status ae_passkey_set_build(ae_passkey_set *s, const ae_tokenizer *tok, const int *lengths,
                               int n_lengths, const double *depths, int n_depths, int trials,
                               int digits, uint64_t seed);
void ae_passkey_set_free(ae_passkey_set *s);
static inline int ae_passkey_index(const ae_passkey_set *s, int li, int di, int t) {
    return (li * s->n_depths + di) * s->trials + t;
}

// One trial's result for one model.
typedef struct {
    char *pred;      // greedy generation (heap), decoded text
    int correct;     // ae_passkey_match(key, pred)
    double loglik;   // mean log-likelihood per answer token (teacher-forced), nats
    int n;           // prompt tokens this model saw
} ae_passkey_score;

typedef void (*ae_passkey_progress_fn)(void *ud, int done, int total);

// Scores every prompt of s on m. tok: m's tokenizer (decodes the predictions); reencode: 0 when
// tok is the one that built s (its tokens are used), 1 to encode the texts again with tok.
// AE_ERR_ARG when a prompt and its answer exceed m's max_position_embeddings. out:
// (n_lengths * n_depths * trials), freed with ae_passkey_scores_free (also on failure).
ae_status ae_passkey_run(const ae_model *m, const ae_tokenizer *tok, int reencode,
                         const ae_passkey_set *s, ae_passkey_progress_fn progress, void *ud,
                         ae_passkey_score *out);
void ae_passkey_scores_free(ae_passkey_score *sc, int n);
// Exact-match accuracy and mean log-likelihood per answer token of cell (li, di).
void ae_passkey_cell(const ae_passkey_set *s, const ae_passkey_score *sc, int li, int di,
                     double *acc, double *loglik);

// Lower-level: one prompt on m (ids (n), answer (n_answer)); the scorer holds the KV cache and
// buffers for prompts of up to max_tokens tokens and answers of up to max_answer.
typedef struct ae_passkey_scorer ae_passkey_scorer;
ae_status ae_passkey_scorer_init(const ae_model *m, const ae_tokenizer *tok, int max_tokens,
                                 int max_answer, ae_passkey_scorer **out);
ae_status ae_passkey_score_one(ae_passkey_scorer *sc, const int32_t *ids, int n,
                               const int32_t *answer, int n_answer, const char *key,
                               ae_passkey_score *out);
void ae_passkey_scorer_free(ae_passkey_scorer *sc);

// Output (eval/passkey_out.c). One model's results with its label.
typedef struct {
    const char *name, *path;
    int max_positions;
    const ae_passkey_score *scores;
} ae_passkey_model;

// The JSON document of the run (see docs/EVAL.md): heap string.
char *ae_passkey_json(const ae_passkey_set *s, const ae_passkey_model *models, int n_models);
// Written atomically to path.
ae_status ae_passkey_write_json(const char *path, const ae_passkey_set *s,
                                const ae_passkey_model *models, int n_models);
// The heat maps as one PNG written atomically: per model a row of two panels, exact-match
// accuracy (0..1) and mean key log-likelihood per token (one colour range for all models).
ae_status ae_passkey_write_png(const char *path, const ae_passkey_set *s,
                               const ae_passkey_model *models, int n_models);

#endif
