//! The loaded librclone: one per process, never unloaded, and the single
//! function, [`Rclone::rpc`], through which every RC call passes.
//!
//! The Go runtime inside librclone cannot be unloaded or initialised twice,
//! so the library is loaded at most once and kept for the life of the
//! process. `RcloneRPC` is safe to call from many threads at once (each
//! call is a goroutine-backed job inside rclone).

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

use super::bindings::LibrcloneApi;
use super::error::{Attempt, LoadError, RcloneError};
use super::loader::{self, Candidate};
use super::signals;

/// The oldest rclone whose RC API msync has been written against.
const MINIMUM_VERSION: (u64, u64) = (1, 60);
const MINIMUM_VERSION_TEXT: &str = "v1.60";

/// How to find and set up the library.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `--librclone PATH`: load exactly this file.
    pub library: Option<PathBuf>,
    /// The rclone config file the library must use.
    pub config_file: Option<PathBuf>,
}

struct Loaded {
    api: LibrcloneApi,
    path: PathBuf,
    version: String,
    /// The RC methods the library has (`rc/list`), asked once.
    methods: OnceLock<HashSet<String>>,
}

static LOADED: Mutex<Option<&'static Loaded>> = Mutex::new(None);
static FINALIZED: AtomicBool = AtomicBool::new(false);

/// A handle on the process's librclone. Cheap to copy and share between
/// threads.
#[derive(Clone, Copy)]
pub struct Rclone {
    loaded: &'static Loaded,
}

impl std::fmt::Debug for Rclone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rclone")
            .field("path", &self.loaded.path)
            .field("version", &self.loaded.version)
            .finish()
    }
}

impl Rclone {
    /// Loads and initialises librclone, or returns the library this process
    /// already loaded.
    ///
    /// Must not be followed by `fork()`: daemonise before calling this.
    pub fn load(options: &LoadOptions) -> Result<Rclone, LoadError> {
        let mut slot = LOADED.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(loaded) = *slot {
            if let Some(requested) = &options.library
                && !same_file(requested, &loaded.path)
            {
                return Err(LoadError::AlreadyLoaded {
                    loaded: loaded.path.clone(),
                    requested: requested.clone(),
                });
            }
            return Ok(Rclone { loaded });
        }
        if let Some(config) = &options.config_file {
            // rclone 1.60 takes its config path from RCLONE_CONFIG at
            // initialisation (it has no config/setpath call). It is set
            // before the library is loaded, while no Go thread exists.
            // SAFETY: set_var is unsound only when another thread reads or
            // writes the environment at the same time. No Go thread exists
            // yet (the library is not loaded), and msync loads the library
            // from its main thread before it starts work on other threads.
            unsafe { std::env::set_var("RCLONE_CONFIG", config) };
        }
        let (api, path) = open_first(&loader::candidates(options.library.as_deref()))?;
        let loaded = initialise(api, path, options.config_file.as_deref())?;
        *slot = Some(loaded);
        Ok(Rclone { loaded })
    }

    /// The library already loaded in this process, if any.
    pub fn loaded() -> Option<Rclone> {
        let slot = LOADED.lock().unwrap_or_else(|poison| poison.into_inner());
        slot.map(|loaded| Rclone { loaded })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.loaded.path
    }

    /// rclone's version string, e.g. `v1.60.1-DEV`.
    pub fn version(&self) -> &str {
        &self.loaded.version
    }

    /// Runs one RC method with a JSON object as input.
    ///
    /// A status other than 200 becomes an [`RcloneError`] carrying rclone's
    /// message. `core/quit` is refused: it would end the whole process from
    /// inside Go, past msync's shutdown path.
    pub fn rpc(&self, method: &str, input: &Value) -> Result<Value, RcloneError> {
        rpc_with(&self.loaded.api, method, input)
    }

    /// Whether the library has the RC method `method`: msync's own shim
    /// has calls an upstream librclone lacks. A library that cannot list
    /// its methods is taken to have only upstream's.
    pub fn has_method(&self, method: &str) -> bool {
        self.loaded
            .methods
            .get_or_init(|| {
                let answer = self
                    .rpc("rc/list", &serde_json::json!({}))
                    .unwrap_or_default();
                answer["commands"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|command| command["Path"].as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .contains(method)
    }
}

/// Calls `RcloneFinalize` once, if the library was loaded. For the end of
/// `main`; no RC call may follow.
pub fn finalize() {
    if let Some(rclone) = Rclone::loaded()
        && !FINALIZED.swap(true, Ordering::SeqCst)
    {
        // SAFETY: the library is initialised (it is only stored after
        // RcloneInitialize), and the swap above makes this the only call.
        unsafe { rclone.loaded.api.RcloneFinalize() };
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn open_first(candidates: &[Candidate]) -> Result<(LibrcloneApi, PathBuf), LoadError> {
    let mut attempts = Vec::new();
    for candidate in candidates {
        if !candidate.system_search && !candidate.target.exists() {
            attempts.push(Attempt {
                place: candidate.place.clone(),
                reason: "no such file".into(),
            });
            continue;
        }
        // SAFETY: loading a shared library runs its initialisers. A
        // librclone's initialisers start the Go runtime, which is sound in a
        // process that has not forked since and will not fork afterwards
        // (msync daemonises before loading). Any other library the user
        // names is trusted as the user's choice, as dlopen always must.
        match unsafe { LibrcloneApi::new(&candidate.target) } {
            Ok(api) => {
                let path = if candidate.system_search {
                    candidate.target.clone()
                } else {
                    candidate
                        .target
                        .canonicalize()
                        .unwrap_or_else(|_| candidate.target.clone())
                };
                return Ok((api, path));
            }
            Err(err) => attempts.push(Attempt {
                place: candidate.place.clone(),
                reason: describe_load_failure(&err),
            }),
        }
    }
    Err(LoadError::NotFound(attempts))
}

fn describe_load_failure(err: &libloading::Error) -> String {
    // libloading puts dlerror()'s text in the source chain.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    if text.contains("undefined symbol") {
        format!("not a librclone (it lacks the librclone ABI: {text})")
    } else if text.contains("invalid ELF header") || text.contains("file too short") {
        format!("not a shared library ({text})")
    } else {
        text
    }
}

fn initialise(
    api: LibrcloneApi,
    path: PathBuf,
    config_file: Option<&Path>,
) -> Result<&'static Loaded, LoadError> {
    // SAFETY: called exactly once per process: LOADED is locked and empty,
    // and the library is never unloaded, so it cannot be initialised again.
    unsafe { api.RcloneInitialize() };
    signals::reclaim();
    if let Some(config) = config_file {
        // Newer upstream libraries may not read RCLONE_CONFIG; they have
        // config/setpath. rclone 1.60 answers 404, which is fine: it read
        // the variable above.
        let _ = rpc_with(
            &api,
            "config/setpath",
            &serde_json::json!({ "path": config }),
        );
    }
    set_retry_policy(&api);
    let version = rpc_with(&api, "core/version", &serde_json::json!({})).map_err(|source| {
        LoadError::NoVersion {
            path: path.clone(),
            source,
        }
    })?;
    let text = version["version"].as_str().unwrap_or("unknown").to_owned();
    let decomposed: Vec<u64> = version["decomposed"]
        .as_array()
        .map(|parts| parts.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let supported = match decomposed.as_slice() {
        [major, minor, ..] => (*major, *minor) >= MINIMUM_VERSION,
        _ => false,
    };
    if !supported {
        return Err(LoadError::TooOld {
            path,
            version: text,
            minimum: MINIMUM_VERSION_TEXT,
        });
    }
    Ok(Box::leak(Box::new(Loaded {
        api,
        path,
        version: text,
        methods: OnceLock::new(),
    })))
}

/// rclone retries a failed request up to 10 times inside each call, with
/// the backend's pacer sleeping between tries, and several calls to one
/// remote share that pacer: four transfers to a server that refuses
/// connections took over a minute to fail, and all that time `status` said
/// "syncing". msync retries every path itself, with backoff, and pauses a
/// branch whose remote is down, so rclone's own retries only need to ride
/// out a blip.
const LOW_LEVEL_RETRIES: u64 = 3;
/// rclone waits a minute for a TCP connection by default; a host that
/// drops packets would hold a transfer that long per try.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a connection may go without moving a byte, or a request
/// without an answer, before rclone drops it and retries: a stalled
/// transfer. rclone waits 5 minutes by default, all the while holding a
/// transfer slot; a minute still lets a slow server finish a large upload
/// (the answer to the last byte of a WebDAV PUT or an S3 multipart upload
/// can take that long). `msync start --stall-timeout` sets it.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

fn set_retry_policy(api: &LibrcloneApi) {
    let options = serde_json::json!({
        "main": {
            "LowLevelRetries": LOW_LEVEL_RETRIES,
            // fs.Duration takes nanoseconds in JSON.
            "ConnectTimeout": CONNECT_TIMEOUT.as_nanos() as u64,
            "Timeout": STALL_TIMEOUT.as_nanos() as u64,
        }
    });
    if let Err(err) = rpc_with(api, "options/set", &options) {
        log::info!("librclone keeps its own retry policy: {err}");
    }
}

/// Frees an `Output` string exactly once, whatever path the caller takes.
struct OutputGuard<'a> {
    api: &'a LibrcloneApi,
    ptr: *mut c_char,
}

impl Drop for OutputGuard<'_> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: ptr came from RcloneRPC's Output, which the ABI says
            // the caller owns and must release with RcloneFreeString; the
            // guard is the only owner and drops once.
            unsafe { self.api.RcloneFreeString(self.ptr) };
        }
    }
}

fn rpc_with(api: &LibrcloneApi, method: &str, input: &Value) -> Result<Value, RcloneError> {
    if method == "core/quit" {
        return Err(RcloneError::new(
            method,
            403,
            "msync never calls core/quit: it would end the whole process without a clean shutdown",
        ));
    }
    let method_c = CString::new(method)
        .map_err(|_| RcloneError::new(method, 400, "the method name contains a NUL byte"))?;
    let input_json = serde_json::to_string(input)
        .map_err(|err| RcloneError::new(method, 400, format!("input is not JSON: {err}")))?;
    // serde_json escapes NUL as \u0000, so the encoded text never holds one.
    let input_c = CString::new(input_json)
        .map_err(|_| RcloneError::new(method, 400, "the input contains a NUL byte"))?;

    // SAFETY: both pointers are valid NUL-terminated strings that outlive the
    // call; the ABI only reads them (the `char *` in the C signature is not
    // const-qualified, but the library copies the strings and never writes
    // through them). RcloneRPC is thread-safe.
    let result =
        unsafe { api.RcloneRPC(method_c.as_ptr().cast_mut(), input_c.as_ptr().cast_mut()) };
    let output = OutputGuard {
        api,
        ptr: result.Output,
    };
    // A backend may have just taken SIGINT/SIGTERM for itself.
    signals::reclaim();
    if output.ptr.is_null() {
        return Err(RcloneError::new(
            method,
            result.Status,
            "librclone returned no output",
        ));
    }
    // SAFETY: a non-null Output is a NUL-terminated string owned by `output`
    // and alive until the guard drops, after this borrow ends.
    let bytes = unsafe { CStr::from_ptr(output.ptr) }.to_bytes();
    let text = std::str::from_utf8(bytes).map_err(|err| {
        RcloneError::new(
            method,
            result.Status,
            format!("librclone answered with invalid UTF-8: {err}"),
        )
    })?;
    let value: Value = serde_json::from_str(text).map_err(|err| {
        RcloneError::new(
            method,
            result.Status,
            format!("librclone answered with invalid JSON: {err}"),
        )
    })?;
    if result.Status != 200 {
        let message = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        return Err(RcloneError::new(method, result.Status, message));
    }
    Ok(value)
}
