//! The bounds every input is held to, whoever writes it (a spec file, a request), and the one way
//! an error message echoes a value it was given: truncated, so that a huge input never becomes a
//! huge error (gRPC clients refuse a status message over their metadata limit, and the caller
//! would see RESOURCE_EXHAUSTED instead of the real error).

use std::fmt;

/// Longest name: a pattern name, a word of a closed set, a label key, a variable name, a
/// launcher id. 253 bytes, Kubernetes' bound on object names (a DNS subdomain).
pub const MAX_NAME_BYTES: usize = 253;

/// Longest namespace or session id: 63 bytes, a DNS label, as both become parts of process ids
/// (and so of file and cgroup names).
pub const MAX_NAME_PART: usize = 63;

/// Longest value: an environment value, an argument, a setting, a label value, a connection
/// string, a health-check path. 4 KiB holds any realistic setting while keeping one request
/// small; larger data belongs in a file the process reads.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Longest path (an executable, a working directory): Linux's `PATH_MAX`.
pub const MAX_PATH_BYTES: usize = 4096;

/// Most entries in one map or list (environment, arguments, settings, labels, slots...).
pub const MAX_ENTRIES: usize = 256;

/// Most bytes a child's arguments and environment may take together, counted as `execve`
/// counts them (each string plus its NUL, `NAME=value` for variables). Linux refuses an exec
/// beyond a quarter of the stack limit (2 MiB by default), and a spec over it would fail at
/// every spawn until its breaker trips; 128 KiB stays far below that on any host, and is refused
/// when the spec is written instead.
pub const MAX_ARGS_ENV_BYTES: usize = 128 * 1024;

/// How many characters of a value an error message echoes.
pub const ECHO_CHARS: usize = 64;

/// A value as an error message echoes it: quoted and escaped as `{:?}` would, and, when longer
/// than `ECHO_CHARS` characters, its first `ECHO_CHARS` followed by `…` and its length in bytes,
/// e.g. `"aaaa…" (1048576 bytes)`.
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

/// `text` as an error message echoes it (see `Echo`).
pub fn echo(text: &str) -> Echo<'_> {
    Echo(text)
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        match text.char_indices().nth(ECHO_CHARS) {
            None => write!(f, "{text:?}"),
            Some((cut, _)) => write!(
                f,
                "\"{}…\" ({} bytes)",
                text[..cut].escape_debug(),
                text.len()
            ),
        }
    }
}

/// A sentence that may embed input it was not written by us (serde's and YAML's messages, which
/// quote the offending value whole), kept to its first `max_chars` characters and its length.
/// Values we quote ourselves go through `echo`.
pub fn shortened(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// The same for an owned value kept in an error (so the error holds the short form only, never
/// a copy of a megabyte).
pub fn echoed(text: &str) -> String {
    echo(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_value_is_echoed_whole_and_a_long_one_as_its_first_64_characters_and_its_length() {
        assert_eq!(echo("tenant-a").to_string(), "\"tenant-a\"");
        assert_eq!(echo("a\"b\n").to_string(), "\"a\\\"b\\n\"");
        let exactly = "x".repeat(ECHO_CHARS);
        assert_eq!(echo(&exactly).to_string(), format!("\"{exactly}\""));
        let huge = "a".repeat(1 << 20);
        assert_eq!(
            echo(&huge).to_string(),
            format!("\"{}…\" (1048576 bytes)", "a".repeat(ECHO_CHARS))
        );
        // Cut on a character, never inside one.
        let wide = "é".repeat(100);
        assert_eq!(
            echo(&wide).to_string(),
            format!("\"{}…\" (200 bytes)", "é".repeat(ECHO_CHARS))
        );
    }
}
