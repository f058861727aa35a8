//! Decodes arbitrary bytes as an image and, when that succeeds, preprocesses
//! it. Neither may panic; an accepted image must give a well-formed tensor.
//!
//! Seed corpus: the inputs in crates/models/tests/golden/mllama_preprocess/
//! (PNG in every colour type and bit depth, JPEG, WebP, GIF).

#![no_main]

use edgellama_models::mllama::preprocess::{
    decode, preprocess, supported_aspect_ratios, ImageLimits, PreprocessConfig,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast; the pixel check runs before decoding,
    // so larger declared sizes still exercise the refusal path.
    let limits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 20,
    };
    let Ok(img) = decode(data, &limits) else {
        return;
    };
    assert_eq!(
        img.data.len() as u64,
        u64::from(img.width) * u64::from(img.height) * 3
    );
    assert!(u64::from(img.width) * u64::from(img.height) <= limits.max_pixels);

    // A small tile keeps the resampler and tiling cheap on every input.
    let cfg = PreprocessConfig {
        tile_size: 28,
        max_num_tiles: 4,
        ..PreprocessConfig::default()
    };
    let p = preprocess(&img, &cfg).expect("a decoded image must preprocess");
    let plane = 3 * cfg.tile_size * cfg.tile_size;
    assert_eq!(p.pixels.len(), cfg.max_num_tiles * plane);
    assert_eq!(p.n_tiles, p.aspect_ratio.0 * p.aspect_ratio.1);
    assert_eq!(
        supported_aspect_ratios(cfg.max_num_tiles)[p.aspect_ratio_id - 1],
        p.aspect_ratio
    );
    assert!(p.pixels[p.n_tiles * plane..].iter().all(|v| v.to_bits() == 0));
    assert!(p.pixels.iter().all(|v| v.is_finite()));
});
