// Whole models on the GPU against the CPU: the three trained teachers in ../shared/teachers
// (qwen3-micro dense, qwen3-small dense and sharded, qwen3-moe with 8 experts) and, for each, an
// MLA and a GateSWA student made from it here (teacher init), saved and loaded back on both
// backends. Per model:
//   - eval ppl (first ~20 KB of the held-out valid.txt, ctx 256): GPU mean NLL within 0.3% of
//     the CPU's;
//   - cached decode equals recompute on the GPU: the logits of a 64-token prefill + 32 one-token
//     decode steps against one 96-token forward, every row within 2e-2 relative L2 (more where
//     the model's own bf16 noise is larger, see TOL_DECODE_ROW) and the same argmax on >= 95%
//     of the rows whose fp32 top-2 margin is above the bf16 noise (MIN_DECODE_ARGMAX);
//   - greedy generation on both backends from 10 prompts (24-token windows of valid.txt), 16
//     tokens each: all equal on >= 9 prompts for a teacher (see MIN_GREEDY_TEACHER).
// The MLA student decodes (T == 1) in the absorbed form and prefills materialised, so its decode
// check compares the two forms on the GPU, and its greedy check the absorbed GPU path with the
// CPU's. The qwen3-moe rows run the MoE router and experts (moe_route, moe_ffn) on the GPU.
//
// Needs a CUDA build, a GPU and ../shared; prints "SKIP ..." and exits 77 otherwise (with
// AE_REQUIRE_GPU=1, as scripts/test-gpu.sh sets, a missing GPU is a failure instead). A table of
// the numbers is printed at the end for the log.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/file.h"
#include "eval/ppl.h"
#include "infer/generate.h"
#include "infer/sample.h"
#include "model/model.h"
#include "model/save.h"
#include "model/student.h"
#include "tok/tokenizer.h"
#include "util/testutil.h"

// Mean NLL of eval ppl, GPU vs CPU, relative: bf16 weights/activations move single tokens' NLL by
// ~1e-2 in either direction; over ~5000 scored tokens the mean moves by < 0.1% (a systematic error,
// e.g. a mis-scaled softmax or a wrong position, moves it by whole percents).
#define TOL_PPL_REL 3e-3
// Cached decode vs recompute on the GPU, relative L2 of each logit row: both are bf16 runs whose
// kernels differ (prefill tiles vs decode GEMV, materialised vs absorbed MLA, ring vs staging
// buffer): ~5e-3 for the teachers; 2e-2 allows the accumulated bf16 rounding of a few layers.
// Some models amplify bf16 rounding far more: MLA students made by teacher init (untrained) come
// out 3-5e-2 per row from their own fp32 logits on any bf16 path, materialised or absorbed
// (measured with an emulated bf16 backend). So the bound is calibrated by the model's own bf16
// noise, measured in the same run as the worst row of the GPU's full forward against the CPU's:
// max(2e-2, 2 x noise), capped at 0.25 (a real cached-decode bug — a stale or missing cache row,
// a wrong position — moves whole rows by more). A broken full forward cannot hide behind a large
// noise: the ppl check bounds it.
#define TOL_DECODE_ROW 2e-2
#define DECODE_NOISE_FACTOR 2.0
#define TOL_DECODE_CAP 0.25
// ... and the argmax of a row agrees on >= 95% of the decisive rows: those where the CPU's fp32
// logits put their top token ahead of the second by more than twice the largest deviation of the
// GPU's full forward from them on that row (the model's own bf16 noise there). A near-tie inside
// that noise flips either way on any bf16 path (an untrained MLA student of qwen3-small: 5 of 96
// rows flipped with the absorbed decode fused and unfused alike, H200 2026-11-30), while a cached
// decode that is wrong moves decisive rows too. At least a quarter of the rows must be decisive.
#define MIN_DECODE_ARGMAX 0.95
#define MIN_DECISIVE_ROWS (DEC_LEN / 4)
// Greedy: prompts (of 10) whose 16 generated tokens all equal the CPU's. bf16 rounding can flip a
// near-tie between the top two logits and the continuation diverges from there, so one prompt of
// ten may differ for a teacher (emulated bf16: qwen3-micro 9/10, the others 10/10). Students
// (teacher init, untrained) are far noisier in bf16 (see above; emulated MLA students: 3 to 8 of
// 10 prompts in full), so for them the 16-token agreement is printed, and required is only that
// 7 of 10 prompts agree on their first STUDENT_PREFIX tokens (the first from the prefill, the
// rest from decode steps: the absorbed path for MLA; emulated: 9 or 10 of 10).
#define MIN_GREEDY_TEACHER 9
#define MIN_GREEDY_STUDENT 7
#define STUDENT_PREFIX 4

enum { N_PROMPTS = 10, PROMPT_LEN = 24, GEN_LEN = 16, DEC_PREFILL = 64, DEC_STEPS = 32 };
enum { DEC_LEN = DEC_PREFILL + DEC_STEPS, PPL_CTX = 256, TEXT_BYTES = 20000 };

static const ae_backend *g_gpu, *g_cpu;
static char *g_text;   // the first ~20 KB of valid.txt, cut after a newline
static size_t g_len;
static char *g_tmp;    // students are written here

typedef struct {
    char model[48];
    long long tokens;
    double cpu_nll, gpu_nll, rel;
    double noise;       // worst row, GPU full forward vs CPU full forward (relative L2)
    double dec_max_rel; // worst row, GPU cached decode vs GPU recompute
    double dec_tol;
    int dec_argmax; // decisive rows with the same argmax
    int dec_decisive; // rows (of DEC_LEN) whose fp32 top-2 margin exceeds twice the bf16 noise
    int greedy_full; // prompts (of N_PROMPTS) with all GEN_LEN tokens equal
    int greedy_tok;  // tokens (of N_PROMPTS · GEN_LEN) equal before the first divergence
    int greedy_prefix; // prompts whose first STUDENT_PREFIX tokens agree
} result_row;

static result_row g_rows[16];
static int g_nrows;

// Columns: eval ppl (tokens scored, mean NLL on each backend, relative difference); bf16 noise
// (worst logit row of the GPU's full forward vs the CPU's); cached decode vs recompute on the GPU
// (worst row, its bound, decisive rows with the same argmax / decisive rows); greedy (prompts
// with all 16 tokens equal, equal tokens before the first divergence).
static void print_header(void) {
    printf("%-20s %6s %9s %9s %8s %8s %8s %8s %6s %6s %7s\n", "model", "tokens", "cpu nll",
           "gpu nll", "rel diff", "noise", "dec err", "dec tol", "argmax", "greedy", "tokens");
}

static void print_row(const result_row *r) {
    printf("%-20s %6lld %9.5f %9.5f %8.1e %8.1e %8.1e %8.1e %3d/%-2d %3d/%-2d %3d/%-3d\n", r->model,
           r->tokens, r->cpu_nll, r->gpu_nll, r->rel, r->noise, r->dec_max_rel, r->dec_tol,
           r->dec_argmax, r->dec_decisive, r->greedy_full, N_PROMPTS, r->greedy_tok, N_PROMPTS * GEN_LEN);
}

static ae_model *load(const char *dir, const ae_backend *be) {
    ae_model *m = NULL;
    if (ae_model_load(dir, be, &m) != AE_OK)
        fail_msg("load %s on %s: %s", dir, be->name, ae_last_error());
    return m;
}

// ---- eval ppl ---------------------------------------------------------------------------------

static ae_ppl ppl_of(const ae_model *m, const ae_tokenizer *tok, const char *label) {
    ae_ppl p;
    memset(&p, 0, sizeof p);
    if (ae_ppl_text(m, tok, g_text, g_len, PPL_CTX, 0, &p) != AE_OK)
        fail_msg("%s: eval ppl on %s: %s", label, m->be->name, ae_last_error());
    return p;
}

// ---- cached decode vs recompute (GPU) -----------------------------------------------------------

static float *logits_to_host(const ae_backend *be, ae_ptr d, size_t n, const char *label) {
    float *h = malloc(sizeof(float) * n);
    assert_non_null(h);
    if (be->download(be, h, AE_DT_F32, d, n) != AE_OK)
        fail_msg("%s: download of logits: %s", label, ae_last_error());
    return h;
}

// Logits (DEC_LEN, V) of a DEC_LEN-token forward (split == DEC_LEN), or of a `split`-token
// prefill followed by one-token decode steps, as a host array.
static float *run_logits(const ae_model *m, const int32_t *ids, int split, const char *label) {
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size;
    size_t n = (size_t)DEC_LEN * V;
    ae_ptr d = be->alloc(be, n, AE_DT_F32);
    if (ae_ptr_is_null(d)) fail_msg("%s: alloc on %s: %s", label, be->name, ae_last_error());
    ae_kv_cache c;
    if (ae_kv_cache_init(&c, m, DEC_LEN) != AE_OK) fail_msg("%s: cache: %s", label, ae_last_error());
    if (ae_model_forward(m, &c, ids, split, d, 1) != AE_OK)
        fail_msg("%s: %d-token forward on %s: %s", label, split, be->name, ae_last_error());
    for (int t = split; t < DEC_LEN; t++)
        if (ae_model_forward(m, &c, ids + t, 1, ae_ptr_at(d, (size_t)t * V), 1) != AE_OK)
            fail_msg("%s: decode step at position %d on %s: %s", label, t, be->name, ae_last_error());
    float *h = logits_to_host(be, d, n, label);
    ae_kv_cache_free(&c);
    be->free(be, d);
    return h;
}

// Worst per-row relative L2 of a against the reference rows b (NaN if any row is NaN).
static double worst_row(const float *a, const float *b, int V) {
    double w = 0;
    for (int t = 0; t < DEC_LEN; t++) {
        double e = ae_test_rel_err(a + (size_t)t * V, b + (size_t)t * V, (size_t)V);
        if (!isnan(w) && !(e <= w)) w = e;
    }
    return w;
}

// GPU: one DEC_LEN-token forward vs a DEC_PREFILL-token prefill and DEC_STEPS one-token steps
// (all logits, every row compared); the bound from the GPU-vs-CPU noise of the full forward.
// Whether the fp32 row ref puts its top logit ahead of the second by more than twice the largest
// |gpu − ref| of the row (see MIN_DECODE_ARGMAX).
static int decisive_row(const float *ref, const float *gpu, int V) {
    float top1 = -INFINITY, top2 = -INFINITY, dev = 0.0f;
    for (int i = 0; i < V; i++) {
        if (ref[i] > top1) top2 = top1, top1 = ref[i];
        else if (ref[i] > top2) top2 = ref[i];
        dev = fmaxf(dev, fabsf(gpu[i] - ref[i]));
    }
    return top1 - top2 > 2.0f * dev;
}

static void decode_vs_recompute(const ae_model *mc, const ae_model *mg, const int32_t *ids,
                                result_row *row, const char *label) {
    int V = mg->cfg.vocab_size;
    float *full = run_logits(mg, ids, DEC_LEN, label), *inc = run_logits(mg, ids, DEC_PREFILL, label);
    float *ref = run_logits(mc, ids, DEC_LEN, label);
    row->noise = worst_row(full, ref, V);
    row->dec_max_rel = worst_row(inc, full, V);
    row->dec_tol = fmin(TOL_DECODE_CAP, fmax(TOL_DECODE_ROW, DECODE_NOISE_FACTOR * row->noise));
    row->dec_argmax = row->dec_decisive = 0;
    for (int t = 0; t < DEC_LEN; t++) {
        const float *f = full + (size_t)t * V, *c = inc + (size_t)t * V, *r = ref + (size_t)t * V;
        if (!decisive_row(r, f, V)) continue;
        row->dec_decisive++;
        row->dec_argmax += ae_argmax(f, V) == ae_argmax(c, V);
    }
    free(full);
    free(inc);
    free(ref);
}

// ---- greedy generation ----------------------------------------------------------------------

typedef struct {
    int32_t *ids;
    int n;
} collected;

static int on_token(void *ud, int32_t id) {
    collected *c = ud;
    if (c->n < GEN_LEN) c->ids[c->n++] = id;
    return 0;
}

static void greedy(const ae_model *m, const int32_t *prompt, int32_t *out, const char *label) {
    ae_sampler s;
    ae_sampler_params p = {.greedy = 1};
    if (ae_sampler_init(&s, &p, m->cfg.vocab_size) != AE_OK) fail_msg("%s", ae_last_error());
    collected c = {.ids = out, .n = 0};
    ae_gen_stats st;
    if (ae_generate(m, prompt, PROMPT_LEN, GEN_LEN, &s, -1, on_token, &c, &st) != AE_OK)
        fail_msg("%s: generate on %s: %s", label, m->be->name, ae_last_error());
    if (c.n != GEN_LEN) fail_msg("%s: generate on %s gave %d tokens, not %d", label, m->be->name, c.n, GEN_LEN);
    ae_sampler_free(&s);
}

// The prompts: N_PROMPTS windows of PROMPT_LEN tokens spread over the text.
static void greedy_agreement(const ae_model *mc, const ae_model *mg, const int32_t *ids, size_t n,
                             result_row *row, const char *label) {
    size_t step = (n - 64 - PROMPT_LEN) / N_PROMPTS;
    row->greedy_full = row->greedy_tok = row->greedy_prefix = 0;
    printf("%s greedy, first divergence per prompt (%d = none):", label, GEN_LEN);
    for (int i = 0; i < N_PROMPTS; i++) {
        const int32_t *prompt = ids + 64 + (size_t)i * step;
        int32_t oc[GEN_LEN], og[GEN_LEN];
        greedy(mc, prompt, oc, label);
        greedy(mg, prompt, og, label);
        int same = 0;
        while (same < GEN_LEN && oc[same] == og[same]) same++;
        row->greedy_tok += same;
        row->greedy_full += same == GEN_LEN;
        row->greedy_prefix += same >= STUDENT_PREFIX;
        printf(" %d", same);
    }
    printf("\n");
}

// ---- one model ------------------------------------------------------------------------------

static void check_model(const char *label, const char *dir, int is_student) {
    printf("\n-- %s (%s)\n", label, dir);
    fflush(stdout);
    ae_model *mc = load(dir, g_cpu), *mg = load(dir, g_gpu);
    ae_tokenizer *tok = NULL;
    if (ae_tokenizer_load(dir, &tok) != AE_OK) fail_msg("%s: tokenizer: %s", label, ae_last_error());
    int32_t *ids = NULL;
    size_t n = 0;
    if (ae_tokenizer_encode(tok, g_text, g_len, &ids, &n) != AE_OK)
        fail_msg("%s: encode: %s", label, ae_last_error());
    if (n < 64 + DEC_LEN + N_PROMPTS * PROMPT_LEN)
        fail_msg("%s: the text has only %zu tokens", label, n);

    result_row *row = &g_rows[g_nrows++];
    memset(row, 0, sizeof *row);
    snprintf(row->model, sizeof row->model, "%s", label);
    ae_ppl pc = ppl_of(mc, tok, label), pg = ppl_of(mg, tok, label);
    row->tokens = (long long)pc.tokens;
    row->cpu_nll = pc.tokens ? pc.nll_sum / (double)pc.tokens : NAN;
    row->gpu_nll = pg.tokens ? pg.nll_sum / (double)pg.tokens : NAN;
    row->rel = fabs(row->gpu_nll - row->cpu_nll) / row->cpu_nll;
    decode_vs_recompute(mc, mg, ids + 64, row, label);
    greedy_agreement(mc, mg, ids, n, row, label);
    print_header();
    print_row(row);
    fflush(stdout);

    if (pc.tokens != pg.tokens || pc.tokens < 1000)
        fail_msg("%s: eval ppl scored %lld tokens on the cpu, %lld on the gpu", label,
                 (long long)pc.tokens, (long long)pg.tokens);
    if (!(row->rel <= TOL_PPL_REL))
        fail_msg("%s: eval ppl mean NLL gpu %.6f vs cpu %.6f: relative difference %.3g > %.3g",
                 label, row->gpu_nll, row->cpu_nll, row->rel, TOL_PPL_REL);
    if (!(row->dec_max_rel <= row->dec_tol))
        fail_msg("%s: cached decode vs recompute on the gpu: a logit row differs by %.3g "
                 "(relative L2) > %.3g (bf16 noise of the model: %.3g)", label, row->dec_max_rel,
                 row->dec_tol, row->noise);
    if (row->dec_decisive < MIN_DECISIVE_ROWS)
        fail_msg("%s: cached decode vs recompute: only %d of %d rows have an fp32 top-2 margin "
                 "above the bf16 noise (need %d)", label, row->dec_decisive, DEC_LEN,
                 MIN_DECISIVE_ROWS);
    if (row->dec_argmax < (int)ceil(MIN_DECODE_ARGMAX * row->dec_decisive))
        fail_msg("%s: cached decode vs recompute on the gpu: argmax agrees on %d of %d decisive "
                 "rows (< %.0f%%)", label, row->dec_argmax, row->dec_decisive,
                 100 * MIN_DECODE_ARGMAX);
    if (!is_student && row->greedy_full < MIN_GREEDY_TEACHER)
        fail_msg("%s: greedy generation: %d of %d prompts give the cpu's %d tokens (need %d)",
                 label, row->greedy_full, N_PROMPTS, GEN_LEN, MIN_GREEDY_TEACHER);
    if (is_student && row->greedy_prefix < MIN_GREEDY_STUDENT)
        fail_msg("%s: greedy generation: %d of %d prompts give the cpu's first %d tokens (need %d)",
                 label, row->greedy_prefix, N_PROMPTS, STUDENT_PREFIX, MIN_GREEDY_STUDENT);
    free(ids);
    ae_tokenizer_free(tok);
    ae_model_free(mc);
    ae_model_free(mg);
}

// The teacher at tdir turned into a student (teacher init) on the cpu and saved under g_tmp.
static char *make_student(const char *tdir, const char *name, ae_attn_kind kind) {
    ae_model *m = load(tdir, g_cpu);
    ae_student_spec spec = {.target = kind, .init_teacher = 1, .seed = 1};
    if (kind == AE_ATTN_GATESWA) {
        // window 64 and every other layer sliding, so windows (and the ring buffer) matter in
        // the 96-token decode check and the 256-token ppl windows; sinks on
        spec.window = 64;
        spec.full_every = 2;
        spec.sinks = 1;
        spec.gate = AE_GATE_ELEMENTWISE;
    }
    ae_init_report rep;
    if (ae_student_make(m, &spec, &rep) != AE_OK)
        fail_msg("%s: make %s student: %s", name, ae_attn_kind_name(kind), ae_last_error());
    char sub[128];
    snprintf(sub, sizeof sub, "%s-%s", name, ae_attn_kind_name(kind));
    char *out = ae_path_join(g_tmp, sub);
    assert_non_null(out);
    ae_save_opts so = {.src_dir = tdir, .force = 1};
    if (ae_model_save(m, out, &so) != AE_OK)
        fail_msg("%s: save student to %s: %s", name, out, ae_last_error());
    ae_model_free(m);
    return out;
}

static void check_family(const char *name) {
    char rel[64];
    snprintf(rel, sizeof rel, "teachers/%s", name);
    const char *found = ae_test_shared(rel, name);
    if (!found) skip();
    char tdir[4096];
    snprintf(tdir, sizeof tdir, "%s", found);
    check_model(name, tdir, 0);
    const ae_attn_kind kinds[2] = {AE_ATTN_MLA, AE_ATTN_GATESWA};
    for (int k = 0; k < 2; k++) {
        char *sdir = make_student(tdir, name, kinds[k]);
        char label[48];
        snprintf(label, sizeof label, "%s %s", name,
                 kinds[k] == AE_ATTN_MLA ? "mla" : "gateswa");
        check_model(label, sdir, 1);
        ae_test_rmtree(sdir);
        free(sdir);
    }
}

static void test_qwen3_micro(void **state) {
    (void)state;
    check_family("qwen3-micro");
}

static void test_qwen3_small(void **state) {
    (void)state;
    check_family("qwen3-small");
}

static void test_qwen3_moe(void **state) {
    (void)state;
    check_family("qwen3-moe");
}

static int print_table(void **state) {
    (void)state;
    printf("\n== GPU vs CPU, whole models (ppl: first %zu bytes of valid.txt, ctx %d; decode: %d "
           "prefill + %d steps vs %d; greedy: %d prompts x %d tokens)\n",
           g_len, PPL_CTX, DEC_PREFILL, DEC_STEPS, DEC_LEN, N_PROMPTS, GEN_LEN);
    print_header();
    for (int i = 0; i < g_nrows; i++) print_row(&g_rows[i]);
    fflush(stdout);
    return 0;
}

// ---- setup ----------------------------------------------------------------------------------


// The first TEXT_BYTES of valid.txt, cut after the last newline (a UTF-8 boundary).
static int load_text(const char *path) {
    char *all = NULL;
    size_t len = 0;
    if (ae_file_read_all(path, &all, &len) != AE_OK) {
        printf("FAIL: %s\n", ae_last_error());
        return 1;
    }
    size_t n = len < TEXT_BYTES ? len : TEXT_BYTES;
    while (n > 0 && all[n - 1] != '\n') n--;
    if (n == 0) n = len;
    all[n] = '\0';
    g_text = all;
    g_len = n;
    return 0;
}

// After the GPU opened: the shared files (77 without them), the text, the banner.
static int before(void) {
    const char *valid = ae_test_shared("data/corpus/general/valid.txt", "cuda model tests");
    if (!valid || !ae_test_shared("teachers", "cuda model tests")) return 77;
    if (load_text(valid)) return 1;
    printf("cuda backend: %s (%s); cpu reference: %s\n", g_gpu->name, g_gpu->device, g_cpu->device);
    fflush(stdout);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_micro),
        cmocka_unit_test(test_qwen3_small),
        cmocka_unit_test(test_qwen3_moe),
    };
    g_cpu = ae_backend_cpu();
    ae_test_gpu_group g = {.gpu = &g_gpu, .tmp = &g_tmp, .before = before, .teardown = print_table};
    int rc = ae_test_gpu_main(&g, tests);
    free(g_text);
    return rc;
}
