// The serving engine: scheduler thread, batch building, sampling and request outputs
// (serve/engine.h).
#include "serve/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/logsumexp.h"
#include "core/mem.h"
#include "model/paged.h"
#include "serve/kv_pool.h"
#include "serve/text.h"

typedef struct ae_seq {
    ae_req *r;
    ae_seq_pages pages;
    int32_t *tokens;          // prompt then generated ids
    int n_tokens, n_cached;   // ids known, ids whose K/V are in the cache
    ae_sampler smp;
    ae_decode_stream ds;
    size_t visible;           // length of gen that may be shown
    ae_finish finish;         // decided during a step, applied under the lock
    // this step
    int row0, n_rows, out0, n_outrows, sample;
} ae_seq;

struct ae_engine {
    const ae_model *m;
    const ae_tokenizer *tok;
    ae_engine_opts o;
    ae_kv_pool pool;
    pthread_mutex_t mu;
    pthread_cond_t work, stepped;
    pthread_t thread;
    int stop, started, paused;
    ae_req *wait_head, *wait_tail;
    int n_waiting;
    ae_seq **run;             // (max_seqs)
    int n_run;
    ae_seq **batch;           // sequences of this step
    int n_batch;
    ae_paged_run *runs;       // (max_seqs) this step's rows per sequence, for attention_paged
    // host arrays of one step, (max_batch_tokens)
    int32_t *ids, *pos, *seqi, *slot[AE_PG_COUNT];
    int *out_rows;
    float *logits_host;       // (logits_cap, V) rows downloaded this step (grown on demand)
    size_t logits_cap;
    int32_t *best;
    // the step's device tables (ids, pos, seq, slot[g], table[g]: step_tables), packed on the
    // host and uploaded in one copy into a device array kept from step to step (both grown on
    // demand); the logits rows and their argmax, kept too: a step allocates nothing
    int32_t *tab_host;        // (tab_cap)
    ae_ptr tab_dev;           // (tab_cap) I32
    size_t tab_cap;
    ae_ptr logits_dev;        // (logits_dev_rows, V) F32
    size_t logits_dev_rows;
    ae_ptr best_dev;          // (max_batch_tokens) I32
    // sampling on the device (sample_rows): each logits row's parameters of this step, packed
    // into the step's tables (params_dev points there); host_sampling (AE_SERVE_HOST_SAMPLING=1)
    // downloads sampled rows and samples them on the host instead, as before the op existed
    ae_sample_param *sp_host; // (max_batch_tokens)
    ae_ptr params_dev;        // (n_out) ae_sample_param as 4 I32 words, in tab_dev; null: none
    int host_sampling;
    // steps recorded as backend graphs (model/paged.h): [0] steps of one row per sequence
    // (decode), [1] the others (prefill chunks); which ones: graph_mode (AE_SERVE_GRAPHS)
    int graph_mode;           // 0: none; 1: decode steps; 2: every step
    ae_graph *graph[2];
    int64_t graph_steps, graph_updated, graph_instantiated; // ae_engine_stats (apply)
    // stats
    int64_t requests_done, prompt_tokens, gen_tokens, steps;
    int64_t prefix_hit_tokens, prefix_computed_tokens;
    char prefix_state[160];   // ae_engine_stats.prefix_cache
    double rate_t0, rate;
    int64_t rate_n0;
    // step phases (engine.h, ae_engine_phase): the scheduler thread stamps the end of each phase
    // (phase_mark); this step's seconds sit in cur until count_step adds them to the counters
    // under the lock, so that ae_engine_get_stats reads whole steps only
    double t_mark;            // the last stamp
    double cur[AE_PHASE_COUNT];
    int step_rows, step_prefill_rows; // this step's batch rows, the prefill ones among them
    double phase_s[AE_PHASE_COUNT], step_s, wait_s, decode_step_s;
    double idle_from;         // > 0: the scheduler waits for work since then (not in wait_s yet)
    int64_t rows, decode_steps, decode_tokens;
};

const char *ae_finish_name(ae_finish f) {
    switch (f) {
    case AE_FINISH_STOP: return "stop";
    case AE_FINISH_LENGTH: return "length";
    case AE_FINISH_CANCELLED: return "cancelled";
    case AE_FINISH_ERROR: return "error";
    default: return "none";
    }
}

const char *ae_engine_phase_name(ae_engine_phase p) {
    static const char *const names[AE_PHASE_COUNT] = {"admit", "tables", "forward", "sync",
                                                      "sample", "lock", "apply"};
    return p >= 0 && p < AE_PHASE_COUNT ? names[p] : "none";
}

// The time since the last stamp goes to phase p of this step (scheduler thread only).
static void phase_mark(ae_engine *e, ae_engine_phase p) {
    double t = ae_time_now();
    e->cur[p] += t - e->t_mark;
    e->t_mark = t;
}

void ae_engine_lock(ae_engine *e) { pthread_mutex_lock(&e->mu); }
void ae_engine_unlock(ae_engine *e) { pthread_mutex_unlock(&e->mu); }

static void req_free(ae_req *r) {
    free(r->prompt);
    for (int i = 0; i < r->p.n_stop; i++) free(r->p.stop[i]);
    free(r->text);
    free(r->out_ids);
    free(r->out_lp);
    free(r->prompt_lp);
    free(r->gen);
    free(r);
}

ae_req *ae_req_new(int32_t *prompt, int n, const ae_req_params *p) {
    ae_req *r = ae_calloc(1, sizeof *r);
    if (!r) {
        free(prompt);
        for (int i = 0; i < p->n_stop; i++) free(p->stop[i]);
        return NULL;
    }
    r->prompt = prompt;
    r->n_prompt = n;
    r->p = *p;
    r->refs = 1;
    return r;
}

static void unref(ae_req *r) {
    if (--r->refs == 0) req_free(r);
}

void ae_engine_release_locked(ae_engine *e, ae_req *r) {
    (void)e;
    unref(r);
}

void ae_engine_cancel_locked(ae_engine *e, ae_req *r) {
    if (r->finish != AE_FINISH_NONE || r->cancelled) return;
    r->cancelled = 1;
    pthread_cond_signal(&e->work);
}

void ae_engine_wait_locked(ae_engine *e, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&e->stepped, &e->mu, &ts);
}

static void finish_req(ae_engine *e, ae_req *r, ae_finish f) {
    r->finish = f;
    r->t_done = ae_time_now();
    if (f == AE_FINISH_STOP || f == AE_FINISH_LENGTH) e->requests_done++;
    unref(r); // the engine's reference
}

ae_status ae_engine_submit(ae_engine *e, ae_req *r) {
    const ae_req_params *p = &r->p;
    if (r->n_prompt < 1) return ae_errorf(AE_ERR_ARG, "the prompt is empty");
    if (p->max_tokens < 1) return ae_errorf(AE_ERR_ARG, "max_tokens must be >= 1");
    long len = (long)r->n_prompt + p->max_tokens;
    if (len > e->o.max_model_len)
        return ae_errorf(AE_ERR_ARG,
                         "this model's maximum context length is %d tokens; the prompt has %d "
                         "and max_tokens is %d",
                         e->o.max_model_len, r->n_prompt, p->max_tokens);
    if (ae_kv_pool_pages_for(&e->pool, (int)len) > e->pool.n_pages)
        return ae_errorf(AE_ERR_ARG, "the request needs more KV cache (%d pages) than the server "
                         "has (%d pages)", ae_kv_pool_pages_for(&e->pool, (int)len), e->pool.n_pages);
    if (p->n_stop && !e->tok)
        return ae_errorf(AE_ERR_ARG, "stop strings need a tokenizer (this server has none)");
    int V = e->m->cfg.vocab_size;
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= V)
            return ae_errorf(AE_ERR_ARG, "prompt token %d at index %d is out of range [0, %d)",
                             r->prompt[i], i, V);
    ae_sampler tmp;
    AE_TRY(ae_sampler_init(&tmp, &p->sp, 1)); // validates the parameters
    ae_sampler_free(&tmp);
    r->out_ids = ae_malloc(sizeof(int32_t) * (size_t)p->max_tokens);
    if (p->logprobs >= 0) r->out_lp = ae_calloc((size_t)p->max_tokens, sizeof(ae_tok_lp));
    if (p->echo) r->prompt_lp = ae_calloc((size_t)r->n_prompt, sizeof(ae_tok_lp));
    if (!r->out_ids || (p->logprobs >= 0 && !r->out_lp) || (p->echo && !r->prompt_lp))
        return AE_ERR_NOMEM;
    if (p->echo) r->prompt_scored = 1; // the first prompt token has no logprob
    ae_engine_lock(e);
    if (e->n_waiting >= e->o.max_queue || e->stop) {
        ae_engine_unlock(e);
        return ae_errorf(AE_ERR_UNSUPPORTED, "the server is busy (%d requests waiting)",
                         e->n_waiting);
    }
    r->refs++;
    r->t_submit = ae_time_now();
    r->next = NULL;
    if (e->wait_tail) e->wait_tail->next = r;
    else e->wait_head = r;
    e->wait_tail = r;
    e->n_waiting++;
    pthread_cond_signal(&e->work);
    ae_engine_unlock(e);
    return AE_OK;
}

// ---------------------------------------------------------------------------------------------
// Scheduling (under the lock)

static void seq_free(ae_engine *e, ae_seq *s) {
    ae_kv_pool_release(&e->pool, &s->pages);
    ae_sampler_free(&s->smp);
    free(s->tokens);
    free(s);
}

static void drop_running(ae_engine *e, int i, ae_finish f) {
    ae_seq *s = e->run[i];
    ae_req *r = s->r;
    r->seq = NULL;
    seq_free(e, s);
    e->run[i] = e->run[--e->n_run];
    finish_req(e, r, f);
}

static void reap_cancelled(ae_engine *e) {
    for (int i = e->n_run - 1; i >= 0; i--)
        if (e->run[i]->r->cancelled) drop_running(e, i, AE_FINISH_CANCELLED);
    ae_req **pp = &e->wait_head, *prev = NULL;
    while (*pp) {
        ae_req *r = *pp;
        if (r->cancelled) {
            *pp = r->next;
            e->n_waiting--;
            finish_req(e, r, AE_FINISH_CANCELLED);
        } else {
            prev = r;
            pp = &r->next;
        }
    }
    e->wait_tail = prev;
}

static void admit(ae_engine *e) {
    while (e->wait_head && e->n_run < e->o.max_seqs) {
        ae_req *r = e->wait_head;
        ae_seq *s = ae_calloc(1, sizeof *s);
        int len = r->n_prompt + r->p.max_tokens;
        if (s) s->tokens = ae_malloc(sizeof(int32_t) * (size_t)len);
        int ok = s && s->tokens && ae_sampler_init(&s->smp, &r->p.sp, e->m->cfg.vocab_size) == AE_OK;
        int cached = 0; // echo scores every prompt position: it computes them all
        if (ok && !(r->p.echo ? ae_kv_pool_admit(&e->pool, &s->pages, len)
                              : ae_kv_pool_admit_prefix(&e->pool, &s->pages, len, r->prompt,
                                                        r->n_prompt, &cached))) {
            ae_sampler_free(&s->smp);
            free(s->tokens);
            free(s);
            return; // not enough pages: wait for running sequences to finish (arrival order)
        }
        e->wait_head = r->next;
        if (!e->wait_head) e->wait_tail = NULL;
        e->n_waiting--;
        if (!ok) {
            if (s) {
                ae_sampler_free(&s->smp);
                free(s->tokens);
                free(s);
            }
            snprintf(r->error, sizeof r->error, "out of memory admitting the request");
            finish_req(e, r, AE_FINISH_ERROR);
            continue;
        }
        memcpy(s->tokens, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
        s->n_tokens = r->n_prompt;
        s->n_cached = cached; // the attached blocks' positions: prefill starts after them
        s->r = r;
        r->seq = s;
        e->run[e->n_run++] = s;
        e->prompt_tokens += r->n_prompt;
        e->prefix_hit_tokens += cached;
        e->prefix_computed_tokens += r->n_prompt - cached;
    }
}

// Picks this step's rows: decode tokens first, then prefill chunks. Takes the pages they need.
// Returns the number of rows.
static int build_batch(ae_engine *e) {
    int N = 0, B = e->o.max_batch_tokens, n_out = 0;
    e->n_batch = 0;
    e->step_prefill_rows = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < e->n_run && N < B; i++) {
            ae_seq *s = e->run[i];
            ae_req *r = s->r;
            int prefill = s->n_cached < r->n_prompt;
            if (prefill != pass) continue;
            int n = s->n_tokens - s->n_cached;
            if (n > B - N) n = B - N;
            int pos0 = s->n_cached, W = e->pool.lo.window;
            if (ae_kv_pool_grow(&e->pool, &s->pages, pos0 + n, W > 0 ? pos0 - W + 1 : 0) != AE_OK) {
                snprintf(r->error, sizeof r->error, "%s", ae_last_error());
                s->finish = AE_FINISH_ERROR;
                continue;
            }
            s->row0 = N;
            s->n_rows = n;
            s->sample = pos0 + n == s->n_tokens; // the last row predicts a new token
            int echo_rows = r->p.echo && prefill;
            s->out0 = n_out;
            s->n_outrows = echo_rows ? n : s->sample;
            for (int k = 0; k < s->n_outrows; k++) e->out_rows[n_out++] = N + n - s->n_outrows + k;
            for (int k = 0; k < n; k++) {
                int p = pos0 + k;
                e->ids[N + k] = s->tokens[p];
                e->pos[N + k] = p;
                e->seqi[N + k] = e->n_batch;
                for (int g = 0; g < AE_PG_COUNT; g++) // −1: not written (unused, or a shared page)
                    e->slot[g][N + k] = e->pool.lo.page_size[g] && p >= s->pages.shared_end[g]
                                            ? ae_kv_pool_slot(&e->pool, &s->pages, g, p) : -1;
            }
            N += n;
            e->step_prefill_rows += prefill ? n : 0;
            e->batch[e->n_batch++] = s;
        }
    }
    e->step_rows = N;
    return N;
}

// ---------------------------------------------------------------------------------------------
// One step (without the lock: only engine-private state and preallocated request arrays)

// AE_SERVE_GRAPHS: 0 none, 1 (default) the decode steps, all (or 2) every step.
static int graph_mode_from_env(void) {
    const char *v = getenv("AE_SERVE_GRAPHS");
    if (!v || !*v) return 1;
    if (strcmp(v, "all") == 0) return 2;
    int n = atoi(v);
    return n <= 0 ? 0 : n >= 2 ? 2 : 1;
}

// AE_SERVE_HOST_SAMPLING=1: sampled rows are downloaded and sampled on the host
// (ae_sampler_next), the path before sample_rows, kept for A/B measurements and as a fallback.
// The ids are the same on the cpu backend; on cuda they may differ where the kernel's sums and
// the host's differ within a rounding (backend/cuda_sample.cu).
static int host_sampling_from_env(void) {
    const char *v = getenv("AE_SERVE_HOST_SAMPLING");
    return v && atoi(v) > 0;
}

// The handle this step records on, or NULL (op by op): decode steps (one row per sequence) on
// one, the others on another, so that a prefill chunk does not replace the decode step's
// executable graphs. Created on first use.
static ae_graph *step_graph(ae_engine *e, int N) {
    const ae_backend *be = e->m->be;
    int k = N == e->n_batch ? 0 : 1;
    if (e->graph_mode <= k || !be->graph_new || !be->graph_begin) return NULL;
    if (!e->graph[k]) e->graph[k] = be->graph_new(be);
    return e->graph[k];
}

// Device array p of cap elements grown to hold want (x1.5): the old one is freed in stream order.
static ae_status grow_dev(const ae_backend *be, ae_ptr *p, size_t *cap, size_t want, ae_dtype dt,
                          size_t row) {
    if (want <= *cap) return AE_OK;
    size_t n = want + want / 2;
    be->free(be, *p);
    *cap = 0;
    *p = be->alloc(be, n * row, dt);
    if (ae_ptr_is_null(*p)) return ae_errorf(AE_ERR_NOMEM, "engine: out of device memory for a step");
    *cap = n;
    return AE_OK;
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

// The step's tables packed into tab_host (each part at a multiple of 64 elements) and uploaded
// in one copy into tab_dev; pb's device pointers point into it, and params_dev to the first
// n_params rows of sp_host (sample_params). The block tables have a row of
// max_blocks[g] entries per sequence of the step (-1 past its pages).
static ae_status step_tables(ae_engine *e, int N, int n_params, ae_paged_batch *pb) {
    const ae_backend *be = e->m->be;
    size_t nb = (size_t)e->n_batch, off[4 + 2 * AE_PG_COUNT], n = 0;
    for (int k = 0; k < 3; k++) off[k] = n, n += round64((size_t)N); // ids, pos, seq
    size_t off_sp = n; // the logits rows' sampling parameters (4 words a row)
    n += round64(4 * (size_t)n_params);
    for (int g = 0; g < AE_PG_COUNT; g++) {
        if (!e->pool.lo.page_size[g]) continue;
        int mb = 1;
        for (size_t b = 0; b < nb; b++)
            mb = e->batch[b]->pages.n_blocks[g] > mb ? e->batch[b]->pages.n_blocks[g] : mb;
        pb->max_blocks[g] = mb;
        off[3 + 2 * g] = n, n += round64((size_t)N);
        off[4 + 2 * g] = n, n += round64((size_t)mb * nb);
    }
    if (n > e->tab_cap) {
        size_t cap = e->tab_cap;
        e->tab_cap = 0; // until both arrays have grown
        AE_TRY(grow_dev(be, &e->tab_dev, &cap, n, AE_DT_I32, 1));
        int32_t *h = realloc(e->tab_host, sizeof(int32_t) * cap);
        if (!h) return ae_errorf(AE_ERR_NOMEM, "engine: out of host memory for a step");
        e->tab_host = h;
        e->tab_cap = cap;
    }
    int32_t *t = e->tab_host;
    memcpy(t + off[0], e->ids, sizeof(int32_t) * (size_t)N);
    memcpy(t + off[1], e->pos, sizeof(int32_t) * (size_t)N);
    memcpy(t + off[2], e->seqi, sizeof(int32_t) * (size_t)N);
    pb->dev_ids = ae_ptr_at(e->tab_dev, off[0]);
    pb->pos = ae_ptr_at(e->tab_dev, off[1]);
    pb->seq = ae_ptr_at(e->tab_dev, off[2]);
    memcpy(t + off_sp, e->sp_host, sizeof(ae_sample_param) * (size_t)n_params);
    e->params_dev = n_params ? ae_ptr_at(e->tab_dev, off_sp) : ae_ptr_null();
    for (int g = 0; g < AE_PG_COUNT; g++) {
        if (!e->pool.lo.page_size[g]) continue;
        int mb = pb->max_blocks[g];
        int32_t *tab = t + off[4 + 2 * g];
        memcpy(t + off[3 + 2 * g], e->slot[g], sizeof(int32_t) * (size_t)N);
        for (size_t b = 0; b < nb; b++) {
            const ae_seq_pages *sp = &e->batch[b]->pages;
            for (int k = 0; k < mb; k++) tab[b * mb + k] = k < sp->n_blocks[g] ? sp->blocks[g][k] : -1;
        }
        pb->slot[g] = ae_ptr_at(e->tab_dev, off[3 + 2 * g]);
        pb->table[g] = ae_ptr_at(e->tab_dev, off[4 + 2 * g]);
    }
    return be->upload(be, e->tab_dev, t, AE_DT_I32, n);
}

// log softmax value of x[id] and the top-n alternatives.
static void score(const float *x, int V, int32_t id, int n_top, ae_tok_lp *lp) {
    double lse = ae_logsumexp(x, V);
    lp->id = id;
    lp->logprob = (float)(x[id] - lse);
    lp->n_top = 0;
    for (int i = 0; i < V && n_top > 0; i++) { // insertion into a short sorted list
        int k = lp->n_top;
        if (k == n_top && x[i] <= x[lp->top_id[k - 1]]) continue;
        if (k < n_top) lp->n_top++;
        else k--;
        while (k > 0 && x[lp->top_id[k - 1]] < x[i]) {
            lp->top_id[k] = lp->top_id[k - 1];
            k--;
        }
        lp->top_id[k] = i;
    }
    for (int k = 0; k < lp->n_top; k++) lp->top_lp[k] = (float)(x[lp->top_id[k]] - lse);
}

static int append_gen(ae_req *r, const char *txt, size_t n) {
    if (r->gen_len + n + 1 > r->gen_cap) {
        size_t cap = r->gen_cap ? r->gen_cap : 256;
        while (cap < r->gen_len + n + 1) cap *= 2;
        char *g = realloc(r->gen, cap);
        if (!g) return 0;
        r->gen = g;
        r->gen_cap = cap;
    }
    memcpy(r->gen + r->gen_len, txt, n);
    r->gen_len += n;
    r->gen[r->gen_len] = 0;
    return 1;
}

// Takes the new token id of sequence s: decides whether it ends the request, extends the text,
// checks the stop strings and sets s->visible.
static void take_token(ae_engine *e, ae_seq *s, int32_t id) {
    ae_req *r = s->r;
    int eos = e->m->cfg.eos_token_id;
    int is_stop = !r->p.ignore_eos && id == eos;
    for (int i = 0; i < r->p.n_stop_ids; i++) is_stop |= id == r->p.stop_ids[i];
    r->out_ids[r->n_out] = id; // published under the lock (n_out)
    s->tokens[s->n_tokens++] = id;
    int final = is_stop || r->n_out + 1 >= r->p.max_tokens;
    if (!is_stop && e->tok) {
        char *txt = NULL;
        size_t n = 0;
        if (ae_tokenizer_decode_next(e->tok, &s->ds, id, &txt, &n) == AE_OK && n) {
            if (!append_gen(r, txt, n)) s->finish = AE_FINISH_ERROR;
        }
        free(txt);
    }
    if (final && e->tok) {
        char *txt = NULL;
        size_t n = 0;
        if (ae_tokenizer_decode_flush(e->tok, &s->ds, &txt, &n) == AE_OK && n) append_gen(r, txt, n);
        free(txt);
    }
    size_t vis = r->gen_len, hold = 0;
    for (int i = 0; i < r->p.n_stop; i++) {
        char *hit = r->gen ? strstr(r->gen, r->p.stop[i]) : NULL;
        if (hit && (size_t)(hit - r->gen) < vis) {
            vis = (size_t)(hit - r->gen);
            is_stop = 1;
        }
    }
    if (!is_stop && !final)
        for (int i = 0; i < r->p.n_stop; i++) {
            size_t k = ae_text_partial_prefix(r->gen, r->gen_len, r->p.stop[i]);
            hold = k > hold ? k : hold;
        }
    s->visible = vis - hold;
    if (s->finish == AE_FINISH_NONE && (is_stop || final))
        s->finish = is_stop ? AE_FINISH_STOP : AE_FINISH_LENGTH;
}

// This step's sampling parameters of each logits row, in sp_host: temperature 0 (the row's
// argmax) for greedy sequences and for rows that pick no token (echo rows before the last);
// a sampled sequence's last row gets its options and one draw of its generator, the draw
// ae_sampler_next would make. Returns the number of rows sampled on the device (0: none, or
// host_sampling, where the host samples and no row is drawn here).
static int sample_params(ae_engine *e) {
    int n = 0;
    for (int b = 0; b < e->n_batch; b++) {
        ae_seq *s = e->batch[b];
        for (int k = 0; k < s->n_outrows; k++) e->sp_host[s->out0 + k] = (ae_sample_param){0};
        if (!s->sample || s->r->p.sp.greedy || e->host_sampling) continue;
        e->sp_host[s->out0 + s->n_outrows - 1] = ae_sampler_row(&s->smp);
        n++;
    }
    return n;
}

// The step's picks on the device, into best: sample_rows over every logits row when a row
// samples (greedy rows take their argmax in it), else argmax_rows when a row is greedy; then
// the one download of the ids, the step's first device wait.
static ae_status device_picks(ae_engine *e, int n_out, int n_sampled, int need_best) {
    const ae_backend *be = e->m->be;
    int V = e->m->cfg.vocab_size;
    if (n_sampled) be->sample_rows(be, e->best_dev, e->logits_dev, e->params_dev, n_out, V);
    else if (need_best) be->argmax_rows(be, e->best_dev, e->logits_dev, n_out, V);
    else return AE_OK;
    return be->download(be, e->best, AE_DT_I32, e->best_dev, (size_t)n_out);
}

// The step's phases after admit (phase_mark): tables, forward, sync, sample. On the CUDA
// backend the forward only enqueues (no op of the paged forward downloads or syncs): its time is
// the host's launch work (op-by-op launches, or graph capture/update/launch) while the device
// already runs; it contains device time only where a launch blocks on a full launch queue (op by
// op steps of thousands of kernels). The one device wait of the step is the first download
// (sync); a step that reads no logits row (prefill chunks before the prompt's end) waits for
// nothing, and its device time shows up in the next step's sync. On the CPU backend the forward
// computes everything and sync is a copy. Tokens are picked on the device (device_picks); only
// rows that are scored (logprobs, echo) or sampled on the host (host_sampling) are downloaded.
static ae_status run_batch(ae_engine *e, int N) {
    const ae_model *m = e->m;
    const ae_backend *be = m->be;
    int V = m->cfg.vocab_size, n_out = 0, need_host = 0, need_best = 0;
    for (int b = 0; b < e->n_batch; b++) { // logits rows read back; picks on the device
        ae_seq *s = e->batch[b];
        n_out += s->n_outrows;
        const ae_req_params *p = &s->r->p;
        int host_pick = !p->sp.greedy && e->host_sampling;
        if (s->n_outrows && (host_pick || p->logprobs >= 0 || (p->echo && s->n_cached < s->r->n_prompt)))
            need_host = 1;
        need_best |= s->sample && p->sp.greedy;
    }
    int n_sampled = sample_params(e);
    ae_paged_batch pb;
    memset(&pb, 0, sizeof pb);
    pb.N = N;
    pb.n_seq = e->n_batch;
    pb.ids = e->ids;
    pb.runs = e->runs;
    for (int b = 0; b < e->n_batch; b++) { // rows of one sequence: consecutive positions
        const ae_seq *s = e->batch[b];
        if (s->n_rows > 0)
            e->runs[pb.n_runs++] = (ae_paged_run){.first = s->row0, .n = s->n_rows, .seq = b,
                                                  .pos0 = s->n_cached};
    }
    pb.graph = step_graph(e, N);
    ae_status st = step_tables(e, N, n_sampled ? n_out : 0, &pb);
    if (st == AE_OK) st = grow_dev(be, &e->logits_dev, &e->logits_dev_rows, (size_t)n_out,
                                   AE_DT_F32, (size_t)V);
    phase_mark(e, AE_PHASE_TABLES);
    if (st == AE_OK) st = ae_model_forward_paged(m, &e->pool.lo, &pb, e->out_rows, n_out, e->logits_dev);
    phase_mark(e, AE_PHASE_FORWARD);
    if (st == AE_OK && n_out) st = device_picks(e, n_out, n_sampled, need_best);
    if (st == AE_OK && n_out) {
        if (need_host && (size_t)n_out > e->logits_cap) {
            ae_free_aligned(e->logits_host);
            e->logits_cap = 0;
            e->logits_host = ae_alloc_f32((size_t)n_out * V);
            if (!e->logits_host) st = ae_errorf(AE_ERR_NOMEM, "out of host memory for %d logit rows", n_out);
            else e->logits_cap = (size_t)n_out;
        }
        if (st == AE_OK && need_host) // after the ids' download: the copy only, no more waiting
            st = be->download(be, e->logits_host, AE_DT_F32, e->logits_dev, (size_t)n_out * V);
    }
    phase_mark(e, AE_PHASE_SYNC);
    if (st != AE_OK) return st;
    // Sampling and scoring per sequence
    for (int b = 0; b < e->n_batch; b++) {
        ae_seq *s = e->batch[b];
        ae_req *r = s->r;
        const ae_req_params *p = &r->p;
        if (s->finish != AE_FINISH_NONE) continue;
        int pos0 = s->n_cached;
        s->n_cached += s->n_rows;
        if (p->echo && pos0 < r->n_prompt) // row at position q scores prompt token q + 1
            for (int k = 0; k < s->n_outrows; k++) {
                int q = pos0 + s->n_rows - s->n_outrows + k;
                if (q + 1 < r->n_prompt)
                    score(e->logits_host + (size_t)(s->out0 + k) * V, V, r->prompt[q + 1],
                          p->logprobs > 0 ? p->logprobs : 0, &r->prompt_lp[q + 1]);
            }
        if (!s->sample) continue;
        int o = s->out0 + s->n_outrows - 1;
        const float *row = e->logits_host + (size_t)o * V;
        int32_t id = p->sp.greedy || !e->host_sampling ? e->best[o] : ae_sampler_next(&s->smp, row);
        if (p->logprobs >= 0) score(row, V, id, p->logprobs, &r->out_lp[r->n_out]);
        take_token(e, s, id);
    }
    phase_mark(e, AE_PHASE_SAMPLE);
    return AE_OK;
}

// Publishes the step's results (under the lock). Returns the tokens the step generated.
static int64_t apply(ae_engine *e, ae_status st) {
    double now = ae_time_now();
    int64_t new_tokens = 0;
    for (int b = 0; b < e->n_batch; b++) {
        ae_seq *s = e->batch[b];
        ae_req *r = s->r;
        if (st != AE_OK) {
            snprintf(r->error, sizeof r->error, "%s", ae_last_error());
            s->finish = AE_FINISH_ERROR;
        }
        if (st == AE_OK && s->finish != AE_FINISH_ERROR) // the blocks this step filled
            ae_kv_pool_publish(&e->pool, &s->pages, s->tokens, s->n_cached);
        if (r->p.echo) {
            int scored = s->n_cached < r->n_prompt ? s->n_cached : r->n_prompt;
            r->prompt_scored = scored > r->prompt_scored ? scored : r->prompt_scored;
        }
        if (st == AE_OK && s->sample && s->n_tokens > r->n_prompt + r->n_out) {
            r->n_out++;
            new_tokens++;
            if (!r->t_first) r->t_first = now;
            if (s->visible > r->text_len) {
                if (s->visible + 1 > r->text_cap) {
                    size_t cap = r->text_cap ? r->text_cap : 256;
                    while (cap < s->visible + 1) cap *= 2;
                    char *t = realloc(r->text, cap);
                    if (!t) s->finish = AE_FINISH_ERROR;
                    else {
                        r->text = t;
                        r->text_cap = cap;
                    }
                }
                if (r->text_cap >= s->visible + 1) {
                    memcpy(r->text + r->text_len, r->gen + r->text_len, s->visible - r->text_len);
                    r->text_len = s->visible;
                    r->text[r->text_len] = 0;
                }
            }
        }
    }
    e->gen_tokens += new_tokens;
    e->steps++;
    e->graph_steps = e->graph_updated = e->graph_instantiated = 0;
    for (int k = 0; k < 2; k++) {
        ae_graph_stats gs = {0};
        if (e->graph[k] && e->m->be->graph_stats) e->m->be->graph_stats(e->m->be, e->graph[k], &gs);
        e->graph_steps += gs.ran;
        e->graph_updated += gs.updated;
        e->graph_instantiated += gs.instantiated;
    }
    for (int i = e->n_run - 1; i >= 0; i--)
        if (e->run[i]->finish != AE_FINISH_NONE) drop_running(e, i, e->run[i]->finish);
    if (now - e->rate_t0 >= 2.0) {
        e->rate = (double)(e->gen_tokens - e->rate_n0) / (now - e->rate_t0);
        e->rate_t0 = now;
        e->rate_n0 = e->gen_tokens;
    }
    return new_tokens;
}

// Adds the step that started at t0 and ended at the last stamp to the counters (under the
// lock). A step whose batch has no prefill row is a decode step: its tokens over its wall
// seconds are the decode throughput (prefill chunks excluded, which dominate long prompts).
static void count_step(ae_engine *e, double t0, int64_t new_tokens) {
    double wall = e->t_mark - t0;
    for (int p = 0; p < AE_PHASE_COUNT; p++) e->phase_s[p] += e->cur[p];
    e->step_s += wall;
    e->rows += e->step_rows;
    if (e->step_rows > 0 && e->step_prefill_rows == 0) {
        e->decode_steps++;
        e->decode_step_s += wall;
        e->decode_tokens += new_tokens;
    }
}

static void *engine_main(void *arg) {
    ae_engine *e = arg;
    ae_engine_lock(e);
    e->t_mark = ae_time_now();
    while (!e->stop) {
        double t0 = e->t_mark; // the step's start (the end of the last step or of the wait)
        reap_cancelled(e);
        admit(e);
        if (e->n_run == 0 || e->paused) {
            pthread_cond_broadcast(&e->stepped);
            e->idle_from = t0; // the look for work before the wait counts as waiting
            pthread_cond_wait(&e->work, &e->mu);
            double t = ae_time_now();
            e->wait_s += t - t0;
            e->idle_from = 0;
            e->t_mark = t;
            continue;
        }
        memset(e->cur, 0, sizeof e->cur);
        int N = build_batch(e);
        phase_mark(e, AE_PHASE_ADMIT);
        ae_engine_unlock(e);
        ae_status st = N > 0 ? run_batch(e, N) : AE_OK;
        ae_engine_lock(e);
        phase_mark(e, AE_PHASE_LOCK);
        int64_t new_tokens = apply(e, st);
        phase_mark(e, AE_PHASE_APPLY);
        count_step(e, t0, new_tokens);
        pthread_cond_broadcast(&e->stepped);
    }
    while (e->n_run) drop_running(e, e->n_run - 1, AE_FINISH_CANCELLED);
    while (e->wait_head) {
        ae_req *r = e->wait_head;
        e->wait_head = r->next;
        finish_req(e, r, AE_FINISH_CANCELLED);
    }
    e->wait_tail = NULL;
    e->n_waiting = 0;
    pthread_cond_broadcast(&e->stepped);
    ae_engine_unlock(e);
    return NULL;
}

// ---------------------------------------------------------------------------------------------

static void engine_free(ae_engine *e) {
    ae_kv_pool_free(&e->pool);
    free(e->run);
    free(e->batch);
    free(e->runs);
    free(e->ids);
    free(e->pos);
    free(e->seqi);
    for (int g = 0; g < AE_PG_COUNT; g++) free(e->slot[g]);
    free(e->out_rows);
    ae_free_aligned(e->logits_host);
    free(e->best);
    free(e->sp_host);
    const ae_backend *be = e->m->be;
    for (int k = 0; k < 2; k++)
        if (e->graph[k]) be->graph_free(be, e->graph[k]);
    free(e->tab_host);
    be->free(be, e->tab_dev);
    be->free(be, e->logits_dev);
    be->free(be, e->best_dev);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->stepped);
    free(e);
}

// Prefix caching on where the pool supports it; prefix_state says which, or why not.
static void prefix_cache_start(ae_engine *e) {
    if (e->o.no_prefix_cache) {
        snprintf(e->prefix_state, sizeof e->prefix_state, "off (--no-prefix-cache)");
        return;
    }
    ae_status st = ae_kv_pool_enable_prefix(&e->pool);
    if (st == AE_OK)
        snprintf(e->prefix_state, sizeof e->prefix_state, "on (full/latent pages)");
    else
        snprintf(e->prefix_state, sizeof e->prefix_state, "off (%s)", ae_last_error());
}

ae_status ae_engine_start(const ae_model *m, const ae_tokenizer *tok, const ae_engine_opts *o,
                          ae_engine **out) {
    *out = NULL;
    if (o->max_seqs < 1 || o->max_batch_tokens < 1 || o->max_model_len < 2 || o->max_queue < 1 ||
        o->page_positions < 1)
        return ae_errorf(AE_ERR_ARG, "engine: max_seqs %d, max_batch_tokens %d, max_model_len %d, "
                         "max_queue %d, page_positions %d must be positive",
                         o->max_seqs, o->max_batch_tokens, o->max_model_len, o->max_queue,
                         o->page_positions);
    ae_engine *e = ae_calloc(1, sizeof *e);
    if (!e) return AE_ERR_NOMEM;
    e->m = m;
    e->tok = tok;
    e->o = *o;
    if (e->o.max_batch_tokens < e->o.max_seqs) e->o.max_batch_tokens = e->o.max_seqs;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->stepped, NULL);
    ae_status st = ae_kv_pool_init(&e->pool, m, o->cache_bytes, o->page_positions,
                                   e->o.max_batch_tokens);
    if (st != AE_OK) {
        free(e->run);
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->work);
        pthread_cond_destroy(&e->stepped);
        free(e);
        return st;
    }
    prefix_cache_start(e);
    size_t B = (size_t)e->o.max_batch_tokens, S = (size_t)e->o.max_seqs;
    size_t V = (size_t)m->cfg.vocab_size;
    e->run = ae_calloc(S, sizeof *e->run);
    e->batch = ae_calloc(S, sizeof *e->batch);
    e->runs = ae_calloc(S, sizeof *e->runs);
    e->ids = ae_malloc(sizeof(int32_t) * B);
    e->pos = ae_malloc(sizeof(int32_t) * B);
    e->seqi = ae_malloc(sizeof(int32_t) * B);
    int ok = e->run && e->batch && e->runs && e->ids && e->pos && e->seqi;
    for (int g = 0; g < AE_PG_COUNT; g++) ok = ok && (e->slot[g] = ae_malloc(sizeof(int32_t) * B));
    e->out_rows = ae_malloc(sizeof(int) * B);
    e->logits_cap = S < B ? S : B; // one row per sequence; echo chunks grow it
    e->logits_host = ae_alloc_f32(e->logits_cap * V);
    e->best = ae_malloc(sizeof(int32_t) * B);
    e->best_dev = m->be->alloc(m->be, B, AE_DT_I32);
    e->sp_host = ae_calloc(B, sizeof *e->sp_host);
    e->graph_mode = graph_mode_from_env();
    e->host_sampling = host_sampling_from_env();
    if (!ok || !e->out_rows || !e->logits_host || !e->best || ae_ptr_is_null(e->best_dev) ||
        !e->sp_host) {
        engine_free(e);
        return ae_errorf(AE_ERR_NOMEM, "engine: out of memory for a batch of %zu tokens", B);
    }
    e->rate_t0 = ae_time_now();
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        engine_free(e);
        return ae_errorf(AE_ERR_IO, "engine: cannot start the scheduler thread");
    }
    e->started = 1;
    *out = e;
    return AE_OK;
}

void ae_engine_shutdown(ae_engine *e) {
    if (!e || !e->started) return;
    ae_engine_lock(e);
    e->stop = 1;
    pthread_cond_signal(&e->work);
    ae_engine_unlock(e);
    pthread_join(e->thread, NULL);
    e->started = 0;
}

void ae_engine_pause(ae_engine *e, int paused) {
    ae_engine_lock(e);
    e->paused = paused;
    pthread_cond_signal(&e->work);
    ae_engine_unlock(e);
}

void ae_engine_stop(ae_engine *e) {
    if (!e) return;
    ae_engine_shutdown(e);
    engine_free(e);
}

void ae_engine_get_stats(ae_engine *e, ae_engine_stats *s) {
    memset(s, 0, sizeof *s);
    ae_engine_lock(e);
    s->running = e->n_run;
    s->waiting = e->n_waiting;
    s->pages_total = e->pool.n_pages;
    s->pages_free = e->pool.n_free + e->pool.pc.n_evictable;
    s->pages_promised = e->pool.promised;
    s->pages_cached = e->pool.pc.n_published;
    s->pages_held = e->pool.n_held;
    s->prefix_cache = e->prefix_state;
    s->prefix_hit_tokens = e->prefix_hit_tokens;
    s->prefix_computed_tokens = e->prefix_computed_tokens;
    s->prefix_evictions = e->pool.pc.evictions;
    s->page_bytes = ae_kv_pool_page_bytes(&e->pool);
    for (int g = 0; g < AE_PG_COUNT; g++) s->page_size[g] = e->pool.lo.page_size[g];
    s->seqs_of_4k = e->pool.n_pages / ae_kv_pool_pages_for(&e->pool, 4096);
    s->seqs_of_max = e->pool.n_pages / ae_kv_pool_pages_for(&e->pool, e->o.max_model_len);
    s->requests_done = e->requests_done;
    s->prompt_tokens = e->prompt_tokens;
    s->gen_tokens = e->gen_tokens;
    s->steps = e->steps;
    s->graph_steps = e->graph_steps;
    s->graph_updated = e->graph_updated;
    s->graph_instantiated = e->graph_instantiated;
    memcpy(s->phase_s, e->phase_s, sizeof s->phase_s);
    s->step_s = e->step_s;
    double now = ae_time_now();
    s->wait_s = e->wait_s + (e->idle_from > 0 ? now - e->idle_from : 0.0); // the wait so far too
    s->rows = e->rows;
    s->decode_steps = e->decode_steps;
    s->decode_step_s = e->decode_step_s;
    s->decode_tokens = e->decode_tokens;
    s->gen_tok_per_s = now - e->rate_t0 > 10.0 ? 0.0 : e->rate;
    ae_engine_unlock(e);
}

ae_status ae_engine_check_pool(ae_engine *e) {
    ae_engine_lock(e);
    ae_status st = ae_kv_pool_audit(&e->pool);
    ae_engine_unlock(e);
    return st;
}
