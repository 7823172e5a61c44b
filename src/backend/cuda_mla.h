// Private to the CUDA backend: the absorbed-MLA decode ops of backend/ops.h — mla_decode_prep and
// mla_decode_absorb (cuda_mla_prep.cu), mla_decode_attend (cuda_mla_decode.cu) — and the entry
// of kernel E (cuda_attention_mla.cu) that mla_decode_attend merges itself.
#ifndef AE_BACKEND_CUDA_MLA_H
#define AE_BACKEND_CUDA_MLA_H

#include "backend/ops.h"

void ae_cuda_mla_decode_prep(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv, ae_ptr q,
                             ae_ptr qt, ae_ptr w, ae_ptr pos);
void ae_cuda_mla_decode_absorb(const ae_backend *be, const ae_mla_prep_args *a, ae_ptr kv,
                               ae_ptr q, ae_ptr qt, ae_ptr w, ae_ptr wuk, int64_t sw, ae_ptr pos);
void ae_cuda_mla_decode_attend(const ae_backend *be, const ae_attn_args *a, ae_ptr o, ae_ptr q,
                               ae_ptr kv, ae_ptr wuv, int64_t sw, int dvo);

#ifdef AE_BACKEND_CUDA_ATTENTION_H
// Kernel E (T·Hq <= 64 rows, dk/dv 576/512 or 288/256, one kv head, no pages) on p's rows,
// writing split partials (cuda_attention.h's format) at every split count, one included: 1 when
// it queued the launch, *parts then p with splits and the partial pointers set (parts->opart is
// the buffer to cuda_tmp_free after the merge; null when the allocation failed, the error kept);
// 0 when E does not take p (AE_CUDA_MLA_KERNEL=old, shape): nothing queued.
int attn_mla_dec_parts(const ae_backend *be, const attn_params *p, attn_params *parts);
// Names the kernel that merged E's partials in the plan ae_cuda_mla_last reports (static string).
void attn_mla_note_merge(const char *kernel);
#endif

#endif
