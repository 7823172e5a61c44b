// Logging to stderr and wall-clock timing. Stdout is reserved for command results.
#ifndef AE_CORE_LOG_H
#define AE_CORE_LOG_H

typedef enum { AE_LOG_QUIET = 0, AE_LOG_INFO = 1, AE_LOG_DEBUG = 2 } ae_log_level;

void ae_log_set_level(ae_log_level lvl);
ae_log_level ae_log_get_level(void);
void ae_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ae_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

double ae_time_now(void); // seconds, monotonic

#endif
