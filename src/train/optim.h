// AdamW (decoupled weight decay), the learning-rate schedule and global-norm clipping.
#ifndef AE_TRAIN_OPTIM_H
#define AE_TRAIN_OPTIM_H

#include <stdint.h>

#include "core/error.h"

typedef struct {
    float lr;            // peak learning rate
    float beta1, beta2, eps;
    float weight_decay;  // applied to tensors with decay = 1 (matrices)
    int64_t warmup;      // linear warmup steps (from lr/warmup at step 1 to lr)
    int64_t total;       // steps; cosine from lr to lr·min_lr_ratio between warmup and total
    float min_lr_ratio;
    float clip;          // global gradient-norm clip (0: off)
} ae_adamw_cfg;

typedef struct {
    float *data;  // parameter (numel)
    float *grad;  // gradient (numel)
    int64_t numel;
    int decay;
} ae_opt_param;

typedef struct {
    ae_adamw_cfg cfg;
    int n;
    ae_opt_param *p;   // (n)
    float **m, **v;    // first/second moments per tensor
    int64_t step;      // steps taken
    int nonfinite;     // after ae_adamw_step: the first tensor (index into p) that held Inf or NaN
                       // (its gradient, or after the update its values or moments), or -1
} ae_adamw;

ae_status ae_adamw_init(ae_adamw *o, const ae_adamw_cfg *cfg, const ae_opt_param *params, int n);
void ae_adamw_free(ae_adamw *o);
// Learning rate at step s (1-based).
float ae_lr_at(const ae_adamw_cfg *c, int64_t s);
// Global L2 norm of the gradients (double accumulation).
double ae_grad_norm(const ae_adamw *o);
// One update from the current gradients (clipped to cfg.clip first); returns the pre-clip norm.
// A non-finite norm (a gradient holds Inf or NaN) changes nothing (step not counted) and sets
// o->nonfinite to the first tensor with such a gradient; otherwise the update is applied and
// o->nonfinite is the first tensor whose values or second moments it made non-finite (-1: none).
double ae_adamw_step(ae_adamw *o);
void ae_adamw_zero_grad(ae_adamw *o);

#endif
