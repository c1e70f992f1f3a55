//! `LauncherAdmin.StreamLogs`: what the API needs from children's log files, as a trait that
//! `main` implements with the runtime's log functions (api and runtime never import each other).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::blocking::blocking;
use super::errors::{admin_status, AdminError};
use super::proto::prism::launcher::v1 as pb;
use crate::reconcile::ProcessId;

/// How often a followed log is read for new output.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Reading a process's log.
pub trait LogSource: Send + Sync + 'static {
    /// The last `lines` lines (all when `None`), and the offset after them.
    fn tail(&self, id: &ProcessId, lines: Option<usize>) -> std::io::Result<(Vec<u8>, u64)>;
    /// What follows `offset` (from the start when the file was rotated), and the new offset.
    fn read_from(&self, id: &ProcessId, offset: u64) -> std::io::Result<(Vec<u8>, u64)>;
}

pub type LogStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

/// The stream of a `StreamLogs` call. Log files are read on the blocking pool.
pub async fn stream_logs(
    source: Arc<dyn LogSource>,
    request: pb::StreamLogsRequest,
    mut stopping: watch::Receiver<bool>,
) -> Result<LogStream, AdminError> {
    let id = ProcessId::new(request.process_id.clone()).map_err(AdminError::InvalidId)?;
    let lines = (request.tail_lines > 0).then_some(request.tail_lines as usize);
    let read = move |source: &Arc<dyn LogSource>, id: &ProcessId, offset: Option<u64>| {
        let (source, id) = (source.clone(), id.clone());
        blocking(move || match offset {
            None => source.tail(&id, lines),
            Some(offset) => source.read_from(&id, offset),
        })
    };
    let (first, mut offset) = read(&source, &id, None)
        .await
        .map_err(|error| AdminError::Interrupted {
            id: id.clone(),
            error,
        })?
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => AdminError::NoLog(id.clone()),
            _ => AdminError::UnreadableLog {
                id: id.clone(),
                error,
            },
        })?;
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
            let next = match read(&source, &id, Some(offset)).await {
                Ok(next) => next,
                Err(_) => return,
            };
            match next {
                Ok((data, next)) => {
                    offset = next;
                    if !data.is_empty() && sender.send(Ok(pb::LogChunk { data })).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let error = AdminError::UnreadableLog { id, error };
                    let _ = sender.send(Err(admin_status(error))).await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}
