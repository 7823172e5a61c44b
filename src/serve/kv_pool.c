// Page pool of the server's KV cache (serve/kv_pool.h).
#include "serve/kv_pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

ae_status ae_kv_pool_init(ae_kv_pool *p, const ae_model *m, size_t bytes, int page_positions,
                          int max_chunk) {
    memset(p, 0, sizeof *p);
    AE_TRY(ae_paged_layout_init(&p->lo, m, page_positions));
    p->be = m->be;
    p->max_chunk = max_chunk > 0 ? max_chunk : 1;
    size_t pb = ae_kv_pool_page_bytes(p);
    size_t n = bytes / pb;
    if (n < 1 || n > (size_t)1 << 30) {
        ae_paged_layout_free(&p->lo);
        return ae_errorf(AE_ERR_ARG, "KV cache of %zu bytes holds %zu pages of %zu bytes", bytes,
                         n, pb);
    }
    p->n_pages = (int)n;
    p->free_list = ae_malloc(sizeof(int32_t) * n);
    p->lo.pool = p->be->alloc(p->be, n * (size_t)p->lo.page_stride, p->be->act_dtype);
    if (!p->free_list || ae_ptr_is_null(p->lo.pool)) {
        ae_kv_pool_free(p);
        return ae_errorf(AE_ERR_NOMEM, "KV cache: cannot allocate %zu pages (%.2f GiB)", n,
                         (double)(n * pb) / (1 << 30));
    }
    for (int i = 0; i < p->n_pages; i++) p->free_list[i] = p->n_pages - 1 - i;
    p->n_free = p->n_pages;
    return AE_OK;
}

void ae_kv_pool_free(ae_kv_pool *p) {
    if (p->be) p->be->free(p->be, p->lo.pool);
    free(p->free_list);
    ae_paged_layout_free(&p->lo);
    memset(p, 0, sizeof *p);
}

size_t ae_kv_pool_page_bytes(const ae_kv_pool *p) {
    return (size_t)p->lo.page_stride * ae_dtype_size(p->be->act_dtype);
}

static int blocks_for(int len, int P) { return (len + P - 1) / P; }

int ae_kv_pool_pages_for(const ae_kv_pool *p, int len) {
    int n = 0;
    for (int g = 0; g < AE_PG_COUNT; g++) {
        int P = p->lo.page_size[g];
        if (!P) continue;
        int b = blocks_for(len, P);
        if (g == AE_PG_SLIDING) { // window − 1 keys behind the oldest query of a chunk
            int live = blocks_for(p->lo.window - 1 + p->max_chunk, P) + 1;
            if (live < b) b = live;
        }
        n += b;
    }
    return n;
}

int ae_kv_pool_available(const ae_kv_pool *p) { return p->n_free - p->promised; }

int ae_kv_pool_admit(ae_kv_pool *p, ae_seq_pages *s, int len) {
    int need = ae_kv_pool_pages_for(p, len);
    if (need > ae_kv_pool_available(p)) return 0;
    memset(s, 0, sizeof *s);
    s->reserve = need;
    p->promised += need;
    return 1;
}

ae_status ae_kv_pool_grow(ae_kv_pool *p, ae_seq_pages *s, int end, int first_needed) {
    for (int g = 0; g < AE_PG_COUNT; g++) {
        int P = p->lo.page_size[g];
        if (!P) continue;
        if (g == AE_PG_SLIDING) { // blocks wholly before first_needed are no longer read
            int keep_from = first_needed > 0 ? first_needed / P : 0;
            for (; s->first_live[g] < keep_from && s->first_live[g] < s->n_blocks[g]; s->first_live[g]++) {
                int32_t *b = &s->blocks[g][s->first_live[g]];
                if (*b < 0) continue;
                p->free_list[p->n_free++] = *b;
                *b = -1;
                s->held--;
                p->promised++;
            }
        }
        int need = blocks_for(end, P);
        if (need > s->cap_blocks[g]) {
            int cap = s->cap_blocks[g] ? s->cap_blocks[g] : 16;
            while (cap < need) cap *= 2;
            int32_t *nb = realloc(s->blocks[g], sizeof(int32_t) * (size_t)cap);
            if (!nb) return AE_ERR_NOMEM;
            s->blocks[g] = nb;
            s->cap_blocks[g] = cap;
        }
        while (s->n_blocks[g] < need) {
            int32_t page = -1;
            int b = s->n_blocks[g];
            if (g != AE_PG_SLIDING || (b + 1) * P > first_needed) {
                if (s->held >= s->reserve || p->n_free == 0 || p->promised == 0)
                    return ae_errorf(AE_ERR_ARG, "KV pool: a sequence outgrew its page promise");
                page = p->free_list[--p->n_free];
                s->held++;
                p->promised--;
            }
            s->blocks[g][s->n_blocks[g]++] = page;
        }
    }
    return AE_OK;
}

void ae_kv_pool_release(ae_kv_pool *p, ae_seq_pages *s) {
    for (int g = 0; g < AE_PG_COUNT; g++) {
        for (int b = 0; b < s->n_blocks[g]; b++)
            if (s->blocks[g][b] >= 0) p->free_list[p->n_free++] = s->blocks[g][b];
        free(s->blocks[g]);
    }
    p->promised -= s->reserve - s->held;
    memset(s, 0, sizeof *s);
}

int32_t ae_kv_pool_slot(const ae_kv_pool *p, const ae_seq_pages *s, int g, int pos) {
    int P = p->lo.page_size[g];
    return s->blocks[g][pos / P] * P + pos % P;
}
