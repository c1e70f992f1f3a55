//! Displays an error with its whole chain of causes, `outer: inner: innermost`.
//!
//! Error messages in this crate never repeat their source (it is kept as `#[source]`), so logs,
//! status fields and gRPC messages use this to show the full story once.

use std::error::Error;
use std::fmt;

/// `Chain(&error)` displays `error` followed by each of its sources.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_shows_every_cause_once() {
        let error = Outer(std::io::Error::from_raw_os_error(2));
        assert_eq!(
            Chain(&error).to_string(),
            "cannot start /x: No such file or directory (os error 2)"
        );
    }
}
