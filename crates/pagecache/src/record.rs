//! The bytes the page cache writes: log records, the metadata record (roots and id
//! generator), and the snapshot payload. `docs/format.md` describes each byte by byte.
//!
//! Everything here is pure encoding. Decoding reads bytes from disk, so it checks every length
//! and returns a reason string for a typed corruption error instead of panicking.

use std::collections::BTreeMap;

use iobuf::{Location, Lsn, PageId, Stored};

/// A record starts with a kind byte and a page id.
pub(crate) const RECORD_HEADER_LEN: usize = 9;

/// What a log record does to its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A new base: the page's chain becomes this one fragment (allocate, replace,
    /// consolidation, relocation by the cleaner).
    Base = 1,
    /// A delta appended to the page's chain.
    Delta = 2,
    /// The page is freed.
    Free = 3,
    /// The whole metadata (named roots, id generator's high-water mark). The page id is 0 and
    /// means nothing.
    Meta = 4,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Base),
            2 => Some(RecordKind::Delta),
            3 => Some(RecordKind::Free),
            4 => Some(RecordKind::Meta),
            _ => None,
        }
    }
}

/// Writes a record header into the first [`RECORD_HEADER_LEN`] bytes of `out`.
pub(crate) fn put_record_header(out: &mut [u8], kind: RecordKind, pid: PageId) {
    out[0] = kind as u8;
    out[1..RECORD_HEADER_LEN].copy_from_slice(&pid.0.to_le_bytes());
}

/// Splits a record into its kind, page id and body.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<(RecordKind, PageId, &[u8]), String> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(format!(
            "a record of {} bytes is shorter than its {RECORD_HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    let kind = RecordKind::from_byte(bytes[0])
        .ok_or_else(|| format!("unknown record kind {}", bytes[0]))?;
    let pid = PageId(u64::from_le_bytes(
        bytes[1..RECORD_HEADER_LEN].try_into().expect("8 bytes"),
    ));
    Ok((kind, pid, &bytes[RECORD_HEADER_LEN..]))
}

/// The page cache's own small state: named roots and the id generator's persisted mark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Names to page ids.
    pub(crate) roots: BTreeMap<String, PageId>,
    /// Every id below this may have been handed out; a restart continues from here.
    pub(crate) id_high_water: u64,
}

impl Meta {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id_high_water.to_le_bytes());
        out.extend_from_slice(&(self.roots.len() as u32).to_le_bytes());
        for (name, pid) in &self.roots {
            // Names are limited to MAX_ROOT_NAME_LEN_BYTES (< u16::MAX) when set.
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&pid.0.to_le_bytes());
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Meta, String> {
        let mut reader = Reader::new(bytes, "metadata");
        let id_high_water = reader.u64()?;
        let n_roots = reader.u32()?;
        let mut roots = BTreeMap::new();
        for _ in 0..n_roots {
            let name_len = usize::from(reader.u16()?);
            let name = std::str::from_utf8(reader.bytes(name_len)?)
                .map_err(|_| "a root name is not UTF-8".to_string())?
                .to_string();
            let pid = PageId(reader.u64()?);
            roots.insert(name, pid);
        }
        reader.finish()?;
        Ok(Meta {
            roots,
            id_high_water,
        })
    }
}

/// A fragment's place on disk, as recorded in a snapshot.
pub(crate) const SNAPSHOT_SLOT_LEN: usize = 25;

/// The snapshot payload's own version (the snapshot file has its own header).
pub(crate) const SNAPSHOT_PAYLOAD_VERSION: u32 = 1;

/// Builds a snapshot payload page by page, without holding all pages twice in memory.
pub(crate) struct SnapshotWriter {
    out: Vec<u8>,
    n_pages: u64,
    n_pages_at: usize,
}

impl SnapshotWriter {
    pub(crate) fn new(next_pid: u64, meta_lsn: Lsn, meta: &Meta) -> SnapshotWriter {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_PAYLOAD_VERSION.to_le_bytes());
        out.extend_from_slice(&next_pid.to_le_bytes());
        out.extend_from_slice(&meta_lsn.0.to_le_bytes());
        let mut meta_bytes = Vec::new();
        meta.encode(&mut meta_bytes);
        out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta_bytes);
        let n_pages_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        SnapshotWriter {
            out,
            n_pages: 0,
            n_pages_at,
        }
    }

    pub(crate) fn page(&mut self, pid: PageId, chain: impl ExactSizeIterator<Item = Location>) {
        self.out.extend_from_slice(&pid.0.to_le_bytes());
        self.out
            .extend_from_slice(&(chain.len() as u32).to_le_bytes());
        for location in chain {
            self.out.extend_from_slice(&location.lsn.0.to_le_bytes());
            self.out
                .extend_from_slice(&location.file_offset.to_le_bytes());
            self.out
                .extend_from_slice(&location.len_bytes.to_le_bytes());
            self.out.push(match location.stored {
                Stored::Inline => 0,
                Stored::Blob => 1,
            });
        }
        self.n_pages += 1;
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out[self.n_pages_at..self.n_pages_at + 8].copy_from_slice(&self.n_pages.to_le_bytes());
        self.out
    }
}

/// A snapshot payload read in place: the header fields are decoded, the pages are visited
/// straight from the bytes (no chain is built per page, so opening allocates each page's
/// chain once, at its final length).
#[derive(Clone, Debug)]
pub(crate) struct SnapshotView<'a> {
    pub(crate) next_pid: u64,
    pub(crate) meta_lsn: Lsn,
    pub(crate) meta: Meta,
    pub(crate) n_pages: u64,
    /// The page records, each `pid, n_slots, n_slots x slot`.
    pages: &'a [u8],
}

/// One page of a snapshot: its id and its chain's slots, oldest first (never empty).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotPage<'a> {
    pub(crate) pid: PageId,
    /// `n_slots x SNAPSHOT_SLOT_LEN` bytes, each slot's storage byte already checked.
    slots: &'a [u8],
}

impl<'a> SnapshotView<'a> {
    /// Decodes the header fields. The pages are checked as [`SnapshotView::pages`] visits
    /// them.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<SnapshotView<'a>, String> {
        let mut reader = Reader::new(bytes, "snapshot");
        let version = reader.u32()?;
        if version != SNAPSHOT_PAYLOAD_VERSION {
            return Err(format!(
                "snapshot payload version {version}, this build reads {SNAPSHOT_PAYLOAD_VERSION}"
            ));
        }
        let next_pid = reader.u64()?;
        let meta_lsn = Lsn(reader.u64()?);
        let meta_len = reader.u32()? as usize;
        let meta = Meta::decode(reader.bytes(meta_len)?)?;
        let n_pages = reader.u64()?;
        // Each page takes at least 12 + 25 bytes: refuse a count the payload cannot hold, so
        // a caller may size memory by it.
        if n_pages > (reader.remaining() / (12 + SNAPSHOT_SLOT_LEN)) as u64 {
            return Err(format!("{n_pages} pages cannot fit in the snapshot"));
        }
        let pages = reader.bytes(reader.remaining())?;
        Ok(SnapshotView {
            next_pid,
            meta_lsn,
            meta,
            n_pages,
            pages,
        })
    }

    /// The pages in the order written, each checked; after the last one, an error if bytes
    /// are left over.
    pub(crate) fn pages(&self) -> impl Iterator<Item = Result<SnapshotPage<'a>, String>> + use<'a> {
        let mut reader = Reader::new(self.pages, "snapshot");
        let mut n_left = self.n_pages;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let next = if n_left == 0 {
                match reader.remaining() {
                    0 => return None,
                    n => Err(format!("{n} trailing bytes after the snapshot")),
                }
            } else {
                n_left -= 1;
                SnapshotPage::read(&mut reader)
            };
            failed = next.is_err();
            Some(next)
        })
    }
}

impl<'a> SnapshotPage<'a> {
    fn read(reader: &mut Reader<'a>) -> Result<SnapshotPage<'a>, String> {
        let pid = PageId(reader.u64()?);
        let n_slots = reader.u32()? as usize;
        if n_slots == 0 || n_slots > reader.remaining() / SNAPSHOT_SLOT_LEN {
            return Err(format!(
                "page {} has an impossible chain length {n_slots}",
                pid.0
            ));
        }
        let slots = reader.bytes(n_slots * SNAPSHOT_SLOT_LEN)?;
        for slot in slots.chunks_exact(SNAPSHOT_SLOT_LEN) {
            let stored = slot[SNAPSHOT_SLOT_LEN - 1];
            if stored > 1 {
                return Err(format!("unknown storage kind {stored}"));
            }
        }
        Ok(SnapshotPage { pid, slots })
    }

    /// The chain's length (at least 1).
    pub(crate) fn n_slots(&self) -> usize {
        self.slots.len() / SNAPSHOT_SLOT_LEN
    }

    /// The chain's locations, oldest first.
    pub(crate) fn locations(&self) -> impl ExactSizeIterator<Item = Location> + use<'a> {
        self.slots.chunks_exact(SNAPSHOT_SLOT_LEN).map(decode_slot)
    }

    /// The newest fragment's LSN.
    pub(crate) fn last_lsn(&self) -> Lsn {
        self.locations()
            .last()
            .map_or(Lsn(0), |location| location.lsn)
    }
}

/// One slot of `SNAPSHOT_SLOT_LEN` bytes whose storage byte was checked.
fn decode_slot(slot: &[u8]) -> Location {
    let u64_at = |at: usize| {
        let mut le = [0u8; 8];
        le.copy_from_slice(&slot[at..at + 8]);
        u64::from_le_bytes(le)
    };
    Location {
        lsn: Lsn(u64_at(0)),
        file_offset: u64_at(8),
        len_bytes: u64_at(16),
        stored: match slot[24] {
            1 => Stored::Blob,
            _ => Stored::Inline,
        },
    }
}

/// Bounds-checked little-endian reads.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, at: 0, what }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], String> {
        if len > self.remaining() {
            return Err(format!(
                "the {} ends early: {len} bytes wanted at offset {}, {} left",
                self.what,
                self.at,
                self.remaining()
            ));
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.bytes(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn finish(self) -> Result<(), String> {
        if self.remaining() != 0 {
            return Err(format!(
                "{} trailing bytes after the {}",
                self.remaining(),
                self.what
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and visits every page, as opening does.
    fn read_whole(bytes: &[u8]) -> Result<u64, String> {
        let view = SnapshotView::parse(bytes)?;
        let mut n_slots = 0;
        for page in view.pages() {
            n_slots += page?.n_slots() as u64;
        }
        Ok(n_slots)
    }

    #[test]
    fn record_header_round_trips_and_refuses_garbage() {
        let mut bytes = vec![0u8; RECORD_HEADER_LEN + 3];
        put_record_header(&mut bytes, RecordKind::Delta, PageId(0x0102_0304_0506_0708));
        bytes[RECORD_HEADER_LEN..].copy_from_slice(b"abc");
        let (kind, pid, body) = decode_record(&bytes).expect("valid");
        assert_eq!(kind, RecordKind::Delta);
        assert_eq!(pid, PageId(0x0102_0304_0506_0708));
        assert_eq!(body, b"abc");
        assert!(decode_record(&bytes[..4]).is_err());
        bytes[0] = 99;
        assert!(decode_record(&bytes).is_err());
    }

    #[test]
    fn snapshot_round_trips_and_every_truncation_is_an_error() {
        let mut meta = Meta {
            id_high_water: 77,
            ..Meta::default()
        };
        meta.roots.insert("tree".to_string(), PageId(3));
        let location = |lsn: u64, stored| Location {
            lsn: Lsn(lsn),
            file_offset: lsn + 5,
            len_bytes: 10,
            stored,
        };
        let mut writer = SnapshotWriter::new(9, Lsn(40), &meta);
        writer.page(PageId(1), vec![location(100, Stored::Inline)].into_iter());
        writer.page(
            PageId(3),
            vec![location(200, Stored::Blob), location(300, Stored::Inline)].into_iter(),
        );
        let bytes = writer.finish();
        let view = SnapshotView::parse(&bytes).expect("valid");
        assert_eq!(view.next_pid, 9);
        assert_eq!(view.meta_lsn, Lsn(40));
        assert_eq!(view.meta, meta);
        let pages: Vec<SnapshotPage<'_>> = view.pages().collect::<Result<_, _>>().expect("valid");
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].pid, PageId(1));
        let chain: Vec<Location> = pages[1].locations().collect();
        assert_eq!(
            chain,
            vec![location(200, Stored::Blob), location(300, Stored::Inline)]
        );
        assert_eq!(pages[1].n_slots(), 2);
        assert_eq!(pages[1].last_lsn(), Lsn(300));
        for len in 0..bytes.len() {
            assert!(read_whole(&bytes[..len]).is_err(), "len {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_whole(&longer).is_err());
        let mut bad_kind = bytes.clone();
        let last = bad_kind.len() - 1;
        bad_kind[last] = 7;
        assert!(read_whole(&bad_kind).is_err());
    }
}
