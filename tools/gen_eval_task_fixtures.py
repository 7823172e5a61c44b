#!/usr/bin/env python3
"""Writes tests/fixtures/eval_tasks/lm_eval_requests.json: the (context, continuation) requests
lm-evaluation-harness itself builds (its task YAMLs, ConfigurableTask.build_all_requests, few-shot
seed 1234) for the first 3 documents of every task, 0-shot and 2-shot, from the files
tests/test_eval_tasks.c reads: ../shared/data/eval for the tasks it holds, the fixture folder
tests/fixtures/eval_tasks/data for the others. The data is converted to the Hugging Face layout
exactly as tools/check_eval_tasks.py converts it. No model runs. MMLU: four subjects of the
fixture (the CSV edge cases among them), 0-, 2- and 5-shot, with lm-eval's own subject YAMLs.

  /tmp/lmenv/bin/python tools/gen_eval_task_fixtures.py [--shared ../shared]
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check_eval_tasks as cet  # noqa: E402

FIXTURE_DATA = os.path.join(ROOT, "tests", "fixtures", "eval_tasks", "data")
SHOTS = (0, 2)
N_DOCS = 3


MMLU_SUBJECTS = ("abstract_algebra", "high_school_us_history", "professional_law", "world_religions")
MMLU_SHOTS = (0, 2, 5)


def mmlu_config(subject, files):
    from lm_eval.tasks._yaml_loader import load_yaml
    cfg = load_yaml(os.path.join(cet.mmlu_yaml_dir(), "mmlu_%s.yaml" % subject), resolve_func=True)
    cfg.pop("tag", None)
    cfg.update({"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": dict(files)}})
    return cfg


def requests(task, files, shots, cfg=None):
    from lm_eval.api.task import ConfigurableTask
    cfg = cfg or cet.lm_eval_config(task, files)
    cfg["num_fewshot"] = shots
    t = ConfigurableTask(config=cfg)
    t.set_fewshot_seed(1234)
    t.build_all_requests(limit=N_DOCS)
    docs = {}
    for inst in t.instances:
        docs.setdefault(inst.doc_id, []).append(list(inst.args))
    out = []
    for i in sorted(docs):  # {"ctx": one context (or one per request), "cont": [continuations]}
        ctx = [r[0] for r in docs[i]]
        out.append({"ctx": ctx[0] if len(set(ctx)) == 1 else ctx, "cont": [r[1] for r in docs[i]]})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    args = ap.parse_args()
    shared = os.path.join(args.shared, "data", "eval")
    work = tempfile.mkdtemp(prefix="gen_eval_task_fixtures.")
    out = {}
    for task in cet.TASKS:
        folder = cet.FOLDER.get(task, task)
        src = "shared" if os.path.isdir(os.path.join(shared, folder)) else "fixture"
        data = shared if src == "shared" else FIXTURE_DATA
        if not os.path.isdir(os.path.join(data, folder)):
            print("skip %s: no data" % task)
            continue
        files = cet.convert(task, data, os.path.join(work, src))
        out[task] = {"data": src, "shots": {str(k): requests(task, files, k) for k in SHOTS}}
        print("%s (%s): %d docs" % (task, src, len(out[task]["shots"]["0"])))
    mmlu = cet.convert_mmlu(FIXTURE_DATA, os.path.join(work, "fixture"))
    for subject in MMLU_SUBJECTS:
        task = "mmlu_" + subject
        out[task] = {"data": "fixture", "shots": {str(k): requests(task, None, k, mmlu_config(subject, mmlu[subject]))
                                                  for k in MMLU_SHOTS}}
        print("%s (fixture): %d docs" % (task, len(out[task]["shots"]["0"])))
    path = os.path.join(ROOT, "tests", "fixtures", "eval_tasks", "lm_eval_requests.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
