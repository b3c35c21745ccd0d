//! The CLI's error type and its exit statuses.

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
