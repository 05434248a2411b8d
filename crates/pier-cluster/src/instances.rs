//! The pool's instance records: every member mirrors its own instances (containers and
//! VMs) into the pool's store, so that any member lists them all and knows which host to
//! forward a request naming one to. Blocking, over any [`Store`] (etcd in a pool,
//! [`pier_store::MemStore`] in tests).
//!
//! A record lives at `instances/PROJECT/ID` in [`Table::Cluster`] ([`key`]). Only the
//! owner writes its records: on each of its instances' events, and by a full
//! [`resync`] at resume and periodically (events can be missed), which also deletes the
//! records of instances the host no longer has. Each write requires the host's record
//! (`hosts/ID`) present, so a host removed from the pool while its daemon runs writes no
//! more ([`InstanceError::Removed`]); its removal deletes its records ([`forget_host`]).
//! The records are a view, never the truth: what an instance is lives on its host, which
//! answers for it.
//!
//! [`find_in`] resolves a reference as the engine does on one host: an exact ID, then a
//! name, then a unique ID prefix; a prefix matching several instances is
//! [`InstanceError::Ambiguous`].

use std::collections::{BTreeMap, HashMap};

use pier_store::{Compare, Expect, Op, Store, StoreError, Table, Txn};

use crate::scheduler::keys;
use serde::{Deserialize, Serialize};

/// The records' prefix in [`Table::Cluster`].
pub const INSTANCES: &str = "instances/";
/// Their table.
pub const TABLE: Table = Table::Cluster;
/// The most ops [`resync`] puts in one transaction (etcd refuses more than 128 by
/// default).
const OPS_PER_TXN: usize = 64;

/// The key of instance `id` of `project`.
pub fn key(project: &str, id: &str) -> String {
    format!("{INSTANCES}{project}/{id}")
}

/// A port an instance publishes while it runs (`pier ps`'s `0.0.0.0:8080->80/tcp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordPort {
    /// `tcp` or `udp`.
    pub proto: String,
    /// Empty for every host address.
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// An instance as the pool sees it: what `ps` shows of it and the host it runs on.
///
/// Unknown fields are accepted (no `deny_unknown_fields`, unlike the pool's other
/// records): members of different versions share these records, and an older member
/// lists a newer one's instances rather than failing on a field it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub project: String,
    pub id: String,
    pub name: String,
    /// The host it runs on, the only writer of this record.
    pub host: String,
    /// `container` or `vm`.
    pub kind: String,
    /// The image reference it was made from.
    pub image: String,
    /// Its command, entrypoint and arguments joined by spaces.
    #[serde(default)]
    pub command: String,
    /// `created`, `running`, `paused`, `restarting`, `exited` or `removing`.
    pub state: String,
    /// `Up 3 minutes`, ... as it was when written; readers that show it later make it
    /// again from the times below.
    pub status: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, when it last started.
    #[serde(default)]
    pub started_at: Option<String>,
    /// RFC 3339, when it last stopped.
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Published ports while it runs.
    #[serde(default)]
    pub ports: Vec<RecordPort>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl InstanceRecord {
    pub fn key(&self) -> String {
        key(&self.project, &self.id)
    }

    /// Whether a reference names it exactly: its ID, or its name (with or without
    /// Docker's leading `/`).
    pub fn named_by(&self, reference: &str) -> bool {
        self.id == reference || self.name == reference.trim_start_matches('/')
    }
}

/// Why reading or writing instance records failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("container ID prefix {reference:?} matches several containers in the pool ({}); give more of it", .matches.join(", "))]
    Ambiguous {
        reference: String,
        /// The matching IDs, each with its host (`ID on HOST`).
        matches: Vec<String>,
    },
    #[error("bad instance record {project}/{id}: {reason}")]
    Invalid {
        project: String,
        id: String,
        reason: &'static str,
    },
    #[error("host {0} is not in the pool (it was removed): it keeps no instance records there")]
    Removed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses a record that would not read back under its own key.
fn check(r: &InstanceRecord) -> Result<(), InstanceError> {
    let bad = |reason| {
        Err(InstanceError::Invalid {
            project: r.project.clone(),
            id: r.id.clone(),
            reason,
        })
    };
    let segment = |s: &str| !s.is_empty() && !s.contains('/');
    if !segment(&r.project) {
        return bad("the project must be one non-empty path segment");
    }
    if !segment(&r.id) {
        return bad("the ID must be one non-empty path segment");
    }
    if r.host.is_empty() {
        return bad("the host is empty");
    }
    Ok(())
}

fn put_op(r: &InstanceRecord) -> Op {
    Op::Put {
        table: TABLE,
        key: r.key(),
        value: serde_json::to_vec(r).expect("instance records serialize to JSON"),
    }
}

/// Runs `ops` of `host`'s records while the host is in the pool (its record present).
fn write_as(store: &dyn Store, host: &str, ops: Vec<Op>) -> Result<(), InstanceError> {
    let present = Compare {
        table: keys::TABLE,
        key: keys::host(host),
        expect: Expect::Present,
    };
    match store.txn(
        Txn {
            compares: vec![present],
            ops,
        },
        false,
    ) {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(InstanceError::Removed(host.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Whether the instance `project/id` was moved to a host other than `host` (its
/// assignment names another host): `host`'s copy is an old one, about to be removed
/// (fenced), whose record must not hide the new host's.
fn moved_away(store: &dyn Store, host: &str, project: &str, id: &str) -> Result<bool, StoreError> {
    let Some(bytes) = store.get(keys::TABLE, &keys::assignment(&format!("{project}/{id}")))? else {
        return Ok(false);
    };
    Ok(
        serde_json::from_slice::<crate::scheduler::Assignment>(&bytes)
            .is_ok_and(|a| a.host != host),
    )
}

/// Writes `record` (only its host writes it; no compare on the record itself). Nothing is
/// written for an instance moved to another host (see [`crate::agent`]'s fencing).
pub fn put(store: &dyn Store, record: &InstanceRecord) -> Result<(), InstanceError> {
    check(record)?;
    if moved_away(store, &record.host, &record.project, &record.id)? {
        return Ok(());
    }
    write_as(store, &record.host, vec![put_op(record)])
}

/// Deletes host `host`'s record of `project/id` (none there is no error). A record of
/// another host is left alone: the instance was moved there (a fenced old copy's
/// removal must not take the new host's record).
pub fn delete(store: &dyn Store, host: &str, project: &str, id: &str) -> Result<(), InstanceError> {
    let k = key(project, id);
    let Some(kv) = store.get_kv(TABLE, &k)? else {
        // Nothing to delete; still refused to a removed host, as every write is.
        return write_as(
            store,
            host,
            vec![Op::Delete {
                table: TABLE,
                key: k,
            }],
        );
    };
    match serde_json::from_slice::<InstanceRecord>(&kv.value) {
        Ok(r) if r.host != host => return Ok(()),
        _ => {}
    }
    let ops = vec![Op::Delete {
        table: TABLE,
        key: k.clone(),
    }];
    let txn = Txn {
        compares: vec![
            Compare {
                table: keys::TABLE,
                key: keys::host(host),
                expect: Expect::Present,
            },
            Compare {
                table: TABLE,
                key: k,
                expect: Expect::ModRevision(kv.mod_revision),
            },
        ],
        ops,
    };
    match store.txn(txn, false) {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { key, .. }) if key == keys::host(host) => {
            Err(InstanceError::Removed(host.to_string()))
        }
        // Rewritten meanwhile (by its new host): not this host's to delete.
        Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every record of host `host` (removed from the pool); how many there were.
pub fn forget_host(store: &dyn Store, host: &str) -> Result<usize, StoreError> {
    let ops: Vec<Op> = list(store, None)?
        .into_iter()
        .filter(|r| r.host == host)
        .map(|r| Op::Delete {
            table: TABLE,
            key: r.key(),
        })
        .collect();
    for chunk in ops.chunks(OPS_PER_TXN) {
        store.commit_with(chunk.to_vec(), false)?;
    }
    Ok(ops.len())
}

/// The records of `project`, or of every project when None, in key order. A record that
/// does not read is left out (and logged): one bad record does not hide the others.
pub fn list(store: &dyn Store, project: Option<&str>) -> Result<Vec<InstanceRecord>, StoreError> {
    let prefix = match project {
        Some(p) => format!("{INSTANCES}{p}/"),
        None => INSTANCES.to_string(),
    };
    let mut out = Vec::new();
    for (k, v) in store.list(TABLE, &prefix)? {
        match serde_json::from_slice::<InstanceRecord>(&v) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(key = %k, error = %e, "unreadable instance record left out"),
        }
    }
    Ok(out)
}

/// The rules that name an instance (the engine's on one host, over the pool), over any
/// source of records: an exact ID (`by_id`), then a name (`by_name`, given the reference
/// without a leading `/`), then a unique ID prefix (`by_prefix`: the records whose ID may
/// start with the reference; they are checked here). Each source is asked only if the
/// one before found nothing.
pub fn find_by<R: std::borrow::Borrow<InstanceRecord>, P: Iterator<Item = R>>(
    reference: &str,
    by_id: impl FnOnce(&str) -> Option<R>,
    by_name: impl FnOnce(&str) -> Option<R>,
    by_prefix: impl FnOnce(&str) -> P,
) -> Result<Option<R>, InstanceError> {
    if reference.is_empty() {
        return Ok(None);
    }
    if let Some(r) = by_id(reference).filter(|r| r.borrow().id == reference) {
        return Ok(Some(r));
    }
    if let Some(r) = by_name(reference.trim_start_matches('/')) {
        return Ok(Some(r));
    }
    let mut matches = by_prefix(reference).filter(|r| r.borrow().id.starts_with(reference));
    let Some(first) = matches.next() else {
        return Ok(None);
    };
    let rest: Vec<R> = matches.collect();
    if rest.is_empty() {
        return Ok(Some(first));
    }
    Err(InstanceError::Ambiguous {
        reference: reference.to_string(),
        matches: std::iter::once(&first)
            .chain(&rest)
            .map(|r| format!("{} on {}", r.borrow().id, r.borrow().host))
            .collect(),
    })
}

/// The record among `records` that `reference` names, by [`find_by`]'s rules.
pub fn find_in<'a>(
    records: &'a [InstanceRecord],
    reference: &str,
) -> Result<Option<&'a InstanceRecord>, InstanceError> {
    find_by(
        reference,
        |id| records.iter().find(|r| r.id == id),
        |name| records.iter().find(|r| r.name == name),
        |_| records.iter(),
    )
}

/// The record of `project` that `reference` names, as [`find_in`].
pub fn find(
    store: &dyn Store,
    project: &str,
    reference: &str,
) -> Result<Option<InstanceRecord>, InstanceError> {
    let records = list(store, Some(project))?;
    Ok(find_in(&records, reference)?.cloned())
}

/// What a [`resync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resynced {
    /// Keys written (new or changed).
    pub put: Vec<String>,
    /// Keys deleted (the host's records of instances it no longer has).
    pub deleted: Vec<String>,
}

/// Makes the pool's records of `host` what `local` (its instances now) says: writes the
/// records that are missing or differ, and deletes the host's records of instances not
/// in `local`. Records of other hosts are left alone, and so are instances of `local`
/// moved to another host (old copies about to be fenced).
pub fn resync(
    store: &dyn Store,
    host: &str,
    local: &[InstanceRecord],
) -> Result<Resynced, InstanceError> {
    for r in local {
        check(r)?;
        if r.host != host {
            return Err(InstanceError::Invalid {
                project: r.project.clone(),
                id: r.id.clone(),
                reason: "a host resyncs its own records only",
            });
        }
    }
    let stored: HashMap<String, InstanceRecord> = list(store, None)?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    let mut ops = Vec::new();
    let mut done = Resynced::default();
    let mut kept = std::collections::HashSet::new();
    for r in local {
        let k = r.key();
        kept.insert(k.clone());
        if stored.get(&k) != Some(r) && !moved_away(store, host, &r.project, &r.id)? {
            ops.push(put_op(r));
            done.put.push(k);
        }
    }
    for (k, r) in &stored {
        if r.host == host && !kept.contains(k) {
            ops.push(Op::Delete {
                table: TABLE,
                key: k.clone(),
            });
            done.deleted.push(k.clone());
        }
    }
    done.deleted.sort();
    for chunk in ops.chunks(OPS_PER_TXN) {
        write_as(store, host, chunk.to_vec())?;
    }
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pier_store::MemStore;

    /// A store whose pool has hosts h1, h2 and h3.
    fn pool() -> MemStore {
        let s = MemStore::default();
        for h in ["h1", "h2", "h3"] {
            s.commit(vec![Op::Put {
                table: keys::TABLE,
                key: keys::host(h),
                value: b"{}".to_vec(),
            }])
            .unwrap();
        }
        s
    }

    fn records(s: &MemStore) -> usize {
        list(s, None).unwrap().len()
    }

    /// A running container's record, as the tests of this crate make them.
    pub(crate) fn rec(project: &str, id: &str, name: &str, host: &str) -> InstanceRecord {
        InstanceRecord {
            project: project.into(),
            id: id.into(),
            name: name.into(),
            host: host.into(),
            kind: "container".into(),
            image: "bb".into(),
            command: "sleep 100".into(),
            state: "running".into(),
            status: "Up 1 second".into(),
            created: "2026-12-07T10:00:00Z".into(),
            started_at: Some("2026-12-07T10:00:01Z".into()),
            finished_at: None,
            exit_code: None,
            ports: vec![RecordPort {
                proto: "tcp".into(),
                host_ip: String::new(),
                host_port: 8080,
                container_port: 80,
            }],
            labels: [("app".to_string(), "web".to_string())].into(),
        }
    }

    #[test]
    fn records_are_written_listed_by_project_and_deleted() {
        let s = pool();
        let a = rec("default", "aaa111", "web", "h1");
        let b = rec("default", "bbb222", "db", "h2");
        let c = rec("team", "ccc333", "web", "h2");
        for r in [&a, &b, &c] {
            put(&s, r).unwrap();
        }
        assert!(s.get(TABLE, "instances/default/aaa111").unwrap().is_some());
        assert_eq!(
            list(&s, Some("default")).unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(list(&s, Some("team")).unwrap(), vec![c.clone()]);
        assert_eq!(list(&s, None).unwrap().len(), 3);
        // A project whose name starts another's is not mixed in.
        put(&s, &rec("default2", "ddd444", "x", "h1")).unwrap();
        assert_eq!(list(&s, Some("default")).unwrap().len(), 2);
        delete(&s, "h2", "default", "bbb222").unwrap();
        delete(&s, "h2", "default", "bbb222").unwrap();
        assert_eq!(list(&s, Some("default")).unwrap(), vec![a.clone()]);
        // The instance moved to h3, whose record it is now: h1's delete (its fenced old
        // copy removed) leaves it.
        let moved = InstanceRecord {
            host: "h3".into(),
            ..a.clone()
        };
        put(&s, &moved).unwrap();
        delete(&s, "h1", "default", "aaa111").unwrap();
        assert_eq!(list(&s, Some("default")).unwrap(), vec![moved.clone()]);
        // Nor do h1's writes of its old copy replace it, once the assignment says h3.
        let mut assignment = crate::scheduler::InstanceRequest {
            project: "default".into(),
            id: "aaa111".into(),
            name: "web".into(),
            ..Default::default()
        }
        .assignment("h3");
        assignment.moved_from = Some("h1".into());
        s.commit(vec![Op::Put {
            table: TABLE,
            key: keys::assignment("default/aaa111"),
            value: serde_json::to_vec(&assignment).unwrap(),
        }])
        .unwrap();
        put(&s, &a).unwrap();
        resync(&s, "h1", std::slice::from_ref(&a)).unwrap();
        assert_eq!(list(&s, Some("default")).unwrap(), vec![moved]);
    }

    #[test]
    fn bad_records_are_refused_and_unreadable_ones_left_out() {
        let s = pool();
        for r in [
            rec("", "a", "n", "h1"),
            rec("p/q", "a", "n", "h1"),
            rec("p", "a/b", "n", "h1"),
            rec("p", "a", "n", ""),
        ] {
            assert!(matches!(put(&s, &r), Err(InstanceError::Invalid { .. })));
        }
        s.commit(vec![Op::Put {
            table: TABLE,
            key: key("p", "junk"),
            value: b"{not json".to_vec(),
        }])
        .unwrap();
        put(&s, &rec("p", "good", "n", "h1")).unwrap();
        let l = list(&s, Some("p")).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, "good");
        // Fields of a newer member are read past.
        let mut v = serde_json::to_value(rec("p", "newer", "m", "h2")).unwrap();
        v["zone"] = "a".into();
        s.commit(vec![Op::Put {
            table: TABLE,
            key: key("p", "newer"),
            value: serde_json::to_vec(&v).unwrap(),
        }])
        .unwrap();
        assert_eq!(list(&s, Some("p")).unwrap().len(), 2);
    }

    #[test]
    fn lookup_takes_an_id_then_a_name_then_a_unique_prefix() {
        let s = pool();
        put(&s, &rec("default", "abc123", "web", "h1")).unwrap();
        put(&s, &rec("default", "abd456", "db", "h2")).unwrap();
        // A container named like another's ID: the ID wins.
        put(&s, &rec("default", "fff999", "abd456", "h2")).unwrap();
        put(&s, &rec("team", "abe789", "api", "h3")).unwrap();
        let host = |r: &str| find(&s, "default", r).unwrap().map(|r| r.id);
        assert_eq!(host("abc123").as_deref(), Some("abc123"));
        assert_eq!(host("abd456").as_deref(), Some("abd456"));
        assert_eq!(host("web").as_deref(), Some("abc123"));
        assert_eq!(host("/db").as_deref(), Some("abd456"));
        assert_eq!(host("abc").as_deref(), Some("abc123"));
        assert_eq!(host("ff").as_deref(), Some("fff999"));
        assert_eq!(host("zzz"), None);
        assert_eq!(host(""), None);
        // Another project's are not seen.
        assert_eq!(host("api"), None);
        assert_eq!(host("abe"), None);
        let e = find(&s, "default", "ab").unwrap_err();
        assert!(matches!(&e, InstanceError::Ambiguous { matches, .. } if matches.len() == 2));
        let msg = e.to_string();
        assert!(
            msg.contains("abc123 on h1") && msg.contains("abd456 on h2"),
            "{msg}"
        );
        assert!(msg.contains("give more of it"), "{msg}");
    }

    #[test]
    fn resync_writes_what_changed_and_deletes_the_hosts_stale_records_only() {
        let s = pool();
        let kept = rec("default", "k1", "kept", "h1");
        let stale = rec("default", "s1", "stale", "h1");
        let other = rec("default", "o1", "other", "h2");
        for r in [&kept, &stale, &other] {
            put(&s, r).unwrap();
        }
        let mut changed = kept.clone();
        changed.state = "exited".into();
        changed.exit_code = Some(3);
        let new = rec("team", "n1", "new", "h1");
        let done = resync(&s, "h1", &[changed.clone(), new.clone()]).unwrap();
        assert_eq!(done.put, vec![changed.key(), new.key()]);
        assert_eq!(done.deleted, vec![stale.key()]);
        let mut all = list(&s, None).unwrap();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(all, vec![changed.clone(), new.clone(), other]);
        // Nothing changed: nothing written, the store's revision stays.
        let before = s.range(TABLE, "").unwrap().revision;
        let done = resync(&s, "h1", &[changed, new]).unwrap();
        assert_eq!(done, Resynced::default());
        assert_eq!(s.range(TABLE, "").unwrap().revision, before);
        // A host with nothing left: all of its records go.
        let done = resync(&s, "h1", &[]).unwrap();
        assert_eq!(done.deleted.len(), 2);
        assert_eq!(list(&s, None).unwrap().len(), 1);
        // It writes its own records only.
        let e = resync(&s, "h1", &[rec("default", "x", "x", "h2")]).unwrap_err();
        assert!(matches!(e, InstanceError::Invalid { .. }), "{e}");
    }

    #[test]
    fn a_removed_host_writes_no_records_and_its_removal_takes_them() {
        let s = pool();
        put(&s, &rec("default", "a1", "a", "h1")).unwrap();
        put(&s, &rec("default", "b1", "b", "h2")).unwrap();
        put(&s, &rec("team", "b2", "c", "h2")).unwrap();
        assert_eq!(forget_host(&s, "h2").unwrap(), 2);
        assert_eq!(records(&s), 1);
        s.commit(vec![Op::Delete {
            table: keys::TABLE,
            key: keys::host("h2"),
        }])
        .unwrap();
        // Its daemon, still running, writes nothing more.
        let e = put(&s, &rec("default", "b3", "d", "h2")).unwrap_err();
        assert!(matches!(&e, InstanceError::Removed(h) if h == "h2"), "{e}");
        let e = resync(&s, "h2", &[rec("default", "b1", "b", "h2")]).unwrap_err();
        assert!(matches!(e, InstanceError::Removed(_)), "{e}");
        assert!(matches!(
            delete(&s, "h2", "default", "b1"),
            Err(InstanceError::Removed(_))
        ));
        assert_eq!(records(&s), 1);
    }

    #[test]
    fn resync_splits_many_changes_into_transactions_etcd_takes() {
        let s = pool();
        let many: Vec<InstanceRecord> = (0..150)
            .map(|i| rec("default", &format!("id{i:03}"), &format!("n{i}"), "h1"))
            .collect();
        let before = s.range(TABLE, "").unwrap().revision;
        let done = resync(&s, "h1", &many).unwrap();
        assert_eq!(done.put.len(), 150);
        // 150 ops in transactions of at most 64: three revisions.
        assert_eq!(s.range(TABLE, "").unwrap().revision, before + 3);
        assert_eq!(list(&s, None).unwrap().len(), 150);
    }
}
