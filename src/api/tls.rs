//! TLS for every gRPC connection the launcher makes or takes, with rustls and its ring provider
//! only (tonic's `tls-ring`): the server's certificate and, for mutual TLS, the CA its clients'
//! certificates must chain to; a client's CA, and its own certificate when the server asks for
//! one. Files are read once, at start, by whoever builds the configuration (blocking).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS handshake that takes longer than this is given up.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most bytes read from a PEM file: certificates chains are a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} {} is not PEM (no \"-----BEGIN\" line)", path.display())]
    NotPem { what: &'static str, path: PathBuf },
    #[error("{given} needs {needed} as well")]
    Incomplete {
        given: &'static str,
        needed: &'static str,
    },
}

/// A server's TLS configuration, read and ready (what `ServerTlsFiles::load` gives).
#[derive(Debug, Clone)]
pub struct ServerTls(pub(crate) ServerTlsConfig);

/// A client's TLS configuration, read and ready (what `ClientTlsFiles::load` gives).
#[derive(Debug, Clone)]
pub struct ClientTls(pub(crate) ClientTlsConfig);

/// The server side: its certificate and key, and the CA of its clients for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When given, every client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// The client side: the CA that signed the server's certificate, and the client's own
/// certificate and key when the server requires one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// The files from the three flags, or `None` when TLS is not asked for; a CA or a key without
    /// a certificate (and the reverse) is an error.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<ServerTlsFiles>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTlsFiles {
                cert,
                key,
                client_ca,
            })),
            (Some(_), None) => Err(TlsError::Incomplete {
                given: "--tls-cert",
                needed: "--tls-key",
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                given: "--tls-key",
                needed: "--tls-cert",
            }),
            (None, None) if client_ca.is_some() => Err(TlsError::Incomplete {
                given: "--tls-client-ca",
                needed: "--tls-cert and --tls-key",
            }),
            (None, None) => Ok(None),
        }
    }

    /// The files' contents (blocking), checked to be PEM.
    pub fn read(&self) -> Result<ServerTlsPem, TlsError> {
        Ok(ServerTlsPem {
            cert: read_pem("certificate", &self.cert)?,
            key: read_pem("private key", &self.key)?,
            client_ca: self
                .client_ca
                .as_deref()
                .map(|ca| read_pem("client CA", ca))
                .transpose()?,
        })
    }
}

/// What `ServerTlsFiles` hold, read: PEM text.
pub struct ServerTlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    /// The gRPC listener's TLS, mutual when the PEM has a client CA.
    pub fn new(pem: &ServerTlsPem) -> ServerTls {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pem.cert, &pem.key))
            // A client that never finishes its handshake holds a connection, not the listener.
            .timeout(HANDSHAKE_TIMEOUT);
        ServerTls(match &pem.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        })
    }
}

impl ClientTlsFiles {
    /// Whether TLS is asked for at all.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The client's TLS configuration, with the files read (blocking). Without a CA, the
    /// system's roots are not consulted (tonic is built without them): a CA is required.
    pub fn load(&self, flags: [&'static str; 3]) -> Result<ClientTls, TlsError> {
        let [ca_flag, cert_flag, key_flag] = flags;
        let Some(ca) = &self.ca else {
            return Err(TlsError::Incomplete {
                given: if self.cert.is_some() {
                    cert_flag
                } else {
                    key_flag
                },
                needed: ca_flag,
            });
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem("CA certificate", ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(ClientTls(config.identity(Identity::from_pem(
                read_pem("certificate", cert)?,
                read_pem("private key", key)?,
            )))),
            (None, None) => Ok(ClientTls(config)),
            (Some(_), None) => Err(TlsError::Incomplete {
                given: cert_flag,
                needed: key_flag,
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                given: key_flag,
                needed: cert_flag,
            }),
        }
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_PEM_BYTES)
        .read_to_end(&mut pem)
        .map_err(read_error)?;
    if !pem.windows(10).any(|window| window == b"-----BEGIN") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_flags_say_what_is_missing() {
        let path = || Some(PathBuf::from("/x"));
        assert_eq!(ServerTlsFiles::from_flags(None, None, None).unwrap(), None);
        for (cert, key, ca, expected) in [
            (path(), None, None, "--tls-cert needs --tls-key as well"),
            (None, path(), None, "--tls-key needs --tls-cert as well"),
            (
                None,
                None,
                path(),
                "--tls-client-ca needs --tls-cert and --tls-key as well",
            ),
        ] {
            let error = ServerTlsFiles::from_flags(cert, key, ca).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
        let client = ClientTlsFiles {
            cert: path(),
            ..Default::default()
        };
        let error = client.load(["--ca", "--cert", "--key"]).unwrap_err();
        assert_eq!(error.to_string(), "--cert needs --ca as well");
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let files = ServerTlsFiles {
            cert: cert.clone(),
            key: cert.clone(),
            client_ca: None,
        };
        let error = files.read().err().unwrap();
        assert!(
            error.to_string().contains("certificate") && error.to_string().contains("not PEM"),
            "{error}"
        );
        let missing = ServerTlsFiles {
            cert: dir.path().join("missing.pem"),
            key: cert,
            client_ca: None,
        };
        assert!(missing
            .read()
            .err()
            .unwrap()
            .to_string()
            .contains("cannot read"));
    }
}
