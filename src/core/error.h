// Error reporting: functions that can fail on input return an ae_status and leave one
// human-readable message (which file/field, what is wrong) in a thread-local buffer.
#ifndef AE_CORE_ERROR_H
#define AE_CORE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AE_OK = 0,
    AE_ERR_IO,          // cannot open/read/write a file
    AE_ERR_FORMAT,      // malformed file content (JSON, safetensors, token file...)
    AE_ERR_UNSUPPORTED, // valid input we cannot compute faithfully
    AE_ERR_ARG,         // bad argument / option value
    AE_ERR_NOMEM,       // allocation failed
    AE_ERR_DEVICE,      // the compute device failed (a CUDA error)
    AE_ERR_NONFINITE,   // a computation gave Inf or NaN (training diverged)
} ae_status;

// Sets the message (printf-style) and returns `st`, so callers can `return ae_errorf(...)`.
ae_status ae_errorf(ae_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prepends "context: " to the current message (e.g. the file name) and returns `st`.
ae_status ae_error_wrap(ae_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ae_last_error(void);
void ae_error_clear(void);
const char *ae_status_name(ae_status st);

#define AE_TRY(expr)                        \
    do {                                    \
        ae_status ae_try_st_ = (expr);      \
        if (ae_try_st_ != AE_OK) return ae_try_st_; \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
