//! `tensorflow.TensorProto` to [`Tensor`] and back, with TensorFlow's rules.
//!
//! Decoding is split in two so that a request can be checked against its
//! signature before any element buffer is allocated: [`header`] reads only
//! the dtype and the shape; [`decode`] then fills the buffer, from
//! `tensor_content` when it is non-empty, else from the typed `*_val` field
//! with TensorFlow's fill rules (extra values ignored, the last value
//! repeated when there are too few, zeros when there are none).

use super::{DataType, Tensor, TensorData, element_count, format_dims};
use crate::proto::tensorflow::{DataType as WireType, TensorProto, TensorShapeProto, tensor_shape_proto};

/// Why a TensorProto could not become a tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    #[error(
        "dtype {0} is not supported; supported: DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_UINT8, DT_INT8, DT_BOOL, DT_STRING"
    )]
    UnsupportedDtype(String),
    #[error("tensor_shape has unknown_rank set; a request tensor needs a full shape")]
    UnknownRank,
    #[error("tensor_shape dim {index} is {size}; request tensors need sizes of 0 or more")]
    NegativeDim { index: usize, size: i64 },
    #[error("tensor_shape {0} has more elements than can be addressed")]
    Overflow(String),
    #[error("tensor_shape {shape} of {dtype} needs {bytes} bytes, more than the {limit}-byte limit for one tensor")]
    TooLarge { shape: String, dtype: DataType, bytes: u128, limit: usize },
    #[error("tensor_content holds {actual} bytes but {dtype} {shape} needs {expected}")]
    ContentSize { dtype: DataType, shape: String, expected: usize, actual: usize },
    #[error("tensor_content of DT_STRING {shape} is not {count} varint lengths followed by that many bytes")]
    StringContent { shape: String, count: usize },
}

/// The largest tensor a request may describe, in bytes: TensorFlow
/// Serving's message limit (2 GiB), which also bounds what the fill rules
/// may expand a short typed field to.
pub const MAX_TENSOR_BYTES: usize = i32::MAX as usize;

/// The dtype and shape a TensorProto declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub dtype: DataType,
    pub shape: Vec<usize>,
}

/// Maps a wire `DataType` number to ours.
///
/// # Errors
/// For a type ferroserve does not compute with.
pub fn dtype_from_wire(value: i32) -> Result<DataType, ProtoError> {
    match WireType::try_from(value) {
        Ok(WireType::DtFloat) => Ok(DataType::Float),
        Ok(WireType::DtDouble) => Ok(DataType::Double),
        Ok(WireType::DtInt32) => Ok(DataType::Int32),
        Ok(WireType::DtInt64) => Ok(DataType::Int64),
        Ok(WireType::DtUint8) => Ok(DataType::UInt8),
        Ok(WireType::DtInt8) => Ok(DataType::Int8),
        Ok(WireType::DtBool) => Ok(DataType::Bool),
        Ok(WireType::DtString) => Ok(DataType::String),
        Ok(other) => Err(ProtoError::UnsupportedDtype(other.as_str_name().to_string())),
        Err(_) => Err(ProtoError::UnsupportedDtype(format!("number {value}"))),
    }
}

/// Maps our dtype to the wire enum.
pub fn dtype_to_wire(dtype: DataType) -> WireType {
    match dtype {
        DataType::Float => WireType::DtFloat,
        DataType::Double => WireType::DtDouble,
        DataType::Int32 => WireType::DtInt32,
        DataType::Int64 => WireType::DtInt64,
        DataType::UInt8 => WireType::DtUint8,
        DataType::Int8 => WireType::DtInt8,
        DataType::Bool => WireType::DtBool,
        DataType::String => WireType::DtString,
    }
}

/// The `DT_*` name of a wire dtype number, for messages about types we do
/// not support.
pub fn wire_dtype_name(value: i32) -> String {
    WireType::try_from(value).map_or_else(|_| format!("DataType({value})"), |t| t.as_str_name().to_string())
}

/// Reads the dtype and shape of `p` without touching its elements.
///
/// # Errors
/// For an unsupported dtype, an unknown rank, a negative dim, or a shape
/// whose byte size exceeds [`MAX_TENSOR_BYTES`].
pub fn header(p: &TensorProto) -> Result<Header, ProtoError> {
    let dtype = dtype_from_wire(p.dtype)?;
    let mut shape = Vec::new();
    if let Some(s) = &p.tensor_shape {
        if s.unknown_rank {
            return Err(ProtoError::UnknownRank);
        }
        for (index, d) in s.dim.iter().enumerate() {
            let size = usize::try_from(d.size).map_err(|_| ProtoError::NegativeDim { index, size: d.size })?;
            shape.push(size);
        }
    }
    let count = element_count(&shape).ok_or_else(|| ProtoError::Overflow(format_dims(&shape)))?;
    let bytes = count as u128 * dtype.size_of() as u128;
    if bytes > MAX_TENSOR_BYTES as u128 {
        return Err(ProtoError::TooLarge { shape: format_dims(&shape), dtype, bytes, limit: MAX_TENSOR_BYTES });
    }
    Ok(Header { dtype, shape })
}

/// Fills `n` values from a typed field with TensorFlow's rules.
fn fill<S: Copy, T: Default + Clone>(values: &[S], n: usize, convert: impl Fn(S) -> T) -> Vec<T> {
    if values.is_empty() {
        return vec![T::default(); n];
    }
    let mut out: Vec<T> = values.iter().take(n).map(|&v| convert(v)).collect();
    if out.len() < n {
        let last = out[out.len() - 1].clone();
        out.resize(n, last);
    }
    out
}

/// [`fill`] for strings, which are not `Copy`.
fn fill_strings(values: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = values.iter().take(n).cloned().collect();
    let last = out.last().cloned().unwrap_or_default();
    out.resize(n, last);
    out
}

/// Decodes TensorFlow's `tensor_content` of a DT_STRING tensor: `n` varint
/// lengths, then the `n` strings' bytes back to back. `None` when `raw` is
/// not exactly that.
pub fn decode_string_content(raw: &[u8], n: usize) -> Option<Vec<Vec<u8>>> {
    let mut at = 0;
    let mut lengths = Vec::with_capacity(n.min(raw.len()));
    for _ in 0..n {
        let mut len = 0u64;
        let mut shift = 0;
        loop {
            let byte = *raw.get(at)?;
            at += 1;
            len |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        lengths.push(usize::try_from(len).ok()?);
    }
    let mut out = Vec::with_capacity(n);
    for len in lengths {
        let end = at.checked_add(len)?;
        out.push(raw.get(at..end)?.to_vec());
        at = end;
    }
    (at == raw.len()).then_some(out)
}

/// Encodes strings as TensorFlow's DT_STRING `tensor_content`.
pub fn encode_string_content(strings: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(strings.iter().map(|s| s.len() + 2).sum());
    for s in strings {
        let mut len = s.len() as u64;
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
    }
    for s in strings {
        out.extend_from_slice(s);
    }
    out
}

/// Decodes the elements of `p`, whose [`header`] has already been read
/// (and checked against a signature).
///
/// # Errors
/// When `tensor_content` is non-empty and its size is not exactly the shape's.
pub fn decode(p: &TensorProto, header: Header) -> Result<Tensor, ProtoError> {
    let Header { dtype, shape } = header;
    // header() has checked the product.
    let n = element_count(&shape).unwrap_or(0);
    let data = if dtype == DataType::String && n > 0 && !p.tensor_content.is_empty() {
        let strings = decode_string_content(&p.tensor_content, n)
            .ok_or_else(|| ProtoError::StringContent { shape: format_dims(&shape), count: n })?;
        TensorData::String(strings)
    } else if n > 0 && !p.tensor_content.is_empty() {
        let expected = n * dtype.size_of();
        if p.tensor_content.len() != expected {
            return Err(ProtoError::ContentSize {
                dtype,
                shape: format_dims(&shape),
                expected,
                actual: p.tensor_content.len(),
            });
        }
        TensorData::from_le_bytes(dtype, &p.tensor_content)
    } else {
        match dtype {
            DataType::Float => TensorData::Float(fill(&p.float_val, n, |v| v)),
            DataType::Double => TensorData::Double(fill(&p.double_val, n, |v| v)),
            DataType::Int32 => TensorData::Int32(fill(&p.int_val, n, |v| v)),
            DataType::Int64 => TensorData::Int64(fill(&p.int64_val, n, |v| v)),
            // Narrow types travel widened in int_val; TensorFlow truncates.
            DataType::UInt8 => TensorData::UInt8(fill(&p.int_val, n, |v| v as u8)),
            DataType::Int8 => TensorData::Int8(fill(&p.int_val, n, |v| v as i8)),
            DataType::Bool => TensorData::Bool(fill(&p.bool_val, n, |v| v)),
            DataType::String => {
                // Repeating the last string may multiply its size: bound it.
                let repeats = n.saturating_sub(p.string_val.len()) as u128;
                let bytes = repeats * p.string_val.last().map_or(0, Vec::len) as u128;
                if bytes > MAX_TENSOR_BYTES as u128 {
                    return Err(ProtoError::TooLarge {
                        shape: format_dims(&shape),
                        dtype,
                        bytes,
                        limit: MAX_TENSOR_BYTES,
                    });
                }
                TensorData::String(fill_strings(&p.string_val, n))
            }
        }
    };
    Ok(Tensor::new(shape, data).expect("decoded buffers hold exactly the shape's element count"))
}

/// Header and elements in one step, for callers with no signature to check.
///
/// # Errors
/// As [`header`] and [`decode`].
pub fn from_proto(p: &TensorProto) -> Result<Tensor, ProtoError> {
    decode(p, header(p)?)
}

/// A TensorShapeProto for a shape: dims with sizes only, as TensorFlow
/// writes them.
pub fn shape_proto(dims: impl IntoIterator<Item = i64>) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims.into_iter().map(|size| tensor_shape_proto::Dim { size, name: String::new() }).collect(),
        unknown_rank: false,
    }
}

/// Encodes `t` as TensorFlow Serving answers: dtype, shape, and every value
/// in the typed field of its dtype.
pub fn to_proto(t: Tensor) -> TensorProto {
    let mut p = TensorProto {
        dtype: dtype_to_wire(t.dtype()) as i32,
        tensor_shape: Some(shape_proto(t.shape().iter().map(|&d| d as i64))),
        ..TensorProto::default()
    };
    match t.into_data() {
        TensorData::Float(v) => p.float_val = v,
        TensorData::Double(v) => p.double_val = v,
        TensorData::Int32(v) => p.int_val = v,
        TensorData::Int64(v) => p.int64_val = v,
        TensorData::UInt8(v) => p.int_val = v.into_iter().map(i32::from).collect(),
        TensorData::Int8(v) => p.int_val = v.into_iter().map(i32::from).collect(),
        TensorData::Bool(v) => p.bool_val = v,
        TensorData::String(v) => p.string_val = v,
    }
    p
}

/// Encodes `t` with its elements packed little-endian in `tensor_content`
/// (`--enable_serialization_as_tensor_content`): one buffer instead of a
/// repeated field, cheaper to write and to read for large outputs.
pub fn to_proto_content(t: Tensor) -> TensorProto {
    let mut p = TensorProto {
        dtype: dtype_to_wire(t.dtype()) as i32,
        tensor_shape: Some(shape_proto(t.shape().iter().map(|&d| d as i64))),
        ..TensorProto::default()
    };
    fn le<T: Copy, const W: usize>(v: &[T], bytes: fn(T) -> [u8; W]) -> Vec<u8> {
        v.iter().flat_map(|&x| bytes(x)).collect()
    }
    p.tensor_content = bytes::Bytes::from(match t.into_data() {
        TensorData::Float(v) => le(&v, f32::to_le_bytes),
        TensorData::Double(v) => le(&v, f64::to_le_bytes),
        TensorData::Int32(v) => le(&v, i32::to_le_bytes),
        TensorData::Int64(v) => le(&v, i64::to_le_bytes),
        TensorData::UInt8(v) => v,
        TensorData::Int8(v) => v.into_iter().map(|b| b as u8).collect(),
        TensorData::Bool(v) => v.into_iter().map(u8::from).collect(),
        TensorData::String(v) => encode_string_content(&v),
    });
    p
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn proto(dtype: WireType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(shape_proto(dims.iter().copied())),
            ..TensorProto::default()
        }
    }

    #[test]
    fn typed_fields_follow_tensorflows_fill_rules() {
        let mut p = proto(WireType::DtFloat, &[2, 2]);
        p.float_val = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(from_proto(&p).unwrap().as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        p.float_val = vec![1.0, 2.0];
        assert_eq!(from_proto(&p).unwrap().as_f32().unwrap(), &[1.0, 2.0, 2.0, 2.0]);
        p.float_val = vec![];
        assert_eq!(from_proto(&p).unwrap().as_f32().unwrap(), &[0.0; 4]);
        let mut p = proto(WireType::DtUint8, &[3]);
        p.int_val = vec![255, 7];
        assert_eq!(from_proto(&p).unwrap().data(), &TensorData::UInt8(vec![255, 7, 7]));
        let p = proto(WireType::DtInt64, &[0, 3]);
        assert!(from_proto(&p).unwrap().is_empty());
    }

    #[test]
    fn tensor_content_wins_and_must_have_the_exact_size() {
        let mut p = proto(WireType::DtFloat, &[2]);
        p.float_val = vec![9.0, 9.0];
        p.tensor_content = Bytes::from([1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        assert_eq!(from_proto(&p).unwrap().as_f32().unwrap(), &[1.5, -2.0]);
        p.tensor_content = Bytes::from(vec![0u8; 7]);
        assert_eq!(from_proto(&p).unwrap_err().to_string(), "tensor_content holds 7 bytes but DT_FLOAT [2] needs 8");
        let mut p = proto(WireType::DtInt64, &[2]);
        p.tensor_content = Bytes::from([3i64.to_le_bytes(), (-4i64).to_le_bytes()].concat());
        assert_eq!(from_proto(&p).unwrap().as_i64().unwrap(), &[3, -4]);
    }

    #[test]
    fn bad_headers_are_refused_before_allocating() {
        let p = proto(WireType::DtFloat, &[-1, 3]);
        assert_eq!(header(&p), Err(ProtoError::NegativeDim { index: 0, size: -1 }));
        let p = proto(WireType::DtFloat, &[1 << 40, 1 << 40]);
        assert!(matches!(header(&p), Err(ProtoError::Overflow(_)) | Err(ProtoError::TooLarge { .. })));
        // One value and a huge shape: the fill rule would expand it; the
        // byte limit refuses it first.
        let mut p = proto(WireType::DtFloat, &[1 << 30]);
        p.float_val = vec![1.0];
        assert!(matches!(header(&p), Err(ProtoError::TooLarge { .. })));
        let p = proto(WireType::DtHalf, &[1]);
        assert_eq!(header(&p), Err(ProtoError::UnsupportedDtype("DT_HALF".into())));
        let p = TensorProto { dtype: 999, ..TensorProto::default() };
        assert!(header(&p).is_err());
        let mut p = proto(WireType::DtFloat, &[]);
        p.tensor_shape.as_mut().unwrap().unknown_rank = true;
        assert_eq!(header(&p), Err(ProtoError::UnknownRank));
    }

    /// Two elements of each supported dtype, extremes included.
    fn every_dtype() -> Vec<TensorData> {
        vec![
            TensorData::Float(vec![1.0, -2.5]),
            TensorData::Double(vec![1.0, 1e300]),
            TensorData::Int32(vec![i32::MIN, 5]),
            TensorData::Int64(vec![i64::MAX, -1]),
            TensorData::UInt8(vec![0, 255]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Bool(vec![true, false]),
            TensorData::String(vec![Vec::new(), b"caf\xc3\xa9 \xff".to_vec()]),
        ]
    }

    #[test]
    fn strings_fill_and_travel_in_tensor_content_as_tensorflow_packs_them() {
        let mut p = proto(WireType::DtString, &[3]);
        p.string_val = vec![b"a".to_vec(), b"bc".to_vec()];
        let t = from_proto(&p).unwrap();
        assert_eq!(t.as_strings().unwrap(), [b"a".to_vec(), b"bc".to_vec(), b"bc".to_vec()]);
        // Lengths as varints first, then the bytes; a 200-byte string needs
        // a two-byte length.
        let long = vec![b'x'; 200];
        let packed = encode_string_content(&[b"hi".to_vec(), long.clone()]);
        assert_eq!(&packed[..3], &[2, 0xc8, 0x01]);
        assert_eq!(decode_string_content(&packed, 2).unwrap(), [b"hi".to_vec(), long]);
        assert_eq!(decode_string_content(&packed, 3), None, "too few bytes");
        assert_eq!(decode_string_content(&[1, b'a', b'b'], 1), None, "trailing bytes");
        assert_eq!(decode_string_content(&[0xff; 12], 1), None, "an endless varint");
        let mut p = proto(WireType::DtString, &[2]);
        p.tensor_content = Bytes::from_static(&[5, b'a']);
        assert_eq!(
            from_proto(&p).unwrap_err().to_string(),
            "tensor_content of DT_STRING [2] is not 2 varint lengths followed by that many bytes"
        );
        // One long string repeated by the fill rule past the limit.
        let mut p = proto(WireType::DtString, &[1 << 20]);
        p.string_val = vec![vec![0; 4096]];
        assert!(matches!(from_proto(&p), Err(ProtoError::TooLarge { .. })));
    }

    #[test]
    fn encode_round_trips_every_dtype() {
        for data in every_dtype() {
            let t = Tensor::new(vec![2, 1], data).unwrap();
            let p = to_proto(t.clone());
            assert!(p.tensor_content.is_empty());
            assert_eq!(from_proto(&p).unwrap(), t);
        }
        let scalar = Tensor::from_f32(vec![], vec![3.0]).unwrap();
        assert_eq!(from_proto(&to_proto(scalar.clone())).unwrap(), scalar);
    }

    #[test]
    fn tensor_content_encoding_round_trips_every_dtype() {
        for data in every_dtype() {
            let t = Tensor::new(vec![1, 2], data).unwrap();
            let p = to_proto_content(t.clone());
            assert!(p.float_val.is_empty() && p.int_val.is_empty() && !p.tensor_content.is_empty());
            assert_eq!(from_proto(&p).unwrap(), t);
        }
    }
}
