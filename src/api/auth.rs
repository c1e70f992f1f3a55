//! Who may call what, decided in one tower layer that sees every call's method before any
//! service does. A method is either open (reads that show no secret: Health, ListPatterns,
//! GetProcessStatus, GetStatus, grpc.health, reflection) or privileged (everything that changes
//! state, StreamLogs, whose output may hold what a child prints, and any method not listed here,
//! so that a new RPC is privileged until someone decides otherwise).
//!
//! - On the Unix socket the peer's credentials (SO_PEERCRED) decide: root, the launcher's own
//!   uid and members of the configured socket group may call everything; nobody else anything.
//! - On TCP, a configured bearer token is required for privileged methods (and for every method
//!   when the listener is not on loopback); a client certificate verified by mutual TLS counts as
//!   authentication for open methods. With neither configured, a loopback listener serves
//!   everything, as it always did for existing clients; a non-loopback one is refused at start
//!   unless `--insecure` says otherwise (`listener_auth`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;

use super::errors::denial_status;

/// Methods anyone who can reach a loopback listener may call: reads that show no secret.
const OPEN_METHODS: [&str; 9] = [
    "/prism.launcher.PatternLauncher/Health",
    "/prism.launcher.PatternLauncher/ListPatterns",
    "/prism.launcher.PatternLauncher/GetProcessStatus",
    "/prism.launcher.v1.LauncherAdmin/GetStatus",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Privileged methods that are the launcher's own (not in the wire contract existing clients
/// speak): they need a proven caller (the socket's uid, a token, a client certificate) on every
/// listener, loopback included, token configured or not. StreamLogs hands out what children
/// print, which the data directory's permissions keep from other users; ApplySpecs writes spec
/// files, which run any program with any environment as the launcher's user.
const PROVEN_CALLER_METHODS: [&str; 8] = [
    "/prism.launcher.v1.LauncherAdmin/StreamLogs",
    "/prism.launcher.v1.LauncherAdmin/ResetProcess",
    "/prism.launcher.v1.LauncherAdmin/StopProcess",
    "/prism.launcher.v1.LauncherAdmin/StartProcess",
    "/prism.launcher.v1.LauncherAdmin/RestartProcess",
    // A description carries the spec's environment and the log's last lines.
    "/prism.launcher.v1.LauncherAdmin/DescribeProcess",
    "/prism.launcher.v1.LauncherAdmin/ApplySpecs",
    "/prism.launcher.v1.LauncherAdmin/DeleteProcesses",
];

/// The shortest token accepted: anything shorter can be guessed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The longest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Privileged,
}

/// What `path` (`/package.Service/Method`) needs; unknown methods are privileged.
pub fn access_of(path: &str) -> Access {
    if OPEN_METHODS.contains(&path) {
        Access::Open
    } else {
        Access::Privileged
    }
}

/// A shared secret that callers present as `authorization: Bearer <token>`.
pub struct BearerToken(Vec<u8>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {}", path.display())]
    ReadToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the token file {} is readable by other users (mode {mode:o}); chmod 600 it",
        path.display()
    )]
    TokenFileOpen { path: PathBuf, mode: u32 },
    #[error(
        "the token in {} is {len} bytes; it must be {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} \
         bytes of printable ASCII without spaces (e.g. `openssl rand -hex 32`)",
        path.display()
    )]
    BadToken { path: PathBuf, len: usize },
    #[error(
        "refusing to listen on {address} with no authentication: anyone who can reach it could \
         launch processes. Give --auth-token-file or --tls-client-ca (mutual TLS), listen on \
         loopback (127.0.0.1) and use the Unix socket, or pass --insecure to accept the risk"
    )]
    Unauthenticated { address: SocketAddr },
}

impl BearerToken {
    /// Reads a token from `path`: one line, whitespace around it ignored. The file must not be
    /// readable by other users.
    pub fn from_file(path: &Path) -> Result<BearerToken, AuthError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let read_error = |source| AuthError::ReadToken {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mode = file.metadata().map_err(read_error)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::TokenFileOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Vec::new();
        file.take(MAX_TOKEN_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(read_error)?;
        let token = text.trim_ascii();
        BearerToken::new(token).ok_or(AuthError::BadToken {
            path: path.to_path_buf(),
            len: token.len(),
        })
    }

    /// A token of `MIN_TOKEN_BYTES` to `MAX_TOKEN_BYTES` printable ASCII characters (what an
    /// HTTP header can carry), or `None`.
    pub fn new(token: &[u8]) -> Option<BearerToken> {
        let usable = (MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES as usize).contains(&token.len())
            && token.iter().all(|byte| byte.is_ascii_graphic());
        usable.then(|| BearerToken(token.to_vec()))
    }

    /// The token, for a client to send.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII gets in (`new`), which is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether `presented` is this token, in time that depends on the token's length only.
    fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        let difference = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Adds a bearer token to every call of a client (ours of the launcher, and the admin client's
/// of prism-admin).
#[derive(Clone)]
pub struct WithToken(Option<MetadataValue<Ascii>>);

impl WithToken {
    pub fn new(token: Option<&BearerToken>) -> WithToken {
        // A token is printable ASCII (`BearerToken::new`), which a header value always takes;
        // were it not, calls would go without it and be refused, never sent with another.
        WithToken(token.and_then(|token| format!("Bearer {}", token.as_str()).parse().ok()))
    }
}

impl Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(http::header::AUTHORIZATION.as_str(), value.clone());
        }
        Ok(request)
    }
}

/// How a listener authenticates its callers.
#[derive(Debug, Clone)]
pub enum ListenerAuth {
    /// The Unix socket in the data directory.
    Unix { own_uid: u32, group: Option<u32> },
    Tcp {
        token: Option<Arc<BearerToken>>,
        loopback: bool,
        /// Mutual TLS: every connection carries a client certificate the CA signed (the TLS
        /// handshake refuses the others).
        client_certificates: bool,
    },
}

/// How a TCP listener at `address` authenticates, refusing one that is reachable from other
/// hosts with no authentication unless `insecure`.
pub fn listener_auth(
    address: SocketAddr,
    token: Option<Arc<BearerToken>>,
    client_certificates: bool,
    insecure: bool,
) -> Result<ListenerAuth, AuthError> {
    let loopback = address.ip().is_loopback();
    if !loopback && token.is_none() && !client_certificates {
        if !insecure {
            return Err(AuthError::Unauthenticated { address });
        }
        tracing::warn!(%address, "--insecure: anyone who can reach this address can launch \
            processes as this launcher's user");
    }
    Ok(ListenerAuth::Tcp {
        token,
        loopback,
        client_certificates,
    })
}

/// Who is calling, as far as the connection and the call's headers tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The bearer token presented, if any.
    pub bearer: Option<&'a [u8]>,
    /// The peer's credentials, on the Unix socket.
    pub peer: Option<Peer>,
}

/// A Unix socket peer's credentials, as the kernel gave them at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error(
        "{method} needs authentication: send `authorization: Bearer <token>` (the launcher's \
         --auth-token-file), or call through the Unix socket in the launcher's data directory"
    )]
    NoToken { method: String },
    #[error(
        "{method} needs a proven caller: call through the Unix socket in the launcher's data \
         directory (the CLI's default), or configure --auth-token-file and send the token"
    )]
    NotProven { method: String },
    #[error("{method}: the bearer token is not this launcher's")]
    WrongToken { method: String },
    #[error("{method}: the caller's credentials on the Unix socket cannot be read")]
    NoPeer { method: String },
    #[error(
        "{method}: uid {uid} may not call this launcher; root, the launcher's own user{group} may"
    )]
    Peer {
        method: String,
        uid: u32,
        group: String,
    },
}

/// Whether `caller` may call `method` on a listener of `listener`. `in_group` tells whether a
/// peer belongs to a group (its supplementary groups, read only when a socket group is
/// configured and the peer is neither root nor the launcher's user).
pub fn authorize(
    listener: &ListenerAuth,
    method: &str,
    caller: Caller<'_>,
    in_group: impl FnOnce(Peer, u32) -> bool,
) -> Result<(), Denial> {
    let method_name = || method.to_string();
    match listener {
        ListenerAuth::Unix { own_uid, group } => {
            let peer = caller.peer.ok_or_else(|| Denial::NoPeer {
                method: method_name(),
            })?;
            let allowed = peer.uid == 0
                || peer.uid == *own_uid
                || group.is_some_and(|group| peer.gid == group || in_group(peer, group));
            if allowed {
                Ok(())
            } else {
                Err(Denial::Peer {
                    method: method_name(),
                    uid: peer.uid,
                    group: group.map_or(String::new(), |gid| format!(" and members of gid {gid}")),
                })
            }
        }
        ListenerAuth::Tcp {
            token,
            loopback,
            client_certificates,
        } => {
            let Some(token) = token else {
                // Without a token, the listener's own guard decides: mutual TLS, or loopback
                // (`listener_auth` refuses anything else), where the wire contract's calls stay
                // open to the clients that always made them, and the launcher's own privileged
                // calls need the socket.
                if *client_certificates || !PROVEN_CALLER_METHODS.contains(&method) {
                    return Ok(());
                }
                return Err(Denial::NotProven {
                    method: method_name(),
                });
            };
            let needs_token = match access_of(method) {
                Access::Privileged => true,
                Access::Open => !loopback && !client_certificates,
            };
            match caller.bearer {
                _ if !needs_token => Ok(()),
                None => Err(Denial::NoToken {
                    method: method_name(),
                }),
                Some(presented) if token.matches(presented) => Ok(()),
                Some(_) => Err(Denial::WrongToken {
                    method: method_name(),
                }),
            }
        }
    }
}

/// The bearer token of an `authorization` header value.
fn bearer_of(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    (value.len() > SCHEME.len() && value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME))
        .then(|| value[SCHEME.len()..].trim_ascii())
}

/// Whether the process `pid` has `group` among its supplementary groups (blocking: reads
/// /proc).
fn has_supplementary_group(pid: i32, group: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .is_some_and(|groups| {
            groups
                .split_whitespace()
                .any(|gid| gid.parse() == Ok(group))
        })
}

/// The layer that authenticates every call on one listener.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    listener: Arc<ListenerAuth>,
}

impl AuthLayer {
    pub fn new(listener: ListenerAuth) -> AuthLayer {
        AuthLayer {
            listener: Arc::new(listener),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            listener: self.listener.clone(),
        }
    }
}

/// A service whose calls are authenticated first.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    listener: Arc<ListenerAuth>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let listener = self.listener.clone();
        let method = request.uri().path().to_string();
        let bearer = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| bearer_of(value.as_bytes()))
            .map(<[u8]>::to_vec);
        let peer = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| Peer {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            });
        Box::pin(async move {
            let caller = Caller {
                bearer: bearer.as_deref(),
                peer,
            };
            // Supplementary groups are read from /proc, off the async workers, and only for a
            // peer that is neither root nor the launcher's user on a socket with a group.
            let needs_groups = match (&*listener, peer) {
                (ListenerAuth::Unix { own_uid, group }, Some(peer)) => group.is_some_and(|group| {
                    peer.uid != 0 && peer.uid != *own_uid && peer.gid != group
                }),
                _ => false,
            };
            let member = match (needs_groups, peer.and_then(|peer| peer.pid), &*listener) {
                (
                    true,
                    Some(pid),
                    ListenerAuth::Unix {
                        group: Some(group), ..
                    },
                ) => {
                    let group = *group;
                    tokio::task::spawn_blocking(move || has_supplementary_group(pid, group))
                        .await
                        .unwrap_or(false)
                }
                _ => false,
            };
            match authorize(&listener, &method, caller, |_, _| member) {
                Ok(()) => inner.call(request).await,
                Err(denial) => {
                    tracing::warn!(%denial, "call refused");
                    Ok(denial_status(denial).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAUNCH: &str = "/prism.launcher.PatternLauncher/LaunchPattern";
    const HEALTH: &str = "/prism.launcher.PatternLauncher/Health";

    fn token() -> Arc<BearerToken> {
        Arc::new(BearerToken::new(b"0123456789abcdef-secret").unwrap())
    }

    fn tcp(token: Option<Arc<BearerToken>>, loopback: bool, certs: bool) -> ListenerAuth {
        ListenerAuth::Tcp {
            token,
            loopback,
            client_certificates: certs,
        }
    }

    fn with_bearer(bearer: &[u8]) -> Caller<'_> {
        Caller {
            bearer: Some(bearer),
            peer: None,
        }
    }

    fn never(_: Peer, _: u32) -> bool {
        false
    }

    #[test]
    fn every_mutating_method_and_any_unknown_one_is_privileged() {
        for method in [
            LAUNCH,
            "/prism.launcher.PatternLauncher/TerminatePattern",
            "/prism.ControlPlane/AssignProcess",
            "/prism.ControlPlane/RevokeProcess",
            "/prism.ControlPlane/RegisterLauncher",
            "/prism.launcher.v1.LauncherAdmin/ResetProcess",
            "/prism.launcher.v1.LauncherAdmin/StreamLogs",
            "/prism.launcher.v1.LauncherAdmin/StopProcess",
            "/prism.launcher.v1.LauncherAdmin/StartProcess",
            "/prism.launcher.v1.LauncherAdmin/RestartProcess",
            "/prism.launcher.v1.LauncherAdmin/DescribeProcess",
            "/prism.launcher.v1.LauncherAdmin/ApplySpecs",
            "/prism.launcher.v1.LauncherAdmin/DeleteProcesses",
            "/prism.launcher.v1.LauncherAdmin/SomethingNew",
            "/unknown.Service/Method",
            "",
        ] {
            assert_eq!(access_of(method), Access::Privileged, "{method}");
        }
        for method in OPEN_METHODS {
            assert_eq!(access_of(method), Access::Open, "{method}");
        }
    }

    #[test]
    fn with_a_token_privileged_calls_need_it_and_open_ones_on_loopback_do_not() {
        let listener = tcp(Some(token()), true, false);
        assert_eq!(
            authorize(&listener, LAUNCH, Caller::default(), never),
            Err(Denial::NoToken {
                method: LAUNCH.to_string()
            })
        );
        assert_eq!(
            authorize(
                &listener,
                LAUNCH,
                with_bearer(b"0123456789abcdef-secreT"),
                never
            ),
            Err(Denial::WrongToken {
                method: LAUNCH.to_string()
            })
        );
        assert_eq!(
            authorize(&listener, LAUNCH, with_bearer(b"short"), never),
            Err(Denial::WrongToken {
                method: LAUNCH.to_string()
            })
        );
        assert_eq!(
            authorize(
                &listener,
                LAUNCH,
                with_bearer(b"0123456789abcdef-secret"),
                never
            ),
            Ok(())
        );
        assert_eq!(
            authorize(&listener, HEALTH, Caller::default(), never),
            Ok(())
        );

        let remote = tcp(Some(token()), false, false);
        assert!(authorize(&remote, HEALTH, Caller::default(), never).is_err());
        let remote_mtls = tcp(Some(token()), false, true);
        assert_eq!(
            authorize(&remote_mtls, HEALTH, Caller::default(), never),
            Ok(())
        );
        assert!(authorize(&remote_mtls, LAUNCH, Caller::default(), never).is_err());
    }

    #[test]
    fn without_a_token_the_listener_guard_decides() {
        assert_eq!(
            authorize(&tcp(None, true, false), LAUNCH, Caller::default(), never),
            Ok(())
        );
        assert_eq!(
            authorize(&tcp(None, false, true), LAUNCH, Caller::default(), never),
            Ok(())
        );
        // The launcher's own privileged calls need a proven caller even on loopback.
        for method in PROVEN_CALLER_METHODS {
            assert_eq!(
                authorize(&tcp(None, true, false), method, Caller::default(), never),
                Err(Denial::NotProven {
                    method: method.to_string()
                })
            );
            assert_eq!(
                authorize(&tcp(None, false, true), method, Caller::default(), never),
                Ok(())
            );
        }
        let anywhere: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let error = listener_auth(anywhere, None, false, false).unwrap_err();
        assert!(error.to_string().contains("--auth-token-file"), "{error}");
        assert!(listener_auth(anywhere, Some(token()), false, false).is_ok());
        assert!(listener_auth(anywhere, None, true, false).is_ok());
        assert!(listener_auth(anywhere, None, false, true).is_ok());
        let loopback: SocketAddr = "[::1]:7070".parse().unwrap();
        assert!(listener_auth(loopback, None, false, false).is_ok());
    }

    #[test]
    fn on_the_socket_root_the_own_user_and_the_group_may_call() {
        let socket = ListenerAuth::Unix {
            own_uid: 1000,
            group: Some(50),
        };
        let peer = |uid, gid| Caller {
            bearer: None,
            peer: Some(Peer {
                uid,
                gid,
                pid: Some(1),
            }),
        };
        assert_eq!(authorize(&socket, LAUNCH, peer(0, 0), never), Ok(()));
        assert_eq!(authorize(&socket, LAUNCH, peer(1000, 1000), never), Ok(()));
        assert_eq!(authorize(&socket, LAUNCH, peer(1001, 50), never), Ok(()));
        assert_eq!(
            authorize(&socket, LAUNCH, peer(1001, 1001), |_, group| group == 50),
            Ok(())
        );
        let denied = authorize(&socket, HEALTH, peer(1001, 1001), never).unwrap_err();
        assert!(denied.to_string().contains("uid 1001 may not"), "{denied}");
        assert_eq!(
            authorize(&socket, LAUNCH, Caller::default(), never),
            Err(Denial::NoPeer {
                method: LAUNCH.to_string()
            })
        );
        let private = ListenerAuth::Unix {
            own_uid: 1000,
            group: None,
        };
        assert!(authorize(&private, LAUNCH, peer(1001, 50), |_, _| true).is_err());
    }

    #[test]
    fn tokens_are_read_from_private_files_only_and_must_be_long() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  0123456789abcdef-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = BearerToken::from_file(&path).unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token = BearerToken::from_file(&path).unwrap();
        assert_eq!(token.as_str(), "0123456789abcdef-secret");
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        std::fs::write(&path, "short\n").unwrap();
        let error = BearerToken::from_file(&path).unwrap_err();
        assert!(error.to_string().contains("is 5 bytes"), "{error}");
        assert!(BearerToken::new(b"0123456789abcdef with space").is_none());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_nothing_else_is_a_bearer() {
        assert_eq!(bearer_of(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_of(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_of(b"Basic abc"), None);
        assert_eq!(bearer_of(b"Bearer "), None);
    }
}
