// Shared helpers for the cmocka test programs.
#ifndef AE_TESTUTIL_H
#define AE_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/dtype.h"
#include "core/rng.h"
#include "model/student.h"
#include "tok/tokenizer.h"
#include "util/ref.h"

struct cJSON;

// Absolute path of a file under the source tree: ae_test_src("tests/fixtures/x") (static buffer
// per call slot; copy if you keep it).
const char *ae_test_src(const char *rel);
// The attnedit binary the CLI tests run: AE_TEST_CLI when set, else the build's. (AE_TEST_SOURCE_DIR
// likewise replaces the source tree ae_test_src resolves against: for prebuilt tests run on
// another machine, as scripts/test-gpu.sh with AE_PREBUILT=1 does.)
const char *ae_test_cli_path(void);
// The ../shared folder beside the repo (AE_SHARED_DIR overrides), or NULL when absent.
const char *ae_test_shared_dir(void);
// Path under shared/, or NULL (and prints "SKIP <what>: ../shared not found") when absent; with
// AE_REQUIRE_SHARED=1 (CI) an absent path prints FAIL and exits 1 instead, so CI never passes by
// skipping.
const char *ae_test_shared(const char *rel, const char *what);
// Exit status of a test program: 1 when cmocka reported failures, 77 (ctest: skipped) when any
// check was skipped for lack of ../shared, else 0.   return ae_test_finish(cmocka_run_...(...));
int ae_test_finish(int failures);
// A fresh empty temporary directory (removed by ae_test_rmtree).
char *ae_test_tmpdir(void);
void ae_test_rmtree(const char *dir);
// Number of entries in a folder (without . and ..).
int ae_test_count_entries(const char *dir);
// The named files of dir (NULL-terminated list) concatenated, each after a line "== name size"
// (an absent file: size 0), to check that a step left a folder as it was; *len: its bytes
// (binary files hold NULs: compare with ae_test_same_state, never strcmp).
char *ae_test_folder_state(const char *dir, const char *const *files, size_t *len);
// 1 when two folder states (a, na bytes; b, nb bytes) are byte for byte the same.
int ae_test_same_state(const char *a, size_t na, const char *b, size_t nb);
// Writes bytes to a file; returns 0 on success.
int ae_test_write_file(const char *path, const void *data, size_t n);

// Opens the CUDA backend for a GPU test: 0 and *be set, or the exit code the program should
// return: 77 (ctest: skipped) with "SKIP no GPU: <reason>" when the build has no CUDA or the
// machine no usable GPU — 1 instead when AE_REQUIRE_GPU=1 (scripts/test-gpu.sh) — and 1 when
// the backend fails to open. poison: open with AE_CUDA_POISON=1 (new allocations NaN-filled).
struct ae_backend;
int ae_test_open_gpu(const struct ae_backend **be, int poison);
// The same without printing: 0 and *be set; 77 when there is no usable GPU or CUDA build, 1 when
// the backend fails to open; why (cap bytes) then says what is missing or wrong.
int ae_test_try_gpu(const struct ae_backend **be, int poison, char *why, size_t cap);

// The main of a cmocka GPU test program in one call: opens the CUDA backend (ae_test_open_gpu:
// SKIP without a GPU, a failure with AE_REQUIRE_GPU=1), makes a fresh temporary folder when tmp
// is set, runs before() when set (0 goes on; anything else is the exit status and the group is
// not run), runs the group, then removes the folder (*tmp freed, NULL) and closes the backend.
// Returns the program's exit status (ae_test_finish: 1 on failures, 77 when checks were skipped
// for lack of ../shared, else 0).
//   static const ae_backend *g_gpu;   static char *g_tmp;
//   const struct CMUnitTest tests[] = {cmocka_unit_test(test_x), ...};
//   ae_test_gpu_group g = {.gpu = &g_gpu, .tmp = &g_tmp};
//   return ae_test_gpu_main(&g, tests);
typedef struct {
    const struct ae_backend **gpu;       // set while the group runs
    int poison;                          // open with AE_CUDA_POISON=1 (new allocations NaN-filled)
    char **tmp;                          // NULL: no temporary folder
    int (*before)(void);                 // NULL: none
    CMFixtureFunction setup, teardown;   // the group's own (NULL: none)
} ae_test_gpu_group;
int ae_test_gpu_run(const ae_test_gpu_group *g, const char *name, const struct CMUnitTest *tests,
                    size_t n);
#define ae_test_gpu_main(g, tests)                                                                 \
    ae_test_gpu_run((g), #tests, (tests), sizeof(tests) / sizeof((tests)[0]))

// x[i] = scale * N(0, 1) from r.   x: (n)
void ae_test_fill_normal(float *x, size_t n, float scale, ae_rng *rng);
// ||a - b|| / ||b|| in double (L2 over n values).
double ae_test_rel_err(const float *a, const float *b, size_t n);
// The double-precision references (log-sum-exp, attention, norms, RoPE, ...): util/ref.h.
// A float array as a new double one (caller frees).   x: (n)
double *ae_test_to_double(const float *x, size_t n);

// ---- host arrays (the GPU tests' inputs, drawn once so both backends see the same values)
// x rounded to the nearest bf16 (ties to even), as a float.
float ae_test_bf16(float x);
// Rounds x in place to the values a tensor of dtype dt holds (BF16: ae_test_bf16; F32 as is).
//   x: (n)
void ae_test_round_to(float *x, size_t n, ae_dtype dt);
// A new float array (at least one value allocated: n = 0 gives a pointer the ops may be handed);
// fails the test when out of memory. Caller frees.
float *ae_test_floats(size_t n);
// A new copy of x.   x: (n)
float *ae_test_floats_copy(const float *x, size_t n);
// A new array of scale · N(0, 1) drawn from r (ae_test_fill_normal, n draws), rounded to dt.
float *ae_test_normal(ae_rng *r, size_t n, float scale, ae_dtype dt);
// A new (T, K) MoE routing: for each token K distinct experts of [0, E) drawn from r (a partial
// Fisher-Yates shuffle, K draws a token), never expert `skip` (-1: none; then E - 1 >= K).
// Fails the test when out of memory. Caller frees.
int32_t *ae_test_routing(ae_rng *r, int T, int K, int E, int skip);

// Runs the attnedit CLI with argv (NULL-terminated, argv[0] excluded) and captures stdout and
// stderr (heap strings, caller frees). Returns the exit status (or 128+signal when killed).
int ae_test_run_cli(const char *const *args, const char *stdin_text, char **out, char **err);

// The same without stdin, as one value: exit status, stdout and stderr (free out and err).
typedef struct {
    int rc;
    char *out, *err;
} ae_test_cli_result;
ae_test_cli_result ae_test_cli(const char *const *args);

// The training data of the distillation tests: a fresh temporary directory (*dir) holding
// train.tok (*tokens), data/sample.txt tokenised by `prepare-data --model model_rel` (a path in
// the source tree). Returns prepare-data's exit status (message on stderr when non-zero); free
// both strings and ae_test_rmtree(*dir) afterwards.
int ae_test_prepare_tokens(const char *model_rel, char **dir, char **tokens);

// ---- the robustness catalogue (docs/ROBUSTNESS.md, made by scripts/robustness-catalogue.sh)
// With AE_CATALOGUE=FILE in the environment, records a bad input that a test saw refused: one
// JSON line appended to FILE with the test's source file, a section (which input, which
// command), the input (what is wrong with it, or the command line) and the message the user
// gets. Without AE_CATALOGUE nothing happens. The script writes the tests' temporary folders as
// <tmp> and the source tree as <src>.
#define ae_test_catalogue(section, input, message)                                                 \
    ae_test_catalogue_at(__FILE__, section, input, message)
// The same with the input shown as the command line `attnedit ARG...` (args NULL-terminated,
// argv[0] excluded; arguments quoted as a shell needs them), then ": note" unless note is NULL.
#define ae_test_catalogue_cli(section, args, note, message)                                        \
    ae_test_catalogue_cli_at(__FILE__, section, args, note, message)
void ae_test_catalogue_at(const char *file, const char *section, const char *input,
                          const char *message);
void ae_test_catalogue_cli_at(const char *file, const char *section, const char *const *args,
                              const char *note, const char *message);

// ---- the eval tests' texts (test_eval_ppl, test_eval_kl: documents split on "<|endoftext|>")
// The length of the first `max` bytes of s (len bytes) cut back to a line end (so whole UTF-8
// characters): 0 when no line ends within them.
size_t ae_test_cut_at_line(const char *s, size_t len, size_t max);
// data/sample.txt's two documents, each cut to its first `max` bytes (ae_test_cut_at_line),
// joined by "<|endoftext|>": a new string of *len bytes (caller frees); NULL when the file cannot
// be read or has no separator.
char *ae_test_sample_docs(size_t max, size_t *len);
// Calls doc(ids, n, ctx) once per document of text (len bytes, split on "<|endoftext|>"; the
// last one after the last separator), each tokenised by tok (the test fails if encode does).
//   ids: (n), freed after the call
typedef void (*ae_test_doc_fn)(const int32_t *ids, size_t n, void *ctx);
void ae_test_each_doc(const ae_tokenizer *tok, const char *text, size_t len, ae_test_doc_fn doc,
                      void *ctx);
// The number o.key of a parsed JSON object; fails the test naming key when it is absent or not
// a number.
double ae_test_json_num(const struct cJSON *o, const char *key);

// ---- models and files on disk (the export tests)
// dir/name as a new string (caller frees); fails the test when out of memory.
char *ae_test_path_in(const char *dir, const char *name);
// The model of dir on the cpu backend; fails the test with dir and the library's message.
ae_model *ae_test_load_cpu(const char *dir);
// A student of the teacher in folder `teacher`, made by spec and saved (as convert saves it) to
// dir/name; returns that path (caller frees). Fails the test on an error.
char *ae_test_save_student(const char *teacher, const ae_student_spec *spec, const char *dir,
                           const char *name);
// dir/name parsed as JSON (the test fails when it is unreadable or not JSON; cJSON_Delete it),
// and o written to dir/name (cJSON_Print's layout).
struct cJSON *ae_test_read_json(const char *dir, const char *name);
void ae_test_write_json(const char *dir, const char *name, const struct cJSON *o);
// A Qwen3-MoE teacher of 2 layers from the fixture moe_sparse_step2_untied (decoder_sparse_step
// 2: layer 0 dense, layer 1 MoE, i.e. one leading dense layer) with norm_topk_prob as given,
// saved to dir/name (no tokenizer: the fixture has none); returns that path (caller frees).
// Uses and removes dir/moe2-config.
char *ae_test_leading_dense_moe(const char *dir, const char *name, int norm_topk_prob);
// Fails the test when dir holds an entry named "*.tmp.*" (a writer's temporary left behind).
void ae_test_assert_no_temp(const char *dir);
// A full disk: runs attempt(ctx) in a child process whose files may not grow beyond `limit` bytes
// (RLIMIT_FSIZE: a larger write fails with EFBIG). Fails the test unless attempt returned an error
// there (printed on stderr as "(expected) <message>").
void ae_test_write_fails_beyond(size_t limit, ae_status (*attempt)(void *ctx), void *ctx);

// The students the eval tests make of models/qwen3-micro (test_eval_tasks, test_cuda_eval), one
// shape per target: GateSWA with a window of 8 (most eval requests are longer than its ring) and
// full attention in every other layer, elementwise gate, seed 3; MLA with kv_lora_rank 32 and
// qk_rope_dim 8, seed 5. Converts the loaded teacher m in place (ae_student_make), from the
// teacher's weights (init_teacher 1) or at random (0).
ae_status ae_test_eval_student(ae_model *m, ae_attn_kind target, int init_teacher);

// The plain (non-cmocka) GPU and multi-rank test programs count failed checks themselves:
//   static int g_fail;
//   #define CHECK(cond, ...) AE_TEST_CHECK(g_fail, "", cond, __VA_ARGS__)
// prints "<prefix>FAIL file:line: <message>" (flushed: ranks and children share stdout) and
// counts it in the given counter when cond is false.
#define AE_TEST_CHECK(counter, prefix, cond, ...)                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("%sFAIL %s:%d: ", (prefix), __FILE__, __LINE__);                                \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            fflush(stdout);                                                                        \
            (counter)++;                                                                           \
        }                                                                                          \
    } while (0)

// The number obj.key of dir/conversion.json (a run's settings and results), NAN when the file,
// the object or the number is absent.
double ae_test_run_number(const char *dir, const char *obj, const char *key);
// The number `key` of record k (0-based; −1: the last) of dir/metrics.jsonl, NAN when the file,
// the record or the number is absent.
double ae_test_metric(const char *dir, int k, const char *key);
// The records (lines) of dir/metrics.jsonl, 0 when it is absent.
int ae_test_metric_records(const char *dir);

#endif
