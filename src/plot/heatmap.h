// Heat maps: a grid of cells coloured by value (ae_plot_colormap), with row and column labels,
// per-cell value labels, a title, axis labels and a colour bar. Made for long-context retrieval
// results (accuracy by context length x depth) and any other table of numbers.
#ifndef AE_PLOT_HEATMAP_H
#define AE_PLOT_HEATMAP_H

#include "plot/canvas.h"

typedef struct {
    const char *title, *xlabel, *ylabel;
    const char *const *row_labels; // (rows) drawn left of the rows, NULL: row numbers
    const char *const *col_labels; // (cols) drawn under the columns, NULL: column numbers
    const char *value_fmt;         // printf format of one double for the cell labels, e.g.
                                   // "%.0f" or "%.2f" (NULL: "%.3g"; "" : no cell labels)
    double vmin, vmax;             // colour range; both NaN: the data's range
    const char *colorbar_label;    // title of the colour bar (NULL: none)
    int font_scale;                // default 1 when 0
} ae_heatmap_opts;

// Where the last cell grid went: cell (r, c) is [x0 + c*cw, x0 + (c+1)*cw) x [y0 + r*ch, ...).
typedef struct {
    int x0, y0, cw, ch;
} ae_heatmap_frame;

// Draws the heat map in [x, x+w) x [y, y+h): values v (rows, cols) row-major, row 0 on top;
// NaN cells are grey and labelled "-". frame (may be NULL) receives where the cells are.
// AE_ERR_ARG when rows or cols is < 1 or the space is too small for one pixel per cell.
ae_status ae_heatmap_draw(ae_canvas *c, int x, int y, int w, int h, const double *v, int rows,
                          int cols, const ae_heatmap_opts *o, ae_heatmap_frame *frame);

#endif
