//! Integration tests of brightrun-client against a real brightrun-stack (see
//! `brightrun_stack::testing`): one binary, one module per area.

mod api;
mod app;
mod bounds;
mod download;
mod errors;
mod session;
mod support;
mod upload;
mod watch;
