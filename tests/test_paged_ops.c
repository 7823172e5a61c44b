// The paged KV cache ops of the CPU reference (backend/cpu_paged.c) against the contiguous
// attention op: several sequences of different lengths, their K/V rows scattered over shuffled
// pages with paged_store, queried in one attention_paged call (decode rows and prefill chunks
// mixed), must give exactly (bit for bit) what `attention` gives on each sequence's contiguous
// keys. Cases: GQA, sliding window with the blocks behind it released (-1), sinks, and the
// absorbed-MLA layout (one latent head, v = the first dv values of k's rows). Every call is made
// with and without prefill runs (ae_paged_run: the CPU reference checks and ignores them, same
// bits), and runs that break their contract (out of order, overlapping, outside the rows, n < 1,
// disagreeing with seq or pos) must abort (in a child process). paged_gather brings a
// sequence's rows back out of shuffled pages in position order.
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/ops.h"
#include "core/rng.h"
#include "util/testutil.h"

typedef struct {
    int Hq, Hkv, dk, dv, window, sinks, shared_kv, page_size;
} paged_case;

#define NSEQ 4

static void run_case(const paged_case *c) {
    const ae_backend *be = ae_backend_cpu();
    ae_rng rng;
    ae_rng_seed(&rng, 1234 + c->dk + c->window);
    int len[NSEQ] = {1, 37, 70, 129}; // positions in the cache after this step
    int nq[NSEQ] = {1, 1, 13, 40};    // queries of this step (the last positions)
    int P = c->page_size;
    int kw = c->Hkv * c->dk, vw = c->Hkv * c->dv;
    int row = c->shared_kv ? kw : kw + vw; // elements of one position in a page
    int64_t page_stride = (int64_t)P * row + 3; // padding: pages are not back to back
    int maxb = 0, nblocks = 0, N = 0;
    for (int s = 0; s < NSEQ; s++) {
        int b = (len[s] + P - 1) / P;
        maxb = b > maxb ? b : maxb;
        nblocks += b;
        N += nq[s];
    }
    int n_pages = nblocks + 5;
    int32_t *perm = malloc(sizeof(int32_t) * n_pages);
    for (int i = 0; i < n_pages; i++) perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) { // shuffled pages
        int j = (int)(ae_rng_uniform(&rng) * (i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    float *pool = calloc((size_t)n_pages * page_stride, sizeof(float));
    int32_t *table = malloc(sizeof(int32_t) * NSEQ * maxb);
    for (int i = 0; i < NSEQ * maxb; i++) table[i] = -1;
    float *q = malloc(sizeof(float) * (size_t)N * c->Hq * c->dk);
    float *out = malloc(sizeof(float) * (size_t)N * c->Hq * c->dv);
    float *ref = malloc(sizeof(float) * (size_t)N * c->Hq * c->dv);
    float *sinks = malloc(sizeof(float) * c->Hq);
    int32_t *seq = malloc(sizeof(int32_t) * N), *pos = malloc(sizeof(int32_t) * N);
    ae_test_fill_normal(q, (size_t)N * c->Hq * c->dk, 1.0f, &rng);
    ae_test_fill_normal(sinks, c->Hq, 1.0f, &rng);
    float scale = 1.0f / sqrtf((float)c->dk);
    ae_paged_run runs[NSEQ];
    int n_runs = 0;
    int next_page = 0, r0 = 0;
    for (int s = 0; s < NSEQ; s++) {
        int S = len[s], T = nq[s], pos0 = S - T;
        // contiguous rows [k | v] (or k alone when v is its prefix)
        float *kv = malloc(sizeof(float) * (size_t)S * row);
        ae_test_fill_normal(kv, (size_t)S * row, 1.0f, &rng);
        int32_t *slot = malloc(sizeof(int32_t) * S);
        int nb = (S + P - 1) / P;
        for (int b = 0; b < nb; b++) table[s * maxb + b] = perm[next_page++];
        for (int j = 0; j < S; j++) slot[j] = table[s * maxb + j / P] * P + j % P;
        be->paged_store(be, ae_host_f32(pool), page_stride, P, row, ae_host_f32(kv), row,
                        ae_host_i32(slot), S, row);
        // paged_store wrote every row where the table says
        for (int j = 0; j < S; j++)
            assert_memory_equal(pool + (size_t)table[s * maxb + j / P] * page_stride +
                                    (size_t)(j % P) * row,
                                kv + (size_t)j * row, sizeof(float) * row);
        if (c->window > 0) { // blocks wholly behind every query's window are given back
            int lo = pos0 - c->window + 1;
            for (int b = 0; b < nb && (b + 1) * P <= lo; b++) table[s * maxb + b] = -1;
        }
        ae_attn_args aa = {.T = T, .pos0 = pos0, .Hq = c->Hq, .Hkv = c->Hkv, .dk = c->dk,
                           .dv = c->dv, .k_stride = row, .v_stride = row, .window = c->window,
                           .scale = scale, .sinks = c->sinks ? ae_host_f32(sinks) : ae_ptr_null()};
        float *vbase = c->shared_kv ? kv : kv + kw;
        be->attention(be, &aa, ae_host_f32(ref + (size_t)r0 * c->Hq * c->dv),
                      ae_host_f32(q + (size_t)r0 * c->Hq * c->dk), ae_host_f32(kv),
                      ae_host_f32(vbase));
        for (int t = 0; t < T; t++) {
            seq[r0 + t] = s;
            pos[r0 + t] = pos0 + t;
        }
        if (s > 0) // sequence 0's row stays outside every run
            runs[n_runs++] = (ae_paged_run){.first = r0, .n = T, .seq = s, .pos0 = pos0};
        r0 += T;
        free(kv);
        free(slot);
    }
    ae_paged_attn_args pa = {.N = N, .Hq = c->Hq, .Hkv = c->Hkv, .dk = c->dk, .dv = c->dv,
                             .page_size = P, .max_blocks = maxb, .page_stride = page_stride,
                             .k_stride = row, .v_stride = row, .window = c->window,
                             .scale = scale,
                             .sinks = c->sinks ? ae_host_f32(sinks) : ae_ptr_null(),
                             .seq = ae_host_i32(seq), .pos = ae_host_i32(pos),
                             .block_table = ae_host_i32(table)};
    size_t n = (size_t)N * c->Hq * c->dv;
    for (int with_runs = 0; with_runs < 2; with_runs++) {
        pa.n_runs = with_runs ? n_runs : 0;
        pa.runs = with_runs ? runs : NULL;
        for (size_t i = 0; i < n; i++) out[i] = NAN;
        be->attention_paged(be, &pa, ae_host_f32(out), ae_host_f32(q), ae_host_f32(pool),
                            ae_host_f32(c->shared_kv ? pool : pool + kw));
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += out[i] != ref[i];
        printf("paged Hq %d Hkv %d dk %d dv %d window %d sinks %d shared %d P %d, %d runs: %zu of "
               "%zu differ\n", c->Hq, c->Hkv, c->dk, c->dv, c->window, c->sinks, c->shared_kv, P,
               pa.n_runs, bad, n);
        assert_int_equal(bad, 0);
    }
    free(perm);
    free(pool);
    free(table);
    free(q);
    free(out);
    free(ref);
    free(sinks);
    free(seq);
    free(pos);
}

static void test_paged_gqa(void **st) {
    (void)st;
    paged_case c = {.Hq = 4, .Hkv = 2, .dk = 32, .dv = 32, .page_size = 16};
    run_case(&c);
    c.page_size = 5; // pages smaller than a prefill chunk, not a power of two
    run_case(&c);
    c.Hkv = 4; // MHA
    run_case(&c);
}

static void test_paged_window_sinks(void **st) {
    (void)st;
    paged_case c = {.Hq = 4, .Hkv = 2, .dk = 16, .dv = 16, .page_size = 8, .window = 24};
    run_case(&c);
    c.sinks = 1;
    run_case(&c);
    c.window = 0;
    run_case(&c);
}

static void test_paged_mla_layout(void **st) {
    (void)st;
    // absorbed MLA: one latent head, dk = R + dr, v = the first R values of the same rows
    paged_case c = {.Hq = 4, .Hkv = 1, .dk = 80, .dv = 64, .shared_kv = 1, .page_size = 16};
    run_case(&c);
    c.page_size = 7;
    run_case(&c);
}

static void test_paged_store_skips(void **st) {
    (void)st;
    const ae_backend *be = ae_backend_cpu();
    float dst[2 * 3 * 4], src[3 * 4];
    for (int i = 0; i < 24; i++) dst[i] = -1.0f;
    for (int i = 0; i < 12; i++) src[i] = (float)i;
    int32_t slot[3] = {4, -1, 0}; // page 1 row 1; skipped; page 0 row 0
    be->paged_store(be, ae_host_f32(dst), 12, 3, 4, ae_host_f32(src), 4, ae_host_i32(slot), 3, 4);
    for (int i = 0; i < 4; i++) {
        assert_true(dst[12 + 4 + i] == src[i]);
        assert_true(dst[i] == src[8 + i]);
    }
    int written = 0;
    for (int i = 0; i < 24; i++) written += dst[i] != -1.0f;
    assert_int_equal(written, 8); // two rows of 4, nothing else
}

// paged_gather: positions 0..4 of a sequence whose block-table row names pages 2, 0, 1 (pages
// of 2 positions, 10 elements apart, rows 4 apart) come back in position order, 3 values each,
// into rows 5 apart; the rest of dst untouched.
static void test_paged_gather(void **st) {
    (void)st;
    const ae_backend *be = ae_backend_cpu();
    float pool[30], dst[25];
    for (int i = 0; i < 30; i++) pool[i] = (float)i;
    for (int i = 0; i < 25; i++) dst[i] = -1.0f;
    int32_t table[3] = {2, 0, 1};
    be->paged_gather(be, ae_host_f32(dst), 5, ae_host_f32(pool), 10, 2, 4, ae_host_i32(table), 5,
                     3);
    for (int j = 0; j < 5; j++) {
        int base = table[j / 2] * 10 + (j % 2) * 4;
        for (int c = 0; c < 5; c++)
            assert_true(dst[j * 5 + c] == (c < 3 ? pool[base + c] : -1.0f));
    }
}

// 1 when ae_paged_runs_check(a, seq, pos) aborts (run in a child process; its message goes to
// the child's stderr, silenced).
static int runs_check_aborts(const ae_paged_attn_args *a, const int32_t *seq, const int32_t *pos) {
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        ae_paged_runs_check(a, seq, pos);
        _exit(0);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    return WIFSIGNALED(ws) && WTERMSIG(ws) == SIGABRT;
}

// The runs contract (ae_paged_attn_args): 7 rows = sequence 0 at positions 4..6, then sequence
// 1 at 0..3. Valid descriptions pass, each kind of broken one aborts.
static void test_paged_runs_contract(void **st) {
    (void)st;
    const int32_t seq[7] = {0, 0, 0, 1, 1, 1, 1}, pos[7] = {4, 5, 6, 0, 1, 2, 3};
    ae_paged_attn_args a = {.N = 7};
    const ae_paged_run good[2] = {{.first = 0, .n = 3, .seq = 0, .pos0 = 4},
                                  {.first = 3, .n = 4, .seq = 1, .pos0 = 0}};
    a.runs = good;
    a.n_runs = 2;
    assert_false(runs_check_aborts(&a, seq, pos));
    a.runs = good + 1; // rows 0..2 outside every run
    a.n_runs = 1;
    assert_false(runs_check_aborts(&a, seq, pos));
    a.runs = (const ae_paged_run[]){{.first = 4, .n = 2, .seq = 1, .pos0 = 1}}; // part of a sequence
    assert_false(runs_check_aborts(&a, seq, pos));
    a.n_runs = 0;
    a.runs = NULL;
    assert_false(runs_check_aborts(&a, seq, pos));
    const ae_paged_run bad[][2] = {
        {{.first = 3, .n = 4, .seq = 1, .pos0 = 0}, {.first = 0, .n = 3, .seq = 0, .pos0 = 4}}, // order
        {{.first = 0, .n = 4, .seq = 0, .pos0 = 4}, {.first = 3, .n = 4, .seq = 1, .pos0 = 0}}, // overlap
        {{.first = 0, .n = 3, .seq = 0, .pos0 = 4}, {.first = 3, .n = 5, .seq = 1, .pos0 = 0}}, // past N
        {{.first = 0, .n = 0, .seq = 0, .pos0 = 4}, {.first = 3, .n = 4, .seq = 1, .pos0 = 0}}, // empty
        {{.first = 0, .n = 3, .seq = 1, .pos0 = 4}, {.first = 3, .n = 4, .seq = 1, .pos0 = 0}}, // seq
        {{.first = 0, .n = 3, .seq = 0, .pos0 = 5}, {.first = 3, .n = 4, .seq = 1, .pos0 = 0}}, // pos
        {{.first = 0, .n = 3, .seq = 0, .pos0 = 4}, {.first = 3, .n = 4, .seq = 1, .pos0 = -1}}, // < 0
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        a.runs = bad[i];
        a.n_runs = 2;
        printf("broken runs %zu\n", i);
        assert_true(runs_check_aborts(&a, seq, pos));
    }
    // without seq/pos (what cuda checks on the host) only order and bounds are seen
    a.runs = bad[5];
    assert_false(runs_check_aborts(&a, NULL, NULL));
    a.runs = bad[1];
    assert_true(runs_check_aborts(&a, NULL, NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paged_gqa),
        cmocka_unit_test(test_paged_window_sinks),
        cmocka_unit_test(test_paged_mla_layout),
        cmocka_unit_test(test_paged_store_skips),
        cmocka_unit_test(test_paged_gather),
        cmocka_unit_test(test_paged_runs_contract),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
