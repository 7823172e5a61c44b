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


def run_lm_eval(args, tasks, conv):
    import lm_eval
    cfgs = [lm_eval_config(t, conv[t]) for t in tasks]
    res = lm_eval.simple_evaluate(model="hf", model_args="pretrained=%s,dtype=float32" % args.model, tasks=cfgs,
                                  num_fewshot=args.shots, limit=args.limit, device="cpu",
                                  batch_size=args.batch_size, log_samples=True, bootstrap_iters=1000,
                                  fewshot_random_seed=args.seed)
    return res


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
        [t for t in TASKS if os.path.isdir(os.path.join(args.data_dir, FOLDER.get(t, t)))]
    for t in tasks:
        if t not in TASKS:
            sys.exit("unknown task %s (this tool knows %s)" % (t, ", ".join(TASKS)))
    conv_dir = os.path.join(args.work, "hf-layout")
    conv = {t: convert(t, args.data_dir, conv_dir) for t in tasks}
    runs = [("official", args.data_dir)] + ([("hf-layout", conv_dir)] if args.hf_layout else [])
    ae_runs = [(tag,) + run_attnedit(args, tasks, d, tag) for tag, d in runs]
    res = run_lm_eval(args, tasks, conv)
    import lm_eval
    import torch
    import transformers
    print("lm-eval %s, transformers %s, torch %s; model %s; %d-shot, limit %d, tol %g" %
          (getattr(lm_eval, "__version__", "?"), transformers.__version__, torch.__version__, args.model,
           args.shots, args.limit, args.tol))
    failed = False
    for tag, ae_json, ae in ae_runs:
        for t in tasks:
            tj = next(x for x in ae_json["tasks"] if x["task"] == t)
            bad, max_d, n_req, agg = compare(t, res["samples"][t], res["results"][t], tj, ae, args.tol)
            print("%-9s %-15s items %4d requests %5d  max|dll| %.1e (rel %.1e)  %s  %s" %
                  (tag, t, len(res["samples"][t]), n_req, max_d[0], max_d[1], "  ".join(agg),
                   "OK" if not bad else "MISMATCH"))
            for b in bad[:10]:
                print("    " + b)
            failed |= bool(bad)
    print("FAIL" if failed else "PASS: attnedit equals lm-evaluation-harness on every item")
    if not keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
