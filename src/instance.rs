//! One berth per instance name on a host. Two berths that share an instance
//! name but not a state directory would each take the other's temporary
//! containers for leftovers of a crash and undo them, and each plan the
//! other's containers as its own. The first to start holds a claim on the
//! name; a second refuses to start and names the first.
//!
//! The claim is an abstract unix socket (`\0berth-instance/<name>`): the
//! kernel drops it when the process ends, however it ends, so a SIGKILL or a
//! power cut never leaves a stale claim behind. The holder answers anyone who
//! connects with who it is. Abstract sockets belong to a network namespace:
//! berths in different namespaces (containers without the host's network)
//! do not see each other's claims.

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

/// Why the instance name could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another berth holds the name.
    #[error("berth instance {instance} is already running ({holder}); two berths with one instance name would undo each other's temporary containers: stop it, or give this one another --instance")]
    Held {
        /// The name.
        instance: String,
        /// Who holds it, as it says itself.
        holder: String,
    },
    /// The claim could not be set up.
    #[error("cannot claim berth instance {instance}: {source}")]
    Io {
        /// The name.
        instance: String,
        /// The cause.
        source: io::Error,
    },
}

/// A held claim; released when the process ends (it lives as long as the
/// process does).
#[derive(Debug)]
pub struct Claim {
    name: String,
}

impl Claim {
    /// Claims `instance` for this process, whose state lives in `state_dir`.
    ///
    /// # Errors
    /// [`ClaimError::Held`] naming the holder when another berth has it.
    pub fn take(instance: &str, state_dir: &Path) -> Result<Self, ClaimError> {
        let io = |source| ClaimError::Io {
            instance: instance.to_string(),
            source,
        };
        let name = socket_name(instance);
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
        let listener = match UnixListener::bind_addr(&addr) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(ClaimError::Held {
                    instance: instance.to_string(),
                    holder: ask_holder(&addr),
                });
            }
            Err(e) => return Err(io(e)),
        };
        let me = format!(
            "pid {}, state directory {}",
            std::process::id(),
            state_dir.display()
        );
        // A plain thread, not a task: it only answers "who are you", for
        // the life of the process, and never touches the async runtime.
        std::thread::Builder::new()
            .name("berth-claim".into())
            .spawn(move || {
                for mut peer in listener.incoming().flatten() {
                    let _ = peer.write_all(me.as_bytes());
                }
            })
            .map_err(io)?;
        Ok(Self { name })
    }

    /// The claim's socket name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The longest abstract socket name used as is; the kernel allows 107 bytes.
const MAX_PLAIN_NAME: usize = 90;

/// `berth-instance/<name>`, or for a name too long for a socket address,
/// `berth-instance/sha256:<hex>` of it (the same name, the same socket).
fn socket_name(instance: &str) -> String {
    let plain = format!("berth-instance/{instance}");
    if plain.len() <= MAX_PLAIN_NAME {
        return plain;
    }
    let digest = sha2::Sha256::digest(instance.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("berth-instance/sha256:{hex}")
}

/// What the holder says about itself, or that it does not answer.
fn ask_holder(addr: &SocketAddr) -> String {
    let answer = UnixStream::connect_addr(addr).and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        s.take(4096).read_to_string(&mut text)?;
        Ok(text)
    });
    match answer {
        Ok(text) if !text.is_empty() => text,
        _ => "a process that does not answer".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> String {
        format!("test-{tag}-{}", std::process::id())
    }

    #[test]
    fn a_second_claim_on_a_name_is_refused_naming_the_first() {
        let name = unique("second");
        let _first = Claim::take(&name, Path::new("/var/lib/first")).unwrap();
        let err = Claim::take(&name, Path::new("/var/lib/second")).unwrap_err();
        let words = err.to_string();
        assert!(
            words.contains(&format!("berth instance {name} is already running")),
            "{words}"
        );
        assert!(
            words.contains(&format!("pid {}", std::process::id())),
            "{words}"
        );
        assert!(words.contains("/var/lib/first"), "{words}");
    }

    #[test]
    fn a_name_too_long_for_a_socket_address_is_claimed_by_its_digest() {
        // Regression: names past ~100 bytes made berth stop with "abstract
        // socket name must be shorter than SUN_LEN".
        let long = unique(&"x".repeat(200));
        let _first = Claim::take(&long, Path::new("/a")).unwrap();
        assert!(matches!(
            Claim::take(&long, Path::new("/b")),
            Err(ClaimError::Held { .. })
        ));
        assert!(Claim::take(&format!("{long}y"), Path::new("/c")).is_ok());
    }

    #[test]
    fn other_names_are_claimed_independently() {
        let _a = Claim::take(&unique("a"), Path::new("/a")).unwrap();
        assert!(Claim::take(&unique("b"), Path::new("/b")).is_ok());
    }
}
