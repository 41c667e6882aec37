//! Integration tests of brightrun-worker against a real brightrun-stack.

mod candle;
mod gguf;
mod jobs;
#[path = "../../../brightrun-client/tests/client/proxy.rs"]
mod proxy;
mod queue;
mod storage;
mod support;
