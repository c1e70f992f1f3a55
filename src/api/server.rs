//! The gRPC listener: every service on one socket, bound by the caller. Reflection (v1 and
//! v1alpha) lists exactly the services served, so `grpcurl list` never shows one that answers
//! UNIMPLEMENTED.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

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

/// Serves every service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    context: Arc<ApiContext>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for service in &SERVED_SERVICES[..3] {
        health_reporter
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(PatternLauncherServer::new(PatternLauncherService {
            context: context.clone(),
        }))
        .add_service(LauncherAdminServer::new(LauncherAdminService {
            context: context.clone(),
        }))
        .add_service(ControlPlaneServer::new(ControlPlaneService { context }))
        .serve_with_incoming_shutdown(without_delay(listener), shutdown)
        .await?;
    Ok(())
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
