//! From a parsed command line to a finished report: prepare the directory, measure the
//! ceilings if asked, run the workload or the crash loop.

use crate::ceilings;
use crate::cli::{Cli, Workload};
use crate::crash;
use crate::error::Error;
use crate::report::{CrashLoopReport, RunReport};
use crate::workload::{self, Out, Target};

/// What a run produced.
#[derive(Debug)]
pub enum Finished {
    /// A timed workload run.
    Run(Box<RunReport>),
    /// A crash loop.
    CrashLoop(Box<CrashLoopReport>),
}

impl Finished {
    /// Whether verification passed.
    pub fn passed(&self) -> bool {
        match self {
            Finished::Run(report) => report.verification.passed,
            Finished::CrashLoop(report) => report.passed(),
        }
    }

    /// The failure, on one line, when verification did not pass.
    pub fn failure(&self) -> Option<Error> {
        if self.passed() {
            return None;
        }
        let line = match self {
            Finished::Run(report) => report.verification.problems_line.clone(),
            Finished::CrashLoop(report) => format!(
                "{} acknowledged {} lost; {}",
                report.lost,
                if report.workload == "pages" {
                    "page state(s)"
                } else {
                    "message(s)"
                },
                report.last.problems_line
            ),
        };
        Some(Error::Verification(line))
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        match self {
            Finished::Run(report) => report.to_text(),
            Finished::CrashLoop(report) => report.to_text(),
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Finished::Run(report) => report.to_json(),
            Finished::CrashLoop(report) => report.to_json(),
        }
    }
}

/// Runs what `cli` asks for. The temporary directory (if any) is removed before this returns.
pub fn run(cli: &Cli) -> Result<Finished, Error> {
    let out = Out { json: cli.json };
    let target = Target::prepare(cli.dir.as_deref())?;
    if let Some(n_kills) = cli.crash_loop {
        let report = crash::run_loop(cli, &target, n_kills, out)?;
        return Ok(Finished::CrashLoop(Box::new(report)));
    }
    let ceilings = if cli.ceilings {
        out.say(&format!(
            "stress: measuring the ceilings on {} (about 3 s)",
            target.dir.display()
        ));
        Some(ceilings::measure(&target.dir)?)
    } else {
        None
    };
    let report = match cli.workload {
        Workload::Pages => workload::pages::run(cli, &target, ceilings, out)?,
        Workload::Log => workload::log::run(cli, &target, ceilings, out)?,
        Workload::Recover => workload::recover::run(cli, &target, ceilings, out)?,
    };
    Ok(Finished::Run(Box::new(report)))
}
