// Pass-key heat maps as one PNG (see passkey.h): a header, then per model a row of two panels,
// exact-match accuracy (colour range 0..1) and mean key log-likelihood per token (one range
// over every model, so teacher and student colours compare). Rows: lengths; columns: depths.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/passkey.h"
#include "plot/chart.h"
#include "plot/font.h"
#include "plot/heatmap.h"
#include "plot/png.h"

enum { FS = 2, HEADER_H = 60, CELL_W = 84, CELL_H = 44 };

ae_status ae_passkey_write_png(const char *path, const ae_passkey_set *s,
                               const ae_passkey_model *models, int n_models) {
    if (n_models < 1) return ae_errorf(AE_ERR_ARG, "pass key: no model to draw");
    int nl = s->n_lengths, nd = s->n_depths, cells = nl * nd;
    double *acc = ae_malloc(sizeof(double) * (size_t)cells * n_models); // (models, nl, nd)
    double *ll = ae_malloc(sizeof(double) * (size_t)cells * n_models);  // (models, nl, nd)
    char(*rl)[16] = ae_malloc(sizeof *rl * (size_t)nl), (*cl)[16] = ae_malloc(sizeof *cl * (size_t)nd);
    const char **rp = ae_malloc(sizeof *rp * (size_t)nl), **cp = ae_malloc(sizeof *cp * (size_t)nd);
    ae_status st = acc && ll && rl && cl && rp && cp ? AE_OK : AE_ERR_NOMEM;
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; st == AE_OK && k < n_models; k++)
        for (int li = 0; li < nl; li++)
            for (int di = 0; di < nd; di++) {
                size_t i = (size_t)k * cells + (size_t)li * nd + di;
                ae_passkey_cell(s, models[k].scores, li, di, &acc[i], &ll[i]);
                if (isfinite(ll[i])) lo = fmin(lo, ll[i]), hi = fmax(hi, ll[i]);
            }
    if (!(lo < hi)) { // one value (or none finite): a unit range around it
        double c = lo <= hi ? lo : 0;
        lo = c - 0.5, hi = c + 0.5;
    }
    for (int li = 0; st == AE_OK && li < nl; li++) {
        snprintf(rl[li], sizeof rl[li], "%d", s->lengths[li]);
        rp[li] = rl[li];
    }
    for (int di = 0; st == AE_OK && di < nd; di++) {
        snprintf(cl[di], sizeof cl[di], "%g", s->depths[di]);
        cp[di] = cl[di];
    }
    int pw = 330 + CELL_W * nd, ph = 120 + CELL_H * nl;
    ae_canvas c = {0};
    if (st == AE_OK) st = ae_canvas_init(&c, 2 * pw, HEADER_H + n_models * ph, AE_PLOT_BG);
    if (st == AE_OK) {
        char t[256];
        int len = snprintf(t, sizeof t, "pass-key retrieval:");
        for (int k = 0; k < n_models && len < (int)sizeof t; k++)
            len += snprintf(t + len, sizeof t - (size_t)len, "%s %s", k ? " vs" : "", models[k].name);
        ae_text_draw(&c, 16, 12, t, FS, AE_PLOT_INK, AE_ALIGN_START, AE_ALIGN_START);
        snprintf(t, sizeof t, "%d trials per cell, %d-digit keys, seed %llu; greedy exact match and "
                              "teacher-forced log-likelihood of the key", s->trials, s->digits,
                 (unsigned long long)s->seed);
        ae_text_draw(&c, 16, 36, t, FS, AE_PLOT_MUTED, AE_ALIGN_START, AE_ALIGN_START);
    }
    for (int k = 0; st == AE_OK && k < n_models; k++) {
        char ta[160], tl[160];
        snprintf(ta, sizeof ta, "%s: exact match", models[k].name);
        snprintf(tl, sizeof tl, "%s: key log-likelihood", models[k].name);
        ae_heatmap_opts o = {.title = ta, .xlabel = "depth of the key in the filler",
                             .ylabel = "tokens", .row_labels = rp, .col_labels = cp,
                             .value_fmt = "%.2f", .vmin = 0, .vmax = 1,
                             .colorbar_label = "accuracy", .font_scale = FS};
        int y = HEADER_H + k * ph;
        st = ae_heatmap_draw(&c, 0, y, pw, ph, acc + (size_t)k * cells, nl, nd, &o, NULL);
        o.title = tl;
        o.vmin = lo;
        o.vmax = hi;
        o.colorbar_label = "nats/token";
        if (st == AE_OK) st = ae_heatmap_draw(&c, pw, y, pw, ph, ll + (size_t)k * cells, nl, nd, &o, NULL);
    }
    if (st == AE_OK) st = ae_png_write(path, c.px, c.w, c.h);
    ae_canvas_free(&c);
    free(acc);
    free(ll);
    free(rl);
    free(cl);
    free(rp);
    free(cp);
    return st;
}
