// attnedit export --format gguf: one GGUF v3 file llama.cpp loads (docs/EXPORT.md, GGUF part).
//
//   dense Qwen3 teacher  -> "qwen3"      (what convert_hf_to_gguf.py writes for Qwen3ForCausalLM)
//   Qwen3-MoE teacher    -> "qwen3moe"   (experts stacked per layer: ffn_{gate,up,down}_exps)
//   MLA student, every layer MLA, dense or Qwen3-MoE teacher -> "deepseek2" (as the converter writes a
//     DeepSeek-V2/V3 model, with MLA's absorbed form: kv_b_proj split into attn_k_b, per head
//     W_UK transposed (ne {dn, R, H}), and attn_v_b, per head W_UV (ne {R, dv, H}); every
//     layer dense (leading_dense_block_count = block_count); attention.q_lora_rank always
//     written (0: plain attn_q), since llama.cpp reads it unless the model has 26/27 layers).
//     Of a Qwen3-MoE teacher: leading_dense_block_count = the leading dense layers (a dense
//     layer after a MoE one is refused), MoE layers as deepseek2's with softmax gating
//     (expert_gating_func 1), expert_weights_norm = norm_topk_prob, expert_weights_scale 1;
//     deepseek2 requires a shared expert in every MoE layer, so one is written with all-zero
//     weights (expert_shared_count 1, ffn_{gate,up,down}_shexp): it adds exactly 0.
// RoPE needs no permutation: Qwen3's rotate-half pairs (i, i + hd/2) are llama.cpp's NEOX rope,
// which it uses for qwen3/qwen3moe; MLA's rope part rotates adjacent pairs (2i, 2i+1) at
// theta^(-2i/dr) (DeepSeek's rope_interleave), which is llama.cpp's NORM rope, used for
// deepseek2. Matrices keep PyTorch's row-major (out, in) bytes: GGUF ne = {in, out}.
// Tensor dtypes as the converter: 1-D tensors (norms) and the MoE router F32, the rest --dtype.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "export/export_internal.h"
#include "export/gguf_vocab.h"
#include "export/gguf_write.h"

ae_status ae_export_gguf_plan(const ae_config *c, const char *what, const char **arch) {
    if (c->target == AE_ATTN_GATESWA)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "%s: GateSWA student: llama.cpp has no architecture with GateSWA's sigmoid "
                         "output gate (or learned attention sinks) on Qwen3 attention, so no GGUF "
                         "can compute it; export it with --format hf (transformers, "
                         "trust_remote_code=True)", what);
    if (c->target == AE_ATTN_MLA) {
        for (int l = 0; l < c->num_hidden_layers; l++)
            if (c->layer_attn[l] != AE_ATTN_MLA)
                return ae_errorf(AE_ERR_UNSUPPORTED,
                                 "%s: mixed MLA student (layer %d keeps the teacher's attention): "
                                 "llama.cpp's deepseek2 has MLA on every layer, so only students "
                                 "converted on every layer can be exported (convert without "
                                 "--layers)", what, l);
        int bad = -1;
        if (c->arch == AE_ARCH_QWEN3_MOE && ae_export_moe_dense_lead(c, &bad) < 0)
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: MLA student of a Qwen3-MoE teacher whose layer %d has a dense MLP "
                             "after a MoE layer (mlp_only_layers / decoder_sparse_step): llama.cpp's "
                             "deepseek2 has dense layers only before the MoE ones "
                             "(leading_dense_block_count)", what, bad);
        *arch = "deepseek2";
        return AE_OK;
    }
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (c->layer_types[l] == AE_LAYER_SLIDING)
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: layer %d uses a sliding window: llama.cpp's qwen3/qwen3moe attend "
                             "fully on every layer, so the GGUF would compute something else", what, l);
    if (c->arch == AE_ARCH_QWEN3_MOE) {
        for (int l = 0; l < c->num_hidden_layers; l++)
            if (!ae_config_layer_is_moe(c, l))
                return ae_errorf(AE_ERR_UNSUPPORTED,
                                 "%s: layer %d has a dense MLP (mlp_only_layers / decoder_sparse_step): "
                                 "llama.cpp's qwen3moe has MoE on every layer", what, l);
        if (!c->norm_topk_prob)
            return ae_errorf(AE_ERR_UNSUPPORTED,
                             "%s: norm_topk_prob is false: llama.cpp's qwen3moe always renormalises "
                             "the top-k routing weights, so the GGUF would compute something else", what);
        *arch = "qwen3moe";
        return AE_OK;
    }
    *arch = "qwen3";
    return AE_OK;
}

// One GGUF tensor made from one model tensor.
// SRC_EXPERTS: the layer's experts stacked (E, rows, cols), src_name expert 0's tensor.
typedef enum { SRC_COPY = 0, SRC_K_B = 1, SRC_V_B = 2, SRC_ZERO = 3, SRC_EXPERTS = 4 } src_kind;

typedef struct {
    char name[96];
    ae_ggml_type type;
    int ndim;
    int64_t ne[3];
    const char *src_name; // the model tensor it is made from (valid during the walk's call)
    int64_t src_numel;
    src_kind kind;
} gtensor;

typedef ae_status (*gtensor_fn)(void *ud, const gtensor *t);

typedef struct {
    const ae_model *m;
    ae_ggml_type mat;   // type of matrices
    gtensor_fn fn;
    void *ud;
} mapper;

static const struct {
    const char *hf, *gguf;
} k_attn_names[] = {
    {"q_proj.weight", "attn_q"},          {"k_proj.weight", "attn_k"},
    {"v_proj.weight", "attn_v"},          {"o_proj.weight", "attn_output"},
    {"q_norm.weight", "attn_q_norm"},     {"k_norm.weight", "attn_k_norm"},
    {"q_a_proj.weight", "attn_q_a"},      {"q_a_layernorm.weight", "attn_q_a_norm"},
    {"q_b_proj.weight", "attn_q_b"},      {"kv_a_proj_with_mqa.weight", "attn_kv_a_mqa"},
    {"kv_a_layernorm.weight", "attn_kv_a_norm"},
};

static ae_status emit(mapper *mp, const ae_model_tensor *t, const char *name, int ndim,
                      const int64_t *ne, src_kind kind, int64_t src_numel, int force_f32) {
    gtensor g = {.ndim = ndim, .src_name = t->name, .src_numel = src_numel, .kind = kind};
    snprintf(g.name, sizeof g.name, "%s", name);
    for (int i = 0; i < ndim; i++) g.ne[i] = ne[i];
    g.type = ndim == 1 || force_f32 ? AE_GGML_F32 : mp->mat;
    return mp->fn(mp->ud, &g);
}

static ae_status map_tensor(void *ud, const ae_model_tensor *t) {
    mapper *mp = ud;
    const ae_config *c = &mp->m->cfg;
    int64_t ne2[2] = {t->ndim == 2 ? t->shape[1] : t->shape[0], t->shape[0]};
    int64_t numel = ae_model_tensor_numel(t);
    char name[96];
    if (!strcmp(t->name, "model.embed_tokens.weight"))
        return emit(mp, t, "token_embd.weight", 2, ne2, SRC_COPY, numel, 0);
    if (!strcmp(t->name, "model.norm.weight"))
        return emit(mp, t, "output_norm.weight", 1, ne2, SRC_COPY, numel, 0);
    if (!strcmp(t->name, "lm_head.weight"))
        return emit(mp, t, "output.weight", 2, ne2, SRC_COPY, numel, 0);
    int l, off = 0;
    if (sscanf(t->name, "model.layers.%d.%n", &l, &off) != 1 || off == 0)
        return ae_errorf(AE_ERR_UNSUPPORTED, "gguf export: no GGUF name for tensor '%s'", t->name);
    const char *rest = t->name + off;
    if (!strcmp(rest, "input_layernorm.weight") || !strcmp(rest, "post_attention_layernorm.weight")) {
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, rest[0] == 'i' ? "attn_norm" : "ffn_norm");
        return emit(mp, t, name, 1, ne2, SRC_COPY, numel, 0);
    }
    if (!strncmp(rest, "self_attn.", 10)) {
        const char *a = rest + 10;
        if (!strcmp(a, "kv_b_proj.weight")) { // (H·(dn+dv), R) -> attn_k_b, attn_v_b
            int64_t H = c->num_attention_heads, R = c->kv_lora_rank;
            int64_t kb[3] = {c->qk_nope_head_dim, R, H}, vb[3] = {R, c->v_head_dim, H};
            snprintf(name, sizeof name, "blk.%d.attn_k_b.weight", l);
            AE_TRY(emit(mp, t, name, 3, kb, SRC_K_B, numel, 0));
            snprintf(name, sizeof name, "blk.%d.attn_v_b.weight", l);
            return emit(mp, t, name, 3, vb, SRC_V_B, numel, 0);
        }
        for (size_t i = 0; i < sizeof k_attn_names / sizeof k_attn_names[0]; i++)
            if (!strcmp(a, k_attn_names[i].hf)) {
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, k_attn_names[i].gguf);
                return emit(mp, t, name, t->ndim, ne2, SRC_COPY, numel, 0);
            }
    }
    static const char *const mlp[] = {"gate_proj", "up_proj", "down_proj"};
    static const char *const ffn[] = {"ffn_gate", "ffn_up", "ffn_down"};
    for (int i = 0; i < 3; i++) {
        char hf[64];
        snprintf(hf, sizeof hf, "mlp.%s.weight", mlp[i]);
        if (!strcmp(rest, hf)) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, ffn[i]);
            return emit(mp, t, name, 2, ne2, SRC_COPY, numel, 0);
        }
        // Experts: stored contiguously per layer (E, rows, cols); expert 0's walk entry starts the
        // stacked tensor, the others are skipped.
        int e, n2 = 0;
        snprintf(hf, sizeof hf, "mlp.experts.%%d.%s.weight%%n", mlp[i]);
        if (sscanf(rest, hf, &e, &n2) == 1 && n2 > 0 && rest[n2] == '\0') {
            if (e != 0) return AE_OK;
            int64_t ne3[3] = {ne2[0], ne2[1], c->num_experts};
            snprintf(name, sizeof name, "blk.%d.%s_exps.weight", l, ffn[i]);
            return emit(mp, t, name, 3, ne3, SRC_EXPERTS, numel * c->num_experts, 0);
        }
    }
    if (!strcmp(rest, "mlp.gate.weight")) {
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", l);
        AE_TRY(emit(mp, t, name, 2, ne2, SRC_COPY, numel, 1));
        if (c->target != AE_ATTN_MLA) return AE_OK;
        // deepseek2: the shared expert llama.cpp requires, all zeros (adds exactly 0)
        int64_t D = c->hidden_size, Im = c->moe_intermediate_size;
        int64_t gu[2] = {D, Im}, dn[2] = {Im, D};
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "blk.%d.%s_shexp.weight", l, ffn[i]);
            AE_TRY(emit(mp, t, name, 2, i == 2 ? dn : gu, SRC_ZERO, D * Im, 0));
        }
        return AE_OK;
    }
    return ae_errorf(AE_ERR_UNSUPPORTED, "gguf export: no GGUF name for tensor '%s'", t->name);
}

static ae_status walk(const ae_model *m, ae_ggml_type mat, gtensor_fn fn, void *ud) {
    mapper mp = {m, mat, fn, ud};
    return ae_model_foreach_tensor(m, map_tensor, &mp);
}

static ae_status plan_tensor(void *ud, const gtensor *t) {
    return ae_gguf_add_tensor(ud, t->name, t->type, t->ndim, t->ne);
}

typedef struct {
    const ae_model *m;    // names and shapes (ae_model_load_shapes)
    const ae_st_set *src; // its files, read a tensor at a time
    ae_gguf *g;
    ae_atomic_file *f;
} writer;

// A layer's experts of one projection stacked (E, rows, cols) as f32, read expert by expert.
static ae_status gather_experts(const writer *w, const gtensor *t, float **out, size_t *n_out) {
    int l, E = w->m->cfg.num_experts;
    char proj[32], name[160];
    if (sscanf(t->src_name, "model.layers.%d.mlp.experts.0.%31[a-z_]", &l, proj) != 2)
        return ae_errorf(AE_ERR_UNSUPPORTED, "gguf export: '%s' is not an expert tensor", t->src_name);
    size_t n = (size_t)t->src_numel, per = n / (size_t)E;
    float *dst = ae_alloc_f32(n ? n : 1);
    if (!dst) return AE_ERR_NOMEM;
    for (int e = 0; e < E; e++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj);
        const ae_st_tensor *s = ae_export_source(w->src, w->m, name);
        if (!s || (size_t)s->numel != per || ae_st_to_f32(s, dst + per * (size_t)e) != AE_OK) {
            ae_free_aligned(dst);
            return s ? ae_errorf(AE_ERR_FORMAT, "gguf export: cannot read '%s'", name) : AE_ERR_FORMAT;
        }
    }
    *out = dst;
    *n_out = n;
    return AE_OK;
}

// The tensor's values as f32 in GGUF order (k_b / v_b rearranged from kv_b_proj).
static ae_status gather(const writer *w, const gtensor *t, float **out, size_t *n_out) {
    size_t n = (size_t)t->src_numel;
    if (t->kind == SRC_ZERO) {
        float *z = ae_alloc_f32(n);
        if (!z) return AE_ERR_NOMEM;
        memset(z, 0, sizeof(float) * n);
        *out = z;
        *n_out = n;
        return AE_OK;
    }
    if (t->kind == SRC_EXPERTS) return gather_experts(w, t, out, n_out);
    const ae_st_tensor *s = ae_export_source(w->src, w->m, t->src_name);
    if (!s) return AE_ERR_FORMAT;
    float *src = NULL;
    AE_TRY(ae_export_read_f32(s, &src));
    if (t->kind == SRC_COPY) {
        *out = src;
        *n_out = n;
        return AE_OK;
    }
    const ae_config *c = &w->m->cfg;
    int64_t H = c->num_attention_heads, R = c->kv_lora_rank, dn = c->qk_nope_head_dim,
            dv = c->v_head_dim, rows = dn + dv;
    size_t m = (size_t)(H * R * (t->kind == SRC_K_B ? dn : dv));
    float *dst = ae_alloc_f32(m);
    if (!dst) {
        ae_free_aligned(src);
        return AE_ERR_NOMEM;
    }
    for (int64_t h = 0; h < H; h++) {
        const float *kvb = src + (size_t)(h * rows * R); // (dn + dv, R) rows of head h
        if (t->kind == SRC_K_B) { // (R, dn): W_UK of head h transposed
            for (int64_t r = 0; r < R; r++)
                for (int64_t d = 0; d < dn; d++) dst[(size_t)((h * R + r) * dn + d)] = kvb[d * R + r];
        } else { // (dv, R): W_UV of head h
            memcpy(dst + (size_t)(h * dv * R), kvb + dn * R, sizeof(float) * (size_t)(dv * R));
        }
    }
    ae_free_aligned(src);
    *out = dst;
    *n_out = m;
    return AE_OK;
}

static ae_status write_tensor(void *ud, const gtensor *t) {
    const writer *w = ud;
    float *f = NULL;
    size_t n = 0;
    AE_TRY(gather(w, t, &f, &n));
    if (t->type == AE_GGML_F32) {
        ae_status st = ae_gguf_write_tensor(w->g, w->f, f, n * 4);
        ae_free_aligned(f);
        return st;
    }
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    ae_status st = h ? AE_OK : AE_ERR_NOMEM;
    for (size_t i = 0; st == AE_OK && i < n; i++) {
        int bf = t->type == AE_GGML_BF16;
        h[i] = bf ? ae_f32_to_bf16(f[i]) : ae_f32_to_f16(f[i]);
        if (isfinite(f[i]) && !isfinite(bf ? ae_bf16_to_f32(h[i]) : ae_f16_to_f32(h[i])))
            st = ae_errorf(AE_ERR_ARG, "tensor '%s': element %zu = %g does not fit in %s; export "
                           "with --dtype %s", t->name, i, (double)f[i], bf ? "bfloat16" : "float16",
                           bf ? "f32" : "bf16 or f32");
    }
    if (st == AE_OK) st = ae_gguf_write_tensor(w->g, w->f, h, n * 2);
    free(h);
    ae_free_aligned(f);
    return st;
}

static uint32_t file_type(ae_dtype dt) { // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_BF16 32
    return dt == AE_DT_F32 ? 0 : dt == AE_DT_F16 ? 1 : 32;
}

static ae_status set_key(ae_gguf *g, const char *arch, const char *key, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return ae_gguf_set_u32(g, k, v);
}

static ae_status set_keyf(ae_gguf *g, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return ae_gguf_set_f32(g, k, v);
}

// The model metadata the converter writes for the architecture (and llama.cpp reads).
static ae_status set_model_keys(ae_gguf *g, const ae_config *c, const char *arch, const char *name,
                                ae_dtype dt) {
    int mla = !strcmp(arch, "deepseek2");
    AE_TRY(ae_gguf_set_str(g, "general.architecture", arch));
    AE_TRY(ae_gguf_set_str(g, "general.type", "model"));
    AE_TRY(ae_gguf_set_str(g, "general.name", name));
    AE_TRY(ae_gguf_set_u32(g, "general.alignment", AE_GGUF_ALIGNMENT));
    AE_TRY(set_key(g, arch, "block_count", (uint32_t)c->num_hidden_layers));
    AE_TRY(set_key(g, arch, "context_length", (uint32_t)c->max_position_embeddings));
    AE_TRY(set_key(g, arch, "embedding_length", (uint32_t)c->hidden_size));
    AE_TRY(set_key(g, arch, "feed_forward_length", (uint32_t)c->intermediate_size));
    AE_TRY(set_key(g, arch, "attention.head_count", (uint32_t)c->num_attention_heads));
    // MLA in llama.cpp runs as MQA over the latent: one K/V head of kv_lora_rank + rope dims.
    AE_TRY(set_key(g, arch, "attention.head_count_kv", mla ? 1u : (uint32_t)c->num_key_value_heads));
    AE_TRY(set_keyf(g, arch, "rope.freq_base", (float)c->rope_theta));
    AE_TRY(set_keyf(g, arch, "attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps));
    if (!mla) {
        AE_TRY(set_key(g, arch, "attention.key_length", (uint32_t)c->head_dim));
        AE_TRY(set_key(g, arch, "attention.value_length", (uint32_t)c->head_dim));
    }
    if (!strcmp(arch, "qwen3moe")) {
        AE_TRY(set_key(g, arch, "expert_count", (uint32_t)c->num_experts));
        AE_TRY(set_key(g, arch, "expert_used_count", (uint32_t)c->num_experts_per_tok));
        AE_TRY(set_key(g, arch, "expert_feed_forward_length", (uint32_t)c->moe_intermediate_size));
    }
    if (mla) {
        uint32_t R = (uint32_t)c->kv_lora_rank, dr = (uint32_t)c->qk_rope_head_dim;
        int lead = c->arch == AE_ARCH_QWEN3_MOE ? ae_export_moe_dense_lead(c, NULL) : c->num_hidden_layers;
        if (lead < 0) return ae_errorf(AE_ERR_UNSUPPORTED, "gguf export: a dense layer follows a MoE layer");
        int moe = lead < c->num_hidden_layers;
        AE_TRY(set_key(g, arch, "leading_dense_block_count", (uint32_t)lead));
        AE_TRY(set_key(g, arch, "vocab_size", (uint32_t)c->vocab_size));
        AE_TRY(set_key(g, arch, "attention.q_lora_rank", (uint32_t)c->q_lora_rank));
        AE_TRY(set_key(g, arch, "attention.kv_lora_rank", R));
        AE_TRY(set_key(g, arch, "attention.key_length", R + dr));
        AE_TRY(set_key(g, arch, "attention.value_length", R));
        AE_TRY(set_key(g, arch, "attention.key_length_mla", (uint32_t)(c->qk_nope_head_dim + c->qk_rope_head_dim)));
        AE_TRY(set_key(g, arch, "attention.value_length_mla", (uint32_t)c->v_head_dim));
        if (moe) {
            // softmax over all experts, top k, renormalised when norm_topk_prob (Qwen3-MoE's
            // router); one all-zero shared expert (deepseek2 requires its tensors)
            AE_TRY(set_key(g, arch, "expert_count", (uint32_t)c->num_experts));
            AE_TRY(set_key(g, arch, "expert_used_count", (uint32_t)c->num_experts_per_tok));
            AE_TRY(set_key(g, arch, "expert_feed_forward_length", (uint32_t)c->moe_intermediate_size));
            AE_TRY(set_key(g, arch, "expert_shared_count", 1));
            AE_TRY(set_keyf(g, arch, "expert_weights_scale", 1.0f));
            char k[128];
            snprintf(k, sizeof k, "%s.expert_weights_norm", arch);
            AE_TRY(ae_gguf_set_bool(g, k, c->norm_topk_prob != 0));
            AE_TRY(set_key(g, arch, "expert_gating_func", 1)); // LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX
        } else {
            // Read unconditionally by llama.cpp's deepseek2 loader; no MoE layer uses them.
            AE_TRY(set_key(g, arch, "expert_feed_forward_length", (uint32_t)c->intermediate_size));
            AE_TRY(set_key(g, arch, "expert_shared_count", 0));
        }
        AE_TRY(set_key(g, arch, "rope.dimension_count", dr));
    }
    AE_TRY(ae_gguf_set_u32(g, "general.file_type", file_type(dt)));
    return ae_gguf_set_u32(g, "general.quantization_version", 2);
}

// "name" for general.name: the folder's last component.
static void folder_name(const char *dir, char *out, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, n, "%.*s", (int)(len - start), dir + start);
}

ae_status ae_export_gguf(const char *model_dir, const char *out_file, const ae_export_opts *o,
                         ae_export_report *rep) {
    ae_export_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (o->dtype != AE_DT_BF16 && o->dtype != AE_DT_F16 && o->dtype != AE_DT_F32)
        return ae_errorf(AE_ERR_ARG, "export: dtype %s is not one of bf16, f16, f32",
                         ae_dtype_name(o->dtype));
    AE_TRY(ae_path_check_output("--out", out_file, "--model", model_dir));
    if (ae_path_is_dir(out_file))
        return ae_errorf(AE_ERR_ARG, "output path '%s' is a folder; --format gguf writes one file", out_file);
    if (ae_path_exists(out_file) && !o->force)
        return ae_errorf(AE_ERR_ARG, "output file '%s' already exists (use --force to replace it)", out_file);
    ae_config cfg;
    AE_TRY(ae_config_load(model_dir, &cfg));
    const char *arch = NULL;
    ae_status st = ae_export_gguf_plan(&cfg, model_dir, &arch);
    ae_config_free(&cfg);
    AE_TRY(st);
    rep->architecture = arch;
    ae_gguf *g = NULL;
    ae_model *m = NULL;
    AE_TRY(ae_gguf_init(&g));
    ae_st_set *src = NULL;
    st = ae_model_load_shapes(model_dir, &m);
    if (st == AE_OK) st = ae_st_open_dir(model_dir, &src);
    char name[256];
    folder_name(model_dir, name, sizeof name);
    ae_ggml_type mat = o->dtype == AE_DT_F32 ? AE_GGML_F32 : o->dtype == AE_DT_F16 ? AE_GGML_F16 : AE_GGML_BF16;
    if (st == AE_OK) st = set_model_keys(g, &m->cfg, arch, name, o->dtype);
    if (st == AE_OK) st = ae_gguf_write_vocab(g, model_dir, m->cfg.vocab_size);
    if (st == AE_OK) st = walk(m, mat, plan_tensor, g);
    ae_atomic_file f;
    int open = 0;
    if (st == AE_OK) st = ae_atomic_open(&f, out_file);
    open = st == AE_OK;
    if (st == AE_OK) st = ae_gguf_write_header(g, &f);
    writer w = {m, src, g, &f};
    if (st == AE_OK) st = walk(m, mat, write_tensor, &w);
    if (st == AE_OK) st = ae_gguf_check_complete(g);
    if (st == AE_OK) st = ae_atomic_commit(&f);
    else if (open) ae_atomic_abort(&f);
    if (st == AE_OK) {
        rep->n_shards = 1;
        rep->n_tensors = ae_gguf_n_tensors(g);
        rep->total_bytes = ae_gguf_data_bytes(g);
    }
    ae_gguf_free(g);
    ae_st_close(src);
    ae_model_free(m);
    return st;
}
