// Graphs of recorded ops on CUDA (the graph_* slots of backend/ops.h): the decode step of a
// model as CUDA graphs, so that its few hundred small kernels run without a launch each.
//
// Design (the "capture every step and update" way, as llama.cpp): graph_begin starts a stream
// capture of the backend's one stream; the ops queue their kernels as usual and the capture
// records them. At a graph_cut point the capture may end a segment: the segment's graph updates
// the executable graph the handle kept for that segment from the previous recording
// (cudaGraphExecUpdate: only kernel arguments changed, e.g. the position, the cache row, the
// split-KV grid) or, when the topology changed (a split-KV combine appears, a kernel variant
// changes), is instantiated anew; it is launched at once and the capture goes on with the next
// segment while the GPU runs this one. Segments grow 1, 2, 4, ... cut points up to
// AE_CUDA_GRAPH_SEGMENT (default 8; 0: one graph per recording), so the GPU starts early and the
// host records the rest while it runs.
//
// Memory inside a recording: the ops' allocations (model scratch, split-KV partials, MoE
// workspaces) come from the handle's workspace, a stack: a block is taken at the top, a freed
// block is marked, and freed blocks at the top are given back (the ops free in stream order, as
// with the stream-ordered pool: the recorded kernels of one stream run in order, so a later
// kernel may reuse a block an earlier one is done with). The same calls give the same offsets
// every step. The workspace grows between recordings when a recording asked for more
// (AE_GRAPH_RETRY). So the recorded graphs hold no allocation nodes and their addresses repeat,
// which keeps the updates cheap. A recording must free what it allocates (checked).
//
// Failure: an error inside a recording (an upload, download or sync, a call the capture
// refuses, a failed instantiation or launch) fails the recording instead of the backend
// (cuda.cu's keep_error); graph_end reports AE_GRAPH_FAILED with one line on stderr and disables
// the handle, and the caller runs the work op by op. Segments already launched have run: the
// caller's work is idempotent (ops.h), so running it again from the start gives the same bytes.
//
// AE_CUDA_GRAPHS=0 switches graphs off (graph_begin declines). A handle's first request also
// declines: lazy one-time work of the ops (kernel attributes, cuBLASLt heuristics) runs unrecorded.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_internal.h"

#define GRAPH_ALIGN ((size_t)256)
#define GRAPH_SEGMENT_DEFAULT 8

typedef struct {
    size_t off, bytes;
    int live;
} ws_block;

struct ae_graph {
    cudaGraphExec_t *exec; // (n_exec) the executable graph of each segment, or NULL
    int n_exec;
    char *ws;              // workspace (device), ws_bytes
    size_t ws_bytes;
    ws_block *blk;         // (n_blk) the workspace's stack of blocks, increasing offsets
    int n_blk, cap_blk;
    size_t used, peak;     // this recording: the stack's top; its highest (even past ws_bytes)
    int seg;               // segment being recorded
    int cuts, seg_len;     // cut points seen in this segment; cut points that end it
    int failed, overflow;  // the recording failed (why); the workspace was too small
    int disabled;          // graph_begin declines from now on
    int inject, injected;  // tests: 1 + the segment of this recording that fails; that did
    char why[256];
    ae_graph_stats stats;
};

void cuda_graph_options(ae_cuda *c) {
    const char *on = getenv("AE_CUDA_GRAPHS"), *seg = getenv("AE_CUDA_GRAPH_SEGMENT");
    c->graphs = !(on && strcmp(on, "0") == 0);
    c->graph_seg_max = seg && *seg ? atoi(seg) : GRAPH_SEGMENT_DEFAULT;
    if (c->graph_seg_max < 0) c->graph_seg_max = 0;
}

extern "C" void ae_cuda_graph_fail_next(const ae_backend *be, int segment) {
    cu(be)->graph_fail_next = 1 + (segment > 0 ? segment : 0);
}

void cuda_graph_fail(const ae_backend *be, const char *msg) {
    ae_graph *g = cu(be)->rec;
    if (!g || g->failed) return;
    g->failed = 1;
    snprintf(g->why, sizeof g->why, "%s", msg);
}

// cuda_graph_fail with a CUDA error's text.
static void fail_cuda(const ae_backend *be, const char *what, cudaError_t e) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    cudaGetLastError(); // capture errors are not sticky; do not leave them for the next check
    cuda_graph_fail(be, msg);
}

void *cuda_graph_alloc(const ae_backend *be, size_t bytes) {
    ae_graph *g = cu(be)->rec;
    size_t b = (bytes + GRAPH_ALIGN - 1) & ~(GRAPH_ALIGN - 1);
    if (g->n_blk == g->cap_blk) {
        int cap = g->cap_blk ? 2 * g->cap_blk : 64;
        ws_block *x = (ws_block *)realloc(g->blk, sizeof *x * (size_t)cap);
        if (!x) {
            cuda_graph_fail(be, "out of host memory for its workspace's blocks");
            return NULL;
        }
        g->blk = x;
        g->cap_blk = cap;
    }
    ws_block *k = &g->blk[g->n_blk++];
    k->off = g->used;
    k->bytes = b;
    k->live = 1;
    g->used += b;
    if (g->used > g->peak) g->peak = g->used;
    if (g->used > g->ws_bytes) { // the block stays live: so does the overflow, to the end
        g->overflow = 1;         // the ops see an allocation failure; graph_end asks for a retry
        return NULL;
    }
    return g->ws + k->off;
}

void cuda_graph_release(const ae_backend *be, void *p) {
    ae_graph *g = cu(be)->rec;
    const char *q = (const char *)p;
    if (!g->ws || q < g->ws || q >= g->ws + g->ws_bytes) {
        cuda_graph_fail(be, "a buffer allocated before the recording was freed inside it");
        return;
    }
    int i = g->n_blk - 1;
    while (i >= 0 && !(g->blk[i].live && g->blk[i].off == (size_t)(q - g->ws))) i--;
    if (i < 0) {
        cuda_graph_fail(be, "a workspace block was freed twice");
        return;
    }
    g->blk[i].live = 0;
    while (g->n_blk > 0 && !g->blk[g->n_blk - 1].live) g->used = g->blk[--g->n_blk].off;
}

ae_graph *ae_cuda_graph_new(const ae_backend *be) {
    (void)be;
    return (ae_graph *)calloc(1, sizeof(ae_graph));
}

// Starts capturing segment g->seg.
static void start_capture(const ae_backend *be, ae_graph *g) {
    cudaError_t e = cudaStreamBeginCapture(stream_of(be), cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) fail_cuda(be, "cudaStreamBeginCapture", e);
    if (g->inject == g->seg + 1) { // tests: a call the capture refuses, as an op could make one
        g->injected = g->inject;
        g->inject = 0;
        cuda_check(be, cudaStreamSynchronize(stream_of(be)), "the test's sync inside a capture");
    }
}

// The executable graph of segment g->seg for `graph`: the kept one updated, or a new one.
static cudaGraphExec_t exec_for(const ae_backend *be, ae_graph *g, cudaGraph_t graph) {
    if (g->seg >= g->n_exec) {
        int n = g->seg + 8;
        cudaGraphExec_t *x = (cudaGraphExec_t *)realloc(g->exec, sizeof *x * (size_t)n);
        if (!x) {
            cuda_graph_fail(be, "out of host memory for its executable graphs");
            return NULL;
        }
        memset(x + g->n_exec, 0, sizeof *x * (size_t)(n - g->n_exec));
        g->exec = x;
        g->n_exec = n;
    }
    cudaGraphExec_t *x = &g->exec[g->seg];
    if (*x) {
#if CUDART_VERSION >= 12000
        cudaGraphExecUpdateResultInfo info;
        cudaError_t e = cudaGraphExecUpdate(*x, graph, &info);
#else
        cudaGraphNode_t node;
        cudaGraphExecUpdateResult info;
        cudaError_t e = cudaGraphExecUpdate(*x, graph, &node, &info);
#endif
        if (e == cudaSuccess) {
            g->stats.updated++;
            return *x;
        }
        cudaGetLastError(); // topology changed: a new executable graph
        cudaGraphExecDestroy(*x); // a launch still in flight completes first
        *x = NULL;
    }
#if CUDART_VERSION >= 12000
    cudaError_t e = cudaGraphInstantiate(x, graph, 0);
#else
    cudaError_t e = cudaGraphInstantiate(x, graph, NULL, NULL, 0);
#endif
    if (e != cudaSuccess) {
        *x = NULL;
        fail_cuda(be, "cudaGraphInstantiate", e);
        return NULL;
    }
    g->stats.instantiated++;
    return *x;
}

// Ends the capture of the current segment and, with `launch` and nothing failed so far, launches
// it (updating or instantiating its executable graph first).
static void finish_segment(const ae_backend *be, ae_graph *g, int launch) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(stream_of(be), &graph);
    if (e != cudaSuccess) fail_cuda(be, "cudaStreamEndCapture", e);
    if (launch && graph && !g->failed && !g->overflow) {
        cudaGraphExec_t x = exec_for(be, g, graph);
        if (x && (e = cudaGraphLaunch(x, stream_of(be))) != cudaSuccess)
            fail_cuda(be, "cudaGraphLaunch", e);
        else if (x)
            g->stats.segments++;
    }
    if (graph) cudaGraphDestroy(graph);
    g->seg++;
}

int ae_cuda_graph_begin(const ae_backend *be, ae_graph *g) {
    ae_cuda *c = cu(be);
    if (!g || !c->graphs || g->disabled || c->failed || c->rec) return 0;
    if (++g->stats.requests == 1) return 0; // one-time setup of the ops runs unrecorded
    g->used = g->peak = 0;
    g->n_blk = 0;
    g->seg = g->cuts = 0;
    g->seg_len = 1;
    g->failed = g->overflow = 0;
    g->why[0] = '\0';
    g->inject = c->graph_fail_next;
    g->injected = 0;
    c->graph_fail_next = 0;
    c->rec = g;
    start_capture(be, g);
    return 1;
}

void ae_cuda_graph_cut(const ae_backend *be, ae_graph *g) {
    ae_cuda *c = cu(be);
    if (!g || c->rec != g || c->graph_seg_max <= 0 || ++g->cuts < g->seg_len) return;
    g->cuts = 0;
    g->seg_len = 2 * g->seg_len < c->graph_seg_max ? 2 * g->seg_len : c->graph_seg_max;
    finish_segment(be, g, 1);
    start_capture(be, g); // after a failure too: the rest is recorded and dropped, never run
}

// A workspace of 1.5 x what the last recording asked for at most at once (positions grow:
// split-KV partials grow with them), replacing the old one once the work queued on it has run.
static int grow_workspace(const ae_backend *be, ae_graph *g) {
    size_t want = g->peak + g->peak / 2 + ((size_t)1 << 20);
    want = (want + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    if (g->ws) cudaFreeAsync(g->ws, stream_of(be));
    g->ws = NULL;
    g->ws_bytes = 0;
    ae_ptr p = ae_cuda_alloc(be, want / 4, AE_DT_F32);
    if (ae_ptr_is_null(p)) {
        snprintf(g->why, sizeof g->why, "no device memory for its %.1f MiB workspace",
                 want / 1048576.0);
        g->failed = 1;
        return 0;
    }
    g->ws = (char *)p.data;
    g->ws_bytes = want;
    return 1;
}

int ae_cuda_graph_end(const ae_backend *be, ae_graph *g, int ok) {
    ae_cuda *c = cu(be);
    if (!g || c->rec != g) return AE_GRAPH_FAILED;
    if (ok && !g->overflow && g->n_blk != 0)
        cuda_graph_fail(be, "a buffer allocated inside the recording outlives it");
    finish_segment(be, g, ok);
    c->rec = NULL;
    cudaGetLastError(); // the capture's errors are the recording's: none is left for the next op
    if (g->overflow && grow_workspace(be, g)) {
        g->stats.retries++;
        // a test's failure fails the retry as well; one not reached yet (the recording stopped
        // at its first allocation) is still to come
        c->graph_fail_next = g->injected ? g->injected : g->inject;
        return AE_GRAPH_RETRY;
    }
    if (g->failed) {
        g->disabled = 1;
        g->stats.failed++;
        fprintf(stderr, "attnedit: %s: a CUDA graph recording failed (%s); its work runs op by op "
                        "from now on\n", c->name, g->why);
        return AE_GRAPH_FAILED;
    }
    if (!ok) return AE_GRAPH_FAILED;
    g->stats.ran++;
    return AE_GRAPH_RAN;
}

void ae_cuda_graph_free(const ae_backend *be, ae_graph *g) {
    if (!g) return;
    ae_cuda *c = cu(be);
    if (c->rec == g) { // abandoned mid-recording: drop the capture
        cudaGraph_t graph = NULL;
        if (cudaStreamEndCapture(stream_of(be), &graph) == cudaSuccess && graph)
            cudaGraphDestroy(graph);
        cudaGetLastError();
        c->rec = NULL;
    }
    for (int i = 0; i < g->n_exec; i++)
        if (g->exec[i]) cudaGraphExecDestroy(g->exec[i]);
    if (g->ws) cudaFreeAsync(g->ws, stream_of(be));
    free(g->blk);
    free(g->exec);
    free(g);
}

void ae_cuda_graph_stats(const ae_backend *be, const ae_graph *g, ae_graph_stats *out) {
    (void)be;
    if (g) *out = g->stats;
    else memset(out, 0, sizeof *out);
}
