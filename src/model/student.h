// Making a student: the teacher with the attention of some layers replaced by MLA or GateSWA,
// initialised at random (the paper) or from the teacher's own attention weights.
#ifndef AE_MODEL_STUDENT_H
#define AE_MODEL_STUDENT_H

#include <stdint.h>

#include "model/model.h"

typedef struct {
    ae_attn_kind target;       // AE_ATTN_MLA or AE_ATTN_GATESWA
    const int *layers;         // replaced layers, or NULL for every layer
    int n_layers;
    // MLA (0 = default derived from the teacher, see ae_student_resolve)
    int q_lora_rank, kv_lora_rank, qk_rope_dim, qk_nope_dim, v_head_dim;
    // GateSWA
    int full_every;            // full attention in every k-th layer (the last of each group)
    const int *full_layers;    // or an explicit list (overrides full_every)
    int n_full_layers;
    int window;                // sliding window W
    ae_gate_kind gate;
    int sinks;
    // 0: random (std = initializer_range); otherwise from the teacher's weights by the method
    // of that value, an ae_mla_init_method: AE_MLA_INIT_TEACHER (1, both targets), or for MLA
    // AE_MLA_INIT_MHA2MLA / AE_MLA_INIT_TRANSMLA. Names: ae_init_names.
    int init_teacher;
    uint64_t seed;
} ae_student_spec;

// "random", "teacher", "mha2mla", "transmla": the --init values, indexed by init_teacher.
#define AE_N_INITS 4
extern const char *const ae_init_names[AE_N_INITS];

typedef struct {
    int n_layers;              // layers initialised
    double kv_rel_err_mean;    // MLA teacher inits: relative Frobenius error of the K/V factorisation
    double kv_rel_err_max;
    double rope_logit_err_mean; // MLA teacher inits: relative error of the rope-part logits
    double rope_logit_err_max;
    double qk_logit_err_mean;   // MLA teacher inits: relative error of the whole q·k logits
    double qk_logit_err_max;
    // per layer (index = layer; layers not replaced, or random init: zero): the figures of
    // merit of ae_mla_init_stats
    ae_mla_init_stats layer[AE_MAX_LAYERS];
} ae_init_report;

// Fills defaults (MLA: qk_rope_dim = head_dim/2, qk_nope_dim = head_dim - qk_rope_dim,
// v_head_dim = head_dim, kv_lora_rank = 4·head_dim capped at hidden_size; GateSWA: full_every 6,
// window 1024; the gate is taken as given: AE_GATE_NONE means no gate, the CLI defaults to
// elementwise) and checks the spec fits the teacher: AE_ERR_ARG naming the
// option otherwise.
ae_status ae_student_resolve(const ae_config *teacher, ae_student_spec *s);

// Converts a loaded teacher into the student in place (config fields and attention modules).
ae_status ae_student_make(ae_model *m, const ae_student_spec *s, ae_init_report *rep);

#endif
