// CPU reference backend: fp32, readable loops, OpenBLAS for matrix products, OpenMP across
// rows/heads. Accumulations that decide parity (norms, softmax) run in double. Every op is
// deterministic: for a fixed thread count, results are bit-identical run to run.
//
// One file per concern, forward and backward side by side:
//   cpu_matmul.c       matmul, matmul_bwd
//   cpu_norm.c         rmsnorm, rmsnorm_bwd
//   cpu_rope.c         rope, rope_bwd
//   cpu_attention.c    attention, attention_bwd (+ ae_attn_dense)
//   cpu_elementwise.c  gate_mul, silu_mul, add and their backwards
#include "backend/cpu_internal.h"

static const ae_backend k_cpu = {
    .name = "cpu",
    .matmul = ae_cpu_matmul,
    .rmsnorm = ae_cpu_rmsnorm,
    .rope = ae_cpu_rope,
    .attention = ae_cpu_attention,
    .gate_mul = ae_cpu_gate_mul,
    .silu_mul = ae_cpu_silu_mul,
    .add = ae_cpu_add,
    .matmul_bwd = ae_cpu_matmul_bwd,
    .rmsnorm_bwd = ae_cpu_rmsnorm_bwd,
    .rope_bwd = ae_cpu_rope_bwd,
    .attention_bwd = ae_cpu_attention_bwd,
    .gate_mul_bwd = ae_cpu_gate_mul_bwd,
    .silu_mul_bwd = ae_cpu_silu_mul_bwd,
};

const ae_backend *ae_backend_cpu(void) { return &k_cpu; }
