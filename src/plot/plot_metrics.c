// The loss-curve figure of a run (see plot.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/mem.h"
#include "plot/chart.h"
#include "plot/font.h"
#include "plot/plot.h"
#include "plot/png.h"

enum { FS = 2, PANEL_W = 600, PANEL_H = 380, HEADER_H = 64, MAX_PANELS = 6, MAX_LEGEND_LAYERS = 8 };

typedef struct {
    ae_chart_opts o;
    ae_series *s; // (ns) owned
    int ns;
    char title[128];
    char names[MAX_LEGEND_LAYERS][24]; // legend labels of the per-layer panel
} panel;

static ae_status panel_series(panel *p, int ns) {
    p->s = ae_calloc((size_t)ns, sizeof(ae_series));
    p->ns = ns;
    return p->s ? AE_OK : AE_ERR_NOMEM;
}

static ae_status one_series(panel *p, const ae_metrics_stage *st, const double *y, ae_rgb col,
                            const char *title, const char *ylabel, int log_y) {
    AE_TRY(panel_series(p, 1));
    p->s[0] = (ae_series){st->step, y, st->n, col, NULL};
    snprintf(p->title, sizeof p->title, "%s", title);
    p->o = (ae_chart_opts){.title = p->title, .xlabel = "step", .ylabel = ylabel, .log_y = log_y,
                           .font_scale = FS, .line_width = 2,
                           .empty_note = log_y ? "no positive values" : "no data"};
    return AE_OK;
}

// Per-layer panel: series layer_loss[:, l] (strided copy), legend when few, else a colour bar.
static ae_status layer_panel(panel *p, const ae_metrics_stage *st, int log_y, double **cols) {
    int L = st->n_layers;
    *cols = ae_malloc(sizeof(double) * (size_t)L * (size_t)st->n); // (L, n)
    if (!*cols) return AE_ERR_NOMEM;
    AE_TRY(panel_series(p, L));
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < st->n; i++) (*cols)[(size_t)l * st->n + i] = st->layer_loss[(size_t)i * L + l];
        ae_rgb col = L <= MAX_LEGEND_LAYERS ? ae_plot_palette(l) : ae_plot_colormap(L > 1 ? (double)l / (L - 1) : 0);
        const char *label = NULL;
        if (L <= MAX_LEGEND_LAYERS) {
            snprintf(p->names[l], sizeof p->names[l], "layer %d", l);
            label = p->names[l];
        }
        p->s[l] = (ae_series){st->step, *cols + (size_t)l * st->n, st->n, col, label};
    }
    snprintf(p->title, sizeof p->title, "stage 1: loss per replaced layer");
    p->o = (ae_chart_opts){.title = p->title, .xlabel = "step", .ylabel = "loss", .log_y = log_y,
                           .font_scale = FS, .line_width = 1.5,
                           .empty_note = log_y ? "no positive values" : "no data"};
    if (L > MAX_LEGEND_LAYERS) {
        p->o.colorbar_label = "layer";
        p->o.colorbar_lo = 0;
        p->o.colorbar_hi = L - 1;
    }
    return AE_OK;
}

ae_status ae_plot_metrics_draw(const ae_metrics *m, const char *title, const ae_plot_opts *opts,
                               ae_canvas *out) {
    ae_plot_opts o = opts ? *opts : (ae_plot_opts){0};
    panel p[MAX_PANELS];
    memset(p, 0, sizeof p);
    double *layer_cols = NULL;
    int np = 0;
    ae_status st = AE_OK;
    const ae_metrics_stage *s1 = &m->s[0], *s2 = &m->s[1];
    if (s1->n > 0) {
        st = one_series(&p[np++], s1, s1->loss, ae_plot_palette(0),
                        "stage 1: loss (mean over replaced layers)", "loss", o.log_y);
        if (st == AE_OK && s1->n_layers > 0) st = layer_panel(&p[np++], s1, o.log_y, &layer_cols);
    }
    if (st == AE_OK && s2->n > 0)
        st = one_series(&p[np++], s2, s2->has_kl ? s2->kl : s2->loss, ae_plot_palette(3),
                        s2->has_kl ? "stage 2: KL(teacher || student)" : "stage 2: loss",
                        s2->has_kl ? "KL (nats / token)" : "loss", o.log_y);
    if (st == AE_OK && s2->n > 0 && s2->has_cos)
        st = one_series(&p[np++], s2, s2->cos, ae_plot_palette(2),
                        "stage 2: feature loss (mean over layers)", "1 - cos", o.log_y);
    if (st == AE_OK && s2->n > 0 && s2->has_top1)
        st = one_series(&p[np++], s2, s2->top1, ae_plot_palette(4),
                        "stage 2: top-1 agreement with the teacher", "top-1 agreement", 0);
    if (st == AE_OK && np == 0) st = ae_errorf(AE_ERR_FORMAT, "no stage 1 or stage 2 records to plot");
    int rows = (np + 1) / 2;
    if (st == AE_OK) st = ae_canvas_init(out, 2 * PANEL_W, HEADER_H + rows * PANEL_H, AE_PLOT_BG);
    if (st == AE_OK) {
        ae_text_draw(out, 16, 14, title, FS, AE_PLOT_INK, AE_ALIGN_START, AE_ALIGN_START);
        char sub[256];
        int k = 0;
        for (int i = 0; i < 2; i++) {
            const ae_metrics_stage *s = &m->s[i];
            if (s->n == 0) continue;
            k += snprintf(sub + k, sizeof sub - (size_t)k, "%sstage %d: %d records, steps %.0f..%.0f", k ? ";  " : "",
                          i + 1, s->n, s->step[0], s->step[s->n - 1]);
            if (s->steps > 0 && k < (int)sizeof sub)
                k += snprintf(sub + k, sizeof sub - (size_t)k, " of %lld", s->steps);
            if (k >= (int)sizeof sub) k = (int)sizeof sub - 1;
        }
        ae_text_draw(out, 16, 38, sub, FS, AE_PLOT_MUTED, AE_ALIGN_START, AE_ALIGN_START);
        for (int i = 0; i < np; i++) {
            int full = (i == np - 1) && (np % 2 == 1) && np > 1;
            int x = full ? 0 : (i % 2) * PANEL_W, y = HEADER_H + (i / 2) * PANEL_H;
            ae_chart_draw(out, x, y, full ? 2 * PANEL_W : PANEL_W, PANEL_H, &p[i].o, p[i].s, p[i].ns, NULL);
        }
    }
    for (int i = 0; i < np; i++) free(p[i].s);
    free(layer_cols);
    return st;
}

ae_status ae_plot_metrics_opts(const char *run_dir, const char *png_path, const ae_plot_opts *o) {
    char *mpath = ae_path_join(run_dir, "metrics.jsonl");
    char *def = png_path ? NULL : ae_path_join(run_dir, "loss.png");
    if (!mpath || (!png_path && !def)) {
        free(mpath), free(def);
        return AE_ERR_NOMEM;
    }
    const char *out = png_path ? png_path : def;
    ae_metrics m;
    ae_canvas c = {0};
    ae_status st = AE_OK;
    if (!ae_path_is_dir(run_dir))
        st = ae_errorf(AE_ERR_ARG, "run folder '%s' %s", run_dir,
                       ae_path_exists(run_dir) ? "is not a folder" : "does not exist");
    else if (!ae_path_exists(mpath))
        st = ae_errorf(AE_ERR_ARG, "%s does not exist (not a training run folder, or no progress line "
                       "logged yet)", mpath);
    if (st == AE_OK && ae_path_is_dir(out))
        st = ae_errorf(AE_ERR_ARG, "output '%s' is a folder, expected a PNG file name", out);
    if (st == AE_OK) st = ae_path_check_output("output", out, "metrics file", mpath);
    if (st == AE_OK) st = ae_metrics_read(mpath, &m);
    if (st == AE_OK) {
        char title[512];
        snprintf(title, sizeof title, "attnedit distillation: %s", run_dir);
        st = ae_plot_metrics_draw(&m, title, o, &c);
        if (st == AE_OK) st = ae_png_write(out, c.px, c.w, c.h);
        ae_canvas_free(&c);
        ae_metrics_free(&m);
    }
    free(mpath);
    free(def);
    return st;
}

ae_status ae_plot_metrics(const char *run_dir, const char *png_path) {
    return ae_plot_metrics_opts(run_dir, png_path, NULL);
}
