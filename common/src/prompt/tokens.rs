//! Token counting for the prompt budgets.
//!
//! Upstream counts tokens with the GPT-1 BPE tokenizer (Hugging Face `openai-community/openai-gpt`).
//! We count with OpenAI's `cl100k_base` BPE (the tokenizer of GPT-3.5/GPT-4, shipped inside
//! `tiktoken-rs`, so no download and no network at run time). The protocol allows any documented
//! BPE tokenizer as long as the budget logic is the same; ours is: the same texts are measured at
//! the same points and compared with the same thresholds (see [`crate::prompt`]). Counts differ
//! from upstream's by the tokenizers' compression ratios, so a prompt near a threshold may keep
//! or drop one more context file than upstream would.
//!
//! Text is encoded as ordinary text: a repository file that happens to contain `<|endoftext|>` is
//! counted like any other characters, never as a special token.

use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

/// Name of the tokenizer, for reports.
pub const TOKENIZER_NAME: &str = "cl100k_base";

fn bpe() -> &'static CoreBPE {
    // Building the BPE parses a ~1.7 MB rank table: do it once per process.
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| {
        tiktoken_rs::cl100k_base().expect("the cl100k_base table embedded in tiktoken-rs parses")
    })
}

/// Number of `cl100k_base` tokens of `text`.
pub fn count_tokens(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len()
}

/// Number of characters of `text` as upstream measures length: Python's `len(str)`, i.e. Unicode
/// code points, not bytes.
pub fn count_chars(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_cl100k_tokens() {
        assert_eq!(count_tokens(""), 0);
        // "hello world" is two tokens in cl100k_base: "hello", " world".
        assert_eq!(count_tokens("hello world"), 2);
        // Longer text has more tokens, and repetition grows the count.
        let one = count_tokens("fn main() { println!(\"hi\"); }");
        assert!(one > 5, "{one}");
        assert!(count_tokens(&"fn main() { println!(\"hi\"); }\n".repeat(10)) > 5 * one);
    }

    #[test]
    fn special_token_text_is_ordinary_text() {
        // As a special token this would be 1; as text it is several pieces.
        assert!(count_tokens("<|endoftext|>") > 1);
    }

    #[test]
    fn chars_are_code_points_not_bytes() {
        assert_eq!(count_chars("héllo"), 5);
        assert_eq!("héllo".len(), 6);
        assert_eq!(count_chars("日本"), 2);
    }
}
