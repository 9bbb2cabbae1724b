//! Sizes both ends of the contract agree on. Every gRPC client and server of the cluster (the
//! coordinator, workers, the CLI, the bench) sets [`MAX_MESSAGE_BYTES`] for decoding and
//! encoding alike, so that a message one end may send the other end accepts; the submission
//! limits are checked by the client before it sends anything and again by the coordinator.

/// Largest gRPC message either way: a lease reply, a result record (the coordinator accepts up
/// to 32 MiB of one), a report.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Largest chunk of one input in the client-streaming SubmitRun.
pub const SUBMIT_CHUNK_BYTES: usize = 1 << 20;

/// Largest task file a run is submitted with (it is streamed, never one message): the bound
/// of the dataset loader (`ase_common::dataset`), so a file it reads is a file one can submit.
pub const MAX_DATASET_BYTES: u64 = 256 << 20;

/// Largest context file.
pub const MAX_CONTEXT_BYTES: u64 = 256 << 20;

/// Largest run spec as submitted, inline predictions included.
pub const MAX_RUN_SPEC_BYTES: u64 = 512 << 20;

/// Largest run spec as workers fetch it (FetchRunSpec: one message), that is without a
/// predictions run's answers, which travel unit by unit in the leases.
pub const MAX_WORKER_SPEC_BYTES: u64 = 16 << 20;

/// Largest answer (`answer` or `model_patch`) of one predictions entry; a unit's lease carries
/// at most two entries (its round's and the task's round-less one).
pub const MAX_PREDICTION_BYTES: u64 = 8 << 20;

/// Largest template text of a run spec (`prompt.v1_template`, `prompt.v2_template`).
pub const MAX_TEMPLATE_BYTES: u64 = 256 << 10;

/// Largest string of a run spec that is not a template nor an answer (model name, batch,
/// endpoint URL, a file path of `cut_repos`...), and largest key of its objects.
pub const MAX_FIELD_BYTES: u64 = 64 << 10;

/// Largest dataset or context file name a run is submitted with.
pub const MAX_FILE_NAME_BYTES: u64 = 255;

/// Largest API key a client hands over.
pub const MAX_API_KEY_BYTES: u64 = 8 << 10;

/// Bytes of the leases one LeaseWork reply carries at most (the coordinator gives back the
/// grants past it, no attempt counted), well within [`MAX_MESSAGE_BYTES`].
pub const MAX_LEASE_REPLY_BYTES: usize = MAX_MESSAGE_BYTES / 2;

/// Pulls under way a worker's heartbeat lists (`ImageStats.pulls`); the others are counted.
pub const MAX_PULLS_SHOWN: usize = 16;

/// Largest image name in a heartbeat's `ImageStats` (longer ones are cut).
pub const MAX_IMAGE_NAME_BYTES: usize = 256;
