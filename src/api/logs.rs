//! `LauncherAdmin.StreamLogs`: what the API needs from children's log files, as a trait that
//! `app` implements with the runtime's log functions (api and runtime never import each other),
//! and the time stamps `--timestamps` puts before each line.
//!
//! Children write their log files themselves (files, not pipes, so that none dies of SIGPIPE when
//! the launcher goes away), so nothing records when a line was written. A stamp is the time the
//! reader read the line: while following, at most `FOLLOW_INTERVAL` after it was written; for
//! what was in the file already, the time of the call. The marker line before each instance's
//! output says when that instance started.

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
    let mut stamped = move |data: Vec<u8>| match &mut stamps {
        Some(stamps) => stamps.stamp(&data, clock()),
        None => data,
    };
    let first = stamped(first);
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
/// line, which the next one goes on with): `2026-12-01T10:00:00.123Z ` and the line.
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

impl LineStamps {
    /// `data` with `read_at` before each line that starts in it.
    pub fn stamp(&mut self, data: &[u8], read_at: UnixMillis) -> Vec<u8> {
        let stamp = format!("{} ", rfc3339(read_at));
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
}
