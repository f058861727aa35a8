//! x86-64 kernels: AVX2 with FMA and F16C, the baseline of every x86 CPU
//! llama.cpp's fast paths target. None is written yet, so this table adds no
//! entries and the scalar table is used; a kernel lands by adding its entry to
//! [`overrides`] (and its test against the scalar twin).

use crate::dispatch::{Kernels, TypeKernels};

/// Whether this CPU can run the x86 table.
pub(crate) fn supported() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
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
    Some(scalar.with("x86-avx2", &entries))
}
