use tracing_subscriber::EnvFilter;

use crate::Error;

/// How log lines are written: text for people, JSON for log collectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. Call once, first thing in `main`.
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), Error> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| Error::LogFilter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|_| Error::LoggingInitialised)
}
