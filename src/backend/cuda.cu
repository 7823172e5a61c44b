// CUDA backend: device selection, state, memory and error handling, and the op table.
//
// Memory is taken from the device's stream-ordered pool (cudaMallocAsync on the backend's one
// stream, pool kept across frees), so the per-call workspaces of the model code cost no device
// synchronisation. Uploads convert F32/F16/BF16 host data to the tensor's dtype on the device;
// downloads convert BF16 to F32 on the device. The first CUDA error is kept; later ops do
// nothing and the next sync or download returns it (backend/ops.h, "Errors").
#include <cuda_fp16.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_internal.h"
#include "backend/cuda_mla.h"
#include "backend/cuda_train.h"
#include "backend/mem_limit.h"
#include "core/mem.h"

// ---- errors ------------------------------------------------------------------------------------

int cuda_failed(const ae_backend *be) { return cu(be)->failed; }

// Inside a graph recording an error fails the recording (the work is then run op by op, where
// a real device error is kept as usual), not the backend.
static void keep_error(const ae_backend *be, const char *fmt, ...) {
    ae_cuda *c = cu(be);
    if (c->failed) return;
    char msg[sizeof c->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->rec) {
        cuda_graph_fail(be, msg);
        return;
    }
    c->failed = 1;
    memcpy(c->message, msg, sizeof msg);
}

void cuda_check(const ae_backend *be, cudaError_t e, const char *op) {
    if (e != cudaSuccess)
        keep_error(be, "%s: CUDA error in %s: %s (%s)", cu(be)->name, op, cudaGetErrorString(e),
                   cudaGetErrorName(e));
}

void cuda_check_blas(const ae_backend *be, int status, const char *op) {
    if (status != 0) keep_error(be, "%s: cuBLAS error %d in %s", cu(be)->name, status, op);
}

static ae_status kept_status(const ae_backend *be) {
    ae_cuda *c = cu(be);
    return c->failed ? ae_errorf(AE_ERR_DEVICE, "%s", c->message) : AE_OK;
}

// Host transfers and waits cannot be recorded: inside a recording they fail it (the caller then
// runs the work op by op).
static ae_status refuse_in_recording(const ae_backend *be, const char *what) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s inside a graph recording", what);
    cuda_graph_fail(be, msg);
    return ae_errorf(AE_ERR_DEVICE, "%s: %s", cu(be)->name, msg);
}

void cuda_need(ae_ptr p, int mask, const char *op, const char *arg) {
    if (!p.data) return;
    int m = p.dtype == AE_DT_F32 ? AE_M_F32 : p.dtype == AE_DT_BF16 ? AE_M_BF16
          : p.dtype == AE_DT_I32 ? AE_M_I32 : 0;
    if (m & mask) return;
    fprintf(stderr, "attnedit: internal error: cuda %s: argument %s has dtype %s\n", op, arg,
            ae_dtype_name(p.dtype));
    abort();
}

// ---- memory ------------------------------------------------------------------------------------

__global__ void k_fill_nan_bytes(uint32_t *p, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) p[i] = 0x7fc07fc0u; // NaN as F32 (0x7fc07fc0) and as each BF16 half (0x7fc0)
}

void *cuda_tmp_alloc(const ae_backend *be, size_t bytes, const char *op) {
    if (cuda_failed(be)) return NULL;
    if (cu(be)->rec) return cuda_graph_alloc(be, bytes ? bytes : 16);
    void *p = NULL;
    cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 16, stream_of(be));
    if (e != cudaSuccess) {
        cudaGetLastError();
        keep_error(be, "%s: out of device memory in %s (%.1f MiB)", cu(be)->name, op,
                   bytes / 1048576.0);
        return NULL;
    }
    return p;
}

void cuda_tmp_free(const ae_backend *be, void *p) {
    if (p && cu(be)->rec) cuda_graph_release(be, p);
    else if (p) cuda_check(be, cudaFreeAsync(p, stream_of(be)), "free");
}

// The bytes the device's pool has handed out (op workspaces included); 0 if it cannot be read.
static size_t pool_used(const ae_backend *be) {
    cudaMemPool_t pool;
    uint64_t used = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, cu(be)->device) != cudaSuccess ||
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return (size_t)used;
}

// 1 when ATTNEDIT_MEM_LIMIT refuses `bytes` more (message set). Frees queued on the stream may
// not have reached the pool's count yet: before refusing, the stream is drained and the count
// read again, so only a request that really goes over the limit is refused.
static int over_mem_limit(const ae_backend *be, size_t bytes) {
    size_t limit = cu(be)->mem_limit;
    if (!limit) return 0;
    size_t used = pool_used(be);
    if (bytes <= limit && used <= limit - bytes) return 0;
    cudaStreamSynchronize(stream_of(be));
    used = pool_used(be);
    if (bytes <= limit && used <= limit - bytes) return 0;
    ae_mem_limit_refuse(cu(be)->name, bytes, used, limit);
    return 1;
}

// AE_CUDA_POISON=1: a new allocation of `bytes` (a multiple of 4) is filled with NaN.
static void fill_poison(const ae_backend *be, void *p, size_t bytes) {
    if (!cu(be)->poison) return;
    size_t words = bytes / 4;
    k_fill_nan_bytes<<<cuda_blocks(words, 256), 256, 0, stream_of(be)>>>((uint32_t *)p, words);
    cuda_check(be, cudaGetLastError(), "alloc poison");
}

ae_ptr ae_cuda_alloc(const ae_backend *be, size_t n, ae_dtype dt) {
    size_t es = ae_dtype_size(dt), bytes;
    if (es == 0 || ae_mul_size(n ? n : 1, es, &bytes) != 0) {
        ae_errorf(AE_ERR_NOMEM, "%s: allocation size overflow (%zu x %s)", cu(be)->name, n,
                  ae_dtype_name(dt));
        return ae_ptr_null();
    }
    bytes = (bytes + 255) & ~(size_t)255;
    void *p = NULL;
    if (cu(be)->rec) { // a graph recording's workspace (its size was checked against the limit)
        if (!(p = cuda_graph_alloc(be, bytes))) return ae_ptr_null();
        fill_poison(be, p, bytes);
        return ae_ptr_make(p, dt);
    }
    if (over_mem_limit(be, bytes)) return ae_ptr_null();
    cudaError_t e = cudaMallocAsync(&p, bytes, stream_of(be));
    if (e != cudaSuccess) {
        cudaGetLastError(); // out of memory is reported, not kept as a device failure
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        ae_errorf(AE_ERR_NOMEM,
                  "%s: out of GPU memory allocating %.2f GiB (%.2f GiB free of %.2f GiB); a "
                  "smaller --ctx or a smaller model lowers the need",
                  cu(be)->name, bytes / 1073741824.0, fr / 1073741824.0, tot / 1073741824.0);
        ae_mem_note_refusal();
        return ae_ptr_null();
    }
    fill_poison(be, p, bytes);
    return ae_ptr_make(p, dt);
}

void ae_cuda_free(const ae_backend *be, ae_ptr p) {
    if (p.data && cu(be)->rec) cuda_graph_release(be, p.data);
    else if (p.data) cudaFreeAsync(p.data, stream_of(be));
}

__device__ __forceinline__ float ld_src(const void *p, int dt, size_t i) {
    if (dt == AE_DT_F32) return ((const float *)p)[i];
    if (dt == AE_DT_BF16) return __bfloat162float(((const bf16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

template <typename T>
__global__ void k_convert(T *dst, const void *src, int src_dt, size_t n) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) stf(dst + i, ld_src(src, src_dt, i));
}

ae_status ae_cuda_upload(const ae_backend *be, ae_ptr dst, const void *src, ae_dtype src_dt,
                         size_t n) {
    if (cu(be)->rec) return refuse_in_recording(be, "upload");
    AE_TRY(kept_status(be));
    if (n == 0) return AE_OK;
    cudaStream_t s = stream_of(be);
    int src_float = src_dt == AE_DT_F32 || src_dt == AE_DT_BF16 || src_dt == AE_DT_F16;
    int dst_float = dst.dtype == AE_DT_F32 || dst.dtype == AE_DT_BF16;
    if (src_dt == dst.dtype && (src_dt == AE_DT_I32 || dst_float)) {
        cuda_check(be, cudaMemcpyAsync(dst.data, src, n * ae_dtype_size(src_dt),
                                       cudaMemcpyHostToDevice, s), "upload");
        return kept_status(be);
    }
    if (!src_float || !dst_float)
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: cannot upload %s data into a %s tensor",
                         cu(be)->name, ae_dtype_name(src_dt), ae_dtype_name(dst.dtype));
    // Chunks of at most 64 Mi values bound the staging buffer.
    size_t chunk = (size_t)64 << 20, es = ae_dtype_size(src_dt);
    void *tmp = cuda_tmp_alloc(be, (n < chunk ? n : chunk) * es, "upload");
    if (!tmp) return kept_status(be);
    for (size_t o = 0; o < n && !cuda_failed(be); o += chunk) {
        size_t m = n - o < chunk ? n - o : chunk;
        cuda_check(be, cudaMemcpyAsync(tmp, (const char *)src + o * es, m * es,
                                       cudaMemcpyHostToDevice, s), "upload");
        AE_CUDA_FLOAT_DISPATCH(dst.dtype, T, k_convert<T><<<cuda_blocks(m, 256), 256, 0, s>>>(
                                                 (T *)dst.data + o, tmp, (int)src_dt, m));
        cuda_check(be, cudaGetLastError(), "upload convert");
    }
    cuda_tmp_free(be, tmp);
    return kept_status(be);
}

template <typename T>
__global__ void k_fill_normal(T *dst, size_t n, float std, uint64_t seed) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float z;
    AE_NORMAL_AT_BODY(seed, i, z);
    stf(dst + i, std * z);
}

void ae_cuda_fill_normal(const ae_backend *be, ae_ptr dst, size_t n, float std, uint64_t seed) {
    if (cuda_failed(be) || n == 0) return;
    cuda_need(dst, AE_M_FLOAT, "fill_normal", "dst");
    AE_CUDA_FLOAT_DISPATCH(dst.dtype, T, k_fill_normal<T><<<cuda_blocks(n, 256), 256, 0,
                                                            stream_of(be)>>>((T *)dst.data, n,
                                                                             std, seed));
    cuda_check(be, cudaGetLastError(), "fill_normal");
}

ae_status ae_cuda_download(const ae_backend *be, void *dst, ae_dtype dst_dt, ae_ptr src,
                           size_t n) {
    if (cu(be)->rec) return refuse_in_recording(be, "download");
    AE_TRY(kept_status(be));
    cudaStream_t s = stream_of(be);
    if (n > 0 && dst_dt == src.dtype &&
        (dst_dt == AE_DT_F32 || dst_dt == AE_DT_I32 || dst_dt == AE_DT_F64)) {
        cuda_check(be, cudaMemcpyAsync(dst, src.data, n * ae_dtype_size(dst_dt),
                                       cudaMemcpyDeviceToHost, s), "download");
    } else if (n > 0 && dst_dt == AE_DT_F32 && src.dtype == AE_DT_BF16) {
        float *tmp = (float *)cuda_tmp_alloc(be, n * sizeof(float), "download");
        if (tmp) {
            k_convert<float><<<cuda_blocks(n, 256), 256, 0, s>>>(tmp, src.data, AE_DT_BF16, n);
            cuda_check(be, cudaGetLastError(), "download convert");
            cuda_check(be, cudaMemcpyAsync(dst, tmp, n * 4, cudaMemcpyDeviceToHost, s),
                       "download");
            cuda_tmp_free(be, tmp);
        }
    } else if (n > 0) {
        return ae_errorf(AE_ERR_UNSUPPORTED, "%s: cannot download a %s tensor as %s",
                         cu(be)->name, ae_dtype_name(src.dtype), ae_dtype_name(dst_dt));
    }
    cuda_check(be, cudaStreamSynchronize(s), "download");
    return kept_status(be);
}

ae_status ae_cuda_sync(const ae_backend *be) {
    if (cu(be)->rec) return refuse_in_recording(be, "sync");
    AE_TRY(kept_status(be));
    cuda_check(be, cudaStreamSynchronize(stream_of(be)), "sync");
    return kept_status(be);
}

void ae_cuda_mem_info(const ae_backend *be, size_t *free_bytes, size_t *total_bytes) {
    cudaSetDevice(cu(be)->device);
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        cudaGetLastError();
        *free_bytes = *total_bytes = 0;
    }
}

extern "C" ae_status ae_cuda_mem_peak(const ae_backend *be, int reset, size_t *used_high,
                                      size_t *reserved_high) {
    if (cu(be)->rec) return refuse_in_recording(be, "mem_peak");
    cudaMemPool_t pool;
    uint64_t used = 0, reserved = 0, zero = 0;
    cudaSetDevice(cu(be)->device);
    cudaError_t e = cudaStreamSynchronize(stream_of(be)); // frees in flight reach the pool
    if (e == cudaSuccess) e = cudaDeviceGetDefaultMemPool(&pool, cu(be)->device);
    if (e == cudaSuccess) e = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &used);
    if (e == cudaSuccess) e = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &reserved);
    if (e == cudaSuccess && reset) e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero);
    if (e == cudaSuccess && reset)
        e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero);
    *used_high = (size_t)used;
    *reserved_high = (size_t)reserved;
    if (e != cudaSuccess) {
        cudaGetLastError();
        return ae_errorf(AE_ERR_DEVICE, "%s: cannot read the memory pool's statistics: %s",
                         cu(be)->name, cudaGetErrorString(e));
    }
    return AE_OK;
}

extern "C" void *ae_cuda_stream(const ae_backend *be) { return (void *)stream_of(be); }

// ---- opening -------------------------------------------------------------------------------------

// The stream, cuBLASLt handle and workspace of c (device already chosen in c->device). A
// backend's stream has the device's highest priority (as the NCCL side stream of dist/, whose
// sums overlap it), a sibling's the lowest unless `high`: the work of a sibling fills what its
// parent's leaves idle (distillation stage 1: the teacher's queue, the student's being the
// longer chain; measured, docs/BENCHMARKS.md).
static ae_status cuda_start(ae_cuda *c, int high) {
    cudaError_t e;
    int least = 0, greatest = 0;
    if ((e = cudaSetDevice(c->device)) != cudaSuccess ||
        (e = cudaDeviceGetStreamPriorityRange(&least, &greatest)) != cudaSuccess ||
        (e = cudaStreamCreateWithPriority(&c->stream, cudaStreamNonBlocking,
                                          high ? greatest : least)) != cudaSuccess) {
        cudaGetLastError();
        return ae_errorf(AE_ERR_DEVICE, "cuda:%d: cannot start the device: %s", c->device,
                         cudaGetErrorString(e));
    }
    c->lt_workspace_bytes = (size_t)32 << 20;
    if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS)
        return ae_errorf(AE_ERR_DEVICE, "cuda:%d: cannot create a cuBLASLt handle", c->device);
    if (cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes) != cudaSuccess) {
        cudaGetLastError();
        return ae_errorf(AE_ERR_NOMEM, "cuda:%d: out of memory for the cuBLASLt workspace",
                         c->device);
    }
    return AE_OK;
}

// ---- siblings and events (backend/ops.h, "concurrency") ----------------------------------------

struct ae_event {
    cudaEvent_t e;
};

// A backend on be's device and pool with a stream (and cuBLASLt workspace) of its own, of the
// lowest priority (AE_CUDA_SIBLING_PRIORITY=high, a measurement switch: be's); its error state
// is its own.
static ae_status ae_cuda_sibling_open(const ae_backend *be, const ae_backend **out) {
    ae_cuda *c = (ae_cuda *)calloc(1, sizeof *c);
    ae_backend *sib = (ae_backend *)calloc(1, sizeof *sib);
    if (!c || !sib) {
        free(c);
        free(sib);
        return ae_errorf(AE_ERR_NOMEM, "%s: out of host memory for a second stream", cu(be)->name);
    }
    *c = *cu(be);
    c->stream = NULL, c->lt = NULL, c->lt_workspace = NULL, c->rec = NULL;
    c->failed = 0, c->message[0] = '\0';
    *sib = *be;
    sib->ctx = c;
    const char *prio = getenv("AE_CUDA_SIBLING_PRIORITY");
    ae_status st = cuda_start(c, prio && !strcmp(prio, "high"));
    if (st != AE_OK) {
        ae_backend_cuda_close(sib);
        return st;
    }
    // Memory freed on one stream is reused by the other only once an event orders the two
    // (or the free has completed): never by the pool making one stream wait for the other.
    cudaMemPool_t pool;
    int no = 0;
    if (cudaDeviceGetDefaultMemPool(&pool, c->device) == cudaSuccess)
        cudaMemPoolSetAttribute(pool, cudaMemPoolReuseAllowInternalDependencies, &no);
    cudaGetLastError();
    *out = sib;
    return AE_OK;
}

static ae_event *ae_cuda_event_new(const ae_backend *be) {
    ae_event *ev = (ae_event *)calloc(1, sizeof *ev);
    cudaSetDevice(cu(be)->device);
    if (!ev || cudaEventCreateWithFlags(&ev->e, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        free(ev);
        ae_errorf(AE_ERR_NOMEM, "%s: cannot create a CUDA event", cu(be)->name);
        return NULL;
    }
    return ev;
}

static void ae_cuda_event_free(const ae_backend *be, ae_event *ev) {
    (void)be;
    cudaEventDestroy(ev->e);
    free(ev);
}

static void ae_cuda_event_record(const ae_backend *be, ae_event *ev) {
    if (cuda_failed(be)) return;
    cuda_check(be, cudaEventRecord(ev->e, stream_of(be)), "event record");
}

static void ae_cuda_event_wait(const ae_backend *be, ae_event *ev) {
    if (cuda_failed(be)) return;
    cuda_check(be, cudaStreamWaitEvent(stream_of(be), ev->e, 0), "event wait");
}

extern "C" int ae_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" ae_status ae_backend_cuda_open(int dev, const ae_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return ae_errorf(AE_ERR_UNSUPPORTED, "--device cuda:%d: no usable CUDA device (%s)", dev,
                         cudaGetErrorString(e));
    }
    if (dev < 0 || dev >= n)
        return ae_errorf(AE_ERR_UNSUPPORTED, "--device cuda:%d: this machine has %d CUDA device%s",
                         dev, n, n == 1 ? "" : "s");
    cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
        return ae_errorf(AE_ERR_UNSUPPORTED, "--device cuda:%d: %s", dev, cudaGetErrorString(e));
    if (prop.major < 8)
        return ae_errorf(AE_ERR_UNSUPPORTED,
                         "--device cuda:%d: %s has compute capability %d.%d; attnedit needs 8.0 "
                         "or newer (bf16 tensor cores)", dev, prop.name, prop.major, prop.minor);
    ae_cuda *c = (ae_cuda *)calloc(1, sizeof *c);
    ae_backend *be = (ae_backend *)calloc(1, sizeof *be);
    if (!c || !be) {
        free(c);
        free(be);
        return AE_ERR_NOMEM;
    }
    c->device = dev;
    c->sm_count = prop.multiProcessorCount;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    c->cc_major = prop.major;
    c->cc_minor = prop.minor;
    const char *poison = getenv("AE_CUDA_POISON");
    c->poison = poison && poison[0] == '1';
    cuda_graph_options(c);
    ae_status lim = ae_mem_limit_from_env(&c->mem_limit);
    if (lim != AE_OK) {
        free(c);
        free(be);
        return lim;
    }
    snprintf(c->name, sizeof c->name, "cuda:%d", dev);
    snprintf(c->desc, sizeof c->desc, "%.100s, %.1f GiB, sm_%d%d", prop.name,
             prop.totalGlobalMem / 1073741824.0, prop.major, prop.minor);
    be->ctx = c;
    const char *prio = getenv("AE_CUDA_STREAM_PRIORITY"); // a measurement switch: "low"
    ae_status st = cuda_start(c, !(prio && !strcmp(prio, "low")));
    if (st == AE_OK) { // keep freed pool memory for reuse instead of returning it to the driver
        cudaMemPool_t pool;
        uint64_t keep = UINT64_MAX;
        if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess)
            cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    if (st != AE_OK) {
        ae_backend_cuda_close(be);
        return st;
    }
    be->name = c->name;
    be->device = c->desc;
    be->host_memory = 0;
    be->act_dtype = AE_DT_BF16;
    be->weight_dtype = AE_DT_BF16;
    be->alloc = ae_cuda_alloc;
    be->free = ae_cuda_free;
    be->upload = ae_cuda_upload;
    be->download = ae_cuda_download;
    be->sync = ae_cuda_sync;
    be->copy_rows = ae_cuda_copy_rows;
    be->copy_rows_rep = ae_cuda_copy_rows_rep;
    be->sum_rows_rep = ae_cuda_sum_rows_rep;
    be->fill = ae_cuda_fill;
    be->fill_normal = ae_cuda_fill_normal;
    be->mem_info = ae_cuda_mem_info;
    be->gemm = ae_cuda_gemm;
    be->matmul_group = ae_cuda_matmul_group;
    be->gate_up_silu = ae_cuda_gate_up_silu; // cuda_gemm.cu: the GEMV with SwiGLU epilogue
    be->rmsnorm = ae_cuda_rmsnorm;
    be->add_rmsnorm = ae_cuda_add_rmsnorm;
    be->rope = ae_cuda_rope;
    be->qk_norm_rope = ae_cuda_qk_norm_rope;
    be->mla_decode_prep = ae_cuda_mla_decode_prep;
    be->mla_decode_absorb = ae_cuda_mla_decode_absorb; // cuda_mla_prep.cu: prep + W_uk
    be->mla_decode_attend = ae_cuda_mla_decode_attend; // cuda_mla_decode.cu: E + merge·W_uv
    be->attention = ae_cuda_attention;
    be->gate_mul = ae_cuda_gate_mul;
    be->silu_mul = ae_cuda_silu_mul;
    be->add = ae_cuda_add;
    be->embed = ae_cuda_embed;
    be->moe_route = ae_cuda_moe_route;
    be->moe_ffn = ae_cuda_moe_ffn;
    be->attention_paged = ae_cuda_attention_paged;
    be->paged_store = ae_cuda_paged_store;
    be->paged_gather = ae_cuda_paged_gather;
    be->nll_rows = ae_cuda_nll_rows;
    be->kl_rows = ae_cuda_kl_rows;
    be->argmax_rows = ae_cuda_argmax_rows;
    be->sample_rows = ae_cuda_sample_rows; // cuda_sample.cu
    // Training ops (backward): GPU distillation, issue 8 (cuda_backward.cu, cuda_attention_bwd.cu)
    be->rmsnorm_bwd = ae_cuda_rmsnorm_bwd;
    be->rope_bwd = ae_cuda_rope_bwd;
    be->attention_bwd = ae_cuda_attention_bwd;
    be->gate_mul_bwd = ae_cuda_gate_mul_bwd;
    be->silu_mul_bwd = ae_cuda_silu_mul_bwd;
    // Training losses, embedding gradient and optimizer (cuda_train.cu)
    // MoE training (cuda_moe_train.cu)
    be->moe_plan = ae_cuda_moe_plan;
    be->moe_combine = ae_cuda_moe_combine;
    be->moe_combine_bwd = ae_cuda_moe_combine_bwd;
    be->moe_route_bwd = ae_cuda_moe_route_bwd;
    be->expert_matmul = ae_cuda_expert_matmul; // cuda_moe.cu: the grouped GEMM of moe_ffn
    be->expert_matmul_bwd = ae_cuda_expert_matmul_bwd;
    be->embed_bwd = ae_cuda_embed_bwd;
    be->mse_rows = ae_cuda_mse_rows;
    be->cosine_rows = ae_cuda_cosine_rows;
    be->softmax_stats = ae_cuda_softmax_stats;
    be->kd_chunk = ae_cuda_kd_chunk;
    be->sumsq = ae_cuda_sumsq;
    be->axpby = ae_cuda_axpby;
    be->adamw = ae_cuda_adamw;
    be->adamw8 = ae_cuda_adamw8;
    // Graphs of recorded ops (cuda_graph.cu): the decode step
    be->graph_new = ae_cuda_graph_new;
    be->graph_free = ae_cuda_graph_free;
    be->graph_begin = ae_cuda_graph_begin;
    be->graph_cut = ae_cuda_graph_cut;
    be->graph_end = ae_cuda_graph_end;
    be->graph_stats = ae_cuda_graph_stats;
    // Siblings and events: a second stream on the same device and pool
    be->sibling_open = ae_cuda_sibling_open;
    be->sibling_close = ae_backend_cuda_close;
    be->status = kept_status;
    be->event_new = ae_cuda_event_new;
    be->event_free = ae_cuda_event_free;
    be->event_record = ae_cuda_event_record;
    be->event_wait = ae_cuda_event_wait;
    *out = be;
    return AE_OK;
}

extern "C" void ae_backend_cuda_close(const ae_backend *cbe) {
    ae_backend *be = (ae_backend *)cbe;
    if (!be) return;
    ae_cuda *c = cu(be);
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->lt_workspace) cudaFree(c->lt_workspace);
        if (c->lt) cublasLtDestroy(c->lt);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}
