// Loading a Qwen3 / Qwen3-MoE model: config, then every tensor with its expected shape.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "io/safetensors.h"
#include "model/model.h"

typedef struct {
    const ae_st_set *st;  // the weights; NULL: random weights (ae_model_random)
    const ae_backend *be;
    const char *dir;
    int64_t n_params;
    size_t n_used;
    uint64_t seed;        // random weights: a seed per tensor, seed + its index
    float std;
    int shapes_only;      // check the files' tensors, allocate and read none (ae_model_load_shapes)
} loader;

// Random weights: matrices ~ N(0, std²), vectors (norms) 1, sinks 0.
static ae_status fill_random(loader *ld, const char *name, int ndim, const int64_t *shape,
                             ae_ptr dst) {
    size_t n = (size_t)(ndim == 1 ? shape[0] : shape[0] * shape[1]);
    const char *sinks = strstr(name, "sinks");
    if (ndim == 2) ld->be->fill_normal(ld->be, dst, n, ld->std, ld->seed + ld->n_used);
    else ld->be->fill(ld->be, dst, n, sinks && sinks[5] == '\0' ? 0.0f : 1.0f);
    ld->n_params += (int64_t)n;
    ld->n_used++;
    return AE_OK;
}

// The file's tensor `name`, checked before anything is allocated for it: present, of the shape
// config.json implies, a float dtype, and finite.
static ae_status source(loader *ld, const char *name, int ndim, const int64_t *shape,
                        const ae_st_tensor **out) {
    if (!ae_st_find(ld->st, name))
        return ae_errorf(AE_ERR_FORMAT, "%s: missing tensor '%s' required by config.json", ld->dir,
                         name);
    const ae_st_tensor *t = NULL;
    AE_TRY(ae_st_get(ld->st, name, ndim, shape, &t));
    int64_t bad = ae_st_first_nonfinite(t);
    if (bad >= 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value (Inf or NaN) at "
                         "element %lld", t->file, name, (long long)bad);
    *out = t;
    return AE_OK;
}

// Fills `dst` (allocated, numel values) from tensor `name`; the backend converts the file's
// dtype to its own as it uploads.
static ae_status load_into(loader *ld, const char *name, int ndim, const int64_t *shape,
                           ae_ptr dst) {
    if (!ld->st) return fill_random(ld, name, ndim, shape, dst);
    const ae_st_tensor *t = NULL;
    AE_TRY(source(ld, name, ndim, shape, &t));
    AE_TRY(ld->be->upload(ld->be, dst, t->data, t->dtype, (size_t)t->numel));
    ld->n_params += t->numel;
    ld->n_used++;
    return AE_OK;
}

// Checks the file's tensor (shape, dtype, values) before its memory is allocated, so a config
// with absurd sizes is refused by the weights it does not match, not by a failed allocation.
static ae_status precheck(loader *ld, const char *name, int ndim, const int64_t *shape) {
    const ae_st_tensor *t = NULL;
    return ld->st ? source(ld, name, ndim, shape, &t) : AE_OK;
}

// A tensor checked but not read (shapes_only): counted as used, its pointer null.
static void skip(loader *ld, int ndim, const int64_t *shape, ae_ptr *out) {
    ld->n_params += ndim == 1 ? shape[0] : shape[0] * shape[1];
    ld->n_used++;
    if (out) *out = (ae_ptr){NULL, ld->be->weight_dtype};
}

// Allocates and fills a tensor named `name` of the given shape.
static ae_status load(loader *ld, const char *name, int ndim, int64_t d0, int64_t d1, ae_ptr *out) {
    int64_t shape[2] = {d0, d1};
    AE_TRY(precheck(ld, name, ndim, shape));
    if (ld->shapes_only) {
        skip(ld, ndim, shape, out);
        return AE_OK;
    }
    *out = ld->be->alloc(ld->be, (size_t)(ndim == 1 ? d0 : d0 * d1), ld->be->weight_dtype);
    if (ae_ptr_is_null(*out)) return AE_ERR_NOMEM;
    return load_into(ld, name, ndim, shape, *out);
}

static ae_status loadf(loader *ld, ae_ptr *out, int ndim, int64_t d0, int64_t d1, const char *fmt,
                       ...) __attribute__((format(printf, 6, 7)));
static ae_status loadf(loader *ld, ae_ptr *out, int ndim, int64_t d0, int64_t d1, const char *fmt,
                       ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return load(ld, name, ndim, d0, d1, out);
}

// Experts are stored one tensor per expert; they are packed into (E, rows, cols).
static ae_status load_experts(loader *ld, int l, const char *proj, int E, int rows, int cols,
                              ae_ptr *out) {
    size_t per = (size_t)rows * cols;
    int64_t shape[2] = {rows, cols};
    char name[256];
    for (int e = 0; e < E; e++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj);
        AE_TRY(precheck(ld, name, 2, shape));
        if (ld->shapes_only) skip(ld, 2, shape, out);
    }
    if (ld->shapes_only) return AE_OK;
    *out = ld->be->alloc(ld->be, per * E, ld->be->weight_dtype);
    if (ae_ptr_is_null(*out)) return AE_ERR_NOMEM;
    for (int e = 0; e < E; e++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj);
        AE_TRY(load_into(ld, name, 2, shape, ae_ptr_at(*out, per * e)));
    }
    return AE_OK;
}

ae_gswa_dims ae_model_gswa_dims(const ae_config *c, int l) {
    int gateswa = c->layer_attn && c->layer_attn[l] == AE_ATTN_GATESWA;
    ae_gswa_dims d = {
        .D = c->hidden_size, .Hq = c->num_attention_heads, .Hkv = c->num_key_value_heads,
        .hd = c->head_dim,
        .window = c->layer_types && c->layer_types[l] == AE_LAYER_SLIDING ? c->sliding_window : 0,
        .gate = gateswa ? (ae_gate_kind)c->attn_gate : AE_GATE_NONE,
        .sinks = gateswa && c->attn_sinks, .rope_theta = c->rope_theta,
        .eps = (float)c->rms_norm_eps};
    return d;
}

ae_mla_dims ae_model_mla_dims(const ae_config *c) {
    ae_mla_dims d = {.D = c->hidden_size, .H = c->num_attention_heads,
                     .q_lora_rank = c->q_lora_rank, .kv_lora_rank = c->kv_lora_rank,
                     .dn = c->qk_nope_head_dim, .dr = c->qk_rope_head_dim, .dv = c->v_head_dim,
                     .rope_theta = c->rope_theta, .eps = (float)c->rms_norm_eps};
    return d;
}

// The attention parameters of layer l, allocated for the layer's kind (zeroed).
// The attention tensors layer l's config calls for (names and shapes only: nothing allocated).
static ae_param_list attn_shapes(const ae_config *c, int l, ae_layer *probe) {
    memset(probe, 0, sizeof *probe);
    if (c->layer_attn[l] == AE_ATTN_MLA) {
        probe->mla.d = ae_model_mla_dims(c);
        return ae_mla_params(&probe->mla);
    }
    probe->gqa.d = ae_model_gswa_dims(c, l);
    return ae_gswa_params(&probe->gqa);
}

static ae_status attn_alloc(const ae_backend *be, const ae_config *c, int l, ae_layer *L,
                            ae_param_list *params) {
    L->kind = c->layer_attn[l];
    if (L->kind == AE_ATTN_MLA) {
        ae_mla_dims d = ae_model_mla_dims(c);
        AE_TRY(ae_mla_init(&L->mla, &d, be));
        *params = ae_mla_params(&L->mla);
    } else {
        ae_gswa_dims d = ae_model_gswa_dims(c, l);
        AE_TRY(ae_gswa_init(&L->gqa, &d, be));
        *params = ae_gswa_params(&L->gqa);
    }
    return AE_OK;
}

static ae_status load_layer(loader *ld, const ae_config *c, int l, ae_layer *L) {
    int D = c->hidden_size;
    const char *p = "model.layers";
    AE_TRY(loadf(ld, &L->input_norm, 1, D, 0, "%s.%d.input_layernorm.weight", p, l));
    AE_TRY(loadf(ld, &L->post_norm, 1, D, 0, "%s.%d.post_attention_layernorm.weight", p, l));
    ae_layer probe;
    ae_param_list attn = attn_shapes(c, l, &probe);
    for (int i = 0; i < attn.n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s.%d.self_attn.%s", p, l, attn.p[i].name);
        AE_TRY(precheck(ld, name, attn.p[i].ndim, attn.p[i].shape));
        if (ld->shapes_only) skip(ld, attn.p[i].ndim, attn.p[i].shape, NULL);
    }
    if (ld->shapes_only) { // the probe's module: dims and null pointers, nothing to free
        L->kind = c->layer_attn[l];
        L->mla = probe.mla;
        L->gqa = probe.gqa;
    } else {
        AE_TRY(attn_alloc(ld->be, c, l, L, &attn));
    }
    for (int i = 0; i < attn.n && !ld->shapes_only; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s.%d.self_attn.%s", p, l, attn.p[i].name);
        AE_TRY(load_into(ld, name, attn.p[i].ndim, attn.p[i].shape, attn.p[i].data));
    }
    L->is_moe = ae_config_layer_is_moe(c, l);
    if (!L->is_moe) {
        int I = c->intermediate_size;
        AE_TRY(loadf(ld, &L->w_gate, 2, I, D, "%s.%d.mlp.gate_proj.weight", p, l));
        AE_TRY(loadf(ld, &L->w_up, 2, I, D, "%s.%d.mlp.up_proj.weight", p, l));
        AE_TRY(loadf(ld, &L->w_down, 2, D, I, "%s.%d.mlp.down_proj.weight", p, l));
        return AE_OK;
    }
    int E = c->num_experts, Im = c->moe_intermediate_size;
    AE_TRY(loadf(ld, &L->router, 2, E, D, "%s.%d.mlp.gate.weight", p, l));
    AE_TRY(load_experts(ld, l, "gate_proj", E, Im, D, &L->e_gate));
    AE_TRY(load_experts(ld, l, "up_proj", E, Im, D, &L->e_up));
    AE_TRY(load_experts(ld, l, "down_proj", E, D, Im, &L->e_down));
    return AE_OK;
}

// 1 if `name` is a tensor this config uses (lm_head.weight is tolerated when tied).
static int is_expected(const ae_model *m, const char *name) {
    const ae_config *c = &m->cfg;
    static const char *globals[] = {"model.embed_tokens.weight", "model.norm.weight",
                                    "lm_head.weight"};
    static const char *norms[] = {"input_layernorm.weight", "post_attention_layernorm.weight"};
    static const char *dense[] = {"mlp.gate_proj.weight", "mlp.up_proj.weight",
                                  "mlp.down_proj.weight"};
    for (size_t i = 0; i < 3; i++)
        if (strcmp(name, globals[i]) == 0) return 1;
    int l, n = 0;
    if (sscanf(name, "model.layers.%d.%n", &l, &n) != 1 || n == 0) return 0;
    if (l < 0 || l >= c->num_hidden_layers) return 0;
    const char *rest = name + n;
    for (size_t i = 0; i < 2; i++)
        if (strcmp(rest, norms[i]) == 0) return 1;
    if (strncmp(rest, "self_attn.", 10) == 0) {
        ae_layer *L = &m->layers[l];
        ae_param_list attn = L->kind == AE_ATTN_MLA ? ae_mla_params(&L->mla) : ae_gswa_params(&L->gqa);
        for (int i = 0; i < attn.n; i++)
            if (strcmp(rest + 10, attn.p[i].name) == 0) return 1;
        return 0;
    }
    if (!ae_config_layer_is_moe(c, l)) {
        for (size_t i = 0; i < 3; i++)
            if (strcmp(rest, dense[i]) == 0) return 1;
        return 0;
    }
    if (strcmp(rest, "mlp.gate.weight") == 0) return 1;
    int e, end = 0;
    char proj[32];
    if (sscanf(rest, "mlp.experts.%d.%31[a-z_].weight%n", &e, proj, &end) == 2 && rest[end] == '\0')
        return e >= 0 && e < c->num_experts &&
               (!strcmp(proj, "gate_proj") || !strcmp(proj, "up_proj") || !strcmp(proj, "down_proj"));
    return 0;
}

// transformers' DeepseekV2 builds a shared-expert MLP in every MoE layer; with n_shared_experts 0
// its tensors are empty and save_pretrained writes them: tolerated in DeepSeek-V2 folders (a
// student fine-tuned in transformers and saved), as long as they hold nothing.
static int is_empty_shared_expert(const ae_config *c, const ae_st_tensor *t) {
    int l, end = 0;
    char proj[32];
    if (c->folder != AE_FOLDER_DEEPSEEK_V2 || t->numel != 0) return 0;
    if (sscanf(t->name, "model.layers.%d.mlp.shared_experts.%31[a-z_].weight%n", &l, proj, &end) != 2 ||
        t->name[end] != '\0')
        return 0;
    return l >= 0 && l < c->num_hidden_layers && ae_config_layer_is_moe(c, l) &&
           (!strcmp(proj, "gate_proj") || !strcmp(proj, "up_proj") || !strcmp(proj, "down_proj"));
}

static ae_status load_all(loader *ld, ae_model *m) {
    const ae_config *c = &m->cfg;
    AE_TRY(load(ld, "model.embed_tokens.weight", 2, c->vocab_size, c->hidden_size, &m->embed));
    m->src_dtype = ld->st ? ae_st_find(ld->st, "model.embed_tokens.weight")->dtype : AE_DT_BF16;
    AE_TRY(load(ld, "model.norm.weight", 1, c->hidden_size, 0, &m->final_norm));
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        if (ld->st && ae_st_find(ld->st, "lm_head.weight")) ld->n_used++; // HF ignores it when tied
    } else {
        if (ld->st && !ae_st_find(ld->st, "lm_head.weight"))
            return ae_errorf(AE_ERR_FORMAT,
                             "%s: missing tensor 'lm_head.weight' (config.json says "
                             "tie_word_embeddings=false)",
                             ld->dir);
        AE_TRY(load(ld, "lm_head.weight", 2, c->vocab_size, c->hidden_size, &m->lm_head));
    }
    m->layers = ae_calloc((size_t)c->num_hidden_layers, sizeof(ae_layer));
    if (!m->layers) return AE_ERR_NOMEM;
    for (int l = 0; l < c->num_hidden_layers; l++) AE_TRY(load_layer(ld, c, l, &m->layers[l]));
    // Anything left over means the file holds weights this config does not explain (bias terms,
    // another architecture's tensors): refuse rather than silently ignore them.
    if (ld->st && ld->n_used != ae_st_count(ld->st)) {
        for (size_t i = 0; i < ae_st_count(ld->st); i++) {
            const ae_st_tensor *t = ae_st_at(ld->st, i);
            const char *name = t->name;
            if (!is_expected(m, name) && !is_empty_shared_expert(c, t))
                return ae_errorf(AE_ERR_UNSUPPORTED,
                                 "%s: tensor '%s' is not part of %s as config.json describes it",
                                 ld->dir, name, c->architecture);
        }
    }
    m->n_params = ld->n_params;
    return AE_OK;
}

// Refuses a model whose weights do not fit the device's free memory, before any upload.
static ae_status check_fits(const ae_model *m, const char *dir) {
    size_t free_b, total_b;
    ae_backend_mem_info(m->be, &free_b, &total_b);
    if (total_b == 0) return AE_OK; // not tracked (cpu)
    double need = (double)ae_config_param_count(&m->cfg) * ae_dtype_size(m->be->weight_dtype);
    if (need > (double)free_b)
        return ae_errorf(AE_ERR_NOMEM,
                         "%s: the weights need %.2f GiB of %s memory (%s); %.2f GiB of %.2f GiB "
                         "are free. Free the device, use a GPU with more memory, or --device cpu",
                         dir, need / 1073741824.0, m->be->name, ae_dtype_name(m->be->weight_dtype),
                         free_b / 1073741824.0, total_b / 1073741824.0);
    return AE_OK;
}

int ae_model_on_host(const ae_model *m) { return m->be->host_memory; }

// Loads config.json from dir, then every tensor through `ld` (files or random values).
static ae_status model_make(const char *dir, const ae_backend *be, loader *ld, int from_files,
                            ae_model **out) {
    *out = NULL;
    ae_model *m = ae_calloc(1, sizeof *m);
    if (!m) return AE_ERR_NOMEM;
    m->be = be;
    ae_status st = ae_config_load(dir, &m->cfg);
    if (st != AE_OK) {
        free(m);
        return st;
    }
    ae_st_set *set = NULL;
    st = check_fits(m, dir);
    if (st == AE_OK && from_files) st = ae_st_open_dir(dir, &set);
    if (st == AE_OK) {
        ld->st = set;
        ld->be = be;
        ld->dir = dir;
        ld->std = (float)m->cfg.initializer_range;
        st = load_all(ld, m);
        ae_st_close(set);
    }
    if (st != AE_OK) {
        ae_model_free(m);
        return st;
    }
    *out = m;
    return AE_OK;
}

ae_status ae_model_load(const char *dir, const ae_backend *be, ae_model **out) {
    loader ld = {0};
    return model_make(dir, be, &ld, 1, out);
}

ae_status ae_model_load_shapes(const char *dir, ae_model **out) {
    loader ld = {.shapes_only = 1};
    return model_make(dir, ae_backend_cpu(), &ld, 1, out);
}

ae_status ae_model_random(const char *dir, const ae_backend *be, uint64_t seed, ae_model **out) {
    loader ld = {.seed = seed};
    return model_make(dir, be, &ld, 0, out);
}

ae_status ae_model_share(const ae_model *base, ae_model **out) {
    if (base->cfg.target != AE_ATTN_GQA || base->shared_base)
        return ae_errorf(AE_ERR_ARG, "only a teacher's own tensors can be shared");
    ae_model *m = ae_calloc(1, sizeof *m);
    if (!m) return AE_ERR_NOMEM;
    *m = *base;
    m->shared_base = 1;
    m->layers = NULL;
    ae_status st = ae_config_copy(&m->cfg, &base->cfg);
    if (st != AE_OK) {
        free(m);
        return st;
    }
    m->layers = ae_calloc((size_t)base->cfg.num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        ae_model_free(m);
        return AE_ERR_NOMEM;
    }
    memcpy(m->layers, base->layers, sizeof *m->layers * (size_t)base->cfg.num_hidden_layers);
    *out = m;
    return AE_OK;
}

// A shared model owns only the attention modules it replaced (kind != the base's GQA). The
// teacher base has no MLA modules, so any MLA tensors here are this model's own, including
// those of a layer whose initialisation failed half-way.
static void free_shared(ae_model *m) {
    for (int l = 0; m->layers && l < m->cfg.num_hidden_layers; l++) {
        ae_layer *L = &m->layers[l];
        ae_mla_free(&L->mla);
        if (L->kind == AE_ATTN_GATESWA) ae_gswa_free(&L->gqa);
    }
    free(m->layers);
    ae_config_free(&m->cfg);
    free(m);
}

void ae_model_free(ae_model *m) {
    if (!m) return;
    if (m->shared_base) {
        free_shared(m);
        return;
    }
    const ae_backend *be = m->be;
    if (m->layers) {
        for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
            ae_layer *L = &m->layers[l];
            ae_ptr ps[] = {L->input_norm, L->post_norm, L->w_gate, L->w_up,  L->w_down,
                           L->router,     L->e_gate,    L->e_up,   L->e_down};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) be->free(be, ps[i]);
            ae_gswa_free(&L->gqa);
            ae_mla_free(&L->mla);
        }
        free(m->layers);
    }
    if (m->lm_head.data != m->embed.data) be->free(be, m->lm_head);
    be->free(be, m->embed);
    be->free(be, m->final_norm);
    ae_config_free(&m->cfg);
    free(m);
}
