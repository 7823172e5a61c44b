#include "model/student.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/rng.h"

const char *const ae_init_names[AE_N_INITS] = {"random", "teacher", "mha2mla", "transmla"};

static ae_status resolve_mla(const ae_config *t, ae_student_spec *s) {
    int hd = t->head_dim, D = t->hidden_size;
    if (s->qk_rope_dim == 0) s->qk_rope_dim = (hd / 2) & ~1;
    if (s->qk_nope_dim == 0) s->qk_nope_dim = hd - s->qk_rope_dim;
    if (s->v_head_dim == 0) s->v_head_dim = hd;
    if (s->kv_lora_rank == 0) s->kv_lora_rank = 4 * hd < D ? 4 * hd : D;
    if (s->kv_lora_rank < 1 || s->kv_lora_rank > D)
        return ae_errorf(AE_ERR_ARG, "--kv-lora-rank %d does not fit the teacher: must be in [1, %d] "
                         "(hidden_size)", s->kv_lora_rank, D);
    if (s->q_lora_rank < 0 || s->q_lora_rank > D)
        return ae_errorf(AE_ERR_ARG, "--q-lora-rank %d does not fit the teacher: must be in [0, %d] "
                         "(0 = plain q_proj)", s->q_lora_rank, D);
    if (s->qk_rope_dim < 2 || s->qk_rope_dim % 2)
        return ae_errorf(AE_ERR_ARG, "--qk-rope-dim %d: must be even and >= 2", s->qk_rope_dim);
    if (s->qk_nope_dim < 0)
        return ae_errorf(AE_ERR_ARG, "--qk-nope-dim %d: must be >= 0", s->qk_nope_dim);
    if (s->v_head_dim < 1) return ae_errorf(AE_ERR_ARG, "--v-head-dim %d: must be >= 1", s->v_head_dim);
    if (s->init_teacher) {
        const char *init = ae_init_names[s->init_teacher];
        if (s->qk_rope_dim > hd || hd % s->qk_rope_dim)
            return ae_errorf(AE_ERR_ARG, "--init %s: --qk-rope-dim %d must divide the teacher's "
                             "head_dim %d", init, s->qk_rope_dim, hd);
        if (s->qk_nope_dim + s->qk_rope_dim != hd)
            return ae_errorf(AE_ERR_ARG, "--init %s: --qk-nope-dim + --qk-rope-dim (%d + %d) must "
                             "equal the teacher's head_dim %d", init, s->qk_nope_dim, s->qk_rope_dim, hd);
        if (s->v_head_dim != hd)
            return ae_errorf(AE_ERR_ARG, "--init %s: --v-head-dim %d must equal the teacher's "
                             "head_dim %d", init, s->v_head_dim, hd);
    }
    return AE_OK;
}

static ae_status resolve_gateswa(const ae_config *t, ae_student_spec *s) {
    if (s->full_every == 0 && !s->full_layers) s->full_every = 6;
    if (s->window == 0) s->window = 1024;
    if (s->window < 1) return ae_errorf(AE_ERR_ARG, "--window %d: must be >= 1", s->window);
    if (s->full_every < 0) return ae_errorf(AE_ERR_ARG, "--full-every %d: must be >= 1", s->full_every);
    for (int i = 0; i < s->n_full_layers; i++)
        if (s->full_layers[i] < 0 || s->full_layers[i] >= t->num_hidden_layers)
            return ae_errorf(AE_ERR_ARG, "--full-layers: layer %d is out of range [0, %d)",
                             s->full_layers[i], t->num_hidden_layers);
    return AE_OK;
}

ae_status ae_student_resolve(const ae_config *t, ae_student_spec *s) {
    if (s->init_teacher < 0 || s->init_teacher >= AE_N_INITS)
        return ae_errorf(AE_ERR_ARG, "--init: unknown init %d (random, teacher, mha2mla, transmla)",
                         s->init_teacher);
    if (s->target == AE_ATTN_GATESWA && s->init_teacher > AE_MLA_INIT_TEACHER)
        return ae_errorf(AE_ERR_ARG, "--init %s is an MLA initialisation; GateSWA takes random or teacher",
                         ae_init_names[s->init_teacher]);
    if (t->target != AE_ATTN_GQA)
        return ae_errorf(AE_ERR_ARG, "the teacher is already a student (attention_target \"%s\"); "
                         "convert the original model", ae_attn_kind_name(t->target));
    for (int i = 0; i < s->n_layers; i++) {
        if (s->layers[i] < 0 || s->layers[i] >= t->num_hidden_layers)
            return ae_errorf(AE_ERR_ARG, "--layers: layer %d is out of range [0, %d)", s->layers[i],
                             t->num_hidden_layers);
        for (int j = 0; j < i; j++)
            if (s->layers[j] == s->layers[i])
                return ae_errorf(AE_ERR_ARG, "--layers: layer %d listed twice", s->layers[i]);
    }
    if (s->target == AE_ATTN_MLA) return resolve_mla(t, s);
    if (s->target == AE_ATTN_GATESWA) return resolve_gateswa(t, s);
    return ae_errorf(AE_ERR_ARG, "--target must be mla or gateswa");
}

static int is_replaced(const ae_student_spec *s, int l) {
    if (!s->layers) return 1;
    for (int i = 0; i < s->n_layers; i++)
        if (s->layers[i] == l) return 1;
    return 0;
}

static int is_full(const ae_student_spec *s, int l) {
    if (s->full_layers) {
        for (int i = 0; i < s->n_full_layers; i++)
            if (s->full_layers[i] == l) return 1;
        return 0;
    }
    return l % s->full_every == s->full_every - 1;
}

// Writes the target fields into the config (the module dims derive from it).
static void set_config(ae_config *c, const ae_student_spec *s) {
    c->target = s->target;
    for (int l = 0; l < c->num_hidden_layers; l++)
        c->layer_attn[l] = is_replaced(s, l) ? s->target : AE_ATTN_GQA;
    if (s->target == AE_ATTN_MLA) {
        c->q_lora_rank = s->q_lora_rank;
        c->kv_lora_rank = s->kv_lora_rank;
        c->qk_nope_head_dim = s->qk_nope_dim;
        c->qk_rope_head_dim = s->qk_rope_dim;
        c->v_head_dim = s->v_head_dim;
        return;
    }
    // GateSWA: replaced layers follow the full/sliding pattern; the others keep their type.
    c->attn_gate = s->gate;
    c->attn_sinks = s->sinks;
    c->use_sliding_window = 1;
    c->sliding_window = s->window;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (is_replaced(s, l)) c->layer_types[l] = is_full(s, l) ? AE_LAYER_FULL : AE_LAYER_SLIDING;
}

// Host copies of the teacher attention weights of layer L (the MLA factorisation runs on the
// host): 7 arrays in buf, freed by the caller.
static ae_status teacher_view(const ae_backend *be, const ae_layer *L, ae_gqa_view *v,
                              float *buf[7]) {
    const ae_gswa *t = &L->gqa;
    size_t D = t->d.D, qd = (size_t)t->d.Hq * t->d.hd, kvd = (size_t)t->d.Hkv * t->d.hd;
    ae_ptr src[7] = {t->wq, t->wk, t->wv, t->wo, t->q_norm, t->k_norm, L->input_norm};
    size_t n[7] = {qd * D, kvd * D, kvd * D, D * qd, (size_t)t->d.hd, (size_t)t->d.hd, D};
    for (int i = 0; i < 7; i++) {
        if (!(buf[i] = ae_alloc_f32(n[i]))) return AE_ERR_NOMEM;
        AE_TRY(be->download(be, buf[i], AE_DT_F32, src[i], n[i]));
    }
    *v = (ae_gqa_view){.Hq = t->d.Hq, .Hkv = t->d.Hkv, .hd = t->d.hd, .wq = buf[0], .wk = buf[1],
                       .wv = buf[2], .wo = buf[3], .q_norm = buf[4], .k_norm = buf[5],
                       .input_norm = buf[6]};
    return AE_OK;
}

static ae_status init_mla_from_teacher(ae_model *m, ae_layer *L, ae_mla_init_method how,
                                       ae_mla_init_stats *stats) {
    float *buf[7] = {0};
    ae_gqa_view v;
    ae_status st = teacher_view(m->be, L, &v, buf);
    if (st == AE_OK) st = ae_mla_init_teacher_method(&L->mla, &v, how, stats);
    for (int i = 0; i < 7; i++) ae_free_aligned(buf[i]);
    return st;
}

static ae_status init_layer(ae_model *m, int l, const ae_student_spec *s, ae_rng *rng,
                            ae_mla_init_stats *stats) {
    const ae_config *c = &m->cfg;
    ae_layer *L = &m->layers[l];
    ae_gswa *t = &L->gqa; // the teacher's module
    float std = (float)c->initializer_range;
    if (s->target == AE_ATTN_MLA) {
        ae_mla_dims d = ae_model_mla_dims(c);
        AE_TRY(ae_mla_init(&L->mla, &d, m->be));
        if (s->init_teacher)
            AE_TRY(init_mla_from_teacher(m, L, (ae_mla_init_method)s->init_teacher, stats));
        else AE_TRY(ae_mla_init_random(&L->mla, std, rng));
        if (!m->shared_base) ae_gswa_free(&L->gqa);
        memset(&L->gqa, 0, sizeof L->gqa);
    } else {
        ae_gswa_dims d = ae_model_gswa_dims(c, l);
        ae_gswa g;
        AE_TRY(ae_gswa_init(&g, &d, m->be));
        ae_status st = s->init_teacher ? ae_gswa_init_from_teacher(&g, t)
                                       : ae_gswa_init_random(&g, std, rng);
        if (st != AE_OK) {
            ae_gswa_free(&g);
            return st;
        }
        if (!m->shared_base) ae_gswa_free(&L->gqa); // a shared base keeps its own
        L->gqa = g;
    }
    L->kind = s->target;
    return AE_OK;
}

ae_status ae_student_make(ae_model *m, const ae_student_spec *s, ae_init_report *rep) {
    memset(rep, 0, sizeof *rep);
    ae_student_spec spec = *s;
    AE_TRY(ae_student_resolve(&m->cfg, &spec));
    set_config(&m->cfg, &spec);
    ae_rng rng;
    ae_rng_seed(&rng, spec.seed);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        if (m->cfg.layer_attn[l] == AE_ATTN_GQA) {
            m->layers[l].gqa.d = ae_model_gswa_dims(&m->cfg, l); // its layer type may be unchanged
            continue;
        }
        ae_mla_init_stats *st = &rep->layer[l];
        AE_TRY(init_layer(m, l, &spec, &rng, st));
        rep->n_layers++;
        rep->kv_rel_err_mean += st->kv_rel_err;
        rep->kv_rel_err_max = fmax(rep->kv_rel_err_max, st->kv_rel_err);
        rep->rope_logit_err_mean += st->rope_logit_err;
        rep->rope_logit_err_max = fmax(rep->rope_logit_err_max, st->rope_logit_err);
        rep->qk_logit_err_mean += st->qk_logit_err;
        rep->qk_logit_err_max = fmax(rep->qk_logit_err_max, st->qk_logit_err);
    }
    if (rep->n_layers) {
        rep->kv_rel_err_mean /= rep->n_layers;
        rep->rope_logit_err_mean /= rep->n_layers;
        rep->qk_logit_err_mean /= rep->n_layers;
    }
    m->n_params = ae_config_param_count(&m->cfg);
    return AE_OK;
}
