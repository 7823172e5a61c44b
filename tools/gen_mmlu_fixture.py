#!/usr/bin/env python3
"""Writes tests/fixtures/eval_tasks/data/mmlu/: a small MMLU in Hendrycks' release layout
(data/{dev,test}/<subject>_{dev,test}.csv, no header; question, A, B, C, D, answer letter) for
all 57 subjects of lm-eval's mmlu group, so that `--tasks mmlu` and its category groups run.

The questions are generated (simple arithmetic and wording per subject: the fixture is about the
format, the prompts and the scoring, not about knowledge); every subject has 5 dev questions
(the 5-shot pool) and 2 to 4 test questions, so that the groups' size-weighted (micro) and
unweighted (macro) averages differ. A few files carry CSV edge cases (quoted commas, doubled
quotes, newlines and CRLF inside quotes, a quote inside an unquoted field, text after a closing
quote, leading and trailing white space, an empty choice, a spaced answer letter, non-ASCII
text, CRLF line ends, no final newline), written byte by byte below.

  python3 tools/gen_mmlu_fixture.py
"""
import csv
import io
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval_tasks", "data", "mmlu", "data")

# lm-eval 0.4.13 mmlu/default: subject -> category (the subject YAML's tag)
SUBJECTS = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
    "clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
    "college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
    "college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem",
    "econometrics": "social_sciences", "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences", "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem", "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem", "high_school_psychology": "social_sciences", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities", "human_aging": "other",
    "human_sexuality": "social_sciences", "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other", "marketing": "other",
    "medical_genetics": "other", "miscellaneous": "other", "moral_disputes": "humanities",
    "moral_scenarios": "humanities", "nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
    "professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences", "us_foreign_policy": "social_sciences",
    "virology": "other", "world_religions": "humanities",
}

TEMPLATES = [
    ("What is {a} plus {b}?", lambda a, b: a + b),
    ("What is {a} times {b}?", lambda a, b: a * b),
    ("How many days are in {a} weeks and {b} days?", lambda a, b: 7 * a + b),
    ("A {w} course has {a} lectures a week for {b} weeks. How many lectures is that?", lambda a, b: a * b),
    ("What is {a} minus {b}?", lambda a, b: a - b),
]


def questions(subject, k, n, salt):
    """n rows [question, A, B, C, D, letter] for a subject, deterministic."""
    rows = []
    words = subject.replace("_", " ")
    for i in range(n):
        s = sum(map(ord, subject)) + 31 * i + salt
        a, b = 3 + s % 17, 2 + (s // 7) % 11
        text, f = TEMPLATES[(s + i) % len(TEMPLATES)]
        right = f(a, b)
        wrong = [right + d for d in (1, -2, 5)]
        gold = (s + k) % 4
        choices = wrong[:gold] + [right] + wrong[gold:]
        rows.append([text.format(a=a, b=b, w=words)] + [str(c) for c in choices] + ["ABCD"[gold]])
    return rows


def csv_text(rows, lineterminator="\n"):
    buf = io.StringIO()
    csv.writer(buf, lineterminator=lineterminator).writerows(rows)
    return buf.getvalue()


# Hand-written records (raw CSV bytes), prepended to a subject's generated test rows.
EDGE_TEST = {
    # quoted comma, doubled quotes, a newline inside quotes, a leading-space choice, an empty choice
    "abstract_algebra": (
        '"Let G be a group, and let H = {e, g}. Which ""order"" can g have?",1,2," 3",,B\n'
        '"Which statement is true?\nI. Every field is a ring.\nII. Every ring is a field.",I only,II only,'
        'Both,Neither,A\n'),
    # a quote inside an unquoted field, text after a closing quote, question padded with white space
    "high_school_us_history": (
        'The 5" rule of 1790 was about what?,"Tariffs"ish,Roads,Ships,Mail,C\n'
        '"   In what year did the war end?   ",1783,1776,1812,1865, A \n'),
    # non-ASCII text and CRLF inside quotes
    "world_religions": (
        '"Which word means \u201cpeace\u201d in Hebrew?\r\nPick one.",Shalom,Salam,\u548c\u5e73,Pax \U0001F54A,A\n'),
}
CRLF_FILES = {"professional_law"}       # every line ends in CRLF
NO_FINAL_NEWLINE = {"virology"}          # the test file ends without a newline


def main():
    for split in ("dev", "test"):
        os.makedirs(os.path.join(OUT, split), exist_ok=True)
    for k, subject in enumerate(SUBJECTS):
        term = "\r\n" if subject in CRLF_FILES else "\n"
        dev = csv_text(questions(subject, k, 5, 1), term)
        test = EDGE_TEST.get(subject, "") + csv_text(questions(subject, k, 2 + k % 3, 7), term)
        if subject in NO_FINAL_NEWLINE:
            test = test.rstrip("\n")
        for split, text in (("dev", dev), ("test", test)):
            with open(os.path.join(OUT, split, "%s_%s.csv" % (subject, split)), "w", encoding="utf-8",
                      newline="") as f:
                f.write(text)
    print("wrote %d subjects to %s" % (len(SUBJECTS), OUT))


if __name__ == "__main__":
    main()
