#!/usr/bin/env python3
"""The v1 seed campaign on the real repositories: `ase run` (original and reference, 3 rounds)
and `ase calibrate` over upstream's seeds whose repositories you have as local mirrors.

What it does, so that anyone reruns it against their own mirrors:
  1. picks the seed tasks of DATASET (upstream's data_v1.json) whose repository has a mirror
     (MIRRORS/<owner>+<name>/repo, MIRRORS/<owner>+<name> or MIRRORS/<owner>/<name>, bare);
  2. gives each its fix commit from rules/cve/fixes.json as `patch_commit` (calibration data of
     ours, never written into upstream's file), so that the `reference` model has a fix;
  3. leaves out, and lists, the tasks whose base or fix tree misses objects in the mirror (some
     snapshots lack their largest blobs: no checkout of such a tree can succeed);
  4. writes an ase.toml whose worker clones from the mirrors as plain paths (not file://:
     upload-pack refuses a repository with missing objects even for blobs nobody needs), runs
     `ase run` then `ase calibrate`, and prints the wall time of each.

  scripts/campaign_real.py --dataset data/data_v1.json --context data/data_v1_retrieval_data.json \\
      --cut-repos data/cut_repos.json --mirrors /work/.mirror --work /tmp/campaign [--ase target/debug/ase]

Nothing of the real projects goes into this repository: the mirrors stay where they are.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mirror_of(mirrors, repo):
    owner, name = repo.split("/", 1)
    for cand in (
        os.path.join(mirrors, f"{owner}+{name}", "repo"),
        os.path.join(mirrors, f"{owner}+{name}"),
        os.path.join(mirrors, owner, name),
    ):
        if os.path.isdir(cand):
            return cand
    return None


def missing_objects(gitdir, rev):
    """Objects of `rev`'s tree absent from the mirror (None: the revision itself is absent)."""
    ls = subprocess.run(["git", "-C", gitdir, "ls-tree", "-r", "--object-only", rev],
                        capture_output=True, text=True)
    if ls.returncode != 0:
        return None
    chk = subprocess.run(["git", "-C", gitdir, "cat-file", "--batch-check"], input=ls.stdout,
                         capture_output=True, text=True)
    return chk.stdout.count(" missing")


def short(rev):
    # `<sha>^` bases keep their caret: the base and the fix are told apart.
    return rev[:12] + ("^" if rev.endswith("^") else "")


def timed(cmd, log):
    start = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    return rc, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--context")
    ap.add_argument("--cut-repos")
    ap.add_argument("--mirrors", required=True)
    ap.add_argument("--work", required=True, help="a folder for the dataset, config, store and results")
    ap.add_argument("--fixes", default=os.path.join(ROOT, "rules", "cve", "fixes.json"))
    ap.add_argument("--ase", default=os.path.join(ROOT, "target", "debug", "ase"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-calibrate", action="store_true")
    a = ap.parse_args()

    tasks = json.load(open(a.dataset))
    fixes = json.load(open(a.fixes)) if os.path.isfile(a.fixes) else {}
    os.makedirs(a.work, exist_ok=True)
    farm = os.path.join(a.work, "mirrors")
    picked, skipped = [], []
    for t in tasks:
        if str(t.get("seed")).lower() != "true":
            continue
        gitdir = mirror_of(a.mirrors, t["repo"])
        if gitdir is None:
            skipped.append((t["instance_id"], t["repo"], "no mirror"))
            continue
        fix = fixes.get(t["vuln_source"], {}).get("fixes", {}).get(t["instance_id"])
        if fix and not t.get("patch_commit"):
            t["patch_commit"] = fix
        revs = [t["base_commit"]] + ([t["patch_commit"]] if t.get("patch_commit") else [])
        gaps = [(r, missing_objects(gitdir, r)) for r in revs]
        bad = [f"{short(r)}: {'absent' if n is None else f'{n} object(s) missing'}" for r, n in gaps if n != 0]
        if bad:
            skipped.append((t["instance_id"], t["repo"], "incomplete mirror (" + "; ".join(bad) + ")"))
            continue
        owner, name = t["repo"].split("/", 1)
        os.makedirs(os.path.join(farm, owner), exist_ok=True)
        link = os.path.join(farm, owner, name)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(gitdir), link)
        picked.append(t)
    data = os.path.join(a.work, "seeds.json")
    json.dump(picked, open(data, "w"), indent=1)
    print(f"seed tasks runnable: {len(picked)} (with a fix commit: "
          f"{sum(1 for t in picked if t.get('patch_commit'))}); left out: {len(skipped)}")
    for s in skipped:
        print("  left out: %s (%s): %s" % s)
    if not picked:
        sys.exit(1)

    def run_table(model):
        lines = [f'[[runs]]', f'model_name = "{model}"', 'batch = "seeds"',
                 f'dataset = {json.dumps(data)}', f'rounds = {a.rounds}']
        if a.context:
            lines.append(f"context = {json.dumps(os.path.abspath(a.context))}")
        if a.cut_repos:
            lines.append(f"cut_repos = {json.dumps(os.path.abspath(a.cut_repos))}")
        lines.append(f'model = {{ provider = "{model}" }}')
        return "\n".join(lines)

    config = os.path.join(a.work, "ase.toml")
    with open(config, "w") as f:
        f.write("\n".join([
            "[coordinator]", f"data = {json.dumps(os.path.join(a.work, 'data'))}", "",
            "[worker]", f"repo_url_template = {json.dumps(farm + '/{repo}')}",
            f"rules = {json.dumps(os.path.join(ROOT, 'rules'))}", "",
            run_table("original"), "", run_table("reference"), ""]))
    rc, wall = timed([a.ase, "run", "--config", config], os.path.join(a.work, "run.log"))
    print(f"ase run: rc={rc} wall_s={wall:.1f} units={2 * len(picked) * a.rounds} "
          f"(log: {a.work}/run.log, reports: {a.work}/data/results)")
    if a.no_calibrate:
        sys.exit(rc)
    cal = [a.ase, "calibrate", "--dataset", data, "--config", config,
           "--data", os.path.join(a.work, "calibrate")]
    if a.context:
        cal += ["--context", a.context]
    if a.cut_repos:
        cal += ["--cut-repos", a.cut_repos]
    crc, cwall = timed(cal, os.path.join(a.work, "calibrate.log"))
    print(f"ase calibrate: rc={crc} (1 = some task is dead) wall_s={cwall:.1f} "
          f"(table: {a.work}/calibrate/results/calibrate__*/calibration.md)")
    sys.exit(rc if rc != 0 else 0)


if __name__ == "__main__":
    main()
