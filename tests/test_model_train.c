// Whole-model training passes on tiny models (dense untied GQA, MoE with and without
// norm_topk_prob, and MLA / GateSWA students of qwen3-micro):
//  (a) the training forward's final hidden states through lm_head equal the inference forward's
//      logits, per sequence;
//  (b) the backward (which recomputes each layer's internals from the kept stream h_l) against
//      central finite differences of the scalar loss
//        ℓ = Σ final ⊙ R + Σ_{l=0..L} Σ h_l ⊙ R_l
//      (d_final = R; the hook on the stream adds R_l at h_l, called once per l from L down to 0
//      with h_l) for random elements of EVERY parameter tensor;
//  (c) attention_only: non-attention gradients stay zero, attention gradients equal the full
//      mode's; the backward accumulates (twice = 2×);
//  (d) ae_model_params: names, decay flags, tied head listed once, packed expert tensors;
//  (e) a forward keeping no stream (a teacher's) gives the same final hidden, bit for bit, and
//      the backward refuses it.
// The forward is fp32 and ℓ sums thousands of terms through up to 4 layers: its rounding noise
// (~3e-5 absolute on micro, measured) swamps plain central differences of single weights whose
// gradient is ~1e-2. So every check uses the 4-point stencil (O(h⁴) truncation) over a ladder
// of steps scaled by the tensor's RMS value and keeps the best-agreeing step (the usable step
// differs per tensor by 30×: ae_fd_best of util/fd.h); per tensor it checks CHECKS single
// elements (tolerance 2% + 1% of the tensor's largest gradient: noise-limited) and one random
// direction v ~ N(0, 1) over the whole tensor, whose derivative Σ g·v stands far above the
// noise (tolerance 1%, the sharp check; measured worst 0.2%). Verified by mutation: dropping the
// MoE renormalisation or softmax term, the routing weight in the expert gradient, an MLP
// input-gradient term, the d_hidden injection, the embedding scatter-add's accumulation, or
// sending the post-norm gradient to the wrong tensor each fails.
// MoE top-k is not differentiable where the selected set changes: batches are drawn with a
// routing margin (ae_train_acts_router_probs), perturbations that still change a selected set
// (ae_train_acts_topk) are not used, and an element where every step flips is skipped with a
// message. The tests run single-threaded (thousands of 12-token forwards).
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/student.h"
#include "train/model_train.h"
#include "util/fd.h"
#include "util/testutil.h"

#define B_ 2
#define T_ 6
#define CHECKS 2      // single elements per tensor
#define FD_STEP 10.0  // single-element steps: FD_STEP × RMS × the ladder of ae_fd_best
#define FD_REL 2e-2   // single elements: |an − num| <= FD_REL·|num| + FD_ABS·|g|max
#define FD_ABS 1e-2
#define DIR_REL 1e-2  // whole-tensor directions: |an − num| <= DIR_REL·(|num| + DIR_FLOOR·|g|₂)
#define DIR_FLOOR 0.1
#define MIN_MARGIN 0.02 // MoE batches: k-th minus (k+1)-th router probability, every token

static ae_model *load_or_fail(const char *dir) {
    ae_model *m = NULL;
    if (ae_model_load(dir, ae_backend_cpu(), &m) != AE_OK) fail_msg("%s: %s", dir, ae_last_error());
    return m;
}

typedef struct {
    ae_model *m;
    int32_t ids[B_ * T_];
    float **R; // (L + 2): R[0..L] on h_l, R[L+1] on the final hidden   each (B*T, D)
} fixture;

static double loss_of(const ae_train_acts *a, const fixture *f) {
    int L = f->m->cfg.num_hidden_layers;
    size_t n = (size_t)B_ * T_ * f->m->cfg.hidden_size;
    double s = 0.0;
    for (int l = 0; l <= L + 1; l++) {
        const float *h = ae_f32(l <= L ? ae_train_acts_hidden(a, l) : ae_train_acts_final(a));
        for (size_t i = 0; i < n; i++) s += (double)h[i] * f->R[l][i];
    }
    return s;
}

// 1 if every MoE layer selects the same set of experts for every token as in `base` (the order
// within the top-k does not change the output).
static int same_routing(const ae_train_acts *a, const ae_train_acts *base, const ae_model *m) {
    int K = m->cfg.num_experts_per_tok;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        const int *x = ae_train_acts_topk(a, l), *y = ae_train_acts_topk(base, l);
        if (!x) continue;
        for (int t = 0; t < B_ * T_; t++)
            for (int j = 0; j < K; j++) {
                int found = 0;
                for (int i = 0; i < K; i++) found |= x[t * K + j] == y[t * K + i];
                if (!found) return 0;
            }
    }
    return 1;
}

static ae_train_acts *forward_or_fail(const fixture *f) {
    ae_train_acts *a = NULL;
    if (ae_model_train_forward(f->m, f->ids, B_, T_, 1, &a) != AE_OK) fail_msg("%s", ae_last_error());
    return a;
}

// (a) lm_head(final) == inference logits, each sequence on its own cache.
static void check_logits(const fixture *f, const ae_train_acts *a) {
    const ae_model *m = f->m;
    int V = m->cfg.vocab_size, D = m->cfg.hidden_size;
    float *ref = malloc(sizeof(float) * T_ * V), *got = malloc(sizeof(float) * T_ * V);
    float worst = 0;
    for (int b = 0; b < B_; b++) {
        ae_kv_cache c;
        assert_int_equal(ae_kv_cache_init(&c, m, T_), AE_OK);
        assert_int_equal(ae_model_forward(m, &c, f->ids + b * T_, T_, ae_host_f32(ref), 1), AE_OK);
        ae_kv_cache_free(&c);
        ae_matmul(m->be, ae_host_f32(got), ae_ptr_at(ae_train_acts_final(a), (size_t)b * T_ * D),
                  m->lm_head, T_, D, V);
        float err = 0, scale = 0;
        for (int i = 0; i < T_ * V; i++) {
            err = fmaxf(err, fabsf(ref[i] - got[i]));
            scale = fmaxf(scale, fabsf(ref[i]));
        }
        worst = fmaxf(worst, err / scale);
    }
    printf("  train forward vs inference logits: max rel diff %.2g\n", (double)worst);
    assert_true(worst < 1e-5f);
    free(ref);
    free(got);
}

// The backward's hook on the residual stream: adds R_l into dh; checks that it is called once
// per layer boundary, from L down to 0, with h_l.
typedef struct {
    const fixture *f;
    const ae_train_acts *a;
    int next; // the l expected next
} hook;

static ae_status add_R(void *ctx, int l, ae_ptr h, ae_ptr dh) {
    hook *k = ctx;
    const ae_model *m = k->f->m;
    assert_int_equal(l, k->next);
    assert_ptr_equal(h.data, ae_train_acts_hidden(k->a, l).data);
    k->next--;
    m->be->add(m->be, dh, dh, ae_host_f32(k->f->R[l]), (size_t)B_ * T_ * m->cfg.hidden_size);
    return AE_OK;
}

static void backward_or_fail(const fixture *f, const ae_train_acts *a, ae_model *g, int attention_only) {
    int L = f->m->cfg.num_hidden_layers;
    hook k = {f, a, L};
    if (ae_model_train_backward(f->m, a, ae_host_f32(f->R[L + 1]), add_R, &k, g, attention_only) != AE_OK)
        fail_msg("%s", ae_last_error());
    assert_int_equal(k.next, -1);
}

static ae_model *grads_or_fail(const fixture *f, const ae_train_acts *a, int attention_only) {
    ae_model *g = NULL;
    assert_int_equal(ae_model_zeros_like(f->m, &g), AE_OK);
    backward_or_fail(f, a, g, attention_only);
    return g;
}

static int used_row(const fixture *f, int row) {
    for (int i = 0; i < B_ * T_; i++)
        if (f->ids[i] == row) return 1;
    return 0;
}

// The loss ℓ for the finite differences (util/fd.h) at the current parameters; NAN when the
// MoE routing differs from base's (a step across a routing flip measures a jump, not a slope).
typedef struct {
    fixture *f;
    const ae_train_acts *base;
} fd_ctx;

static double fd_loss(void *ctx) {
    fd_ctx *c = ctx;
    ae_train_acts *a = forward_or_fail(c->f);
    double l = same_routing(a, c->base, c->f->m) ? loss_of(a, c->f) : NAN;
    ae_train_acts_free(a);
    return l;
}

// (b) every tensor against finite differences: CHECKS single elements, and one random direction
// v ~ N(0, 1) over the whole tensor (Σ g·v has a large signal against the noise of ℓ: the sharp
// check, DIR_REL). Steps scale with the tensor's RMS value.
static void check_fd(fixture *f, const ae_train_acts *base, ae_model *g, ae_rng *r) {
    fd_ctx fc = {f, base};
    ae_named_param *P, *G;
    int n, ng;
    assert_int_equal(ae_model_params(f->m, 0, &P, &n), AE_OK);
    assert_int_equal(ae_model_params(g, 0, &G, &ng), AE_OK);
    assert_int_equal(n, ng);
    int D = f->m->cfg.hidden_size, checked = 0, skipped = 0, dirs = 0;
    double worst = 0, worst_dir = 0;
    for (int k = 0; k < n; k++) {
        assert_string_equal(P[k].name, G[k].name);
        assert_true(P[k].numel == G[k].numel);
        double gmax = 0, xr = fmax(ae_fd_rms(P[k].data, P[k].numel), 1e-2);
        for (int64_t i = 0; i < G[k].numel; i++) gmax = fmax(gmax, fabs(G[k].data[i]));
        int is_embed = strcmp(P[k].name, "model.embed_tokens.weight") == 0;
        for (int c = 0; c < CHECKS; c++) {
            int64_t i = (int64_t)(ae_rng_u64(r) % (uint64_t)P[k].numel);
            if (is_embed && c < CHECKS - 1) // rows of tokens in the batch (the last: any row)
                i = (int64_t)f->ids[ae_rng_u64(r) % (B_ * T_)] * D + (int64_t)(ae_rng_u64(r) % D);
            ae_fd_dir d = ae_fd_element(P[k].data, &i);
            double an = G[k].data[i], num = 0;
            if (is_embed && !used_row(f, (int)(i / D))) assert_true(an == 0.0);
            double e = ae_fd_best(fd_loss, &fc, &d, FD_STEP * xr, an, FD_ABS / FD_REL * gmax, FD_REL / 4, &num);
            if (e < 0) {
                printf("  skip %s[%lld]: MoE routing flips at every step (top-k is not "
                       "differentiable there)\n", P[k].name, (long long)i);
                skipped++;
                continue;
            }
            if (!(e <= FD_REL))
                fail_msg("%s[%lld]: analytic %.7g, numeric %.7g (|g|max %.3g)", P[k].name,
                         (long long)i, an, num, gmax);
            worst = fmax(worst, e);
            checked++;
        }
        float *v = malloc(sizeof(float) * (size_t)P[k].numel);
        double an = 0, num = 0, g2 = 0;
        for (int64_t i = 0; i < P[k].numel; i++) {
            v[i] = ae_rng_normal(r);
            an += (double)v[i] * G[k].data[i];
            g2 += (double)G[k].data[i] * G[k].data[i];
        }
        // Σ g·v has typical size |g|₂; a direction where it cancels is measured against that
        ae_fd_dir d = {P[k].data, NULL, v, P[k].numel};
        double e = ae_fd_best(fd_loss, &fc, &d, xr, an, DIR_FLOOR * sqrt(g2) + 1e-12, DIR_REL / 4, &num);
        free(v);
        if (e < 0) {
            printf("  skip direction of %s: MoE routing flips at every step\n", P[k].name);
            continue;
        }
        if (!(e <= DIR_REL))
            fail_msg("%s: directional derivative analytic %.7g, numeric %.7g", P[k].name, an, num);
        worst_dir = fmax(worst_dir, e);
        dirs++;
    }
    printf("  finite differences: %d elements of %d tensors agree (worst rel err %.2g, floor "
           "%.0e·|g|max), %d skipped; %d whole-tensor directions agree (worst rel err %.2g)\n",
           checked, n, worst, FD_ABS, skipped, dirs, worst_dir);
    assert_true(skipped <= checked / 10);
    assert_true(dirs >= n - n / 10);
    free(P);
    free(G);
}

// (c) attention_only, and accumulation.
static void check_attention_only(const fixture *f, const ae_train_acts *a, ae_model *g) {
    ae_model *g1 = grads_or_fail(f, a, 1);
    ae_named_param *P, *Q;
    int n, n1;
    assert_int_equal(ae_model_params(g, 0, &P, &n), AE_OK);
    assert_int_equal(ae_model_params(g1, 0, &Q, &n1), AE_OK);
    int n_attn = 0;
    for (int k = 0; k < n; k++) {
        if (Q[k].is_attention) {
            n_attn++;
            for (int64_t i = 0; i < Q[k].numel; i++)
                if (!(fabsf(Q[k].data[i] - P[k].data[i]) <= 1e-6f * fmaxf(1e-3f, fabsf(P[k].data[i]))))
                    fail_msg("attention_only %s[%lld]: %.7g vs full %.7g", Q[k].name, (long long)i,
                             (double)Q[k].data[i], (double)P[k].data[i]);
        } else {
            for (int64_t i = 0; i < Q[k].numel; i++)
                if (Q[k].data[i] != 0.0f) fail_msg("attention_only touched %s", Q[k].name);
        }
    }
    ae_named_param *A;
    int na;
    assert_int_equal(ae_model_params(g1, 1, &A, &na), AE_OK);
    assert_int_equal(na, n_attn);
    for (int k = 0; k < na; k++) assert_true(A[k].is_attention);
    // accumulation: a second full backward on top of the first doubles every gradient
    ae_model_zero(g1);
    for (int rep = 0; rep < 2; rep++) backward_or_fail(f, a, g1, 0);
    for (int k = 0; k < n; k++)
        for (int64_t i = 0; i < P[k].numel; i++)
            if (!(fabsf(Q[k].data[i] - 2 * P[k].data[i]) <= 1e-5f * fmaxf(1e-3f, fabsf(P[k].data[i]))))
                fail_msg("accumulate %s[%lld]: %.7g vs 2 × %.7g", Q[k].name, (long long)i,
                         (double)Q[k].data[i], (double)P[k].data[i]);
    printf("  attention_only: %d attention tensors equal the full backward, the rest stay 0\n", na);
    free(P);
    free(Q);
    free(A);
    ae_model_free(g1);
}

// (d) the parameter list.
static void check_params(ae_model *m, int expect_count_matches) {
    ae_named_param *P;
    int n;
    assert_int_equal(ae_model_params(m, 0, &P, &n), AE_OK);
    int64_t total = 0;
    int has_head = 0, has_experts = 0;
    for (int k = 0; k < n; k++) {
        total += P[k].numel;
        for (int j = 0; j < k; j++) assert_string_not_equal(P[k].name, P[j].name);
        int no_decay = strstr(P[k].name, "norm") != NULL || strstr(P[k].name, "sinks") != NULL ||
                       strstr(P[k].name, "g_proj") != NULL; // norms, sinks, the output gate
        assert_int_equal(P[k].decay, !no_decay);
        assert_int_equal(P[k].is_attention, strstr(P[k].name, ".self_attn.") != NULL);
        has_head |= strcmp(P[k].name, "lm_head.weight") == 0;
        has_experts |= strstr(P[k].name, ".mlp.experts.gate_proj") != NULL;
    }
    assert_int_equal(has_head, m->lm_head.data != m->embed.data);
    assert_int_equal(has_experts, m->cfg.num_experts > 0);
    if (expect_count_matches) assert_true(total == m->n_params);
    free(P);
}

// Smallest gap between the k-th and (k+1)-th router probability over tokens and MoE layers
// (1 for a dense model): how far the batch is from a routing flip.
static double routing_margin(const fixture *f) {
    const ae_model *m = f->m;
    int E = m->cfg.num_experts, K = m->cfg.num_experts_per_tok;
    ae_train_acts *a = forward_or_fail(f);
    double margin = 1;
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        const float *p = ae_train_acts_router_probs(a, l);
        const int *top = ae_train_acts_topk(a, l);
        if (!p || K >= E) continue;
        for (int t = 0; t < B_ * T_; t++) {
            float kth = p[t * E + top[t * K + K - 1]], next = 0;
            for (int e = 0; e < E; e++) {
                int sel = 0;
                for (int j = 0; j < K; j++) sel |= top[t * K + j] == e;
                if (!sel && p[t * E + e] > next) next = p[t * E + e];
            }
            margin = fmin(margin, kth - next);
        }
    }
    ae_train_acts_free(a);
    return margin;
}

// AE_KEEP_ATTN: the backward from the kept attention activations gives every gradient of the
// recomputing backward (g) bit for bit, and frees the activations as it goes.
static void check_keep_attn(const fixture *f, const ae_model *g) {
    ae_train_acts *a = NULL;
    if (ae_model_train_forward(f->m, f->ids, B_, T_, AE_KEEP_F32 | AE_KEEP_ATTN, &a) != AE_OK)
        fail_msg("%s", ae_last_error());
    ae_model *gk = grads_or_fail(f, a, 0);
    ae_named_param *pa = NULL, *pb = NULL;
    int na = 0, nb = 0;
    assert_int_equal(ae_model_params((ae_model *)g, 0, &pa, &na), AE_OK);
    assert_int_equal(ae_model_params(gk, 0, &pb, &nb), AE_OK);
    assert_int_equal(na, nb);
    for (int i = 0; i < na; i++) {
        if (!pa[i].data) continue;
        if (memcmp(pa[i].data, pb[i].data, sizeof(float) * (size_t)pa[i].numel))
            fail_msg("AE_KEEP_ATTN: the gradient of %s differs from the recomputing backward's", pa[i].name);
    }
    printf("  kept attention activations: %d gradients bit for bit the recomputing backward's\n", na);
    free(pa);
    free(pb);
    ae_model_free(gk);
    ae_train_acts_free(a);
}

static void run_model(ae_model *m, const char *what, uint64_t seed) {
    printf("%s\n", what);
    fixture f = {.m = m};
    ae_rng r;
    ae_rng_seed(&r, seed);
    int L = m->cfg.num_hidden_layers, V = m->cfg.vocab_size;
    size_t n = (size_t)B_ * T_ * m->cfg.hidden_size;
    // MoE: draw batches until no token is within MIN_MARGIN of a routing flip (a random router
    // makes near-ties common; finite differences across a flip measure a jump, not a slope);
    // else the best of 100
    double margin = -1;
    int32_t best[B_ * T_];
    for (int tries = 0; tries < 100 && margin < MIN_MARGIN; tries++) {
        for (int i = 0; i < B_ * T_; i++) f.ids[i] = (int32_t)(ae_rng_u64(&r) % (uint64_t)V);
        f.ids[3] = f.ids[7]; // a repeated token: its embedding gradient sums two rows
        double mg = routing_margin(&f);
        if (mg > margin) {
            margin = mg;
            memcpy(best, f.ids, sizeof best);
        }
    }
    memcpy(f.ids, best, sizeof best);
    if (m->cfg.num_experts > 0) printf("  routing margin of the batch %.3g\n", margin);
    f.R = malloc(sizeof(float *) * (size_t)(L + 2));
    for (int l = 0; l < L + 2; l++) {
        f.R[l] = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) f.R[l][i] = ae_rng_normal(&r);
    }
    ae_train_acts *a = forward_or_fail(&f);
    check_logits(&f, a);
    ae_model *g = grads_or_fail(&f, a, 0);
    check_keep_attn(&f, g);
    check_fd(&f, a, g, &r);
    check_attention_only(&f, a, g);
    ae_model_free(g);
    ae_train_acts_free(a);
    for (int l = 0; l < L + 2; l++) free(f.R[l]);
    free(f.R);
}

static void test_dense_untied(void **state) {
    (void)state;
    ae_model *m = load_or_fail(ae_test_src("tests/fixtures/models/dense_gqa2_untied"));
    check_params(m, 1);
    run_model(m, "dense_gqa2_untied", 1);
    ae_model_free(m);
}

static void test_moe_norm_topk(void **state) {
    (void)state;
    ae_model *m = load_or_fail(ae_test_src("tests/fixtures/models/moe_norm_topk"));
    check_params(m, 1);
    run_model(m, "moe_norm_topk (tied)", 2);
    ae_model_free(m);
}

// norm_topk_prob = false: the softmax normaliser's gradient term is live (with renormalisation
// it cancels exactly); sparse step 2 mixes dense and MoE layers; untied head.
static void test_moe_sparse_step2(void **state) {
    (void)state;
    ae_model *m = load_or_fail(ae_test_src("tests/fixtures/models/moe_sparse_step2_untied"));
    check_params(m, 1);
    run_model(m, "moe_sparse_step2_untied (no renormalisation)", 5);
    ae_model_free(m);
}

static ae_model *micro_student(const ae_student_spec *spec) {
    ae_model *m = load_or_fail(ae_test_src("models/qwen3-micro"));
    ae_init_report rep;
    ae_student_spec s = *spec;
    if (ae_student_make(m, &s, &rep) != AE_OK) fail_msg("%s", ae_last_error());
    // Random init leaves sinks far below the softmax mass (no gradient to test): move them to O(1).
    ae_rng r;
    ae_rng_seed(&r, 99);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        if (m->layers[l].kind == AE_ATTN_GATESWA && !ae_ptr_is_null(m->layers[l].gqa.sinks))
            for (int h = 0; h < m->layers[l].gqa.d.Hq; h++)
                ae_f32(m->layers[l].gqa.sinks)[h] = ae_rng_normal(&r);
    return m;
}

static void test_micro_mla(void **state) {
    (void)state;
    ae_student_spec spec = {.target = AE_ATTN_MLA, .kv_lora_rank = 16, .qk_rope_dim = 8, .seed = 5};
    ae_model *m = micro_student(&spec);
    check_params(m, 0);
    run_model(m, "qwen3-micro MLA student", 3);
    ae_model_free(m);
}

static void test_micro_gateswa(void **state) {
    (void)state;
    ae_student_spec spec = {.target = AE_ATTN_GATESWA, .full_every = 2, .window = 4,
                            .gate = AE_GATE_ELEMENTWISE, .sinks = 1, .seed = 6};
    ae_model *m = micro_student(&spec);
    check_params(m, 0);
    run_model(m, "qwen3-micro GateSWA student (window 4 < T 6, sinks)", 4);
    ae_model_free(m);
}

static void test_bad_input(void **state) {
    (void)state;
    ae_model *m = load_or_fail(ae_test_src("tests/fixtures/models/dense_gqa2_untied"));
    int32_t ids[4] = {0, 1, 2, 99999};
    ae_train_acts *a = NULL;
    assert_int_equal(ae_model_train_forward(m, ids, 1, 4, 1, &a), AE_ERR_ARG);
    assert_null(a);
    assert_int_equal(ae_model_train_forward(m, ids, 0, 4, 1, &a), AE_ERR_ARG);
    // kept attention activations without the F32 stream the backward needs
    assert_int_equal(ae_model_train_forward(m, ids, 1, 3, AE_KEEP_ATTN, &a), AE_ERR_ARG);
    assert_null(a);
    ae_model *other = load_or_fail(ae_test_src("tests/fixtures/models/moe_norm_topk"));
    ae_model *g = NULL;
    assert_int_equal(ae_model_zeros_like(other, &g), AE_OK);
    assert_int_equal(ae_model_train_forward(m, ids, 1, 3, 1, &a), AE_OK);
    float *d = calloc((size_t)3 * m->cfg.hidden_size, sizeof(float));
    assert_int_equal(ae_model_train_backward(m, a, ae_host_f32(d), NULL, NULL, g, 0), AE_ERR_ARG);
    // a forward that kept only the final hidden (a teacher's): the same final, bit for bit, and
    // no backward from it
    ae_train_acts *a0 = NULL;
    ae_model *gm = NULL;
    assert_int_equal(ae_model_train_forward(m, ids, 1, 3, 0, &a0), AE_OK);
    for (int l = 0; l <= m->cfg.num_hidden_layers; l++) assert_null(ae_train_acts_hidden(a0, l).data);
    assert_memory_equal(ae_f32(ae_train_acts_final(a0)), ae_f32(ae_train_acts_final(a)),
                        sizeof(float) * 3 * m->cfg.hidden_size);
    assert_int_equal(ae_model_zeros_like(m, &gm), AE_OK);
    assert_int_equal(ae_model_train_backward(m, a0, ae_host_f32(d), NULL, NULL, gm, 0), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "keep_hidden"));
    // streams kept in the activation dtype (the cosine term's teacher side): on the cpu that is
    // F32, so every stream and the final hidden have the bits of the F32-kept forward
    ae_train_acts *aa = NULL;
    size_t nd = (size_t)3 * m->cfg.hidden_size;
    assert_int_equal(ae_model_train_forward(m, ids, 1, 3, AE_KEEP_ACT, &aa), AE_OK);
    for (int l = 0; l <= m->cfg.num_hidden_layers; l++) {
        ae_ptr h = ae_train_acts_hidden(aa, l);
        assert_int_equal(h.dtype, m->be->act_dtype);
        assert_memory_equal(ae_f32(h), ae_f32(ae_train_acts_hidden(a, l)), sizeof(float) * nd);
    }
    assert_memory_equal(ae_f32(ae_train_acts_final(aa)), ae_f32(ae_train_acts_final(a)),
                        sizeof(float) * nd);
    ae_train_acts_free(aa);
    free(d);
    ae_train_acts_free(a0);
    ae_train_acts_free(a);
    ae_model_free(gm);
    ae_model_free(g);
    ae_model_free(other);
    ae_model_free(m);
}

int main(void) {
    // Thousands of forwards of 12 tokens: thread start/sync costs more than the work, and on a
    // loaded machine spinning OpenMP threads slow it 20× (measured). One thread.
    omp_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_untied),
        cmocka_unit_test(test_moe_norm_topk),
        cmocka_unit_test(test_moe_sparse_step2),
        cmocka_unit_test(test_micro_mla),
        cmocka_unit_test(test_micro_gateswa),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
