// libFuzzer harness: one .safetensors file (8-byte header length, JSON header, data buffer), read
// by ae_st_open_file. The reader only takes paths, so each input is written to a tmpfs file.
// Promises checked (io/safetensors.h): AE_OK or an error with a message; on success every
// tensor has numel = prod(shape) and nbytes = numel x dtype size, the tensors tile the data
// buffer exactly, each is found by name, and F32/F16/BF16 tensors convert to f32.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "fuzz_util.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_write("model.safetensors", data, size);
    ae_st_set *s = NULL;
    fz_begin();
    ae_status st = ae_st_open_file(fz_path("model.safetensors"), &s);
    fz_check(st, "ae_st_open_file");
    if (st != AE_OK) {
        FZ_ASSERT(s == NULL, "failed open left a set");
        return 0;
    }
    FZ_ASSERT(size >= 8, "a %zu-byte file was accepted", size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    FZ_ASSERT(hlen <= size - 8, "header length %llu past the end", (unsigned long long)hlen);
    size_t buf_len = size - 8 - (size_t)hlen, covered = 0;
    const unsigned char *prev_end = NULL;
    for (size_t i = 0; i < ae_st_count(s); i++) {
        const ae_st_tensor *t = ae_st_at(s, i);
        FZ_ASSERT(t && t->name && t->ndim >= 0 && t->ndim <= AE_ST_MAX_DIMS, "tensor %zu", i);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FZ_ASSERT(t->shape[d] >= 0, "negative dim");
            FZ_ASSERT(!__builtin_mul_overflow(numel, t->shape[d], &numel), "numel overflows");
        }
        FZ_ASSERT(numel == t->numel, "numel %lld != prod(shape) %lld", (long long)t->numel,
                  (long long)numel);
        FZ_ASSERT(t->nbytes == (size_t)t->numel * ae_dtype_size(t->dtype), "nbytes");
        // Tensors come in data-offset order and tile the buffer.
        if (prev_end) FZ_ASSERT(t->data == prev_end, "gap or overlap before %s", t->name);
        prev_end = t->data + t->nbytes;
        covered += t->nbytes;
        // Touch every byte (an out-of-bounds pointer faults here).
        unsigned acc = 0;
        for (size_t b = 0; b < t->nbytes; b++) acc += t->data[b];
        (void)acc;
        FZ_ASSERT(ae_st_find(s, t->name) == t, "ae_st_find(\"%s\") does not find it", t->name);
        const ae_st_tensor *got = NULL;
        fz_begin();
        st = ae_st_get(s, t->name, t->ndim, t->shape, &got);
        fz_check(st, "ae_st_get");
        int is_float = t->dtype == AE_DT_F32 || t->dtype == AE_DT_F16 || t->dtype == AE_DT_BF16;
        FZ_ASSERT((st == AE_OK) == is_float, "ae_st_get on %s", ae_dtype_name(t->dtype));
        (void)ae_st_first_nonfinite(t);
        float *f = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
        if (!f) abort();
        fz_begin();
        st = ae_st_to_f32(t, f);
        fz_check(st, "ae_st_to_f32");
        FZ_ASSERT((st == AE_OK) == is_float, "ae_st_to_f32 on %s", ae_dtype_name(t->dtype));
        free(f);
    }
    FZ_ASSERT(covered == buf_len, "tensors cover %zu of %zu data bytes", covered, buf_len);
    const ae_st_tensor *x = ae_st_find(s, "no such tensor \x7f");
    FZ_ASSERT(!x || strcmp(x->name, "no such tensor \x7f") == 0, "ae_st_find: wrong tensor");
    (void)ae_st_metadata(s, "format");
    ae_st_close(s);
    return 0;
}
