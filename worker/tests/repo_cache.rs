//! The repo cache against real git repositories made by the tests and served from local paths.

use ase_worker::repo_cache::{RepoCache, RepoCacheConfig, RepoCacheError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A source repo at `sources/owner/name` with two commits, a tag and a branch.
struct Source {
    _dir: tempfile::TempDir,
    base: PathBuf,
    work: PathBuf,
    first: String,
    second: String,
}

fn make_source() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("sources");
    let work = base.join("acme").join("shop");
    fs::create_dir_all(work.join("src")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README.md"), "# shop\n").unwrap();
    fs::write(work.join("src/db.php"), "<?php\n$q = 'SELECT 1';\n").unwrap();
    std::os::unix::fs::symlink("db.php", work.join("src/link.php")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "first"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "v1.0"]);
    fs::write(work.join("src/db.php"), "<?php\n$q = 'SELECT 2';\n").unwrap();
    git(&work, &["commit", "-qam", "second"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    Source {
        _dir: dir,
        base,
        work,
        first,
        second,
    }
}

fn config(root: &Path, src: &Source) -> RepoCacheConfig {
    let mut cfg = RepoCacheConfig::new(root);
    cfg.url_template = format!("{}/{{repo}}", src.base.display());
    cfg.git_timeout = Duration::from_secs(120);
    cfg
}

#[test]
fn resolves_revisions_and_builds_shared_trees() {
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let cache = RepoCache::open(config(root.path(), &src)).unwrap();

    assert_eq!(
        cache.resolve("acme/shop", &src.second, None).unwrap(),
        src.second
    );
    assert_eq!(
        cache
            .resolve("acme/shop", &format!("{}^", src.second), None)
            .unwrap(),
        src.first
    );
    assert_eq!(cache.resolve("acme/shop", "v1.0", None).unwrap(), src.first);
    assert_eq!(
        cache.resolve("acme/shop", "main", None).unwrap(),
        src.second
    );
    assert_eq!(cache.stats().clones, 1, "one mirror for every revision");
    assert_eq!(cache.cached_repos(), vec!["acme/shop".to_string()]);

    let tree = cache.tree("acme/shop", &src.first).unwrap();
    assert_eq!(
        fs::read_to_string(tree.path().join("src/db.php")).unwrap(),
        "<?php\n$q = 'SELECT 1';\n"
    );
    assert!(fs::symlink_metadata(tree.path().join("src/link.php"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        !tree.path().join(".git").exists(),
        "trees hold the project only"
    );

    match cache.resolve("acme/shop", "no-such-tag", None) {
        Err(RepoCacheError::UnknownRevision { repo, rev, .. }) => {
            assert_eq!((repo.as_str(), rev.as_str()), ("acme/shop", "no-such-tag"));
        }
        other => panic!("expected UnknownRevision, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        cache.resolve("../etc", "main", None),
        Err(RepoCacheError::BadRepoName(_))
    ));
}

#[test]
fn units_share_the_tree_and_write_only_their_changes() {
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let cache = RepoCache::open(config(root.path(), &src)).unwrap();
    let sha = cache.resolve("acme/shop", "main", None).unwrap();
    let mut unit = cache.unit("acme/shop", &sha, "sqli_01_cycle1").unwrap();
    let unit_path = unit.path().to_path_buf();
    let shared = unit.base().join("src/db.php");

    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&unit_path.join("README.md")),
        ino(&unit.base().join("README.md")),
        "hard-linked"
    );

    unit.write("src/db.php", b"<?php\n$q = $pdo->prepare('SELECT ?');\n")
        .unwrap();
    unit.write("src/new/helper.php", b"<?php\n").unwrap();
    assert_eq!(
        fs::read_to_string(&shared).unwrap(),
        "<?php\n$q = 'SELECT 2';\n",
        "shared tree untouched"
    );
    assert_eq!(
        unit.read("src/db.php").unwrap(),
        b"<?php\n$q = $pdo->prepare('SELECT ?');\n"
    );
    assert_eq!(
        unit.changed_files(),
        vec!["src/db.php".to_string(), "src/new/helper.php".to_string()]
    );

    // A tool that edits in place gets its own copy first.
    let p = unit.unshare("README.md").unwrap();
    assert_ne!(ino(&p), ino(&unit.base().join("README.md")));

    for bad in ["../escape", "/tmp/x", ".git/config", "src/link.php"] {
        assert!(unit.write(bad, b"x").is_err(), "{bad} must be refused");
    }
    drop(unit);
    assert!(!unit_path.exists(), "a dropped unit leaves nothing behind");
}

#[test]
fn concurrent_units_of_one_repo_share_one_mirror() {
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let cache = RepoCache::open(config(root.path(), &src)).unwrap();
    let sha = src.second.clone();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let cache = cache.clone();
            let sha = sha.clone();
            std::thread::spawn(move || {
                let resolved = cache.resolve("acme/shop", &sha, None).unwrap();
                let unit = cache
                    .unit("acme/shop", &resolved, &format!("t_cycle{i}"))
                    .unwrap();
                (unit.base().to_path_buf(), unit.read("src/db.php").unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "one shared tree");
    let stats = cache.stats();
    assert_eq!((stats.clones, stats.trees_built), (1, 1), "{stats:?}");
}

#[test]
fn missing_revisions_are_fetched_including_branch_origin() {
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let cache = RepoCache::open(config(root.path(), &src)).unwrap();
    cache.resolve("acme/shop", "main", None).unwrap();

    git(&src.work, &["checkout", "-qb", "hotfix"]);
    fs::write(src.work.join("src/db.php"), "<?php\n$q = 'SELECT 3';\n").unwrap();
    git(&src.work, &["commit", "-qam", "third"]);
    let third = git(&src.work, &["rev-parse", "HEAD"]);

    assert_eq!(
        cache.resolve("acme/shop", &third, Some("hotfix")).unwrap(),
        third
    );
    assert!(cache.stats().fetches >= 1);
    assert_eq!(
        cache.stats().clones,
        1,
        "fetched into the mirror, not cloned again"
    );
}

#[test]
fn least_recently_used_unpinned_entries_are_evicted() {
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), &src);
    cfg.max_bytes = 1; // everything unpinned goes
    let cache = RepoCache::open(cfg).unwrap();
    let first = cache.resolve("acme/shop", "v1.0", None).unwrap();
    let pinned = cache.tree("acme/shop", &first).unwrap();
    let second = cache.tree("acme/shop", &src.second).unwrap();
    let second_path = second.path().to_path_buf();
    drop(second);
    assert!(!second_path.exists(), "unpinned tree evicted");
    assert!(
        pinned.path().join("src/db.php").exists(),
        "pinned tree kept"
    );
    assert!(cache.stats().evictions >= 2, "{:?}", cache.stats());
    // Evicted entries come back on demand.
    let again = cache.tree("acme/shop", &src.second).unwrap();
    assert!(again.path().join("src/db.php").exists());
}

#[test]
fn a_cache_root_has_one_owner_and_survives_reopening() {
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let cache = RepoCache::open(config(root.path(), &src)).unwrap();
    let sha = cache.resolve("acme/shop", "main", None).unwrap();
    drop(cache.tree("acme/shop", &sha).unwrap());
    assert!(matches!(
        RepoCache::open(config(root.path(), &src)),
        Err(RepoCacheError::Locked(_))
    ));
    drop(cache);
    let reopened = RepoCache::open(config(root.path(), &src)).unwrap();
    assert_eq!(reopened.resolve("acme/shop", "main", None).unwrap(), sha);
    drop(reopened.tree("acme/shop", &sha).unwrap());
    assert_eq!(reopened.stats().clones, 0, "mirror reused after reopening");
    assert_eq!(
        reopened.stats().trees_built,
        0,
        "tree reused after reopening"
    );
}

/// Not a test on its own: the child process of `a_clone_killed_halfway_is_redone`.
#[test]
#[ignore]
fn child_clone_for_kill_test() {
    let Ok(root) = std::env::var("ASE_TEST_CACHE_ROOT") else {
        return;
    };
    let mut cfg = RepoCacheConfig::new(root);
    cfg.url_template = std::env::var("ASE_TEST_URL_TEMPLATE").unwrap();
    let cache = RepoCache::open(cfg).unwrap();
    let _ = cache.resolve("big/repo", "main", None);
}

#[test]
fn a_clone_killed_halfway_is_redone() {
    // A source large enough that its clone takes a while (incompressible data).
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("big").join("repo");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..8 {
        let data: Vec<u8> = (0..8 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs::write(work.join(format!("blob{i}.bin")), data).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "big"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let template = format!("file://{}/{{repo}}", dir.path().display());

    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_clone_for_kill_test",
            "--ignored",
            "--nocapture",
        ])
        .env("ASE_TEST_CACHE_ROOT", root.path())
        .env("ASE_TEST_URL_TEMPLATE", &template)
        .spawn()
        .unwrap();
    // Kill the worker as soon as its clone is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let tmp = root.path().join("tmp");
    loop {
        let started = fs::read_dir(&tmp)
            .map(|rd| rd.flatten().any(|e| e.path().join("mirror.git").exists()))
            .unwrap_or(false);
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "clone never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "child ended before its clone was seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mirrors: Vec<_> = fs::read_dir(root.path().join("mirrors"))
        .unwrap()
        .flatten()
        .collect();
    assert!(mirrors.is_empty(), "a killed clone never reaches mirrors/");

    let mut cfg = RepoCacheConfig::new(root.path());
    cfg.url_template = template;
    let cache = RepoCache::open(cfg).unwrap();
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "leftovers swept at open"
    );
    assert_eq!(cache.resolve("big/repo", "main", None).unwrap(), head);
    assert_eq!(cache.stats().clones, 1, "the clone was redone");
    let tree = cache.tree("big/repo", &head).unwrap();
    assert_eq!(
        fs::metadata(tree.path().join("blob7.bin")).unwrap().len(),
        8 << 20
    );
}

#[test]
fn a_relative_root_works_like_an_absolute_one() {
    // `ase worker --cache cache` once failed every unit: git saw the relative path from
    // another working directory.
    let src = make_source();
    let root = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let relative: PathBuf = std::iter::repeat_n("..", ups)
        .collect::<PathBuf>()
        .join(root.path().strip_prefix("/").unwrap())
        .join("cache");
    assert!(relative.is_relative());
    let cache = RepoCache::open(config(&relative, &src)).unwrap();
    assert!(cache.root().is_absolute(), "{}", cache.root().display());
    let sha = cache.resolve("acme/shop", "main", None).unwrap();
    let unit = cache.unit("acme/shop", &sha, "rel_cycle1").unwrap();
    assert_eq!(
        unit.read("src/db.php").unwrap(),
        b"<?php\n$q = 'SELECT 2';\n"
    );
}
