#include "io/config_json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>


const char *ae_cfg_jtype(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

// The member, or NULL when absent or null.
const cJSON *ae_cfg_field(const ae_cfgctx *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

ae_status ae_cfg_num_to_int(const ae_cfgctx *c, const char *name, const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": expected an integer, got %s", c->origin,
                         name, ae_cfg_jtype(v));
    double d = v->valuedouble;
    if (floor(d) != d || d < (double)INT_MIN || d > (double)INT_MAX)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": %g is not an integer in range",
                         c->origin, name, d);
    *out = (int)d;
    return AE_OK;
}

ae_status ae_cfg_get_int(const ae_cfgctx *c, const char *key, int def, int *out) {
    const cJSON *v = ae_cfg_field(c, key);
    if (!v) {
        *out = def;
        return AE_OK;
    }
    return ae_cfg_num_to_int(c, key, v, out);
}

ae_status ae_cfg_get_double(const ae_cfgctx *c, const cJSON *v, const char *name, double def,
                            double *out) {
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return AE_OK;
    }
    if (!cJSON_IsNumber(v))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": expected a number, got %s", c->origin,
                         name, ae_cfg_jtype(v));
    *out = v->valuedouble;
    return AE_OK;
}

ae_status ae_cfg_get_bool(const ae_cfgctx *c, const char *key, int def, int *out) {
    const cJSON *v = ae_cfg_field(c, key);
    if (!v) {
        *out = def;
        return AE_OK;
    }
    if (!cJSON_IsBool(v))
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": expected true or false, got %s",
                         c->origin, key, ae_cfg_jtype(v));
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return AE_OK;
}

ae_status ae_cfg_need_positive(const ae_cfgctx *c, const char *key, int v) {
    if (v <= 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: field \"%s\": must be positive, got %d", c->origin, key,
                         v);
    return AE_OK;
}

// bos/eos: integer, null/absent (-1) or a list (the first id is taken).
ae_status ae_cfg_get_token_id(const ae_cfgctx *c, const char *key, int *out) {
    const cJSON *v = ae_cfg_field(c, key);
    *out = -1;
    if (!v) return AE_OK;
    if (cJSON_IsArray(v)) {
        const cJSON *first = cJSON_GetArrayItem(v, 0);
        if (!first) return AE_OK;
        char name[64];
        snprintf(name, sizeof name, "%s[0]", key);
        return ae_cfg_num_to_int(c, name, first, out);
    }
    return ae_cfg_num_to_int(c, key, v, out);
}

