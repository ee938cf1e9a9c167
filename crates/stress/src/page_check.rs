//! Checking a page cache against what the `pages` workload acknowledged.
//!
//! [`scan`] reads every page id below the cache's high-water mark and checks each live page on
//! its own (see [`crate::page`]): it decodes, its checksum is that of its ops, its key is in
//! range, no key is live twice. What it finds per key is a [`Life`]: the pid, the seq of the
//! allocate that began the life and the seq of its last op.
//!
//! A finished run knows each key's final state and requires it exactly ([`check_exact`]). A
//! crash loop knows less: the child reports a key's state only after a flush made it durable,
//! and announces a free *before* it calls `free`. [`CrashModel`] keeps, per key, the last
//! state reported durable and whether a free may have happened since, and [`CrashModel::check`]
//! accepts exactly: the durable state or a later state of the same life (same pid, same
//! allocate, a later last op), or, only if a free was announced, no page or a newer life. A
//! key reported freed may only come back as a life that began after the free.

use std::collections::BTreeMap;

use pagecache::{PageCache, PageId, Version};

use crate::error::Error;
use crate::page::{PageMaterializer, PageValue};

/// How many problems are kept word for word; the rest are only counted.
const MAX_PROBLEMS_KEPT: usize = 20;

/// The first problems found and how many there were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// The first ones, each naming a page key or pid.
    pub kept: Vec<String>,
    /// How many in all.
    pub count: u64,
}

impl Problems {
    /// Records one.
    pub fn push(&mut self, text: String) {
        self.count += 1;
        if self.kept.len() < MAX_PROBLEMS_KEPT {
            self.kept.push(text);
        }
    }

    /// The problems on one line, with a count of those left out.
    pub fn line(&self) -> String {
        let mut line = self.kept.join("; ");
        let left_out = self.count - self.kept.len() as u64;
        if left_out > 0 {
            line.push_str(&format!("; and {left_out} more problem(s)"));
        }
        line
    }
}

/// One life of a page key: where it lives and which ops it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Life {
    /// The page id.
    pub pid: u64,
    /// The seq of the allocate that began this life.
    pub alloc_seq: u64,
    /// The seq of the last op folded in.
    pub last_seq: u64,
}

impl std::fmt::Display for Life {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {}, allocated at op seq {}, last op seq {}",
            self.pid, self.alloc_seq, self.last_seq
        )
    }
}

/// A live page as a scan found it.
#[derive(Clone, Debug)]
pub struct Found {
    /// Its life.
    pub life: Life,
    /// The version to write it at.
    pub version: Version,
    /// Its value.
    pub value: PageValue,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Each live key's page (the first one, if a key was live twice).
    pub found: BTreeMap<u64, Found>,
    /// Live pages read and checked.
    pub n_checked: u64,
    /// Bytes of their values (header and body).
    pub value_bytes: u64,
    /// What was wrong.
    pub problems: Problems,
}

/// Reads and checks every page of `cache`; keys must be below `n_keys`.
pub fn scan(cache: &PageCache<PageMaterializer>, n_keys: u64) -> Result<Scan, Error> {
    let mut scan = Scan::default();
    let high_water = cache.stats().page_id_high_water;
    for pid in 0..high_water {
        let page = match cache.get(PageId(pid)) {
            Ok(Some(page)) => page,
            Ok(None) => continue,
            Err(pagecache::Error::Corruption { reason, lsn, .. }) => {
                scan.problems.push(format!(
                    "page pid {pid}: reading it back failed: corruption at {lsn:?}: {reason}"
                ));
                continue;
            }
            Err(source) => {
                return Err(Error::Cache {
                    what: "reading a page back",
                    source,
                });
            }
        };
        scan.n_checked += 1;
        let value = page.value;
        scan.value_bytes += (crate::page::HEADER_LEN_BYTES + value.body.len()) as u64;
        if let Err(problem) = value.check() {
            scan.problems.push(format!(
                "page pid {pid} (page key {}, last op seq {}): {problem}",
                value.key, value.last_seq
            ));
            continue;
        }
        if value.key >= n_keys {
            scan.problems.push(format!(
                "page pid {pid} holds page key {}, beyond --pages {n_keys} (use the --pages \
                 of the run that wrote the directory)",
                value.key
            ));
            continue;
        }
        let life = Life {
            pid,
            alloc_seq: value.alloc_seq(),
            last_seq: value.last_seq,
        };
        if let Some(first) = scan.found.get(&value.key) {
            scan.problems.push(format!(
                "page key {} is live twice: at pid {} and at pid {pid}",
                value.key, first.life.pid
            ));
            continue;
        }
        scan.found.insert(
            value.key,
            Found {
                life,
                version: page.version,
                value,
            },
        );
    }
    Ok(scan)
}

/// Compares a scan with the exact final state of every key (`None`: no live page).
pub fn check_exact(scan: &Scan, expected: &BTreeMap<u64, Option<Life>>) -> Problems {
    let mut problems = scan.problems.clone();
    for (&key, want) in expected {
        let got = scan.found.get(&key).map(|found| found.life);
        match (want, got) {
            (Some(want), Some(got)) if *want == got => {}
            (Some(want), Some(got)) => {
                problems.push(format!("page key {key}: expected {want}, found {got}"))
            }
            (Some(want), None) => problems.push(format!(
                "page key {key}: expected {want}, but no live page holds it"
            )),
            (None, Some(got)) => problems.push(format!(
                "page key {key}: expected no live page (freed), found {got}"
            )),
            (None, None) => {}
        }
    }
    for (key, found) in &scan.found {
        if !expected.contains_key(key) {
            problems.push(format!(
                "page key {key}: found {}, but no run wrote it",
                found.life
            ));
        }
    }
    problems
}

/// What is known durable about one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durable {
    /// This life (or a later state of it) must be present.
    Live(Life),
    /// No life must be present, unless it began at seq `below` or later.
    Absent { below: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyModel {
    durable: Durable,
    /// The first free announced since the last report, if any: the durable life may be gone.
    free_announced: Option<u64>,
}

/// What a crash-loop child reported, per key; see the module doc.
#[derive(Clone, Debug)]
pub struct CrashModel {
    keys: Vec<KeyModel>,
}

/// How a crash-loop check went.
#[derive(Clone, Debug, Default)]
pub struct CrashCheck {
    /// Keys whose durable state was missing or older (each a loss).
    pub lost: u64,
    /// Everything wrong, losses included.
    pub problems: Problems,
}

impl CrashModel {
    /// The model after a verified scan: every found life is durable, every other key is
    /// absent and may only come back as a life that began at seq `below` or later (the next
    /// run's seqs start above it).
    pub fn from_scan(scan: &Scan, n_keys: u64, below: u64) -> CrashModel {
        let keys = (0..n_keys)
            .map(|key| KeyModel {
                durable: match scan.found.get(&key) {
                    Some(found) => Durable::Live(found.life),
                    None => Durable::Absent { below },
                },
                free_announced: None,
            })
            .collect();
        CrashModel { keys }
    }

    fn key_mut(&mut self, key: u64) -> Result<&mut KeyModel, String> {
        let n_keys = self.keys.len();
        self.keys
            .get_mut(usize::try_from(key).unwrap_or(usize::MAX))
            .ok_or_else(|| format!("the child reported page key {key} of {n_keys}"))
    }

    /// Applies one line of the child's stdout: `live KEY PID ALLOC LAST` and `freed KEY SEQ`
    /// (durable, after a flush), `freeing KEY SEQ` (before a free). Returns whether it was a
    /// report of a durable state. Other lines are ignored; a malformed line is an error.
    pub fn apply_line(&mut self, line: &str) -> Result<bool, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let numbers = |n: usize| -> Result<Vec<u64>, String> {
            if words.len() != n + 1 {
                return Err(format!("malformed report line {line:?}"));
            }
            words[1..]
                .iter()
                .map(|w| w.parse::<u64>())
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|_| format!("malformed report line {line:?}"))
        };
        match words.first().copied() {
            Some("live") => {
                let n = numbers(4)?;
                let model = self.key_mut(n[0])?;
                model.durable = Durable::Live(Life {
                    pid: n[1],
                    alloc_seq: n[2],
                    last_seq: n[3],
                });
                if model.free_announced.is_some_and(|f| f <= n[3]) {
                    model.free_announced = None;
                }
                Ok(true)
            }
            Some("freed") => {
                let n = numbers(2)?;
                let model = self.key_mut(n[0])?;
                model.durable = Durable::Absent { below: n[1] + 1 };
                if model.free_announced.is_some_and(|f| f <= n[1]) {
                    model.free_announced = None;
                }
                Ok(true)
            }
            Some("freeing") => {
                let n = numbers(2)?;
                let model = self.key_mut(n[0])?;
                model.free_announced.get_or_insert(n[1]);
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Applies every complete line of `text` (a last line without its newline was cut short
    /// by the kill and is ignored). Returns the number of durable reports.
    pub fn apply_text(&mut self, text: &str) -> Result<u64, String> {
        let mut n_reports = 0;
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            n_reports += u64::from(self.apply_line(line)?);
        }
        Ok(n_reports)
    }

    /// Checks a scan of the reopened cache against the model.
    pub fn check(&self, scan: &Scan) -> CrashCheck {
        let mut check = CrashCheck {
            lost: 0,
            problems: scan.problems.clone(),
        };
        for (key, model) in self.keys.iter().enumerate() {
            let key = key as u64;
            let got = scan.found.get(&key).map(|found| found.life);
            match (model.durable, got) {
                (Durable::Live(want), Some(got)) if got.alloc_seq == want.alloc_seq => {
                    if got.pid != want.pid {
                        check.problems.push(format!(
                            "page key {key}: its life moved from pid {} to pid {}",
                            want.pid, got.pid
                        ));
                    } else if got.last_seq < want.last_seq {
                        check.lost += 1;
                        check.problems.push(format!(
                            "page key {key}: ops up to seq {} were acknowledged durable, the \
                             page holds only up to seq {} (pid {})",
                            want.last_seq, got.last_seq, got.pid
                        ));
                    }
                }
                (Durable::Live(want), Some(got)) => match model.free_announced {
                    Some(freed) if got.alloc_seq > freed => {}
                    _ => {
                        check.lost += 1;
                        check.problems.push(format!(
                            "page key {key}: acknowledged durable as {want}, found another life \
                             ({got}) with no free announced before it"
                        ));
                    }
                },
                (Durable::Live(want), None) => {
                    if model.free_announced.is_none() {
                        check.lost += 1;
                        check.problems.push(format!(
                            "page key {key}: acknowledged durable as {want}, but no live page \
                             holds it and it was never freed"
                        ));
                    }
                }
                (Durable::Absent { below }, Some(got)) => {
                    // Every life the child began after the free starts at `below` or later.
                    if got.alloc_seq < below {
                        check.problems.push(format!(
                            "page key {key}: a freed life came back ({got}); only a life \
                             allocated at op seq {below} or later may be present"
                        ));
                    }
                }
                (Durable::Absent { .. }, None) => {}
            }
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(pid: u64, alloc_seq: u64, last_seq: u64) -> Life {
        Life {
            pid,
            alloc_seq,
            last_seq,
        }
    }

    fn scan_of(lives: &[(u64, Life)]) -> Scan {
        let mut scan = Scan::default();
        for &(key, life) in lives {
            scan.found.insert(
                key,
                Found {
                    life,
                    version: version_for_tests(),
                    value: PageValue::op(key, life.last_seq, 40),
                },
            );
        }
        scan
    }

    /// Versions cannot be made outside the cache; read one from a throwaway cache.
    fn version_for_tests() -> Version {
        use std::sync::{Arc, OnceLock};
        static VERSION: OnceLock<Version> = OnceLock::new();
        *VERSION.get_or_init(|| {
            let storage = Arc::new(iobuf::storage::SimStorage::new());
            let config = pagecache::Config::builder().build().unwrap();
            let (cache, _) = PageCache::open(storage, config, PageMaterializer).unwrap();
            let (_, written) = cache.allocate(PageValue::op(0, 0, 40)).unwrap();
            cache.close().unwrap();
            written.version
        })
    }

    #[test]
    fn exact_checks_name_the_key() {
        let scan = scan_of(&[(0, life(5, 0, 3)), (2, life(6, 0, 0))]);
        let expected: BTreeMap<u64, Option<Life>> = [
            (0, Some(life(5, 0, 3))),
            (1, None),
            (2, Some(life(6, 0, 1))),
        ]
        .into_iter()
        .collect();
        let problems = check_exact(&scan, &expected);
        assert_eq!(problems.count, 1);
        assert!(problems.kept[0].starts_with("page key 2: expected pid 6"));
    }

    #[test]
    fn crash_model_accepts_later_states_and_refuses_losses() {
        let start = scan_of(&[(0, life(10, 0, 4)), (1, life(11, 0, 2))]);
        let mut model = CrashModel::from_scan(&start, 4, 100);
        let text = "live 0 10 0 7\nfreeing 1 3\nlive 2 12 100 101\nfreed 3 105\nlive 3 1";
        assert_eq!(model.apply_text(text), Ok(3));
        // Key 0 at a later seq of the same life; key 1 freed (announced); key 2 as reported;
        // key 3 freed as reported.
        let after = scan_of(&[(0, life(10, 0, 9)), (2, life(12, 100, 101))]);
        let check = model.check(&after);
        assert_eq!(check.problems.count, 0, "{:?}", check.problems);
        // Key 0 older than acknowledged; key 2 missing: two losses.
        let after = scan_of(&[(0, life(10, 0, 6))]);
        let check = model.check(&after);
        assert_eq!(check.lost, 2, "{:?}", check.problems);
        // Key 3's old life back (it began before the free at 105).
        let after = scan_of(&[
            (0, life(10, 0, 7)),
            (2, life(12, 100, 101)),
            (3, life(13, 100, 104)),
        ]);
        let check = model.check(&after);
        assert_eq!((check.lost, check.problems.count), (0, 1));
        assert!(check.problems.kept[0].contains("a freed life came back"));
        // A new life of key 1 after its announced free is fine; one before it is not.
        let ok = scan_of(&[
            (0, life(10, 0, 7)),
            (1, life(7, 4, 4)),
            (2, life(12, 100, 101)),
        ]);
        assert_eq!(model.check(&ok).problems.count, 0);
        // A durable report after the announced free clears it: then absence is a loss.
        model.apply_line("live 1 7 4 5\n").unwrap();
        let check = model.check(&scan_of(&[(0, life(10, 0, 7)), (2, life(12, 100, 101))]));
        assert_eq!(check.lost, 1);
        assert!(check.problems.kept[0].starts_with("page key 1"));
    }

    #[test]
    fn malformed_reports_are_errors() {
        let mut model = CrashModel::from_scan(&Scan::default(), 2, 0);
        assert!(model.apply_line("live 0 1 2\n").is_err());
        assert!(model.apply_line("freed x 1\n").is_err());
        assert!(model.apply_line("freed 9 1\n").is_err());
        assert_eq!(model.apply_line("noise\n"), Ok(false));
    }
}
