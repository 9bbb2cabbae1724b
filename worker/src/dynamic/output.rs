//! Bounded capture of a command's output: the first and last `keep` bytes and the total count,
//! plus whether a marker occurred anywhere in the full stream (upstream searches the whole
//! output). Memory stays O(keep + marker) however much the command prints.

#[derive(Debug, Clone)]
pub struct OutputCapture {
    keep: usize,
    head: Vec<u8>,
    /// Holds at least the last `keep` bytes past the head, at most twice that (amortised
    /// copying instead of a per-byte ring).
    tail: Vec<u8>,
    total: u64,
    marker: Vec<u8>,
    /// The last `marker.len() - 1` bytes seen, so a marker split across chunks is found.
    carry: Vec<u8>,
    found: bool,
}

impl OutputCapture {
    pub fn new(keep: usize, marker: &str) -> Self {
        Self {
            keep,
            head: Vec::new(),
            tail: Vec::new(),
            total: 0,
            marker: marker.as_bytes().to_vec(),
            carry: Vec::new(),
            found: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if !self.found && !self.marker.is_empty() {
            let m = self.marker.len();
            // The seam: the carried bytes and the start of this chunk; then the chunk itself.
            let mut seam = std::mem::take(&mut self.carry);
            seam.extend_from_slice(&chunk[..chunk.len().min(m - 1)]);
            self.found = contains(&seam, &self.marker) || contains(chunk, &self.marker);
            if chunk.len() >= m - 1 {
                seam.clear();
                seam.extend_from_slice(&chunk[chunk.len() - (m - 1)..]);
            } else {
                let start = seam.len().saturating_sub(m - 1);
                seam.drain(..start);
            }
            self.carry = seam;
        }
        let room = self.keep.saturating_sub(self.head.len());
        let (to_head, rest) = chunk.split_at(room.min(chunk.len()));
        self.head.extend_from_slice(to_head);
        // Only the last `keep` bytes of `rest` can survive in the tail.
        let rest = &rest[rest.len().saturating_sub(self.keep)..];
        self.tail.extend_from_slice(rest);
        if self.tail.len() > 2 * self.keep {
            let excess = self.tail.len() - self.keep;
            self.tail.drain(..excess);
        }
    }

    pub fn marker_found(&self) -> bool {
        self.found
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Head, a note of the omitted byte count when something was dropped, and tail; lossily
    /// decoded.
    pub fn render(&self) -> String {
        let tail = &self.tail[self.tail.len().saturating_sub(self.keep)..];
        let kept = (self.head.len() + tail.len()) as u64;
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.total > kept {
            out.push_str(&format!(
                "\n[... {} bytes omitted ...]\n",
                self.total - kept
            ));
        }
        out.push_str(&String::from_utf8_lossy(tail));
        out
    }
}

/// Jumps between occurrences of the needle's first byte, which is fast on the long runs of
/// unrelated bytes a noisy command prints.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    while haystack.len() - from >= needle.len() {
        match haystack[from..=haystack.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            None => return false,
            Some(i) => {
                let at = from + i;
                if &haystack[at..at + needle.len()] == needle {
                    return true;
                }
                from = at + 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_split_across_chunks_is_found() {
        let mut c = OutputCapture::new(4, "[A.S.E] test case passed");
        c.push(b"xx [A.S.E] test ");
        assert!(!c.marker_found());
        c.push(b"case pas");
        c.push(b"sed\n");
        assert!(c.marker_found());
    }

    #[test]
    fn marker_is_found_at_every_split_and_chunk_size() {
        let text = b"noise [A.S.E] image startup successfully tail";
        for size in 1..text.len() {
            for offset in 0..size {
                let mut c = OutputCapture::new(8, "[A.S.E] image startup successfully");
                c.push(&text[..offset]);
                for chunk in text[offset..].chunks(size) {
                    c.push(chunk);
                }
                assert!(c.marker_found(), "size {size} offset {offset}");
            }
        }
        assert!(contains(b"abc", b"bc") && !contains(b"ab", b"abc") && contains(b"x", b""));
    }

    #[test]
    fn absent_marker_is_not_found() {
        let mut c = OutputCapture::new(1024, "MARK");
        for _ in 0..100 {
            c.push(b"MAR");
            c.push(b"xK");
        }
        assert!(!c.marker_found());
    }

    #[test]
    fn keeps_head_and_tail_and_counts_everything() {
        let mut c = OutputCapture::new(3, "");
        c.push(b"abcdef");
        c.push(b"ghij");
        assert_eq!(c.total_bytes(), 10);
        assert_eq!(c.render(), "abc\n[... 4 bytes omitted ...]\nhij");
        let mut small = OutputCapture::new(8, "");
        small.push(b"hello");
        assert_eq!(small.render(), "hello");
    }

    #[test]
    fn memory_stays_bounded() {
        let mut c = OutputCapture::new(16, "never");
        let chunk = vec![b'y'; 1 << 16];
        for _ in 0..64 {
            c.push(&chunk);
        }
        assert_eq!(c.total_bytes(), 64 << 16);
        assert!(c.head.len() <= 16 && c.tail.len() <= 32 && c.carry.len() < 5);
    }
}
