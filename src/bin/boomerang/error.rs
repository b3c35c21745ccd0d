//! The CLI's error type and its exit statuses: 2 for bad arguments or input (including a
//! refusal to touch existing files), 1 for a run that failed (writing an output failed: a
//! read-only or full disk, a file where an output folder goes; the model failed).

use std::path::Path;

/// An error of the command line tool, with its exit status.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or input (exit status 2).
    Usage(String),
    /// Something this build cannot do (exit status 2).
    Unsupported(String),
    /// The run failed (exit status 1).
    Run(boomerang::Error),
}

impl CliError {
    /// A usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    /// An unsupported request.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        CliError::Unsupported(msg.into())
    }

    /// The classification of an error of a job that writes into `output`: a failure to read,
    /// write or encode a file inside the output folder is a failed run (exit 1), whatever the
    /// operating system's reason; every other error is classified as [`From`] does (bad
    /// input: 2).
    pub fn from_job(output: &Path) -> impl Fn(boomerang::Error) -> CliError + '_ {
        move |e| {
            let in_output = match &e {
                boomerang::Error::Io { path, .. } | boomerang::Error::Image { path, .. } => {
                    !path.as_os_str().is_empty() && path.starts_with(output)
                }
                _ => false,
            };
            if in_output {
                CliError::Run(e)
            } else {
                CliError::from(e)
            }
        }
    }
}

impl From<boomerang::Error> for CliError {
    fn from(e: boomerang::Error) -> Self {
        match e {
            boomerang::Error::InvalidParameter { .. }
            | boomerang::Error::InvalidInput(_)
            | boomerang::Error::Shape(_)
            | boomerang::Error::Incompatible(_)
            | boomerang::Error::Image { .. }
            | boomerang::Error::Checkpoint { .. } => CliError::Usage(e.to_string()),
            boomerang::Error::Unsupported(m) => CliError::Unsupported(m),
            boomerang::Error::Io { ref source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                CliError::Usage(e.to_string())
            }
            other => CliError::Run(other),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Unsupported(m) => f.write_str(m),
            CliError::Run(e) => write!(f, "{e}"),
        }
    }
}
