//! Rows of f32, f16 and bf16 (block size 1), stored little-endian. The dot
//! products are the scalar branches of `ggml_vec_dot_{f32,f16,bf16}` in
//! llama.cpp's `ggml-cpu/vec.cpp`: each product is rounded to f32, then summed
//! in f64 (`ggml_float`).

use zerocopy::little_endian::{F32 as LeF32, U16 as LeU16};

use crate::blocks::{as_blocks, as_blocks_mut, Half};
use crate::convert::{bf16_to_f32, f32_to_bf16};

pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) {
    let out: &mut [LeF32] = as_blocks_mut(dst);
    for (o, &v) in out.iter_mut().zip(src) {
        *o = LeF32::new(v);
    }
}

pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) {
    let xs: &[LeF32] = as_blocks(src);
    for (o, x) in dst.iter_mut().zip(xs) {
        *o = x.get();
    }
}

pub fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[LeF32] = as_blocks(w);
    let ys: &[LeF32] = as_blocks(a);
    let mut sumf = 0.0f64;
    for (x, y) in xs.iter().zip(ys).take(n) {
        sumf += (x.get() * y.get()) as f64;
    }
    sumf as f32
}

pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    let out: &mut [Half] = as_blocks_mut(dst);
    for (o, &v) in out.iter_mut().zip(src) {
        *o = Half::from_f32(v);
    }
}

pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    let xs: &[Half] = as_blocks(src);
    for (o, x) in dst.iter_mut().zip(xs) {
        *o = x.to_f32();
    }
}

pub fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[Half] = as_blocks(w);
    let ys: &[Half] = as_blocks(a);
    let mut sumf = 0.0f64;
    for (x, y) in xs.iter().zip(ys).take(n) {
        sumf += (x.to_f32() * y.to_f32()) as f64;
    }
    sumf as f32
}

pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8]) {
    let out: &mut [LeU16] = as_blocks_mut(dst);
    for (o, &v) in out.iter_mut().zip(src) {
        *o = LeU16::new(f32_to_bf16(v));
    }
}

pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) {
    let xs: &[LeU16] = as_blocks(src);
    for (o, x) in dst.iter_mut().zip(xs) {
        *o = bf16_to_f32(x.get());
    }
}

pub fn vec_dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[LeU16] = as_blocks(w);
    let ys: &[LeU16] = as_blocks(a);
    let mut sumf = 0.0f64;
    for (x, y) in xs.iter().zip(ys).take(n) {
        sumf += (bf16_to_f32(x.get()) * bf16_to_f32(y.get())) as f64;
    }
    sumf as f32
}
