//! What `baton run` prints: each step's output line by line behind a `[step]`
//! prefix, a line when a step starts or ends (with the steps still running), and
//! a summary table with the outputs at the end. Colour only on a terminal.
//!
//! stdout and stderr of a step arrive merged, in the order the step wrote them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::super::step_end;
use crate::backend::LogChunk;
use crate::crd::JobSpec;
use crate::crd::job::{JobPhase, StepPhase, StepStatus};
use crate::executor::{JobReport, LogSink, StatusSink};

const PALETTE: [&str; 6] = ["36", "35", "33", "34", "32", "96"];
const RESET: &str = "\x1b[0m";

/// Prints one Job's run to stdout. Write errors (a closed pipe) are ignored: the
/// run goes on and the exit code still tells the result.
pub struct Console {
    color: bool,
    /// Step names in spec order, for a stable "running" list.
    order: Vec<String>,
    width: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bytes after the last newline, per step, until the rest of the line comes.
    partial: HashMap<String, Vec<u8>>,
    running: Vec<String>,
}

impl Console {
    pub fn new(spec: &JobSpec, color: bool) -> Self {
        let order: Vec<String> = spec.steps.iter().map(|s| s.name.clone()).collect();
        let width = order.iter().map(String::len).max().unwrap_or(0);
        Self {
            color,
            order,
            width,
            state: Mutex::new(State::default()),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn prefix(&self, step: &str) -> String {
        let index = self.order.iter().position(|s| s == step).unwrap_or(0);
        let label = format!(
            "[{step}]{:pad$}",
            "",
            pad = self.width.saturating_sub(step.len())
        );
        self.paint(PALETTE[index % PALETTE.len()], &label)
    }

    fn print_lines(&self, step: &str, lines: &[&[u8]]) {
        let prefix = self.prefix(step);
        let mut out = std::io::stdout().lock();
        for line in lines {
            let text = String::from_utf8_lossy(line);
            let _ = writeln!(out, "{prefix} {}", text.trim_end_matches('\r'));
        }
        let _ = out.flush();
    }

    fn say(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.paint("1", text));
        let _ = out.flush();
    }

    fn running_list(&self, running: &[String]) -> String {
        let names: Vec<&str> = self
            .order
            .iter()
            .filter(|s| running.contains(s))
            .map(String::as_str)
            .collect();
        if names.is_empty() {
            "running: none".to_owned()
        } else {
            format!("running: {}", names.join(", "))
        }
    }

    /// The summary table and the Job's outputs.
    pub fn summary(&self, job: &str, report: &JobReport) {
        let mut rows = vec![["STEP", "PHASE", "EXIT", "DURATION", "REASON"].map(str::to_owned)];
        for step in &report.steps {
            let s = &step.status;
            rows.push([
                s.name.clone(),
                step_end::phase_text(s),
                s.exit_code.map_or("-".to_owned(), |c| c.to_string()),
                step.duration.map_or("-".to_owned(), format_duration),
                s.reason.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = std::io::stdout().lock();
        let verdict = format!(
            "Job {job}: {:?} in {}",
            report.phase,
            format_duration(report.duration)
        );
        let verdict = match (&report.reason, &report.message) {
            (Some(reason), Some(message)) => format!("{verdict} ({reason}: {message})"),
            (Some(reason), None) => format!("{verdict} ({reason})"),
            _ => verdict,
        };
        let _ = writeln!(
            out,
            "\n{}\n",
            self.paint(
                if report.phase == JobPhase::Succeeded {
                    "1;32"
                } else {
                    "1;31"
                },
                &verdict
            )
        );
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
        for step in report
            .steps
            .iter()
            .filter(|s| s.status.message.is_some() && s.status.phase != StepPhase::Skipped)
        {
            if let Some(message) = &step.status.message {
                let _ = writeln!(out, "  {}: {message}", step.status.name);
            }
        }
        let archives: Vec<_> = report
            .steps
            .iter()
            .filter_map(|s| Some((&s.status.name, s.status.artifacts.as_ref()?)))
            .collect();
        if !archives.is_empty() {
            let _ = writeln!(out, "\nchanges collected:");
            for (name, a) in archives {
                let _ = writeln!(
                    out,
                    "  {name}: {} added, {} modified, {} deleted ({} bytes, {})",
                    a.added, a.modified, a.deleted, a.size, a.digest
                );
            }
        }
        if report.outputs.is_empty() {
            let _ = writeln!(out, "\noutputs: none");
        } else {
            let _ = writeln!(out, "\noutputs:");
            for (key, value) in &report.outputs {
                if value.contains('\n') {
                    let _ = writeln!(out, "  {key}<<EOF");
                    for line in value.lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                    let _ = writeln!(out, "  EOF");
                } else {
                    let _ = writeln!(out, "  {key}={value}");
                }
            }
        }
        let _ = out.flush();
    }
}

impl StatusSink for Console {
    async fn step_changed(&self, status: &StepStatus) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let name = &status.name;
        if status.phase == StepPhase::Running {
            if !state.running.contains(name) {
                state.running.push(name.clone());
            }
            self.say(&format!(
                "--> {name} started ({})",
                self.running_list(&state.running)
            ));
            return;
        }
        // The log of a step is complete before its end is reported: flush its last line.
        if let Some(rest) = state.partial.remove(name).filter(|r| !r.is_empty()) {
            self.print_lines(name, &[&rest]);
        }
        let was_running = state.running.contains(name);
        state.running.retain(|s| s != name);
        let mut line = format!("<-- {name} {}", step_end::phase_text(status));
        if let Some(code) = status.exit_code {
            line.push_str(&format!(" (exit {code})"));
        }
        if let Some(reason) = &status.reason {
            line.push_str(&format!(": {reason}"));
        }
        if let Some(message) = &status.message {
            line.push_str(&format!(" — {message}"));
        }
        if was_running {
            line.push_str(&format!(" ({})", self.running_list(&state.running)));
        }
        self.say(&line);
    }

    async fn job_changed(&self, _: JobPhase, _: Option<&str>) {}
}

impl LogSink for Console {
    async fn append(&self, chunk: LogChunk) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let buffer = state.partial.entry(chunk.step.clone()).or_default();
        buffer.extend_from_slice(&chunk.bytes);
        let Some(last_newline) = buffer.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = buffer.split_off(last_newline + 1);
        let complete = std::mem::replace(buffer, rest);
        let lines: Vec<&[u8]> = complete[..complete.len() - 1]
            .split(|&b| b == b'\n')
            .collect();
        self.print_lines(&chunk.step, &lines);
    }
}

/// `0.42s`, `12.3s`, `2m05s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_millis(420)), "0.42s");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }
}
