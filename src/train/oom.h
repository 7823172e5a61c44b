// Out of memory in a training step: what fits, and how the run continues (issue 8).
//
// When a micro-step fails with AE_ERR_NOMEM the loop stops the run (nothing is logged or saved
// for the step: the last checkpoint stays as it was) and calls ae_oom_stop, which reruns the
// failed micro-step's forward and backward on the first b sequences of the same micro-batch, b
// halving from B/2 down to 1 (b divides batch x accum, so the same sequences can make a step),
// without any update: no optimizer step, no loader draw, the gradients zeroed afterwards and
// nothing written. Its message names the stage, the step, the B x T micro-batch that did not fit
// (with the allocation's own message), the largest b that ran and the command that continues
// the run with the same sequences per step:
//   attnedit convert --resume OUT --batch b --accum A·B/b
// (--restart instead when no checkpoint was written yet). When not even one sequence fits, the
// context itself is too long for the memory: it names the largest power-of-two context that ran
// and says a new run needs a smaller --ctx or a device with more memory.
#ifndef AE_TRAIN_OOM_H
#define AE_TRAIN_OOM_H

#include "train/distill_internal.h"

// One micro-step of the current stage (forward and backward into the run's gradients) on ids
// (B, T), its losses thrown away.
typedef ae_status (*ae_oom_micro_fn)(ae_run *r, const int32_t *ids, int B, int T);

// The largest divisor of n that is at most m (1 for m < 1).
int ae_oom_divisor_at_most(int64_t n, int64_t m);

// After micro(r, ids, B, T) returned AE_ERR_NOMEM at step r->step of stage r->stage: probes what
// fits (above) and returns AE_ERR_NOMEM with the message. A probe failing other than by
// AE_ERR_NOMEM ends the probing (the message says so).   ids: (B, T) host
ae_status ae_oom_stop(ae_run *r, ae_oom_micro_fn micro, const int32_t *ids, int B, int T);

#endif
