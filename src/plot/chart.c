// Line charts and colour bars (see chart.h).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot/chart.h"
#include "plot/font.h"

static int usable(double x, double y, int log_y) {
    return isfinite(x) && isfinite(y) && (!log_y || y > 0);
}

double ae_chart_px_x(const ae_chart_frame *f, double xv) {
    return f->x0 + (xv - f->xlo) / (f->xhi - f->xlo) * (f->x1 - f->x0);
}

double ae_chart_px_y(const ae_chart_frame *f, double yv) {
    double v = f->log_y ? log10(yv) : yv;
    return f->y1 - (v - f->ylo) / (f->yhi - f->ylo) * (f->y1 - f->y0);
}

// Width of the widest labelled tick.
static int ticks_label_width(const ae_ticks *t, int fs) {
    int w = 0;
    for (int i = 0; i < t->n; i++) {
        if (!t->labelled[i]) continue;
        char b[48];
        ae_tick_format(t, t->v[i], b, sizeof b);
        int lw = ae_text_width(b, fs);
        if (lw > w) w = lw;
    }
    return w;
}

// Colour-bar ticks: nice values inside [lo, hi] (the range is not expanded).
static void colorbar_ticks(double lo, double hi, ae_ticks *t) {
    ae_ticks_linear(lo, hi, 5, t);
    int k = 0;
    for (int i = 0; i < t->n; i++)
        if (t->v[i] >= lo - 1e-9 * fabs(hi - lo) && t->v[i] <= hi + 1e-9 * fabs(hi - lo))
            t->v[k] = t->v[i], t->labelled[k++] = 1;
    t->n = k;
    t->lo = lo, t->hi = hi;
}

static int colorbar_width(double lo, double hi, const char *label, int fs) {
    ae_ticks t;
    colorbar_ticks(lo, hi, &t);
    int w = 12 * fs + 4 * fs + ticks_label_width(&t, fs);
    int lw = label ? ae_text_width(label, fs) : 0;
    return w > lw ? w : lw;
}

void ae_colorbar_draw(ae_canvas *c, int x, int y, int w, int h, double lo, double hi,
                      const char *label, int font_scale) {
    int fs = font_scale > 0 ? font_scale : 1;
    if (label) {
        ae_text_draw(c, x, y, label, fs, AE_PLOT_INK, AE_ALIGN_START, AE_ALIGN_START);
        y += 12 * fs, h -= 12 * fs;
    }
    if (h < 4 || w < 2) return;
    for (int j = 0; j < h; j++) {
        ae_rgb col = ae_plot_colormap(1.0 - (double)j / (h > 1 ? h - 1 : 1));
        ae_canvas_fill_rect(c, x, y + j, w, 1, col);
    }
    ae_canvas_rect(c, x, y, w, h, AE_PLOT_INK);
    if (!(hi > lo)) return;
    ae_ticks t;
    colorbar_ticks(lo, hi, &t);
    for (int i = 0; i < t.n; i++) {
        int py = y + (int)lround((1.0 - (t.v[i] - lo) / (hi - lo)) * (h - 1));
        ae_canvas_fill_rect(c, x + w, py, 3 * fs, 1, AE_PLOT_INK);
        char b[48];
        ae_tick_format(&t, t.v[i], b, sizeof b);
        ae_text_draw(c, x + w + 4 * fs, py, b, fs, AE_PLOT_INK, AE_ALIGN_START, AE_ALIGN_CENTER);
    }
}

static void draw_legend(ae_canvas *c, const ae_chart_frame *f, const ae_series *s, int ns, int fs,
                        double lw) {
    int rows = 0, tw = 0;
    for (int i = 0; i < ns; i++) {
        if (!s[i].label) continue;
        rows++;
        int w = ae_text_width(s[i].label, fs);
        if (w > tw) tw = w;
    }
    int row_h = 11 * fs, pad = 5 * fs, sw = 18 * fs;
    int max_rows = (f->y1 - f->y0 - 4 * pad) / row_h;
    if (rows == 0 || max_rows < 1) return;
    if (rows > max_rows) rows = max_rows;
    int bw = pad + sw + 4 * fs + tw + pad, bh = 2 * pad + rows * row_h - 2 * fs;
    int bx = f->x1 - bw - pad, by = f->y0 + pad;
    ae_canvas_fill_rect(c, bx, by, bw, bh, AE_PLOT_BG);
    ae_canvas_rect(c, bx, by, bw, bh, (ae_rgb){190, 190, 190});
    int r = 0;
    for (int i = 0; i < ns && r < rows; i++) {
        if (!s[i].label) continue;
        int cy = by + pad + r * row_h + 7 * fs / 2;
        ae_canvas_line(c, bx + pad, cy + 0.5, bx + pad + sw, cy + 0.5, lw + 1, s[i].color);
        ae_text_draw(c, bx + pad + sw + 4 * fs, cy, s[i].label, fs, AE_PLOT_INK, AE_ALIGN_START,
                     AE_ALIGN_CENTER);
        r++;
    }
}

void ae_chart_draw(ae_canvas *c, int x, int y, int w, int h, const ae_chart_opts *o,
                   const ae_series *s, int ns, ae_chart_frame *frame) {
    int fs = o->font_scale > 0 ? o->font_scale : 1;
    double lw = o->line_width > 0 ? o->line_width : 1.5;
    int log_y = o->log_y;
    // data ranges
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int any = 0;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            double xv = s[k].x[i], yv = s[k].y[i];
            if (!usable(xv, yv, log_y)) continue;
            any = 1;
            xmin = fmin(xmin, xv), xmax = fmax(xmax, xv);
            ymin = fmin(ymin, yv), ymax = fmax(ymax, yv);
        }
    ae_ticks tx, ty;
    ae_ticks_linear(any ? xmin : 0, any ? xmax : 1, 6, &tx);
    if (log_y) ae_ticks_log(any ? ymin : 0.1, any ? ymax : 1, 6, &ty);
    else {
        // a little room so that a curve does not run along the frame (not below 0 for data >= 0)
        double m = any ? 0.02 * (ymax - ymin) : 0, lo = any ? ymin - m : 0, hi = any ? ymax + m : 1;
        if (any && ymin >= 0 && lo < 0) lo = 0;
        ae_ticks_linear(lo, hi, 5, &ty);
    }
    // layout
    int pad = 6 * fs, text_h = 7 * fs;
    int title_h = o->title ? text_h + pad : 0;
    int ylabel_w = o->ylabel ? text_h + 2 * fs + pad / 2 : 0;
    int ytick_w = ticks_label_width(&ty, fs) + 5 * fs;
    int xtick_h = text_h + 6 * fs, xlabel_h = o->xlabel ? text_h + 4 * fs : 0;
    int cb_w = o->colorbar_label ? colorbar_width(o->colorbar_lo, o->colorbar_hi, o->colorbar_label, fs) + 3 * pad : 0;
    ae_chart_frame f = {.x0 = x + pad + ylabel_w + ytick_w, .y0 = y + pad + title_h,
                        .x1 = x + w - pad - cb_w - (ticks_label_width(&tx, fs) + 1) / 2, .y1 = y + h - pad - xtick_h - xlabel_h,
                        .xlo = tx.lo, .xhi = tx.hi, .log_y = log_y};
    f.ylo = log_y ? log10(ty.lo) : ty.lo;
    f.yhi = log_y ? log10(ty.hi) : ty.hi;
    if (frame) *frame = f;
    if (o->title)
        ae_text_draw(c, (f.x0 + f.x1) / 2, y + pad, o->title, fs, AE_PLOT_INK, AE_ALIGN_CENTER,
                     AE_ALIGN_START);
    if (f.x1 - f.x0 < 8 || f.y1 - f.y0 < 8) return; // no room for a frame
    // grid and ticks
    for (int i = 0; i < ty.n; i++) {
        int py = (int)floor(ae_chart_px_y(&f, ty.v[i]));
        if (py < f.y0 || py > f.y1) continue;
        if (ty.labelled[i]) ae_canvas_fill_rect(c, f.x0, py, f.x1 - f.x0, 1, AE_PLOT_GRID);
        ae_canvas_fill_rect(c, f.x0 - (ty.labelled[i] ? 4 : 2) * fs, py, (ty.labelled[i] ? 4 : 2) * fs, 1,
                            AE_PLOT_INK);
        if (!ty.labelled[i]) continue;
        char b[48];
        ae_tick_format(&ty, ty.v[i], b, sizeof b);
        ae_text_draw(c, f.x0 - 6 * fs, py, b, fs, AE_PLOT_INK, AE_ALIGN_END, AE_ALIGN_CENTER);
    }
    for (int i = 0; i < tx.n; i++) {
        int px = (int)floor(ae_chart_px_x(&f, tx.v[i]));
        if (px < f.x0 || px > f.x1) continue;
        ae_canvas_fill_rect(c, px, f.y0, 1, f.y1 - f.y0, AE_PLOT_GRID);
        ae_canvas_fill_rect(c, px, f.y1, 1, 4 * fs, AE_PLOT_INK);
        char b[48];
        ae_tick_format(&tx, tx.v[i], b, sizeof b);
        ae_text_draw(c, px, f.y1 + 6 * fs, b, fs, AE_PLOT_INK, AE_ALIGN_CENTER, AE_ALIGN_START);
    }
    if (o->xlabel)
        ae_text_draw(c, (f.x0 + f.x1) / 2, f.y1 + xtick_h + 2 * fs, o->xlabel, fs, AE_PLOT_INK,
                     AE_ALIGN_CENTER, AE_ALIGN_START);
    if (o->ylabel) ae_text_draw_vertical(c, x + pad + text_h / 2, (f.y0 + f.y1) / 2, o->ylabel, fs, AE_PLOT_INK);
    // series, clipped to the frame
    ae_canvas_clip(c, f.x0, f.y0, f.x1 - f.x0 + 1, f.y1 - f.y0 + 1);
    for (int k = 0; k < ns; k++) {
        int have = 0;
        double px0 = 0, py0 = 0;
        for (int i = 0; i < s[k].n; i++) {
            if (!usable(s[k].x[i], s[k].y[i], log_y)) {
                have = 0; // a gap
                continue;
            }
            double px = ae_chart_px_x(&f, s[k].x[i]), py = ae_chart_px_y(&f, s[k].y[i]);
            if (have) ae_canvas_line(c, px0, py0, px, py, lw, s[k].color);
            else if (i + 1 >= s[k].n || !usable(s[k].x[i + 1], s[k].y[i + 1], log_y))
                ae_canvas_line(c, px, py, px, py, lw + 1.5, s[k].color); // a lone point: a dot
            px0 = px, py0 = py, have = 1;
        }
    }
    ae_canvas_unclip(c);
    ae_canvas_rect(c, f.x0, f.y0, f.x1 - f.x0 + 1, f.y1 - f.y0 + 1, AE_PLOT_INK);
    if (!any)
        ae_text_draw(c, (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, o->empty_note ? o->empty_note : "no data",
                     fs, AE_PLOT_MUTED, AE_ALIGN_CENTER, AE_ALIGN_CENTER);
    if (o->colorbar_label)
        ae_colorbar_draw(c, f.x1 + 3 * pad, f.y0, 10 * fs, f.y1 - f.y0, o->colorbar_lo, o->colorbar_hi,
                         o->colorbar_label, fs);
    else if (any) draw_legend(c, &f, s, ns, fs, lw);
}
