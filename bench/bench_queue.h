// Timing decode-sized calls on the CUDA backend the way a decode step issues them (bench_attn
// --decode / --decode-mla, bench_moe --decode): calls of a few microseconds would measure the
// host's launch rate if each were timed alone, so the GPU's queue is filled first (three 2 GiB
// device copies, ~3 ms: the host queues every call before the GPU reaches them, as in a CUDA
// graph), then CUDA events on the backend's stream bracket `calls` calls; time per call = the
// best of `reps` such runs / calls. The same 2 GiB copy, timed alone, gives the device copy rate
// (bytes read + written per second) the callers report against. Header-only (every bench/*.c is
// its own program); CUDA builds only.
#ifndef AE_BENCH_QUEUE_H
#define AE_BENCH_QUEUE_H

#ifdef AE_HAVE_CUDA
#include <cuda_runtime.h>

#include "backend/cuda.h"
#include "backend/ops.h"

typedef struct {
    ae_ptr a, b; // the queue filler's source and destination (2 GiB of bf16 each)
    size_t n;    // bf16 values each
    cudaStream_t stream;
    cudaEvent_t e0, e1;
    int events; // e0 and e1 were created
} bench_queue;

// The buffers and events on `be` (CUDA); 0 on success, else 1 with the error kept
// (ae_last_error) and everything made so far released by bench_queue_close.
static int bench_queue_open(const ae_backend *be, bench_queue *q) {
    *q = (bench_queue){.n = (size_t)1 << 30};
    q->stream = (cudaStream_t)ae_cuda_stream(be);
    q->a = be->alloc(be, q->n, AE_DT_BF16), q->b = be->alloc(be, q->n, AE_DT_BF16);
    if (ae_ptr_is_null(q->a) || ae_ptr_is_null(q->b)) return 1;
    if (cudaEventCreate(&q->e0) != cudaSuccess) return 1;
    if (cudaEventCreate(&q->e1) != cudaSuccess) {
        cudaEventDestroy(q->e0);
        return 1;
    }
    q->events = 1;
    be->fill(be, q->a, q->n, 1.0f);
    return 0;
}

static void bench_queue_close(const ae_backend *be, bench_queue *q) {
    if (q->events) cudaEventDestroy(q->e0), cudaEventDestroy(q->e1);
    if (!ae_ptr_is_null(q->a)) be->free(be, q->a);
    if (!ae_ptr_is_null(q->b)) be->free(be, q->b);
    *q = (bench_queue){0};
}

// Milliseconds from e0 to now on the backend's stream; < 0 on an error.
static double bench_queue_elapsed_ms(const ae_backend *be, bench_queue *q) {
    float ms = -1;
    if (cudaEventRecord(q->e1, q->stream) != cudaSuccess ||
        cudaEventSynchronize(q->e1) != cudaSuccess ||
        cudaEventElapsedTime(&ms, q->e0, q->e1) != cudaSuccess || be->sync(be) != AE_OK)
        return -1;
    return ms;
}

static void bench_queue_fill(const ae_backend *be, const bench_queue *q) {
    be->copy_rows(be, q->b, 4096, q->a, 4096, (int)(q->n / 4096), 4096);
}

// The device copy rate (bytes read + written per second), best of 5; 0 on an error.
static double bench_queue_copy_rate(const ae_backend *be, bench_queue *q) {
    double best = 1e30;
    bench_queue_fill(be, q);
    for (int r = 0; r < 5; r++) {
        cudaEventRecord(q->e0, q->stream);
        bench_queue_fill(be, q);
        const double ms = bench_queue_elapsed_ms(be, q);
        if (ms <= 0) return 0;
        if (ms < best) best = ms;
    }
    return 2.0 * (double)q->n * 2 / (best * 1e-3);
}

// Seconds per call of call(be, ctx, i), i = 0 .. calls − 1, best of reps, after `warm` untimed
// calls (i = 0 .. warm − 1); < 0 on an error.
static double bench_queue_time(const ae_backend *be, bench_queue *q,
                               void (*call)(const ae_backend *, void *, int), void *ctx, int warm,
                               int calls, int reps) {
    for (int i = 0; i < warm; i++) call(be, ctx, i);
    if (be->sync(be) != AE_OK) return -1;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        for (int f = 0; f < 3; f++) bench_queue_fill(be, q); // the host queues every call first
        cudaEventRecord(q->e0, q->stream);
        for (int i = 0; i < calls; i++) call(be, ctx, i);
        const double ms = bench_queue_elapsed_ms(be, q);
        if (ms <= 0) return -1;
        if (ms < best) best = ms;
    }
    return best * 1e-3 / calls;
}
#endif

#endif
