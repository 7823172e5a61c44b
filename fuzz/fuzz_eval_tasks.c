// libFuzzer harness: the task data files `attnedit eval tasks` reads (ae_task_load, eval/tasks.h:
// the record readers of tasks_read.c, jsonl/json/tsv/txt and piqa's labels file), then the
// requests built from what was read (ae_task_build: prompts, few-shot sampling). The first byte
// chooses the task (byte % (number of non-MMLU tasks + 1); the last choice is an MMLU subject,
// byte / that % the subjects: CSV or jsonl), the second the file name among those the task's
// evaluation split accepts (the extension picks the format) and, from its top bits, 0-3 few-shot
// examples; the rest is the file, the task's only one. For a .jsonl, text after a line
// "#labels" is its labels file (piqa's valid-labels.lst).
// Promises checked (eval/tasks.h): AE_OK or an error with a message; a split that reads has
// docs of its task's kind (choices and gold in range, texts present); ae_task_build gives one
// item per document (up to the limit) with n >= 1 requests of non-NULL strings, or an error.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/tasks.h"
#include "fuzz_util.h"

static const char k_sep[] = "\n#labels\n";

static void check_split(const ae_task_def *def, const ae_task_split *sp) {
    FZ_ASSERT(sp->n >= 0 && (sp->n == 0 || sp->docs), "%d docs", sp->n);
    for (int i = 0; i < sp->n; i++) {
        const ae_task_doc *d = &sp->docs[i];
        if (def->kind == AE_TASK_LL) {
            FZ_ASSERT(d->text && d->target, "%s doc %d: LL doc without text or target", def->name, i);
        } else {
            FZ_ASSERT(d->n_choices >= 1 && d->choices, "%s doc %d: %d choices", def->name, i,
                      d->n_choices);
            FZ_ASSERT(d->gold >= 0 && d->gold < d->n_choices, "%s doc %d: gold %d of %d", def->name,
                      i, d->gold, d->n_choices);
            for (int c = 0; c < d->n_choices; c++)
                FZ_ASSERT(d->choices[c], "%s doc %d: choice %d NULL", def->name, i, c);
            FZ_ASSERT(def->kind == AE_TASK_MULTI_INPUT ? d->target != NULL : d->text != NULL,
                      "%s doc %d: no text/target", def->name, i);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int n_plain = 0; // the tasks come first, the MMLU subjects after them
    while (n_plain < ae_task_count() && !ae_task_at(n_plain)->subject) n_plain++;
    int k = data[0] % (n_plain + 1), n_subjects = ae_task_count() - n_plain;
    const ae_task_def *def = ae_task_at(k < n_plain ? k : n_plain + (data[0] / (n_plain + 1)) % n_subjects);
    FZ_ASSERT(def, "task table");
    int ev = def->files[AE_SPLIT_TEST][0] ? AE_SPLIT_TEST : AE_SPLIT_VALIDATION;
    int nfiles = 0;
    while (nfiles < 4 && def->files[ev][nfiles]) nfiles++;
    FZ_ASSERT(nfiles > 0, "%s has no evaluation file names", def->name);
    char *name = ae_task_file_name(def, ev, (data[1] & 0x3f) % nfiles);
    FZ_ASSERT(name, "file name");
    int shots = data[1] >> 6;
    const uint8_t *body = data + 2;
    size_t n = size - 2, nbody = n;
    const uint8_t *labels = NULL;
    size_t nlabels = 0;
    for (size_t i = 0; i + sizeof k_sep - 1 <= n; i++)
        if (memcmp(body + i, k_sep, sizeof k_sep - 1) == 0) {
            nbody = i;
            labels = body + i + sizeof k_sep - 1;
            nlabels = n - i - (sizeof k_sep - 1);
            break;
        }
    char rel[256], lrel[300];
    snprintf(rel, sizeof rel, "data/%s/%s", def->folder, name);
    free(name);
    fz_remove("data");
    fz_write(rel, body, nbody);
    size_t rl = strlen(rel);
    if (labels && rl > 6 && !strcmp(rel + rl - 6, ".jsonl")) { // valid.jsonl -> valid-labels.lst
        snprintf(lrel, sizeof lrel, "%.*s-labels.lst", (int)(rl - 6), rel);
        fz_write(lrel, labels, nlabels);
    }
    ae_task t;
    fz_begin();
    ae_status st = ae_task_load(def, fz_path("data"), 1, &t);
    fz_check(st, "ae_task_load");
    if (st == AE_OK) {
        FZ_ASSERT(t.eval_split == ev && t.split[ev].path && t.split[ev].n >= 1, "eval split");
        for (int s = 0; s < 3; s++) check_split(def, &t.split[s]);
        ae_task_item *items = NULL;
        int n_items = 0;
        fz_begin();
        st = ae_task_build(&t, shots, 16, 1234, &items, &n_items);
        fz_check(st, "ae_task_build");
        if (st == AE_OK) {
            int want = t.split[ev].n < 16 ? t.split[ev].n : 16;
            FZ_ASSERT(n_items == want, "%d items for %d docs", n_items, t.split[ev].n);
            for (int i = 0; i < n_items; i++) {
                FZ_ASSERT(items[i].n >= 1, "item %d: %d requests", i, items[i].n);
                for (int r = 0; r < items[i].n; r++)
                    FZ_ASSERT(items[i].ctx[r] && items[i].cont[r], "item %d request %d NULL", i, r);
            }
            ae_task_items_free(items, n_items);
        } else {
            FZ_ASSERT(!items && n_items == 0, "failed build returned items");
        }
        ae_task_free(&t);
    } else {
        for (int s = 0; s < 3; s++) FZ_ASSERT(!t.split[s].docs && !t.split[s].path, "failed load kept docs");
    }
    return 0;
}
