// Pass-key prompts: keys, text, token counts, the set of a run (see passkey.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/rng.h"
#include "eval/passkey.h"

// Our own wording (not the original paper's filler): a task line, six plain sentences repeated
// as filler, the question. The key sentence is the classic one.
static const char k_task[] =
    "A pass key is hidden somewhere in the long text below. Find it and keep it in mind, "
    "because you will be asked for it at the end.";
static const char *const k_filler[] = {
    "A light rain fell over the town.",
    "The shop on the corner opened at nine.",
    "Two boats rested by the quiet shore.",
    "The clock in the hall kept good time.",
    "Children walked home along the river.",
    "The baker put fresh bread on the shelf.",
};
#define N_FILLER ((int)(sizeof k_filler / sizeof k_filler[0]))
// Shorter sentences, longest first, that top the filler up to the length.
static const char *const k_pad[] = {"The day went on.", "It was calm.", "Fine.", "Yes."};
#define N_PAD ((int)(sizeof k_pad / sizeof k_pad[0]))
static const char k_question[] = "What is the pass key? The pass key is";

static uint64_t mix64(uint64_t x) { // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void ae_passkey_make_key(uint64_t seed, int length, double depth, int trial, int digits, char *out) {
    if (digits < 1) digits = 1;
    if (digits > AE_PASSKEY_MAX_DIGITS) digits = AE_PASSKEY_MAX_DIGITS;
    uint64_t h = mix64(seed);
    h = mix64(h ^ (uint64_t)(uint32_t)length);
    h = mix64(h ^ (uint64_t)llround(depth * 1e9));
    h = mix64(h ^ (uint64_t)(uint32_t)trial);
    ae_rng r;
    ae_rng_seed(&r, h);
    out[0] = (char)('1' + ae_rng_u64(&r) % 9);
    for (int i = 1; i < digits; i++) out[i] = (char)('0' + ae_rng_u64(&r) % 10);
    out[digits] = '\0';
}

int ae_passkey_match(const char *key, const char *pred) {
    size_t k = strlen(key);
    if (k == 0 || !pred) return 0;
    while (*pred == ' ' || *pred == '\t' || *pred == '\n' || *pred == '\r') pred++;
    if (strncmp(pred, key, k) != 0) return 0;
    return !(pred[k] >= '0' && pred[k] <= '9');
}

// The prompt text with the n filler sentences sent[0..n) and the key sentence after k of them;
// *key_off: byte offset of the separator before the key sentence.
static char *prompt_text(const char *const *sent, int n, int k, const char *key, size_t *key_off) {
    char keys[3 * AE_PASSKEY_MAX_DIGITS + 64];
    snprintf(keys, sizeof keys, "The pass key is %s. Remember it. %s is the pass key.", key, key);
    size_t cap = sizeof k_task + sizeof k_question + strlen(keys) + 4;
    for (int i = 0; i < n; i++) cap += strlen(sent[i]) + 1;
    char *t = ae_malloc(cap), *p = t;
    if (!t) return NULL;
    p += sprintf(p, "%s", k_task);
    for (int i = 0; i <= n; i++) { // the first item after the task line on a new line
        if (i == k) {
            *key_off = (size_t)(p - t);
            p += sprintf(p, "%c%s", i == 0 ? '\n' : ' ', keys);
        }
        if (i < n) p += sprintf(p, "%c%s", i == 0 && k != 0 ? '\n' : ' ', sent[i]);
    }
    sprintf(p, "\n%s", k_question);
    return t;
}

static ae_status count_tokens(const ae_tokenizer *tok, const char *s, size_t len, int *n) {
    int32_t *ids = NULL;
    size_t m = 0;
    AE_TRY(ae_tokenizer_encode(tok, s, len, &ids, &m));
    free(ids);
    *n = (int)m;
    return AE_OK;
}

ae_status ae_passkey_encode(const ae_tokenizer *tok, const char *text, const char *key,
                            int32_t **ids, int *n, int32_t **answer, int *n_answer) {
    *ids = *answer = NULL;
    int32_t *p = NULL, *w = NULL;
    size_t np = 0, nw = 0;
    size_t tl = strlen(text), kl = strlen(key);
    char *whole = ae_malloc(tl + kl + 2);
    if (!whole) return AE_ERR_NOMEM;
    memcpy(whole, text, tl);
    whole[tl] = ' ';
    memcpy(whole + tl + 1, key, kl + 1);
    ae_status st = ae_tokenizer_encode(tok, text, tl, &p, &np);
    if (st == AE_OK) st = ae_tokenizer_encode(tok, whole, tl + kl + 1, &w, &nw);
    free(whole);
    if (st == AE_OK && (nw <= np || memcmp(p, w, sizeof(int32_t) * np) != 0))
        st = ae_errorf(AE_ERR_UNSUPPORTED, "the tokenizer joins the pass key to the prompt's last "
                                           "token: the answer has no tokens of its own");
    if (st == AE_OK) {
        *answer = ae_malloc(sizeof(int32_t) * (nw - np));
        if (!*answer) st = AE_ERR_NOMEM;
        else {
            memcpy(*answer, w + np, sizeof(int32_t) * (nw - np));
            *n_answer = (int)(nw - np);
            *ids = p;
            *n = (int)np;
            p = NULL;
        }
    }
    free(p);
    free(w);
    return st;
}

void ae_passkey_prompt_free(ae_passkey_prompt *p) {
    free(p->text);
    free(p->ids);
    free(p->answer);
    memset(p, 0, sizeof *p);
}

// Where the key sentence goes among n filler sentences of costs cost[0..n) (tokens each): after
// the k whose tokens come nearest depth * all the filler's tokens (ties: the earlier place).
static int key_place(const int *cost, int n, double depth) {
    double total = 0;
    for (int i = 0; i < n; i++) total += cost[i];
    double want = depth * total, before = 0, best_d = want;
    int best = 0;
    for (int k = 1; k <= n; k++) {
        before += cost[k - 1];
        if (fabs(before - want) < best_d) best_d = fabs(before - want), best = k;
    }
    return best;
}

// Text, tokens and answer of the prompt with the filler sent[0..n) (costs cost[0..n)).
static ae_status make(const ae_tokenizer *tok, const char *const *sent, const int *cost, int n,
                      double depth, const char *key, ae_passkey_prompt *p) {
    ae_passkey_prompt_free(p);
    size_t off = 0;
    p->sentences = n;
    p->key_after = key_place(cost, n, depth);
    p->text = prompt_text(sent, n, p->key_after, key, &off);
    if (!p->text) return AE_ERR_NOMEM;
    snprintf(p->key, sizeof p->key, "%s", key);
    AE_TRY(ae_passkey_encode(tok, p->text, key, &p->ids, &p->n, &p->answer, &p->n_answer));
    return count_tokens(tok, p->text, off, &p->key_pos);
}

// Tokens of " sentence", as it follows another sentence.
static ae_status sentence_cost(const ae_tokenizer *tok, const char *sentence, int *n) {
    char s[128];
    snprintf(s, sizeof s, " %s", sentence);
    return count_tokens(tok, s, strlen(s), n);
}

ae_status ae_passkey_build(const ae_tokenizer *tok, int length, double depth, const char *key,
                           ae_passkey_prompt *out) {
    memset(out, 0, sizeof *out);
    if (!(depth >= 0 && depth <= 1))
        return ae_errorf(AE_ERR_ARG, "depth %g is outside [0, 1]", depth);
    size_t kl = strlen(key);
    if (kl < 1 || kl > AE_PASSKEY_MAX_DIGITS || strspn(key, "0123456789") != kl)
        return ae_errorf(AE_ERR_ARG, "pass key '%s' is not 1 to %d digits", key, AE_PASSKEY_MAX_DIGITS);
    int cost[N_FILLER], pad_cost[N_PAD], task_tokens = 0;
    for (int i = 0; i < N_FILLER; i++) AE_TRY(sentence_cost(tok, k_filler[i], &cost[i]));
    for (int i = 0; i < N_PAD; i++) AE_TRY(sentence_cost(tok, k_pad[i], &pad_cost[i]));
    AE_TRY(count_tokens(tok, k_task, strlen(k_task), &task_tokens));
    ae_passkey_prompt p = {0};
    ae_status st = make(tok, NULL, NULL, 0, depth, key, &p);
    int fixed = p.n, least = p.n + p.n_answer;
    if (st == AE_OK && least > length)
        st = ae_errorf(AE_ERR_ARG, "%d tokens cannot hold the pass-key prompt: its task line, key "
                                   "sentence, question and answer take %d", length, least);
    // The filler: the sentence cycle while it fits, then the longest pad sentences that still
    // fit (by the tokens each adds); then the exact count decides, dropping sentences from the
    // end while prompt + answer exceed the length (tokens at sentence joins may merge).
    const char **sent = NULL;
    int *scost = NULL, n = 0, cap = 0, used = least;
    for (int i = 0; st == AE_OK;) {
        const char *next = NULL;
        int c = 0;
        if (used + cost[i % N_FILLER] <= length) next = k_filler[i % N_FILLER], c = cost[i % N_FILLER], i++;
        else
            for (int j = 0; j < N_PAD && !next; j++)
                if (used + pad_cost[j] <= length && pad_cost[j] > 0) next = k_pad[j], c = pad_cost[j];
        if (!next) break;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            const char **ns = ae_realloc(sent, sizeof *sent * (size_t)cap);
            if (ns) sent = ns;
            int *nc = ns ? ae_realloc(scost, sizeof *scost * (size_t)cap) : NULL;
            if (!nc) {
                st = AE_ERR_NOMEM;
                break;
            }
            scost = nc;
        }
        scost[n] = c;
        sent[n++] = next;
        used += c;
    }
    if (st == AE_OK && n > 0) st = make(tok, sent, scost, n, depth, key, &p);
    while (st == AE_OK && n > 0 && p.n + p.n_answer > length) st = make(tok, sent, scost, --n, depth, key, &p);
    free(sent);
    free(scost);
    if (st != AE_OK) {
        ae_passkey_prompt_free(&p);
        return st;
    }
    p.length = length;
    p.depth = depth;
    p.filler_tokens = p.n - fixed;
    p.filler_before = p.key_pos - task_tokens;
    *out = p;
    return AE_OK;
}

ae_status ae_passkey_set_build(ae_passkey_set *s, const ae_tokenizer *tok, const int *lengths,
                               int n_lengths, const double *depths, int n_depths, int trials,
                               int digits, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (n_lengths < 1 || n_depths < 1 || trials < 1)
        return ae_errorf(AE_ERR_ARG, "pass key: need at least one length, depth and trial");
    if (digits < 1 || digits > AE_PASSKEY_MAX_DIGITS)
        return ae_errorf(AE_ERR_ARG, "pass key: %d digits is outside [1, %d]", digits, AE_PASSKEY_MAX_DIGITS);
    s->n_lengths = n_lengths;
    s->n_depths = n_depths;
    s->trials = trials;
    s->digits = digits;
    s->seed = seed;
    s->lengths = ae_malloc(sizeof(int) * (size_t)n_lengths);
    s->depths = ae_malloc(sizeof(double) * (size_t)n_depths);
    s->prompts = ae_calloc((size_t)n_lengths * n_depths * trials, sizeof *s->prompts);
    if (!s->lengths || !s->depths || !s->prompts) {
        ae_passkey_set_free(s);
        return AE_ERR_NOMEM;
    }
    memcpy(s->lengths, lengths, sizeof(int) * (size_t)n_lengths);
    memcpy(s->depths, depths, sizeof(double) * (size_t)n_depths);
    for (int li = 0; li < n_lengths; li++)
        for (int di = 0; di < n_depths; di++)
            for (int t = 0; t < trials; t++) {
                char key[AE_PASSKEY_MAX_DIGITS + 1];
                ae_passkey_make_key(seed, lengths[li], depths[di], t, digits, key);
                ae_status st = ae_passkey_build(tok, lengths[li], depths[di], key,
                                                &s->prompts[ae_passkey_index(s, li, di, t)]);
                if (st != AE_OK) {
                    ae_passkey_set_free(s);
                    return st;
                }
            }
    return AE_OK;
}

void ae_passkey_set_free(ae_passkey_set *s) {
    if (s->prompts)
        for (int i = 0; i < s->n_lengths * s->n_depths * s->trials; i++)
            ae_passkey_prompt_free(&s->prompts[i]);
    free(s->prompts);
    free(s->lengths);
    free(s->depths);
    memset(s, 0, sizeof *s);
}
