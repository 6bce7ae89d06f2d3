//! The arguments every import benchmark takes.

use std::path::PathBuf;

use anyhow::Result;
use vmm_testkit::process::run_dir;
use vmm_testkit::workspace_binary;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Measurements of each method per disk; medians are printed.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub rounds: u16,
    /// The vmm-controller binary (default: next to this program).
    #[arg(long)]
    pub controller: Option<PathBuf>,
    /// Where the reproduced method keeps its files (default: a fresh
    /// directory under $TMPDIR/vmm-e2e, removed at the end).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
}

impl ImportArgs {
    /// The reproduced method's directory, created: removed by the caller at
    /// the end.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = match &self.scratch {
            Some(dir) => dir.join(format!("import-bench-{}", std::process::id())),
            None => run_dir()?.join("scratch"),
        };
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn controller(&self) -> Result<PathBuf> {
        match &self.controller {
            Some(path) => Ok(path.clone()),
            None => workspace_binary("vmm-controller"),
        }
    }
}
