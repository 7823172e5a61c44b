// Changing the micro-batching of a run (train/rebatch.h).
#include "train/rebatch.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

#include "core/file.h"
#include "model/save.h"

ae_status ae_rebatch_check(const ae_distill_opts *o, int batch, int accum, const char *origin) {
    int64_t want = (int64_t)o->batch * o->accum, got = (int64_t)batch * accum;
    if (got == want) return AE_OK;
    return ae_errorf(AE_ERR_ARG, "--batch %d x --accum %d is %lld sequences per optimizer step, but "
                     "the run takes %lld (train.batch %d x train.accum %d in %.300s): a resumed run "
                     "must draw the same sequences per step, so --batch x --accum must be %lld",
                     batch, accum, (long long)got, (long long)want, o->batch, o->accum, origin,
                     (long long)want);
}

// Sets key of object o to the number v (added when missing).
static void set_number(cJSON *o, const char *key, int v) {
    cJSON *n = cJSON_CreateNumber(v);
    if (cJSON_GetObjectItemCaseSensitive(o, key)) cJSON_ReplaceItemInObjectCaseSensitive(o, key, n);
    else cJSON_AddItemToObject(o, key, n);
}

ae_status ae_rebatch_record(const char *out_dir, int batch, int accum) {
    char *path = ae_path_join(out_dir, "conversion.json"), *text = NULL, *out = NULL;
    size_t len;
    if (!path) return AE_ERR_NOMEM;
    ae_status st = ae_file_read_all(path, &text, &len);
    cJSON *j = st == AE_OK ? cJSON_Parse(text) : NULL;
    cJSON *train = j ? cJSON_GetObjectItemCaseSensitive(j, "train") : NULL;
    if (st == AE_OK && !cJSON_IsObject(train)) // read and checked by ae_run_spec_load before
        st = ae_errorf(AE_ERR_FORMAT, "%s: no \"train\" object to record the new --batch/--accum in",
                       path);
    if (st == AE_OK) {
        set_number(train, "batch", batch);
        set_number(train, "accum", accum);
        out = cJSON_Print(j);
        st = out ? ae_write_text_file(out_dir, "conversion.json", out) : AE_ERR_NOMEM;
        if (st != AE_OK) ae_error_wrap(st, "recording --batch %d --accum %d in %s", batch, accum, path);
    }
    cJSON_Delete(j);
    free(out);
    free(text);
    free(path);
    return st;
}
