// Open-addressing hash maps used by the tokenizer: byte string -> int32 (keys are borrowed, not
// copied) and (int32, int32) pair -> (rank, id).
#ifndef AE_TOK_HASH_H
#define AE_TOK_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct {
    const char *key; // NULL = empty slot
    uint32_t len;
    uint32_t hash;
    int32_t val;
} ae_strmap_slot;

typedef struct {
    ae_strmap_slot *slots;
    size_t cap; // power of two
    size_t n;
} ae_strmap;

uint32_t ae_tok_hash_bytes(const void *key, size_t len);
ae_status ae_strmap_init(ae_strmap *m, size_t expected);
void ae_strmap_free(ae_strmap *m);
// Inserts or overwrites; the key memory must outlive the map. Sets *prev to the old value (or -1).
ae_status ae_strmap_put(ae_strmap *m, const char *key, size_t len, int32_t val, int32_t *prev);
// The value, or -1 when absent.
int32_t ae_strmap_get(const ae_strmap *m, const char *key, size_t len);

typedef struct {
    uint64_t key; // UINT64_MAX = empty slot
    int32_t rank;
    int32_t id;
} ae_pairmap_slot;

typedef struct {
    ae_pairmap_slot *slots;
    size_t cap;
    size_t n;
} ae_pairmap;

ae_status ae_pairmap_init(ae_pairmap *m, size_t expected);
void ae_pairmap_free(ae_pairmap *m);
ae_status ae_pairmap_put(ae_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
// Returns 1 and fills rank/id when present.
int ae_pairmap_get(const ae_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id);

#endif
