//! A member's copy of the pool's instance records ([`crate::instances`]), decoded once and
//! kept current by a watch, so that a listing or a lookup of the pool's instances reads
//! memory instead of ranging over (and decoding) every record in the store.
//!
//! [`InstanceView::follow`] reads `instances/` at the store's revision R and watches the
//! pool's whole table from R + 1; [`InstanceView::apply`] takes each event in. The watch
//! covers the whole table, not only `instances/`, so that the view's
//! [`revision`](InstanceView::revision) follows the store's: every change to the pool is
//! an event of that table, so a reader that asked the store for its revision (a cheap
//! read) knows the view is as fresh as a range read would have been once the view reached
//! it. Events of other keys only move the revision. On a watch that ends (compaction, a
//! watcher that fell behind) the owner of the view reads it again; a view is never
//! repaired in place.
//!
//! Records are kept as `Arc`s by key: a listing takes the ones it needs without copying
//! or decoding them again. A record that does not read is left out (and logged), as
//! [`crate::instances::list`] does.

use std::collections::BTreeMap;
use std::sync::Arc;

use pier_store::{Event, Revision, Store, StoreError, Watcher};

use crate::instances::{self, InstanceError, InstanceRecord, INSTANCES, TABLE};

/// The pool's instance records as of [`InstanceView::revision`].
#[derive(Debug, Default, Clone)]
pub struct InstanceView {
    revision: Revision,
    /// By key (`instances/PROJECT/ID`), so a project's records are one range, in the
    /// order [`crate::instances::list`] gives them.
    records: BTreeMap<String, Arc<InstanceRecord>>,
}

fn decode(key: &str, value: &[u8]) -> Option<InstanceRecord> {
    match serde_json::from_slice::<InstanceRecord>(value) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "unreadable instance record left out");
            None
        }
    }
}

fn project_prefix(project: &str) -> String {
    format!("{INSTANCES}{project}/")
}

impl InstanceView {
    /// Every record in the store, and the store revision they were read at.
    pub fn read(store: &dyn Store) -> Result<InstanceView, StoreError> {
        let listing = store.range(TABLE, INSTANCES)?;
        let records = listing
            .kvs
            .into_iter()
            .filter_map(|(k, kv)| {
                let r = decode(&k, &kv.value)?;
                Some((k, Arc::new(r)))
            })
            .collect();
        Ok(InstanceView {
            revision: listing.revision,
            records,
        })
    }

    /// The view as it is now, and the watch of the pool's table from just after it.
    pub fn follow(store: &dyn Store) -> Result<(InstanceView, Watcher), StoreError> {
        let view = InstanceView::read(store)?;
        let watcher = store.watch(TABLE, "", view.revision + 1)?;
        Ok((view, watcher))
    }

    /// Takes in one event of the watch: a record written or deleted; any event of the
    /// table moves the revision. Whether the records changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        if event.table() != TABLE {
            return false;
        }
        self.revision = self.revision.max(event.revision());
        let key = event.key();
        if !key.starts_with(INSTANCES) {
            return false;
        }
        match event {
            Event::Put { kv, .. } => match decode(key, &kv.value) {
                Some(r) => {
                    self.records.insert(key.to_string(), Arc::new(r));
                    true
                }
                // What it was is no longer what the store holds.
                None => self.records.remove(key).is_some(),
            },
            Event::Delete { .. } => self.records.remove(key).is_some(),
        }
    }

    /// The store revision the view is current at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record at `key` (`instances/PROJECT/ID`).
    pub fn get(&self, key: &str) -> Option<&Arc<InstanceRecord>> {
        self.records.get(key)
    }

    /// The records of `project`, in key order.
    pub fn project<'a>(
        &'a self,
        project: &str,
    ) -> impl Iterator<Item = &'a Arc<InstanceRecord>> + 'a {
        self.under(project_prefix(project))
    }

    /// Every record, in key order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<InstanceRecord>> {
        self.records.values()
    }

    /// The records whose key starts with `prefix`, in key order.
    fn under(&self, prefix: String) -> impl Iterator<Item = &Arc<InstanceRecord>> + '_ {
        self.records
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r)
    }

    /// The record of `project` that `reference` names, by
    /// [`crate::instances::find_by`]'s rules, without scanning for the ID or the prefix:
    /// records live under their own ID's key ([`crate::instances::put`] refuses others).
    pub fn find(
        &self,
        project: &str,
        reference: &str,
    ) -> Result<Option<Arc<InstanceRecord>>, InstanceError> {
        instances::find_by(
            reference,
            |id| self.get(&instances::key(project, id)).cloned(),
            |name| self.project(project).find(|r| r.name == name).cloned(),
            |prefix| {
                self.under(format!("{}{prefix}", project_prefix(project)))
                    .cloned()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instances::{find_in, list, put};
    use crate::scheduler::keys;
    use pier_store::{MemStore, Op, HISTORY_EVENTS};

    fn pool() -> MemStore {
        let s = MemStore::default();
        for h in ["h1", "h2"] {
            s.commit(vec![Op::Put {
                table: keys::TABLE,
                key: keys::host(h),
                value: b"{}".to_vec(),
            }])
            .unwrap();
        }
        s
    }

    /// [`instances::tests::rec`], not started yet and labelled with its name.
    fn rec(project: &str, id: &str, name: &str, host: &str) -> InstanceRecord {
        InstanceRecord {
            started_at: None,
            labels: [("app".to_string(), name.to_string())].into(),
            ..instances::tests::rec(project, id, name, host)
        }
    }

    /// Applies every event the watch has now.
    fn drain(view: &mut InstanceView, w: &mut Watcher) {
        while let Some(e) = w.try_next() {
            view.apply(&e.unwrap());
        }
    }

    /// The view's records, as owned values, in key order.
    fn owned(view: &InstanceView) -> Vec<InstanceRecord> {
        view.all().map(|r| (**r).clone()).collect()
    }

    #[test]
    fn a_followed_view_equals_a_fresh_read_after_puts_and_deletes() {
        let s = pool();
        put(&s, &rec("default", "aaa1", "web", "h1")).unwrap();
        let (mut view, mut w) = InstanceView::follow(&s).unwrap();
        assert_eq!(owned(&view), list(&s, None).unwrap());
        put(&s, &rec("default", "bbb2", "db", "h2")).unwrap();
        put(&s, &rec("team", "ccc3", "api", "h2")).unwrap();
        let mut changed = rec("default", "aaa1", "web", "h1");
        changed.state = "exited".into();
        put(&s, &changed).unwrap();
        crate::instances::delete(&s, "h2", "default", "bbb2").unwrap();
        // An unreadable record replaces a good one: left out.
        put(&s, &rec("team", "ddd4", "x", "h2")).unwrap();
        s.commit(vec![Op::Put {
            table: TABLE,
            key: instances::key("team", "ddd4"),
            value: b"{not json".to_vec(),
        }])
        .unwrap();
        // Other keys of the table move the revision only.
        s.commit(vec![Op::Put {
            table: keys::TABLE,
            key: keys::host("h3"),
            value: b"{}".to_vec(),
        }])
        .unwrap();
        drain(&mut view, &mut w);
        assert_eq!(owned(&view), list(&s, None).unwrap());
        assert_eq!(view.len(), 2);
        assert_eq!(view.revision(), s.revision().unwrap());
        assert_eq!(view.get("instances/default/aaa1").unwrap().state, "exited");
        let projects: Vec<&str> = view.project("team").map(|r| r.id.as_str()).collect();
        assert_eq!(projects, ["ccc3"]);
        assert_eq!(view.project("nobody").count(), 0);
        // Deleting a project's last records empties it.
        crate::instances::forget_host(&s, "h2").unwrap();
        drain(&mut view, &mut w);
        assert_eq!(view.project("team").count(), 0);
        assert_eq!(owned(&view), list(&s, None).unwrap());
    }

    #[test]
    fn after_a_compaction_the_view_is_read_again_and_whole() {
        let s = pool();
        put(&s, &rec("default", "aaa1", "web", "h1")).unwrap();
        let (mut view, w) = InstanceView::follow(&s).unwrap();
        drop(w);
        // More changes than the store keeps for a watch from the view's revision.
        for i in 0..HISTORY_EVENTS + 10 {
            put(&s, &rec("default", &format!("n{:05}", i % 50), "n", "h2")).unwrap();
        }
        crate::instances::delete(&s, "h1", "default", "aaa1").unwrap();
        let e = s.watch(TABLE, "", view.revision() + 1).unwrap_err();
        assert!(matches!(e, StoreError::Compacted { .. }), "{e}");
        // What the member does then: read again, follow from there.
        let (again, mut w) = InstanceView::follow(&s).unwrap();
        view = again;
        assert_eq!(owned(&view), list(&s, None).unwrap());
        assert_eq!(view.len(), 50);
        put(&s, &rec("default", "zzz9", "late", "h1")).unwrap();
        drain(&mut view, &mut w);
        assert_eq!(owned(&view), list(&s, None).unwrap());
    }

    #[test]
    fn lookups_follow_the_rules_of_find_in() {
        let s = pool();
        for r in [
            rec("default", "abc123", "web", "h1"),
            rec("default", "abd456", "db", "h2"),
            // Named like another's ID: the ID wins.
            rec("default", "fff999", "abd456", "h2"),
            // Two of one name (made before the pool): the first by key, as find_in.
            rec("default", "ggg111", "twin", "h1"),
            rec("default", "ggg222", "twin", "h2"),
            rec("team", "abe789", "api", "h1"),
        ] {
            put(&s, &r).unwrap();
        }
        let view = InstanceView::read(&s).unwrap();
        let records = list(&s, Some("default")).unwrap();
        for reference in [
            "abc123", "abd456", "web", "/db", "twin", "abc", "ab", "ff", "g", "ggg2", "zzz", "",
            "api", "abe", "abc123/x", "/",
        ] {
            let want = find_in(&records, reference)
                .map(|r| r.map(|r| r.id.clone()))
                .map_err(|e| e.to_string());
            let got = view
                .find("default", reference)
                .map(|r| r.map(|r| r.id.clone()))
                .map_err(|e| e.to_string());
            assert_eq!(got, want, "{reference:?}");
        }
        assert_eq!(
            view.find("team", "api").unwrap().map(|r| r.host.clone()),
            Some("h1".to_string())
        );
        let e = view.find("default", "ab").unwrap_err();
        assert!(e.to_string().contains("abc123 on h1"), "{e}");
    }
}
