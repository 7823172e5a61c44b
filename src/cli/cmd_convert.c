// attnedit convert --teacher T --target mla|gateswa [--kv-lora-rank R --q-lora-rank Q
//   --qk-rope-dim D --qk-nope-dim N --v-head-dim V] [--full-every K | --full-layers 0,5,11]
//   [--window W] [--gate elementwise|head] [--sinks] [--layers 0,1,...] [--init random|teacher]
//   [--seed S] --out S [--force]
// Without a training budget it writes the initialised student. (The distillation stages and
// their budgets plug in here: stage flags are parsed into the same options struct.)
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/save.h"
#include "model/student.h"

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
    "  Writes the student folder S (a Hugging Face folder: config.json with the target's fields,\n"
    "  model.safetensors, the teacher's tokenizer files, conversion.json).\n";

typedef struct {
    const char *teacher, *out;
    int force;
    ae_student_spec spec;
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

// conversion.json: what was done, for reproducibility.
static char *conversion_json(const convert_opts *o, const ae_model *m, const ae_init_report *rep) {
    const ae_config *c = &m->cfg;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "attnedit_version", AE_VERSION);
    cJSON_AddStringToObject(j, "teacher", o->teacher);
    cJSON_AddStringToObject(j, "target", ae_attn_kind_name(c->target));
    cJSON_AddStringToObject(j, "init", o->spec.init_teacher ? "teacher" : "random");
    cJSON_AddNumberToObject(j, "seed", (double)o->spec.seed);
    cJSON_AddNumberToObject(j, "layers_replaced", rep->n_layers);
    if (c->target == AE_ATTN_MLA && o->spec.init_teacher) {
        cJSON_AddNumberToObject(j, "init_kv_rel_err_mean", rep->kv_rel_err_mean);
        cJSON_AddNumberToObject(j, "init_kv_rel_err_max", rep->kv_rel_err_max);
    }
    cJSON_AddNumberToObject(j, "params", (double)m->n_params);
    cJSON_AddNumberToObject(j, "kv_bytes_per_token", (double)(ae_config_kv_bytes(c, 4096) / 4096));
    cJSON_AddNumberToObject(j, "stage1_tokens", 0);
    cJSON_AddNumberToObject(j, "stage2_tokens", 0);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

int ae_cmd_convert(int argc, char **argv) {
    convert_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) goto out;
    if ((rc = ae_cli_check_model("convert", o.teacher))) goto out;
    if (ae_save_check_target(o.out, o.force) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto out;
    }
    ae_model *m = NULL;
    if (ae_model_load(o.teacher, ae_backend_cpu(), &m) != AE_OK) {
        rc = ae_cli_fail("convert");
        goto out;
    }
    int64_t kv_teacher = ae_config_kv_bytes(&m->cfg, 4096) / 4096;
    ae_init_report rep;
    char *meta = NULL;
    if (ae_student_make(m, &o.spec, &rep) != AE_OK) {
        rc = ae_cli_fail("convert");
    } else {
        const ae_config *c = &m->cfg;
        int64_t kv = ae_config_kv_bytes(c, 4096) / 4096;
        fprintf(stderr, "student: %s on %d layers, init %s; KV cache %lld -> %lld bytes/token "
                "(bf16, first 4096 tokens) %+.1f%%\n",
                ae_attn_kind_name(c->target), rep.n_layers, o.spec.init_teacher ? "teacher" : "random",
                (long long)kv_teacher, (long long)kv, 100.0 * (kv - kv_teacher) / kv_teacher);
        if (c->target == AE_ATTN_MLA && c->kv_lora_rank + c->qk_rope_head_dim != 576)
            fprintf(stderr, "note: MLA cache of %d + %d values per token; the MLA kernels of "
                    "serving engines support 512 + 64\n", c->kv_lora_rank, c->qk_rope_head_dim);
        if (c->target == AE_ATTN_MLA && o.spec.init_teacher)
            fprintf(stderr, "teacher init: K/V low-rank reconstruction error (relative Frobenius) "
                    "mean %.4f, max %.4f\n", rep.kv_rel_err_mean, rep.kv_rel_err_max);
        meta = conversion_json(&o, m, &rep);
        ae_save_opts so = {.src_dir = o.teacher, .force = o.force, .metadata_json = meta};
        if (!meta || ae_model_save(m, o.out, &so) != AE_OK) rc = ae_cli_fail("convert");
        else fprintf(stderr, "wrote %s\n", o.out);
    }
    free(meta);
    ae_model_free(m);
out:
    free(o.layers);
    free(o.full_layers);
    return rc;
}
