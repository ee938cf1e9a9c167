//! Large values: each in a file of its own, durable before the pointer frame that names it.

use std::sync::Arc;

use segment::Lsn;

use crate::error::{LogError, Result};
use crate::format::{self, BLOB_HEADER_LEN, BlobHeader, BlobPointer};
use crate::storage::{OpenMode, Storage};

/// Writes `value` as the blob of the pointer frame at `lsn` and makes it durable: the file's
/// data and its directory entry are synced before this returns, so a pointer completed after
/// it can never become stable while its blob could still be lost.
pub(crate) fn write_blob(
    storage: &Arc<dyn Storage>,
    lsn: Lsn,
    value: &[u8],
) -> Result<BlobPointer> {
    let value_crc32 = crc32fast::hash(value);
    let header = BlobHeader {
        lsn,
        value_len_bytes: value.len() as u64,
        value_crc32,
    };
    let name = format::blob_file_name(lsn);
    // A leftover file of the same name can only come from a torn earlier life of this LSN
    // (recovery deletes those, but be robust): replace it.
    let file = storage
        .open(&name, OpenMode::CreateOrOpen)
        .map_err(|error| LogError::io("creating a blob file", error))?;
    file.set_len(0)
        .map_err(|error| LogError::io("truncating a blob file", error))?;
    let mut contents = Vec::with_capacity(BLOB_HEADER_LEN as usize + value.len());
    contents.extend_from_slice(&header.encode());
    contents.extend_from_slice(value);
    file.write_all_at(&contents, 0)
        .map_err(|error| LogError::io("writing a blob file", error))?;
    file.sync_data()
        .map_err(|error| LogError::io("syncing a blob file", error))?;
    storage
        .sync_dir()
        .map_err(|error| LogError::io("syncing the directory after a blob", error))?;
    Ok(BlobPointer {
        blob_len_bytes: value.len() as u64,
        blob_crc32: value_crc32,
    })
}

/// Reads and verifies the blob of the pointer frame at `lsn`.
pub(crate) fn read_blob(
    storage: &Arc<dyn Storage>,
    lsn: Lsn,
    pointer: &BlobPointer,
) -> Result<Vec<u8>> {
    let corrupt = |reason: String| LogError::BlobCorruption { lsn, reason };
    let file = storage
        .open(&format::blob_file_name(lsn), OpenMode::MustExist)
        .map_err(|error| corrupt(format!("cannot open the blob file: {error}")))?;
    let file_len = file
        .len()
        .map_err(|error| LogError::io("reading a blob file's length", error))?;
    let expected_len = BLOB_HEADER_LEN.checked_add(pointer.blob_len_bytes);
    if expected_len != Some(file_len) {
        return Err(corrupt(format!(
            "the file holds {file_len} bytes, the pointer expects a {}-byte value",
            pointer.blob_len_bytes
        )));
    }
    let mut header_bytes = [0u8; BLOB_HEADER_LEN as usize];
    file.read_exact_at(&mut header_bytes, 0)
        .map_err(|error| LogError::io("reading a blob header", error))?;
    let header = BlobHeader::decode(&header_bytes).map_err(|error| corrupt(error.to_string()))?;
    if header.lsn != lsn
        || header.value_len_bytes != pointer.blob_len_bytes
        || header.value_crc32 != pointer.blob_crc32
    {
        return Err(corrupt(format!(
            "the blob header {header:?} does not match the pointer {pointer:?}"
        )));
    }
    let len = usize::try_from(pointer.blob_len_bytes)
        .map_err(|_| corrupt("the value does not fit in memory".to_string()))?;
    let mut value = vec![0u8; len];
    file.read_exact_at(&mut value, BLOB_HEADER_LEN)
        .map_err(|error| LogError::io("reading a blob value", error))?;
    if crc32fast::hash(&value) != pointer.blob_crc32 {
        return Err(corrupt("the value's checksum does not match".to_string()));
    }
    Ok(value)
}
