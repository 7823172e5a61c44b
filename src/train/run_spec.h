// Everything that defines a conversion run, kept in the student folder's conversion.json so a
// run can be resumed (`attnedit convert --resume OUT`), started over (`--restart OUT`) and
// reproduced: teacher path and content hash, target spec, data file and hash, every
// hyper-parameter, and, once finished, per-stage token counts, final losses and wall time.
//
// Nothing read back from a run folder is trusted: every field is checked (type, range, the
// same limits as the command-line options) and, for --resume, against the student's own
// config.json, with one message naming the file and the field.
#ifndef AE_TRAIN_RUN_SPEC_H
#define AE_TRAIN_RUN_SPEC_H

#include <stddef.h>

#include "model/student.h"
#include "train/distill.h"

typedef struct {
    char teacher[4096];
    char teacher_hash[65];  // SHA-256 over config.json and the safetensors files, in name order
    char data[4096];        // token file ("" = no training)
    char data_hash[65];
    ae_student_spec spec;   // layers/full_layers point into the arrays below
    int layers[1024], full_layers[1024];
    ae_distill_opts opts;
    int done;               // read back: "status" is "done" (the run finished)
    ae_init_report init_report; // read back: an MLA teacher init's figures (n_layers 0: none)
} ae_run_spec;

// ---- limits of the settings, shared by the command-line options (cli/cmd_convert.c) and the
// checks of a conversion.json read back
#define AE_RUN_MAX_DIM (1 << 20)    // MLA ranks and head dims, layer indices, --full-every
#define AE_RUN_MAX_WINDOW (1 << 30) // --window
#define AE_RUN_MAX_COUNT (1 << 24)  // --ctx, --batch, --accum, --save-every, --log-every
#define AE_RUN_MAX_TOKENS 1e15      // --stage1-tokens, --stage2-tokens
#define AE_RUN_MAX_MINUTES 1e6      // --save-minutes
#define AE_RUN_MAX_STEP_TOKENS ((int64_t)1 << 40) // ctx · batch · accum: tokens per optimizer step

// One numeric training setting: command-line option, conversion.json field (under "train"),
// where it lives in ae_distill_opts, its type and range. zero_ok: the field may also hold 0,
// the library's "off" value that no option gives (save_every 0: only at stage ends).
typedef struct {
    const char *option, *field;
    size_t offset;
    int is_float;
    double lo, hi;
    int zero_ok;
} ae_run_setting;

extern const ae_run_setting ae_run_settings[]; // ends with an entry whose option is NULL

// SHA-256 (hex) of a model folder's config.json and *.safetensors files.
ae_status ae_model_dir_hash(const char *dir, char hex[65]);
ae_status ae_file_hash(const char *path, char hex[65]);

// conversion.json text; res may be NULL (run not finished).
char *ae_run_spec_json(const ae_run_spec *r, const ae_model *student, const ae_init_report *rep,
                       const ae_distill_result *res);
// Reads out_dir/conversion.json and checks every field it reads: type, range, enumerations,
// hashes, seeds, consistency between fields (a run with training budgets and a data file).
ae_status ae_run_spec_load(const char *out_dir, ae_run_spec *r);
// Checks the target settings of a loaded spec against the student's out_dir/config.json (kind,
// replaced layers, MLA dims, GateSWA window, gate, sinks and full/sliding pattern).
ae_status ae_run_spec_check_student(const ae_run_spec *r, const char *out_dir);

// ---- checked reads of JSON fields of files read back from a run folder. `name` is the field
// as messages show it ("train.ctx", "loader_rng[2]"); the key looked up in o is the part after
// its last '.'. Errors (AE_ERR_FORMAT) name the file and the field:
// "<path>: train.ctx is -5; must be in [2, 16777216]".
struct cJSON;
typedef enum { AE_JSON_NUMBER, AE_JSON_STRING, AE_JSON_BOOL, AE_JSON_ARRAY, AE_JSON_OBJECT } ae_json_type;
ae_status ae_json_field(const struct cJSON *o, const char *path, const char *name, ae_json_type type,
                        const struct cJSON **v);
// The check of a value already found (v may be NULL: missing).
ae_status ae_json_check_type(const struct cJSON *v, const char *path, const char *name, ae_json_type type);
// An integer (a number without fraction) in [lo, hi].
ae_status ae_json_int_value(const struct cJSON *v, const char *path, const char *name, double lo,
                            double hi, int64_t *out);
ae_status ae_json_int(const struct cJSON *o, const char *path, const char *name, double lo, double hi,
                      int64_t *out);
// A number in [lo, hi].
ae_status ae_json_num(const struct cJSON *o, const char *path, const char *name, double lo, double hi,
                      double *out);
// A string of 1 to 20 decimal digits that fits in 64 bits (how seeds and counts are written).
ae_status ae_json_u64_value(const struct cJSON *v, const char *path, const char *name, uint64_t *out);
ae_status ae_json_u64(const struct cJSON *o, const char *path, const char *name, uint64_t *out);
// A string equal to one of names[0..n); *out = its index.
ae_status ae_json_enum(const struct cJSON *o, const char *path, const char *name,
                       const char *const *names, int n, int *out);

#endif
