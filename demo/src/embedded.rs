//! The demo data compiled into the crate (see `build.rs`): files of `examples/demo` by their
//! path relative to that folder, `/`-separated, sorted.

include!(concat!(env!("OUT_DIR"), "/embedded_files.rs"));

/// The content of one embedded file.
pub(crate) fn file(path: &str) -> Option<&'static [u8]> {
    FILES
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| FILES[i].1)
}

/// The files under `dir` (no trailing `/`), with their paths relative to `dir`, in byte order
/// of the path (the order the repos are written and committed in).
pub(crate) fn files_under(dir: &str) -> Vec<(&'static str, &'static [u8])> {
    let prefix = format!("{dir}/");
    FILES
        .iter()
        .filter_map(|(p, b)| p.strip_prefix(prefix.as_str()).map(|rel| (rel, *b)))
        .collect()
}
