//! Accept-error classification: per-platform error-code tables.
//!
//! The tables are `const` data, so classification works without `std` from a raw code, and
//! every platform's table can be checked on every host.

use core::fmt;

/// The operating-system family whose error numbers a raw code comes from.
///
/// Error numbers differ between systems: `EMFILE` is 24 on Linux and the BSDs but the Windows
/// socket equivalent `WSAEMFILE` is 10024, and `ENOBUFS` is 105 on Linux, 55 on the BSDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Platform {
    /// Linux and Android on the architectures with the generic errno numbering (x86, x86-64,
    /// ARM, AArch64, RISC-V, PowerPC, s390x, LoongArch...). MIPS and SPARC number errors
    /// differently and are not covered.
    Linux,
    /// The 4.4BSD family: macOS, iOS and the other Apple systems, FreeBSD, OpenBSD, NetBSD and
    /// DragonFly. They share every number used here except `EPROTO` (100 on Apple systems, 92 on
    /// FreeBSD and DragonFly, 95 on OpenBSD, 96 on NetBSD) and Apple's `EOPNOTSUPP` (102, 45
    /// elsewhere): the table holds all of them. Where one of those numbers means something else
    /// on another BSD (92 is `EILSEQ` on macOS), it is an error `accept(2)` never returns.
    Bsd,
    /// Windows: Winsock `WSAE*` codes (10000 and up) and the few Win32 `ERROR_*` codes that
    /// socket calls report (out of memory, a connection reset while `AcceptEx` waited).
    Windows,
}

impl Platform {
    /// The platform this crate was compiled for, or `None` where the errno numbering is not one
    /// of the tables (no OS, WASI, Solaris/illumos, Fuchsia, Linux on MIPS or SPARC...).
    ///
    /// [`classify_io_error`] falls back on the `std::io::ErrorKind` when this is `None`.
    pub const HOST: Option<Platform> = host();

    /// The table [`classify_os_error`] consults for this platform. Any code not in it is
    /// [`AcceptErrorKind::Unknown`].
    #[must_use]
    pub const fn errno_table(self) -> &'static [ErrnoEntry] {
        match self {
            Platform::Linux => LINUX,
            Platform::Bsd => BSD,
            Platform::Windows => WINDOWS,
        }
    }
}

const fn host() -> Option<Platform> {
    if cfg!(all(
        any(target_os = "linux", target_os = "android"),
        not(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "mips32r6",
            target_arch = "mips64r6",
            target_arch = "sparc",
            target_arch = "sparc64"
        ))
    )) {
        Some(Platform::Linux)
    } else if cfg!(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    )) {
        Some(Platform::Bsd)
    } else if cfg!(target_os = "windows") {
        Some(Platform::Windows)
    } else {
        None
    }
}

/// A resource the system ran out of: `accept` should be retried later, the listener stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shortage {
    /// The process hit its open-files limit (`EMFILE`, `WSAEMFILE`): the most common one.
    ProcessFileLimit,
    /// The system-wide open-files table is full (`ENFILE`).
    SystemFileLimit,
    /// The kernel ran out of socket buffer space (`ENOBUFS`, `WSAENOBUFS`).
    Buffers,
    /// The kernel ran out of memory (`ENOMEM`, `ERROR_NOT_ENOUGH_MEMORY`, `ERROR_OUTOFMEMORY`).
    Memory,
    /// The kernel ran out of STREAMS resources (`ENOSR`, which Linux accept(2) lists among the
    /// errors "various Linux kernels can return").
    Streams,
    /// Not a known shortage: an error code keel's tables do not know, paused on because the
    /// loop's [`UnknownErrorPolicy`](super::UnknownErrorPolicy) is `Pause` (the default).
    Unrecognized,
}

impl Shortage {
    /// What an operator can do about it, for the log line next to the OS error text.
    #[must_use]
    pub const fn hint(self) -> &'static str {
        match self {
            Shortage::ProcessFileLimit => {
                "raise the open-files limit (`ulimit -n`, RLIMIT_NOFILE, systemd LimitNOFILE=) \
                 or lower max connections"
            }
            Shortage::SystemFileLimit => {
                "the system-wide open-files table is full: raise it (sysctl fs.file-max on \
                 Linux, kern.maxfiles on BSD/macOS) or lower max connections"
            }
            Shortage::Buffers => {
                "the kernel ran out of socket buffers: lower max connections or raise network \
                 memory (sysctl net.ipv4.tcp_mem/net.core.* on Linux, kern.ipc.nmbclusters on BSD)"
            }
            Shortage::Memory => {
                "the system is out of memory: lower max connections or raise the memory limit \
                 of the process (cgroup/container limit, RLIMIT_AS)"
            }
            Shortage::Streams => {
                "the kernel ran out of STREAMS resources: lower max connections or raise the \
                 system's stream resources"
            }
            Shortage::Unrecognized => {
                "accept failed with an error keel does not recognise: the loop pauses and retries \
                 (AcceptConfig::unknown_errors); if it repeats, report the error text"
            }
        }
    }

    /// The POSIX name of the error: `"EMFILE"`, `"ENFILE"`, `"ENOBUFS"`, `"ENOMEM"` or
    /// `"ENOSR"`; `"unknown"` for [`Shortage::Unrecognized`] (the log line carries the OS text).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Shortage::ProcessFileLimit => "EMFILE",
            Shortage::SystemFileLimit => "ENFILE",
            Shortage::Buffers => "ENOBUFS",
            Shortage::Memory => "ENOMEM",
            Shortage::Streams => "ENOSR",
            Shortage::Unrecognized => "unknown",
        }
    }
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an accept error means for the accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcceptErrorKind {
    /// One queued connection failed (the peer reset it, a firewall refused it...): accept the
    /// next one at once; the queue may hold more.
    PerConnection,
    /// A resource ran out: pause before accepting again; the listener stays open.
    Shortage(Shortage),
    /// The listener itself is broken (`EBADF`, `EINVAL`, `ENOTSOCK`...): stop and report.
    Fatal,
    /// A code the platform's table does not know. The accept loop follows its
    /// [`UnknownErrorPolicy`](super::UnknownErrorPolicy): pause and report (the default), or stop.
    Unknown,
}

impl AcceptErrorKind {
    /// The shortage, if this is one.
    #[must_use]
    pub const fn shortage(self) -> Option<Shortage> {
        match self {
            AcceptErrorKind::Shortage(s) => Some(s),
            _ => None,
        }
    }
}

/// One row of a platform's error table (see [`Platform::errno_table`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ErrnoEntry {
    /// The raw code, as `std::io::Error::raw_os_error` reports it.
    pub code: i32,
    /// The symbolic name: `"EMFILE"`, `"WSAECONNRESET"`, `"ERROR_OUTOFMEMORY"`...
    pub name: &'static str,
    /// What it means for the accept loop.
    pub kind: AcceptErrorKind,
}

const fn e(code: i32, name: &'static str, kind: AcceptErrorKind) -> ErrnoEntry {
    ErrnoEntry { code, name, kind }
}

const PER_CONN: AcceptErrorKind = AcceptErrorKind::PerConnection;
const FATAL: AcceptErrorKind = AcceptErrorKind::Fatal;
const EMFILE: AcceptErrorKind = AcceptErrorKind::Shortage(Shortage::ProcessFileLimit);
const ENFILE: AcceptErrorKind = AcceptErrorKind::Shortage(Shortage::SystemFileLimit);
const ENOBUFS: AcceptErrorKind = AcceptErrorKind::Shortage(Shortage::Buffers);
const ENOMEM: AcceptErrorKind = AcceptErrorKind::Shortage(Shortage::Memory);
const ENOSR: AcceptErrorKind = AcceptErrorKind::Shortage(Shortage::Streams);

/// Linux generic errno numbers (`include/uapi/asm-generic/errno{,-base}.h`).
///
/// Per-connection: the peer/firewall errors, plus the set accept(2) says to "treat like EAGAIN
/// by retrying" because Linux passes a pending network error of the new socket to `accept`
/// (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH).
/// The same page says "various Linux kernels can return other errors such as ENOSR,
/// ESOCKTNOSUPPORT, EPROTONOSUPPORT, ETIMEDOUT": ENOSR is a shortage; the other two concern the
/// new socket, so they are per-connection.
const LINUX: &[ErrnoEntry] = &[
    e(1, "EPERM", PER_CONN), // a firewall (netfilter) rule refused the connection
    e(4, "EINTR", PER_CONN),
    e(11, "EAGAIN", PER_CONN), // == EWOULDBLOCK
    e(64, "ENONET", PER_CONN),
    e(71, "EPROTO", PER_CONN),
    e(92, "ENOPROTOOPT", PER_CONN),
    e(95, "EOPNOTSUPP", PER_CONN),
    e(100, "ENETDOWN", PER_CONN),
    e(101, "ENETUNREACH", PER_CONN),
    e(103, "ECONNABORTED", PER_CONN),
    e(104, "ECONNRESET", PER_CONN),
    e(110, "ETIMEDOUT", PER_CONN),
    e(111, "ECONNREFUSED", PER_CONN),
    e(112, "EHOSTDOWN", PER_CONN),
    e(113, "EHOSTUNREACH", PER_CONN),
    e(93, "EPROTONOSUPPORT", PER_CONN), // about the new socket
    e(94, "ESOCKTNOSUPPORT", PER_CONN), // about the new socket
    e(24, "EMFILE", EMFILE),
    e(23, "ENFILE", ENFILE),
    e(105, "ENOBUFS", ENOBUFS),
    e(12, "ENOMEM", ENOMEM),
    e(63, "ENOSR", ENOSR),
    e(9, "EBADF", FATAL),
    e(14, "EFAULT", FATAL),
    e(22, "EINVAL", FATAL),
    e(88, "ENOTSOCK", FATAL),
];

/// 4.4BSD numbers (`sys/errno.h` of macOS, FreeBSD, OpenBSD, NetBSD, DragonFly).
///
/// BSD `accept` does not pass a new socket's pending errors on, so `EOPNOTSUPP` only means "the
/// socket is not SOCK_STREAM": fatal here, unlike Linux. There is no `ENONET`.
const BSD: &[ErrnoEntry] = &[
    e(1, "EPERM", PER_CONN), // a firewall (pf/ipfw) refused the connection
    e(4, "EINTR", PER_CONN),
    e(35, "EAGAIN", PER_CONN), // == EWOULDBLOCK
    e(42, "ENOPROTOOPT", PER_CONN),
    e(50, "ENETDOWN", PER_CONN),
    e(51, "ENETUNREACH", PER_CONN),
    e(53, "ECONNABORTED", PER_CONN),
    e(54, "ECONNRESET", PER_CONN),
    e(60, "ETIMEDOUT", PER_CONN),
    e(61, "ECONNREFUSED", PER_CONN),
    e(64, "EHOSTDOWN", PER_CONN),
    e(65, "EHOSTUNREACH", PER_CONN),
    e(92, "EPROTO", PER_CONN),  // FreeBSD, DragonFly
    e(95, "EPROTO", PER_CONN),  // OpenBSD
    e(96, "EPROTO", PER_CONN),  // NetBSD
    e(100, "EPROTO", PER_CONN), // macOS, iOS
    e(24, "EMFILE", EMFILE),
    e(23, "ENFILE", ENFILE),
    e(55, "ENOBUFS", ENOBUFS),
    e(12, "ENOMEM", ENOMEM),
    e(9, "EBADF", FATAL),
    e(14, "EFAULT", FATAL),
    e(22, "EINVAL", FATAL),
    e(38, "ENOTSOCK", FATAL),
    e(45, "EOPNOTSUPP", FATAL), // FreeBSD, OpenBSD, NetBSD, DragonFly; ENOTSUP on macOS
    e(102, "EOPNOTSUPP", FATAL), // macOS, iOS
];

/// Winsock codes (`winsock2.h`, the `accept` and `AcceptEx` documentation) and the Win32 codes
/// socket calls report.
///
/// `WSAEOPNOTSUPP` from `accept` means "not a connection-oriented socket": fatal. A plain `24`
/// is `ERROR_BAD_LENGTH` on Windows, not `EMFILE`: unknown.
const WINDOWS: &[ErrnoEntry] = &[
    e(10004, "WSAEINTR", PER_CONN),
    e(10035, "WSAEWOULDBLOCK", PER_CONN),
    e(10036, "WSAEINPROGRESS", PER_CONN),
    e(10042, "WSAENOPROTOOPT", PER_CONN),
    e(10050, "WSAENETDOWN", PER_CONN),
    e(10051, "WSAENETUNREACH", PER_CONN),
    e(10052, "WSAENETRESET", PER_CONN),
    e(10053, "WSAECONNABORTED", PER_CONN),
    e(10054, "WSAECONNRESET", PER_CONN),
    e(10060, "WSAETIMEDOUT", PER_CONN),
    e(10061, "WSAECONNREFUSED", PER_CONN),
    e(10064, "WSAEHOSTDOWN", PER_CONN),
    e(10065, "WSAEHOSTUNREACH", PER_CONN),
    e(64, "ERROR_NETNAME_DELETED", PER_CONN), // AcceptEx: the peer reset while queued
    e(1236, "ERROR_CONNECTION_ABORTED", PER_CONN),
    e(10024, "WSAEMFILE", EMFILE),
    e(4, "ERROR_TOO_MANY_OPEN_FILES", EMFILE),
    e(10055, "WSAENOBUFS", ENOBUFS),
    e(8, "ERROR_NOT_ENOUGH_MEMORY", ENOMEM), // == WSA_NOT_ENOUGH_MEMORY
    e(14, "ERROR_OUTOFMEMORY", ENOMEM),
    e(10009, "WSAEBADF", FATAL),
    e(10014, "WSAEFAULT", FATAL),
    e(10022, "WSAEINVAL", FATAL),
    e(10038, "WSAENOTSOCK", FATAL),
    e(10045, "WSAEOPNOTSUPP", FATAL),
    e(10093, "WSANOTINITIALISED", FATAL),
];

fn lookup(code: i32, platform: Platform) -> Option<&'static ErrnoEntry> {
    platform
        .errno_table()
        .iter()
        .find(|entry| entry.code == code)
}

/// Classifies a raw OS error code from `accept` on `platform`. Codes the table does not know are
/// [`AcceptErrorKind::Unknown`]; the accept loop's
/// [`UnknownErrorPolicy`](super::UnknownErrorPolicy) decides what they do.
///
/// ```
/// use keel_core::accept::{classify_os_error, AcceptErrorKind, Platform, Shortage};
///
/// assert_eq!(
///     classify_os_error(24, Platform::Linux),
///     AcceptErrorKind::Shortage(Shortage::ProcessFileLimit)
/// );
/// assert_eq!(
///     classify_os_error(10024, Platform::Windows),
///     AcceptErrorKind::Shortage(Shortage::ProcessFileLimit)
/// );
/// assert_eq!(classify_os_error(24, Platform::Windows), AcceptErrorKind::Unknown);
/// assert_eq!(classify_os_error(9, Platform::Linux), AcceptErrorKind::Fatal); // EBADF
/// assert_eq!(classify_os_error(104, Platform::Linux), AcceptErrorKind::PerConnection);
/// ```
#[must_use]
pub fn classify_os_error(code: i32, platform: Platform) -> AcceptErrorKind {
    lookup(code, platform).map_or(AcceptErrorKind::Unknown, |entry| entry.kind)
}

/// The symbolic name of `code` on `platform` (`"EMFILE"`, `"WSAECONNRESET"`), if the table has it.
#[must_use]
pub fn errno_name(code: i32, platform: Platform) -> Option<&'static str> {
    lookup(code, platform).map(|entry| entry.name)
}

/// Classifies an `accept` error from `std`.
///
/// With a raw OS code and a known [`Platform::HOST`], this is [`classify_os_error`]: the
/// `ErrorKind` cannot tell `ENOBUFS` or `EPROTO` from other errors (both are `Other`/
/// `Uncategorized`). Without a raw code (an error built by a runtime or a wrapper), it falls back
/// on [`classify_error_kind`].
///
/// ```
/// use keel_core::accept::{classify_io_error, AcceptErrorKind};
/// use std::io::{Error, ErrorKind};
///
/// let e = Error::from(ErrorKind::ConnectionReset);
/// assert_eq!(classify_io_error(&e), AcceptErrorKind::PerConnection);
/// ```
#[cfg(feature = "std")]
#[must_use]
pub fn classify_io_error(err: &std::io::Error) -> AcceptErrorKind {
    match (err.raw_os_error(), Platform::HOST) {
        (Some(code), Some(platform)) => classify_os_error(code, platform),
        _ => classify_error_kind(err.kind()),
    }
}

/// Classifies an `std::io::ErrorKind` alone (used when an error has no raw OS code).
///
/// `ConnectionAborted`, `ConnectionReset`, `ConnectionRefused`, `TimedOut`, `Interrupted`,
/// `WouldBlock`, `NetworkDown`, `NetworkUnreachable` and `HostUnreachable` are per-connection;
/// `OutOfMemory` is a [`Shortage::Memory`]; `InvalidInput` and `Unsupported` (what `EINVAL` and
/// `EOPNOTSUPP` map to) are fatal; everything else is [`AcceptErrorKind::Unknown`] (a kind cannot
/// say "too many open files": only the raw code can).
#[cfg(feature = "std")]
#[must_use]
pub fn classify_error_kind(kind: std::io::ErrorKind) -> AcceptErrorKind {
    use std::io::ErrorKind as K;
    match kind {
        K::ConnectionAborted
        | K::ConnectionReset
        | K::ConnectionRefused
        | K::TimedOut
        | K::Interrupted
        | K::WouldBlock
        | K::NetworkDown
        | K::NetworkUnreachable
        | K::HostUnreachable => AcceptErrorKind::PerConnection,
        K::OutOfMemory => AcceptErrorKind::Shortage(Shortage::Memory),
        K::InvalidInput | K::Unsupported => AcceptErrorKind::Fatal,
        _ => AcceptErrorKind::Unknown,
    }
}
