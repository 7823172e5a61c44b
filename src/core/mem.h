// Checked allocation. Allocation failure on the sizes we handle is reported, not ignored:
// ae_malloc returns NULL and sets the error message; callers propagate AE_ERR_NOMEM.
#ifndef AE_CORE_MEM_H
#define AE_CORE_MEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *ae_malloc(size_t n);
void *ae_calloc(size_t count, size_t size);  // count*size overflow-checked
void *ae_realloc(void *p, size_t n);
char *ae_strdup(const char *s);
char *ae_strndup(const char *s, size_t n);
// 64-byte aligned, zeroed; free with ae_free_aligned.
float *ae_alloc_f32(size_t n);
void ae_free_aligned(void *p);
// a * b with overflow detection: returns 0 and sets *out on success, -1 on overflow.
int ae_mul_size(size_t a, size_t b, size_t *out);

#ifdef __cplusplus
}
#endif

#endif
