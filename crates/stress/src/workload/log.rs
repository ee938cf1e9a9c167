//! The `log` workload: threads appending self-describing messages to a plain log for a fixed
//! time, making them durable as `--sync` says; then a final flush, a close, and verification.

use serde_json::json;

use crate::ceilings::Ceilings;
use crate::cli::{Cli, SyncMode};
use crate::error::Error;
use crate::progress::Goal;
use crate::report::{Ratio, RunReport, Unit};
use crate::workload::{
    AppendRun, Out, Target, append_then_verify, dir_size, log_config, open_and_scan,
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
    let AppendRun {
        appended,
        final_flush,
        bytes_written,
        n_syncs,
        sync_secs,
        verification,
        outcome,
        open_elapsed: _,
    } = append_then_verify(
        cli,
        target,
        log,
        &existing,
        Goal::Time(cli.duration()),
        "log: appends",
        || out.say("stress log: verifying: reopening the directory and reading every message back"),
    )?;

    let elapsed_secs = appended.elapsed.as_secs_f64();
    let n_appends = appended.n_appends();
    let ops = appended.op_stats();
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
        dir_kept: target.kept(),
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
