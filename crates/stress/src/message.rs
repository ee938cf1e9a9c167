//! Self-describing messages: each says which run and thread wrote it, its sequence number, and
//! a checksum, so a log can be verified from its own bytes, without the writer's journal.
//!
//! Layout (all little-endian), [`HEADER_LEN_BYTES`] bytes then the body:
//!
//! | bytes  | field    | meaning                                              |
//! |--------|----------|------------------------------------------------------|
//! | 0..4   | magic    | [`MAGIC`], so foreign data is recognised as such     |
//! | 4..8   | run      | which run of the program wrote it (one per process)  |
//! | 8..12  | thread   | the writing thread within the run                    |
//! | 12..20 | seq      | 0, 1, 2, ... per (run, thread), in write order       |
//! | 20..28 | checksum | FNV-1a 64 over bytes 0..20 and the body              |
//! | 28..   | body     | bytes derived from (run, thread, seq) by [`fill_body`] |
//!
//! The body is a pure function of the key, so a message with a valid checksum but a body the
//! program never wrote (a mixed-up frame) is still caught.

/// Marks a message written by this program: "STR1".
pub const MAGIC: u32 = u32::from_le_bytes(*b"STR1");

/// Bytes before the body.
pub const HEADER_LEN_BYTES: usize = 28;

/// Who wrote a message: the run (process), the thread, the sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    /// The run of the program.
    pub run: u32,
    /// The thread within the run.
    pub thread: u32,
    /// The thread's sequence number.
    pub seq: u64,
}

impl std::fmt::Display for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} thread {} seq {}",
            self.run, self.thread, self.seq
        )
    }
}

/// Why bytes are not a valid message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeProblem {
    /// Shorter than a header.
    TooShort {
        /// The length found.
        len_bytes: usize,
    },
    /// The magic number is not ours.
    ForeignMagic {
        /// The value found.
        found: u32,
    },
    /// The checksum does not match the bytes.
    BadChecksum {
        /// What the header claims (it may itself be damaged).
        claimed: MessageKey,
    },
    /// The checksum matches but the body is not the one this key's writer produced.
    WrongBody {
        /// The key in the header.
        key: MessageKey,
    },
}

impl std::fmt::Display for DecodeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeProblem::TooShort { len_bytes } => write!(
                f,
                "{len_bytes} bytes is shorter than a {HEADER_LEN_BYTES}-byte message header"
            ),
            DecodeProblem::ForeignMagic { found } => {
                write!(f, "magic {found:#010x} is not a stress message")
            }
            DecodeProblem::BadChecksum { claimed } => {
                write!(f, "checksum mismatch (the header claims {claimed})")
            }
            DecodeProblem::WrongBody { key } => {
                write!(f, "{key} has a body its writer never wrote")
            }
        }
    }
}

/// FNV-1a, 64-bit: tiny, dependency-free, and enough to catch damaged or mixed-up bytes (this
/// is a test oracle, not a defence against an adversary).
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    bytes.iter().fold(state, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

fn checksum(header_fields: &[u8], body: &[u8]) -> u64 {
    fnv1a(fnv1a(FNV_OFFSET, header_fields), body)
}

/// Fills `body` with the bytes the writer of `key` puts there (xorshift from the key).
pub fn fill_body(key: MessageKey, body: &mut [u8]) {
    let mut state = (u64::from(key.run) << 32 | u64::from(key.thread))
        ^ key.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    for chunk in body.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Writes the message of `key` into `out` (its whole length: header plus body).
/// `out.len()` must be at least [`HEADER_LEN_BYTES`] (the command line guarantees it).
pub fn encode(key: MessageKey, out: &mut [u8]) {
    assert!(
        out.len() >= HEADER_LEN_BYTES,
        "message buffers are validated to hold a header"
    );
    let (header, body) = out.split_at_mut(HEADER_LEN_BYTES);
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&key.run.to_le_bytes());
    header[8..12].copy_from_slice(&key.thread.to_le_bytes());
    header[12..20].copy_from_slice(&key.seq.to_le_bytes());
    fill_body(key, body);
    let sum = checksum(&header[0..20], body);
    header[20..28].copy_from_slice(&sum.to_le_bytes());
}

/// Reads a message back and checks it completely.
pub fn decode(bytes: &[u8]) -> Result<MessageKey, DecodeProblem> {
    let Some((header, body)) = bytes.split_at_checked(HEADER_LEN_BYTES) else {
        return Err(DecodeProblem::TooShort {
            len_bytes: bytes.len(),
        });
    };
    let u32_at = |at: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&header[at..at + 4]);
        u32::from_le_bytes(word)
    };
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let magic = u32_at(0);
    if magic != MAGIC {
        return Err(DecodeProblem::ForeignMagic { found: magic });
    }
    let key = MessageKey {
        run: u32_at(4),
        thread: u32_at(8),
        seq: u64_at(12),
    };
    if checksum(&header[0..20], body) != u64_at(20) {
        return Err(DecodeProblem::BadChecksum { claimed: key });
    }
    let mut expected = vec![0u8; body.len()];
    fill_body(key, &mut expected);
    if expected != body {
        return Err(DecodeProblem::WrongBody { key });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(run: u32, thread: u32, seq: u64) -> MessageKey {
        MessageKey { run, thread, seq }
    }

    #[test]
    fn round_trips_every_length() {
        for len in HEADER_LEN_BYTES..HEADER_LEN_BYTES + 20 {
            let mut bytes = vec![0u8; len];
            encode(key(3, 1, 77), &mut bytes);
            assert_eq!(decode(&bytes), Ok(key(3, 1, 77)));
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut bytes = vec![0u8; 40];
        encode(key(1, 2, 3), &mut bytes);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&damaged).is_err(),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn problems_name_what_is_wrong() {
        assert_eq!(
            decode(&[0u8; 5]),
            Err(DecodeProblem::TooShort { len_bytes: 5 })
        );
        assert!(matches!(
            decode(&[0u8; 40]),
            Err(DecodeProblem::ForeignMagic { found: 0 })
        ));
        let mut bytes = vec![0u8; 40];
        encode(key(0, 0, 9), &mut bytes);
        bytes[35] ^= 0xFF;
        let problem = decode(&bytes).unwrap_err();
        assert_eq!(
            problem.to_string(),
            "checksum mismatch (the header claims run 0 thread 0 seq 9)"
        );
        // A body swapped in with a recomputed checksum is still caught.
        let mut forged = vec![0u8; 40];
        encode(key(0, 0, 9), &mut forged);
        let mut other = vec![0u8; 40];
        encode(key(0, 0, 10), &mut other);
        forged[HEADER_LEN_BYTES..].copy_from_slice(&other[HEADER_LEN_BYTES..]);
        let sum = checksum(&forged[0..20], &forged[HEADER_LEN_BYTES..]);
        forged[20..28].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            decode(&forged),
            Err(DecodeProblem::WrongBody { key: key(0, 0, 9) })
        );
    }
}
