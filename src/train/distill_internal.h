// Internal state of a distillation run, shared by the loop (distill.c) and the checkpoint
// code (checkpoint.c).
#ifndef AE_TRAIN_DISTILL_INTERNAL_H
#define AE_TRAIN_DISTILL_INTERNAL_H

#include <stdio.h>

#include "train/distill.h"
#include "train/model_train.h"

// Sums over the optimizer steps since the last progress line, which logs their means (and
// sets the stage's final loss). Checkpointed, so a resumed run logs the same lines as an
// uninterrupted one.
typedef struct {
    int64_t n, top1;             // steps; top-1 agreements (stage 2)
    double loss_sum, cos_sum;    // per-step losses (stage 2: KL, cosine term)
    double *layer_sum;           // (L) stage 1: per-layer losses (0 for unreplaced layers)
} ae_interval;

void ae_interval_clear(ae_interval *iv, int L);

#define AE_S1_AHEAD_MAX 2

// Stage 1's two queues (distill.c, stage1_micro): the teacher runs `ahead` layers ahead of the
// student on `be`, a sibling of the student's backend (cuda: a second stream; the student's own
// backend where it has no siblings, or with AE_STAGE1_OVERLAP=0), and the events order what
// both read.
typedef struct {
    const ae_backend *be;        // null until stage 1 first runs
    ae_event *end;               // the student's last read of the micro-batch's teacher buffers
    int ahead;                   // layers the teacher runs ahead: 2 (AE_STAGE1_AHEAD=1: one)
    ae_event *tdone[AE_S1_AHEAD_MAX + 1]; // [l % (ahead + 1)]: the teacher's layer l is done
    ae_event *sdone[AE_S1_AHEAD_MAX + 1]; // [l % (ahead + 1)]: the student's module l no longer
                                          // reads layer l's slots
    struct ae_s1_next *next;     // the next micro-batch's teacher start, queued before the
                                 // step's optimizer (distill.c, stage1_prefetch), or NULL
} ae_s1_lanes;

typedef struct {
    const ae_model *t;
    ae_model *s;
    ae_model *g;                 // gradients, same shapes as s
    ae_named_param *sp, *gp;     // every student parameter and its gradient (same order)
    int np;
    ae_ptr *master;              // (np) F32 master copies of trained non-F32 tensors (cuda: bf16
                                 // weights), made when a tensor first trains; null otherwise
    int *trainable;              // (np) indices this rank's optimizer updates in the current stage:
    int ntrain;                  //   every trained tensor, or with sharded states its own share
    int *stage_params;           // (np) indices of every tensor trained in the current stage (the
    int nstage;                  //   gradients zeroed, summed over the ranks and broadcast)
    int sharded;                 // 1: AdamW states and fp32 masters sharded over the ranks of a
                                 //   data-parallel group (ZeRO-1, train/distill_dp.h)
    int *owner;                  // (np) with sharded states, the rank that updates tensor i
    int *layer;                  // (np) the layer of tensor i (model.layers.<l>.), -1 for others
    char *started;               // (np) the gradient of stage_params[j] is being summed (a bucket
                                 //   started during the step's backward, distill_dp.h)
    int last_micro;              // 1 while the micro-batch running is this rank's last of the
                                 //   step: its backward starts each layer's gradient sum
    ae_adamw opt;
    ae_loader loader;
    int stage;                   // 0 or 1; 2 = done
    int64_t step;                // optimizer steps done in this stage
    const ae_distill_opts *o;
    const char *out_dir;
    FILE *metrics;
    double final_loss[2];        // last logged loss of each stage (kept across resumes)
    ae_interval iv;              // steps since the last progress line (kept across resumes)
    double last_save;            // ae_time_now() of the last checkpoint (or of the start)
    int ckpt_stage;              // position of the last checkpoint written or loaded (stage -1:
    int64_t ckpt_step;           // none yet), named when training stops on a non-finite value
    ae_s1_lanes lanes;           // stage 1's teacher queue (opened on first use)
} ae_run;

// Index of the first Inf or NaN of x, or -1.   x: (n)
int64_t ae_f32_first_nonfinite(const float *x, int64_t n);

// 1 when parameter i (index into sp) is trained in some stage of this run: the checkpoint holds
// it (stage 2's set, which contains stage 1's).
int ae_run_param_saved(const ae_run *r, int i);

// Checkpoint = every trained student parameter, the optimizer moments of the current stage, and
// state.json (stage, step, loader position and RNG). Written atomically into
// out_dir/checkpoint.
ae_status ae_ckpt_save(const ae_run *r);
// With sharded states, on ranks other than 0 while rank 0 runs ae_ckpt_save: sends it the fp32
// masters and moments of this rank's share (train/distill_dp.h).
ae_status ae_ckpt_serve(const ae_run *r);
// Returns AE_OK with *found = 0 when there is no checkpoint. Every field of state.json is
// checked against r->o (stage, step, optimizer step, loader position and generator state, the
// run's ctx/batch/accum/seed/budgets) before anything is used; sets r->stage, r->step and the
// optimizer (ae_run_setup_stage), then loads the parameters and moments.
ae_status ae_ckpt_load(ae_run *r, int *found);
// Stage 1's block-output term for layer l (exposed for its gradient test): y (N, D) act is the
// student's attention output on the teacher's stream h (N, D) F32 entering layer l; target (N, D)
// F32 the teacher's stream leaving it; adds w·∂loss/∂y into dy (N, D) act.
ae_status ae_distill_block_term(const ae_model *t, int l, ae_ptr h, ae_ptr target, ae_ptr y, int N,
                                int normalized, float w, ae_ptr dy, double *loss);
// Sets up a run of o (no stage yet: call ae_run_setup_stage) of student s against teacher t:
// the gradient model, the parameter lists, the loader over data; frees with ae_run_free (also
// after a failure). out_dir: where checkpoints go (only stored here).
ae_status ae_run_init(ae_run *r, const ae_model *t, ae_model *s, const ae_tokfile *data,
                      const ae_distill_opts *o, const char *out_dir);
void ae_run_free(ae_run *r);
// One micro-batch of stage 2, as the trainer runs it (exposed for its gradient test): the
// teacher's and the student's forward on ids (B, T) host, *kd += the KL term (mean over tokens
// of τ²·KL(p_T ‖ p_S) at o->tau) and, when o->cos_weight > 0, *cosl += the cosine term (mean
// over tokens and layers l = 1..L of 1 − cos(h_l^S, h_l^T)); *top1 += the tokens whose argmax
// agree. The gradient of (KL + cos_weight·cosine) / accum is added into r->g.
ae_status ae_distill_stage2_micro(ae_run *r, const int32_t *ids, int B, int T, double *kd,
                                  double *cosl, int *top1);
// (Re)creates the optimizer for r->stage over the stage's trainable parameters (this rank's
// share with sharded states); for stage 2 (done) there is none (r->ntrain = r->nstage = 0).
ae_status ae_run_setup_stage(ae_run *r);
// Zeroes the gradient of every tensor trained in the current stage.
void ae_run_zero_grads(ae_run *r);
// 1 when tensor i has an fp32 master copy on the rank that updates it: a non-F32 tensor (cuda:
// bf16) trained in the current stage or before.
int ae_run_has_master(const ae_run *r, int i);

#endif
