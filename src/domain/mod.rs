//! Domain pieces that do I/O and that the controller and the runner API share,
//! below both (neither imports the other through here).

pub mod job_write;
