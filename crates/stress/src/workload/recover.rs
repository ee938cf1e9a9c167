//! The `recover` workload: write `--updates` messages, flush, close, then time the reopen
//! (the recovery scan) and verify every message through the reopened log.

use iobuf::LogMetrics;
use serde_json::json;

use crate::ceilings::Ceilings;
use crate::cli::{Cli, SyncMode};
use crate::error::Error;
use crate::progress::{Goal, Progress};
use crate::report::{Ratio, RunReport, Unit};
use crate::stats::{Latencies, OpStats};
use crate::verify::Expect;
use crate::workload::{
    Acks, AppendPlan, Out, Target, close_after, dir_size, log_config, open_and_scan, run_appenders,
    verify_dir,
};

/// Runs the workload on `target` and verifies it.
pub fn run(
    cli: &Cli,
    target: &Target,
    ceilings: Option<Ceilings>,
    out: Out,
) -> Result<RunReport, Error> {
    let (log, existing) = open_and_scan(&target.dir)?;
    let config = log_config();
    let mut settings = vec![
        ("run", json!(existing.run)),
        ("updates", json!(cli.updates)),
        ("threads", json!(cli.threads)),
        ("message_len_bytes", json!(cli.message_len_bytes)),
        ("sync", json!(cli.sync_mode().name())),
    ];
    if cli.sync_mode() == SyncMode::Batch {
        settings.push(("batch_len", json!(cli.batch_len)));
    }
    settings.push(("segment_len_bytes", json!(config.segment_len_bytes)));
    out.say(&format!(
        "stress recover: writing {} messages of {} bytes with {} thread(s), sync {}, in {} ({})",
        cli.updates,
        cli.message_len_bytes,
        cli.threads,
        cli.sync_mode().name(),
        target.dir.display(),
        existing.report
    ));
    let plan = AppendPlan {
        run: existing.run,
        n_threads: cli.threads,
        message_len_bytes: cli.message_len_bytes,
        sync: cli.sync_mode(),
        batch_len: cli.batch_len,
        goal: Goal::Count(cli.updates),
    };
    let acks = Acks::new(cli.threads, false);
    let mut progress = Progress::start("recover: writes", plan.goal, true);
    let appended = run_appenders(&log, plan, &acks, &mut progress);
    progress.finish();
    let appended = match appended {
        Ok(appended) => appended,
        Err(error) => return Err(close_after(log, error)),
    };
    if let Err(e) = log.flush() {
        return Err(close_after(
            log,
            Error::log("flushing the written messages", e),
        ));
    }
    let metrics = log.metrics();
    let bytes_written = LogMetrics::get(&metrics.written_bytes);
    let n_syncs = LogMetrics::get(&metrics.n_syncs);
    let sync_secs = metrics.sync_latency.total().as_secs_f64();
    log.close().map_err(|e| Error::log("closing the log", e))?;

    out.say("stress recover: reopening (timed) and reading every message back");
    let mut expected = existing.expectations();
    for (thread, &written) in appended.written.iter().enumerate() {
        expected.insert(
            (existing.run, thread as u32),
            Expect {
                durable: written,
                exact: Some(written),
            },
        );
    }
    let (verification, outcome, open_elapsed) = verify_dir(&target.dir, expected)?;
    let scan_bytes_per_second =
        verification.recovery.bytes_scanned as f64 / open_elapsed.as_secs_f64().max(1e-9);

    let elapsed = appended.elapsed;
    let elapsed_secs = elapsed.as_secs_f64();
    let n_appends: u64 = appended.written.iter().sum();
    let mut open_latency = Latencies::default();
    open_latency.record(open_elapsed);
    let mut ops = vec![OpStats::new("append", &appended.append, elapsed)];
    if appended.make_stable.count() > 0 {
        ops.push(OpStats::new("make_stable", &appended.make_stable, elapsed));
    }
    ops.push(OpStats::new("open", &open_latency, open_elapsed));
    let ratios = ceilings.map(|c| {
        let ratios = vec![
            Ratio {
                figure: "recovery scan bytes/s".to_owned(),
                value: scan_bytes_per_second,
                ceiling: "C2 sequential write + sync",
                ceiling_value: c.sequential_bytes_per_second,
                unit: Unit::BytesPerSecond,
            },
            Ratio {
                figure: "data file bytes/s (writing)".to_owned(),
                value: bytes_written as f64 / elapsed_secs,
                ceiling: "C2 sequential write + sync",
                ceiling_value: c.sequential_bytes_per_second,
                unit: Unit::BytesPerSecond,
            },
        ];
        (c, ratios)
    });
    Ok(RunReport {
        workload: "recover",
        settings,
        dir: target.dir.display().to_string(),
        dir_kept: target.kept,
        opened: existing.report,
        opened_page_cache: None,
        elapsed_secs,
        ops,
        bytes_written,
        payload_bytes: n_appends * u64::from(cli.message_len_bytes),
        file_bytes: dir_size(&target.dir)?,
        live_bytes: outcome.bytes_checked,
        cache_hit_ratio: None,
        n_syncs,
        sync_secs,
        figures: vec![
            ("open_secs", open_elapsed.as_secs_f64()),
            ("scan_bytes_per_second", scan_bytes_per_second),
            (
                "messages_recovered",
                verification.recovery.messages_recovered as f64,
            ),
        ],
        ceilings: ratios,
        verification,
    })
}
