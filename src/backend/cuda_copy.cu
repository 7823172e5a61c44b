// CUDA memory ops: strided row copy (with F32 <-> BF16 conversion), its adjoint sum_rows_rep,
// fill, embedding gather.
//
// copy_rows, copy_rows_rep and embed share one kernel shape (k_rows): a block of 256 threads
// covers `rpb` rows with `tpr` threads per row (tpr: the power of two >= the row's chunk count, at
// most 256) and walks the rows grid-stride. A chunk is either one machine unit of a bitwise copy
// (16, 8, 4 or 2 bytes: the widest that divides both addresses, the row length and both strides)
// when the dtypes match, or 4 converted values (1 when alignment does not allow 4) when they
// differ. Contiguous copies are re-cut into rows of 4096 elements, so one long row (ae_copy)
// spreads over the whole GPU. embed is a row copy whose source row r is table row ids[r].
// copy_rows_rep walks the source rows: a thread loads its chunk once and stores it into the
// destination rows r·rep .. r·rep + rep − 1 (MLA's rope key into 32 heads: 1 read, 32 writes).
// Results are bitwise what the CPU backend produces (conversion F32 -> BF16 rounds to nearest
// even, like the upload path).
#include <string.h>

#include "backend/cuda_internal.h"

namespace {

constexpr int kThreads = 256;  // threads per block of every kernel here
constexpr int kRecut = 4096;   // row length (elements) contiguous copies are re-cut into


// ---- row operations: op(r, c) moves chunk c of row r -------------------------------------------

// Bitwise copy in units U (uint4, uint2, uint32_t, uint16_t); strides in units.
template <typename U> struct CopyUnits {
    U *dst;              // (rows, ldd)
    int64_t ldd;
    const U *src;        // (rows, lds), or the table rows named by map
    int64_t lds;
    const int32_t *map;  // (rows) source row of each row, or null (row r)
    int rep;             // destination rows per source row (1 but for copy_rows_rep)
    __device__ void operator()(size_t r, int c) const {
        int64_t sr = map ? (int64_t)map[r] : (int64_t)r;
        U v = src[sr * lds + c];
        for (int j = 0; j < rep; j++) dst[((int64_t)r * rep + j) * ldd + c] = v;
    }
};

// Converting copy of V values per chunk (F32 <-> BF16); strides in elements.
template <int V, typename TD, typename TS> struct CopyConvert {
    TD *dst;
    int64_t ldd;
    const TS *src;
    int64_t lds;
    const int32_t *map;
    int rep;
    __device__ void operator()(size_t r, int c) const {
        int64_t sr = map ? (int64_t)map[r] : (int64_t)r;
        float v[V];
        ldv<V>(src + sr * lds + (int64_t)c * V, v);
        for (int j = 0; j < rep; j++)
            stv<V>(dst + ((int64_t)r * rep + j) * ldd + (int64_t)c * V, v);
    }
};

// sum_rows_rep: chunk c of dst row r = the sum of chunk c of src rows r·rep .. r·rep + rep − 1,
// in fp32 in that order (the cpu's order: the same sums of the same values); V values per chunk.
template <int V, typename TD, typename TS> struct SumRep {
    TD *dst;
    int64_t ldd;
    const TS *src;
    int64_t lds;
    int rep;
    __device__ void operator()(size_t r, int c) const {
        float acc[V];
#pragma unroll
        for (int k = 0; k < V; k++) acc[k] = 0.0f;
        const TS *s = src + (int64_t)r * rep * lds + (int64_t)c * V;
        for (int j = 0; j < rep; j++) {
            float v[V];
            ldv<V>(s + (int64_t)j * lds, v);
#pragma unroll
            for (int k = 0; k < V; k++) acc[k] += v[k];
        }
        stv<V>(dst + (int64_t)r * ldd + (int64_t)c * V, acc);
    }
};

// Rows of `chunks` chunks; 2^tpr_log2 threads per row, kThreads >> tpr_log2 rows per block.
template <typename Op>
__global__ void __launch_bounds__(kThreads) k_rows(Op op, size_t rows, int chunks, int tpr_log2) {
    int tpr = 1 << tpr_log2, lane = threadIdx.x & (tpr - 1);
    size_t rpb = (size_t)(kThreads >> tpr_log2);
    for (size_t r = blockIdx.x * rpb + (threadIdx.x >> tpr_log2); r < rows; r += gridDim.x * rpb)
        for (int c = lane; c < chunks; c += tpr) op(r, c);
}

template <typename Op>
void launch_rows(const ae_backend *be, const Op &op, size_t rows, int chunks, const char *name) {
    if (rows == 0 || chunks <= 0) return;
    int l = 0;
    while ((1 << l) < chunks && (1 << l) < kThreads) l++;
    size_t rpb = (size_t)(kThreads >> l), blocks = (rows + rpb - 1) / rpb;
    size_t cap = (size_t)(cu(be)->sm_count > 0 ? cu(be)->sm_count : 1) * 32; // grid-stride beyond
    if (blocks > cap) blocks = cap;
    k_rows<Op><<<(unsigned)blocks, kThreads, 0, stream_of(be)>>>(op, rows, chunks, l);
    cuda_check(be, cudaGetLastError(), name);
}

// The bitwise copy in units U (strides dl, sl in units) and the converting copy of V values per
// chunk (strides in elements), launched over `rows` source rows.
template <typename U>
void launch_units(const ae_backend *be, void *dst, int64_t dl, const void *src, int64_t sl,
                  const int32_t *map, int rep, size_t rows, int chunks, const char *name) {
    launch_rows(be, CopyUnits<U>{(U *)dst, dl, (const U *)src, sl, map, rep}, rows, chunks, name);
}
template <int V, typename TD, typename TS>
void launch_convert(const ae_backend *be, void *dst, int64_t ldd, const void *src, int64_t lds,
                    const int32_t *map, int rep, size_t rows, int cols, const char *name) {
    launch_rows(be, CopyConvert<V, TD, TS>{(TD *)dst, ldd, (const TS *)src, lds, map, rep}, rows,
                cols / V, name);
}

// dst rows r·rep .. r·rep + rep − 1 (cols elements at dst + row·ldd) = src row map[r] or r (at
// src + row·lds), r < rows. Dtypes equal (any size) or F32 <-> BF16.
void copy_block(const ae_backend *be, void *dst, ae_dtype dt_d, int64_t ldd, const void *src,
                ae_dtype dt_s, int64_t lds, const int32_t *map, size_t rows, int rep, int cols,
                const char *name) {
    int strided = rows > 1 || rep > 1 || map != NULL; // strides matter
    if (dt_d == dt_s) {
        int64_t es = (int64_t)ae_dtype_size(dt_d);
        uint64_t m = (uint64_t)(uintptr_t)dst | (uint64_t)(uintptr_t)src | (uint64_t)(cols * es);
        if (strided) m |= (uint64_t)(ldd * es) | (uint64_t)(lds * es);
        int64_t u = !(m & 15) ? 16 : !(m & 7) ? 8 : !(m & 3) ? 4 : 2;
        int chunks = (int)(cols * es / u);
        int64_t dl = ldd * es / u, sl = lds * es / u; // unused when not strided
        if (u == 16) launch_units<uint4>(be, dst, dl, src, sl, map, rep, rows, chunks, name);
        else if (u == 8) launch_units<uint2>(be, dst, dl, src, sl, map, rep, rows, chunks, name);
        else if (u == 4) launch_units<uint32_t>(be, dst, dl, src, sl, map, rep, rows, chunks, name);
        else launch_units<uint16_t>(be, dst, dl, src, sl, map, rep, rows, chunks, name);
        return;
    }
    // F32 <-> BF16: 4 values per chunk when every access stays aligned.
    uintptr_t ad = (uintptr_t)dst, as = (uintptr_t)src;
    int v4 = cols % 4 == 0 && ad % (4 * ae_dtype_size(dt_d)) == 0 &&
             as % (4 * ae_dtype_size(dt_s)) == 0 && (!strided || (ldd % 4 == 0 && lds % 4 == 0));
    if (dt_d == AE_DT_BF16) {
        if (v4) launch_convert<4, bf16, float>(be, dst, ldd, src, lds, map, rep, rows, cols, name);
        else launch_convert<1, bf16, float>(be, dst, ldd, src, lds, map, rep, rows, cols, name);
    } else {
        if (v4) launch_convert<4, float, bf16>(be, dst, ldd, src, lds, map, rep, rows, cols, name);
        else launch_convert<1, float, bf16>(be, dst, ldd, src, lds, map, rep, rows, cols, name);
    }
}

// sum_rows_rep for dst dtype TD and src dtype TS: 4 values per chunk when every access stays
// aligned, else 1.
template <typename TD, typename TS>
void launch_sum_rep(const ae_backend *be, void *dst, int64_t ldd, const void *src, int64_t lds,
                    int rows, int rep, int cols) {
    const int v4 = cols % 4 == 0 && ldd % 4 == 0 && lds % 4 == 0 &&
                   (uintptr_t)dst % (4 * sizeof(TD)) == 0 &&
                   (uintptr_t)src % (4 * sizeof(TS)) == 0;
    if (v4)
        launch_rows(be, SumRep<4, TD, TS>{(TD *)dst, ldd, (const TS *)src, lds, rep}, (size_t)rows,
                    cols / 4, "sum_rows_rep");
    else
        launch_rows(be, SumRep<1, TD, TS>{(TD *)dst, ldd, (const TS *)src, lds, rep}, (size_t)rows,
                    cols, "sum_rows_rep");
}

// ---- fill ---------------------------------------------------------------------------------------

// p[0, n) = v: 16-byte stores of `pat` (v repeated) over the aligned body p[head, head + nvec·per),
// single stores for the few elements before and after it.
template <typename T>
__global__ void __launch_bounds__(kThreads) k_fill(T *p, size_t n, size_t head, size_t nvec, T v,
                                                  uint4 pat) {
    constexpr size_t per = 16 / sizeof(T);
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    uint4 *body = reinterpret_cast<uint4 *>(p + head);
    for (size_t j = i; j < nvec; j += stride) body[j] = pat;
    size_t tail0 = head + nvec * per, edge = head + (n - tail0); // < 2·per elements
    if (i < edge) p[i < head ? i : tail0 + (i - head)] = v;
}

template <typename T> void launch_fill(const ae_backend *be, T *p, size_t n, T v, uint32_t word) {
    constexpr size_t per = 16 / sizeof(T);
    size_t mis = (uintptr_t)p % 16, head = mis ? (16 - mis) / sizeof(T) : 0;
    if (head > n) head = n;
    size_t nvec = (n - head) / per;
    size_t blocks = cuda_blocks(nvec > 16 ? nvec : 16, kThreads);
    size_t cap = (size_t)(cu(be)->sm_count > 0 ? cu(be)->sm_count : 1) * 32;
    if (blocks > cap) blocks = cap;
    k_fill<T><<<(unsigned)blocks, kThreads, 0, stream_of(be)>>>(p, n, head, nvec, v,
                                                                  make_uint4(word, word, word, word));
    cuda_check(be, cudaGetLastError(), "fill");
}

} // namespace

void ae_cuda_copy_rows(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                       int rows, int cols) {
    if (cuda_failed(be)) return;
    int ints = dst.dtype == AE_DT_I32 && src.dtype == AE_DT_I32;
    cuda_need(dst, ints ? AE_M_I32 : AE_M_FLOAT, "copy_rows", "dst");
    cuda_need(src, ints ? AE_M_I32 : AE_M_FLOAT, "copy_rows", "src");
    if (rows <= 0 || cols <= 0) return;
    size_t n = (size_t)rows * (size_t)cols;
    if ((rows == 1 || (ldd == cols && lds == cols)) && n > (size_t)kRecut) {
        // Contiguous: rows of kRecut elements, then the remainder as one short row.
        size_t full = n / kRecut, rem = n % kRecut, off = full * kRecut;
        copy_block(be, dst.data, dst.dtype, kRecut, src.data, src.dtype, kRecut, NULL, full, 1,
                   kRecut, "copy_rows");
        if (rem)
            copy_block(be, (char *)dst.data + off * ae_dtype_size(dst.dtype), dst.dtype, 0,
                       (const char *)src.data + off * ae_dtype_size(src.dtype), src.dtype, 0, NULL,
                       1, 1, (int)rem, "copy_rows");
        return;
    }
    copy_block(be, dst.data, dst.dtype, ldd, src.data, src.dtype, lds, NULL, (size_t)rows, 1,
               cols, "copy_rows");
}

void ae_cuda_copy_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src,
                           int64_t lds, int rows, int rep, int cols) {
    if (cuda_failed(be)) return;
    if (rep == 1) { // copy_rows (re-cuts a contiguous copy to spread it)
        ae_cuda_copy_rows(be, dst, ldd, src, lds, rows, cols);
        return;
    }
    int ints = dst.dtype == AE_DT_I32 && src.dtype == AE_DT_I32;
    cuda_need(dst, ints ? AE_M_I32 : AE_M_FLOAT, "copy_rows_rep", "dst");
    cuda_need(src, ints ? AE_M_I32 : AE_M_FLOAT, "copy_rows_rep", "src");
    if (rows <= 0 || rep <= 0 || cols <= 0) return;
    copy_block(be, dst.data, dst.dtype, ldd, src.data, src.dtype, lds, NULL, (size_t)rows, rep,
               cols, "copy_rows_rep");
}

void ae_cuda_sum_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                          int rows, int rep, int cols) {
    if (cuda_failed(be)) return;
    cuda_need(dst, AE_M_FLOAT, "sum_rows_rep", "dst");
    cuda_need(src, AE_M_FLOAT, "sum_rows_rep", "src");
    if (rows <= 0 || rep <= 0 || cols <= 0) return;
    const int db = dst.dtype == AE_DT_BF16, sb = src.dtype == AE_DT_BF16;
    if (db && sb) launch_sum_rep<bf16, bf16>(be, dst.data, ldd, src.data, lds, rows, rep, cols);
    else if (db) launch_sum_rep<bf16, float>(be, dst.data, ldd, src.data, lds, rows, rep, cols);
    else if (sb) launch_sum_rep<float, bf16>(be, dst.data, ldd, src.data, lds, rows, rep, cols);
    else launch_sum_rep<float, float>(be, dst.data, ldd, src.data, lds, rows, rep, cols);
}

void ae_cuda_fill(const ae_backend *be, ae_ptr dst, size_t n, float value) {
    if (cuda_failed(be)) return;
    cuda_need(dst, AE_M_FLOAT | AE_M_I32, "fill", "dst");
    if (n == 0 || !dst.data) return;
    if (dst.dtype == AE_DT_I32) {
        int32_t v = (int32_t)value; // as the CPU backend converts
        launch_fill(be, (int32_t *)dst.data, n, v, (uint32_t)v);
    } else if (dst.dtype == AE_DT_F32) {
        uint32_t w;
        memcpy(&w, &value, 4);
        launch_fill(be, (float *)dst.data, n, value, w);
    } else {
        bf16 v = __float2bfloat16_rn(value);
        uint32_t h = (uint32_t)__bfloat16_as_ushort(v);
        launch_fill(be, (bf16 *)dst.data, n, v, h | h << 16);
    }
}

void ae_cuda_embed(const ae_backend *be, ae_ptr y, ae_ptr table, ae_ptr ids, int T, int D) {
    if (cuda_failed(be)) return;
    cuda_need(y, AE_M_FLOAT, "embed", "y");
    cuda_need(table, AE_M_FLOAT, "embed", "table");
    cuda_need(ids, AE_M_I32, "embed", "ids");
    if (T <= 0 || D <= 0) return;
    copy_block(be, y.data, y.dtype, D, table.data, table.dtype, D, (const int32_t *)ids.data,
               (size_t)T, 1, D, "embed");
}
