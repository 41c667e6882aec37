//! Integration tests against a real brightrun-stack (real PostgreSQL, real migrations): one
//! binary, one module per area. `cargo xtask test` starts one stack and points every test at it
//! through `BRIGHTRUN_TEST_*`; without those, the first test starts a stack for this process.

mod support;

mod auth;
mod rest;
mod storage;
mod tenancy;
