#include "core/killpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

void ae_kill_point(const char *name) {
    static long passes; // of the armed point (only one point is armed per process)
    const char *v = getenv("AE_TEST_KILL_POINT");
    if (!v) return;
    size_t n = strlen(name);
    if (strncmp(v, name, n) != 0 || (v[n] != '\0' && v[n] != ':')) return;
    long want = v[n] == ':' ? atol(v + n + 1) : 1;
    if (++passes == want) raise(SIGKILL);
}
