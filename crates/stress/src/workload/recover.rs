//! The `recover` workload: write `--updates` messages, flush, close, then time the reopen
//! (the recovery scan) and verify every message through the reopened log.

use serde_json::json;

use crate::ceilings::Ceilings;
use crate::cli::{Cli, SyncMode};
use crate::error::Error;
use crate::progress::Goal;
use crate::report::{Ratio, RunReport, Unit};
use crate::stats::{Latencies, OpStats};
use crate::workload::{
    AppendRun, Out, Target, append_then_verify, dir_size, log_config, open_and_scan,
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
    let AppendRun {
        appended,
        final_flush: _,
        bytes_written,
        n_syncs,
        sync_secs,
        verification,
        outcome,
        open_elapsed,
    } = append_then_verify(
        cli,
        target,
        log,
        &existing,
        Goal::Count(cli.updates),
        "recover: writes",
        || out.say("stress recover: reopening (timed) and reading every message back"),
    )?;
    let scan_bytes_per_second =
        verification.recovery.bytes_scanned as f64 / open_elapsed.as_secs_f64().max(1e-9);

    let elapsed_secs = appended.elapsed.as_secs_f64();
    let n_appends = appended.n_appends();
    let mut open_latency = Latencies::default();
    open_latency.record(open_elapsed);
    let mut ops = appended.op_stats();
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
