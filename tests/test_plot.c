// src/plot: PNG files are well formed (signature, chunk CRCs, IHDR, zlib header, Adler-32) and
// decode, with an independent inflate written here (stored and fixed-Huffman blocks), to the
// pixels drawn; charts and heat maps put their colours where they say; ticks; metrics.jsonl
// parsing (resume duplicates, one-stage runs, malformed lines with their line number); and
// `attnedit plot` writes its PNG atomically and refuses bad input leaving no file. When python3
// is present, its zlib decompresses the IDAT stream too (skipped with a printed reason if not).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/file.h"
#include "plot/chart.h"
#include "plot/heatmap.h"
#include "plot/metrics.h"
#include "plot/plot.h"
#include "plot/png.h"
#include "util/testutil.h"

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

// ---------------------------------------------------------------------------------------------
// an independent decoder: CRC-32 and Adler-32 bit by bit, inflate (stored + fixed), unfilter

static uint32_t ref_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint32_t ref_adler32(const uint8_t *p, size_t n) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) a = (a + p[i]) % 65521, b = (b + a) % 65521;
    return b << 16 | a;
}

typedef struct {
    const uint8_t *p;
    size_t n, pos; // byte position
    int bit;       // next bit within p[pos]
    int err;
} bits;

static unsigned get_bit(bits *b) {
    if (b->pos >= b->n) {
        b->err = 1;
        return 0;
    }
    unsigned v = (b->p[b->pos] >> b->bit) & 1u;
    if (++b->bit == 8) b->bit = 0, b->pos++;
    return v;
}

static unsigned get_bits(bits *b, int n) { // least significant first
    unsigned v = 0;
    for (int i = 0; i < n; i++) v |= get_bit(b) << i;
    return v;
}

static unsigned get_code(bits *b, int n) { // Huffman codes: most significant first
    unsigned v = 0;
    for (int i = 0; i < n; i++) v = v << 1 | get_bit(b);
    return v;
}

static int fixed_symbol(bits *b) {
    unsigned c = get_code(b, 7);
    if (c <= 0x17) return 256 + (int)c;
    c = c << 1 | get_bit(b);
    if (c >= 0x30 && c <= 0xBF) return (int)c - 0x30;
    if (c >= 0xC0 && c <= 0xC7) return 280 + (int)c - 0xC0;
    c = c << 1 | get_bit(b);
    if (c >= 0x190 && c <= 0x1FF) return 144 + (int)c - 0x190;
    return -1;
}

// Raw deflate -> bytes; 0 on success. Dynamic-Huffman blocks are refused (never produced).
static int inflate(const uint8_t *in, size_t n, uint8_t **out, size_t *out_n, size_t *consumed) {
    static const int lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
                                  67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const int lext[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const int dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                                  1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const int dext[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    bits b = {in, n, 0, 0, 0};
    size_t cap = 1024, len = 0;
    uint8_t *o = malloc(cap);
#define PUT(v)                                                                                     \
    do {                                                                                           \
        uint8_t v_ = (uint8_t)(v);                                                                 \
        if (len == cap) o = realloc(o, cap *= 2);                                                  \
        o[len++] = v_;                                                                             \
    } while (0)
    int final = 0;
    while (!final && !b.err) {
        final = (int)get_bits(&b, 1);
        unsigned type = get_bits(&b, 2);
        if (type == 0) {
            if (b.bit) b.bit = 0, b.pos++;
            if (b.pos + 4 > n) goto fail;
            unsigned l = in[b.pos] | in[b.pos + 1] << 8, nl = in[b.pos + 2] | in[b.pos + 3] << 8;
            if ((l ^ 0xffffu) != nl || b.pos + 4 + l > n) goto fail;
            for (unsigned i = 0; i < l; i++) PUT(in[b.pos + 4 + i]);
            b.pos += 4 + l;
        } else if (type == 1) {
            for (;;) {
                int s = fixed_symbol(&b);
                if (s < 0 || b.err || s > 285) goto fail;
                if (s < 256) {
                    PUT(s);
                    continue;
                }
                if (s == 256) break;
                int L = lbase[s - 257] + (int)get_bits(&b, lext[s - 257]);
                unsigned dc = get_code(&b, 5);
                if (dc > 29) goto fail;
                size_t D = (size_t)dbase[dc] + get_bits(&b, dext[dc]);
                if (D > len || b.err) goto fail;
                for (int i = 0; i < L; i++) PUT(o[len - D]);
            }
        } else goto fail;
    }
    if (b.err) goto fail;
#undef PUT
    *out = o;
    *out_n = len;
    *consumed = b.pos + (b.bit ? 1 : 0);
    return 0;
fail:
    free(o);
    return -1;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Checks everything about a PNG of ours and returns its pixels (h, w, 3) (caller frees).
static uint8_t *png_decode(const uint8_t *d, size_t n, int *w, int *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_true(n > 8 + 25 + 12);
    assert_memory_equal(d, sig, 8);
    uint8_t *z = malloc(n);
    size_t zn = 0, pos = 8;
    int chunk = 0, seen_end = 0;
    while (pos < n) {
        assert_true(pos + 12 <= n);
        uint32_t len = be32(d + pos);
        assert_true(pos + 12 + len <= n);
        const uint8_t *type = d + pos + 4;
        assert_int_equal(be32(d + pos + 8 + len), ref_crc32(type, len + 4)); // chunk CRC
        if (chunk == 0) {
            assert_memory_equal(type, "IHDR", 4);
            assert_int_equal(len, 13);
            *w = (int)be32(type + 4);
            *h = (int)be32(type + 8);
            assert_int_equal(type[12], 8); // bit depth
            assert_int_equal(type[13], 2); // RGB
            assert_int_equal(type[14], 0);
            assert_int_equal(type[15], 0);
            assert_int_equal(type[16], 0);
        } else if (!memcmp(type, "IDAT", 4)) {
            assert_true(len <= 65536);
            memcpy(z + zn, type + 4, len);
            zn += len;
        } else {
            assert_memory_equal(type, "IEND", 4);
            assert_int_equal(len, 0);
            seen_end = 1;
        }
        pos += 12 + len;
        chunk++;
        if (seen_end) break;
    }
    assert_true(seen_end);
    assert_int_equal(pos, n); // nothing after IEND
    // zlib: deflate, 32 KiB window, check bits, no preset dictionary
    assert_true(zn >= 6);
    assert_int_equal(z[0], 0x78);
    assert_int_equal((z[0] * 256 + z[1]) % 31, 0);
    assert_int_equal(z[1] & 0x20, 0);
    uint8_t *raw;
    size_t raw_n, used;
    assert_int_equal(inflate(z + 2, zn - 2, &raw, &raw_n, &used), 0);
    assert_int_equal(2 + used + 4, zn);
    assert_int_equal(be32(z + 2 + used), ref_adler32(raw, raw_n));
    free(z);
    size_t stride = (size_t)*w * 3;
    assert_int_equal(raw_n, (size_t)*h * (stride + 1));
    uint8_t *px = malloc((size_t)*h * stride);
    for (int y = 0; y < *h; y++) {
        const uint8_t *src = raw + (size_t)y * (stride + 1);
        uint8_t *row = px + (size_t)y * stride, *up = y ? row - stride : NULL;
        assert_true(src[0] <= 4);
        for (size_t i = 0; i < stride; i++) {
            int a = i >= 3 ? row[i - 3] : 0, b = up ? up[i] : 0, c = (i >= 3 && up) ? up[i - 3] : 0;
            int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
            int pred = src[0] == 0 ? 0 : src[0] == 1 ? a : src[0] == 2 ? b : src[0] == 3 ? (a + b) / 2
                       : (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
            row[i] = (uint8_t)(src[1 + i] + pred);
        }
    }
    free(raw);
    return px;
}

static uint8_t *canvas_roundtrip(const ae_canvas *c, ae_deflate_mode mode) {
    uint8_t *png;
    size_t n;
    assert_int_equal(ae_png_encode(c->px, c->w, c->h, mode, &png, &n), AE_OK);
    int w, h;
    uint8_t *px = png_decode(png, n, &w, &h);
    assert_int_equal(w, c->w);
    assert_int_equal(h, c->h);
    free(png);
    return px;
}

static ae_rgb px_at(const uint8_t *px, int w, int x, int y) {
    const uint8_t *p = px + ((size_t)y * w + x) * 3;
    return (ae_rgb){p[0], p[1], p[2]};
}

static int same(ae_rgb a, ae_rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }

static int near(ae_rgb a, ae_rgb b, int tol) {
    return abs(a.r - b.r) <= tol && abs(a.g - b.g) <= tol && abs(a.b - b.b) <= tol;
}

// ---------------------------------------------------------------------------------------------
// checksums, deflate, PNG

static void test_checksums(void **state) {
    (void)state;
    assert_int_equal(ae_crc32(0, "123456789", 9), 0xCBF43926u);
    assert_int_equal(ae_adler32(1, "Wikipedia", 9), 0x11E60398u);
    assert_int_equal(ae_crc32(ae_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u); // continued
    uint8_t big[20000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = 0xff; // sums that need the modulo often
    assert_int_equal(ae_adler32(1, big, sizeof big), ref_adler32(big, sizeof big));
    assert_int_equal(ae_crc32(0, big, sizeof big), ref_crc32(big, sizeof big));
}

static void check_deflate(const uint8_t *in, size_t n) {
    for (int mode = 0; mode < 2; mode++) {
        uint8_t *d, *back;
        size_t dn, bn, used;
        assert_int_equal(ae_deflate(in, n, (ae_deflate_mode)mode, &d, &dn), AE_OK);
        assert_int_equal(inflate(d, dn, &back, &bn, &used), 0);
        assert_int_equal(used, dn);
        assert_int_equal(bn, n);
        if (n) assert_memory_equal(back, in, n);
        free(d);
        free(back);
    }
}

static void test_deflate_roundtrip(void **state) {
    (void)state;
    size_t n = 200000;
    uint8_t *buf = calloc(n, 1);
    check_deflate(buf, 0);
    ae_rng rng;
    ae_rng_seed(&rng, 7);
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(ae_rng_u64(&rng) >> 24); // incompressible
    check_deflate(buf, n);                                                         // > 3 stored blocks
    memset(buf, 0, n);                                                             // one long run
    check_deflate(buf, n);
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)((i % 40000) * 7 % 251); // repeats 40000 apart:
    check_deflate(buf, n);                                                    // beyond the window
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i % 32768 < 5 ? i : 0); // distance 32768
    check_deflate(buf, n);
    const char *txt = "abcabcabcabcxyzabcxyzabcxyz hello hello hello";
    check_deflate((const uint8_t *)txt, strlen(txt));
    // a run of background compresses: 1 MB of one colour in a few kilobytes
    uint8_t *d;
    size_t dn;
    memset(buf, 200, n);
    assert_int_equal(ae_deflate(buf, n, AE_DEFLATE_FIXED, &d, &dn), AE_OK);
    assert_true(dn < n / 100);
    free(d);
    free(buf);
}

static void test_png_pixels(void **state) {
    (void)state;
    ae_canvas c;
    assert_int_equal(ae_canvas_init(&c, 37, 23, (ae_rgb){250, 240, 230}), AE_OK);
    ae_rng rng;
    ae_rng_seed(&rng, 3);
    for (int i = 0; i < 200; i++) { // scattered pixels exercise every filter
        int x = (int)(ae_rng_u64(&rng) % 37), y = (int)(ae_rng_u64(&rng) % 23);
        ae_canvas_blend(&c, x, y, (ae_rgb){(uint8_t)i, (uint8_t)(255 - i), (uint8_t)(i * 7)}, 1.0);
    }
    ae_canvas_fill_rect(&c, 5, 5, 10, 4, (ae_rgb){10, 20, 30});
    for (int mode = 0; mode < 2; mode++) {
        uint8_t *px = canvas_roundtrip(&c, (ae_deflate_mode)mode);
        assert_memory_equal(px, c.px, (size_t)37 * 23 * 3);
        assert_true(same(px_at(px, 37, 7, 6), (ae_rgb){10, 20, 30}));
        free(px);
    }
    ae_canvas_free(&c);
    uint8_t *png;
    size_t n;
    uint8_t one[3] = {1, 2, 3};
    assert_int_equal(ae_png_encode(one, 0, 1, AE_DEFLATE_FIXED, &png, &n), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "0x1"));
}

// ---------------------------------------------------------------------------------------------
// ticks, charts, heat maps

static void test_ticks(void **state) {
    (void)state;
    ae_ticks t;
    char b[48];
    ae_ticks_linear(0.013, 0.97, 5, &t);
    assert_true(fabs(t.step - 0.2) < 1e-12);
    assert_true(t.lo == 0 && fabs(t.hi - 1.0) < 1e-12);
    assert_int_equal(t.n, 6);
    ae_tick_format(&t, t.v[1], b, sizeof b);
    assert_string_equal(b, "0.2");
    ae_tick_format(&t, t.v[0], b, sizeof b);
    assert_string_equal(b, "0");
    ae_ticks_linear(5, 196, 6, &t); // steps of a run
    assert_true(t.step == 50 && t.lo == 0 && t.hi == 200);
    ae_tick_format(&t, 150, b, sizeof b);
    assert_string_equal(b, "150");
    ae_ticks_linear(0.7, 1.06, 5, &t); // 2.5 spacing: two decimals
    assert_true(fabs(t.step - 0.1) < 1e-12);
    ae_ticks_linear(0, 0.5, 4, &t);
    ae_tick_format(&t, t.v[1], b, sizeof b);
    assert_true(fabs(t.step - 0.125) > 0 && strlen(b) >= 3);
    ae_ticks_linear(3, 3, 5, &t); // one value: a range around it
    assert_true(t.lo < 3 && t.hi > 3);
    ae_ticks_linear(2e-6, 9e-6, 5, &t);
    ae_tick_format(&t, 4e-6, b, sizeof b);
    assert_string_equal(b, "4e-6");
    ae_ticks_log(0.013, 0.5, 6, &t); // within two decades: 1-2-5 labels, a tight range
    assert_true(fabs(t.lo - 0.01) < 1e-15 && fabs(t.hi - 0.5) < 1e-15);
    int lab = 0;
    for (int i = 0; i < t.n; i++) lab += t.labelled[i];
    assert_int_equal(lab, 6); // 0.01 0.02 0.05 0.1 0.2 0.5
    ae_tick_format(&t, 0.05, b, sizeof b);
    assert_string_equal(b, "0.05");
    ae_ticks_log(3e-9, 2e3, 6, &t); // 12 decades: every other one labelled
    assert_true(fabs(log10(t.lo) + 9) < 1e-9 && t.hi >= 2e3);
    assert_true(t.step == 3); // 13 decades, about 6 labels: every third
    ae_tick_format(&t, 1e-9, b, sizeof b);
    assert_string_equal(b, "1e-9");
}

static void test_chart_pixels(void **state) {
    (void)state;
    const ae_rgb red = {200, 20, 30};
    double x[11], y[11], ylog[11];
    for (int i = 0; i <= 10; i++) x[i] = i, y[i] = i, ylog[i] = pow(10, i * 0.3);
    for (int lg = 0; lg < 2; lg++) {
        ae_canvas c;
        assert_int_equal(ae_canvas_init(&c, 400, 300, AE_PLOT_BG), AE_OK);
        ae_series s = {x, lg ? ylog : y, 11, red, "y = x"};
        ae_chart_opts o = {.title = "a line", .xlabel = "x", .ylabel = "y", .log_y = lg, .line_width = 3};
        ae_chart_frame f;
        ae_chart_draw(&c, 0, 0, 400, 300, &o, &s, 1, &f);
        assert_true(f.x1 - f.x0 > 200 && f.y1 - f.y0 > 150);
        uint8_t *px = canvas_roundtrip(&c, AE_DEFLATE_FIXED);
        // on the line: the series colour; at (x, y) = (2.7, 7.3), far from it and from the grid:
        // the background
        double xm = 5.5, ym = lg ? pow(10, 5.5 * 0.3) : 5.5;
        int lx = (int)ae_chart_px_x(&f, xm), ly = (int)ae_chart_px_y(&f, ym);
        assert_true(same(px_at(px, 400, lx, ly), red));
        double ybg = lg ? pow(10, 7.3 * 0.3) : 7.3;
        int bx = (int)ae_chart_px_x(&f, 2.7), by = (int)ae_chart_px_y(&f, ybg);
        assert_true(same(px_at(px, 400, bx, by), AE_PLOT_BG));
        // the frame is drawn in ink; outside it, left of the tick labels, background
        assert_true(same(px_at(px, 400, f.x0, (f.y0 + f.y1) / 2), AE_PLOT_INK));
        assert_true(same(px_at(px, 400, 1, 1), AE_PLOT_BG));
        // nothing of the series outside the frame (clipped): the row under the frame has no red
        for (int xx = 0; xx < 400; xx++) assert_false(same(px_at(px, 400, xx, f.y1 + 1), red));
        free(px);
        ae_canvas_free(&c);
    }
}

static void test_heatmap_pixels(void **state) {
    (void)state;
    double v[3 * 4] = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, NAN}; // (3, 4)
    const char *rows[3] = {"0%", "50%", "100%"}, *cols[4] = {"1K", "2K", "4K", "8K"};
    ae_heatmap_opts o = {.title = "pass-key accuracy", .xlabel = "context", .ylabel = "depth",
                         .row_labels = rows, .col_labels = cols, .value_fmt = "%.0f",
                         .vmin = 0, .vmax = 100, .colorbar_label = "accuracy %"};
    ae_canvas c;
    assert_int_equal(ae_canvas_init(&c, 520, 360, AE_PLOT_BG), AE_OK);
    ae_heatmap_frame f;
    assert_int_equal(ae_heatmap_draw(&c, 0, 0, 520, 360, v, 3, 4, &o, &f), AE_OK);
    assert_true(f.cw > 20 && f.ch > 20);
    uint8_t *px = canvas_roundtrip(&c, AE_DEFLATE_FIXED);
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 4; k++) {
            double val = v[r * 4 + k];
            ae_rgb want = isnan(val) ? (ae_rgb){200, 200, 200} : ae_plot_colormap(val / 100);
            int cx = f.x0 + k * f.cw, cy = f.y0 + r * f.ch;
            assert_true(same(px_at(px, 520, cx + 1, cy + 1), want)); // cell corner: its colour
            // the value label: ink of the contrasting colour somewhere in the cell's middle
            ae_rgb ink = ae_rgb_luma(want) > 0.45 ? (ae_rgb){20, 20, 20} : (ae_rgb){250, 250, 250};
            int found = 0;
            for (int yy = cy + f.ch / 4; yy < cy + 3 * f.ch / 4; yy++)
                for (int xx = cx + f.cw / 4; xx < cx + 3 * f.cw / 4; xx++) found |= same(px_at(px, 520, xx, yy), ink);
            assert_true(found);
        }
    // the colour scale (right of the cells, under its label): vmax's colour at the top, vmin's
    // at the bottom (inside the outline)
    int bx = f.x0 + 4 * f.cw + 12 + 5, top = f.y0 + 12 + 1, bottom = f.y0 + 3 * f.ch - 2;
    assert_true(near(px_at(px, 520, bx, top), ae_plot_colormap(1.0), 6));
    assert_true(near(px_at(px, 520, bx, bottom), ae_plot_colormap(0.0), 6));
    // colours increase in lightness along the map (readable in grey)
    for (int i = 1; i <= 20; i++) assert_true(ae_rgb_luma(ae_plot_colormap(i / 20.0)) > ae_rgb_luma(ae_plot_colormap((i - 1) / 20.0)));
    free(px);
    assert_int_equal(ae_heatmap_draw(&c, 0, 0, 40, 40, v, 3, 4, &o, NULL), AE_ERR_ARG);
    assert_non_null(strstr(ae_last_error(), "do not fit"));
    assert_int_equal(ae_heatmap_draw(&c, 0, 0, 520, 360, v, 0, 4, &o, NULL), AE_ERR_ARG);
    ae_canvas_free(&c);
}

// ---------------------------------------------------------------------------------------------
// metrics.jsonl

#define S1(step, loss, l0, l1)                                                                     \
    "{\"stage\":1,\"step\":" #step ",\"steps\":20,\"loss\":" #loss ",\"lr\":0.001,\"layer_loss\":[" #l0 "," #l1 "]}\n"
#define S2(step, kl, cos, top1)                                                                    \
    "{\"stage\":2,\"step\":" #step ",\"steps\":30,\"loss\":" #kl ",\"kl\":" #kl ",\"cos\":" #cos ",\"top1\":" #top1 "}\n"

static ae_status parse(const char *text, ae_metrics *m) {
    return ae_metrics_parse(text, strlen(text), "run/metrics.jsonl", m);
}

static void test_metrics_resume(void **state) {
    (void)state;
    // killed after step 15 (checkpoint at 10): steps 15 logged again after the resume, with
    // other values that must win; then stage 2, also resumed
    const char *t = S1(5, 0.5, 0.4, 0.6) S1(10, 0.4, 0.3, 0.5) S1(15, 0.35, 0.3, 0.4)
        S1(15, 0.33, 0.3, 0.36) S1(20, 0.3, 0.25, 0.35) "\n" S2(10, 1.5, 0.2, 0.4) S2(20, 1.2, 0.15, 0.5)
        S2(20, 1.1, 0.14, 0.55);
    ae_metrics m;
    assert_int_equal(parse(t, &m), AE_OK);
    assert_int_equal(m.s[0].n, 4);
    assert_int_equal(m.s[0].n_layers, 2);
    assert_true(m.s[0].step[2] == 15 && m.s[0].loss[2] == 0.33);
    assert_true(m.s[0].layer_loss[2 * 2 + 1] == 0.36);
    assert_int_equal(m.s[0].steps, 20);
    assert_int_equal(m.s[1].n, 2);
    assert_true(m.s[1].has_kl && m.s[1].has_cos && m.s[1].has_top1);
    assert_true(m.s[1].kl[1] == 1.1 && m.s[1].top1[1] == 0.55);
    ae_metrics_free(&m);
    // records out of order (stage 2 lines first) still sort by stage and step
    assert_int_equal(parse(S2(20, 1.2, 0.1, 0.5) S1(10, 0.4, 0.3, 0.5) S2(10, 1.5, 0.2, 0.4), &m), AE_OK);
    assert_true(m.s[0].n == 1 && m.s[1].n == 2 && m.s[1].step[0] == 10);
    ae_metrics_free(&m);
}

static void test_metrics_one_stage(void **state) {
    (void)state;
    ae_metrics m;
    assert_int_equal(parse(S2(5, 2.0, 0.3, 0.2) S2(10, 1.5, 0.2, 0.3), &m), AE_OK); // stage 2 only
    assert_true(m.s[0].n == 0 && m.s[1].n == 2);
    ae_canvas c;
    assert_int_equal(ae_plot_metrics_draw(&m, "t", NULL, &c), AE_OK); // KL, cos: one row + top1
    assert_true(c.w > 0 && c.h > 0);
    int h2 = c.h;
    ae_canvas_free(&c);
    ae_metrics_free(&m);
    // stage 1 only, without layer_loss: one panel
    assert_int_equal(parse("{\"stage\":1,\"step\":1,\"loss\":0.5}\n", &m), AE_OK);
    assert_true(m.s[0].n == 1 && m.s[0].n_layers == 0 && m.s[1].n == 0);
    assert_int_equal(ae_plot_metrics_draw(&m, "t", NULL, &c), AE_OK);
    assert_true(c.h < h2);
    ae_canvas_free(&c);
    ae_metrics_free(&m);
    // an unfinished last line (a run writing it now) is skipped
    assert_int_equal(parse(S1(5, 0.5, 0.4, 0.6) "{\"stage\":1,\"st", &m), AE_OK);
    assert_int_equal(m.s[0].n, 1);
    ae_metrics_free(&m);
}

static void expect_bad(const char *text, const char *k1, const char *k2) {
    ae_metrics m;
    ae_status st = parse(text, &m);
    if (st != AE_ERR_FORMAT || !strstr(ae_last_error(), k1) || (k2 && !strstr(ae_last_error(), k2)))
        printf("text:\n%s\nmessage: %s\n", text, ae_last_error());
    assert_int_equal(st, AE_ERR_FORMAT);
    assert_non_null(strstr(ae_last_error(), k1));
    if (k2) assert_non_null(strstr(ae_last_error(), k2));
}

static void test_metrics_malformed(void **state) {
    (void)state;
    expect_bad("", "run/metrics.jsonl: no metrics records", NULL);
    expect_bad("\n  \n", "no metrics records", NULL);
    expect_bad(S1(5, 0.5, 0.4, 0.6) "\n{\"stage\":1,\"step\":10,\n" S1(15, 0.3, 0.2, 0.4),
               "run/metrics.jsonl:3:", "not valid JSON");
    expect_bad(S1(5, 0.5, 0.4, 0.6) "{\"stage\":1,\"step\":10,\"loss\":1} trailing\n", ":2:", "text after");
    expect_bad("[1,2]\n", ":1:", "not a JSON object");
    expect_bad("{\"step\":1,\"loss\":1}\n", ":1:", "'stage' is missing");
    expect_bad("{\"stage\":3,\"step\":1,\"loss\":1}\n", ":1:", "'stage' is not 1 or 2");
    expect_bad("{\"stage\":1,\"loss\":1}\n", ":1:", "'step' is missing");
    expect_bad("{\"stage\":1,\"step\":\"7\",\"loss\":1}\n", ":1:", "'step' is not a whole number");
    expect_bad("{\"stage\":1,\"step\":-2,\"loss\":1}\n", ":1:", "'step' is not a whole number");
    expect_bad("{\"stage\":1,\"step\":1.5,\"loss\":1}\n", ":1:", "'step' is not a whole number");
    expect_bad("{\"stage\":1,\"step\":1}\n", ":1:", "'loss' is missing");
    expect_bad("{\"stage\":2,\"step\":1,\"loss\":1,\"kl\":\"x\"}\n", ":1:", "'kl' is not a number");
    expect_bad("{\"stage\":1,\"step\":1,\"loss\":1,\"layer_loss\":3}\n", ":1:", "not an array");
    expect_bad("{\"stage\":1,\"step\":1,\"loss\":1,\"layer_loss\":[1,null]}\n", ":1:", "layer_loss[1]");
    expect_bad(S1(5, 0.5, 0.4, 0.6) "{\"stage\":1,\"step\":10,\"loss\":1,\"layer_loss\":[1,2,3]}\n", ":2:",
               "layer_loss has 3 values, line 1 has 2");
    // "garbage" with no newline and no record before it is not taken for an unfinished line
    expect_bad("garbage", ":1:", "not valid JSON");
}

// ---------------------------------------------------------------------------------------------
// the command

static char *g_dir; // a run folder with metrics.jsonl

static char *path_in(const char *dir, const char *name) { return ae_path_join(dir, name); }

static char *read_file(const char *path, size_t *n) {
    char *d = NULL;
    if (ae_file_read_all(path, &d, n) != AE_OK) return NULL;
    return d;
}

static void check_png_file(const char *path, int *w, int *h) {
    size_t n;
    char *d = read_file(path, &n);
    assert_non_null(d);
    uint8_t *px = png_decode((const uint8_t *)d, n, w, h);
    assert_true(same(px_at(px, *w, 2, *h - 2), AE_PLOT_BG)); // a margin of background
    free(px);
    free(d);
}

static int run(const char *const *args, char **err) {
    char *out = NULL;
    int rc = ae_test_run_cli(args, NULL, &out, err);
    if (rc == 0) assert_string_equal(out, ""); // results are files; stdout stays empty
    free(out);
    return rc;
}

static const char k_run[] = S1(5, 0.5, 0.4, 0.6) S1(10, 0.4, 0.3, 0.5) S1(10, 0.41, 0.3, 0.52)
    S1(15, 0.3, 0.2, 0.4) S2(5, 1.5, 0.2, 0.4) S2(10, 1.2, 0.15, 0.5) S2(15, 0.9, 0.12, 0.6);

static void test_cli_plot(void **state) {
    (void)state;
    g_dir = ae_test_tmpdir();
    char *metrics = path_in(g_dir, "metrics.jsonl"), *png = path_in(g_dir, "loss.png");
    assert_int_equal(ae_test_write_file(metrics, k_run, strlen(k_run)), 0);
    char *err;
    int rc = run(ARGS("plot", g_dir), &err);
    if (rc) printf("%s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, "loss.png"));
    free(err);
    int w, h;
    check_png_file(png, &w, &h);
    assert_true(w >= 800 && h >= 3 * 300); // two stages: three rows of panels
    assert_int_equal(ae_test_count_entries(g_dir), 2); // metrics.jsonl + loss.png, no temp file
    // -o and --log-y
    char *other = path_in(g_dir, "log.png");
    assert_int_equal(run(ARGS("plot", "--log-y", g_dir, "-o", other), &err), 0);
    free(err);
    int w2, h2;
    check_png_file(other, &w2, &h2);
    assert_true(w2 == w && h2 == h);
    assert_int_equal(ae_test_count_entries(g_dir), 3);
    // the library entry point the training loop calls
    assert_int_equal(ae_plot_metrics(g_dir, NULL), AE_OK);
    check_png_file(png, &w2, &h2);
    free(other);
    free(metrics);
    free(png);
}

// Runs a plot that must fail: exit 1, the keys in the message, and the folder unchanged.
static void expect_cli_fail(const char *const *args, const char *dir, const char *k1, const char *k2) {
    int before = dir ? ae_test_count_entries(dir) : 0;
    char *err;
    int rc = run(args, &err);
    if (rc != 1 || !strstr(err, "attnedit plot") || !strstr(err, k1) || (k2 && !strstr(err, k2)))
        printf("exit %d\nstderr: %s\n", rc, err);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "attnedit plot"));
    assert_non_null(strstr(err, k1));
    if (k2) assert_non_null(strstr(err, k2));
    free(err);
    if (dir) assert_int_equal(ae_test_count_entries(dir), before);
}

static void test_cli_plot_bad(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir(), *metrics = path_in(dir, "metrics.jsonl"), *png = path_in(dir, "loss.png");
    // no such folder; a folder without metrics.jsonl; RUN_DIR a file
    char *missing = path_in(dir, "nope");
    expect_cli_fail(ARGS("plot", missing), dir, "nope", "does not exist");
    expect_cli_fail(ARGS("plot", dir), dir, "metrics.jsonl", "does not exist");
    assert_int_equal(ae_test_write_file(metrics, "", 0), 0);
    expect_cli_fail(ARGS("plot", metrics), dir, "is not a folder", NULL);
    // empty file: nothing written
    expect_cli_fail(ARGS("plot", dir), dir, "metrics.jsonl: no metrics records", NULL);
    assert_false(ae_path_exists(png));
    // a malformed line: file:line, nothing written, and a previous loss.png left as it was
    const char old[] = "previous picture";
    assert_int_equal(ae_test_write_file(png, old, sizeof old), 0);
    const char bad[] = S1(5, 0.5, 0.4, 0.6) "{\"stage\":1,\"step\":oops}\n";
    assert_int_equal(ae_test_write_file(metrics, bad, strlen(bad)), 0);
    expect_cli_fail(ARGS("plot", dir), dir, "metrics.jsonl:2:", "not valid JSON");
    size_t n;
    char *d = read_file(png, &n);
    assert_true(d && n == sizeof old && !memcmp(d, old, n));
    free(d);
    // output onto the metrics file itself, or onto a folder: refused, metrics.jsonl intact
    assert_int_equal(ae_test_write_file(metrics, k_run, strlen(k_run)), 0);
    expect_cli_fail(ARGS("plot", dir, "-o", metrics), dir, "metrics.jsonl", NULL);
    d = read_file(metrics, &n);
    assert_true(d && n == strlen(k_run));
    free(d);
    expect_cli_fail(ARGS("plot", dir, "-o", dir), dir, "is a folder", NULL);
    // an output folder that does not exist: the file named, no temp file left anywhere
    char *deep = path_in(missing, "x.png");
    expect_cli_fail(ARGS("plot", dir, "-o", deep), dir, "x.png", "cannot create");
    // usage
    expect_cli_fail(ARGS("plot", dir, "--bogus"), dir, "--bogus", NULL);
    expect_cli_fail(ARGS("plot", dir, "-o"), dir, "-o", NULL);
    char *err;
    assert_int_equal(run(ARGS("plot"), &err), 2);
    assert_non_null(strstr(err, "need RUN_DIR"));
    free(err);
    free(deep);
    free(missing);
    free(metrics);
    free(png);
    ae_test_rmtree(dir);
    free(dir);
}

// python3's zlib (an independent inflate, dynamic Huffman and all) reads the IDAT stream of the
// file test_cli_plot wrote, checking its Adler-32; skipped with the reason when python3 or its
// zlib module is missing.
static void test_python_zlib(void **state) {
    (void)state;
    if (system("python3 -c 'import zlib' >/dev/null 2>&1") != 0) {
        printf("SKIP python zlib cross-check: python3 with zlib not found\n");
        return;
    }
    char *png = path_in(g_dir, "loss.png");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import struct,sys,zlib\n"
             "d=open(sys.argv[1],'rb').read(); i=8; z=b''\n"
             "while i<len(d):\n"
             "    n,=struct.unpack('>I',d[i:i+4]); t=d[i+4:i+8]\n"
             "    if t==b'IHDR': w,h=struct.unpack('>II',d[i+8:i+16])\n"
             "    if t==b'IDAT': z+=d[i+8:i+8+n]\n"
             "    i+=12+n\n"
             "r=zlib.decompress(z); print('ok' if len(r)==h*(3*w+1) else 'bad', len(r))\" '%s'",
             png);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[256] = {0};
    char *got = fgets(line, sizeof line, p);
    int rc = pclose(p);
    if (!got || rc != 0 || strncmp(line, "ok ", 3)) printf("python said: %s (exit %d)\n", line, rc);
    assert_int_equal(rc, 0);
    assert_true(!strncmp(line, "ok ", 3));
    free(png);
    ae_test_rmtree(g_dir);
    free(g_dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksums),         cmocka_unit_test(test_deflate_roundtrip),
        cmocka_unit_test(test_png_pixels),        cmocka_unit_test(test_ticks),
        cmocka_unit_test(test_chart_pixels),      cmocka_unit_test(test_heatmap_pixels),
        cmocka_unit_test(test_metrics_resume),    cmocka_unit_test(test_metrics_one_stage),
        cmocka_unit_test(test_metrics_malformed), cmocka_unit_test(test_cli_plot),
        cmocka_unit_test(test_cli_plot_bad),      cmocka_unit_test(test_python_zlib),
    };
    return ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
