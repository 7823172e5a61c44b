// Progressive distillation (Attention Editing): stage 1 trains every replaced attention module
// on the teacher's own inputs toward the teacher's attention outputs (teacher forcing, all
// layers in the same step); stage 2 distils the whole student on next-token distributions
// (KL at temperature tau) plus an optional cosine feature-matching term.
//
// A run lives in its output folder: checkpoint/ (student, optimizer state, loader and RNG
// state, step; written atomically every save_every steps and at the end of each stage) and
// metrics.jsonl. ae_distill_run starts at step 0 or continues from checkpoint/ (resume).
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
    int save_every, log_every;      // steps (0: only at stage ends / every step); save_every < 0:
                                    // no checkpoint at all (benchmarks; the CLI never sets it)
    float save_minutes;             // also a checkpoint when this many minutes have passed since
                                    // the last one (0: off)
    int optim_8bit;                 // AdamW moments: 0 F32, 1 8-bit block-quantised
                                    // (--optim-state 8bit; train/optim.h, backend/adam8.h)
    int grad_bf16;                  // gradients of bf16 parameters: 0 F32, 1 BF16 (--grad-dtype
                                    // bf16: 2 bytes a trained value less; each micro-batch's
                                    // gradient rounded to bf16 once per op, accumulation over
                                    // micro-batches and ranks in bf16). Needs a backend with
                                    // bf16 weights (ae_distill_check_backend)
    int s2_keep_attn;               // stage 2: the student's forward keeps every layer's
                                    // attention-module activations for the backward instead of
                                    // its recomputing them (--stage2-acts keep: faster, more
                                    // memory; the same bits either way, so not one of the run's
                                    // recorded settings)
    uint64_t seed;
    struct ae_comm *comm;           // the data-parallel group (dist/comm.h; train/distill_dp.h),
                                    // NULL: this process alone
} ae_distill_opts;

typedef struct {
    double final_loss[2];           // mean loss of the last logged interval per stage
    int64_t tokens_done[2];
    double wall_s;
} ae_distill_result;

// Runs both stages. teacher: frozen; student: modified in place. data: the token file (checked
// against the teacher's tokenizer by the caller). out_dir must exist. resume 0: starts at stage
// 1, step 0; resume 1: continues from out_dir's checkpoint, which must exist (AE_ERR_ARG
// otherwise) and is checked field by field against o before anything is used. A checkpoint of
// a finished run (stage 2) trains nothing and leaves the student at its final parameters.
// AE_ERR_ARG when o has ctx < 2, batch < 1, accum < 1 or a negative budget. AE_ERR_NONFINITE
// when a loss, a gradient or an update becomes Inf or NaN: the run stops at that step (nothing
// logged or saved for it; out_dir's checkpoint stays the last good one) and the message names
// the stage, the step and the layer. A checkpoint holding Inf or NaN is refused on resume.
ae_status ae_distill_run(const ae_model *teacher, ae_model *student, const ae_tokfile *data,
                         const ae_distill_opts *o, const char *out_dir, int resume,
                         ae_distill_result *res);

// AE_OK when backend be can train with o, else AE_ERR_UNSUPPORTED naming why: --grad-dtype bf16
// (o->grad_bf16) needs bf16 weights (cuda; the cpu's parameters are F32, so their gradients
// stay F32). Called by ae_distill_run, and by convert before anything is written.
ae_status ae_distill_check_backend(const ae_backend *be, const ae_distill_opts *o);

// 1 if out_dir holds a checkpoint to resume from (checkpoint/state.json, or the
// checkpoint.old/state.json a save interrupted between its two renames leaves).
int ae_distill_has_checkpoint(const char *out_dir);

// Steps of stage s (0 or 1) for these options; 0 for any other s or invalid options.
int64_t ae_distill_stage_steps(const ae_distill_opts *o, int s);

// A data-parallel group of n ranks runs micro-batch a of a step on rank a mod n, so --accum
// must be a multiple of n (train/distill_dp.c; checked by convert before anything is written and
// by ae_distill_run for resumes and library users). AE_OK when it is (or n ≤ 1), else AE_ERR_ARG
// with a message that suggests a --batch/--accum making the same batch·accum sequences per step
// (the one with the smallest --accum, so a micro-batch never grows), or, when batch·accum is no
// multiple of n, the next multiple of n as --accum.
ae_status ae_dp_check_accum(int n, int batch, int accum);

#endif
