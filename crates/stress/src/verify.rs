//! Checking a recovered log against what the runs acknowledged.
//!
//! Each message names its stream (run, thread) and sequence number (see [`crate::message`]).
//! Walking the log in LSN order, the verifier checks that every message decodes with a valid
//! checksum and body, belongs to a stream that was started, that runs appear in order (a run
//! starts after the previous one's recovery), and that each stream's sequence numbers are
//! exactly 0, 1, 2, ... (the log is a prefix of the completed messages, and a thread's messages
//! are completed in order, so a gap or a repeat is an error). At the end it compares each
//! stream's length with what was acknowledged durable (at least) and, when known, with what
//! was written (exactly).

use std::collections::BTreeMap;

use iobuf::Lsn;

use crate::message::{self, MessageKey};

/// A stream of messages: one thread of one run.
pub type StreamId = (u32, u32);

/// How many problems are kept word for word; the rest are only counted.
const MAX_PROBLEMS_KEPT: usize = 20;

/// What a stream must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Sequence numbers `0..durable` were acknowledged durable: all must be present.
    pub durable: u64,
    /// The stream's exact length when it is known (everything written was flushed, or an
    /// earlier verification fixed it after the writer died).
    pub exact: Option<u64>,
}

/// Walks a log's messages in LSN order; see the module doc.
#[derive(Debug)]
pub struct Verifier {
    expected: BTreeMap<StreamId, Expect>,
    accept_unknown: bool,
    found: BTreeMap<StreamId, u64>,
    last_run: Option<u32>,
    n_checked: u64,
    bytes_checked: u64,
    problems: Vec<String>,
    n_problems: u64,
}

/// What a verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Messages read and checked.
    pub n_checked: u64,
    /// Their bytes (the live data of the log).
    pub bytes_checked: u64,
    /// Messages that had been acknowledged durable (all were required to be present).
    pub n_durable_expected: u64,
    /// Each stream's length in the log.
    pub found: BTreeMap<StreamId, u64>,
    /// The first problems, each naming the message or stream.
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub n_problems: u64,
}

impl Outcome {
    /// Whether the log held exactly what it should.
    pub fn passed(&self) -> bool {
        self.n_problems == 0
    }

    /// The problems on one line (for the error message), with a count of those left out.
    pub fn problems_line(&self) -> String {
        let mut line = self.problems.join("; ");
        let left_out = self.n_problems - self.problems.len() as u64;
        if left_out > 0 {
            line.push_str(&format!("; and {left_out} more problem(s)"));
        }
        line
    }
}

impl Verifier {
    /// A verifier that requires `expected` and accepts no other stream.
    pub fn new(expected: BTreeMap<StreamId, Expect>) -> Verifier {
        Verifier {
            expected,
            accept_unknown: false,
            found: BTreeMap::new(),
            last_run: None,
            n_checked: 0,
            bytes_checked: 0,
            problems: Vec::new(),
            n_problems: 0,
        }
    }

    /// A verifier for data of earlier runs nobody here remembers (a kept `--dir`): any stream
    /// is accepted, but every integrity and order check still applies.
    pub fn learning() -> Verifier {
        Verifier {
            accept_unknown: true,
            ..Verifier::new(BTreeMap::new())
        }
    }

    fn problem(&mut self, text: String) {
        self.n_problems += 1;
        if self.problems.len() < MAX_PROBLEMS_KEPT {
            self.problems.push(text);
        }
    }

    /// Checks the next message of the log.
    pub fn check(&mut self, lsn: Lsn, bytes: &[u8]) {
        self.n_checked += 1;
        self.bytes_checked += bytes.len() as u64;
        let key = match message::decode(bytes) {
            Ok(key) => key,
            Err(problem) => {
                self.problem(format!("message at {lsn}: {problem}"));
                return;
            }
        };
        let MessageKey { run, thread, seq } = key;
        let stream = (run, thread);
        if !self.accept_unknown && !self.expected.contains_key(&stream) {
            self.problem(format!(
                "message at {lsn}: {key} was never written (no such thread was started)"
            ));
            return;
        }
        if let Some(last_run) = self.last_run
            && run < last_run
        {
            self.problem(format!(
                "message at {lsn}: {key} comes after a message of run {last_run} (runs out \
                 of order)"
            ));
        }
        self.last_run = Some(self.last_run.map_or(run, |last| last.max(run)));
        let next_seq = *self.found.get(&stream).unwrap_or(&0);
        if seq == next_seq {
            self.found.insert(stream, next_seq + 1);
        } else if seq < next_seq {
            self.problem(format!(
                "message at {lsn}: {key} repeats or goes back (seq {} came before it)",
                next_seq - 1
            ));
        } else {
            let before = match next_seq {
                0 => "is the first of its thread".to_owned(),
                n => format!("follows seq {} of its thread", n - 1),
            };
            self.problem(format!(
                "message at {lsn}: {key} {before}: seqs {next_seq}..={} are missing before \
                 it (order per thread broken)",
                seq - 1
            ));
            self.found.insert(stream, seq + 1);
        }
    }

    /// Compares the streams with what was expected and returns the outcome.
    pub fn finish(mut self) -> Outcome {
        let expected = std::mem::take(&mut self.expected);
        let mut n_durable_expected = 0;
        for (&(run, thread), expect) in &expected {
            n_durable_expected += expect.durable;
            let found = *self.found.get(&(run, thread)).unwrap_or(&0);
            if found < expect.durable {
                self.problem(format!(
                    "run {run} thread {thread}: seqs {found}..={} were acknowledged durable but \
                     are missing ({} acknowledged messages lost)",
                    expect.durable - 1,
                    expect.durable - found
                ));
            }
            if let Some(exact) = expect.exact
                && found != exact
                && found >= expect.durable
            {
                self.problem(format!(
                    "run {run} thread {thread}: the log holds {found} messages, exactly {exact} \
                     were expected"
                ));
            }
        }
        Outcome {
            n_checked: self.n_checked,
            bytes_checked: self.bytes_checked,
            n_durable_expected,
            found: self.found,
            problems: self.problems,
            n_problems: self.n_problems,
        }
    }
}

/// Reads every message of `log` from `start` through a verifier.
pub fn verify_log(
    log: &iobuf::Log,
    start: Lsn,
    mut verifier: Verifier,
) -> Result<Outcome, iobuf::LogError> {
    for entry in log.iter_from(start)? {
        let (location, bytes) = entry?;
        verifier.check(location.lsn, &bytes);
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::encode;

    fn bytes(run: u32, thread: u32, seq: u64) -> Vec<u8> {
        let mut out = vec![0u8; 48];
        encode(MessageKey { run, thread, seq }, &mut out);
        out
    }

    fn expect(durable: u64, exact: Option<u64>) -> Expect {
        Expect { durable, exact }
    }

    /// Feeds `messages` (run, thread, seq) in order, with made-up LSNs 100, 200, ...
    fn run(expected: &[(StreamId, Expect)], messages: &[(u32, u32, u64)]) -> Outcome {
        let mut verifier = Verifier::new(expected.iter().copied().collect());
        for (idx, &(r, t, s)) in messages.iter().enumerate() {
            verifier.check(Lsn(100 * (idx as u64 + 1)), &bytes(r, t, s));
        }
        verifier.finish()
    }

    #[test]
    fn a_complete_log_passes() {
        let outcome = run(
            &[((0, 0), expect(2, Some(3))), ((0, 1), expect(0, None))],
            &[(0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 2), (0, 1, 1)],
        );
        assert!(outcome.passed(), "{:?}", outcome.problems);
        assert_eq!(outcome.n_checked, 5);
        assert_eq!(outcome.n_durable_expected, 2);
        assert_eq!(outcome.found[&(0, 1)], 2);
    }

    #[test]
    fn a_missing_acknowledged_message_is_named() {
        let outcome = run(&[((0, 0), expect(3, None))], &[(0, 0, 0)]);
        assert!(!outcome.passed());
        assert_eq!(
            outcome.problems,
            [
                "run 0 thread 0: seqs 1..=2 were acknowledged durable but are missing (2 \
              acknowledged messages lost)"
            ]
        );
    }

    #[test]
    fn a_gap_in_the_middle_is_named() {
        let outcome = run(
            &[((1, 0), expect(0, None))],
            &[(1, 0, 0), (1, 0, 1), (1, 0, 3)],
        );
        assert_eq!(outcome.n_problems, 1);
        assert!(
            outcome.problems[0]
                .starts_with("message at lsn 300: run 1 thread 0 seq 3 follows seq 1"),
            "{}",
            outcome.problems[0]
        );
    }

    #[test]
    fn a_corrupted_message_is_named_by_its_lsn() {
        let mut verifier = Verifier::new([((0, 0), expect(1, None))].into_iter().collect());
        let mut damaged = bytes(0, 0, 0);
        damaged[40] ^= 1;
        verifier.check(Lsn(4096), &damaged);
        let outcome = verifier.finish();
        assert_eq!(outcome.n_problems, 2, "{:?}", outcome.problems);
        assert!(
            outcome.problems[0].starts_with(
                "message at lsn 4096: checksum mismatch (the header claims run 0 thread 0 seq 0)"
            ),
            "{}",
            outcome.problems[0]
        );
        assert!(outcome.problems[1].contains("acknowledged durable but are missing"));
    }

    #[test]
    fn a_message_nobody_wrote_is_caught() {
        let outcome = run(&[((0, 0), expect(0, None))], &[(0, 0, 0), (0, 5, 0)]);
        assert_eq!(
            outcome.problems,
            [
                "message at lsn 200: run 0 thread 5 seq 0 was never written (no such thread was \
              started)"
            ]
        );
        // Too many messages for a stream whose length is known.
        let outcome = run(&[((0, 0), expect(1, Some(1)))], &[(0, 0, 0), (0, 0, 1)]);
        assert_eq!(
            outcome.problems,
            ["run 0 thread 0: the log holds 2 messages, exactly 1 were expected"]
        );
    }

    #[test]
    fn repeats_and_run_order_are_caught() {
        let streams = [((0, 0), expect(0, None)), ((1, 0), expect(0, None))];
        let outcome = run(&streams, &[(0, 0, 0), (0, 0, 0)]);
        assert!(outcome.problems[0].contains("repeats or goes back"));
        let outcome = run(&streams, &[(1, 0, 0), (0, 0, 0)]);
        assert!(outcome.problems[0].contains("runs out of order"));
    }

    #[test]
    fn learning_accepts_any_stream_but_checks_integrity() {
        let mut verifier = Verifier::learning();
        verifier.check(Lsn(1), &bytes(4, 2, 0));
        verifier.check(Lsn(2), &bytes(4, 2, 1));
        let outcome = verifier.finish();
        assert!(outcome.passed());
        assert_eq!(outcome.found[&(4, 2)], 2);
        let mut verifier = Verifier::learning();
        verifier.check(Lsn(1), b"not ours at all, not ours at all");
        assert!(!verifier.finish().passed());
    }

    #[test]
    fn the_problem_line_counts_what_it_leaves_out() {
        let messages: Vec<_> = (0..30).map(|_| (0, 9, 0)).collect();
        let outcome = run(&[((0, 0), expect(0, None))], &messages);
        assert_eq!(outcome.n_problems, 30);
        assert_eq!(outcome.problems.len(), MAX_PROBLEMS_KEPT);
        assert!(
            outcome
                .problems_line()
                .ends_with("; and 10 more problem(s)")
        );
    }
}
