// Progressive distillation (Attention Editing): stage 1 trains every replaced attention module
// on the teacher's own inputs toward the teacher's attention outputs (teacher forcing, all
// layers in the same step); stage 2 distils the whole student on next-token distributions
// (KL at temperature tau) plus an optional cosine feature-matching term.
//
// A run lives in its output folder: checkpoint/ (student, optimizer state, loader and RNG
// state, step; written atomically every save_every steps and at the end of each stage) and
// metrics.jsonl. ae_distill_run continues from checkpoint/ when it exists (resume).
#ifndef AE_TRAIN_DISTILL_H
#define AE_TRAIN_DISTILL_H

#include <stdint.h>

#include "model/model.h"
#include "train/data.h"
#include "train/optim.h"

typedef struct {
    int ctx, batch, accum;          // tokens per optimizer step = ctx · batch · accum
    int64_t stage_tokens[2];        // budgets of stage 1 and stage 2 (0 skips a stage)
    float lr[2];                    // peak learning rates
    float warmup_frac;              // warmup steps = frac · stage steps
    float min_lr_ratio, weight_decay, clip;
    int s1_normalized;              // stage 1 loss: 0 MSE, 1 MSE / target energy per token
    float s1_block;                 // stage 1: weight of the block-output term (0: off): the
                                    // layer output through the frozen teacher MLP vs the teacher's
    float tau, cos_weight;          // stage 2
    int train_all;                  // stage 2: 0 attention only, 1 every parameter
    int save_every, log_every;      // steps (0: only at stage ends / every step)
    uint64_t seed;
} ae_distill_opts;

typedef struct {
    double final_loss[2];           // mean loss of the last logged interval per stage
    int64_t tokens_done[2];
    double wall_s;
} ae_distill_result;

// Runs (or resumes) both stages. teacher: frozen; student: modified in place. data: the token
// file (checked against the teacher's tokenizer by the caller). out_dir must exist.
ae_status ae_distill_run(const ae_model *teacher, ae_model *student, const ae_tokfile *data,
                         const ae_distill_opts *o, const char *out_dir, ae_distill_result *res);

// Steps of stage s (0 or 1) for these options.
int64_t ae_distill_stage_steps(const ae_distill_opts *o, int s);

#endif
