// The batch-1 decode GEMVs of the CUDA backend (backend/cuda_gemm.cu, k_gemv / k_gemv_set) on
// the weight shapes of Qwen3-8B and its MLA student, for each AE_CUDA_GEMV variant:
//   bench_gemv [--device cuda] [--m 1,2,4]
//              [--shapes qkv,o,gate_up,down,lm_head,kv_a,q_mla,gate_up_silu,gate_up_fused,
//                        moe_qkv,moe_o,router]
//              [--variants "V1;V2;..."] [--reps 5]
// Shapes, y (M, N) = x (M, K) · w (N, K)ᵀ, bf16 weights and activations:
//   qkv      4096 -> 4096 + 1024 + 1024   one matmul_group of 3 (one k_gemv_set launch)
//   o        4096 -> 4096
//   gate_up  4096 -> 2 x 12288            one matmul_group of 2
//   down     12288 -> 4096
//   lm_head  4096 -> 151936
//   kv_a     4096 -> 576                  MLA student: kv_a_proj_with_mqa (512 + 64)
//   q_mla    4096 -> 32·192               MLA student: q_proj (32 heads of 128 + 64)
//   moe_qkv  2048 -> 4096 + 512 + 512     Qwen3-30B-A3B's attention (only when --shapes names
//   moe_o    4096 -> 2048                 them, as the next): its q/k/v and o projections
//   router   2048 -> 128                  Qwen3-30B-A3B's MoE router (fp32 logits in the model;
//                                         act here: the same loads, a 128-wide tile grid)
//   gate_up_silu   4096 -> 2 x 12288, then silu_mul: the dense MLP's input as two launches
//   gate_up_fused  the same as one gate_up_silu launch (k_gemv_swiglu: SwiGLU in the epilogue);
//                  the teacher's and both students' MLPs (every layer of each is dense)
// Variants: AE_CUDA_GEMV values separated by ';' ("" or "default": the current kernel); the
// default list sweeps each knob of cuda_gemm.cu's header alone and a few pairs.
// Timing: each shape gets enough copies of its weights (>= 256 MiB in all, 5x the H200's L2)
// that back-to-back launches read from DRAM as decode does (one layer's weights are not in L2
// when the next layer runs); a launch cycles through them, 64 launches or one per copy per rep.
// Per rep: a 2 GiB device copy (~1 ms) fills the queue so that the host has queued every launch
// before the GPU reaches them (no launch gaps, as in a CUDA graph), then CUDA events on the
// backend's stream (ae_cuda_stream) around the launches; the time per launch is the best of
// --reps. pdl=1 overlaps each launch with the end of the one before (a GEMV after a GEMV here;
// in a decode step the kernel before is mostly not a GEMV), so its gain here is an upper bound:
// check it end to end (bench_infer with AE_CUDA_GEMV=pdl=1). GB/s counts the weight bytes read (x and y are < 0.1% of them); "% copy" is against
// the device copy rate measured the same way in the same run (a 2 GiB copy_rows, bytes read +
// written, best of 5: bench_infer's peak, timed with events). Last, per M, the teacher's decode
// GEMVs per token (36 layers of qkv, o, gate_up, down, then lm_head) in µs and as % of copy,
// per variant: the number to pick a default from; and the MLP input's 36 layers as two launches
// against the fused one (the time a token saves; GB/s of both count the weights alone).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/log.h"

#ifndef AE_HAVE_CUDA
int main(void) {
    fprintf(stderr, "bench_gemv: needs a CUDA build (-DAE_CUDA=ON) and a GPU\n");
    return 1;
}
#else
#include <cuda_runtime.h>

#include "backend/cuda.h"

enum { MAX_LIST = 32, MAX_PROD = 3, TEACHER_LAYERS = 36 };

enum { PLAIN = 0, SWIGLU_TWO = 1, SWIGLU_FUSED = 2 };

typedef struct {
    const char *name;
    int K, n;          // input width; products (one matmul_group when n > 1)
    int N[MAX_PROD];   // output widths
    int swiglu;        // gate and up with SwiGLU: PLAIN, SWIGLU_TWO (matmul_group + silu_mul),
                       // SWIGLU_FUSED (gate_up_silu)
} shape;

static const shape k_shapes[] = {
    {"qkv", 4096, 3, {4096, 1024, 1024}, PLAIN},
    {"o", 4096, 1, {4096}, PLAIN},
    {"gate_up", 4096, 2, {12288, 12288}, PLAIN},
    {"down", 12288, 1, {4096}, PLAIN},
    {"lm_head", 4096, 1, {151936}, PLAIN},
    {"kv_a", 4096, 1, {576}, PLAIN},
    {"q_mla", 4096, 1, {32 * 192}, PLAIN},
    {"moe_qkv", 2048, 3, {4096, 512, 512}, PLAIN},
    {"moe_o", 4096, 1, {2048}, PLAIN},
    {"router", 2048, 1, {128}, PLAIN},
    {"gate_up_silu", 4096, 2, {12288, 12288}, SWIGLU_TWO},
    {"gate_up_fused", 4096, 2, {12288, 12288}, SWIGLU_FUSED},
};
#define N_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

static const char *k_default_variants =
    "default;j=4;j=8;j=8,minb=4;minb=4;pipe=1;j=4,pipe=1;kw=4;kw=8;wps=16;wps=48;wps=64;split=2;"
    "split=4;split=8;pdl=1;pipe=1,pdl=1;j=4,pdl=1;split=4,pdl=1";

static size_t shape_bytes(const shape *s) {
    size_t b = 0;
    for (int i = 0; i < s->n; i++) b += (size_t)s->N[i] * s->K * 2;
    return b;
}

static int check_cuda(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 0;
    fprintf(stderr, "bench_gemv: %s: %s\n", what, cudaGetErrorString(e));
    return 1;
}

// Stream-ordered timer: milliseconds between its two marks on the backend's stream.
typedef struct {
    cudaStream_t stream;
    cudaEvent_t e0, e1;
} timer;

static int timer_init(timer *t, const ae_backend *be) {
    t->stream = (cudaStream_t)ae_cuda_stream(be);
    return check_cuda(cudaEventCreate(&t->e0), "cudaEventCreate") ||
           check_cuda(cudaEventCreate(&t->e1), "cudaEventCreate");
}

static double timer_ms(timer *t, const ae_backend *be) {
    float ms = 0;
    if (check_cuda(cudaEventRecord(t->e1, t->stream), "cudaEventRecord") ||
        check_cuda(cudaEventSynchronize(t->e1), "cudaEventSynchronize") ||
        check_cuda(cudaEventElapsedTime(&ms, t->e0, t->e1), "cudaEventElapsedTime") ||
        be->sync(be) != AE_OK)
        return -1;
    return ms;
}

// The queue filler and copy peak: two 2 GiB buffers.
typedef struct {
    ae_ptr a, b;
    int rows, cols;
} copy_bufs;

static void copy_once(const ae_backend *be, const copy_bufs *c) {
    be->copy_rows(be, c->b, c->cols, c->a, c->cols, c->rows, c->cols);
}

// The device copy rate (bytes read + written per second), best of reps.
static double copy_rate(const ae_backend *be, const copy_bufs *c, timer *t, int reps) {
    double best = 1e30;
    copy_once(be, c);
    for (int r = 0; r < reps; r++) {
        cudaEventRecord(t->e0, t->stream);
        copy_once(be, c);
        const double ms = timer_ms(t, be);
        if (ms <= 0) return 0;
        if (ms < best) best = ms;
    }
    return 2.0 * (double)c->rows * c->cols * 2 / (best * 1e-3);
}

// The weights of one shape: `copies` sets, each its n products; x (M, K) and y[i] (M, N[i]).
typedef struct {
    const shape *s;
    int M, copies;
    ae_ptr *w; // (copies · n)
    ae_ptr x, y[MAX_PROD];
} gemv_bufs;

static void launch(const ae_backend *be, const gemv_bufs *g, int copy) {
    const shape *s = g->s;
    const ae_ptr *w = g->w + (size_t)copy * s->n;
    if (s->swiglu == SWIGLU_FUSED) // act = g, as the dense MLP calls it
        be->gate_up_silu(be, g->y[0], g->y[0], g->y[1], g->x, w[0], w[1], g->M, s->K, s->N[0]);
    else if (s->n == 1) ae_matmul(be, g->y[0], g->x, w[0], g->M, s->K, s->N[0]);
    else be->matmul_group(be, s->n, g->y, g->x, w, s->N, g->M, s->K);
    if (s->swiglu == SWIGLU_TWO)
        be->silu_mul(be, g->y[0], g->y[0], g->y[1], (size_t)g->M * s->N[0]);
}

// Seconds per launch of the current AE_CUDA_GEMV variant, best of reps; < 0 on an error.
static double time_variant(const ae_backend *be, const gemv_bufs *g, const copy_bufs *fill,
                           timer *t, int reps) {
    const int iters = g->copies < 64 ? 64 : g->copies;
    for (int i = 0; i < g->copies; i++) launch(be, g, i); // warm-up
    if (be->sync(be) != AE_OK) return -1;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        copy_once(be, fill);
        cudaEventRecord(t->e0, t->stream);
        for (int i = 0; i < iters; i++) launch(be, g, i % g->copies);
        const double ms = timer_ms(t, be);
        if (ms < 0) return -1;
        if (ms < best) best = ms;
    }
    return best * 1e-3 / iters;
}

static int parse_ints(const char *v, int *out) {
    int n = 0;
    for (const char *p = v; *p && n < MAX_LIST;) {
        out[n++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return n;
}

// Splits a ';'-separated list in place; "default" is the empty variant.
static int parse_variants(char *v, const char **out) {
    int n = 0;
    for (char *p = v; p && n < MAX_LIST;) {
        char *end = strchr(p, ';');
        if (end) *end = 0;
        out[n++] = strcmp(p, "default") == 0 ? "" : p;
        p = end ? end + 1 : NULL;
    }
    return n;
}

static int wanted(const char *list, const char *name) {
    char l[512], k[64];
    snprintf(l, sizeof l, ",%s,", list);
    snprintf(k, sizeof k, ",%s,", name);
    return strstr(l, k) != NULL;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_gemv [--device cuda] [--m 1,2,4] "
                    "[--shapes qkv,o,gate_up,down,lm_head,kv_a,q_mla,gate_up_silu,gate_up_fused,moe_qkv,moe_o,router] "
                    "[--variants \"V1;V2\"] "
                    "[--reps 5]\n");
    return 2;
}

// Allocates the buffers of shape s at M rows (random N(0, 1) values; zeros would not show the
// cost of real data); 0 on success.
static int bufs_init(const ae_backend *be, ae_scratch *sc, gemv_bufs *g, const shape *s, int M) {
    memset(g, 0, sizeof *g);
    g->s = s, g->M = M;
    const size_t bytes = shape_bytes(s);
    g->copies = (int)(((size_t)256 << 20) / bytes) + 1;
    if (g->copies < 2) g->copies = 2;
    g->w = calloc((size_t)g->copies * s->n, sizeof *g->w);
    if (!g->w) return 1;
    // one buffer per product holding all its copies (small weights need many copies: more than
    // a scratch holds as separate buffers)
    for (int i = 0; i < s->n; i++) {
        const size_t numel = (size_t)s->N[i] * s->K;
        ae_ptr all = ae_scratch_alloc(sc, numel * (size_t)g->copies, be->weight_dtype);
        if (sc->failed) return 1;
        for (int c = 0; c < g->copies; c++) {
            ae_ptr p = ae_ptr_at(all, (size_t)c * numel);
            be->fill_normal(be, p, numel, 0.02f, 1000 + c * MAX_PROD + i);
            g->w[(size_t)c * s->n + i] = p;
        }
    }
    g->x = ae_scratch_alloc(sc, (size_t)M * s->K, be->act_dtype);
    for (int i = 0; i < s->n; i++)
        g->y[i] = ae_scratch_alloc(sc, (size_t)M * s->N[i], be->act_dtype);
    if (sc->failed) return 1;
    be->fill_normal(be, g->x, (size_t)M * s->K, 1.0f, 7);
    return 0;
}

int main(int argc, char **argv) {
    const char *device = "cuda",
               *shapes = "qkv,o,gate_up,down,lm_head,kv_a,q_mla,gate_up_silu,gate_up_fused";
    char *variant_list = strdup(k_default_variants);
    int ms[MAX_LIST] = {1, 2, 4}, nm = 3, reps = 5;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(argv[i], "--device")) device = v;
        else if (!strcmp(argv[i], "--m")) nm = parse_ints(v, ms);
        else if (!strcmp(argv[i], "--shapes")) shapes = v;
        else if (!strcmp(argv[i], "--variants")) free(variant_list), variant_list = strdup(v);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(v);
        else return usage();
        i++;
    }
    const char *variants[MAX_LIST];
    const int nv = parse_variants(variant_list, variants);
    for (int i = 0; i < nm; i++)
        if (ms[i] < 1 || ms[i] > 8) {
            fprintf(stderr, "bench_gemv: --m takes rows 1..8 (the GEMV path)\n");
            return 2;
        }
    if (reps < 1 || nv < 1) return usage();
    const ae_backend *be;
    if (ae_backend_open(device, &be) != AE_OK || strncmp(be->name, "cuda", 4) != 0) {
        fprintf(stderr, "bench_gemv: needs a cuda backend (%s): %s\n", device, ae_last_error());
        return 1;
    }
    timer t;
    if (timer_init(&t, be)) return 1;
    ae_scratch fs;
    ae_scratch_init(&fs, be);
    copy_bufs fill = {.rows = 1 << 15, .cols = 1 << 15}; // 1 Gi bf16 values = 2 GiB each
    fill.a = ae_scratch_alloc(&fs, (size_t)fill.rows * fill.cols, AE_DT_BF16);
    fill.b = ae_scratch_alloc(&fs, (size_t)fill.rows * fill.cols, AE_DT_BF16);
    if (fs.failed) {
        fprintf(stderr, "bench_gemv: out of memory for the copy buffers: %s\n", ae_last_error());
        return 1;
    }
    be->fill(be, fill.a, (size_t)fill.rows * fill.cols, 1.0f);
    const double copy = copy_rate(be, &fill, &t, 5);
    printf("bench_gemv | %s | copy %.0f GB/s (2 GiB copy_rows, read + written, best of 5)\n",
           be->device, copy / 1e9);
    printf("%-13s %2s  %-22s %9s %8s %7s\n", "shape", "M", "variant", "us", "GB/s", "% copy");
    // per M and variant: the teacher's per-token GEMV time (qkv, o, gate_up, down x 36 + lm_head)
    double teacher[MAX_LIST][MAX_LIST] = {{0}};
    int teacher_parts[MAX_LIST][MAX_LIST] = {{0}};
    // per M and variant: seconds per launch of the MLP input, two ops [0] and fused [1]
    double swiglu[MAX_LIST][MAX_LIST][2] = {{{0}}};
    double teacher_bytes = 0;
    for (int k = 0; k < N_SHAPES; k++) {
        const shape *s = &k_shapes[k];
        if (!wanted(shapes, s->name)) continue;
        const int layer = !strcmp(s->name, "qkv") || !strcmp(s->name, "o") ||
                          !strcmp(s->name, "gate_up") || !strcmp(s->name, "down");
        const int head = !strcmp(s->name, "lm_head");
        const double bytes = (double)shape_bytes(s);
        if (layer) teacher_bytes += TEACHER_LAYERS * bytes;
        if (head) teacher_bytes += bytes;
        for (int im = 0; im < nm; im++) {
            ae_scratch sc;
            ae_scratch_init(&sc, be);
            gemv_bufs g;
            if (bufs_init(be, &sc, &g, s, ms[im])) {
                fprintf(stderr, "bench_gemv: %s M %d: out of memory: %s\n", s->name, ms[im],
                        ae_last_error());
                return 1;
            }
            for (int v = 0; v < nv; v++) {
                if (setenv("AE_CUDA_GEMV", variants[v], 1) != 0) return 1;
                const double sec = time_variant(be, &g, &fill, &t, reps);
                if (sec <= 0) {
                    fprintf(stderr, "bench_gemv: %s M %d [%s] failed: %s\n", s->name, ms[im],
                            variants[v], ae_last_error());
                    return 1;
                }
                const double gbs = bytes / sec / 1e9;
                printf("%-13s %2d  %-22s %9.2f %8.0f %6.1f%%\n", s->name, ms[im],
                       variants[v][0] ? variants[v] : "default", sec * 1e6, gbs,
                       copy > 0 ? 100.0 * bytes / sec / copy : 0);
                if (s->swiglu != PLAIN) swiglu[im][v][s->swiglu == SWIGLU_FUSED] = sec;
                if (layer || head) {
                    teacher[im][v] += (layer ? TEACHER_LAYERS : 1) * sec;
                    teacher_parts[im][v]++;
                }
            }
            unsetenv("AE_CUDA_GEMV");
            ae_scratch_free(&sc);
            free(g.w);
        }
    }
    for (int im = 0; im < nm; im++)
        for (int v = 0; v < nv; v++)
            if (teacher_parts[im][v] == 5)
                printf("teacher decode GEMVs per token | M %d | %-22s | %8.1f us | "
                       "%5.1f%% of copy\n",
                       ms[im], variants[v][0] ? variants[v] : "default", teacher[im][v] * 1e6,
                       copy > 0 ? 100.0 * teacher_bytes / teacher[im][v] / copy : 0);
    for (int im = 0; im < nm; im++)
        for (int v = 0; v < nv; v++) {
            const double two = swiglu[im][v][0], fused = swiglu[im][v][1];
            if (two > 0 && fused > 0)
                printf("MLP gate/up + SwiGLU per token (%d layers) | M %d | %-22s | two ops "
                       "%7.1f us | fused %7.1f us | saved %6.1f us (%.1f%%)\n",
                       TEACHER_LAYERS, ms[im], variants[v][0] ? variants[v] : "default",
                       TEACHER_LAYERS * two * 1e6, TEACHER_LAYERS * fused * 1e6,
                       TEACHER_LAYERS * (two - fused) * 1e6, 100.0 * (two - fused) / two);
        }
    ae_scratch_free(&fs);
    cudaEventDestroy(t.e0);
    cudaEventDestroy(t.e1);
    ae_backend_close(be);
    free(variant_list);
    return 0;
}
#endif
