//! Sizes both ends of the contract agree on.

/// Largest gRPC message either way, for the coordinator's server and every client (the CLI,
/// workers, the bench): datasets, result records (the coordinator accepts up to 32 MiB of one)
/// and reports travel whole.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
