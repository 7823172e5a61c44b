#include "eval/windows.h"

void ae_windows_init(ae_windows *it, size_t n, int ctx) {
    it->n = n;
    it->next = 0;
    it->ctx = ctx;
}

int ae_windows_next(ae_windows *it, ae_window *w) {
    if (it->next + 1 >= it->n) return 0;
    size_t left = it->n - 1 - it->next; // predictions not yet scored
    w->start = it->next;
    w->len = (int)(left < (size_t)it->ctx ? left : (size_t)it->ctx);
    it->next += (size_t)it->ctx;
    return 1;
}

int ae_windows_longest(size_t n, int ctx) {
    if (n < 2) return 0;
    return (int)(n - 1 < (size_t)ctx ? n - 1 : (size_t)ctx);
}
