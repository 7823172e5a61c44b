// A built-in 5x7 bitmap font (our own drawing) for plot text: printable ASCII, lower case with
// descenders, drawn at an integer scale, horizontally or rotated for vertical axis labels.
// A character cell is AE_FONT_W x AE_FONT_H pixels at scale 1 (glyph + one column of spacing;
// cap height 7, descenders 2 below the baseline); other bytes draw as a small box.
#ifndef AE_PLOT_FONT_H
#define AE_PLOT_FONT_H

#include "plot/canvas.h"

#define AE_FONT_W 6
#define AE_FONT_H 9

typedef enum { AE_ALIGN_START = 0, AE_ALIGN_CENTER = 1, AE_ALIGN_END = 2 } ae_align;

// Width in pixels of s drawn at `scale` (AE_FONT_W per byte, less the last spacing column).
int ae_text_width(const char *s, int scale);
// Draws s with its cell's top-left at (x, y), anchored by halign/valign (start = left/top).
void ae_text_draw(ae_canvas *c, int x, int y, const char *s, int scale, ae_rgb col, ae_align halign,
                  ae_align valign);
// Draws s rotated 90 degrees counter-clockwise (reading bottom to top), centred on (x, y).
void ae_text_draw_vertical(ae_canvas *c, int x, int y, const char *s, int scale, ae_rgb col);
// 1 when pixel (gx, gy) of the glyph for byte ch is set (gx in [0,5), gy in [0,9)).
int ae_font_bit(unsigned char ch, int gx, int gy);

#endif
