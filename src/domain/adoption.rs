//! The adoption state machine, as pure functions: what the server answers a runner
//! that registers (given its token, its key, and what the cluster knows of it), and
//! which `status.adoption` a Runner shows.
//!
//! Every registration proves it holds a key pair (checked before `decide`). The
//! first registration binds the key to the Runner; from then on only that key
//! speaks for the name, unless the runner presents a token bound to this very
//! runner name (an operator issued it for that name: a runner pod that lost its
//! state directory comes back this way). A pool token (no `runnerName`) only
//! registers: the runner then collects a token of its own, bound to its name.
//!
//! | token presented        | Runner known as                | answer                          |
//! |------------------------|--------------------------------|---------------------------------|
//! | any                    | `spec.adoption: Rejected`      | 403 Rejected                    |
//! | expired / unknown / other runner's | not rejected       | 401 (runner drops it)           |
//! | not its own            | bound to another key           | 409 KeyMismatch                 |
//! | its own (bound to name)| any key, or none               | 200 Preadopted/Adopted (binds)  |
//! | pool                   | none, or same key / no key     | its own token issued (202 until minted, 200 with it) |
//! | none                   | none, name not reserved        | 202 Pending, create             |
//! | none                   | none, name reserved by a token | 409 NameReserved                |
//! | none                   | exists without a key           | 409 NameTaken (not created by it) |
//! | none                   | undecided, same key            | 202 Pending                     |
//! | none                   | `Adopted`, same key            | its own token issued            |

use crate::crd::runner::{AdoptionDecision, AdoptionState};
use crate::domain::token::TokenCheck;

/// What the cluster knows of a runner of that name (its Runner object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    pub decision: Option<AdoptionDecision>,
    /// The key bound to the Runner (`status.publicKey`, or this process's session).
    pub public_key: Option<String>,
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
    /// 409: the name belongs to another key, or is reserved.
    Conflict {
        reason: &'static str,
        message: String,
    },
    /// 202: waits for an operator's decision; create the Runner when `create`.
    Pending { create: bool },
    /// Hand the runner the token issued for it (202 until minted); create the
    /// Runner when `create` (a pool token's first registration).
    IssueToken { create: bool },
    /// 200: registered with its own valid token.
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
            Outcome::IssueToken { .. } | Outcome::Registered { .. } => 200,
        }
    }
}

/// What a registration presents besides its token.
#[derive(Clone, Copy, Debug)]
pub struct Presented<'a> {
    /// The public key it proved it holds.
    pub public_key: &'a str,
    /// Whether a RunnerToken's `runnerName` reserves this name (for tokenless
    /// registrations: only that token's holder may take it).
    pub reserved: bool,
}

/// The 401 for a token that is not valid (expired, unknown, another runner's);
/// `None` when there is none, or it is valid.
pub fn token_refusal(check: &TokenCheck) -> Option<Outcome> {
    let (reason, message) = match check {
        TokenCheck::Expired { token } => (
            "TokenExpired",
            format!("the token of RunnerToken {token} has expired"),
        ),
        TokenCheck::Unknown => (
            "TokenUnknown",
            "the token matches no RunnerToken (unknown, or its RunnerToken was deleted)".into(),
        ),
        TokenCheck::WrongRunner { token, runner_name } => (
            "TokenForAnotherRunner",
            format!("RunnerToken {token} may only be used by runner {runner_name}"),
        ),
        TokenCheck::Absent | TokenCheck::Valid(_) => return None,
    };
    Some(Outcome::Unauthorized { reason, message })
}

/// Decide a registration.
pub fn decide(check: &TokenCheck, known: Option<&Known>, presented: Presented<'_>) -> Outcome {
    let decision = known.and_then(|k| k.decision);
    if decision == Some(AdoptionDecision::Rejected) {
        return Outcome::Forbidden {
            reason: "Rejected",
            message: "an operator rejected this runner (spec.adoption: Rejected); \
                      delete the Runner to forget it"
                .into(),
        };
    }
    if let Some(refusal) = token_refusal(check) {
        return refusal;
    }
    let own_token = matches!(check, TokenCheck::Valid(v) if v.bound);
    let bound_key = known.and_then(|k| k.public_key.as_deref());
    if !own_token && bound_key.is_some_and(|k| k != presented.public_key) {
        return Outcome::Conflict {
            reason: "KeyMismatch",
            message: "this runner name is bound to another key: present a token issued \
                      for this runner, or delete the Runner to let a new runner take the name"
                .into(),
        };
    }
    let adoption = if decision == Some(AdoptionDecision::Adopted) {
        AdoptionState::Adopted
    } else {
        AdoptionState::Preadopted
    };
    match (check, known) {
        (TokenCheck::Valid(v), _) if v.bound => Outcome::Registered {
            adoption,
            create: known.is_none(),
        },
        (TokenCheck::Valid(_), _) => Outcome::IssueToken {
            create: known.is_none(),
        },
        (_, None) if presented.reserved => Outcome::Conflict {
            reason: "NameReserved",
            message: "a RunnerToken reserves this runner name: present it".into(),
        },
        (_, None) => Outcome::Pending { create: true },
        (_, Some(_)) if bound_key.is_none() => Outcome::Conflict {
            reason: "NameTaken",
            message: "a Runner of this name exists that no runner key is bound to \
                      (an operator or the controller created it): present its token"
                .into(),
        },
        (_, Some(_)) if decision == Some(AdoptionDecision::Adopted) => {
            Outcome::IssueToken { create: false }
        }
        (_, Some(_)) => Outcome::Pending { create: false },
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

    const KEY: &str = "ed25519:mine";
    const OTHER_KEY: &str = "ed25519:theirs";

    fn valid(bound: bool) -> TokenCheck {
        TokenCheck::Valid(ValidToken {
            token: "t".into(),
            namespace: "ns".into(),
            labels: Default::default(),
            bound,
        })
    }

    fn known(decision: Option<AdoptionDecision>, key: Option<&str>) -> Option<Known> {
        Some(Known {
            decision,
            public_key: key.map(str::to_owned),
        })
    }

    fn short(o: &Outcome) -> String {
        match o {
            Outcome::Unauthorized { reason, .. } => format!("401 {reason}"),
            Outcome::Forbidden { reason, .. } => format!("403 {reason}"),
            Outcome::Conflict { reason, .. } => format!("409 {reason}"),
            Outcome::Pending { create } => format!("202 Pending create={create}"),
            Outcome::IssueToken { create } => format!("IssueToken create={create}"),
            Outcome::Registered { adoption, create } => format!("200 {adoption:?} create={create}"),
        }
    }

    fn run(check: &TokenCheck, known: Option<Known>, reserved: bool) -> String {
        short(&decide(
            check,
            known.as_ref(),
            Presented {
                public_key: KEY,
                reserved,
            },
        ))
    }

    #[test]
    fn every_registration_transition() {
        let expired = TokenCheck::Expired { token: "t".into() };
        let other = TokenCheck::WrongRunner {
            token: "t".into(),
            runner_name: "r2".into(),
        };
        let absent = TokenCheck::Absent;
        let (own, pool) = (valid(true), valid(false));
        #[rustfmt::skip]
        let cases: Vec<(&str, &TokenCheck, Option<Known>, bool, &str)> = vec![
            ("first contact, no token", &absent, None, false, "202 Pending create=true"),
            ("first contact, no token, name reserved by a token", &absent, None, true, "409 NameReserved"),
            ("polling while undecided", &absent, known(None, Some(KEY)), false, "202 Pending create=false"),
            ("adopted while pending: gets its token", &absent, known(Some(Adopted), Some(KEY)), false, "IssueToken create=false"),
            ("rejected, no token", &absent, known(Some(Rejected), Some(KEY)), false, "403 Rejected"),
            ("name bound to another key", &absent, known(None, Some(OTHER_KEY)), false, "409 KeyMismatch"),
            ("another key cannot collect an adopted name's token", &absent, known(Some(Adopted), Some(OTHER_KEY)), false, "409 KeyMismatch"),
            ("squatting a Runner someone else created (on-demand, preadopted)", &absent, known(None, None), false, "409 NameTaken"),
            ("own token, first contact", &own, None, false, "200 Preadopted create=true"),
            ("own token, Runner made by the operator: binds the key", &own, known(None, None), false, "200 Preadopted create=false"),
            ("own token, undecided", &own, known(None, Some(KEY)), false, "200 Preadopted create=false"),
            ("own token, adopted", &own, known(Some(Adopted), Some(KEY)), false, "200 Adopted create=false"),
            ("own token, state wiped (new key): rebinds", &own, known(None, Some(OTHER_KEY)), false, "200 Preadopted create=false"),
            ("own token, rejected", &own, known(Some(Rejected), Some(KEY)), true, "403 Rejected"),
            ("pool token, first contact: gets a token of its own", &pool, None, false, "IssueToken create=true"),
            ("pool token, same key", &pool, known(None, Some(KEY)), false, "IssueToken create=false"),
            ("pool token cannot take another key's runner", &pool, known(Some(Adopted), Some(OTHER_KEY)), false, "409 KeyMismatch"),
            ("pool token, Runner without a key: binds", &pool, known(None, None), false, "IssueToken create=false"),
            ("expired token", &expired, known(None, Some(KEY)), false, "401 TokenExpired"),
            ("expired token, forgotten", &expired, None, false, "401 TokenExpired"),
            ("expired token, rejected: rejection wins", &expired, known(Some(Rejected), Some(KEY)), false, "403 Rejected"),
            ("deleted or garbage token", &TokenCheck::Unknown, known(Some(Adopted), Some(KEY)), false, "401 TokenUnknown"),
            ("token for another runner name", &other, None, false, "401 TokenForAnotherRunner"),
        ];
        for (what, check, known, reserved, want) in cases {
            assert_eq!(run(check, known, reserved), want, "{what}");
        }
    }

    /// Sequences: each step is what the runner presents and the Runner the cluster
    /// holds after the previous step.
    #[test]
    fn reject_then_forget_then_return() {
        let own = valid(true);
        // Rejected while it holds a valid token: refused.
        assert_eq!(
            run(&own, known(Some(Rejected), Some(KEY)), false),
            "403 Rejected"
        );
        // Forget = delete the Runner: the same token works as if never rejected.
        assert_eq!(run(&own, None, false), "200 Preadopted create=true");
        // Without a token it would start over as Pending.
        assert_eq!(
            run(&TokenCheck::Absent, None, false),
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
