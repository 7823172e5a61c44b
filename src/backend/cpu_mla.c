// Absorbed-MLA decode preparation (mla_decode_prep, backend/ops.h) on the cpu: the reference ops
// it replaces, in sequence, so that the model's results stay bit-identical to the unfused path
// (rmsnorm of the latent, rope of the shared key, rope of each head's q_rope and its copy into
// the absorbed query row). The rope of a copy equals the copy of the rope bit for bit (the copy
// is exact and the rotation is the same function of the same values).
#include "backend/cpu_internal.h"

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
