// The optimizer step of distillation on one device: AdamW over every trained tensor of a
// student, as train/optim.c calls it (one adamw / adamw8 op per tensor), at the trained shapes
// of the Qwen3-8B MLA 512+64 student (per layer q_proj 6144 x 4096, kv_a_proj 576 x 4096,
// kv_a_layernorm 512, kv_b_proj 8192 x 512, o_proj 4096 x 4096: 48.5 M values, 36 layers,
// 1.746 B values in all) and of the Qwen3-1.7B one (16 heads, D 2048, 28 layers, 0.385 B):
//   bench_optim [--device cuda] [--reps 5] [--model 8b|1.7b]
// Three kinds of step: F32 moments with F32 gradients (the default of attnedit convert), F32
// moments with BF16 gradients (--grad-dtype bf16), 8-bit moments with BF16 gradients
// (--optim-state 8bit --grad-dtype bf16: issue 8's Qwen3-8B rows). One layer's tensors are
// allocated once and updated as every layer's in turn (a layer's 48.5 M values are ~10x the
// L2: each call reads from DRAM as in training). Time: the whole step (every layer's calls)
// between two syncs, best of --reps after a warm-up (bench_time.h). GB/s counts the bytes each
// value moves (read and written: master weight, gradient, moments or codes and their block
// absmax, the bf16 weight written), against the device's copy rate measured the same way (a
// 2 GiB copy, bytes read + written).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/adam8.h"
#include "backend/ops.h"
#include "bench_time.h"
#include "core/log.h"

enum { MAX_T = 5 };

typedef struct {
    const char *name;
    int layers, n_t;
    size_t numel[MAX_T];
} shape;

static const shape k_8b = {"qwen3-8b mla 512+64", 36, 5,
                           {6144u * 4096u, 576u * 4096u, 512u, 8192u * 512u, 4096u * 4096u}};
static const shape k_17b = {"qwen3-1.7b mla 512+64", 28, 5,
                            {3072u * 2048u, 576u * 2048u, 512u, 4096u * 512u, 2048u * 2048u}};

typedef struct {
    const ae_backend *be;
    const shape *sh;
    int state8, grad_bf16;
    ae_ptr w[MAX_T], m[MAX_T], v[MAX_T], ms[MAX_T], vs[MAX_T], g[MAX_T], p[MAX_T], flag;
} step;

static size_t words(size_t n) { return (n + 3) / 4; }

static int step_init(step *s) {
    const ae_backend *be = s->be;
    int bad = 0;
    for (int i = 0; i < s->sh->n_t; i++) {
        size_t n = s->sh->numel[i];
        s->w[i] = be->alloc(be, n, AE_DT_F32);
        s->g[i] = be->alloc(be, n, s->grad_bf16 ? AE_DT_BF16 : AE_DT_F32);
        s->p[i] = be->alloc(be, n, be->weight_dtype);
        if (s->state8) { // codes in F32 words, as train/optim.c keeps them
            s->m[i] = be->alloc(be, words(n), AE_DT_F32);
            s->v[i] = be->alloc(be, words(n), AE_DT_F32);
            s->ms[i] = be->alloc(be, ae_q8_blocks(n), AE_DT_F32);
            s->vs[i] = be->alloc(be, ae_q8_blocks(n), AE_DT_F32);
            bad |= ae_ptr_is_null(s->ms[i]) || ae_ptr_is_null(s->vs[i]);
        } else {
            s->m[i] = be->alloc(be, n, AE_DT_F32);
            s->v[i] = be->alloc(be, n, AE_DT_F32);
        }
        bad |= ae_ptr_is_null(s->w[i]) || ae_ptr_is_null(s->g[i]) || ae_ptr_is_null(s->p[i]) ||
               ae_ptr_is_null(s->m[i]) || ae_ptr_is_null(s->v[i]);
        if (bad) break;
        // weights and gradients of a trained layer's size; moments from zero (a first step
        // decodes nothing: the later steps below run from the moments the first one wrote)
        be->fill_normal(be, s->w[i], n, 0.02f, 11u + (uint64_t)i);
        be->fill_normal(be, s->g[i], n, 1e-3f, 23u + (uint64_t)i);
        be->fill(be, s->m[i], s->state8 ? words(n) : n, 0.0f);
        be->fill(be, s->v[i], s->state8 ? words(n) : n, 0.0f);
        if (s->state8) {
            be->fill(be, s->ms[i], ae_q8_blocks(n), 0.0f);
            be->fill(be, s->vs[i], ae_q8_blocks(n), 0.0f);
        }
    }
    s->flag = be->alloc(be, 1, AE_DT_I32);
    return bad || ae_ptr_is_null(s->flag);
}

static void step_free(step *s) {
    const ae_backend *be = s->be;
    for (int i = 0; i < s->sh->n_t; i++) {
        be->free(be, s->w[i]), be->free(be, s->g[i]), be->free(be, s->p[i]);
        be->free(be, s->m[i]), be->free(be, s->v[i]);
        if (s->state8) be->free(be, s->ms[i]), be->free(be, s->vs[i]);
    }
    be->free(be, s->flag);
}

static void step_run(void *ctx) {
    const step *s = ctx;
    const ae_backend *be = s->be;
    ae_adamw_args a = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                       .weight_decay = 0.01f, .bc1 = 0.1f, .bc2 = 0.05f, .gscale = 1.0f};
    for (int l = 0; l < s->sh->layers; l++)
        for (int i = 0; i < s->sh->n_t; i++) {
            size_t n = s->sh->numel[i];
            if (s->state8)
                be->adamw8(be, &a, s->w[i], ae_ptr_make(s->m[i].data, AE_DT_U8), s->ms[i],
                           ae_ptr_make(s->v[i].data, AE_DT_U8), s->vs[i], s->g[i], s->p[i],
                           s->flag, n);
            else
                be->adamw(be, &a, s->w[i], s->m[i], s->v[i], s->g[i], s->p[i], s->flag, n);
        }
}

// Bytes a value moves in one update.
static double bytes_per_value(const step *s, size_t wt) {
    double g = s->grad_bf16 ? 2 : 4;
    double moments = s->state8 ? 2 * 2 + 4.0 * 4 / AE_Q8_BLOCK : 4 * 4;
    return 8 + g + moments + (double)wt; // master read + written, the weight written
}

typedef struct {
    const ae_backend *be;
    ae_ptr a, b;
    size_t n;
} copy_ctx;

static void copy_run(void *ctx) {
    const copy_ctx *c = ctx;
    ae_copy(c->be, c->b, c->a, c->n);
}

int main(int argc, char **argv) {
    const char *device = "cuda", *model = "8b";
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--device") && v) device = v, i++;
        else if (!strcmp(argv[i], "--reps") && v) reps = atoi(v), i++;
        else if (!strcmp(argv[i], "--model") && v) model = v, i++;
        else {
            fprintf(stderr, "usage: bench_optim [--device cuda] [--reps 5] [--model 8b|1.7b]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 1000 || (strcmp(model, "8b") && strcmp(model, "1.7b"))) {
        fprintf(stderr, "bench_optim: --reps 1..1000, --model 8b or 1.7b\n");
        return 2;
    }
    const shape *sh = !strcmp(model, "8b") ? &k_8b : &k_17b;
    const ae_backend *be = NULL;
    if (ae_backend_open(device, &be) != AE_OK || !be->adamw || !be->adamw8) {
        fprintf(stderr, "bench_optim: %s\n", be ? "the backend has no adamw / adamw8" : ae_last_error());
        return 1;
    }
    size_t total = 0;
    for (int i = 0; i < sh->n_t; i++) total += sh->numel[i];
    total *= (size_t)sh->layers;
    copy_ctx c = {be, ae_ptr_null(), ae_ptr_null(), (size_t)1 << 29}; // 2 GiB of F32 each way
    c.a = be->alloc(be, c.n, AE_DT_F32);
    c.b = be->alloc(be, c.n, AE_DT_F32);
    if (ae_ptr_is_null(c.a) || ae_ptr_is_null(c.b)) {
        fprintf(stderr, "bench_optim: out of device memory for the copy\n");
        return 1;
    }
    be->fill(be, c.a, c.n, 1.0f);
    bench_timing tc;
    if (bench_time_op(be, copy_run, &c, reps, &tc)) return 1;
    const double copy_gbs = 8.0 * (double)c.n / tc.best / 1e9;
    be->free(be, c.a), be->free(be, c.b);
    printf("bench_optim | %s | %s | %d layers, %.3f B trained values | copy %.0f GB/s (2 GiB, read + "
           "written)\n", be->name, sh->name, sh->layers, (double)total / 1e9, copy_gbs);
    static const struct {
        int state8, grad_bf16;
        const char *what;
    } kinds[] = {{0, 0, "adamw  fp32 moments, fp32 grads"}, {0, 1, "adamw  fp32 moments, bf16 grads"},
                 {1, 1, "adamw8 8-bit moments, bf16 grads"}};
    int rc = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds && !rc; k++) {
        if (kinds[k].grad_bf16 && be->weight_dtype != AE_DT_BF16) { // cpu: F32 parameters
            printf("bench_optim | %s | not run: bf16 gradients need bf16 weights (cuda)\n", kinds[k].what);
            continue;
        }
        step s = {.be = be, .sh = sh, .state8 = kinds[k].state8, .grad_bf16 = kinds[k].grad_bf16};
        if (step_init(&s)) {
            fprintf(stderr, "bench_optim: out of device memory for %s\n", kinds[k].what);
            step_free(&s);
            return 1;
        }
        bench_timing t;
        if (bench_time_op(be, step_run, &s, reps, &t)) {
            fprintf(stderr, "bench_optim: %s\n", ae_last_error());
            rc = 1;
        } else {
            double gbs = bytes_per_value(&s, ae_dtype_size(be->weight_dtype)) * (double)total / t.best / 1e9;
            printf("bench_optim | %s | %8.2f ms a step (best of %d; mean %.2f) | %6.0f GB/s | %5.1f%% "
                   "of copy\n", kinds[k].what, 1e3 * t.best, reps, 1e3 * t.mean, gbs, 100 * gbs / copy_gbs);
        }
        step_free(&s);
    }
    ae_backend_close(be);
    return rc;
}
