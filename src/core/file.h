// File helpers: whole-file reads, read-only mmap, atomic writes (temp file + fsync + rename),
// path joining.
#ifndef AE_CORE_FILE_H
#define AE_CORE_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "core/error.h"

// Reads a whole file into a NUL-terminated heap buffer (*len excludes the NUL).
ae_status ae_file_read_all(const char *path, char **out, size_t *len);

typedef struct {
    const unsigned char *data; // mapped bytes, read-only
    size_t size;
} ae_mmap;

ae_status ae_mmap_open(const char *path, ae_mmap *m);
void ae_mmap_close(ae_mmap *m);

int ae_path_exists(const char *path);
int ae_path_is_dir(const char *path);
// Removes a file or a folder with everything in it (no error if absent).
void ae_path_rmtree(const char *path);
// Joins dir and name with one '/'; returns a heap string or NULL (error set).
char *ae_path_join(const char *dir, const char *name);

// Writes a folder atomically: fill(ud, tmp) populates a fresh "<dir>.tmp.<pid>"; then an
// existing dir is moved to "<dir>.old", the new folder renamed to dir and "<dir>.old" removed.
// On failure the temp folder is removed and the previous dir stays (moved back if need be); if
// the process dies between the two renames, "<dir>.old" holds the previous folder.
typedef ae_status (*ae_dir_fill_fn)(void *ud, const char *tmp_dir);
ae_status ae_dir_write_atomic(const char *dir, ae_dir_fill_fn fill, void *ud);

// Atomic writer: bytes go to "<path>.tmp.<pid>"; commit fsyncs, renames over `path` and fsyncs
// the directory; abort (or a failed commit) removes the temp file, leaving `path` untouched.
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
    int failed;
} ae_atomic_file;

ae_status ae_atomic_open(ae_atomic_file *f, const char *path);
ae_status ae_atomic_write(ae_atomic_file *f, const void *data, size_t n);
ae_status ae_atomic_commit(ae_atomic_file *f);
void ae_atomic_abort(ae_atomic_file *f);

#endif
