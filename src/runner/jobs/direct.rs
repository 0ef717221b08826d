//! A direct-only runner's own check (`--direct-only`, and the CLI's `--here`
//! runner): it runs only Jobs whose `spec.runnerName` is its name. The
//! controller's queue never hands it others; this is the second line, for a
//! controller that is wrong (an older version, a bug) or a Job assigned before
//! the runner came back direct-only.

use std::path::PathBuf;

use super::{JobRunner, Sink};
use crate::crd::reasons::reason;
use crate::protocol::jobs::ClaimResponse;

/// Why a runner named `me` refuses a Job that names `named` (`spec.runnerName`),
/// or `None` when it runs it.
pub fn refusal(direct_only: bool, me: &str, named: Option<&str>) -> Option<String> {
    match named {
        _ if !direct_only => None,
        Some(n) if n == me => None,
        Some(other) => Some(format!(
            "runner {me} is direct-only and the Job names runner {other} (spec.runnerName)"
        )),
        None => Some(format!(
            "runner {me} is direct-only and takes only Jobs that name it (spec.runnerName: {me}); this Job names no runner"
        )),
    }
}

impl JobRunner {
    /// Direct-only (take only Jobs naming this runner); `workspace`: with the
    /// local backend, the directory every Job's steps use as `/workspace`.
    pub fn with_direct(mut self, direct_only: bool, workspace: Option<PathBuf>) -> Self {
        self.direct_only = direct_only;
        self.workspace = workspace;
        self
    }

    /// Whether the claimed Job is refused; if so, it ends Failed saying why
    /// (waiting would leave it assigned here for ever, to a runner that never runs it).
    pub(super) async fn refused(&self, claim: &ClaimResponse, sink: &Sink) -> bool {
        let named = claim.spec.runner_name.as_deref();
        let Some(why) = refusal(self.direct_only, &self.runner, named) else {
            return false;
        };
        sink.fail(reason::NOT_ASSIGNED_BY_NAME, why).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn a_direct_only_runner_runs_only_jobs_that_name_it() {
        // (direct-only, spec.runnerName) -> refused?
        let cases = [
            (false, None, false),
            (false, Some("other"), false),
            (false, Some("me"), false),
            (true, Some("me"), false),
            (true, None, true),
            (true, Some("other"), true),
            // Names compare exactly: no prefix or case games.
            (true, Some("me2"), true),
            (true, Some("ME"), true),
        ];
        for (direct_only, named, refused) in cases {
            let got = refusal(direct_only, "me", named);
            assert_eq!(got.is_some(), refused, "{direct_only} {named:?}: {got:?}");
        }
        let why = refusal(true, "me", Some("other")).unwrap_or_default();
        assert!(
            why.contains("direct-only") && why.contains("other"),
            "{why}"
        );
        let why = refusal(true, "me", None).unwrap_or_default();
        assert!(why.contains("spec.runnerName: me"), "{why}");
    }
}
