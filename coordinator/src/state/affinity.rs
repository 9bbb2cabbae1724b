//! What a queued unit is placed by. A generation needs the task's repo (a worker that caches
//! it clones nothing), and so does a v1 evaluation; a v2 evaluation needs the task's image
//! (several GB to pull), so its key is the image. Keys live in one namespace: repos as tasks
//! name them, images as `image:<repository>` (the tag or digest dropped, so that a worker
//! holding `name@sha256:…` after a pinned pull is the holder of `name:tag`).
//!
//! The queues (`scheduler::RepoQueues`) then give a worker first the units whose key it holds,
//! then those whose key no live worker holds (someone has to clone or pull it, and the pulls of
//! a campaign spread over the workers), then anything.

use ase_common::dataset::{Task, TaskSpec};

/// The placement key of an image reference: `image:` and its repository.
pub(crate) fn image_key(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    // A ':' after the last '/' starts the tag; before it, it is a registry's port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    };
    format!("image:{name}")
}

/// Marks the key of a task that needs a privileged container: only workers that may start
/// one are given it; the holder of the image is found by the key without it.
pub(crate) const PRIVILEGED: &str = " +privileged";

/// The evaluate key of a task, when its evaluations are placed by image (v2).
pub(super) fn evaluate_image_key(task: &Task) -> Option<String> {
    match &task.spec {
        TaskSpec::V2(s) if !s.image.is_empty() => Some(if s.privileged {
            format!("{}{PRIVILEGED}", image_key(&s.image))
        } else {
            image_key(&s.image)
        }),
        _ => None,
    }
}

/// What a worker must hold for `key` (the key without its privileged mark).
pub(crate) fn held_key(key: &str) -> &str {
    key.strip_suffix(PRIVILEGED).unwrap_or(key)
}

/// Whether a worker that may (or may not) start privileged containers can be given `key`.
pub(crate) fn may_take(key: &str, privileged_ok: bool) -> bool {
    privileged_ok || !key.ends_with(PRIVILEGED)
}

#[cfg(test)]
mod tests {
    use super::image_key;

    #[test]
    fn an_image_key_drops_the_tag_or_digest_not_the_registry_port() {
        assert_eq!(image_key("aiseceval/x:latest"), "image:aiseceval/x");
        assert_eq!(
            image_key("127.0.0.1:5000/a/b:r1"),
            "image:127.0.0.1:5000/a/b"
        );
        assert_eq!(
            image_key("127.0.0.1:5000/a/b@sha256:abc"),
            "image:127.0.0.1:5000/a/b"
        );
        assert_eq!(image_key("127.0.0.1:5000/a/b"), "image:127.0.0.1:5000/a/b");
        assert_eq!(image_key("ubuntu"), "image:ubuntu");
    }
}
