//! The reproduced methods' local files: a static file server for a scratch
//! directory and a sampler of the space its files take.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;

/// A plain static file server for the scratch directory, as
/// vm-import-controller's Go `http.FileServer`: HEAD and GET of whole files
/// with their Content-Length, the body sent by `std::io::copy`, which on Linux
/// is `sendfile(2)` from the file to the socket, as Go's is. (Python's
/// `http.server` copies through 64 KiB reads and writes in the interpreter,
/// and would make the method look slower than it is.) Serves until the
/// process ends.
pub struct FileServer {
    port: u16,
}

impl FileServer {
    pub fn start(dir: &Path) -> Result<FileServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let dir = dir.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    if let Err(error) = serve_file(stream, &dir) {
                        eprintln!("file server: {error:#}");
                    }
                });
            }
        });
        Ok(FileServer { port })
    }

    pub fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

/// Answers one request on a connection, then closes it.
fn serve_file(mut stream: TcpStream, dir: &Path) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let file = path
        .strip_prefix('/')
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(|name| dir.join(name))
        .filter(|path| path.is_file());
    let Some(path) = file else {
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )?;
    if method == "GET" {
        std::io::copy(&mut file, &mut stream)?;
    }
    Ok(())
}

/// Samples the bytes allocated in a directory every few milliseconds and
/// keeps the largest sum.
pub struct ScratchSampler {
    dir: PathBuf,
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ScratchSampler {
    pub fn start(dir: &Path) -> ScratchSampler {
        let (peak, done) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let thread = {
            let (dir, peak, done) = (dir.to_owned(), peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(allocated(&dir), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        ScratchSampler {
            dir: dir.to_owned(),
            peak,
            done,
            thread,
        }
    }

    /// One more sample now (at a known peak).
    pub fn sample(&self) {
        self.peak.fetch_max(allocated(&self.dir), Ordering::Relaxed);
    }

    pub fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes allocated on disk by the files of `dir` (holes not counted).
fn allocated(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.blocks() * 512)
        .sum()
}
