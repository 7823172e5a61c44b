// Memory of the CPU backend: host arrays (64-byte aligned), dtype conversion on upload, row
// copies, fill and the embedding gather. The bytes of the live buffers are counted, for
// ATTNEDIT_MEM_LIMIT (backend/mem_limit.h) and the tests.
#define _GNU_SOURCE // malloc_usable_size
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/cpu_internal.h"
#include "backend/mem_limit.h"
#include "core/mem.h"

// Bytes of the live buffers (malloc_usable_size of each, counted on alloc and free), their
// high-water mark and the limit (0: none). One cpu backend per process: the counts are global.
static int64_t g_live, g_peak;
static size_t g_limit;

void ae_cpu_set_mem_limit(size_t bytes) { g_limit = bytes; }

size_t ae_cpu_mem_live(void) {
    int64_t v = __atomic_load_n(&g_live, __ATOMIC_RELAXED);
    return v > 0 ? (size_t)v : 0;
}

size_t ae_cpu_mem_peak(int reset) {
    int64_t v = __atomic_load_n(&g_peak, __ATOMIC_RELAXED);
    if (reset) __atomic_store_n(&g_peak, __atomic_load_n(&g_live, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    return v > 0 ? (size_t)v : 0;
}

static void count_bytes(int64_t delta) {
    int64_t now = __atomic_add_fetch(&g_live, delta, __ATOMIC_RELAXED);
    int64_t peak = __atomic_load_n(&g_peak, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&g_peak, &peak, now, 1, __ATOMIC_RELAXED,
                                                      __ATOMIC_RELAXED)) {
    }
}

ae_ptr ae_cpu_alloc(const ae_backend *be, size_t n, ae_dtype dt) {
    if (dt != AE_DT_F32 && dt != AE_DT_I32 && dt != AE_DT_F64) { // F64: sumsq's exact sums
        fprintf(stderr, "attnedit: internal error: cpu alloc of dtype %s\n", ae_dtype_name(dt));
        abort();
    }
    size_t words = dt == AE_DT_F64 ? 2 * n : n;
    if (g_limit) { // the request as ae_alloc_f32 rounds it (64-byte multiples)
        size_t want = words > SIZE_MAX / 8 ? SIZE_MAX : ((words ? words : 1) * 4 + 63) & ~(size_t)63;
        size_t live = ae_cpu_mem_live();
        if (want > g_limit || live > g_limit - want) {
            ae_mem_limit_refuse(be->name, want, live, g_limit);
            return ae_ptr_null();
        }
    }
    float *p = ae_alloc_f32(words); // zeroed; NULL with the message set on failure
    if (p) count_bytes((int64_t)malloc_usable_size(p));
    else ae_mem_note_refusal();
    return ae_ptr_make(p, dt);
}

void ae_cpu_free(const ae_backend *be, ae_ptr p) {
    (void)be;
    if (p.data) count_bytes(-(int64_t)malloc_usable_size(p.data));
    ae_free_aligned(p.data);
}

static void convert_to_f32(float *dst, const void *src, ae_dtype dt, size_t n) {
    const unsigned char *b = src;
    if (dt == AE_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(b[2 * i] | (b[2 * i + 1] << 8)); // little-endian storage
            dst[i] = dt == AE_DT_BF16 ? ae_bf16_to_f32(h) : ae_f16_to_f32(h);
        }
    }
}

ae_status ae_cpu_upload(const ae_backend *be, ae_ptr dst, const void *src, ae_dtype src_dt,
                        size_t n) {
    (void)be;
    if (dst.dtype == AE_DT_I32 && src_dt == AE_DT_I32) {
        memcpy(dst.data, src, n * sizeof(int32_t));
        return AE_OK;
    }
    if (dst.dtype != AE_DT_F32 || (src_dt != AE_DT_F32 && src_dt != AE_DT_F16 && src_dt != AE_DT_BF16))
        return ae_errorf(AE_ERR_UNSUPPORTED, "cpu: cannot upload %s data into a %s tensor",
                         ae_dtype_name(src_dt), ae_dtype_name(dst.dtype));
    convert_to_f32(dst.data, src, src_dt, n);
    return AE_OK;
}

ae_status ae_cpu_download(const ae_backend *be, void *dst, ae_dtype dst_dt, ae_ptr src, size_t n) {
    (void)be;
    if (dst_dt != src.dtype || (dst_dt != AE_DT_F32 && dst_dt != AE_DT_I32 && dst_dt != AE_DT_F64))
        return ae_errorf(AE_ERR_UNSUPPORTED, "cpu: cannot download a %s tensor as %s",
                         ae_dtype_name(src.dtype), ae_dtype_name(dst_dt));
    memcpy(dst, src.data, n * ae_dtype_size(dst_dt));
    return AE_OK;
}

ae_status ae_cpu_sync(const ae_backend *be) {
    (void)be;
    return AE_OK;
}

void ae_cpu_copy_rows(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                      int rows, int cols) {
    (void)be;
    if (dst.dtype != src.dtype || ae_dtype_size(dst.dtype) != 4) {
        fprintf(stderr, "attnedit: internal error: cpu copy_rows %s -> %s\n",
                ae_dtype_name(src.dtype), ae_dtype_name(dst.dtype));
        abort();
    }
    char *d = dst.data;
    const char *s = src.data;
    for (int r = 0; r < rows; r++)
        memcpy(d + (size_t)r * ldd * 4, s + (size_t)r * lds * 4, (size_t)cols * 4);
}

void ae_cpu_copy_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                          int rows, int rep, int cols) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < rep; j++) { // dst row i·rep + j = src row i
            size_t dr = (size_t)i * (size_t)rep + (size_t)j;
            ae_cpu_copy_rows(be, ae_ptr_at(dst, dr * (size_t)ldd), ldd,
                             ae_ptr_at(src, (size_t)i * (size_t)lds), lds, 1, cols);
        }
}

void ae_cpu_sum_rows_rep(const ae_backend *be, ae_ptr dst, int64_t ldd, ae_ptr src, int64_t lds,
                         int rows, int rep, int cols) {
    (void)be;
    float *d = cpu_f(dst, "sum_rows_rep");
    const float *s = cpu_f(src, "sum_rows_rep");
    for (int i = 0; i < rows; i++) {
        float *di = d + (size_t)i * (size_t)ldd;                  // (cols)
        const float *si = s + (size_t)i * (size_t)rep * (size_t)lds; // (rep, lds)
        for (int c = 0; c < cols; c++) {
            float acc = 0.0f;
            for (int j = 0; j < rep; j++) acc += si[(size_t)j * (size_t)lds + (size_t)c];
            di[c] = acc;
        }
    }
}

void ae_cpu_fill(const ae_backend *be, ae_ptr dst, size_t n, float value) {
    (void)be;
    if (dst.dtype == AE_DT_I32) {
        int32_t *d = cpu_i(dst, "fill");
        for (size_t i = 0; i < n; i++) d[i] = (int32_t)value;
        return;
    }
    float *d = cpu_f(dst, "fill");
    for (size_t i = 0; i < n; i++) d[i] = value;
}

void ae_cpu_fill_normal(const ae_backend *be, ae_ptr dst, size_t n, float std, uint64_t seed) {
    (void)be;
    float *d = cpu_f(dst, "fill_normal");
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float z;
        AE_NORMAL_AT_BODY(seed, i, z);
        d[i] = std * z;
    }
}

void ae_cpu_embed(const ae_backend *be, ae_ptr y, ae_ptr table, ae_ptr ids, int T, int D) {
    (void)be;
    float *yy = cpu_f(y, "embed");
    const float *tb = cpu_f(table, "embed");
    const int32_t *id = cpu_i(ids, "embed");
    for (int t = 0; t < T; t++)
        memcpy(yy + (size_t)t * D, tb + (size_t)id[t] * D, sizeof(float) * (size_t)D);
}
