// CPU prefill / decode throughput of a model, llama-bench style.
//   bench_model MODEL [--prompt N] [--decode N] [--reps R]
// Prefill: one forward of N random ids (fresh cache), best of R. Decode: N single-token steps
// after a prompt of the given length. Threads: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS.
// Prints one line per measurement and the peak resident memory. The logits live in the backend's
// memory and are downloaded after every forward (as generation reads them), which also makes the
// timings include the work an asynchronous backend queued.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/log.h"
#include "core/mem.h"
#include "core/rng.h"
#include "model/model.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_model MODEL [--prompt N] [--decode N] [--reps R]\n");
        return 2;
    }
    int P = 128, N = 64, R = 3;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--prompt")) P = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) N = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) R = atoi(argv[i + 1]);
    }
    if (P < 1 || N < 1 || R < 1) {
        fprintf(stderr, "bench_model: --prompt, --decode and --reps must be >= 1\n");
        return 2;
    }
    ae_model *m;
    if (ae_model_load(argv[1], ae_backend_cpu(), &m) != AE_OK) {
        fprintf(stderr, "bench_model: %s\n", ae_last_error());
        return 1;
    }
    int V = m->cfg.vocab_size;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(P + N));
    ae_rng rng;
    ae_rng_seed(&rng, 42);
    for (int i = 0; i < P + N; i++) ids[i] = (int32_t)(ae_rng_u64(&rng) % (uint64_t)V);
    const ae_backend *be = m->be;
    ae_ptr logits = be->alloc(be, (size_t)V, AE_DT_F32); // (1, V): the last token's
    float *host = ae_alloc_f32((size_t)V);
    if (ae_ptr_is_null(logits) || !host) {
        fprintf(stderr, "bench_model: out of memory for the logits: %s\n", ae_last_error());
        return 1;
    }
    ae_kv_cache c;
    if (ae_kv_cache_init(&c, m, P + N) != AE_OK) return 1;
    double best_pf = 1e30, best_dec = 1e30;
    for (int r = 0; r < R; r++) {
        ae_kv_cache_reset(&c);
        double t0 = ae_time_now();
        if (ae_model_forward(m, &c, ids, P, logits, 0) != AE_OK ||
            be->download(be, host, AE_DT_F32, logits, (size_t)V) != AE_OK)
            return 1;
        double t1 = ae_time_now();
        for (int i = 0; i < N; i++)
            if (ae_model_forward(m, &c, ids + P + i, 1, logits, 0) != AE_OK ||
                be->download(be, host, AE_DT_F32, logits, (size_t)V) != AE_OK)
                return 1;
        double t2 = ae_time_now();
        if (t1 - t0 < best_pf) best_pf = t1 - t0;
        if (t2 - t1 < best_dec) best_dec = t2 - t1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *thr = getenv("OMP_NUM_THREADS");
    printf("model=%s params=%lld threads=%s prefill_tokens=%d prefill_tok_s=%.1f "
           "decode_tokens=%d decode_tok_s=%.1f peak_rss_mib=%.1f\n",
           argv[1], (long long)m->n_params, thr ? thr : "default", P, P / best_pf, N, N / best_dec,
           ru.ru_maxrss / 1024.0);
    ae_kv_cache_free(&c);
    be->free(be, logits);
    ae_free_aligned(host);
    free(ids);
    ae_model_free(m);
    return 0;
}
