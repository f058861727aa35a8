//! Images given on the command line (`run --image`, chat's `/image`): read,
//! placed at the prompt's image tokens, prepared and attached to the
//! sequence with a progress line.

use anyhow::{bail, Context, Result};
use edgellama_models::mllama::preprocess::{self, ImageLimits};
use edgellama_models::{CausalLm, ModelInfo, PreprocessConfig, SeqState};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An image file's bytes, read before anything is loaded.
pub struct ImageFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads each file, refusing one past the decoder's byte limit before
/// reading it whole.
pub fn read(paths: &[PathBuf]) -> Result<Vec<ImageFile>> {
    let limit = ImageLimits::default().max_bytes;
    paths
        .iter()
        .map(|p| {
            let len = std::fs::metadata(p)
                .with_context(|| format!("cannot read the image {}", p.display()))?
                .len();
            if len > limit as u64 {
                bail!(
                    "the image {} has {len} bytes, more than the limit of {limit}",
                    p.display()
                );
            }
            let bytes = std::fs::read(p)
                .with_context(|| format!("cannot read the image {}", p.display()))?;
            Ok(ImageFile {
                path: p.clone(),
                bytes,
            })
        })
        .collect()
}

/// The prompt's tokens with one image token per image: where the text has
/// them already (their count must match), else right after the leading BOS
/// (as transformers' processor places images given without tokens).
pub fn place(
    mut tokens: Vec<u32>,
    image_token: u32,
    n_images: usize,
    bos: Option<u32>,
) -> Result<Vec<u32>> {
    let n_tokens = tokens.iter().filter(|&&t| t == image_token).count();
    if n_tokens == 0 && n_images > 0 {
        let at = usize::from(bos.is_some() && tokens.first() == bos.as_ref());
        tokens.splice(at..at, std::iter::repeat_n(image_token, n_images));
    } else if n_tokens != n_images {
        bail!(
            "the prompt has {n_tokens} <|image|> tokens for {n_images} images given with --image"
        );
    }
    Ok(tokens)
}

/// How `info`'s model prepares images, or the error for a model that takes
/// none.
pub fn preprocess_config(info: &ModelInfo) -> Result<&PreprocessConfig> {
    info.preprocess.as_ref().with_context(|| {
        format!(
            "this model ({}) takes no images; images need a vision model such as Llama 3.2 Vision",
            info.architecture
        )
    })
}

/// Prepares each image for `model` and queues it for its token, printing
/// progress to stderr.
pub fn attach(model: &dyn CausalLm, state: &mut SeqState, images: &[ImageFile]) -> Result<()> {
    if images.is_empty() {
        return Ok(());
    }
    let cfg = preprocess_config(model.info())?;
    for (i, im) in images.iter().enumerate() {
        let t0 = Instant::now();
        let prepared = preprocess::prepare(&im.bytes, &ImageLimits::default(), cfg)
            .with_context(|| format!("cannot use the image {}", im.path.display()))?;
        eprint!(
            "encoding image {}/{} ({}, {} tile{})...",
            i + 1,
            images.len(),
            file_name(&im.path),
            prepared.n_tiles,
            if prepared.n_tiles == 1 { "" } else { "s" }
        );
        model
            .attach_image(state, &prepared)
            .with_context(|| format!("cannot encode the image {}", im.path.display()))?;
        eprintln!(" {:.2} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::place;

    const IMG: u32 = 128256;

    #[test]
    fn images_go_after_bos_when_the_text_has_no_tokens() {
        let t = place(vec![1, 5, 6], IMG, 2, Some(1)).unwrap();
        assert_eq!(t, [1, IMG, IMG, 5, 6]);
        let t = place(vec![5, 6], IMG, 1, Some(1)).unwrap();
        assert_eq!(t, [IMG, 5, 6]);
    }

    #[test]
    fn tokens_in_the_text_must_match_the_images() {
        assert_eq!(
            place(vec![1, IMG, 5], IMG, 1, Some(1)).unwrap(),
            [1, IMG, 5]
        );
        assert!(place(vec![1, IMG, 5, IMG], IMG, 1, Some(1)).is_err());
        assert!(place(vec![1, IMG, 5], IMG, 0, Some(1)).is_err());
        assert_eq!(place(vec![1, 5], IMG, 0, Some(1)).unwrap(), [1, 5]);
    }
}
