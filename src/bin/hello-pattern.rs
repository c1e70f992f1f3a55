//! hello-pattern: the example pattern of the seed quick start. It reads its configuration from
//! the environment the launcher injects and answers `GET /health` on `HEALTH_PORT`.
//!
//! Deliberately tiny (std only) so that tests and examples have a real process to supervise.
//! `HELLO_FAIL_HEALTH=1` makes it answer 503, for showing an unhealthy process;
//! `HELLO_UNHEALTHY_WHILE=<path>` makes it answer 503 while that file exists.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

fn main() {
    let pattern_name =
        std::env::var("PATTERN_NAME").unwrap_or_else(|_| "hello-pattern".to_string());
    let namespace = std::env::var("NAMESPACE").unwrap_or_default();
    let grpc_port = std::env::var("GRPC_PORT").unwrap_or_default();
    let Ok(health_port) = std::env::var("HEALTH_PORT") else {
        eprintln!("hello-pattern: HEALTH_PORT is not set; run me under prism-launcher");
        std::process::exit(2);
    };
    let Ok(health_port) = health_port.parse::<u16>() else {
        eprintln!("hello-pattern: HEALTH_PORT={health_port:?} is not a port");
        std::process::exit(2);
    };
    let always_failing = std::env::var("HELLO_FAIL_HEALTH").is_ok_and(|value| value == "1");
    let unhealthy_while = std::env::var_os("HELLO_UNHEALTHY_WHILE").map(std::path::PathBuf::from);
    println!("Starting {pattern_name} pattern");
    println!("  Namespace: {namespace}");
    println!("  Health port: {health_port}");
    println!("  gRPC port: {grpc_port}");
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, health_port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("hello-pattern: health server failed on port {health_port}: {error}");
            std::process::exit(1);
        }
    };
    println!("Health endpoint listening on :{health_port}");
    for stream in listener.incoming().flatten() {
        let failing =
            always_failing || unhealthy_while.as_deref().is_some_and(|path| path.exists());
        answer(stream, &pattern_name, failing);
    }
}

fn answer(stream: TcpStream, pattern_name: &str, failing: bool) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers so that the client sees a clean close.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|read| read > 2) {
        header.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/health" if failing => (
            "503 Service Unavailable",
            format!("FAILING - {pattern_name} is unhealthy\n"),
        ),
        "/health" => ("200 OK", format!("OK - {pattern_name} is healthy\n")),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(response.as_bytes());
}
