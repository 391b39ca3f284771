//! SIGINT, SIGTERM and SIGHUP belong to msync, never to the Go runtime.
//!
//! Some rclone backends (cache, dropbox, …) register rclone's atexit
//! handler the first time they are used. It calls Go's `signal.Notify` for
//! SIGINT and SIGTERM, which installs Go's own handler and unblocks the
//! signals on a Go thread; on delivery Go runs `os.Exit(143)`, and msync
//! would die with its mount up and its jobs half done. Blocking the signals
//! is not enough, because Go unblocks them on a thread of its own.
//!
//! So msync installs a tiny async-signal-safe handler that writes the
//! signal number into a non-blocking pipe, and *takes the signals back*
//! whenever Go may have taken them: after every RC call returns (a backend
//! is only created during a call) and every 250 ms from the signal thread
//! (for backends created inside `_async` jobs). Go's `Notify` runs at most
//! once per process (rclone registers its atexit hook once), so after the
//! first take-back the handlers stay msync's. The remaining window is the
//! few milliseconds between a backend's first use inside an async job and
//! the next tick.
//!
//! The named thread `msync-signals` reads the pipe and hands each signal to
//! the single [`Receiver`] returned by [`install`].

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signals that start msync's shutdown.
pub const SHUTDOWN_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// How often the signal thread takes the signals back without being asked.
const RECLAIM_INTERVAL: Duration = Duration::from_millis(250);

/// Write end of the self-pipe, read by the handler; -1 until installed.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static INSTALLED: OnceLock<()> = OnceLock::new();
/// Signals (bit = signal number) already reported taken back, once each.
static TOOK_BACK: AtomicU32 = AtomicU32::new(0);
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

extern "C" fn on_signal(signo: libc::c_int) {
    let saved = Errno::last_raw();
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; fd is the pipe's write end,
        // which stays open for the life of the process, and the buffer is one
        // byte on this stack frame. The pipe is non-blocking, so a full pipe
        // (signals nobody reads yet) drops the byte instead of hanging here.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    Errno::set_raw(saved);
}

fn our_action() -> SigAction {
    // SA_ONSTACK: the handler may run on a Go thread, whose goroutine stack is
    // too small for a C frame; Go gives each of its threads an alternate
    // signal stack for exactly this.
    SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_ONSTACK | SaFlags::SA_RESTART,
        SigSet::empty(),
    )
}

/// Installs msync's handlers and starts the signal thread. Call once, before
/// librclone is loaded; later calls fail.
///
/// If the receiver is dropped, a later signal ends the process with exit
/// code 130: a signal must never be ignored just because nobody listens.
pub fn install() -> std::io::Result<Receiver<Signal>> {
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if INSTALLED.get().is_some() {
        return Err(std::io::Error::other(
            "signal handlers are already installed",
        ));
    }
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // The write end lives as long as the process: the handler may fire at any
    // time, so it is never closed.
    let write_fd = std::os::fd::IntoRawFd::into_raw_fd(write_end);
    PIPE_WRITE.store(write_fd, Ordering::SeqCst);
    for signal in SHUTDOWN_SIGNALS {
        // SAFETY: on_signal only calls async-signal-safe functions (write,
        // errno access) and touches only an atomic.
        unsafe { sigaction(signal, &our_action()) }?;
    }
    let _ = INSTALLED.set(());
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("msync-signals".into())
        .spawn(move || signal_thread(read_end, sender))?;
    Ok(receiver)
}

fn signal_thread(read_end: OwnedFd, sender: mpsc::Sender<Signal>) {
    let timeout = PollTimeout::try_from(RECLAIM_INTERVAL).unwrap_or(PollTimeout::MAX);
    loop {
        let mut fds = [PollFd::new(
            // SAFETY: read_end is owned by this thread and open for the whole
            // loop; the borrow does not outlive this iteration.
            unsafe { BorrowedFd::borrow_raw(read_end.as_raw_fd()) },
            PollFlags::POLLIN,
        )];
        let ready = poll(&mut fds, timeout).unwrap_or(0);
        reclaim();
        if ready <= 0 {
            continue;
        }
        let mut buffer = [0u8; 16];
        let Ok(count) = nix::unistd::read(&read_end, &mut buffer) else {
            continue;
        };
        for &byte in &buffer[..count] {
            let Ok(signal) = Signal::try_from(libc::c_int::from(byte)) else {
                continue;
            };
            if sender.send(signal).is_err() {
                std::process::exit(130);
            }
        }
    }
}

fn is_ours(handler: SigHandler) -> bool {
    matches!(handler, SigHandler::Handler(f)
        if std::ptr::fn_addr_eq(f, on_signal as extern "C" fn(libc::c_int)))
}

/// Puts msync's handler back on every shutdown signal where something else
/// (Go's runtime) replaced it. Cheap (three sigaction calls); a no-op until
/// [`install`] ran.
pub fn reclaim() {
    if INSTALLED.get().is_none() {
        return;
    }
    let ours = our_action();
    for signal in SHUTDOWN_SIGNALS {
        // SAFETY: as in install: the handler is async-signal-safe.
        let previous = unsafe { sigaction(signal, &ours) };
        if let Ok(previous) = previous
            && !is_ours(previous.handler())
            && TOOK_BACK.fetch_or(1 << signal as i32, Ordering::SeqCst) & (1 << signal as i32) == 0
        {
            eprintln!(
                "msync: librclone's Go runtime took {signal} for itself; msync took it back so it can shut down cleanly"
            );
        }
    }
}
