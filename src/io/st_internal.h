// Private to src/io/safetensors.c, st_index.c and st_writer.c: the layout of an ae_st_set and
// the helpers the sharded-index reader and the writer share with the single-file reader.
#ifndef AE_IO_ST_INTERNAL_H
#define AE_IO_ST_INTERNAL_H

#include <stddef.h>

#include "core/file.h"
#include "io/safetensors.h"

typedef struct {
    char *path;
    ae_mmap map;
    size_t n_meta;
    char **meta; // (n_meta, 2): key, value pairs of __metadata__
} ae_st_file;

struct ae_st_set {
    char *origin;           // what was opened (file or folder), for messages
    ae_st_file *files;      // (n_files,) never reallocated once tensors point into it
    size_t n_files;
    ae_st_tensor *tensors;  // (n,) file by file, each file's tensors in data-offset order
    size_t n;
    size_t *by_name;        // (n,) indices into tensors sorted by name
};

// Maps and validates one file into f (f->path must already be set, owned by f). On success
// *tensors is a heap array of *n tensors sorted by data offset, each with .file = f->path.
ae_status ae_st_parse_file(ae_st_file *f, ae_st_tensor **tensors, size_t *n);
void ae_st_file_free(ae_st_file *f);
// Builds s->by_name from s->tensors; a name present twice is an error naming both files.
ae_status ae_st_set_index(ae_st_set *s);
// 1 if the n bytes at p are valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
int ae_st_utf8_valid(const unsigned char *p, size_t n);

#endif
