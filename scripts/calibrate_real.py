#!/usr/bin/env python3
"""Calibrate our v1 rules on the real repositories of upstream's seeds.

For every seed task of a v1 dataset (upstream's data_v1.json), with the rule set the worker
would choose (rules/cve/<vuln_source>.yaml when it exists, else rules/<type>/<language>.yaml,
as worker/src/sast/rule_select.rs does):
  - base:  the vuln_file at base_commit is scanned; "flagged" when a finding of the task's
           vuln_type starts or ends inside vuln_lines;
  - fix:   the vuln_file at the fix commit (rules/cve/fixes.json, or a `<sha>^` base) is
           scanned; "cleared" when no finding of the task's vuln_type is left in the block
           (vuln_lines followed through the fix's diff).
Seeds whose repository has no local mirror are listed as uncalibrated.

Mirrors are bare git directories, found as MIRRORS/<owner>+<name>/repo, MIRRORS/<owner>+<name>,
or MIRRORS/<owner>/<name>(.git) (the search tool's `fetch` writes the first form).

Usage:
  scripts/calibrate_real.py --dataset data_v1.json --mirrors /work/.mirror \
      [--osemgrep ~/.cache/ase-cluster/semgrep/bin/osemgrep] [--rules rules] \
      [--fixes rules/cve/fixes.json] [--markdown docs/calibration-v1.md] [--json out.json]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TYPE_DIR = {
    "command injection": "command-injection",
    "xss": "xss",
    "sqli": "sqli",
    "sql injection": "sqli",
    "path traversal": "path-traversal",
}
LANG = {"php": "php", "python": "python", "go": "go", "golang": "go", "javascript": "javascript",
        "js": "javascript", "typescript": "javascript", "ts": "javascript", "java": "java"}


def rule_set(rules, task):
    """The worker's choice (worker/src/sast/rule_select.rs)."""
    cve = os.path.join(rules, "cve", task["vuln_source"].strip() + ".yaml")
    if os.path.isfile(cve):
        return "cve", [cve]
    t = TYPE_DIR.get(task["vuln_type"].strip().lower())
    lang = LANG.get(task["language"].strip().lower())
    pack = os.path.join(rules, t or "-", (lang or "-") + ".yaml")
    if os.path.isfile(pack):
        return "generic", [pack]
    return "everything", [rules]


def mirror_of(mirrors, repo):
    owner, name = repo.split("/", 1)
    for c in (os.path.join(mirrors, f"{owner}+{name}", "repo"), os.path.join(mirrors, f"{owner}+{name}"),
              os.path.join(mirrors, owner, name), os.path.join(mirrors, owner, name + ".git")):
        if os.path.isfile(os.path.join(c, "HEAD")):
            return c
    return None


def git(gitdir, *args):
    return subprocess.run(["git", "--git-dir", gitdir, *args], capture_output=True, check=False)


def scan_file(osemgrep, configs, gitdir, rev, path, vuln_type):
    """Findings (start, end, check_id) of vuln_type in `path` at `rev`; None when the file is
    missing there; raises on a scanner failure."""
    blob = git(gitdir, "show", f"{rev}:{path}")
    if blob.returncode != 0:
        return None, "file not at that revision"
    with tempfile.TemporaryDirectory(prefix="ase-cal-") as d:
        dst = os.path.join(d, os.path.basename(path))
        with open(dst, "wb") as f:
            f.write(blob.stdout)
        if path.lower().endswith(".vue"):
            # As the worker does (worker/src/sast/vue_script.rs): the component's <script>
            # sections, other lines blank, scanned as JavaScript beside it.
            twin = vue_script_twin(blob.stdout.decode("utf-8", "replace"))
            if twin is not None:
                with open(dst + ".js", "w") as f:
                    f.write(twin)
        cmd = [osemgrep, "scan", "--experimental", "--json", "--metrics=off", "--no-git-ignore",
               "--x-ignore-semgrepignore-files", "--no-rewrite-rule-ids", "--disable-version-check"]
        for c in configs:
            cmd += ["--config", c]
        cmd += ["--", d]
        out = subprocess.run(cmd, capture_output=True, check=False,
                             env={**os.environ, "SEMGREP_SEND_METRICS": "off"})
        try:
            report = json.loads(out.stdout)
        except ValueError:
            raise RuntimeError(f"osemgrep exit {out.returncode}: {out.stderr[-400:]!r}")
    errors = [e.get("type") for e in report.get("errors", [])]
    if any("Rule parse error" in str(e) or "Invalid rule" in str(e) for e in errors):
        raise RuntimeError(f"the rules do not load: {report['errors'][0].get('message', '')[:300]!r}")
    found = [(r["start"]["line"], r["end"]["line"], r["check_id"]) for r in report.get("results", [])
             if (r.get("extra", {}).get("metadata", {}).get("vuln_type") or "") == vuln_type]
    return found, ("parse errors: " + ", ".join(map(str, errors))) if errors else ""


VUE_SCRIPT = re.compile(r"<script(\s[^>]*)?>(.*?)(</script|$)", re.S | re.I)


def vue_script_twin(text):
    """The worker's JavaScript twin of a .vue component: its <script> sections in place (not
    those with lang="ts"), every other character but line breaks dropped; None without one."""
    out, pos, found = [], 0, False
    for m in VUE_SCRIPT.finditer(text):
        attrs = (m.group(1) or "").lower().replace(" ", "")
        ts = any(a in attrs for a in ('lang="ts"', "lang='ts'", "lang=ts", 'lang="tsx"', "lang='tsx'"))
        out.append(re.sub(r"[^\n]", "", text[pos:m.start(2)]))
        out.append(re.sub(r"[^\n]", "", m.group(2)) if ts else m.group(2))
        found = found or not ts
        pos = m.end(2)
    out.append(re.sub(r"[^\n]", "", text[pos:]))
    return "".join(out) if found else None


def map_block(gitdir, base, fix, path, lo, hi):
    """The lines lo..hi of `path` at `base`, followed through the fix's diff to `fix`."""
    out = git(gitdir, "diff", "-U0", "--no-color", base, fix, "--", path).stdout.decode("utf-8", "replace")
    hunks = []
    for line in out.splitlines():
        if line.startswith("@@"):
            old, new = line.split()[1:3]
            a, b = (old[1:].split(",") + ["1"])[:2]
            c, d = (new[1:].split(",") + ["1"])[:2]
            hunks.append((int(a), int(b), int(c), int(d)))

    def follow(n, end):
        shift = 0
        for a, b, c, d in hunks:
            first, last = (a, a + b - 1) if b else (a + 1, a)
            if n > last and b or (not b and n > a):
                shift = (c + d) - (a + b)
            elif first <= n <= last:
                return (c + d - 1 if end else c) if d else c
        return n + shift

    return follow(lo, False), max(follow(hi, True), follow(lo, False))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--mirrors", required=True)
    ap.add_argument("--rules", default=os.path.join(ROOT, "rules"))
    ap.add_argument("--fixes", default=os.path.join(ROOT, "rules", "cve", "fixes.json"))
    ap.add_argument("--osemgrep", default=os.path.expanduser("~/.cache/ase-cluster/semgrep/bin/osemgrep"))
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    a = ap.parse_args()

    tasks = json.load(open(a.dataset))
    fixes = json.load(open(a.fixes)) if os.path.isfile(a.fixes) else {}
    rows = []
    for t in tasks:
        if str(t.get("seed")).lower() != "true":
            continue
        lo, hi = t["vuln_lines"] if isinstance(t["vuln_lines"], list) else json.loads(t["vuln_lines"])
        kind, configs = rule_set(a.rules, t)
        fix = (fixes.get(t["vuln_source"], {}).get("fixes", {}).get(t["instance_id"])
               or t.get("patch_commit")
               or (t["base_commit"][:-1] if t["base_commit"].endswith("^") else None))
        row = {"task": t["instance_id"], "cve": t["vuln_source"], "repo": t["repo"],
               "type": t["vuln_type"], "rules": kind, "fix": fix, "flagged": None,
               "cleared": None, "note": ""}
        rows.append(row)
        gitdir = mirror_of(a.mirrors, t["repo"])
        if gitdir is None:
            row["note"] = "uncalibrated: no mirror of the repository"
            continue
        try:
            base, why = scan_file(a.osemgrep, configs, gitdir, t["base_commit"], t["vuln_file"], t["vuln_type"])
            if base is None:
                row["note"] = f"base: {why}"
                continue
            inside = [f for f in base if f[0] <= hi and f[1] >= lo]
            row["flagged"] = bool(inside)
            row["base_findings"] = len(base)
            notes = [f"base {why}"] if why else []
            if not inside:
                notes.append(f"base: {len(base)} finding(s) in the file, none in {lo}-{hi}")
            if fix:
                after, why = scan_file(a.osemgrep, configs, gitdir, fix, t["vuln_file"], t["vuln_type"])
                if after is None:
                    notes.append(f"fix: {why}")
                else:
                    flo, fhi = map_block(gitdir, t["base_commit"], fix, t["vuln_file"], lo, hi)
                    left = [f for f in after if f[0] <= fhi and f[1] >= flo]
                    row["cleared"] = not left
                    row["fix_findings"] = len(after)
                    if why:
                        notes.append(f"fix {why}")
                    if left:
                        notes.append(f"fix: left in the block ({flo}-{fhi}) at lines " + ", ".join(str(f[0]) for f in left))
            else:
                unfixed = fixes.get(t["vuln_source"], {}).get("unfixed", {}).get(t["instance_id"])
                if unfixed:
                    row["unfixed"] = unfixed
                notes.append("no fix of the block in its history (fixes.json `unfixed`)" if unfixed
                             else "no fix commit known")
            row["note"] = "; ".join(notes)
        except RuntimeError as e:
            row["note"] = f"scanner failed: {e}"

    def yn(v):
        return "-" if v is None else ("yes" if v else "**no**")

    lines = ["| task | CVE | repo | rules | flagged at base in vuln_lines | cleared by the fix | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['cve']} | {r['repo']} | {r['rules']} | {yn(r['flagged'])} | "
                     f"{yn(r['cleared'])} | {r['note']} |")
    runnable = [r for r in rows if r["flagged"] is not None]
    flagged = [r for r in runnable if r["flagged"]]
    with_fix = [r for r in flagged if r["cleared"] is not None]
    cleared = [r for r in with_fix if r["cleared"]]
    summary = (f"seeds: {len(rows)}; with a mirror: {len(runnable)}; flagged at base: {len(flagged)}/{len(runnable)}; "
               f"cleared by the fix: {len(cleared)}/{len(with_fix)} of the flagged with a fix")
    md = "\n".join(lines) + "\n\n" + summary + "\n"
    if a.markdown:
        open(a.markdown, "w").write(md)
    if a.json:
        json.dump({"rows": rows, "summary": summary}, open(a.json, "w"), indent=1)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
