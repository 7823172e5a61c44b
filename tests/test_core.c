// core/: error messages, atomic files, dtype conversion, progress lines.
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"
#include "core/progress.h"
#include "util/testutil.h"

static void test_error_wrap(void **state) {
    (void)state;
    ae_status st = ae_errorf(AE_ERR_FORMAT, "field %s: bad", "x");
    assert_int_equal(st, AE_ERR_FORMAT);
    ae_error_wrap(st, "file.json");
    assert_string_equal(ae_last_error(), "file.json: field x: bad");
}

static void test_bf16_f16_roundtrip(void **state) {
    (void)state;
    // every finite bf16 / f16 bit pattern survives f32 and back
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t b = (uint16_t)h;
        float f = ae_bf16_to_f32(b);
        if (!isnan(f)) assert_int_equal(ae_f32_to_bf16(f), b);
        float g = ae_f16_to_f32(b);
        if (!isnan(g)) assert_int_equal(ae_f32_to_f16(g), b);
    }
    assert_true(ae_f16_to_f32(0x3c00) == 1.0f);
    assert_true(ae_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(ae_bf16_to_f32(0x3f80) == 1.0f);
    // round to nearest even
    assert_int_equal(ae_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);
    assert_int_equal(ae_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);
    assert_int_equal(ae_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(ae_f32_to_f16(65519.0f), 0x7bff);
}

static void test_atomic_abort_leaves_old(void **state) {
    (void)state;
    char *dir = ae_test_tmpdir();
    char *path = ae_path_join(dir, "f.bin");
    assert_int_equal(ae_test_write_file(path, "old", 3), 0);
    ae_atomic_file f;
    assert_int_equal(ae_atomic_open(&f, path), AE_OK);
    assert_int_equal(ae_atomic_write(&f, "new-content", 11), AE_OK);
    ae_atomic_abort(&f);
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all(path, &buf, &len), AE_OK);
    assert_string_equal(buf, "old");
    free(buf);
    assert_int_equal(ae_atomic_open(&f, path), AE_OK);
    assert_int_equal(ae_atomic_write(&f, "new", 3), AE_OK);
    assert_int_equal(ae_atomic_commit(&f), AE_OK);
    assert_int_equal(ae_file_read_all(path, &buf, &len), AE_OK);
    assert_string_equal(buf, "new");
    free(buf);
    free(path);
    ae_test_rmtree(dir);
    free(dir);
}

static ae_status fill_ok(void *ud, const char *tmp) {
    char *p = ae_path_join(tmp, "f.txt");
    int rc = ae_test_write_file(p, ud, strlen(ud));
    free(p);
    return rc == 0 ? AE_OK : AE_ERR_IO;
}

static ae_status fill_fails(void *ud, const char *tmp) {
    assert_int_equal(fill_ok(ud, tmp), AE_OK); // half-written, then an error
    return ae_errorf(AE_ERR_IO, "disk full");
}

static void test_dir_write_atomic(void **state) {
    (void)state;
    char *root = ae_test_tmpdir(), *dir = ae_path_join(root, "out"), *f = ae_path_join(dir, "f.txt");
    char *buf;
    size_t len;
    assert_int_equal(ae_dir_write_atomic(dir, fill_ok, "one"), AE_OK);
    assert_int_equal(ae_dir_write_atomic(dir, fill_fails, "two"), AE_ERR_IO);
    assert_int_equal(ae_file_read_all(f, &buf, &len), AE_OK);
    assert_string_equal(buf, "one"); // the failed write left the previous folder
    free(buf);
    assert_int_equal(ae_test_count_entries(root), 1); // no temp or .old folder left
    assert_int_equal(ae_dir_write_atomic(dir, fill_ok, "three"), AE_OK);
    assert_int_equal(ae_file_read_all(f, &buf, &len), AE_OK);
    assert_string_equal(buf, "three");
    free(buf);
    assert_int_equal(ae_test_count_entries(root), 1);
    ae_test_rmtree(root);
    free(root), free(dir), free(f);
}

// A write that died between its two renames leaves "<dir>.old" as the only previous folder;
// the next write must keep it until its own folder is in place. Here that next write is killed
// (AE_TEST_KILL_POINT, in a child) just before its rename: "<dir>.old" must still be there. A
// third write then succeeds and leaves no temp or .old folder.
static void test_dir_write_atomic_keeps_old(void **state) {
    (void)state;
    char *root = ae_test_tmpdir(), *dir = ae_path_join(root, "out"), *old = ae_path_join(root, "out.old");
    char *oldf = ae_path_join(old, "f.txt"), *f = ae_path_join(dir, "f.txt"), *buf;
    size_t len;
    assert_int_equal(ae_dir_write_atomic(dir, fill_ok, "one"), AE_OK);
    assert_int_equal(rename(dir, old), 0); // died between the renames: only out.old
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("AE_TEST_KILL_POINT", "dir-old-moved", 1);
        ae_dir_write_atomic(dir, fill_ok, "two");
        _exit(0); // not reached
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    assert_false(ae_path_exists(dir));
    assert_int_equal(ae_file_read_all(oldf, &buf, &len), AE_OK); // the previous folder survives
    assert_string_equal(buf, "one");
    free(buf);
    assert_int_equal(ae_dir_write_atomic(dir, fill_ok, "three"), AE_OK);
    assert_int_equal(ae_file_read_all(f, &buf, &len), AE_OK);
    assert_string_equal(buf, "three");
    free(buf);
    assert_int_equal(ae_test_count_entries(root), 1); // the dead child's temp folder and out.old gone
    ae_test_rmtree(root);
    free(root), free(dir), free(old), free(oldf), free(f);
}

static void test_read_missing_names_file(void **state) {
    (void)state;
    char *buf;
    size_t len;
    assert_int_equal(ae_file_read_all("/nonexistent/x.json", &buf, &len), AE_ERR_IO);
    assert_non_null(strstr(ae_last_error(), "/nonexistent/x.json"));
}

// What a progress writer has written so far (its stream a tmpfile).
static const char *written(ae_progress *p, char *buf, size_t cap) {
    fflush(p->out);
    long n = ftell(p->out);
    assert_true(n >= 0 && (size_t)n < cap);
    rewind(p->out);
    assert_int_equal(fread(buf, 1, (size_t)n, p->out), (size_t)n);
    buf[n] = 0;
    return buf;
}

// Progress lines: nothing within the first interval, whole lines in a log, one rewritten line
// on a terminal, the end's line only after another (or always when asked).
static void test_progress(void **state) {
    (void)state;
    char buf[256];
    for (int tty = 0; tty < 2; tty++) {
        ae_progress p;
        ae_progress_start(&p, 0);
        p.out = tmpfile(), p.tty = tty;
        assert_non_null(p.out);
        assert_false(ae_progress_due(&p, 0)); // the interval has not passed
        assert_false(ae_progress_due(&p, 1)); // nothing shown: a short run ends quietly
        p.last -= tty ? 0.6 : 10.5;           // as if the interval had passed
        assert_true(ae_progress_due(&p, 0));
        ae_progress_line(&p, 0, "x: %d done", 1);
        assert_false(ae_progress_due(&p, 0)); // just written
        assert_true(ae_progress_due(&p, 1));  // the end closes what was shown
        ae_progress_line(&p, 1, "x: %d done", 2);
        assert_string_equal(written(&p, buf, sizeof buf),
                            tty ? "\rx: 1 done\033[K\rx: 2 done\033[K\n" : "x: 1 done\nx: 2 done\n");
        assert_true(ae_progress_elapsed(&p) >= 0);
        fclose(p.out);
    }
    ae_progress p;
    ae_progress_start(&p, 1); // a summary at the end, even of a short run
    p.out = tmpfile(), p.tty = 0;
    assert_non_null(p.out);
    assert_false(ae_progress_due(&p, 0));
    assert_true(ae_progress_due(&p, 1));
    ae_progress_line(&p, 1, "task: %d items/s", 7);
    assert_string_equal(written(&p, buf, sizeof buf), "task: 7 items/s\n");
    fclose(p.out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_error_wrap),
        cmocka_unit_test(test_bf16_f16_roundtrip),
        cmocka_unit_test(test_atomic_abort_leaves_old),
        cmocka_unit_test(test_read_missing_names_file),
        cmocka_unit_test(test_dir_write_atomic),
        cmocka_unit_test(test_dir_write_atomic_keeps_old),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
