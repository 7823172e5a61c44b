// Internal: typed access to config.json members with messages naming the file and field.
// Shared by the config parsers (config.c, config_student.c).
#ifndef AE_IO_CONFIG_JSON_H
#define AE_IO_CONFIG_JSON_H

#include <cjson/cJSON.h>

#include "core/error.h"

typedef struct {
    const cJSON *root;
    const char *origin;
} ae_cfgctx;

const char *ae_cfg_jtype(const cJSON *v);
const cJSON *ae_cfg_field(const ae_cfgctx *c, const char *key);
ae_status ae_cfg_num_to_int(const ae_cfgctx *c, const char *name, const cJSON *v, int *out);
ae_status ae_cfg_get_int(const ae_cfgctx *c, const char *key, int def, int *out);
ae_status ae_cfg_get_double(const ae_cfgctx *c, const cJSON *v, const char *name, double def,
                            double *out);
ae_status ae_cfg_get_bool(const ae_cfgctx *c, const char *key, int def, int *out);
ae_status ae_cfg_need_positive(const ae_cfgctx *c, const char *key, int v);
ae_status ae_cfg_get_token_id(const ae_cfgctx *c, const char *key, int *out);

#endif
