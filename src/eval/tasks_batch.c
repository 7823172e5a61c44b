// Log-likelihood requests of many items per forward (ae_task_score with batch > 1), through the
// serving engine's forward over a paged KV cache (model/paged.h); no forward of its own.
//
// Each batch of items runs in two forwards:
//  1. every distinct prefix of the batch (ae_req_view: the input before the scored rows, shared
//     by the choices of an item) as one sequence;
//  2. every request's tail (its n_tail scored rows) as a sequence of its own at positions
//     n_prefix.., whose block table starts with its prefix's pages: the full pages are shared,
//     the prefix's last, partly filled page is copied to a page of the tail's own before the
//     tail writes after it (copy on write; the last tail of a prefix takes the page itself).
// The logits of all tail rows come out of forward 2 together and are scored by nll_rows and
// argmax_rows; only the per-row results leave the device. Pages are handed out afresh for each
// batch from one pool sized for the largest batch (no page is ever given back mid-batch:
// sliding-window layers keep their old pages, attention_paged masks by position).
//
// A batch takes up to `batch` items, fewer when their prefix rows would pass
// AE_BATCH_PREFIX_ROWS or their tail rows (logit rows: V floats each) AE_BATCH_TAIL_ROWS; an
// item is never split, so one longer item runs alone.
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/tasks_internal.h"
#include "model/paged.h"

#define AE_BATCH_PREFIX_ROWS 16384
#define AE_BATCH_TAIL_ROWS 2048
#define AE_BATCH_PAGE_POSITIONS 16 // positions per page of the most expensive layer group

static int cdiv(int a, int b) { return (a + b - 1) / b; }

// Which prefix sequence serves each request: the first request of its item with the same
// prefix (its owner); the owner's prefix is run only when it has tokens.
typedef struct {
    ae_req_view *v;           // (n_req)
    int *owner;               // (n_req) request index
    unsigned char *last_user; // (n_req) 1: no later request of the item shares the owner's prefix
    int *prefix_seq;          // (n_req) of an owner: its sequence in forward 1 of its batch
} req_plan;

static ae_status plan_init(req_plan *p, const ae_enc_req *enc, const ae_task_scores *o,
                           int max_len) {
    size_t n = o->n_req ? (size_t)o->n_req : 1;
    p->v = ae_calloc(n, sizeof *p->v);
    p->owner = ae_calloc(n, sizeof *p->owner);
    p->last_user = ae_calloc(n, 1);
    p->prefix_seq = ae_calloc(n, sizeof *p->prefix_seq);
    if (!p->v || !p->owner || !p->last_user || !p->prefix_seq) return AE_ERR_NOMEM;
    for (int i = 0; i < o->n_items; i++)
        for (int k = o->first[i]; k < o->first[i + 1]; k++) {
            p->v[k] = ae_req_view_of(&enc[k], max_len);
            p->owner[k] = k;
            for (int j = o->first[i]; j < k; j++)
                if (p->owner[j] == j && ae_req_same_prefix(&p->v[j], &p->v[k])) {
                    p->owner[k] = j;
                    break;
                }
        }
    for (int i = 0; i < o->n_items; i++)
        for (int k = o->first[i]; k < o->first[i + 1]; k++) {
            p->last_user[k] = 1;
            for (int j = k + 1; j < o->first[i + 1] && p->last_user[k]; j++)
                if (p->owner[j] == p->owner[k]) p->last_user[k] = 0;
        }
    return AE_OK;
}

static void plan_free(req_plan *p) {
    free(p->v);
    free(p->owner);
    free(p->last_user);
    free(p->prefix_seq);
}

// What a batch needs: rows and sequences of forwards 1 and 2, pages, table columns per group.
typedef struct {
    int rows[2], seqs[2], pages;
    int blocks[AE_PG_COUNT];
} extent;

static void extent_add_req(extent *e, const ae_paged_layout *lo, const req_plan *p, int k) {
    const ae_req_view *v = &p->v[k];
    int np = v->n_prefix, nk = v->n_tail, own_prefix = p->owner[k] == k && np > 0;
    e->rows[0] += own_prefix ? np : 0;
    e->seqs[0] += own_prefix;
    e->rows[1] += nk;
    e->seqs[1]++;
    for (int g = 0; g < AE_PG_COUNT; g++) {
        int P = lo->page_size[g];
        if (!P) continue;
        int total = cdiv(np + nk, P), shared = np / P;
        e->pages += own_prefix ? cdiv(np, P) : 0;
        e->pages += total - shared - (p->last_user[k] && np % P ? 1 : 0);
        if (total > e->blocks[g]) e->blocks[g] = total;
    }
}

static void extent_max(extent *m, const extent *e) {
    for (int f = 0; f < 2; f++) {
        if (e->rows[f] > m->rows[f]) m->rows[f] = e->rows[f];
        if (e->seqs[f] > m->seqs[f]) m->seqs[f] = e->seqs[f];
    }
    if (e->pages > m->pages) m->pages = e->pages;
    for (int g = 0; g < AE_PG_COUNT; g++)
        if (e->blocks[g] > m->blocks[g]) m->blocks[g] = e->blocks[g];
}

// Splits the items into batches: bstart (n_batches + 1) item offsets; the largest extent.
static ae_status plan_batches(const req_plan *p, const ae_paged_layout *lo, const ae_task_scores *o,
                              int batch, int **bstart, int *n_batches, extent *most) {
    memset(most, 0, sizeof *most);
    *bstart = ae_calloc((size_t)o->n_items + 1, sizeof **bstart);
    if (!*bstart) return AE_ERR_NOMEM;
    int nb = 0;
    for (int i = 0; i < o->n_items;) {
        extent e = {0};
        int i0 = i;
        while (i < o->n_items && i - i0 < batch) {
            extent t = e;
            for (int k = o->first[i]; k < o->first[i + 1]; k++) extent_add_req(&t, lo, p, k);
            if (i > i0 && (t.rows[0] > AE_BATCH_PREFIX_ROWS || t.rows[1] > AE_BATCH_TAIL_ROWS)) break;
            e = t;
            i++;
        }
        (*bstart)[nb++] = i0;
        extent_max(most, &e);
    }
    (*bstart)[nb] = o->n_items;
    *n_batches = nb;
    return AE_OK;
}

// Device buffers and host staging of the forwards, sized for the largest batch.
typedef struct {
    const ae_model *m;
    ae_paged_layout lo;            // lo.pool: (n_pages, page_stride) act
    int mb[AE_PG_COUNT];           // block table columns per group (0: unused group)
    int n_pages, next_page;
    ae_scratch dev;
    ae_ptr pos, seq;               // (rows) I32
    ae_ptr slot[AE_PG_COUNT];      // (rows) I32
    ae_ptr table[AE_PG_COUNT];     // (seqs, mb[g]) I32
    ae_ptr logits;                 // (tail rows, V) F32
    ae_ptr tgt, nll, amax;         // (tail rows) I32, F32, I32
    // host: the rows of the forward being built
    int N, n_seq;
    int32_t *ids, *pos_h, *seq_h;  // (rows)
    int32_t *slot_h[AE_PG_COUNT];  // (rows)
    int32_t *table_h[AE_PG_COUNT]; // (seqs, mb[g])
    int32_t *prefix_h[AE_PG_COUNT]; // (prefix seqs, mb[g]) pages of forward 1's sequences
    ae_paged_run *runs;            // (seqs)
    int *out_rows;                 // (tail rows) 0, 1, 2, ...
    int32_t *tgt_h, *amax_h;       // (tail rows)
    float *nll_h;                  // (tail rows)
    int32_t *copies;               // (2 · groups · tail seqs) page pairs (from, to) to copy before forward 2
    int n_copies;
} batcher;

// Allocates the buffers for batches up to extent e (b->m and b->lo set).
static ae_status batcher_alloc(batcher *b, const extent *e) {
    const ae_model *m = b->m;
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size;
    int rows = e->rows[0] > e->rows[1] ? e->rows[0] : e->rows[1];
    int seqs = e->seqs[0] > e->seqs[1] ? e->seqs[0] : e->seqs[1], tails = e->rows[1];
    rows = rows > 0 ? rows : 1;
    seqs = seqs > 0 ? seqs : 1;
    b->n_pages = e->pages > 0 ? e->pages : 1;
    ae_scratch_init(&b->dev, be);
    b->lo.pool = ae_scratch_alloc(&b->dev, (size_t)b->n_pages * (size_t)b->lo.page_stride, be->act_dtype);
    b->pos = ae_scratch_alloc(&b->dev, (size_t)rows, AE_DT_I32);
    b->seq = ae_scratch_alloc(&b->dev, (size_t)rows, AE_DT_I32);
    b->logits = ae_scratch_alloc(&b->dev, (size_t)tails * V, AE_DT_F32);
    b->tgt = ae_scratch_alloc(&b->dev, (size_t)tails, AE_DT_I32);
    b->nll = ae_scratch_alloc(&b->dev, (size_t)tails, AE_DT_F32);
    b->amax = ae_scratch_alloc(&b->dev, (size_t)tails, AE_DT_I32);
    int host_ok = 1;
    for (int g = 0; g < AE_PG_COUNT; g++) {
        if (!b->lo.page_size[g]) continue;
        b->mb[g] = e->blocks[g] > 0 ? e->blocks[g] : 1;
        b->slot[g] = ae_scratch_alloc(&b->dev, (size_t)rows, AE_DT_I32);
        b->table[g] = ae_scratch_alloc(&b->dev, (size_t)seqs * b->mb[g], AE_DT_I32);
        b->slot_h[g] = ae_malloc(sizeof(int32_t) * (size_t)rows);
        b->table_h[g] = ae_malloc(sizeof(int32_t) * (size_t)seqs * b->mb[g]);
        b->prefix_h[g] = ae_malloc(sizeof(int32_t) * (size_t)seqs * b->mb[g]);
        host_ok &= b->slot_h[g] && b->table_h[g] && b->prefix_h[g];
    }
    b->ids = ae_malloc(sizeof(int32_t) * (size_t)rows);
    b->pos_h = ae_malloc(sizeof(int32_t) * (size_t)rows);
    b->seq_h = ae_malloc(sizeof(int32_t) * (size_t)rows);
    b->runs = ae_malloc(sizeof(ae_paged_run) * (size_t)seqs);
    b->out_rows = ae_malloc(sizeof(int) * (size_t)tails);
    b->tgt_h = ae_malloc(sizeof(int32_t) * (size_t)tails);
    b->amax_h = ae_malloc(sizeof(int32_t) * (size_t)tails);
    b->nll_h = ae_alloc_f32((size_t)tails);
    b->copies = ae_malloc(sizeof(int32_t) * 2 * AE_PG_COUNT * (size_t)seqs);
    host_ok &= b->ids && b->pos_h && b->seq_h && b->runs && b->out_rows && b->tgt_h && b->amax_h &&
               b->nll_h && b->copies;
    if (b->dev.failed) return ae_errorf(AE_ERR_NOMEM, "eval tasks: out of device memory for a batch of %d "
                                        "rows and %d pages of KV cache (try a smaller --batch)", rows, b->n_pages);
    if (!host_ok) return AE_ERR_NOMEM;
    for (int r = 0; r < tails; r++) b->out_rows[r] = r;
    return AE_OK;
}

static void batcher_free(batcher *b) {
    ae_scratch_free(&b->dev);
    for (int g = 0; g < AE_PG_COUNT; g++) {
        free(b->slot_h[g]);
        free(b->table_h[g]);
        free(b->prefix_h[g]);
    }
    free(b->ids);
    free(b->pos_h);
    free(b->seq_h);
    free(b->runs);
    free(b->out_rows);
    free(b->tgt_h);
    free(b->amax_h);
    ae_free_aligned(b->nll_h);
    free(b->copies);
    ae_paged_layout_free(&b->lo);
}

// The block table row of sequence s in group g of the forward being built, all blocks unset.
static int32_t *table_row(batcher *b, int g, int s) {
    int32_t *row = b->table_h[g] + (size_t)s * b->mb[g];
    for (int i = 0; i < b->mb[g]; i++) row[i] = -1;
    return row;
}

// Appends the n rows of a new sequence (ids at positions pos0..) whose table rows are set.
static void add_seq_rows(batcher *b, const int32_t *ids, int n, int pos0) {
    int s = b->n_seq++;
    b->runs[s] = (ae_paged_run){.first = b->N, .n = n, .seq = s, .pos0 = pos0};
    for (int r = 0; r < n; r++) {
        int row = b->N + r, p = pos0 + r;
        b->ids[row] = ids[r];
        b->pos_h[row] = p;
        b->seq_h[row] = s;
        for (int g = 0; g < AE_PG_COUNT; g++) {
            int P = b->lo.page_size[g];
            if (P) b->slot_h[g][row] = b->table_h[g][(size_t)s * b->mb[g] + p / P] * P + p % P;
        }
    }
    b->N += n;
}

static ae_status run_forward(batcher *b, int with_logits) {
    const ae_backend *be = b->m->be;
    ae_paged_batch pb = {.N = b->N, .n_seq = b->n_seq, .ids = b->ids, .pos = b->pos, .seq = b->seq,
                         .n_runs = b->n_seq, .runs = b->runs};
    AE_TRY(be->upload(be, b->pos, b->pos_h, AE_DT_I32, (size_t)b->N));
    AE_TRY(be->upload(be, b->seq, b->seq_h, AE_DT_I32, (size_t)b->N));
    for (int g = 0; g < AE_PG_COUNT; g++) {
        if (!b->lo.page_size[g]) continue;
        AE_TRY(be->upload(be, b->slot[g], b->slot_h[g], AE_DT_I32, (size_t)b->N));
        AE_TRY(be->upload(be, b->table[g], b->table_h[g], AE_DT_I32, (size_t)b->n_seq * b->mb[g]));
        pb.slot[g] = b->slot[g];
        pb.table[g] = b->table[g];
        pb.max_blocks[g] = b->mb[g];
    }
    return ae_model_forward_paged(b->m, &b->lo, &pb, b->out_rows, with_logits ? b->N : 0, b->logits);
}

// Forward 1: the prefixes owned by requests k0..k1−1, each on fresh pages.
static ae_status run_prefixes(batcher *b, req_plan *p, int k0, int k1) {
    b->N = b->n_seq = 0;
    for (int k = k0; k < k1; k++) {
        int np = p->v[k].n_prefix;
        if (p->owner[k] != k || np == 0) continue;
        int s = b->n_seq;
        p->prefix_seq[k] = s;
        for (int g = 0; g < AE_PG_COUNT; g++) {
            int P = b->lo.page_size[g];
            if (!P) continue;
            int32_t *row = table_row(b, g, s);
            for (int i = 0; i < cdiv(np, P); i++) row[i] = b->next_page++;
            memcpy(b->prefix_h[g] + (size_t)s * b->mb[g], row, sizeof(int32_t) * (size_t)b->mb[g]);
        }
        add_seq_rows(b, p->v[k].in, np, 0);
    }
    return b->N > 0 ? run_forward(b, 0) : AE_OK;
}

// The table of request k's tail in group g: its prefix's full pages, the partly filled one
// copied (or taken over by the prefix's last user), then fresh pages.
static void tail_table(batcher *b, const req_plan *p, int k, int g, int s) {
    int P = b->lo.page_size[g], np = p->v[k].n_prefix, nk = p->v[k].n_tail;
    int32_t *row = table_row(b, g, s);
    const int32_t *pre = np > 0 ? b->prefix_h[g] + (size_t)p->prefix_seq[p->owner[k]] * b->mb[g] : NULL;
    int i = 0, shared = np / P, total = cdiv(np + nk, P);
    for (; i < shared; i++) row[i] = pre[i];
    if (np % P) {
        if (p->last_user[k]) row[i] = pre[i];
        else {
            row[i] = b->next_page++;
            b->copies[2 * b->n_copies] = pre[i];
            b->copies[2 * b->n_copies + 1] = row[i];
            b->n_copies++;
        }
        i++;
    }
    for (; i < total; i++) row[i] = b->next_page++;
}

// Forward 2: every request's tail; then its log-likelihood and greedy flag.
static ae_status run_tails(batcher *b, const req_plan *p, const ae_enc_req *enc, int k0, int k1,
                           ae_task_scores *out) {
    const ae_backend *be = b->m->be;
    int V = b->m->cfg.vocab_size;
    b->N = b->n_seq = b->n_copies = 0;
    for (int k = k0; k < k1; k++) {
        for (int g = 0; g < AE_PG_COUNT; g++)
            if (b->lo.page_size[g]) tail_table(b, p, k, g, b->n_seq);
        const ae_req_view *v = &p->v[k];
        memcpy(b->tgt_h + b->N, enc[k].ids + enc[k].n_ctx, sizeof(int32_t) * (size_t)v->n_tail);
        add_seq_rows(b, v->in + v->n_prefix, v->n_tail, v->n_prefix);
    }
    size_t ps = (size_t)b->lo.page_stride;
    for (int c = 0; c < b->n_copies; c++)
        ae_copy(be, ae_ptr_at(b->lo.pool, (size_t)b->copies[2 * c + 1] * ps),
                ae_ptr_at(b->lo.pool, (size_t)b->copies[2 * c] * ps), ps);
    AE_TRY(run_forward(b, 1));
    AE_TRY(be->upload(be, b->tgt, b->tgt_h, AE_DT_I32, (size_t)b->N));
    be->nll_rows(be, b->nll, b->logits, b->tgt, b->N, V);
    be->argmax_rows(be, b->amax, b->logits, b->N, V);
    AE_TRY(be->download(be, b->nll_h, AE_DT_F32, b->nll, (size_t)b->N));
    AE_TRY(be->download(be, b->amax_h, AE_DT_I32, b->amax, (size_t)b->N));
    for (int k = k0, r = 0; k < k1; k++) {
        double s = 0;
        int greedy = 1;
        for (int t = 0; t < p->v[k].n_tail; t++, r++) {
            s -= b->nll_h[r];
            greedy &= b->amax_h[r] == b->tgt_h[r];
        }
        out->ll[k] = s;
        out->greedy[k] = (unsigned char)greedy;
    }
    return AE_OK;
}

ae_status ae_task_score_batched(const ae_model *m, const ae_enc_req *enc, int max_len, int batch,
                                ae_task_progress_fn progress, void *ud, ae_task_scores *out) {
    req_plan p;
    batcher b;
    int *bstart = NULL, n_batches = 0, n_items = out->n_items;
    extent most;
    memset(&b, 0, sizeof b);
    b.m = m;
    ae_status st = plan_init(&p, enc, out, max_len);
    if (st == AE_OK) st = ae_paged_layout_init(&b.lo, m, AE_BATCH_PAGE_POSITIONS);
    if (st == AE_OK) st = plan_batches(&p, &b.lo, out, batch, &bstart, &n_batches, &most);
    if (st == AE_OK) st = batcher_alloc(&b, &most);
    for (int bi = 0; bi < n_batches && st == AE_OK; bi++) {
        int i0 = bstart[bi], i1 = bstart[bi + 1], k0 = out->first[i0], k1 = out->first[i1];
        b.next_page = 0;
        st = run_prefixes(&b, &p, k0, k1);
        if (st == AE_OK) st = run_tails(&b, &p, enc, k0, k1, out);
        for (int i = i0; i < i1 && st == AE_OK; i++)
            for (int k = out->first[i]; k < out->first[i + 1]; k++)
                out->truncated[i] |= (unsigned char)p.v[k].truncated;
        if (progress && st == AE_OK) progress(ud, i1, n_items);
    }
    batcher_free(&b);
    free(bstart);
    plan_free(&p);
    return st;
}
