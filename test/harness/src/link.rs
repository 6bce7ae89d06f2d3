//! A TCP relay in front of a peer that a test can break and mend while the
//! peer runs on: [`Link::Refusing`] (nothing listens on the relay's port,
//! connections open through it are closed), [`Link::Hanging`] (connections
//! are accepted and kept, no byte moves either way), [`Link::Up`]. vcsim keeps
//! its inventory in memory, so taking vCenter away by stopping it would lose
//! what the test is about; a relay takes away only the network path, as a
//! vCenter restart, a firewall or a stuck load balancer would. TLS passes
//! through untouched: the client sees the peer's own certificate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Up,
    Refusing,
    Hanging,
}

/// A running relay; it stops with the test binary.
pub struct FaultyLink {
    port: u16,
    state: watch::Sender<Link>,
}

impl FaultyLink {
    /// Relays `127.0.0.1:<new port>` to `target`, starting [`Link::Up`].
    pub fn start(target: SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the relay")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let (state, watching) = watch::channel(Link::Up);
        std::thread::Builder::new()
            .name(format!("link-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the relay's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a tokio listener");
                    serve(Some(listener), port, target, watching).await
                });
            })?;
        Ok(Self { port, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, link: Link) {
        self.state.send_replace(link);
    }
}

async fn serve(
    mut listener: Option<TcpListener>,
    port: u16,
    target: SocketAddr,
    mut state: watch::Receiver<Link>,
) {
    loop {
        let link = *state.borrow_and_update();
        match (link, listener.is_some()) {
            (Link::Refusing, true) => listener = None,
            (Link::Up | Link::Hanging, false) => listener = Some(rebind(port).await),
            _ => {}
        }
        let accept = async {
            match &listener {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            accepted = accept => if let Ok((client, _)) = accepted {
                tokio::spawn(relay(client, target, state.clone()));
            },
        }
    }
}

/// Listens on `port` again; another socket may hold it for a moment.
async fn rebind(port: u16) -> TcpListener {
    loop {
        let bound = TcpSocket::new_v4().and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
            socket.listen(128)
        });
        match bound {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, state: watch::Receiver<Link>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (or the link refusing) drops all four halves.
    tokio::select! {
        () = pump(client_read, server_write, state.clone()) => {}
        () = pump(server_read, client_write, state) => {}
    }
}

/// Copies until EOF, an error or [`Link::Refusing`]; holds each chunk while
/// the link hangs.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut state: watch::Receiver<Link>,
) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = state.wait_for(|link| *link == Link::Refusing) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match state.wait_for(|link| *link != Link::Hanging).await {
            Ok(link) if *link == Link::Up => {}
            _ => return,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
