//! Every type that crosses the wire between a runner and the server, used by
//! both sides: registration, the control channel's events, and the job routes
//! (claim, status report, log append). Serde types only: no HTTP, no I/O.

pub mod control;
pub mod jobs;
pub mod register;

pub use control::{ControlEvent, DecodeError};
pub use register::{
    CHALLENGE_HEADER, ChallengeResponse, ControlQuery, ErrorBody, RegisterRequest,
    RegisterResponse, SIGNATURE_HEADER,
};
