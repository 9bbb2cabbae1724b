//! A completed run's files on disk, beside the sled database: `<store>/run-outputs/<seq>/`.
//!
//! They are files rather than sled values because they are large (the report of a
//! 100,000-unit run is tens of MB) and written once: each is streamed to disk while it is
//! made, so finishing a run holds one file's worth of memory at a time, not all of them
//! twice over in a sled transaction.
//!
//! A run's files appear at once: they are written into `<seq>.partial/`, each fsynced, and the
//! folder is renamed into place and its parent fsynced before the run is recorded `Completed`
//! in sled. A crash before the rename leaves a partial folder the next finish replaces; a
//! crash after it but before the run record leaves a complete folder the next finish replaces
//! with the same content.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("run outputs at {path}: {what}: {source}")]
pub struct OutputStoreError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: io::Error,
}

fn err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> OutputStoreError + 'a {
    move |source| OutputStoreError {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// A file of a run: its name (relative, `/`-separated) and its bytes.
pub type NamedFile = (String, Vec<u8>);

/// True when `name` is a relative `/`-separated path that stays inside its folder.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The folder of every run's files.
#[derive(Debug, Clone)]
pub struct OutputStore {
    root: PathBuf,
}

impl OutputStore {
    /// The folder under the store's directory (created on first write).
    pub fn new(store_dir: &Path) -> Self {
        Self {
            root: store_dir.join("run-outputs"),
        }
    }

    fn final_dir(&self, seq: u64) -> PathBuf {
        self.root.join(seq.to_string())
    }

    /// Where run `seq`'s files are (or will be).
    pub fn dir_of(&self, seq: u64) -> PathBuf {
        self.final_dir(seq)
    }

    /// The bytes of run `seq`'s files (0 when it has none here).
    pub fn total_bytes(&self, seq: u64) -> Result<u64, OutputStoreError> {
        let dir = self.final_dir(seq);
        let mut total = 0;
        for name in self.names(seq)?.unwrap_or_default() {
            let path = dir.join(&name);
            total += fs::metadata(&path).map_err(err(&path, "reading"))?.len();
        }
        Ok(total)
    }

    /// Starts the files of run `seq`, dropping what an interrupted earlier attempt left.
    pub fn begin(&self, seq: u64) -> Result<OutputWriter, OutputStoreError> {
        let dir = self.root.join(format!("{seq}.partial"));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(err(&dir, "removing an unfinished attempt"))?;
        }
        fs::create_dir_all(&dir).map_err(err(&dir, "creating"))?;
        Ok(OutputWriter {
            dir,
            final_dir: self.final_dir(seq),
            root: self.root.clone(),
            names: Vec::new(),
        })
    }

    /// Whether run `seq` has its files here.
    pub fn has(&self, seq: u64) -> bool {
        self.final_dir(seq).is_dir()
    }

    /// The names of run `seq`'s files, sorted; `None` when it has none here.
    pub fn names(&self, seq: u64) -> Result<Option<Vec<String>>, OutputStoreError> {
        let dir = self.final_dir(seq);
        if !dir.is_dir() {
            return Ok(None);
        }
        let mut names = Vec::new();
        collect_names(&dir, "", &mut names)?;
        names.sort();
        Ok(Some(names))
    }

    /// Run `seq`'s files with their contents, sorted by name; `None` when it has none here.
    pub fn read(&self, seq: u64) -> Result<Option<Vec<NamedFile>>, OutputStoreError> {
        let Some(names) = self.names(seq)? else {
            return Ok(None);
        };
        let dir = self.final_dir(seq);
        names
            .into_iter()
            .map(|name| {
                let path = dir.join(&name);
                let bytes = fs::read(&path).map_err(err(&path, "reading"))?;
                Ok((name, bytes))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Copies run `seq`'s files under `dest` (a user's output folder), file by file.
    pub fn copy_to(&self, seq: u64, dest: &Path) -> Result<(), OutputStoreError> {
        let dir = self.final_dir(seq);
        for name in self.names(seq)?.unwrap_or_default() {
            let to = dest.join(&name);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(err(parent, "creating"))?;
            }
            fs::copy(dir.join(&name), &to).map_err(err(&to, "copying"))?;
        }
        Ok(())
    }
}

fn collect_names(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), OutputStoreError> {
    for entry in fs::read_dir(dir).map_err(err(dir, "listing"))? {
        let entry = entry.map_err(err(dir, "listing"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type().map_err(err(&entry.path(), "reading"))?;
        if kind.is_dir() {
            collect_names(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// The files of one run being written; nothing is visible until [`OutputWriter::commit`].
pub struct OutputWriter {
    dir: PathBuf,
    final_dir: PathBuf,
    root: PathBuf,
    names: Vec<String>,
}

impl OutputWriter {
    /// Writes file `name` (relative, `/`-separated) by streaming `write` into it, then fsyncs it.
    pub fn file(
        &mut self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), OutputStoreError> {
        let path = self.dir.join(name);
        if !is_safe_name(name) {
            return Err(OutputStoreError {
                path,
                what: "refused name",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an output name must stay inside the run's folder",
                ),
            });
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(err(parent, "creating"))?;
        }
        let file = File::create(&path).map_err(err(&path, "creating"))?;
        let mut out = BufWriter::with_capacity(256 << 10, file);
        write(&mut out).map_err(err(&path, "writing"))?;
        let file = out
            .into_inner()
            .map_err(|e| err(&path, "writing")(e.into_error()))?;
        file.sync_all().map_err(err(&path, "syncing"))?;
        self.names.push(name.to_string());
        Ok(())
    }

    /// The names written so far.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Drops what was written so far (to write something else instead).
    pub fn clear(&mut self) -> Result<(), OutputStoreError> {
        fs::remove_dir_all(&self.dir).map_err(err(&self.dir, "clearing"))?;
        fs::create_dir_all(&self.dir).map_err(err(&self.dir, "creating"))?;
        self.names.clear();
        Ok(())
    }

    /// Makes the files visible at once and durable.
    pub fn commit(self) -> Result<(), OutputStoreError> {
        sync_dirs(&self.dir)?;
        if self.final_dir.exists() {
            fs::remove_dir_all(&self.final_dir)
                .map_err(err(&self.final_dir, "replacing an earlier attempt"))?;
        }
        fs::rename(&self.dir, &self.final_dir)
            .map_err(err(&self.final_dir, "renaming into place"))?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(err(&self.root, "syncing"))
    }
}

/// fsyncs `dir` and every folder under it, so that the names of the files are durable too.
fn sync_dirs(dir: &Path) -> Result<(), OutputStoreError> {
    for entry in fs::read_dir(dir).map_err(err(dir, "listing"))? {
        let entry = entry.map_err(err(dir, "listing"))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            sync_dirs(&entry.path())?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir, "syncing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(w: &mut OutputWriter, name: &str, bytes: &[u8]) -> Result<(), OutputStoreError> {
        w.file(name, &mut |out| out.write_all(bytes))
    }

    #[test]
    fn files_appear_only_when_committed_and_replace_an_earlier_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OutputStore::new(tmp.path());
        let mut w = store.begin(7).unwrap();
        put(&mut w, "run/a.json", b"{}").unwrap();
        put(&mut w, "report.md", b"# r").unwrap();
        assert!(!store.has(7), "visible before the commit");
        assert_eq!(store.read(7).unwrap(), None);
        w.commit().unwrap();
        assert_eq!(
            store.read(7).unwrap().unwrap(),
            vec![
                ("report.md".to_string(), b"# r".to_vec()),
                ("run/a.json".to_string(), b"{}".to_vec()),
            ]
        );
        // A second finish (a crash after the rename, before the run record) replaces it.
        let mut w = store.begin(7).unwrap();
        put(&mut w, "error.txt", b"x").unwrap();
        w.commit().unwrap();
        assert_eq!(
            store.names(7).unwrap().unwrap(),
            vec!["error.txt".to_string()]
        );
    }

    #[test]
    fn an_unfinished_attempt_is_dropped_by_the_next_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OutputStore::new(tmp.path());
        let mut w = store.begin(3).unwrap();
        put(&mut w, "stale.json", b"old").unwrap();
        drop(w); // the process died here
        let mut w = store.begin(3).unwrap();
        put(&mut w, "fresh.json", b"new").unwrap();
        w.commit().unwrap();
        assert_eq!(
            store.names(3).unwrap().unwrap(),
            vec!["fresh.json".to_string()]
        );
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OutputStore::new(tmp.path());
        let mut w = store.begin(1).unwrap();
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "",
            "a\\b",
            "./a",
        ] {
            let e = put(&mut w, bad, b"x").unwrap_err();
            assert_eq!(e.what, "refused name", "{bad}");
        }
        assert!(w.names().is_empty());
        assert!(!tmp.path().join("x").exists());
    }

    #[test]
    fn copy_to_writes_every_file_under_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let store = OutputStore::new(&tmp.path().join("store"));
        let mut w = store.begin(2).unwrap();
        put(&mut w, "m__b/sast_results.json", b"[]").unwrap();
        put(&mut w, "report.json", b"{}").unwrap();
        w.commit().unwrap();
        let dest = tmp.path().join("out");
        store.copy_to(2, &dest).unwrap();
        assert_eq!(
            fs::read(dest.join("m__b/sast_results.json")).unwrap(),
            b"[]"
        );
        assert_eq!(fs::read(dest.join("report.json")).unwrap(), b"{}");
    }
}
