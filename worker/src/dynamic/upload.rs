//! The unit's changed files as one in-memory tar for `upload_to_container`, every path checked
//! before it can reach the daemon.

use ase_common::unit::{ChangedFile, MAX_CHANGED_BYTES};
use md5::{Digest, Md5};

/// Longest accepted path of one changed file, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UploadError {
    #[error("changed file {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("changed file {path:?}: {why}")]
    BadContent { path: String, why: String },
    #[error("changed files total {total} bytes, more than the {max} allowed")]
    TooLarge { total: usize, max: usize },
    #[error("building the tar: {0}")]
    Tar(String),
}

/// A changed file ready to upload: checked path, decoded content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Rejects anything that could leave the destination directory or confuse the archive:
/// empty, absolute, `..` or `.` components, empty components, NUL, backslashes, overlong.
pub fn check_path(path: &str) -> Result<(), UploadError> {
    let bad = |why| {
        Err(UploadError::BadPath {
            path: path.chars().take(200).collect(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("path too long");
    }
    if path.contains('\0') {
        return bad("NUL in path");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\\') {
        return bad("backslash in path");
    }
    for comp in path.split('/') {
        match comp {
            "" => return bad("empty path component"),
            "." => return bad("`.` component"),
            ".." => return bad("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks and decodes every changed file; the sum of contents is bounded by `max_bytes`.
pub fn prepare(files: &[ChangedFile], max_bytes: usize) -> Result<Vec<UploadFile>, UploadError> {
    let mut out = Vec::with_capacity(files.len());
    let mut total = 0usize;
    for f in files {
        check_path(&f.path)?;
        let content = f.bytes().map_err(|why| UploadError::BadContent {
            path: f.path.clone(),
            why,
        })?;
        total = total.saturating_add(content.len());
        if total > max_bytes {
            return Err(UploadError::TooLarge {
                total,
                max: max_bytes,
            });
        }
        out.push(UploadFile {
            path: f.path.clone(),
            content,
            mode: f.mode & 0o7777,
        });
    }
    Ok(out)
}

/// The default bound: what a generation record may carry.
pub fn prepare_default(files: &[ChangedFile]) -> Result<Vec<UploadFile>, UploadError> {
    prepare(files, MAX_CHANGED_BYTES)
}

/// A ustar/GNU archive of `files`, paths relative to the extraction directory. Files are owned
/// by root and stamped with `mtime` (seconds), so build tools see them as new.
pub fn tar_bytes(files: &[UploadFile], mtime: u64) -> Result<Vec<u8>, UploadError> {
    let mut builder = tar::Builder::new(Vec::new());
    for f in files {
        check_path(&f.path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(f.content.len() as u64);
        header.set_mode(f.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        // append_data writes a GNU long-name entry for paths over 100 bytes.
        builder
            .append_data(&mut header, &f.path, f.content.as_slice())
            .map_err(|e| UploadError::Tar(format!("{}: {e}", f.path)))?;
    }
    builder
        .into_inner()
        .map_err(|e| UploadError::Tar(e.to_string()))
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> ChangedFile {
        ChangedFile {
            path: path.into(),
            content: Some(content.into()),
            content_base64: None,
            mode: 0o100644,
        }
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\b",
        ] {
            assert!(check_path(p).is_err(), "{p:?} accepted");
        }
        assert!(check_path(&"a/".repeat(3000)).is_err());
        for p in ["src/view.sh", "a..b/c", ".hidden", "x/y/z.txt"] {
            assert!(check_path(p).is_ok(), "{p:?} rejected");
        }
    }

    #[test]
    fn prepare_decodes_bounds_and_masks_mode() {
        let mut bin = file("b.bin", "");
        bin.content = None;
        bin.content_base64 = Some("AAEC".into());
        let got = prepare(&[file("a.txt", "hi"), bin], 100).unwrap();
        assert_eq!(got[0].mode, 0o644);
        assert_eq!(got[1].content, vec![0, 1, 2]);
        assert!(matches!(
            prepare(&[file("a", "12345"), file("b", "678")], 7),
            Err(UploadError::TooLarge { total: 8, max: 7 })
        ));
        let mut neither = file("n", "");
        neither.content = None;
        assert!(matches!(
            prepare(&[neither], 100),
            Err(UploadError::BadContent { .. })
        ));
        assert!(matches!(
            prepare(&[file("../x", "")], 100),
            Err(UploadError::BadPath { .. })
        ));
    }

    #[test]
    fn tar_round_trips_long_paths() {
        let long = format!("{}/f.txt", "d".repeat(150));
        let files = prepare(&[file("src/a.sh", "echo a\n"), file(&long, "x")], 1000).unwrap();
        let bytes = tar_bytes(&files, 1_700_000_000).unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            seen.push((e.path().unwrap().to_string_lossy().into_owned(), s));
        }
        assert_eq!(
            seen,
            vec![("src/a.sh".into(), "echo a\n".into()), (long, "x".into())]
        );
    }

    #[test]
    fn md5_matches_the_known_digest() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
