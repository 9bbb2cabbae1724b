//! The one content digest of the project: SHA-256 in lower-case hex, used for dataset and
//! context identities, run-spec keys and cache names.

use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, lower-case hex (64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
