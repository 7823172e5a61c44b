#include "core/logsumexp.h"

#include <math.h>

double ae_logsumexp(const float *z, int n) {
    float mx = z[0];
    for (int i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)z[i] - mx);
    return log(s) + mx;
}
