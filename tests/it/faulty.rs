//! A fault-injecting TCP proxy of the tests' own, on a free port of
//! 127.0.0.1, in front of one server: it adds latency to every chunk,
//! resets connections (RST, mid-stream), blackholes everything for a while
//! (bytes held, new connections left hanging), and, in front of an HTTP
//! server, answers requests with 429 and a Retry-After. Every fault it
//! injected is counted, so a test can show its faults really happened.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often idle copy loops look at the faults (a blackhole's end, a
/// reset asked for).
const TICK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Faults {
    /// Added before every chunk is passed on, each way.
    latency: Mutex<Duration>,
    /// Each connection is reset after a pseudo-random number of bytes.
    random_resets: AtomicBool,
    /// Connections made before this generation are reset.
    generation: AtomicU64,
    blackhole_until: Mutex<Option<Instant>>,
    /// Until when, and with which Retry-After (seconds), requests get 429.
    refusing: Mutex<Option<(Instant, u64)>>,
    /// When each 429 was sent, and when each request passed on arrived.
    refused_at: Mutex<Vec<Instant>>,
    passed_at: Mutex<Vec<Instant>>,
    resets: AtomicU64,
    /// Connections and chunks a blackhole held back.
    held: AtomicU64,
    /// Connections made: each one's number picks its reset budget.
    connections: AtomicU64,
}

impl Faults {
    fn blackholed(&self) -> Option<Instant> {
        let until = *self.blackhole_until.lock().unwrap();
        until.filter(|until| Instant::now() < *until)
    }

    /// Waits out a blackhole, counting what it held back.
    fn hold_while_blackholed(&self) {
        if self.blackholed().is_some() {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        while let Some(until) = self.blackholed() {
            thread::sleep(until.saturating_duration_since(Instant::now()).min(TICK));
        }
    }

    fn refusing(&self) -> Option<u64> {
        let refusing = *self.refusing.lock().unwrap();
        refusing
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, retry_after)| retry_after)
    }
}

pub struct FaultyProxy {
    port: u16,
    faults: Arc<Faults>,
    closing: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FaultyProxy {
    /// Starts a proxy to `upstream_port` of 127.0.0.1, passing everything
    /// through untouched until a fault is turned on. `http` makes it read
    /// each connection's first request head, so it can refuse it.
    pub fn start(upstream_port: u16, http: bool) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let faults = Arc::new(Faults::default());
        let closing = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (faults, closing) = (faults.clone(), closing.clone());
            thread::spawn(move || {
                while !closing.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let accepted = Instant::now();
                            client.set_nonblocking(false).unwrap();
                            let faults = faults.clone();
                            thread::spawn(move || {
                                serve(client, accepted, upstream_port, http, &faults)
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FaultyProxy {
            port,
            faults,
            closing,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Delays every chunk by `latency`, each way.
    pub fn set_latency(&self, latency: Duration) {
        *self.faults.latency.lock().unwrap() = latency;
    }

    /// Resets each connection after a pseudo-random 256 KiB to 1.25 MiB.
    pub fn set_random_resets(&self, on: bool) {
        self.faults.random_resets.store(on, Ordering::Relaxed);
    }

    /// Resets every connection open now.
    pub fn reset_all(&self) {
        self.faults.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Passes nothing on for `length`: bytes are held, new connections
    /// hang; then everything goes on where it was.
    pub fn blackhole(&self, length: Duration) {
        *self.faults.blackhole_until.lock().unwrap() = Some(Instant::now() + length);
    }

    /// Answers every request for `length` with 429 and `Retry-After:
    /// retry_after` (seconds), closing the connection; connections open
    /// now are reset, so none slips through.
    pub fn refuse(&self, length: Duration, retry_after: u64) {
        *self.faults.refusing.lock().unwrap() = Some((Instant::now() + length, retry_after));
        self.reset_all();
    }

    /// Passes requests on again, ending what [`FaultyProxy::refuse`] began.
    pub fn stop_refusing(&self) {
        *self.faults.refusing.lock().unwrap() = None;
    }

    /// How many connections were reset.
    pub fn resets(&self) -> u64 {
        self.faults.resets.load(Ordering::Relaxed)
    }

    /// How many connections and chunks of bytes a blackhole held back.
    pub fn held(&self) -> u64 {
        self.faults.held.load(Ordering::Relaxed)
    }

    /// When each 429 was sent.
    pub fn refused_at(&self) -> Vec<Instant> {
        self.faults.refused_at.lock().unwrap().clone()
    }

    /// When the connection of each request that was passed on was accepted
    /// (HTTP only): a busy proxy reads a request late, not its client.
    pub fn passed_at(&self) -> Vec<Instant> {
        self.faults.passed_at.lock().unwrap().clone()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.reset_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One client connection: refused, or joined to a new upstream connection
/// with a copy loop each way.
fn serve(
    mut client: TcpStream,
    accepted: Instant,
    upstream_port: u16,
    http: bool,
    faults: &Arc<Faults>,
) {
    let serial = faults.connections.fetch_add(1, Ordering::Relaxed);
    let generation = faults.generation.load(Ordering::Relaxed);
    faults.hold_while_blackholed();
    let mut head = Vec::new();
    if http {
        let Some(read) = read_request_head(&mut client) else {
            return;
        };
        head = read;
        if let Some(retry_after) = faults.refusing() {
            faults.refused_at.lock().unwrap().push(Instant::now());
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.write_all(answer.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        faults.passed_at.lock().unwrap().push(accepted);
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        abort_on_close(&client);
        return;
    };
    if upstream.write_all(&head).is_err() {
        abort_on_close(&client);
        return;
    }
    // A budget of bytes after which the connection is reset, from the
    // connection's number: varied, and the same from run to run.
    let budget = (256 << 10) + (serial.wrapping_mul(2_654_435_761) % (1 << 20));
    let passed = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let up = {
        let (from, to) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let (faults, passed, cut) = (faults.clone(), passed.clone(), cut.clone());
        thread::spawn(move || pass_on(from, to, &faults, generation, budget, &passed, &cut))
    };
    pass_on(upstream, client, faults, generation, budget, &passed, &cut);
    let _ = up.join();
}

/// Copies `from` to `to` with the faults applied, until either side ends
/// or the connection is reset (then both sides get an RST).
fn pass_on(
    mut from: TcpStream,
    mut to: TcpStream,
    faults: &Faults,
    generation: u64,
    budget: u64,
    passed: &AtomicU64,
    cut: &AtomicBool,
) {
    from.set_read_timeout(Some(TICK)).unwrap();
    let mut buffer = vec![0u8; 32 << 10];
    loop {
        let should_reset = faults.generation.load(Ordering::Relaxed) != generation
            || (faults.random_resets.load(Ordering::Relaxed)
                && passed.load(Ordering::Relaxed) > budget);
        if cut.load(Ordering::Relaxed) {
            return;
        }
        if should_reset {
            // Both sockets abort on their last close, once both loops
            // have seen the cut (within a tick) and dropped their ends.
            if !cut.swap(true, Ordering::Relaxed) {
                faults.resets.fetch_add(1, Ordering::Relaxed);
                abort_on_close(&from);
                abort_on_close(&to);
            }
            return;
        }
        let read = from.read(&mut buffer);
        if cut.load(Ordering::Relaxed) {
            return;
        }
        let read = match read {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(read) => read,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        };
        faults.hold_while_blackholed();
        let latency = *faults.latency.lock().unwrap();
        if !latency.is_zero() {
            thread::sleep(latency);
        }
        if to.write_all(&buffer[..read]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        passed.fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Reads up to the end of an HTTP request head; `None` when the client
/// went away first.
fn read_request_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(head)
}

/// Makes a socket's last close send an RST (linger on, for no time), not
/// the FIN of an orderly end.
fn abort_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
