//! Domain pieces that the controller, the runner API and the runner agent share,
//! below all three: adoption rules, tokens, Events, CA certificates, retry
//! backoff, and the one Job status writer.

pub mod adoption;
pub mod backoff;
pub mod ca;
pub mod events;
pub mod job_write;
pub mod token;
