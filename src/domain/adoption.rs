//! The adoption state machine, as pure functions: what the server answers a runner
//! that registers (given its token and what the cluster knows of it), and which
//! `status.adoption` a Runner shows.
//!
//! | token presented            | Runner known as          | answer                      |
//! |----------------------------|--------------------------|-----------------------------|
//! | any                        | `spec.adoption: Rejected`| 403 Rejected                |
//! | expired / unknown / other runner's | not rejected     | 401 (runner drops it, registers without) |
//! | valid                      | none (new or forgotten)  | 200 Preadopted, create      |
//! | valid                      | undecided                | 200 Preadopted              |
//! | valid                      | `Adopted`                | 200 Adopted                 |
//! | none                       | none (new or forgotten)  | 202 Pending, create         |
//! | none                       | undecided, same id       | 202 Pending                 |
//! | none                       | `Adopted`, same id       | issue its token (200 when minted, 202 until then) |
//! | none                       | another runner id        | 409 name taken              |

use crate::crd::runner::{AdoptionDecision, AdoptionState};
use crate::domain::token::TokenCheck;

/// What the cluster knows of a runner of that name (its Runner object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    pub decision: Option<AdoptionDecision>,
    /// `status.runnerId`: the id the runner registered with.
    pub runner_id: Option<String>,
}

/// The server's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 401: the token is no good; the runner forgets it and registers without one.
    Unauthorized {
        reason: &'static str,
        message: String,
    },
    /// 403: an operator rejected this runner.
    Forbidden {
        reason: &'static str,
        message: String,
    },
    /// 409: without a token, a name already held by another runner id is refused.
    Conflict { message: String },
    /// 202: waits for an operator's decision; create the Runner when `create`.
    Pending { create: bool },
    /// Adopted while it had no token: hand it the token issued for it.
    IssueToken,
    /// 200: registered with a valid token.
    Registered {
        adoption: AdoptionState,
        create: bool,
    },
}

impl Outcome {
    /// The HTTP status code the outcome is answered with (IssueToken: once minted).
    pub fn http_status(&self) -> u16 {
        match self {
            Outcome::Unauthorized { .. } => 401,
            Outcome::Forbidden { .. } => 403,
            Outcome::Conflict { .. } => 409,
            Outcome::Pending { .. } => 202,
            Outcome::IssueToken | Outcome::Registered { .. } => 200,
        }
    }
}

/// Decide a registration (or a control-channel request, which additionally needs
/// a `Registered` outcome).
pub fn decide(check: &TokenCheck, known: Option<&Known>, runner_id: &str) -> Outcome {
    let decision = known.and_then(|k| k.decision);
    if decision == Some(AdoptionDecision::Rejected) {
        return Outcome::Forbidden {
            reason: "Rejected",
            message: "an operator rejected this runner (spec.adoption: Rejected); \
                      delete the Runner to forget it"
                .into(),
        };
    }
    match check {
        TokenCheck::Expired { token } => Outcome::Unauthorized {
            reason: "TokenExpired",
            message: format!("the token of RunnerToken {token} has expired"),
        },
        TokenCheck::Unknown => Outcome::Unauthorized {
            reason: "TokenUnknown",
            message: "the token matches no RunnerToken (unknown, or its RunnerToken was deleted)"
                .into(),
        },
        TokenCheck::WrongRunner { token, runner_name } => Outcome::Unauthorized {
            reason: "TokenForAnotherRunner",
            message: format!("RunnerToken {token} may only be used by runner {runner_name}"),
        },
        TokenCheck::Valid(_) => Outcome::Registered {
            adoption: if decision == Some(AdoptionDecision::Adopted) {
                AdoptionState::Adopted
            } else {
                AdoptionState::Preadopted
            },
            create: known.is_none(),
        },
        TokenCheck::Absent => match known {
            None => Outcome::Pending { create: true },
            Some(k) if k.runner_id.as_deref().is_some_and(|id| id != runner_id) => {
                Outcome::Conflict {
                    message: "a runner with another id holds this name; \
                              present its token, or delete the Runner"
                        .into(),
                }
            }
            Some(_) if decision == Some(AdoptionDecision::Adopted) => Outcome::IssueToken,
            Some(_) => Outcome::Pending { create: false },
        },
    }
}

/// What the server last saw of a runner's credential. `None`: nothing since this
/// controller started (the Runner's previous status stands).
pub type Credential = Option<bool>;

/// `status.adoption` of a Runner, from the operator's decision, whether the runner
/// last registered with a valid token, and the previous status.
pub fn status_adoption(
    decision: Option<AdoptionDecision>,
    has_token: Credential,
    previous: Option<AdoptionState>,
) -> AdoptionState {
    match (decision, has_token) {
        (Some(AdoptionDecision::Rejected), _) => AdoptionState::Rejected,
        (Some(AdoptionDecision::Adopted), _) => AdoptionState::Adopted,
        (None, Some(true)) => AdoptionState::Preadopted,
        (None, Some(false)) => AdoptionState::Pending,
        (None, None) => match previous {
            Some(AdoptionState::Preadopted | AdoptionState::Adopted) => AdoptionState::Preadopted,
            _ => AdoptionState::Pending,
        },
    }
}

/// Name of the RunnerToken the controller issues when a Pending runner is adopted.
/// Runner names are DNS labels (at most 63 characters), so this always fits.
pub fn issued_token_name(runner: &str) -> String {
    format!("{runner}-adopted")
}

/// Label on a RunnerToken issued by adoption, naming the runner.
pub const ISSUED_FOR_LABEL: &str = "baton.dev/issued-for-runner";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::token::ValidToken;
    use AdoptionDecision::{Adopted, Rejected};

    fn valid() -> TokenCheck {
        TokenCheck::Valid(ValidToken {
            token: "t".into(),
            namespace: "ns".into(),
            labels: Default::default(),
        })
    }

    fn known(decision: Option<AdoptionDecision>, id: &str) -> Option<Known> {
        Some(Known {
            decision,
            runner_id: Some(id.into()),
        })
    }

    fn short(o: &Outcome) -> String {
        match o {
            Outcome::Unauthorized { reason, .. } => format!("401 {reason}"),
            Outcome::Forbidden { reason, .. } => format!("403 {reason}"),
            Outcome::Conflict { .. } => "409".into(),
            Outcome::Pending { create } => format!("202 Pending create={create}"),
            Outcome::IssueToken => "200 IssueToken".into(),
            Outcome::Registered { adoption, create } => format!("200 {adoption:?} create={create}"),
        }
    }

    #[test]
    fn every_registration_transition() {
        let expired = TokenCheck::Expired { token: "t".into() };
        let other = TokenCheck::WrongRunner {
            token: "t".into(),
            runner_name: "r2".into(),
        };
        let cases: Vec<(&str, TokenCheck, Option<Known>, &str)> = vec![
            (
                "first contact, no token",
                TokenCheck::Absent,
                None,
                "202 Pending create=true",
            ),
            (
                "polling while undecided",
                TokenCheck::Absent,
                known(None, "id1"),
                "202 Pending create=false",
            ),
            (
                "adopted while pending: gets its token",
                TokenCheck::Absent,
                known(Some(Adopted), "id1"),
                "200 IssueToken",
            ),
            (
                "rejected, no token",
                TokenCheck::Absent,
                known(Some(Rejected), "id1"),
                "403 Rejected",
            ),
            (
                "name held by another id",
                TokenCheck::Absent,
                known(None, "other"),
                "409",
            ),
            (
                "another id cannot take an adopted name",
                TokenCheck::Absent,
                known(Some(Adopted), "other"),
                "409",
            ),
            (
                "first contact with a valid token",
                valid(),
                None,
                "200 Preadopted create=true",
            ),
            (
                "valid token, undecided",
                valid(),
                known(None, "id1"),
                "200 Preadopted create=false",
            ),
            (
                "valid token, adopted",
                valid(),
                known(Some(Adopted), "id1"),
                "200 Adopted create=false",
            ),
            (
                "valid token, new id (state wiped)",
                valid(),
                known(None, "other"),
                "200 Preadopted create=false",
            ),
            (
                "valid token, rejected",
                valid(),
                known(Some(Rejected), "id1"),
                "403 Rejected",
            ),
            (
                "forgotten (Runner deleted), token still valid",
                valid(),
                None,
                "200 Preadopted create=true",
            ),
            (
                "expired token",
                expired.clone(),
                known(None, "id1"),
                "401 TokenExpired",
            ),
            (
                "expired token, forgotten",
                expired.clone(),
                None,
                "401 TokenExpired",
            ),
            (
                "expired token, rejected: rejection wins",
                expired,
                known(Some(Rejected), "id1"),
                "403 Rejected",
            ),
            (
                "deleted or garbage token",
                TokenCheck::Unknown,
                known(Some(Adopted), "id1"),
                "401 TokenUnknown",
            ),
            (
                "token for another runner name",
                other,
                None,
                "401 TokenForAnotherRunner",
            ),
        ];
        for (what, check, known, want) in cases {
            assert_eq!(
                short(&decide(&check, known.as_ref(), "id1")),
                want,
                "{what}"
            );
        }
    }

    /// Sequences: each step is what the runner presents and the Runner the cluster
    /// holds after the previous step.
    #[test]
    fn reject_then_forget_then_return() {
        // Rejected while it holds a valid token: refused.
        let o = decide(&valid(), known(Some(Rejected), "id1").as_ref(), "id1");
        assert_eq!(o.http_status(), 403);
        // Forget = delete the Runner: the same token works as if never rejected.
        let o = decide(&valid(), None, "id1");
        assert_eq!(short(&o), "200 Preadopted create=true");
        // Without a token it would start over as Pending.
        assert_eq!(
            short(&decide(&TokenCheck::Absent, None, "id1")),
            "202 Pending create=true"
        );
    }

    #[test]
    fn status_adoption_table() {
        use AdoptionState as S;
        let cases = [
            (None, Some(false), None, S::Pending),
            (None, Some(true), None, S::Preadopted),
            (None, Some(true), Some(S::Pending), S::Preadopted),
            (None, Some(false), Some(S::Preadopted), S::Pending),
            (Some(Adopted), Some(false), Some(S::Pending), S::Adopted),
            (Some(Adopted), Some(true), None, S::Adopted),
            (Some(Rejected), Some(true), Some(S::Preadopted), S::Rejected),
            (Some(Rejected), None, None, S::Rejected),
            // Controller restarted, runner not back yet: the previous status stands.
            (None, None, Some(S::Preadopted), S::Preadopted),
            (None, None, Some(S::Pending), S::Pending),
            (None, None, None, S::Pending),
            // Decision withdrawn from an adopted runner: it keeps its token.
            (None, None, Some(S::Adopted), S::Preadopted),
            (None, None, Some(S::Rejected), S::Pending),
        ];
        for (decision, cred, prev, want) in cases {
            assert_eq!(
                status_adoption(decision, cred, prev),
                want,
                "{decision:?} {cred:?} {prev:?}"
            );
        }
    }
}
