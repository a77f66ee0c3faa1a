//! TensorFlow's TensorBundle checkpoint: `<prefix>.index`, a table from
//! tensor keys to `BundleEntryProto`s (and, under the empty key, the
//! `BundleHeaderProto`), and `<prefix>.data-SSSSS-of-NNNNN` shards holding
//! the tensors' bytes.
//!
//! The index is read whole when the bundle is opened; tensors are read one
//! by one from their shard when asked for, each checked against its own
//! CRC32C. A bundle holds everything a model saved, weights the serving
//! graph does not use included, so entries are only decoded on demand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use super::sstable::read_table;
use crate::proto::tensorflow::{BundleEntryProto, BundleHeaderProto, bundle_header_proto};
use crate::tensor::proto::dtype_from_wire;
use crate::tensor::{DataType, Tensor, TensorData, element_count};
use crate::tfrecord::masked_crc32c;

/// The bundle format version this reader implements (TensorFlow's
/// `kTensorBundleVersion`).
const FORMAT_VERSION: i32 = 1;

/// Why a bundle or one of its tensors could not be read: the file and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct BundleError {
    pub path: String,
    pub message: String,
}

fn error(path: &Path, message: impl Into<String>) -> BundleError {
    BundleError { path: path.display().to_string(), message: message.into() }
}

/// An opened checkpoint: its entries by key, and where its shards are.
#[derive(Debug)]
pub struct Bundle {
    prefix: PathBuf,
    num_shards: i32,
    entries: BTreeMap<String, BundleEntryProto>,
}

impl Bundle {
    /// Opens the bundle at `prefix` (`<dir>/variables/variables` for a
    /// SavedModel) and reads its index.
    ///
    /// # Errors
    /// When the index is missing, truncated or corrupt, its header is
    /// absent or from a newer format, or an entry does not decode.
    pub fn open(prefix: &Path) -> Result<Bundle, BundleError> {
        let index_path = with_suffix(prefix, ".index");
        let bytes = std::fs::read(&index_path).map_err(|e| error(&index_path, format!("cannot read: {e}")))?;
        let table = read_table(&bytes).map_err(|e| error(&index_path, e.0))?;
        let mut rows = table.into_iter();
        let header = match rows.next() {
            Some((key, value)) if key.is_empty() => BundleHeaderProto::decode(value)
                .map_err(|e| error(&index_path, format!("the bundle header does not decode: {e}")))?,
            _ => return Err(error(&index_path, "the bundle header (the entry under the empty key) is missing")),
        };
        let version = header.version.unwrap_or_default();
        if version.min_consumer > FORMAT_VERSION || version.producer < 0 {
            return Err(error(
                &index_path,
                format!(
                    "the bundle format is version {} and needs a reader of version {} or later; this reader is version {FORMAT_VERSION}",
                    version.producer, version.min_consumer
                ),
            ));
        }
        if header.endianness != bundle_header_proto::Endianness::Little as i32 {
            return Err(error(&index_path, "the bundle was written big-endian, which is not supported"));
        }
        if header.num_shards < 1 {
            return Err(error(&index_path, format!("the bundle header says {} shards", header.num_shards)));
        }
        let mut entries = BTreeMap::new();
        for (key, value) in rows {
            let key = String::from_utf8_lossy(&key).into_owned();
            let entry = BundleEntryProto::decode(value)
                .map_err(|e| error(&index_path, format!("the entry of '{key}' does not decode: {e}")))?;
            entries.insert(key, entry);
        }
        Ok(Bundle { prefix: prefix.to_path_buf(), num_shards: header.num_shards, entries })
    }

    /// The keys of every tensor in the bundle, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The entry of `key`, if the bundle has one.
    pub fn entry(&self, key: &str) -> Option<&BundleEntryProto> {
        self.entries.get(key)
    }

    fn shard_path(&self, shard: i32) -> PathBuf {
        with_suffix(&self.prefix, &format!(".data-{shard:05}-of-{:05}", self.num_shards))
    }

    /// Reads and checks the tensor stored under `key`.
    ///
    /// # Errors
    /// When the key is absent, its dtype is not one the server has, it is a
    /// sliced (partitioned) variable, or its bytes are missing, of the
    /// wrong length or fail their checksum.
    pub fn read(&self, key: &str) -> Result<Tensor, BundleError> {
        let index_path = with_suffix(&self.prefix, ".index");
        let entry =
            self.entries.get(key).ok_or_else(|| error(&index_path, format!("no tensor is stored under '{key}'")))?;
        if !entry.slices.is_empty() {
            return Err(error(
                &index_path,
                format!("'{key}' is a partitioned variable stored in slices, which is not supported"),
            ));
        }
        if !(0..self.num_shards).contains(&entry.shard_id) {
            return Err(error(
                &index_path,
                format!("'{key}' is in shard {} of a bundle with {} shards", entry.shard_id, self.num_shards),
            ));
        }
        let dtype = dtype_from_wire(entry.dtype).map_err(|e| error(&index_path, format!("'{key}': {e}")))?;
        let shape: Vec<usize> = match &entry.shape {
            Some(s) if s.unknown_rank => return Err(error(&index_path, format!("'{key}' has an unknown rank"))),
            Some(s) => s
                .dim
                .iter()
                .map(|d| usize::try_from(d.size))
                .collect::<Result<_, _>>()
                .map_err(|_| error(&index_path, format!("'{key}' has a negative dim")))?,
            None => Vec::new(),
        };
        let count =
            element_count(&shape).ok_or_else(|| error(&index_path, format!("'{key}' has too many elements")))?;
        let path = self.shard_path(entry.shard_id);
        let bytes = read_range(&path, entry.offset, entry.size, key)?;
        let crc = if dtype == DataType::String { string_crc(&bytes, count) } else { Some(masked_crc32c(&bytes)) };
        if crc != Some(entry.crc32c) {
            return Err(error(&path, format!("the bytes of '{key}' fail their CRC32C check: the file is corrupt")));
        }
        let data = if dtype == DataType::String {
            TensorData::String(
                decode_strings(&bytes, count)
                    .ok_or_else(|| error(&path, format!("the strings of '{key}' are malformed")))?,
            )
        } else {
            let width = dtype.size_of();
            if bytes.len() != count * width {
                return Err(error(
                    &path,
                    format!("'{key}' holds {} bytes, but {dtype} {shape:?} needs {}", bytes.len(), count * width),
                ));
            }
            TensorData::from_le_bytes(dtype, &bytes)
        };
        Tensor::new(shape, data).map_err(|e| error(&path, format!("'{key}': {e}")))
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads `size` bytes at `offset` of `path`, after checking the file holds
/// them (so a corrupt entry cannot make the reader allocate at will).
fn read_range(path: &Path, offset: i64, size: i64, key: &str) -> Result<Vec<u8>, BundleError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| error(path, format!("cannot open: {e}")))?;
    let len = file.metadata().map_err(|e| error(path, format!("cannot stat: {e}")))?.len();
    let (Ok(offset), Ok(size)) = (u64::try_from(offset), u64::try_from(size)) else {
        return Err(error(path, format!("'{key}' has a negative offset or size")));
    };
    if offset.checked_add(size).is_none_or(|end| end > len) {
        return Err(error(
            path,
            format!(
                "'{key}' is stored at bytes {offset}..{} but the file has {len}: it is truncated",
                offset.saturating_add(size)
            ),
        ));
    }
    let mut bytes = vec![0u8; size as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| error(path, format!("cannot read '{key}': {e}")))?;
    Ok(bytes)
}

fn read_varint64(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The lengths of `count` strings and where their bytes start: varint64
/// lengths, then a 4-byte masked CRC32C of the lengths.
fn string_lengths(bytes: &[u8], count: usize) -> Option<(Vec<u64>, usize)> {
    let mut at = 0;
    let mut lengths = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        lengths.push(read_varint64(bytes, &mut at)?);
    }
    let start = at.checked_add(4)?;
    (start <= bytes.len()).then_some((lengths, start))
}

/// The lengths as TensorFlow checksums them: each as u32 LE (u64 when a
/// string is longer than 4 GiB).
fn lengths_for_crc(lengths: &[u64]) -> Vec<u8> {
    lengths
        .iter()
        .flat_map(|&l| match u32::try_from(l) {
            Ok(l) => l.to_le_bytes().to_vec(),
            Err(_) => l.to_le_bytes().to_vec(),
        })
        .collect()
}

/// The masked CRC32C TensorFlow records for a string tensor: over the
/// lengths (as fixed-width integers), the lengths' own 4-byte checksum, and
/// the string bytes.
fn string_crc(bytes: &[u8], count: usize) -> Option<u32> {
    let (lengths, start) = string_lengths(bytes, count)?;
    let mut covered = lengths_for_crc(&lengths);
    covered.extend_from_slice(&bytes[start - 4..]);
    Some(masked_crc32c(&covered))
}

/// Decodes `count` strings, checking the lengths' checksum.
fn decode_strings(bytes: &[u8], count: usize) -> Option<Vec<Vec<u8>>> {
    let (lengths, start) = string_lengths(bytes, count)?;
    let stored = u32::from_le_bytes(bytes[start - 4..start].try_into().ok()?);
    if masked_crc32c(&lengths_for_crc(&lengths)) != stored {
        return None;
    }
    let mut at = start;
    let mut out = Vec::with_capacity(count.min(bytes.len()));
    for len in lengths {
        let end = at.checked_add(usize::try_from(len).ok()?)?;
        out.push(bytes.get(at..end)?.to_vec());
        at = end;
    }
    (at == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensorflow::{TensorShapeProto, VersionDef, tensor_shape_proto};
    use crate::savedmodel::sstable::tests::table;

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: dims.iter().map(|&size| tensor_shape_proto::Dim { size, name: String::new() }).collect(),
            unknown_rank: false,
        })
    }

    /// Writes a one-shard bundle holding a float [2,2] and a string scalar.
    fn write_bundle(dir: &Path) -> PathBuf {
        let floats: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut strings = vec![5u8];
        strings.extend_from_slice(&masked_crc32c(&5u32.to_le_bytes()).to_le_bytes());
        strings.extend_from_slice(b"hello");
        let mut data = floats.clone();
        data.extend_from_slice(&strings);
        let header = BundleHeaderProto {
            num_shards: 1,
            endianness: 0,
            version: Some(VersionDef { producer: 1, ..VersionDef::default() }),
        };
        let float_entry = BundleEntryProto {
            dtype: 1,
            shape: shape(&[2, 2]),
            offset: 0,
            size: 16,
            crc32c: masked_crc32c(&floats),
            ..BundleEntryProto::default()
        };
        let string_entry = BundleEntryProto {
            dtype: 7,
            shape: shape(&[]),
            offset: 16,
            size: strings.len() as i64,
            crc32c: string_crc(&strings, 1).unwrap(),
            ..BundleEntryProto::default()
        };
        let (h, f, s) = (header.encode_to_vec(), float_entry.encode_to_vec(), string_entry.encode_to_vec());
        let prefix = dir.join("variables");
        std::fs::write(with_suffix(&prefix, ".index"), table(&[(b"", &h), (b"a/kernel", &f), (b"graph", &s)])).unwrap();
        std::fs::write(with_suffix(&prefix, ".data-00000-of-00001"), data).unwrap();
        prefix
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferroserve-bundle-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_numeric_and_string_tensors_with_their_checksums() {
        let dir = temp("ok");
        let bundle = Bundle::open(&write_bundle(&dir)).unwrap();
        assert_eq!(bundle.keys().collect::<Vec<_>>(), ["a/kernel", "graph"]);
        let t = bundle.read("a/kernel").unwrap();
        assert_eq!((t.shape(), t.as_f32().unwrap()), (&[2usize, 2][..], &[1.0f32, 2.0, 3.0, 4.0][..]));
        assert_eq!(bundle.read("graph").unwrap().as_strings().unwrap(), &[b"hello".to_vec()]);
        assert!(bundle.read("nope").unwrap_err().message.contains("no tensor is stored under 'nope'"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn corrupt_or_truncated_files_name_the_file_and_the_fault() {
        let dir = temp("bad");
        let prefix = write_bundle(&dir);
        let data = with_suffix(&prefix, ".data-00000-of-00001");
        let mut bytes = std::fs::read(&data).unwrap();
        bytes[3] ^= 0x40;
        std::fs::write(&data, &bytes).unwrap();
        let bundle = Bundle::open(&prefix).unwrap();
        let err = bundle.read("a/kernel").unwrap_err();
        assert!(err.path.ends_with("variables.data-00000-of-00001"), "{err}");
        assert!(err.message.contains("fail their CRC32C check"), "{err}");
        std::fs::write(&data, &bytes[..10]).unwrap();
        assert!(bundle.read("a/kernel").unwrap_err().message.contains("it is truncated"));

        let index = with_suffix(&prefix, ".index");
        let mut bytes = std::fs::read(&index).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&index, &bytes).unwrap();
        let err = Bundle::open(&prefix).unwrap_err();
        assert!(err.path.ends_with("variables.index") && err.message.contains("CRC32C"), "{err}");
        std::fs::write(&index, &bytes[..bytes.len() - 3]).unwrap();
        assert!(Bundle::open(&prefix).unwrap_err().message.contains("magic number"));
        std::fs::remove_file(&index).unwrap();
        assert!(Bundle::open(&prefix).unwrap_err().message.contains("cannot read"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
