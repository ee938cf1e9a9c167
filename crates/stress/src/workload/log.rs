//! The `log` workload: threads appending self-describing messages to a plain log for a fixed
//! time, making them durable as `--sync` says; then a final flush, a close, and verification.

use std::time::Instant;

use iobuf::LogMetrics;
use serde_json::json;

use crate::ceilings::Ceilings;
use crate::cli::{Cli, SyncMode};
use crate::error::Error;
use crate::progress::{Goal, Progress};
use crate::report::{Ratio, RunReport, Unit};
use crate::stats::OpStats;
use crate::verify::Expect;
use crate::workload::{
    Acks, AppendPlan, Out, Target, close_after, dir_size, log_config, open_and_scan, run_appenders,
    verify_dir,
};

/// The settings a log run reports.
pub fn settings(cli: &Cli, run: u32) -> Vec<(&'static str, serde_json::Value)> {
    let config = log_config();
    let mut settings = vec![
        ("run", json!(run)),
        ("threads", json!(cli.threads)),
        ("message_len_bytes", json!(cli.message_len_bytes)),
        ("sync", json!(cli.sync_mode().name())),
    ];
    if cli.sync_mode() == SyncMode::Batch {
        settings.push(("batch_len", json!(cli.batch_len)));
    }
    settings.extend([
        ("duration_secs", json!(cli.duration_secs)),
        ("segment_len_bytes", json!(config.segment_len_bytes)),
        ("io_buf_len_bytes", json!(config.io_buf_len_bytes)),
        ("n_io_bufs", json!(config.n_io_bufs)),
        (
            "flush_every_ms",
            json!(config.flush_every.map(|d| d.as_millis() as u64)),
        ),
    ]);
    settings
}

/// Runs the workload on `target` and verifies it.
pub fn run(
    cli: &Cli,
    target: &Target,
    ceilings: Option<Ceilings>,
    out: Out,
) -> Result<RunReport, Error> {
    let (log, existing) = open_and_scan(&target.dir)?;
    let settings = settings(cli, existing.run);
    out.say(&format!(
        "stress log: {} thread(s) appending {}-byte messages for {:.1} s, sync {}, in {} ({})",
        cli.threads,
        cli.message_len_bytes,
        cli.duration_secs,
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
        goal: Goal::Time(cli.duration()),
    };
    let acks = Acks::new(cli.threads, false);
    let mut progress = Progress::start("log: appends", plan.goal, true);
    let appended = run_appenders(&log, plan, &acks, &mut progress);
    progress.finish();
    let appended = match appended {
        Ok(appended) => appended,
        Err(error) => return Err(close_after(log, error)),
    };
    let flush_started = Instant::now();
    if let Err(e) = log.flush() {
        return Err(close_after(
            log,
            Error::log("flushing at the end of the run", e),
        ));
    }
    let final_flush = flush_started.elapsed();
    let metrics = log.metrics();
    let bytes_written = LogMetrics::get(&metrics.written_bytes);
    let n_syncs = LogMetrics::get(&metrics.n_syncs);
    let sync_secs = metrics.sync_latency.total().as_secs_f64();
    log.close()
        .map_err(|e| Error::log("closing the log after the run", e))?;

    out.say("stress log: verifying: reopening the directory and reading every message back");
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
    let (verification, outcome, _) = verify_dir(&target.dir, expected)?;

    let elapsed = appended.elapsed;
    let elapsed_secs = elapsed.as_secs_f64();
    let n_appends: u64 = appended.written.iter().sum();
    let mut ops = vec![OpStats::new("append", &appended.append, elapsed)];
    if appended.make_stable.count() > 0 {
        ops.push(OpStats::new("make_stable", &appended.make_stable, elapsed));
    }
    let ratios = ceilings.map(|c| {
        let mut ratios = Vec::new();
        if cli.sync_mode() == SyncMode::None {
            ratios.push(Ratio {
                figure: "unsynced appends/s".to_owned(),
                value: n_appends as f64 / elapsed_secs,
                ceiling: "C3 uncontended CAS",
                ceiling_value: c.cas_per_second,
                unit: Unit::Rate,
            });
        } else {
            ratios.push(Ratio {
                figure: "durable points/s (make_stable)".to_owned(),
                value: appended.make_stable.count() as f64 / elapsed_secs,
                ceiling: "C1 4 KiB write + fdatasync",
                ceiling_value: c.sync_writes_per_second,
                unit: Unit::Rate,
            });
            ratios.push(Ratio {
                figure: "fdatasyncs/s".to_owned(),
                value: n_syncs as f64 / elapsed_secs,
                ceiling: "C1 4 KiB write + fdatasync",
                ceiling_value: c.sync_writes_per_second,
                unit: Unit::Rate,
            });
        }
        ratios.push(Ratio {
            figure: "data file bytes/s".to_owned(),
            value: bytes_written as f64 / elapsed_secs,
            ceiling: "C2 sequential write + sync",
            ceiling_value: c.sequential_bytes_per_second,
            unit: Unit::BytesPerSecond,
        });
        (c, ratios)
    });
    Ok(RunReport {
        workload: "log",
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
            ("acked_durable", appended.acked as f64),
            ("final_flush_secs", final_flush.as_secs_f64()),
        ],
        ceilings: ratios,
        verification,
    })
}
