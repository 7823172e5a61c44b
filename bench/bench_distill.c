// Distillation throughput of attnedit on one device, at the shapes of the PyTorch peer
// (../shared/peers/torch_attnedit.py), for bench/gpu_distill.sh:
//   bench_distill --config DIR --target mla|gateswa --batch B --ctx T --steps N
//                 [--stage 1|2|both] [--device cuda] [--json] [--label S] [--peaks]
//                 [--kv-lora 512] [--rope-dim 64] [--nope-dim 128] [--v-dim 128]
//                 [--window 1024] [--full-every 6] [--out DIR] [--keep] [--seed S] [--profile]
//                 [--optim-state fp32|8bit] [--grad-dtype fp32|bf16] [--train attention|all]
//                 [--stage2-acts recompute|keep] [--gpus N]
// The teacher has random weights for DIR/config.json's architecture, made on the device
// (ae_model_random); the student shares its frozen tensors (ae_model_share) and gets the peer's
// target modules at random init (ae_student_make): MLA kv_lora 512 + rope 64, nope 128, v 128,
// q_lora 0; GateSWA full attention in every 6th layer (the last of each group), the others a
// 1024-token window, elementwise sigmoid gate. The data is an in-memory stream of random ids.
// ae_distill_run trains N + 2 steps per stage (attention only, log_every 1, no periodic
// checkpoints) in a temporary folder; a stage's tokens/s is the median of the per-step
// tokens_per_s of metrics.jsonl after the 2 warm-up steps (the peer: the mean after 2).
// --stage both runs the stages in one ae_distill_run, as `attnedit convert` does; a stage the
// library refuses on this device (AE_ERR_UNSUPPORTED: a backend without the training ops the
// stage needs) is reported as that row's result and the other stage is run alone. Both stages
// run on cuda for dense and MoE models (Qwen3-30B-A3B's stage 2 trains through its MoE layers
// with the ops of train/moe_train.c).
// --profile: after the timed run, each stage once more (its N + 2 steps alone) on the op
// profiler (backend/profile.h: a sync around every op, so only the shares mean something), and
// its table per step: lines starting "profile |". Ops a layer module calls through its own
// backend pointer (GateSWA's inference path) are not counted.
//
// Peak memory: cuda, the high-water mark of the stream-ordered pool that holds every allocation
// of the backend (ae_cuda_mem_peak, reset before the teacher is made; the teacher's weights
// count, as in the peer's torch.cuda.max_memory_allocated; the CUDA context and the cuBLASLt
// workspace do not). With --stage both it is the peak of the whole run, as the peer's (which
// covers both stages of a target). cpu: the process's maximum resident set (getrusage).
//
// MFU = model FLOPs per second / the bf16 GEMM rate measured on the same device (an 8192³
// product through the backend's gemm, median of 5, as `bench_infer --peaks`; env
// AE_BENCH_GEMM_PEAK=TFLOP/s gives it instead). Model FLOPs per token (P: weight values a token
// multiplies, MoE layers the router and the routed experts only; A(l): causal attention of
// layer l per sequence, 2·(QK and PV)·heads·visible (query, key) pairs, sliding layers seeing W
// keys, divided by T; H = 2·V·D, the LM head):
//   stage 1 = teacher layers forward            Σ_l 2·(P_att^T(l) + P_ffn(l)) + A^T(l)
//           + student modules forward+backward  3 · Σ_l (2·P_att^S(l) + A^S(l))
//   stage 2 = teacher forward                   Σ_l 2·(P_att^T + P_ffn) + A^T      + H
//           + student forward                   Σ_l 2·(P_att^S + P_ffn) + A^S      + H
//           + student backward                  Σ_l 4·P_att^S + 2·P_ffn + 2·A^S    + H
// (backward = 2 × forward where weight gradients are formed (the trained attention modules),
// 1 × forward for the dX of frozen matrices (FFN, LM head); attention cores 2 × forward; no
// recomputation counted; the KL/softmax of the vocabulary chunks and the cosine term are
// elementwise and not counted.)
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "backend/ops.h"
#include "bench_peaks.h"
#include "bench_profile.h"
#include "core/file.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "model/model.h"
#include "model/student.h"
#include "dist/comm.h"
#include "dist/launch.h"
#include "train/distill.h"
#ifdef AE_HAVE_CUDA
#include "backend/cuda.h"
#endif

#define WARMUP 2

typedef struct {
    const char *config, *target, *device, *label, *out;
    int batch, ctx, steps, stages, json, peaks, keep, profile; // stages: bit 0 stage 1, bit 1 stage 2
    int kv_lora, rope, nope, vdim, window, full_every;
    int optim_8bit; // --optim-state 8bit: AdamW moments block-quantised (as attnedit convert)
    int grad_bf16;  // --grad-dtype bf16: gradients of the bf16 weights in bf16 (as attnedit convert)
    int keep_attn;  // --stage2-acts keep: stage 2 keeps the attention activations (as attnedit convert)
    int train_all;  // --train all: stage 2 trains every parameter (the student then has its own
                    // copy of the weights, made like the teacher's); with several ranks the
                    // AdamW states and fp32 masters are sharded (ZeRO-1)
    uint64_t seed;
    ae_comm *comm; // data-parallel group (--gpus N or mpirun): NULL alone
} opts;

static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.device = "cuda", .batch = 1, .ctx = 4096, .steps = 4, .stages = 3, .kv_lora = 512,
                .rope = 64, .nope = 128, .vdim = 128, .window = 1024, .full_every = 6, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) { o->json = 1; continue; }
        if (!strcmp(a, "--peaks")) { o->peaks = 1; continue; }
        if (!strcmp(a, "--keep")) { o->keep = 1; continue; }
        if (!strcmp(a, "--profile")) { o->profile = 1; continue; }
        if (!v) return -1;
        i++;
        int *num = NULL;
        if (!strcmp(a, "--config")) o->config = v;
        else if (!strcmp(a, "--target")) o->target = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--label")) o->label = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--seed")) o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--train")) {
            if (strcmp(v, "attention") && strcmp(v, "all")) return -1;
            o->train_all = !strcmp(v, "all");
        }
        else if (!strcmp(a, "--optim-state")) {
            if (strcmp(v, "fp32") && strcmp(v, "8bit")) return -1;
            o->optim_8bit = !strcmp(v, "8bit");
        }
        else if (!strcmp(a, "--stage2-acts")) {
            if (strcmp(v, "recompute") && strcmp(v, "keep")) return -1;
            o->keep_attn = !strcmp(v, "keep");
        }
        else if (!strcmp(a, "--grad-dtype")) {
            if (strcmp(v, "fp32") && strcmp(v, "bf16")) return -1;
            o->grad_bf16 = !strcmp(v, "bf16");
        }
        else if (!strcmp(a, "--stage")) {
            o->stages = !strcmp(v, "1") ? 1 : !strcmp(v, "2") ? 2 : !strcmp(v, "both") ? 3 : 0;
            if (!o->stages) return -1;
        } else if (!strcmp(a, "--batch")) num = &o->batch;
        else if (!strcmp(a, "--ctx")) num = &o->ctx;
        else if (!strcmp(a, "--steps")) num = &o->steps;
        else if (!strcmp(a, "--kv-lora")) num = &o->kv_lora;
        else if (!strcmp(a, "--rope-dim")) num = &o->rope;
        else if (!strcmp(a, "--nope-dim")) num = &o->nope;
        else if (!strcmp(a, "--v-dim")) num = &o->vdim;
        else if (!strcmp(a, "--window")) num = &o->window;
        else if (!strcmp(a, "--full-every")) num = &o->full_every;
        else return -1;
        if (num) {
            char *end;
            long x = strtol(v, &end, 10);
            if (*end || x < 1 || x > (1 << 24)) return -1;
            *num = (int)x;
        }
    }
    if (o->config && (!o->target || (strcmp(o->target, "mla") && strcmp(o->target, "gateswa"))))
        return -1;
    if (o->config && o->ctx < 2) return -1;
    if (o->steps > 4000) return -1;
    if (!o->label && o->config) { // the config folder's name
        static char name[256];
        snprintf(name, sizeof name, "%s", o->config);
        size_t n = strlen(name);
        while (n > 1 && name[n - 1] == '/') name[--n] = 0;
        const char *b = strrchr(name, '/');
        o->label = b && b[1] ? b + 1 : name;
    }
    return o->config || o->peaks ? 0 : -1;
}

// ---- peak memory ----

// Peak bytes since the last reset (see the header); *kind names what was measured.
static void mem_peak(const ae_backend *be, int reset, double *used, double *reserved, const char **kind) {
    *used = *reserved = 0;
    *kind = "host max RSS";
#ifdef AE_HAVE_CUDA
    if (!be->host_memory && !strncmp(be->name, "cuda", 4)) {
        size_t u = 0, r = 0;
        *kind = "pool used high";
        if (ae_cuda_mem_peak(be, reset, &u, &r) == AE_OK) *used = (double)u, *reserved = (double)r;
        return;
    }
#endif
    struct rusage ru;
    if (!reset && getrusage(RUSAGE_SELF, &ru) == 0) *used = *reserved = 1024.0 * (double)ru.ru_maxrss;
}

// ---- model FLOPs (formula in the header) ----

static double module_values(ae_param_list l) {
    double n = 0;
    for (int i = 0; i < l.n; i++) n += (double)ae_param_numel(&l.p[i]);
    return n;
}

static double attn_values(ae_layer *L) {
    return L->kind == AE_ATTN_MLA ? module_values(ae_mla_params(&L->mla)) : module_values(ae_gswa_params(&L->gqa));
}

static double ffn_values(const ae_config *c, const ae_layer *L) {
    double D = c->hidden_size;
    if (L->is_moe) return D * c->num_experts + 3.0 * c->num_experts_per_tok * c->moe_intermediate_size * D;
    return 3.0 * c->intermediate_size * D;
}

// Attention FLOPs of one causal sequence of T tokens through layer l of m, per token.
static double attn_flops_per_token(const ae_model *m, int l, int T) {
    double H, dk, dv;
    int W = 0;
    if (m->layers[l].kind == AE_ATTN_MLA) {
        ae_mla_dims d = ae_model_mla_dims(&m->cfg);
        H = d.H, dk = d.dn + d.dr, dv = d.dv;
    } else {
        ae_gswa_dims d = ae_model_gswa_dims(&m->cfg, l);
        H = d.Hq, dk = d.hd, dv = d.hd, W = d.window;
    }
    double t = T, pairs = W > 0 && W < T ? W * (W + 1.0) / 2 + (t - W) * W : t * (t + 1) / 2;
    return 2.0 * pairs * H * (dk + dv) / t;
}

typedef struct {
    double per_token[2]; // model FLOPs per token of stage 1, stage 2
    double trainable;    // values of the replaced attention modules
} flop_count;

static flop_count count_flops(ae_model *t, ae_model *s, int T) {
    const ae_config *c = &t->cfg;
    double head = 2.0 * c->vocab_size * c->hidden_size, teacher = 0, s1 = 0, s_fwd = 0, s_bwd = 0;
    flop_count k = {{0, 0}, 0};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ae_layer *TL = &t->layers[l], *SL = &s->layers[l];
        double pf = ffn_values(c, TL), pa = attn_values(SL), as = attn_flops_per_token(s, l, T);
        int replaced = SL->kind != AE_ATTN_GQA;
        teacher += 2 * (attn_values(TL) + pf) + attn_flops_per_token(t, l, T);
        if (replaced) {
            s1 += 3 * (2 * pa + as);
            k.trainable += pa;
        }
        s_fwd += 2 * (pa + pf) + as;
        s_bwd += (replaced ? 4 : 2) * pa + 2 * pf + 2 * as;
    }
    k.per_token[0] = teacher + s1;
    k.per_token[1] = (teacher + head) + (s_fwd + head) + (s_bwd + head);
    return k;
}

// ---- one run of ae_distill_run ----

typedef struct {
    int ran;             // 1: the stage's steps are all in metrics.jsonl
    ae_status st;        // else why not
    char msg[1024];
    double tok_s, step_s;
} stage_result;

// The per-step tokens_per_s of stage `stage` (1 or 2) in dir/metrics.jsonl; returns their count.
static int read_metrics(const char *dir, int stage, double *tps, int cap) {
    char *path = ae_path_join(dir, "metrics.jsonl");
    FILE *f = path ? fopen(path, "r") : NULL;
    free(path);
    if (!f) return 0;
    int n = 0;
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "stage");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "tokens_per_s");
        if (cJSON_IsNumber(s) && cJSON_IsNumber(v) && s->valueint == stage && n < cap)
            tps[n++] = v->valuedouble;
        cJSON_Delete(j);
    }
    fclose(f);
    return n;
}

// A fresh, empty run folder at dir (removed first when it exists).
static ae_status fresh_dir(const char *dir) {
    if (ae_path_exists(dir)) ae_path_rmtree(dir);
    if (mkdir(dir, 0755) != 0) return ae_errorf(AE_ERR_IO, "%s: cannot create the run folder", dir);
    return AE_OK;
}

// Runs the stages in mask (bit 0: stage 1, bit 1: stage 2) in one ae_distill_run and fills the
// results of those stages. Returns the run's status.
static ae_status run_once(const opts *o, const ae_model *t, ae_model *s, const ae_tokfile *data,
                          const char *dir, int mask, stage_result res[2]) {
    int ranks = ae_comm_size(o->comm); // each rank one micro-batch of --batch per step
    int64_t tokens = (int64_t)(o->steps + WARMUP) * o->batch * o->ctx * ranks;
    ae_distill_opts d = {.ctx = o->ctx, .batch = o->batch, .accum = ranks, .comm = o->comm,
                         .stage_tokens = {mask & 1 ? tokens : 0, mask & 2 ? tokens : 0},
                         .lr = {1e-4f, 1e-4f}, .warmup_frac = 0.0f, .min_lr_ratio = 0.1f,
                         .weight_decay = 0.01f, .clip = 1.0f, .tau = 1.0f, .cos_weight = 0.1f,
                         .save_every = -1, .log_every = 1, .optim_8bit = o->optim_8bit,
                         .grad_bf16 = o->grad_bf16, .train_all = o->train_all,
                         .s2_keep_attn = o->keep_attn, .seed = o->seed};
    AE_TRY(fresh_dir(dir));
    ae_distill_result r;
    ae_status st = ae_distill_run(t, s, data, &d, dir, 0, &r);
    const char *err = st == AE_OK ? "" : ae_last_error();
    int total = o->steps + WARMUP;
    for (int k = 0; k < 2; k++) {
        if (!(mask & (1 << k))) continue;
        stage_result *x = &res[k];
        double tps[4096];
        int n = read_metrics(dir, k + 1, tps, 4096);
        memset(x, 0, sizeof *x);
        if (n >= total) {
            x->ran = 1;
            x->tok_s = bench_median(tps + WARMUP, n - WARMUP);
            x->step_s = (double)o->batch * o->ctx * ranks / x->tok_s;
        } else {
            x->st = st != AE_OK ? st : AE_ERR_FORMAT;
            snprintf(x->msg, sizeof x->msg, "%s", st != AE_OK ? err : "metrics.jsonl lacks steps");
        }
    }
    return st;
}

// ---- output ----

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch == '\n') fputs("\\n", stdout);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

typedef struct {
    double gemm, used, reserved;
    const char *mem_kind;
    flop_count fl;
} run_info;

static void print_row(const opts *o, const ae_backend *be, int k, const stage_result *x,
                      const run_info *ri) {
    // several ranks: the group's FLOP/s against the GEMM rate of all its GPUs
    double fpt = ri->fl.per_token[k], tflops = x->ran ? fpt * x->tok_s / 1e12 : 0;
    double mfu = x->ran && ri->gemm > 0 ? fpt * x->tok_s / (ri->gemm * ae_comm_size(o->comm)) : 0;
    const char *status = x->ran ? "ok" : x->st == AE_ERR_UNSUPPORTED ? "refused" : "failed";
    int ranks = ae_comm_size(o->comm);
    printf("bench_distill | %s | %s | %s | stage %d | %d x %d | optim %s, grads %s%s | ", o->label,
           be->name, o->target, k + 1, o->batch, o->ctx, o->optim_8bit ? "8bit" : "fp32",
           o->grad_bf16 ? "bf16" : "fp32", o->train_all ? ", train all" : "");
    if (ranks > 1) printf("%d ranks (%s) | ", ranks, ae_comm_kind(o->comm));
    if (x->ran)
        printf("%.0f tok/s | %.3f s/step | %.1f TFLOP/s | MFU %.1f%% | peak %.1f GiB (%s; reserved "
               "%.1f GiB)\n", x->tok_s, x->step_s, tflops, 100 * mfu, ri->used / 1073741824.0,
               ri->mem_kind, ri->reserved / 1073741824.0);
    else
        printf("%s: %s\n", status, x->msg);
    if (o->json) {
        printf("{\"bench\":\"bench_distill\",\"shape\":");
        json_str(o->label);
        printf(",\"target\":\"%s\",\"batch\":%d,\"ctx\":%d,\"window\":%d,\"stage\":%d,\"steps\":%d,"
               "\"optim_state\":\"%s\",\"grad_dtype\":\"%s\",\"status\":\"%s\",\"ranks\":%d,",
               o->target, o->batch, o->ctx, o->window, k + 1, o->steps,
               o->optim_8bit ? "8bit" : "fp32", o->grad_bf16 ? "bf16" : "fp32", status, ranks);
        printf("\"train\":\"%s\",\"stage2_acts\":\"%s\",", o->train_all ? "all" : "attention",
               o->keep_attn ? "keep" : "recompute");
        if (x->ran)
            printf("\"tok_s\":%.1f,\"step_s\":%.4f,\"tflops\":%.2f,\"mfu\":%.4f,", x->tok_s, x->step_s,
                   tflops, mfu);
        else {
            printf("\"tok_s\":null,\"error\":");
            json_str(x->msg);
            putchar(',');
        }
        printf("\"flops_per_token\":%.6g,\"gemm_tflops\":%.1f,\"peak_mem_gb\":%.2f,\"reserved_gb\":%.2f,"
               "\"mem_kind\":\"%s\",\"trainable_params\":%.0f,\"backend\":\"%s\",\"device\":",
               fpt, ri->gemm / 1e12, ri->used / 1073741824.0, ri->reserved / 1073741824.0,
               ri->mem_kind, ri->fl.trainable, be->name);
        json_str(be->device);
        printf("}\n");
    }
    fflush(stdout);
}

// ---- profile ----

// Stage k (0 or 1) alone once more with both models on the op profiler; prints its table per
// step. Returns 0 on failure (message printed).
static int profile_stage(const opts *o, ae_model *t, ae_model *s, const ae_tokfile *data,
                         const char *dir, int k, const stage_result *timed) {
    const ae_backend *be = t->be, *prof = ae_backend_profile_wrap(be);
    if (!prof) {
        fprintf(stderr, "bench_distill: %s: profiler: %s\n", o->label, ae_last_error());
        return 0;
    }
    t->be = s->be = prof;
    stage_result res[2];
    memset(res, 0, sizeof res);
    ae_status st = run_once(o, t, s, data, dir, 1 << k, res);
    t->be = s->be = be;
    if (st == AE_OK && res[k].ran) {
        char what[96];
        snprintf(what, sizeof what, "%s stage %d, %d x %d, %d steps", o->target, k + 1, o->batch,
                 o->ctx, o->steps + WARMUP);
        bench_print_profile(o->label, prof, what, o->steps + WARMUP, "step", timed->step_s);
    } else {
        fprintf(stderr, "bench_distill: %s: profiled stage %d: %s\n", o->label, k + 1,
                st != AE_OK ? ae_last_error() : res[k].msg);
    }
    ae_backend_profile_free(prof);
    return st == AE_OK && res[k].ran;
}

// ---- main ----

static void usage(void) {
    fprintf(stderr,
            "usage: bench_distill --config DIR --target mla|gateswa [--batch B] [--ctx T] [--steps N]\n"
            "         [--stage 1|2|both] [--device cuda|cpu] [--json] [--label S] [--peaks]\n"
            "         [--kv-lora 512] [--rope-dim 64] [--nope-dim 128] [--v-dim 128] [--window 1024]\n"
            "         [--full-every 6] [--out DIR] [--keep] [--seed S] [--profile]\n"
            "         [--optim-state fp32|8bit] [--grad-dtype fp32|bf16] [--train attention|all]\n"
            "         [--stage2-acts recompute|keep]\n"
            "         [--gpus N]\n"
            "       bench_distill --peaks [--device D]   (the bf16 GEMM rate only)\n");
}

// The random-id token stream: 4 windows' worth per sequence of a batch, ids uniform in [0, V).
static ae_status make_data(const opts *o, int V, ae_tokfile *f, uint32_t **ids) {
    uint64_t n = (uint64_t)(o->ctx + 1) * (uint64_t)o->batch * 4;
    *ids = ae_malloc(sizeof(uint32_t) * n);
    if (!*ids) return AE_ERR_NOMEM;
    ae_rng r;
    ae_rng_seed(&r, o->seed + 99);
    for (uint64_t i = 0; i < n; i++) (*ids)[i] = (uint32_t)(ae_rng_u64(&r) % (uint64_t)V);
    memset(f, 0, sizeof *f);
    f->version = AE_TOKFILE_VERSION;
    f->vocab_size = (uint32_t)V;
    f->eos_id = 0;
    f->n_tokens = n;
    f->ids = *ids;
    return AE_OK;
}

// --gpus N (or mpirun -np N): N data-parallel ranks, one GPU each, each running one micro-batch
// of --batch sequences per step (accum = N): the global tokens/s of the group, printed by rank 0.
int main(int argc, char **argv) {
    int gi = ae_dist_gpus_arg(argc, argv);
    if (gi && !getenv("AE_DIST_RANK")) return ae_dist_launch(argc, argv, gi, 1);
    opts o;
    if (parse(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    ae_dist_env env;
    char dev[32];
    if (ae_dist_env_read(&env) != AE_OK) {
        fprintf(stderr, "bench_distill: %s\n", ae_last_error());
        return 2;
    }
    o.device = ae_dist_device_name(&env, o.device, dev, sizeof dev); // rank r: GPU r of its host
    const ae_backend *be;
    if (ae_backend_open(o.device, &be) != AE_OK || ae_comm_open(&env, be, &o.comm) != AE_OK) {
        fprintf(stderr, "bench_distill: %s\n", ae_last_error());
        return 1;
    }
    if (env.rank != 0 && !freopen("/dev/null", "w", stdout)) return 1; // rank 0 reports
    run_info ri = {0};
    const char *g = getenv("AE_BENCH_GEMM_PEAK");
    ri.gemm = g && atof(g) > 0 ? atof(g) * 1e12 : bench_peak_gemm(be, be->host_memory ? 1024 : 8192);
    printf("bench_distill | peaks | %s | %s | gemm %.1f TFLOP/s%s\n", be->name, be->device,
               ri.gemm / 1e12, g && atof(g) > 0 ? " (AE_BENCH_GEMM_PEAK)" : "");
    if (!o.config) {
        ae_backend_close(be);
        return 0;
    }
    mem_peak(be, 1, &ri.used, &ri.reserved, &ri.mem_kind); // the run's peak starts here
    ae_model *t = NULL, *s = NULL;
    double t0 = ae_time_now();
    ae_status st = ae_model_random(o.config, be, o.seed, &t);
    if (st == AE_OK) st = be->sync(be);
    double t_teacher = ae_time_now() - t0;
    ae_student_spec spec = {.target = strcmp(o.target, "mla") ? AE_ATTN_GATESWA : AE_ATTN_MLA,
                            .q_lora_rank = 0, .kv_lora_rank = o.kv_lora, .qk_rope_dim = o.rope,
                            .qk_nope_dim = o.nope, .v_head_dim = o.vdim, .full_every = o.full_every,
                            .window = o.window, .gate = AE_GATE_ELEMENTWISE, .sinks = 0,
                            .init_teacher = 0, .seed = o.seed + 1};
    ae_init_report rep;
    t0 = ae_time_now();
    // attention only: the student shares the teacher's frozen tensors (as attnedit convert)
    if (st == AE_OK) st = o.train_all ? ae_model_random(o.config, be, o.seed, &s) : ae_model_share(t, &s);
    if (st == AE_OK) st = ae_student_make(s, &spec, &rep);
    if (st == AE_OK) st = be->sync(be);
    double t_student = ae_time_now() - t0;
    ae_tokfile data;
    uint32_t *ids = NULL;
    if (st == AE_OK) st = make_data(&o, t->cfg.vocab_size, &data, &ids);
    char *dir = NULL;
    if (st == AE_OK) { // the run folder: --out, or a new one under $AE_BENCH_TMP / $TMPDIR / /tmp
        if (o.out) {
            dir = strdup(o.out);
        } else {
            const char *base = getenv("AE_BENCH_TMP");
            if (!base || !*base) base = getenv("TMPDIR");
            if (!base || !*base) base = "/tmp";
            dir = ae_path_join(base, "bench_distill.XXXXXX");
            if (dir && !mkdtemp(dir)) st = ae_errorf(AE_ERR_IO, "%s: cannot create a folder", dir);
        }
        if (!dir && st == AE_OK) st = AE_ERR_NOMEM;
    }
    if (st != AE_OK) {
        fprintf(stderr, "bench_distill: %s: %s\n", o.label, ae_last_error());
        free(ids);
        free(dir);
        ae_model_free(s);
        ae_model_free(t);
        ae_backend_close(be);
        return 1;
    }
    ri.fl = count_flops(t, s, o.ctx);
    double ck = (ri.fl.trainable * 12.0) / 1073741824.0; // masters + two moments, F32
    printf("bench_distill | %s | %s | setup | teacher %.2f B params made in %.1f s; %s student "
           "(%.3f B trained attention values) made in %.1f s; run folder %s (a checkpoint of "
           "~%.1f GiB at each stage end, not timed)\n",
           o.label, be->name, t->n_params / 1e9, t_teacher, o.target, ri.fl.trainable / 1e9,
           t_student, dir, ck);
    fflush(stdout);

    stage_result res[2];
    memset(res, 0, sizeof res);
    t0 = ae_time_now();
    ae_status rs = run_once(&o, t, s, &data, dir, o.stages, res);
    // refused before any step with both stages asked: the refusal is stage 2's when stage 1
    // runs alone (a refusal of stage 1 is then reported by that run)
    if (rs == AE_ERR_UNSUPPORTED && o.stages == 3 && !res[0].ran && !res[1].ran) {
        stage_result first = res[1];
        rs = run_once(&o, t, s, &data, dir, 1, res);
        res[1] = first;
        if (!res[0].ran)
            snprintf(res[1].msg, sizeof res[1].msg, "not run (stage 1 failed): %.900s", first.msg);
    }
    double wall = ae_time_now() - t0;
    mem_peak(be, 0, &ri.used, &ri.reserved, &ri.mem_kind);
    int ok = 1;
    for (int k = 0; k < 2 && env.rank == 0; k++) // the other ranks have no metrics.jsonl to read
        if (o.stages & (1 << k)) {
            print_row(&o, be, k, &res[k], &ri);
            if (!res[k].ran && res[k].st != AE_ERR_UNSUPPORTED) ok = 0;
        }
    printf("bench_distill | %s | %s | wall | %.1f s in ae_distill_run (steps, stage-end checkpoints, "
           "loss plots)\n", o.label, be->name, wall);
    for (int k = 0; o.profile && k < 2; k++)
        if ((o.stages & (1 << k)) && res[k].ran && !profile_stage(&o, t, s, &data, dir, k, &res[k]))
            ok = 0;
    if (env.rank != 0) ok = rs == AE_OK;
    if (!o.keep) ae_path_rmtree(dir);
    free(dir);
    free(ids);
    ae_model_free(s); // before t: s shares t's tensors
    ae_model_free(t);
    ae_comm_close(o.comm);
    ae_backend_close(be);
    return ok ? 0 : 1;
}
