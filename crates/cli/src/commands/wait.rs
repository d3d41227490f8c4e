//! Waiting for the server to finish a change: a deadline with a poll interval,
//! and the progress display of `cluster create --wait` (indicatif bars on a
//! terminal, plain lines when stdout is a file or a pipe).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal_api::Cluster;
use tokio::time::Instant;

use crate::client::CliError;
use crate::commands::cluster_view::{progress_line, ready_condition, MachineCounts};
use crate::output::{emit, emit_line};

/// How often waiting commands look again.
pub const POLL: Duration = Duration::from_millis(500);

/// When a `--wait` gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    end: Instant,
    seconds: u64,
}

impl Deadline {
    /// A deadline `seconds` from now.
    pub fn after(seconds: u64) -> Self {
        Self {
            end: Instant::now() + Duration::from_secs(seconds),
            seconds,
        }
    }

    /// The time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Sleeps one poll interval (less when the deadline is nearer); false once the
    /// deadline has passed, so that callers look one last time before giving up.
    pub async fn tick(&self) -> bool {
        let left = self.remaining();
        if left.is_zero() {
            return false;
        }
        tokio::time::sleep(left.min(POLL)).await;
        true
    }

    /// The error for giving up on `what`, with where things stand.
    pub fn timeout(&self, what: impl Into<String>, detail: impl Into<String>) -> CliError {
        CliError::Timeout {
            what: what.into(),
            seconds: self.seconds,
            detail: detail.into(),
        }
    }
}

/// Prints a line when it differs from the last one printed.
#[derive(Debug, Default)]
pub struct LinePrinter {
    last: String,
}

impl LinePrinter {
    /// Prints `line` unless it is the one printed last.
    pub fn print(&mut self, line: String) -> Result<(), CliError> {
        if line != self.last {
            emit_line(&line)?;
            self.last = line;
        }
        Ok(())
    }
}

/// The bars of a terminal display.
struct Bars {
    scheduled: ProgressBar,
    booting: ProgressBar,
    ready: ProgressBar,
    cluster: ProgressBar,
}

impl Bars {
    fn all(&self) -> [&ProgressBar; 4] {
        [&self.scheduled, &self.booting, &self.ready, &self.cluster]
    }
}

/// Shows a cluster's Machines coming up: one bar per phase on a terminal, else
/// one line per change.
pub struct ClusterProgress {
    bars: Option<Bars>,
    lines: LinePrinter,
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.cyan} {prefix:>9.bold} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:>9.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn cluster_message(cluster: &Cluster) -> String {
    let phase = cluster
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into());
    match ready_condition(cluster) {
        Some(r) if !r.message.is_empty() => format!("{phase}: {}", r.message),
        _ => phase,
    }
}

impl ClusterProgress {
    /// Bars when stdout is a terminal, else lines.
    pub fn new(desired: u32) -> Self {
        let bars = std::io::stdout().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let bar = |prefix: &'static str, style: ProgressStyle, len: Option<u32>| {
                let b = match len {
                    Some(n) => ProgressBar::new(u64::from(n)),
                    None => ProgressBar::new_spinner(),
                };
                let b = multi.add(b);
                b.set_style(style);
                b.set_prefix(prefix);
                b.enable_steady_tick(Duration::from_millis(120));
                b
            };
            Bars {
                scheduled: bar("scheduled", bar_style(), Some(desired)),
                booting: bar("booting", bar_style(), Some(desired)),
                ready: bar("ready", bar_style(), Some(desired)),
                cluster: bar("cluster", spinner_style(), None),
            }
        });
        Self {
            bars,
            lines: LinePrinter::default(),
        }
    }

    /// Shows the latest counts and cluster status.
    pub fn update(
        &mut self,
        counts: &MachineCounts,
        cluster: Option<&Cluster>,
    ) -> Result<(), CliError> {
        let Some(b) = &self.bars else {
            return self.lines.print(progress_line(counts, cluster));
        };
        let d = counts.desired;
        b.scheduled.set_position(u64::from(counts.scheduled.min(d)));
        b.booting.set_position(u64::from(counts.booting.min(d)));
        b.ready.set_position(u64::from(counts.ready.min(d)));
        // An unschedulable or failed Machine shows on the bar it holds back.
        let blocked = counts.blocked.first();
        let note = |state: &str| {
            blocked
                .filter(|x| x.state == state)
                .map(|x| x.line())
                .unwrap_or_default()
        };
        b.scheduled.set_message(note("unschedulable"));
        b.booting.set_message(note("failed"));
        b.cluster
            .set_message(cluster.map(cluster_message).unwrap_or_default());
        Ok(())
    }

    /// Stops the bars, leaving their last state on the screen.
    pub fn finish(self) -> Result<(), CliError> {
        let Some(b) = self.bars else { return Ok(()) };
        for bar in b.all() {
            bar.abandon();
        }
        // indicatif leaves the cursor at the end of the last bar's line.
        emit("\n")
    }
}
