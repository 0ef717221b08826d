//! Domain pieces that the controller, the runner API and the runner agent share,
//! below all three: adoption rules, tokens, runner key pairs and the challenges
//! they sign, Events, CA certificates, retry backoff, the one Job status writer,
//! the namespaces a controller serves, and what the restricted Pod Security
//! Standard asks of the pods Baton creates.

pub mod adoption;
pub mod backoff;
pub mod ca;
pub mod challenge;
pub mod events;
pub mod identity;
pub mod job_write;
pub mod restricted;
pub mod scope;
pub mod token;
