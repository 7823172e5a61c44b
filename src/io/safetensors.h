// safetensors: validated, mmap-backed reader for one file or a sharded folder, and an atomic
// writer. Format: 8-byte little-endian header length N, N bytes of JSON header, then the data
// buffer. Validation follows the reference implementation (huggingface/safetensors):
//   header starts with '{', N <= 100 MB, N + 8 <= file size, each tensor's byte count equals
//   numel x dtype size, data_offsets are [begin, end] with begin <= end, tensors are contiguous
//   and cover the data buffer exactly (sorted by offset, no gaps, no overlaps, end == buffer
//   length), no duplicate names, known dtype, "__metadata__" is a string->string map.
#ifndef AE_IO_SAFETENSORS_H
#define AE_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#define AE_ST_MAX_DIMS 8
#define AE_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct {
    char *name;
    ae_dtype dtype;
    int ndim;
    int64_t shape[AE_ST_MAX_DIMS];
    int64_t numel;
    const unsigned char *data; // points into the mapping (may be unaligned)
    size_t nbytes;
    const char *file;          // path of the file holding it (owned by the set)
} ae_st_tensor;

// All tensors of one model: a single file, or every shard named by an index's weight_map.
typedef struct ae_st_set ae_st_set;

// Opens one .safetensors file.
ae_status ae_st_open_file(const char *path, ae_st_set **out);
// Opens a model folder: model.safetensors.index.json (only "weight_map" is trusted: each shard
// named there is opened once; every tensor the index names must be in its shard, and a shard may
// not hold tensors the index does not list) or else model.safetensors.
ae_status ae_st_open_dir(const char *dir, ae_st_set **out);
void ae_st_close(ae_st_set *s);

size_t ae_st_count(const ae_st_set *s);
const ae_st_tensor *ae_st_at(const ae_st_set *s, size_t i);
const ae_st_tensor *ae_st_find(const ae_st_set *s, const char *name); // NULL if absent
// Metadata value of the (first) file's __metadata__, or NULL.
const char *ae_st_metadata(const ae_st_set *s, const char *key);

// Converts a F32/F16/BF16 tensor to f32 (n = numel floats at dst). Other dtypes -> error naming
// the tensor.
ae_status ae_st_to_f32(const ae_st_tensor *t, float *dst);
// The float tensor `name` after checking its shape (error "<file>: tensor <name>: shape [a, b],
// expected [c, d]") and dtype (F32/F16/BF16).
ae_status ae_st_get(const ae_st_set *s, const char *name, int ndim, const int64_t *shape,
                    const ae_st_tensor **out);
// Index of the first Inf or NaN of a float tensor, or -1 when every value is finite.
int64_t ae_st_first_nonfinite(const ae_st_tensor *t);
// Converts it to f32, checking the shape first.
ae_status ae_st_load_f32(const ae_st_set *s, const char *name, int ndim, const int64_t *shape,
                         float *dst);

// Writer: collect tensors (data is copied lazily: the pointer must stay valid until finish),
// then ae_st_writer_finish writes atomically (temp file, fsync, rename). Header padded with
// spaces to a multiple of 8 bytes; tensors in insertion order.
typedef struct ae_st_writer ae_st_writer;
ae_status ae_st_writer_init(ae_st_writer **out);
ae_status ae_st_writer_add(ae_st_writer *w, const char *name, ae_dtype dtype, int ndim,
                           const int64_t *shape, const void *data);
ae_status ae_st_writer_metadata(ae_st_writer *w, const char *key, const char *value);
ae_status ae_st_writer_finish(ae_st_writer *w, const char *path); // also frees w
void ae_st_writer_free(ae_st_writer *w);

#endif
