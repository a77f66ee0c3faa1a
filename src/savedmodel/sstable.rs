//! The immutable sorted table ("SSTable", LevelDB's table format without
//! filter blocks) that TensorFlow writes as a checkpoint's `.index` file.
//!
//! A table is data blocks, a metaindex block and an index block, each
//! followed by a 5-byte trailer (compression type, masked CRC32C of the
//! contents and the type byte), then a 48-byte footer holding the handles of
//! the metaindex and index blocks and a magic number. The index block maps
//! separator keys to the handles of the data blocks; a block is a run of
//! prefix-compressed entries followed by its restart offsets.
//!
//! Every block's checksum is verified, and every length and offset is
//! checked against the file before it is used.

use crate::tfrecord::masked_crc32c;

/// The footer's magic number, as TensorFlow's (and LevelDB's) table writer
/// puts it in the last 8 bytes.
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const FOOTER_LEN: usize = 48;
const TRAILER_LEN: usize = 5;

/// One entry of a table: its key, and its value inside the file's bytes.
pub type Entry<'a> = (Vec<u8>, &'a [u8]);

/// Why a table could not be read: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TableError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, TableError> {
    Err(TableError(message.into()))
}

/// Reads a LEB128 varint of at most `max_bytes` bytes at `*at`.
fn varint(bytes: &[u8], at: &mut usize, max_bytes: usize) -> Result<u64, TableError> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let Some(&b) = bytes.get(*at) else {
            return err(format!("a varint at byte {} runs past the end", *at));
        };
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    err(format!("a varint ending at byte {} is longer than {max_bytes} bytes", *at))
}

fn varint32(bytes: &[u8], at: &mut usize) -> Result<usize, TableError> {
    let v = varint(bytes, at, 5)?;
    u32::try_from(v).map(|v| v as usize).or_else(|_| err(format!("a 32-bit varint holds {v}")))
}

/// A block's place in the file: offset and size, trailer excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle {
    offset: usize,
    size: usize,
}

impl Handle {
    fn decode(bytes: &[u8], at: &mut usize) -> Result<Handle, TableError> {
        let offset = varint(bytes, at, 10)?;
        let size = varint(bytes, at, 10)?;
        match (usize::try_from(offset), usize::try_from(size)) {
            (Ok(offset), Ok(size)) => Ok(Handle { offset, size }),
            _ => err(format!("a block handle ({offset}, {size}) does not fit in memory")),
        }
    }
}

/// The checked contents of the block at `handle`.
fn block<'a>(file: &'a [u8], handle: Handle, what: &str) -> Result<&'a [u8], TableError> {
    let end = handle.offset.checked_add(handle.size).and_then(|e| e.checked_add(TRAILER_LEN));
    let Some(end) = end.filter(|&e| e <= file.len()) else {
        return err(format!(
            "the {what} block at byte {} ({} bytes and its trailer) runs past the end of the file ({} bytes): the file is truncated or corrupt",
            handle.offset,
            handle.size,
            file.len()
        ));
    };
    let stored = &file[handle.offset..end - 4];
    let crc = u32::from_le_bytes([file[end - 4], file[end - 3], file[end - 2], file[end - 1]]);
    if masked_crc32c(stored) != crc {
        return err(format!("the {what} block at byte {} fails its CRC32C check: the file is corrupt", handle.offset));
    }
    match stored[handle.size] {
        0 => Ok(&stored[..handle.size]),
        1 => err(format!(
            "the {what} block at byte {} is Snappy-compressed, which is not supported (TensorFlow writes checkpoints uncompressed)",
            handle.offset
        )),
        other => err(format!("the {what} block at byte {} has unknown compression type {other}", handle.offset)),
    }
}

/// The (key, value) entries of a block, in order.
fn entries<'a>(contents: &'a [u8], what: &str) -> Result<Vec<Entry<'a>>, TableError> {
    let n = contents.len();
    if n < 4 {
        return err(format!("a {what} block of {n} bytes is too short for its restart count"));
    }
    let restarts = u32::from_le_bytes([contents[n - 4], contents[n - 3], contents[n - 2], contents[n - 1]]) as usize;
    let Some(data_end) = restarts.checked_mul(4).and_then(|r| (n - 4).checked_sub(r)) else {
        return err(format!("a {what} block of {n} bytes cannot hold its {restarts} restart offsets"));
    };
    let data = &contents[..data_end];
    let mut out: Vec<Entry<'a>> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let shared = varint32(data, &mut at)?;
        let unshared = varint32(data, &mut at)?;
        let value_len = varint32(data, &mut at)?;
        let previous = out.last().map_or(&[][..], |(k, _)| k.as_slice());
        if shared > previous.len() {
            return err(format!("a {what} block entry shares {shared} bytes with a key of {}", previous.len()));
        }
        let Some(end) = at.checked_add(unshared).and_then(|e| e.checked_add(value_len)).filter(|&e| e <= data.len())
        else {
            return err(format!("a {what} block entry at byte {at} runs past the end of its block"));
        };
        let mut key = previous[..shared].to_vec();
        key.extend_from_slice(&data[at..at + unshared]);
        if out.last().is_some_and(|(k, _)| *k >= key) {
            return err(format!("the keys of a {what} block are not in increasing order"));
        }
        out.push((key, &data[at + unshared..end]));
        at = end;
    }
    Ok(out)
}

/// Every (key, value) pair of a table, in key order.
///
/// # Errors
/// When the file is too short, its magic number is wrong, a block fails its
/// checksum, is compressed, or its entries or handles do not fit.
pub fn read_table(file: &[u8]) -> Result<Vec<Entry<'_>>, TableError> {
    if file.len() < FOOTER_LEN {
        return err(format!("{} bytes is too short for a table footer ({FOOTER_LEN} bytes)", file.len()));
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&footer[40..]);
    if u64::from_le_bytes(magic) != MAGIC {
        return err("the table footer's magic number is wrong: this is not a TensorFlow checkpoint index");
    }
    let mut at = 0;
    let _metaindex = Handle::decode(footer, &mut at)?;
    let index = Handle::decode(footer, &mut at)?;
    let mut out = Vec::new();
    for (_, value) in entries(block(file, index, "index")?, "index")? {
        let handle = Handle::decode(value, &mut 0)?;
        for entry in entries(block(file, handle, "data")?, "data")? {
            if out.last().is_some_and(|(k, _): &Entry<'_>| *k >= entry.0) {
                return err("the keys of consecutive data blocks are not in increasing order");
            }
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A block of `entries` with prefix compression and one restart.
    fn block_contents(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut previous: &[u8] = &[];
        for (key, value) in entries {
            let shared = previous.iter().zip(key.iter()).take_while(|(a, b)| a == b).count();
            put_varint(&mut out, shared as u64);
            put_varint(&mut out, (key.len() - shared) as u64);
            put_varint(&mut out, value.len() as u64);
            out.extend_from_slice(&key[shared..]);
            out.extend_from_slice(value);
            previous = key;
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out
    }

    fn push_block(file: &mut Vec<u8>, contents: &[u8]) -> (u64, u64) {
        let offset = file.len() as u64;
        file.extend_from_slice(contents);
        let mut checked = contents.to_vec();
        checked.push(0);
        file.push(0);
        file.extend_from_slice(&masked_crc32c(&checked).to_le_bytes());
        (offset, contents.len() as u64)
    }

    /// A one-data-block table of `entries` (sorted), as TensorFlow writes it.
    pub(crate) fn table(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut file = Vec::new();
        let data = push_block(&mut file, &block_contents(entries));
        let meta = push_block(&mut file, &block_contents(&[]));
        let mut handle = Vec::new();
        put_varint(&mut handle, data.0);
        put_varint(&mut handle, data.1);
        let index = push_block(&mut file, &block_contents(&[(b"\xff", &handle)]));
        let mut footer = Vec::new();
        for v in [meta.0, meta.1, index.0, index.1] {
            put_varint(&mut footer, v);
        }
        footer.resize(40, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        file
    }

    #[test]
    fn reads_prefix_compressed_entries_in_order() {
        let file = table(&[(b"", b"header"), (b"variables/0", b"a"), (b"variables/1", b"bb")]);
        let got = read_table(&file).unwrap();
        let keys: Vec<&[u8]> = got.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b""[..], b"variables/0", b"variables/1"]);
        assert_eq!(got[2].1, b"bb");
    }

    #[test]
    fn corruption_and_truncation_are_named() {
        let file = table(&[(b"k", b"value")]);
        let mut flipped = file.clone();
        flipped[2] ^= 1;
        assert!(read_table(&flipped).unwrap_err().0.contains("data block at byte 0 fails its CRC32C check"));
        let err = read_table(&file[..file.len() - 1]).unwrap_err().0;
        assert!(err.contains("magic number"), "{err}");
        assert!(read_table(&file[..20]).unwrap_err().0.contains("too short"));
        let mut cut = file[..1].to_vec();
        cut.extend_from_slice(&file[file.len() - FOOTER_LEN..]);
        assert!(read_table(&cut).unwrap_err().0.contains("runs past the end of the file"));
    }
}
