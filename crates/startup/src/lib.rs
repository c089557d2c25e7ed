//! Process start-up shared by every celeriac binary, std only: `--env-file` (KEY=VALUE secrets files, refused
//! unless mode 600) applied before the flags are parsed, and the built-in HTTP health probe the container images
//! run as their HEALTHCHECK (distroless images have no shell and no curl).

pub mod envfile;
pub mod probe;

pub use envfile::{EnvFileError, init_or_exit};
