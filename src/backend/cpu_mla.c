// Absorbed-MLA decode ops on the cpu (mla_decode_prep, mla_decode_absorb, mla_decode_attend,
// backend/ops.h). mla_decode_prep: the reference ops
// it replaces, in sequence, so that the model's results stay bit-identical to the unfused path
// (rmsnorm of the latent, rope of the shared key, rope of each head's q_rope and its copy into
// the absorbed query row). The rope of a copy equals the copy of the rope bit for bit (the copy
// is exact and the rotation is the same function of the same values).
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu_internal.h"
#include "core/mem.h"

void ae_cpu_mla_decode_prep(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                            ae_ptr qt, ae_ptr w, ae_ptr pos) {
    int T = a->T, H = a->H, R = a->R, dr = a->dr, dq = a->dn + a->dr, Cd = R + a->dr;
    if (T <= 0 || H <= 0) return;
    // kv: (T, ldkv) [c (R) | kr (dr)];  q: (T, H, dq);  qt: (T, H, Cd)
    ae_cpu_rmsnorm(be, kv, kv, w, T, R, a->ldkv, a->eps);
    if (dr <= 0) return;
    ae_cpu_rope(be, ae_ptr_at(kv, (size_t)R), pos, T, 1, (int)a->ldkv, dr, a->theta, a->mode);
    ae_ptr qr = ae_ptr_at(qt, (size_t)R); // (T, H, Cd) rows, rope part
    ae_cpu_copy_rows(be, qr, Cd, ae_ptr_at(q, (size_t)a->dn), dq, T * H, dr);
    ae_cpu_rope(be, qr, pos, T, H, Cd, dr, a->theta, a->mode);
}

// mla_decode_absorb and mla_decode_attend: the ops they stand for (ae_mla_absorb_ops,
// ae_mla_attend_ops: the model's unfused path, bit for bit), ctx in fp32 on the host.
void ae_cpu_mla_decode_absorb(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv,
                              ae_ptr q, ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos) {
    if (a->T <= 0 || a->H <= 0) return;
    ae_mla_absorb_ops(be, a, kv, q, qt, w, wuk, sw, pos);
}

void ae_cpu_mla_decode_attend(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q,
                              ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo) {
    int T = a->T, H = a->Hq, R = a->dv;
    if (T <= 0 || H <= 0) return;
    float *ctx = ae_malloc((size_t)T * H * R * sizeof(float)); // (T, Hq, R)
    if (!ctx) {
        fprintf(stderr, "attnedit: mla_decode_attend: out of host memory for %d x %d x %d\n", T, H,
                R);
        abort();
    }
    ae_mla_attend_ops(be, a, o, ae_host_f32(ctx), q, kv, wuv, sw, dvo);
    free(ctx);
}
