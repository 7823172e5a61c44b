// Integer tuning switches read from the environment (kernel and chunk sizes for A/B measurements
// and for tests that reach many-chunk paths cheaply). Not user options: a value that is not an
// integer in range falls back to the default without a message.
#ifndef AE_CORE_ENV_H
#define AE_CORE_ENV_H

// The environment variable `name` as an integer in [lo, hi]; def when it is unset, empty, not an
// integer or out of range.
int ae_env_int(const char *name, int def, long lo, long hi);

#endif
