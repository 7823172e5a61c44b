// Hopper warpgroup matrix-multiply (wgmma.mma_async) primitives shared by the sm_90a kernels
// (attention kernel F: cuda_attention_wgmma.cu, and any later wgmma kernel). Device code only,
// and only where AE_WGMMA_DEVICE is defined (an sm_90a compilation pass: __CUDA_ARCH_FEAT_SM90_ALL);
// elsewhere the kernels that use them compile to empty bodies (see wgmma_loaded there).
//
// Conventions (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
// - Operands in shared memory are described by a 64-bit matrix descriptor (wg_desc) in the
//   128-byte swizzle mode: rows of 128 bytes (64 bf16), 16-byte chunk c of row r stored at chunk
//   position c XOR (r mod 8), eight rows forming a 1024-byte atom (1024-byte aligned).
// - Accumulator of m64nNk16 (fp32) for thread (warp v of the warpgroup, lane l; g = l/4,
//   c = 2·(l mod 4)): d[4n + e] is row 16v + g + 8·(e >> 1), column 8n + c + (e & 1).
// - A from registers (bf16x2 pairs) for k-step i: {d[8i], d[8i+1]}, {d[8i+2], d[8i+3]},
//   {d[8i+4], d[8i+5]}, {d[8i+6], d[8i+7]} of an accumulator of the same rows.
// - Wrappers: m64n128k16 (64 accumulator registers) and m64n64k16 (32: the _n64 forms), each
//   with A and B from shared memory (ss, both K-major) or A from registers and B N-major
//   (rs_nmajor: B stored [k][n], n contiguous, e.g. V as [key][d]); m64n64k16 also with A from
//   shared memory and B N-major (ss_nmajor_n64); both with A and B from shared memory, both
//   stored [k][·] (ss_mnmajor: A M-major, B N-major).
#ifndef AE_BACKEND_CUDA_WGMMA_H
#define AE_BACKEND_CUDA_WGMMA_H

#include <stdint.h>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AE_WGMMA_DEVICE 1
#endif

#ifdef AE_WGMMA_DEVICE
// ---- wgmma wrappers (sm_90a) --------------------------------------------------------------------

// Matrix descriptor of a 128-byte-swizzled operand at shared address `addr` (16-byte aligned):
// leading / stride byte offsets (LBO, SBO) in bytes; the layouts are described by the kernels.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFFu) >> 4) << 32) | (1ull << 62); // 1: 128-byte swizzle
}

#define WG_ACC64(d)                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),           \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),   \
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),             \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),             \
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),             \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),             \
        "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),             \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),             \
        "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),             \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),             \
        "+f"(d[62]), "+f"(d[63])
#define WG_D64                                                                                    \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
    "%56, %57, %58, %59, %60, %61, %62, %63}"

// d (64 x 128) = A·B (+ d when accumulate); A, B from shared memory, both K-major.
__device__ __forceinline__ void wg_mma_ss(float (&d)[64], uint64_t da, uint64_t db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WG_ACC64(d)
                 : "l"(da), "l"(db), "r"(accumulate));
}
// d (64 x 128) += A·B; A (64 x 16) from registers (bf16x2), B from shared memory, N-major.
__device__ __forceinline__ void wg_mma_rs_nmajor(float (&d)[64], const uint32_t (&a)[4],
                                                 uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : WG_ACC64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
#define WG_ACC32(d)                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),           \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),   \
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),             \
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),             \
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define WG_D32                                                                                    \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"

// d (64 x 64) = A·B (+ d when accumulate); A, B from shared memory, both K-major.
__device__ __forceinline__ void wg_mma_ss_n64(float (&d)[32], uint64_t da, uint64_t db,
                                              int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : WG_ACC32(d)
                 : "l"(da), "l"(db), "r"(accumulate));
}
// d (64 x 64) += A·B; A (64 x 16) from registers (bf16x2), B from shared memory, N-major.
__device__ __forceinline__ void wg_mma_rs_nmajor_n64(float (&d)[32], const uint32_t (&a)[4],
                                                     uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : WG_ACC32(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}
// d (64 x 64) = A·B (+ d when accumulate); A from shared memory K-major, B from shared memory
// N-major (stored [k][n], e.g. keys as [key][d] when the product runs over keys).
__device__ __forceinline__ void wg_mma_ss_nmajor_n64(float (&d)[32], uint64_t da, uint64_t db,
                                                     int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32
                 ", %32, %33, p, 1, 1, 0, 1;\n}\n"
                 : WG_ACC32(d)
                 : "l"(da), "l"(db), "r"(accumulate));
}
// The same two shapes with A from shared memory M-major (stored [k][m], m contiguous: transposed,
// described as an N-major B is) and B N-major.
// d += A·B.
__device__ __forceinline__ void wg_mma_ss_mnmajor(float (&d)[64], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_D64
                 ", %64, %65, p, 1, 1, 1, 1;\n}\n"
                 : WG_ACC64(d)
                 : "l"(da), "l"(db), "r"(1));
}
__device__ __forceinline__ void wg_mma_ss_mnmajor_n64(float (&d)[32], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32
                 ", %32, %33, p, 1, 1, 1, 1;\n}\n"
                 : WG_ACC32(d)
                 : "l"(da), "l"(db), "r"(1));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most N of this warpgroup's committed wgmma groups are pending.
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Tiles 0 .. n − 1 (n >= 1: tile 0 is always run) with two register buffers that alternate, as
// the overlapped kernels keep a tile's operand while the next tile's is made (an index into the
// pair would put both in local memory): step(t, a, b) for every tile but the last reads buffer a
// (tile t's) and fills b (tile t + 1's), then the roles swap; last(n − 1, its buffer) ends.
template <typename Buf, typename Step, typename Last>
__device__ __forceinline__ void wg_pingpong(int n, Buf &a, Buf &b, Step &&step, Last &&last) {
    for (int t = 0;;) {
        if (t + 1 >= n) {
            last(t, a);
            break;
        }
        step(t, a, b);
        t++;
        if (t + 1 >= n) {
            last(t, b);
            break;
        }
        step(t, b, a);
        t++;
    }
}
// Keeps the compiler from moving reads or writes of accumulator registers across a wgmma
// issue / wait (it does not know they are written asynchronously).
template <int N> __device__ __forceinline__ void wg_reg_fence(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// Marks an accumulator as defined without an instruction, for one whose first wgmma has scale-d
// 0 (D = A·B, the old values unread): zeroing it would cost a move per register.
template <int N> __device__ __forceinline__ void wg_acc_undef(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "=f"(d[i]));
}
// Byte offset of 16-byte chunk `chunk` (columns 8·chunk .. + 7) of row r in a 128-byte-swizzled
// tile of `rows` rows (a multiple of 8): column blocks of 64 bf16 (rows · 128 bytes each), row r
// of a block at r·128, its chunk c at chunk position c XOR (r mod 8).
__device__ __forceinline__ uint32_t wg_swz_off(int r, int chunk, int rows) {
    return (uint32_t)((chunk >> 3) * rows * 128 + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}
// Orders the generic-proxy writes (cp.async) to shared memory before the tensor cores read it.
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Named barriers (ids 1 .. 15; 0 is __syncthreads): bar.sync waits until `count` threads arrived
// (its own warps included), bar.arrive adds the calling warp's threads without waiting.
__device__ __forceinline__ void nbar_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void nbar_arrive(int id, int count) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}


// ---- mbarriers, TMA and register reallocation (warp-specialised kernels, sm_90a) -------------
// A pipeline stage's "full" / "empty" barriers are 64-bit mbarriers in shared memory (8-byte
// aligned), addressed by their shared-window address. A barrier's phases complete in turn; a
// waiter names the parity of the phase it waits for (a fresh barrier counts its phase "before
// 0", parity 1, as complete: a producer's first wait on "empty" passes at once).

// Initialises the barrier at `bar` for `count` arrivals per phase (one thread, before any use;
// then fence_mbar_init and a block barrier).
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the other threads and to the async proxy (TMA).
__device__ __forceinline__ void fence_mbar_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival (release: this thread's earlier reads and writes happen before the phase ends).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// mbar_arrive where `pred` holds, predicated inside the asm: a C branch on a lane test would
// look divergent to ptxas and serialise later wgmma (C7518).
__device__ __forceinline__ void mbar_arrive_if(uint32_t bar, int pred) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n"
                 "@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(bar),
                 "r"(pred)
                 : "memory");
}
// One arrival that also expects `bytes` more bytes of asynchronous copies (TMA complete_tx)
// before the phase may end.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                 : "memory");
}
// Waits until the phase of parity `parity` of the barrier has completed (acquire). The retry
// loop stays inside the asm (labels local to its braces): a C loop on the result would look
// divergent to ptxas, which then serialises the wgmma that follow (C7518).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile("{\n.reg .pred p;\nAE_MBAR_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 "@!p bra AE_MBAR_WAIT;\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
// One arrival on the barrier once every cp.async this thread issued so far has landed; the
// barrier's count must include it (.noinc: the pending count is not raised for it).
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// TMA: the box at coordinates (c0: innermost, c1) of the 2D tensor map `tmap` (a __grid_constant__
// kernel parameter's address) into shared memory at `dst` (aligned as its swizzle needs: 1024 for
// 128-byte swizzle); the bytes are counted on the barrier `bar` (complete_tx).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void *tmap, int c0, int c1,
                                            uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
                 "l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
}
// The same for a 3D tensor map, coordinates (c0: innermost, c1, c2).
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void *tmap, int c0, int c1, int c2,
                                            uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
                 "l"((uint64_t)tmap), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
}
// Bulk copies (cp.async.bulk, no tensor map): `bytes` (a multiple of 16; addresses 16-byte
// aligned) from global memory into shared memory at dst, counted on the barrier `bar`.
__device__ __forceinline__ void bulk_load(uint32_t dst, const void *src, uint32_t bytes,
                                          uint32_t bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"((uint64_t)src), "r"(bytes), "r"(bar)
                 : "memory");
}
// From shared memory at src to global memory at dst, as one bulk group of the calling thread,
// where `pred` holds (predicated inside the asm, as mbar_arrive_if). The shared bytes must have
// been written before it and made visible to the async proxy (fence_proxy_async).
__device__ __forceinline__ void bulk_store_if(void *dst, uint32_t src, uint32_t bytes, int pred) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %3, 0;\n"
                 "@p cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n"
                 "@p cp.async.bulk.commit_group;\n}\n" ::"l"((uint64_t)dst),
                 "r"(src), "r"(bytes), "r"(pred)
                 : "memory");
}
// Where `pred` holds: waits until the calling thread's bulk stores have read their shared
// memory (read: it may be written again), or (bulk_wait_if) until they are complete.
__device__ __forceinline__ void bulk_wait_read_if(int pred) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %0, 0;\n"
                 "@p cp.async.bulk.wait_group.read 0;\n}\n" ::"r"(pred)
                 : "memory");
}
__device__ __forceinline__ void bulk_wait_if(int pred) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %0, 0;\n"
                 "@p cp.async.bulk.wait_group 0;\n}\n" ::"r"(pred)
                 : "memory");
}
// Fetches a tensor map into the TMA unit's cache ahead of its first use.
__device__ __forceinline__ void tma_prefetch_map(const void *tmap) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"((uint64_t)tmap) : "memory");
}
// Warpgroup-wide register reallocation (every thread of the warpgroup, same N, a multiple of 8
// in 24 .. 256): dec gives registers back to the block's pool, inc waits until it can take them.
template <int N> __device__ __forceinline__ void wg_setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> __device__ __forceinline__ void wg_setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

#endif // AE_WGMMA_DEVICE

#ifdef __CUDACC__
// Whether the code loaded for this GPU of a kernel whose body is sm_90a-only is that body: it
// holds at least `min_regs` registers (wgmma accumulators), while the empty stand-in compiled
// for other targets (sm_80 code or PTX, plain sm_90 without the "a" features) uses a handful.
static inline int wg_kernel_loaded(const void *kernel, int min_regs = 128) {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return fa.numRegs >= min_regs;
}
#endif

#endif
