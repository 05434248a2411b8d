//! The registry's events (`type=registry` on both APIs' event streams): a manifest pushed
//! (`push`) or deleted (`delete`), a tag set (`tag`) or removed (`untag`). They are told
//! by watching the registry's tables in the store, not by hooks in the registry, so every
//! writer is covered: the registry's API, `pier registry` management, config edits and
//! garbage collection. The registry serves the whole host; its events are the default
//! project's.

use std::sync::Arc;
use std::time::Duration;

use pier_api::containers::Event;
use pier_api::ProjectName;
use pier_store::{Revision, Store, Table};
use tokio::sync::broadcast;

use crate::EngineEvent;

/// The event of one change to a registry table, if it is one.
fn event_of(change: &pier_store::Event) -> Option<Event> {
    let (table, key, value, put) = match change {
        pier_store::Event::Put { table, key, kv } => (*table, key, Some(&kv.value), true),
        pier_store::Event::Delete { table, key, .. } => (*table, key, None, false),
    };
    let (action, id, attrs) = match table {
        Table::RegistryManifests => {
            let (repo, digest) = key.rsplit_once('@')?;
            (
                if put { "push" } else { "delete" },
                key.clone(),
                vec![("name", repo.to_string()), ("digest", digest.to_string())],
            )
        }
        Table::RegistryTags => {
            let (repo, tag) = key.rsplit_once(':')?;
            let mut attrs = vec![("name", repo.to_string()), ("tag", tag.to_string())];
            if let Some(digest) = value
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                .and_then(|v| v["digest"].as_str().map(str::to_string))
            {
                attrs.push(("digest", digest));
            }
            (if put { "tag" } else { "untag" }, key.clone(), attrs)
        }
        _ => return None,
    };
    Some(Event {
        time: pier_api::time::format_rfc3339_nanos(std::time::SystemTime::now()),
        kind: "registry".into(),
        action: action.into(),
        id,
        attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    })
}

/// Follows `table` from revision `from` and sends its events, until the store is gone.
async fn follow(
    store: Arc<dyn Store>,
    table: Table,
    mut from: Revision,
    events: broadcast::Sender<EngineEvent>,
) {
    loop {
        let mut w = match store.watch(table, "", from) {
            Ok(w) => w,
            Err(e) => {
                // Compacted or lagged: from now on (what fell between is not told).
                tracing::debug!(table = %table, error = %e, "registry events: watching again");
                from = store.revision().unwrap_or(0) + 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            match w.recv().await {
                Some(Ok(change)) => {
                    from = match &change {
                        pier_store::Event::Put { kv, .. } => kv.mod_revision + 1,
                        pier_store::Event::Delete { revision, .. } => revision + 1,
                    };
                    if let Some(event) = event_of(&change) {
                        let _ = events.send(EngineEvent {
                            project: ProjectName::default_project(),
                            event,
                        });
                    }
                }
                Some(Err(_)) => break,
                None => return,
            }
        }
    }
}

/// Starts following the registry's manifests and tags from revision `from`.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    from: Revision,
    events: broadcast::Sender<EngineEvent>,
) -> Vec<tokio::task::JoinHandle<()>> {
    [Table::RegistryManifests, Table::RegistryTags]
        .into_iter()
        .map(|t| tokio::spawn(follow(store.clone(), t, from, events.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::{MemStore, Op};

    #[tokio::test]
    async fn pushes_tags_and_deletes_become_registry_events() {
        let store: Arc<dyn Store> = Arc::new(MemStore::default());
        let (tx, mut rx) = broadcast::channel(16);
        let from = store.revision().unwrap() + 1;
        let tasks = spawn(store.clone(), from, tx);
        let put = |table, key: &str, value: &str| Op::Put {
            table,
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        store
            .commit(vec![
                put(Table::RegistryManifests, "team/app@sha256:ab", "{}"),
                put(
                    Table::RegistryTags,
                    "team/app:v1",
                    r#"{"digest":"sha256:ab","updated":""}"#,
                ),
                put(Table::Images, "default/x", "{}"),
            ])
            .unwrap();
        store
            .commit(vec![Op::Delete {
                table: Table::RegistryTags,
                key: "team/app:v1".into(),
            }])
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("an event")
                .unwrap();
            assert_eq!(e.event.kind, "registry");
            seen.push((e.event.action.clone(), e.event.attributes.clone()));
        }
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(seen[0].0, "push");
        assert_eq!(seen[0].1["name"], "team/app");
        assert_eq!(seen[0].1["digest"], "sha256:ab");
        assert_eq!(seen[1].0, "tag");
        assert_eq!(seen[1].1["tag"], "v1");
        assert_eq!(seen[1].1["digest"], "sha256:ab");
        assert_eq!(seen[2].0, "untag");
        // The image write is no registry event.
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err());
        for t in tasks {
            t.abort();
        }
    }
}
