//! Opening log files (plain, gzip, bzip2) and cutting the decompressed stream into
//! records with their byte offsets and line numbers.
//!
//! A record is one line, or several lines of a pretty-printed JSON object that were
//! joined back together. The cursor position after each record is exact, so a
//! reader can resume at any record boundary.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::parse::{Rejection, parse_record, trim_record};
use store::ingest::{DeadLetterRow, EventRow};

/// How a file is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Bzip2,
}

impl Compression {
    /// Compressed files cannot grow: reaching their end finishes them.
    pub fn is_compressed(self) -> bool {
        self != Compression::Plain
    }
}

/// Detects the compression from the magic bytes (falling back to the extension).
pub fn detect_compression(path: &Path) -> io::Result<Compression> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 3];
    let n = f.read(&mut magic)?;
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        return Ok(Compression::Gzip);
    }
    if n >= 3 && &magic == b"BZh" {
        return Ok(Compression::Bzip2);
    }
    let name = path.to_string_lossy();
    Ok(if n == 0 && name.ends_with(".gz") {
        Compression::Gzip
    } else if n == 0 && name.ends_with(".bz2") {
        Compression::Bzip2
    } else {
        Compression::Plain
    })
}

/// Counts bytes read from the underlying file (for progress).
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file positioned at `offset` of its decompressed stream.
/// Plain files seek; compressed files are decompressed and skipped.
pub fn open_at(
    path: &Path,
    compression: Compression,
    offset: u64,
    counter: Arc<AtomicU64>,
) -> io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    if compression == Compression::Plain && offset > 0 {
        file.seek(SeekFrom::Start(offset))?;
    }
    let counted = Counting {
        inner: file,
        counter,
    };
    let mut reader: Box<dyn BufRead + Send> = match compression {
        Compression::Plain => Box::new(BufReader::with_capacity(1 << 20, counted)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
        )),
        Compression::Bzip2 => Box::new(BufReader::with_capacity(
            1 << 20,
            bzip2::read::MultiBzDecoder::new(BufReader::new(counted)),
        )),
    };
    if compression != Compression::Plain && offset > 0 {
        let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream shorter ({skipped} bytes) than cursor offset {offset}"),
            ));
        }
    }
    Ok(reader)
}

/// Reads the first non-blank line of a file's decompressed stream: the file's identity.
/// Returns `None` when there is no complete such line yet (empty file, only blank
/// lines, or a plain file whose first line is still being written).
pub fn first_line(path: &Path, compression: Compression) -> io::Result<Option<Vec<u8>>> {
    let mut r = open_at(path, compression, 0, Arc::new(AtomicU64::new(0)))?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') && compression == Compression::Plain {
            return Ok(None);
        }
        if !trim_record(&buf).is_empty() {
            break;
        }
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(buf))
}

#[derive(Debug, Clone)]
struct RawLine {
    offset: u64,
    line: u64,
    bytes: Vec<u8>,
    terminated: bool,
}

/// One step of the record stream.
#[derive(Debug)]
pub enum Step {
    Event(Box<EventRow>),
    Dead(DeadLetterRow),
    /// A blank line: nothing to store, but the cursor moves past it.
    Blank,
    /// An unterminated record at the end of a file that may still grow: stop here.
    Incomplete,
    /// End of the stream.
    Eof,
}

/// Longest pretty-printed object we try to join back together.
const MAX_JOIN_LINES: usize = 2000;
const MAX_JOIN_BYTES: usize = 4 << 20;

/// Cuts a decompressed stream into records.
pub struct RecordReader {
    inner: Box<dyn BufRead + Send>,
    /// Position after the last record handed out.
    pub offset: u64,
    pub line: u64,
    read_offset: u64,
    read_line: u64,
    pushback: VecDeque<RawLine>,
    can_grow: bool,
    sensor: String,
}

impl RecordReader {
    /// `can_grow`: true for plain files (a writer may still append), false for compressed ones.
    pub fn new(
        inner: Box<dyn BufRead + Send>,
        offset: u64,
        line: u64,
        can_grow: bool,
        sensor: &str,
    ) -> Self {
        RecordReader {
            inner,
            offset,
            line,
            read_offset: offset,
            read_line: line,
            pushback: VecDeque::new(),
            can_grow,
            sensor: sensor.to_owned(),
        }
    }

    fn raw(&mut self) -> io::Result<Option<RawLine>> {
        if let Some(l) = self.pushback.pop_front() {
            return Ok(Some(l));
        }
        let mut bytes = Vec::with_capacity(512);
        let n = self.inner.read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return Ok(None);
        }
        let l = RawLine {
            offset: self.read_offset,
            line: self.read_line,
            terminated: bytes.last() == Some(&b'\n'),
            bytes,
        };
        self.read_offset += n as u64;
        self.read_line += 1;
        Ok(Some(l))
    }

    fn dead(l: &RawLine, r: Rejection) -> DeadLetterRow {
        let mut raw = l.bytes.clone();
        while matches!(raw.last(), Some(b'\n' | b'\r')) {
            raw.pop();
        }
        DeadLetterRow {
            offset: l.offset as i64,
            line: l.line as i64,
            reason: r.reason.to_owned(),
            detail: Some(r.detail),
            raw,
            payload: r.payload,
        }
    }

    /// Puts lines back in front of the stream, keeping their order.
    fn unread(&mut self, lines: Vec<RawLine>) {
        for l in lines.into_iter().rev() {
            self.pushback.push_front(l);
        }
    }

    fn consumed(&mut self, l: &RawLine) {
        self.offset = l.offset + l.bytes.len() as u64;
        self.line = l.line + 1;
    }

    /// The next record.
    pub fn next_step(&mut self) -> io::Result<Step> {
        let Some(l) = self.raw()? else {
            return Ok(Step::Eof);
        };
        if trim_record(&l.bytes).is_empty() {
            if !l.terminated && self.can_grow {
                return Ok(Step::Incomplete);
            }
            self.consumed(&l);
            return Ok(Step::Blank);
        }
        match parse_record(&l.bytes, &self.sensor) {
            Ok(mut ev) => {
                ev.offset = l.offset as i64;
                ev.line = l.line as i64;
                self.consumed(&l);
                Ok(Step::Event(Box::new(ev)))
            }
            Err(r) if !l.terminated && self.can_grow => {
                // The writer may be in the middle of this line.
                let _ = r;
                Ok(Step::Incomplete)
            }
            Err(r) if r.incomplete && trim_record(&l.bytes).first() == Some(&b'{') => {
                self.join_lines(l, r)
            }
            Err(r) => {
                let d = Self::dead(&l, r);
                self.consumed(&l);
                Ok(Step::Dead(d))
            }
        }
    }

    /// Tries to rebuild a pretty-printed object starting at `first`.
    fn join_lines(&mut self, first: RawLine, first_err: Rejection) -> io::Result<Step> {
        let mut taken: Vec<RawLine> = Vec::new();
        let mut buf = first.bytes.clone();
        loop {
            let next = self.raw()?;
            let Some(next) = next else {
                if self.can_grow {
                    // The object may still be being written.
                    self.unread(taken);
                    self.pushback.push_front(first);
                    return Ok(Step::Incomplete);
                }
                break;
            };
            // A new top-level object starts: the one we hold is broken.
            if next.bytes.first() == Some(&b'{') {
                taken.push(next);
                break;
            }
            if !next.terminated && self.can_grow {
                taken.push(next);
                self.unread(taken);
                self.pushback.push_front(first);
                return Ok(Step::Incomplete);
            }
            buf.extend_from_slice(&next.bytes);
            taken.push(next);
            match parse_record(&buf, &self.sensor) {
                Ok(mut ev) => {
                    ev.offset = first.offset as i64;
                    ev.line = first.line as i64;
                    let last = taken.last().cloned().expect("taken is not empty");
                    self.consumed(&last);
                    return Ok(Step::Event(Box::new(ev)));
                }
                Err(r) if r.incomplete => {
                    if taken.len() >= MAX_JOIN_LINES || buf.len() >= MAX_JOIN_BYTES {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        // Not recoverable: the first line is a dead letter, the others are read again.
        self.unread(taken);
        let d = Self::dead(&first, first_err);
        self.consumed(&first);
        Ok(Step::Dead(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("reader-test-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn identity_is_the_first_non_blank_complete_line() {
        let p = tmp("a", b"\n  \n{\"a\":1}\r\n{\"b\":2}\n");
        assert_eq!(
            first_line(&p, Compression::Plain).unwrap(),
            Some(b"{\"a\":1}".to_vec())
        );
        let p2 = tmp("b", b"\n{\"a\":1");
        assert_eq!(
            first_line(&p2, Compression::Plain).unwrap(),
            None,
            "still being written"
        );
        let p3 = tmp("c", b"");
        assert_eq!(first_line(&p3, Compression::Plain).unwrap(), None);
        for p in [p, p2, p3] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn records_carry_exact_offsets_and_resume_anywhere() {
        let text = b"{\"eventid\":\"cowrie.a\",\"timestamp\":\"2024-01-01T00:00:00Z\"}\n\n{\"eventid\":\"cowrie.b\",\"timestamp\":\"2024-01-01T00:00:01Z\"}\n";
        let mut rr = RecordReader::new(Box::new(&text[..]), 0, 0, false, "s");
        let mut seen = Vec::new();
        loop {
            match rr.next_step().unwrap() {
                Step::Event(e) => seen.push((e.offset, e.line, rr.offset)),
                Step::Blank => {}
                Step::Eof => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let first_len = text.iter().position(|&b| b == b'\n').unwrap() as i64 + 1;
        assert_eq!(
            seen,
            vec![
                (0, 0, first_len as u64),
                (first_len + 1, 2, text.len() as u64)
            ]
        );
        // Resuming at the second record's offset yields exactly that record.
        let rest = &text[(first_len + 1) as usize..];
        let mut rr = RecordReader::new(Box::new(rest), (first_len + 1) as u64, 2, false, "s");
        match rr.next_step().unwrap() {
            Step::Event(e) => assert_eq!(
                (e.offset, e.event_type.as_str()),
                (first_len + 1, "cowrie.b")
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}
