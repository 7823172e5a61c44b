#define _XOPEN_SOURCE 700
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"

ae_status ae_file_read_all(const char *path, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ae_errorf(AE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || S_ISDIR(st.st_mode)) {
        fclose(fp);
        return ae_errorf(AE_ERR_IO, "%s: not a regular file", path);
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
    char *buf = ae_malloc(cap);
    if (!buf) {
        fclose(fp);
        return AE_ERR_NOMEM;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = ae_realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(fp);
                return AE_ERR_NOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, fp);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        return ae_errorf(AE_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return AE_OK;
}

ae_status ae_mmap_open(const char *path, ae_mmap *m) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ae_errorf(AE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ae_errorf(AE_ERR_IO, "%s: not a regular file", path);
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

ae_status ae_dir_write_atomic(const char *dir, ae_dir_fill_fn fill, void *ud) {
    size_t n = strlen(dir) + 48;
    char *tmp = ae_malloc(n), *old = ae_malloc(n);
    ae_status st = (tmp && old) ? AE_OK : AE_ERR_NOMEM;
    if (st == AE_OK) {
        snprintf(tmp, n, "%s.tmp.%ld", dir, (long)getpid());
        snprintf(old, n, "%s.old", dir);
        ae_path_rmtree(tmp);
        if (mkdir(tmp, 0755) != 0)
            st = ae_errorf(AE_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
    }
    if (st == AE_OK) st = fill(ud, tmp);
    int had_old = 0;
    if (st == AE_OK) {
        ae_path_rmtree(old);
        had_old = ae_path_exists(dir);
        if (had_old && rename(dir, old) != 0)
            st = ae_errorf(AE_ERR_IO, "%s: cannot move the previous folder aside: %s", dir,
                           strerror(errno));
        else if (rename(tmp, dir) != 0) {
            st = ae_errorf(AE_ERR_IO, "%s: cannot rename %s into place: %s", dir, tmp,
                           strerror(errno));
            if (had_old) rename(old, dir);
        } else if (had_old) {
            ae_path_rmtree(old);
        }
    }
    if (st != AE_OK && tmp) ae_path_rmtree(tmp);
    free(tmp);
    free(old);
    return st;
}

char *ae_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    while (a > 1 && dir[a - 1] == '/') a--;
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
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        ae_status st = ae_errorf(AE_ERR_IO, "%s: cannot create: %s", f->tmp_path, strerror(errno));
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
    if (st == AE_OK && rename(f->tmp_path, f->path) != 0)
        st = ae_errorf(AE_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
    if (st == AE_OK) fsync_parent_dir(f->path);
    ae_atomic_abort(f); // removes the temp file if it is still there, frees names
    return st;
}

void ae_atomic_abort(ae_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->path);
    free(f->tmp_path);
    memset(f, 0, sizeof *f);
}
