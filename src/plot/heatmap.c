// Heat maps (see heatmap.h).
#include <math.h>
#include <stdio.h>

#include "plot/chart.h"
#include "plot/font.h"
#include "plot/heatmap.h"

#define AE_HEATMAP_MISSING ((ae_rgb){200, 200, 200})

ae_status ae_heatmap_draw(ae_canvas *c, int x, int y, int w, int h, const double *v, int rows,
                          int cols, const ae_heatmap_opts *o, ae_heatmap_frame *frame) {
    if (rows < 1 || cols < 1)
        return ae_errorf(AE_ERR_ARG, "heat map: %d x %d cells (need at least 1 x 1)", rows, cols);
    int fs = o->font_scale > 0 ? o->font_scale : 1;
    double lo = o->vmin, hi = o->vmax;
    if (isnan(lo) || isnan(hi)) {
        lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < rows * cols; i++)
            if (isfinite(v[i])) lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
        if (!(lo <= hi)) lo = 0, hi = 1;
    }
    const char *fmt = o->value_fmt ? o->value_fmt : "%.3g";
    char b[64];
    // layout: labels take the width of the longest
    int pad = 6 * fs, text_h = 7 * fs, row_w = 0;
    for (int r = 0; r < rows; r++) {
        if (o->row_labels) snprintf(b, sizeof b, "%s", o->row_labels[r]);
        else snprintf(b, sizeof b, "%d", r);
        int lw = ae_text_width(b, fs);
        if (lw > row_w) row_w = lw;
    }
    int title_h = o->title ? text_h + pad : 0;
    int ylabel_w = o->ylabel ? text_h + 2 * fs + pad / 2 : 0;
    int xlabel_h = o->xlabel ? text_h + 4 * fs : 0;
    int cb_w = 10 * fs + 40 * fs + 2 * pad;
    if (o->colorbar_label) {
        int lw = ae_text_width(o->colorbar_label, fs) + 2 * pad;
        if (lw > cb_w) cb_w = lw;
    }
    int gx0 = x + pad + ylabel_w + row_w + 4 * fs, gy0 = y + pad + title_h;
    int gw = x + w - pad - cb_w - gx0, gh = y + h - pad - xlabel_h - (text_h + 6 * fs) - gy0;
    int cw = gw / cols, ch = gh / rows;
    if (cw < 1 || ch < 1)
        return ae_errorf(AE_ERR_ARG, "heat map: %d x %d cells do not fit in %d x %d pixels", rows, cols,
                         w, h);
    if (frame) *frame = (ae_heatmap_frame){gx0, gy0, cw, ch};
    if (o->title)
        ae_text_draw(c, gx0 + cw * cols / 2, y + pad, o->title, fs, AE_PLOT_INK, AE_ALIGN_CENTER,
                     AE_ALIGN_START);
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < cols; k++) {
            double val = v[(size_t)r * cols + k];
            int cx = gx0 + k * cw, cy = gy0 + r * ch;
            ae_rgb col = isfinite(val) ? ae_plot_colormap(hi > lo ? (val - lo) / (hi - lo) : 0.5)
                                       : AE_HEATMAP_MISSING;
            ae_canvas_fill_rect(c, cx, cy, cw, ch, col);
            if (fmt[0] == '\0') continue;
            if (isfinite(val)) snprintf(b, sizeof b, fmt, val);
            else snprintf(b, sizeof b, "-");
            if (ae_text_width(b, fs) + 2 * fs > cw || text_h + 2 * fs > ch) continue; // does not fit
            ae_rgb ink = ae_rgb_luma(col) > 0.45 ? (ae_rgb){20, 20, 20} : (ae_rgb){250, 250, 250};
            ae_text_draw(c, cx + cw / 2, cy + ch / 2, b, fs, ink, AE_ALIGN_CENTER, AE_ALIGN_CENTER);
        }
        if (o->row_labels) snprintf(b, sizeof b, "%s", o->row_labels[r]);
        else snprintf(b, sizeof b, "%d", r);
        ae_text_draw(c, gx0 - 4 * fs, gy0 + r * ch + ch / 2, b, fs, AE_PLOT_INK, AE_ALIGN_END,
                     AE_ALIGN_CENTER);
    }
    for (int k = 0; k < cols; k++) {
        if (o->col_labels) snprintf(b, sizeof b, "%s", o->col_labels[k]);
        else snprintf(b, sizeof b, "%d", k);
        ae_text_draw(c, gx0 + k * cw + cw / 2, gy0 + rows * ch + 4 * fs, b, fs, AE_PLOT_INK,
                     AE_ALIGN_CENTER, AE_ALIGN_START);
    }
    ae_canvas_rect(c, gx0 - 1, gy0 - 1, cw * cols + 2, ch * rows + 2, AE_PLOT_INK);
    if (o->xlabel)
        ae_text_draw(c, gx0 + cw * cols / 2, gy0 + rows * ch + text_h + 10 * fs, o->xlabel, fs,
                     AE_PLOT_INK, AE_ALIGN_CENTER, AE_ALIGN_START);
    if (o->ylabel) ae_text_draw_vertical(c, x + pad + text_h / 2, gy0 + ch * rows / 2, o->ylabel, fs, AE_PLOT_INK);
    ae_colorbar_draw(c, gx0 + cw * cols + 2 * pad, gy0, 10 * fs, ch * rows, lo, hi, o->colorbar_label, fs);
    return AE_OK;
}
