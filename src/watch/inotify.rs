//! The watcher thread: `msync-watch` owns the inotify fd and everything
//! derived from it, and talks to the rest of msync only through channels.
//!
//! [`Watcher`] is the handle: control messages (flush with a reply channel,
//! stop) go over an mpsc channel, with a byte on a socket pair to wake the
//! thread from `poll`. The thread sleeps until the fd is readable, a control
//! message arrives or the next debounce/pairing deadline, and sends ready
//! changes on the caller's sink. Event translation lives in [`super::events`].

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use inotify::Inotify;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::events::Worker;
use super::{BranchRoot, WatchConfig, WatchError, WatchMessage};

enum Control {
    /// Make every pending change due, send it, then answer.
    Flush(Sender<()>),
    Stop,
}

/// Handle on the `msync-watch` thread; dropping it stops the thread.
pub struct Watcher {
    control: Sender<Control>,
    wake: UnixStream,
    watches: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches every directory under every root, then starts the thread.
    /// When this returns the watches are in place: a reconcile started
    /// afterwards misses nothing. A watch limit hit here is reported on
    /// `sink` as [`WatchMessage::WatchLimit`], not as an error.
    pub fn start(
        roots: Vec<BranchRoot>,
        config: WatchConfig,
        sink: Sender<WatchMessage>,
    ) -> Result<Watcher, WatchError> {
        for root in &roots {
            match std::fs::metadata(&root.path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(WatchError::Root {
                        path: root.path.clone(),
                        source: io::Error::from(io::ErrorKind::NotADirectory),
                    });
                }
                Err(source) => {
                    return Err(WatchError::Root {
                        path: root.path.clone(),
                        source,
                    });
                }
            }
        }
        let inotify = Inotify::init().map_err(WatchError::Init)?;
        let watches = Arc::new(AtomicUsize::new(0));
        let mut worker = Worker::new(inotify, roots, config, sink, watches.clone());
        worker
            .watch_all()
            .map_err(|(path, source)| WatchError::Root { path, source })?;

        let (wake, wake_rx) = UnixStream::pair().map_err(WatchError::Thread)?;
        wake_rx.set_nonblocking(true).map_err(WatchError::Thread)?;
        let (control, control_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("msync-watch".into())
            .spawn(move || run(worker, control_rx, wake_rx))
            .map_err(WatchError::Thread)?;
        Ok(Watcher {
            control,
            wake,
            watches,
            thread: Some(thread),
        })
    }

    /// Makes every pending change due now and sends it; returns once it was
    /// sent. Events the kernel queued before this call are included.
    pub fn flush(&self) {
        let (reply, done) = mpsc::channel();
        if self.send(Control::Flush(reply)) {
            // An error means the thread ended: nothing left to flush.
            let _ = done.recv();
        }
    }

    /// Directories watched right now (for status).
    pub fn watch_count(&self) -> usize {
        self.watches.load(Ordering::Relaxed)
    }

    /// Ends the thread and closes the inotify fd. Pending changes are
    /// dropped; call [`Watcher::flush`] first to keep them.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn send(&self, message: Control) -> bool {
        if self.control.send(message).is_err() {
            return false;
        }
        // A full socket buffer already means "wake up": ignore the error.
        let _ = (&self.wake).write(&[1]);
        true
    }

    fn shut_down(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.send(Control::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The thread's loop; returns on stop, or when nobody listens any more.
fn run(mut worker: Worker, control: Receiver<Control>, mut wake: UnixStream) {
    loop {
        let timeout = match worker.next_deadline() {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up, or a deadline 0.4 ms away would spin.
                let wait = at.saturating_duration_since(Instant::now());
                let ms = wait.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let (inotify_ready, wake_ready) = {
            let mut fds = [
                PollFd::new(worker.fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    worker.error(format!("the watcher cannot wait for events: {e}"));
                    return;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if wake_ready {
            let mut bytes = [0u8; 64];
            while matches!(wake.read(&mut bytes), Ok(n) if n > 0) {}
            loop {
                match control.try_recv() {
                    Ok(Control::Flush(reply)) => {
                        worker.flush();
                        let _ = reply.send(());
                    }
                    Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
        if inotify_ready {
            worker.read_available();
        }
        worker.tick(Instant::now());
        if !worker.listened() {
            return;
        }
    }
}
