//! Typed requests and answers for the RC methods msync uses.
//!
//! A [`Call`] is a method and its parameters. The same call can run to
//! completion ([`Call::run`]) or start as an `_async` job in a stats group
//! ([`Call::start`]) that can be watched and cancelled: long work (syncs,
//! big copies) always takes the second road.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::RcloneError;
use super::job::Job;
use super::library::Rclone;

/// A file or directory on an rclone filesystem: `fs` is a remote such as
/// `gdrive:msync` or a local path, `remote` a path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub fs: String,
    pub remote: String,
}

impl Location {
    pub fn new(fs: impl Into<String>, remote: impl Into<String>) -> Location {
        Location {
            fs: fs.into(),
            remote: remote.into(),
        }
    }
}

/// The stats group of calls run without one of their own.
const SHARED_GROUP: &str = "msync/calls";

/// One RC method with its parameters.
#[derive(Debug, Clone)]
pub struct Call {
    method: String,
    params: Map<String, Value>,
}

impl Call {
    /// A call of any method; `params` must be a JSON object (anything else
    /// is sent as an empty object and rclone reports the missing
    /// parameters).
    pub fn new(method: impl Into<String>, params: Value) -> Call {
        let params = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Call {
            method: method.into(),
            params,
        }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// Options for this call only (rclone's `_config`), e.g.
    /// `{"Transfers": 8, "BackupDir": "remote:.trash"}`.
    pub fn config(mut self, config: Value) -> Call {
        self.params.insert("_config".into(), config);
        self
    }

    /// Filter rules for this call only (rclone's `_filter`), e.g.
    /// `{"FilesFrom": ["a.txt"]}` or `{"ExcludeRule": [".wh..wh.*"]}`.
    pub fn filter(mut self, filter: Value) -> Call {
        self.params.insert("_filter".into(), filter);
        self
    }

    /// Runs the call to completion on this thread. What it moves or
    /// checks is accounted in one stats group all such calls share: left
    /// without one, rclone makes a group per call and, past 1,000 groups,
    /// drops the oldest (perhaps a branch's own, its counts with it),
    /// logging a line each time.
    pub fn run(&self, rclone: Rclone) -> Result<Value, RcloneError> {
        self.run_in(rclone, SHARED_GROUP)
    }

    /// Runs the call to completion on this thread, its transfers accounted
    /// in stats group `group`.
    pub fn run_in(&self, rclone: Rclone, group: &str) -> Result<Value, RcloneError> {
        let mut params = self.params.clone();
        params.insert("_group".into(), Value::String(group.into()));
        rclone.rpc(&self.method, &Value::Object(params))
    }

    /// Starts the call as an `_async` job whose transfers are accounted in
    /// stats group `group`.
    pub fn start(&self, rclone: Rclone, group: &str) -> Result<Job, RcloneError> {
        let mut params = self.params.clone();
        params.insert("_async".into(), Value::Bool(true));
        params.insert("_group".into(), Value::String(group.into()));
        let answer = rclone.rpc(&self.method, &Value::Object(params))?;
        let id = answer["jobid"].as_i64().ok_or_else(|| {
            RcloneError::new(
                &self.method,
                200,
                format!("no job id in the answer: {answer}"),
            )
        })?;
        Ok(Job::new(rclone, id, group, &self.method))
    }

    /// `operations/copyfile`: copies one file, server-side where possible.
    pub fn copyfile(src: &Location, dst: &Location) -> Call {
        Call::new("operations/copyfile", file_pair(src, dst))
    }

    /// `operations/movefile`: moves one file, server-side where possible.
    pub fn movefile(src: &Location, dst: &Location) -> Call {
        Call::new("operations/movefile", file_pair(src, dst))
    }

    /// `msync/placefile` (msync's own librclone only, see
    /// [`Rclone::has_method`]): moves `from` to `to` on the remote `fs`,
    /// what `to` held going to `backup` first; with `source`, `from` is
    /// uploaded from there first. Fewer requests than `copyfile` and
    /// `movefile` with a backup dir doing the same.
    pub fn placefile(
        fs: &str,
        from: &str,
        to: &str,
        backup: &str,
        source: Option<&Location>,
    ) -> Call {
        let mut params = json!({"fs": fs, "from": from, "to": to, "backup": backup});
        if let Some(source) = source {
            params["srcFs"] = json!(source.fs);
            params["srcRemote"] = json!(source.remote);
        }
        Call::new("msync/placefile", params)
    }

    /// `operations/deletefile`: deletes one file.
    pub fn deletefile(at: &Location) -> Call {
        Call::new(
            "operations/deletefile",
            json!({"fs": at.fs, "remote": at.remote}),
        )
    }

    /// `operations/mkdir`: creates a directory and its parents.
    pub fn mkdir(at: &Location) -> Call {
        Call::new(
            "operations/mkdir",
            json!({"fs": at.fs, "remote": at.remote}),
        )
    }

    /// `sync/sync`: makes `dst_fs` identical to `src_fs`, deleting extras.
    pub fn sync(src_fs: &str, dst_fs: &str) -> Call {
        Call::new(
            "sync/sync",
            json!({"srcFs": src_fs, "dstFs": dst_fs, "createEmptySrcDirs": true}),
        )
    }

    /// `sync/copy`: copies what `src_fs` has that `dst_fs` lacks or differs.
    pub fn copy(src_fs: &str, dst_fs: &str) -> Call {
        Call::new(
            "sync/copy",
            json!({"srcFs": src_fs, "dstFs": dst_fs, "createEmptySrcDirs": true}),
        )
    }

    /// `sync/move`: moves a directory's contents, server-side where possible.
    pub fn move_dir(src_fs: &str, dst_fs: &str) -> Call {
        Call::new(
            "sync/move",
            json!({
                "srcFs": src_fs,
                "dstFs": dst_fs,
                "createEmptySrcDirs": true,
                "deleteEmptySrcDirs": true,
            }),
        )
    }
}

fn file_pair(src: &Location, dst: &Location) -> Value {
    json!({
        "srcFs": src.fs,
        "srcRemote": src.remote,
        "dstFs": dst.fs,
        "dstRemote": dst.remote,
    })
}

/// One entry of `operations/list` or `operations/stat` (rclone's lsjson
/// format).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub path: String,
    pub name: String,
    pub size: i64,
    #[serde(default)]
    pub mod_time: String,
    pub is_dir: bool,
    #[serde(default)]
    pub hashes: Option<Map<String, Value>>,
}

/// Options of `operations/list`.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub recurse: bool,
    pub files_only: bool,
    pub dirs_only: bool,
    pub hashes: bool,
}

/// Space on a remote, as far as its backend tells (`operations/about`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct About {
    pub total: Option<i64>,
    pub used: Option<i64>,
    pub free: Option<i64>,
    pub trashed: Option<i64>,
    pub other: Option<i64>,
    pub objects: Option<i64>,
}

/// What a remote's backend can do, as `operations/fsinfo` reports it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FsInfo {
    /// The hash types the backend keeps or can compute.
    #[serde(rename = "Hashes", default)]
    pub hashes: Vec<String>,
    /// How finely modification times are kept, in nanoseconds (rclone's
    /// "not supported" is 100 years).
    #[serde(rename = "Precision")]
    pub precision_ns: i64,
    /// rclone's optional features by name (`Move`, `DirMove`,
    /// `CaseInsensitive`, `CanHaveEmptyDirectories`, `About` …).
    #[serde(rename = "Features", default)]
    pub features: std::collections::BTreeMap<String, bool>,
}

impl FsInfo {
    /// Whether the backend has the optional feature `name`.
    pub fn has(&self, name: &str) -> bool {
        self.features.get(name).copied().unwrap_or(false)
    }

    /// One line for a log or `check`: what the engine's choices depend on.
    pub fn summary(&self) -> String {
        const YEAR_NS: i64 = 365 * 24 * 3600 * 1_000_000_000;
        let yes_no = |name: &str| if self.has(name) { "yes" } else { "no" };
        let times = match self.precision_ns {
            ns if ns >= YEAR_NS => "not kept".to_owned(),
            ns if ns >= 1_000_000_000 => format!("to {} s", ns / 1_000_000_000),
            ns if ns >= 1_000_000 => format!("to {} ms", ns / 1_000_000),
            ns => format!("to {ns} ns"),
        };
        let hashes = if self.hashes.is_empty() {
            "none".to_owned()
        } else {
            self.hashes.join(", ")
        };
        format!(
            "hashes {hashes}; modification times {times}; server-side move {}, copy {}, directory move {}; empty directories {}; {}; size known (about) {}",
            yes_no("Move"),
            yes_no("Copy"),
            yes_no("DirMove"),
            yes_no("CanHaveEmptyDirectories"),
            if self.has("CaseInsensitive") {
                "case-insensitive"
            } else {
                "case-sensitive"
            },
            yes_no("About"),
        )
    }
}

/// What `core/version` reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: String,
    #[serde(default)]
    pub decomposed: Vec<u64>,
    #[serde(default)]
    pub go_version: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub arch: String,
}

fn decode<T: serde::de::DeserializeOwned>(method: &str, value: Value) -> Result<T, RcloneError> {
    serde_json::from_value(value)
        .map_err(|err| RcloneError::new(method, 200, format!("unexpected answer: {err}")))
}

impl Rclone {
    /// `operations/stat`: the entry at `at`, or `None` when nothing is there.
    pub fn stat(&self, at: &Location) -> Result<Option<Entry>, RcloneError> {
        let method = "operations/stat";
        let answer = self.rpc(method, &json!({"fs": at.fs, "remote": at.remote}))?;
        decode(method, answer["item"].clone())
    }

    /// `operations/list`: the entries under `at`.
    pub fn list(&self, at: &Location, options: &ListOptions) -> Result<Vec<Entry>, RcloneError> {
        let method = "operations/list";
        let answer = self.rpc(
            method,
            &json!({
                "fs": at.fs,
                "remote": at.remote,
                "opt": {
                    "recurse": options.recurse,
                    "filesOnly": options.files_only,
                    "dirsOnly": options.dirs_only,
                    "showHash": options.hashes,
                    "noMimeType": true,
                },
            }),
        )?;
        decode(method, answer["list"].clone())
    }

    /// [`Rclone::list`] of a directory that may not exist: none holds no
    /// entries. Looked at first, so a missing directory logs no rclone
    /// listing error.
    pub fn list_if_present(
        &self,
        at: &Location,
        options: &ListOptions,
    ) -> Result<Vec<Entry>, RcloneError> {
        if self.stat(at)?.is_none() {
            return Ok(Vec::new());
        }
        match self.list(at, options) {
            Err(err) if err.is_not_found() => Ok(Vec::new()),
            other => other,
        }
    }

    /// `operations/fsinfo`: what the backend of `fs` can do.
    pub fn fsinfo(&self, fs: &str) -> Result<FsInfo, RcloneError> {
        let method = "operations/fsinfo";
        decode(method, self.rpc(method, &json!({"fs": fs}))?)
    }

    /// `operations/about`: space used and free on the remote `fs`.
    pub fn about(&self, fs: &str) -> Result<About, RcloneError> {
        let method = "operations/about";
        decode(method, self.rpc(method, &json!({"fs": fs}))?)
    }

    /// `config/listremotes`: the names of the configured remotes, without
    /// the trailing colon.
    pub fn list_remotes(&self) -> Result<Vec<String>, RcloneError> {
        let method = "config/listremotes";
        let answer = self.rpc(method, &json!({}))?;
        if answer["remotes"].is_null() {
            return Ok(Vec::new());
        }
        decode(method, answer["remotes"].clone())
    }

    /// The backends the library was built with (`config/providers`): all
    /// of rclone's, or a trimmed build's few.
    pub fn backends(&self) -> Result<Vec<String>, RcloneError> {
        let method = "config/providers";
        let answer = self.rpc(method, &json!({}))?;
        let names = answer["providers"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|p| p["Name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(names)
    }

    /// The backend type of a configured remote (`config/get`). Only the
    /// type is returned: the rest of the section may hold secrets.
    pub fn remote_type(&self, name: &str) -> Result<String, RcloneError> {
        let method = "config/get";
        let answer = self.rpc(method, &json!({"name": name}))?;
        answer["type"].as_str().map(str::to_owned).ok_or_else(|| {
            RcloneError::new(method, 404, format!("remote {name:?} is not configured"))
        })
    }

    /// The `remote` option of a configured wrapper remote (crypt, alias …):
    /// where it stores its files. Only that option is returned.
    pub fn wrapped_remote(&self, name: &str) -> Result<Option<String>, RcloneError> {
        let answer = self.rpc("config/get", &json!({"name": name}))?;
        Ok(answer["remote"].as_str().map(str::to_owned))
    }

    /// `core/version`.
    pub fn version_info(&self) -> Result<Version, RcloneError> {
        let method = "core/version";
        decode(method, self.rpc(method, &json!({}))?)
    }

    /// `fscache/clear`: forgets every remote rclone made, and with them
    /// their pooled connections; the next call to each makes it anew.
    pub fn forget_remotes(&self) -> Result<(), RcloneError> {
        self.rpc("fscache/clear", &json!({}))?;
        Ok(())
    }

    /// Sets how long a connection may stall (no bytes moving, no answer)
    /// before rclone drops it and retries: its `Timeout` option. It takes
    /// effect for connections made from then on, so it is set before any
    /// remote is used.
    pub fn set_stall_timeout(&self, timeout: std::time::Duration) -> Result<(), RcloneError> {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.rpc("options/set", &json!({"main": {"Timeout": nanos}}))?;
        Ok(())
    }

    /// Caps the Go heap softly (what `GOMEMLIMIT` does), through msync's
    /// own `msync/memorylimit`; a library without it (an upstream build)
    /// is told apart, so the error can say to use `GOMEMLIMIT` instead.
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), RcloneError> {
        let method = "msync/memorylimit";
        if !self.has_method(method) {
            return Err(RcloneError::new(
                method,
                404,
                "this librclone cannot cap its heap (an upstream build?): set GOMEMLIMIT in msync's environment instead",
            ));
        }
        // rclone reads JSON numbers as float64: past 2^62 one would not
        // come back whole (and 2^62 bytes is no limit anyway).
        let bytes = bytes.min(1 << 62);
        self.rpc(method, &json!({ "bytes": bytes }))?;
        Ok(())
    }

    /// Sends rclone's own log lines to `path` (appended) rather than to
    /// stderr, through msync's own `msync/logto`; false when the library
    /// lacks the call (an upstream build), whose lines stay on stderr.
    pub fn send_logs_to(&self, path: &std::path::Path) -> Result<bool, RcloneError> {
        let method = "msync/logto";
        if !self.has_method(method) {
            return Ok(false);
        }
        self.rpc(method, &json!({ "path": path }))?;
        Ok(true)
    }

    /// `core/bwlimit`: sets the process-wide bandwidth limit (`"off"` lifts
    /// it) and returns the limit now in force as rclone prints it.
    pub fn set_bwlimit(&self, rate: &str) -> Result<String, RcloneError> {
        let method = "core/bwlimit";
        let answer = self.rpc(method, &json!({"rate": rate}))?;
        Ok(answer["rate"].as_str().unwrap_or_default().to_owned())
    }
}
