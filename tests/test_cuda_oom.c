// Out of GPU memory mid-run (issue 8, "Bad input"), on cuda with ATTNEDIT_MEM_LIMIT (the
// cuda backend compares the device pool's used bytes plus each request with it): the scenario
// of tests/test_oom.c on the GPU, through `attnedit convert --device cuda` on the micro teacher
// (ctx 64, batch 8, 2 + 2 steps):
//  (a) the limit is measured, not guessed: runs made in this process without a limit give the
//      pool's high-water mark (ae_cuda_mem_peak) of stage 1 at batch 8, stage 2 at batch 8 and
//      at batch 1; the limit lies between what fits (stage 1 at 8, stage 2 at 1) and stage 2 at
//      8 (a quarter of the gap above what fits);
//  (b) the run with that limit stops in stage 2, step 1 with exit 1 and one message: the 8 x 64
//      micro-batch that did not fit with the allocation's message ("cuda:0: out of memory
//      allocating ... ATTNEDIT_MEM_LIMIT"), the batch b that ran and `attnedit convert --resume
//      OUT --batch b --accum 8/b`; the checkpoint, metrics and model stay as they were (a second
//      --resume without --batch stops the same way and changes nothing);
//  (c) --batch b --accum a+1 (another product) is refused naming both products;
//  (d) the command of the message finishes the run under the same limit, and its final KL is
//      within 2% (relative) of the uninterrupted run's on cuda (the same sequences per step;
//      bf16 GEMMs over other row counts and gradients summed in another grouping differ in
//      rounding only: the cpu version of this test measures 1e-8 relative in fp32).
// Needs a CUDA build and a GPU: prints "SKIP ..." and exits 77 otherwise (AE_REQUIRE_GPU=1:
// fails instead).
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/cuda.h"
#include "backend/mem_limit.h"
#include "backend/ops.h"
#include "core/file.h"
#include "model/model.h"
#include "model/student.h"
#include "train/data.h"
#include "train/distill.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"

static int g_fail;

#define CHECK(cond, ...) AE_TEST_CHECK(g_fail, "", cond, __VA_ARGS__)

#ifdef AE_HAVE_CUDA

static char *g_dir, *g_tokens;

// The run folder's files a stopped or refused run must leave as they were.
static const char *const k_run_files[] = {"checkpoint/params.safetensors", "checkpoint/state.json",
                                          "conversion.json", "metrics.jsonl", "model.safetensors",
                                          NULL};

// The pool's high-water mark of a run in this process (the micro teacher and its MLA student
// sharing the frozen tensors, as `attnedit convert` makes them); 0 on failure.
static size_t peak_of(const ae_backend *be, int batch, int64_t s1, int64_t s2) {
    ae_model *t = NULL, *s = NULL;
    ae_tokfile data;
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 32, .qk_rope_dim = 8};
    ae_init_report rep;
    size_t used = 0, reserved = 0;
    char *out = ae_path_join(g_dir, "in-process");
    ae_test_rmtree(out);
    mkdir(out, 0755);
    ae_distill_opts o = {.ctx = 64, .batch = batch, .accum = 1, .stage_tokens = {s1, s2},
                         .lr = {1e-3f, 3e-4f}, .warmup_frac = 0.05f, .min_lr_ratio = 0.1f,
                         .weight_decay = 0.01f, .clip = 1.0f, .tau = 1.0f, .cos_weight = 0.1f,
                         .save_every = 1, .log_every = 1};
    ae_distill_result res;
    int ok = ae_model_load(ae_test_src(MICRO), be, &t) == AE_OK &&
             ae_student_resolve(&t->cfg, &spec) == AE_OK && ae_model_share(t, &s) == AE_OK &&
             ae_student_make(s, &spec, &rep) == AE_OK && ae_tokfile_open(g_tokens, &data) == AE_OK;
    if (ok) {
        ok = ae_cuda_mem_peak(be, 1, &used, &reserved) == AE_OK && // reset
             ae_distill_run(t, s, &data, &o, out, 0, &res) == AE_OK &&
             ae_cuda_mem_peak(be, 0, &used, &reserved) == AE_OK;
        ae_tokfile_close(&data);
    }
    CHECK(ok, "in-process run (batch %d, budgets %lld + %lld): %s", batch, (long long)s1,
          (long long)s2, ae_last_error());
    ae_model_free(s);
    ae_model_free(t);
    ae_test_rmtree(out);
    free(out);
    return ok ? used : 0;
}

static int convert(const char *out, const char *limit, char **err) {
    const char *args[] = {"convert", "--teacher", ae_test_src(MICRO), "--target", "mla",
                          "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--data", g_tokens,
                          "--ctx", "64", "--batch", "8", "--stage1-tokens", "1024",
                          "--stage2-tokens", "1024", "--save-every", "1", "--log-every", "1",
                          "--device", "cuda", "--out", out, NULL};
    ae_test_rmtree(out);
    if (limit) setenv(AE_MEM_LIMIT_ENV, limit, 1);
    int rc = ae_test_run_cli(args, NULL, NULL, err);
    unsetenv(AE_MEM_LIMIT_ENV);
    return rc;
}

static int resume(const char *dir, const char *batch, const char *accum, const char *limit, char **err) {
    const char *args[10] = {"convert", "--resume", dir, "--device", "cuda"};
    int n = 5;
    if (batch) args[n++] = "--batch", args[n++] = batch;
    if (accum) args[n++] = "--accum", args[n++] = accum;
    args[n] = NULL;
    if (limit) setenv(AE_MEM_LIMIT_ENV, limit, 1);
    int rc = ae_test_run_cli(args, NULL, NULL, err);
    unsetenv(AE_MEM_LIMIT_ENV);
    return rc;
}

static void scenario(const ae_backend *be) {
    // (a) the limit between the needs
    size_t s1_8 = peak_of(be, 8, 1024, 0), s2_8 = peak_of(be, 8, 0, 1024), s2_1 = peak_of(be, 1, 0, 1024);
    size_t fits = s1_8 > s2_1 ? s1_8 : s2_1;
    printf("pool high-water: stage 1 at batch 8 %.2f MiB, stage 2 at batch 8 %.2f MiB, at batch 1 "
           "%.2f MiB\n", s1_8 / 1048576.0, s2_8 / 1048576.0, s2_1 / 1048576.0);
    CHECK(s1_8 && s2_1 && s2_8 > fits, "stage 2 at batch 8 must need more than the rest");
    if (g_fail) return;
    char limit[32];
    snprintf(limit, sizeof limit, "%zu", fits + (s2_8 - fits) / 4);
    char *ref = ae_path_join(g_dir, "ref"), *run = ae_path_join(g_dir, "oom"), *err = NULL;
    int rc = convert(ref, NULL, &err);
    CHECK(rc == 0, "uninterrupted run: exit %d: %s", rc, err);
    free(err);

    // (b) the stop and its message
    rc = convert(run, limit, &err);
    printf("convert --device cuda, %s=%s: exit %d\n%s", AE_MEM_LIMIT_ENV, limit, rc, err);
    char want[4400];
    snprintf(want, sizeof want, "attnedit convert --resume %s --batch ", run);
    const char *cmd = strstr(err, want);
    int b = 0, a = 0;
    CHECK(rc == 1, "the limited run: exit %d, want 1", rc);
    CHECK(strstr(err, "out of memory at stage 2, step 1 of 2: a micro-batch of 8 sequences x 64 "
                      "tokens does not fit"), "the message does not name stage 2, step 1, 8 x 64");
    CHECK(strstr(err, "cuda:0: out of memory allocating") && strstr(err, AE_MEM_LIMIT_ENV),
          "the message does not give the allocation's");
    CHECK(strstr(err, "the last checkpoint (stage 2, step 0) is kept"), "no checkpoint named");
    CHECK(cmd && sscanf(cmd + strlen(want), "%d --accum %d", &b, &a) == 2 && b >= 1 && b < 8 &&
              b * a == 8, "no command with --batch b --accum a, b x a = 8");
    free(err);
    if (g_fail) return;
    size_t n0, n1;
    char *state0 = ae_test_folder_state(run, k_run_files, &n0);
    rc = resume(run, NULL, NULL, limit, &err);
    char *state1 = ae_test_folder_state(run, k_run_files, &n1);
    CHECK(rc == 1 && strstr(err, "8 sequences x 64 tokens does not fit"),
          "--resume with the same batch: exit %d: %s", rc, err);
    CHECK(ae_test_same_state(state0, n0, state1, n1), "the stopped run changed its folder");
    free(err), free(state1);

    // (c) another product
    char bs[16], as[16];
    snprintf(bs, sizeof bs, "%d", b);
    snprintf(as, sizeof as, "%d", a + 1);
    rc = resume(run, bs, as, limit, &err);
    state1 = ae_test_folder_state(run, k_run_files, &n1);
    CHECK(rc == 1 && strstr(err, "sequences per optimizer step, but the run takes 8"),
          "--batch %s --accum %s: exit %d: %s", bs, as, rc, err);
    CHECK(ae_test_same_state(state0, n0, state1, n1), "the refused resume changed the folder");
    free(err), free(state1), free(state0);

    // (d) the named command finishes, close to the uninterrupted run
    snprintf(as, sizeof as, "%d", a);
    rc = resume(run, bs, as, limit, &err);
    CHECK(rc == 0, "--resume --batch %s --accum %s: exit %d: %s", bs, as, rc, err);
    free(err);
    double kl = ae_test_run_number(run, "result", "stage2_final_loss");
    double kl_ref = ae_test_run_number(ref, "result", "stage2_final_loss");
    printf("final KL %.6f (resumed on cuda with batch %d x accum %d under the limit) vs %.6f "
           "(uninterrupted, batch 8): %+.3f%%\n", kl, b, a, kl_ref, 100 * (kl - kl_ref) / kl_ref);
    CHECK(fabs(kl - kl_ref) <= 0.02 * fabs(kl_ref), "final KL %g vs %g", kl, kl_ref);
    CHECK(ae_test_run_number(run, "train", "batch") == b && ae_test_run_number(run, "train", "accum") == a,
          "conversion.json does not record --batch %d --accum %d", b, a);
    ae_test_rmtree(run);
    ae_test_rmtree(ref);
    free(run);
    free(ref);
}

#endif

int main(void) {
    const ae_backend *be;
    int rc = ae_test_open_gpu(&be, 0);
    if (rc) return rc;
#ifdef AE_HAVE_CUDA
    rc = ae_test_prepare_tokens(MICRO, &g_dir, &g_tokens);
    CHECK(rc == 0, "prepare-data: exit %d (its message above)", rc);
    unsetenv(AE_MEM_LIMIT_ENV);
    if (!g_fail) scenario(be);
    ae_test_rmtree(g_dir);
    free(g_dir);
    free(g_tokens);
#endif
    ae_backend_close(be);
    printf(g_fail ? "test_cuda_oom: %d FAILED\n" : "test_cuda_oom: all passed\n", g_fail);
    return g_fail ? 1 : 0;
}
