// Inference throughput of one model on one device, llama-bench style, with the two ceilings it is
// judged against measured in the same process:
//   bench_infer (--config DIR | --model DIR) [--device cuda] [--prefill 4096,32768]
//               [--decode-at 4096,32768] [--decode-steps 32] [--reps 3] [--peaks] [--label S]
//               [--profile] [--graphs 0,1]
// --config: random weights for DIR/config.json's architecture, made on the device (Qwen3-8B or
// Qwen3-30B-A3B sized models without weight files); --model: real weights.
//   peaks    bf16 GEMM rate (8192³ product through the backend's gemm) and copy bandwidth
//            (a 4 GiB device-to-device row copy, bytes read + written), each the median of 5
//   prefill  one forward of T tokens from an empty cache (logits of the last token), median of
//            reps; FLOP/s counts 2·(weights used per token)·T + causal attention (window-aware)
//            + the last token's head, and is reported as a fraction of the GEMM peak
//   decode   after a prefill of P tokens, `steps` single-token steps (ae_model_decode_step)
//            each reading back its greedy id, after 2 untimed ones; bytes per token = weights
//            read (MoE: the routed experts only) + the KV cache read at that position; reported
//            against the copy bandwidth. --graphs lists the modes measured one after the other
//            on the same cache (default 0,1): 0 launches the ops one by one ("decode" rows), 1
//            records each step as CUDA graphs ("decode-graphs" rows, followed by a "graphs" line:
//            steps recorded, segments updated / instantiated, failures)
//   profile  (--profile) after each timed prefill, one more prefill through the op profiler;
//            after each timed decode measurement, `steps` more steps through the
//            op profiler (backend/profile.h: a sync before and after every op) and a table of
//            where a step's time goes: op, calls per token, us per token, share of the step.
//            The syncs slow the steps down; the table is for shares, the decode line above it
//            is the unprofiled measurement.
// Each measurement is one line "bench_infer | label | kind | ... " (see print_row) for
// bench/gpu_infer.sh to collect into docs/BENCHMARKS.md; profile tables are lines starting
// "profile |".
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "bench_peaks.h"
#include "bench_profile.h"
#include "backend/profile.h"
#include "core/log.h"
#include "core/mem.h"
#include "model/model.h"

typedef struct {
    const char *config, *model, *device, *label;
    int prefill[8], n_prefill, decode_at[8], n_decode, steps, reps, peaks, profile;
    int graphs[2], n_graphs; // decode modes: 0 op by op, 1 CUDA graphs
} opts;

// "0", "1", "0,1" or "1,0" into out; the count, or -1.
static int parse_graphs(const char *s, int *out) {
    int n = 0;
    for (const char *p = s; *p; p++) {
        if ((*p == '0' || *p == '1') && n < 2 && (p[1] == ',' || p[1] == '\0'))
            out[n++] = *p - '0';
        else if (*p != ',' || p == s || p[1] == '\0')
            return -1;
    }
    return n > 0 && !(n == 2 && out[0] == out[1]) ? n : -1;
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    for (char *end; *s && n < max; s = *end ? end + 1 : end) {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > (1 << 22) || (*end && *end != ',')) return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int parse(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->steps = 32;
    o->reps = 3;
    o->device = "cuda";
    o->graphs[0] = 0, o->graphs[1] = 1, o->n_graphs = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--peaks")) { o->peaks = 1; continue; }
        if (!strcmp(a, "--profile")) { o->profile = 1; continue; }
        if (!v) return -1;
        i++;
        if (!strcmp(a, "--config")) o->config = v;
        else if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--label")) o->label = v;
        else if (!strcmp(a, "--prefill")) { if ((o->n_prefill = parse_list(v, o->prefill, 8)) < 0) return -1; }
        else if (!strcmp(a, "--decode-at")) { if ((o->n_decode = parse_list(v, o->decode_at, 8)) < 0) return -1; }
        else if (!strcmp(a, "--decode-steps")) { if ((o->steps = atoi(v)) < 1) return -1; }
        else if (!strcmp(a, "--reps")) { if ((o->reps = atoi(v)) < 1) return -1; }
        else if (!strcmp(a, "--graphs")) { if ((o->n_graphs = parse_graphs(v, o->graphs)) < 0) return -1; }
        else return -1;
    }
    if (!o->label) o->label = o->config ? o->config : o->model ? o->model : "peaks";
    return (o->config || o->model || o->peaks) ? 0 : -1;
}

// ---- the two ceilings ----

static double peak_copy(const ae_backend *be) {
    size_t rows = 1 << 16, cols = 1 << 15; // 2 Gi bf16 values = 4 GiB each way
    if (be->host_memory) rows = 1 << 12;
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr a = ae_scratch_alloc(&s, rows * cols, be->act_dtype);
    ae_ptr b = ae_scratch_alloc(&s, rows * cols, be->act_dtype);
    if (s.failed) return 0;
    be->fill(be, a, rows * cols, 1.0f);
    be->copy_rows(be, b, (int64_t)cols, a, (int64_t)cols, (int)rows, (int)cols);
    be->sync(be);
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = ae_time_now();
        be->copy_rows(be, b, (int64_t)cols, a, (int64_t)cols, (int)rows, (int)cols);
        be->sync(be);
        t[r] = ae_time_now() - t0;
    }
    ae_scratch_free(&s);
    return 2.0 * rows * cols * ae_dtype_size(be->act_dtype) / bench_median(t, 5);
}

// ---- what one token costs ----

typedef struct {
    double flops_per_token; // 2 · weights multiplied per token (no head, no embedding gather)
    double head_flops;      // 2 · V · D
    double weight_bytes;    // weights read by one decode step (MoE: routed experts only)
} model_cost;

static double module_values(ae_param_list l) {
    double n = 0;
    for (int i = 0; i < l.n; i++) n += (double)ae_param_numel(&l.p[i]);
    return n;
}

static model_cost cost_of(ae_model *m) {
    const ae_config *c = &m->cfg;
    double D = c->hidden_size, V = c->vocab_size, per_tok = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ae_layer *L = &m->layers[l];
        per_tok += L->kind == AE_ATTN_MLA ? module_values(ae_mla_params(&L->mla))
                                          : module_values(ae_gswa_params(&L->gqa));
        per_tok += 2 * D; // norms
        if (L->is_moe)
            per_tok += D * c->num_experts + 3.0 * c->num_experts_per_tok * c->moe_intermediate_size * D;
        else
            per_tok += 3.0 * c->intermediate_size * D;
    }
    model_cost k = {.flops_per_token = 2 * per_tok, .head_flops = 2 * V * D};
    k.weight_bytes = (per_tok + V * D + D) * ae_dtype_size(m->be->weight_dtype);
    return k;
}

// Attention FLOPs of a causal prefill of T tokens (QKᵀ and PV; sliding layers see W keys).
static double attn_flops(const ae_model *m, int T) {
    const ae_config *c = &m->cfg;
    double f = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        double H, dk, dv;
        int W = 0;
        if (m->layers[l].kind == AE_ATTN_MLA) {
            ae_mla_dims d = ae_model_mla_dims(c);
            H = d.H, dk = d.dn + d.dr, dv = d.dv;
        } else {
            ae_gswa_dims d = ae_model_gswa_dims(c, l);
            H = d.Hq, dk = d.hd, dv = d.hd, W = d.window;
        }
        double pairs = 0; // Σ_p visible keys of the query at position p
        for (int p = 0; p < T; p++) pairs += W > 0 && p + 1 > W ? W : p + 1;
        f += 2.0 * pairs * H * (dk + dv);
    }
    return f;
}

static void print_row(const opts *o, const ae_backend *be, const char *kind, int n, double s,
                      double tok_s, const char *metric, double value, double frac) {
    printf("bench_infer | %s | %s | %s | %d | %.4f s | %.1f tok/s | %s %.1f | %.1f%%\n", o->label,
           be->name, kind, n, s, tok_s, metric, value, 100 * frac);
    fflush(stdout);
}

static ae_status bench_prefill(const opts *o, ae_model *m, int T, const model_cost *k,
                               double gemm_peak) {
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size;
    int32_t *ids = ae_malloc(sizeof(int32_t) * (size_t)T);
    ae_ptr logits = be->alloc(be, (size_t)V, AE_DT_F32);
    ae_kv_cache c;
    ae_status st = ids && !ae_ptr_is_null(logits) ? ae_kv_cache_init(&c, m, T) : AE_ERR_NOMEM;
    if (st != AE_OK) {
        free(ids);
        be->free(be, logits);
        return st;
    }
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
    double t[16];
    int reps = o->reps < 16 ? o->reps : 16;
    for (int r = -1; r < reps && st == AE_OK; r++) { // r = -1: warm-up
        ae_kv_cache_reset(&c);
        double t0 = ae_time_now();
        st = ae_model_forward(m, &c, ids, T, logits, 0);
        if (st == AE_OK) st = be->sync(be);
        if (r >= 0) t[r] = ae_time_now() - t0;
    }
    double s = st == AE_OK ? bench_median(t, reps) : 0;
    if (st == AE_OK) {
        double flops = k->flops_per_token * T + attn_flops(m, T) + k->head_flops;
        print_row(o, be, "prefill", T, s, T / s, "TFLOP/s", flops / s / 1e12,
                  gemm_peak > 0 ? flops / s / gemm_peak : 0);
    }
    if (st == AE_OK && o->profile) { // one more prefill on the op profiler: where it goes
        const ae_backend *prof = ae_backend_profile_wrap(be);
        if (!prof) {
            st = AE_ERR_NOMEM;
        } else {
            ae_kv_cache_reset(&c);
            m->be = prof;
            st = ae_model_forward(m, &c, ids, T, logits, 0);
            m->be = be;
            char what[64];
            snprintf(what, sizeof what, "prefill of %d tokens", T);
            if (st == AE_OK) bench_print_profile(o->label, prof, what, 1, "prompt", s);
            ae_backend_profile_free(prof);
        }
    }
    ae_kv_cache_free(&c);
    be->free(be, logits);
    free(ids);
    return st;
}

// `n` greedy single-token steps from *id (each reads back its id, as a generation loop does).
static ae_status decode_steps(ae_model *m, ae_kv_cache *c, int32_t *id, ae_ptr logits,
                              ae_ptr best, int n) {
    const ae_backend *be = m->be;
    ae_status st = AE_OK;
    for (int i = 0; i < n && st == AE_OK; i++) {
        st = ae_model_decode_step(m, c, *id, logits);
        if (st == AE_OK) {
            be->argmax_rows(be, best, logits, 1, m->cfg.vocab_size);
            st = be->download(be, id, AE_DT_I32, best, 1);
        }
    }
    return st;
}

#define DECODE_WARMUP 2 // untimed steps before each mode's timed ones (a graph's first recording)

// One decode measurement on cache c (at position P + earlier modes' steps): op by op
// (graphs 0) or as CUDA graphs (graphs 1). *s: seconds per step.
static ae_status decode_mode(const opts *o, ae_model *m, ae_kv_cache *c, int32_t *id,
                             ae_ptr logits, ae_ptr best, int P, const model_cost *k,
                             double copy_peak, int graphs, double *s) {
    const ae_backend *be = m->be;
    int N = o->steps;
    c->graphs = graphs;
    ae_status st = decode_steps(m, c, id, logits, best, DECODE_WARMUP);
    double t0 = ae_time_now();
    if (st == AE_OK) st = decode_steps(m, c, id, logits, best, N);
    *s = (ae_time_now() - t0) / N;
    if (st != AE_OK) return st;
    // the cache of a sequence at the middle position of the steps: what one step reads
    double bytes = k->weight_bytes + (double)ae_kv_cache_bytes(m, c->n - N / 2);
    print_row(o, be, graphs ? "decode-graphs" : "decode", P, *s, 1 / *s, "GB/s", bytes / *s / 1e9,
              copy_peak > 0 ? bytes / *s / copy_peak : 0);
    if (graphs) {
        ae_graph_stats gs = {0};
        if (c->graph && be->graph_stats) be->graph_stats(be, c->graph, &gs);
        printf("bench_infer | %s | %s | graphs | %d | %ld of %ld steps recorded, %ld segments: "
               "%ld updated, %ld instantiated; %ld retries, %ld failed%s\n",
               o->label, be->name, P, gs.ran, gs.requests, gs.segments, gs.updated,
               gs.instantiated, gs.retries, gs.failed,
               be->graph_begin ? "" : " (this backend has no graphs)");
    }
    return AE_OK;
}

static ae_status bench_decode(const opts *o, ae_model *m, int P, const model_cost *k,
                              double copy_peak) {
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size, N = o->steps;
    int32_t *ids = ae_malloc(sizeof(int32_t) * (size_t)P);
    ae_ptr logits = be->alloc(be, (size_t)V, AE_DT_F32);
    ae_ptr best = be->alloc(be, 1, AE_DT_I32);
    ae_kv_cache c;
    // room for the warm-up and timed steps of each mode and, with --profile, N profiled ones
    int cap = P + (DECODE_WARMUP + N) * o->n_graphs + (o->profile ? N : 0) + 1;
    ae_status st = ids && !ae_ptr_is_null(logits) && !ae_ptr_is_null(best)
                       ? ae_kv_cache_init(&c, m, cap) : AE_ERR_NOMEM;
    if (st != AE_OK) {
        free(ids);
        be->free(be, logits);
        be->free(be, best);
        return st;
    }
    for (int i = 0; i < P; i++) ids[i] = (int32_t)((i * 7919u + 13u) % (unsigned)V);
    // the prompt in chunks of at most 8192 tokens, then the decode steps
    for (int p0 = 0; p0 < P && st == AE_OK; p0 += 8192)
        st = ae_model_forward(m, &c, ids + p0, P - p0 < 8192 ? P - p0 : 8192, logits, 0);
    int32_t id = 0;
    if (st == AE_OK) {
        be->argmax_rows(be, best, logits, 1, V);
        st = be->download(be, &id, AE_DT_I32, best, 1);
    }
    double s = 0;
    for (int i = 0; i < o->n_graphs && st == AE_OK; i++)
        st = decode_mode(o, m, &c, &id, logits, best, P, k, copy_peak, o->graphs[i], &s);
    c.graphs = 0;
    if (st == AE_OK && o->profile) { // the model runs on the profiler for N more steps
        const ae_backend *prof = ae_backend_profile_wrap(be);
        if (!prof) {
            st = AE_ERR_NOMEM;
        } else {
            m->be = prof;
            st = decode_steps(m, &c, &id, logits, best, N);
            m->be = be;
            char what[64];
            snprintf(what, sizeof what, "decode at %d, %d steps", P, N);
            if (st == AE_OK) bench_print_profile(o->label, prof, what, N, "tok", s);
            ae_backend_profile_free(prof);
        }
    }
    ae_kv_cache_free(&c);
    be->free(be, logits);
    be->free(be, best);
    free(ids);
    return st;
}

int main(int argc, char **argv) {
    opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: bench_infer (--config DIR | --model DIR | --peaks) [--device D]\n"
                        "         [--prefill 4096,32768] [--decode-at 4096,32768] "
                        "[--decode-steps N] [--reps R] [--label S] [--profile]\n"
                        "         [--graphs 0,1]\n");
        return 2;
    }
    const ae_backend *be;
    if (ae_backend_open(o.device, &be) != AE_OK) {
        fprintf(stderr, "bench_infer: %s\n", ae_last_error());
        return 1;
    }
    double gemm = 0, copy = 0;
    const char *g = getenv("AE_BENCH_GEMM_PEAK"), *b = getenv("AE_BENCH_COPY_PEAK");
    if (o.peaks) {
        gemm = bench_peak_gemm(be, 8192);
        copy = peak_copy(be);
        printf("bench_infer | peaks | %s | %s | gemm %.1f TFLOP/s | copy %.1f GB/s\n", be->name,
               be->device, gemm / 1e12, copy / 1e9);
    }
    if (g) gemm = atof(g) * 1e12; // from an earlier --peaks run
    if (b) copy = atof(b) * 1e9;
    if (!o.config && !o.model) return 0;
    ae_model *m = NULL;
    size_t free0, total;
    ae_backend_mem_info(be, &free0, &total);
    double t0 = ae_time_now();
    ae_status st = o.model ? ae_model_load(o.model, be, &m) : ae_model_random(o.config, be, 7, &m);
    if (st == AE_OK) st = be->sync(be);
    if (st != AE_OK) {
        fprintf(stderr, "bench_infer: %s\n", ae_last_error());
        return 1;
    }
    model_cost k = cost_of(m);
    printf("bench_infer | %s | %s | model | %.2f B params, %.2f GiB weights, made in %.1f s\n",
           o.label, be->name, m->n_params / 1e9, m->n_params * ae_dtype_size(be->weight_dtype) / 1073741824.0,
           ae_time_now() - t0);
    for (int i = 0; i < o.n_prefill && st == AE_OK; i++) st = bench_prefill(&o, m, o.prefill[i], &k, gemm);
    for (int i = 0; i < o.n_decode && st == AE_OK; i++) st = bench_decode(&o, m, o.decode_at[i], &k, copy);
    if (st != AE_OK) fprintf(stderr, "bench_infer: %s\n", ae_last_error());
    size_t free1;
    ae_backend_mem_info(be, &free1, &total);
    if (total)
        printf("bench_infer | %s | %s | memory | %.2f GiB in use after the run (pool high-water)\n",
               o.label, be->name, (double)(free0 - free1) / 1073741824.0);
    ae_model_free(m);
    ae_backend_close(be);
    return st == AE_OK ? 0 : 1;
}
