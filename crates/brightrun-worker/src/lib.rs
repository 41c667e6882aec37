//! brightrun-worker: runs the jobs of a BrightRun project. Any number of workers on any number of
//! machines claim queued jobs from the same PostgreSQL with `FOR UPDATE SKIP LOCKED`, hold a lease
//! renewed by heartbeat and are fenced by an attempt number on every write (ARCHITECTURE.md §7).
//!
//! It validates uploaded datasets with brightrun-core and trains LoRA adapters through a
//! [`trainer::TrainerBackend`]: by default a real (small) model on the CPU with candle.

pub mod trainer;
