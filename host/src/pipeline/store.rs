//! One durable FIFO queue: an append-only log of records in segment files, plus the sequence
//! number of the first record not yet acknowledged.
//!
//! A record is on disk before it counts as accepted (one `write` per batch: a `kill -9` cannot
//! lose it, the kernel has it). Acknowledgement advances a cursor; a segment is deleted once
//! every record in it is acknowledged. Recovery replays the unacknowledged records and cuts the
//! log at the first torn or corrupt record. `fsync` is separate ([`QueueLog::sync`]) and paced
//! by the caller: it only matters for power loss.
//!
//! On disk, a record is `len: u32 LE | crc32(payload): u32 LE | seq: u64 LE | payload`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes of a record's header on disk.
pub const RECORD_HEADER: u64 = 16;

/// A queued event, serialized.
#[derive(Debug)]
pub struct Record {
    /// Its sequence number in the queue.
    pub seq: u64,
    /// The serialized event.
    pub data: Box<[u8]>,
}

impl Record {
    /// Bytes the record takes in the cache (header included).
    pub fn cost(&self) -> u64 {
        RECORD_HEADER + self.data.len() as u64
    }
}

struct Segment {
    /// Sequence number after its last record.
    end_seq: u64,
    path: PathBuf,
    bytes: u64,
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Records recovered.
    pub records: u64,
    /// Bytes cut off because they were torn or failed their checksum.
    pub discarded_bytes: u64,
}

/// One durable queue: records appended to segment files, acknowledged by a cursor.
pub struct QueueLog {
    dir: PathBuf,
    segment_limit: u64,
    segments: VecDeque<Segment>,
    file: Option<File>,
    /// Unacknowledged records, oldest first.
    records: VecDeque<Record>,
    next_seq: u64,
    /// First sequence number not acknowledged.
    acked: u64,
    /// Records handed out for sending and not yet acknowledged or given back.
    in_flight: usize,
    in_flight_bytes: u64,
    bytes: u64,
    dirty: bool,
}

impl QueueLog {
    /// Opens the queue in `dir`, recovering what is whole; segments rotate past `segment_limit` bytes.
    pub fn open(dir: &Path, segment_limit: u64) -> io::Result<(QueueLog, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let acked = match std::fs::read_to_string(dir.join("acked")) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                io::Error::other(format!(
                    "{}: not a sequence number",
                    dir.join("acked").display()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut paths: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                let seq = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()?;
                Some((seq, path))
            })
            .collect();
        paths.sort();

        let mut log = QueueLog {
            dir: dir.to_owned(),
            segment_limit: segment_limit.max(4096),
            segments: VecDeque::new(),
            file: None,
            records: VecDeque::new(),
            next_seq: acked,
            acked,
            in_flight: 0,
            in_flight_bytes: 0,
            bytes: 0,
            dirty: false,
        };
        let mut recovered = Recovered::default();
        let count = paths.len();
        for (i, (first_seq, path)) in paths.into_iter().enumerate() {
            // A segment is named by its first record's sequence number.
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut at = 0usize;
            let mut end_seq = first_seq;
            while let Some((seq, payload, next)) = parse_record(&bytes, at) {
                if seq >= acked && seq >= log.next_seq {
                    log.bytes += RECORD_HEADER + payload.len() as u64;
                    log.records.push_back(Record {
                        seq,
                        data: payload.into(),
                    });
                    recovered.records += 1;
                }
                end_seq = seq + 1;
                log.next_seq = log.next_seq.max(seq + 1);
                at = next;
            }
            if at < bytes.len() {
                recovered.discarded_bytes += (bytes.len() - at) as u64;
                tracing::warn!(segment = %path.display(), offset = at, "cutting a torn or corrupt record and what follows it");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(at as u64)?;
            }
            if end_seq <= acked && i + 1 < count {
                std::fs::remove_file(&path)?;
                continue;
            }
            log.segments.push_back(Segment {
                end_seq,
                path,
                bytes: at as u64,
            });
        }
        Ok((log, recovered))
    }

    /// Appends records in one write. Returns their sequence numbers' start.
    pub fn append(&mut self, payloads: Vec<Box<[u8]>>) -> io::Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        let needs_new = match self.segments.back() {
            None => true,
            Some(s) => s.bytes >= self.segment_limit,
        };
        if needs_new || self.file.is_none() {
            if needs_new {
                let path = self.dir.join(format!("{:020}.seg", self.next_seq));
                self.segments.push_back(Segment {
                    end_seq: self.next_seq,
                    path,
                    bytes: 0,
                });
            }
            let path = &self.segments.back().expect("a segment").path;
            self.file = Some(OpenOptions::new().create(true).append(true).open(path)?);
        }
        let mut buf = Vec::with_capacity(
            payloads
                .iter()
                .map(|p| p.len() + RECORD_HEADER as usize)
                .sum(),
        );
        let first = self.next_seq;
        for (i, p) in payloads.iter().enumerate() {
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            buf.extend_from_slice(&(first + i as u64).to_le_bytes());
            buf.extend_from_slice(p);
        }
        self.file.as_mut().expect("opened above").write_all(&buf)?;
        let segment = self.segments.back_mut().expect("a segment");
        segment.bytes += buf.len() as u64;
        for p in payloads {
            self.bytes += RECORD_HEADER + p.len() as u64;
            self.records.push_back(Record {
                seq: self.next_seq,
                data: p,
            });
            self.next_seq += 1;
        }
        segment.end_seq = self.next_seq;
        self.dirty = true;
        Ok(())
    }

    /// Records not yet handed out, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().skip(self.in_flight)
    }

    /// Bytes of the records not yet acknowledged.
    pub fn pending_bytes(&self) -> u64 {
        self.bytes - self.in_flight_bytes
    }

    /// Marks the next `n` pending records as in flight; returns the sequence number after them.
    pub fn take(&mut self, n: usize) -> u64 {
        let end = (self.in_flight + n).min(self.records.len());
        self.in_flight_bytes += self
            .records
            .range(self.in_flight..end)
            .map(Record::cost)
            .sum::<u64>();
        self.in_flight = end;
        self.records
            .get(self.in_flight)
            .map_or(self.next_seq, |r| r.seq)
    }

    /// Everything below `upto` is acknowledged: forget it, here and on disk.
    pub fn ack(&mut self, upto: u64) -> io::Result<()> {
        if upto <= self.acked {
            return Ok(());
        }
        while self.records.front().is_some_and(|r| r.seq < upto) {
            let r = self.records.pop_front().expect("checked");
            self.bytes -= r.cost();
            if self.in_flight > 0 {
                self.in_flight -= 1;
                self.in_flight_bytes -= r.cost();
            }
        }
        self.acked = upto;
        crate::files::write_atomic(&self.dir.join("acked"), upto.to_string().as_bytes())?;
        // Whole segments behind the cursor go; the one being written stays.
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.end_seq <= upto) {
            let s = self.segments.pop_front().expect("checked");
            std::fs::remove_file(&s.path)?;
        }
        Ok(())
    }

    /// In-flight records go back to pending (their send failed); they will be sent again.
    pub fn rewind(&mut self) {
        self.in_flight = 0;
        self.in_flight_bytes = 0;
    }

    /// Unacknowledged bytes (pending and in flight).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records not yet acknowledged.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether every record is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Flushes appended records to the device (power-loss safety).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(f) = &self.file {
                f.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

fn parse_record(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at + RECORD_HEADER as usize)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let start = at + RECORD_HEADER as usize;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((seq, payload, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(range: std::ops::Range<u32>) -> Vec<Box<[u8]>> {
        range
            .map(|i| format!("{{\"event\":{i}}}").into_bytes().into_boxed_slice())
            .collect()
    }

    fn texts(log: &QueueLog) -> Vec<String> {
        log.pending()
            .map(|r| String::from_utf8(r.data.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn survives_reopen_and_forgets_only_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = QueueLog::open(dir.path(), 4096).unwrap();
        log.append(payloads(0..300)).unwrap();
        assert!(!log.segments.is_empty());
        log.append(payloads(300..600)).unwrap();
        assert!(
            log.segments.len() >= 2,
            "a second segment once the first is full"
        );
        let upto = log.take(350);
        assert_eq!(upto, 350);
        log.ack(upto).unwrap();
        drop(log);

        let (log, recovered) = QueueLog::open(dir.path(), 4096).unwrap();
        assert_eq!(recovered.records, 250);
        assert_eq!(texts(&log).first().unwrap(), "{\"event\":350}");
        assert_eq!(texts(&log).last().unwrap(), "{\"event\":599}");
        let oldest = log
            .segments
            .front()
            .unwrap()
            .path
            .file_name()
            .unwrap()
            .to_owned();
        assert_ne!(
            oldest, "00000000000000000000.seg",
            "the fully acknowledged first segment was deleted"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = QueueLog::open(dir.path(), 1 << 20).unwrap();
        log.append(payloads(0..10)).unwrap();
        let path = log.segments.back().unwrap().path.clone();
        drop(log);
        // A write cut short: half a record at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let (mut log, recovered) = QueueLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                records: 10,
                discarded_bytes: 6
            }
        );
        log.append(payloads(10..12)).unwrap();
        drop(log);
        let (log, recovered) = QueueLog::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(recovered.records, 12);
        assert_eq!(texts(&log).last().unwrap(), "{\"event\":11}");
    }

    #[test]
    fn rewind_hands_in_flight_records_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = QueueLog::open(dir.path(), 1 << 20).unwrap();
        log.append(payloads(0..5)).unwrap();
        log.take(3);
        assert_eq!(log.pending().count(), 2);
        log.rewind();
        assert_eq!(log.pending().count(), 5);
    }
}
