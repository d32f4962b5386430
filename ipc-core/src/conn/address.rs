//! [`Address`]: where a [`Listener`](super::Listener) listens and a client connects.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The longest Linux abstract socket name, in bytes (`sun_path` is 108 bytes, less the leading
/// NUL).
pub const MAX_ABSTRACT_NAME: usize = 107;

/// The address of a [`Listener`](super::Listener): a Unix socket path, a Linux abstract socket
/// name, or a TCP socket address.
///
/// Unix and abstract addresses carry descriptors (and so shared objects); TCP reaches other
/// hosts. Abstract names have no file and no permissions: anyone on the host who knows the name
/// can connect, so give such listeners an authkey.
///
/// Parsing (`FromStr`) and `Display` use one text form each way:
/// `"@name"` (or `"\0name"`) is abstract, a numeric `"ip:port"` (`"127.0.0.1:6000"`,
/// `"[::1]:6000"`) is TCP, and any other non-empty string is a Unix path. Windows named pipes
/// (`"\\.\pipe\x"`) are refused.
///
/// ```
/// use ipc_core::conn::Address;
/// let a: Address = "@my-service".parse().unwrap();
/// assert_eq!(a, Address::Abstract("my-service".into()));
/// assert_eq!(a.to_string(), "@my-service");
/// let t: Address = "127.0.0.1:0".parse().unwrap();
/// assert!(matches!(t, Address::Tcp(_)));
/// let u: Address = "/tmp/app.sock".parse().unwrap();
/// assert_eq!(u, Address::Unix("/tmp/app.sock".into()));
/// assert!(r"\\.\pipe\app".parse::<Address>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket at a filesystem path (its permissions control who may connect).
    Unix(PathBuf),
    /// A name in Linux's abstract socket namespace (no file, gone when the listener closes).
    Abstract(String),
    /// A TCP socket address; port 0 asks for any free port (see
    /// [`Listener::address`](super::Listener::address)).
    Tcp(SocketAddr),
}

impl Address {
    /// Checks what the kernel would refuse with a less helpful message.
    pub(super) fn validate(&self) -> Result<()> {
        match self {
            Address::Unix(p) if p.as_os_str().is_empty() => {
                Err(Error::misuse("an empty Unix socket path"))
            }
            Address::Abstract(name) if name.len() > MAX_ABSTRACT_NAME => {
                Err(Error::misuse(format!(
                    "the abstract socket name is {} bytes long; at most {MAX_ABSTRACT_NAME}",
                    name.len()
                )))
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::misuse("an empty address"));
        }
        if s.starts_with(r"\\") {
            return Err(Error::misuse(format!(
                "{s:?} is a Windows named-pipe address; on Linux use a Unix socket path, \
                 an abstract name (\"@name\") or a TCP address (\"ip:port\")"
            )));
        }
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix('\0')) {
            let a = Address::Abstract(name.to_owned());
            a.validate()?;
            return Ok(a);
        }
        if let Ok(tcp) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(tcp));
        }
        Ok(Address::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(name) => write!(f, "@{name}"),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Self {
        Address::Unix(p.to_owned())
    }
}
