// libFuzzer harness: the JSON files of a run folder that `attnedit convert --resume` reads back.
// Each input is written both as run/conversion.json and as run/checkpoint/state.json, then:
//   - ae_run_spec_load(run) (conversion.json); a spec that loads is checked against a student
//     config.json of its kind (tests/fixtures/configs/qwen3-8b-{mla,gateswa}) with
//     ae_run_spec_check_student, and its stage step counts are computed;
//   - ae_ckpt_load on a run whose settings are those of the seed runs (ctx 16, batch 2,
//     accum 1, budgets 256/256, seed 7, --train all), whose student has 2 layers and whose one
//     parameter "w" (4 floats) is in run/checkpoint/params.safetensors with its AdamW moments.
// Promises checked (train/run_spec.h, train/distill_internal.h): AE_OK or an error with a
// message; a loaded spec has every setting within the command-line limits; a loaded
// checkpoint has stage 0..2, 0 <= step <= the stage's steps, and the optimizer of that stage.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "train/distill_internal.h"
#include "train/run_spec.h"

static const ae_distill_opts k_opts = {
    .ctx = 16, .batch = 2, .accum = 1, .stage_tokens = {256, 256}, .lr = {1e-3f, 3e-4f},
    .warmup_frac = 0.05f, .min_lr_ratio = 0.1f, .weight_decay = 0.01f, .clip = 1.0f,
    .tau = 1.0f, .cos_weight = 0.1f, .train_all = 1, .save_every = 1, .log_every = 10, .seed = 7};

static void copy_in(const char *from, const char *rel) {
    FILE *f = fopen(from, "rb");
    if (!f) fz_fail(__FILE__, __LINE__, "setup", "cannot open %s", from);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    fz_write(rel, buf, n);
}

static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    copy_in(fz_src("tests/fixtures/configs/qwen3-8b-mla/config.json"), "cfg-mla/config.json");
    copy_in(fz_src("tests/fixtures/configs/qwen3-8b-gateswa/config.json"), "cfg-gateswa/config.json");
    static const float w[4] = {0.5f, -1.0f, 2.0f, 0.25f}, m[4] = {0}, v[4] = {1e-4f, 0, 0, 1e-3f};
    int64_t shape[1] = {4};
    ae_st_writer *wr = NULL;
    ae_status st = ae_st_writer_init(&wr);
    if (st == AE_OK) st = ae_st_writer_add(wr, "w", AE_DT_F32, 1, shape, w);
    if (st == AE_OK) st = ae_st_writer_add(wr, "adam.m/w", AE_DT_F32, 1, shape, m);
    if (st == AE_OK) st = ae_st_writer_add(wr, "adam.v/w", AE_DT_F32, 1, shape, v);
    fz_mkdir("run");
    fz_mkdir("run/checkpoint");
    if (st == AE_OK) st = ae_st_writer_finish(wr, fz_path("run/checkpoint/params.safetensors"));
    else ae_st_writer_free(wr);
    if (st != AE_OK) fz_fail(__FILE__, __LINE__, "setup", "params: %s", ae_last_error());
}

static void conversion(void) {
    ae_run_spec *r = malloc(sizeof *r);
    if (!r) abort();
    fz_begin();
    ae_status st = ae_run_spec_load(fz_path("run"), r);
    fz_check(st, "ae_run_spec_load");
    if (st == AE_OK) {
        const ae_distill_opts *o = &r->opts;
        for (const ae_run_setting *e = ae_run_settings; e->option; e++) {
            double x = e->is_float ? *(const float *)((const char *)o + e->offset)
                                   : *(const int *)((const char *)o + e->offset);
            FZ_ASSERT((x >= e->lo && x <= e->hi) || (e->zero_ok && x == 0), "train.%s = %g",
                      e->field, x);
        }
        FZ_ASSERT(o->stage_tokens[0] >= 0 && o->stage_tokens[1] >= 0 &&
                      o->stage_tokens[0] + o->stage_tokens[1] > 0, "budgets");
        FZ_ASSERT(r->spec.target == AE_ATTN_MLA || r->spec.target == AE_ATTN_GATESWA, "target");
        FZ_ASSERT(r->spec.n_layers >= 0 && r->spec.n_layers <= 1024 &&
                      r->spec.n_full_layers >= 0 && r->spec.n_full_layers <= 1024, "layer lists");
        for (int s = 0; s < 2; s++) FZ_ASSERT(ae_distill_stage_steps(o, s) >= 0, "steps");
        fz_begin();
        st = ae_run_spec_check_student(r, fz_path(r->spec.target == AE_ATTN_MLA ? "cfg-mla" : "cfg-gateswa"));
        fz_check(st, "ae_run_spec_check_student");
    }
    free(r);
}

static void checkpoint(void) {
    float w[4] = {0}, g[4] = {0};
    ae_named_param sp = {.name = "w", .t = ae_host_f32(w), .data = w, .numel = 4, .decay = 1};
    ae_named_param gp = {.name = "w", .t = ae_host_f32(g), .data = g, .numel = 4, .decay = 1};
    int trainable[1] = {0}, stage_params[1] = {0}, owner[1] = {0}, layer[1] = {-1};
    char started[1] = {0};
    ae_ptr master[1] = {ae_ptr_null()}; // an F32 parameter is its own master
    static ae_model student; // what ae_ckpt_load reads of it: the backend, the number of layers
    student.be = ae_backend_cpu();
    student.cfg.num_hidden_layers = 2;
    double layer_sum[2] = {0};
    ae_run r;
    memset(&r, 0, sizeof r);
    r.s = &student;
    r.iv.layer_sum = layer_sum;
    r.sp = &sp;
    r.gp = &gp;
    r.np = 1;
    r.trainable = trainable;
    r.stage_params = stage_params; // the run's per-tensor arrays (one rank: nothing sharded)
    r.owner = owner;
    r.layer = layer;
    r.started = started;
    r.master = master;
    r.o = &k_opts;
    r.out_dir = fz_path("run");
    int found = 0;
    fz_begin();
    ae_status st = ae_ckpt_load(&r, &found);
    fz_check(st, "ae_ckpt_load");
    FZ_ASSERT(found, "the checkpoint was not found");
    if (st == AE_OK) {
        FZ_ASSERT(r.stage >= 0 && r.stage <= 2, "stage %d", r.stage);
        FZ_ASSERT(r.step >= 0 && (r.stage == 2 || r.step <= ae_distill_stage_steps(&k_opts, r.stage)),
                  "step %lld of stage %d", (long long)r.step, r.stage);
        FZ_ASSERT(r.ntrain == (r.stage == 1 ? 1 : 0), "%d trainable tensors in stage %d", r.ntrain,
                  r.stage);
        FZ_ASSERT(w[0] == 0.5f && w[3] == 0.25f, "parameters not loaded");
        FZ_ASSERT(r.iv.n >= 0 && r.iv.n < k_opts.log_every && r.iv.top1 >= 0, "interval");
    }
    ae_adamw_free(&r.opt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    fz_write("run/conversion.json", data, size);
    fz_write("run/checkpoint/state.json", data, size);
    conversion();
    checkpoint();
    return 0;
}
