// AdamW (decoupled weight decay), the learning-rate schedule and global-norm clipping.
#ifndef AE_TRAIN_OPTIM_H
#define AE_TRAIN_OPTIM_H

#include <stdint.h>

#include "backend/ops.h"
#include "core/error.h"

typedef struct {
    float lr;            // peak learning rate
    float beta1, beta2, eps;
    float weight_decay;  // applied to tensors with decay = 1 (matrices)
    int64_t warmup;      // linear warmup steps (from lr/warmup at step 1 to lr)
    int64_t total;       // steps; cosine from lr to lr·min_lr_ratio between warmup and total
    float min_lr_ratio;
    float clip;          // global gradient-norm clip (0: off)
    int state8;          // moments: 0 F32 (8 bytes per value), 1 8-bit block-quantised (the
                         // backend's adamw8, backend/adam8.h: 2 bytes + 8 per 256 values)
} ae_adamw_cfg;

// One trained tensor. Everything is in the optimizer backend's memory.
typedef struct {
    ae_ptr param;  // (numel) the model's tensor (weight dtype)
    ae_ptr master; // (numel) F32 master copy that the update applies to, or null when param is
                   // F32 itself (cpu): then param is the master
    ae_ptr grad;   // (numel) F32, or BF16 (--grad-dtype bf16: a backend whose sumsq, adamw and
                   // adamw8 read BF16 gradients, cuda); the update's math is fp32 either way
    int64_t numel;
    int decay;
} ae_opt_param;

typedef struct {
    ae_adamw_cfg cfg;
    const ae_backend *be;
    int n;
    ae_opt_param *p;   // (n)
    ae_ptr *m, *v;     // (n) first/second moments per tensor, (numel) each: F32, or with
                       // cfg.state8 the U8 codes of m and of sqrt(v)
    ae_ptr *ms, *vs;   // (n) with cfg.state8: F32 absmax per block of m and of sqrt(v),
                       // (ae_q8_blocks(numel)) each; NULL otherwise
    ae_ptr sums;       // (n) F64 squared gradient norm per tensor
    ae_ptr flags;      // (n) I32 non-finite flags of the last update
    int64_t step;      // steps taken
    int queued;        // 1 between ae_adamw_step_queue (an update queued) and _finish
    int nonfinite;     // after ae_adamw_step: the first tensor (index into p) that held Inf or NaN
                       // (its gradient, or after the update its values or moments), or -1; -2:
                       // the global norm is not finite but none of these gradients is (norm_sum)
    // The squared gradient norm over every tensor of the step when this optimizer updates a
    // share of them (sharded states: the ranks' sums added by an all-reduce); called once per
    // step with this optimizer's own sum, also when n is 0. NULL: this optimizer holds them all.
    ae_status (*norm_sum)(void *ctx, double *sumsq);
    void *norm_ctx;
} ae_adamw;

// Moments start at zero. The backend needs the training ops (sumsq, adamw, or adamw8 with
// cfg.state8): AE_ERR_UNSUPPORTED naming the backend otherwise; AE_ERR_NOMEM (with the bytes
// needed) when the moments do not fit.
ae_status ae_adamw_init(ae_adamw *o, const ae_backend *be, const ae_adamw_cfg *cfg,
                        const ae_opt_param *params, int n);
void ae_adamw_free(ae_adamw *o);
// Learning rate at step s (1-based).
float ae_lr_at(const ae_adamw_cfg *c, int64_t s);
// Global L2 norm of the gradients (F32 or BF16): each tensor's sum of squares (backend sumsq, in double),
// summed in double. Waits for the queued work; a device error is returned.
ae_status ae_grad_norm(ae_adamw *o, double *norm);
// One update from the current gradients (clipped to cfg.clip first); *norm = the pre-clip norm.
// Returns a device error (or AE_ERR_NOMEM) if there was one. A non-finite norm (a gradient
// holds Inf or NaN) changes nothing (step not counted) and sets o->nonfinite to the first tensor
// with such a gradient; otherwise the update is applied and o->nonfinite is the first tensor
// whose values or second moments it made non-finite (-1: none).
ae_status ae_adamw_step(ae_adamw *o, double *norm);
// ae_adamw_step in two halves, so that a caller can queue other work while the update runs:
// _queue computes the norm (a host wait for the gradients) and queues the update, _finish
// waits for it and sets o->nonfinite. Call _finish exactly once after each _queue.
ae_status ae_adamw_step_queue(ae_adamw *o, double *norm);
ae_status ae_adamw_step_finish(ae_adamw *o);
void ae_adamw_zero_grad(ae_adamw *o);
// The F32 values the optimizer updates of tensor i: its master, or the param itself.
ae_ptr ae_adamw_master(const ae_adamw *o, int i);
// Bytes of optimizer state per trained value: 8 (F32 m, v) or 2 + 8/256 (8-bit).
double ae_adamw_state_bytes_per_value(int state8);
// With cfg.state8: the n code bytes of codes (o->m[i] or o->v[i], n = that tensor's numel)
// to or from host memory. AE_OK or a device error.
ae_status ae_adamw_codes_download(const ae_adamw *o, ae_ptr codes, uint8_t *dst, size_t n);
ae_status ae_adamw_codes_upload(const ae_adamw *o, ae_ptr codes, const uint8_t *src, size_t n);

#endif
