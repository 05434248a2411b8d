//! Health checks (Docker's `HEALTHCHECK`, `--health-cmd`): a task per running container
//! with a check runs the check's command in it through the exec helper every interval and
//! records the result in the container's state; `docker ps` shows it, compose waits on it
//! (`depends_on: condition: service_healthy`).
//!
//! ```text
//! start ──> starting ──check ok──> healthy <──ok── unhealthy
//!              │                      │                ^
//!              └───── `retries` failures in a row ─────┘   (not counted in start_period)
//! ```
//!
//! A task starts on each `start` event (and at daemon start for containers re-adopted
//! running) and ends when the run it watches ends; a status change emits a
//! `health_status: STATUS` event, as Docker does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_api::containers::{
    ContainerInspect, ContainerStatus, Health, HealthResult, HealthStatus, Healthcheck,
};
use pier_api::time::format_rfc3339_nanos;
use pier_api::ProjectName;

use crate::context::RequestContext;
use crate::instances::Instances;
use crate::sessions::{ExecSpec, StartOptions, Stream};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the state, as Docker keeps them.
const KEEP: usize = 5;
/// Output kept per result.
const OUTPUT: usize = 4096;

/// The check that applies to a container: its own fields over its image's; none when
/// neither has one or the test is `NONE`.
pub fn effective(c: &ContainerInspect, image_config: &serde_json::Value) -> Option<Healthcheck> {
    let from_image = image_config
        .get("Healthcheck")
        .filter(|h| h.is_object())
        .map(|h| {
            let n = |k: &str| h[k].as_u64().unwrap_or(0);
            Healthcheck {
                test: h["Test"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                interval_ns: n("Interval"),
                timeout_ns: n("Timeout"),
                retries: n("Retries") as u32,
                start_period_ns: n("StartPeriod"),
            }
        });
    let h = match (c.config.healthcheck.clone(), from_image) {
        (Some(mut mine), Some(img)) => {
            if mine.test.is_empty() {
                mine.test = img.test;
            }
            for (m, i) in [
                (&mut mine.interval_ns, img.interval_ns),
                (&mut mine.timeout_ns, img.timeout_ns),
                (&mut mine.start_period_ns, img.start_period_ns),
            ] {
                if *m == 0 {
                    *m = i;
                }
            }
            if mine.retries == 0 {
                mine.retries = img.retries;
            }
            mine
        }
        (Some(mine), None) => mine,
        (None, img) => img?,
    };
    let off = h.test.is_empty() || h.test[0] == "NONE";
    (!off).then_some(h)
}

/// The command line of a check's test.
fn command(test: &[String]) -> Vec<String> {
    match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
        _ => test.to_vec(),
    }
}

fn image_config(cs: &Instances, c: &ContainerInspect) -> serde_json::Value {
    cs.images
        .resolve(&c.project, c.image_id.as_str())
        .and_then(|i| cs.images.config(&i))
        .ok()
        .and_then(|v| v.get("config").cloned())
        .unwrap_or_default()
}

/// Starts the checkers: for the containers running now, and for each later start.
pub fn spawn(cs: Arc<Instances>) {
    let mut rx = cs.events.subscribe();
    for project in cs.projects.list().unwrap_or_default() {
        for c in cs.all(&project).unwrap_or_default() {
            if matches!(
                c.state.status,
                ContainerStatus::Running | ContainerStatus::Paused
            ) {
                watch(&cs, c);
            }
        }
    }
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ev) if ev.event.kind == "container" && ev.event.action == "start" => {
                    if let Ok(c) = cs.lookup(&ev.project, &ev.event.id) {
                        watch(&cs, c);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
}

fn watch(cs: &Arc<Instances>, c: ContainerInspect) {
    let Some(check) = effective(&c, &image_config(cs, &c)) else {
        return;
    };
    tokio::spawn(run(cs.clone(), c, check));
}

fn ns(v: u64, default: Duration) -> Duration {
    if v == 0 {
        default
    } else {
        Duration::from_nanos(v)
    }
}

/// Is `c` still in the run that started at `started_at`?
fn same_run(c: &ContainerInspect, started_at: &Option<String>) -> bool {
    matches!(
        c.state.status,
        ContainerStatus::Running | ContainerStatus::Paused
    ) && c.state.started_at == *started_at
}

async fn run(cs: Arc<Instances>, c: ContainerInspect, check: Healthcheck) {
    let interval = ns(check.interval_ns, DEFAULT_INTERVAL);
    let timeout = ns(check.timeout_ns, DEFAULT_TIMEOUT);
    let retries = if check.retries == 0 {
        DEFAULT_RETRIES
    } else {
        check.retries
    };
    let start_period = Duration::from_nanos(check.start_period_ns);
    let started_at = c.state.started_at.clone();
    let (project, id) = (c.project.clone(), c.id.clone());
    let begun = Instant::now();
    // `starting` at a start; a container re-adopted after a daemon restart keeps its state.
    let reset = cs
        .update_record(&project, &id, |c| {
            let fresh = same_run(c, &started_at) && c.state.health.is_none();
            if fresh {
                c.state.health = Some(Health::default());
            }
            fresh
        })
        .await;
    if reset.is_err() {
        return;
    }
    let cmd = command(&check.test);
    loop {
        tokio::time::sleep(interval).await;
        let Ok(now) = cs.lookup(&project, &id) else {
            return;
        };
        if !same_run(&now, &started_at) {
            return;
        }
        if now.state.status == ContainerStatus::Paused {
            continue;
        }
        let result = probe(&cs, &project, &id, &cmd, timeout).await;
        let in_start_period = begun.elapsed() < start_period;
        let mut changed = None;
        let mut still = true;
        let updated = cs
            .update_record(&project, &id, |c| {
                if !same_run(c, &started_at) {
                    still = false;
                    return false;
                }
                let h = c.state.health.get_or_insert_with(Health::default);
                let before = h.status;
                if result.exit_code == 0 {
                    h.status = HealthStatus::Healthy;
                    h.failing_streak = 0;
                } else if !(in_start_period && h.status == HealthStatus::Starting) {
                    h.failing_streak += 1;
                    if h.failing_streak >= retries {
                        h.status = HealthStatus::Unhealthy;
                    }
                }
                h.log.push(result.clone());
                if h.log.len() > KEEP {
                    h.log.remove(0);
                }
                if h.status != before {
                    changed = Some(h.status);
                }
                true
            })
            .await;
        if updated.is_err() || !still {
            return;
        }
        if let Some(s) = changed {
            if let Ok(c) = cs.lookup(&project, &id) {
                cs.emit(&c, &format!("health_status: {}", s.as_str()), &[]);
            }
        }
    }
}

/// Runs the check once, as an exec session of its own (forgotten once read).
async fn probe(
    cs: &Arc<Instances>,
    project: &ProjectName,
    id: &str,
    cmd: &[String],
    timeout: Duration,
) -> HealthResult {
    let start = format_rfc3339_nanos(std::time::SystemTime::now());
    let failed = |start: String, output: String| HealthResult {
        start,
        end: format_rfc3339_nanos(std::time::SystemTime::now()),
        exit_code: -1,
        output,
    };
    let spec = ExecSpec {
        cmd: cmd.to_vec(),
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let ctx = RequestContext::system(project.clone(), "health check");
    let started = cs.exec_create(&ctx, id, spec).and_then(|exec_id| {
        // A timeout drops the output, which must end the check's command.
        let opts = StartOptions {
            ends_unread: true,
            ..Default::default()
        };
        let io = cs.exec_start(&ctx, &exec_id, opts);
        Ok((exec_id, io?))
    });
    let (exec_id, io) = match started {
        Ok(x) => x,
        Err(e) => return failed(start, crate::EngineError::from(e).message()),
    };
    let _forget = ForgetExec(cs, &exec_id);
    let mut output = io.output.expect("not detached");
    let mut exit = io.exit;
    let run = async {
        // Only the first OUTPUT bytes of each stream are kept; the rest is read and
        // dropped, so a chatty check cannot make the daemon hold more.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(c) = output.recv().await {
            let kept = match c.stream {
                Stream::Stdout => &mut out,
                Stream::Stderr => &mut err,
            };
            let room = (OUTPUT + 1).saturating_sub(kept.len());
            kept.extend_from_slice(&c.data[..c.data.len().min(room)]);
        }
        let code = exit.wait_for(|c| c.is_some()).await.ok().and_then(|c| *c);
        out.extend(err);
        (code, out)
    };
    // On a timeout the output is dropped, which ends the command.
    match tokio::time::timeout(timeout, run).await {
        Ok((code, output)) => {
            let mut text = String::from_utf8_lossy(&output).into_owned();
            if text.len() > OUTPUT {
                let mut cut = OUTPUT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            HealthResult {
                start,
                end: format_rfc3339_nanos(std::time::SystemTime::now()),
                exit_code: code.unwrap_or(-1),
                output: text,
            }
        }
        Err(_) => failed(
            start,
            format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64()),
        ),
    }
}

/// Forgets a probe's exec session when the probe is done with it.
struct ForgetExec<'a>(&'a Instances, &'a str);

impl Drop for ForgetExec<'_> {
    fn drop(&mut self) {
        self.0.exec_forget(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_commands() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(command(&s(&["CMD", "true"])), s(&["true"]));
        assert_eq!(
            command(&s(&["CMD-SHELL", "exit 1"])),
            s(&["/bin/sh", "-c", "exit 1"])
        );
    }
}
