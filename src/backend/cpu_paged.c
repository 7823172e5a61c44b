// Paged KV cache ops of the CPU reference backend: attention over keys/values read through a
// block table, the scatter of new K/V rows into page slots and the gather of a sequence's rows
// out of its pages (ae_paged_attn_args, ops.h).
// Each query row is cpu_attention.c's row code itself (cpu_attn_row_probs / cpu_attn_row_out,
// cpu_internal.h), so a paged call equals the contiguous `attention` call on the same keys bit
// for bit; only the addressing (paged_key / paged_val) differs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_internal.h"

// Address of the row holding position j of the sequence whose block-table row is `tab` (op: the
// caller's name, for the message when the block was released).
static const float *page_row(const float *base, const int32_t *tab, int j, int page_size,
                             int64_t page_stride, int64_t stride, const char *op) {
    int32_t page = tab[j / page_size];
    if (page < 0) {
        fprintf(stderr, "attnedit: internal error: %s reads position %d of a released block\n",
                op, j);
        abort();
    }
    return base + (size_t)page * page_stride + (size_t)(j % page_size) * stride;
}

static const float *paged_row(const ae_paged_attn_args *a, const float *base, const int32_t *tab,
                              int j, int stride) {
    return page_row(base, tab, j, a->page_size, a->page_stride, stride, "attention_paged");
}

static const float *paged_key(const cpu_attn_row *r, int j) {
    const ae_paged_attn_args *a = r->args;
    return paged_row(a, r->k, r->table, j, a->k_stride) + (size_t)r->kh * a->dk;
}

static const float *paged_val(const cpu_attn_row *r, int j) {
    const ae_paged_attn_args *a = r->args;
    return paged_row(a, r->v, r->table, j, a->v_stride) + (size_t)r->kh * a->dv;
}

void ae_cpu_attention_paged(const ae_backend *be, const ae_paged_attn_args *a, ae_ptr outp,
                            ae_ptr qp, ae_ptr kp, ae_ptr vp) {
    (void)be;
    float *out = cpu_f(outp, "attention_paged");
    const float *q = cpu_f(qp, "attention_paged"), *k = cpu_f(kp, "attention_paged");
    const float *v = cpu_f(vp, "attention_paged"), *sinks = cpu_f(a->sinks, "attention_paged");
    const int32_t *seq = cpu_i(a->seq, "attention_paged"), *pos = cpu_i(a->pos, "attention_paged");
    const int32_t *table = cpu_i(a->block_table, "attention_paged");
    ae_paged_runs_check(a, seq, pos); // the runs (cuda's plan) must describe seq and pos
    int G = a->Hq / a->Hkv, maxpos = 0;
    for (int r = 0; r < a->N; r++) maxpos = pos[r] > maxpos ? pos[r] : maxpos;
    long work = 0;
    for (int r = 0; r < a->N; r++) work += (long)pos[r] + 1;
#pragma omp parallel if (work * a->Hq * a->dk > 262144)
    {
        float *p = malloc(sizeof(float) * (size_t)(maxpos + 1));
#pragma omp for collapse(2) schedule(dynamic, 4)
        for (int r = 0; r < a->N; r++) {
            for (int h = 0; h < a->Hq; h++) {
                int qpos = pos[r], lo = 0;
                if (a->window > 0 && qpos - a->window + 1 > 0) lo = qpos - a->window + 1;
                cpu_attn_row row = {.key = paged_key, .val = paged_val, .args = a, .k = k, .v = v,
                                    .table = table + (size_t)seq[r] * a->max_blocks,
                                    .sink = sinks ? sinks + h : NULL, .kh = h / G, .dk = a->dk,
                                    .dv = a->dv, .lo = lo, .qpos = qpos, .scale = a->scale};
                cpu_attn_row_probs(&row, q + ((size_t)r * a->Hq + h) * a->dk, p);
                cpu_attn_row_out(&row, p, out + ((size_t)r * a->Hq + h) * a->dv);
            }
        }
        free(p);
    }
}

void ae_cpu_paged_store(const ae_backend *be, ae_ptr dstp, int64_t page_stride, int page_size,
                        int64_t ldd, ae_ptr srcp, int64_t lds, ae_ptr slotp, int N, int cols) {
    (void)be;
    float *dst = cpu_f(dstp, "paged_store");
    const float *src = cpu_f(srcp, "paged_store");
    const int32_t *slot = cpu_i(slotp, "paged_store");
    for (int r = 0; r < N; r++) {
        if (slot[r] < 0) continue;
        size_t page = (size_t)(slot[r] / page_size), row = (size_t)(slot[r] % page_size);
        memcpy(dst + page * page_stride + row * ldd, src + (size_t)r * lds,
               sizeof(float) * (size_t)cols);
    }
}

void ae_cpu_paged_gather(const ae_backend *be, ae_ptr dstp, int64_t ldd, ae_ptr srcp,
                         int64_t page_stride, int page_size, int64_t lds, ae_ptr tablep, int n,
                         int cols) {
    (void)be;
    float *dst = cpu_f(dstp, "paged_gather");
    const float *src = cpu_f(srcp, "paged_gather");
    const int32_t *table = cpu_i(tablep, "paged_gather");
    for (int j = 0; j < n; j++)
        memcpy(dst + (size_t)j * ldd,
               page_row(src, table, j, page_size, page_stride, lds, "paged_gather"),
               sizeof(float) * (size_t)cols);
}
