//! External tools, run as the reproduced methods run them.

use std::path::Path;

use anyhow::{Context, Result, ensure};

/// `curl` of `url` to `output`, trusting `ca_file` when given and sending
/// `headers` (`Name: value`).
pub async fn curl(
    url: &str,
    output: &Path,
    ca_file: Option<&Path>,
    headers: &[String],
) -> Result<()> {
    let mut command = tokio::process::Command::new("curl");
    command.args(["--silent", "--show-error", "--fail"]);
    if let Some(ca_file) = ca_file {
        command.arg("--cacert").arg(ca_file);
    }
    for header in headers {
        command.arg("--header").arg(header);
    }
    run(command.arg("--output").arg(output).arg(url)).await
}

/// `qemu-img convert -f <from> -O raw`: the importers' conversion.
pub async fn qemu_img_to_raw(from: &str, input: &Path, output: &Path) -> Result<()> {
    run(tokio::process::Command::new("qemu-img")
        .args(["convert", "-f", from, "-O", "raw"])
        .arg(input)
        .arg(output))
    .await
}

/// Flushes dirty pages (outside any timing), so one method's writes are not
/// written back during the next one's.
pub async fn sync() -> Result<()> {
    run(&mut tokio::process::Command::new("sync")).await
}

async fn run(command: &mut tokio::process::Command) -> Result<()> {
    let what = format!("{:?}", command.as_std());
    let status = command
        .status()
        .await
        .with_context(|| format!("run {what}"))?;
    ensure!(status.success(), "{what}: {status}");
    Ok(())
}
