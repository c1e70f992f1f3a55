//! TLS for the HTTP endpoint when the launcher has a certificate: a listener that hands axum
//! only connections whose handshake finished, with handshakes run side by side and bounded in
//! time, so a client that never finishes one holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that takes longer than this is given up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished, waiting for axum to take them.
const READY_BACKLOG: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("the metrics endpoint's certificate (--tls-cert) holds no PEM certificate")]
    NoCertificate,
    #[error("the metrics endpoint's key (--tls-key) is not a PEM private key")]
    BadKey(#[source] tokio_rustls::rustls::pki_types::pem::Error),
    #[error("the metrics endpoint's certificate is not usable")]
    Config(#[source] tokio_rustls::rustls::Error),
}

/// The endpoint's TLS configuration, with the ring provider only.
#[derive(Clone)]
pub struct HttpsConfig(Arc<ServerConfig>);

impl std::fmt::Debug for HttpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpsConfig")
    }
}

impl HttpsConfig {
    /// A server configuration from a PEM certificate chain and key.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<HttpsConfig, HttpsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(HttpsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(HttpsError::BadKey)?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(HttpsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(HttpsError::Config)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsConfig(Arc::new(config)))
    }
}

/// A listener of finished TLS handshakes, for `axum::serve`.
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _acceptor: tokio::task::JoinHandle<()>,
}

impl HttpsListener {
    pub fn new(listener: TcpListener, config: HttpsConfig) -> std::io::Result<HttpsListener> {
        let local = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_BACKLOG);
        let acceptor = TlsAcceptor::from(config.0);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "metrics endpoint: accept failed");
                        // Out of descriptors and the like: give the system a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let ready = ready_tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "metrics endpoint: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "metrics endpoint: TLS handshake timed out")
                        }
                    }
                });
                if ready_tx.is_closed() {
                    return;
                }
            }
        });
        Ok(HttpsListener {
            ready,
            local,
            _acceptor: accepting,
        })
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self._acceptor.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor ends only when this listener is dropped; until then there is always
            // a sender, so this waits for ever, as a listener with no connections does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
