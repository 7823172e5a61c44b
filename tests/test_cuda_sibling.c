// The CUDA backend's siblings and events (backend/ops.h, "concurrency"), as stage 1 of the
// distillation uses them (train/distill.c, stage1_micro: the teacher one layer ahead on a second
// stream, slots reused by parity).
//  (a) A producer on the sibling and a consumer on the parent, in stage 1's order (producer r + 1
//      issued before consumer r), exchanging their results through two slots ordered by events:
//      the consumer's sum over 16 rounds equals, bit for bit, the same ops issued in one stream.
//      Each side multiplies by its own matrix (cuBLASLt in each stream's own workspace,
//      concurrently) and the producer's temporaries are allocated and freed on its stream. A
//      missing or misplaced wait lets the producer overwrite a slot the consumer has not read
//      yet, or the consumer read one not yet written: other bits (a check run once with the
//      waits left out shows that this test sees it; printed, not asserted, as a race is not
//      certain to lose).
//  (b) A buffer allocated on the parent, written by the sibling after an event and freed by the
//      parent after waiting for the sibling: the values arrive (the pool's cross-stream reuse).
// Needs a CUDA build and a GPU: prints "SKIP ..." and exits 77 otherwise.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/rng.h"
#include "util/testutil.h"

static const ae_backend *g_gpu;

enum { M = 1024, K = 1024, ROUNDS = 16 };

static ae_ptr dnew(const ae_backend *be, size_t n, ae_dtype dt) {
    ae_ptr p = be->alloc(be, n, dt);
    assert_non_null(p.data);
    return p;
}

static ae_ptr drandom(const ae_backend *be, size_t n, uint64_t seed) {
    ae_ptr p = dnew(be, n, AE_DT_BF16);
    be->fill_normal(be, p, n, 0.03f, seed);
    return p;
}

// The stage-1 pattern on parent `be` and `sib` (sib == be: one stream, events null): round r's
// producer writes slot r % 2 = (r + 1) · x·w1ᵀ; the consumer adds slot r % 2 · w2ᵀ into acc.
// With waits == 0 the events are left out (the race check). Returns acc on the host (M·K).
static float *ring(const ae_backend *be, const ae_backend *sib, int waits) {
    ae_event *tdone[2] = {NULL, NULL}, *sdone[2] = {NULL, NULL}, *start = NULL, *end = NULL;
    if (sib != be) {
        for (int i = 0; i < 2; i++) {
            assert_int_equal(ae_event_new(be, &tdone[i]), AE_OK);
            assert_int_equal(ae_event_new(be, &sdone[i]), AE_OK);
        }
        assert_int_equal(ae_event_new(be, &start), AE_OK);
        assert_int_equal(ae_event_new(be, &end), AE_OK);
    }
    size_t n = (size_t)M * K;
    ae_ptr x = drandom(be, n, 11), w1 = drandom(be, n, 12), w2 = drandom(be, n, 13);
    ae_ptr slot[2] = {dnew(be, n, AE_DT_BF16), dnew(be, n, AE_DT_BF16)};
    ae_ptr q = dnew(be, n, AE_DT_BF16), acc = dnew(be, n, AE_DT_F32);
    be->fill(be, acc, n, 0.0f);
    ae_event_record(be, start);
    ae_event_wait(sib, start);
    for (int r = -1; r < ROUNDS; r++) {
        int p = r + 1; // the producer runs one round ahead
        if (p < ROUNDS) {
            if (waits) ae_event_wait(sib, sdone[p % 2]);
            ae_ptr t = dnew(sib, n, AE_DT_BF16); // the producer's own temporary, on its stream
            ae_matmul(sib, t, x, w1, M, K, K);
            sib->axpby(sib, slot[p % 2], (float)(p + 1), t, 0.0f, n);
            sib->free(sib, t);
            ae_event_record(sib, tdone[p % 2]);
        }
        if (r < 0) continue;
        if (waits) ae_event_wait(be, tdone[r % 2]);
        ae_matmul(be, q, slot[r % 2], w2, M, K, K);
        be->add(be, acc, acc, q, n);
        ae_event_record(be, sdone[r % 2]);
    }
    ae_event_record(sib, end);
    ae_event_wait(be, end);
    float *h = malloc(n * sizeof *h);
    assert_non_null(h);
    assert_int_equal(be->download(be, h, AE_DT_F32, acc, n), AE_OK);
    if (sib != be) assert_int_equal(sib->sync(sib), AE_OK);
    ae_ptr all[] = {x, w1, w2, slot[0], slot[1], q, acc};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) be->free(be, all[i]);
    ae_event *ev[] = {tdone[0], tdone[1], sdone[0], sdone[1], start, end};
    for (size_t i = 0; i < sizeof ev / sizeof *ev; i++) ae_event_free(be, ev[i]);
    return h;
}

static size_t count_diff(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

static void test_ring_same_bits(void **state) {
    (void)state;
    const ae_backend *sib = NULL;
    assert_int_equal(ae_sibling_open(g_gpu, &sib), AE_OK);
    assert_true(sib != g_gpu); // cuda has siblings
    size_t n = (size_t)M * K;
    float *one = ring(g_gpu, g_gpu, 1), *two = ring(g_gpu, sib, 1);
    size_t d = count_diff(one, two, n);
    printf("two streams, %d rounds through two slots: %zu of %zu values differ from one stream\n",
           ROUNDS, d, n);
    assert_int_equal(d, 0);
    double s = 0;
    for (size_t i = 0; i < n; i += 997) s += one[i] * one[i];
    assert_true(s > 0); // the sums are not trivially zero
    float *racy = ring(g_gpu, sib, 0);
    printf("the same without the waits (a race, for comparison): %zu values differ\n",
           count_diff(one, racy, n));
    free(racy);
    free(one), free(two);
    ae_sibling_close(g_gpu, sib);
}

static void test_cross_stream_buffer(void **state) {
    (void)state;
    const ae_backend *sib = NULL;
    assert_int_equal(ae_sibling_open(g_gpu, &sib), AE_OK);
    ae_event *a = NULL, *b = NULL;
    assert_int_equal(ae_event_new(g_gpu, &a), AE_OK);
    assert_int_equal(ae_event_new(g_gpu, &b), AE_OK);
    size_t n = (size_t)1 << 22;
    for (int round = 0; round < 8; round++) {
        ae_ptr buf = dnew(g_gpu, n, AE_DT_F32); // the pool may hand back the last round's
        ae_event_record(g_gpu, a);
        ae_event_wait(sib, a);
        sib->fill(sib, buf, n, (float)round + 0.5f);
        ae_event_record(sib, b);
        ae_event_wait(g_gpu, b);
        float h[3];
        assert_int_equal(g_gpu->download(g_gpu, h, AE_DT_F32, ae_ptr_at(buf, n - 3), 3), AE_OK);
        for (int i = 0; i < 3; i++) assert_true(h[i] == (float)round + 0.5f);
        g_gpu->free(g_gpu, buf);
    }
    assert_int_equal(sib->sync(sib), AE_OK);
    ae_event_free(g_gpu, a);
    ae_event_free(g_gpu, b);
    ae_sibling_close(g_gpu, sib);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_same_bits),
        cmocka_unit_test(test_cross_stream_buffer),
    };
    ae_test_gpu_group g = {.gpu = &g_gpu};
    return ae_test_gpu_main(&g, tests);
}
