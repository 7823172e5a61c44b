// Checkpoints of a distillation run: out/checkpoint/{params.safetensors, state.json}.
// params.safetensors holds every parameter the run trains (F32, flattened, by HF name: the
// attention modules of the replaced layers, or every parameter with --train all; the fp32 master
// values where the model holds bf16) and the AdamW moments of the current stage
// ("adam.m/<name>", "adam.v/<name>"; with --optim-state 8bit the quantised states as they are:
// U8 codes "adam.m8/<name>", "adam.v8/<name>" (of sqrt(v)) and F32 block absmax
// "adam.m8_absmax/<name>", "adam.v8_absmax/<name>", backend/adam8.h). Frozen parameters are the
// student folder's. A new checkpoint is written
// to checkpoint.tmp.<pid>, the previous one moved to checkpoint.old, the new one renamed into
// place and the old one removed; if the process dies in between, checkpoint.old is used.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/killpoint.h"
#include "core/mem.h"
#include "dist/comm.h"
#include "io/config_json.h"
#include "backend/adam8.h"
#include "io/safetensors.h"
#include "train/distill_dp.h"
#include "train/distill_internal.h"
#include "train/run_spec.h"


// A checkpoint never holds Inf or NaN (training stops before one could be saved; this is the
// last guard): name the tensor and write nothing.
static ae_status check_finite(const char *name, const float *x, int64_t n) {
    int64_t bad = ae_f32_first_nonfinite(x, n);
    if (bad >= 0)
        return ae_errorf(AE_ERR_NONFINITE, "'%s' holds a non-finite value (Inf or NaN) at element %lld; "
                         "no checkpoint written", name, (long long)bad);
    return AE_OK;
}

// Host copies made for one write (the writer reads its tensors at finish).
typedef struct {
    float **p;
    int n, cap;
} host_copies;

// A host buffer of n floats kept in hc until the write is finished.
static ae_status host_buffer(host_copies *hc, size_t n, float **out) {
    if (hc->n == hc->cap) {
        int cap = hc->cap ? 2 * hc->cap : 64;
        float **p = realloc(hc->p, sizeof *p * (size_t)cap);
        if (!p) return AE_ERR_NOMEM;
        hc->p = p, hc->cap = cap;
    }
    float *h = ae_alloc_f32(n);
    if (!h) return ae_errorf(AE_ERR_NOMEM, "out of host memory for a checkpoint tensor of %zu values", n);
    hc->p[hc->n++] = h;
    *out = h;
    return AE_OK;
}

// Host F32 view of n values of backend tensor x: x's own memory on the cpu backend, else a
// downloaded copy kept in hc until the write is finished.
static ae_status host_view(const ae_backend *be, ae_ptr x, size_t n, host_copies *hc, float **out) {
    if (be->host_memory && x.dtype == AE_DT_F32) {
        *out = (float *)x.data;
        return AE_OK;
    }
    AE_TRY(host_buffer(hc, n, out));
    return be->download(be, *out, AE_DT_F32, x, n);
}

static void host_copies_free(host_copies *hc) {
    for (int i = 0; i < hc->n; i++) ae_free_aligned(hc->p[i]);
    free(hc->p);
}

// Adds tensor x (n values in backend memory) as F32 under name, refusing Inf/NaN.
static ae_status add_tensor(ae_st_writer *w, const ae_backend *be, host_copies *hc, const char *name,
                            ae_ptr x, int64_t n) {
    float *h = NULL;
    AE_TRY(host_view(be, x, (size_t)n, hc, &h));
    AE_TRY(check_finite(name, h, n));
    int64_t shape[1] = {n};
    return ae_st_writer_add(w, name, AE_DT_F32, 1, shape, h);
}

// The values training updates of parameter i: its fp32 master when it has one, else itself.
static ae_ptr param_values(const ae_run *r, int i) {
    return ae_ptr_is_null(r->master[i]) ? r->sp[i].t : r->master[i];
}

// The F32 moments of trained tensor k (named pname): adam.m/<pname>, adam.v/<pname>.
static ae_status add_moments(ae_st_writer *w, const ae_adamw *o, host_copies *hc, int k,
                             const char *pname) {
    char name[160];
    snprintf(name, sizeof name, "adam.m/%s", pname);
    AE_TRY(add_tensor(w, o->be, hc, name, o->m[k], o->p[k].numel));
    snprintf(name, sizeof name, "adam.v/%s", pname);
    return add_tensor(w, o->be, hc, name, o->v[k], o->p[k].numel);
}

// The 8-bit moments of trained tensor k as they are: the codes of m and of sqrt(v) (U8,
// adam.m8/<pname>, adam.v8/<pname>) and their F32 block absmax (adam.m8_absmax/<pname>,
// adam.v8_absmax/<pname>, ae_q8_blocks(numel) values).
static ae_status add_moments8(ae_st_writer *w, const ae_adamw *o, host_copies *hc, int k,
                              const char *pname) {
    static const char *code_fmt[] = {"adam.m8/%s", "adam.v8/%s"};
    static const char *amax_fmt[] = {"adam.m8_absmax/%s", "adam.v8_absmax/%s"};
    const ae_ptr codes[] = {o->m[k], o->v[k]}, amax[] = {o->ms[k], o->vs[k]};
    int64_t n = o->p[k].numel, shape[1] = {n};
    char name[160];
    for (int i = 0; i < 2; i++) {
        float *h = NULL;
        AE_TRY(host_buffer(hc, ((size_t)n + 3) / 4, &h));
        AE_TRY(ae_adamw_codes_download(o, codes[i], (uint8_t *)h, (size_t)n));
        snprintf(name, sizeof name, code_fmt[i], pname);
        AE_TRY(ae_st_writer_add(w, name, AE_DT_U8, 1, shape, h));
        snprintf(name, sizeof name, amax_fmt[i], pname);
        AE_TRY(add_tensor(w, o->be, hc, name, amax[i], (int64_t)ae_q8_blocks((size_t)n)));
    }
    return AE_OK;
}

// With sharded states: adds under name the n F32 values that rank `owner` keeps (its master or
// a moment of a tensor of its share), fetched from it (train/distill_dp.h).
static ae_status add_fetched(ae_st_writer *w, const ae_run *r, host_copies *hc, const char *name,
                             int64_t n, int owner) {
    const ae_backend *be = r->s->be;
    float *h = NULL;
    AE_TRY(host_buffer(hc, (size_t)n, &h));
    if (be->host_memory) {
        AE_TRY(ae_dp_fetch(r, ae_host_f32(h), (size_t)n, owner));
    } else {
        ae_ptr tmp = be->alloc(be, (size_t)n, AE_DT_F32);
        if (ae_ptr_is_null(tmp))
            return ae_errorf(AE_ERR_NOMEM, "out of %s memory for a checkpoint tensor of %lld values",
                             be->name, (long long)n);
        ae_status st = ae_dp_fetch(r, tmp, (size_t)n, owner);
        if (st == AE_OK) st = be->download(be, h, AE_DT_F32, tmp, (size_t)n);
        be->free(be, tmp);
        AE_TRY(st);
    }
    AE_TRY(check_finite(name, h, n));
    int64_t shape[1] = {n};
    return ae_st_writer_add(w, name, AE_DT_F32, 1, shape, h);
}

// With sharded 8-bit states: the codes (n bytes, U8) and block absmax of one moment that rank
// `owner` keeps, fetched and added under code_name and amax_name (see add_moments8).
static ae_status add_fetched8(ae_st_writer *w, const ae_run *r, host_copies *hc, const char *code_name,
                              const char *amax_name, int64_t n, int owner) {
    const ae_backend *be = r->s->be;
    size_t words = ((size_t)n + 3) / 4; // the codes' buffer, as the optimizer allocates it
    ae_ptr tmp = be->alloc(be, words, AE_DT_F32);
    if (ae_ptr_is_null(tmp))
        return ae_errorf(AE_ERR_NOMEM, "out of %s memory for %lld AdamW state bytes", be->name,
                         (long long)n);
    ae_ptr codes = ae_ptr_make(tmp.data, AE_DT_U8);
    float *h = NULL;
    ae_status st = host_buffer(hc, words, &h);
    if (st == AE_OK) st = ae_dp_fetch(r, codes, (size_t)n, owner);
    if (st == AE_OK) st = ae_adamw_codes_download(&r->opt, codes, (uint8_t *)h, (size_t)n);
    be->free(be, tmp);
    AE_TRY(st);
    int64_t shape[1] = {n};
    AE_TRY(ae_st_writer_add(w, code_name, AE_DT_U8, 1, shape, h));
    return add_fetched(w, r, hc, amax_name, (int64_t)ae_q8_blocks((size_t)n), owner);
}

// 1 when saved parameter i's values are another rank's master (sharded states).
static int master_elsewhere(const ae_run *r, int i) {
    return r->sharded && r->owner[i] != 0 && ae_run_has_master(r, i);
}

// The moments of every tensor trained in this stage: this rank's from its optimizer (k walks
// r->trainable, a subsequence of r->stage_params), the others' fetched (sharded states).
static ae_status write_moments(ae_st_writer *w, const ae_run *r, host_copies *hc) {
    ae_status st = AE_OK;
    for (int j = 0, k = 0; j < r->nstage && st == AE_OK; j++) {
        int i = r->stage_params[j];
        const char *pname = r->sp[i].name;
        if (k < r->ntrain && r->trainable[k] == i) {
            st = r->opt.cfg.state8 ? add_moments8(w, &r->opt, hc, k, pname)
                                   : add_moments(w, &r->opt, hc, k, pname);
            k++;
            continue;
        }
        char name[160], amax[160];
        if (r->opt.cfg.state8) { // the order of ae_ckpt_serve: m codes, m absmax, v codes, v absmax
            snprintf(name, sizeof name, "adam.m8/%s", pname);
            snprintf(amax, sizeof amax, "adam.m8_absmax/%s", pname);
            st = add_fetched8(w, r, hc, name, amax, r->sp[i].numel, r->owner[i]);
            snprintf(name, sizeof name, "adam.v8/%s", pname);
            snprintf(amax, sizeof amax, "adam.v8_absmax/%s", pname);
            if (st == AE_OK) st = add_fetched8(w, r, hc, name, amax, r->sp[i].numel, r->owner[i]);
            continue;
        }
        snprintf(name, sizeof name, "adam.m/%s", pname);
        st = add_fetched(w, r, hc, name, r->sp[i].numel, r->owner[i]);
        snprintf(name, sizeof name, "adam.v/%s", pname);
        if (st == AE_OK) st = add_fetched(w, r, hc, name, r->sp[i].numel, r->owner[i]);
    }
    return st;
}

static ae_status write_params(const ae_run *r, const char *path) {
    const ae_backend *be = r->s->be;
    ae_st_writer *w;
    AE_TRY(ae_st_writer_init(&w));
    host_copies hc = {0};
    ae_status st = AE_OK;
    for (int i = 0; i < r->np && st == AE_OK; i++)
        if (ae_run_param_saved(r, i))
            st = master_elsewhere(r, i) ? add_fetched(w, r, &hc, r->sp[i].name, r->sp[i].numel, r->owner[i])
                                        : add_tensor(w, be, &hc, r->sp[i].name, param_values(r, i),
                                                     r->sp[i].numel);
    if (st == AE_OK) st = write_moments(w, r, &hc);
    if (st == AE_OK) st = ae_st_writer_finish(w, path);
    else ae_st_writer_free(w);
    host_copies_free(&hc);
    return st;
}

static char *state_json(const ae_run *r) {
    cJSON *j = cJSON_CreateObject();
    char buf[32];
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "stage", r->stage);
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    cJSON_AddNumberToObject(j, "opt_step", (double)r->opt.step);
    cJSON *fl = cJSON_AddArrayToObject(j, "final_loss");
    for (int i = 0; i < 2; i++) cJSON_AddItemToArray(fl, cJSON_CreateNumber(r->final_loss[i]));
    snprintf(buf, sizeof buf, "%" PRIu64, r->loader.draws);
    cJSON_AddStringToObject(j, "loader_draws", buf);
    cJSON *rng = cJSON_AddArrayToObject(j, "loader_rng");
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, "%016" PRIx64, r->loader.rng.s[i]);
        cJSON_AddItemToArray(rng, cJSON_CreateString(buf));
    }
    cJSON_AddNumberToObject(j, "ctx", r->o->ctx);
    cJSON_AddNumberToObject(j, "batch", r->o->batch);
    cJSON_AddNumberToObject(j, "accum", r->o->accum);
    cJSON_AddNumberToObject(j, "stage1_tokens", (double)r->o->stage_tokens[0]);
    cJSON_AddNumberToObject(j, "stage2_tokens", (double)r->o->stage_tokens[1]);
    snprintf(buf, sizeof buf, "%" PRIu64, r->o->seed);
    cJSON_AddStringToObject(j, "seed", buf);
    cJSON_AddStringToObject(j, "optim_state", r->opt.cfg.state8 ? "8bit" : "fp32");
    // the gradients' dtype (--grad-dtype): a resume with the other would not continue this run's
    // arithmetic (bf16 gradients round each micro-batch's sum)
    cJSON_AddStringToObject(j, "grad_dtype", r->o->grad_bf16 ? "bf16" : "fp32");
    // where it ran: a resume elsewhere is allowed, but is no longer bit-identical
    cJSON_AddStringToObject(j, "device", r->s->be->device);
    // the steps since the last progress line (cJSON prints doubles so that they read back exactly)
    cJSON *iv = cJSON_AddObjectToObject(j, "interval");
    cJSON_AddNumberToObject(iv, "steps", (double)r->iv.n);
    cJSON_AddNumberToObject(iv, "loss_sum", r->iv.loss_sum);
    cJSON_AddNumberToObject(iv, "cos_sum", r->iv.cos_sum);
    cJSON_AddNumberToObject(iv, "top1", (double)r->iv.top1);
    cJSON *ls = cJSON_AddArrayToObject(iv, "layer_sum");
    for (int l = 0; l < r->s->cfg.num_hidden_layers; l++)
        cJSON_AddItemToArray(ls, cJSON_CreateNumber(r->iv.layer_sum[l]));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static ae_status write_checkpoint(const ae_run *r, const char *dir) {
    char *p = ae_path_join(dir, "params.safetensors");
    if (!p) return AE_ERR_NOMEM;
    ae_status st = write_params(r, p);
    free(p);
    AE_TRY(st);
    ae_kill_point("ckpt-params");
    char *js = state_json(r), *sp = ae_path_join(dir, "state.json");
    ae_atomic_file f;
    st = (js && sp) ? ae_atomic_open(&f, sp) : AE_ERR_NOMEM;
    if (st == AE_OK) st = ae_atomic_write(&f, js, strlen(js));
    if (st == AE_OK) st = ae_atomic_commit(&f);
    else if (js && sp) ae_atomic_abort(&f);
    free(js);
    free(sp);
    return st;
}

static ae_status fill_checkpoint(void *ud, const char *tmp) { return write_checkpoint(ud, tmp); }

ae_status ae_ckpt_serve(const ae_run *r) {
    int me = ae_comm_rank(r->o->comm);
    for (int i = 0; i < r->np; i++)
        if (ae_run_param_saved(r, i) && r->owner[i] == me && ae_run_has_master(r, i))
            AE_TRY(ae_dp_send(r, r->master[i], (size_t)r->sp[i].numel));
    for (int k = 0; k < r->ntrain; k++) { // this rank's share, in r->stage_params' order
        size_t n = (size_t)r->opt.p[k].numel;
        AE_TRY(ae_dp_send(r, r->opt.m[k], n)); // F32 values, or with 8-bit states n code bytes
        if (r->opt.cfg.state8) AE_TRY(ae_dp_send(r, r->opt.ms[k], ae_q8_blocks(n)));
        AE_TRY(ae_dp_send(r, r->opt.v[k], n));
        if (r->opt.cfg.state8) AE_TRY(ae_dp_send(r, r->opt.vs[k], ae_q8_blocks(n)));
    }
    return AE_OK;
}

ae_status ae_ckpt_save(const ae_run *r) {
    char *dir = ae_path_join(r->out_dir, "checkpoint");
    if (!dir) return AE_ERR_NOMEM;
    // on failure the previous checkpoint (checkpoint/ or checkpoint.old/) stays valid
    ae_status st = ae_dir_write_atomic(dir, fill_checkpoint, (void *)r);
    if (st != AE_OK) ae_error_wrap(st, "saving checkpoint");
    free(dir);
    return st;
}

// ---- reading state.json back: every field is checked against the run (conversion.json's
// settings) before anything is used; errors name the file and the field.
typedef struct {
    int stage;
    int64_t step, opt_step;
    uint64_t draws, rng[4];
    double final_loss[2];
    int64_t iv_steps, iv_top1;
    double iv_loss, iv_cos;
    const cJSON *iv_layers; // NULL: checkpoints before the interval was recorded
} ckpt_state;

// Optimizer steps of the stages before `stage` plus `step`: the loader drew batch · accum
// windows per step, and it is never reset between stages.
static uint64_t expected_draws(const ae_distill_opts *o, int stage, int64_t step) {
    int64_t steps = stage < 2 ? step : 0;
    for (int s = 0; s < stage && s < 2; s++) steps += ae_distill_stage_steps(o, s);
    return (uint64_t)steps * (uint64_t)o->batch * (uint64_t)o->accum;
}

// The checkpoint's grad_dtype against the run's (conversion.json train.grad_dtype); checkpoints
// before --grad-dtype lack it: F32 gradients.
static ae_status check_grad_dtype(const cJSON *j, const char *path, const ae_distill_opts *o) {
    static const char *grads[] = {"fp32", "bf16"};
    int bf16 = 0;
    if (cJSON_GetObjectItemCaseSensitive(j, "grad_dtype"))
        AE_TRY(ae_json_enum(j, path, "grad_dtype", grads, 2, &bf16));
    if (bf16 != o->grad_bf16)
        return ae_errorf(AE_ERR_FORMAT, "%s: grad_dtype is \"%s\" but conversion.json has "
                         "train.grad_dtype \"%s\": a run with gradients of one dtype cannot be "
                         "resumed with the other (--grad-dtype %s started it; a checkpoint of "
                         "another run?)", path, grads[bf16], grads[o->grad_bf16], grads[bf16]);
    return AE_OK;
}

// ctx, batch, accum, seed (and the budgets, in checkpoints that record them) must be this
// run's: a checkpoint of another run is refused. batch and accum may differ when their product
// is the same (a resume with other micro-batches: train/rebatch.h).
static ae_status check_same_run(const cJSON *j, const char *path, const ae_distill_opts *o) {
    static const char *keys[] = {"ctx", "batch", "accum"};
    const int mine[] = {o->ctx, o->batch, o->accum};
    int64_t x, got[3];
    for (int i = 0; i < 3; i++) AE_TRY(ae_json_int(j, path, keys[i], 1, AE_RUN_MAX_COUNT, &got[i]));
    int regrouped = got[1] * got[2] == (int64_t)o->batch * o->accum;
    for (int i = 0; i < 3; i++) {
        x = got[i];
        if (x != mine[i] && !(i > 0 && regrouped))
            return ae_errorf(AE_ERR_FORMAT, "%s: %s is %lld but conversion.json has train.%s %d (a "
                             "checkpoint of another run?)", path, keys[i], (long long)x, keys[i], mine[i]);
    }
    for (int s = 0; s < 2; s++) {
        char key[32];
        snprintf(key, sizeof key, "stage%d_tokens", s + 1);
        if (!cJSON_GetObjectItemCaseSensitive(j, key)) continue; // older checkpoints lack them
        AE_TRY(ae_json_int(j, path, key, 0, AE_RUN_MAX_TOKENS, &x));
        if (x != o->stage_tokens[s])
            return ae_errorf(AE_ERR_FORMAT, "%s: %s is %lld but conversion.json has train.%s %lld (a "
                             "checkpoint of another run?)", path, key, (long long)x, key,
                             (long long)o->stage_tokens[s]);
    }
    static const char *states[] = {"fp32", "8bit"};
    int state8 = 0; // checkpoints before --optim-state lack the field: F32 moments
    if (cJSON_GetObjectItemCaseSensitive(j, "optim_state"))
        AE_TRY(ae_json_enum(j, path, "optim_state", states, 2, &state8));
    if (state8 != o->optim_8bit)
        return ae_errorf(AE_ERR_FORMAT, "%s: optim_state is \"%s\" but conversion.json has "
                         "train.optim_state \"%s\": AdamW states of one kind cannot resume a run "
                         "that keeps the other (a checkpoint of another run?)", path,
                         states[state8], states[o->optim_8bit]);
    AE_TRY(check_grad_dtype(j, path, o));
    uint64_t seed;
    AE_TRY(ae_json_u64(j, path, "seed", &seed));
    if (seed != o->seed)
        return ae_errorf(AE_ERR_FORMAT, "%s: seed is %" PRIu64 " but conversion.json has train.seed %"
                         PRIu64 " (a checkpoint of another run?)", path, seed, o->seed);
    return AE_OK;
}

// stage in {0, 1, 2} (2 = done), step within the stage's steps, opt_step = step (the
// optimizer restarts at each stage; a done run keeps stage 2's).
static ae_status read_position(const cJSON *j, const char *path, const ae_distill_opts *o, ckpt_state *c) {
    int64_t x;
    AE_TRY(ae_json_int(j, path, "version", 1, 1, &x));
    AE_TRY(ae_json_int(j, path, "stage", 0, 2, &x));
    c->stage = (int)x;
    int64_t total = c->stage < 2 ? ae_distill_stage_steps(o, c->stage) : 0;
    AE_TRY(ae_json_int(j, path, "step", 0, (double)total, &c->step));
    int64_t want = c->stage < 2 ? c->step : ae_distill_stage_steps(o, 1);
    AE_TRY(ae_json_int(j, path, "opt_step", 0, 9e15, &c->opt_step));
    if (c->opt_step != want)
        return ae_errorf(AE_ERR_FORMAT, "%s: opt_step is %lld but %s is %lld; they must be equal", path,
                         (long long)c->opt_step, c->stage < 2 ? "step" : "stage 2's step count",
                         (long long)want);
    return AE_OK;
}

// loader_draws: the windows drawn up to this position; loader_rng: the generator state, four
// strings of 16 hex digits, not all zero.
static ae_status read_loader(const cJSON *j, const char *path, const ae_distill_opts *o, ckpt_state *c) {
    AE_TRY(ae_json_u64(j, path, "loader_draws", &c->draws));
    uint64_t want = expected_draws(o, c->stage, c->step);
    char where[64];
    if (c->stage < 2) snprintf(where, sizeof where, "stage %d, step %lld", c->stage + 1, (long long)c->step);
    else snprintf(where, sizeof where, "the end of training");
    if (c->draws != want)
        return ae_errorf(AE_ERR_FORMAT, "%s: loader_draws is %" PRIu64 " but at %s this run has drawn "
                         "%" PRIu64 " windows (batch %d x accum %d per step)", path, c->draws, where,
                         want, o->batch, o->accum);
    const cJSON *rng;
    AE_TRY(ae_json_field(j, path, "loader_rng", AE_JSON_ARRAY, &rng));
    if (cJSON_GetArraySize(rng) != 4)
        return ae_errorf(AE_ERR_FORMAT, "%s: loader_rng has %d entries; must be 4 strings of 16 hex "
                         "digits", path, cJSON_GetArraySize(rng));
    uint64_t any = 0;
    for (int i = 0; i < 4; i++) {
        const cJSON *e = cJSON_GetArrayItem(rng, i);
        const char *v = cJSON_IsString(e) && e->valuestring ? e->valuestring : "";
        int ok = strlen(v) == 16;
        for (int k = 0; ok && k < 16; k++) ok = isxdigit((unsigned char)v[k]);
        if (!ok && cJSON_IsString(e))
            return ae_errorf(AE_ERR_FORMAT, "%s: loader_rng[%d] is \"%.40s\"; must be a string of 16 "
                             "hex digits", path, i, v);
        if (!ok)
            return ae_errorf(AE_ERR_FORMAT, "%s: loader_rng[%d] is %s; must be a string of 16 hex "
                             "digits", path, i, ae_cfg_jtype(e));
        c->rng[i] = strtoull(v, NULL, 16);
        any |= c->rng[i];
    }
    if (!any)
        return ae_errorf(AE_ERR_FORMAT, "%s: loader_rng is all zeros, which is not a generator state",
                         path);
    return AE_OK;
}

// final_loss: two numbers (null: a NaN loss, which cJSON writes as null).
static ae_status read_losses(const cJSON *j, const char *path, ckpt_state *c) {
    const cJSON *fl;
    AE_TRY(ae_json_field(j, path, "final_loss", AE_JSON_ARRAY, &fl));
    int ok = cJSON_GetArraySize(fl) == 2;
    for (int i = 0; ok && i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(fl, i);
        ok = cJSON_IsNumber(e) || cJSON_IsNull(e);
        if (ok) c->final_loss[i] = cJSON_IsNumber(e) ? e->valuedouble : NAN;
    }
    if (!ok) return ae_errorf(AE_ERR_FORMAT, "%s: final_loss must be an array of 2 numbers", path);
    return AE_OK;
}

// interval (optional: older checkpoints lack it, and log from their position on): the sums of
// the steps since the last progress line. steps is the position's (step mod log_every), the
// sums finite, top1 at most the predictions of those steps, layer_sum one number per layer.
static ae_status read_interval(const cJSON *j, const char *path, const ae_distill_opts *o, int L,
                               ckpt_state *c) {
    const cJSON *iv = cJSON_GetObjectItemCaseSensitive(j, "interval");
    c->iv_layers = NULL;
    c->iv_steps = c->iv_top1 = 0;
    c->iv_loss = c->iv_cos = 0.0;
    if (!iv) return AE_OK;
    AE_TRY(ae_json_check_type(iv, path, "interval", AE_JSON_OBJECT));
    int64_t want = c->stage < 2 && o->log_every > 1 ? c->step % o->log_every : 0;
    AE_TRY(ae_json_int(iv, path, "interval.steps", (double)want, (double)want, &c->iv_steps));
    AE_TRY(ae_json_num(iv, path, "interval.loss_sum", -1e300, 1e300, &c->iv_loss));
    AE_TRY(ae_json_num(iv, path, "interval.cos_sum", -1e300, 1e300, &c->iv_cos));
    double scored = (double)c->iv_steps * o->accum * o->batch * o->ctx;
    AE_TRY(ae_json_int(iv, path, "interval.top1", 0, scored, &c->iv_top1));
    AE_TRY(ae_json_field(iv, path, "interval.layer_sum", AE_JSON_ARRAY, &c->iv_layers));
    int ok = cJSON_GetArraySize(c->iv_layers) == L;
    for (int l = 0; ok && l < L; l++) {
        const cJSON *e = cJSON_GetArrayItem(c->iv_layers, l);
        ok = cJSON_IsNumber(e) && isfinite(e->valuedouble);
    }
    if (!ok)
        return ae_errorf(AE_ERR_FORMAT, "%s: interval.layer_sum must be an array of %d finite numbers "
                         "(one per layer)", path, L);
    return AE_OK;
}

static ae_status check_state(const cJSON *j, const char *path, const ae_distill_opts *o, int L,
                             ckpt_state *c) {
    if (!cJSON_IsObject(j)) return ae_errorf(AE_ERR_FORMAT, "%s: must be a JSON object", path);
    AE_TRY(check_same_run(j, path, o));
    AE_TRY(read_position(j, path, o, c));
    AE_TRY(read_loader(j, path, o, c));
    AE_TRY(read_losses(j, path, c));
    return read_interval(j, path, o, L, c);
}

static ae_status parse_state(ae_run *r, const char *path) {
    char *text;
    size_t len;
    AE_TRY(ae_file_read_all(path, &text, &len));
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) return ae_errorf(AE_ERR_FORMAT, "%s: not valid JSON", path);
    ckpt_state c;
    int L = r->s->cfg.num_hidden_layers;
    ae_status st = check_state(j, path, r->o, L, &c);
    if (st == AE_OK) { // c.iv_layers points into j
        r->iv.n = c.iv_steps;
        r->iv.top1 = c.iv_top1;
        r->iv.loss_sum = c.iv_loss;
        r->iv.cos_sum = c.iv_cos;
        for (int l = 0; l < L; l++)
            r->iv.layer_sum[l] = c.iv_layers ? cJSON_GetArrayItem(c.iv_layers, l)->valuedouble : 0.0;
    }
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(j, "device");
    const char *was = cJSON_IsString(dev) && dev->valuestring ? dev->valuestring : NULL;
    if (st == AE_OK && was && strcmp(was, r->s->be->device))
        fprintf(stderr, "note: the checkpoint was written on %.200s and the run continues on %s: the "
                "rest of the run is no longer bit-identical to an uninterrupted run\n", was,
                r->s->be->device);
    cJSON_Delete(j);
    AE_TRY(st);
    r->stage = c.stage;
    r->step = c.step;
    AE_TRY(ae_run_setup_stage(r));
    r->opt.step = c.opt_step;
    r->loader.draws = c.draws;
    memcpy(r->loader.rng.s, c.rng, sizeof c.rng);
    memcpy(r->final_loss, c.final_loss, sizeof c.final_loss);
    return AE_OK;
}

// Tensor `name` of the checkpoint into dst (n values in backend memory), checked first.
static ae_status load_tensor(const ae_st_set *s, const char *path, const char *name,
                             const ae_backend *be, ae_ptr dst, int64_t numel) {
    const ae_st_tensor *t = ae_st_find(s, name);
    if (!t || t->numel != numel)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor '%s' missing or of the wrong size", path, name);
    int64_t bad = ae_st_first_nonfinite(t);
    if (bad >= 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor '%s' holds a non-finite value (Inf or NaN) at "
                         "element %lld: the checkpoint is damaged", path, name, (long long)bad);
    if (be->host_memory && dst.dtype == AE_DT_F32) return ae_st_to_f32(t, ae_f32(dst));
    float *h = ae_alloc_f32((size_t)numel);
    if (!h) return AE_ERR_NOMEM;
    ae_status st = ae_st_to_f32(t, h);
    if (st == AE_OK) st = be->upload(be, dst, h, AE_DT_F32, (size_t)numel);
    if (st == AE_OK) st = be->sync(be); // h is freed below
    ae_free_aligned(h);
    return st;
}

// The n code bytes of tensor `name` (U8, n values) into codes.
static ae_status load_codes(const ae_st_set *s, const char *path, const char *name,
                            const ae_adamw *o, ae_ptr codes, int64_t n) {
    const ae_st_tensor *t = ae_st_find(s, name);
    if (!t || t->numel != n || t->dtype != AE_DT_U8)
        return ae_errorf(AE_ERR_FORMAT, "%s: tensor '%s' missing, not U8 or of the wrong size (%lld "
                         "codes expected)", path, name, (long long)n);
    return ae_adamw_codes_upload(o, codes, t->data, (size_t)n);
}

// The moments of trained tensor k (named pname) in the layout of o (see add_moments and
// add_moments8); a checkpoint holding the other layout is refused by name.
static ae_status load_moments(const ae_st_set *s, const char *path, const ae_adamw *o, int k,
                              const char *pname) {
    char name[160], other[160];
    int64_t n = o->p[k].numel;
    snprintf(name, sizeof name, o->cfg.state8 ? "adam.m8/%s" : "adam.m/%s", pname);
    snprintf(other, sizeof other, o->cfg.state8 ? "adam.m/%s" : "adam.m8/%s", pname);
    if (!ae_st_find(s, name) && ae_st_find(s, other))
        return ae_errorf(AE_ERR_FORMAT, "%s: holds %s AdamW moments ('%s') but this run keeps %s "
                         "ones (--optim-state %s): a checkpoint of another run?", path,
                         o->cfg.state8 ? "F32" : "8-bit", other, o->cfg.state8 ? "8-bit" : "F32",
                         o->cfg.state8 ? "8bit" : "fp32");
    if (!o->cfg.state8) {
        AE_TRY(load_tensor(s, path, name, o->be, o->m[k], n));
        snprintf(name, sizeof name, "adam.v/%s", pname);
        return load_tensor(s, path, name, o->be, o->v[k], n);
    }
    int64_t nb = (int64_t)ae_q8_blocks((size_t)n);
    AE_TRY(load_codes(s, path, name, o, o->m[k], n));
    snprintf(name, sizeof name, "adam.m8_absmax/%s", pname);
    AE_TRY(load_tensor(s, path, name, o->be, o->ms[k], nb));
    snprintf(name, sizeof name, "adam.v8/%s", pname);
    AE_TRY(load_codes(s, path, name, o, o->v[k], n));
    snprintf(name, sizeof name, "adam.v8_absmax/%s", pname);
    return load_tensor(s, path, name, o->be, o->vs[k], nb);
}

// The folder holding the checkpoint to resume from: checkpoint/, or checkpoint.old/ when a
// save died between its two renames; NULL when neither has a state.json (or out of memory).
static char *ckpt_dir(const char *out_dir) {
    static const char *names[] = {"checkpoint", "checkpoint.old"};
    for (int i = 0; i < 2; i++) {
        char *dir = ae_path_join(out_dir, names[i]);
        char *state = dir ? ae_path_join(dir, "state.json") : NULL;
        int found = state && ae_path_exists(state);
        free(state);
        if (found) return dir;
        free(dir);
    }
    return NULL;
}

int ae_distill_has_checkpoint(const char *out_dir) {
    char *dir = ckpt_dir(out_dir);
    int found = dir != NULL;
    free(dir);
    return found;
}

// The parameters the run trains (ae_run_param_saved) and the current stage's AdamW moments.
// Tensors of frozen parameters, which checkpoints of earlier versions hold, are loaded too when
// present (they equal the student folder's). A parameter with an fp32 master gets the checkpoint's
// values in the master and, rounded, in the model.
static ae_status load_params(ae_run *r, const char *dir) {
    const ae_backend *be = r->s->be;
    char *pp = ae_path_join(dir, "params.safetensors");
    ae_st_set *s = NULL;
    ae_status st = pp ? ae_st_open_file(pp, &s) : AE_ERR_NOMEM;
    for (int i = 0; st == AE_OK && i < r->np; i++) {
        const ae_named_param *p = &r->sp[i];
        if (!ae_run_param_saved(r, i) && !ae_st_find(s, p->name)) continue;
        st = load_tensor(s, pp, p->name, be, param_values(r, i), p->numel);
        if (st == AE_OK && !ae_ptr_is_null(r->master[i])) ae_copy(be, p->t, r->master[i], (size_t)p->numel);
    }
    for (int k = 0; st == AE_OK && k < r->ntrain; k++)
        st = load_moments(s, pp, &r->opt, k, r->sp[r->trainable[k]].name);
    if (st == AE_OK) st = be->sync(be);
    if (s) ae_st_close(s);
    free(pp);
    return st;
}

ae_status ae_ckpt_load(ae_run *r, int *found) {
    char *dir = ckpt_dir(r->out_dir);
    *found = dir != NULL;
    if (!dir) return AE_OK;
    char *state = ae_path_join(dir, "state.json"), *cur = ae_path_join(r->out_dir, "checkpoint");
    ae_status st = state && cur ? parse_state(r, state) : AE_ERR_NOMEM;
    if (st == AE_OK) st = load_params(r, dir);
    // from checkpoint/: what a save that died left (checkpoint.old after its rename, temporary
    // folders) is stale; a resume that ends without saving again would leave it
    if (st == AE_OK && !strcmp(dir, cur)) ae_dir_remove_stale(cur);
    free(cur);
    free(dir);
    free(state);
    return st;
}
