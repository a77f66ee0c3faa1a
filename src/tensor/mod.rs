//! Dense tensors as the kernels see them: an element type, a shape and a
//! contiguous row-major buffer.
//!
//! This module owns the one in-memory tensor type of the server. The
//! conversions to and from wire formats live in submodules (`proto` for
//! `tensorflow.TensorProto`); nothing here knows about gRPC or JSON.

pub mod proto;

use std::fmt;

/// The element types ferroserve stores and computes on.
///
/// The names follow TensorFlow's `DT_*` enum because that is what clients see
/// in signatures and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Float,
    Double,
    Int32,
    Int64,
    UInt8,
    Int8,
    Bool,
    /// Byte strings (TensorFlow's DT_STRING, ONNX's STRING): carried
    /// through the shape operators, never computed on.
    String,
}

impl DataType {
    /// Size of one element in bytes, as stored in `tensor_content`; for
    /// strings, the fixed part of one element in memory (its bytes come on
    /// top).
    pub fn size_of(self) -> usize {
        match self {
            DataType::Float | DataType::Int32 => 4,
            DataType::Double | DataType::Int64 => 8,
            DataType::UInt8 | DataType::Int8 | DataType::Bool => 1,
            DataType::String => std::mem::size_of::<Vec<u8>>(),
        }
    }

    /// TensorFlow's lower-case type name (`float`, `int32`, ...), the form
    /// TensorFlow uses in its own error messages.
    pub fn tf_name(self) -> &'static str {
        match self {
            DataType::Float => "float",
            DataType::Double => "double",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::UInt8 => "uint8",
            DataType::Int8 => "int8",
            DataType::Bool => "bool",
            DataType::String => "string",
        }
    }

    /// The `DT_*` enum name, as GetModelMetadata shows it.
    pub fn dt_name(self) -> &'static str {
        match self {
            DataType::Float => "DT_FLOAT",
            DataType::Double => "DT_DOUBLE",
            DataType::Int32 => "DT_INT32",
            DataType::Int64 => "DT_INT64",
            DataType::UInt8 => "DT_UINT8",
            DataType::Int8 => "DT_INT8",
            DataType::Bool => "DT_BOOL",
            DataType::String => "DT_STRING",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dt_name())
    }
}

/// The element buffer of a tensor, one variant per [`DataType`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Float(Vec<f32>),
    Double(Vec<f64>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    UInt8(Vec<u8>),
    Int8(Vec<i8>),
    Bool(Vec<bool>),
    String(Vec<Vec<u8>>),
}

impl TensorData {
    /// The element type of this buffer.
    pub fn dtype(&self) -> DataType {
        match self {
            TensorData::Float(_) => DataType::Float,
            TensorData::Double(_) => DataType::Double,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::UInt8(_) => DataType::UInt8,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Bool(_) => DataType::Bool,
            TensorData::String(_) => DataType::String,
        }
    }

    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Double(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::UInt8(v) => v.len(),
            TensorData::Int8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements decoded from packed little-endian bytes, the layout of
    /// TensorFlow's `tensor_content` and ONNX's `raw_data`. Callers check
    /// that `raw` holds a whole number of elements; a trailing partial
    /// element is ignored. Strings are not packed this way (see
    /// [`proto::decode_string_content`]): they give an empty buffer.
    pub fn from_le_bytes(dtype: DataType, raw: &[u8]) -> TensorData {
        fn le<T, const W: usize>(raw: &[u8], convert: fn([u8; W]) -> T) -> Vec<T> {
            raw.chunks_exact(W)
                .map(|c| {
                    let mut a = [0u8; W];
                    a.copy_from_slice(c);
                    convert(a)
                })
                .collect()
        }
        match dtype {
            DataType::Float => TensorData::Float(le(raw, f32::from_le_bytes)),
            DataType::Double => TensorData::Double(le(raw, f64::from_le_bytes)),
            DataType::Int32 => TensorData::Int32(le(raw, i32::from_le_bytes)),
            DataType::Int64 => TensorData::Int64(le(raw, i64::from_le_bytes)),
            DataType::UInt8 => TensorData::UInt8(raw.to_vec()),
            DataType::Int8 => TensorData::Int8(raw.iter().map(|&b| b as i8).collect()),
            DataType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
            DataType::String => TensorData::String(Vec::new()),
        }
    }

    /// The elements at `indices`, in that order (data movement: slicing,
    /// gathering, tiling, padding). Callers pass indices below `len()`.
    pub fn select(&self, indices: &[usize]) -> TensorData {
        fn pick<T: Clone>(v: &[T], indices: &[usize]) -> Vec<T> {
            indices.iter().map(|&i| v[i].clone()).collect()
        }
        match self {
            TensorData::Float(v) => TensorData::Float(pick(v, indices)),
            TensorData::Double(v) => TensorData::Double(pick(v, indices)),
            TensorData::Int32(v) => TensorData::Int32(pick(v, indices)),
            TensorData::Int64(v) => TensorData::Int64(pick(v, indices)),
            TensorData::UInt8(v) => TensorData::UInt8(pick(v, indices)),
            TensorData::Int8(v) => TensorData::Int8(pick(v, indices)),
            TensorData::Bool(v) => TensorData::Bool(pick(v, indices)),
            TensorData::String(v) => TensorData::String(pick(v, indices)),
        }
    }

    /// Appends `other[range]`; `false` (and nothing appended) when the
    /// element types differ.
    pub fn extend_from(&mut self, other: &TensorData, range: std::ops::Range<usize>) -> bool {
        match (self, other) {
            (TensorData::Float(a), TensorData::Float(b)) => a.extend_from_slice(&b[range]),
            (TensorData::Double(a), TensorData::Double(b)) => a.extend_from_slice(&b[range]),
            (TensorData::Int32(a), TensorData::Int32(b)) => a.extend_from_slice(&b[range]),
            (TensorData::Int64(a), TensorData::Int64(b)) => a.extend_from_slice(&b[range]),
            (TensorData::UInt8(a), TensorData::UInt8(b)) => a.extend_from_slice(&b[range]),
            (TensorData::Int8(a), TensorData::Int8(b)) => a.extend_from_slice(&b[range]),
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(&b[range]),
            (TensorData::String(a), TensorData::String(b)) => a.extend_from_slice(&b[range]),
            _ => return false,
        }
        true
    }

    /// A buffer of `len` zeros (false for bool) of the given type.
    pub fn zeros(dtype: DataType, len: usize) -> TensorData {
        match dtype {
            DataType::Float => TensorData::Float(vec![0.0; len]),
            DataType::Double => TensorData::Double(vec![0.0; len]),
            DataType::Int32 => TensorData::Int32(vec![0; len]),
            DataType::Int64 => TensorData::Int64(vec![0; len]),
            DataType::UInt8 => TensorData::UInt8(vec![0; len]),
            DataType::Int8 => TensorData::Int8(vec![0; len]),
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::String => TensorData::String(vec![Vec::new(); len]),
        }
    }
}

/// Errors made while building or reshaping a tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    ElementCount { shape: Vec<usize>, expected: usize, actual: usize },
    #[error("shape {0:?} has more elements than can be addressed")]
    Overflow(Vec<usize>),
}

/// A dense, row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// The row-major strides of `shape`, in elements (the last dim's is 1).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The number of elements of `shape`, or `None` when it overflows `usize`.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// A tensor from a shape and a buffer holding exactly that many elements.
    ///
    /// # Errors
    /// When the buffer length is not the product of the dims, or that product
    /// overflows.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape).ok_or_else(|| TensorError::Overflow(shape.clone()))?;
        if expected != data.len() {
            return Err(TensorError::ElementCount { shape, expected, actual: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    /// A float tensor; shorthand used by kernels and tests.
    ///
    /// # Errors
    /// As [`Tensor::new`].
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, TensorData::Float(data))
    }

    /// An int64 tensor; shorthand used by kernels and tests.
    ///
    /// # Errors
    /// As [`Tensor::new`].
    pub fn from_i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, TensorData::Int64(data))
    }

    /// The dims, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DataType {
        self.data.dtype()
    }

    /// The element buffer.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a tensor with a zero dim.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The buffer, giving up the shape.
    pub fn into_data(self) -> TensorData {
        self.data
    }

    /// The float elements, or `None` for another element type.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The string elements, or `None` for another element type.
    pub fn as_strings(&self) -> Option<&[Vec<u8>]> {
        match &self.data {
            TensorData::String(v) => Some(v),
            _ => None,
        }
    }

    /// The int64 elements, or `None` for another element type.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int64(v) => Some(v),
            _ => None,
        }
    }

    /// The same elements under another shape with the same element count.
    ///
    /// # Errors
    /// When the counts differ.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.data)
    }
}

/// Formats a shape as TensorFlow does in messages: `[1,28,28,1]`, with -1 for
/// unknown dims.
pub fn format_dims<T: fmt::Display>(dims: &[T]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_element_count() {
        assert!(Tensor::from_f32(vec![2, 3], vec![0.0; 6]).is_ok());
        assert_eq!(
            Tensor::from_f32(vec![2, 3], vec![0.0; 5]),
            Err(TensorError::ElementCount { shape: vec![2, 3], expected: 6, actual: 5 })
        );
        assert_eq!(Tensor::from_f32(vec![usize::MAX, 2], vec![]), Err(TensorError::Overflow(vec![usize::MAX, 2])));
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let s = Tensor::from_f32(vec![], vec![4.0]).unwrap();
        assert_eq!(s.len(), 1);
        let e = Tensor::from_f32(vec![0, 5], vec![]).unwrap();
        assert!(e.is_empty());
    }

    #[test]
    fn dims_are_formatted_like_tensorflow() {
        assert_eq!(format_dims(&[-1i64, 28, 28, 1]), "[-1,28,28,1]");
        assert_eq!(format_dims::<i64>(&[]), "[]");
    }
}
