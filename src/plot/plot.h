// Loss curves of a distillation run as one PNG (the public entry point of src/plot/).
//
// Panels (those the records allow; each stage's x axis is its own optimizer step):
//   stage 1 loss (mean over the replaced layers) | stage 1 loss per replaced layer (layer_loss)
//   stage 2 KL(teacher || student)               | stage 2 feature loss (mean over layers of 1 - cos)
//   stage 2 top-1 agreement with the teacher (full width when the panel count is odd)
// A run with one stage gets that stage's panels; steps repeated after a resume are drawn once,
// from their last record.
#ifndef AE_PLOT_PLOT_H
#define AE_PLOT_PLOT_H

#include "core/error.h"
#include "plot/canvas.h"
#include "plot/metrics.h"

typedef struct {
    int log_y; // log10 y axes for the loss panels (KL, MSE, 1 - cos); agreement stays linear
} ae_plot_opts;

// Reads RUN_DIR/metrics.jsonl and writes the loss-curve PNG to png_path (NULL:
// RUN_DIR/loss.png) atomically. On failure (no or empty metrics.jsonl, a malformed line:
// "<file>:<line>: what") nothing is written and the message says why.
ae_status ae_plot_metrics(const char *run_dir, const char *png_path);
// The same with options (o may be NULL: defaults).
ae_status ae_plot_metrics_opts(const char *run_dir, const char *png_path, const ae_plot_opts *o);
// Draws the panels of m on a new canvas (caller frees it with ae_canvas_free); title heads it.
ae_status ae_plot_metrics_draw(const ae_metrics *m, const char *title, const ae_plot_opts *o,
                               ae_canvas *out);

#endif
