//! The closed sets of the domain and their one spelling: every reader (spec files, manifests,
//! LaunchPattern, AssignProcess, flags, the legacy flags) parses them here, and every writer
//! (status, logs, metrics, errors) prints them from here.

use std::fmt;
use std::str::FromStr;

use super::admin_link::{AdminLinkState, InitialSetMarker};
use super::enforcement::Enforcement;
use super::limits::echo;
use super::model::{Health, Isolation, Phase, ProcessType, RestartPolicy, SourceKind, StopReason};
use super::plan::DiffKind;
use super::rows::ClientState;

/// A word that is not one of a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {} is not one of {expected}", echo(.given))]
pub struct UnknownWord {
    /// What the set is called, e.g. "isolation".
    pub kind: &'static str,
    pub given: String,
    /// The accepted words, comma-separated.
    pub expected: String,
}

/// A closed set of words: each value has one spelling.
pub trait Vocabulary: Sized + Copy + 'static {
    /// What the set is called in messages.
    const KIND: &'static str;
    /// Every value, in the order they are listed in messages.
    const ALL: &'static [Self];
    /// The one spelling of each value of `ALL`, in the same order.
    const WORDS: &'static [&'static str];
    /// The one spelling of a value.
    fn as_str(self) -> &'static str;
    /// Further spellings read for compatibility (never printed).
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }

    /// Parses one of the spellings (exactly, case included).
    fn parse_word(text: &str) -> Result<Self, UnknownWord> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.as_str() == text || value.aliases().contains(&text))
            .ok_or_else(|| UnknownWord {
                kind: Self::KIND,
                given: text.to_string(),
                expected: Self::WORDS.join(", "),
            })
    }
}

/// Implements `Vocabulary`, `Display` and `FromStr` for an enum from its one table of spellings.
macro_rules! vocabulary {
    ($type:ty, $kind:literal, [$($value:path => $word:literal $(| $alias:literal)*),+ $(,)?]) => {
        impl $type {
            /// The one spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($value => $word),+
                }
            }
        }

        impl Vocabulary for $type {
            const KIND: &'static str = $kind;
            const ALL: &'static [Self] = &[$($value),+];
            const WORDS: &'static [&'static str] = &[$($word),+];

            fn as_str(self) -> &'static str {
                <$type>::as_str(self)
            }

            fn aliases(self) -> &'static [&'static str] {
                match self {
                    $($value => &[$($alias),*]),+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<Self, UnknownWord> {
                Self::parse_word(text)
            }
        }
    };
}

vocabulary!(Isolation, "isolation", [
    Isolation::None => "none",
    Isolation::Namespace => "namespace",
    Isolation::Session => "session",
]);

vocabulary!(ProcessType, "process type", [
    ProcessType::Pattern => "pattern",
    ProcessType::Proxy => "proxy",
    ProcessType::Backend => "backend",
    ProcessType::Utility => "utility",
]);

// Spec files have always taken Kubernetes' spelling (`OnFailure`); it stays readable.
vocabulary!(RestartPolicy, "restart policy", [
    RestartPolicy::Always => "always" | "Always",
    RestartPolicy::OnFailure => "on-failure" | "OnFailure",
    RestartPolicy::Never => "never" | "Never",
]);

vocabulary!(Phase, "state", [
    Phase::Pending => "pending",
    Phase::Starting => "starting",
    Phase::Running => "running",
    Phase::Stopping => "stopping",
    Phase::BackingOff => "backing-off",
    Phase::Tripped => "tripped",
    Phase::Exited => "exited",
    Phase::Stopped => "stopped",
]);

vocabulary!(Health, "health", [
    Health::NotChecked => "none",
    Health::Unknown => "unknown",
    Health::Healthy => "healthy",
    Health::Unhealthy => "unhealthy",
]);

vocabulary!(Enforcement, "enforcement", [
    Enforcement::Cgroup => "cgroup",
    Enforcement::Rlimit => "rlimit",
    Enforcement::None => "none",
]);

vocabulary!(SourceKind, "source", [
    SourceKind::File => "file",
    SourceKind::Api => "api",
    SourceKind::Admin => "admin",
]);

vocabulary!(DiffKind, "difference", [
    DiffKind::InSync => "in-sync",
    DiffKind::Start => "start",
    DiffKind::Replace => "replace",
    DiffKind::Stop => "stop",
    DiffKind::Failing => "failing",
    DiffKind::Held => "held",
]);

vocabulary!(StopReason, "stop reason", [
    StopReason::Undesired => "undesired",
    StopReason::Replace => "replace",
    StopReason::Unhealthy => "unhealthy",
    StopReason::NotReady => "not-ready",
    StopReason::Shutdown => "shutdown",
    StopReason::Held => "held",
    StopReason::Restart => "restart",
    StopReason::AdminUnreachable => "admin-unreachable",
]);

vocabulary!(AdminLinkState, "admin link state", [
    AdminLinkState::Standalone => "standalone",
    AdminLinkState::Connecting => "connecting",
    AdminLinkState::Connected => "connected",
    AdminLinkState::Unreachable => "unreachable",
]);

vocabulary!(InitialSetMarker, "initial set marker", [
    InitialSetMarker::Complete => "complete",
    InitialSetMarker::Partial => "partial",
]);

vocabulary!(ClientState, "process state", [
    ClientState::Pending => "pending",
    ClientState::Starting => "starting",
    ClientState::Running => "running",
    ClientState::Stopping => "stopping",
    ClientState::Failed => "failed",
    ClientState::Exited => "exited",
    ClientState::Stopped => "stopped",
]);

impl Isolation {
    /// The seed's capitalised spelling, used where clients already rely on it: the keys of
    /// PatternLauncher's `isolation_distribution` and the `pattern_isolation` metric label.
    pub fn distribution_key(self) -> &'static str {
        match self {
            Isolation::None => "None",
            Isolation::Namespace => "Namespace",
            Isolation::Session => "Session",
        }
    }
}
