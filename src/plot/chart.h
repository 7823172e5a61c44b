// Line charts on a canvas: axes with "nice" ticks (linear, or log10 for y), tick labels, title,
// axis labels, several series with a legend (or a colour bar when the series are many, e.g. one
// per layer), and the colour bar itself.
#ifndef AE_PLOT_CHART_H
#define AE_PLOT_CHART_H

#include "plot/canvas.h"

#define AE_TICKS_MAX 64

// Ticks of an axis: the axis range [lo, hi] (expanded to nice values) and the tick positions.
typedef struct {
    double lo, hi;
    int n;
    double v[AE_TICKS_MAX];
    int labelled[AE_TICKS_MAX]; // 0: minor tick (log axes: 2..9 x 10^k), no label
    double step;                // linear: spacing; log: decades per labelled tick
    int log;
} ae_ticks;

// Linear ticks for data in [lo, hi]: spacing 1, 2, 2.5 or 5 x 10^k giving about `target`
// intervals; the range is expanded to multiples of the spacing. lo == hi gets a range around it.
void ae_ticks_linear(double lo, double hi, int target, ae_ticks *t);
// Log10 ticks for positive data in [lo, hi]: the range is expanded to whole decades; every
// decade (or every k-th when there are many) is labelled; over at most two decades 2x and 5x
// are labelled too, the other multiples are minor ticks.
void ae_ticks_log(double lo, double hi, int target, ae_ticks *t);
// Label of tick value v: "0", "0.25", "1500", "1e-05" -> "1e-5"; digits enough for t->step.
void ae_tick_format(const ae_ticks *t, double v, char *buf, int n);

typedef struct {
    const double *x, *y; // (n) points; non-finite values (and y <= 0 on a log axis) are gaps
    int n;
    ae_rgb color;
    const char *label; // legend text (NULL: not in the legend)
} ae_series;

typedef struct {
    const char *title, *xlabel, *ylabel;
    int log_y;
    int font_scale;      // text scale (default 1 when 0)
    double line_width;   // default 1.5 when 0
    // Instead of a legend: a colour bar (ae_plot_colormap) from colorbar_lo to colorbar_hi
    // labelled colorbar_label, for series coloured by a value (colorbar_label non-NULL).
    const char *colorbar_label;
    double colorbar_lo, colorbar_hi;
    const char *empty_note; // said in the middle when no point can be drawn (default "no data")
} ae_chart_opts;

// Where a chart's frame (the data area) and axis ranges are: data (xv, yv) is at pixel
// x0 + (xv - xlo) / (xhi - xlo) * (x1 - x0), y likewise from y1 (bottom) up to y0 (log10 of the
// values on a log axis: ylo, yhi are then exponents).
typedef struct {
    int x0, y0, x1, y1;
    double xlo, xhi, ylo, yhi;
    int log_y;
} ae_chart_frame;
double ae_chart_px_x(const ae_chart_frame *f, double xv);
double ae_chart_px_y(const ae_chart_frame *f, double yv);

// Draws a chart in the rectangle [x, x+w) x [y, y+h) of the canvas: frame, grid, ticks, labels,
// the series (clipped to the frame) and the legend in the upper right corner. When w or h is too
// small for the text, draws what fits. frame (may be NULL) receives the frame and ranges used.
void ae_chart_draw(ae_canvas *c, int x, int y, int w, int h, const ae_chart_opts *o,
                   const ae_series *s, int ns, ae_chart_frame *frame);

// A vertical colour bar in [x, x+w) x [y, y+h): colours of ae_plot_colormap from lo (bottom)
// to hi (top), ticks and labels to the right, `label` above (may be NULL).
void ae_colorbar_draw(ae_canvas *c, int x, int y, int w, int h, double lo, double hi,
                      const char *label, int font_scale);

// Common colours of the plots.
#define AE_PLOT_BG ((ae_rgb){255, 255, 255})
#define AE_PLOT_INK ((ae_rgb){30, 30, 30})
#define AE_PLOT_GRID ((ae_rgb){228, 228, 228})
#define AE_PLOT_MUTED ((ae_rgb){110, 110, 110})

#endif
