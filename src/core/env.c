#include "core/env.h"

#include <stdlib.h>

int ae_env_int(const char *name, int def, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end = NULL;
    long x = strtol(v, &end, 10);
    return end != v && *end == '\0' && x >= lo && x <= hi ? (int)x : def;
}
