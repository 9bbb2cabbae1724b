//! What the cache measures and deletes on disk: blocks used by a directory tree, and removal
//! that never follows a symlink out of the cache.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// Disk blocks used by a directory tree (hard links counted once per walk, symlinks not followed).
pub(super) fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
        if seen.insert((md.dev(), md.ino())) {
            total += md.blocks() * 512;
        }
    }
    total
}

pub(super) fn remove_tree(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            if let Err(e) = fs::remove_dir_all(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove directory");
            }
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}
