#include "model/params.h"

void ae_param_list_add(ae_param_list *l, const char *name, float *data, int64_t rows,
                       int64_t cols, int decay) {
    ae_param *p = &l->p[l->n++];
    p->name = name;
    p->data = data;
    p->ndim = cols > 0 ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols > 0 ? cols : 0;
    p->decay = decay;
}
