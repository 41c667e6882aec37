//! Reading lines with a cap on their length: a line longer than the cap is reported, not buffered,
//! so memory stays bounded by the cap whatever the input.

use std::io::{self, BufRead, BufReader, ErrorKind, Read};

/// One line of the input, without its `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the cap. `bytes` may end with `\r` (CRLF files).
    Complete {
        /// 1-based.
        number: u64,
        /// Offset of the line's first byte from the start of the input.
        byte_offset: u64,
        bytes: &'a [u8],
    },
    /// A line longer than the cap; its bytes were skipped, not kept.
    TooLong {
        number: u64,
        byte_offset: u64,
        /// Its full length in bytes.
        length: u64,
    },
}

/// Splits any reader into lines of at most `max_line_bytes`, in one pass.
pub struct LineReader<R> {
    inner: BufReader<R>,
    buffer: Vec<u8>,
    max_line_bytes: usize,
    next_number: u64,
    next_offset: u64,
}

impl<R: Read> LineReader<R> {
    pub fn new(reader: R, max_line_bytes: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(256 * 1024, reader),
            buffer: Vec::new(),
            max_line_bytes,
            next_number: 1,
            next_offset: 0,
        }
    }

    /// Bytes consumed so far (the offset where the next line starts).
    pub fn bytes_read(&self) -> u64 {
        self.next_offset
    }

    /// The next line, or `None` at the end of the input. A final line without `\n` is returned;
    /// the empty string after a final `\n` is not a line.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buffer.clear();
        let mut length: u64 = 0;
        let mut too_long = false;
        let mut saw_newline = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                break;
            }
            let (chunk, consumed) = match memchr::memchr(b'\n', available) {
                Some(end) => {
                    saw_newline = true;
                    (&available[..end], end + 1)
                }
                None => (available, available.len()),
            };
            length += chunk.len() as u64;
            if !too_long {
                if self.buffer.len() + chunk.len() <= self.max_line_bytes {
                    self.buffer.extend_from_slice(chunk);
                } else {
                    too_long = true;
                    self.buffer.clear();
                    self.buffer.shrink_to(self.max_line_bytes.min(1 << 20));
                }
            }
            self.inner.consume(consumed);
            if saw_newline {
                break;
            }
        }
        if !saw_newline && length == 0 {
            return Ok(None);
        }
        let number = self.next_number;
        let byte_offset = self.next_offset;
        self.next_number += 1;
        self.next_offset += length + u64::from(saw_newline);
        Ok(Some(if too_long {
            Line::TooLong {
                number,
                byte_offset,
                length,
            }
        } else {
            Line::Complete {
                number,
                byte_offset,
                bytes: &self.buffer,
            }
        }))
    }
}
