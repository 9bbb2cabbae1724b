//! The demo materialises deterministically: the commit ids are those of `repos.json` and of
//! the task files, every time, in any folder, and re-running on a materialised folder reuses it.

use ase_common::dataset::{load_contexts, load_task_file};
use ase_demo::{build_repo, git_repo, materialise, repos, DemoWorld};
use std::collections::BTreeMap;
use std::path::Path;

/// (instance_id, repo, base commit id, fix commit id) of every task, resolved in the world's repos.
fn task_commits(world: &DemoWorld) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for file in [&world.v1_tasks, &world.v2_tasks] {
        let tf = load_task_file(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for t in &tf.dataset.tasks {
            let dir = world.repo_dir(&t.repo);
            let base = git_repo::resolve(&dir, &t.base_commit).unwrap();
            let fix =
                git_repo::resolve(&dir, t.fix_commit().expect("every demo task names its fix"))
                    .unwrap();
            out.push((t.instance_id.clone(), t.repo.clone(), base, fix));
        }
    }
    out
}

#[test]
fn repos_json_names_the_commits_the_trees_produce() {
    let tmp = tempfile::tempdir().unwrap();
    let mut actual = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for r in repos().unwrap() {
        let ids = build_repo(&tmp.path().join(&r.dir), &r).unwrap();
        actual.insert(r.repo.clone(), ids);
        expected.insert(
            r.repo.clone(),
            (r.base_commit.clone(), r.fix_commit.clone()),
        );
    }
    // On a change of a tree, message or date: copy the actual ids printed here into repos.json
    // and the task files.
    assert_eq!(actual, expected, "actual (left) vs repos.json (right)");
}

#[test]
fn materialising_twice_gives_the_commit_ids_of_the_task_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wa = materialise(a.path()).unwrap();
    let wb = materialise(b.path()).unwrap();
    let (ca, cb) = (task_commits(&wa), task_commits(&wb));
    assert_eq!(ca, cb);
    assert!(ca.len() >= 10, "{ca:?}");
    let manifest: BTreeMap<String, (String, String)> = repos()
        .unwrap()
        .into_iter()
        .map(|r| (r.repo, (r.base_commit, r.fix_commit)))
        .collect();
    for (id, repo, base, fix) in &ca {
        assert_eq!(
            Some(&(base.clone(), fix.clone())),
            manifest.get(repo),
            "task {id}: base/fix resolved in the materialised repo"
        );
    }
    // The v2 tasks name the fix twice: `patch_commit` and `<sha>^`; both agree (checked above
    // through fix_commit, and the base resolves to the fix's parent).
    assert_eq!(
        wa.v2_images,
        vec!["ase-demo-py-docserver:1", "ase-demo-py-logstat:1"]
    );
}

fn snapshot(root: &Path) -> BTreeMap<String, std::time::SystemTime> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, e.metadata().unwrap().modified().unwrap());
        }
    }
    out
}

#[test]
fn materialising_again_reuses_and_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let first = materialise(tmp.path()).unwrap();
    let before = snapshot(tmp.path());
    let again = materialise(tmp.path()).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        before,
        snapshot(tmp.path()),
        "nothing rewritten on a second run"
    );

    // A damaged repo and an edited data file are put back.
    let repo = first.repo_dir("ase-demo/js-notes");
    std::fs::remove_dir_all(repo.join(".git")).unwrap();
    std::fs::write(&first.v1_tasks, b"[]").unwrap();
    let repaired = materialise(tmp.path()).unwrap();
    assert_eq!(repaired, first);
    assert!(git_repo::existing_commits(&repo).is_some());
    assert!(load_task_file(&first.v1_tasks).unwrap().dataset.tasks.len() >= 8);
    let contexts = load_contexts(&first.v1_context).unwrap();
    assert_eq!(contexts.contexts.len(), 8);
}

#[test]
fn the_url_template_points_at_the_repos() {
    let tmp = tempfile::tempdir().unwrap();
    let w = materialise(tmp.path()).unwrap();
    assert!(w.repo_url_template.contains("{repo}"));
    for r in repos().unwrap() {
        let dir = w.repo_url_template.replace("{repo}", &r.repo);
        assert_eq!(
            git_repo::existing_commits(Path::new(&dir)),
            Some((r.base_commit, r.fix_commit)),
            "{dir}"
        );
    }
}
