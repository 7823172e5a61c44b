// `attnedit serve` as a library (serve/server.h).
#include "serve/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/profile.h"
#include "core/file.h"
#include "core/mem.h"
#include "serve/chat.h"
#include "serve/netaddr.h"

struct ae_server {
    const ae_backend *be;      // the model's: the device's, or the op profiler over it
    const ae_backend *device;  // the device's own
    int profiled;              // AE_SERVE_PROFILE: be is the op profiler over device
    ae_model *m;
    ae_tokenizer *tok;
    ae_engine *e;
    ae_http *h;
    char name[256];
};

void ae_server_opts_defaults(ae_server_opts *o) {
    if (!o->host) o->host = "127.0.0.1";
    if (!o->max_seqs) o->max_seqs = 64;
    if (!o->max_queue) o->max_queue = 1024;
    if (!o->page_positions) o->page_positions = 16;
    if (!o->max_connections) o->max_connections = 512;
    if (!o->max_body) o->max_body = 16u << 20;
}

static void server_free(ae_server *s) {
    if (s->e) ae_engine_shutdown(s->e);
    ae_http_stop(s->h);
    ae_engine_stop(s->e);
    ae_model_free(s->m);
    ae_tokenizer_free(s->tok);
    if (s->profiled) {
        ae_backend_profile_print(stderr, s->name, s->be, "every step served (synced around "
                                 "each op)", 1, "run", 0);
        ae_backend_profile_free(s->be);
    }
    ae_backend_close(s->device);
    free(s);
}

// Random weights need no tokenizer: the folder's tokenizer.json is used when it has one.
static int has_tokenizer(const char *dir) {
    char *p = ae_path_join(dir, "tokenizer.json");
    int yes = p && ae_path_exists(p);
    free(p);
    return yes;
}

ae_status ae_server_start(const ae_server_opts *in, ae_server **out) {
    *out = NULL;
    ae_server_opts o = *in;
    ae_server_opts_defaults(&o);
    ae_server *s = ae_calloc(1, sizeof *s);
    if (!s) return AE_ERR_NOMEM;
    ae_status st = ae_backend_open(o.device, &s->device);
    s->be = s->device;
    const char *prof = getenv("AE_SERVE_PROFILE"); // diagnostics: where a serving step goes
    if (st == AE_OK && prof && *prof && strcmp(prof, "0")) {
        s->be = ae_backend_profile_wrap(s->device);
        s->profiled = s->be != NULL;
        if (!s->be) {
            s->be = s->device;
            st = AE_ERR_NOMEM;
        }
    }
    if (st == AE_OK && (!o.random_weights || has_tokenizer(o.model_dir)))
        st = ae_tokenizer_load(o.model_dir, &s->tok);
    if (st == AE_OK)
        st = o.random_weights ? ae_model_random(o.model_dir, s->be, o.seed, &s->m)
                              : ae_model_load(o.model_dir, s->be, &s->m);
    if (st != AE_OK) {
        server_free(s);
        return st;
    }
    const ae_config *c = &s->m->cfg;
    if (!o.max_model_len) o.max_model_len = c->max_position_embeddings < 32768 ? c->max_position_embeddings : 32768;
    if (!o.max_batch_tokens) o.max_batch_tokens = s->be->host_memory ? 256 : 2048;
    size_t cache = (size_t)(o.cache_gb * (1 << 30));
    if (!cache) {
        size_t fr = 0, tot = 0;
        ae_backend_mem_info(s->be, &fr, &tot);
        double ws = ae_forward_workspace_bytes(c, o.max_batch_tokens, (int)ae_dtype_size(s->be->act_dtype));
        cache = tot ? (size_t)(fr * 0.85 > ws ? fr * 0.85 - ws : fr * 0.5) : (size_t)1 << 30;
    }
    ae_engine_opts eo = {.max_seqs = o.max_seqs, .max_batch_tokens = o.max_batch_tokens,
                         .max_model_len = o.max_model_len, .max_queue = o.max_queue,
                         .cache_bytes = cache, .page_positions = o.page_positions,
                         .no_prefix_cache = o.no_prefix_cache};
    st = ae_engine_start(s->m, s->tok, &eo, &s->e);
    if (st != AE_OK) {
        server_free(s);
        return st;
    }
    if (s->profiled) ae_backend_profile_reset(s->be); // the table covers serving, not loading
    if (o.served_name) {
        snprintf(s->name, sizeof s->name, "%s", o.served_name);
    } else { // the model folder's name
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", o.model_dir);
        size_t L = strlen(tmp);
        while (L > 1 && tmp[L - 1] == '/') tmp[--L] = 0;
        const char *b = strrchr(tmp, '/');
        snprintf(s->name, sizeof s->name, "%s", b ? b + 1 : tmp);
    }
    ae_http_opts ho = {.host = o.host, .port = o.port, .max_connections = o.max_connections,
                       .max_body = o.max_body, .engine = s->e};
    ho.api.tok = s->tok;
    ho.api.model_name = s->name;
    ho.api.chat = s->tok ? ae_chat_detect(o.model_dir) : AE_CHAT_NONE;
    ho.api.vocab = c->vocab_size;
    ho.api.eos_id = c->eos_token_id;
    ho.api.im_end_id = s->tok ? ae_tokenizer_token_id(s->tok, "<|im_end|>") : -1;
    ho.api.random_weights = o.random_weights;
    ho.api.max_model_len = o.max_model_len;
    st = ae_http_start(&ho, &s->h);
    if (st != AE_OK) {
        server_free(s);
        return st;
    }
    if (!o.quiet) {
        ae_engine_stats es;
        ae_engine_get_stats(s->e, &es);
        fprintf(stderr, "device: %s (%s)\n", s->be->name, s->be->device);
        if (o.random_weights)
            fprintf(stderr, "weights: random (seed %llu; for benchmarks: the outputs mean nothing)\n",
                    (unsigned long long)o.seed);
        fprintf(stderr, "cache: %d pages of %.1f KiB (%.2f GiB; positions per page: full %d, "
                        "sliding %d, latent %d), up to %d sequences of 4K, %d of %d tokens (the "
                        "context limit)\n",
                es.pages_total, es.page_bytes / 1024.0,
                (double)es.pages_total * es.page_bytes / (1 << 30), es.page_size[0],
                es.page_size[1], es.page_size[2], es.seqs_of_4k, es.seqs_of_max, o.max_model_len);
        fprintf(stderr, "prefix cache: %s\n", es.prefix_cache);
        if (!s->tok)
            fprintf(stderr, "tokenizer: none (prompts must be token ids; responses carry token_ids, "
                            "no text)\n");
        fprintf(stderr, "chat template: %s\n",
                ho.api.chat == AE_CHAT_QWEN3 ? "Qwen3" : ho.api.chat == AE_CHAT_NONE
                                                             ? "none (/v1/chat/completions refused)"
                                                             : "unsupported (/v1/chat/completions refused)");
        char hp[96];
        ae_net_hostport(o.host, ae_http_port(s->h), hp, sizeof hp);
        fprintf(stderr, "listening on http://%s (model '%s', max %d sequences, %d-token "
                        "context, %d tokens per step)\n",
                hp, s->name, o.max_seqs, o.max_model_len, o.max_batch_tokens);
    }
    *out = s;
    return AE_OK;
}

int ae_server_port(const ae_server *s) { return ae_http_port(s->h); }
ae_engine *ae_server_engine(ae_server *s) { return s->e; }
void ae_server_stop(ae_server *s) {
    if (s) server_free(s);
}
