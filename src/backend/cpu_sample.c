// Sampling of logit rows: the reference rule (backend/ops.h, ae_sample_param) as a sort of the
// whole vocabulary. This is the algorithm infer/sample.c always ran, moved here unchanged in its
// arithmetic (expf of the scaled logit, a double sum, float probabilities, double cumulative
// sums), so ae_sampler_next and the cpu backend's sample_rows give the same ids it gave.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu_internal.h"

// Probability descending, ties by the lower id: a total order, so any sort gives one result.
static int by_prob_desc(const void *a, const void *b) {
    const ae_sample_pair *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int first_max(const float *z, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (z[i] > z[best]) best = i;
    return best;
}

int ae_sample_row(const float *z, int V, const ae_sample_param *p, ae_sample_pair *o) {
    if (!(p->temperature > 0.0f)) return first_max(z, V);
    float mx = z[first_max(z, V)];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        o[i].p = expf((z[i] - mx) / p->temperature);
        o[i].id = i;
        sum += o[i].p;
    }
    for (int i = 0; i < V; i++) o[i].p = (float)(o[i].p / sum);
    qsort(o, (size_t)V, sizeof *o, by_prob_desc);
    int keep = (p->top_k > 0 && p->top_k < V) ? p->top_k : V;
    double cum = 0.0;
    for (int i = 0; i < keep; i++) { // the shortest prefix whose mass reaches top_p
        cum += o[i].p;
        if (cum >= p->top_p) {
            keep = i + 1;
            break;
        }
    }
    double mass = 0.0;
    for (int i = 0; i < keep; i++) mass += o[i].p;
    double r = p->u * mass, acc = 0.0;
    for (int i = 0; i < keep; i++) {
        acc += o[i].p;
        if (r < acc) return o[i].id;
    }
    return o[keep - 1].id;
}

void ae_cpu_sample_rows(const ae_backend *be, ae_ptr ids, ae_ptr zp, ae_ptr params, int N, int V) {
    (void)be;
    int32_t *out = cpu_i(ids, "sample_rows");
    const float *z = cpu_f(zp, "sample_rows");
    const ae_sample_param *p = (const ae_sample_param *)cpu_i(params, "sample_rows");
    if (N <= 0 || V <= 0) return;
    // rows in parallel, each with its own scratch (the sort has no shared state)
#pragma omp parallel if (N > 1)
    {
        ae_sample_pair *scratch = malloc(sizeof *scratch * (size_t)V);
        if (!scratch) { // 8 bytes per vocabulary entry: a host without them cannot go on
            fprintf(stderr, "sample_rows: out of host memory for a row of %d ids\n", V);
            abort();
        }
#pragma omp for
        for (int i = 0; i < N; i++) out[i] = ae_sample_row(z + (size_t)i * V, V, &p[i], scratch);
        free(scratch);
    }
}
