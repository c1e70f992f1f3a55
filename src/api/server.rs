//! The gRPC listeners: every service on the TCP listener (TLS when configured) and on the Unix
//! socket, each behind the authentication of its kind (`auth`), bound by the caller. Reflection (v1 and
//! v1alpha) lists exactly the services served, so `grpcurl list` never shows one that answers
//! UNIMPLEMENTED.

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::Routes;

use super::auth::{AuthLayer, ListenerAuth};
use super::tls::ServerTls;

use super::context::ApiContext;
use super::control_plane::ControlPlaneService;
use super::launcher_admin::LauncherAdminService;
use super::pattern_launcher::PatternLauncherService;
use super::proto::prism::control_plane_server::ControlPlaneServer;
use super::proto::prism::launcher::pattern_launcher_server::PatternLauncherServer;
use super::proto::prism::launcher::v1::launcher_admin_server::LauncherAdminServer;
use super::proto::FILE_DESCRIPTOR_SET;

/// The full names of the services this listener serves, as reflection and grpc.health see them.
pub const SERVED_SERVICES: [&str; 6] = [
    "prism.launcher.PatternLauncher",
    "prism.launcher.v1.LauncherAdmin",
    "prism.ControlPlane",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Where the gRPC services are served, and how each listener authenticates its callers.
pub struct GrpcListeners {
    pub tcp: TcpListener,
    pub tcp_auth: ListenerAuth,
    /// TLS on the TCP listener (mutual when it names a client CA).
    pub tls: Option<ServerTls>,
    /// The Unix socket in the data directory, where the peer's uid decides.
    pub unix: Option<UnixListener>,
    pub unix_auth: ListenerAuth,
}

/// Serves every service on every listener until `shutdown` completes.
pub async fn serve(
    listeners: GrpcListeners,
    context: Arc<ApiContext>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let routes = routes(context).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_when = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut tcp_server = tonic::transport::Server::builder();
    if let Some(tls) = listeners.tls {
        tcp_server = tcp_server.tls_config(tls.0)?;
    }
    let tcp = tcp_server
        .layer(AuthLayer::new(listeners.tcp_auth))
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(without_delay(listeners.tcp), stop_when(stopped.clone()));
    let unix = async {
        match listeners.unix {
            Some(listener) => {
                tonic::transport::Server::builder()
                    .layer(AuthLayer::new(listeners.unix_auth))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(
                        UnixListenerStream::new(listener),
                        stop_when(stopped),
                    )
                    .await
            }
            None => Ok(()),
        }
    };
    let shutdown = async {
        shutdown.await;
        let _ = stop.send(true);
        Ok(())
    };
    tokio::try_join!(tcp, unix, shutdown)?;
    Ok(())
}

/// Every service, once, for every listener.
async fn routes(context: Arc<ApiContext>) -> Result<Routes, ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for service in &SERVED_SERVICES[..3] {
        health_reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    Ok(Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(PatternLauncherServer::new(PatternLauncherService {
            context: context.clone(),
        }))
        .add_service(LauncherAdminServer::new(LauncherAdminService {
            context: context.clone(),
        }))
        .add_service(ControlPlaneServer::new(ControlPlaneService { context })))
}

/// The listener's connections with Nagle's algorithm off: an answer's last frame (the gRPC
/// trailers) goes out at once instead of waiting up to 40 ms for the client's delayed ACK.
fn without_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot turn Nagle's algorithm off for a connection");
            }
        })
    })
}

/// A reflection builder that knows every served descriptor and lists only the served services.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    SERVED_SERVICES.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |builder, service| builder.with_service_name(*service),
    )
}
