// attnedit inspect MODEL [--json]: architecture, parameter count and KV-cache size, from
// config.json alone (weights are not read, so it works on config-only folders of big models).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "io/config.h"
#include "model/model.h"

static const int64_t k_ctx[] = {4096, 32768, 131072};

static void print_bytes(const char *label, int64_t b) {
    printf("  %-22s %14lld bytes  (%.2f MiB)", label, (long long)b, b / 1048576.0);
}

// KV bytes of the same model with plain full GQA attention on every layer (the teacher's
// layout): the baseline a student's savings are quoted against.
static int64_t kv_bytes_baseline(const ae_config *c, int64_t ctx) {
    return (int64_t)c->num_hidden_layers * 2 * 2 * c->num_key_value_heads * c->head_dim * ctx;
}

static double kv_saving_pct(const ae_config *c, int64_t ctx) {
    return 100.0 * (double)(ae_config_kv_bytes(c, ctx) - kv_bytes_baseline(c, ctx)) /
           (double)kv_bytes_baseline(c, ctx);
}

// "mla x4, gqa x0" style summary plus the target's fields.
static void print_attention(const ae_config *c) {
    int n[3] = {0, 0, 0}, sliding = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        n[c->layer_attn[l]]++;
        sliding += c->layer_attn[l] != AE_ATTN_MLA && c->layer_types[l] == AE_LAYER_SLIDING;
    }
    printf("attention           %s", c->target == AE_ATTN_GQA ? "GQA (teacher)" : ae_attn_kind_name(c->target));
    if (c->target != AE_ATTN_GQA)
        printf(" on %d of %d layers", n[c->target], c->num_hidden_layers);
    putchar('\n');
    if (c->target == AE_ATTN_MLA)
        printf("  mla               kv_lora_rank %d, qk_rope %d, qk_nope %d, v_head %d, q_lora_rank %d%s\n",
               c->kv_lora_rank, c->qk_rope_head_dim, c->qk_nope_head_dim, c->v_head_dim,
               c->q_lora_rank,
               c->kv_lora_rank + c->qk_rope_head_dim == 576 ? "" : " (cache size not 512+64)");
    if (sliding || c->target == AE_ATTN_GATESWA) {
        printf("  layer types       ");
        for (int l = 0; l < c->num_hidden_layers; l++)
            putchar(c->layer_attn[l] == AE_ATTN_MLA ? 'M' : c->layer_types[l] == AE_LAYER_SLIDING ? 's' : 'F');
        printf("  (F full, s sliding window %d)\n", c->sliding_window);
    }
    if (c->target == AE_ATTN_GATESWA)
        printf("  gate              %s%s\n", c->attn_gate == 1 ? "elementwise" : c->attn_gate == 2 ? "one per head" : "none",
               c->attn_sinks ? ", attention sinks" : "");
}

static int print_text(const ae_config *c) {
    printf("architecture        %s", c->architecture);
    if (strcmp(c->architecture, c->base_architecture) != 0)
        printf(" (converted from %s)", c->base_architecture);
    putchar('\n');
    printf("parameters          %lld (%.2f M)\n", (long long)ae_config_param_count(c),
           ae_config_param_count(c) / 1e6);
    printf("layers              %d\n", c->num_hidden_layers);
    printf("hidden size         %d\n", c->hidden_size);
    printf("attention heads     %d query, %d key/value, head_dim %d\n", c->num_attention_heads,
           c->num_key_value_heads, c->head_dim);
    if (c->arch == AE_ARCH_QWEN3_MOE)
        printf("experts             %d (top-%d, expert width %d%s)\n", c->num_experts,
               c->num_experts_per_tok, c->moe_intermediate_size,
               c->norm_topk_prob ? ", renormalised" : "");
    else
        printf("mlp width           %d\n", c->intermediate_size);
    printf("vocabulary          %d%s\n", c->vocab_size, c->tie_word_embeddings ? " (tied head)" : "");
    printf("rope theta          %g\n", c->rope_theta);
    printf("max positions       %d\n", c->max_position_embeddings);
    print_attention(c);
    int64_t per_tok = ae_config_kv_bytes(c, 4096) / 4096;
    int student = c->target != AE_ATTN_GQA;
    printf("kv cache (bf16)     %lld bytes/token (%.2f KiB)", (long long)per_tok, per_tok / 1024.0);
    if (student) printf("  %+.1f%% vs full GQA", kv_saving_pct(c, 4096));
    putchar('\n');
    for (size_t i = 0; i < 3; i++) {
        char label[64];
        snprintf(label, sizeof label, "one sequence @ %lldK", (long long)(k_ctx[i] / 1024));
        print_bytes(label, ae_config_kv_bytes(c, k_ctx[i]));
        if (student) printf("  %+.1f%% vs full GQA", kv_saving_pct(c, k_ctx[i]));
        putchar('\n');
    }
    double w = 2.0 * (double)ae_config_param_count(c);
    printf("gpu memory (bf16)   weights %.2f GiB; a prefill of one sequence needs, with its KV "
           "cache and workspace:\n", w / 1073741824.0);
    for (size_t i = 0; i < 2; i++)
        printf("  %-22s %8.2f GiB\n", i ? "@ 32K" : "@ 4K",
               (w + (double)ae_config_kv_bytes(c, k_ctx[i]) +
                ae_forward_workspace_bytes(c, k_ctx[i], 2)) / 1073741824.0);
    return 0;
}

static int print_json(const ae_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "architecture", c->architecture);
    cJSON_AddStringToObject(o, "base_architecture", c->base_architecture);
    cJSON_AddNumberToObject(o, "params", (double)ae_config_param_count(c));
    cJSON_AddNumberToObject(o, "layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->num_key_value_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    if (c->arch == AE_ARCH_QWEN3_MOE) {
        cJSON_AddNumberToObject(o, "num_experts", c->num_experts);
        cJSON_AddNumberToObject(o, "num_experts_per_tok", c->num_experts_per_tok);
    }
    cJSON_AddStringToObject(o, "attention_target", ae_attn_kind_name(c->target));
    cJSON *la = cJSON_AddArrayToObject(o, "layer_attention");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const char *k = ae_attn_kind_name(c->layer_attn[l]);
        int slide = c->layer_attn[l] != AE_ATTN_MLA && c->layer_types[l] == AE_LAYER_SLIDING;
        char buf[32];
        snprintf(buf, sizeof buf, "%s%s", k, slide ? "/sliding" : "");
        cJSON_AddItemToArray(la, cJSON_CreateString(buf));
    }
    cJSON_AddNumberToObject(o, "kv_bytes_per_token", (double)(ae_config_kv_bytes(c, 4096) / 4096));
    cJSON *save = cJSON_AddObjectToObject(o, "kv_change_vs_full_gqa_pct");
    for (size_t i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)k_ctx[i]);
        cJSON_AddNumberToObject(save, key, kv_saving_pct(c, k_ctx[i]));
    }
    cJSON_AddNumberToObject(o, "weight_bytes_bf16", 2.0 * (double)ae_config_param_count(c));
    cJSON *run = cJSON_AddObjectToObject(o, "gpu_bytes_one_sequence_bf16");
    for (size_t i = 0; i < 2; i++) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)k_ctx[i]);
        cJSON_AddNumberToObject(run, key, 2.0 * (double)ae_config_param_count(c) +
                                              (double)ae_config_kv_bytes(c, k_ctx[i]) +
                                              ae_forward_workspace_bytes(c, k_ctx[i], 2));
    }
    cJSON *kv = cJSON_AddObjectToObject(o, "kv_bytes");
    for (size_t i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)k_ctx[i]);
        cJSON_AddNumberToObject(kv, key, (double)ae_config_kv_bytes(c, k_ctx[i]));
    }
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    free(s);
    cJSON_Delete(o);
    return 0;
}

int ae_cmd_inspect(int argc, char **argv) {
    ae_args a = {argc, argv, 0, "inspect"};
    const char *model = NULL;
    int json = 0;
    while (a.i < a.argc) {
        if (ae_args_flag(&a, "--json")) json = 1;
        else if (ae_args_flag(&a, "--help")) {
            puts("usage: attnedit inspect MODEL [--json]\n"
                 "  Prints architecture, parameter count, bf16 KV-cache bytes per token and for\n"
                 "  one sequence of 4K/32K/128K tokens, and the GPU memory (bf16 weights + KV +\n"
                 "  workspace) a prefill of one sequence needs. Needs only MODEL/config.json.");
            return 0;
        } else if (!model && a.argv[a.i][0] != '-') model = a.argv[a.i++];
        else return ae_cli_fail((ae_args_unknown(&a), "inspect"));
    }
    if (!model) {
        fprintf(stderr, "attnedit inspect: missing MODEL folder (usage: attnedit inspect MODEL [--json])\n");
        return 2;
    }
    if (ae_cli_check_model("inspect", model)) return 1;
    ae_config cfg;
    if (ae_config_load(model, &cfg) != AE_OK) return ae_cli_fail("inspect");
    int rc = json ? print_json(&cfg) : print_text(&cfg);
    ae_config_free(&cfg);
    return rc;
}
