use crate::ModelError;
use edgellama_backend::{Backend, QMatrix};
use edgellama_gguf::{GgufFile, TensorInfo};
use edgellama_kernels as k;

/// A weight matrix in the file, `[n_in, n_out]` in GGUF order, applied as
/// `y = W x`. It keeps the tensor's GGUF name and reads the memory-mapped
/// bytes in place.
#[derive(Debug, Clone)]
pub struct Linear {
    pub info: TensorInfo,
    pub n_in: usize,
    pub n_out: usize,
}

impl Linear {
    /// Looks up `name` and checks it is `[n_in, n_out]` of a type we can multiply.
    pub fn load(
        file: &GgufFile,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Linear, ModelError> {
        Linear::load_with(file, name, n_in, n_out, |dims| {
            dims == [n_in as u64, n_out as u64]
        })
    }

    /// [`Linear::load`] of a tensor stored with more than two dimensions
    /// (a convolution kernel `[kx, ky, c, n_out]`), taken as `n_out` rows of
    /// all its other dimensions.
    pub fn load_flat(
        file: &GgufFile,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Linear, ModelError> {
        Linear::load_with(file, name, n_in, n_out, |dims| match dims.split_last() {
            Some((&last, rest)) => {
                last == n_out as u64 && rest.iter().product::<u64>() == n_in as u64
            }
            None => false,
        })
    }

    /// The tensor `name` as an `[n_in, n_out]` matrix, if `fits` accepts its
    /// stored dimensions and its type has a matrix kernel.
    fn load_with(
        file: &GgufFile,
        name: &str,
        n_in: usize,
        n_out: usize,
        fits: impl Fn(&[u64]) -> bool,
    ) -> Result<Linear, ModelError> {
        let info = file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if !fits(&info.dims) {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                got: info.dims.clone(),
                want: vec![n_in as u64, n_out as u64],
            });
        }
        if !k::supports(info.ggml_type) {
            return Err(ModelError::TensorType {
                name: name.to_string(),
                ty: info.ggml_type,
                what: "has no matrix kernel",
            });
        }
        let mut info = info.clone();
        info.dims = vec![n_in as u64, n_out as u64];
        Ok(Linear { info, n_in, n_out })
    }

    pub fn matrix<'a>(&self, file: &'a GgufFile) -> QMatrix<'a> {
        QMatrix {
            ty: self.info.ggml_type,
            n_in: self.n_in,
            n_out: self.n_out,
            data: file.tensor_data(&self.info),
        }
    }

    /// `y[t] = W x[t]` for each of `n_tokens` rows.
    pub fn forward(
        &self,
        file: &GgufFile,
        backend: &dyn Backend,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        backend.matmul(&self.matrix(file), x, n_tokens, y)?;
        Ok(())
    }

    /// Row `row` as floats (an embedding lookup).
    pub fn row(&self, file: &GgufFile, row: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let size = self.info.n_bytes() as usize / self.n_out;
        let data = file.tensor_data(&self.info);
        k::dequantize_row(
            self.info.ggml_type,
            &data[row * size..(row + 1) * size],
            out,
        )?;
        Ok(())
    }
}

/// Reads a 1-D tensor of `n` elements as floats.
pub fn load_vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if info.dims != [n as u64] {
        return Err(ModelError::TensorShape {
            name: name.to_string(),
            got: info.dims.clone(),
            want: vec![n as u64],
        });
    }
    let mut w = vec![0f32; n];
    k::dequantize_row(info.ggml_type, file.tensor_data(info), &mut w)?;
    Ok(w)
}

/// A matrix with an optional bias: `y = W x + b`.
#[derive(Debug, Clone)]
pub struct Affine {
    pub w: Linear,
    pub b: Option<Vec<f32>>, // [n_out]
}

impl Affine {
    /// Loads `{stem}.weight` and, when the file has it, `{stem}.bias`.
    pub fn load(
        file: &GgufFile,
        stem: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Affine, ModelError> {
        let w = Linear::load(file, &format!("{stem}.weight"), n_in, n_out)?;
        let bias = format!("{stem}.bias");
        let b = match file.tensor(&bias) {
            Some(_) => Some(load_vector(file, &bias, n_out)?),
            None => None,
        };
        Ok(Affine { w, b })
    }

    pub fn forward(
        &self,
        ctx: super::Ctx<'_>,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        self.w.forward(ctx.file, ctx.backend, x, n_tokens, y)?;
        if let Some(b) = &self.b {
            k::ops::add_bias(y, b);
        }
        Ok(())
    }
}
