//! Health probes (HTTP GET with a 2xx answer, TCP connect), each in its own task so that a slow
//! probe never blocks the loop or another probe.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::supervisor::Event;
use crate::reconcile::{HealthCheck, Probe, ProcessId};

/// Until a process is ready, probes run this often at first, doubling up to the interval, so
/// that readiness is seen within milliseconds even with a long interval.
const FIRST_READINESS_PROBE_DELAY: Duration = Duration::from_millis(50);

/// Most bytes of an HTTP answer read to find its status line.
const MAX_STATUS_LINE_BYTES: usize = 1024;

/// Starts probing `pid` of `id`; results arrive on `events` as `Event::ProbeResult`.
pub fn start_probing(
    id: ProcessId,
    pid: u32,
    check: HealthCheck,
    health_port: u16,
    events: mpsc::UnboundedSender<Event>,
) -> AbortHandle {
    tokio::spawn(async move {
        tokio::time::sleep(check.initial_delay).await;
        let mut passes = 0u32;
        let mut readiness_delay = FIRST_READINESS_PROBE_DELAY;
        loop {
            let result = probe_once(&check.probe, health_port, check.timeout).await;
            let passed = result.is_ok();
            let event = Event::ProbeResult {
                id: id.clone(),
                pid,
                result,
            };
            if events.send(event).is_err() {
                return;
            }
            passes = if passed { passes + 1 } else { 0 };
            let ready = passes >= check.success_threshold;
            let delay = if ready {
                check.interval
            } else {
                let delay = readiness_delay.min(check.interval);
                readiness_delay = readiness_delay.saturating_mul(2);
                delay
            };
            tokio::time::sleep(delay).await;
        }
    })
    .abort_handle()
}

/// Runs one probe against 127.0.0.1, bounded by `timeout`.
pub async fn probe_once(probe: &Probe, health_port: u16, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        match probe {
            Probe::Http { path, port } => http_get(port.unwrap_or(health_port), path).await,
            Probe::Tcp { port } => {
                let port = port.unwrap_or(health_port);
                TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                    .await
                    .map(drop)
                    .map_err(|error| format!("tcp connect to 127.0.0.1:{port}: {error}"))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|error| format!("GET {url}: {error}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("GET {url}: {error}"))?;
    let mut answer = Vec::with_capacity(128);
    let mut buffer = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE_BYTES {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP answer: {status_line:?}"))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url}: status {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn http_probe_passes_on_2xx_and_fails_on_other_answers() {
        let timeout = Duration::from_secs(5);
        let probe = Probe::Http {
            path: "/health".into(),
            port: None,
        };
        let ok = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(probe_once(&probe, ok, timeout).await, Ok(()));
        let failing = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let error = probe_once(&probe, failing, timeout).await.unwrap_err();
        assert!(error.contains("status 503"), "{error}");
        let garbage = serve_once("hello\n").await;
        let error = probe_once(&probe, garbage, timeout).await.unwrap_err();
        assert!(error.contains("not an HTTP answer"), "{error}");
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe::Tcp { port: None };
        assert_eq!(
            probe_once(&probe, port, Duration::from_secs(5)).await,
            Ok(())
        );
        drop(listener);
        assert!(probe_once(&probe, port, Duration::from_secs(5))
            .await
            .is_err());
    }
}
