//! A running `_async` RC job: its status, its progress (the `core/stats` of
//! its stats group), cancellation with `job/stop`, and waiting.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::RcloneError;
use super::library::Rclone;

/// How often [`Job::wait`] asks rclone whether the job is done.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A handle on one rclone job.
#[derive(Debug, Clone)]
pub struct Job {
    rclone: Rclone,
    id: i64,
    group: String,
    method: String,
}

/// What `job/status` reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub id: i64,
    pub group: String,
    pub finished: bool,
    pub success: bool,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub duration: f64,
    #[serde(default)]
    pub output: Option<Value>,
}

/// Progress of a job's transfers, from `core/stats` of its group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes transferred so far.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes the job expects to transfer in all (grows while it lists).
    #[serde(default)]
    pub total_bytes: u64,
    /// Bytes per second.
    #[serde(default)]
    pub speed: f64,
    /// Seconds to go, when rclone can tell.
    #[serde(default)]
    pub eta: Option<f64>,
    /// Files transferred.
    #[serde(default)]
    pub transfers: u64,
    /// Files to transfer in all.
    #[serde(default)]
    pub total_transfers: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub checks: u64,
    #[serde(default)]
    pub deletes: u64,
    #[serde(default)]
    pub renames: u64,
    #[serde(default)]
    pub elapsed_time: f64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Files in flight.
    #[serde(default)]
    pub transferring: Vec<Transfer>,
}

/// One file in flight.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    pub name: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub bytes: i64,
    #[serde(default)]
    pub percentage: i64,
    #[serde(default)]
    pub speed: f64,
    #[serde(default)]
    pub eta: Option<f64>,
}

impl Job {
    pub(crate) fn new(rclone: Rclone, id: i64, group: &str, method: &str) -> Job {
        Job {
            rclone,
            id,
            group: group.to_owned(),
            method: method.to_owned(),
        }
    }

    /// Every job in this process that has not finished yet (`job/list`,
    /// then `job/status` of each). Their method is not known.
    pub fn unfinished(rclone: Rclone) -> Result<Vec<Job>, RcloneError> {
        let answer = rclone.rpc("job/list", &json!({}))?;
        let ids: Vec<i64> = answer["jobids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let mut running = Vec::new();
        for id in ids {
            let status = Job::new(rclone, id, "", "").status()?;
            if !status.finished {
                running.push(Job::new(rclone, id, &status.group, ""));
            }
        }
        Ok(running)
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// The stats group the job's transfers are counted in.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The RC method the job runs.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// `job/status`.
    pub fn status(&self) -> Result<JobStatus, RcloneError> {
        let method = "job/status";
        let answer = self.rclone.rpc(method, &json!({"jobid": self.id}))?;
        serde_json::from_value(answer)
            .map_err(|err| RcloneError::new(method, 200, format!("unexpected answer: {err}")))
    }

    /// `core/stats` of the job's group.
    pub fn progress(&self) -> Result<Progress, RcloneError> {
        let method = "core/stats";
        let answer = self.rclone.rpc(method, &json!({"group": self.group}))?;
        serde_json::from_value(answer)
            .map_err(|err| RcloneError::new(method, 200, format!("unexpected answer: {err}")))
    }

    /// `job/stop`: cancels the job. Transfers in flight are abandoned and
    /// rclone removes their partial files.
    pub fn cancel(&self) -> Result<(), RcloneError> {
        self.rclone.rpc("job/stop", &json!({"jobid": self.id}))?;
        Ok(())
    }

    /// Waits until the job finishes, or until `timeout` passes (`None`:
    /// no limit). Returns the final status, or `None` on time-out.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<JobStatus>, RcloneError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let status = self.status()?;
            if status.finished {
                return Ok(Some(status));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Drops the job's stats group (`core/stats-delete`), so a long-running
    /// service does not accumulate one per finished job.
    pub fn forget_stats(&self) -> Result<(), RcloneError> {
        self.rclone
            .rpc("core/stats-delete", &json!({"group": self.group}))?;
        Ok(())
    }
}
