//! `bench upload`: bytes sent into a v2 container per unit. Upstream uploads the unit's whole
//! project folder (a tar of the tree); we upload a tar of the unit's changed files only (what
//! `ase_worker::dynamic` builds). The project is generated: `files` text files totalling about
//! `megabytes` MB in nested folders, one of which is the unit's vuln file.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ase_common::unit::ChangedFile;
use ase_worker::dynamic::upload::{prepare_default, tar_bytes};

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// Files in the generated project.
    #[arg(long, default_value_t = 300)]
    pub files: usize,
    /// Approximate project size in MB (10^6 bytes).
    #[arg(long, default_value_t = 50)]
    pub megabytes: u64,
    /// Seed of the generated content.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Counts what a writer is given, keeping nothing.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn generate_project(root: &Path, args: &UploadArgs) -> anyhow::Result<Vec<String>> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let per_file = (args.megabytes * 1_000_000 / args.files.max(1) as u64).max(1);
    let mut paths = Vec::with_capacity(args.files);
    for i in 0..args.files {
        let rel = format!("src/mod{:02}/sub{}/file{i:04}.php", i % 17, i % 5);
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        // Sizes vary from half to one and a half times the mean.
        let size = per_file / 2 + rng.u64(0..=per_file);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut written = 0u64;
        let mut line = 0u64;
        while written < size {
            let text = format!(
                "    $value{line} = compute_{}($input, {});\n",
                rng.u32(..),
                rng.u16(..)
            );
            out.write_all(text.as_bytes())?;
            written += text.len() as u64;
            line += 1;
        }
        out.flush()?;
        paths.push(rel);
    }
    Ok(paths)
}

pub fn run(args: UploadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.files > 0, "--files must be > 0");
    let dir = tempfile::tempdir().context("temporary directory")?;
    let root = dir.path().join("project");
    let paths = generate_project(&root, &args)?;

    // Upstream: the whole unit folder, as `tar.add(folder)` packs it.
    let mut full = tar::Builder::new(CountingSink(0));
    full.append_dir_all("project", &root)
        .context("tar of the full tree")?;
    let full_bytes = full.into_inner().context("finishing the full tar")?.0;

    // Ours: the vuln file with its masked block replaced by the generated code.
    let vuln = &paths[paths.len() / 2];
    let original = std::fs::read_to_string(root.join(vuln))?;
    let mut lines: Vec<&str> = original.lines().collect();
    let start = lines.len() / 3;
    let end = (start + 20).min(lines.len());
    lines.splice(
        start..end,
        ["    // generated block", "    return sanitize($input);"],
    );
    let changed = vec![ChangedFile {
        path: vuln.clone(),
        content: Some(lines.join("\n") + "\n"),
        content_base64: None,
        mode: 0o644,
    }];
    let files = prepare_default(&changed).context("changed files")?;
    let unit_bytes = tar_bytes(&files, 0)
        .context("tar of the changed files")?
        .len() as u64;

    let tree_bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(root.join(p)).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    println!(
        "project: {} files, {tree_bytes} bytes of content",
        paths.len()
    );
    println!("full_tree_tar_bytes={full_bytes}");
    println!(
        "changed_files_tar_bytes={unit_bytes} ({} file)",
        files.len()
    );
    println!("upload_ratio={:.6}", unit_bytes as f64 / full_bytes as f64);
    Ok(())
}
