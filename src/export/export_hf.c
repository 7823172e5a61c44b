// attnedit export --format hf: checks, then the folder written atomically.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "export/export_internal.h"
#include "model/save.h"

ae_status ae_export_parse_dtype(const char *s, const char *opt, ae_dtype *out) {
    if (!strcmp(s, "bf16")) *out = AE_DT_BF16;
    else if (!strcmp(s, "f16")) *out = AE_DT_F16;
    else if (!strcmp(s, "f32")) *out = AE_DT_F32;
    else return ae_errorf(AE_ERR_ARG, "%s: '%s' is not one of bf16, f16, f32", opt, s);
    return AE_OK;
}

ae_status ae_export_parse_engine(const char *s, const char *opt, ae_export_engine *out) {
    if (!strcmp(s, "transformers") || !strcmp(s, "sglang")) *out = AE_EXPORT_FOR_TRANSFORMERS;
    else if (!strcmp(s, "vllm")) *out = AE_EXPORT_FOR_VLLM;
    else return ae_errorf(AE_ERR_ARG, "%s: '%s' is not one of transformers, sglang, vllm", opt, s);
    return AE_OK;
}

const char *ae_export_dtype_name(ae_dtype dt) {
    return dt == AE_DT_BF16 ? "bf16" : dt == AE_DT_F16 ? "f16" : "f32";
}

// "0, 2, 5" (at most ~8 listed, then "...") of the layers of kind k.
static void list_layers(const ae_config *c, ae_attn_kind k, char *buf, size_t n) {
    size_t len = 0;
    int shown = 0;
    buf[0] = '\0';
    for (int l = 0; l < c->num_hidden_layers && len + 16 < n; l++) {
        if (c->layer_attn[l] != k) continue;
        if (shown == 8) {
            snprintf(buf + len, n - len, ", ...");
            return;
        }
        len += (size_t)snprintf(buf + len, n - len, "%s%d", shown ? ", " : "", l);
        shown++;
    }
}

int ae_export_moe_dense_lead(const ae_config *c, int *bad_layer) {
    int k = 0;
    while (k < c->num_hidden_layers && !ae_config_layer_is_moe(c, k)) k++;
    for (int l = k; l < c->num_hidden_layers; l++)
        if (!ae_config_layer_is_moe(c, l)) {
            if (bad_layer) *bad_layer = l;
            return -1;
        }
    return k;
}

ae_status ae_export_plan(const ae_config *c, const char *what, ae_export_kind *kind) {
    if (c->target == AE_ATTN_GQA)
        return ae_errorf(AE_ERR_ARG,
                         "%s is a teacher (config.json has no attention_target): nothing to export. "
                         "It already loads as %s in transformers, vLLM and SGLang; export writes "
                         "students made by 'attnedit convert' in an engine's format",
                         what, c->base_architecture);
    if (c->arch == AE_ARCH_QWEN3_MOE && c->target == AE_ATTN_GATESWA)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: GateSWA student of a Qwen3-MoE teacher: exporting it is not supported "
                         "yet (it would need remote code on top of transformers' "
                         "Qwen3MoeForCausalLM; only MLA students of MoE teachers are exported, as "
                         "DeepseekV2ForCausalLM)",
                         what);
    if (c->target == AE_ATTN_MLA) {
        char gqa[128];
        list_layers(c, AE_ATTN_GQA, gqa, sizeof gqa);
        if (gqa[0])
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: mixed MLA student (layers %s keep the teacher's GQA attention): "
                             "DeepSeek-V3 has MLA on every layer, so only students converted on "
                             "every layer can be exported (convert without --layers)",
                             what, gqa);
        int bad = -1, lead = c->arch == AE_ARCH_QWEN3_MOE ? ae_export_moe_dense_lead(c, &bad)
                                                          : c->num_hidden_layers;
        if (lead != c->num_hidden_layers) { // some layer is MoE
            if (lead < 0)
                return ae_errorf(AE_ERR_UNSUPPORTED,
                                 "%s: MLA student of a Qwen3-MoE teacher whose layer %d has a dense "
                                 "MLP after a MoE layer (mlp_only_layers / decoder_sparse_step): "
                                 "DeepSeek-V2's layout (first_k_dense_replace) has dense layers "
                                 "only before the MoE ones, and transformers' DeepseekV2 ignores "
                                 "moe_layer_freq, so this student cannot be exported",
                                 what, bad);
            *kind = AE_EXPORT_DEEPSEEK_V2;
            return AE_OK;
        }
        *kind = AE_EXPORT_DEEPSEEK_V3;
        return AE_OK;
    }
    *kind = AE_EXPORT_GATESWA;
    return AE_OK;
}

typedef struct {
    const ae_model *m;        // names and shapes (ae_model_load_shapes)
    const ae_st_set *src;     // its files, read a tensor at a time
    const char *model_dir;
    ae_export_kind kind;
    const ae_export_opts *o;
    ae_export_report *rep;
} export_job;

static ae_status write_config(const export_job *j, const char *tmp) {
    char *path = ae_path_join(j->model_dir, "config.json"), *src = NULL, *cfg = NULL;
    size_t len;
    if (!path) return AE_ERR_NOMEM;
    ae_status st = ae_file_read_all(path, &src, &len);
    if (st == AE_OK)
        st = j->kind == AE_EXPORT_GATESWA
                 ? ae_export_config_gateswa(j->m, src, path, j->o->dtype, &cfg)
                 : ae_export_config_deepseek(j->m, src, path, j->o->dtype, j->o->engine, &cfg);
    if (st == AE_OK) st = ae_write_text_file(tmp, "config.json", cfg);
    free(cfg);
    free(src);
    free(path);
    return st;
}

// The shipped Python files whose name contains `which`.
static ae_status write_py_files(const char *tmp, const char *which) {
    for (int i = 0; i < ae_export_hf_py_count; i++) {
        const ae_export_file *f = &ae_export_hf_py_files[i];
        if (!strstr(f->name, which)) continue;
        char *path = ae_path_join(tmp, f->name);
        if (!path) return AE_ERR_NOMEM;
        ae_atomic_file af;
        ae_status st = ae_atomic_open(&af, path);
        if (st == AE_OK) st = ae_atomic_write(&af, f->data, f->size);
        if (st == AE_OK) st = ae_atomic_commit(&af);
        else ae_atomic_abort(&af);
        free(path);
        AE_TRY(st);
    }
    return AE_OK;
}

static ae_status fill(void *ud, const char *tmp) {
    const export_job *j = ud;
    AE_TRY(write_config(j, tmp));
    AE_TRY(ae_copy_support_files(j->model_dir, tmp));
    if (j->kind == AE_EXPORT_GATESWA) AE_TRY(write_py_files(tmp, "gateswa"));
    if (j->kind == AE_EXPORT_DEEPSEEK_V2 && j->m->cfg.norm_topk_prob)
        AE_TRY(write_py_files(tmp, "deepseek_v2"));
    return ae_export_write_shards(j->m, j->src, j->kind != AE_EXPORT_GATESWA, tmp, j->o->dtype,
                                  j->o->shard_size, j->rep);
}

ae_status ae_export_hf(const char *model_dir, const char *out_dir, const ae_export_opts *o,
                       ae_export_report *rep) {
    ae_export_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (o->dtype != AE_DT_BF16 && o->dtype != AE_DT_F16 && o->dtype != AE_DT_F32)
        return ae_errorf(AE_ERR_ARG, "export: dtype %s is not one of bf16, f16, f32",
                         ae_dtype_name(o->dtype));
    AE_TRY(ae_path_check_output("--out", out_dir, "--model", model_dir));
    AE_TRY(ae_save_check_target(out_dir, o->force));
    ae_config cfg;
    AE_TRY(ae_config_load(model_dir, &cfg));
    ae_status st = ae_export_plan(&cfg, model_dir, &rep->kind);
    ae_config_free(&cfg);
    AE_TRY(st);
    if (rep->kind == AE_EXPORT_GATESWA && o->engine == AE_EXPORT_FOR_VLLM)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: GateSWA student with --engine vllm: vLLM's Qwen3 has no output gate "
                         "or attention sinks, so it cannot run this student; export it for "
                         "transformers (--engine transformers, trust_remote_code=True)",
                         model_dir);
    rep->architecture = rep->kind == AE_EXPORT_DEEPSEEK_V3   ? "DeepseekV3ForCausalLM"
                        : rep->kind == AE_EXPORT_DEEPSEEK_V2 ? "DeepseekV2ForCausalLM"
                                                             : "AttneditGateSWAForCausalLM";
    ae_model *m = NULL;
    ae_st_set *src = NULL;
    AE_TRY(ae_model_load_shapes(model_dir, &m));
    st = ae_st_open_dir(model_dir, &src);
    export_job j = {m, src, model_dir, rep->kind, o, rep};
    if (st == AE_OK) st = ae_dir_write_atomic(out_dir, fill, &j);
    ae_st_close(src);
    ae_model_free(m);
    return st;
}
