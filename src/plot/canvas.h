// A raster canvas for plots: 8-bit RGB pixels, a clip rectangle, alpha blending, filled and
// outlined rectangles, anti-aliased lines of any width, series colours and a colour map.
#ifndef AE_PLOT_CANVAS_H
#define AE_PLOT_CANVAS_H

#include <stdint.h>

#include "core/error.h"

typedef struct {
    uint8_t r, g, b;
} ae_rgb;

typedef struct {
    int w, h;
    uint8_t *px;                          // (h, w, 3) RGB, top row first
    int clip_x0, clip_y0, clip_x1, clip_y1; // pixels drawn: clip_x0 <= x < clip_x1, same for y
} ae_canvas;

// A w x h canvas filled with bg (w, h in [1, 16384]).
ae_status ae_canvas_init(ae_canvas *c, int w, int h, ae_rgb bg);
void ae_canvas_free(ae_canvas *c);
// Limits drawing to the rectangle [x, x+w) x [y, y+h) (intersected with the canvas).
void ae_canvas_clip(ae_canvas *c, int x, int y, int w, int h);
void ae_canvas_unclip(ae_canvas *c);

ae_rgb ae_canvas_get(const ae_canvas *c, int x, int y); // black outside the canvas
// Mixes col into pixel (x, y) with weight alpha in [0, 1] (nothing outside the clip).
void ae_canvas_blend(ae_canvas *c, int x, int y, ae_rgb col, double alpha);
void ae_canvas_fill_rect(ae_canvas *c, int x, int y, int w, int h, ae_rgb col);
// One-pixel outline of [x, x+w) x [y, y+h).
void ae_canvas_rect(ae_canvas *c, int x, int y, int w, int h, ae_rgb col);
// Anti-aliased segment from (x0, y0) to (x1, y1), pixel centres at integer + 0.5, `width`
// pixels wide with round caps (coverage from the distance of each pixel centre to the segment).
void ae_canvas_line(ae_canvas *c, double x0, double y0, double x1, double y1, double width,
                    ae_rgb col);

// Distinct colours for series 0, 1, 2, ... (ten, then repeating).
ae_rgb ae_plot_palette(int i);
// Sequential colour map, t in [0, 1] (clamped): dark blue -> teal -> green -> yellow, lightness
// increasing monotonically, so heat maps read in grey too.
ae_rgb ae_plot_colormap(double t);
// Relative luminance in [0, 1] (to pick black or white text on a colour).
double ae_rgb_luma(ae_rgb c);

#endif
