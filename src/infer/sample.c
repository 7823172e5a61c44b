#include "infer/sample.h"

#include <math.h>
#include <stdlib.h>

ae_status ae_sampler_init(ae_sampler *s, const ae_sampler_params *p, int vocab) {
    s->p = *p;
    s->vocab = vocab;
    s->scratch = NULL;
    if (!p->greedy) {
        if (!(p->temperature > 0.0f) || !isfinite(p->temperature))
            return ae_errorf(AE_ERR_ARG, "--temperature must be a positive number, got %g",
                             p->temperature);
        if (p->top_k < 0) return ae_errorf(AE_ERR_ARG, "--top-k must be >= 0, got %d", p->top_k);
        if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
            return ae_errorf(AE_ERR_ARG, "--top-p must be in (0, 1], got %g", p->top_p);
    }
    ae_rng_seed(&s->rng, p->seed);
    s->scratch = malloc(sizeof *s->scratch * (size_t)vocab);
    if (!s->scratch) return AE_ERR_NOMEM;
    return AE_OK;
}

void ae_sampler_free(ae_sampler *s) {
    free(s->scratch);
    s->scratch = NULL;
}

int ae_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

ae_sample_param ae_sampler_row(ae_sampler *s) {
    ae_sample_param r = {0};
    if (s->p.greedy) return r;
    r.temperature = s->p.temperature;
    r.top_p = s->p.top_p;
    r.top_k = s->p.top_k;
    r.u = ae_rng_uniform(&s->rng);
    return r;
}

int ae_sampler_next(ae_sampler *s, const float *logits) {
    if (s->p.greedy) return ae_argmax(logits, s->vocab);
    ae_sample_param r = ae_sampler_row(s);
    return ae_sample_row(logits, s->vocab, &r, s->scratch);
}
