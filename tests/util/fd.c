// Finite differences for the gradient tests (fd.h).
#include "util/fd.h"

#include <math.h>
#include <stdlib.h>

ae_fd_dir ae_fd_element(float *x, const int64_t *i) {
    static const float one = 1.0f;
    return (ae_fd_dir){x, i, &one, 1};
}

double ae_fd_rms(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n > 0 ? sqrt(s / n) : 0.0;
}

double ae_fd_loss_at(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double t) {
    float *save = malloc(sizeof(float) * (size_t)d->n); // (n) the moved values
    if (!save) abort();
    for (int64_t j = 0; j < d->n; j++) {
        float *x = &d->x[d->idx ? d->idx[j] : j];
        save[j] = *x;
        *x = (float)(*x + t * d->v[j]);
    }
    double l = f(ctx);
    for (int64_t j = 0; j < d->n; j++) d->x[d->idx ? d->idx[j] : j] = save[j];
    free(save);
    return l;
}

double ae_fd_central(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double h) {
    double step = 2 * h;
    if (d->n == 1 && d->v[0] != 0.0f) { // the step the float element actually takes
        double x0 = d->x[d->idx ? d->idx[0] : 0], v = d->v[0];
        step = ((double)(float)(x0 + h * v) - (double)(float)(x0 - h * v)) / v;
    }
    double p = ae_fd_loss_at(f, ctx, d, h), m = ae_fd_loss_at(f, ctx, d, -h);
    return (p - m) / step;
}

double ae_fd_central_d(ae_fd_loss f, void *ctx, double *x, double h) {
    double x0 = *x;
    *x = x0 + h;
    double p = f(ctx);
    *x = x0 - h;
    double m = f(ctx);
    *x = x0;
    return (p - m) / (2 * h);
}

double ae_fd_stencil4(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double h) {
    double p1 = ae_fd_loss_at(f, ctx, d, h), m1 = ae_fd_loss_at(f, ctx, d, -h);
    double p2 = ae_fd_loss_at(f, ctx, d, 2 * h), m2 = ae_fd_loss_at(f, ctx, d, -2 * h);
    return (8 * (p1 - m1) - (p2 - m2)) / (12 * h);
}

double ae_fd_best(ae_fd_loss f, void *ctx, const ae_fd_dir *d, double scale, double an,
                  double floor, double good, double *num) {
    static const double ladder[] = {0.03, 0.1, 0.01, 0.3, 0.003, 1.0}; // likeliest first
    double best = -1;
    for (size_t j = 0; j < sizeof ladder / sizeof ladder[0]; j++) {
        double est = ae_fd_stencil4(f, ctx, d, scale * ladder[j]);
        if (isnan(est)) continue;
        double e = an == est ? 0.0 : fabs(an - est) / (fabs(est) + floor);
        if (best < 0 || e < best) {
            best = e;
            *num = est;
        }
        if (best <= good) break; // agreement found: the rest of the ladder cannot fail it
    }
    return best;
}
