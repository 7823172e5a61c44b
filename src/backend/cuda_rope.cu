// Rotary position embedding on the GPU, in place on the first rd dims of each head vector.
//
// The angle of pair i at position p is computed exactly as cpu_rope.c (and transformers) does
// (cuda_rope.h), and the rotation is done in fp32 without FMA contraction, in the CPU's order:
// for F32 x the result matches the CPU bit for bit except where the host's cosf / sinf round
// differently (within 1 ulp).
//
// One block per token: its threads first fill a shared table of (cos, sin) for the rd/2 pairs,
// then rotate every head, threadIdx.x walking the pairs (coalesced) and threadIdx.y the heads.
#include <math.h>

#include "backend/cuda_internal.h"
#include "backend/cuda_rope.h"

namespace {

constexpr int kThreads = 256;

// x: (T, H, stride) rotated in place;  pos: (T)
template <typename T>
__global__ void __launch_bounds__(kThreads)
k_rope(T *x, const int32_t *pos, int H, int stride, int rd, double theta, int interleaved,
       RopeFreq tab) {
    extern __shared__ float2 cs[]; // (rd/2) (cos, sin) of this token's angles
    int half = rd / 2, nt = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
    float p = (float)pos[blockIdx.x];
    for (int i = tid; i < half; i += nt) cs[i] = rope_cs(tab, p, i, rd, theta);
    __syncthreads();
    T *xt = x + (size_t)blockIdx.x * H * stride;
    for (int h = threadIdx.y; h < H; h += blockDim.y) {
        T *v = xt + (size_t)h * stride;
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
            float a = ldf(v + ia), b = ldf(v + ib), c = cs[i].x, s = cs[i].y;
            stf(v + ia, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
            stf(v + ib, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
        }
    }
}

} // namespace

void ae_cuda_rope(const ae_backend *be, ae_ptr x, ae_ptr pos, int T, int H, int stride, int rd,
                  double theta, ae_rope_mode mode) {
    if (cuda_failed(be)) return;
    cuda_need(x, AE_M_FLOAT, "rope", "x");
    cuda_need(pos, AE_M_I32, "rope", "pos");
    int half = rd / 2;
    if (T <= 0 || H <= 0 || half <= 0) return;
    const RopeFreq tab = rope_freq(theta, rd);
    int bx = half < kThreads ? (half + 31) / 32 * 32 : kThreads;
    int by = kThreads / bx < H ? kThreads / bx : H;
    dim3 block((unsigned)bx, (unsigned)(by > 0 ? by : 1));
    size_t smem = (size_t)half * sizeof(float2);
    int il = mode == AE_ROPE_INTERLEAVED;
    AE_CUDA_FLOAT_DISPATCH(x.dtype, TX,
        k_rope<TX><<<(unsigned)T, block, smem, stream_of(be)>>>((TX *)x.data,
            (const int32_t *)pos.data, H, stride, rd, theta, il, tab));
    cuda_check(be, cudaGetLastError(), "rope");
}
