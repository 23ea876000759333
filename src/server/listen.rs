//! The connection loop: accepts connections and serves each with hyper, as `axum::serve`
//! does, plus the deadline a server facing a network needs and `axum::serve` does not
//! offer. A client that opens a connection and sends nothing, or trickles a request's
//! headers, or sits idle between requests, is cut off after `header_read` (hyper starts
//! that clock whenever it waits for a request's head), so a few hundred slow sockets
//! cannot hold the server's connections; the body's deadline is the extractor's
//! ([`super::extract::BodyDeadline`]), which answers `408` in the usual error shape.
//!
//! HTTP/1.1 only: TLS, and with it HTTP/2, is a proxy's job in front (docs/OPERATIONS.md),
//! and a protocol-sniffing server reads its first bytes with no deadline at all.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown`, then lets the connections finish what
/// they are doing (as `axum::serve`'s graceful shutdown does) and returns.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken, header_read: Duration) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // A connection gone before it was accepted: nothing to answer, nothing wrong.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: say so, and give connections
                    // a moment to close rather than spin (as `axum::serve` does).
                    tracing::error!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
