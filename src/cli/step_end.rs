//! How a step ended, in one phrase: what `baton run` and `kubectl baton job logs`
//! print for a step.

use crate::crd::job::{StepPhase, StepStatus};

/// The step's phase, `Failed (allowed)` when `allowFailure` let its failure pass.
pub fn phase_text(s: &StepStatus) -> String {
    if s.is_allowed_failure() {
        "Failed (allowed)".to_owned()
    } else {
        format!("{:?}", s.phase)
    }
}

/// One line on a step that failed or was cancelled, naming why:
/// `build Failed: OOMKilled, exit code 137: message`;
/// `None` for a step that succeeded or has not ended.
pub fn failure_line(s: &StepStatus) -> Option<String> {
    if !matches!(s.phase, StepPhase::Failed | StepPhase::Cancelled) {
        return None;
    }
    let mut line = format!("{} {}", s.name, phase_text(s));
    if let Some(reason) = &s.reason {
        line.push_str(&format!(": {reason}"));
    }
    if let Some(code) = s.exit_code {
        line.push_str(&format!(", exit code {code}"));
    }
    if let Some(message) = &s.message {
        line.push_str(&format!(": {message}"));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: StepPhase, reason: Option<&str>, allowed: bool) -> StepStatus {
        StepStatus {
            name: "build".to_owned(),
            phase,
            reason: reason.map(str::to_owned),
            failure_allowed: allowed.then_some(true),
            ..Default::default()
        }
    }

    #[test]
    fn phase_texts() {
        use StepPhase::{Cancelled, Failed, Running, Skipped, Succeeded};
        let cases = [
            (status(Succeeded, Some("Completed"), false), "Succeeded"),
            (status(Running, None, false), "Running"),
            (status(Skipped, Some("DependencyFailed"), false), "Skipped"),
            (status(Cancelled, Some("Cancelled"), false), "Cancelled"),
            (status(Failed, Some("OOMKilled"), false), "Failed"),
            (status(Failed, None, true), "Failed (allowed)"),
            (status(Failed, Some("Error"), true), "Failed (allowed)"),
            // failureAllowed only means something on a Failed step.
            (status(Succeeded, None, true), "Succeeded"),
        ];
        for (s, want) in cases {
            assert_eq!(phase_text(&s), want, "{s:?}");
        }
    }

    #[test]
    fn failure_lines() {
        let mut oom = status(StepPhase::Failed, Some("OOMKilled"), false);
        oom.exit_code = Some(137);
        oom.message = Some("exceeded its memory limit".to_owned());
        assert_eq!(
            failure_line(&oom).as_deref(),
            Some("build Failed: OOMKilled, exit code 137: exceeded its memory limit")
        );
        let allowed = status(StepPhase::Failed, Some("Error"), true);
        assert_eq!(
            failure_line(&allowed).as_deref(),
            Some("build Failed (allowed): Error")
        );
        let ok = status(StepPhase::Succeeded, Some("Completed"), false);
        assert_eq!(failure_line(&ok), None);
        let skipped = status(StepPhase::Skipped, Some("DependencyFailed"), false);
        assert_eq!(failure_line(&skipped), None);
    }
}
