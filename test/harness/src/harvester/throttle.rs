//! A slow network between Harvester and the controller
//! ([`Options::download_rate`](super::Options::download_rate)): a loopback TCP
//! relay to the URL's server that passes at most so many bytes per second
//! towards the downloader. It relays bytes, not HTTP, so HTTPS passes through
//! it unchanged.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The relay; it stops, connections and all, when dropped.
pub(super) struct Throttle {
    url: String,
    task: tokio::task::AbortHandle,
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Throttle {
    /// Starts a relay to `server`, where `url` points; [`url`](Self::url) is
    /// `url` through it. A loopback URL keeps its host (only the port
    /// changes, so a certificate for the address still matches); any other
    /// must be plain HTTP, and goes through 127.0.0.1.
    pub async fn start(url: &str, server: SocketAddr, rate: u64) -> Result<Self> {
        let mut through = reqwest::Url::parse(url).with_context(|| format!("parse {url}"))?;
        let listener = if server.ip().is_loopback() {
            TcpListener::bind((server.ip(), 0)).await?
        } else if through.scheme() == "http" {
            through
                .set_host(Some(&Ipv4Addr::LOCALHOST.to_string()))
                .with_context(|| format!("set the host of {url}"))?;
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?
        } else {
            bail!("a download rate needs a loopback or plain HTTP URL, not {url}");
        };
        through
            .set_port(Some(listener.local_addr()?.port()))
            .map_err(|()| anyhow::anyhow!("set the port of {url}"))?;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(server).await {
                        let _ = relay(client, server, rate).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        })
        .abort_handle();
        Ok(Self {
            url: through.to_string(),
            task,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Copies both ways until either side closes, the server's bytes paced to
/// `rate` per second.
async fn relay(client: TcpStream, server: TcpStream, rate: u64) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // The client's end of sending is passed on; the server then closes,
    // which ends the relay.
    let upstream = async {
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await?;
        std::future::pending::<std::io::Result<()>>().await
    };
    let downstream = async {
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        let mut buf = vec![0; 64 << 10];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return client_write.shutdown().await;
            }
            client_write.write_all(&buf[..n]).await?;
            sent += n as u64;
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            tokio::time::sleep_until(started + due).await;
        }
    };
    tokio::select! {
        r = upstream => r,
        r = downstream => r,
    }
}
