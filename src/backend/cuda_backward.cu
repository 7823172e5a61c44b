// Backward ops on the GPU other than attention (backend/ops.h, "backward"; the fp32 references
// are cpu_norm.c, cpu_rope.c, cpu_elementwise.c): rmsnorm_bwd, rope_bwd, gate_mul_bwd,
// silu_mul_bwd. Every tensor argument is F32 or BF16, each independently (the dtype is a
// runtime flag read through ld_any / st_any: these ops are memory-bound, a warp-uniform branch
// costs nothing next to the loads, and one kernel serves every combination). Arithmetic is fp32.
//
// Determinism: no float atomics anywhere. rmsnorm_bwd's weight gradient (a sum over rows) is
// formed in two fixed-order steps: k_rms_dw_partial sums chunks of kRowsPerChunk rows per column
// into a scratch buffer, k_rms_dw_reduce adds the chunk sums in chunk order and adds the total
// to dw. The chunking depends only on M, so the same call gives bit-identical results on every
// run (and every GPU of one model).
//
// Aliasing (contract): gate_mul_bwd and silu_mul_bwd may be given an output equal to dy; each
// element's inputs are read by the thread that then writes its outputs, so this is safe.
#include <math.h>

#include "backend/cuda_internal.h"
#include "backend/cuda_rope.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

int is_bf(ae_ptr p) { return p.dtype == AE_DT_BF16; }

unsigned grid_for(const ae_backend *be, size_t work, unsigned threads) {
    size_t b = cuda_blocks(work, threads);
    size_t cap = (size_t)(cu(be)->sm_count > 0 ? cu(be)->sm_count : 1) * 32;
    return (unsigned)(b < cap ? b : cap);
}

// ---- rmsnorm_bwd -----------------------------------------------------------------------------
// With r = 1 / sqrt(mean(x²) + eps) and g = dy ⊙ w:
//   dx += r · g − r³ / D · x · Σ_d g_d x_d          (k_rms_dx: a warp per row; r kept for dw)
//   dw += Σ_rows dy ⊙ x · r                          (k_rms_dw_partial, k_rms_dw_reduce)

__global__ void __launch_bounds__(kThreads)
k_rms_dx(void *dx, int dx_bf, const void *dy, int dy_bf, const void *x, int x_bf, const void *w,
         int w_bf, float *rbuf, int M, int D, float eps) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5);
    if (row >= M) return;
    const size_t o = (size_t)row * D;
    float ss = 0.0f, gx = 0.0f;
    for (int d = lane; d < D; d += 32) {
        const float xv = ld_any(x, x_bf, o + d);
        ss += xv * xv;
        gx += ld_any(dy, dy_bf, o + d) * ld_any(w, w_bf, d) * xv;
    }
    ss = warp_sum(ss);
    gx = warp_sum(gx);
    const double rd = 1.0 / sqrt((double)ss / D + (double)eps);
    const float r = (float)rd, c = (float)(rd * rd * rd * (double)gx / D);
    if (lane == 0 && rbuf) rbuf[row] = r;
    for (int d = lane; d < D; d += 32) {
        const float g = ld_any(dy, dy_bf, o + d) * ld_any(w, w_bf, d);
        const float v = ld_any(dx, dx_bf, o + d) + (r * g - c * ld_any(x, x_bf, o + d));
        st_any(dx, dx_bf, o + d, v);
    }
}

// partial[chunk·D + d] = Σ_{rows i of chunk, in order} dy[i,d] · x[i,d] · r[i]
__global__ void __launch_bounds__(kThreads)
k_rms_dw_partial(float *partial, const void *dy, int dy_bf, const void *x, int x_bf,
                 const float *rbuf, int M, int D, int rows_per_chunk) {
    const int d = blockIdx.x * kThreads + threadIdx.x, chunk = blockIdx.y;
    if (d >= D) return;
    const int i0 = chunk * rows_per_chunk;
    const int i1 = i0 + rows_per_chunk < M ? i0 + rows_per_chunk : M;
    float s = 0.0f;
    for (int i = i0; i < i1; i++) {
        const size_t o = (size_t)i * D + d;
        s += ld_any(dy, dy_bf, o) * ld_any(x, x_bf, o) * rbuf[i];
    }
    partial[(size_t)chunk * D + d] = s;
}

// dw[d] += Σ_chunks partial[chunk·D + d], chunks in order
__global__ void __launch_bounds__(kThreads)
k_rms_dw_reduce(void *dw, int dw_bf, const float *partial, int D, int chunks) {
    const int d = blockIdx.x * kThreads + threadIdx.x;
    if (d >= D) return;
    float s = 0.0f;
    for (int c = 0; c < chunks; c++) s += partial[(size_t)c * D + d];
    st_any(dw, dw_bf, d, ld_any(dw, dw_bf, d) + s);
}

// ---- rope_bwd --------------------------------------------------------------------------------
// The rotation by −angle (the transpose of rope's rotation), with the angle computed exactly as
// cuda_rope.cu computes it (host inv_freq table, fp32 product, cos/sin in double).

__global__ void __launch_bounds__(kThreads)
k_rope_bwd(void *x, int x_bf, const int32_t *pos, int H, int stride, int rd, double theta,
           int interleaved, RopeFreq tab) {
    extern __shared__ float2 cs[];
    const int half = rd / 2, nt = blockDim.x * blockDim.y;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const float p = (float)pos[blockIdx.x];
    for (int i = tid; i < half; i += nt) {
        const float2 a = rope_cs(tab, p, i, rd, theta);
        cs[i] = make_float2(a.x, -a.y); // sin of −angle
    }
    __syncthreads();
    const size_t xt = (size_t)blockIdx.x * H * stride;
    for (int h = threadIdx.y; h < H; h += blockDim.y) {
        const size_t v = xt + (size_t)h * stride;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
            const float a = ld_any(x, x_bf, v + ia), b = ld_any(x, x_bf, v + ib);
            const float c = cs[i].x, s = cs[i].y;
            st_any(x, x_bf, v + ia, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
            st_any(x, x_bf, v + ib, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
        }
    }
}

// ---- gate_mul_bwd ----------------------------------------------------------------------------

// Elementwise gate: dx = dy ⊙ σ(g); dg = dy ⊙ x ⊙ σ(g)(1 − σ(g)).   (n) each
__global__ void __launch_bounds__(kThreads)
k_gate_bwd_elem(void *dx, int dx_bf, void *dg, int dg_bf, const void *dy, int dy_bf,
                const void *x, int x_bf, const void *g, int g_bf, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        const float gy = ld_any(dy, dy_bf, i), xv = ld_any(x, x_bf, i);
        const float s = sigmoid(ld_any(g, g_bf, i));
        st_any(dx, dx_bf, i, gy * s);
        st_any(dg, dg_bf, i, gy * xv * s * (1.0f - s));
    }
}

// Per-head gate, a warp per row of hd values: dx = dy · σ(g_r); dg_r = σ'(g_r) · Σ_d dy x.
__global__ void __launch_bounds__(kThreads)
k_gate_bwd_head(void *dx, int dx_bf, void *dg, int dg_bf, const void *dy, int dy_bf,
                const void *x, int x_bf, const void *g, int g_bf, size_t rows, int hd) {
    const int lane = threadIdx.x & 31;
    const size_t warps = (size_t)gridDim.x * (kThreads / 32);
    for (size_t r = blockIdx.x * (size_t)(kThreads / 32) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        const float s = sigmoid(ld_any(g, g_bf, r));
        const size_t o = r * hd;
        float dot = 0.0f;
        for (int d = lane; d < hd; d += 32) {
            const float gy = ld_any(dy, dy_bf, o + d);
            dot += gy * ld_any(x, x_bf, o + d);
            st_any(dx, dx_bf, o + d, gy * s); // after this lane's read of dy[o + d]
        }
        dot = warp_sum(dot);
        if (lane == 0) st_any(dg, dg_bf, r, dot * s * (1.0f - s));
    }
}

// ---- silu_mul_bwd ----------------------------------------------------------------------------

// dg = dy ⊙ u ⊙ σ(g)(1 + g(1 − σ(g)));  du = dy ⊙ g σ(g)
__global__ void __launch_bounds__(kThreads)
k_silu_bwd(void *dg, int dg_bf, void *du, int du_bf, const void *dy, int dy_bf, const void *g,
           int g_bf, const void *u, int u_bf, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += stride) {
        const float gi = ld_any(g, g_bf, i), ui = ld_any(u, u_bf, i), gy = ld_any(dy, dy_bf, i);
        const float s = sigmoid(gi);
        st_any(dg, dg_bf, i, gy * ui * s * (1.0f + gi * (1.0f - s)));
        st_any(du, du_bf, i, gy * gi * s);
    }
}

} // namespace

// Rows summed per chunk of the dw reduction: at least 32, and at most 1024 chunks.
static int rms_rows_per_chunk(int M) {
    int r = (M + 1023) / 1024;
    return r < 32 ? 32 : r;
}

void ae_cuda_rmsnorm_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dw, ae_ptr dy, ae_ptr x,
                         ae_ptr w, int M, int D, float eps) {
    if (cuda_failed(be)) return;
    const char *op = "rmsnorm_bwd";
    cuda_need(dx, AE_M_FLOAT, op, "dx");
    cuda_need(dw, AE_M_FLOAT, op, "dw");
    cuda_need(dy, AE_M_FLOAT, op, "dy");
    cuda_need(x, AE_M_FLOAT, op, "x");
    cuda_need(w, AE_M_FLOAT, op, "w");
    if (M <= 0 || D <= 0) return;
    cudaStream_t s = stream_of(be);
    const int want_dw = !ae_ptr_is_null(dw);
    const int rpc = rms_rows_per_chunk(M), chunks = (M + rpc - 1) / rpc;
    float *rbuf = NULL, *partial = NULL;
    if (want_dw) {
        rbuf = (float *)cuda_tmp_alloc(be, sizeof(float) * ((size_t)M + (size_t)chunks * D), op);
        if (!rbuf) return;
        partial = rbuf + M;
    }
    k_rms_dx<<<(unsigned)((M + kThreads / 32 - 1) / (kThreads / 32)), kThreads, 0, s>>>(
        dx.data, is_bf(dx), dy.data, is_bf(dy), x.data, is_bf(x), w.data, is_bf(w), rbuf, M, D,
        eps);
    cuda_check(be, cudaGetLastError(), op);
    if (want_dw) {
        dim3 grid((unsigned)((D + kThreads - 1) / kThreads), (unsigned)chunks);
        k_rms_dw_partial<<<grid, kThreads, 0, s>>>(partial, dy.data, is_bf(dy), x.data, is_bf(x),
                                                   rbuf, M, D, rpc);
        cuda_check(be, cudaGetLastError(), op);
        k_rms_dw_reduce<<<(unsigned)((D + kThreads - 1) / kThreads), kThreads, 0, s>>>(
            dw.data, is_bf(dw), partial, D, chunks);
        cuda_check(be, cudaGetLastError(), op);
        cuda_tmp_free(be, rbuf);
    }
}

void ae_cuda_rope_bwd(const ae_backend *be, ae_ptr dx, ae_ptr pos, int T, int H, int stride,
                      int rd, double theta, ae_rope_mode mode) {
    if (cuda_failed(be)) return;
    cuda_need(dx, AE_M_FLOAT, "rope_bwd", "dx");
    cuda_need(pos, AE_M_I32, "rope_bwd", "pos");
    const int half = rd / 2;
    if (T <= 0 || H <= 0 || half <= 0) return;
    const RopeFreq tab = rope_freq(theta, rd);
    const int bx = half < kThreads ? (half + 31) / 32 * 32 : kThreads;
    const int by = kThreads / bx < H ? kThreads / bx : H;
    dim3 block((unsigned)bx, (unsigned)(by > 0 ? by : 1));
    k_rope_bwd<<<(unsigned)T, block, (size_t)half * sizeof(float2), stream_of(be)>>>(
        dx.data, is_bf(dx), (const int32_t *)pos.data, H, stride, rd, theta,
        mode == AE_ROPE_INTERLEAVED, tab);
    cuda_check(be, cudaGetLastError(), "rope_bwd");
}

void ae_cuda_gate_mul_bwd(const ae_backend *be, ae_ptr dx, ae_ptr dg, ae_ptr dy, ae_ptr x,
                          ae_ptr g, int T, int H, int hd, int per_head) {
    if (cuda_failed(be)) return;
    const char *op = "gate_mul_bwd";
    cuda_need(dx, AE_M_FLOAT, op, "dx");
    cuda_need(dg, AE_M_FLOAT, op, "dg");
    cuda_need(dy, AE_M_FLOAT, op, "dy");
    cuda_need(x, AE_M_FLOAT, op, "x");
    cuda_need(g, AE_M_FLOAT, op, "g");
    if (T <= 0 || H <= 0 || hd <= 0) return;
    const size_t rows = (size_t)T * H;
    cudaStream_t s = stream_of(be);
    if (per_head)
        k_gate_bwd_head<<<grid_for(be, rows * 32, kThreads), kThreads, 0, s>>>(
            dx.data, is_bf(dx), dg.data, is_bf(dg), dy.data, is_bf(dy), x.data, is_bf(x), g.data,
            is_bf(g), rows, hd);
    else
        k_gate_bwd_elem<<<grid_for(be, rows * hd, kThreads), kThreads, 0, s>>>(
            dx.data, is_bf(dx), dg.data, is_bf(dg), dy.data, is_bf(dy), x.data, is_bf(x), g.data,
            is_bf(g), rows * hd);
    cuda_check(be, cudaGetLastError(), op);
}

void ae_cuda_silu_mul_bwd(const ae_backend *be, ae_ptr dg, ae_ptr du, ae_ptr dy, ae_ptr g,
                          ae_ptr u, size_t n) {
    if (cuda_failed(be)) return;
    const char *op = "silu_mul_bwd";
    cuda_need(dg, AE_M_FLOAT, op, "dg");
    cuda_need(du, AE_M_FLOAT, op, "du");
    cuda_need(dy, AE_M_FLOAT, op, "dy");
    cuda_need(g, AE_M_FLOAT, op, "g");
    cuda_need(u, AE_M_FLOAT, op, "u");
    if (n == 0) return;
    k_silu_bwd<<<grid_for(be, n, kThreads), kThreads, 0, stream_of(be)>>>(
        dg.data, is_bf(dg), du.data, is_bf(du), dy.data, is_bf(dy), g.data, is_bf(g), u.data,
        is_bf(u), n);
    cuda_check(be, cudaGetLastError(), op);
}
