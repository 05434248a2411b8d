//! The event log the APIs replay: the engine's events as Docker's API has them (container
//! events carry the container's labels; network connects are network events; an exec's
//! command is in its action), the recent ones kept so that a client asking `since` a
//! time sees them, then the new ones until `until`. Each client sees its own project's,
//! under its filters ([`LoggedEvent::matches`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pier_api::containers::Event;
use pier_api::ProjectName;
use tokio::sync::{broadcast, mpsc};

use crate::filters::{self, Filters};
use crate::{Engine, EngineEvent, RequestContext};

/// How many past events a replay can see.
pub const KEPT: usize = 4096;

/// The filter keys of an event stream.
pub const EVENT_FILTERS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "network",
    "volume",
    "host",
    "label",
    "scope",
    "daemon",
];

/// One event as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The project it happened in; a client sees its own project's.
    pub project: ProjectName,
    pub kind: String,
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    pub time_nano: i64,
}

impl LoggedEvent {
    /// Whether the event passes an event stream's filters.
    pub fn matches(&self, f: &Filters) -> bool {
        let any = |key: &str, test: &dyn Fn(&str) -> bool| filters::any(f, key, test);
        let name = self.attributes.get("name").map(String::as_str);
        any("type", &|v| v == self.kind)
            && any("event", &|v| {
                self.action == v
                    || self
                        .action
                        .strip_prefix(v)
                        .is_some_and(|r| r.starts_with(':'))
            })
            && any("container", &|v| {
                self.kind == "container" && (self.id.starts_with(v) || name == Some(v))
            })
            && any("image", &|v| {
                let img = self.attributes.get("image").map(String::as_str);
                img == Some(v)
                    || img == Some(&pier_api::docker::normalize_ref(v))
                    || (self.kind == "image" && (self.id.contains(v) || name == Some(v)))
            })
            && any("network", &|v| {
                self.kind == "network" && (self.id.starts_with(v) || name == Some(v))
            })
            && any("volume", &|v| self.kind == "volume" && self.id == v)
            && any("host", &|v| self.kind == "host" && self.id == v)
            && any("label", &|v| filters::label_matches(&self.attributes, v))
            && any("scope", &|v| v == "local")
    }

    /// Whether a replay from `since` to `until` (nanoseconds) shows it.
    fn within(&self, since: i64, until: Option<i64>) -> bool {
        self.time_nano >= since && until.is_none_or(|u| self.time_nano <= u)
    }
}

/// Now in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What a client asked of an event stream.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub filters: Filters,
    /// Replay the kept events from this time (nanoseconds).
    pub since: Option<i64>,
    /// End the stream at this time (nanoseconds).
    pub until: Option<i64>,
}

/// Recent events, and a broadcast of new ones.
pub struct EventLog {
    recent: Arc<Mutex<VecDeque<LoggedEvent>>>,
    tx: broadcast::Sender<LoggedEvent>,
}

impl EventLog {
    /// Starts recording the engine's events (on the current tokio runtime).
    pub fn start(engine: &Arc<Engine>) -> EventLog {
        let log = EventLog::empty();
        let mut rx = engine.instances.events.subscribe();
        let engine = engine.clone();
        let (recent, tx) = (log.recent.clone(), log.tx.clone());
        tokio::spawn(async move {
            let mut labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let ev = convert(&engine, ev, &mut labels);
                record(&recent, &tx, ev);
            }
        });
        log
    }

    fn empty() -> EventLog {
        let (tx, _) = broadcast::channel(1024);
        EventLog {
            recent: Arc::new(Mutex::new(VecDeque::new())),
            tx,
        }
    }

    /// How many clients follow the log.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The kept events and a receiver of the following ones, with none lost between.
    fn subscribe(&self) -> (Vec<LoggedEvent>, broadcast::Receiver<LoggedEvent>) {
        let r = self.recent.lock().unwrap();
        let rx = self.tx.subscribe();
        (r.iter().cloned().collect(), rx)
    }

    /// The events a client asked for in its context's project: the kept ones from
    /// `since`, then new ones until `until` passes or the receiver is dropped.
    pub fn stream(&self, ctx: &RequestContext, q: EventQuery) -> mpsc::Receiver<LoggedEvent> {
        let (past, rx) = self.subscribe();
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(follow(ctx.project.clone(), q, past, rx, tx));
        out
    }
}

fn record(
    recent: &Mutex<VecDeque<LoggedEvent>>,
    tx: &broadcast::Sender<LoggedEvent>,
    ev: LoggedEvent,
) {
    let mut r = recent.lock().unwrap();
    if r.len() >= KEPT {
        r.pop_front();
    }
    r.push_back(ev.clone());
    let _ = tx.send(ev);
}

async fn follow(
    project: ProjectName,
    q: EventQuery,
    past: Vec<LoggedEvent>,
    mut rx: broadcast::Receiver<LoggedEvent>,
    tx: mpsc::Sender<LoggedEvent>,
) {
    let mine = |e: &LoggedEvent| e.project == project && e.matches(&q.filters);
    if let Some(since) = q.since {
        for e in past {
            if e.within(since, q.until) && mine(&e) && tx.send(e).await.is_err() {
                return;
            }
        }
    }
    loop {
        let wait = q
            .until
            .map(|u| Duration::from_nanos(u.saturating_sub(now_nanos()).max(0) as u64));
        let next = async {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        };
        let e = match wait {
            Some(w) => match tokio::time::timeout(w, next).await {
                Ok(e) => e,
                Err(_) => return,
            },
            None => tokio::select! {
                e = next => e,
                _ = tx.closed() => return,
            },
        };
        let Some(e) = e else { return };
        if q.until.is_some_and(|u| e.time_nano > u) {
            return;
        }
        if mine(&e) && tx.send(e).await.is_err() {
            return;
        }
    }
}

/// The engine's event as the log keeps it: container events carry the container's labels
/// (remembered until it is destroyed); network connects are network events.
fn convert(
    engine: &Engine,
    ev: EngineEvent,
    labels: &mut HashMap<String, BTreeMap<String, String>>,
) -> LoggedEvent {
    let EngineEvent { project, event: ev } = ev;
    let mut attributes = ev.attributes.clone();
    let mut kind = ev.kind.clone();
    let mut id = ev.id.clone();
    let mut action = ev.action.clone();
    if ev.kind == "container" {
        let l = match engine.instances.lookup(&project, &ev.id) {
            Ok(c) => {
                labels.insert(c.id.clone(), c.config.labels.clone());
                c.config.labels
            }
            Err(_) => labels.get(&ev.id).cloned().unwrap_or_default(),
        };
        if ev.action == "destroy" {
            labels.remove(&ev.id);
        }
        for (k, v) in l {
            attributes.entry(k).or_insert(v);
        }
        match ev.action.as_str() {
            "connect" | "disconnect" => {
                let net = ev.attributes.get("network").cloned().unwrap_or_default();
                kind = "network".into();
                id = engine
                    .instances
                    .networks
                    .get(&project, &net)
                    .map(|n| n.id)
                    .unwrap_or_else(|_| net.clone());
                attributes = BTreeMap::from([
                    ("container".to_string(), ev.id.clone()),
                    ("name".to_string(), net),
                    ("type".to_string(), "bridge".to_string()),
                ]);
            }
            "exec_start" => {
                if let Some(cmd) = attributes.remove("execCommand") {
                    action = format!("exec_start: {cmd}");
                }
            }
            _ => {}
        }
    }
    LoggedEvent {
        project,
        kind,
        action,
        id,
        attributes,
        time_nano: now_nanos(),
    }
}

impl Engine {
    /// Sends an event of an API's own (images, networks, volumes) to every listener.
    pub fn emit(
        &self,
        ctx: &RequestContext,
        kind: &str,
        action: &str,
        id: &str,
        attrs: &[(&str, &str)],
    ) {
        let _ = self.instances.events.send(EngineEvent {
            project: ctx.project.clone(),
            event: Event {
                time: pier_api::time::format_rfc3339_nanos(SystemTime::now()),
                kind: kind.into(),
                action: action.into(),
                id: id.into(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext {
        RequestContext::system(ProjectName::default(), "test")
    }

    fn ev(project: &str, kind: &str, action: &str, id: &str, t: i64) -> LoggedEvent {
        LoggedEvent {
            project: ProjectName::try_from(project.to_string()).unwrap(),
            kind: kind.into(),
            action: action.into(),
            id: id.into(),
            attributes: BTreeMap::from([("name".to_string(), "web".to_string())]),
            time_nano: t,
        }
    }

    #[test]
    fn events_match_docker_filters() {
        let f = |s: &str| filters::parse(s).unwrap();
        let e = ev("default", "container", "exec_start: sh", "abc123", 0);
        assert!(e.matches(&f("{}")));
        assert!(e.matches(&f(r#"{"type":["container"],"event":["exec_start"]}"#)));
        assert!(
            e.matches(&f(r#"{"container":["web"]}"#)) && e.matches(&f(r#"{"container":["abc"]}"#))
        );
        assert!(!e.matches(&f(r#"{"type":["network"]}"#)));
        assert!(
            !e.matches(&f(r#"{"event":["exec"]}"#)),
            "a prefix only up to the colon"
        );
        assert!(!e.matches(&f(r#"{"volume":["abc123"]}"#)));
        assert!(e.matches(&f(r#"{"label":["name=web"]}"#)));
    }

    #[tokio::test]
    async fn replays_show_the_projects_kept_events_in_the_window_then_new_ones() {
        let log = EventLog::empty();
        for (p, t) in [
            ("default", 10),
            ("other", 20),
            ("default", 30),
            ("default", 50),
        ] {
            record(
                &log.recent,
                &log.tx,
                ev(p, "volume", "create", &format!("v{t}"), t),
            );
        }
        let q = EventQuery {
            filters: Filters::new(),
            since: Some(20),
            until: None,
        };
        let mut rx = log.stream(&ctx(), q);
        assert_eq!(rx.recv().await.unwrap().id, "v30");
        assert_eq!(rx.recv().await.unwrap().id, "v50");
        record(
            &log.recent,
            &log.tx,
            ev("other", "volume", "create", "x", now_nanos()),
        );
        record(
            &log.recent,
            &log.tx,
            ev("default", "volume", "create", "new", now_nanos()),
        );
        assert_eq!(
            rx.recv().await.unwrap().id,
            "new",
            "other projects' are not shown"
        );
        assert_eq!(log.listeners(), 1);
    }

    #[tokio::test]
    async fn streams_end_at_until() {
        let log = EventLog::empty();
        record(
            &log.recent,
            &log.tx,
            ev("default", "volume", "create", "old", 5),
        );
        let q = EventQuery {
            filters: Filters::new(),
            since: Some(0),
            until: Some(now_nanos() + 50_000_000),
        };
        let mut rx = log.stream(&ctx(), q);
        assert_eq!(rx.recv().await.unwrap().id, "old");
        assert!(
            rx.recv().await.is_none(),
            "the stream ends once until passes"
        );
    }

    #[test]
    fn the_log_keeps_the_last_events_only() {
        let log = EventLog::empty();
        for t in 0..(KEPT as i64 + 3) {
            record(
                &log.recent,
                &log.tx,
                ev("default", "volume", "create", &t.to_string(), t),
            );
        }
        let (past, _rx) = log.subscribe();
        assert_eq!(past.len(), KEPT);
        assert_eq!(past[0].id, "3");
    }
}
