//! Accepting HTTP connections, plain or TLS, HTTP/1.1 and HTTP/2, until the scheduler stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_LIMIT: Duration = Duration::from_secs(30);
/// How long open requests (event streams, downloads) may go on once shutdown began.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A running HTTP port.
#[derive(Debug)]
pub struct HttpServer {
    /// The address it listens on (the real port when started on port 0).
    pub addr: SocketAddr,
    /// Whether it serves TLS (`https://`).
    pub tls: bool,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves `app` on `listener` until `shutdown` fires; with `tls` over TLS only.
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        app: Router,
        shutdown: CancellationToken,
    ) -> std::io::Result<HttpServer> {
        let addr = listener.local_addr()?;
        let secure = tls.is_some();
        let acceptor = tls.map(TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, acceptor, app, shutdown));
        info!(%addr, tls = secure, "HTTP listening");
        Ok(HttpServer {
            addr,
            tls: secure,
            task,
        })
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Waits until every connection closed (open ones get [`CLOSE_GRACE`] after shutdown).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    debug!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            acceptor.clone(),
            app.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) {
    let Some(acceptor) = acceptor else {
        return serve_io(stream, peer, app, shutdown).await;
    };
    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_io(tls, peer, app, shutdown).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "HTTP TLS handshake failed"),
        Err(_) => debug!(%peer, "HTTP TLS handshake timed out"),
    }
}

async fn serve_io<I>(io: I, peer: SocketAddr, app: Router, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, request).await }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its request headers does not hold a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_LIMIT);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
