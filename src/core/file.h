// File helpers: whole-file reads, read-only mmap, atomic writes (temp file + fsync + rename),
// path joining and comparison.
#ifndef AE_CORE_FILE_H
#define AE_CORE_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "core/error.h"

// Largest file ae_file_read_all reads: 1 GiB.
#define AE_FILE_READ_MAX ((size_t)1 << 30)

// Reads a whole file into a NUL-terminated heap buffer (*len excludes the NUL). Regular files,
// pipes and terminals are read; a folder or another device is refused, and so is anything over
// AE_FILE_READ_MAX (a regular file by its size, a pipe once that much has been read), each with
// one message naming the path.
ae_status ae_file_read_all(const char *path, char **out, size_t *len);

// AE_OK when path names an existing regular file; else AE_ERR_ARG "<what> '<path>' does not
// exist" / "... is a folder, expected <expected>" / "... is a character device, expected ...".
ae_status ae_file_check_regular(const char *what, const char *path, const char *expected);

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
// Absolute path with symlinks resolved, also for a path that does not exist yet: realpath of
// its deepest existing ancestor, then the remaining components ("." and ".." applied). Heap
// string, or NULL (error set).
char *ae_path_canonical(const char *path);
// AE_ERR_ARG naming both paths when the output `out` is the same file as the input `in` (same
// canonical path, or the same inode: hard links), contains it, or lies inside it; else AE_OK.
// out_what / in_what say which argument each is ("--out", "--teacher", "input").
ae_status ae_path_check_output(const char *out_what, const char *out, const char *in_what,
                               const char *in);

// Temp files and folders of atomic writes ("<path>.tmp.<pid>"):
//  - while one exists, SIGINT, SIGTERM and SIGHUP remove it (async-signal-safe calls; a folder's
//    files too) before the process dies of the signal as it would have; the handlers are
//    installed at the first atomic write, for the signals still at their default action;
//  - SIGXFSZ (file-size limit) at its default action is caught and ignored, so that the write
//    fails with EFBIG and the normal error path removes the temp file and reports it;
//  - one left by a process that is gone (kill(pid, 0) fails with ESRCH: SIGKILL, power loss)
//    is removed by the next atomic write of the same path. (A pid is only checked on this host,
//    in this pid namespace.)

// Writes a folder atomically: fill(ud, tmp) populates a fresh "<dir>.tmp.<pid>"; then an
// existing dir is moved to "<dir>.old", the new folder renamed to dir and "<dir>.old" removed.
// On failure the temp folder is removed and the previous dir stays (moved back if need be); if
// the process dies between the two renames, "<dir>.old" holds the previous folder (and is kept
// by the next write until that one's new folder is in place).
typedef ae_status (*ae_dir_fill_fn)(void *ud, const char *tmp_dir);
ae_status ae_dir_write_atomic(const char *dir, ae_dir_fill_fn fill, void *ud);
// What an interrupted ae_dir_write_atomic of dir left: "<dir>.tmp.<pid>" of processes that are
// gone, and "<dir>.old" when dir exists (the write died after its rename). For readers that
// continue from dir without writing it again (resuming a run).
void ae_dir_remove_stale(const char *dir);

// Atomic writer: bytes go to "<path>.tmp.<pid>"; commit fsyncs, renames over `path` and fsyncs
// the directory; abort (or a failed commit) removes the temp file, leaving `path` untouched.
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
    int failed;
    int reg_; // internal: temp-path registry slot + 1 (0: none)
} ae_atomic_file;

ae_status ae_atomic_open(ae_atomic_file *f, const char *path);
ae_status ae_atomic_write(ae_atomic_file *f, const void *data, size_t n);
ae_status ae_atomic_commit(ae_atomic_file *f);
void ae_atomic_abort(ae_atomic_file *f);

#endif
