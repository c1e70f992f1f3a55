//! `LauncherAdmin.StreamLogs`: what the API needs from children's log files, as a trait that
//! `app` implements with the runtime's log functions (api and runtime never import each other),
//! and the time stamps `--timestamps` puts before each line.
//!
//! Children write their log files themselves (files, not pipes, so that none dies of SIGPIPE when
//! the launcher goes away), so nothing records when a line was written. A stamp is the time the
//! reader read the line: while following, at most `FOLLOW_INTERVAL` after it was written. What
//! was in the file already when the call read it has no such time: its stamp is the time of the
//! call marked with `<` ("written before this"), never a time that looks like a write time. The
//! marker line before each instance's output says when that instance started.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::blocking::blocking;
use super::errors::{admin_status, AdminError};
use super::proto::prism::launcher::v1 as pb;
use crate::clock::{rfc3339, Clock};
use crate::reconcile::{ProcessId, UnixMillis};

/// How often a followed log is read for new output.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Reading a process's log.
pub trait LogSource: Send + Sync + 'static {
    /// The last `lines` lines (all when `None`) of the current file, or with `previous` of the
    /// previous instance's output, keeping only instances that ran at or after `since`; and the
    /// offset in the current file after them. `None` when `previous` and the log holds no
    /// instance before the last one.
    fn select(
        &self,
        id: &ProcessId,
        lines: Option<usize>,
        previous: bool,
        since: Option<UnixMillis>,
    ) -> std::io::Result<Option<(Vec<u8>, u64)>>;
    /// What follows `offset` (from the start when the file was rotated), and the new offset.
    fn read_from(&self, id: &ProcessId, offset: u64) -> std::io::Result<(Vec<u8>, u64)>;
}

pub type LogStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

/// The stream of a `StreamLogs` call. Log files are read on the blocking pool.
pub async fn stream_logs(
    source: Arc<dyn LogSource>,
    request: pb::StreamLogsRequest,
    mut stopping: watch::Receiver<bool>,
    clock: Clock,
) -> Result<LogStream, AdminError> {
    let id = ProcessId::new(request.process_id.clone()).map_err(AdminError::InvalidId)?;
    if request.previous && request.follow {
        return Err(AdminError::PreviousFollowed(id));
    }
    let lines = (request.tail_lines > 0).then_some(request.tail_lines as usize);
    let since =
        (request.since_ms > 0).then(|| UnixMillis(clock().0.saturating_sub(request.since_ms)));
    let previous = request.previous;
    let unreadable = |id: &ProcessId, error: std::io::Error| match error.kind() {
        std::io::ErrorKind::NotFound => AdminError::NoLog(id.clone()),
        _ => AdminError::UnreadableLog {
            id: id.clone(),
            error,
        },
    };
    let first = {
        let (source, id) = (source.clone(), id.clone());
        blocking(move || source.select(&id, lines, previous, since))
    };
    let (first, mut offset) = first
        .await
        .map_err(|error| AdminError::Interrupted {
            id: id.clone(),
            error,
        })?
        .map_err(|error| unreadable(&id, error))?
        .ok_or_else(|| AdminError::NoPreviousInstance(id.clone()))?;
    let mut stamps = request.timestamps.then(LineStamps::default);
    // What was in the files already was written at some time before the call; what follows is
    // read within `FOLLOW_INTERVAL` of its write.
    let first = match &mut stamps {
        Some(stamps) => stamps.stamp_earlier(&first, clock()),
        None => first,
    };
    let mut stamped = move |data: Vec<u8>| match &mut stamps {
        Some(stamps) => stamps.stamp(&data, clock()),
        None => data,
    };
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        if !first.is_empty() && sender.send(Ok(pb::LogChunk { data: first })).await.is_err() {
            return;
        }
        if !request.follow {
            return;
        }
        loop {
            tokio::select! {
                () = sender.closed() => return,
                // A followed log ends with the launcher, so that shutdown never waits for it.
                _ = stopping.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
            let next = {
                let (source, id) = (source.clone(), id.clone());
                blocking(move || source.read_from(&id, offset)).await
            };
            let Ok(next) = next else {
                return;
            };
            match next {
                Ok((data, next)) => {
                    offset = next;
                    if data.is_empty() {
                        continue;
                    }
                    let data = stamped(data);
                    if sender.send(Ok(pb::LogChunk { data })).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(admin_status(unreadable(&id, error)))).await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Puts the time before each line of a log read in pieces (a piece may end in the middle of a
/// line, which the next one goes on with): `2026-12-01T10:00:00.123Z ` and the line, for a
/// line read while following (within `FOLLOW_INTERVAL` of its write); `<` and the time for a
/// line that was in the file already (written at some time before it).
#[derive(Debug)]
pub struct LineStamps {
    at_line_start: bool,
}

impl Default for LineStamps {
    fn default() -> LineStamps {
        LineStamps {
            at_line_start: true,
        }
    }
}

/// What marks a stamp as an upper bound: the line was in the file already when it was read.
pub const EARLIER_MARK: char = '<';

impl LineStamps {
    /// `data`, read while following, with `read_at` before each line that starts in it.
    pub fn stamp(&mut self, data: &[u8], read_at: UnixMillis) -> Vec<u8> {
        self.stamp_with(data, &format!("{} ", rfc3339(read_at)))
    }

    /// `data`, which was in the file already, with `<` and `read_at` before each line that
    /// starts in it: the line was written before then, and when is not known.
    pub fn stamp_earlier(&mut self, data: &[u8], read_at: UnixMillis) -> Vec<u8> {
        self.stamp_with(data, &format!("{EARLIER_MARK}{} ", rfc3339(read_at)))
    }

    fn stamp_with(&mut self, data: &[u8], stamp: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + stamp.len());
        for line in data.split_inclusive(|byte| *byte == b'\n') {
            if self.at_line_start {
                out.extend_from_slice(stamp.as_bytes());
            }
            out.extend_from_slice(line);
            self.at_line_start = line.last() == Some(&b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_gets_one_stamp_even_when_pieces_split_lines() {
        let mut stamps = LineStamps::default();
        let at = UnixMillis(1_796_121_599_999);
        let first = stamps.stamp(b"one\ntw", at);
        let second = stamps.stamp(b"o\nthree\n", UnixMillis(at.0 + 1));
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "2026-12-01T10:39:59.999Z one\n2026-12-01T10:39:59.999Z tw"
        );
        assert_eq!(
            String::from_utf8(second).unwrap(),
            "o\n2026-12-01T10:40:00.000Z three\n"
        );
        assert!(stamps.stamp(b"", at).is_empty());
    }

    /// Regression: `--timestamps` gave the lines already in the file the time of the call, as
    /// if they had just been written.
    #[test]
    fn lines_that_were_in_the_file_already_are_marked_as_written_before_the_stamp() {
        let mut stamps = LineStamps::default();
        let at = UnixMillis(1_796_121_599_999);
        let earlier = stamps.stamp_earlier(b"old\nhalf", at);
        let followed = stamps.stamp(b" a line\nnew\n", UnixMillis(at.0 + 1));
        assert_eq!(
            String::from_utf8(earlier).unwrap(),
            "<2026-12-01T10:39:59.999Z old\n<2026-12-01T10:39:59.999Z half"
        );
        assert_eq!(
            String::from_utf8(followed).unwrap(),
            " a line\n2026-12-01T10:40:00.000Z new\n"
        );
    }
}
