//! TensorFlow's TFRecord container, which holds warmup requests: each
//! record is a little-endian u64 length, a masked CRC32C of those 8 bytes,
//! the data, and a masked CRC32C of the data.
//!
//! Also the masked CRC32C itself, which TensorFlow's other on-disk formats
//! use too.

/// CRC32C (Castagnoli) lookup table, reflected polynomial 0x82F63B78.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8))
}

/// TensorFlow's masked CRC32C: rotated and offset so that a CRC stored
/// inside CRC-checked data does not weaken the check.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Why a TFRecord file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("record {index} at byte {offset} is truncated: {needed} more bytes were expected")]
    Truncated { index: usize, offset: usize, needed: usize },
    #[error("record {index} at byte {offset} has a corrupt {what} (CRC32C mismatch)")]
    Corrupt { index: usize, offset: usize, what: &'static str },
    #[error("the file holds more than {0} records")]
    TooMany(usize),
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The records of a TFRecord file, checked, at most `max_records` of them.
///
/// # Errors
/// When a record is truncated, a checksum does not match, or there are
/// more than `max_records` records.
pub fn read_records(bytes: &[u8], max_records: usize) -> Result<Vec<&[u8]>, RecordError> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let index = records.len();
        if index == max_records {
            return Err(RecordError::TooMany(max_records));
        }
        let rest = bytes.len() - at;
        if rest < 12 {
            return Err(RecordError::Truncated { index, offset: at, needed: 12 - rest });
        }
        let header = &bytes[at..at + 8];
        if masked_crc32c(header) != u32_at(bytes, at + 8) {
            return Err(RecordError::Corrupt { index, offset: at, what: "length" });
        }
        let len = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        let body = at + 12;
        let available = (bytes.len() - body) as u64;
        if len.saturating_add(4) > available {
            let needed = len.saturating_add(4).saturating_sub(available);
            return Err(RecordError::Truncated {
                index,
                offset: at,
                needed: usize::try_from(needed).unwrap_or(usize::MAX),
            });
        }
        let len = len as usize;
        let data = &bytes[body..body + len];
        if masked_crc32c(data) != u32_at(bytes, body + len) {
            return Err(RecordError::Corrupt { index, offset: at, what: "data" });
        }
        records.push(data);
        at = body + len + 4;
    }
    Ok(records)
}

/// Frames `data` as one TFRecord (for tests and tools that write warmup
/// files).
pub fn frame_record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // RFC 3720 B.4 and the usual "123456789" check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn records_round_trip_and_damage_is_reported() {
        let file = [frame_record(b"first"), frame_record(b""), frame_record(&[7u8; 300])].concat();
        let records = read_records(&file, 10).unwrap();
        assert_eq!(records, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        assert_eq!(read_records(&file, 2), Err(RecordError::TooMany(2)));
        assert!(matches!(read_records(&file[..file.len() - 1], 10), Err(RecordError::Truncated { index: 2, .. })));
        let mut bad = file.clone();
        bad[14] ^= 1; // inside the first record's data
        assert_eq!(read_records(&bad, 10), Err(RecordError::Corrupt { index: 0, offset: 0, what: "data" }));
        let mut bad = file;
        bad[0] ^= 1; // the first length
        assert_eq!(read_records(&bad, 10), Err(RecordError::Corrupt { index: 0, offset: 0, what: "length" }));
        assert_eq!(read_records(&[], 10).unwrap().len(), 0);
    }
}
