//! Host paths for `allowed_mount_sources`: lexical normalisation, the
//! component-wise "is under" test, and symlink resolution behind a trait so
//! the check itself stays pure and testable with a fake file system.

use std::path::{Path, PathBuf};

/// Where the Docker socket lives on the hosts berth runs on. A container
/// that can reach it can start a privileged container: it is root.
pub const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// Resolves host paths the way the engine will see them when it mounts.
///
/// A document names a path; what the engine mounts is whatever that path
/// resolves to when the container starts, so a symbolic link under an
/// allowed prefix (`/data/etc -> /etc`) would otherwise escape it.
pub trait HostPaths {
    /// `path` (absolute, normalised) with every symbolic link in its longest
    /// existing ancestor resolved, and the components that do not exist yet
    /// appended as written. A path that cannot be resolved at all comes back
    /// unchanged.
    fn resolve(&self, path: &str) -> String;
}

/// The real host: `std::fs::canonicalize` of the longest existing ancestor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHostPaths;

impl HostPaths for RealHostPaths {
    fn resolve(&self, path: &str) -> String {
        let path = Path::new(path);
        let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
        let mut ancestor = Some(path);
        while let Some(a) = ancestor {
            if let Ok(real) = std::fs::canonicalize(a) {
                let mut out: PathBuf = real;
                for c in rest.iter().rev() {
                    out.push(c);
                }
                return normalise(&out.to_string_lossy()).unwrap_or_else(|_| path_text(path));
            }
            if let Some(name) = a.file_name() {
                rest.push(name);
            }
            ancestor = a.parent();
        }
        path_text(path)
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `path` with `//`, `/./` and a trailing `/` removed.
///
/// # Errors
/// A relative path, or one with a `..` component: a prefix check on text
/// that still has `..` in it says nothing about where it points.
pub fn normalise(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("is not an absolute path");
    }
    let mut out = String::with_capacity(path.len());
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("contains \"..\""),
            p => {
                out.push('/');
                out.push_str(p);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether normalised `path` is `prefix` or below it, component-wise:
/// `/data` is under `/data` and `/`, `/data/x` under `/data`, `/database` not.
pub fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}
