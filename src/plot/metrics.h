// Reading a distillation run's metrics.jsonl (written by src/train/distill.c, one JSON object
// per progress line): stage 1 records {stage:1, step, steps, loss, layer_loss:[...], ...},
// stage 2 records {stage:2, step, steps, loss, kl, cos, top1, ...}. Other fields are ignored.
#ifndef AE_PLOT_METRICS_H
#define AE_PLOT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct {
    int n;               // records, sorted by step, one per step
    double *step;        // (n)
    double *loss;        // (n)
    int n_layers;        // stage 1: length of layer_loss (0: no record had one)
    double *layer_loss;  // (n, n_layers) NaN where a record had none
    double *kl, *cos, *top1; // stage 2: (n) each, NaN where a record lacked the field
    int has_kl, has_cos, has_top1;
    long long steps;     // the stage's total steps ("steps" of the last record; 0 if absent)
} ae_metrics_stage;

typedef struct {
    ae_metrics_stage s[2]; // stage 1, stage 2
} ae_metrics;

// Parses metrics.jsonl text. `name` (the file's path) starts every message:
// "<name>:<line>: <what is wrong>". Blank lines are skipped; a last line without its newline that
// is not valid JSON is skipped too (a run writing it right now). When a step appears more than
// once (a resumed run repeats the steps after its checkpoint), the later record wins.
// AE_ERR_FORMAT for a malformed line or no record at all.
ae_status ae_metrics_parse(const char *text, size_t len, const char *name, ae_metrics *m);
// Reads and parses a file (AE_ERR_IO / AE_ERR_ARG when it cannot be read, naming it).
ae_status ae_metrics_read(const char *path, ae_metrics *m);
void ae_metrics_free(ae_metrics *m);

#endif
