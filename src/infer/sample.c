#include "infer/sample.h"

#include <math.h>
#include <stdlib.h>

#include "core/mem.h"

ae_status ae_sampler_init(ae_sampler *s, const ae_sampler_params *p, int vocab) {
    s->p = *p;
    s->vocab = vocab;
    s->probs = NULL;
    s->order = NULL;
    if (!p->greedy) {
        if (!(p->temperature > 0.0f) || !isfinite(p->temperature))
            return ae_errorf(AE_ERR_ARG, "--temperature must be a positive number, got %g",
                             p->temperature);
        if (p->top_k < 0) return ae_errorf(AE_ERR_ARG, "--top-k must be >= 0, got %d", p->top_k);
        if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
            return ae_errorf(AE_ERR_ARG, "--top-p must be in (0, 1], got %g", p->top_p);
    }
    ae_rng_seed(&s->rng, p->seed);
    s->probs = ae_alloc_f32(vocab);
    s->order = ae_malloc(sizeof(int) * (size_t)vocab);
    if (!s->probs || !s->order) {
        ae_sampler_free(s);
        return AE_ERR_NOMEM;
    }
    return AE_OK;
}

void ae_sampler_free(ae_sampler *s) {
    ae_free_aligned(s->probs);
    free(s->order);
    s->probs = NULL;
    s->order = NULL;
}

int ae_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static const float *g_sort_probs; // qsort has no context argument; sampling is single-threaded

static int by_prob_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    float pi = g_sort_probs[i], pj = g_sort_probs[j];
    if (pi != pj) return pi > pj ? -1 : 1;
    return i - j;
}

int ae_sampler_next(ae_sampler *s, const float *logits) {
    int V = s->vocab;
    if (s->p.greedy) return ae_argmax(logits, V);
    float mx = logits[ae_argmax(logits, V)];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        s->probs[i] = expf((logits[i] - mx) / s->p.temperature);
        sum += s->probs[i];
        s->order[i] = i;
    }
    for (int i = 0; i < V; i++) s->probs[i] = (float)(s->probs[i] / sum);
    g_sort_probs = s->probs;
    qsort(s->order, (size_t)V, sizeof(int), by_prob_desc);
    int keep = (s->p.top_k > 0 && s->p.top_k < V) ? s->p.top_k : V;
    double cum = 0.0;
    for (int i = 0; i < keep; i++) {
        cum += s->probs[s->order[i]];
        if (cum >= s->p.top_p) {
            keep = i + 1;
            break;
        }
    }
    double mass = 0.0;
    for (int i = 0; i < keep; i++) mass += s->probs[s->order[i]];
    double r = ae_rng_uniform(&s->rng) * mass, acc = 0.0;
    for (int i = 0; i < keep; i++) {
        acc += s->probs[s->order[i]];
        if (r < acc) return s->order[i];
    }
    return s->order[keep - 1];
}
