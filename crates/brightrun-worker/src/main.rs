//! `brightrun-worker`: the job runner process.

fn main() {}
