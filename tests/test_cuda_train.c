// The distillation on the GPU, end to end through `attnedit convert --device cuda` on the
// repository's micro teacher (models/qwen3-micro, fp32 weights; bf16 on the GPU):
//  (a) cuda against the cpu reference: the same run (a GateSWA student with sinks and a
//      per-head gate, and an MLA student) on both devices. The first step's loss (the same
//      initial parameters: only bf16 storage and rounding differ) agrees within 3% relative,
//      the mean of the last logged interval within 10% (trajectories drift apart slowly), and
//      the loss falls on cuda (below 90% of its first value after 16 steps; the cpu run falls to
//      ~80% on this budget).
//  (b) a GPU run killed with SIGKILL after step 5 and resumed with --device cuda ends with the
//      same model.safetensors as the uninterrupted run, byte for byte (deterministic kernels,
//      fp32 master weights and moments in the checkpoint).
//  (c) stage 2 (KL over the whole student, attention-only training) of a GateSWA student on both
//      devices, straight from its random initialisation (--stage1-tokens 0: the same initial
//      parameters on both). The first step's KL agrees within 5% relative: the KL is ~2 there
//      and bf16 storage of weights and activations moves each logit by ~2^-8 relative through
//      four layers and the head (stage 1's losses, through one module, agree within 3%; the KL
//      compounds four layers); and the KL falls on cuda (the mean of the last four steps below
//      75% of the first: on cpu 2.14 -> 1.23, measured; single steps are noisy, each a new batch).
//  (d) a GPU run killed with SIGKILL in stage 2 (after stage 1) and resumed on cuda ends with the
//      same model.safetensors as the uninterrupted run, byte for byte; also for an MLA student
//      resumed with --stage2-acts keep (the backward from the forward's kept attention
//      activations gives the recomputing backward's bits).
//  (e) stage 2 through mixture-of-experts layers (the shared qwen3-moe teacher, 8 experts, top-2,
//      norm_topk_prob; a GateSWA student, --train all so the router and experts train too) on
//      both devices from the same initialisation: the first step's KL agrees within 5% relative
//      (as (c): bf16 storage through six layers; the routing of a token may flip where two
//      experts' probabilities are within bf16 rounding, which the mean over 128 tokens absorbs),
//      the KL falls on cuda (the mean of the last four steps below 75% of the first: on cpu
//      3.95 -> 2.03, measured), and two cuda runs give the same model.safetensors byte for byte
//      (deterministic MoE ops). Skipped with a printed reason when ../shared is absent.
//  (f) --grad-dtype bf16 (gradients of the bf16 weights in bf16): stage 1 + stage 2 of a GateSWA
//      student with sinks (their gradients stay F32), --train all (embedding, norms, MLPs and
//      lm_head gradients in bf16 too) and --accum 2 (micro-batches added in bf16), against the
//      same run with F32 gradients. The first step's loss is the same bits (nothing was updated
//      yet); every later logged loss within 3% relative of the F32 run's (each gradient value
//      rounded to bf16, 2^-9 relative, moves AdamW's normalised update by about as much; over
//      12 steps the losses drift by well under 1% expected; a gradient summed wrongly, e.g. a
//      dropped micro-batch, moves them by far more); the stage-2 KL falls as with F32 (below
//      90% of its first value). Then (b)'s kill + resume with --grad-dtype bf16 in stage 2:
//      bit-identical to the uninterrupted bf16 run.
//  (g) stage 1 with the teacher on a second stream, one layer ahead of the student (the default),
//      against the same run in one stream (AE_STAGE1_OVERLAP=0): the same model.safetensors
//      byte for byte, for an MLA student with the block-output term (which reads the teacher's
//      stream on both sides of a layer: the three-slot ring), a GateSWA student, and on the MoE
//      teacher (its routing and grouped experts on the second stream; with ../shared). An
//      ordering bug (a slot overwritten before the student read it) changes the bits. The MLA
//      run also with the teacher one layer ahead instead of two (AE_STAGE1_AHEAD=1: two slots,
//      three streams). And both stages with the cosine term (stage 2's teacher forward on its own
//      stream beside the student's, its streams read through the student's backward).
// Needs a CUDA build and a GPU: prints "SKIP ..." and exits 77 otherwise (AE_REQUIRE_GPU=1:
// fails instead).
#define _XOPEN_SOURCE 700
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/file.h"
#include "util/testutil.h"

static char *g_dir, *g_tokens, *g_moe_tokens;
static int g_fail;

#define CHECK(cond, ...) AE_TEST_CHECK(g_fail, "", cond, __VA_ARGS__)

// Budgets and learning rates of the runs: stage 1 alone; stage 2 alone (from the initialisation);
// both (4 + 8 steps of 128 tokens).
static const char *const k_stage1[] = {"--stage1-tokens", "2048", "--stage2-tokens", "0",
                                       "--stage1-lr", "3e-3", NULL};
static const char *const k_stage2[] = {"--stage1-tokens", "0", "--stage2-tokens", "2048",
                                       "--stage2-lr", "3e-3", NULL};
static const char *const k_both[] = {"--stage1-tokens", "512", "--stage2-tokens", "1024",
                                     "--stage1-lr", "3e-3", "--stage2-lr", "3e-3", NULL};

// `attnedit convert` of a teacher on its token file: the common options, the budgets, a
// target's options (both NULL-terminated) and the device; env ("NAME=VALUE") for the child or
// NULL.
static int convert_teacher(const char *teacher, const char *tokens, const char *out,
                           const char *device, const char *const *budget,
                           const char *const *target, const char *env, char **err) {
    const char *argv[48];
    int n = 0;
    const char *base[] = {"convert", "--teacher", teacher, "--data", tokens,
                          "--ctx", "64", "--batch", "2", "--warmup", "0.1", "--save-every", "4",
                          "--log-every", "1", "--device", device, "--out", out};
    for (size_t i = 0; i < sizeof base / sizeof *base; i++) argv[n++] = base[i];
    for (int i = 0; budget[i]; i++) argv[n++] = budget[i];
    for (int i = 0; target[i]; i++) argv[n++] = target[i];
    argv[n] = NULL;
    char *name = NULL;
    if (env) {
        name = strdup(env);
        char *eq = strchr(name, '=');
        *eq = '\0';
        setenv(name, eq + 1, 1);
    }
    int rc = ae_test_run_cli(argv, NULL, NULL, err);
    if (name) unsetenv(name);
    free(name);
    return rc;
}

// convert_teacher on the micro teacher.
static int convert(const char *out, const char *device, const char *const *budget,
                   const char *const *target, const char *env, char **err) {
    return convert_teacher(ae_test_src("models/qwen3-micro"), g_tokens, out, device, budget, target,
                           env, err);
}

// The "loss" of metrics.jsonl record k (0-based; -1: the last), NAN when absent.
static double loss_at(const char *out, int k) { return ae_test_metric(out, k, "loss"); }

static int same_file(const char *a, const char *b, const char *name) {
    char *pa = ae_path_join(a, name), *pb = ae_path_join(b, name), *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq = ae_file_read_all(pa, &x, &nx) == AE_OK && ae_file_read_all(pb, &y, &ny) == AE_OK &&
             nx == ny && memcmp(x, y, nx) == 0;
    free(x), free(y), free(pa), free(pb);
    return eq;
}

static void cuda_matches_cpu(const char *label, const char *const *target) {
    char *a = ae_path_join(g_dir, "cpu"), *b = ae_path_join(g_dir, "cuda");
    char *err = NULL;
    ae_test_rmtree(a), ae_test_rmtree(b);
    int rc = convert(a, "cpu", k_stage1, target, NULL, &err);
    CHECK(rc == 0, "%s cpu run: exit %d: %s", label, rc, err);
    free(err);
    rc = convert(b, "cuda", k_stage1, target, NULL, &err);
    CHECK(rc == 0, "%s cuda run: exit %d: %s", label, rc, err);
    free(err);
    double c0 = loss_at(a, 0), g0 = loss_at(b, 0), c1 = loss_at(a, -1), g1 = loss_at(b, -1);
    printf("%s: stage-1 loss cpu %.6f -> %.6f, cuda %.6f -> %.6f (first step %+.2f%%, last %+.2f%%)\n",
           label, c0, c1, g0, g1, 100 * (g0 - c0) / c0, 100 * (g1 - c1) / c1);
    CHECK(fabs(g0 - c0) <= 0.03 * c0, "%s: first-step loss cuda %g vs cpu %g", label, g0, c0);
    CHECK(fabs(g1 - c1) <= 0.10 * c1, "%s: last loss cuda %g vs cpu %g", label, g1, c1);
    CHECK(g1 < 0.9 * g0, "%s: the loss on cuda did not fall (%g -> %g)", label, g0, g1);
    ae_test_rmtree(a), ae_test_rmtree(b);
    free(a), free(b);
}

// The mean "loss" of the last k records of metrics.jsonl (k <= the number of records).
static double mean_last(const char *out, int k) {
    const int lines = ae_test_metric_records(out);
    double sum = 0.0;
    for (int i = lines - k; i < lines; i++) sum += loss_at(out, i);
    return lines >= k ? sum / k : NAN;
}

// (c) stage 2 alone on both devices.
static void stage2_cuda_matches_cpu(const char *label, const char *const *target) {
    char *a = ae_path_join(g_dir, "s2-cpu"), *b = ae_path_join(g_dir, "s2-cuda");
    char *err = NULL;
    ae_test_rmtree(a), ae_test_rmtree(b);
    int rc = convert(a, "cpu", k_stage2, target, NULL, &err);
    CHECK(rc == 0, "%s stage-2 cpu run: exit %d: %s", label, rc, err);
    free(err);
    rc = convert(b, "cuda", k_stage2, target, NULL, &err);
    CHECK(rc == 0, "%s stage-2 cuda run: exit %d: %s", label, rc, err);
    free(err);
    double c0 = loss_at(a, 0), g0 = loss_at(b, 0), c1 = mean_last(a, 4), g1 = mean_last(b, 4);
    printf("%s: stage-2 KL cpu %.6f -> %.6f, cuda %.6f -> %.6f (first step %+.2f%%; means of the "
           "last 4 steps)\n", label, c0, c1, g0, g1, 100 * (g0 - c0) / c0);
    CHECK(fabs(g0 - c0) <= 0.05 * c0, "%s: first-step KL cuda %g vs cpu %g", label, g0, c0);
    CHECK(g1 < 0.75 * g0, "%s: the KL on cuda did not fall (%g -> %g)", label, g0, g1);
    ae_test_rmtree(a), ae_test_rmtree(b);
    free(a), free(b);
}

// (b), (d): killed at global step kill_at (a checkpoint every 4 steps) and resumed on cuda.
static void resume_bit_identical(const char *label, const char *const *budget,
                                 const char *const *target, const char *kill_at, int resume_keep) {
    char *a = ae_path_join(g_dir, "whole"), *b = ae_path_join(g_dir, "killed");
    char *err = NULL, env[64];
    ae_test_rmtree(a), ae_test_rmtree(b);
    int rc = convert(a, "cuda", budget, target, NULL, &err);
    CHECK(rc == 0, "%s: uninterrupted run: exit %d: %s", label, rc, err);
    free(err);
    snprintf(env, sizeof env, "AE_TEST_KILL_AT_STEP=%s", kill_at);
    rc = convert(b, "cuda", budget, target, env, &err);
    CHECK(rc == 128 + SIGKILL, "%s: killed run: exit %d, want SIGKILL: %s", label, rc, err);
    free(err);
    const char *resume[] = {"convert", "--resume", b, "--device", "cuda", "--stage2-acts",
                            resume_keep ? "keep" : "recompute", NULL};
    rc = ae_test_run_cli(resume, NULL, NULL, &err);
    CHECK(rc == 0, "%s: resume: exit %d: %s", label, rc, err);
    free(err);
    int same = same_file(a, b, "model.safetensors");
    printf("%s: killed at step %s + resumed on cuda == uninterrupted cuda run: %s\n", label, kill_at,
           same ? "yes" : "NO");
    CHECK(same, "%s: model.safetensors differs between the resumed and the uninterrupted GPU run", label);
    ae_test_rmtree(a), ae_test_rmtree(b);
    free(a), free(b);
}

// (g) stage 1 of teacher on tokens, two streams against one.
static const char *const k_overlap_s1[] = {"--stage1-tokens", "1024", "--stage2-tokens", "0",
                                           "--stage1-lr", "3e-3", "--stage1-block", "0.5", NULL};
// both stages, the cosine term on (the teacher's streams read through the student's backward)
static const char *const k_overlap_s2[] = {"--stage1-tokens", "256", "--stage2-tokens", "1024",
                                           "--stage1-lr", "3e-3", "--stage2-lr", "3e-3",
                                           "--cos-weight", "0.1", NULL};

static void overlap_same_bits_in(const char *label, const char *teacher, const char *tokens,
                                 const char *const *budget, const char *const *target,
                                 const char *env) {
    char *a = ae_path_join(g_dir, "two-streams"), *b = ae_path_join(g_dir, "one-stream");
    char *err = NULL;
    ae_test_rmtree(a), ae_test_rmtree(b);
    int rc = convert_teacher(teacher, tokens, a, "cuda", budget, target, env, &err);
    CHECK(rc == 0, "%s: stage 1 on two streams: exit %d: %s", label, rc, err);
    free(err);
    rc = convert_teacher(teacher, tokens, b, "cuda", budget, target, "AE_STAGE1_OVERLAP=0", &err);
    CHECK(rc == 0, "%s: stage 1 on one stream: exit %d: %s", label, rc, err);
    free(err);
    int same = same_file(a, b, "model.safetensors");
    printf("%s: teacher on its own stream%s%s == one stream: %s (loss %.6f -> %.6f)\n",
           label, env ? ", " : "", env ? env : "", same ? "yes" : "NO", loss_at(a, 0), loss_at(a, -1));
    CHECK(same, "%s: two streams wrote another model.safetensors than one", label);
    ae_test_rmtree(a), ae_test_rmtree(b);
    free(a), free(b);
}

static void overlap_same_bits(const char *label, const char *teacher, const char *tokens,
                              const char *const *target, const char *env) {
    overlap_same_bits_in(label, teacher, tokens, k_overlap_s1, target, env);
}

// (f) F32 against BF16 gradients on cuda: a GateSWA student (target), both stages, every
// parameter trained, 2 micro-batches a step.
static void bf16_grads_track_f32(const char *const *target) {
    static const char *const f32[] = {"--stage1-tokens", "1024", "--stage2-tokens", "2048",
                                      "--stage1-lr", "3e-3", "--stage2-lr", "3e-3", "--train",
                                      "all", "--accum", "2", NULL};
    static const char *const bf16[] = {"--stage1-tokens", "1024", "--stage2-tokens", "2048",
                                       "--stage1-lr", "3e-3", "--stage2-lr", "3e-3", "--train",
                                       "all", "--accum", "2", "--grad-dtype", "bf16", NULL};
    char *a = ae_path_join(g_dir, "grad-f32"), *b = ae_path_join(g_dir, "grad-bf16");
    char *err = NULL;
    ae_test_rmtree(a), ae_test_rmtree(b);
    int rc = convert(a, "cuda", f32, target, NULL, &err);
    CHECK(rc == 0, "F32-gradient cuda run: exit %d: %s", rc, err);
    free(err);
    rc = convert(b, "cuda", bf16, target, NULL, &err);
    CHECK(rc == 0, "BF16-gradient cuda run: exit %d: %s", rc, err);
    free(err);
    // 1024 / (64 · 2 · 2) = 4 steps of stage 1, then 8 of stage 2: 12 records
    double worst = 0;
    int wk = 0;
    for (int k = 0; k < 12; k++) {
        double f = loss_at(a, k), h = loss_at(b, k), e = fabs(h - f) / f;
        CHECK(isfinite(f) && isfinite(h), "record %d: loss F32 %g, BF16 %g", k, f, h);
        if (e > worst) worst = e, wk = k;
    }
    double f0 = loss_at(a, 0), h0 = loss_at(b, 0), s2f = loss_at(a, 4), s2h = loss_at(b, 4);
    double endf = mean_last(a, 4), endh = mean_last(b, 4);
    printf("--grad-dtype bf16 vs fp32 (gateswa, --train all, --accum 2): first loss %.9g vs %.9g; "
           "largest difference %.3f%% (record %d); stage-2 KL %.6f -> %.6f (bf16) vs %.6f -> %.6f "
           "(fp32)\n", h0, f0, 100 * worst, wk, s2h, endh, s2f, endf);
    CHECK(h0 == f0, "first-step loss with bf16 gradients %.9g differs from fp32's %.9g", h0, f0);
    CHECK(worst <= 0.03, "record %d: loss with bf16 gradients off by %.2f%% from fp32's", wk,
          100 * worst);
    CHECK(endh < 0.9 * s2h, "stage-2 KL with bf16 gradients did not fall (%g -> %g)", s2h, endh);
    ae_test_rmtree(a), ae_test_rmtree(b);
    free(a), free(b);
}

// (e) stage 2 through MoE layers on both devices, and twice on cuda.
static void moe_stage2_cuda(const char *teacher, const char *const *target) {
    static const char *const budget[] = {"--stage1-tokens", "0", "--stage2-tokens", "2048",
                                         "--stage2-lr", "3e-3", "--train", "all", NULL};
    char *a = ae_path_join(g_dir, "moe-cpu"), *b = ae_path_join(g_dir, "moe-cuda");
    char *b2 = ae_path_join(g_dir, "moe-cuda2"), *err = NULL;
    ae_test_rmtree(a), ae_test_rmtree(b), ae_test_rmtree(b2);
    int rc = convert_teacher(teacher, g_moe_tokens, a, "cpu", budget, target, NULL, &err);
    CHECK(rc == 0, "MoE stage-2 cpu run: exit %d: %s", rc, err);
    free(err);
    rc = convert_teacher(teacher, g_moe_tokens, b, "cuda", budget, target, NULL, &err);
    CHECK(rc == 0, "MoE stage-2 cuda run: exit %d: %s", rc, err);
    free(err);
    rc = convert_teacher(teacher, g_moe_tokens, b2, "cuda", budget, target, NULL, &err);
    CHECK(rc == 0, "MoE stage-2 second cuda run: exit %d: %s", rc, err);
    free(err);
    double c0 = loss_at(a, 0), g0 = loss_at(b, 0), c1 = mean_last(a, 4), g1 = mean_last(b, 4);
    int same = same_file(b, b2, "model.safetensors");
    printf("qwen3-moe teacher, gateswa student, --train all: stage-2 KL cpu %.6f -> %.6f, cuda "
           "%.6f -> %.6f (first step %+.2f%%; means of the last 4 steps); two cuda runs "
           "bit-identical: %s\n", c0, c1, g0, g1, 100 * (g0 - c0) / c0, same ? "yes" : "NO");
    CHECK(fabs(g0 - c0) <= 0.05 * c0, "MoE stage 2: first-step KL cuda %g vs cpu %g", g0, c0);
    CHECK(g1 < 0.75 * g0, "MoE stage 2: the KL on cuda did not fall (%g -> %g)", g0, g1);
    CHECK(same, "MoE stage 2: two cuda runs wrote different model.safetensors");
    ae_test_rmtree(a), ae_test_rmtree(b), ae_test_rmtree(b2);
    free(a), free(b), free(b2);
}

// (e) on the shared MoE teacher, with its own token file; skipped without ../shared.
static void moe_stage2(const char *const *target) {
    const char *teacher = ae_test_shared("teachers/qwen3-moe", "MoE stage 2 on cuda (test (e))");
    if (!teacher) return;
    g_moe_tokens = ae_path_join(g_dir, "moe.tok");
    const char *prep[] = {"prepare-data", "--model", teacher, "--out", g_moe_tokens,
                          ae_test_src("data/sample.txt"), NULL};
    char *err = NULL;
    int rc = ae_test_run_cli(prep, NULL, NULL, &err);
    CHECK(rc == 0, "prepare-data (qwen3-moe): %s", err);
    free(err);
    if (rc == 0) moe_stage2_cuda(teacher, target);
    if (rc == 0 && !g_fail)
        overlap_same_bits("qwen3-moe teacher, gateswa", teacher, g_moe_tokens, target, NULL);
    free(g_moe_tokens);
}

int main(void) {
    const ae_backend *be;
    int rc = ae_test_open_gpu(&be, 0);
    if (rc) return rc;
    ae_backend_close(be); // the runs below open their own, in the child processes
    rc = ae_test_prepare_tokens("models/qwen3-micro", &g_dir, &g_tokens);
    CHECK(rc == 0, "prepare-data: exit %d (its message above)", rc);
    const char *gswa[] = {"--target", "gateswa", "--window", "16", "--full-every", "2", "--sinks",
                          "--gate", "head", "--init", "random", NULL}; // (a), (c), (e): from random
    const char *mla[] = {"--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--init",
                         "teacher", NULL};
    if (!g_fail) cuda_matches_cpu("gateswa (sinks, head gate)", gswa);
    if (!g_fail) cuda_matches_cpu("mla 32+8 (teacher init)", mla);
    if (!g_fail) resume_bit_identical("stage 1, mla", k_stage1, mla, "5", 0); // checkpoint at step 4
    const char *micro = ae_test_src("models/qwen3-micro");
    if (!g_fail) overlap_same_bits("mla 32+8, --stage1-block 0.5", micro, g_tokens, mla, NULL);
    if (!g_fail)
        overlap_same_bits("mla 32+8, --stage1-block 0.5", micro, g_tokens, mla, "AE_STAGE1_AHEAD=1");
    if (!g_fail) overlap_same_bits("gateswa (sinks, head gate)", micro, g_tokens, gswa, NULL);
    if (!g_fail)
        overlap_same_bits_in("stage 2, mla, --cos-weight 0.1", micro, g_tokens, k_overlap_s2, mla, NULL);
    if (!g_fail) stage2_cuda_matches_cpu("gateswa (sinks, head gate)", gswa);
    // stage 1 has 4 steps: global step 10 is stage 2's step 6, after its checkpoint at step 4
    if (!g_fail) resume_bit_identical("stage 2, gateswa", k_both, gswa, "10", 0);
    if (!g_fail) resume_bit_identical("stage 2, mla, resumed with --stage2-acts keep", k_both, mla, "10", 1);
    if (!g_fail) bf16_grads_track_f32(gswa);
    // (f): the resume with bf16 gradients (every parameter trained: all of them in the checkpoint)
    const char *gswa_bf16[] = {"--target", "gateswa", "--window", "16", "--full-every", "2", "--sinks",
                               "--gate", "head", "--init", "random", "--grad-dtype", "bf16",
                               "--train", "all", NULL};
    if (!g_fail) resume_bit_identical("stage 2, gateswa, --grad-dtype bf16", k_both, gswa_bf16, "10", 0);
    if (!g_fail) moe_stage2(gswa);
    ae_test_rmtree(g_dir);
    free(g_dir);
    free(g_tokens);
    printf(g_fail ? "test_cuda_train: %d FAILED\n" : "test_cuda_train: all passed\n", g_fail);
    return g_fail ? 1 : 0;
}
