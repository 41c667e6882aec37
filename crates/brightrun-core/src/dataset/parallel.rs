//! The multi-threaded path of [`validate_with_progress`](super::validate_with_progress): the same
//! report as the single-threaded pass, whatever the thread count.
//!
//! The calling thread reads lines ([`LineReader`], the one line splitter), copies them into
//! batches (`ValidationOptions::batch_bytes`, at most the progress interval: 1 MiB by default)
//! and hands each batch to a worker thread, which checks its lines with its
//! own batch [`Validator`] (the one implementation of every per-line rule). The calling thread
//! then merges the checked batches strictly in file order ([`Validator::absorb`]), which is where
//! everything that depends on earlier lines is settled:
//!
//! - duplicates: a batch validator only notes each line's hash; the merge looks them up against
//!   every earlier line, so the first occurrence wins by line number across batches;
//! - kept issues: each batch keeps up to the cap, and the merge keeps the first ones in line
//!   order, so the kept lists are the same;
//! - the file's format, which decides `mixed_formats` and some wording: the format is set by the
//!   first line that declares one, so until a line has, the calling thread also runs every line
//!   through a scout [`Validator`]; each batch starts from the format the lines before it left,
//!   which is then exactly what the single-threaded pass has at that line. In a typical file the
//!   first line declares the format and the scout stops there; only lines before it are checked
//!   twice;
//! - the file-level rules, the split decision and the percentiles are computed once, at the
//!   end, from the merged counts ([`Validator::finish`]).
//!
//! Memory stays flat in the file size: at most two batches per thread are in flight (queued,
//! being checked, or checked and waiting for an earlier one to merge), and what is merged keeps
//! the single-threaded pass's per-line data (a hash and a token count per line).

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::{ControlFlow, Range};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};

use super::lines::{Line, LineReader};
use super::report::{Completion, ValidationReport};
use super::validate::{Progress, TokenCache, ValidationOptions, Validator, ValidatorError};
use crate::model::DatasetFormat;
use crate::tokenizer::Tokenizer;

/// Lines copied out of the reader's buffer, for one worker to check.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: Vec<BatchLine>,
}

struct BatchLine {
    number: u64,
    byte_offset: u64,
    kind: LineKind,
}

enum LineKind {
    /// The line's bytes in [`Batch::bytes`].
    Complete(Range<usize>),
    /// Over the line cap: only its length was kept, as [`Line::TooLong`] says.
    TooLong { length: u64 },
}

impl Batch {
    /// An empty batch with room for `limit` bytes of lines.
    fn with_capacity(limit: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(limit),
            lines: Vec::new(),
        }
    }

    /// Empties a checked batch for reuse. Its buffers stay (a batch that carried one very long
    /// line gives the excess back): recycling them keeps the allocator from spreading batch-sized
    /// blocks over every thread's arena, which cost ~7 MiB of RSS.
    fn recycle(&mut self, limit: usize) {
        self.bytes.clear();
        self.lines.clear();
        if self.bytes.capacity() > limit.saturating_mul(2) {
            self.bytes.shrink_to(limit);
        }
    }

    fn push(&mut self, line: &Line<'_>) {
        let (number, byte_offset, kind) = match *line {
            Line::Complete {
                number,
                byte_offset,
                bytes,
            } => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(bytes);
                (
                    number,
                    byte_offset,
                    LineKind::Complete(start..self.bytes.len()),
                )
            }
            Line::TooLong {
                number,
                byte_offset,
                length,
            } => (number, byte_offset, LineKind::TooLong { length }),
        };
        self.lines.push(BatchLine {
            number,
            byte_offset,
            kind,
        });
    }

    /// Bytes held: the lines and their bookkeeping (a batch of blank lines is mostly the latter).
    fn size(&self) -> usize {
        self.bytes.len() + self.lines.len() * size_of::<BatchLine>()
    }

    fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.lines.iter().map(|line| match &line.kind {
            LineKind::Complete(range) => Line::Complete {
                number: line.number,
                byte_offset: line.byte_offset,
                bytes: &self.bytes[range.clone()],
            },
            LineKind::TooLong { length } => Line::TooLong {
                number: line.number,
                byte_offset: line.byte_offset,
                length: *length,
            },
        })
    }
}

/// A batch on its way to a worker.
struct Job {
    /// Position in the file, from 0: batches are merged in this order.
    index: u64,
    /// The file's format as the lines before this batch left it.
    format_at_start: Option<(DatasetFormat, u64)>,
    /// Offset just past the batch's last line.
    end_offset: u64,
    batch: Batch,
}

/// What a worker sends back.
enum Done<'t> {
    Checked {
        index: u64,
        end_offset: u64,
        validator: Box<Validator<'t>>,
        /// The batch's buffers, emptied, for the reader to fill again.
        spare: Batch,
    },
    /// A worker panicked: its batch will never arrive, so the merge must stop waiting (the
    /// scope then re-raises the panic on the calling thread).
    WorkerPanicked,
}

/// Validates with `threads` worker threads; see the module documentation.
pub(super) fn validate<R: Read>(
    reader: R,
    options: &ValidationOptions,
    tokenizer: &dyn Tokenizer,
    threads: usize,
    on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<ValidationReport, ValidatorError> {
    let stop = AtomicBool::new(false);
    let (jobs, job_queue) = mpsc::channel::<Job>();
    // std's receiver is single-consumer; the workers take turns at it.
    let job_queue = Mutex::new(job_queue);
    let (done, checked) = mpsc::channel::<Done<'_>>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let done = done.clone();
            let (job_queue, stop) = (&job_queue, &stop);
            scope.spawn(move || check_batches(job_queue, &done, stop, options, tokenizer));
        }
        drop(done);
        let result = read_and_merge(
            reader,
            options,
            tokenizer,
            threads,
            jobs,
            &checked,
            on_progress,
        );
        // Done, cancelled or failed: batches still queued or being checked are not needed.
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// A worker: checks batches until the queue closes or `stop` is set.
fn check_batches<'t>(
    job_queue: &Mutex<Receiver<Job>>,
    done: &Sender<Done<'t>>,
    stop: &AtomicBool,
    options: &ValidationOptions,
    tokenizer: &'t dyn Tokenizer,
) {
    let _notice = PanicNotice(done);
    // Kept across batches: the texts that repeat in a file repeat across batches too.
    let mut token_cache = TokenCache::default();
    loop {
        let next = job_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = next else {
            return;
        };
        let mut validator =
            Validator::for_batch(options.clone(), tokenizer, job.format_at_start, token_cache);
        for line in job.batch.lines() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            validator.push_line(line);
        }
        token_cache = validator.take_token_cache();
        let mut spare = job.batch;
        spare.recycle(batch_limit(options));
        let checked = Done::Checked {
            index: job.index,
            end_offset: job.end_offset,
            validator: Box::new(validator),
            spare,
        };
        if done.send(checked).is_err() {
            return;
        }
    }
}

/// Tells the calling thread when its worker unwinds, so it does not wait for that batch forever.
struct PanicNotice<'d, 't>(&'d Sender<Done<'t>>);

impl Drop for PanicNotice<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.send(Done::WorkerPanicked);
        }
    }
}

/// Bytes per batch: `batch_bytes`, at most the progress interval.
fn batch_limit(options: &ValidationOptions) -> usize {
    options
        .batch_bytes
        .min(usize::try_from(options.progress_interval_bytes).unwrap_or(usize::MAX))
        .max(1)
}

/// The calling thread's side: reads batches, hands them out, merges what comes back in order.
fn read_and_merge<'t, R: Read>(
    reader: R,
    options: &ValidationOptions,
    tokenizer: &'t dyn Tokenizer,
    threads: usize,
    jobs: Sender<Job>,
    checked: &Receiver<Done<'t>>,
    on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<ValidationReport, ValidatorError> {
    let batch_limit = batch_limit(options);
    let in_flight_limit = threads.saturating_mul(2) as u64;
    let mut lines = LineReader::new(reader, options.max_line_bytes);
    let mut merge = Merge {
        merged: Validator::new(options.clone(), tokenizer),
        next_index: 0,
        waiting: BTreeMap::new(),
        spares: Vec::new(),
        bytes_merged: 0,
        interval: options.progress_interval_bytes.max(1),
        next_report: options.progress_interval_bytes.max(1),
        on_progress,
    };
    // Runs every line until one declares the file's format; `None` once one has.
    let mut scout = Some(Validator::new(options.clone(), tokenizer));
    let mut known_format: Option<(DatasetFormat, u64)> = None;
    let mut dispatched: u64 = 0;
    let mut completion = Completion::Complete;
    let mut at_end = false;
    'read: while !at_end {
        let format_at_start = known_format.clone();
        let mut batch = merge
            .spares
            .pop()
            .unwrap_or_else(|| Batch::with_capacity(batch_limit));
        while batch.size() < batch_limit {
            let line = match lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    at_end = true;
                    break;
                }
                Err(source) => {
                    return Err(ValidatorError::Read {
                        bytes_read: lines.bytes_read(),
                        source,
                    });
                }
            };
            if let Some(validator) = &mut scout {
                validator.push_line(line.clone());
                if let Some(format) = validator.file_format() {
                    known_format = Some(format.clone());
                    scout = None;
                }
            }
            batch.push(&line);
        }
        if batch.lines.is_empty() {
            break;
        }
        while dispatched - merge.next_index >= in_flight_limit {
            if merge.wait_for_one(checked).is_break() {
                completion = Completion::Cancelled;
                break 'read;
            }
        }
        let job = Job {
            index: dispatched,
            format_at_start,
            end_offset: lines.bytes_read(),
            batch,
        };
        if jobs.send(job).is_err() {
            // Every worker is gone, which only a panic does; the scope re-raises it.
            completion = Completion::Cancelled;
            break;
        }
        dispatched += 1;
        while let Ok(done) = checked.try_recv() {
            if merge.accept(done).is_break() {
                completion = Completion::Cancelled;
                break 'read;
            }
        }
    }
    drop(jobs);
    if completion == Completion::Complete {
        while merge.next_index < dispatched {
            if merge.wait_for_one(checked).is_break() {
                completion = Completion::Cancelled;
                break;
            }
        }
    }
    Ok(merge.finish(completion))
}

/// The merged state and the batches that arrived before their turn.
struct Merge<'t, 'p> {
    merged: Validator<'t>,
    /// The index of the next batch to merge.
    next_index: u64,
    /// Checked batches waiting for an earlier one, by index, with their end offsets.
    waiting: BTreeMap<u64, (u64, Box<Validator<'t>>)>,
    /// Emptied batches, for the reader to fill again.
    spares: Vec<Batch>,
    /// Offset just past the last merged line.
    bytes_merged: u64,
    interval: u64,
    next_report: u64,
    on_progress: &'p mut dyn FnMut(Progress) -> ControlFlow<()>,
}

impl<'t> Merge<'t, '_> {
    /// Blocks for the next message from the workers. `Break` when the run must stop: the hook
    /// asked to, or a worker died.
    fn wait_for_one(&mut self, checked: &Receiver<Done<'t>>) -> ControlFlow<()> {
        match checked.recv() {
            Ok(done) => self.accept(done),
            // Every worker is gone, which only a panic does; the scope re-raises it.
            Err(_) => ControlFlow::Break(()),
        }
    }

    /// Takes one checked batch and merges every batch whose turn has come, reporting progress
    /// as the merged offset passes each interval.
    fn accept(&mut self, done: Done<'t>) -> ControlFlow<()> {
        let Done::Checked {
            index,
            end_offset,
            validator,
            spare,
        } = done
        else {
            return ControlFlow::Break(());
        };
        self.spares.push(spare);
        self.waiting.insert(index, (end_offset, validator));
        while let Some((end_offset, validator)) = self.waiting.remove(&self.next_index) {
            self.merged.absorb(*validator);
            self.next_index += 1;
            self.bytes_merged = end_offset;
            if self.bytes_merged >= self.next_report {
                self.next_report =
                    self.bytes_merged - self.bytes_merged % self.interval + self.interval;
                let progress = self.merged.progress(self.bytes_merged);
                (self.on_progress)(progress)?;
            }
        }
        ControlFlow::Continue(())
    }

    fn finish(self, completion: Completion) -> ValidationReport {
        // The final call is informational: the work is done, so a `Break` here changes nothing.
        let _ = (self.on_progress)(self.merged.progress(self.bytes_merged));
        self.merged.finish(completion, self.bytes_merged)
    }
}
