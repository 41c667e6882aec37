//! Integration tests of brightrun-worker against a real brightrun-stack.

mod candle;
mod jobs;
mod queue;
mod support;
