//! Llama 3.2 Vision image decoding and preprocessing against the Hugging Face
//! transformers processor (goldens from
//! tests/golden/mllama_preprocess/make_goldens.py), plus limits, errors and
//! hand-checked resampler cases.

use edgellama_models::mllama::preprocess::{
    decode, prepare, preprocess, stages, supported_aspect_ratios, ImageError, ImageLimits,
    PreparedImage, PreprocessConfig, RgbImage,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

// ------------------------------------------------------------------ helpers

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mllama_preprocess")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn golden() -> Value {
    serde_json::from_slice(&read("cases.json")).expect("cases.json parses")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u(v: &Value) -> usize {
    v.as_u64().expect("unsigned integer") as usize
}

fn cfg(tile: usize, max_num_tiles: usize) -> PreprocessConfig {
    PreprocessConfig {
        tile_size: tile,
        max_num_tiles,
        ..PreprocessConfig::default()
    }
}

/// Small deterministic generator (xorshift64*), so the tests need no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// Tracks the largest single allocation made on the current thread while
// armed, to show that an oversized header is refused before any pixel
// buffer exists. Const-initialised thread locals without destructors, so the
// allocator itself never allocates.
struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ARMED.try_with(|a| {
            if a.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
            }
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get))
}

// ------------------------------------------------------------------ goldens

/// How far our JPEG decoder (zune-jpeg) may be from Pillow's (libjpeg-turbo)
/// per channel value. Both are conforming decoders, but their integer IDCTs
/// round differently (seen: max 1 on a grey JPEG) and so do their chroma
/// upsamplers (seen: max 4, mean 0.37 on a 4:2:0 JPEG); the bound is the
/// worst seen on the goldens plus one, mean rounded up. Lossy WebP decodes
/// bit-identically to libwebp, so it gets no tolerance. Whatever the
/// decoder, the preprocessing of Pillow's own decoded pixels is checked bit
/// for bit.
const JPEG_MAX_ABS: u8 = 5;
const JPEG_MEAN_ABS: f64 = 0.5;

/// Every golden case: decoded pixels, resized pixels, the tiled f32 tensor
/// (by sha256 of its exact bytes, plus sampled values to say where it
/// differs) and the aspect-ratio outputs. All failures are collected, so one
/// run shows every broken stage.
#[test]
fn golden_cases_match_transformers() {
    let g = golden();
    let files = g["files"].as_object().expect("files");
    let mut failures = Vec::new();
    for case in g["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let file = &files[case["file"].as_str().expect("file")];
        let bytes = read(file["path"].as_str().expect("path"));
        assert_eq!(
            sha(&bytes),
            file["sha256"].as_str().expect("sha"),
            "{name}: input file changed"
        );
        let mut fail = |what: String| failures.push(format!("{name}: {what}"));

        let ours = match decode(&bytes, &ImageLimits::default()) {
            Ok(img) => img,
            Err(e) => {
                fail(format!("decode failed: {e}"));
                continue;
            }
        };
        let dec = &case["decoded"];
        let (w, h) = (u(&dec["width"]) as u32, u(&dec["height"]) as u32);
        if (ours.width, ours.height) != (w, h) {
            fail(format!(
                "decoded {}x{}, want {w}x{h}",
                ours.width, ours.height
            ));
            continue;
        }
        // For lossy formats, go on with Pillow's decoded pixels so the rest is
        // still checked exactly; our decoder is bounded against them.
        let img = if file["lossy"].as_bool().expect("lossy") {
            let pil = decode(
                &read(file["pil_decoded"].as_str().expect("ref")),
                &ImageLimits::default(),
            )
            .expect("reference PNG decodes");
            let diff: Vec<u8> = ours
                .data
                .iter()
                .zip(&pil.data)
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            let max = diff.iter().copied().max().unwrap_or(0);
            let mean = diff.iter().map(|&d| f64::from(d)).sum::<f64>() / diff.len() as f64;
            let jpeg = file["path"].as_str().is_some_and(|p| p.ends_with(".jpg"));
            let (max_ok, mean_ok) = if jpeg {
                (JPEG_MAX_ABS, JPEG_MEAN_ABS)
            } else {
                (0, 0.0)
            };
            if max > max_ok || mean > mean_ok {
                fail(format!(
                    "lossy decode differs from Pillow's: max {max}, mean {mean:.4}"
                ));
            }
            pil
        } else {
            ours
        };
        if sha(&img.data) != dec["sha256"].as_str().expect("sha") {
            fail("decoded RGB differs".into());
        }

        let tile = u(&case["tile_size"]);
        let max_tiles = u(&case["max_num_tiles"]);
        let c = cfg(tile, max_tiles);
        let ((rows, cols), (nh, nw)) = stages::canvas(img.height, img.width, &c);
        let want_ar = (u(&case["aspect_ratio"][0]), u(&case["aspect_ratio"][1]));
        let rs = &case["resized"];
        let want_size = (u(&rs["height"]) as u32, u(&rs["width"]) as u32);
        if (rows, cols) != want_ar || (nh, nw) != want_size {
            fail(format!(
                "canvas {rows}x{cols} tiles, size {nh}x{nw}; want {want_ar:?}, {want_size:?}"
            ));
            continue;
        }
        let resized = stages::resize(&img, nw, nh).expect("resize");
        if sha(&resized.data) != rs["sha256"].as_str().expect("sha") {
            fail("resized RGB differs".into());
        }

        let p = preprocess(&img, &c).expect("preprocess");
        if p.aspect_ratio != want_ar
            || p.aspect_ratio_id != u(&case["aspect_ratio_id"])
            || p.n_tiles != u(&case["num_tiles"])
        {
            fail(format!(
                "aspect {:?} id {} tiles {}",
                p.aspect_ratio, p.aspect_ratio_id, p.n_tiles
            ));
        }
        let mask: Vec<usize> = case["aspect_ratio_mask"]
            .as_array()
            .expect("mask")
            .iter()
            .map(u)
            .collect();
        let want_mask: Vec<usize> = (0..max_tiles).map(|t| usize::from(t < p.n_tiles)).collect();
        if mask != want_mask {
            fail(format!(
                "aspect_ratio_mask {mask:?}, expected {want_mask:?} from n_tiles"
            ));
        }
        if p.pixels.len() != max_tiles * 3 * tile * tile {
            fail(format!("pixels has {} values", p.pixels.len()));
            continue;
        }
        let mut wrong = 0;
        for s in case["samples"].as_array().expect("samples") {
            let (i, bits) = (u(&s[0]), s[1].as_u64().expect("bits") as u32);
            if p.pixels[i].to_bits() != bits {
                if wrong < 3 {
                    fail(format!(
                        "pixels[{i}] = {:e}, want {:e}",
                        p.pixels[i],
                        f32::from_bits(bits)
                    ));
                }
                wrong += 1;
            }
        }
        if sha(&f32_bytes(&p.pixels)) != case["pixel_values_sha256"].as_str().expect("sha") {
            fail(format!("pixel_values differ ({wrong} of the samples)"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_set_covers_every_aspect_ratio_and_tile_size() {
    let g = golden();
    let cases = g["cases"].as_array().expect("cases");
    for want in supported_aspect_ratios(4) {
        assert!(
            cases.iter().any(|c| u(&c["tile_size"]) == 560
                && (u(&c["aspect_ratio"][0]), u(&c["aspect_ratio"][1])) == want),
            "no 560 case with aspect ratio {want:?}"
        );
    }
    for tile in [560, 448, 56] {
        assert!(
            cases.iter().any(|c| u(&c["tile_size"]) == tile),
            "no case at tile {tile}"
        );
    }
}

#[test]
fn aspect_ratio_tables_match_transformers() {
    let g = golden();
    for (m, table) in g["supported_aspect_ratios"].as_object().expect("table") {
        let m: usize = m.parse().expect("key");
        let want: Vec<(usize, usize)> = table
            .as_array()
            .expect("list")
            .iter()
            .map(|p| (u(&p[0]), u(&p[1])))
            .collect();
        assert_eq!(supported_aspect_ratios(m), want, "max_num_tiles {m}");
    }
    // The ids the model's aspect-ratio embeddings are indexed with.
    assert_eq!(
        supported_aspect_ratios(4),
        [
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2),
            (3, 1),
            (4, 1)
        ]
    );
}

#[test]
fn canvas_choice_matches_transformers() {
    let g = golden();
    let rows = g["canvas"].as_array().expect("canvas");
    assert!(rows.len() > 900);
    for r in rows {
        let v: Vec<usize> = r.as_array().expect("row").iter().map(u).collect();
        let [h, w, tile, max_tiles, ch, cw, nh, nw] = v[..] else {
            panic!("bad row {r}")
        };
        let got = stages::canvas(h as u32, w as u32, &cfg(tile, max_tiles));
        assert_eq!(
            got,
            ((ch / tile, cw / tile), (nh as u32, nw as u32)),
            "{h}x{w} at tile {tile}, {max_tiles} tiles"
        );
    }
}

#[test]
fn config_from_preprocessor_json_is_the_default() {
    let v: Value = serde_json::from_slice(&read("preprocessor_config.json")).expect("json");
    let c = PreprocessConfig::from_config_json(&v).expect("config");
    let d = PreprocessConfig::default();
    assert_eq!(c.tile_size, 560);
    assert_eq!(c.max_num_tiles, 4);
    // Bitwise: the normalisation is meant to be bit-identical.
    assert_eq!(
        c.image_mean.map(f32::to_bits),
        d.image_mean.map(f32::to_bits)
    );
    assert_eq!(c.image_std.map(f32::to_bits), d.image_std.map(f32::to_bits));
    assert_eq!(c.rescale_factor.to_bits(), d.rescale_factor.to_bits());
}

#[test]
fn config_refuses_what_the_pipeline_does_not_do() {
    let base: Value = serde_json::from_slice(&read("preprocessor_config.json")).expect("json");
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        PreprocessConfig::from_config_json(&c)
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().expect("object").remove(k);
        PreprocessConfig::from_config_json(&c)
    };
    for bad in [
        with("do_pad", Value::Bool(false)),
        with("do_normalize", Value::Bool(false)),
        with("resample", 3.into()),
        with("max_image_tiles", 0.into()),
        with("size", serde_json::json!({"height": 560, "width": 448})),
        with("size", serde_json::json!({"height": 0, "width": 0})),
        with("image_std", serde_json::json!([0.5, 0.0, 0.5])),
        with("image_mean", serde_json::json!([0.5, 0.5])),
        without("size"),
        without("image_mean"),
        PreprocessConfig::from_config_json(&Value::Null),
    ] {
        assert!(matches!(bad, Err(ImageError::Config(_))), "{bad:?}");
    }
    let c = without("rescale_factor").expect("rescale_factor is optional");
    assert_eq!(c.rescale_factor, 1.0 / 255.0);
}

// ------------------------------------------------------------------ errors

/// A PNG chunk with its CRC (the CRC-32 of type and data, as zlib's).
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = !0u32;
    for &b in kind.iter().chain(data) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&(!crc).to_be_bytes());
    out
}

/// A PNG header declaring `width` x `height` RGB8, with a token IDAT.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    // A stored (uncompressed) zlib block of 2 zero bytes.
    out.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFF, 0, 0, 0, 0, 0, 0],
    ));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// A baseline JPEG header declaring `width` x `height` (3 components, no
/// tables), an empty scan and the end marker.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8];
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 63, 0]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// An extended WebP (VP8X) header declaring a `width` x `height` canvas,
/// followed by the start of a lossless (VP8L) image of the same size.
fn webp_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut body = b"WEBPVP8X".to_vec();
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    body.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    body.extend_from_slice(b"VP8L");
    body.extend_from_slice(&6u32.to_le_bytes());
    body.push(0x2F);
    body.extend_from_slice(&((width - 1) | (height - 1) << 14).to_le_bytes());
    body.push(0);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn gif_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0]); // no global palette
                                       // One frame of the same size, a local 2-entry palette, a minimal LZW stream.
    out.push(0x2C);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0, 255, 255, 255, 2, 2, 0x44, 0x01, 0, 0x3B]);
    out
}

#[test]
fn decompression_bomb_is_refused_from_the_header_before_allocating() {
    let limits = ImageLimits::default();
    let png = png_declaring(100_000, 100_000);
    let (r, largest) = largest_allocation(|| decode(&png, &limits));
    assert!(
        matches!(
            r,
            Err(ImageError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(
        largest < 1 << 20,
        "allocated {largest} bytes before refusing"
    );

    for (what, bytes) in [
        ("GIF", gif_declaring(65_535, 65_535)),
        ("JPEG", jpeg_declaring(65_535, 65_535)),
        ("WebP", webp_declaring(16_384, 16_384)),
    ] {
        let (r, largest) = largest_allocation(|| decode(&bytes, &limits));
        assert!(
            matches!(r, Err(ImageError::TooManyPixels { .. })),
            "{what}: {r:?}"
        );
        assert!(
            largest < 1 << 20,
            "{what}: allocated {largest} bytes before refusing"
        );
    }

    // Just under a tight limit passes the check and decodes (or fails) normally.
    let small = ImageLimits {
        max_pixels: 4,
        ..limits
    };
    assert!(matches!(
        decode(&png_declaring(2, 3), &small),
        Err(ImageError::TooManyPixels { .. })
    ));
    assert!(!matches!(
        decode(&png_declaring(2, 2), &small),
        Err(ImageError::TooManyPixels { .. })
    ));
}

#[test]
fn each_kind_of_bad_input_has_its_own_error() {
    let limits = ImageLimits::default();
    assert!(matches!(decode(&[], &limits), Err(ImageError::Empty)));

    let mut rng = Rng(7);
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    assert!(matches!(
        decode(&garbage, &limits),
        Err(ImageError::UnknownFormat)
    ));
    assert!(matches!(
        decode(b"BM\x36\0\0\0", &limits),
        Err(ImageError::UnknownFormat)
    ));

    let png = read("small_300x200.png");
    for cut in [20, 40, png.len() / 2, png.len() - 13] {
        let r = decode(&png[..cut], &limits);
        assert!(
            matches!(r, Err(ImageError::Corrupt { format: "PNG", .. })),
            "cut {cut}: {r:?}"
        );
    }
    let jpeg = read("jpeg_420_320x240.jpg");
    for cut in [3, 100, jpeg.len() / 3] {
        let r = decode(&jpeg[..cut], &limits);
        assert!(
            matches!(r, Err(ImageError::Corrupt { format: "JPEG", .. })),
            "cut {cut}: {r:?}"
        );
    }
    let webp = read("webp_lossless_500x300.webp");
    let r = decode(&webp[..webp.len() / 2], &limits);
    assert!(
        matches!(r, Err(ImageError::Corrupt { format: "WebP", .. })),
        "{r:?}"
    );
    let gif = read("gif_animated_320x240.gif");
    let r = decode(&gif[..gif.len() / 4], &limits);
    assert!(
        matches!(r, Err(ImageError::Corrupt { format: "GIF", .. })),
        "{r:?}"
    );

    let tight = ImageLimits {
        max_bytes: png.len() - 1,
        ..limits
    };
    assert!(matches!(
        decode(&png, &tight),
        Err(ImageError::TooManyBytes { .. })
    ));
    assert!(decode(
        &png,
        &ImageLimits {
            max_bytes: png.len(),
            ..limits
        }
    )
    .is_ok());

    assert!(matches!(
        decode(&png_declaring(0, 10), &limits),
        Err(ImageError::ZeroSized {
            width: 0,
            height: 10
        })
    ));
    assert!(matches!(
        decode(&gif_declaring(7, 0), &limits),
        Err(ImageError::ZeroSized {
            width: 7,
            height: 0
        })
    ));

    let c = PreprocessConfig::default();
    let empty = RgbImage {
        width: 0,
        height: 4,
        data: vec![],
    };
    assert!(matches!(
        preprocess(&empty, &c),
        Err(ImageError::ZeroSized { .. })
    ));
    let short = RgbImage {
        width: 2,
        height: 2,
        data: vec![0; 11],
    };
    assert!(matches!(
        preprocess(&short, &c),
        Err(ImageError::BufferSize { want: 12, .. })
    ));
    let ok = RgbImage {
        width: 2,
        height: 2,
        data: vec![0; 12],
    };
    assert!(matches!(
        preprocess(&ok, &cfg(0, 4)),
        Err(ImageError::Config(_))
    ));
    assert!(matches!(
        preprocess(&ok, &cfg(56, 0)),
        Err(ImageError::Config(_))
    ));
    // Messages say what was wrong and by how much.
    let e = decode(&png_declaring(100_000, 100_000), &limits).expect_err("bomb");
    assert!(e.to_string().contains("100000x100000"), "{e}");
}

#[test]
fn damaged_files_never_panic() {
    // A cheap in-tree fuzz: flip, truncate and splice bytes of every golden
    // input. Each must decode or fail with an error, never panic.
    let g = golden();
    let limits = ImageLimits {
        max_pixels: 4_000_000,
        ..ImageLimits::default()
    };
    let mut rng = Rng(0x5eed);
    for file in g["files"].as_object().expect("files").values() {
        let bytes = read(file["path"].as_str().expect("path"));
        for _ in 0..12 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next() as u8;
            }
            if rng.below(3) == 0 {
                b.truncate(rng.below(b.len() as u64) as usize);
            }
            let _ = decode(&b, &limits);
        }
    }
}

// ------------------------------------------------------------------ properties

fn check_prepared(p: &PreparedImage, c: &PreprocessConfig) {
    let plane = 3 * c.tile_size * c.tile_size;
    assert_eq!(p.pixels.len(), c.max_num_tiles * plane);
    assert_eq!(p.n_tiles, p.aspect_ratio.0 * p.aspect_ratio.1);
    assert!(p.n_tiles >= 1 && p.n_tiles <= c.max_num_tiles);
    let ratios = supported_aspect_ratios(c.max_num_tiles);
    assert_eq!(ratios[p.aspect_ratio_id - 1], p.aspect_ratio);
    assert!(p.pixels[p.n_tiles * plane..]
        .iter()
        .all(|v| v.to_bits() == 0));
    assert!(p.pixels.iter().all(|v| v.is_finite()));
}

#[test]
fn preprocess_never_panics_on_random_small_images() {
    let mut rng = Rng(42);
    for _ in 0..300 {
        let (w, h) = (1 + rng.below(90) as u32, 1 + rng.below(90) as u32);
        let data = (0..w * h * 3).map(|_| rng.next() as u8).collect();
        let img = RgbImage {
            width: w,
            height: h,
            data,
        };
        let c = cfg(
            [14, 28, 56, 33][rng.below(4) as usize],
            1 + rng.below(6) as usize,
        );
        let p = preprocess(&img, &c).expect("preprocess");
        check_prepared(&p, &c);
        // Every pixel of the padding (bottom right corner of the last tile,
        // when it is padding) is (0 - mean) / std.
        let ((_, _), (nh, nw)) = stages::canvas(h, w, &c);
        let (r, cc) = p.aspect_ratio;
        if (nh as usize) < r * c.tile_size && (nw as usize) < cc * c.tile_size {
            let last = (p.n_tiles * 3 - 1) * c.tile_size * c.tile_size;
            let corner = p.pixels[last + c.tile_size * c.tile_size - 1];
            assert_eq!(corner, (0.0 - c.image_mean[2]) / c.image_std[2]);
        }
    }
    // Extreme shapes at the real tile size.
    for (w, h) in [(1, 1), (1, 3000), (3000, 1), (2, 561), (561, 2)] {
        let img = RgbImage {
            width: w,
            height: h,
            data: vec![200; (w * h * 3) as usize],
        };
        let c = PreprocessConfig::default();
        check_prepared(&preprocess(&img, &c).expect("preprocess"), &c);
    }
}

#[test]
fn prepare_hashes_the_encoded_bytes() {
    let bytes = read("tiny_3x7.png");
    let c = cfg(56, 4);
    let p = prepare(&bytes, &ImageLimits::default(), &c).expect("prepare");
    assert_eq!(hex(&p.hash), sha(&bytes));
    let q = preprocess(
        &decode(&bytes, &ImageLimits::default()).expect("decode"),
        &c,
    )
    .expect("pp");
    assert_eq!(p.pixels, q.pixels);
    assert_ne!(p.hash, q.hash, "preprocess hashes pixels, not the file");
}

// ------------------------------------------------------------------ resampler by hand

fn rgb(width: u32, height: u32, grey: &[u8]) -> RgbImage {
    RgbImage {
        width,
        height,
        data: grey.iter().flat_map(|&v| [v, v, v]).collect(),
    }
}

fn grey_of(img: &RgbImage) -> Vec<u8> {
    img.data.chunks(3).map(|p| p[0]).collect()
}

#[test]
fn resampler_halving_is_a_tent_two_pixels_wide() {
    // Scale 2 widens the tent to a support of 2 source pixels: output 0
    // (centre 1.0) reads x = 0, 1, 2 at 0.75, 0.75, 0.25, normalised to
    // 3/7, 3/7, 1/7 (1797559, 1797559, 599186 in 22-bit fixed point), and
    // output 1 (centre 3.0) reads x = 1, 2, 3 at 1/7, 3/7, 3/7.
    // (7 * 3 + 14 * 3 + 70) / 7 = 19 and (14 + 70 * 3) / 7 = 32 exactly; the
    // fixed-point sums land at 19.5 and 32.5 before the shift, which floors.
    let img = rgb(4, 1, &[7, 14, 70, 0]);
    assert_eq!(
        grey_of(&stages::resize(&img, 2, 1).expect("resize")),
        [19, 32]
    );
    let img = rgb(1, 4, &[7, 14, 70, 0]);
    assert_eq!(
        grey_of(&stages::resize(&img, 1, 2).expect("resize")),
        [19, 32]
    );
}

#[test]
fn resampler_doubling_weights_three_quarters_one_quarter() {
    // Scale 1/2: output centres at 0.25, 0.75, 1.25, 1.75 source pixels; the
    // outer two see only their own pixel, the inner two 3/4 + 1/4.
    // 101 / 4 = 25.25 -> 25 and 303 / 4 = 75.75 -> 76.
    let img = rgb(2, 1, &[0, 101]);
    assert_eq!(
        grey_of(&stages::resize(&img, 4, 1).expect("resize")),
        [0, 25, 76, 101]
    );
    // The same in the vertical pass.
    let img = rgb(1, 2, &[0, 101]);
    assert_eq!(
        grey_of(&stages::resize(&img, 1, 4).expect("resize")),
        [0, 25, 76, 101]
    );
}

#[test]
fn resampler_keeps_constants_and_same_size() {
    let img = rgb(3, 2, &[77; 6]);
    assert_eq!(
        grey_of(&stages::resize(&img, 17, 5).expect("resize")),
        [77; 85]
    );
    assert_eq!(grey_of(&stages::resize(&img, 1, 1).expect("resize")), [77]);
    let img = RgbImage {
        width: 2,
        height: 1,
        data: vec![1, 2, 3, 4, 5, 6],
    };
    assert_eq!(stages::resize(&img, 2, 1).expect("resize"), img);
    assert!(stages::resize(&img, 0, 1).is_err());
}

#[test]
fn alpha_composite_over_white_matches_pillow_by_hand() {
    // Fully transparent is white, fully opaque is unchanged (all 256 values).
    assert_eq!(stages::over_white([1, 2, 3], 0), [255; 3]);
    for v in 0..=255u8 {
        assert_eq!(stages::over_white([v, 0, 255], 255), [v, 0, 255]);
    }
    // Black at alpha 128: coef1 = 128 * 128 = 16384, coef2 = 32640 - 16384;
    // (255 * 16256 + 16384) / 255 via shifts = 16320, >> 7 = 127.
    assert_eq!(stages::over_white([0, 0, 0], 128), [127; 3]);
    // White stays white at any alpha.
    for a in 0..=255u8 {
        assert_eq!(stages::over_white([255; 3], a), [255; 3]);
    }
}
