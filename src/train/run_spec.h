// Everything that defines a conversion run, kept in the student folder's conversion.json so a
// run can be resumed (`attnedit convert --resume OUT`) and reproduced: teacher path and
// content hash, target spec, data file and hash, every hyper-parameter, and, once finished,
// per-stage token counts, final losses and wall time.
#ifndef AE_TRAIN_RUN_SPEC_H
#define AE_TRAIN_RUN_SPEC_H

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
} ae_run_spec;

// SHA-256 (hex) of a model folder's config.json and *.safetensors files.
ae_status ae_model_dir_hash(const char *dir, char hex[65]);
ae_status ae_file_hash(const char *path, char hex[65]);

// conversion.json text; res may be NULL (run not finished).
char *ae_run_spec_json(const ae_run_spec *r, const ae_model *student, const ae_init_report *rep,
                       const ae_distill_result *res);
ae_status ae_run_spec_load(const char *out_dir, ae_run_spec *r);

#endif
