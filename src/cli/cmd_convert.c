#define _XOPEN_SOURCE 700
// attnedit convert --teacher T --target mla|gateswa [--kv-lora-rank R --q-lora-rank Q
//   --qk-rope-dim D --qk-nope-dim N --v-head-dim V] [--full-every K | --full-layers 0,5,11]
//   [--window W] [--gate elementwise|head] [--sinks] [--layers 0,1,...] [--init random|teacher]
//   [--seed S] --out S [--force]
//   [--data TOKENS --stage1-tokens N --stage2-tokens N ...training options]
//   attnedit convert --resume OUT
// Without a training budget it writes the initialised student; with one it runs the
// progressive distillation (src/train/distill.h) in OUT, checkpointing as it goes.
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/save.h"
#include "model/student.h"
#include "train/data.h"
#include "train/run_spec.h"

static const char k_help[] =
    "usage: attnedit convert --teacher T --target mla|gateswa [options] --out S [--force]\n"
    "  MLA:      --kv-lora-rank R (default 4*head_dim, at most hidden_size)\n"
    "            --q-lora-rank Q (default 0: plain q_proj)  --qk-rope-dim D (default head_dim/2)\n"
    "            --qk-nope-dim N (default head_dim - D)      --v-head-dim V (default head_dim)\n"
    "  GateSWA:  --full-every K (default 6: the last layer of each group of K is full attention)\n"
    "            | --full-layers 0,5,11   --window W (default 1024)\n"
    "            --gate elementwise|head (default elementwise)   --sinks\n"
    "  both:     --layers 0,1,... (replace only these layers; default all)\n"
    "            --init random|teacher (default random)  --seed S (default 0)\n"
    "  training (progressive distillation; without budgets only the initialised student is written):\n"
    "            --data TOKENS (from attnedit prepare-data)  --ctx N (256)  --batch B (8)  --accum A (1)\n"
    "            --stage1-tokens N  --stage2-tokens N  (budgets; 0 skips a stage)\n"
    "            --stage1-lr X (1e-3)  --stage2-lr X (3e-4)  --warmup F (0.05 of the steps)\n"
    "            --min-lr-ratio F (0.1)  --weight-decay X (0.01)  --clip X (1.0)\n"
    "            --stage1-loss mse|normalized  --stage1-block W (0: off; weight of the block\n"
    "            output through the frozen teacher MLP)  --tau T (1)  --cos-weight L (0.1)\n"
    "            --train attention|all (stage 2; default attention)  --save-every N (steps)\n"
    "            --log-every N (10)  --resume S (continue an interrupted run in S)\n"
    "  Writes the student folder S (a Hugging Face folder: config.json with the target's fields,\n"
    "  model.safetensors, the teacher's tokenizer files, conversion.json, metrics.jsonl and\n"
    "  checkpoint/ when training).\n";

typedef struct {
    const char *teacher, *out, *data, *resume;
    int force;
    ae_student_spec spec;
    ae_distill_opts train;
    int *layers, *full_layers;
} convert_opts;

static ae_status parse_target(const char *v, ae_attn_kind *k) {
    if (!strcmp(v, "mla")) *k = AE_ATTN_MLA;
    else if (!strcmp(v, "gateswa")) *k = AE_ATTN_GATESWA;
    else return ae_errorf(AE_ERR_ARG, "--target: '%s' is not a target (mla, gateswa)", v);
    return AE_OK;
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
    if (*v == '\0' || *end != '\0' || !(x >= 0) || x > 1e15)
        return ae_errorf(AE_ERR_ARG, "%s: '%s' is not a token budget (a number >= 0, e.g. 2e6)", opt, v);
    *out = (int64_t)x;
    return AE_OK;
}

// Training options; returns 1 consumed (st set), 0 not a training option, -1 missing value.
static int parse_train(ae_args *a, convert_opts *o, ae_status *st) {
    ae_distill_opts *t = &o->train;
    const char *v;
    int r;
    const int big = 1 << 24;
    if ((r = ae_args_value(a, "--data", &o->data)) || (r = ae_args_value(a, "--resume", &o->resume)))
        return r;
    struct { const char *name; int *dst; int lo; } ints[] = {
        {"--ctx", &t->ctx, 2}, {"--batch", &t->batch, 1}, {"--accum", &t->accum, 1},
        {"--save-every", &t->save_every, 1}, {"--log-every", &t->log_every, 1}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        if ((r = ae_args_value(a, ints[i].name, &v))) {
            if (r > 0) *st = ae_parse_int(v, ints[i].name, ints[i].lo, big, ints[i].dst);
            return r;
        }
    struct { const char *name; float *dst; float lo, hi; } fl[] = {
        {"--stage1-lr", &t->lr[0], 0, 10}, {"--stage2-lr", &t->lr[1], 0, 10},
        {"--warmup", &t->warmup_frac, 0, 1}, {"--min-lr-ratio", &t->min_lr_ratio, 0, 1},
        {"--weight-decay", &t->weight_decay, 0, 10}, {"--clip", &t->clip, 0, 1e6},
        {"--tau", &t->tau, 1e-3f, 100}, {"--cos-weight", &t->cos_weight, 0, 1e3},
        {"--stage1-block", &t->s1_block, 0, 1e3}};
    for (size_t i = 0; i < sizeof fl / sizeof *fl; i++)
        if ((r = ae_args_value(a, fl[i].name, &v))) {
            if (r > 0) *st = ae_parse_float(v, fl[i].name, fl[i].dst);
            if (r > 0 && *st == AE_OK && (*fl[i].dst < fl[i].lo || *fl[i].dst > fl[i].hi))
                *st = ae_errorf(AE_ERR_ARG, "%s: %g is out of range [%g, %g]", fl[i].name,
                                *fl[i].dst, fl[i].lo, fl[i].hi);
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
    const int big = 1 << 20;
    if ((r = ae_args_value(a, "--teacher", &o->teacher)) || (r = ae_args_value(a, "--out", &o->out)))
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
        if (r > 0) st = ae_parse_int(v, "--window", 1, 1 << 30, &s->window);
    } else if ((r = ae_args_value(a, "--gate", &v))) {
        if (r > 0) st = parse_gate(v, &s->gate);
    } else if ((r = ae_args_value(a, "--init", &v))) {
        if (r > 0 && !strcmp(v, "teacher")) s->init_teacher = 1;
        else if (r > 0 && strcmp(v, "random"))
            st = ae_errorf(AE_ERR_ARG, "--init: '%s' is not an init (random, teacher)", v);
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

static int parse(int argc, char **argv, convert_opts *o) {
    ae_args a = {argc, argv, 0, "convert"};
    memset(o, 0, sizeof *o);
    o->spec.gate = AE_GATE_ELEMENTWISE;
    o->train = (ae_distill_opts){.ctx = 256, .batch = 8, .accum = 1, .lr = {1e-3f, 3e-4f},
                                 .warmup_frac = 0.05f, .min_lr_ratio = 0.1f, .weight_decay = 0.01f,
                                 .clip = 1.0f, .tau = 1.0f, .cos_weight = 0.1f, .log_every = 10};
    int target_seen = 0;
    while (a.i < a.argc) {
        if (ae_args_flag(&a, "--help")) {
            fputs(k_help, stdout);
            exit(0);
        }
        int r = parse_one(&a, o, &target_seen);
        if (r < 0) return ae_cli_fail("convert");
        if (r == 0) return (ae_args_unknown(&a), ae_cli_fail("convert"));
    }
    if (o->resume) {
        if (o->teacher || o->out || target_seen) {
            fprintf(stderr, "attnedit convert: --resume takes no other options (the run's own are in "
                            "its conversion.json)\n");
            return 2;
        }
        return 0;
    }
    if (!o->teacher || !o->out || !target_seen) {
        fprintf(stderr, "attnedit convert: need --teacher, --target and --out\n%s", k_help);
        return 2;
    }
    if (o->spec.full_layers && o->spec.full_every) {
        fprintf(stderr, "attnedit convert: --full-every and --full-layers are exclusive\n");
        return 2;
    }
    return 0;
}

static void print_student(const ae_model *m, int64_t kv_teacher, const ae_init_report *rep,
                          int init_teacher) {
    const ae_config *c = &m->cfg;
    int64_t kv = ae_config_kv_bytes(c, 4096) / 4096;
    fprintf(stderr, "student: %s on %d layers, init %s; KV cache %lld -> %lld bytes/token "
            "(bf16, first 4096 tokens) %+.1f%%\n",
            ae_attn_kind_name(c->target), rep->n_layers, init_teacher ? "teacher" : "random",
            (long long)kv_teacher, (long long)kv, 100.0 * (kv - kv_teacher) / kv_teacher);
    if (c->target == AE_ATTN_MLA && c->kv_lora_rank + c->qk_rope_head_dim != 576)
        fprintf(stderr, "note: MLA cache of %d + %d values per token; the MLA kernels of "
                "serving engines support 512 + 64\n", c->kv_lora_rank, c->qk_rope_head_dim);
    if (c->target == AE_ATTN_MLA && init_teacher)
        fprintf(stderr, "teacher init: K/V low-rank reconstruction error (relative Frobenius) "
                "mean %.4f, max %.4f\n", rep->kv_rel_err_mean, rep->kv_rel_err_max);
}

// Checks the training options against the teacher and opens the data file.
static ae_status check_training(const ae_run_spec *rs, const ae_model *t, ae_tokfile *data) {
    const ae_distill_opts *o = &rs->opts;
    if (o->ctx > t->cfg.max_position_embeddings)
        return ae_errorf(AE_ERR_ARG, "--ctx %d is longer than the teacher supports "
                         "(max_position_embeddings %d)", o->ctx, t->cfg.max_position_embeddings);
    if (!rs->data[0])
        return ae_errorf(AE_ERR_ARG, "training budgets need --data TOKENS (made by attnedit prepare-data)");
    AE_TRY(ae_tokfile_open(rs->data, data));
    ae_status st = ae_tokfile_check_model(data, rs->data, rs->teacher, t->cfg.vocab_size);
    if (st == AE_OK && data->n_tokens < (uint64_t)o->ctx + 1)
        st = ae_errorf(AE_ERR_ARG, "%s: %llu tokens, fewer than one window of --ctx %d + 1", rs->data,
                       (unsigned long long)data->n_tokens, o->ctx);
    if (st != AE_OK) ae_tokfile_close(data);
    return st;
}

// Trains the student in out (which holds its initial folder) on the checked token file and
// writes the result.
static ae_status train_and_finish(const ae_run_spec *rs, const ae_model *t, ae_model *s,
                                  const ae_tokfile *data, const ae_init_report *rep,
                                  const char *out) {
    ae_distill_result res;
    AE_TRY(ae_distill_run(t, s, data, &rs->opts, out, &res));
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

static int run_resume(const char *dir) {
    static ae_run_spec rs;
    if (ae_run_spec_load(dir, &rs) != AE_OK) return ae_cli_fail("convert");
    char hash[65];
    if (ae_model_dir_hash(rs.teacher, hash) != AE_OK) return ae_cli_fail("convert");
    if (strcmp(hash, rs.teacher_hash) != 0) {
        fprintf(stderr, "attnedit convert: --resume %s: the teacher %s has changed since the run "
                        "started (content hash differs)\n", dir, rs.teacher);
        return 1;
    }
    if (ae_file_hash(rs.data, hash) != AE_OK) return ae_cli_fail("convert");
    if (strcmp(hash, rs.data_hash) != 0) {
        fprintf(stderr, "attnedit convert: --resume %s: the data file %s has changed since the run "
                        "started\n", dir, rs.data);
        return 1;
    }
    ae_model *t = NULL, *s = NULL;
    int rc = 0;
    if (ae_model_load(rs.teacher, ae_backend_cpu(), &t) != AE_OK ||
        ae_model_load(dir, ae_backend_cpu(), &s) != AE_OK) {
        rc = ae_cli_fail("convert");
    } else if (s->cfg.target != rs.spec.target) {
        fprintf(stderr, "attnedit convert: --resume %s: config.json target differs from conversion.json\n", dir);
        rc = 1;
    } else {
        ae_init_report rep = {0};
        ae_tokfile data;
        if (check_training(&rs, t, &data) != AE_OK) {
            rc = ae_cli_fail("convert");
        } else {
            if (train_and_finish(&rs, t, s, &data, &rep, dir) != AE_OK) rc = ae_cli_fail("convert");
            ae_tokfile_close(&data);
        }
    }
    ae_model_free(s);
    ae_model_free(t);
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

int ae_cmd_convert(int argc, char **argv) {
    convert_opts o;
    static ae_run_spec rs;
    int rc = parse(argc, argv, &o);
    if (rc) goto out;
    if (o.resume) {
        rc = run_resume(o.resume);
        goto out;
    }
    int training = o.train.stage_tokens[0] > 0 || o.train.stage_tokens[1] > 0;
    if ((rc = ae_cli_check_model("convert", o.teacher))) goto out;
    if (ae_save_check_target(o.out, o.force) != AE_OK || fill_spec(&o, &rs) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto out;
    }
    if (o.data && !training)
        fprintf(stderr, "note: --data given without --stage1-tokens/--stage2-tokens: no training\n");
    ae_model *t = NULL, *s = NULL;
    ae_init_report rep;
    char *meta = NULL;
    ae_tokfile data;
    int data_open = 0;
    ae_status st = ae_model_load(o.teacher, ae_backend_cpu(), &t);
    if (st == AE_OK) st = ae_student_resolve(&t->cfg, &rs.spec); // record the resolved dims
    if (st == AE_OK && training) {
        st = check_training(&rs, t, &data); // opened once, used by the training below
        data_open = st == AE_OK;
    }
    // attention-only training: the student shares the teacher's frozen tensors in memory
    if (st == AE_OK)
        st = o.train.train_all ? ae_model_load(o.teacher, ae_backend_cpu(), &s) : ae_model_share(t, &s);
    if (st == AE_OK) st = ae_student_make(s, &rs.spec, &rep);
    if (st != AE_OK) {
        rc = ae_cli_fail("convert");
        goto done;
    }
    print_student(s, ae_config_kv_bytes(&t->cfg, 4096) / 4096, &rep, o.spec.init_teacher);
    meta = ae_run_spec_json(&rs, s, &rep, NULL);
    ae_save_opts so = {.src_dir = o.teacher, .force = o.force, .metadata_json = meta};
    if (!meta || ae_model_save(s, o.out, &so) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto done;
    }
    if (training && train_and_finish(&rs, t, s, &data, &rep, o.out) != AE_OK) {
        fprintf(stderr, "attnedit convert: %s\n(the run can be continued with: attnedit convert "
                        "--resume %s)\n", ae_last_error(), o.out);
        rc = 1;
        goto done;
    }
    fprintf(stderr, "wrote %s\n", o.out);
done:
    if (data_open) ae_tokfile_close(&data);
    free(meta);
    ae_model_free(s); // before t: s may share t's tensors
    ae_model_free(t);
out:
    free(o.layers);
    free(o.full_layers);
    return rc;
}
