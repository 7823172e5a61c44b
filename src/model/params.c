#include "model/params.h"

#include <string.h>

void ae_param_list_add(ae_param_list *l, const char *name, ae_ptr *slot, int64_t rows,
                       int64_t cols, int decay) {
    ae_param *p = &l->p[l->n++];
    p->name = name;
    p->slot = slot;
    p->data = *slot;
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols > 0 ? cols : 0;
    p->decay = decay;
}

int64_t ae_param_numel(const ae_param *p) { return p->shape[0] * (p->ndim == 2 ? p->shape[1] : 1); }

ae_status ae_params_alloc(const ae_backend *be, ae_dtype dt, ae_param_list *l) {
    for (int i = 0; i < l->n; i++) {
        ae_param *p = &l->p[i];
        size_t n = (size_t)ae_param_numel(p);
        *p->slot = be->alloc(be, n, strcmp(p->name, "sinks") == 0 ? AE_DT_F32 : dt);
        if (ae_ptr_is_null(*p->slot)) {
            ae_param_list done = *l;
            done.n = i;
            ae_params_free(be, &done);
            return AE_ERR_NOMEM;
        }
        be->fill(be, *p->slot, n, 0.0f);
        p->data = *p->slot;
    }
    return AE_OK;
}

void ae_params_free(const ae_backend *be, const ae_param_list *l) {
    for (int i = 0; i < l->n; i++) {
        if (be) be->free(be, *l->p[i].slot);
        *l->p[i].slot = ae_ptr_null();
    }
}
