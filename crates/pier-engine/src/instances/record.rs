//! How an instance is stored: a **spec**, what was asked for it (written by the API
//! side, in `Table::Containers`), and a **status**, what is (written by the host side that
//! realises it, in `Table::ContainerStatus`), both under the key `<project>/<id>`.
//!
//! The spec carries the desired run state ([`Desired`]) with a generation that every
//! change of it bumps; the status says which generation the host side last acted on
//! ([`Status::observed_generation`]). A spec ahead of its status is a request not acted on
//! yet (a daemon that died between recording a start and making it, or, in a pool, a
//! request another host recorded): the instance reconciler acts on it.
//!
//! The engine works on [`Instance`], the two joined, which reads as the API's
//! [`ContainerInspect`] (through `Deref`); [`Instance::spec`] and [`Instance::status`]
//! split it again for writing.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerState};
use pier_api::networks::{Endpoint, PortBinding};
use pier_api::volumes::MountSpec;
use pier_api::{Digest, Ipv4Address, MacAddress, ProjectName};
use pier_store::{Batch, Store, StoreError, StoreExt, Table};
use serde::{Deserialize, Serialize};

/// The run state asked for an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Run {
    /// Made, never started.
    #[default]
    Created,
    /// Started: it runs, or ran and exited on its own (its restart policy decides what
    /// follows an exit).
    Running,
    /// Stopped or killed by a user: restart policies leave it alone.
    Stopped,
}

/// What the instance should be doing, and how many times that was asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub run: Run,
    /// Bumped by every request that sets `run` (two starts are two requests).
    pub generation: u64,
}

/// What was asked for an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    pub name: String,
    pub project: ProjectName,
    pub image: String,
    pub image_id: Digest,
    pub created: String,
    pub command: Vec<String>,
    pub config: ContainerCreate,
    /// The networks it is on, as asked (names, aliases, static addresses); what was
    /// given on each while it runs is in its status.
    #[serde(default)]
    pub networks: BTreeMap<String, Endpoint>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub desired: Desired,
}

/// What an endpoint got while its instance runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointStatus {
    pub ip_address: Option<Ipv4Address>,
    pub prefix_len: Option<u8>,
    pub gateway: Option<Ipv4Address>,
    pub mac_address: Option<MacAddress>,
    pub interface: Option<String>,
    /// On a dual-stack network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6_address: Option<std::net::Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix6_len: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
}

impl EndpointStatus {
    fn of(e: &Endpoint) -> Self {
        EndpointStatus {
            ip_address: e.ip_address,
            prefix_len: e.prefix_len,
            gateway: e.gateway,
            mac_address: e.mac_address,
            interface: e.interface.clone(),
            ip6_address: e.ip6_address,
            prefix6_len: e.prefix6_len,
            gateway6: e.gateway6,
        }
    }

    fn is_empty(&self) -> bool {
        *self == EndpointStatus::default()
    }

    fn apply(self, e: &mut Endpoint) {
        e.ip_address = self.ip_address;
        e.prefix_len = self.prefix_len;
        e.gateway = self.gateway;
        e.mac_address = self.mac_address;
        e.interface = self.interface;
        e.ip6_address = self.ip6_address;
        e.prefix6_len = self.prefix6_len;
        e.gateway6 = self.gateway6;
    }
}

/// What an instance is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub state: ContainerState,
    pub log_path: String,
    /// By network name, for the endpoints that have anything.
    #[serde(default)]
    pub networks: BTreeMap<String, EndpointStatus>,
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// The generation of [`Desired`] the host side last acted on.
    #[serde(default)]
    pub observed_generation: u64,
}

/// An instance as the engine works on it: its spec and status joined.
#[derive(Debug, Clone)]
pub struct Instance {
    view: ContainerInspect,
    pub desired: Desired,
    pub observed_generation: u64,
}

impl Deref for Instance {
    type Target = ContainerInspect;
    fn deref(&self) -> &ContainerInspect {
        &self.view
    }
}

impl DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut ContainerInspect {
        &mut self.view
    }
}

impl Instance {
    /// A new instance: asked to be created, nothing acted on.
    pub fn new(view: ContainerInspect) -> Self {
        Instance {
            view,
            desired: Desired::default(),
            observed_generation: 0,
        }
    }

    /// The two halves joined; `status` is absent for a record being made elsewhere.
    pub fn join(spec: Spec, status: Option<Status>) -> Self {
        let status = status.unwrap_or_default();
        let mut networks = spec.networks;
        for (name, s) in status.networks {
            if let Some(e) = networks.get_mut(&name) {
                s.apply(e);
            }
        }
        let mut state = status.state;
        state.stopped_by_user = spec.desired.run == Run::Stopped;
        Instance {
            view: ContainerInspect {
                id: spec.id,
                name: spec.name,
                project: spec.project,
                image: spec.image,
                image_id: spec.image_id,
                created: spec.created,
                command: spec.command,
                config: spec.config,
                state,
                log_path: status.log_path,
                networks,
                ports: status.ports,
                mounts: spec.mounts,
                vm: None,
            },
            desired: spec.desired,
            observed_generation: status.observed_generation,
        }
    }

    /// The instance as the API shows it.
    pub fn into_inspect(self) -> ContainerInspect {
        self.view
    }

    /// Records a request for `run`: a new generation.
    pub fn desire(&mut self, run: Run) {
        self.desired = Desired {
            run,
            generation: self.desired.generation + 1,
        };
        self.view.state.stopped_by_user = run == Run::Stopped;
    }

    /// Whether the latest request was acted on.
    pub fn acted_on(&self) -> bool {
        self.observed_generation >= self.desired.generation
    }

    /// Says the latest request was acted on (written with the next status).
    pub fn observe(&mut self) {
        self.observed_generation = self.desired.generation;
    }

    pub fn spec(&self) -> Spec {
        let c = &self.view;
        let mut networks = c.networks.clone();
        for e in networks.values_mut() {
            EndpointStatus::default().apply(e);
        }
        Spec {
            id: c.id.clone(),
            name: c.name.clone(),
            project: c.project.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            created: c.created.clone(),
            command: c.command.clone(),
            config: c.config.clone(),
            networks,
            mounts: c.mounts.clone(),
            desired: self.desired,
        }
    }

    pub fn status(&self) -> Status {
        let c = &self.view;
        let mut state = c.state.clone();
        // The spec's desired state says it.
        state.stopped_by_user = false;
        Status {
            state,
            log_path: c.log_path.clone(),
            networks: c
                .networks
                .iter()
                .map(|(n, e)| (n.clone(), EndpointStatus::of(e)))
                .filter(|(_, s)| !s.is_empty())
                .collect(),
            ports: c.ports.clone(),
            observed_generation: self.observed_generation,
        }
    }
}

/// The key of instance `id` of `project`, in both tables.
pub fn key(project: &ProjectName, id: &str) -> String {
    format!("{project}/{id}")
}

/// Instance `id` of `project`, if it has a spec.
pub fn load(
    db: &dyn Store,
    project: &ProjectName,
    id: &str,
) -> Result<Option<Instance>, StoreError> {
    let k = key(project, id);
    let Some(spec) = db.get_json::<Spec>(Table::Containers, &k)? else {
        return Ok(None);
    };
    let status = db.get_json::<Status>(Table::ContainerStatus, &k)?;
    Ok(Some(Instance::join(spec, status)))
}

/// Every instance under `prefix` (`""`, or `<project>/`).
pub fn load_all(db: &dyn Store, prefix: &str) -> Result<Vec<Instance>, StoreError> {
    let mut statuses: HashMap<String, Status> = db
        .list_json::<Status>(Table::ContainerStatus, prefix)?
        .into_iter()
        .collect();
    Ok(db
        .list_json::<Spec>(Table::Containers, prefix)?
        .into_iter()
        .map(|(k, spec)| {
            let status = statuses.remove(&k);
            Instance::join(spec, status)
        })
        .collect())
}

/// Adds writing `c`'s spec to `b`.
pub fn put_spec(b: &mut Batch, c: &Instance) {
    b.put_json(Table::Containers, key(&c.project, &c.id), &c.spec());
}

/// Adds writing `c`'s status to `b`.
pub fn put_status(b: &mut Batch, c: &Instance) {
    b.put_json(Table::ContainerStatus, key(&c.project, &c.id), &c.status());
}

/// Adds writing both of `c`'s records to `b`.
pub fn put(b: &mut Batch, c: &Instance) {
    put_spec(b, c);
    put_status(b, c);
}

/// Adds deleting instance `id`'s records to `b`.
pub fn delete(b: &mut Batch, project: &ProjectName, id: &str) {
    b.delete(Table::Containers, key(project, id));
    b.delete(Table::ContainerStatus, key(project, id));
}

/// Adds deleting the statuses that have no spec (their instance is gone) to `b`;
/// returns how many.
pub fn drop_orphan_statuses(db: &dyn Store, b: &mut Batch) -> Result<usize, StoreError> {
    let mut n = 0;
    for (k, _) in db.list(Table::ContainerStatus, "")? {
        if db.get(Table::Containers, &k)?.is_none() {
            b.delete(Table::ContainerStatus, k);
            n += 1;
        }
    }
    Ok(n)
}

/// The instances whose desired state is ahead of the generation their status says
/// was acted on, as (project, ID). Reads only those two fields of each record.
pub fn behind(db: &dyn Store) -> Result<Vec<(ProjectName, String)>, StoreError> {
    #[derive(Deserialize)]
    struct Asked {
        project: ProjectName,
        id: String,
        #[serde(default)]
        desired: Desired,
    }
    #[derive(Deserialize)]
    struct Observed {
        #[serde(default)]
        observed_generation: u64,
    }
    let observed: HashMap<String, u64> = db
        .list_json::<Observed>(Table::ContainerStatus, "")?
        .into_iter()
        .map(|(k, o)| (k, o.observed_generation))
        .collect();
    Ok(db
        .list_json::<Asked>(Table::Containers, "")?
        .into_iter()
        .filter(|(k, a)| observed.get(k).is_some_and(|o| *o < a.desired.generation))
        .map(|(_, a)| (a.project, a.id))
        .collect())
}

/// Splits the records written before specs and statuses were (schema 7: each record
/// was the whole [`ContainerInspect`]) into the two, in one transaction; their desired
/// state is read from their state. Idempotent: a record with a status is left alone.
/// Returns how many were split.
pub fn split_legacy(db: &dyn Store) -> Result<usize, StoreError> {
    #[derive(Deserialize)]
    struct Legacy {
        state: Option<ContainerState>,
    }
    let mut b = Batch::new();
    let mut n = 0;
    for (k, legacy) in db.list_json::<Legacy>(Table::Containers, "")? {
        if legacy.state.is_none() || db.get(Table::ContainerStatus, &k)?.is_some() {
            continue;
        }
        let Some(old) = db.get_json::<ContainerInspect>(Table::Containers, &k)? else {
            continue;
        };
        use pier_api::containers::ContainerStatus as S;
        let run = if old.state.stopped_by_user {
            Run::Stopped
        } else if old.state.started_at.is_some()
            || matches!(old.state.status, S::Running | S::Paused | S::Restarting)
        {
            Run::Running
        } else {
            Run::Created
        };
        let mut c = Instance::new(old);
        c.desired = Desired { run, generation: 0 };
        put_spec(&mut b, &c);
        put_status(&mut b, &c);
        n += 1;
    }
    if n > 0 {
        b.commit(db)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_api::containers::ContainerStatus;
    use pier_store::MemStore;

    fn inspect(id: &str) -> ContainerInspect {
        let ep = Endpoint {
            network_id: "n1".into(),
            name: "web".into(),
            aliases: vec!["w".into()],
            ip_address: Some("10.0.0.2".parse().unwrap()),
            prefix_len: Some(24),
            interface: Some("eth0".into()),
            ..Default::default()
        };
        let state = ContainerState {
            status: ContainerStatus::Running,
            pid: Some(42),
            started_at: Some("2026-01-01T00:00:01Z".into()),
            restart_count: 2,
            ..Default::default()
        };
        serde_json::from_value(serde_json::json!({
            "id": id, "name": "web", "project": "default", "image": "alpine",
            "image_id": format!("sha256:{}", "a".repeat(64)), "created": "2026-01-01T00:00:00Z",
            "command": ["sh"], "config": {"image": "alpine"},
            "state": state,
            "log_path": "/x/container.log",
            "networks": {"pier": ep},
            "ports": [{"proto": "tcp", "host_ip": "", "host_port": 8080, "container_port": 80}],
            "mounts": []
        }))
        .unwrap()
    }

    #[test]
    fn a_split_instance_joins_back_to_what_it_was() {
        let mut c = Instance::new(inspect("c1"));
        c.desire(Run::Running);
        let (spec, status) = (c.spec(), c.status());
        // The spec holds no address, the status no alias.
        assert_eq!(spec.networks["pier"].ip_address, None);
        assert_eq!(spec.networks["pier"].aliases, vec!["w".to_string()]);
        assert_eq!(status.networks["pier"].interface.as_deref(), Some("eth0"));
        assert_eq!(status.state.pid, Some(42));
        let back = Instance::join(spec, Some(status));
        assert_eq!(
            serde_json::to_value(&*back).unwrap(),
            serde_json::to_value(&*c).unwrap()
        );
        assert_eq!(
            back.desired,
            Desired {
                run: Run::Running,
                generation: 1
            }
        );
        assert!(!back.acted_on());
    }

    #[test]
    fn stopped_by_user_is_the_desired_state() {
        let mut c = Instance::new(inspect("c1"));
        c.desire(Run::Stopped);
        assert!(c.state.stopped_by_user);
        assert!(!c.status().state.stopped_by_user);
        let back = Instance::join(c.spec(), Some(c.status()));
        assert!(back.state.stopped_by_user);
        c.desire(Run::Running);
        assert!(
            !Instance::join(c.spec(), Some(c.status()))
                .state
                .stopped_by_user
        );
    }

    #[test]
    fn legacy_records_are_split_once() {
        let db = MemStore::default();
        let mut stopped = inspect("c2");
        stopped.state.status = ContainerStatus::Exited;
        stopped.state.stopped_by_user = true;
        let mut b = Batch::new();
        b.put_json(Table::Containers, "default/c1", &inspect("c1"));
        b.put_json(Table::Containers, "default/c2", &stopped);
        b.commit(&db).unwrap();
        assert_eq!(split_legacy(&db).unwrap(), 2);
        let c1 = load(&db, &ProjectName::default_project(), "c1")
            .unwrap()
            .unwrap();
        assert_eq!(c1.state.pid, Some(42));
        assert_eq!(c1.networks["pier"].ip_address, "10.0.0.2".parse().ok());
        assert_eq!(c1.ports.len(), 1);
        assert_eq!(c1.desired.run, Run::Running);
        assert!(c1.acted_on());
        let c2 = load(&db, &ProjectName::default_project(), "c2")
            .unwrap()
            .unwrap();
        assert_eq!(c2.desired.run, Run::Stopped);
        assert!(c2.state.stopped_by_user);
        // The spec no longer holds the state.
        let raw: serde_json::Value = db
            .get_json(Table::Containers, "default/c1")
            .unwrap()
            .unwrap();
        assert!(raw.get("state").is_none(), "{raw}");
        assert_eq!(split_legacy(&db).unwrap(), 0);
        assert_eq!(load_all(&db, "default/").unwrap().len(), 2);
    }
}
