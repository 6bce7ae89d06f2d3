//! What the stand-in gives each run of a real downloader
//! (`crate::downloaders`): a directory of its own, the URL (through a
//! [`Throttle`] when the network is slowed), the CA it trusts, the hosts file
//! that resolves a Service's name as cluster DNS would, and the digest of what
//! it stored.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::throttle::Throttle;
use super::{Ctx, Hashing, cluster_dns};
use crate::downloaders::Source;

/// One download attempt's place. Dropping it removes what was downloaded and
/// keeps the programs' logs, for post-mortems.
pub(super) struct Attempt {
    dir: PathBuf,
    url: String,
    ca_file: Option<PathBuf>,
    hosts_file: Option<PathBuf>,
    _throttle: Option<Throttle>,
}

impl Attempt {
    /// `<work dir>/<namespace>_<name>/<n>`, for `url`; `trusts_ca`: whether
    /// this downloader is given Harvester's `additional-ca`.
    pub async fn new(ctx: &Ctx, name: &str, n: u32, url: &str, trusts_ca: bool) -> Result<Self> {
        let dir = ctx
            .work_dir
            .join(name.replace('/', "_"))
            .join(n.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("create {}", dir.display()))?;
        let parsed = reqwest::Url::parse(url).with_context(|| format!("parse {url}"))?;
        let throttle = match ctx.options.download_rate.filter(|&r| r > 0) {
            Some(rate) => {
                let server = cluster_dns::address(&ctx.client, &parsed).await?;
                Some(Throttle::start(url, server, rate).await?)
            }
            None => None,
        };
        let url = throttle.as_ref().map_or(url, Throttle::url).to_owned();
        let hosts_file =
            cluster_dns::hosts_file(&ctx.client, &reqwest::Url::parse(&url)?, &dir).await?;
        Ok(Self {
            dir,
            url,
            ca_file: ctx.ca_file.clone().filter(|_| trusts_ca),
            hosts_file,
            _throttle: throttle,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the downloader is given.
    pub fn source(&self) -> Source<'_> {
        Source {
            url: &self.url,
            ca_file: self.ca_file.as_deref(),
            hosts_file: self.hosts_file.as_deref(),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// What a finished download stored.
#[derive(Debug)]
pub(super) struct Digest {
    /// SHA-256 (hex) of the stored file, unless [`Hashing::Off`].
    pub sha256: Option<String>,
    /// Its size (what a guest sees: both backends store raw here, as the
    /// controller serves raw).
    pub bytes: u64,
}

/// The digest of the file a downloader stored.
pub(super) async fn digest(path: &Path, hashing: Hashing) -> Result<Digest> {
    let bytes = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("the stored file {}", path.display()))?
        .len();
    let sha256 = match hashing {
        Hashing::Off => None,
        Hashing::Sha256 => {
            let path = path.to_owned();
            Some(tokio::task::spawn_blocking(move || crate::vcsim::sha256_file(&path)).await??)
        }
    };
    Ok(Digest { sha256, bytes })
}
