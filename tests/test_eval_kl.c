// eval kl (src/eval/kl.c, ae_kl_text, and the `attnedit eval kl` command) against a reference
// computed here in double from the two models' logits (both on the cpu backend):
//   - KL(teacher ‖ student) — the direction matters: the students are chosen so that
//     KL(p‖q) and KL(q‖p) differ by far more than the tolerance (checked) — top-1 agreement,
//     both NLLs, tokens, overall and by position bucket;
//   - teacher against itself: KL exactly 0, top-1 agreement 1, equal NLLs;
//   - the position buckets: 0-127, 128-511, 512-1023, then doubling, the last one cut at ctx
//     (edges written out from the documentation for several ctx), tokens counted per bucket,
//     windows shorter than ctx and shorter than a bucket edge (a document's last window);
//   - the CLI's --json numbers on a saved student equal the reference (teacher and student not
//     swapped on the way).
// Documents are split here on "<|endoftext|>" and scored in windows of ctx tokens with stride
// ctx, each from an empty cache (the protocol of docs/DISTILL.md and eval/ppl.h).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "eval/kl.h"
#include "model/student.h"
#include "util/testutil.h"

#define MICRO "models/qwen3-micro"

typedef struct {
    int64_t tokens, top1;
    double kl, kl_rev, nll_t, nll_s; // sums; kl_rev = KL(student ‖ teacher), the wrong direction
} ref_acc;

typedef struct {
    int n;                          // buckets
    int edge[AE_KL_MAX_BUCKETS + 1]; // bucket b = [edge[b], edge[b+1])
    ref_acc all, b[AE_KL_MAX_BUCKETS];
} ref_result;

static ae_model *g_teacher, *g_gswa, *g_mla;
static ae_tokenizer *g_tok;
static char *g_dir, *g_mla_dir, *g_gswa_dir, *g_text_path;
static char *g_text, *g_long; // two documents (the starts of data/sample.txt's); one long document
static size_t g_text_len, g_long_len;

// Bucket edges for ctx from the documented rule, written out for the ctx values used here.
static int doc_edges(int ctx, int *edge) {
    static const struct {
        int ctx, n, e[8];
    } tab[] = {
        {2, 1, {0, 2}},
        {64, 1, {0, 64}},
        {128, 1, {0, 128}},
        {129, 2, {0, 128, 129}},
        {512, 2, {0, 128, 512}},
        {513, 3, {0, 128, 512, 513}},
        {1024, 3, {0, 128, 512, 1024}},
        {1100, 4, {0, 128, 512, 1024, 1100}},
        {2048, 4, {0, 128, 512, 1024, 2048}},
        {2100, 5, {0, 128, 512, 1024, 2048, 2100}},
        {4100, 6, {0, 128, 512, 1024, 2048, 4096, 4100}},
    };
    for (size_t i = 0; i < sizeof tab / sizeof *tab; i++)
        if (tab[i].ctx == ctx) {
            memcpy(edge, tab[i].e, sizeof(int) * (size_t)(tab[i].n + 1));
            return tab[i].n;
        }
    fail_msg("no documented bucket edges for ctx %d in the test's table", ctx);
    return 0;
}

static void acc_add(ref_acc *a, double kl, double klr, int agree, double nt, double ns) {
    a->tokens++;
    a->top1 += agree;
    a->kl += kl;
    a->kl_rev += klr;
    a->nll_t += nt;
    a->nll_s += ns;
}

static int argmax(const float *z, int V) {
    int b = 0;
    for (int i = 1; i < V; i++)
        if (z[i] > z[b]) b = i;
    return b;
}

static void logits_of(const ae_model *m, const int32_t *ids, int T, float *out) {
    ae_kv_cache c;
    assert_int_equal(ae_kv_cache_init(&c, m, T), AE_OK);
    assert_int_equal(ae_model_forward(m, &c, ids, T, ae_host_f32(out), 1), AE_OK);
    ae_kv_cache_free(&c);
}

// One document: windows of ctx tokens, stride ctx; row i of a window is position i.
static void ref_doc(const ae_model *t, const ae_model *s, const int32_t *ids, size_t n, int ctx,
                    ref_result *r) {
    int V = t->cfg.vocab_size;
    float *lt = malloc(sizeof(float) * (size_t)ctx * V), *ls = malloc(sizeof(float) * (size_t)ctx * V);
    for (size_t w = 0; w + 1 < n; w += (size_t)ctx) {
        int T = (int)(n - 1 - w < (size_t)ctx ? n - 1 - w : (size_t)ctx);
        logits_of(t, ids + w, T, lt);
        logits_of(s, ids + w, T, ls);
        for (int i = 0; i < T; i++) {
            const float *a = lt + (size_t)i * V, *b = ls + (size_t)i * V;
            double la = ae_test_logsumexp(a, V, 1.0f, NULL), lb = ae_test_logsumexp(b, V, 1.0f, NULL);
            // both directions through the tests' one KL reference (tests/util/ref.h)
            double kl = ae_ref_kl_row(a, b, V, 1.0f), klr = ae_ref_kl_row(b, a, V, 1.0f);
            int y = ids[w + (size_t)i + 1], agree = argmax(a, V) == argmax(b, V);
            double nt = la - a[y], ns = lb - b[y];
            acc_add(&r->all, kl, klr, agree, nt, ns);
            int hits = 0;
            for (int k = 0; k < r->n; k++)
                if (i >= r->edge[k] && i < r->edge[k + 1]) {
                    acc_add(&r->b[k], kl, klr, agree, nt, ns);
                    hits++;
                }
            assert_int_equal(hits, 1); // the buckets tile [0, ctx)
        }
    }
    free(lt);
    free(ls);
}

typedef struct {
    const ae_model *t, *s;
    int ctx;
    ref_result *r;
} ref_job;

static void ref_job_doc(const int32_t *ids, size_t n, void *p) {
    ref_job *j = p;
    ref_doc(j->t, j->s, ids, n, j->ctx, j->r);
}

static void ref_text(const ae_model *t, const ae_model *s, const char *text, size_t len, int ctx,
                     ref_result *r) {
    memset(r, 0, sizeof *r);
    r->n = doc_edges(ctx, r->edge);
    ref_job j = {.t = t, .s = s, .ctx = ctx, .r = r};
    ae_test_each_doc(g_tok, text, len, ref_job_doc, &j);
}

// Tolerances. The library reduces each row in double and rounds it to float (relative 6e-8)
// before summing in double, from the same logits: sums agree to 1e-6 relative; rows where the
// two models agree to rounding (KL ~1e-9, clamped at 0 by the library) add at most 1e-8 each.
#define REL_TOL 1e-6
static void same_sum(const char *what, double got, double want, int64_t rows) {
    double tol = REL_TOL * fabs(want) + 1e-8 * (double)rows;
    if (!(fabs(got - want) <= tol)) fail_msg("%s: %.9g, reference %.9g (tolerance %.2g)", what, got, want, tol);
}

static void same_acc(const char *where, const ae_kl_acc *a, const ref_acc *r) {
    char w[96];
    if (a->tokens != r->tokens) fail_msg("%s: %lld tokens, reference %lld", where, (long long)a->tokens, (long long)r->tokens);
    // identical logits, identical argmax rule (lowest id on ties): exact
    if (a->top1 != r->top1) fail_msg("%s: top-1 %lld, reference %lld", where, (long long)a->top1, (long long)r->top1);
    snprintf(w, sizeof w, "%s KL", where);
    same_sum(w, a->kl, r->kl, r->tokens);
    snprintf(w, sizeof w, "%s teacher NLL", where);
    same_sum(w, a->nll_t, r->nll_t, r->tokens);
    snprintf(w, sizeof w, "%s student NLL", where);
    same_sum(w, a->nll_s, r->nll_s, r->tokens);
}

// ae_kl_text == the reference, overall and per bucket; the reference's wrong-direction KL is
// far outside the tolerance (so a swapped direction cannot pass).
static void check_against_ref(const char *label, const ae_model *s, const char *text, size_t len, int ctx,
                              const ref_result *ref) {
    static ae_kl_result res;
    const ae_model *one[1] = {s};
    // chunks of 37 rows (the window runs through each model's cache in pieces) and the default
    for (int pass = 0; pass < 2; pass++) {
    int chunk = pass ? 0 : 37;
    assert_int_equal(ae_kl_text(g_teacher, one, 1, g_tok, text, len, ctx, chunk, 0, &res), AE_OK);
    printf("chunk %d: ", chunk);
    printf("%s, ctx %d: %lld tokens, KL(t||s) %.5f (reference %.5f; KL(s||t) %.5f), top1 %.4f, "
           "ppl t %.3f s %.3f\n", label, ctx, (long long)res.all.tokens, res.all.kl / res.all.tokens,
           ref->all.kl / ref->all.tokens, ref->all.kl_rev / ref->all.tokens,
           (double)res.all.top1 / res.all.tokens, exp(res.all.nll_t / res.all.tokens),
           exp(res.all.nll_s / res.all.tokens));
    double gap = fabs(ref->all.kl - ref->all.kl_rev);
    assert_true(gap > 1000 * (REL_TOL * ref->all.kl + 1e-8 * ref->all.tokens));
    same_acc("all", &res.all, &ref->all);
    assert_int_equal(res.n_buckets, ref->n);
    for (int b = 0; b < ref->n; b++) {
        char w[64];
        snprintf(w, sizeof w, "bucket %d-%d", ref->edge[b], ref->edge[b + 1] - 1);
        assert_int_equal(res.bucket_lo[b], ref->edge[b]);
        assert_int_equal(res.bucket_hi[b], ref->edge[b + 1]);
        same_acc(w, &res.bucket[b], &ref->b[b]);
        if (ref->b[b].tokens)
            printf("  %-14s %5lld tokens  KL %.5f (KL(s||t) %.5f)  top1 %.4f\n", w,
                   (long long)res.bucket[b].tokens, res.bucket[b].kl / res.bucket[b].tokens,
                   ref->b[b].kl_rev / ref->b[b].tokens, (double)res.bucket[b].top1 / res.bucket[b].tokens);
    }
    }
}

// The reference for the MLA student at ctx 129 (used twice), computed once.
static const ref_result *mla_ref_129(void) {
    static ref_result r;
    static int done;
    if (!done) ref_text(g_teacher, g_mla, g_text, g_text_len, 129, &r);
    done = 1;
    return &r;
}

static void test_kl_vs_reference(void **state) {
    (void)state;
    static ref_result ref;
    // GateSWA teacher-init student with a window of 16: equal to the teacher at positions < 16
    // (KL ~ 0 there), different beyond; ctx 64 windows, the documents' last windows shorter
    ref_text(g_teacher, g_gswa, g_text, g_text_len, 64, &ref);
    check_against_ref("gateswa W16 teacher-init", g_gswa, g_text, g_text_len, 64, &ref);
    assert_true(ref.all.kl > 0.01);
    // MLA random-init student (saved by convert, loaded): far from the teacher, and KL(t||s)
    // and KL(s||t) differ by ~20%; ctx 129: buckets 0-127 and 128-128
    check_against_ref("mla random-init", g_mla, g_text, g_text_len, 129, mla_ref_129());
    assert_true(mla_ref_129()->all.kl > 0.1);
}

// One long document at ctx 1100: buckets 0-127, 128-511, 512-1023, 1024-1099 (cut at ctx), and a
// second window shorter than the 512 edge; token counts per bucket follow from the lengths.
static void test_kl_buckets_long_document(void **state) {
    (void)state;
    int32_t *ids;
    size_t n;
    assert_int_equal(ae_tokenizer_encode(g_tok, g_long, g_long_len, &ids, &n), AE_OK);
    free(ids);
    int T2 = (int)(n - 1) - 1100; // second window
    printf("long document: %zu tokens; windows of 1100 and %d\n", n, T2);
    assert_true(T2 > 128 && T2 < 512); // the text was cut for this
    static ref_result ref;
    ref_text(g_teacher, g_mla, g_long, g_long_len, 1100, &ref);
    check_against_ref("mla random-init", g_mla, g_long, g_long_len, 1100, &ref);
    // counts from the window lengths alone: window 1 fills every bucket, window 2 (T2 tokens)
    // fills 0-127 and T2 - 128 of 128-511
    int64_t want[4] = {128 + 128, 384 + (T2 - 128), 512, 76};
    for (int b = 0; b < 4; b++) assert_int_equal(ref.b[b].tokens, want[b]);
}

// Teacher against itself: KL exactly 0 (identical rows: log p - log q is 0 term by term),
// top-1 agreement 1, the same NLL; and the bucket edges for ctx across the doubling edges.
static void test_kl_self_and_edges(void **state) {
    (void)state;
    static ae_kl_result res;
    const ae_model *self[1] = {g_teacher};
    assert_int_equal(ae_kl_text(g_teacher, self, 1, g_tok, g_text, g_text_len, 129, 50, 0, &res), AE_OK);
    assert_true(res.all.tokens > 400);
    assert_true(res.all.kl == 0.0);
    assert_int_equal(res.all.top1, res.all.tokens);
    assert_true(res.all.nll_t == res.all.nll_s);
    for (int b = 0; b < res.n_buckets; b++) {
        assert_true(res.bucket[b].kl == 0.0);
        assert_int_equal(res.bucket[b].top1, res.bucket[b].tokens);
    }
    const char *tiny = "It was a dark and stormy night.";
    int ctxs[] = {2, 128, 129, 512, 513, 1024, 2048, 2100, 4100};
    for (size_t i = 0; i < sizeof ctxs / sizeof *ctxs; i++) {
        int edge[AE_KL_MAX_BUCKETS + 1], nb = doc_edges(ctxs[i], edge);
        assert_int_equal(ae_kl_text(g_teacher, self, 1, g_tok, tiny, strlen(tiny), ctxs[i], 0, 0, &res), AE_OK);
        assert_int_equal(res.n_buckets, nb);
        for (int b = 0; b < nb; b++) {
            assert_int_equal(res.bucket_lo[b], edge[b]);
            assert_int_equal(res.bucket_hi[b], edge[b + 1]);
        }
        // a window shorter than the first edge: every token in bucket 0
        assert_int_equal(res.bucket[0].tokens, res.all.tokens);
        for (int b = 1; b < nb; b++) assert_int_equal(res.bucket[b].tokens, 0);
    }
}

// Two students in one pass (the teacher's logits computed once per chunk, shared): each
// student's result equals its result alone, bit for bit (the same forwards and reductions).
static void test_kl_two_students(void **state) {
    (void)state;
    static ae_kl_result both[2], alone;
    const ae_model *two[2] = {g_gswa, g_mla};
    assert_int_equal(ae_kl_text(g_teacher, two, 2, g_tok, g_long, g_long_len, 1100, 300, 0, both), AE_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ae_kl_text(g_teacher, two + i, 1, g_tok, g_long, g_long_len, 1100, 300, 0, &alone), AE_OK);
        assert_int_equal(both[i].all.tokens, alone.all.tokens);
        assert_true(both[i].all.kl == alone.all.kl && both[i].all.nll_s == alone.all.nll_s);
        assert_true(both[i].all.nll_t == alone.all.nll_t && both[i].all.top1 == alone.all.top1);
        assert_int_equal(both[i].n_buckets, alone.n_buckets);
        for (int b = 0; b < alone.n_buckets; b++) {
            assert_int_equal(both[i].bucket[b].tokens, alone.bucket[b].tokens);
            assert_true(both[i].bucket[b].kl == alone.bucket[b].kl);
        }
    }
    assert_true(fabs(both[0].all.kl - both[1].all.kl) > 0.01); // two different students
    assert_true(both[0].all.nll_t == both[1].all.nll_t);        // one teacher
    const ae_model *none[1] = {g_mla};
    assert_int_not_equal(ae_kl_text(g_teacher, none, 0, g_tok, g_long, g_long_len, 1100, 0, 0, &alone), AE_OK);
}

// `attnedit eval kl --json` on the saved MLA student: the numbers of the reference (teacher and
// student in the right roles, means = sums / tokens, buckets with inclusive "to").
static void test_cli_eval_kl(void **state) {
    (void)state;
    char *both = malloc(strlen(g_mla_dir) + strlen(g_gswa_dir) + 2);
    sprintf(both, "%s,%s", g_mla_dir, g_gswa_dir);
    const char *args[] = {"eval", "kl", "--teacher", ae_test_src(MICRO), "--model", both, "--file",
                          g_text_path, "--ctx", "129", "--json", "--device", "cpu", NULL};
    char *out, *err;
    int rc = ae_test_run_cli(args, NULL, &out, &err);
    if (rc != 0) fail_msg("eval kl: exit %d: %s", rc, err);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    const ref_result *rp = mla_ref_129();
    double n = (double)rp->all.tokens;
    printf("CLI eval kl: kl %.6f (reference %.6f, reversed %.6f), top1 %.4f\n",
           ae_test_json_num(o, "kl"), rp->all.kl / n, rp->all.kl_rev / n,
           ae_test_json_num(o, "top1"));
    assert_int_equal((int64_t)ae_test_json_num(o, "tokens"), rp->all.tokens);
    // the JSON carries doubles printed by cJSON (15+ significant digits): REL_TOL as above
    assert_true(fabs(ae_test_json_num(o, "kl") - rp->all.kl / n) < REL_TOL * rp->all.kl / n + 1e-8);
    assert_true(fabs(rp->all.kl - rp->all.kl_rev) / n > 1000 * (REL_TOL * rp->all.kl / n + 1e-8));
    assert_true(fabs(ae_test_json_num(o, "top1") - rp->all.top1 / n) < 1e-12);
    double ppl_t = exp(rp->all.nll_t / n), ppl_s = exp(rp->all.nll_s / n);
    assert_true(fabs(ae_test_json_num(o, "ppl_teacher") - ppl_t) < REL_TOL * ppl_t);
    assert_true(fabs(ae_test_json_num(o, "ppl_student") - ppl_s) < REL_TOL * ppl_s);
    const cJSON *bp = cJSON_GetObjectItemCaseSensitive(o, "by_position");
    assert_int_equal(cJSON_GetArraySize(bp), rp->n);
    for (int b = 0; b < rp->n; b++) {
        const cJSON *e = cJSON_GetArrayItem(bp, b);
        const ref_acc *r = &rp->b[b];
        assert_int_equal((int)ae_test_json_num(e, "from"), rp->edge[b]);
        assert_int_equal((int)ae_test_json_num(e, "to"), rp->edge[b + 1] - 1);
        assert_int_equal((int64_t)ae_test_json_num(e, "tokens"), r->tokens);
        double m = r->tokens ? (double)r->tokens : 1.0;
        assert_true(fabs(ae_test_json_num(e, "kl") - r->kl / m) < REL_TOL * r->kl / m + 1e-8);
    }
    // students: the MLA one (the numbers above) and the GateSWA one, side by side
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "students");
    assert_int_equal(cJSON_GetArraySize(st), 2);
    const cJSON *s0 = cJSON_GetArrayItem(st, 0), *s1 = cJSON_GetArrayItem(st, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(s0, "model")->valuestring, g_mla_dir);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(s1, "model")->valuestring, g_gswa_dir);
    assert_true(ae_test_json_num(s0, "kl") == ae_test_json_num(o, "kl"));
    assert_true(ae_test_json_num(s1, "tokens") == ae_test_json_num(o, "tokens"));
    // one teacher pass
    assert_true(ae_test_json_num(s1, "ppl_teacher") == ae_test_json_num(o, "ppl_teacher"));
    double kl1 = ae_test_json_num(s1, "kl");
    assert_true(kl1 > 0 && fabs(kl1 - ae_test_json_num(o, "kl")) > 0.01);
    cJSON_Delete(o);
    free(out);
    free(err);
    // the table, with the default --ctx (the teacher's max_position_embeddings: one window per
    // document here): a row per model and a column per student by position
    const char *targs[] = {"eval", "kl", "--teacher", ae_test_src(MICRO), "--model", both, "--file",
                           g_text_path, "--device", "cpu", NULL};
    int trc = ae_test_run_cli(targs, NULL, &out, &err);
    if (trc != 0) fail_msg("eval kl: exit %d: %s", trc, err);
    printf("%s", out);
    assert_non_null(strstr(out, "mla "));
    assert_non_null(strstr(out, "gswa "));
    assert_non_null(strstr(out, "| mla"));
    assert_non_null(strstr(out, "| gswa"));
    assert_non_null(strstr(out, "\n0-127 "));
    free(out);
    free(err);
    // refused: an empty name in the list, more students than one pass takes
    const char *bad[] = {"eval", "kl", "--teacher", ae_test_src(MICRO), "--model", NULL, "--file", g_text_path,
                         "--device", "cpu", NULL};
    char many[17 * 4] = "";
    for (int i = 0; i < 17; i++) strcat(many, i ? ",m" : "m");
    const char *lists[] = {",x", many}, *want[] = {"empty name", "more than 16 students"};
    for (int i = 0; i < 2; i++) {
        bad[5] = lists[i];
        int brc = ae_test_run_cli(bad, NULL, &out, &err);
        if (brc != 2 || !strstr(err, want[i])) fail_msg("eval kl --model %s: exit %d, stderr %s", lists[i], brc, err);
        free(out);
        free(err);
    }
    free(both);
}

static char *read_text(const char *rel, size_t *len) {
    char *t = NULL;
    return ae_file_read_all(ae_test_src(rel), &t, len) == AE_OK ? t : NULL;
}

static int setup(void **state) {
    (void)state;
    const ae_backend *cpu = ae_backend_cpu();
    if (ae_model_load(ae_test_src(MICRO), cpu, &g_teacher) != AE_OK ||
        ae_tokenizer_load(ae_test_src(MICRO), &g_tok) != AE_OK)
        return -1;
    g_dir = ae_test_tmpdir();
    g_mla_dir = ae_path_join(g_dir, "mla");
    const char *conv[] = {"convert", "--teacher", ae_test_src(MICRO), "--target", "mla", "--kv-lora-rank", "32",
                          "--qk-rope-dim", "8", "--seed", "7", "--out", g_mla_dir, NULL};
    char *err;
    int rc = ae_test_run_cli(conv, NULL, NULL, &err);
    if (rc != 0) fprintf(stderr, "convert: %s\n", err);
    free(err);
    if (rc != 0 || ae_model_load(g_mla_dir, cpu, &g_mla) != AE_OK) return -1;
    g_gswa_dir = ae_path_join(g_dir, "gswa");
    const char *conv2[] = {"convert", "--teacher", ae_test_src(MICRO), "--target", "gateswa", "--window", "16",
                           "--full-every", "4", "--init", "random", "--seed", "7", "--out", g_gswa_dir, NULL};
    rc = ae_test_run_cli(conv2, NULL, NULL, &err);
    if (rc != 0) fprintf(stderr, "convert: %s\n", err);
    free(err);
    if (rc != 0) return -1;
    if (ae_model_load(ae_test_src(MICRO), cpu, &g_gswa) != AE_OK) return -1;
    ae_student_spec spec = {.target = AE_ATTN_GATESWA, .full_every = 4, .window = 16,
                            .gate = AE_GATE_ELEMENTWISE, .init_teacher = 1};
    ae_init_report rep;
    if (ae_student_make(g_gswa, &spec, &rep) != AE_OK) return -1;
    // two documents: the first 1000 bytes of each of data/sample.txt's two (~260 tokens each)
    g_text = ae_test_sample_docs(1000, &g_text_len);
    if (!g_text) return -1;
    g_text_path = ae_path_join(g_dir, "text.txt");
    if (ae_test_write_file(g_text_path, g_text, g_text_len) != 0) return -1;
    // one long document: the start of demo-train.txt (~1350 tokens)
    size_t dl;
    char *demo = read_text("data/demo-train.txt", &dl);
    if (!demo) return -1;
    g_long_len = ae_test_cut_at_line(demo, dl, 5400);
    g_long = malloc(g_long_len);
    memcpy(g_long, demo, g_long_len);
    free(demo);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ae_model_free(g_teacher);
    ae_model_free(g_gswa);
    ae_model_free(g_mla);
    ae_tokenizer_free(g_tok);
    ae_test_rmtree(g_dir);
    free(g_dir);
    free(g_mla_dir);
    free(g_gswa_dir);
    free(g_text_path);
    free(g_text);
    free(g_long);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kl_vs_reference),
        cmocka_unit_test(test_kl_buckets_long_document),
        cmocka_unit_test(test_kl_self_and_edges),
        cmocka_unit_test(test_kl_two_students),
        cmocka_unit_test(test_cli_eval_kl),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
