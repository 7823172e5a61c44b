// MMLU as lm-eval 0.4.13's default `mmlu` group defines it (lm_eval/tasks/mmlu/default/): one
// task per subject, mmlu_<subject>, each
//   description  "The following are multiple choice questions (with answers) about <subject
//                with _ as spaces>.\n\n" (prepended to the context)
//   doc_to_text  "{question.strip()}\nA. {c0}\nB. {c1}\nC. {c2}\nD. {c3}\nAnswer:"
//   choices      " A", " B", " C", " D" (doc_to_choice [A, B, C, D], target delimiter " ")
//   splits       test evaluated; few-shot from dev with the first_n sampler; metric acc
// grouped into four categories (mmlu_stem, mmlu_humanities, mmlu_social_sciences, mmlu_other:
// the subjects' `tag`) and `mmlu`, each aggregated over its subjects with weight_by_size.
//
// Files (DIR/mmlu/): Hendrycks' release data/{dev,test}/<subject>_{dev,test}.csv (no header;
// question, A, B, C, D, answer letter), the same without the data/ level, or the Hugging Face
// cais/mmlu export as jsonl: <subject>/{dev,test}.jsonl or all/{dev,test}.jsonl (the records
// of this subject are kept).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "eval/tasks_internal.h"

#define MMLU_FILES                                                                            \
    {{"data/dev/%s_dev.csv", "dev/%s_dev.csv", "%s/dev.jsonl", "all/dev.jsonl"},              \
     {NULL},                                                                                   \
     {"data/test/%s_test.csv", "test/%s_test.csv", "%s/test.jsonl", "all/test.jsonl"}}
#define MMLU(subject, category)                                                               \
    {"mmlu_" #subject, "mmlu", AE_TASK_MC, AE_METRIC_ACC, MMLU_FILES, ae_read_mmlu, #subject,  \
     "mmlu_" #category, 1}

// The 57 subjects and their categories (each subject YAML's tag), in lm-eval's file order.
static const ae_task_def k_mmlu[] = {
    MMLU(abstract_algebra, stem),
    MMLU(anatomy, stem),
    MMLU(astronomy, stem),
    MMLU(business_ethics, other),
    MMLU(clinical_knowledge, other),
    MMLU(college_biology, stem),
    MMLU(college_chemistry, stem),
    MMLU(college_computer_science, stem),
    MMLU(college_mathematics, stem),
    MMLU(college_medicine, other),
    MMLU(college_physics, stem),
    MMLU(computer_security, stem),
    MMLU(conceptual_physics, stem),
    MMLU(econometrics, social_sciences),
    MMLU(electrical_engineering, stem),
    MMLU(elementary_mathematics, stem),
    MMLU(formal_logic, humanities),
    MMLU(global_facts, other),
    MMLU(high_school_biology, stem),
    MMLU(high_school_chemistry, stem),
    MMLU(high_school_computer_science, stem),
    MMLU(high_school_european_history, humanities),
    MMLU(high_school_geography, social_sciences),
    MMLU(high_school_government_and_politics, social_sciences),
    MMLU(high_school_macroeconomics, social_sciences),
    MMLU(high_school_mathematics, stem),
    MMLU(high_school_microeconomics, social_sciences),
    MMLU(high_school_physics, stem),
    MMLU(high_school_psychology, social_sciences),
    MMLU(high_school_statistics, stem),
    MMLU(high_school_us_history, humanities),
    MMLU(high_school_world_history, humanities),
    MMLU(human_aging, other),
    MMLU(human_sexuality, social_sciences),
    MMLU(international_law, humanities),
    MMLU(jurisprudence, humanities),
    MMLU(logical_fallacies, humanities),
    MMLU(machine_learning, stem),
    MMLU(management, other),
    MMLU(marketing, other),
    MMLU(medical_genetics, other),
    MMLU(miscellaneous, other),
    MMLU(moral_disputes, humanities),
    MMLU(moral_scenarios, humanities),
    MMLU(nutrition, other),
    MMLU(philosophy, humanities),
    MMLU(prehistory, humanities),
    MMLU(professional_accounting, other),
    MMLU(professional_law, humanities),
    MMLU(professional_medicine, other),
    MMLU(professional_psychology, social_sciences),
    MMLU(public_relations, social_sciences),
    MMLU(security_studies, social_sciences),
    MMLU(sociology, social_sciences),
    MMLU(us_foreign_policy, social_sciences),
    MMLU(virology, other),
    MMLU(world_religions, humanities),
};

#define N_MMLU ((int)(sizeof k_mmlu / sizeof k_mmlu[0]))

int ae_mmlu_count(void) { return N_MMLU; }
const ae_task_def *ae_mmlu_at(int i) { return i >= 0 && i < N_MMLU ? &k_mmlu[i] : NULL; }

// lm-eval's _mmlu.yaml and the four category YAMLs (all with weight_by_size: True).
static const ae_task_group k_groups[] = {
    {"mmlu_humanities", "mmlu_humanities"},
    {"mmlu_other", "mmlu_other"},
    {"mmlu_social_sciences", "mmlu_social_sciences"},
    {"mmlu_stem", "mmlu_stem"},
    {"mmlu", NULL},
};

#define N_GROUPS ((int)(sizeof k_groups / sizeof k_groups[0]))

int ae_task_group_count(void) { return N_GROUPS; }
const ae_task_group *ae_task_group_at(int i) { return i >= 0 && i < N_GROUPS ? &k_groups[i] : NULL; }

const ae_task_group *ae_task_group_find(const char *name) {
    for (int i = 0; i < N_GROUPS; i++)
        if (!strcmp(k_groups[i].name, name)) return &k_groups[i];
    return NULL;
}

int ae_task_group_has(const ae_task_group *g, const ae_task_def *def) {
    return def->group && (!g->category || !strcmp(g->category, def->group));
}

// ---- records ----
typedef struct {
    const ae_task_def *def;
    const char *path;
    ae_task_split *out;
    int all; // an all/ export: records of other subjects are skipped
} mmlu_rd;

static const char *const k_letters[4] = {"A", "B", "C", "D"};

// doc_to_text of one record; choices[4] as given (lm-eval does not strip them).
static ae_status mmlu_push(mmlu_rd *r, int line, const char *question, const char *const *choices, int gold) {
    char *q = ae_py_strip(question, 1, 1);
    char *text = q ? ae_strfmt("%s\nA. %s\nB. %s\nC. %s\nD. %s\nAnswer:", q, choices[0], choices[1], choices[2],
                               choices[3])
                   : NULL;
    free(q);
    return ae_push_mc(r->out, line, text, k_letters, 4, gold);
}

static ae_status mmlu_csv_rec(void *ud, char **f, int n, int line) {
    mmlu_rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    if (n != 6)
        return ae_rec_error(&c, "expected 6 fields (question, A, B, C, D, answer letter), found %d", n);
    // Hugging Face's ClassLabel reads the letter, stripped of white space.
    char *a = ae_py_strip(f[5], 1, 1);
    if (!a) return AE_ERR_NOMEM;
    int gold = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(a, k_letters[i])) gold = i;
    free(a);
    if (gold < 0) return ae_rec_error(&c, "answer \"%.20s\" is not A, B, C or D", f[5]);
    return mmlu_push(r, line, f[0], (const char *const *)f + 1, gold);
}

static ae_status mmlu_json_rec(void *ud, const cJSON *rec, int line) {
    mmlu_rd *r = ud;
    ae_rec_ctx c = {r->path, line};
    const cJSON *subj = cJSON_GetObjectItemCaseSensitive(rec, "subject");
    if (subj || r->all) {
        const char *s = ae_rec_str(&c, rec, "subject");
        if (!s) return AE_ERR_FORMAT;
        if (strcmp(s, r->def->subject)) {
            if (r->all) return AE_OK;
            return ae_rec_error(&c, "subject \"%.60s\" in the file of subject %s", s, r->def->subject);
        }
    }
    const char *q = ae_rec_str(&c, rec, "question"), *ch[4];
    if (!q) return AE_ERR_FORMAT;
    int n = ae_rec_str_array(&c, rec, "choices", ch, 4), gold;
    if (n < 0) return AE_ERR_FORMAT;
    if (n != 4) return ae_rec_error(&c, "field \"choices\": expected 4 choices, found %d", n);
    AE_TRY(ae_rec_index(&c, rec, "answer", 4, &gold));
    return mmlu_push(r, line, q, ch, gold);
}

// Whether path's parent folder is "all".
static int in_all_folder(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash - path < 3 || strncmp(slash - 3, "all", 3)) return 0;
    return slash - path == 3 || slash[-4] == '/';
}

ae_status ae_read_mmlu(const ae_task_def *def, const char *path, ae_task_split *out) {
    size_t n = strlen(path);
    mmlu_rd r = {def, path, out, in_all_folder(path)};
    if (n > 4 && !strcmp(path + n - 4, ".csv")) return ae_csv_foreach(path, mmlu_csv_rec, &r);
    AE_TRY(ae_jsonl_foreach(path, mmlu_json_rec, &r));
    if (r.all && out->n == 0)
        return ae_errorf(AE_ERR_FORMAT, "%s: no records of subject %s (field \"subject\")", path, def->subject);
    return AE_OK;
}
