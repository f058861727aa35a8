//! aarch64 kernels (NEON, with the dot-product extension where present). None
//! is written yet, so this table adds no entries and the scalar table is
//! used; a kernel lands by adding its entry to [`overrides`] (and its test
//! against the scalar twin).

use crate::dispatch::{Kernels, TypeKernels};

/// Whether this CPU can run the aarch64 table.
pub(crate) fn supported() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// The entries that replace scalar ones.
fn overrides() -> Vec<TypeKernels> {
    Vec::new()
}

pub(crate) fn kernels(scalar: &Kernels) -> Option<Kernels> {
    let entries = overrides();
    if entries.is_empty() || !supported() {
        return None;
    }
    Some(scalar.with("aarch64-neon", &entries))
}
