// Requests of each evaluated document, as lm-eval's ConfigurableTask.fewshot_context and
// construct_requests build them (plain text, no chat template):
//   context  = description + Σ over shots (q_s + target_delimiter + a_s + fewshot_delimiter) + q
//   requests = (context, target_delimiter + choice) per choice           multiple choice
//              (context, target)                                          loglikelihood
//              (Σ shots + choice_i, target_delimiter + target) per choice multiple input
// with target_delimiter " " and fewshot_delimiter "\n\n" (every task here keeps the defaults).
// Shots are drawn by lm-eval's ContextSampler: one random.Random(seed) per task, sample(pool, k)
// per document in order, k = shots + 1 and the evaluated document dropped when the task has no
// test split (lm-eval: fewshot_split == test_split, both null). A first_n task (MMLU) takes
// the first K examples of its few-shot split, in order, for every document.
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/tasks_internal.h"

// ---- CPython's Mersenne Twister (Modules/_randommodule.c) ----
#define MT_N 624
#define MT_M 397

static void mt_init(ae_pyrandom *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = MT_N;
}

void ae_pyrandom_seed(ae_pyrandom *r, uint64_t seed) {
    // random.seed(int): init_by_array over the 32-bit words of the integer, least significant
    // first (one word 0 for 0).
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    int klen = key[1] ? 2 : 1;
    mt_init(r, 19650218u);
    int i = 1, j = 0;
    for (int k = MT_N > klen ? MT_N : klen; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
        if (j >= klen) j = 0;
    }
    for (int k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u;
    r->mti = MT_N;
}

static uint32_t mt_next(ae_pyrandom *r) {
    static const uint32_t mag01[2] = {0u, 0x9908b0dfu};
    uint32_t y;
    if (r->mti >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 1u];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
        }
        y = (r->mt[MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
        r->mti = 0;
    }
    y = r->mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

uint32_t ae_pyrandom_getrandbits(ae_pyrandom *r, int k) { return mt_next(r) >> (32 - k); }

uint32_t ae_pyrandom_randbelow(ae_pyrandom *r, uint32_t n) {
    int k = 0; // n.bit_length()
    while (k < 32 && (n >> k)) k++;
    uint32_t x = ae_pyrandom_getrandbits(r, k);
    while (x >= n) x = ae_pyrandom_getrandbits(r, k);
    return x;
}

ae_status ae_pyrandom_sample(ae_pyrandom *r, int n, int k, int *out) {
    if (k < 0 || k > n) return ae_errorf(AE_ERR_ARG, "sample of %d from %d", k, n);
    long setsize = 21;
    if (k > 5) { // setsize += 4 ** ceil(log(3k, 4)); 3k is never a power of 4
        long p = 1;
        while (p < 3L * k) p *= 4;
        setsize += p;
    }
    if (n <= setsize) {
        int *pool = ae_malloc(sizeof(int) * (size_t)(n ? n : 1));
        if (!pool) return AE_ERR_NOMEM;
        for (int i = 0; i < n; i++) pool[i] = i;
        for (int i = 0; i < k; i++) {
            int j = (int)ae_pyrandom_randbelow(r, (uint32_t)(n - i));
            out[i] = pool[j];
            pool[j] = pool[n - i - 1];
        }
        free(pool);
        return AE_OK;
    }
    for (int i = 0; i < k; i++) { // a set of the selected indices; k is small here
        int j, dup;
        do {
            j = (int)ae_pyrandom_randbelow(r, (uint32_t)n);
            dup = 0;
            for (int q = 0; q < i; q++) dup |= out[q] == j;
        } while (dup);
        out[i] = j;
    }
    return AE_OK;
}

// ---- requests ----
static const char *shot_q(const ae_task_def *d, const ae_task_doc *x) {
    return d->kind == AE_TASK_MULTI_INPUT ? x->choices[x->gold] : x->text;
}
static const char *shot_a(const ae_task_def *d, const ae_task_doc *x) {
    return d->kind == AE_TASK_MC ? x->choices[x->gold] : x->target;
}

static ae_status build_item(const ae_task *t, const ae_task_doc *x, const char *prefix, ae_task_item *it) {
    const ae_task_def *d = t->def;
    int n = d->kind == AE_TASK_LL ? 1 : x->n_choices;
    it->n = n;
    it->gold = x->gold;
    it->ctx = ae_calloc((size_t)n, sizeof *it->ctx);
    it->cont = ae_calloc((size_t)n, sizeof *it->cont);
    it->len = ae_calloc((size_t)n, sizeof *it->len);
    if (!it->ctx || !it->cont || !it->len) return AE_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const char *choice = d->kind == AE_TASK_LL ? x->target : x->choices[i];
        if (d->kind == AE_TASK_MULTI_INPUT) {
            it->ctx[i] = ae_strfmt("%s%s", prefix, choice);
            it->cont[i] = ae_strfmt(" %s", x->target);
        } else {
            it->ctx[i] = ae_strfmt("%s%s", prefix, x->text);
            it->cont[i] = d->kind == AE_TASK_LL ? ae_strdup(x->target) : ae_strfmt(" %s", choice);
        }
        it->len[i] = ae_py_len(choice);
        if (!it->ctx[i] || !it->cont[i]) return AE_ERR_NOMEM;
    }
    return AE_OK;
}

ae_status ae_task_build(const ae_task *t, int shots, int limit, uint64_t seed,
                        ae_task_item **items, int *n_items) {
    *items = NULL;
    *n_items = 0;
    const ae_task_split *ev = &t->split[t->eval_split];
    int n = limit > 0 && limit < ev->n ? limit : ev->n;
    const ae_task_split *pool = NULL;
    int draws = 0, same = 0;
    if (shots > 0) {
        if (t->fewshot_split < 0 && t->def->fewshot_first_n) {
            char names[512];
            ae_task_split_names(t->def, AE_SPLIT_TRAIN, names, sizeof names);
            return ae_errorf(AE_ERR_ARG, "%s: --shots %d: the task draws its shots from its dev split: no such "
                             "file (looked for %s in its folder)", t->def->name, shots, names);
        }
        if (t->fewshot_split < 0)
            return ae_errorf(AE_ERR_ARG, "%s: --shots %d: the task has no examples to draw shots from",
                             t->def->name, shots);
        pool = &t->split[t->fewshot_split];
        draws = shots + t->fewshot_extra;
        same = t->fewshot_split == t->eval_split;
        if (draws > pool->n)
            return ae_errorf(AE_ERR_ARG, "%s: --shots %d needs %d examples but %s has %d", t->def->name,
                             shots, draws, pool->path, pool->n);
    }
    ae_task_item *it = ae_calloc((size_t)n, sizeof *it);
    int *idx = ae_malloc(sizeof(int) * (size_t)(draws + 1));
    char *desc = ae_task_description(t->def);
    if (!it || !idx || !desc) {
        free(it);
        free(idx);
        free(desc);
        return AE_ERR_NOMEM;
    }
    ae_pyrandom rng;
    ae_pyrandom_seed(&rng, seed);
    ae_status st = AE_OK;
    for (int i = 0; i < n && st == AE_OK; i++) {
        ae_sbuf pre = {0};
        ae_sbuf_adds(&pre, desc);
        if (shots > 0) {
            if (t->def->fewshot_first_n) // lm-eval's FirstNSampler: pool[:shots]
                for (int s = 0; s < draws; s++) idx[s] = s;
            else
                st = ae_pyrandom_sample(&rng, pool->n, draws, idx);
            int kept = 0;
            for (int s = 0; st == AE_OK && s < draws && kept < shots; s++) {
                if (t->fewshot_extra && same && idx[s] == i) continue; // rm_eval_doc
                const ae_task_doc *x = &pool->docs[idx[s]];
                ae_sbuf_adds(&pre, shot_q(t->def, x));
                ae_sbuf_adds(&pre, " ");
                ae_sbuf_adds(&pre, shot_a(t->def, x));
                ae_sbuf_adds(&pre, "\n\n");
                kept++;
            }
        }
        char *prefix = ae_sbuf_take(&pre);
        if (st == AE_OK && !prefix) st = AE_ERR_NOMEM;
        if (st == AE_OK) st = build_item(t, &ev->docs[i], prefix, &it[i]);
        it[i].doc = i;
        free(prefix);
    }
    free(idx);
    free(desc);
    if (st != AE_OK) {
        ae_task_items_free(it, n);
        return st;
    }
    *items = it;
    *n_items = n;
    return AE_OK;
}

void ae_task_items_free(ae_task_item *items, int n) {
    if (!items) return;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < items[i].n; j++) {
            if (items[i].ctx) free(items[i].ctx[j]);
            if (items[i].cont) free(items[i].cont[j]);
        }
        free(items[i].ctx);
        free(items[i].cont);
        free(items[i].len);
    }
    free(items);
}
