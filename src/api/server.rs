//! The gRPC listener: every service on one socket, bound by the caller.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use super::proto::prism::launcher::v1::launcher_admin_server::LauncherAdminServer;
use super::status::LauncherAdminService;

#[derive(Debug, thiserror::Error)]
#[error("the gRPC server failed")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves the launcher's gRPC services on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    admin: LauncherAdminService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .add_service(LauncherAdminServer::new(admin))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
