#define _XOPEN_SOURCE 700
// attnedit convert --teacher T --target mla|gateswa [--kv-lora-rank R --q-lora-rank Q
//   --qk-rope-dim D --qk-nope-dim N --v-head-dim V] [--full-every K | --full-layers 0,5,11]
//   [--window W] [--gate elementwise|head] [--sinks] [--layers 0,1,...]
//   [--init random|teacher|mha2mla|transmla] [--seed S] --out S [--force]
//   [--data TOKENS --stage1-tokens N --stage2-tokens N ...training options]
//   attnedit convert --resume OUT | --restart OUT [--device D] [--batch B --accum A]
//   [--stage2-acts recompute|keep]
// Without a training budget it writes the initialised student; with one it runs the
// progressive distillation (src/train/distill.h) in OUT, checkpointing as it goes. --resume
// continues a run from its checkpoint (a finished run: says so, exit 0, touches nothing);
// --restart starts it over from step 0 with the settings of its conversion.json. Both may split
// the run's sequences per step into other micro-batches (--batch, --accum; train/rebatch.h).
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/sha256.h"
#include "dist/comm.h"
#include "model/save.h"
#include "model/student.h"
#include "train/data.h"
#include "train/rebatch.h"
#include "train/run_spec.h"

// The data-parallel group this process belongs to (dist/comm.h; NULL: alone). Every rank runs
// the same command; rank 0 alone writes. Before training the ranks agree that all of them got
// there (group_ready): a rank that failed earlier (a bad argument, a folder that exists) stops
// the others at once instead of leaving them waiting for it.
static struct {
    ae_comm *comm;
    int agreed; // group_ready ran
} s_group;

static int is_root(void) { return ae_comm_rank(s_group.comm) == 0; }

// Every rank calls this once, failed = 1 when it cannot train; returns 1 when some rank failed.
static int group_ready(int failed) {
    if (s_group.agreed || ae_comm_size(s_group.comm) <= 1) return failed;
    s_group.agreed = 1;
    double v = failed;
    if (ae_comm_allreduce_host(s_group.comm, &v, 1) != AE_OK) return ae_cli_fail("convert");
    if (v > 0 && !failed)
        fprintf(stderr, "attnedit convert: rank %d stops: %d rank%s failed before training (see "
                "above)\n", ae_comm_rank(s_group.comm), (int)v, v > 1 ? "s" : "");
    return v > 0;
}

static const char k_help[] =
    "usage: attnedit convert --teacher T --target mla|gateswa [options] --out S [--force]\n"
    "  MLA:      --kv-lora-rank R (default 4*head_dim, at most hidden_size)\n"
    "            --q-lora-rank Q (default 0: plain q_proj)  --qk-rope-dim D (default head_dim/2)\n"
    "            --qk-nope-dim N (default head_dim - D)      --v-head-dim V (default head_dim)\n"
    "  GateSWA:  --full-every K (default 6: the last layer of each group of K is full attention)\n"
    "            | --full-layers 0,5,11   --window W (default 1024)\n"
    "            --gate elementwise|head (default elementwise)   --sinks\n"
    "  both:     --layers 0,1,... (replace only these layers; default all)\n"
    "            --init random|teacher (default teacher)  --seed S (default 0)\n"
    "            MLA also --init mha2mla|transmla: the rope part from MHA2MLA's largest-norm\n"
    "            rotary pairs or TransMLA's principal key components (docs/TARGETS.md); every\n"
    "            MLA teacher init prints its K/V and rope-logit errors per layer\n"
    "  training (progressive distillation; without budgets only the initialised student is written):\n"
    "            --data TOKENS (from attnedit prepare-data)  --ctx N (256)  --batch B (8)  --accum A (1)\n"
    "            --stage1-tokens N  --stage2-tokens N  (budgets; 0 skips a stage)\n"
    "            --stage1-lr X (1e-3)  --stage2-lr X (3e-4)  --warmup F (0.05 of the steps)\n"
    "            --min-lr-ratio F (0.1)  --weight-decay X (0.01)  --clip X (1.0)\n"
    "            --stage1-loss mse|normalized  --stage1-block W (0: off; weight of the block\n"
    "            output through the frozen teacher MLP)  --tau T (1)  --cos-weight L (0.1)\n"
    "            --train attention|all (stage 2; default attention)  --save-every N (steps)\n"
    "            --log-every N (10)  --save-minutes M (also a checkpoint every M minutes; 0: off)\n"
    "            --optim-state fp32|8bit (AdamW moments: fp32, 8 bytes per trained value, the\n"
    "            default; 8bit, 2.03 bytes: block-quantised m and sqrt(v); docs/DISTILL.md)\n"
    "            --stage2-acts recompute|keep (stage 2: the backward recomputes each layer's\n"
    "            attention-module activations, the default, or keeps them from the forward:\n"
    "            faster, more memory; the same result either way; docs/DISTILL.md)\n"
    "  device:   --device cpu|cuda[:N] (default: cuda when a GPU is present, else cpu; the\n"
    "            environment's ATTNEDIT_DEVICE overrides the default). On cuda the teacher and\n"
    "            student are bf16 and AdamW keeps fp32 master weights; both stages run there\n"
    "            (MoE models too). --resume and --restart take --device too: a run may continue\n"
    "            on another device (then it is no longer bit-identical to an uninterrupted one,\n"
    "            and the resume says so).\n"
    "  several:  --gpus N: N data-parallel ranks on this host's first N GPUs (NCCL), or start the\n"
    "            ranks with mpirun -np N (one or several hosts). The same --batch B --accum A\n"
    "            make the same steps whatever N is: each rank runs A/N of the A micro-batches of\n"
    "            B sequences (A must be a multiple of N); rank 0 writes everything. A run may be\n"
    "            resumed with another N (docs/DISTRIBUTED.md).\n"
    "  attnedit convert --resume S   continue the interrupted run in S from its checkpoint\n"
    "                                (a finished run: says so and changes nothing)\n"
    "  attnedit convert --restart S  start the run in S over from step 0, with the settings\n"
    "                                of its conversion.json (replaces the folder's contents)\n"
    "  Both take --device, --stage2-acts and --batch B --accum A: the same sequences per step\n"
    "  (B x A equal to the run's) in other micro-batches, e.g. after running out of memory,\n"
    "  which prints the command; --batch/--accum are recorded in S/conversion.json for later\n"
    "  resumes (--device and --stage2-acts hold for this process only).\n"
    "  Writes the student folder S (a Hugging Face folder: config.json with the target's fields,\n"
    "  model.safetensors, the teacher's tokenizer files, conversion.json, metrics.jsonl and\n"
    "  checkpoint/ when training).\n";

typedef struct {
    const char *teacher, *out, *data, *resume, *restart, *device;
    int force;
    ae_student_spec spec;
    ae_distill_opts train;
    int *layers, *full_layers;
    int new_batch, new_accum; // --batch/--accum given with --resume/--restart (0: the run's)
    int keep_attn_given;      // --stage2-acts given (with --resume/--restart: replaces the default)
} convert_opts;

static ae_status parse_target(const char *v, ae_attn_kind *k) {
    if (!strcmp(v, "mla")) *k = AE_ATTN_MLA;
    else if (!strcmp(v, "gateswa")) *k = AE_ATTN_GATESWA;
    else return ae_errorf(AE_ERR_ARG, "--target: '%s' is not a target (mla, gateswa)", v);
    return AE_OK;
}

static ae_status parse_init(const char *v, int *init) {
    for (int i = 0; i < AE_N_INITS; i++)
        if (!strcmp(v, ae_init_names[i])) {
            *init = i;
            return AE_OK;
        }
    return ae_errorf(AE_ERR_ARG, "--init: '%s' is not an init (random, teacher; for --target mla "
                     "also mha2mla, transmla)", v);
}

static ae_status parse_gate(const char *v, ae_gate_kind *g) {
    if (!strcmp(v, "elementwise")) *g = AE_GATE_ELEMENTWISE;
    else if (!strcmp(v, "head")) *g = AE_GATE_HEAD;
    else return ae_errorf(AE_ERR_ARG, "--gate: '%s' is not a gate kind (elementwise, head)", v);
    return AE_OK;
}

static ae_status parse_tokens(const char *v, const char *opt, int64_t *out) {
    char *end;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(x >= 0) || x > AE_RUN_MAX_TOKENS)
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a token budget (a number >= 0, e.g. 2e6)", opt, v);
    *out = (int64_t)x;
    return AE_OK;
}

// A numeric training option of the shared table (train/run_spec.h) into its field of t.
static ae_status parse_setting(const ae_run_setting *e, const char *v, ae_distill_opts *t) {
    void *dst = (char *)t + e->offset;
    if (!e->is_float) return ae_parse_int(v, e->option, (long)e->lo, (long)e->hi, dst);
    AE_TRY(ae_parse_float(v, e->option, dst));
    float x = *(float *)dst;
    if (!(x >= e->lo && x <= e->hi))
        return ae_errorf(AE_ERR_ARG, "%s: %g is out of range [%g, %g]", e->option, x, e->lo, e->hi);
    return AE_OK;
}

// Training options; returns 1 consumed (st set), 0 not a training option, -1 missing value.
static int parse_train(ae_args *a, convert_opts *o, ae_status *st) {
    ae_distill_opts *t = &o->train;
    const char *v;
    int r;
    if ((r = ae_args_value(a, "--data", &o->data)) || (r = ae_args_value(a, "--resume", &o->resume)) ||
        (r = ae_args_value(a, "--restart", &o->restart)))
        return r;
    for (const ae_run_setting *e = ae_run_settings; e->option; e++)
        if ((r = ae_args_value(a, e->option, &v))) {
            if (r > 0) *st = parse_setting(e, v, t);
            return r;
        }
    if ((r = ae_args_value(a, "--stage1-tokens", &v))) {
        if (r > 0) *st = parse_tokens(v, "--stage1-tokens", &t->stage_tokens[0]);
    } else if ((r = ae_args_value(a, "--stage2-tokens", &v))) {
        if (r > 0) *st = parse_tokens(v, "--stage2-tokens", &t->stage_tokens[1]);
    } else if ((r = ae_args_value(a, "--stage1-loss", &v))) {
        if (r > 0 && !strcmp(v, "normalized")) t->s1_normalized = 1;
        else if (r > 0 && strcmp(v, "mse"))
            *st = ae_errorf(AE_ERR_ARG, "--stage1-loss: '%s' is not a loss (mse, normalized)", v);
    } else if ((r = ae_args_value(a, "--save-minutes", &v))) {
        if (r > 0 && (*st = ae_parse_float(v, "--save-minutes", &t->save_minutes)) == AE_OK &&
            !(t->save_minutes >= 0 && t->save_minutes <= AE_RUN_MAX_MINUTES))
            *st = ae_errorf(AE_ERR_ARG, "--save-minutes: %g is out of range [0, %g]",
                            (double)t->save_minutes, AE_RUN_MAX_MINUTES);
    } else if ((r = ae_args_value(a, "--optim-state", &v))) {
        if (r > 0 && !strcmp(v, "8bit")) t->optim_8bit = 1;
        else if (r > 0 && strcmp(v, "fp32"))
            *st = ae_errorf(AE_ERR_ARG, "--optim-state: '%s' is not fp32 or 8bit", v);
    } else if ((r = ae_args_value(a, "--grad-dtype", &v))) {
        if (r > 0 && !strcmp(v, "bf16")) t->grad_bf16 = 1;
        else if (r > 0 && strcmp(v, "fp32"))
            *st = ae_errorf(AE_ERR_ARG, "--grad-dtype: '%s' is not fp32 or bf16", v);
    } else if ((r = ae_args_value(a, "--stage2-acts", &v))) {
        o->keep_attn_given = 1;
        if (r > 0 && !strcmp(v, "keep")) t->s2_keep_attn = 1;
        else if (r > 0 && !strcmp(v, "recompute")) t->s2_keep_attn = 0;
        else if (r > 0) *st = ae_errorf(AE_ERR_ARG, "--stage2-acts: '%s' is not recompute or keep", v);
    } else if ((r = ae_args_value(a, "--train", &v))) {
        if (r > 0 && !strcmp(v, "all")) t->train_all = 1;
        else if (r > 0 && strcmp(v, "attention"))
            *st = ae_errorf(AE_ERR_ARG, "--train: '%s' is not attention or all", v);
    }
    return r;
}

// One option at a.i; returns 1 consumed, 0 unknown, -1 error.
static int parse_one(ae_args *a, convert_opts *o, int *target_seen) {
    ae_student_spec *s = &o->spec;
    const char *v;
    int r;
    ae_status st = AE_OK;
    const int big = AE_RUN_MAX_DIM;
    if ((r = ae_args_value(a, "--teacher", &o->teacher)) || (r = ae_args_value(a, "--out", &o->out)) ||
        (r = ae_args_value(a, "--device", &o->device)))
        return r;
    if ((r = ae_args_value(a, "--target", &v))) {
        if (r > 0) st = parse_target(v, &s->target), *target_seen = 1;
    } else if ((r = ae_args_value(a, "--kv-lora-rank", &v))) {
        if (r > 0) st = ae_parse_int(v, "--kv-lora-rank", 1, big, &s->kv_lora_rank);
    } else if ((r = ae_args_value(a, "--q-lora-rank", &v))) {
        if (r > 0) st = ae_parse_int(v, "--q-lora-rank", 0, big, &s->q_lora_rank);
    } else if ((r = ae_args_value(a, "--qk-rope-dim", &v))) {
        if (r > 0) st = ae_parse_int(v, "--qk-rope-dim", 2, big, &s->qk_rope_dim);
    } else if ((r = ae_args_value(a, "--qk-nope-dim", &v))) {
        if (r > 0) st = ae_parse_int(v, "--qk-nope-dim", 1, big, &s->qk_nope_dim);
    } else if ((r = ae_args_value(a, "--v-head-dim", &v))) {
        if (r > 0) st = ae_parse_int(v, "--v-head-dim", 1, big, &s->v_head_dim);
    } else if ((r = ae_args_value(a, "--full-every", &v))) {
        if (r > 0) st = ae_parse_int(v, "--full-every", 1, big, &s->full_every);
    } else if ((r = ae_args_value(a, "--full-layers", &v))) {
        if (r > 0) st = ae_parse_int_list(v, "--full-layers", 0, big, &o->full_layers, &s->n_full_layers);
        s->full_layers = o->full_layers;
    } else if ((r = ae_args_value(a, "--layers", &v))) {
        if (r > 0) st = ae_parse_int_list(v, "--layers", 0, big, &o->layers, &s->n_layers);
        s->layers = o->layers;
    } else if ((r = ae_args_value(a, "--window", &v))) {
        if (r > 0) st = ae_parse_int(v, "--window", 1, AE_RUN_MAX_WINDOW, &s->window);
    } else if ((r = ae_args_value(a, "--gate", &v))) {
        if (r > 0) st = parse_gate(v, &s->gate);
    } else if ((r = ae_args_value(a, "--init", &v))) {
        if (r > 0) st = parse_init(v, &s->init_teacher);
    } else if ((r = ae_args_value(a, "--seed", &v))) {
        if (r > 0) st = ae_parse_u64(v, "--seed", &s->seed);
    } else if ((r = parse_train(a, o, &st))) {
    } else if (ae_args_flag(a, "--sinks")) {
        s->sinks = 1;
        r = 1;
    } else if (ae_args_flag(a, "--force")) {
        o->force = 1;
        r = 1;
    } else {
        return 0;
    }
    return (r < 0 || st != AE_OK) ? -1 : 1;
}

static const char *const k_mla_only[] = {"--kv-lora-rank", "--q-lora-rank", "--qk-rope-dim",
                                          "--qk-nope-dim", "--v-head-dim"};
static const char *const k_gateswa_only[] = {"--window", "--full-every", "--full-layers", "--gate",
                                             "--sinks"};

// Remembers the first MLA-only and the first GateSWA-only option met.
static void note_target_option(const char *arg, const char **mla, const char **swa) {
    for (size_t i = 0; i < sizeof k_mla_only / sizeof *k_mla_only; i++)
        if (!*mla && !strcmp(arg, k_mla_only[i])) *mla = arg;
    for (size_t i = 0; i < sizeof k_gateswa_only / sizeof *k_gateswa_only; i++)
        if (!*swa && !strcmp(arg, k_gateswa_only[i])) *swa = arg;
}

// An option of the other target is refused, not ignored: returns 2 (message printed) or 0.
static int check_target_options(ae_attn_kind target, const char *mla, const char *swa) {
    int is_mla = target == AE_ATTN_MLA;
    const char *bad = is_mla ? swa : mla;
    if (!bad) return 0;
    fprintf(stderr, "attnedit convert: %s is %s option; it does not apply to --target %s\n", bad,
            is_mla ? "a GateSWA" : "an MLA", is_mla ? "mla" : "gateswa");
    return 2;
}

// --data must be a token file; the output folder must not be, hold or lie inside an input.
static ae_status check_paths(const convert_opts *o) {
    if (o->data)
        AE_TRY(ae_file_check_regular("--data", o->data, "a token file made by attnedit prepare-data"));
    AE_TRY(ae_path_check_output("--out", o->out, "--teacher", o->teacher));
    return ae_path_check_output("--out", o->out, "--data", o->data);
}

// --resume S and --restart S take --device, --batch and --accum only (each with its value,
// checked by the parse); returns 0 or 2 (message printed).
static int check_rerun_options(int argc, char **argv, convert_opts *o) {
    static const char *const allowed[] = {"--resume", "--restart", "--device", "--batch", "--accum",
                                          "--stage2-acts"};
    for (int i = 0; i < argc; i += 2) {
        int ok = 0;
        for (size_t k = 0; k < sizeof allowed / sizeof *allowed; k++) ok |= !strcmp(argv[i], allowed[k]);
        if (!ok) {
            fprintf(stderr, "attnedit convert: --resume S and --restart S take no other options than "
                            "--device, --batch, --accum and --stage2-acts (%s: the run's settings are in "
                            "S/conversion.json)\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--batch")) o->new_batch = o->train.batch;
        if (!strcmp(argv[i], "--accum")) o->new_accum = o->train.accum;
    }
    if (o->resume && o->restart) {
        fprintf(stderr, "attnedit convert: --resume and --restart are exclusive\n");
        return 2;
    }
    return 0;
}

static int parse(int argc, char **argv, convert_opts *o) {
    ae_args a = {argc, argv, 0, "convert"};
    const char *mla_opt = NULL, *swa_opt = NULL;
    memset(o, 0, sizeof *o);
    o->spec.gate = AE_GATE_ELEMENTWISE;
    o->spec.init_teacher = AE_MLA_INIT_TEACHER; // the best start for both targets (docs/RESULTS.md)
    o->train = (ae_distill_opts){.ctx = 256, .batch = 8, .accum = 1, .lr = {1e-3f, 3e-4f},
                                 .warmup_frac = 0.05f, .min_lr_ratio = 0.1f, .weight_decay = 0.01f,
                                 .clip = 1.0f, .tau = 1.0f, .cos_weight = 0.1f, .log_every = 10};
    int target_seen = 0;
    while (a.i < a.argc) {
        if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            exit(0);
        }
        note_target_option(argv[a.i], &mla_opt, &swa_opt);
        int r = parse_one(&a, o, &target_seen);
        if (r < 0) return ae_cli_fail("convert");
        if (r == 0) return (ae_args_unknown(&a), ae_cli_fail("convert"));
    }
    if (o->resume || o->restart) return check_rerun_options(argc, argv, o);
    if (!o->teacher || !o->out || !target_seen) {
        fprintf(stderr, "attnedit convert: need --teacher, --target and --out\n%s", k_help);
        return 2;
    }
    if (o->spec.full_layers && o->spec.full_every) {
        fprintf(stderr, "attnedit convert: --full-every and --full-layers are exclusive\n");
        return 2;
    }
    int rc = check_target_options(o->spec.target, mla_opt, swa_opt);
    if (rc == 0 && check_paths(o) != AE_OK) rc = ae_cli_fail("convert");
    return rc;
}

// The figures of merit of an MLA teacher init, one line per replaced layer, then the means.
static void print_mla_init(const ae_model *m, const ae_init_report *rep, int init) {
    const ae_config *c = &m->cfg;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if (c->layer_attn[l] != AE_ATTN_MLA) continue;
        const ae_mla_init_stats *st = &rep->layer[l];
        fprintf(stderr, "%s init, layer %d: kv_rel_err %.4f, rope_logit_err %.4f, rope key energy "
                "%.3f, qk_logit_err %.4f", ae_init_names[init], l, st->kv_rel_err, st->rope_logit_err,
                st->rope_key_energy, st->qk_logit_err);
        if (init == AE_MLA_INIT_MHA2MLA)
            fprintf(stderr, ", %d of %d rope pairs rotated at a neighbouring frequency", st->rope_shifted,
                    c->qk_rope_head_dim / 2);
        fputc('\n', stderr);
    }
    fprintf(stderr, "%s init: K/V low-rank reconstruction error (relative Frobenius) mean %.4f, "
            "max %.4f; rope-part logit error mean %.4f, max %.4f; q·k logit error over distances "
            "mean %.4f, max %.4f (docs/TARGETS.md)\n", ae_init_names[init], rep->kv_rel_err_mean,
            rep->kv_rel_err_max, rep->rope_logit_err_mean, rep->rope_logit_err_max,
            rep->qk_logit_err_mean, rep->qk_logit_err_max);
}

static void print_student(const ae_model *m, int64_t kv_teacher, const ae_init_report *rep,
                          int init_teacher) {
    const ae_config *c = &m->cfg;
    int64_t kv = ae_config_kv_bytes(c, 4096) / 4096;
    fprintf(stderr, "student: %s on %d layers, init %s; KV cache %lld -> %lld bytes/token "
            "(bf16, first 4096 tokens) %+.1f%%\n",
            ae_attn_kind_name(c->target), rep->n_layers, ae_init_names[init_teacher],
            (long long)kv_teacher, (long long)kv, 100.0 * (kv - kv_teacher) / kv_teacher);
    if (c->target == AE_ATTN_MLA && c->kv_lora_rank + c->qk_rope_head_dim != 576)
        fprintf(stderr, "note: MLA cache of %d + %d values per token; the MLA kernels of "
                "serving engines support 512 + 64\n", c->kv_lora_rank, c->qk_rope_head_dim);
    if (c->target == AE_ATTN_MLA && init_teacher) print_mla_init(m, rep, init_teacher);
}

// Checks the training options against the teacher and opens the data file. origin: the
// conversion.json the settings were read from (NULL: the command line), for messages.
static ae_status check_training(const ae_run_spec *rs, const ae_model *t, ae_tokfile *data,
                                const char *origin) {
    const ae_distill_opts *o = &rs->opts;
    char ctx[4200];
    if (origin) snprintf(ctx, sizeof ctx, "%s: train.ctx %d", origin, o->ctx);
    else snprintf(ctx, sizeof ctx, "--ctx %d", o->ctx);
    if (o->ctx > t->cfg.max_position_embeddings)
        return ae_errorf(AE_ERR_ARG, "%s is longer than the teacher supports "
                         "(max_position_embeddings %d)", ctx, t->cfg.max_position_embeddings);
    if ((double)o->ctx * o->batch * o->accum > (double)AE_RUN_MAX_STEP_TOKENS)
        return ae_errorf(AE_ERR_ARG, "%s x batch %d x accum %d is %.3g tokens per optimizer step; "
                         "the limit is 2^40", ctx, o->batch, o->accum,
                         (double)o->ctx * o->batch * o->accum);
    if (!rs->data[0])
        return ae_errorf(AE_ERR_ARG, "training budgets need --data TOKENS (made by attnedit prepare-data)");
    AE_TRY(ae_tokfile_open(rs->data, data));
    ae_status st = ae_tokfile_check_model(data, rs->data, rs->teacher, t->cfg.vocab_size);
    if (st == AE_OK && data->n_tokens < (uint64_t)o->ctx + 1)
        st = ae_errorf(AE_ERR_ARG, "%s: %llu tokens, fewer than one window of %s + 1", rs->data,
                       (unsigned long long)data->n_tokens, ctx);
    if (st != AE_OK) ae_tokfile_close(data);
    return st;
}

// Trains the student in out (which holds its initial folder) on the checked token file and
// writes the result. resume: continue from out's checkpoint (else start at step 0).
static ae_status train_and_finish(const ae_run_spec *rs, const ae_model *t, ae_model *s,
                                  const ae_tokfile *data, const ae_init_report *rep,
                                  const char *out, int resume) {
    ae_distill_result res;
    AE_TRY(ae_distill_run(t, s, data, &rs->opts, out, resume, &res));
    if (!is_root()) return AE_OK; // rank 0 writes the result
    AE_TRY(ae_model_save_weights(s, out, rs->opts.train_all));
    char *meta = ae_run_spec_json(rs, s, rep, &res);
    ae_status st = meta ? ae_write_text_file(out, "conversion.json", meta) : AE_ERR_NOMEM;
    free(meta);
    if (st == AE_OK)
        fprintf(stderr, "done: stage 1 %lld tokens (loss %.5f), stage 2 %lld tokens (KL %.5f), %.0f s\n",
                (long long)res.tokens_done[0], res.final_loss[0], (long long)res.tokens_done[1],
                res.final_loss[1], res.wall_s);
    return st;
}

// The teacher and the data file of a run read back must be those it started with; returns 0,
// or prints why not and returns 1.
static int check_inputs(const ae_run_spec *rs, const char *flag, const char *dir) {
    char hash[65];
    if (ae_model_dir_hash(rs->teacher, hash) != AE_OK) return ae_cli_fail("convert");
    if (strcmp(hash, rs->teacher_hash) != 0) {
        fprintf(stderr, "attnedit convert: %s %s: the teacher %s has changed since the run "
                        "started (content hash differs)\n", flag, dir, rs->teacher);
        return 1;
    }
    if (ae_file_hash(rs->data, hash) != AE_OK) return ae_cli_fail("convert");
    if (strcmp(hash, rs->data_hash) != 0) {
        fprintf(stderr, "attnedit convert: %s %s: the data file %s has changed since the run "
                        "started\n", flag, dir, rs->data);
        return 1;
    }
    return 0;
}

// --batch/--accum given with --resume/--restart: checked against the run's sequences per step
// (origin: its conversion.json) and set in rs; returns 0, or prints why not and returns 1.
// --stage2-acts, given, is set in rs too (a choice of this process, not a recorded setting).
static int apply_rebatch(ae_run_spec *rs, const convert_opts *o, const char *origin) {
    if (o->keep_attn_given) rs->opts.s2_keep_attn = o->train.s2_keep_attn;
    if (!o->new_batch && !o->new_accum) return 0;
    int b = o->new_batch ? o->new_batch : rs->opts.batch, a = o->new_accum ? o->new_accum : rs->opts.accum;
    if (ae_rebatch_check(&rs->opts, b, a, origin) != AE_OK) return ae_cli_fail("convert");
    if (b != rs->opts.batch)
        fprintf(stderr, "micro-batches of %d sequence%s, %d accumulated per step (were %d x %d): the same %lld "
                "sequences per step\n", b, b == 1 ? "" : "s", a, rs->opts.batch, rs->opts.accum,
                (long long)b * a);
    rs->opts.batch = b;
    rs->opts.accum = a;
    return 0;
}

// The student of a resumed run. Attention-only training: it shares the teacher's frozen tensors
// as in the run's first process (the folder's copy of them would double the weights' memory)
// and its attention modules are made at random init, as every one of them is trained and its
// values come from the checkpoint. --train all: the student folder. Returns 0 or 1 (message set).
static int load_resumed_student(const ae_run_spec *rs, const ae_model *t, const char *dir,
                                ae_model **s) {
    if (rs->opts.train_all) return ae_model_load(dir, t->be, s) != AE_OK;
    ae_student_spec spec = rs->spec;
    spec.init_teacher = 0;
    ae_init_report rep;
    return ae_student_resolve(&t->cfg, &spec) != AE_OK || ae_model_share(t, s) != AE_OK ||
           ae_student_make(*s, &spec, &rep) != AE_OK;
}

// Continues the run in dir from its checkpoint. Everything read back is checked first (the
// teacher and data hashes too); a finished run, or one without a checkpoint, is reported and
// nothing is written.
static int run_resume(const char *dir, const convert_opts *o, const ae_backend *be) {
    static ae_run_spec rs;
    if (ae_run_spec_load(dir, &rs) != AE_OK || ae_run_spec_check_student(&rs, dir) != AE_OK)
        return ae_cli_fail("convert");
    if (check_inputs(&rs, "--resume", dir)) return 1;
    int recorded_batch = rs.opts.batch;
    char *spec_path = ae_path_join(dir, "conversion.json");
    int bad = !spec_path || apply_rebatch(&rs, o, spec_path);
    free(spec_path);
    if (bad) return 1;
    if (rs.done) {
        fprintf(stderr, "attnedit convert: --resume %s: the run is already finished (%s/conversion.json "
                        "has status \"done\"); nothing to do, nothing changed. To train it again from "
                        "step 0: attnedit convert --restart %s\n", dir, dir, dir);
        return 0;
    }
    if (!ae_distill_has_checkpoint(dir)) {
        fprintf(stderr, "attnedit convert: --resume %s: no checkpoint to continue from (%s/checkpoint/"
                        "state.json is missing: the run stopped before its first checkpoint, or the "
                        "checkpoint was deleted). To start the run over from step 0 with the settings "
                        "of its conversion.json: attnedit convert --restart %s\n", dir, dir, dir);
        return 1;
    }
    ae_model *t = NULL, *s = NULL;
    int rc = 0;
    char *origin = ae_path_join(dir, "conversion.json");
    ae_tokfile data;
    if (!origin || ae_model_load(rs.teacher, be, &t) != AE_OK || load_resumed_student(&rs, t, dir, &s) ||
        check_training(&rs, t, &data, origin) != AE_OK) {
        rc = ae_cli_fail("convert");
    } else {
        if (is_root()) ae_dir_remove_stale(dir); // left by a --restart that died rewriting the folder
        rs.opts.comm = s_group.comm;
        if (is_root() && rs.opts.batch != recorded_batch &&
            ae_rebatch_record(dir, rs.opts.batch, rs.opts.accum) != AE_OK)
            rc = ae_cli_fail("convert");
        if (group_ready(rc) || train_and_finish(&rs, t, s, &data, &rs.init_report, dir, 1) != AE_OK)
            rc = rc ? rc : ae_cli_fail("convert");
        ae_tokfile_close(&data);
    }
    free(origin);
    ae_model_free(s);
    ae_model_free(t);
    return rc;
}

// Makes the student of rs from the teacher, writes its folder to out (replacing an existing
// one with force) and, given budgets, trains it from step 0. origin: the conversion.json rs was
// read from (NULL: the command line), for messages.
static int make_and_train(ae_run_spec *rs, const char *teacher, const char *out, int force,
                          const char *origin, const ae_backend *be) {
    int training = rs->opts.stage_tokens[0] > 0 || rs->opts.stage_tokens[1] > 0, rc = 0;
    ae_model *t = NULL, *s = NULL;
    ae_init_report rep;
    char *meta = NULL;
    ae_tokfile data;
    int data_open = 0;
    ae_status st = ae_model_load(teacher, be, &t);
    if (st == AE_OK) {
        st = ae_student_resolve(&t->cfg, &rs->spec); // record the resolved dims
        if (st != AE_OK && origin) ae_error_wrap(st, "%s (target settings)", origin);
    }
    if (st == AE_OK && training) {
        st = check_training(rs, t, &data, origin); // opened once, used by the training below
        data_open = st == AE_OK;
    }
    // attention-only training: the student shares the teacher's frozen tensors in memory
    if (st == AE_OK)
        st = rs->opts.train_all ? ae_model_load(teacher, be, &s) : ae_model_share(t, &s);
    if (st == AE_OK) st = ae_student_make(s, &rs->spec, &rep);
    if (st != AE_OK) {
        rc = ae_cli_fail("convert");
        goto done;
    }
    if (is_root()) print_student(s, ae_config_kv_bytes(&t->cfg, 4096) / 4096, &rep, rs->spec.init_teacher);
    meta = ae_run_spec_json(rs, s, &rep, NULL);
    ae_save_opts so = {.src_dir = teacher, .force = force, .metadata_json = meta};
    if (!meta || (is_root() && ae_model_save(s, out, &so) != AE_OK)) {
        rc = ae_cli_fail("convert");
        goto done;
    }
    rs->opts.comm = s_group.comm;
    if (training && group_ready(0)) {
        rc = 1;
        goto done;
    }
    if (training && (st = train_and_finish(rs, t, s, &data, &rep, out, 0)) != AE_OK) {
        // a diverged run would diverge again on --resume: its message says what to change; out of
        // memory in a step: the message says what fits and how to continue
        if (st == AE_ERR_NONFINITE || st == AE_ERR_NOMEM)
            fprintf(stderr, "attnedit convert: %s\n", ae_last_error());
        else
            fprintf(stderr, "attnedit convert: %s\n(the run can be continued with: attnedit convert "
                            "--resume %s)\n", ae_last_error(), out);
        rc = 1;
        goto done;
    }
    if (is_root()) fprintf(stderr, "wrote %s\n", out);
done:
    if (data_open) ae_tokfile_close(&data);
    free(meta);
    ae_model_free(s); // before t: s may share t's tensors
    ae_model_free(t);
    return rc;
}

// Starts the run in dir over from step 0 with the settings of its conversion.json (checked
// first, with the teacher and data hashes): the folder is rewritten as by the first convert.
static int run_restart(const char *arg, const convert_opts *o, const ae_backend *be) {
    static ae_run_spec rs;
    char dir[4096];
    size_t n = strlen(arg);
    while (n > 1 && arg[n - 1] == '/') n--; // "run/" -> "run": the folder is replaced by name
    if (n >= sizeof dir) {
        fprintf(stderr, "attnedit convert: --restart: the path is longer than %zu bytes\n", sizeof dir - 1);
        return 1;
    }
    snprintf(dir, sizeof dir, "%.*s", (int)n, arg);
    if (ae_run_spec_load(dir, &rs) != AE_OK) return ae_cli_fail("convert");
    // the folder is replaced: it must not hold the run's own inputs
    if (ae_path_check_output("--restart", dir, "its teacher", rs.teacher) != AE_OK ||
        ae_path_check_output("--restart", dir, "its data file", rs.data) != AE_OK)
        return ae_cli_fail("convert");
    if (check_inputs(&rs, "--restart", dir)) return 1;
    char *origin = ae_path_join(dir, "conversion.json");
    if (!origin) return ae_cli_fail("convert");
    if (apply_rebatch(&rs, o, origin)) { // the rewritten conversion.json records the new values
        free(origin);
        return 1;
    }
    fprintf(stderr, "restarting %s from step 0 with the settings of its conversion.json\n", dir);
    int rc = make_and_train(&rs, rs.teacher, dir, 1, origin, be);
    free(origin);
    return rc;
}

static ae_status fill_spec(const convert_opts *o, ae_run_spec *rs) {
    memset(rs, 0, sizeof *rs);
    // absolute paths, so `--resume` works from any directory
    char abs[PATH_MAX];
    snprintf(rs->teacher, sizeof rs->teacher, "%s", realpath(o->teacher, abs) ? abs : o->teacher);
    if (o->data)
        snprintf(rs->data, sizeof rs->data, "%s", realpath(o->data, abs) ? abs : o->data);
    rs->spec = o->spec;
    rs->opts = o->train;
    rs->opts.seed = o->spec.seed;
    AE_TRY(ae_model_dir_hash(o->teacher, rs->teacher_hash));
    if (o->data) AE_TRY(ae_file_hash(o->data, rs->data_hash));
    return AE_OK;
}

// Before anything is written: every rank runs the same build and the same command line, and a
// new run's --accum is a multiple of the group size (a resumed run's is checked when training
// starts; its folder exists already). Rank 0 prints the refusal, the others stop quietly.
// Returns 0 or 1.
static int group_check(int argc, char **argv, const convert_opts *o) {
    int n = ae_comm_size(s_group.comm);
    if (n <= 1) return 0;
    ae_status st = AE_OK;
    uint8_t d[32];
    ae_sha256_ctx c;
    ae_sha256_init(&c);
    for (int i = 0; i < argc; i++) ae_sha256_update(&c, argv[i], strlen(argv[i]) + 1);
    ae_sha256_final(&c, d);
    int training = o->train.stage_tokens[0] > 0 || o->train.stage_tokens[1] > 0;
    if (!o->resume && !o->restart && training) st = ae_dp_check_accum(n, o->train.batch, o->train.accum);
    if (st == AE_OK) st = ae_comm_check_same(s_group.comm, d, "command line",
                                             "start every rank with the same convert command");
    uint8_t exe[32];
    if (st == AE_OK) st = ae_dist_exe_digest(exe);
    if (st == AE_OK) st = ae_comm_check_same(s_group.comm, exe, "binary",
                                             "start every rank with the same attnedit build");
    if (st == AE_OK) return 0;
    s_group.agreed = 1; // every rank refuses here: nothing to agree on
    return is_root() ? ae_cli_fail("convert") : 1;
}

// The device of this rank (ae_dist_device_name: in a group of several ranks "cuda" and the
// automatic choice of a host with GPUs mean GPU <local rank>); one GPU named for several ranks
// (--device cuda:K, or ATTNEDIT_DEVICE without --device) is refused.
static int rank_device(const ae_dist_env *e, const char *name, char *buf, size_t n, const char **out) {
    const char *env = getenv("ATTNEDIT_DEVICE");
    const char *asked = name && strcmp(name, "auto") ? name : env;
    if (e->size > 1 && asked && !strncmp(asked, "cuda:", 5)) {
        fprintf(stderr, "attnedit convert: --device %s names one GPU for %d data-parallel ranks: give "
                        "--device cuda (rank r takes GPU r of its host)\n", asked, e->size);
        return 2;
    }
    *out = ae_dist_device_name(e, name, buf, n);
    return 0;
}

int ae_cmd_convert(int argc, char **argv) {
    convert_opts o;
    static ae_run_spec rs;
    const ae_backend *be = NULL;
    ae_dist_env env;
    char devbuf[32];
    const char *device = NULL;
    int rc = parse(argc, argv, &o);
    if (rc) goto out;
    if (ae_dist_env_read(&env) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto out;
    }
    if ((rc = rank_device(&env, o.device, devbuf, sizeof devbuf, &device))) goto out;
    if ((rc = ae_cli_open_device("convert", device, &be))) goto out;
    if (ae_comm_open(&env, be, &s_group.comm) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto out;
    }
    if ((rc = group_check(argc, argv, &o))) goto out;
    if (o.resume || o.restart) {
        rc = o.resume ? run_resume(o.resume, &o, be) : run_restart(o.restart, &o, be);
        goto out;
    }
    int training = o.train.stage_tokens[0] > 0 || o.train.stage_tokens[1] > 0;
    if ((rc = ae_cli_check_model("convert", o.teacher))) goto out;
    if (training && ae_distill_check_backend(be, &o.train) != AE_OK) { // before anything is written
        rc = ae_cli_fail("convert");
        goto out;
    }
    if ((is_root() && ae_save_check_target(o.out, o.force) != AE_OK) || fill_spec(&o, &rs) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto out;
    }
    if (o.data && !training)
        fprintf(stderr, "note: --data given without --stage1-tokens/--stage2-tokens: no training\n");
    rc = make_and_train(&rs, o.teacher, o.out, o.force, NULL, be);
out:
    group_ready(rc != 0); // a rank that stopped before training releases the others
    ae_comm_close(s_group.comm);
    s_group.comm = NULL;
    if (be) ae_backend_close(be);
    free(o.layers);
    free(o.full_layers);
    return rc;
}
