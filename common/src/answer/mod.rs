//! From a model's answer to the code in the unit's tree: extract the patch or the code block
//! (`extract`), vet a patch's paths (`patch_paths`), repair it (`patch_repair`), apply it safely
//! (`patch_apply`), or splice a v2 answer into the masked file (`splice`).

pub mod apply;
pub mod extract;
pub mod patch_apply;
pub mod patch_paths;
pub mod patch_repair;
pub mod splice;
