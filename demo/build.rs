//! Embeds the demo data (`examples/demo/{repos,v1,v2}`, `repos.json`) into the crate, so that
//! `materialise` works from any directory. Generates `$OUT_DIR/embedded_files.rs`: a sorted
//! array of (relative path, bytes) built with `include_bytes!`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const EMBEDDED: &[&str] = &["repos", "v1", "v2", "repos.json"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let demo = manifest.join("../examples/demo");
    let mut files = Vec::new();
    for entry in EMBEDDED {
        let p = demo.join(entry);
        println!("cargo:rerun-if-changed={}", p.display());
        collect(&demo, &p, &mut files);
    }
    files.sort();
    let mut out = String::from("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    for rel in &files {
        let abs = demo.join(rel).canonicalize().unwrap();
        writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("embedded_files.rs");
    std::fs::write(dest, out).unwrap();
}

fn collect(root: &Path, p: &Path, files: &mut Vec<String>) {
    let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if meta.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            collect(root, &e.unwrap().path(), files);
        }
    } else if meta.is_file() {
        let rel = p.strip_prefix(root).unwrap().to_str().expect("UTF-8 path");
        files.push(rel.to_string());
    }
}
