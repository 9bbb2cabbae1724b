//! Headless chromium for the page tests (report.html, leaderboard.html): find it, render a
//! page (killed after a minute), and read the dumped DOM's start tags with their text.
//!
//! Chromium: `ASE_CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on PATH.
//! Missing, a test fails under CI=true and says "skipped" elsewhere.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn unavailable(why: &str) {
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{why}; install Debian's chromium (apt-get install -y chromium)");
    }
    eprintln!("skipped: {why} (apt-get install -y chromium to enable this test)");
}

pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ASE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs chromium headless on `page` with `args`, killed after a minute; returns stdout.
pub fn run_chromium(bin: &Path, profile: &Path, page: &Path, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    // Read both pipes while waiting: a DOM larger than the pipe's buffer (64 KiB) would
    // otherwise block chromium on its write until the deadline.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("chromium did not finish within 60 s on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.success(),
        "chromium failed ({status}): {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8(out).expect("the DOM is UTF-8")
}

/// One start tag of the rendered DOM, with the text right after it (up to the next tag).
#[derive(Debug)]
pub struct Tag {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub text: String,
}

pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The start tags of serialised HTML (as chromium's `--dump-dom` prints it): comments,
/// end tags and doctype skipped, `<style>`/`<script>` bodies taken as raw text, quoted
/// attribute values may hold `>`.
pub fn parse_tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off;
        if html[i..].starts_with("<!--") {
            i += html[i..].find("-->").map_or(html.len() - i, |e| e + 3);
            continue;
        }
        if html[i..].starts_with("</") || html[i..].starts_with("<!") {
            i += html[i..].find('>').map_or(html.len() - i, |e| e + 1);
            continue;
        }
        i += 1;
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let name = html[start..i].to_ascii_lowercase();
        let mut attrs = BTreeMap::new();
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                i += 1;
                break;
            }
            let a = i;
            while i < b.len() && !b"= \t\n>/".contains(&b[i]) {
                i += 1;
            }
            let attr = html[a..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                    let q = b[i];
                    let v = i + 1;
                    i = v + html[v..].find(q as char).expect("closed attribute");
                    value = decode_entities(&html[v..i]);
                    i += 1;
                } else {
                    let v = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = decode_entities(&html[v..i]);
                }
            }
            attrs.insert(attr, value);
        }
        let text_end = if name == "style" || name == "script" {
            html[i..]
                .find(&format!("</{name}"))
                .map_or(html.len(), |e| i + e)
        } else {
            html[i..].find('<').map_or(html.len(), |e| i + e)
        };
        let text = decode_entities(&html[i.min(text_end)..text_end]);
        i = text_end;
        tags.push(Tag { name, attrs, text });
    }
    tags
}
