//! The persisted settings file, `pagecache.conf`: the settings that cannot change for an
//! existing directory, with a checksum, so a damaged or foreign file is an error at open (the
//! original only logged a warning).

use iobuf::storage::{OpenMode, Storage};

use crate::error::{Error, Result};

/// The file's name in the directory.
pub const CONFIG_FILE_NAME: &str = "pagecache.conf";
const TEMP_FILE_NAME: &str = "pagecache.conf.tmp";
const MAGIC: [u8; 8] = *b"PGCACHE\0";
/// The page cache's on-disk format version (records, snapshot payload, this file).
pub const FORMAT_VERSION: u32 = 1;
const FILE_LEN: usize = 24;

/// What the file records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PersistedConfig {
    pub(crate) format_version: u32,
    pub(crate) segment_len_bytes: u64,
}

impl PersistedConfig {
    fn encode(&self) -> [u8; FILE_LEN] {
        let mut bytes = [0u8; FILE_LEN];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.segment_len_bytes.to_le_bytes());
        let crc = crc32fast::hash(&bytes[0..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<PersistedConfig> {
        let corrupt = |reason: String| Error::CorruptConfig {
            file_name: CONFIG_FILE_NAME,
            reason,
        };
        if bytes.len() != FILE_LEN {
            return Err(corrupt(format!(
                "{} bytes long, expected {FILE_LEN}",
                bytes.len()
            )));
        }
        if bytes[0..8] != MAGIC {
            return Err(corrupt("bad magic".to_string()));
        }
        let stored_crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[0..20]) != stored_crc {
            return Err(corrupt("checksum mismatch".to_string()));
        }
        Ok(PersistedConfig {
            format_version: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            segment_len_bytes: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
        })
    }

    /// Reads the file; `None` when it does not exist. Read-only.
    pub(crate) fn read(storage: &dyn Storage) -> Result<Option<PersistedConfig>> {
        let exists = storage
            .exists(CONFIG_FILE_NAME)
            .map_err(|error| Error::io("looking for the configuration file", error))?;
        if !exists {
            return Ok(None);
        }
        let file = storage
            .open(CONFIG_FILE_NAME, OpenMode::MustExist)
            .map_err(|error| Error::io("opening the configuration file", error))?;
        let len = file
            .len()
            .map_err(|error| Error::io("reading the configuration file's length", error))?;
        if len != FILE_LEN as u64 {
            return Err(Error::CorruptConfig {
                file_name: CONFIG_FILE_NAME,
                reason: format!("{len} bytes long, expected {FILE_LEN}"),
            });
        }
        let mut bytes = [0u8; FILE_LEN];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|error| Error::io("reading the configuration file", error))?;
        PersistedConfig::decode(&bytes).map(Some)
    }

    /// Checks the file against what the caller asked for.
    pub(crate) fn check(&self, requested: &PersistedConfig) -> Result<()> {
        if self.format_version != requested.format_version {
            return Err(Error::ConfigMismatch {
                field: "format_version",
                on_disk: u64::from(self.format_version),
                requested: u64::from(requested.format_version),
            });
        }
        if self.segment_len_bytes != requested.segment_len_bytes {
            return Err(Error::ConfigMismatch {
                field: "segment_len_bytes",
                on_disk: self.segment_len_bytes,
                requested: requested.segment_len_bytes,
            });
        }
        Ok(())
    }

    /// Writes the file atomically and durably: a temporary, synced, renamed, directory
    /// synced.
    pub(crate) fn write(&self, storage: &dyn Storage) -> Result<()> {
        let file = storage
            .open(TEMP_FILE_NAME, OpenMode::CreateOrOpen)
            .map_err(|error| Error::io("creating the configuration file", error))?;
        file.set_len(0)
            .and_then(|()| file.write_all_at(&self.encode(), 0))
            .and_then(|()| file.sync_data())
            .map_err(|error| Error::io("writing the configuration file", error))?;
        drop(file);
        storage
            .rename(TEMP_FILE_NAME, CONFIG_FILE_NAME)
            .and_then(|()| storage.sync_dir())
            .map_err(|error| Error::io("installing the configuration file", error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_flip_is_refused() {
        let config = PersistedConfig {
            format_version: FORMAT_VERSION,
            segment_len_bytes: 1 << 20,
        };
        let bytes = config.encode();
        assert_eq!(PersistedConfig::decode(&bytes).expect("valid"), config);
        for bit in 0..FILE_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(
                PersistedConfig::decode(&flipped),
                Err(Error::CorruptConfig { .. })
            ));
        }
    }
}
