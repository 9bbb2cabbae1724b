//! The refusal of a worker name that a live session holds, as both ends read it: gRPC
//! `ALREADY_EXISTS`, and in its metadata how long until that session lapses if it stops
//! heart-beating, so that a restarted worker knows how long its earlier life may hold the name.

use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Metadata key: milliseconds until the name is free, should its session fall silent now.
pub const FREE_IN_MS: &str = "ase-name-free-in-ms";

/// The status refusing a registration under a name in use.
pub fn refusal(message: String, free_in: Duration) -> Status {
    let mut metadata = MetadataMap::new();
    let ms = u64::try_from(free_in.as_millis()).unwrap_or(u64::MAX);
    metadata.insert(FREE_IN_MS, MetadataValue::from(ms));
    Status::with_metadata(Code::AlreadyExists, message, metadata)
}

/// When `status` refuses a name in use: how long until it is free (zero when the coordinator
/// did not say).
pub fn free_in(status: &Status) -> Option<Duration> {
    if status.code() != Code::AlreadyExists {
        return None;
    }
    let ms = status
        .metadata()
        .get(FREE_IN_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_survives_the_round_trip_and_other_codes_are_no_refusal() {
        let s = refusal(
            "worker name w1 is in use".into(),
            Duration::from_millis(9_500),
        );
        assert_eq!(free_in(&s), Some(Duration::from_millis(9_500)));
        assert_eq!(s.message(), "worker name w1 is in use");
        assert_eq!(free_in(&Status::already_exists("x")), Some(Duration::ZERO));
        assert_eq!(free_in(&Status::permission_denied("x")), None);
    }
}
