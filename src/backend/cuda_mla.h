// Private to the CUDA backend: the absorbed-MLA decode preparation (cuda_mla_prep.cu), the slot
// mla_decode_prep of backend/ops.h.
#ifndef AE_BACKEND_CUDA_MLA_H
#define AE_BACKEND_CUDA_MLA_H

#include "backend/ops.h"

void ae_cuda_mla_decode_prep(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                             ae_ptr qt, ae_ptr w, ae_ptr pos);

#endif
