// The serving engine: a scheduler thread that runs many requests through one model with
// continuous batching over the paged KV cache (serve/kv_pool.h).
//
// Each step: cancelled requests leave (their pages go back), waiting requests are admitted in
// arrival order while the sequence limit and the pool's free pages allow (admission promises a
// request every page it can need, so running requests never stall), then one batch is built:
// one decode token of every running sequence past its prompt, then prefill chunks of sequences
// still reading their prompts, up to max_batch_tokens rows (chunked prefill mixed with decode).
// One ae_model_forward_paged runs the batch, recorded as backend graphs where the backend has
// them (CUDA graphs; AE_SERVE_GRAPHS: 0 none, 1 the decode steps (default), all every step;
// AE_CUDA_GRAPHS=0 switches the backend's graphs off); each sequence that produced logits
// samples its next token with its own sampler (infer/sample.h: greedy, temperature, top-k,
// top-p, its own seed), its text is extended (stop strings held back until they cannot match),
// and finished sequences give their pages back at once. A step allocates no memory and uploads
// its small tables in one copy; greedy requests without logprobs download only their token ids.
//
// Prefix caching (serve/kv_pool.h, prefix_cache.h; default on, off with no_prefix_cache and for
// models with sliding-window layers): a request's prompt attaches the pages of the longest run
// of whole cached blocks it starts with (at most its length − 1: the last prompt token always
// runs, its logits give the first token) and prefills from there; every block a step fills is
// published for later requests. Requests with echo (prompt logprobs need the logits of every
// prompt position) compute their whole prompt, and still publish it.
//
// Every step's wall time is split into phases (ae_engine_phase) and counted with the decode
// steps' tokens and seconds (ae_engine_stats; GET /metrics): always on, one clock read a phase.
//
// Threads: ae_engine_submit/cancel/release and reading a request's outputs happen on other
// threads (the HTTP server) under ae_engine_lock; every step ends with a broadcast that
// ae_engine_wait returns on.
#ifndef AE_SERVE_ENGINE_H
#define AE_SERVE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "infer/sample.h"
#include "model/model.h"
#include "tok/tokenizer.h"

#define AE_MAX_TOP_LOGPROBS 20
#define AE_MAX_STOP 8

typedef struct {
    int max_tokens;           // >= 1
    ae_sampler_params sp;
    int logprobs;             // -1: none; 0..AE_MAX_TOP_LOGPROBS alternatives per token
    int echo;                 // also score the prompt (prompt logprobs)
    int ignore_eos;           // 1: the model's eos token does not end the request
    int n_stop_ids;
    int32_t stop_ids[4];      // more ids that end it (the chat end-of-turn token), not shown
    int n_stop;
    char *stop[AE_MAX_STOP];  // owned by the request
} ae_req_params;

typedef struct {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[AE_MAX_TOP_LOGPROBS];
    float top_lp[AE_MAX_TOP_LOGPROBS];
} ae_tok_lp;

typedef enum { AE_FINISH_NONE = 0, AE_FINISH_STOP, AE_FINISH_LENGTH, AE_FINISH_CANCELLED,
               AE_FINISH_ERROR } ae_finish;

typedef struct ae_req ae_req;
struct ae_req {
    // ---- input: set before submit, read-only afterwards ----
    int32_t *prompt;          // (n_prompt) owned
    int n_prompt;
    ae_req_params p;
    // ---- output: written by the engine, read under ae_engine_lock ----
    char *text;               // visible generated text (stop strings cut, held-back tail not yet)
    size_t text_len;
    int n_out;                // generated tokens so far
    int32_t *out_ids;         // (n_out)
    ae_tok_lp *out_lp;        // (n_out) when p.logprobs >= 0
    ae_tok_lp *prompt_lp;     // (n_prompt) when p.echo: entry i scores prompt token i (i >= 1)
    int prompt_scored;        // prompt tokens scored so far (echo)
    ae_finish finish;         // != NONE: done, nothing more will change
    char error[256];
    double t_submit, t_first, t_done; // ae_time_now() stamps (first token, completion)
    // ---- engine-private ----
    int refs, cancelled;
    struct ae_seq *seq;
    ae_req *next;             // waiting queue
    size_t text_cap, gen_cap, gen_len;
    char *gen;                // all generated text (decoded), the visible part is a prefix
};

typedef struct {
    int max_seqs;             // sequences running at once
    int max_batch_tokens;     // rows per step (decode tokens + prefill chunk tokens)
    int max_model_len;        // prompt + max_tokens limit
    int max_queue;            // waiting requests beyond which submit refuses
    size_t cache_bytes;       // KV pool size
    int page_positions;       // positions per page (most expensive group)
    int no_prefix_cache;      // 1: no prefix caching (default 0: on where the model allows)
} ae_engine_opts;

// Where a step's wall time goes (ae_engine_stats.phase_s): consecutive stretches of the
// scheduler thread, so per step they add up to the step's wall time (step_s).
typedef enum {
    AE_PHASE_ADMIT,   // reap cancelled requests, admit waiting ones, build the batch (locked)
    AE_PHASE_TABLES,  // the step's tables built on the host and uploaded in one copy
    AE_PHASE_FORWARD, // ae_model_forward_paged returns: host time to launch (graphs included)
    AE_PHASE_SYNC,    // the downloads of ids/logits: the host waiting for the device
    AE_PHASE_SAMPLE,  // sampling, scoring and take_token per sequence (detokenize, stops)
    AE_PHASE_LOCK,    // waiting to take the lock back from the HTTP threads
    AE_PHASE_APPLY,   // publishing the results to the requests (locked)
    AE_PHASE_COUNT
} ae_engine_phase;

typedef struct {
    int running, waiting;
    int pages_total;
    int pages_free;           // pages no sequence holds: free, or evictable cached blocks
    int pages_promised;
    int pages_cached;         // pages holding a published (cached) block, held or evictable
    int pages_held;           // pages some sequence holds (pages_total − pages_free)
    const char *prefix_cache; // "on (full/latent pages)" or "off (why)" (the engine's string)
    int64_t prefix_hit_tokens;      // prompt tokens served from the prefix cache
    int64_t prefix_computed_tokens; // prompt tokens admitted and computed (not served)
    int64_t prefix_evictions;       // cached pages evicted to be written again
    size_t page_bytes;
    int page_size[3];         // positions per page per group (model/paged.h)
    int seqs_of_4k;           // sequences of 4096 positions the pool holds
    int seqs_of_max;          // sequences of max_model_len positions the pool holds
    int64_t requests_done, prompt_tokens, gen_tokens, steps;
    int64_t graph_steps;      // steps that ran recorded as backend graphs (CUDA graphs)
    int64_t graph_updated, graph_instantiated; // their segments: executable graphs updated / new
    double gen_tok_per_s;     // over the last few seconds
    // step phases and decode throughput: cumulative since the start (Prometheus counters)
    double phase_s[AE_PHASE_COUNT]; // seconds per phase, all steps
    double step_s;            // wall seconds of all steps (start of admit to end of apply)
    double wait_s;            // seconds the scheduler slept with no step to run (idle, paused)
    int64_t rows;             // batch rows of all steps (decode tokens + prefill chunk tokens)
    int64_t decode_steps;     // steps whose batch had no prefill row
    double decode_step_s;     // their wall seconds
    int64_t decode_tokens;    // tokens they generated (decode tok/s = this / decode_step_s)
} ae_engine_stats;

typedef struct ae_engine ae_engine;

// Starts the scheduler thread (model, tokenizer must outlive the engine). tok may be NULL (a
// model with random weights and no tokenizer): requests then produce token ids and no text,
// and must not have stop strings (ae_engine_submit refuses them).
ae_status ae_engine_start(const ae_model *m, const ae_tokenizer *tok, const ae_engine_opts *o,
                          ae_engine **out);
// paused = 1: no step starts from now on (the one running ends) until ae_engine_pause(e, 0);
// requests submitted meanwhile are admitted together when it resumes (tests: a reproducible
// first step). Call without the lock.
void ae_engine_pause(ae_engine *e, int paused);
// Stops the scheduler thread and finishes every request as cancelled (waiters wake up; submit
// refuses from now on); the engine stays valid for the threads still reading requests.
void ae_engine_shutdown(ae_engine *e);
// Shuts down (if not yet) and frees the engine.
void ae_engine_stop(ae_engine *e);

// A new request (refs = 1, held by the caller) taking ownership of prompt and of p's stop
// strings. NULL when out of memory (prompt and stops freed).
ae_req *ae_req_new(int32_t *prompt, int n, const ae_req_params *p);

void ae_engine_lock(ae_engine *e);
void ae_engine_unlock(ae_engine *e);
// Queues r (the engine takes its own reference). AE_ERR_ARG with a message when it can never
// run (too long for max_model_len or for the whole cache; bad parameters); AE_ERR_UNSUPPORTED
// when the queue is full (try later). Call without the lock.
ae_status ae_engine_submit(ae_engine *e, ae_req *r);
// Under the lock: asks the engine to drop r (its pages go back at the next step).
void ae_engine_cancel_locked(ae_engine *e, ae_req *r);
// Under the lock: drops the caller's reference (frees r when the engine is done with it too).
void ae_engine_release_locked(ae_engine *e, ae_req *r);
// Under the lock: waits until the next step ends or timeout_s passes.
void ae_engine_wait_locked(ae_engine *e, double timeout_s);
// Counters (takes the lock).
void ae_engine_get_stats(ae_engine *e, ae_engine_stats *s);
// Checks the KV pool's books (ae_kv_pool_audit; takes the lock): AE_OK, or AE_ERR_ARG naming
// the inconsistency. Tests call it when every request is done: then no page may be held.
ae_status ae_engine_check_pool(ae_engine *e);
const char *ae_finish_name(ae_finish f);
// "admit", "tables", "forward", "sync", "sample", "lock", "apply" (the /metrics label).
const char *ae_engine_phase_name(ae_engine_phase p);

#endif
