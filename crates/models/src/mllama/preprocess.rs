//! Llama 3.2 Vision image input: decoding and tiling, bit for bit as
//! Hugging Face transformers' mllama image processor (PIL backend,
//! `MllamaImageProcessorPil`, transformers 5.25 with Pillow 12.3) does it.
//!
//! The pipeline, in transformers' order:
//! 1. decode, then convert to RGB as `transformers.image_transforms.convert_to_rgb`
//!    does: an image with an alpha band or a transparency key goes through
//!    Pillow's `convert("RGBA")` and `alpha_composite` over opaque white; any
//!    other image through `convert("RGB")` (which, for Pillow's 16-bit grey
//!    mode `I;16`, clips every value above 255 to 255);
//! 2. pick the tile canvas (`get_optimal_tiled_canvas`) and the size that fits
//!    it (`get_image_size_fit_to_canvas`);
//! 3. resize with Pillow's bilinear filter: its fixed-point separable
//!    resampler (`libImaging/Resample.c`), antialiased when shrinking;
//! 4. pad bottom and right with 0 (still uint8), so the padding also goes
//!    through steps 5 and 6 and ends up as `(0 - mean) / std`, not 0;
//! 5. rescale: `f32(f64(v) * rescale_factor)`;
//! 6. normalise in f32: `(x - mean) / std`;
//! 7. split into tiles in row-major order, then pad to `max_num_tiles` with
//!    tiles of 0.0.
//!
//! Steps 1 to 7 are integer or correctly rounded IEEE arithmetic in a fixed
//! order, so the output is bit-identical to the reference for the same
//! decoded pixels. Decoding is bit-identical to Pillow's for PNG (every
//! colour type and bit depth), GIF and WebP (lossless and, on the goldens,
//! lossy). JPEG is not: zune-jpeg and libjpeg-turbo round their IDCTs and
//! chroma upsampling differently, by a few levels at most (the tests state
//! the bound).
//!
//! Known divergences from Pillow, all in rare files: EXIF orientation is
//! ignored (as `Image.open` does, which is what the processor is given);
//! CMYK JPEGs use the JPEG decoder's CMYK to RGB conversion; a GIF whose
//! first frame does not cover the screen and has no transparency fills the
//! uncovered area with white where Pillow uses palette entry 0.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use sha2::{Digest, Sha256};
use std::io::Cursor;
use thiserror::Error;

/// Why an image was refused. Every variant is about the input, none is a bug.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image is empty (0 bytes)")]
    Empty,
    #[error("image is {len} bytes, over the limit of {max} bytes")]
    TooManyBytes { len: usize, max: usize },
    #[error("unrecognised image format: expected PNG, JPEG, WebP or GIF")]
    UnknownFormat,
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {max} pixels")]
    TooManyPixels {
        width: u64,
        height: u64,
        pixels: u64,
        max: u64,
    },
    #[error("image has no pixels ({width}x{height})")]
    ZeroSized { width: u64, height: u64 },
    #[error("corrupt or truncated {format} image: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    #[error("unsupported {format} image: {reason}")]
    Unsupported {
        format: &'static str,
        reason: String,
    },
    #[error("decoding the {format} image would need more memory than allowed: {reason}")]
    DecoderLimit {
        format: &'static str,
        reason: String,
    },
    #[error("RGB buffer holds {got} bytes, but {width}x{height} RGB8 needs {want}")]
    BufferSize {
        width: u32,
        height: u32,
        got: usize,
        want: u64,
    },
    #[error("invalid image preprocessing config: {0}")]
    Config(String),
}

/// What an untrusted image may cost before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Encoded size.
    pub max_bytes: usize,
    /// Width times height, as declared by the file header; checked before any
    /// pixel buffer is allocated, so a small file that declares a huge image
    /// (a decompression bomb) costs nothing.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 20 MiB and 40 megapixels. 20 MiB holds any camera JPEG or screenshot
    /// PNG people send to a chat model (and matches the per-image size cap
    /// of the common hosted chat APIs), while bounding what one request can
    /// make us buffer. 40 MP admits 8K frames (33 MP) and 36 MP camera
    /// sensors; decoded, it is at most 320 MB in the widest layout the
    /// decoders produce (16-bit RGBA), and nothing larger helps the model,
    /// which sees at most four 560x560 tiles.
    fn default() -> Self {
        Self {
            max_bytes: 20 << 20,
            max_pixels: 40_000_000,
        }
    }
}

/// A decoded image: RGB8, row-major, `data.len() == width * height * 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    fn check(&self) -> Result<(), ImageError> {
        if self.width == 0 || self.height == 0 {
            return Err(ImageError::ZeroSized {
                width: self.width.into(),
                height: self.height.into(),
            });
        }
        let want = u64::from(self.width) * u64::from(self.height) * 3;
        if self.data.len() as u64 != want {
            return Err(ImageError::BufferSize {
                width: self.width,
                height: self.height,
                got: self.data.len(),
                want,
            });
        }
        Ok(())
    }
}

/// The image processor's settings. Defaults are Llama 3.2 Vision's
/// `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    /// `size.height` (= `size.width`): one tile's side in pixels.
    pub tile_size: usize,
    /// `max_image_tiles`.
    pub max_num_tiles: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// f64 because transformers multiplies by the Python float (a double)
    /// before narrowing to f32; with an f32 factor, 126 of the 256 possible
    /// rescaled values come out an ulp off.
    pub rescale_factor: f64,
}

/// CLIP's normalisation, which Llama 3.2 Vision keeps, as written in its
/// config; numpy narrows these Python floats to f32, as `default` does.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Sanity bounds for configs read from files (the real values are 560 and
/// 4): they cap the output at 16 * 3 * 1024^2 floats, 200 MB.
const MAX_TILE_SIZE: usize = 1024;
const MAX_NUM_TILES: usize = 16;

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            tile_size: 560,
            max_num_tiles: 4,
            image_mean: CLIP_MEAN.map(|v| v as f32),
            image_std: CLIP_STD.map(|v| v as f32),
            rescale_factor: 1.0 / 255.0,
        }
    }
}

impl PreprocessConfig {
    /// Reads a Hugging Face `preprocessor_config.json`. `size`,
    /// `max_image_tiles`, `image_mean` and `image_std` are required;
    /// `rescale_factor` defaults to 1/255 and the `do_*` switches to true, as
    /// in transformers. Settings this pipeline does not implement (a switch
    /// turned off, a filter other than bilinear) are refused rather than
    /// silently ignored.
    pub fn from_config_json(v: &serde_json::Value) -> Result<Self, ImageError> {
        let bad = |m: String| ImageError::Config(m);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("preprocessor config is not a JSON object".into()))?;
        for key in [
            "do_resize",
            "do_pad",
            "do_rescale",
            "do_normalize",
            "do_convert_rgb",
        ] {
            match obj.get(key) {
                None | Some(serde_json::Value::Bool(true)) => {}
                Some(other) => {
                    return Err(bad(format!("{key} is {other}; only true is supported")));
                }
            }
        }
        // PIL's Resampling.BILINEAR.
        if let Some(r) = obj.get("resample") {
            if r.as_u64() != Some(2) {
                return Err(bad(format!(
                    "resample is {r}; only 2 (bilinear) is supported"
                )));
            }
        }
        let size = obj.get("size").ok_or_else(|| bad("missing size".into()))?;
        let side = |k: &str| {
            size.get(k)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(format!("size.{k} missing or not a non-negative integer")))
        };
        let (h, w) = (side("height")?, side("width")?);
        if h != w {
            return Err(bad(format!("tiles must be square, got size {h}x{w}")));
        }
        let max_num_tiles = obj
            .get("max_image_tiles")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("max_image_tiles missing or not a non-negative integer".into()))?;
        let triple = |k: &str| -> Result<[f32; 3], ImageError> {
            let arr = obj
                .get(k)
                .and_then(serde_json::Value::as_array)
                .filter(|a| a.len() == 3)
                .ok_or_else(|| bad(format!("{k} missing or not a list of 3 numbers")))?;
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(arr) {
                // numpy narrows the Python float (f64) to f32 the same way.
                *o = x
                    .as_f64()
                    .ok_or_else(|| bad(format!("{k} holds a non-number {x}")))?
                    as f32;
            }
            Ok(out)
        };
        let rescale_factor = match obj.get("rescale_factor") {
            None => 1.0 / 255.0,
            Some(x) => x
                .as_f64()
                .ok_or_else(|| bad(format!("rescale_factor is not a number: {x}")))?,
        };
        let cfg = Self {
            tile_size: usize::try_from(h).unwrap_or(usize::MAX),
            max_num_tiles: usize::try_from(max_num_tiles).unwrap_or(usize::MAX),
            image_mean: triple("image_mean")?,
            image_std: triple("image_std")?,
            rescale_factor,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ImageError> {
        let bad = |m: String| Err(ImageError::Config(m));
        if !(1..=MAX_TILE_SIZE).contains(&self.tile_size) {
            return bad(format!(
                "tile size {} is outside 1..={MAX_TILE_SIZE}",
                self.tile_size
            ));
        }
        if !(1..=MAX_NUM_TILES).contains(&self.max_num_tiles) {
            return bad(format!(
                "max_num_tiles {} is outside 1..={MAX_NUM_TILES}",
                self.max_num_tiles
            ));
        }
        if self.image_mean.iter().any(|m| !m.is_finite()) {
            return bad(format!("image_mean {:?} is not finite", self.image_mean));
        }
        if self.image_std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return bad(format!(
                "image_std {:?} must be finite and non-zero",
                self.image_std
            ));
        }
        if !self.rescale_factor.is_finite() {
            return bad(format!(
                "rescale_factor {} is not finite",
                self.rescale_factor
            ));
        }
        Ok(())
    }
}

/// One image, ready for the vision encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedImage {
    /// `[max_num_tiles][3][tile_size][tile_size]`; tiles past `n_tiles` are 0.0.
    pub pixels: Vec<f32>,
    /// `rows * cols`.
    pub n_tiles: usize,
    /// `(rows, cols)`: tiles down, tiles across.
    pub aspect_ratio: (usize, usize),
    /// 1-based index of `aspect_ratio` in `supported_aspect_ratios(max_num_tiles)`,
    /// as transformers' `aspect_ratio_ids` (0 is its batch padding).
    pub aspect_ratio_id: usize,
    pub tile_size: usize,
    pub max_num_tiles: usize,
    /// sha256 of the encoded bytes for [`prepare`]; for [`preprocess`], which
    /// never sees them, of `"rgb8" || width (u32 LE) || height (u32 LE) || data`.
    pub hash: [u8; 32],
}

/// Every `(rows, cols)` with `rows * cols <= max_num_tiles`, by rows then
/// cols: transformers' `get_all_supported_aspect_ratios` order.
pub fn supported_aspect_ratios(max_num_tiles: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for rows in 1..=max_num_tiles {
        for cols in 1..=max_num_tiles / rows {
            out.push((rows, cols));
        }
    }
    out
}

// ------------------------------------------------------------------ decode

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
    WebP,
    Gif,
}

impl Format {
    fn sniff(b: &[u8]) -> Option<Self> {
        if b.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
            Some(Self::Gif)
        } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
            Some(Self::WebP)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::WebP => "WebP",
            Self::Gif => "GIF",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::WebP => ImageFormat::WebP,
            Self::Gif => ImageFormat::Gif,
        }
    }
}

/// What the PNG header says, read here because Pillow's conversions depend
/// on the stored layout, which the decoder's expanded output no longer shows
/// (16-bit grey with a colour key and 16-bit grey+alpha both come out as
/// 16-bit grey+alpha, but Pillow treats them differently).
#[derive(Debug, Clone, Copy)]
struct PngHeader {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
    /// The tRNS colour key of a grey (type 0) or RGB (type 2) image.
    key: Option<[u16; 3]>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn png_header(b: &[u8]) -> Result<PngHeader, ImageError> {
    let corrupt = |r: &str| ImageError::Corrupt {
        format: "PNG",
        reason: r.into(),
    };
    if b.len() < 33 || &b[12..16] != b"IHDR" {
        return Err(corrupt("no IHDR chunk after the signature"));
    }
    let (width, height) = (be32(b, 16).unwrap_or(0), be32(b, 20).unwrap_or(0));
    let (bit_depth, color_type) = (b[24], b[25]);
    let mut key = None;
    if color_type == 0 || color_type == 2 {
        // Walk the chunks before the image data for tRNS. A damaged chunk
        // list just ends the walk; the decoder reports the damage.
        let mut at = 8usize;
        while let (Some(len), Some(kind)) = (be32(b, at), b.get(at + 4..at + 8)) {
            if kind == b"IDAT" {
                break;
            }
            let data = at
                .checked_add(8)
                .and_then(|s| Some(s..s.checked_add(len as usize)?))
                .and_then(|r| b.get(r));
            let Some(data) = data else { break };
            if kind == b"tRNS" {
                let v = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
                key = match (color_type, data.len()) {
                    (0, 2) => Some([v(0); 3]),
                    (2, 6) => Some([v(0), v(2), v(4)]),
                    _ => None,
                };
                break;
            }
            at += 12 + data.len();
        }
    }
    Ok(PngHeader {
        width,
        height,
        bit_depth,
        color_type,
        key,
    })
}

/// Whether a JPEG's scan data is followed by its end-of-image marker. The
/// JPEG decoder fills a cut-off scan with grey and reports success; Pillow
/// refuses such a file ("image file is truncated"), and so do we. The header
/// segments are skipped by their lengths, so an EXIF thumbnail's marker does
/// not count. A header that does not parse is left to the decoder to report.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let be16 = |at: usize| {
        b.get(at..at + 2)
            .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
    };
    let mut i = 2; // after SOI
    loop {
        if b.get(i) != Some(&0xFF) {
            return b.len() > i; // not a marker: malformed, not cut short
        }
        let Some(&marker) = b.get(i + 1) else {
            return false;
        };
        match marker {
            0xFF => i += 1, // fill byte
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => i += 2,
            0xDA => {
                let Some(len) = be16(i + 2) else { return false };
                let scan = b.get(i + 2 + len..).unwrap_or(&[]);
                return scan.windows(2).any(|w| w == [0xFF, 0xD9]);
            }
            _ => {
                let Some(len) = be16(i + 2) else { return false };
                i += 2 + len;
            }
        }
    }
}

fn check_pixels(width: u64, height: u64, limits: &ImageLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSized { width, height });
    }
    let pixels = width * height;
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            pixels,
            max: limits.max_pixels,
        });
    }
    Ok(())
}

fn map_decoder_error(format: Format, e: image::ImageError) -> ImageError {
    let format = format.name();
    let reason = e.to_string();
    match e {
        image::ImageError::Unsupported(_) => ImageError::Unsupported { format, reason },
        image::ImageError::Limits(_) => ImageError::DecoderLimit { format, reason },
        _ => ImageError::Corrupt { format, reason },
    }
}

/// Decodes PNG, JPEG, WebP or GIF (the first frame), sniffed from the bytes,
/// and converts it to RGB8 as the transformers processor does (alpha
/// composited over white, Pillow's integer arithmetic).
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = Format::sniff(bytes).ok_or(ImageError::UnknownFormat)?;
    let png = match format {
        Format::Png => {
            let h = png_header(bytes)?;
            check_pixels(h.width.into(), h.height.into(), limits)?;
            Some(h)
        }
        Format::Jpeg if !jpeg_is_complete(bytes) => {
            return Err(ImageError::Corrupt {
                format: "JPEG",
                reason: "truncated: the data ends before the end-of-image marker".into(),
            })
        }
        _ => None,
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut decoder_limits = image::Limits::default();
    // The decoder's own allocation cap, a second line behind the pixel check:
    // the widest output (16-bit RGBA, 8 bytes a pixel) plus working room.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| map_decoder_error(format, e))?;
    let (w, h) = decoder.dimensions();
    check_pixels(w.into(), h.into(), limits)?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| map_decoder_error(format, e))?;
    to_rgb(img, png.as_ref(), format)
}

/// `Image.alpha_composite(white, im)` for one pixel, then dropping alpha:
/// Pillow's `libImaging/AlphaComposite.c` with `dst` opaque white.
fn over_white(src: [u8; 3], alpha: u8) -> [u8; 3] {
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return [255; 3];
    }
    let shift_div_255 = |a: u32| ((a >> 8) + a) >> 8;
    let (sa, da, dst) = (u32::from(alpha), 255u32, 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    src.map(|s| {
        let tmp = u32::from(s) * coef1 + dst * coef2;
        (shift_div_255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
    })
}

/// Pillow's `I;16` to RGB (`I16_RGB` in `Convert.c`): clip, not scale.
fn clip16(v: u16) -> u8 {
    u8::try_from(v).unwrap_or(255)
}

/// Pillow's `RGB;16B` / `LA;16B` unpackers keep the high byte.
fn high(v: u16) -> u8 {
    (v >> 8) as u8
}

fn to_rgb(
    img: DynamicImage,
    png: Option<&PngHeader>,
    format: Format,
) -> Result<RgbImage, ImageError> {
    let (width, height) = (img.width(), img.height());
    let n = width as usize * height as usize;
    let keyed = matches!(png, Some(PngHeader { key: Some(_), .. }));
    // Plain RGB8 is handed over as it is, without a second buffer.
    let mut out = if !keyed && matches!(img, DynamicImage::ImageRgb8(_)) {
        Vec::new()
    } else {
        Vec::with_capacity(n * 3)
    };

    // A PNG colour key: Pillow compares the key's low byte with the pixel
    // after its own 8-bit conversion (`rgbT2a` in `Convert.c`), and for 2-
    // and 4-bit grey with the scaled value; 1-bit keys are mapped to 0/255
    // first (`PngImagePlugin.chunk_tRNS`). So the decoder's alpha (a plain
    // comparison of stored samples) is recomputed here.
    if let Some(PngHeader {
        key: Some(key),
        bit_depth,
        color_type,
        ..
    }) = png
    {
        let key8 = if *bit_depth == 1 {
            [if key[0] != 0 { 255 } else { 0 }; 3]
        } else {
            key.map(|k| (k & 0xff) as u8)
        };
        let mut push = |rgb: [u8; 3]| {
            let alpha = if rgb == key8 { 0 } else { 255 };
            out.extend_from_slice(&over_white(rgb, alpha));
        };
        match (&img, color_type) {
            (DynamicImage::ImageLumaA8(b), 0) => b.pixels().for_each(|p| push([p.0[0]; 3])),
            (DynamicImage::ImageLuma8(b), 0) => b.pixels().for_each(|p| push([p.0[0]; 3])),
            (DynamicImage::ImageLumaA16(b), 0) => {
                b.pixels().for_each(|p| push([clip16(p.0[0]); 3]))
            }
            (DynamicImage::ImageLuma16(b), 0) => b.pixels().for_each(|p| push([clip16(p.0[0]); 3])),
            (DynamicImage::ImageRgba8(b), 2) => {
                b.pixels().for_each(|p| push([p.0[0], p.0[1], p.0[2]]))
            }
            (DynamicImage::ImageRgb8(b), 2) => b.pixels().for_each(|p| push(p.0)),
            (DynamicImage::ImageRgba16(b), 2) => b
                .pixels()
                .for_each(|p| push([high(p.0[0]), high(p.0[1]), high(p.0[2])])),
            (DynamicImage::ImageRgb16(b), 2) => b.pixels().for_each(|p| push(p.0.map(high))),
            _ => {
                return Err(ImageError::Unsupported {
                    format: format.name(),
                    reason: format!("colour key on a {:?} image", img.color()),
                })
            }
        }
        return Ok(RgbImage {
            width,
            height,
            data: out,
        });
    }

    match img {
        DynamicImage::ImageRgb8(b) => out = b.into_raw(),
        DynamicImage::ImageRgba8(b) => {
            for p in b.pixels() {
                out.extend_from_slice(&over_white([p.0[0], p.0[1], p.0[2]], p.0[3]));
            }
        }
        DynamicImage::ImageLuma8(b) => {
            for p in b.pixels() {
                out.extend_from_slice(&[p.0[0]; 3]);
            }
        }
        DynamicImage::ImageLumaA8(b) => {
            for p in b.pixels() {
                out.extend_from_slice(&over_white([p.0[0]; 3], p.0[1]));
            }
        }
        DynamicImage::ImageRgb16(b) => {
            for p in b.pixels() {
                out.extend_from_slice(&p.0.map(high));
            }
        }
        DynamicImage::ImageRgba16(b) => {
            for p in b.pixels() {
                let rgb = [high(p.0[0]), high(p.0[1]), high(p.0[2])];
                out.extend_from_slice(&over_white(rgb, high(p.0[3])));
            }
        }
        // Pillow opens 16-bit grey as `I;16` and converts it with a clip.
        DynamicImage::ImageLuma16(b) => {
            for p in b.pixels() {
                out.extend_from_slice(&[clip16(p.0[0]); 3]);
            }
        }
        // 16-bit grey+alpha (a colour key was handled above): Pillow opens it
        // as RGBA through `LA;16B`, high bytes.
        DynamicImage::ImageLumaA16(b) => {
            for p in b.pixels() {
                out.extend_from_slice(&over_white([high(p.0[0]); 3], high(p.0[1])));
            }
        }
        other => {
            return Err(ImageError::Unsupported {
                format: format.name(),
                reason: format!("pixel layout {:?}", other.color()),
            })
        }
    }
    Ok(RgbImage {
        width,
        height,
        data: out,
    })
}

// ------------------------------------------------------------------ canvas

/// `get_optimal_tiled_canvas`: the `(rows, cols)` whose canvas needs the
/// least upscaling, or if none fits without shrinking, the least shrinking;
/// ties go to the smaller canvas, then to the earlier ratio. Same f64
/// divisions and exact comparisons as the numpy code, so ties break alike.
fn optimal_tiles(height: u32, width: u32, max_num_tiles: usize, tile: usize) -> (usize, usize) {
    let ratios = supported_aspect_ratios(max_num_tiles);
    let scale = |&(r, c): &(usize, usize)| {
        let sh = (r * tile) as f64 / f64::from(height);
        let sw = (c * tile) as f64 / f64::from(width);
        if sw > sh {
            sh
        } else {
            sw
        }
    };
    let scales: Vec<f64> = ratios.iter().map(scale).collect();
    let up = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .reduce(f64::min);
    let selected = up.unwrap_or_else(|| {
        scales
            .iter()
            .copied()
            .filter(|&s| s < 1.0)
            .fold(f64::NEG_INFINITY, f64::max)
    });
    let mut best: Option<(usize, (usize, usize))> = None;
    for (&(r, c), &s) in ratios.iter().zip(&scales) {
        let area = r * c;
        if s == selected && best.is_none_or(|(a, _)| area < a) {
            best = Some((area, (r, c)));
        }
    }
    // `ratios` always holds (1, 1) and every scale is finite and positive,
    // so one of the two filters above matched and `best` is set.
    best.map_or((1, 1), |(_, rc)| rc)
}

/// `get_image_size_fit_to_canvas`: `(height, width)` after resizing. The
/// side that sets the scale lands between the tile size and the canvas; the
/// other follows the aspect ratio, floored, at least 1.
fn fit_to_canvas(
    height: u32,
    width: u32,
    canvas_h: usize,
    canvas_w: usize,
    tile: usize,
) -> (u32, u32) {
    let (h, w) = (height as usize, width as usize);
    let target_w = w.max(tile).min(canvas_w);
    let target_h = h.max(tile).min(canvas_h);
    let scale_h = target_h as f64 / h as f64;
    let scale_w = target_w as f64 / w as f64;
    let (new_h, new_w) = if scale_w < scale_h {
        let nh = ((h as f64 * scale_w).floor() as usize).max(1);
        (nh.min(target_h), target_w)
    } else {
        let nw = ((w as f64 * scale_h).floor() as usize).max(1);
        (target_h, nw.min(target_w))
    };
    // Both are at most the canvas side, itself at most 64 * 4096.
    (new_h as u32, new_w as u32)
}

// --------------------------------------------------------------- resampler

/// Pillow's fixed-point precision for 8-bit resampling: 32 bits less 8 for
/// the value and 2 for the overshoot of filters with negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The coefficients of one resampling pass (`precompute_coeffs` followed by
/// `normalize_coeffs_8bpc`): output pixel `i` reads `len[i]` inputs from
/// `start[i]` with weights `k[i * ksize..][..len[i]]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn precompute_coeffs(in_size: u32, out_size: u32) -> Coeffs {
    // Pillow passes the source box as C floats; (in1 - in0) is a float
    // subtraction, exact below 2^24 and rounded like Pillow's above.
    let (in0, in1) = (0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = 1.0 * filterscale; // bilinear support is 1
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;
    let out = out_size as usize;
    let mut c = Coeffs {
        ksize,
        start: Vec::with_capacity(out),
        len: Vec::with_capacity(out),
        k: vec![0; out * ksize],
    };
    let mut w = vec![0f64; ksize];
    for xx in 0..out {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        // C's (int) casts truncate toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = bilinear(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
            ww += *wx;
        }
        let row = &mut c.k[xx * ksize..][..n];
        for (kx, &wx) in row.iter_mut().zip(&w) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            let scaled = v * f64::from(1u32 << PRECISION_BITS);
            *kx = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        c.start.push(xmin as usize);
        c.len.push(n);
    }
    c
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `ImagingResampleInner` for an RGB8 image (`src`, packed,
/// `width` x `height`) with the bilinear filter and the whole source as box:
/// a horizontal pass (over only the rows the vertical pass will read) into an
/// 8-bit intermediate, then a vertical pass; a pass whose size does not
/// change is skipped. The accumulators are i64 where Pillow's are int: the
/// same values wherever Pillow's do not overflow, which under `ImageLimits`
/// they never do. Returns the packed `out_w` x `out_h` result.
fn resample_inner(src: &[u8], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let need_h = out_w != width;
    let need_v = out_h != height;
    let vert = precompute_coeffs(height as u32, out_h as u32);
    let ybox_first = vert.start[0];
    let ybox_last = vert.start[out_h - 1] + vert.len[out_h - 1];

    let horiz = need_h.then(|| {
        let hc = precompute_coeffs(width as u32, out_w as u32);
        let rows = ybox_last - ybox_first;
        let mut data = vec![0u8; out_w * rows * 3];
        for (yy, line_out) in data.chunks_exact_mut(out_w * 3).enumerate() {
            let line_in = &src[(yy + ybox_first) * width * 3..][..width * 3];
            for (xx, px_out) in line_out.chunks_exact_mut(3).enumerate() {
                let k = &hc.k[xx * hc.ksize..][..hc.len[xx]];
                let line = &line_in[hc.start[xx] * 3..];
                let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
                for (p, &kx) in line.chunks_exact(3).zip(k) {
                    for c in 0..3 {
                        ss[c] += i64::from(p[c]) * i64::from(kx);
                    }
                }
                for c in 0..3 {
                    px_out[c] = clip8(ss[c]);
                }
            }
        }
        data
    });
    if !need_v {
        return horiz.unwrap_or_else(|| src.to_vec());
    }
    // After a horizontal pass the vertical bounds are shifted to the rows it
    // computed.
    let (cur, w, row_offset) = match &horiz {
        Some(d) => (d.as_slice(), out_w, ybox_first),
        None => (src, width, 0),
    };
    let mut data = vec![0u8; w * out_h * 3];
    for (yy, line_out) in data.chunks_exact_mut(w * 3).enumerate() {
        let k = &vert.k[yy * vert.ksize..][..vert.len[yy]];
        let ymin = vert.start[yy] - row_offset;
        for (i, out_px) in line_out.iter_mut().enumerate() {
            let mut ss = 1i64 << (PRECISION_BITS - 1);
            for (y, &ky) in k.iter().enumerate() {
                ss += i64::from(cur[(ymin + y) * w * 3 + i]) * i64::from(ky);
            }
            *out_px = clip8(ss);
        }
    }
    data
}

/// `PIL.Image.resize((out_w, out_h), BILINEAR)` on a packed RGB8 image.
/// Sizes must be non-zero.
fn resize_bilinear(src: &[u8], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    if (out_w, out_h) == (width, height) {
        return src.to_vec();
    }
    // Image.resize does very tall images that shrink vertically in two
    // calls, vertical first, which rounds differently from one call.
    if height > width * 100 && out_h < height {
        let tall = resample_inner(src, width, height, width, out_h);
        return resample_inner(&tall, width, out_h, out_w, out_h);
    }
    resample_inner(src, width, height, out_w, out_h)
}

// -------------------------------------------------------------- preprocess

fn rgb_hash(img: &RgbImage) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"rgb8");
    h.update(img.width.to_le_bytes());
    h.update(img.height.to_le_bytes());
    h.update(&img.data);
    h.finalize().into()
}

/// Resizes, pads, normalises and tiles one decoded image.
pub fn preprocess(img: &RgbImage, cfg: &PreprocessConfig) -> Result<PreparedImage, ImageError> {
    cfg.validate()?;
    img.check()?;
    let tile = cfg.tile_size;
    let (rows, cols) = optimal_tiles(img.height, img.width, cfg.max_num_tiles, tile);
    let (new_h, new_w) = fit_to_canvas(img.height, img.width, rows * tile, cols * tile, tile);
    let (w, h) = (img.width as usize, img.height as usize);
    let resized = resize_bilinear(&img.data, w, h, new_w as usize, new_h as usize);
    Ok(tile_and_normalise(
        &resized,
        new_w as usize,
        new_h as usize,
        (rows, cols),
        cfg,
        rgb_hash(img),
    ))
}

/// Steps 4 to 7: pad, rescale, normalise, split into tiles. A per-channel
/// table of the 256 possible results gives the same bits as computing each
/// value.
fn tile_and_normalise(
    img: &[u8],
    width: usize,
    height: usize,
    (rows, cols): (usize, usize),
    cfg: &PreprocessConfig,
    hash: [u8; 32],
) -> PreparedImage {
    let tile = cfg.tile_size;
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            // numpy: image.astype(float64) * scale, .astype(float32), then
            // (x - mean) / std in float32.
            let x = (v as f64 * cfg.rescale_factor) as f32;
            *out = (x - cfg.image_mean[c]) / cfg.image_std[c];
        }
    }
    let plane = tile * tile;
    let mut pixels = vec![0f32; cfg.max_num_tiles * 3 * plane];
    for tr in 0..rows {
        for tc in 0..cols {
            let t = tr * cols + tc;
            for c in 0..3 {
                let out = &mut pixels[(t * 3 + c) * plane..][..plane];
                for (y, line) in out.chunks_exact_mut(tile).enumerate() {
                    let sy = tr * tile + y;
                    for (x, o) in line.iter_mut().enumerate() {
                        let sx = tc * tile + x;
                        let v = if sy < height && sx < width {
                            img[(sy * width + sx) * 3 + c]
                        } else {
                            0 // the uint8 padding
                        };
                        *o = lut[c][usize::from(v)];
                    }
                }
            }
        }
    }
    let aspect_ratio_id = supported_aspect_ratios(cfg.max_num_tiles)
        .iter()
        .position(|&rc| rc == (rows, cols))
        .map_or(0, |i| i + 1);
    PreparedImage {
        pixels,
        n_tiles: rows * cols,
        aspect_ratio: (rows, cols),
        aspect_ratio_id,
        tile_size: tile,
        max_num_tiles: cfg.max_num_tiles,
        hash,
    }
}

/// Decodes, preprocesses and hashes (sha256 of `bytes`) one image.
pub fn prepare(
    bytes: &[u8],
    limits: &ImageLimits,
    cfg: &PreprocessConfig,
) -> Result<PreparedImage, ImageError> {
    cfg.validate()?;
    let img = decode(bytes, limits)?;
    let mut out = preprocess(&img, cfg)?;
    out.hash = Sha256::digest(bytes).into();
    Ok(out)
}

/// The intermediate images, for tests that locate a mismatch.
#[doc(hidden)]
pub mod stages {
    use super::*;

    /// `(rows, cols)` of the canvas and the `(height, width)` the image is
    /// resized to.
    pub fn canvas(height: u32, width: u32, cfg: &PreprocessConfig) -> ((usize, usize), (u32, u32)) {
        let (r, c) = optimal_tiles(height, width, cfg.max_num_tiles, cfg.tile_size);
        let fit = fit_to_canvas(
            height,
            width,
            r * cfg.tile_size,
            c * cfg.tile_size,
            cfg.tile_size,
        );
        ((r, c), fit)
    }

    /// `PIL.Image.resize(BILINEAR)` on RGB8 data.
    pub fn resize(img: &RgbImage, out_w: u32, out_h: u32) -> Result<RgbImage, ImageError> {
        img.check()?;
        if out_w == 0 || out_h == 0 {
            return Err(ImageError::ZeroSized {
                width: out_w.into(),
                height: out_h.into(),
            });
        }
        let (w, h) = (img.width as usize, img.height as usize);
        Ok(RgbImage {
            width: out_w,
            height: out_h,
            data: resize_bilinear(&img.data, w, h, out_w as usize, out_h as usize),
        })
    }

    /// Pillow's `alpha_composite` over opaque white, one pixel.
    pub fn over_white(rgb: [u8; 3], alpha: u8) -> [u8; 3] {
        super::over_white(rgb, alpha)
    }
}
