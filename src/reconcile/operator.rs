//! What an operator's verbs do to a desired record: `stop` holds the process stopped, `start`
//! releases the hold, `restart` asks for a new process without a spec change. Each is a pure
//! change of the record (the store applies it in one transaction); `plan` does the rest, as it
//! does for any other change of desired state.

use super::model::{DesiredRecord, ProcessId};

/// An operator's verb on one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorVerb {
    /// Stop the process and keep it stopped, across launcher restarts, until `Release`.
    Hold,
    /// Let a held process run again.
    Release,
    /// Replace the process with a new one, as a spec change would.
    Restart,
}

impl OperatorVerb {
    /// The verb in a word, for messages: `hold` (the CLI's `stop`), `release` (`start`),
    /// `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorVerb::Hold => "hold",
            OperatorVerb::Release => "release",
            OperatorVerb::Restart => "restart",
        }
    }
}

impl std::fmt::Display for OperatorVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verb that cannot apply to the record as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorRefusal {
    #[error(
        "process {id} is held stopped by the operator, so there is nothing to restart; \
         `prism-launcher start {id}` runs it again"
    )]
    RestartWhileHeld { id: ProcessId },
}

/// The record after `verb`. Holding a held process and releasing one that is not held give
/// the record back unchanged (so that repeating a verb is harmless); restarting a held process
/// is refused. Neither changes the generation: the spec is the same.
pub fn operate(
    desired: &DesiredRecord,
    verb: OperatorVerb,
) -> Result<DesiredRecord, OperatorRefusal> {
    match verb {
        OperatorVerb::Hold => Ok(DesiredRecord {
            held: true,
            ..desired.clone()
        }),
        OperatorVerb::Release => Ok(DesiredRecord {
            held: false,
            ..desired.clone()
        }),
        OperatorVerb::Restart if desired.held => Err(OperatorRefusal::RestartWhileHeld {
            id: desired.id.clone(),
        }),
        OperatorVerb::Restart => Ok(DesiredRecord {
            restarts: desired.restarts.saturating_add(1),
            ..desired.clone()
        }),
    }
}
