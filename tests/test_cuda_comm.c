// dist/comm over NCCL (issue 12): two GPU ranks started by this program the way `--gpus 2` starts
// them (AE_DIST_RANK, AE_DIST_SIZE, AE_DIST_LOCAL_RANK, AE_DIST_LOCAL_SIZE and an NCCL id from
// ae_dist_nccl_id_hex in the environment of a fresh copy of this program, argv[1] =
// "--rank-child"). Each rank opens cuda:<rank> (ae_dist_device_name), the communicator, and
// checks against host-computed expectations (small integers: every sum is exact):
// allreduce_sum of F32 device buffers (one of 1M values), allreduce_host, broadcast of F32, BF16
// and I32 buffers from rank 1, broadcast_many (buffers of several dtypes from both roots in one
// call; 1500 buffers, more than one NCCL group holds), send/recv (F32 and BF16 from rank 1 to
// rank 0 in order, I32 back; peers outside the group or the rank itself refused),
// allgather_host, barrier, and the sameness check (equal digests pass; rank 1's different digest
// fails on both ranks naming rank 1).
// Then, in this process, a rank whose local rank has no GPU is refused before NCCL starts ("this
// host has k GPUs for its m ranks").
// Needs a CUDA build with NCCL and 2 GPUs: prints "SKIP ..." and exits 77 otherwise
// (AE_REQUIRE_GPU=1: no GPU at all, or a build without NCCL, fails instead; one GPU skips).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/sha256.h"
#include "dist/comm.h"
#include "util/testutil.h"

#if defined(AE_HAVE_CUDA) && defined(AE_HAVE_NCCL)

static int g_fail, g_rank;

static char g_who[32] = ""; // "rank r: " once the rank is known
#define CHECK(cond, ...) AE_TEST_CHECK(g_fail, g_who, cond, __VA_ARGS__)

// F32 device buffer holding host values x (n).
static ae_ptr device_f32(const ae_backend *be, const float *x, size_t n, ae_dtype dt) {
    ae_ptr p = be->alloc(be, n, dt);
    if (p.data && be->upload(be, p, x, AE_DT_F32, n) != AE_OK) {
        be->free(be, p);
        p = ae_ptr_null();
    }
    return p;
}

static int rank_child(void) {
    ae_dist_env e;
    if (ae_dist_env_read(&e) != AE_OK) {
        printf("rank ?: FAIL ae_dist_env_read: %s\n", ae_last_error());
        return 1;
    }
    int r = g_rank = e.rank;
    snprintf(g_who, sizeof g_who, "rank %d: ", e.rank);
    CHECK(e.launcher == AE_LAUNCH_ATTNEDIT && e.size == 2 && e.nccl_id[0], "environment");
    char dev[32];
    ae_dist_device_name(&e, "cuda", dev, sizeof dev);
    char want_dev[32];
    snprintf(want_dev, sizeof want_dev, "cuda:%d", r);
    CHECK(strcmp(dev, want_dev) == 0, "device %s", dev);
    const ae_backend *be;
    if (ae_backend_open(dev, &be) != AE_OK) {
        printf("rank %d: FAIL opening %s: %s\n", r, dev, ae_last_error());
        return 1;
    }
    ae_comm *c = NULL;
    ae_status st = ae_comm_open(&e, be, &c);
    if (st != AE_OK) {
        printf("rank %d: FAIL ae_comm_open: %s\n", r, ae_last_error());
        return 1;
    }
    CHECK(strcmp(ae_comm_kind(c), "nccl") == 0 && ae_comm_rank(c) == r && ae_comm_size(c) == 2,
          "comm %s rank %d size %d", ae_comm_kind(c), ae_comm_rank(c), ae_comm_size(c));
    ae_comm_set_where(c, "test_cuda_comm");

    // allreduce_sum: three F32 buffers in one group
    size_t ns[3] = {1, 1000, ((size_t)1 << 20) + 3};
    float *host[3];
    ae_ptr xs[3];
    for (int b = 0; b < 3; b++) {
        host[b] = malloc(ns[b] * sizeof(float));
        for (size_t i = 0; i < ns[b]; i++) host[b][i] = (float)((r + 1) * (int)(i % 997) - b);
        xs[b] = device_f32(be, host[b], ns[b], AE_DT_F32);
        CHECK(xs[b].data, "alloc: %s", ae_last_error());
    }
    st = ae_comm_allreduce_sum(c, xs, ns, 3);
    CHECK(st == AE_OK, "allreduce_sum: %s", ae_last_error());
    for (int b = 0; b < 3; b++) {
        CHECK(be->download(be, host[b], AE_DT_F32, xs[b], ns[b]) == AE_OK, "download: %s",
              ae_last_error());
        size_t bad = 0;
        for (size_t i = 0; i < ns[b]; i++) bad += host[b][i] != (float)(3 * (int)(i % 997) - 2 * b);
        CHECK(bad == 0, "allreduce_sum: buffer %d: %zu of %zu values wrong", b, bad, ns[b]);
        be->free(be, xs[b]);
        free(host[b]);
    }

    // sums that round: both ranks must hold the same bits (the replicas stay identical)
    {
        size_t nr = 300007;
        float *x = malloc(nr * sizeof *x);
        ae_rng rng;
        ae_rng_seed(&rng, 99u + (uint64_t)r);
        ae_test_fill_normal(x, nr, 1.0f, &rng);
        ae_ptr px = device_f32(be, x, nr, AE_DT_F32);
        CHECK(px.data, "alloc");
        CHECK(ae_comm_allreduce_sum(c, &px, &nr, 1) == AE_OK, "allreduce_sum (random): %s",
              ae_last_error());
        CHECK(be->download(be, x, AE_DT_F32, px, nr) == AE_OK, "download");
        uint8_t dx[32];
        ae_sha256(x, nr * sizeof *x, dx);
        CHECK(ae_comm_check_same(c, dx, "sum of random values", NULL) == AE_OK, "%s",
              ae_last_error());
        be->free(be, px);
        free(x);
    }

    double h[2] = {0.5 + r, -1.0 * r};
    st = ae_comm_allreduce_host(c, h, 2);
    CHECK(st == AE_OK && h[0] == 2.0 && h[1] == -1.0, "allreduce_host: %s (%g %g)",
          ae_last_error(), h[0], h[1]);

    // broadcast from rank 1: F32, BF16 (bytes) and I32
    float v[300], back[300];
    for (int i = 0; i < 300; i++) v[i] = r == 1 ? (float)(i - 150) : 9999.0f;
    ae_ptr pf = device_f32(be, v, 300, AE_DT_F32), pb = device_f32(be, v, 300, AE_DT_BF16);
    int32_t iv[5], iback[5];
    for (int i = 0; i < 5; i++) iv[i] = r == 1 ? 1000 * i + 7 : -1;
    ae_ptr pi = be->alloc(be, 5, AE_DT_I32);
    CHECK(pf.data && pb.data && pi.data, "alloc: %s", ae_last_error());
    CHECK(be->upload(be, pi, iv, AE_DT_I32, 5) == AE_OK, "upload: %s", ae_last_error());
    CHECK(ae_comm_broadcast(c, pf, 300, 1) == AE_OK, "broadcast F32: %s", ae_last_error());
    CHECK(ae_comm_broadcast(c, pb, 300, 1) == AE_OK, "broadcast BF16: %s", ae_last_error());
    CHECK(ae_comm_broadcast(c, pi, 5, 1) == AE_OK, "broadcast I32: %s", ae_last_error());
    CHECK(be->download(be, back, AE_DT_F32, pf, 300) == AE_OK, "download");
    for (int i = 0; i < 300; i++) CHECK(back[i] == (float)(i - 150), "F32[%d] = %g", i, back[i]);
    CHECK(be->download(be, back, AE_DT_F32, pb, 300) == AE_OK, "download");
    for (int i = 0; i < 300; i++) CHECK(back[i] == (float)(i - 150), "BF16[%d] = %g", i, back[i]);
    CHECK(be->download(be, iback, AE_DT_I32, pi, 5) == AE_OK, "download");
    for (int i = 0; i < 5; i++) CHECK(iback[i] == 1000 * i + 7, "I32[%d] = %d", i, iback[i]);
    be->free(be, pf);
    be->free(be, pb);
    be->free(be, pi);

    // broadcast_many: buffers from both roots in one call (F32 from rank 1, I32 from rank 0, an
    // empty one, BF16 from rank 1, 1M F32 values from rank 0; the other rank starts with other
    // values), then 1500 buffers of 4 values, buffer j from rank j % 2 (more operations than one
    // NCCL group takes: comm_nccl.cu splits them into groups of 1024)
    {
        size_t nbig = ((size_t)1 << 20) + 7;
        float f[33], *hb = malloc(nbig * sizeof *hb);
        int32_t i0[6], iget[6];
        for (int i = 0; i < 33; i++) f[i] = r == 1 ? (float)(3 * i - 40) : -9.0f;
        for (int i = 0; i < 6; i++) i0[i] = r == 0 ? 500 - i : -1;
        for (size_t i = 0; i < nbig; i++) hb[i] = r == 0 ? (float)((int)(i % 2039) - 1000) : 1e9f;
        ae_ptr bx[5] = {device_f32(be, f, 33, AE_DT_F32), be->alloc(be, 6, AE_DT_I32), ae_ptr_null(),
                        device_f32(be, f, 33, AE_DT_BF16), device_f32(be, hb, nbig, AE_DT_F32)};
        CHECK(bx[0].data && bx[1].data && bx[3].data && bx[4].data, "alloc: %s", ae_last_error());
        CHECK(be->upload(be, bx[1], i0, AE_DT_I32, 6) == AE_OK, "upload: %s", ae_last_error());
        size_t bn[5] = {33, 6, 0, 33, nbig};
        int broots[5] = {1, 0, 0, 1, 0};
        CHECK(ae_comm_broadcast_many(c, bx, bn, broots, 5) == AE_OK, "broadcast_many: %s",
              ae_last_error());
        for (int b = 0; b < 4; b += 3) { // F32 and BF16: small integers, exact in both
            CHECK(be->download(be, f, AE_DT_F32, bx[b], 33) == AE_OK, "download");
            for (int i = 0; i < 33; i++)
                CHECK(f[i] == (float)(3 * i - 40), "broadcast_many: buffer %d [%d] = %g", b, i, f[i]);
        }
        CHECK(be->download(be, iget, AE_DT_I32, bx[1], 6) == AE_OK, "download");
        for (int i = 0; i < 6; i++) CHECK(iget[i] == 500 - i, "broadcast_many: I32[%d] = %d", i, iget[i]);
        CHECK(be->download(be, hb, AE_DT_F32, bx[4], nbig) == AE_OK, "download");
        size_t badb = 0;
        for (size_t i = 0; i < nbig; i++) badb += hb[i] != (float)((int)(i % 2039) - 1000);
        CHECK(badb == 0, "broadcast_many: %zu of %zu values of the large buffer wrong", badb, nbig);
        for (int b = 0; b < 5; b++)
            if (bx[b].data) be->free(be, bx[b]);
        free(hb);

        enum { NM = 1500, W = 4 };
        float *hm = malloc(NM * W * sizeof *hm);
        ae_ptr *mx = malloc(NM * sizeof *mx);
        size_t *mn = malloc(NM * sizeof *mn);
        int *mr = malloc(NM * sizeof *mr);
        for (int j = 0; j < NM; j++)
            for (int q = 0; q < W; q++) hm[W * j + q] = j % 2 == r ? (float)(W * j + q) : -1.0f;
        ae_ptr all = device_f32(be, hm, NM * W, AE_DT_F32);
        CHECK(all.data, "alloc: %s", ae_last_error());
        for (int j = 0; j < NM; j++) {
            mx[j] = ae_ptr_at(all, (size_t)W * j);
            mn[j] = W;
            mr[j] = j % 2;
        }
        CHECK(ae_comm_broadcast_many(c, mx, mn, mr, NM) == AE_OK, "broadcast_many (%d buffers): %s",
              NM, ae_last_error());
        CHECK(be->download(be, hm, AE_DT_F32, all, NM * W) == AE_OK, "download");
        size_t badm = 0;
        for (int i = 0; i < NM * W; i++) badm += hm[i] != (float)i;
        CHECK(badm == 0, "broadcast_many (%d buffers): %zu of %d values wrong", NM, badm, NM * W);
        // a root outside the group: refused on both ranks, naming the buffer, before NCCL is called
        mr[1200] = 2;
        ae_status bst = ae_comm_broadcast_many(c, mx, mn, mr, NM);
        CHECK(bst == AE_ERR_ARG &&
                  !strcmp(ae_last_error(), "broadcast_many: buffer 1200: root rank 2 is outside 0..1"),
              "broadcast_many from rank 2: %s '%s'", ae_status_name(bst), ae_last_error());
        be->free(be, all);
        free(hm);
        free(mx);
        free(mn);
        free(mr);
    }

    // send/recv: rank 1 sends rank 0 an F32 buffer (1M values) and a BF16 one, which rank 0
    // receives in that order (BF16 values of 8 significant bits: exact); then rank 0 sends rank 1
    // an I32 buffer back. A peer outside 0..1 or the rank itself is refused.
    {
        size_t nf = ((size_t)1 << 20) + 5, nh = 777;
        float *hf = malloc(nf * sizeof *hf), *hh = malloc(nh * sizeof *hh);
#define SENT_F32(i) ((float)((int)((i) % 4093) - 2000))
#define SENT_BF16(i) (0.25f * (float)((int)((i) % 251) - 125))
        for (size_t i = 0; i < nf; i++) hf[i] = r == 1 ? SENT_F32(i) : -5.0f;
        for (size_t i = 0; i < nh; i++) hh[i] = r == 1 ? SENT_BF16(i) : -5.0f;
        ae_ptr df = device_f32(be, hf, nf, AE_DT_F32), dh = device_f32(be, hh, nh, AE_DT_BF16);
        int32_t ri[9], rback[9];
        for (int i = 0; i < 9; i++) ri[i] = r == 0 ? 11 * i - 40 : 0;
        ae_ptr di = be->alloc(be, 9, AE_DT_I32);
        CHECK(df.data && dh.data && di.data, "alloc: %s", ae_last_error());
        CHECK(be->upload(be, di, ri, AE_DT_I32, 9) == AE_OK, "upload: %s", ae_last_error());
        int peers[3] = {-1, 2, r};
        for (int k = 0; k < 3; k++) {
            char want[120];
            snprintf(want, sizeof want, "send: peer rank %d (this rank %d, 2 ranks)", peers[k], r);
            st = ae_comm_send(c, df, nf, peers[k]);
            CHECK(st == AE_ERR_ARG && !strcmp(ae_last_error(), want), "send to %d: %s '%s'",
                  peers[k], ae_status_name(st), ae_last_error());
            st = ae_comm_recv(c, df, nf, peers[k]);
            CHECK(st == AE_ERR_ARG && strstr(ae_last_error(), "recv: peer rank"),
                  "recv from %d: %s '%s'", peers[k], ae_status_name(st), ae_last_error());
        }
        if (r == 1) {
            CHECK(ae_comm_send(c, df, nf, 0) == AE_OK, "send F32: %s", ae_last_error());
            CHECK(ae_comm_send(c, dh, nh, 0) == AE_OK, "send BF16: %s", ae_last_error());
            CHECK(ae_comm_recv(c, di, 9, 0) == AE_OK, "recv I32: %s", ae_last_error());
            CHECK(be->download(be, rback, AE_DT_I32, di, 9) == AE_OK, "download");
            for (int i = 0; i < 9; i++)
                CHECK(rback[i] == 11 * i - 40, "recv I32[%d] = %d", i, rback[i]);
        } else {
            CHECK(ae_comm_recv(c, df, nf, 1) == AE_OK, "recv F32: %s", ae_last_error());
            CHECK(ae_comm_recv(c, dh, nh, 1) == AE_OK, "recv BF16: %s", ae_last_error());
            CHECK(ae_comm_send(c, di, 9, 1) == AE_OK, "send I32: %s", ae_last_error());
            CHECK(be->download(be, hf, AE_DT_F32, df, nf) == AE_OK, "download");
            CHECK(be->download(be, hh, AE_DT_F32, dh, nh) == AE_OK, "download");
            size_t badf = 0, badh = 0;
            for (size_t i = 0; i < nf; i++) badf += hf[i] != SENT_F32(i);
            for (size_t i = 0; i < nh; i++) badh += hh[i] != SENT_BF16(i);
            CHECK(badf == 0, "recv F32: %zu of %zu values wrong", badf, nf);
            CHECK(badh == 0, "recv BF16: %zu of %zu values wrong", badh, nh);
        }
        be->free(be, df);
        be->free(be, dh);
        be->free(be, di);
        free(hf);
        free(hh);
#undef SENT_F32
#undef SENT_BF16
    }

    // allgather_host: 24 bytes per rank, then a large one (the scratch buffers grow)
    int32_t mine[6], all[12];
    for (int i = 0; i < 6; i++) mine[i] = 10 * r + i;
    CHECK(ae_comm_allgather_host(c, mine, all, sizeof mine) == AE_OK, "allgather: %s",
          ae_last_error());
    for (int q = 0; q < 2; q++)
        for (int i = 0; i < 6; i++)
            CHECK(all[6 * q + i] == 10 * q + i, "allgather: rank %d's value %d = %d", q, i,
                  all[6 * q + i]);
    size_t big = 100000;
    unsigned char *bm = malloc(big), *ba = malloc(2 * big);
    for (size_t i = 0; i < big; i++) bm[i] = (unsigned char)(i * 31 + (size_t)r * 7);
    CHECK(ae_comm_allgather_host(c, bm, ba, big) == AE_OK, "allgather (big): %s", ae_last_error());
    size_t bad = 0;
    for (int q = 0; q < 2; q++)
        for (size_t i = 0; i < big; i++) bad += ba[q * big + i] != (unsigned char)(i * 31 + (size_t)q * 7);
    CHECK(bad == 0, "allgather (big): %zu bytes wrong", bad);
    free(bm);
    free(ba);

    CHECK(ae_comm_barrier(c) == AE_OK, "barrier: %s", ae_last_error());

    uint8_t same[32], other[32], exe[32];
    ae_sha256("same", 4, same);
    ae_sha256("other", 5, other);
    CHECK(ae_comm_check_same(c, same, "config", NULL) == AE_OK, "check_same: %s", ae_last_error());
    CHECK(ae_dist_exe_digest(exe) == AE_OK, "exe digest");
    CHECK(ae_comm_check_same(c, exe, "binary", "start every rank with the same attnedit build") ==
              AE_OK, "check_same (binary): %s", ae_last_error());
    st = ae_comm_check_same(c, r == 1 ? other : same, "config", "use one config");
    CHECK(st == AE_ERR_ARG && strstr(ae_last_error(), "rank 1's config differs from rank 0's (SHA-256 ") &&
              strstr(ae_last_error(), ": use one config"),
          "check_same (different): %s '%s'", ae_status_name(st), ae_last_error());

    ae_comm_close(c);
    ae_backend_close(be);
    if (!g_fail) printf("rank %d: ok\n", r);
    fflush(stdout);
    return g_fail ? 1 : 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Starts the two ranks and waits (180 s at most); 0 when both exit 0.
static int run_group(const char *id) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = '\0';
    fflush(stdout);
    pid_t pids[2];
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            char rs[16];
            snprintf(rs, sizeof rs, "%d", r);
            const char *clear[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
                                   "PMI_SIZE", NULL};
            for (int i = 0; clear[i]; i++) unsetenv(clear[i]);
            setenv("AE_DIST_RANK", rs, 1);
            setenv("AE_DIST_SIZE", "2", 1);
            setenv("AE_DIST_LOCAL_RANK", rs, 1);
            setenv("AE_DIST_LOCAL_SIZE", "2", 1);
            setenv("AE_DIST_NCCL_ID", id, 1);
            setenv("AE_DIST_TIMEOUT", "120", 1);
            execl(self, self, "--rank-child", (char *)NULL);
            _exit(127);
        }
    }
    int fails = 0, left = 2, done[2] = {0, 0};
    double t0 = now_s();
    while (left > 0) {
        for (int r = 0; r < 2; r++) {
            int status;
            if (done[r] || waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
            done[r] = 1;
            left--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                printf("FAIL rank %d: %s %d\n", r, WIFEXITED(status) ? "exit status" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
                fails++;
            }
        }
        if (left > 0 && now_s() - t0 > 180) {
            printf("FAIL the ranks ran past 180 s: killing them\n");
            for (int r = 0; r < 2; r++)
                if (!done[r]) {
                    kill(pids[r], SIGKILL);
                    waitpid(pids[r], NULL, 0);
                }
            return 1;
        }
        struct timespec nap = {0, 20000000};
        nanosleep(&nap, NULL);
    }
    return fails;
}

#endif

int main(int argc, char **argv) {
#if !defined(AE_HAVE_CUDA) || !defined(AE_HAVE_NCCL)
    (void)argc;
    (void)argv;
#endif
#if defined(AE_HAVE_CUDA) && defined(AE_HAVE_NCCL)
    if (argc >= 2 && strcmp(argv[1], "--rank-child") == 0) return rank_child();
#endif
    const ae_backend *be = NULL;
    int rc = ae_test_open_gpu(&be, 0);
    if (rc) return rc;
#if !defined(AE_HAVE_CUDA) || !defined(AE_HAVE_NCCL)
    ae_backend_close(be);
    const char *req = getenv("AE_REQUIRE_GPU");
    if (req && req[0] == '1') {
        printf("FAIL: AE_REQUIRE_GPU=1 but this build has no NCCL (AE_HAVE_NCCL is not defined)\n");
        return 1;
    }
    printf("SKIP no NCCL: this build has no NCCL (AE_HAVE_NCCL is not defined)\n");
    return 77;
#else
    int ngpu = ae_cuda_device_count();
    if (ngpu < 2) {
        ae_backend_close(be);
        printf("SKIP fewer than 2 GPUs: this machine has %d (the group test needs 2)\n", ngpu);
        return 77;
    }
    char id[260];
    if (ae_dist_nccl_id_hex(id) != AE_OK) {
        printf("FAIL ae_dist_nccl_id_hex: %s\n", ae_last_error());
        return 1;
    }
    double t0 = now_s();
    g_fail += run_group(id);
    printf("two NCCL ranks: %s in %.1f s\n", g_fail ? "FAILED" : "passed", now_s() - t0);

    // A rank whose local rank has no GPU here stops before NCCL starts (--gpus: checked locally).
    ae_dist_env e = {.rank = ngpu, .size = ngpu + 1, .local_rank = ngpu, .local_size = ngpu + 1,
                     .launcher = AE_LAUNCH_ATTNEDIT};
    snprintf(e.nccl_id, sizeof e.nccl_id, "%s", id);
    ae_comm *c = NULL;
    ae_status st = ae_comm_open(&e, be, &c);
    char want[120];
    snprintf(want, sizeof want, "rank %d: this host has %d GPUs for its %d ranks", ngpu, ngpu,
             ngpu + 1);
    CHECK(st == AE_ERR_UNSUPPORTED && !c && strcmp(ae_last_error(), want) == 0,
          "GPU count: %s '%s'; wanted '%s'", ae_status_name(st), ae_last_error(), want);
    ae_comm_close(c);
    ae_backend_close(be);
    return g_fail ? 1 : 0;
#endif
}
