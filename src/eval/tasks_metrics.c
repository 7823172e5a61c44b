// Metrics as lm-eval's ConfigurableTask.process_results and its aggregations compute them:
//   acc       pred = argmax_i ll_i == gold (numpy argmax: the first maximum)     multiple choice
//   acc_norm  argmax_i ll_i / len(choice_i) in code points == gold
//   acc       every continuation token is the greedy one                       loglikelihood
//   perplexity exp(-mean ll)                                                   loglikelihood
// Standard error of a mean: sample standard deviation / sqrt(n) (lm-eval's mean_stderr).
// Groups (lm-eval's Group.aggregate over leaf tasks): weight_by_size, the size-weighted mean
// with pooled_sample_stderr; otherwise the plain mean with unweighted_mean_stderr.
// lm-eval bootstraps the perplexity's error (100,000 resamples); here it is the delta method,
// ppl · stderr(mean ll), which the bootstrap approximates.
#include <math.h>

#include "eval/tasks_internal.h"

const char *ae_metric_name(int metric) {
    switch (metric) {
    case AE_METRIC_ACC: return "acc";
    case AE_METRIC_ACC_NORM: return "acc_norm";
    case AE_METRIC_PPL: return "perplexity";
    default: return "?";
    }
}

void ae_task_predict(const ae_task_item *it, const ae_task_scores *s, int i, int *pred,
                     int *pred_norm) {
    const double *ll = s->ll + s->first[i];
    int p = 0, q = 0;
    for (int j = 1; j < it[i].n; j++) {
        if (ll[j] > ll[p]) p = j;
        if (ll[j] / it[i].len[j] > ll[q] / it[i].len[q]) q = j;
    }
    *pred = p;
    *pred_norm = q;
}

void ae_task_metric_values(const ae_task_item *items, const ae_task_scores *s, int metric,
                           double *vals) {
    for (int i = 0; i < s->n_items; i++) {
        int k = s->first[i];
        if (items[i].n == 1 && metric == AE_METRIC_ACC) { // loglikelihood task: greedy match
            vals[i] = s->greedy[k];
            continue;
        }
        if (metric == AE_METRIC_PPL) {
            vals[i] = s->ll[k];
            continue;
        }
        int p, q;
        ae_task_predict(items, s, i, &p, &q);
        vals[i] = (metric == AE_METRIC_ACC ? p : q) == items[i].gold;
    }
}

static void mean_se(const double *x, int n, double *mean, double *se) {
    double m = 0, ss = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m = n ? m / n : NAN;
    for (int i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *se = n > 1 ? sqrt(ss / (n - 1)) / sqrt((double)n) : NAN;
}

ae_metric_value ae_task_aggregate(int metric, const double *vals, int n) {
    ae_metric_value v;
    double m, se;
    mean_se(vals, n, &m, &se);
    if (metric == AE_METRIC_PPL) {
        v.value = exp(-m);
        v.stderr_ = v.value * se;
    } else {
        v.value = m;
        v.stderr_ = se;
    }
    return v;
}

ae_metric_value ae_task_paired_diff(int metric, const double *a, const double *b, int n) {
    ae_metric_value v;
    double ma, mb, md = 0, ss = 0, se;
    mean_se(a, n, &ma, &se);
    mean_se(b, n, &mb, &se);
    for (int i = 0; i < n; i++) md += b[i] - a[i];
    md = n ? md / n : NAN;
    for (int i = 0; i < n; i++) ss += (b[i] - a[i] - md) * (b[i] - a[i] - md);
    se = n > 1 ? sqrt(ss / (n - 1)) / sqrt((double)n) : NAN;
    if (metric == AE_METRIC_PPL) { // ppl_b - ppl_a; d(ppl)/d(mean ll) = -ppl, at the midpoint
        double pa = exp(-ma), pb = exp(-mb);
        v.value = pb - pa;
        v.stderr_ = 0.5 * (pa + pb) * se;
    } else {
        v.value = md;
        v.stderr_ = se;
    }
    return v;
}

ae_metric_value ae_task_group_aggregate(const ae_metric_value *v, const int *sizes, int k,
                                        int weight_by_size) {
    ae_metric_value g = {NAN, NAN};
    double num = 0, den = 0, var = 0, se2 = 0;
    long total = 0;
    int have_se = 1;
    for (int i = 0; i < k; i++) {
        double w = weight_by_size ? sizes[i] : 1;
        num += v[i].value * w;
        den += w;
        total += sizes[i];
        have_se &= !isnan(v[i].stderr_);
        double s2 = v[i].stderr_ * v[i].stderr_;
        var += (sizes[i] - 1.0) * s2 * sizes[i]; // lm-eval's (size - 1) * stderr**2 * size
        se2 += s2;
    }
    if (k == 0 || den == 0) return g;
    g.value = num / den;
    if (!have_se) return g;
    if (weight_by_size) // lm-eval's pooled_sample_stderr
        g.stderr_ = total > k ? sqrt(var / (double)(total - k) / (double)total) : NAN;
    else // unweighted_mean_stderr
        g.stderr_ = sqrt(se2) / k;
    return g;
}
