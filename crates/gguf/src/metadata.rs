//! Typed metadata values (`gguf_type` in gguf.h).

use std::fmt;

/// The on-disk type tag of a metadata value. The numbers are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_u32(v: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The name gguf-py uses (`GGUFValueType`).
    pub const fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }

    /// Smallest number of bytes one value of this type occupies on disk. Used to
    /// reject counts that cannot fit in the rest of the file before allocating.
    pub(crate) const fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            // u64 length
            String => 8,
            // u32 element type + u64 count
            Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetadataArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type, widened losslessly.
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetadataValue::U8(v) => v.into(),
            MetadataValue::I8(v) => v.into(),
            MetadataValue::U16(v) => v.into(),
            MetadataValue::I16(v) => v.into(),
            MetadataValue::U32(v) => v.into(),
            MetadataValue::I32(v) => v.into(),
            MetadataValue::U64(v) => v.into(),
            MetadataValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Any integer type whose value fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|v| u32::try_from(v).ok())
    }

    /// Any integer type whose value fits in `i32`.
    pub fn as_i32(&self) -> Option<i32> {
        self.as_int().and_then(|v| i32::try_from(v).ok())
    }

    /// Any integer type whose value fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// Any integer type whose value fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|v| i64::try_from(v).ok())
    }

    /// F32, F64 (rounded) or any integer (rounded): converters write e.g. rope
    /// bases with whichever numeric type they like.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetadataValue::F32(v) => Some(v),
            MetadataValue::F64(v) => Some(v as f32),
            _ => self.as_int().map(|v| v as f32),
        }
    }

    /// F32, F64 or any integer (rounded).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// How many array levels this value holds (0 for a scalar).
    pub(crate) fn nesting_depth(&self) -> u32 {
        match self {
            MetadataValue::Array(a) => a.nesting_depth(),
            _ => 0,
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for MetadataValue {
            fn from(v: $t) -> Self {
                MetadataValue::$variant(v)
            }
        }
    )*};
}

value_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, MetadataArray => Array, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        MetadataValue::String(v.to_owned())
    }
}

impl<T> From<Vec<T>> for MetadataValue
where
    MetadataArray: From<Vec<T>>,
{
    fn from(v: Vec<T>) -> Self {
        MetadataValue::Array(MetadataArray::from(v))
    }
}

/// The elements of an array, stored by element type so that large arrays (token
/// lists, scores) stay compact and an empty array still knows its element type.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayValues {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// Nested arrays; each inner array has its own element type.
    Array(Vec<MetadataArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// A metadata array: an element type and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataArray {
    values: ArrayValues,
}

macro_rules! for_each_array {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            ArrayValues::U8($v) => $body,
            ArrayValues::I8($v) => $body,
            ArrayValues::U16($v) => $body,
            ArrayValues::I16($v) => $body,
            ArrayValues::U32($v) => $body,
            ArrayValues::I32($v) => $body,
            ArrayValues::F32($v) => $body,
            ArrayValues::Bool($v) => $body,
            ArrayValues::String($v) => $body,
            ArrayValues::Array($v) => $body,
            ArrayValues::U64($v) => $body,
            ArrayValues::I64($v) => $body,
            ArrayValues::F64($v) => $body,
        }
    };
}

macro_rules! int_vec {
    ($values:expr, $t:ty) => {{
        fn conv<S: Copy>(v: &[S]) -> Option<Vec<$t>>
        where
            i128: From<S>,
        {
            v.iter()
                .map(|&x| <$t>::try_from(i128::from(x)).ok())
                .collect()
        }
        match $values {
            ArrayValues::U8(v) => conv(v),
            ArrayValues::I8(v) => conv(v),
            ArrayValues::U16(v) => conv(v),
            ArrayValues::I16(v) => conv(v),
            ArrayValues::U32(v) => conv(v),
            ArrayValues::I32(v) => conv(v),
            ArrayValues::U64(v) => conv(v),
            ArrayValues::I64(v) => conv(v),
            _ => None,
        }
    }};
}

impl MetadataArray {
    pub fn new(values: ArrayValues) -> Self {
        MetadataArray { values }
    }

    /// An empty array with the given element type.
    pub fn empty(element_type: ValueType) -> Self {
        MetadataArray::new(match element_type {
            ValueType::U8 => ArrayValues::U8(Vec::new()),
            ValueType::I8 => ArrayValues::I8(Vec::new()),
            ValueType::U16 => ArrayValues::U16(Vec::new()),
            ValueType::I16 => ArrayValues::I16(Vec::new()),
            ValueType::U32 => ArrayValues::U32(Vec::new()),
            ValueType::I32 => ArrayValues::I32(Vec::new()),
            ValueType::F32 => ArrayValues::F32(Vec::new()),
            ValueType::Bool => ArrayValues::Bool(Vec::new()),
            ValueType::String => ArrayValues::String(Vec::new()),
            ValueType::Array => ArrayValues::Array(Vec::new()),
            ValueType::U64 => ArrayValues::U64(Vec::new()),
            ValueType::I64 => ArrayValues::I64(Vec::new()),
            ValueType::F64 => ArrayValues::F64(Vec::new()),
        })
    }

    pub fn values(&self) -> &ArrayValues {
        &self.values
    }

    pub fn into_values(self) -> ArrayValues {
        self.values
    }

    pub fn element_type(&self) -> ValueType {
        match self.values {
            ArrayValues::U8(_) => ValueType::U8,
            ArrayValues::I8(_) => ValueType::I8,
            ArrayValues::U16(_) => ValueType::U16,
            ArrayValues::I16(_) => ValueType::I16,
            ArrayValues::U32(_) => ValueType::U32,
            ArrayValues::I32(_) => ValueType::I32,
            ArrayValues::F32(_) => ValueType::F32,
            ArrayValues::Bool(_) => ValueType::Bool,
            ArrayValues::String(_) => ValueType::String,
            ArrayValues::Array(_) => ValueType::Array,
            ArrayValues::U64(_) => ValueType::U64,
            ArrayValues::I64(_) => ValueType::I64,
            ArrayValues::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        for_each_array!(&self.values, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements of a string array.
    pub fn strings(&self) -> Option<&[String]> {
        match &self.values {
            ArrayValues::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array of arrays.
    pub fn arrays(&self) -> Option<&[MetadataArray]> {
        match &self.values {
            ArrayValues::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an `i32` array without copying (token types are stored so).
    pub fn i32s(&self) -> Option<&[i32]> {
        match &self.values {
            ArrayValues::I32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an `f32` array without copying (token scores are stored so).
    pub fn f32s(&self) -> Option<&[f32]> {
        match &self.values {
            ArrayValues::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Any integer array whose every element fits in `i32`.
    pub fn as_i32_vec(&self) -> Option<Vec<i32>> {
        int_vec!(&self.values, i32)
    }

    /// Any integer array whose every element fits in `u32`.
    pub fn as_u32_vec(&self) -> Option<Vec<u32>> {
        int_vec!(&self.values, u32)
    }

    /// Any integer array whose every element fits in `i64`.
    pub fn as_i64_vec(&self) -> Option<Vec<i64>> {
        int_vec!(&self.values, i64)
    }

    /// Any integer array whose every element fits in `u64`.
    pub fn as_u64_vec(&self) -> Option<Vec<u64>> {
        int_vec!(&self.values, u64)
    }

    /// F32, F64 (rounded) or integer (rounded) elements as `f32`.
    pub fn as_f32_vec(&self) -> Option<Vec<f32>> {
        fn conv<S: Copy>(v: &[S], f: impl Fn(S) -> f32) -> Option<Vec<f32>> {
            Some(v.iter().map(|&x| f(x)).collect())
        }
        match &self.values {
            ArrayValues::F32(v) => Some(v.clone()),
            ArrayValues::F64(v) => conv(v, |x| x as f32),
            ArrayValues::U8(v) => conv(v, f32::from),
            ArrayValues::I8(v) => conv(v, f32::from),
            ArrayValues::U16(v) => conv(v, f32::from),
            ArrayValues::I16(v) => conv(v, f32::from),
            ArrayValues::U32(v) => conv(v, |x| x as f32),
            ArrayValues::I32(v) => conv(v, |x| x as f32),
            ArrayValues::U64(v) => conv(v, |x| x as f32),
            ArrayValues::I64(v) => conv(v, |x| x as f32),
            _ => None,
        }
    }

    pub fn as_bool_vec(&self) -> Option<Vec<bool>> {
        match &self.values {
            ArrayValues::Bool(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Element `i` as a standalone value (copied).
    pub fn get(&self, i: usize) -> Option<MetadataValue> {
        Some(match &self.values {
            ArrayValues::U8(v) => MetadataValue::U8(*v.get(i)?),
            ArrayValues::I8(v) => MetadataValue::I8(*v.get(i)?),
            ArrayValues::U16(v) => MetadataValue::U16(*v.get(i)?),
            ArrayValues::I16(v) => MetadataValue::I16(*v.get(i)?),
            ArrayValues::U32(v) => MetadataValue::U32(*v.get(i)?),
            ArrayValues::I32(v) => MetadataValue::I32(*v.get(i)?),
            ArrayValues::F32(v) => MetadataValue::F32(*v.get(i)?),
            ArrayValues::Bool(v) => MetadataValue::Bool(*v.get(i)?),
            ArrayValues::String(v) => MetadataValue::String(v.get(i)?.clone()),
            ArrayValues::Array(v) => MetadataValue::Array(v.get(i)?.clone()),
            ArrayValues::U64(v) => MetadataValue::U64(*v.get(i)?),
            ArrayValues::I64(v) => MetadataValue::I64(*v.get(i)?),
            ArrayValues::F64(v) => MetadataValue::F64(*v.get(i)?),
        })
    }

    /// Array levels including this one.
    pub(crate) fn nesting_depth(&self) -> u32 {
        match &self.values {
            ArrayValues::Array(v) => 1 + v.iter().map(|a| a.nesting_depth()).max().unwrap_or(0),
            _ => 1,
        }
    }
}

macro_rules! array_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<Vec<$t>> for MetadataArray {
            fn from(v: Vec<$t>) -> Self {
                MetadataArray::new(ArrayValues::$variant(v))
            }
        }
    )*};
}

array_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, MetadataArray => Array, u64 => U64, i64 => I64, f64 => F64);

impl From<Vec<&str>> for MetadataArray {
    fn from(v: Vec<&str>) -> Self {
        MetadataArray::new(ArrayValues::String(
            v.into_iter().map(str::to_owned).collect(),
        ))
    }
}

impl From<ArrayValues> for MetadataArray {
    fn from(values: ArrayValues) -> Self {
        MetadataArray::new(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_accessors_accept_any_integer_that_fits() {
        assert_eq!(MetadataValue::U8(7).as_u32(), Some(7));
        assert_eq!(MetadataValue::I64(7).as_u32(), Some(7));
        assert_eq!(MetadataValue::I32(-1).as_u32(), None);
        assert_eq!(MetadataValue::U64(1 << 32).as_u32(), None);
        assert_eq!(MetadataValue::U64(1 << 32).as_u64(), Some(1 << 32));
        assert_eq!(MetadataValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetadataValue::I8(-5).as_i64(), Some(-5));
        assert_eq!(MetadataValue::F32(1.0).as_u32(), None);
        assert_eq!(MetadataValue::Bool(true).as_u32(), None);
        assert_eq!(MetadataValue::String("1".into()).as_u32(), None);
    }

    #[test]
    fn float_accessor_accepts_floats_and_integers() {
        assert_eq!(MetadataValue::F32(0.5).as_f32(), Some(0.5));
        assert_eq!(MetadataValue::F64(500000.0).as_f32(), Some(500000.0));
        assert_eq!(MetadataValue::U32(10000).as_f32(), Some(10000.0));
        assert_eq!(MetadataValue::I16(-3).as_f32(), Some(-3.0));
        assert_eq!(MetadataValue::Bool(false).as_f32(), None);
        assert_eq!(MetadataValue::String("x".into()).as_f32(), None);
    }

    #[test]
    fn other_accessors_check_the_type() {
        assert_eq!(MetadataValue::Bool(true).as_bool(), Some(true));
        assert_eq!(MetadataValue::U8(1).as_bool(), None);
        assert_eq!(MetadataValue::from("llama").as_str(), Some("llama"));
        assert_eq!(MetadataValue::U8(1).as_str(), None);
        assert!(MetadataValue::U8(1).as_array().is_none());
        let v = MetadataValue::from(vec![1i32, 2]);
        assert_eq!(v.as_array().map(|a| a.len()), Some(2));
    }

    #[test]
    fn array_conversions() {
        let a = MetadataArray::from(vec![1u8, 2, 255]);
        assert_eq!(a.as_i32_vec(), Some(vec![1, 2, 255]));
        assert_eq!(a.as_f32_vec(), Some(vec![1.0, 2.0, 255.0]));
        let neg = MetadataArray::from(vec![-1i64, 0]);
        assert_eq!(neg.as_u32_vec(), None);
        assert_eq!(neg.as_i32_vec(), Some(vec![-1, 0]));
        let big = MetadataArray::from(vec![u64::MAX]);
        assert_eq!(big.as_i64_vec(), None);
        assert_eq!(big.as_u64_vec(), Some(vec![u64::MAX]));
        let s = MetadataArray::from(vec!["a", "b"]);
        assert_eq!(s.strings(), Some(&["a".to_owned(), "b".to_owned()][..]));
        assert_eq!(s.as_i32_vec(), None);
        assert_eq!(s.as_f32_vec(), None);
        assert_eq!(s.get(1), Some(MetadataValue::String("b".into())));
        assert_eq!(s.get(2), None);
        let f = MetadataArray::from(vec![0.25f64]);
        assert_eq!(f.as_f32_vec(), Some(vec![0.25]));
    }

    #[test]
    fn empty_array_keeps_its_element_type() {
        for t in (0..=12).filter_map(ValueType::from_u32) {
            let a = MetadataArray::empty(t);
            assert_eq!(a.element_type(), t);
            assert!(a.is_empty());
        }
    }

    #[test]
    fn nesting_depth_counts_levels() {
        let inner = MetadataArray::from(vec![1u8]);
        let mid = MetadataArray::from(vec![inner.clone(), MetadataArray::empty(ValueType::Array)]);
        let outer = MetadataArray::from(vec![mid]);
        assert_eq!(inner.nesting_depth(), 1);
        assert_eq!(outer.nesting_depth(), 3);
        assert_eq!(MetadataValue::U8(0).nesting_depth(), 0);
    }
}
