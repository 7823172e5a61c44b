#!/usr/bin/env python3
"""Proof of equality of `attnedit eval tasks` with lm-evaluation-harness (HF backend, CPU, fp32).

Both run the same model on the same local data files:
  - attnedit reads the files as they are (official layouts: ARC jsonl, OpenBookQA tsv, PIQA jsonl +
    labels, llama.cpp's HellaSwag text, SuperGLUE BoolQ, LAMBADA jsonl) and writes --samples;
  - this script converts the same files to the Hugging Face dataset layout (the fields lm-eval's
    task YAMLs read) and runs lm-eval's own task definitions (the YAML files of the installed
    lm_eval package, !function helpers included) with dataset_path "json" and data_files pointing
    at the converted files; splits whose file is absent are set to null in both.
  - with --hf-layout, attnedit also runs on the converted folder (its HF-layout readers).
Item by item: the same contexts and continuations (strings), per-choice log-likelihoods within
--tol (absolute; tol x |ll| / 100 above 100 nats, where fp32 rounding of a long sum dominates),
the same greedy flags, predictions (acc, acc_norm per item) and aggregate
metrics.

  /tmp/lmenv/bin/python tools/check_eval_tasks.py --attnedit build/attnedit \\
      --model ../shared/teachers/qwen3-small --data-dir ../shared/data/eval --limit 100 [--shots 5]

MMLU (`--tasks mmlu`, or by default when DATA_DIR/mmlu exists): Hendrycks' CSV files are converted
as Hugging Face's hendrycks_test builder read them (csv.reader over the decoded lines, answer letter
-> 0-3) into the cais/mmlu export layout (<subject>/{dev,test}.jsonl; --hf-layout also runs attnedit
on an all/{dev,test}.jsonl copy), and lm-eval runs its own mmlu group: copies of its
lm_eval/tasks/mmlu/default YAMLs (one per subject found, the four category groups and `mmlu`) with
dataset_path json and data_files pointing at the converted files, loaded by a TaskManager that sees
only them. Besides every subject's items, each group's acc and stderr (weight_by_size: micro
average, pooled stderr) are compared with attnedit's.

Prints one line per task and a verdict; exits 1 on any mismatch. docs/EVAL.md records a run.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

# task -> (lm_eval/tasks/<yaml>, {split: [original file names]}) (attnedit's registry order)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", {"train": ["ARC-Easy-Train.jsonl"], "validation": ["ARC-Easy-Dev.jsonl"],
                                       "test": ["ARC-Easy-Test.jsonl"]}),
    "arc_challenge": ("arc/arc_challenge.yaml", {"train": ["ARC-Challenge-Train.jsonl"],
                                                 "validation": ["ARC-Challenge-Dev.jsonl"],
                                                 "test": ["ARC-Challenge-Test.jsonl"]}),
    "hellaswag": ("hellaswag/hellaswag.yaml", {"train": ["hellaswag_train.jsonl"],
                                               "validation": ["hellaswag_val.jsonl", "hellaswag_val_full.txt"]}),
    "piqa": ("piqa/piqa.yaml", {"train": ["train.jsonl"], "validation": ["valid.jsonl"]}),
    "boolq": ("super_glue/boolq/default.yaml", {"train": ["train.jsonl"], "validation": ["val.jsonl"]}),
    "openbookqa": ("openbookqa/openbookqa.yaml", {"train": ["train.tsv"], "validation": ["dev.tsv"],
                                                  "test": ["test.tsv"]}),
    "winogrande": ("winogrande/default.yaml", {"train": ["train_xl.jsonl"], "validation": ["dev.jsonl"]}),
    "sciq": ("sciq/sciq.yaml", {"train": ["train.json"], "validation": ["valid.json"], "test": ["test.json"]}),
    "lambada_openai": ("lambada/lambada_openai.yaml", {"test": ["lambada_test.jsonl"]}),
}
FOLDER = {"lambada_openai": "lambada"}
SPLIT_KEYS = {"train": "training_split", "validation": "validation_split", "test": "test_split"}


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def conv_arc(path):
    out = []
    for r in jsonl(path):
        q = r["question"]
        out.append({"id": r["id"], "question": q["stem"],
                    "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
                    "answerKey": r["answerKey"]})
    return out


def conv_hellaswag(path):
    if path.endswith(".jsonl"):
        return jsonl(path)
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    for i in range(0, len(lines) - 5, 6):
        # The text file holds preprocess(activity_label + ": " + ctx); ctx_b = "" reproduces it
        # (lm-eval: preprocess(label + ": " + ctx_a + " " + "".capitalize())).
        label, _, ctx = lines[i].partition(": ")
        out.append({"activity_label": label, "ctx_a": ctx, "ctx_b": "", "endings": lines[i + 2:i + 6],
                    "label": lines[i + 1]})
    return out


def conv_piqa(path):
    recs = jsonl(path)
    labels = [l.strip() for l in open(path[:-len(".jsonl")] + "-labels.lst", encoding="utf-8") if l.strip()]
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(l)} for r, l in zip(recs, labels)]


def conv_boolq(path):
    out = []
    for r in jsonl(path):
        lab = r["label"]
        lab = {"true": 1, "false": 0}[lab] if isinstance(lab, str) else int(lab)
        out.append({"question": r["question"], "passage": r["passage"], "idx": r.get("idx"), "label": lab})
    return out


def conv_obqa(path):
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    for row in rows[1:]:
        if not row:
            continue
        rest, texts, labels = row[2], [], []
        assert rest.startswith("(A) "), row
        rest = rest[4:]
        k = 0
        while True:
            nxt = " (%s) " % chr(ord("A") + k + 1)
            labels.append(chr(ord("A") + k))
            if nxt in rest:
                t, rest = rest.split(nxt, 1)
                texts.append(t)
                k += 1
            else:
                texts.append(rest)
                break
        out.append({"id": row[0], "question_stem": row[1], "choices": {"text": texts, "label": labels},
                    "answerKey": row[4]})
    return out


def conv_lambada(path):
    return [{"text": r["text"]} for r in jsonl(path)]


def conv_sciq(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


CONVERT = {"arc_easy": conv_arc, "arc_challenge": conv_arc, "hellaswag": conv_hellaswag, "piqa": conv_piqa,
           "boolq": conv_boolq, "openbookqa": conv_obqa, "winogrande": jsonl, "sciq": conv_sciq,
           "lambada_openai": conv_lambada}


def convert(task, data_dir, out_dir):
    """HF-layout files of every split present: {split: path}."""
    src = os.path.join(data_dir, FOLDER.get(task, task))
    dst = os.path.join(out_dir, FOLDER.get(task, task))
    os.makedirs(dst, exist_ok=True)
    files = {}
    for split, names in TASKS[task][1].items():
        for n in names:
            p = os.path.join(src, n)
            if os.path.exists(p):
                files[split] = os.path.join(dst, split + ".jsonl")
                with open(files[split], "w", encoding="utf-8") as f:
                    for r in CONVERT[task](p):
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
                break
    return files


# ---- MMLU ----
def mmlu_yaml_dir():
    import lm_eval
    return os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "mmlu", "default")


def mmlu_subjects():
    """{subject: category} from lm-eval's subject YAMLs (their tag)."""
    import yaml
    out = {}
    d = mmlu_yaml_dir()
    for name in sorted(os.listdir(d)):
        if name.startswith("mmlu_") and name.endswith(".yaml"):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                y = yaml.safe_load(f)
            out[y["dataset_name"]] = y["tag"][len("mmlu_"):-len("_tasks")]
    return out


def read_mmlu_csv(path):
    """Records as HF's hendrycks_test builder made them: csv.reader over the file's decoded lines."""
    with open(path, "rb") as f:
        rows = list(csv.reader(line.decode("utf-8") for line in f))
    return [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5].strip())} for r in rows if r]


def convert_mmlu(data_dir, out_dir):
    """{subject: {split: path}} of the cais/mmlu layout made from the CSVs found; also writes all/."""
    src = os.path.join(data_dir, "mmlu", "data")
    files, every = {}, {"dev": [], "test": []}
    for subject in mmlu_subjects():
        for split in ("dev", "test"):
            p = os.path.join(src, split, "%s_%s.csv" % (subject, split))
            if not os.path.exists(p):
                continue
            recs = [dict(question=r["question"], subject=subject, choices=r["choices"], answer=r["answer"])
                    for r in read_mmlu_csv(p)]
            every[split] += recs
            dst = os.path.join(out_dir, "mmlu", subject, split + ".jsonl")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "w", encoding="utf-8") as f:
                for r in recs:
                    f.write(json.dumps(r) + "\n")
            files.setdefault(subject, {})[split] = dst
    for split, recs in every.items():
        dst = os.path.join(out_dir, "mmlu-all", "mmlu", "all", split + ".jsonl")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    return files


def mmlu_task_dir(files, out_dir):
    """lm-eval's mmlu/default YAMLs, the subjects' pointed at the converted files."""
    import yaml
    src = mmlu_yaml_dir()
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(src):
        if name.startswith("_"):  # the template and the five group YAMLs, as they are
            with open(os.path.join(src, name), encoding="utf-8") as f:
                text = f.read()
            if name == "_default_template_yaml":
                assert "dataset_path: cais/mmlu\n" in text, "lm-eval's MMLU template changed"
                text = text.replace("dataset_path: cais/mmlu\n", "dataset_path: json\n")
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                f.write(text)
    for subject, fs in files.items():
        with open(os.path.join(src, "mmlu_%s.yaml" % subject), encoding="utf-8") as f:
            y = yaml.safe_load(f)
        y.update({"dataset_name": None, "dataset_kwargs": {"data_files": dict(fs)}})
        with open(os.path.join(out_dir, "mmlu_%s.yaml" % subject), "w", encoding="utf-8") as f:
            yaml.safe_dump(y, f, allow_unicode=True)
    return out_dir


def lm_eval_config(task, files):
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml
    yaml = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", TASKS[task][0])
    cfg = load_yaml(yaml, resolve_func=True)
    cfg.pop("tag", None)
    cfg.update({"task": task, "dataset_path": "json", "dataset_name": None,
                "dataset_kwargs": {"data_files": dict(files)}})
    for split, key in SPLIT_KEYS.items():
        if cfg.get(key) is not None and split not in files:
            cfg[key] = None
    return cfg


def run_lm_eval(args, tasks, conv, task_manager=None):
    import lm_eval
    cfgs = [t if task_manager else lm_eval_config(t, conv[t]) for t in tasks]
    res = lm_eval.simple_evaluate(model="hf", model_args="pretrained=%s,dtype=float32" % args.model, tasks=cfgs,
                                  num_fewshot=args.shots, limit=args.limit, device="cpu",
                                  batch_size=args.batch_size, log_samples=True, bootstrap_iters=1000,
                                  fewshot_random_seed=args.seed, task_manager=task_manager)
    return res


def run_lm_eval_mmlu(args, mmlu_files):
    from lm_eval.tasks import TaskManager
    tm = TaskManager(include_path=mmlu_task_dir(mmlu_files, os.path.join(args.work, "lm_eval_mmlu")),
                     include_defaults=False)
    return run_lm_eval(args, ["mmlu"], None, task_manager=tm)


def compare_group(g, lm_result, ae_group):
    """A group's acc (lm-eval: weight_by_size) and its pooled stderr against attnedit's."""
    bad = []
    mine = ae_group["metrics"]["acc"]
    for key, val in (("acc,none", mine["value"][0]), ("acc_stderr,none", mine["stderr"][0])):
        theirs = lm_result.get(key)
        if not isinstance(theirs, float) or val is None or abs(theirs - val) > 1e-12:
            bad.append("group %s %s: lm-eval %r vs attnedit %r" % (g, key, theirs, val))
    macro = ae_group["metrics"]["acc_macro"]["value"][0]
    return bad, "acc %.4f/%.4f stderr %.4f/%.4f (macro %.4f)" % (
        lm_result.get("acc,none", float("nan")), mine["value"][0], lm_result.get("acc_stderr,none", float("nan")),
        mine["stderr"][0], macro)


def run_attnedit(args, tasks, data_dir, tag):
    samples = os.path.join(args.work, "attnedit-%s.jsonl" % tag)
    cmd = [args.attnedit, "eval", "tasks", "--model", args.model, "--tasks", ",".join(tasks), "--data-dir",
           data_dir, "--limit", str(args.limit), "--shots", str(args.shots), "--seed", str(args.seed),
           "--device", "cpu", "--json", "--samples", samples]
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("attnedit failed (%d):\n%s" % (p.returncode, p.stderr[-3000:]))
    by = {}
    for line in open(samples, encoding="utf-8"):
        r = json.loads(line)
        by[(r["task"], r["doc_id"])] = r
    return json.loads(p.stdout), by


def compare(task, lm_samples, lm_result, ae_json, ae, tol):
    bad, max_d, max_r, n_req = [], 0.0, 0.0, 0
    for s in sorted(lm_samples, key=lambda s: s["doc_id"]):
        a = ae.get((task, s["doc_id"]))
        if a is None:
            bad.append("doc %d: no attnedit sample" % s["doc_id"])
            continue
        ctxs = a["prompt"] if isinstance(a["prompt"], list) else [a["prompt"]] * len(a["continuations"])
        if [list(x) for x in s["arguments"]] != [[c, k] for c, k in zip(ctxs, a["continuations"])]:
            bad.append("doc %d: requests differ:\n  lm-eval  %r\n  attnedit %r" %
                       (s["doc_id"], s["arguments"], list(zip(ctxs, a["continuations"]))))
            continue
        for j, (ll, greedy) in enumerate(s["filtered_resps"]):
            n_req += 1
            d = abs(ll - a["loglikelihoods"][j])
            max_d = max(max_d, d)
            max_r = max(max_r, d / max(1.0, abs(ll)))
            # fp32: a long continuation's sum of token log-probabilities carries rounding of
            # its magnitude, so above 100 nats the bound is relative (tol / 100).
            if d > tol * max(1.0, abs(ll) / 100):
                bad.append("doc %d choice %d: loglikelihood %.6f vs attnedit %.6f" % (s["doc_id"], j, ll,
                                                                                       a["loglikelihoods"][j]))
            if bool(greedy) != a["is_greedy"][j]:
                bad.append("doc %d choice %d: is_greedy %s vs %s" % (s["doc_id"], j, greedy, a["is_greedy"][j]))
        for m in ("acc", "acc_norm"):
            if m in s and float(s[m]) != float(a.get(m, -1)):
                bad.append("doc %d: %s %s vs attnedit %s" % (s["doc_id"], m, s[m], a.get(m)))
    metrics = ae_json["metrics"]
    agg = []
    for m, key in (("acc", "acc,none"), ("acc_norm", "acc_norm,none"), ("perplexity", "perplexity,none")):
        if key in lm_result:
            mine = metrics[m]["value"][0]
            agg.append("%s %.4f/%.4f" % (m, lm_result[key], mine))
            # acc and acc_norm are means of identical per-item 0/1 values; a perplexity is
            # exp(-mean ll), so the per-item tolerance bounds its relative difference.
            if abs(lm_result[key] - mine) > (tol * abs(mine) if m == "perplexity" else 1e-12):
                bad.append("aggregate %s: lm-eval %r vs attnedit %r" % (m, lm_result[key], mine))
            se = lm_result.get(key.replace(",", "_stderr,"))
            if m != "perplexity" and isinstance(se, float) and abs(se - metrics[m]["stderr"][0]) > 1e-9:
                bad.append("stderr %s: lm-eval %r vs attnedit %r" % (m, se, metrics[m]["stderr"][0]))
    return bad, (max_d, max_r), n_req, agg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attnedit", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tasks", help="default: every task whose folder is in --data-dir")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hf-layout", action="store_true", help="also run attnedit on the converted files")
    ap.add_argument("--work", help="folder for converted data and samples (default: a temp folder)")
    args = ap.parse_args()
    keep = bool(args.work)
    args.work = args.work or tempfile.mkdtemp(prefix="check_eval_tasks.")
    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else \
        [t for t in list(TASKS) + ["mmlu"] if os.path.isdir(os.path.join(args.data_dir, FOLDER.get(t, t)))]
    for t in tasks:
        if t not in TASKS and t != "mmlu":
            sys.exit("unknown task %s (this tool knows %s, mmlu)" % (t, ", ".join(TASKS)))
    mmlu = "mmlu" in tasks
    tasks = [t for t in tasks if t != "mmlu"]
    conv_dir = os.path.join(args.work, "hf-layout")
    conv = {t: convert(t, args.data_dir, conv_dir) for t in tasks}
    mmlu_files = convert_mmlu(args.data_dir, conv_dir) if mmlu else {}
    if mmlu and not mmlu_files:
        sys.exit("no MMLU CSV files under %s/mmlu/data" % args.data_dir)
    ae_tasks = tasks + (["mmlu"] if mmlu else [])
    runs = [("official", args.data_dir)] + ([("hf-layout", conv_dir)] if args.hf_layout else [])
    ae_runs = [(tag,) + run_attnedit(args, ae_tasks, d, tag) for tag, d in runs]
    if mmlu and args.hf_layout:  # the all/ export, by itself
        ae_runs.append(("hf-all",) + run_attnedit(args, ["mmlu"], os.path.join(conv_dir, "mmlu-all"), "hf-all"))
    res = run_lm_eval(args, tasks, conv) if tasks else {"samples": {}, "results": {}}
    if mmlu:
        r = run_lm_eval_mmlu(args, mmlu_files)
        res["samples"].update(r["samples"])
        res["results"].update(r["results"])
        res["results"].update(r.get("groups", {}))
    import lm_eval
    import torch
    import transformers
    print("lm-eval %s, transformers %s, torch %s; model %s; %d-shot, limit %d, tol %g" %
          (getattr(lm_eval, "__version__", "?"), transformers.__version__, torch.__version__, args.model,
           args.shots, args.limit, args.tol))
    failed = False
    for tag, ae_json, ae in ae_runs:
        ran = [x["task"] for x in ae_json["tasks"]]
        for t in [t for t in tasks if t in ran] + [t for t in ran if t.startswith("mmlu_")]:
            tj = next(x for x in ae_json["tasks"] if x["task"] == t)
            bad, max_d, n_req, agg = compare(t, res["samples"][t], res["results"][t], tj, ae, args.tol)
            print("%-9s %-15s items %4d requests %5d  max|dll| %.1e (rel %.1e)  %s  %s" %
                  (tag, t, len(res["samples"][t]), n_req, max_d[0], max_d[1], "  ".join(agg),
                   "OK" if not bad else "MISMATCH"))
            for b in bad[:10]:
                print("    " + b)
            failed |= bool(bad)
        for gj in ae_json.get("groups", []):
            g = gj["group"]
            if g not in res["results"]:
                print("%-9s %-15s MISMATCH: lm-eval reports no such group" % (tag, g))
                failed = True
                continue
            bad, line = compare_group(g, res["results"][g], gj)
            print("%-9s %-15s items %4d  %s  %s" % (tag, g, gj["n"], line, "OK" if not bad else "MISMATCH"))
            for b in bad:
                print("    " + b)
            failed |= bool(bad)
    print("FAIL" if failed else "PASS: attnedit equals lm-evaluation-harness on every item")
    if not keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
