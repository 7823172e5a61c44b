// A GGUF v3 writer (the file format of llama.cpp / ggml), little-endian:
//   "GGUF", version 3 (u32), tensor count (u64), metadata count (u64);
//   metadata: key (string), value type (u32), value;
//   tensor infos: name (string), n_dims (u32), ne[n_dims] (u64, ne[0] the fastest-varying
//   dimension: a PyTorch (rows, cols) matrix is ne = {cols, rows}), ggml type (u32), offset (u64)
//   from the start of the data section, a multiple of the alignment;
//   padding to the alignment (32, written as general.alignment), then the tensor data, each
//   tensor padded to the alignment.
// (string = u64 length + bytes, no NUL.) Metadata and tensor infos are collected in memory; the
// data is streamed: write the header, then each tensor's bytes in the order they were added.
// Output goes through ae_atomic_file, so a failed write (disk full) leaves nothing.
#ifndef AE_EXPORT_GGUF_WRITE_H
#define AE_EXPORT_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/file.h"

#define AE_GGUF_VERSION 3
#define AE_GGUF_ALIGNMENT 32

// gguf metadata value types (gguf.h: GGUF_TYPE_*)
enum {
    AE_GGUF_TYPE_UINT32 = 4,
    AE_GGUF_TYPE_INT32 = 5,
    AE_GGUF_TYPE_FLOAT32 = 6,
    AE_GGUF_TYPE_BOOL = 7,
    AE_GGUF_TYPE_STRING = 8,
    AE_GGUF_TYPE_ARRAY = 9,
};

// ggml tensor types (ggml.h: GGML_TYPE_*)
typedef enum { AE_GGML_F32 = 0, AE_GGML_F16 = 1, AE_GGML_BF16 = 30 } ae_ggml_type;

typedef struct ae_gguf ae_gguf;

ae_status ae_gguf_init(ae_gguf **out);
void ae_gguf_free(ae_gguf *g);

// Metadata, in the order given. A key set twice is an error (AE_ERR_ARG).
ae_status ae_gguf_set_u32(ae_gguf *g, const char *key, uint32_t v);
ae_status ae_gguf_set_f32(ae_gguf *g, const char *key, float v);
ae_status ae_gguf_set_bool(ae_gguf *g, const char *key, int v);
ae_status ae_gguf_set_str(ae_gguf *g, const char *key, const char *v);
ae_status ae_gguf_set_arr_str(ae_gguf *g, const char *key, const char *const *v, size_t n);
ae_status ae_gguf_set_arr_i32(ae_gguf *g, const char *key, const int32_t *v, size_t n);

// Adds a tensor (ne[0] fastest; 1 <= ndim <= 4); its data offset follows the previous tensor's,
// aligned. A name added twice is an error.
ae_status ae_gguf_add_tensor(ae_gguf *g, const char *name, ae_ggml_type type, int ndim,
                             const int64_t *ne);
size_t ae_gguf_type_size(ae_ggml_type type); // bytes per value
int64_t ae_gguf_n_tensors(const ae_gguf *g);
uint64_t ae_gguf_data_bytes(const ae_gguf *g); // data section size, padding included

// Writes the header, metadata, tensor infos and the padding before the data.
ae_status ae_gguf_write_header(ae_gguf *g, ae_atomic_file *f);
// Writes the next tensor's data (bytes must be its size) and the padding after it.
ae_status ae_gguf_write_tensor(ae_gguf *g, ae_atomic_file *f, const void *data, size_t bytes);
// AE_OK when every tensor was written (call before ae_atomic_commit).
ae_status ae_gguf_check_complete(const ae_gguf *g);

#endif
