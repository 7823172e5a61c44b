// Data parallelism of the distillation loop (issue 12; the collectives: dist/comm.h).
//
// Every optimizer step draws the same batch x accum windows on every rank (one loader, the same
// seed: its state is the run's, whatever the number of ranks); micro-batch a of the step runs on
// rank a mod N only, its gradient scaled by 1/accum as on one rank, and the gradients are summed
// over the ranks before the (identical) AdamW update on every rank. So a step of N ranks is the
// step of one rank with the same --batch and --accum, up to the order of the fp32 sums (the
// rank's own micro-batches first, then the all-reduce). accum must be a multiple of N.
// Rank 0 alone writes (progress lines, metrics.jsonl, checkpoints, loss.png); every rank reads a
// checkpoint to resume, so a run may continue with another N.
//
// Sharded states (ZeRO-1) with --train all (every parameter trains in stage 2; fp32 or 8-bit
// AdamW states): each rank's optimizer holds the fp32 masters and moments of its own share of the
// tensors (contiguous in the model's order, about 1/N of the values each, fixed for the run);
// the gradients are still summed on every rank, the clipping norm is the sum of the ranks'
// shares, and after the update each tensor's owner broadcasts its new values (all tensors in one
// grouped broadcast: ae_comm_broadcast_many). A checkpoint is still written by rank 0 alone: the
// others send it the masters and moments of their shares (ae_ckpt_serve), so it is the same file
// as one rank's and resumes with any N.
#ifndef AE_TRAIN_DISTILL_DP_H
#define AE_TRAIN_DISTILL_DP_H

#include "train/distill_internal.h"

// Decides r->sharded and r->owner (before the first ae_run_setup_stage): sharded with a group
// of several ranks and --train all.
void ae_dp_plan(ae_run *r);
// After ae_adamw_init with sharded states: the norm hook that sums the ranks' shares.
void ae_dp_optimizer_hooks(ae_run *r);
// After ae_adamw_step with sharded states: every rank learns whether an update anywhere made a
// value non-finite (r->opt.nonfinite -2 when another rank's did) and, when none did, the owners
// broadcast their tensors' new values (one grouped broadcast). AE_OK at once otherwise.
ae_status ae_dp_after_update(ae_run *r);
// The checkpoint's transfers with sharded states, in the order ae_ckpt_save writes: rank 0
// fetches into x (n values of x's dtype) what owner keeps; the owner sends it. For every
// tensor of another rank's share: its fp32 master (when it has one), then for the stage's
// trained tensors their moments m and v.
ae_status ae_dp_fetch(const ae_run *r, ae_ptr x, size_t n, int owner);
ae_status ae_dp_send(const ae_run *r, ae_ptr x, size_t n);

// 1 on rank 0 or without a group.
int ae_dp_is_root(const ae_run *r);
// 1 when micro-batch a (0 ≤ a < accum) of a step runs on this rank.
int ae_dp_owns_micro(const ae_run *r, int a);

// Before the first step: accum divisible by the group size; the same binary and the same run on
// every rank (options, parameter names and shapes, data); then, unless resumed (every rank read
// the same checkpoint), rank 0's trained parameters broadcast to all, so that every rank starts
// from the same values whatever the ranks' initialisation did. AE_OK at once without a group.
ae_status ae_dp_start(ae_run *r, int resumed);

// Overlap: during the backward of this rank's last micro-batch of a step, the gradients of layer
// l are final once its backward is done; ae_dp_layer_done starts their sum over the ranks (one
// bucket per layer, NCCL on a second stream) while the backward goes on. Every rank starts the
// same buckets in the same order (stage 1: layers upwards, stage 2: downwards, then the tensors
// outside the layers): ae_dp_reduce_step starts those not started yet (all of them on a rank
// that failed in the step), waits for all, and only then sums the step's status and losses.
ae_status ae_dp_layer_done(ae_run *r, int l);

// After this rank's micro-batches of a step: sums the step's per-rank results over the ranks
// (st: this rank's status; ll (L) the per-layer stage-1 losses, *kd, *cosl, *agree stage 2's) and,
// when every rank succeeded, the gradients of the stage's trained tensors. Returns st when it
// failed here, AE_ERR_ARG naming the failed rank when another rank failed (its own message is
// on that rank's stderr), else the all-reduce's status.
ae_status ae_dp_reduce_step(ae_run *r, ae_status st, double *ll, double *kd, double *cosl, int *agree);

// After rank 0 wrote (or failed to write) a checkpoint: every rank learns the outcome (st on rank
// 0, ignored elsewhere), so that no rank waits for a rank that stopped.
ae_status ae_dp_agree(ae_run *r, ae_status st, const char *what);

#endif
