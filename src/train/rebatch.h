// Changing the micro-batching of a run on --resume / --restart (issue 8): a step of batch x
// accum sequences may be split into other micro-batches, --batch b --accum a with b·a equal to
// the run's batch·accum. The loader draws the same windows in the same order (its state counts
// windows, not micro-batches) and every loss and gradient is scaled per sequence of the step,
// so the run trains on the same data with the same math; the sums are grouped differently, so
// it is not bit-identical to an uninterrupted run. (An out-of-memory stop names such a split:
// train/oom.h.)
#ifndef AE_TRAIN_REBATCH_H
#define AE_TRAIN_REBATCH_H

#include "train/distill.h"

// AE_ERR_ARG unless batch x accum equals o's batch x accum; the message names both products and
// where o's come from (origin: its conversion.json).
ae_status ae_rebatch_check(const ae_distill_opts *o, int batch, int accum, const char *origin);
// Sets train.batch and train.accum of out_dir/conversion.json (every other byte of its JSON
// kept), written atomically (temp file + rename), so later resumes use them.
ae_status ae_rebatch_record(const char *out_dir, int batch, int accum);

#endif
