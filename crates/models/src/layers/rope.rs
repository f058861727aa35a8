use crate::layers::linear::load_vector;
use crate::ModelError;
use edgellama_gguf::GgufFile;
use edgellama_kernels::ops::{llama3_rope_freq_factors, RopeParams};

/// Reads rotary-embedding settings for architecture `arch`: base frequency,
/// linear scaling, and Llama 3's per-frequency factors, taken from the
/// `rope_freqs.weight` tensor when present, else computed from
/// `{arch}.rope.scaling.*` metadata of type `llama3`.
pub fn rope_params(file: &GgufFile, arch: &str, n_dims: usize) -> Result<RopeParams, ModelError> {
    let key = |k: &str| format!("{arch}.{k}");
    let freq_base = file.get_f32_or(&key("rope.freq_base"), 10000.0)?;
    let scaling_type = match file.get(&key("rope.scaling.type")) {
        Some(_) => file.get_str(&key("rope.scaling.type"))?,
        None => "none",
    };
    let factor = match file.get(&key("rope.scaling.factor")) {
        Some(_) => Some(file.get_f32(&key("rope.scaling.factor"))?),
        None => None,
    };
    let mut freq_scale = 1.0;
    if scaling_type == "linear" {
        if let Some(f) = factor.filter(|f| *f > 0.0) {
            freq_scale = 1.0 / f;
        }
    } else if !matches!(scaling_type, "none" | "llama3") {
        return Err(ModelError::Config(format!(
            "rope scaling type '{scaling_type}' is not supported"
        )));
    }
    let freq_factors = if file.tensor("rope_freqs.weight").is_some() {
        Some(load_vector(file, "rope_freqs.weight", n_dims / 2)?)
    } else if scaling_type == "llama3" {
        let get = |k: &str| -> Result<f32, ModelError> {
            match file.get(&key(k)) {
                Some(_) => Ok(file.get_f32(&key(k))?),
                None => Err(ModelError::Config(format!(
                    "llama3 rope scaling needs {}",
                    key(k)
                ))),
            }
        };
        Some(llama3_rope_freq_factors(
            n_dims,
            freq_base,
            get("rope.scaling.factor")?,
            get("rope.scaling.low_freq_factor")?,
            get("rope.scaling.high_freq_factor")?,
            get("rope.scaling.original_context_length")?,
        ))
    } else {
        None
    };
    let valid = freq_base.is_finite() && freq_base > 0.0 && n_dims > 0 && n_dims.is_multiple_of(2);
    if !valid {
        return Err(ModelError::Config(format!(
            "rope: base {freq_base}, {n_dims} rotating dims"
        )));
    }
    Ok(RopeParams {
        n_dims,
        freq_base,
        freq_scale,
        freq_factors,
    })
}

/// A warning for a file whose metadata asks for llama3 rotary scaling but
/// which lacks the `rope_freqs.weight` tensor: the factors are then computed
/// from the metadata here, while llama.cpp applies none and its output
/// drifts from ours (and from the model's training) past the original
/// context. `None` for every other file.
pub fn missing_freqs_warning(file: &GgufFile) -> Option<String> {
    let arch = file.architecture().ok()?;
    let ty = file.get_str(&format!("{arch}.rope.scaling.type")).ok()?;
    (ty == "llama3" && file.tensor("rope_freqs.weight").is_none()).then(|| {
        "the file asks for llama3 RoPE scaling but has no rope_freqs.weight tensor: the \
         frequency factors are computed from its rope.scaling metadata (llama.cpp would apply \
         none; re-convert the model to include them)"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellama_gguf::{GgmlType, GgufWriter};

    fn file(scaling: Option<&str>, freqs: bool) -> GgufFile {
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama".to_string()).unwrap();
        if let Some(t) = scaling {
            w.set("llama.rope.scaling.type", t.to_string()).unwrap();
        }
        if freqs {
            w.add_tensor("rope_freqs.weight", vec![4], GgmlType::F32, vec![0u8; 16])
                .unwrap();
        }
        GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    #[test]
    fn only_llama3_scaling_without_its_factors_is_warned_about() {
        let w = missing_freqs_warning(&file(Some("llama3"), false)).expect("a warning");
        assert!(w.contains("rope_freqs.weight"), "{w}");
        assert_eq!(missing_freqs_warning(&file(Some("llama3"), true)), None);
        assert_eq!(missing_freqs_warning(&file(Some("linear"), false)), None);
        assert_eq!(missing_freqs_warning(&file(None, false)), None);
    }
}
