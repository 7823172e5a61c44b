// "Nice" axis ticks, linear and log10, and their labels (see chart.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot/chart.h"

static void add_tick(ae_ticks *t, double v, int labelled) {
    if (t->n >= AE_TICKS_MAX) return;
    t->v[t->n] = v;
    t->labelled[t->n] = labelled;
    t->n++;
}

void ae_ticks_linear(double lo, double hi, int target, ae_ticks *t) {
    memset(t, 0, sizeof *t);
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (lo > hi) {
        double s = lo;
        lo = hi, hi = s;
    }
    if (hi - lo <= fabs(hi) * 1e-12) { // one value: a range around it
        double d = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= d, hi += d;
    }
    if (target < 1) target = 1;
    if (target > AE_TICKS_MAX / 2) target = AE_TICKS_MAX / 2;
    double raw = (hi - lo) / target, mag = pow(10, floor(log10(raw))), norm = raw / mag;
    double m = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
    double step = m * mag;
    t->lo = floor(lo / step + 1e-9) * step;
    t->hi = ceil(hi / step - 1e-9) * step;
    t->step = step;
    long k0 = lround(t->lo / step), k1 = lround(t->hi / step);
    for (long k = k0; k <= k1; k++) add_tick(t, k == 0 ? 0.0 : (double)k * step, 1);
}

void ae_ticks_log(double lo, double hi, int target, ae_ticks *t) {
    memset(t, 0, sizeof *t);
    t->log = 1;
    if (!(lo > 0) || !(hi > 0) || !isfinite(lo) || !isfinite(hi)) lo = 0.1, hi = 1;
    if (lo > hi) {
        double s = lo;
        lo = hi, hi = s;
    }
    if (target < 1) target = 1;
    int elo = (int)floor(log10(lo) + 1e-12), ehi = (int)ceil(log10(hi) - 1e-12);
    if (ehi <= elo) ehi = elo + 1;
    int decades = ehi - elo;
    if (decades <= 2) { // a tight range on the 1-2-5 sequence, every multiple a tick
        static const double m[3] = {1, 2, 5};
        double l = pow(10, elo), h = pow(10, ehi);
        for (int e = elo; e <= ehi; e++)
            for (int i = 0; i < 3; i++) {
                double v = m[i] * pow(10, e);
                if (v <= lo * (1 + 1e-12) && v > l) l = v;
            }
        for (int e = ehi; e >= elo - 1; e--)
            for (int i = 2; i >= 0; i--) {
                double v = m[i] * pow(10, e);
                if (v >= hi * (1 - 1e-12) && v < h) h = v;
            }
        t->lo = l, t->hi = h, t->step = 1;
        for (int e = elo - 1; e <= ehi; e++)
            for (int d = 1; d <= 9; d++) {
                double v = d * pow(10, e);
                if (v < l * (1 - 1e-9) || v > h * (1 + 1e-9)) continue;
                add_tick(t, v, d == 1 || d == 2 || d == 5);
            }
        return;
    }
    int k = (decades + target - 1) / target; // decades per labelled tick
    if (decades > 6) ehi = elo + (decades + k - 1) / k * k;
    t->lo = pow(10, elo), t->hi = pow(10, ehi), t->step = k;
    for (int e = elo; e <= ehi; e++) {
        if (decades > 6) {
            if ((e - elo) % k == 0) add_tick(t, pow(10, e), 1);
            continue;
        }
        add_tick(t, pow(10, e), (e - elo) % k == 0);
        for (int d = 2; d <= 9 && e < ehi; d++) add_tick(t, d * pow(10, e), 0);
    }
}

// "1.5e-05" -> "1.5e-5", "2e+06" -> "2e6" (in place).
static void tidy_exponent(char *s) {
    char *e = strchr(s, 'e');
    if (!e) return;
    char *src = e + 1, *dst = e + 1;
    if (*src == '+') src++;
    else if (*src == '-') *dst++ = *src++;
    while (*src == '0' && src[1]) src++;
    memmove(dst, src, strlen(src) + 1);
}

void ae_tick_format(const ae_ticks *t, double v, char *buf, int n) {
    if (v == 0 || (!t->log && fabs(v) < t->step * 1e-9)) {
        snprintf(buf, (size_t)n, "0");
        return;
    }
    if (t->log) {
        double e = floor(log10(v) + 1e-9);
        if (e >= -4 && e <= 5) snprintf(buf, (size_t)n, "%.6g", v);
        else snprintf(buf, (size_t)n, "%.0fe%.0f", v / pow(10, e), e);
        return;
    }
    double big = fmax(fabs(t->lo), fabs(t->hi));
    if (big >= 1e6 || big < 1e-3) { // exponent form, enough digits for the spacing
        int p = 0;
        for (; p < 6; p++) {
            char tmp[64];
            snprintf(tmp, sizeof tmp, "%.*e", p, v);
            if (fabs(strtod(tmp, NULL) - v) < t->step * 1e-3) break;
        }
        snprintf(buf, (size_t)n, "%.*e", p, v);
        tidy_exponent(buf);
        return;
    }
    int d = 0;
    for (; d < 10; d++) {
        double s = t->step * pow(10, d);
        if (fabs(s - round(s)) < 1e-6 * s) break;
    }
    snprintf(buf, (size_t)n, "%.*f", d, v);
}
