//! Self-checking page values for the `pages` workload, and the materializer that merges them.
//!
//! Each page belongs to one *page key* (0 .. `--pages`), written by one thread only, with a
//! per-key *op seq* that grows by one with every write of the key (allocate, link, replace,
//! free), across the key's lives (a free and a later allocate). The value of a live page says
//! which key it is, the seq of its last op and how many ops its current life has had, and
//! carries a rolling checksum over those ops. A life that began with the allocate at seq `a`
//! and whose last op was seq `s` has `n_ops = s - a + 1` and the checksum
//! [`life_checksum`]`(key, a, s)`, whatever mix of links and replaces got it there: a link
//! appends a one-op fragment, a replace writes the merged value with its op folded in as a new
//! base. So a value read back can be checked on its own ([`PageValue::check`]): a chain
//! rebuilt wrongly (a delta lost in the middle, applied twice, or from another page) breaks the
//! checksum or the seq order, and any value that passes is exactly the state after op `s` of
//! that life.
//!
//! Encoding (all little-endian), [`HEADER_LEN_BYTES`] bytes then the body:
//!
//! | bytes  | field     | meaning                                                   |
//! |--------|-----------|-----------------------------------------------------------|
//! | 0..4   | magic     | [`MAGIC`]                                                 |
//! | 4..12  | key       | the page key                                              |
//! | 12..20 | last_seq  | the op seq of the last op folded in                       |
//! | 20..28 | n_ops     | ops folded in (1 for a fragment of one op)                |
//! | 28..36 | checksum  | the rolling checksum of those ops                         |
//! | 36..   | body      | bytes derived from (key, last_seq) by [`fill_body`]       |

use pagecache::{DecodeError, Materializer};

/// Marks a page value written by this program: "PGS1".
pub const MAGIC: u32 = u32::from_le_bytes(*b"PGS1");

/// Bytes before the body.
pub const HEADER_LEN_BYTES: usize = 36;

/// A fragment of a page, and also a page's merged value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageValue {
    /// The page key.
    pub key: u64,
    /// The op seq of the last op folded in.
    pub last_seq: u64,
    /// How many ops are folded in.
    pub n_ops: u64,
    /// The rolling checksum over those ops.
    pub checksum: u64,
    /// Bytes derived from `(key, last_seq)`, so a value is as large as `--fragment-len-bytes`.
    pub body: Vec<u8>,
}

/// One op's contribution to the checksum.
pub fn op_hash(key: u64, seq: u64) -> u64 {
    let mut x = key
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seq.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        ^ 0x1656_67B1_9E37_79F9;
    // splitmix64's finalizer: every input bit moves every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Folds one more op into a checksum. Not commutative, so the order of ops matters.
pub fn combine(checksum: u64, op: u64) -> u64 {
    (checksum.rotate_left(17) ^ op).wrapping_mul(0x0000_0100_0000_01B3) ^ (checksum >> 29)
}

/// The checksum of a life that began at seq `alloc_seq` and whose last op was `last_seq`.
pub fn life_checksum(key: u64, alloc_seq: u64, last_seq: u64) -> u64 {
    let mut checksum = op_hash(key, alloc_seq);
    for seq in alloc_seq + 1..=last_seq {
        checksum = combine(checksum, op_hash(key, seq));
    }
    checksum
}

/// Fills `body` with bytes that depend on `(key, seq)` only.
pub fn fill_body(key: u64, seq: u64, body: &mut [u8]) {
    let mut state = op_hash(key ^ 0xA5A5_A5A5, seq) | 1;
    for chunk in body.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Why a value read back is not a state the workload could have written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueProblem {
    /// `n_ops` is 0 or larger than `last_seq + 1`.
    BadOpCount,
    /// The checksum is not that of the ops `last_seq - n_ops + 1 ..= last_seq`.
    BadChecksum,
    /// The body is not the one derived from `(key, last_seq)`.
    WrongBody,
}

impl std::fmt::Display for ValueProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValueProblem::BadOpCount => "its op count does not fit its last op seq",
            ValueProblem::BadChecksum => {
                "its checksum is not that of its ops (a chain rebuilt wrongly)"
            }
            ValueProblem::WrongBody => "its body is not the one its key and seq give",
        })
    }
}

impl PageValue {
    /// The fragment of one op: seq `seq` of `key`, `len_bytes` encoded (at least the header).
    pub fn op(key: u64, seq: u64, len_bytes: usize) -> PageValue {
        let mut body = vec![0u8; len_bytes.saturating_sub(HEADER_LEN_BYTES)];
        fill_body(key, seq, &mut body);
        PageValue {
            key,
            last_seq: seq,
            n_ops: 1,
            checksum: op_hash(key, seq),
            body,
        }
    }

    /// This value with op `seq` folded in (what a replace writes as the new base).
    pub fn then(&self, seq: u64, len_bytes: usize) -> PageValue {
        let op = PageValue::op(self.key, seq, len_bytes);
        merge_values(&[self, &op])
    }

    /// The seq of the allocate that began this life (valid after [`PageValue::check`]).
    pub fn alloc_seq(&self) -> u64 {
        self.last_seq + 1 - self.n_ops
    }

    /// Checks the value on its own: op count, checksum, body.
    pub fn check(&self) -> Result<(), ValueProblem> {
        if self.n_ops == 0 || self.n_ops > self.last_seq.saturating_add(1) {
            return Err(ValueProblem::BadOpCount);
        }
        if life_checksum(self.key, self.alloc_seq(), self.last_seq) != self.checksum {
            return Err(ValueProblem::BadChecksum);
        }
        let mut body = vec![0u8; self.body.len()];
        fill_body(self.key, self.last_seq, &mut body);
        if body != self.body {
            return Err(ValueProblem::WrongBody);
        }
        Ok(())
    }
}

/// Folds a chain, oldest first. A delta that does not continue the value (another key, or a
/// seq that is not the next one) poisons the checksum, so [`PageValue::check`] fails.
fn merge_values(chain: &[&PageValue]) -> PageValue {
    let Some((first, rest)) = chain.split_first() else {
        // The cache never merges an empty chain; an empty value fails every check.
        return PageValue {
            key: 0,
            last_seq: 0,
            n_ops: 0,
            checksum: 0,
            body: Vec::new(),
        };
    };
    let mut value = (*first).clone();
    for delta in rest {
        let continues = delta.key == value.key
            && delta.n_ops == 1
            && Some(delta.last_seq) == value.last_seq.checked_add(1);
        value.checksum = combine(value.checksum, delta.checksum);
        if !continues {
            value.checksum = !value.checksum;
        }
        value.n_ops = value.n_ops.saturating_add(delta.n_ops);
        value.last_seq = delta.last_seq;
        value.body.clone_from(&delta.body);
    }
    value
}

/// The `pages` workload's materializer: see the module doc.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageMaterializer;

impl Materializer for PageMaterializer {
    type Fragment = PageValue;

    fn encode(&self, value: &PageValue, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&value.key.to_le_bytes());
        out.extend_from_slice(&value.last_seq.to_le_bytes());
        out.extend_from_slice(&value.n_ops.to_le_bytes());
        out.extend_from_slice(&value.checksum.to_le_bytes());
        out.extend_from_slice(&value.body);
    }

    fn decode(&self, bytes: &[u8]) -> Result<PageValue, DecodeError> {
        let Some((header, body)) = bytes.split_at_checked(HEADER_LEN_BYTES) else {
            return Err(DecodeError::new(format!(
                "a page value of {} bytes is shorter than its {HEADER_LEN_BYTES}-byte header",
                bytes.len()
            )));
        };
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&header[0..4]);
        let magic = u32::from_le_bytes(magic);
        if magic != MAGIC {
            return Err(DecodeError::new(format!(
                "magic {magic:#010x} is not a stress page value's"
            )));
        }
        Ok(PageValue {
            key: u64_at(4),
            last_seq: u64_at(12),
            n_ops: u64_at(20),
            checksum: u64_at(28),
            body: body.to_vec(),
        })
    }

    fn merge(&self, chain: &[&PageValue]) -> PageValue {
        merge_values(chain)
    }

    fn size_in_bytes(&self, value: &PageValue) -> usize {
        std::mem::size_of::<PageValue>() + value.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_replaces_reach_the_same_state() {
        let len = 60;
        let base = PageValue::op(7, 10, len);
        let d1 = PageValue::op(7, 11, len);
        let d2 = PageValue::op(7, 12, len);
        let linked = merge_values(&[&base, &d1, &d2]);
        let replaced = base.then(11, len).then(12, len);
        assert_eq!(linked, replaced);
        // A consolidated prefix continues the same way.
        let consolidated = merge_values(&[&merge_values(&[&base, &d1]), &d2]);
        assert_eq!(linked, consolidated);
        assert_eq!(linked.check(), Ok(()));
        assert_eq!(linked.alloc_seq(), 10);
        assert_eq!(linked.n_ops, 3);
        assert_eq!(linked.body.len(), len - HEADER_LEN_BYTES);
    }

    #[test]
    fn broken_chains_fail_the_check() {
        let len = 50;
        let base = PageValue::op(1, 0, len);
        let d1 = PageValue::op(1, 1, len);
        let d2 = PageValue::op(1, 2, len);
        // A delta lost in the middle, one applied twice, one of another page.
        for chain in [
            vec![&base, &d2],
            vec![&base, &d1, &d1],
            vec![&base, &PageValue::op(2, 1, len)],
        ] {
            assert!(merge_values(&chain).check().is_err(), "{chain:?}");
        }
        let mut value = merge_values(&[&base, &d1]);
        value.body[3] ^= 1;
        assert_eq!(value.check(), Err(ValueProblem::WrongBody));
        let mut value = merge_values(&[&base, &d1]);
        value.n_ops = 0;
        assert_eq!(value.check(), Err(ValueProblem::BadOpCount));
        let mut value = merge_values(&[&base, &d1]);
        value.n_ops = 1;
        assert_eq!(value.check(), Err(ValueProblem::BadChecksum));
    }

    #[test]
    fn encoding_round_trips_and_bad_bytes_are_errors() {
        let m = PageMaterializer;
        let value = PageValue::op(3, 4, 100).then(5, 100);
        let mut bytes = Vec::new();
        m.encode(&value, &mut bytes);
        assert_eq!(bytes.len(), 100);
        assert_eq!(m.decode(&bytes), Ok(value));
        assert!(m.decode(&bytes[..10]).is_err());
        let mut foreign = bytes.clone();
        foreign[0] ^= 0xFF;
        assert!(m.decode(&foreign).is_err());
        // The smallest value is its header alone.
        let tiny = PageValue::op(1, 1, 0);
        let mut bytes = Vec::new();
        m.encode(&tiny, &mut bytes);
        assert_eq!(bytes.len(), HEADER_LEN_BYTES);
        assert_eq!(m.decode(&bytes).unwrap().check(), Ok(()));
    }
}
