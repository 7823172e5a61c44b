// Data parallelism of the distillation loop: see distill_dp.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/sha256.h"
#include "dist/comm.h"
#include "train/distill_dp.h"

int ae_dp_is_root(const ae_run *r) { return ae_comm_rank(r->o->comm) == 0; }

int ae_dp_owns_micro(const ae_run *r, int a) {
    return a % ae_comm_size(r->o->comm) == ae_comm_rank(r->o->comm);
}

// The digest of what every rank must agree on: the options that decide a step, the student's
// parameters (names, sizes, which train) and the data (size, tokenizer, ids sampled along it).
static void run_digest(const ae_run *r, uint8_t out[32]) {
    const ae_distill_opts *o = r->o;
    ae_sha256_ctx c;
    char buf[512];
    ae_sha256_init(&c);
    int n = snprintf(buf, sizeof buf, "ctx %d batch %d accum %d tokens %lld %lld lr %a %a warm %a "
                     "minlr %a wd %a clip %a norm %d block %a tau %a cos %a all %d optim8 %d seed %llu",
                     o->ctx, o->batch, o->accum, (long long)o->stage_tokens[0],
                     (long long)o->stage_tokens[1], o->lr[0], o->lr[1], o->warmup_frac,
                     o->min_lr_ratio, o->weight_decay, o->clip, o->s1_normalized, o->s1_block, o->tau,
                     o->cos_weight, o->train_all, o->optim_8bit, (unsigned long long)o->seed);
    ae_sha256_update(&c, buf, (size_t)n);
    for (int i = 0; i < r->np; i++) {
        n = snprintf(buf, sizeof buf, "|%s %lld %d %d", r->sp[i].name, (long long)r->sp[i].numel,
                     (int)r->sp[i].t.dtype, ae_run_param_saved(r, i));
        ae_sha256_update(&c, buf, (size_t)n);
    }
    const ae_tokfile *f = r->loader.f;
    n = snprintf(buf, sizeof buf, "|data %llu %u", (unsigned long long)f->n_tokens, f->vocab_size);
    ae_sha256_update(&c, buf, (size_t)n);
    ae_sha256_update(&c, f->tokenizer_hash, sizeof f->tokenizer_hash);
    for (uint64_t k = 0; k < 4096 && f->n_tokens; k++) // ids spread over the whole file
        ae_sha256_update(&c, &f->ids[(f->n_tokens - 1) * k / 4095], sizeof f->ids[0]);
    ae_sha256_final(&c, out);
}

// The values of the parameters idx[0..k) (indices into r->sp) into every rank, as one grouped
// broadcast: each from its owner (sharded states) or, with from_owner 0, from rank 0.
static ae_status broadcast_params(ae_run *r, const int *idx, int k, int from_owner) {
    size_t m = (size_t)(k ? k : 1);
    ae_ptr *xs = ae_calloc(m, sizeof *xs);
    size_t *ns = ae_calloc(m, sizeof *ns);
    int *roots = ae_calloc(m, sizeof *roots);
    ae_status st = xs && ns && roots ? AE_OK
                   : ae_errorf(AE_ERR_NOMEM, "out of memory for the broadcast of %d tensors", k);
    for (int j = 0; j < k && st == AE_OK; j++) {
        xs[j] = r->sp[idx[j]].t;
        ns[j] = (size_t)r->sp[idx[j]].numel;
        roots[j] = from_owner ? r->owner[idx[j]] : 0;
    }
    if (st == AE_OK) st = ae_comm_broadcast_many(r->o->comm, xs, ns, roots, k);
    free(xs);
    free(ns);
    free(roots);
    return st;
}

// Rank 0's values of every parameter the run trains, into every rank.
static ae_status broadcast_start(ae_run *r) {
    int *idx = ae_calloc((size_t)(r->np ? r->np : 1), sizeof *idx), k = 0;
    if (!idx) return ae_errorf(AE_ERR_NOMEM, "out of memory for the broadcast of %d tensors", r->np);
    for (int i = 0; i < r->np; i++)
        if (ae_run_param_saved(r, i)) idx[k++] = i;
    ae_status st = broadcast_params(r, idx, k, 0);
    free(idx);
    return st;
}

ae_status ae_dp_check_accum(int n, int batch, int accum) {
    if (n <= 1 || accum % n == 0) return AE_OK;
    char why[200];
    snprintf(why, sizeof why, "%d ranks need --accum to be a multiple of %d (it is %d): each rank "
             "runs accum/%d of a step's micro-batches of --batch %d", n, n, accum, n, batch);
    int64_t seqs = (int64_t)batch * accum;
    if (seqs % n == 0) // the largest b ≤ --batch that works (b = 1 always does)
        for (int b = batch; b >= 1; b--)
            if (seqs % b == 0 && seqs / b % n == 0)
                return ae_errorf(AE_ERR_ARG, "%s; --batch %d --accum %lld makes the same %lld "
                                 "sequences per step", why, b, (long long)(seqs / b), (long long)seqs);
    int up = (accum / n + 1) * n;
    return ae_errorf(AE_ERR_ARG, "%s; e.g. --accum %d (%lld sequences per step instead of %lld)", why,
                     up, (long long)batch * up, (long long)seqs);
}

ae_status ae_dp_start(ae_run *r, int resumed) {
    ae_comm *c = r->o->comm;
    if (ae_comm_size(c) <= 1) return AE_OK;
    AE_TRY(ae_dp_check_accum(ae_comm_size(c), r->o->batch, r->o->accum));
    uint8_t d[32];
    AE_TRY(ae_dist_exe_digest(d)); // read once per process: convert's early check already did
    AE_TRY(ae_comm_check_same(c, d, "binary", "start every rank with the same attnedit build"));
    run_digest(r, d);
    AE_TRY(ae_comm_check_same(c, d, "run (options, teacher and student shapes, data file)",
                              "start every rank with the same command, teacher and data"));
    ae_comm_set_where(c, "start (rank 0's parameters to every rank)");
    return resumed ? AE_OK : broadcast_start(r);
}

// The failed rank of a step from the summed flags: fail[0] = how many failed, fail[1] = the
// sum of (rank + 1) over them.
static ae_status other_failed(const ae_run *r, double nfail, double ranks, const char *what) {
    if (nfail == 1)
        return ae_errorf(AE_ERR_ARG, "rank %d failed %s (its message is above); this rank stopped too",
                         (int)ranks - 1, what);
    return ae_errorf(AE_ERR_ARG, "%d ranks failed %s (their messages are above); this rank stopped too",
                     (int)nfail, what);
}

// Starts the sum of the gradients of stage_params[j] for the j of layer l (l = -1: the tensors
// outside the layers) not started yet, as one bucket.
static ae_status start_bucket(ae_run *r, int l) {
    int k = 0;
    ae_ptr *xs = ae_calloc((size_t)(r->nstage ? r->nstage : 1), sizeof *xs);
    size_t *ns = ae_calloc((size_t)(r->nstage ? r->nstage : 1), sizeof *ns);
    if (!xs || !ns) {
        free(xs), free(ns);
        return AE_ERR_NOMEM;
    }
    for (int j = 0; j < r->nstage; j++) {
        int i = r->stage_params[j];
        if (r->started[j] || r->layer[i] != l) continue;
        r->started[j] = 1;
        xs[k] = r->gp[i].t;
        ns[k++] = (size_t)r->gp[i].numel;
    }
    ae_status st = k ? ae_comm_allreduce_start(r->o->comm, xs, ns, k) : AE_OK;
    free(xs);
    free(ns);
    return st;
}

ae_status ae_dp_layer_done(ae_run *r, int l) {
    if (!r->last_micro || ae_comm_size(r->o->comm) <= 1) return AE_OK;
    return start_bucket(r, l);
}

// Every bucket not started during the backward, in the order the backward starts them, then
// the wait for all of them.
static ae_status finish_buckets(ae_run *r) {
    int L = r->s->cfg.num_hidden_layers;
    ae_status st = AE_OK;
    for (int t = 0; t < L && st == AE_OK; t++) st = start_bucket(r, r->stage == 0 ? t : L - 1 - t);
    if (st == AE_OK) st = start_bucket(r, -1);
    ae_status ws = ae_comm_wait(r->o->comm);
    memset(r->started, 0, (size_t)r->np);
    return st != AE_OK ? st : ws;
}

ae_status ae_dp_reduce_step(ae_run *r, ae_status st, double *ll, double *kd, double *cosl, int *agree) {
    ae_comm *c = r->o->comm;
    r->last_micro = 0;
    if (ae_comm_size(c) <= 1) return st;
    char where[64];
    snprintf(where, sizeof where, "stage %d, step %lld", r->stage + 1, (long long)r->step + 1);
    ae_comm_set_where(c, where);
    ae_status cs = finish_buckets(r); // also on a rank that failed: the same collectives
    int L = r->s->cfg.num_hidden_layers, n = L + 5;
    double *v = ae_calloc((size_t)n, sizeof(double)); // fail, ranks, ll (L), kd, cos, agree
    if (!v) return AE_ERR_NOMEM;
    v[0] = st != AE_OK;
    v[1] = st != AE_OK ? ae_comm_rank(c) + 1 : 0;
    memcpy(v + 2, ll, sizeof(double) * (size_t)L);
    v[L + 2] = *kd;
    v[L + 3] = *cosl;
    v[L + 4] = *agree;
    if (cs == AE_OK) cs = ae_comm_allreduce_host(c, v, n);
    if (cs == AE_OK && st == AE_OK && v[0] > 0) {
        char what[80];
        snprintf(what, sizeof what, "at %s", where);
        cs = other_failed(r, v[0], v[1], what);
    }
    if (cs == AE_OK && st == AE_OK) {
        memcpy(ll, v + 2, sizeof(double) * (size_t)L);
        *kd = v[L + 2];
        *cosl = v[L + 3];
        *agree = (int)v[L + 4];
    }
    free(v);
    return st != AE_OK ? st : cs;
}

// ---------------------------------------------------------------- sharded states

void ae_dp_plan(ae_run *r) {
    int n = ae_comm_size(r->o->comm);
    r->sharded = n > 1 && r->o->train_all;
    if (!r->sharded) return;
    double total = 0, before = 0;
    for (int i = 0; i < r->np; i++)
        if (ae_run_param_saved(r, i)) total += (double)r->sp[i].numel;
    for (int i = 0; i < r->np; i++) { // contiguous shares of about total/n values each
        if (!ae_run_param_saved(r, i)) continue;
        int k = (int)((before + 0.5 * (double)r->sp[i].numel) * n / total);
        r->owner[i] = k < n ? k : n - 1;
        before += (double)r->sp[i].numel;
    }
}

static ae_status norm_sum(void *ctx, double *sumsq) {
    ae_run *r = ctx;
    ae_comm_set_where(r->o->comm, "the gradient norm");
    return ae_comm_allreduce_host(r->o->comm, sumsq, 1);
}

void ae_dp_optimizer_hooks(ae_run *r) {
    if (!r->sharded) return;
    r->opt.norm_sum = norm_sum;
    r->opt.norm_ctx = r;
}

ae_status ae_dp_after_update(ae_run *r) {
    if (!r->sharded) return AE_OK;
    ae_comm *c = r->o->comm;
    double bad = r->opt.nonfinite >= 0;
    ae_comm_set_where(c, "the update");
    AE_TRY(ae_comm_allreduce_host(c, &bad, 1));
    if (bad > 0 || r->opt.nonfinite != -1) {
        if (r->opt.nonfinite == -1) r->opt.nonfinite = -2;
        return AE_OK; // the caller stops with the message
    }
    return broadcast_params(r, r->stage_params, r->nstage, 1); // the owners' new values to all
}

ae_status ae_dp_fetch(const ae_run *r, ae_ptr x, size_t n, int owner) {
    ae_comm_set_where(r->o->comm, "a checkpoint (rank 0 gathers the sharded states)");
    return ae_comm_recv(r->o->comm, x, n, owner);
}

ae_status ae_dp_send(const ae_run *r, ae_ptr x, size_t n) {
    ae_comm_set_where(r->o->comm, "a checkpoint (rank 0 gathers the sharded states)");
    return ae_comm_send(r->o->comm, x, n, 0);
}

ae_status ae_dp_agree(ae_run *r, ae_status st, const char *what) {
    ae_comm *c = r->o->comm;
    if (ae_comm_size(c) <= 1) return st;
    int root = ae_comm_rank(c) == 0;
    double v[2] = {root && st != AE_OK, root && st != AE_OK ? 1 : 0};
    ae_comm_set_where(c, what);
    ae_status cs = ae_comm_allreduce_host(c, v, 2);
    if (root) return st;
    AE_TRY(cs);
    return v[0] > 0 ? other_failed(r, v[0], v[1], what) : AE_OK;
}
