// Canvas primitives (see canvas.h).
#include <math.h>
#include <stdlib.h>

#include "core/mem.h"
#include "plot/canvas.h"

ae_status ae_canvas_init(ae_canvas *c, int w, int h, ae_rgb bg) {
    c->px = NULL;
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return ae_errorf(AE_ERR_ARG, "canvas: size %dx%d is not in 1x1 .. 16384x16384", w, h);
    c->px = ae_malloc((size_t)w * (size_t)h * 3);
    if (!c->px) return AE_ERR_NOMEM;
    c->w = w;
    c->h = h;
    ae_canvas_unclip(c);
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        c->px[3 * i] = bg.r, c->px[3 * i + 1] = bg.g, c->px[3 * i + 2] = bg.b;
    return AE_OK;
}

void ae_canvas_free(ae_canvas *c) {
    free(c->px);
    c->px = NULL;
}

void ae_canvas_clip(ae_canvas *c, int x, int y, int w, int h) {
    c->clip_x0 = x < 0 ? 0 : x;
    c->clip_y0 = y < 0 ? 0 : y;
    c->clip_x1 = x + w > c->w ? c->w : x + w;
    c->clip_y1 = y + h > c->h ? c->h : y + h;
}

void ae_canvas_unclip(ae_canvas *c) {
    c->clip_x0 = c->clip_y0 = 0;
    c->clip_x1 = c->w;
    c->clip_y1 = c->h;
}

ae_rgb ae_canvas_get(const ae_canvas *c, int x, int y) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return (ae_rgb){0, 0, 0};
    const uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    return (ae_rgb){p[0], p[1], p[2]};
}

void ae_canvas_blend(ae_canvas *c, int x, int y, ae_rgb col, double alpha) {
    if (x < c->clip_x0 || y < c->clip_y0 || x >= c->clip_x1 || y >= c->clip_y1 || !(alpha > 0)) return;
    if (alpha > 1) alpha = 1;
    uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = (uint8_t)lround(p[0] + (col.r - p[0]) * alpha);
    p[1] = (uint8_t)lround(p[1] + (col.g - p[1]) * alpha);
    p[2] = (uint8_t)lround(p[2] + (col.b - p[2]) * alpha);
}

void ae_canvas_fill_rect(ae_canvas *c, int x, int y, int w, int h, ae_rgb col) {
    for (int j = y; j < y + h; j++)
        for (int i = x; i < x + w; i++) ae_canvas_blend(c, i, j, col, 1.0);
}

void ae_canvas_rect(ae_canvas *c, int x, int y, int w, int h, ae_rgb col) {
    ae_canvas_fill_rect(c, x, y, w, 1, col);
    ae_canvas_fill_rect(c, x, y + h - 1, w, 1, col);
    ae_canvas_fill_rect(c, x, y, 1, h, col);
    ae_canvas_fill_rect(c, x + w - 1, y, 1, h, col);
}

void ae_canvas_line(ae_canvas *c, double x0, double y0, double x1, double y1, double width,
                    ae_rgb col) {
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1)) return;
    double r = width / 2, pad = r + 1;
    double fx0 = fmin(x0, x1) - pad, fx1 = fmax(x0, x1) + pad;
    double fy0 = fmin(y0, y1) - pad, fy1 = fmax(y0, y1) + pad;
    // only the part inside the clip rectangle is visited
    int ix0 = fx0 < c->clip_x0 ? c->clip_x0 : (int)floor(fx0);
    int iy0 = fy0 < c->clip_y0 ? c->clip_y0 : (int)floor(fy0);
    int ix1 = fx1 > c->clip_x1 ? c->clip_x1 : (int)ceil(fx1);
    int iy1 = fy1 > c->clip_y1 ? c->clip_y1 : (int)ceil(fy1);
    double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int y = iy0; y < iy1; y++) {
        for (int x = ix0; x < ix1; x++) {
            double px = x + 0.5 - x0, py = y + 0.5 - y0;
            double t = len2 > 0 ? (px * dx + py * dy) / len2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double ex = px - t * dx, ey = py - t * dy, d = sqrt(ex * ex + ey * ey);
            double cover = r + 0.5 - d; // a pixel's area within the stroke, approximately
            if (cover > 0) ae_canvas_blend(c, x, y, col, cover > 1 ? 1 : cover);
        }
    }
}

ae_rgb ae_plot_palette(int i) {
    static const ae_rgb k[10] = {
        {33, 102, 172}, {230, 115, 20}, {40, 150, 60}, {200, 40, 45}, {130, 85, 180},
        {140, 90, 70},  {220, 110, 180}, {100, 100, 100}, {170, 170, 30}, {20, 175, 195},
    };
    return k[(i % 10 + 10) % 10];
}

ae_rgb ae_plot_colormap(double t) {
    static const double k[5][3] = {
        {40, 25, 95}, {35, 95, 150}, {30, 150, 140}, {120, 200, 80}, {250, 230, 90},
    };
    if (!(t >= 0)) t = 0; // NaN too
    if (t > 1) t = 1;
    double s = t * 4;
    int i = (int)s;
    if (i > 3) i = 3;
    double f = s - i;
    ae_rgb c;
    c.r = (uint8_t)lround(k[i][0] + (k[i + 1][0] - k[i][0]) * f);
    c.g = (uint8_t)lround(k[i][1] + (k[i + 1][1] - k[i][1]) * f);
    c.b = (uint8_t)lround(k[i][2] + (k[i + 1][2] - k[i][2]) * f);
    return c;
}

double ae_rgb_luma(ae_rgb c) { return (0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b) / 255.0; }
