//! Integration tests of brightrun-worker against a real brightrun-stack.

mod candle;
mod gguf;
mod jobs;
mod queue;
mod storage;
mod story;
mod support;
