// The training ops of the CPU reference backend (backend/cpu_train.c): embed_bwd, mse_rows,
// cosine_rows, softmax_stats, kd_chunk, sumsq, axpby, adamw, each against a naive
// double-precision reference written here; the gradients of mse_rows and cosine_rows also
// against central finite differences of that reference; the non-finite behaviour of sumsq and
// adamw's flag. softmax_stats + kd_chunk (the training log-softmax and KD loss) run on every
// backend (util/backends.h: cpu, and cuda when built with it and a GPU is present; F32 logits,
// stats and gradients on both) against the double log-sum-exp and KL references of util/ref.h;
// the others on the cpu (cuda against the cpu: tests/test_cuda_train_ops.c).
//
// Tolerances (stated per check):
//   REL_F32  2e-6 relative (with an absolute floor where said): an fp32 result of a double sum,
//            rounded once (2^-24 ≈ 6e-8) plus the fp32 products of the inputs.
//   FD       |analytic − numeric| <= 1e-4 · max(1, |numeric|) for central differences (h = 1e-3,
//            double forward: truncation error O(h²) ≈ 1e-6 on these smooth losses).
//   Exact    embed_bwd against the same float additions in token order, adamw against the
//            literal formula in float, axpby: bit-identical (the contracts fix the operations).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "util/backends.h"
#include "util/fd.h"
#include "util/testutil.h"

#define REL_F32 2e-6
#define FD_H 1e-3
#define FD_TOL 1e-4

static const ae_backend *be;

static float *fvec(size_t n, ae_rng *r, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    ae_test_fill_normal(x, n, scale, r);
    return x;
}

static float *fcopy(const float *x, size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    memcpy(p, x, sizeof(float) * n);
    return p;
}

static void close_to(const char *what, size_t i, double got, double want, double rel, double abs) {
    if (!(fabs(got - want) <= rel * fabs(want) + abs))
        fail_msg("%s[%zu]: %.9g, reference %.9g (tol %.1e rel + %.1e abs)", what, i, got, want, rel,
                 abs);
}

// =============================================================================================
// embed_bwd: dtable[ids[t]] += dy[t], token order

static void test_embed_bwd(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 1);
    const int V = 37, D = 300, T = 64; // D over a column block (256), not a multiple of 8
    int32_t ids[64];
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(ae_rng_u64(&r) % 9); // rows 0..8, repeated
    ids[5] = 36;                                                         // the last row
    float *dy = fvec((size_t)T * D, &r, 1.0f), *tab = fvec((size_t)V * D, &r, 3.0f);
    float *start = fcopy(tab, (size_t)V * D), *seq = fcopy(tab, (size_t)V * D);
    be->embed_bwd(be, ae_host_f32(tab), ae_host_f32(dy), ae_host_i32(ids), T, D);
    for (int t = 0; t < T; t++) // the contract's order: each row's tokens in token order, in float
        for (int d = 0; d < D; d++) seq[(size_t)ids[t] * D + d] += dy[(size_t)t * D + d];
    assert_memory_equal(tab, seq, sizeof(float) * (size_t)V * D);
    for (int v = 0; v < V; v++) {
        int used = 0;
        for (int t = 0; t < T; t++) used |= ids[t] == v;
        for (int d = 0; d < D; d++) {
            double want = start[(size_t)v * D + d];
            for (int t = 0; t < T; t++)
                if (ids[t] == v) want += dy[(size_t)t * D + d];
            size_t i = (size_t)v * D + d;
            if (!used) assert_true(tab[i] == start[i]); // untouched rows stay exactly
            // ~10 float additions of values ~1 onto ~3: 1e-6 absolute covers the rounding
            close_to("embed_bwd", i, tab[i], want, 0.0, 1e-5);
        }
    }
    free(dy), free(tab), free(start), free(seq);
}

// =============================================================================================
// mse_rows and cosine_rows: values against double, gradients against finite differences

// One row's loss f(x_i, other_i) for util/fd.h.
typedef double (*row_fn)(const double *, const double *, int, int);
typedef struct {
    row_fn f;
    const double *x, *other; // (D) each
    int D, flag;
} row_case;

static double row_loss(void *ctx) {
    const row_case *c = ctx;
    return c->f(c->x, c->other, c->D, c->flag);
}

// Central differences of scale · Σ_i f(row i) in every element of x (double copy), against g.
static void check_fd_rows(const char *what, row_fn f, double *x, const double *other, const float *g,
                          int N, int D, int flag, float scale) {
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) {
            row_case rc = {f, x + (size_t)i * D, other + (size_t)i * D, D, flag};
            double num = scale * ae_fd_central_d(row_loss, &rc, x + (size_t)i * D + d, FD_H);
            double an = g[(size_t)i * D + d];
            if (!(fabs(an - num) <= FD_TOL * fmax(1.0, fabs(num))))
                fail_msg("%s row %d col %d: analytic %.8g, numeric %.8g", what, i, d, an, num);
        }
}

static double mse_f(const double *y, const double *t, int D, int normalized) {
    return ae_ref_mse_row(y, t, D, normalized);
}
static double cos_f(const double *a, const double *b, int D, int unused) {
    (void)unused;
    return ae_ref_cos_row(a, b, D);
}

static void test_mse_rows(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 2);
    const int shapes[][2] = {{1, 1}, {3, 7}, {5, 33}, {20, 64}};
    for (size_t s = 0; s < 4; s++)
        for (int normalized = 0; normalized < 2; normalized++) {
            int N = shapes[s][0], D = shapes[s][1];
            size_t n = (size_t)N * D;
            float *y = fvec(n, &r, 1.0f), *t = fvec(n, &r, 1.0f), *dy = fvec(n, &r, 1.0f);
            float *out = fvec((size_t)N, &r, 1.0f), *out2 = fvec((size_t)N, &r, 1.0f);
            float scale = 0.37f;
            be->mse_rows(be, ae_host_f32(out), ae_host_f32(dy), ae_host_f32(y), ae_host_f32(t), N,
                         D, normalized, scale);
            be->mse_rows(be, ae_host_f32(out2), ae_ptr_null(), ae_host_f32(y), ae_host_f32(t), N,
                         D, normalized, scale);
            double *yd = ae_test_to_double(y, n), *td = ae_test_to_double(t, n);
            for (int i = 0; i < N; i++) {
                double want = ae_ref_mse_row(yd + (size_t)i * D, td + (size_t)i * D, D, normalized);
                close_to(normalized ? "mse_rows (normalized)" : "mse_rows", (size_t)i, out[i],
                         want, REL_F32, 0.0);
                assert_true(out2[i] == out[i]); // dy null: same loss
                double den = 0;
                for (int d = 0; d < D; d++)
                    den += normalized ? td[(size_t)i * D + d] * td[(size_t)i * D + d] : 0.0;
                den = normalized ? den + 1e-6 : D;
                for (int d = 0; d < D; d++) { // dy = scale · 2 (y − t) / den
                    size_t k = (size_t)i * D + d;
                    close_to("mse_rows dy", k, dy[k], scale * 2.0 * (yd[k] - td[k]) / den,
                             REL_F32, 1e-12);
                }
            }
            check_fd_rows(normalized ? "mse_rows dy (normalized) vs FD" : "mse_rows dy vs FD",
                          mse_f, yd, td, dy, N, D, normalized, scale);
            free(y), free(t), free(dy), free(out), free(out2), free(yd), free(td);
        }
}

static void test_cosine_rows(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 3);
    const int N = 6, D = 19;
    size_t n = (size_t)N * D;
    float *a = fvec(n, &r, 1.0f), *b = fvec(n, &r, 1.0f), *da = fvec(n, &r, 1.0f);
    float *out = fvec((size_t)N, &r, 1.0f);
    for (int d = 0; d < D; d++) {
        a[2 * D + d] = 0.0f;                // row 2: a all zero
        b[4 * D + d] = 0.0f;                // row 4: b all zero
        b[5 * D + d] = 2.5f * a[5 * D + d]; // row 5: parallel (cos = 1)
    }
    float scale = 1.7f;
    be->cosine_rows(be, ae_host_f32(out), ae_host_f32(da), ae_host_f32(a), ae_host_f32(b), N, D,
                    scale);
    double *ad = ae_test_to_double(a, n), *bd = ae_test_to_double(b, n);
    for (int i = 0; i < N; i++)
        close_to("cosine_rows", (size_t)i, out[i], ae_ref_cos_row(ad + (size_t)i * D, bd + (size_t)i * D, D),
                 REL_F32, 1e-7);
    assert_true(out[2] == 1.0f && out[4] == 1.0f); // zero rows: cos = 0
    for (int d = 0; d < D; d++) assert_true(da[2 * D + d] == 0.0f && da[4 * D + d] == 0.0f);
    assert_true(fabs(out[5]) < 1e-6);
    // FD on the rows with a gradient (rows 2 and 4 have none: the loss is flat there by contract)
    for (int i = 0; i < N; i++) {
        if (i == 2 || i == 4) continue;
        check_fd_rows("cosine_rows da vs FD", cos_f, ad + (size_t)i * D, bd + (size_t)i * D,
                      da + (size_t)i * D, 1, D, 0, scale);
    }
    // da null: the loss alone, da untouched
    float *out2 = fvec((size_t)N, &r, 1.0f);
    be->cosine_rows(be, ae_host_f32(out2), ae_ptr_null(), ae_host_f32(a), ae_host_f32(b), N, D,
                    scale);
    assert_memory_equal(out, out2, sizeof(float) * N);
    free(a), free(b), free(da), free(out), free(out2), free(ad), free(bd);
}

// =============================================================================================
// softmax_stats + kd_chunk over chunk splits, against whole-row double references

// The logits (F32 on every backend) in backend buffers; stats, kl and dzs F32, arg I32. The
// chunk loops address columns v0.. of the rows (row stride V) through ae_ptr_at.
static void run_kd(const ae_backend *bk, ae_rng *r, int N, int V, float tau, const int *chunks,
                   int nchunks) {
    size_t n = (size_t)N * V;
    float it = 1.0f / tau, gscale = 0.61f;
    float *zt = fvec(n, r, 3.0f), *zs = fvec(n, r, 3.0f);
    // row 0: its maximum tied at two columns far apart (different chunks for most splits);
    // row 1 (if any): the maximum at the last column
    float big = 20.0f;
    zt[V / 3] = big, zt[V - 1 - V / 5] = big, zs[V / 3] = big, zs[V - 1 - V / 5] = big;
    int want_arg0 = V / 3 < V - 1 - V / 5 ? V / 3 : V - 1 - V / 5;
    if (N > 1) zt[(size_t)V + V - 1] = big, zs[(size_t)V + V - 1] = big;
    double *lt = malloc(sizeof(double) * N), *ls = malloc(sizeof(double) * N);
    double *klref = malloc(sizeof(double) * N);
    int *amax = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) {
        const float *a = zt + (size_t)i * V, *b = zs + (size_t)i * V;
        // log Σ exp(z·it) and the KL of the row, in double from the fp32 products z·it the ops form
        lt[i] = ae_test_logsumexp(a, V, it, NULL), ls[i] = ae_test_logsumexp(b, V, it, NULL);
        klref[i] = ae_ref_kl_row(a, b, V, it);
        amax[i] = 0;
        for (int v = 0; v < V; v++)
            if (a[v] > a[amax[i]]) amax[i] = v;
    }
    assert_int_equal(amax[0], want_arg0);
    for (int c = 0; c < nchunks; c++) {
        int ch = chunks[c];
        ae_scratch sc;
        ae_scratch_init(&sc, bk);
        ae_ptr pzt = ae_tb_in(&sc, zt, n, AE_DT_F32), pzs = ae_tb_in(&sc, zs, n, AE_DT_F32);
        ae_ptr pst = ae_tb_new(&sc, 2 * (size_t)N, AE_DT_F32, NAN); // v0 == 0 must not read them
        ae_ptr pss = ae_tb_new(&sc, 2 * (size_t)N, AE_DT_F32, NAN);
        ae_ptr pat = ae_tb_new(&sc, (size_t)N, AE_DT_I32, -7), pas = ae_tb_new(&sc, (size_t)N, AE_DT_I32, -7);
        for (int v0 = 0; v0 < V; v0 += ch) {
            int vc = V - v0 < ch ? V - v0 : ch;
            bk->softmax_stats(bk, pst, pat, ae_ptr_at(pzt, (size_t)v0), V, N, vc, v0, it);
            bk->softmax_stats(bk, pss, ch == 7 ? ae_ptr_null() : pas, ae_ptr_at(pzs, (size_t)v0), V,
                              N, vc, v0, it);
        }
        ae_ptr pkl = ae_tb_new(&sc, (size_t)N, AE_DT_F32, 0.25f); // accumulates onto what is there
        ae_ptr pdz = ae_tb_new(&sc, n, AE_DT_F32, NAN);            // overwritten
        for (int v0 = 0; v0 < V; v0 += ch) {
            int vc = V - v0 < ch ? V - v0 : ch;
            bk->kd_chunk(bk, pkl, ae_ptr_at(pdz, (size_t)v0), V, ae_ptr_at(pzt, (size_t)v0),
                         ae_ptr_at(pzs, (size_t)v0), V, pst, pss, N, vc, it, gscale);
        }
        float *st = ae_tb_out(bk, pst, 2 * (size_t)N), *ss = ae_tb_out(bk, pss, 2 * (size_t)N);
        float *kl = ae_tb_out(bk, pkl, (size_t)N), *dz = ae_tb_out(bk, pdz, n);
        int32_t *at = malloc(sizeof(int32_t) * N), *as = malloc(sizeof(int32_t) * N);
        if (bk->download(bk, at, AE_DT_I32, pat, (size_t)N) != AE_OK ||
            bk->download(bk, as, AE_DT_I32, pas, (size_t)N) != AE_OK)
            fail_msg("%s: argmax download: %s", bk->name, ae_last_error());
        // se is rounded to float after every chunk: the log-sum-exp carries up to ~6e-8 per
        // chunk (a random walk in practice); every tolerance below scales with the chunk count.
        // On cuda se's terms are expf of the same float arguments (2 ulp, test_cuda_train_ops'
        // TOL_SE 2e-6 relative), so its log-sum-exp errs by up to 2e-6 more.
        int nc = (V + ch - 1) / ch;
        double lse_tol = 1.2e-7 * (nc + 1) + (ae_tb_is_cpu(bk) ? 0.0 : 2e-6);
        char what[96];
        for (int i = 0; i < N; i++) {
            snprintf(what, sizeof what, "softmax_stats lse N=%d V=%d chunk=%d tau=%g on %s", N, V,
                     ch, (double)tau, bk->name);
            // mx exactly the largest product; se a double sum rounded once
            double mxw = -INFINITY;
            for (int v = 0; v < V; v++) mxw = fmax(mxw, (double)(zt[(size_t)i * V + v] * it));
            assert_true(st[2 * i] == (float)mxw);
            close_to(what, (size_t)i, st[2 * i] + log(st[2 * i + 1]), lt[i], 0.0, lse_tol);
            close_to(what, (size_t)i, ss[2 * i] + log(ss[2 * i + 1]), ls[i], 0.0, lse_tol);
            if (at[i] != amax[i])
                fail_msg("softmax_stats argmax row %d (chunk %d) on %s: %d, want %d", i, ch,
                         bk->name, at[i], amax[i]);
            snprintf(what, sizeof what, "kd_chunk kl N=%d V=%d chunk=%d tau=%g on %s", N, V, ch,
                     (double)tau, bk->name);
            // KL moves by the two log-sum-exp errors (times Σ pt = 1), plus float roundings
            // (cuda: pt off by ~2 ulp, test_cuda_train_ops' TOL_KL 1e-5 relative)
            close_to(what, (size_t)i, kl[i], 0.25 + klref[i], ae_tb_is_cpu(bk) ? 1e-6 : 1e-5,
                     2 * lse_tol);
            for (int v = 0; v < V; v++) {
                size_t k = (size_t)i * V + v;
                double pt = exp((double)(zt[k] * it) - lt[i]), ps = exp((double)(zs[k] * it) - ls[i]);
                // each p carries its log-sum-exp error (relative): the error scales with
                // pt + ps, not with their difference (which cancels where ps ≈ pt)
                close_to("kd_chunk dzs", k, dz[k], gscale * (ps - pt), 1e-6,
                         2 * lse_tol * gscale * (pt + ps) + 1e-12);
            }
        }
        if (ch == 7) // arg null throughout: never written
            assert_int_equal(as[0], -7);
        else
            assert_int_equal(as[0], want_arg0);
        free(st), free(ss), free(at), free(as), free(kl), free(dz);
        ae_scratch_free(&sc);
    }
    free(zt), free(zs), free(lt), free(ls), free(klref), free(amax);
}

static void test_softmax_stats_kd(void **state) {
    const ae_backend *bk = ae_tb_backend(state);
    ae_rng r;
    ae_rng_seed(&r, 4);
    const int chunks[] = {1000000, 1, 7, 64, 100, 299};
    run_kd(bk, &r, 3, 300, 1.0f, chunks, 6);
    run_kd(bk, &r, 1, 300, 2.0f, chunks, 6);
    run_kd(bk, &r, 5, 1001, 0.7f, chunks, 6);
    // the teacher equal to the student: KL 0 and no gradient, whatever the split
    const int N = 2, V = 50;
    ae_scratch sc;
    ae_scratch_init(&sc, bk);
    float *z = fvec((size_t)N * V, &r, 2.0f);
    ae_ptr pz = ae_tb_in(&sc, z, (size_t)N * V, AE_DT_F32), pst = ae_tb_new(&sc, 4, AE_DT_F32, NAN);
    ae_ptr pkl = ae_tb_new(&sc, 2, AE_DT_F32, 0), pdz = ae_tb_new(&sc, (size_t)N * V, AE_DT_F32, NAN);
    for (int v0 = 0; v0 < V; v0 += 16)
        bk->softmax_stats(bk, pst, ae_ptr_null(), ae_ptr_at(pz, (size_t)v0), V, N,
                          V - v0 < 16 ? V - v0 : 16, v0, 1.0f);
    for (int v0 = 0; v0 < V; v0 += 16)
        bk->kd_chunk(bk, pkl, ae_ptr_at(pdz, (size_t)v0), V, ae_ptr_at(pz, (size_t)v0),
                     ae_ptr_at(pz, (size_t)v0), V, pst, pst, N, V - v0 < 16 ? V - v0 : 16, 1.0f,
                     1.0f);
    float *kl = ae_tb_out(bk, pkl, 2), *dz = ae_tb_out(bk, pdz, (size_t)N * V);
    assert_true(kl[0] == 0.0f && kl[1] == 0.0f);
    for (int k = 0; k < N * V; k++) assert_true(dz[k] == 0.0f);
    free(z), free(kl), free(dz);
    ae_scratch_free(&sc);
}

// =============================================================================================
// sumsq, axpby

static void test_sumsq(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 5);
    const size_t sizes[] = {1, 17, 65536, 200003};
    for (size_t s = 0; s < 4; s++) {
        size_t n = sizes[s];
        float *x = fvec(n, &r, 2.0f), out = -1;
        double want = 0;
        for (size_t j = 0; j < n; j++) want += (double)x[j] * x[j];
        be->sumsq(be, ae_host_f32(&out), ae_host_f32(x), n);
        close_to("sumsq", n, out, want, 1e-7, 0.0); // one rounding of a double sum
        float again = -1;
        be->sumsq(be, ae_host_f32(&again), ae_host_f32(x), n);
        assert_true(again == out);
        free(x);
    }
    float x[5] = {1, 2, 3, 4, 5}, out = 0;
    be->sumsq(be, ae_host_f32(&out), ae_host_f32(x), 5);
    assert_true(out == 55.0f);
    x[3] = INFINITY;
    be->sumsq(be, ae_host_f32(&out), ae_host_f32(x), 5);
    assert_true(isinf(out) && out > 0);
    x[3] = -INFINITY;
    be->sumsq(be, ae_host_f32(&out), ae_host_f32(x), 5);
    assert_true(isinf(out) && out > 0);
    x[3] = NAN;
    be->sumsq(be, ae_host_f32(&out), ae_host_f32(x), 5);
    assert_true(isnan(out));
    x[1] = INFINITY; // Inf and NaN: NaN
    be->sumsq(be, ae_host_f32(&out), ae_host_f32(x), 5);
    assert_true(isnan(out));
    float big[3] = {3e19f, 3e19f, 1.0f}; // each square finite in double, the sum above FLT_MAX
    be->sumsq(be, ae_host_f32(&out), ae_host_f32(big), 3);
    assert_true(isinf(out));
}

static void test_axpby(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 6);
    size_t n = 70001; // over the OpenMP threshold
    float *x = fvec(n, &r, 1.0f), *y = fvec(n, &r, 1.0f), *y0 = fcopy(y, n);
    be->axpby(be, ae_host_f32(y), 0.3f, ae_host_f32(x), -1.25f, n);
    for (size_t j = 0; j < n; j++) {
        float want = 0.3f * x[j] + -1.25f * y0[j];
        if (y[j] != want) fail_msg("axpby[%zu]: %.9g, want %.9g", j, (double)y[j], (double)want);
    }
    for (size_t j = 0; j < n; j++) y[j] = NAN; // beta == 0 must not read y
    be->axpby(be, ae_host_f32(y), 2.0f, ae_host_f32(x), 0.0f, n);
    for (size_t j = 0; j < n; j++) assert_true(y[j] == 2.0f * x[j]);
    free(x), free(y), free(y0);
}

// =============================================================================================
// adamw: the literal formula in float, bit for bit; the non-finite flag

static void adamw_ref(const ae_adamw_args *a, float *w, float *m, float *v, const float *g,
                      size_t n) {
    for (size_t j = 0; j < n; j++) {
        float gj = g[j] * a->gscale;
        m[j] = a->beta1 * m[j] + (1.0f - a->beta1) * gj;
        v[j] = a->beta2 * v[j] + (1.0f - a->beta2) * gj * gj;
        float mhat = m[j] / a->bc1, vhat = v[j] / a->bc2;
        w[j] -= a->lr * (mhat / (sqrtf(vhat) + a->eps) + a->weight_decay * w[j]);
    }
}

static void test_adamw(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 7);
    size_t n = 100003;
    float *w = fvec(n, &r, 1.0f), *g = fvec(n, &r, 0.01f), *m = fvec(n, &r, 0.001f);
    float *v = fvec(n, &r, 1e-4f);
    for (size_t j = 0; j < n; j++) v[j] = v[j] * v[j]; // second moments are >= 0
    float *w2 = fcopy(w, n), *m2 = fcopy(m, n), *v2 = fcopy(v, n), *p = fvec(n, &r, 1.0f);
    int32_t flag = 0;
    for (int step = 1; step <= 3; step++) {
        ae_adamw_args a = {.lr = 1e-3f * step, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                           .weight_decay = step == 2 ? 0.0f : 0.1f,
                           .bc1 = 1.0f - powf(0.9f, (float)step),
                           .bc2 = 1.0f - powf(0.95f, (float)step), .gscale = 0.5f * step};
        // step 1: param a separate F32 copy; step 2: param == w; step 3: param null
        ae_ptr param = step == 1 ? ae_host_f32(p) : step == 2 ? ae_host_f32(w) : ae_ptr_null();
        be->adamw(be, &a, ae_host_f32(w), ae_host_f32(m), ae_host_f32(v), ae_host_f32(g), param,
                  ae_host_i32(&flag), n);
        adamw_ref(&a, w2, m2, v2, g, n);
        assert_memory_equal(w, w2, sizeof(float) * n);
        assert_memory_equal(m, m2, sizeof(float) * n);
        assert_memory_equal(v, v2, sizeof(float) * n);
        if (step == 1) assert_memory_equal(p, w, sizeof(float) * n);
        assert_int_equal(flag, 0);
    }
    // weight decay alone moves a weight with no gradient: w -= lr·wd·w (m = v = 0 stay 0)
    float w1 = 2.0f, m1 = 0, v1 = 0, g1 = 0;
    ae_adamw_args a = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                       .weight_decay = 0.5f, .bc1 = 0.1f, .bc2 = 0.001f, .gscale = 1.0f};
    be->adamw(be, &a, ae_host_f32(&w1), ae_host_f32(&m1), ae_host_f32(&v1), ae_host_f32(&g1),
              ae_ptr_null(), ae_host_i32(&flag), 1);
    assert_true(w1 == 2.0f - 0.1f * (0.0f + 0.5f * 2.0f));
    assert_int_equal(flag, 0);
    // a non-finite gradient: flag set; a later finite step never clears it
    g[n / 2] = INFINITY;
    be->adamw(be, &a, ae_host_f32(w), ae_host_f32(m), ae_host_f32(v), ae_host_f32(g),
              ae_ptr_null(), ae_host_i32(&flag), n);
    assert_int_equal(flag, 1);
    g[n / 2] = 0.0f;
    for (size_t j = 0; j < n; j++) w[j] = 1.0f, m[j] = 0.0f, v[j] = 0.0f;
    be->adamw(be, &a, ae_host_f32(w), ae_host_f32(m), ae_host_f32(v), ae_host_f32(g),
              ae_ptr_null(), ae_host_i32(&flag), n);
    assert_int_equal(flag, 1);
    for (size_t j = 0; j < n; j++) assert_true(isfinite(w[j]));
    // NaN gradient in the last element; an overflowing v (g'² > FLT_MAX)
    flag = 0;
    g[n - 1] = NAN;
    be->adamw(be, &a, ae_host_f32(w), ae_host_f32(m), ae_host_f32(v), ae_host_f32(g),
              ae_ptr_null(), ae_host_i32(&flag), n);
    assert_int_equal(flag, 1);
    flag = 0;
    float wb = 1, mb = 0, vb = 0, gb = 1e30f;
    be->adamw(be, &a, ae_host_f32(&wb), ae_host_f32(&mb), ae_host_f32(&vb), ae_host_f32(&gb),
              ae_ptr_null(), ae_host_i32(&flag), 1);
    assert_true(isinf(vb));
    assert_int_equal(flag, 1);
    free(w), free(g), free(m), free(v), free(w2), free(m2), free(v2), free(p);
}

int main(void) {
    be = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_bwd),  cmocka_unit_test(test_mse_rows),
        cmocka_unit_test(test_cosine_rows), AE_TB_TESTS(test_softmax_stats_kd),
        cmocka_unit_test(test_sumsq),      cmocka_unit_test(test_axpby),
        cmocka_unit_test(test_adamw),
    };
    return cmocka_run_group_tests(tests, ae_tb_setup, ae_tb_teardown);
}
