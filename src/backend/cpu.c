// CPU reference backend: fp32, readable loops, OpenBLAS for matrix products, OpenMP across
// rows/heads. Accumulations that decide parity (norms, softmax, losses) run in double. Every op
// is deterministic: for a fixed thread count, results are bit-identical run to run.
//
// One file per concern, forward and backward side by side:
//   cpu_memory.c       alloc/free, upload/download, row copies, fill, embedding gather
//   cpu_matmul.c       gemm, matmul_group, gate_up_silu
//   cpu_norm.c         rmsnorm, add_rmsnorm, rmsnorm_bwd
//   cpu_rope.c         rope, rope_bwd, qk_norm_rope
//   cpu_mla.c          mla_decode_prep (absorbed-MLA decode: latent norm, rope, query rows)
//   cpu_attention.c    attention, attention_bwd
//   cpu_elementwise.c  gate_mul, silu_mul, add and their backwards
//   cpu_moe.c          MoE routing and experts
//   cpu_moe_train.c    MoE training: slot plan, combine, router backward, grouped expert
//                      products and their input gradient
//   cpu_scores.c       nll, KL and argmax of logit rows
//   cpu_sample.c       sampling of logit rows (the reference rule, a sort per row)
//   cpu_paged.c        attention over a paged KV cache, scatter into page slots, gather
//   cpu_train.c        embedding gradient, training losses per row, softmax statistics and KD
//                      chunks, sum of squares, axpby, AdamW
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu_internal.h"

static void bad_dtype(ae_ptr p, const char *op, const char *want) {
    fprintf(stderr, "attnedit: internal error: cpu %s got a %s tensor, expected %s\n", op,
            ae_dtype_name(p.dtype), want);
    abort();
}

float *cpu_f(ae_ptr p, const char *op) {
    if (p.data && p.dtype != AE_DT_F32) bad_dtype(p, op, "F32");
    return (float *)p.data;
}

int32_t *cpu_i(ae_ptr p, const char *op) {
    if (p.data && p.dtype != AE_DT_I32) bad_dtype(p, op, "I32");
    return (int32_t *)p.data;
}

static const ae_backend k_cpu = {
    .name = "cpu",
    .device = "CPU (fp32 reference)",
    .host_memory = 1,
    .act_dtype = AE_DT_F32,
    .weight_dtype = AE_DT_F32,
    .alloc = ae_cpu_alloc,
    .free = ae_cpu_free,
    .upload = ae_cpu_upload,
    .download = ae_cpu_download,
    .sync = ae_cpu_sync,
    .copy_rows = ae_cpu_copy_rows,
    .copy_rows_rep = ae_cpu_copy_rows_rep,
    .sum_rows_rep = ae_cpu_sum_rows_rep,
    .fill = ae_cpu_fill,
    .fill_normal = ae_cpu_fill_normal,
    .gemm = ae_cpu_gemm,
    .matmul_group = ae_cpu_matmul_group,
    .gate_up_silu = ae_cpu_gate_up_silu,
    .rmsnorm = ae_cpu_rmsnorm,
    .add_rmsnorm = ae_cpu_add_rmsnorm,
    .rope = ae_cpu_rope,
    .qk_norm_rope = ae_cpu_qk_norm_rope,
    .mla_decode_prep = ae_cpu_mla_decode_prep,
    .mla_decode_absorb = ae_cpu_mla_decode_absorb,
    .mla_decode_attend = ae_cpu_mla_decode_attend,
    .attention = ae_cpu_attention,
    .gate_mul = ae_cpu_gate_mul,
    .silu_mul = ae_cpu_silu_mul,
    .add = ae_cpu_add,
    .embed = ae_cpu_embed,
    .moe_route = ae_cpu_moe_route,
    .moe_ffn = ae_cpu_moe_ffn,
    .attention_paged = ae_cpu_attention_paged,
    .paged_store = ae_cpu_paged_store,
    .paged_gather = ae_cpu_paged_gather,
    .nll_rows = ae_cpu_nll_rows,
    .kl_rows = ae_cpu_kl_rows,
    .argmax_rows = ae_cpu_argmax_rows,
    .sample_rows = ae_cpu_sample_rows,
    .rmsnorm_bwd = ae_cpu_rmsnorm_bwd,
    .rope_bwd = ae_cpu_rope_bwd,
    .attention_bwd = ae_cpu_attention_bwd,
    .gate_mul_bwd = ae_cpu_gate_mul_bwd,
    .silu_mul_bwd = ae_cpu_silu_mul_bwd,
    .moe_plan = ae_cpu_moe_plan,
    .moe_combine = ae_cpu_moe_combine,
    .moe_combine_bwd = ae_cpu_moe_combine_bwd,
    .moe_route_bwd = ae_cpu_moe_route_bwd,
    .expert_matmul = ae_cpu_expert_matmul,
    .expert_matmul_bwd = ae_cpu_expert_matmul_bwd,
    .embed_bwd = ae_cpu_embed_bwd,
    .mse_rows = ae_cpu_mse_rows,
    .cosine_rows = ae_cpu_cosine_rows,
    .softmax_stats = ae_cpu_softmax_stats,
    .kd_chunk = ae_cpu_kd_chunk,
    .sumsq = ae_cpu_sumsq,
    .axpby = ae_cpu_axpby,
    .adamw = ae_cpu_adamw,
    .adamw8 = ae_cpu_adamw8,
};

const ae_backend *ae_backend_cpu(void) { return &k_cpu; }
