#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE // syscall(SYS_getdents64) in the signal handler
#include "core/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/killpoint.h"
#include "core/mem.h"

// "a folder", "a character device"... for messages about a path that is not a regular file.
static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a folder";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a pipe";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

// Refuses what ae_file_read_all does not read (see file.h).
static ae_status check_readable(const char *path, int fd, const struct stat *st) {
    if (S_ISDIR(st->st_mode)) return ae_errorf(AE_ERR_IO, "%s: is a folder, expected a file", path);
    if ((S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) && !isatty(fd))
        return ae_errorf(AE_ERR_IO, "%s: is %s, expected a file (or a pipe)", path,
                         file_kind(st->st_mode));
    if (S_ISREG(st->st_mode) && (uintmax_t)st->st_size > AE_FILE_READ_MAX)
        return ae_errorf(AE_ERR_IO, "%s: %lld bytes, more than the 1 GiB limit on files read whole",
                         path, (long long)st->st_size);
    return AE_OK;
}

// Reads fd to its end, at most AE_FILE_READ_MAX bytes; hint: the expected size (0: unknown).
static ae_status read_bounded(int fd, const char *path, size_t hint, char **out, size_t *len) {
    const size_t max = AE_FILE_READ_MAX;
    size_t cap = (hint ? hint : (size_t)1 << 16) + 2, n = 0; // +2: one byte past the end, the NUL
    if (cap > max + 2) cap = max + 2;
    char *buf = ae_malloc(cap);
    if (!buf) return AE_ERR_NOMEM;
    for (;;) {
        if (n + 1 >= cap) { // full; n <= max here, so cap < max + 2
            size_t nc = cap > (max + 2) / 2 ? max + 2 : 2 * cap;
            char *nb = ae_realloc(buf, nc);
            if (!nb) {
                free(buf);
                return AE_ERR_NOMEM;
            }
            buf = nb;
            cap = nc;
        }
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            return ae_errorf(AE_ERR_IO, "%s: read error: %s", path, strerror(e));
        }
        if (got == 0) break;
        n += (size_t)got;
        if (n > max) {
            free(buf);
            return ae_errorf(AE_ERR_IO, "%s: more than 1 GiB without reaching its end (the limit "
                             "on files read whole)", path);
        }
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return AE_OK;
}

ae_status ae_file_read_all(const char *path, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ae_errorf(AE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    ae_status s = fstat(fd, &st) != 0
                      ? ae_errorf(AE_ERR_IO, "%s: cannot stat: %s", path, strerror(errno))
                      : check_readable(path, fd, &st);
    if (s == AE_OK) s = read_bounded(fd, path, S_ISREG(st.st_mode) ? (size_t)st.st_size : 0, out, len);
    close(fd);
    return s;
}

ae_status ae_file_check_regular(const char *what, const char *path, const char *expected) {
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? ae_errorf(AE_ERR_ARG, "%s '%s' does not exist", what, path)
                               : ae_errorf(AE_ERR_ARG, "%s '%s': cannot access: %s", what, path,
                                           strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ae_errorf(AE_ERR_ARG, "%s '%s' is %s, expected %s", what, path,
                         file_kind(st.st_mode), expected);
    return AE_OK;
}

ae_status ae_mmap_open(const char *path, ae_mmap *m) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ae_errorf(AE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return ae_errorf(AE_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ae_errorf(AE_ERR_IO, "%s: is %s, expected a file", path, file_kind(st.st_mode));
    }
    if (st.st_size == 0) {
        close(fd);
        m->data = (const unsigned char *)"";
        return AE_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return ae_errorf(AE_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    m->data = p;
    m->size = (size_t)st.st_size;
    return AE_OK;
}

void ae_mmap_close(ae_mmap *m) {
    if (m->data && m->size) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

int ae_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int ae_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void ae_path_rmtree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

// ---------------------------------------------------------------------------------------------
// Canonical paths and outputs against inputs

// Copy of path[0..n) (n > 0), or "." for n == 0.
static char *prefix_dup(const char *path, size_t n) { return n ? ae_strndup(path, n) : ae_strdup("."); }

char *ae_path_canonical(const char *path) {
    char *r = realpath(path, NULL);
    if (r) return r;
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t s = n; // path[s..n): the last component
    while (s > 0 && path[s - 1] != '/') s--;
    if (n == 0 || s == n || (s == 0 && n == 1 && path[0] == '.')) {
        ae_errorf(AE_ERR_IO, "'%s': cannot resolve the path: %s", path, strerror(errno));
        return NULL;
    }
    char *parent = prefix_dup(path, s);
    char *cp = parent ? ae_path_canonical(parent) : NULL; // the parent is shorter: this ends
    free(parent);
    if (!cp) return NULL;
    const char *base = path + s;
    size_t bl = n - s;
    if (bl == 1 && base[0] == '.') return cp;
    if (bl == 2 && base[0] == '.' && base[1] == '.') {
        char *slash = strrchr(cp, '/');
        if (slash) slash[slash == cp] = '\0'; // "/a/b" -> "/a", "/a" -> "/"
        return cp;
    }
    char *name = ae_strndup(base, bl);
    char *joined = name ? ae_path_join(cp, name) : NULL;
    free(name);
    free(cp);
    return joined;
}

// 1 if the canonical path c lies strictly inside the canonical folder path dir.
static int below_prefix(const char *c, const char *dir) {
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/') return strcmp(c, "/") != 0;
    return strncmp(c, dir, n) == 0 && c[n] == '/';
}

// 1 if a proper ancestor of the canonical path c is the file st (same device and inode).
static int below_inode(const char *c, const struct stat *st) {
    char *p = ae_strdup(c);
    int hit = 0;
    while (p && !hit && strcmp(p, "/") != 0) {
        char *slash = strrchr(p, '/');
        if (!slash) break;
        slash[slash == p] = '\0';
        struct stat a;
        hit = stat(p, &a) == 0 && a.st_dev == st->st_dev && a.st_ino == st->st_ino;
    }
    free(p);
    return hit;
}

ae_status ae_path_check_output(const char *out_what, const char *out, const char *in_what,
                               const char *in) {
    if (!out || !in) return AE_OK;
    char *co = ae_path_canonical(out), *ci = co ? ae_path_canonical(in) : NULL;
    if (!co || !ci) {
        free(co);
        return ae_error_wrap(AE_ERR_IO, "%s", out_what);
    }
    struct stat so, si;
    int have_o = stat(co, &so) == 0, have_i = stat(ci, &si) == 0;
    int same_path = !strcmp(co, ci);
    ae_status st = AE_OK;
    if (same_path || (have_o && have_i && so.st_dev == si.st_dev && so.st_ino == si.st_ino))
        st = ae_errorf(AE_ERR_ARG, "%s '%s' is the same %s as %s '%s' (%s%s): refusing to "
                       "overwrite an input", out_what, out,
                       have_i && S_ISDIR(si.st_mode) ? "folder" : "file", in_what, in, ci,
                       same_path ? "" : ", a hard link to it");
    else if (below_prefix(co, ci) || (have_i && below_inode(co, &si)))
        st = ae_errorf(AE_ERR_ARG, "%s '%s' is inside %s '%s' (%s): write the output elsewhere",
                       out_what, out, in_what, in, ci);
    else if (below_prefix(ci, co) || (have_o && below_inode(ci, &so)))
        st = ae_errorf(AE_ERR_ARG, "%s '%s' contains %s '%s' (%s): writing it would replace that "
                       "input", out_what, out, in_what, in, ci);
    free(co);
    free(ci);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Temp files and folders of atomic writes: registry for the signal handler, stale temps

enum { TMP_FREE, TMP_BUSY, TMP_FILE, TMP_DIR };
#define TMP_SLOTS 16
#define TMP_PATH_MAX 4096
static char g_tmp_path[TMP_SLOTS][TMP_PATH_MAX];
static atomic_int g_tmp_state[TMP_SLOTS];

// Removes the entries of a folder (not recursing) and the folder, with async-signal-safe calls.
static void sig_rmdir(const char *path) {
#if defined(__linux__) && defined(SYS_getdents64)
    struct dent64 {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
    };
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        _Alignas(8) char buf[4096];
        int removed = 1;
        for (int pass = 0; pass < 8 && removed; pass++) { // listing while removing may skip some
            removed = 0;
            lseek(fd, 0, SEEK_SET);
            long n;
            while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0)
                for (long off = 0; off < n;) {
                    const struct dent64 *d = (const void *)(buf + off);
                    removed |= unlinkat(fd, d->name, 0) == 0;
                    off += d->reclen;
                }
        }
        close(fd);
    }
#endif
    rmdir(path);
}

static void on_signal(int sig) {
    if (sig == SIGXFSZ) return; // the write fails with EFBIG; its error path removes the temp
    int saved = errno;
    for (int kind = TMP_FILE; kind <= TMP_DIR; kind++) // files first: they may be in a temp folder
        for (int i = 0; i < TMP_SLOTS; i++)
            if (atomic_load(&g_tmp_state[i]) == kind) {
                if (kind == TMP_FILE) unlink(g_tmp_path[i]);
                else sig_rmdir(g_tmp_path[i]);
            }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig); // delivered when the handler returns: the process dies of it as it would have
    errno = saved;
}

// Installs on_signal for the signals still at their default action (once).
static void install_handlers(void) {
    static atomic_int done;
    if (atomic_exchange(&done, 1)) return;
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGXFSZ};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0 || (old.sa_flags & SA_SIGINFO) ||
            old.sa_handler != SIG_DFL)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigaction(sigs[i], &sa, NULL);
    }
}

// Registers a temp path for removal on a signal; returns its slot + 1, or 0 when not registered
// (too long, or every slot taken: then only the next run's stale-temp sweep removes it).
static int tmp_register(const char *path, int kind) {
    size_t n = strlen(path);
    if (n >= TMP_PATH_MAX) return 0;
    install_handlers();
    for (int i = 0; i < TMP_SLOTS; i++) {
        int expect = TMP_FREE;
        if (atomic_compare_exchange_strong(&g_tmp_state[i], &expect, TMP_BUSY)) {
            memcpy(g_tmp_path[i], path, n + 1);
            atomic_store(&g_tmp_state[i], kind);
            return i + 1;
        }
    }
    return 0;
}

static void tmp_unregister(int reg) {
    if (reg > 0) atomic_store(&g_tmp_state[reg - 1], TMP_FREE);
}

// 1 if s is a pid (1 to 9 digits) of a process that is gone.
static int is_dead_pid(const char *s) {
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 9 || s[n] != '\0') return 0;
    long pid = strtol(s, NULL, 10);
    return pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

// Removes the "<path>.tmp.<pid>" files or folders beside path whose process is gone.
static void remove_stale_temps(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t s = n;
    while (s > 0 && path[s - 1] != '/') s--;
    char *dir = prefix_dup(path, s), *prefix = ae_malloc(n - s + 6);
    DIR *d = dir && prefix ? opendir(dir) : NULL;
    if (d) {
        snprintf(prefix, n - s + 6, "%.*s.tmp.", (int)(n - s), path + s);
        size_t pl = strlen(prefix);
        for (struct dirent *e; (e = readdir(d));) {
            if (strncmp(e->d_name, prefix, pl) != 0 || !is_dead_pid(e->d_name + pl)) continue;
            char *stale = ae_path_join(dir, e->d_name);
            if (stale) ae_path_rmtree(stale);
            free(stale);
        }
        closedir(d);
    }
    free(dir);
    free(prefix);
}

void ae_dir_remove_stale(const char *dir) {
    remove_stale_temps(dir);
    if (!ae_path_exists(dir)) return; // "<dir>.old" may be the only copy
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    char *old = ae_malloc(dl + 8);
    if (!old) return;
    snprintf(old, dl + 8, "%.*s.old", (int)dl, dir);
    ae_path_rmtree(old);
    free(old);
}

ae_status ae_dir_write_atomic(const char *dir, ae_dir_fill_fn fill, void *ud) {
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--; // "out/" -> "out.tmp.<pid>", not "out/.tmp.<pid>"
    size_t n = dl + 48;
    char *tmp = ae_malloc(n), *old = ae_malloc(n);
    ae_status st = (tmp && old) ? AE_OK : AE_ERR_NOMEM;
    int reg = 0;
    if (st == AE_OK) {
        snprintf(tmp, n, "%.*s.tmp.%ld", (int)dl, dir, (long)getpid());
        snprintf(old, n, "%.*s.old", (int)dl, dir);
        remove_stale_temps(dir);
        ae_path_rmtree(tmp);
        reg = tmp_register(tmp, TMP_DIR);
        if (mkdir(tmp, 0755) != 0)
            st = ae_errorf(AE_ERR_IO, "%.*s: cannot create folder: %s", (int)dl, dir, strerror(errno));
    }
    if (st == AE_OK) st = fill(ud, tmp);
    if (st == AE_OK) ae_kill_point("dir-filled");
    int had_old = 0;
    if (st == AE_OK) {
        // Without dir, "<dir>.old" may be the only previous folder (a write that died between
        // its renames): it is removed only once the new folder is in place.
        had_old = ae_path_exists(dir);
        if (had_old) ae_path_rmtree(old);
        if (had_old && rename(dir, old) != 0)
            st = ae_errorf(AE_ERR_IO, "%s: cannot move the previous folder aside: %s", dir,
                           strerror(errno));
    }
    if (st == AE_OK) {
        ae_kill_point("dir-old-moved");
        if (rename(tmp, dir) != 0) {
            st = ae_errorf(AE_ERR_IO, "%s: cannot rename %s into place: %s", dir, tmp,
                           strerror(errno));
            if (had_old) rename(old, dir);
        } else {
            ae_kill_point("dir-renamed");
            ae_path_rmtree(old);
        }
    }
    if (st != AE_OK && tmp) ae_path_rmtree(tmp);
    tmp_unregister(reg);
    free(tmp);
    free(old);
    return st;
}

char *ae_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    while (a > 1 && dir[a - 1] == '/') a--;
    if (a == 1 && dir[0] == '/') a = 0; // "/" + "x" -> "/x"
    char *s = ae_malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, name, b + 1);
    return s;
}

ae_status ae_atomic_open(ae_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = ae_strdup(path);
    f->tmp_path = ae_malloc(strlen(path) + 32);
    if (!f->path || !f->tmp_path) {
        ae_atomic_abort(f);
        return AE_ERR_NOMEM;
    }
    snprintf(f->tmp_path, strlen(path) + 32, "%s.tmp.%ld", path, (long)getpid());
    remove_stale_temps(path);
    f->reg_ = tmp_register(f->tmp_path, TMP_FILE); // before it exists: no window without cleanup
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        // named as the user named it: the temp file beside it is ours
        ae_status st = ae_errorf(AE_ERR_IO, "%s: cannot create: %s", f->path, strerror(errno));
        ae_atomic_abort(f);
        return st;
    }
    return AE_OK;
}

ae_status ae_atomic_write(ae_atomic_file *f, const void *data, size_t n) {
    if (f->failed) return AE_ERR_IO;
    if (n && fwrite(data, 1, n, f->fp) != n) {
        f->failed = 1;
        return ae_errorf(AE_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
    }
    return AE_OK;
}

static void fsync_parent_dir(const char *path) {
    char *copy = ae_strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

ae_status ae_atomic_commit(ae_atomic_file *f) {
    ae_status st = AE_OK;
    if (f->failed) st = AE_ERR_IO;
    else if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
        st = ae_errorf(AE_ERR_IO, "%s: flush failed: %s", f->path, strerror(errno));
    if (fclose(f->fp) != 0 && st == AE_OK)
        st = ae_errorf(AE_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
    f->fp = NULL;
    if (st == AE_OK) ae_kill_point("file-synced");
    if (st == AE_OK && rename(f->tmp_path, f->path) != 0)
        st = ae_errorf(AE_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
    if (st == AE_OK) fsync_parent_dir(f->path);
    ae_atomic_abort(f); // removes the temp file if it is still there, frees names
    return st;
}

void ae_atomic_abort(ae_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    tmp_unregister(f->reg_);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}
