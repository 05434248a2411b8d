//! An in-memory [`Store`](crate::Store) for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Op, Store, StoreError, Table};

/// Keeps everything in a map; lost when dropped.
#[derive(Debug, Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<(Table, String), Vec<u8>>>,
}

impl Store for MemStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .data
            .lock()
            .unwrap()
            .get(&(table, key.to_string()))
            .cloned())
    }

    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let data = self.data.lock().unwrap();
        Ok(data
            .range((table, prefix.to_string())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut data = self.data.lock().unwrap();
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    data.insert((table, key), value);
                }
                Op::Delete { table, key } => {
                    data.remove(&(table, key));
                }
            }
        }
        Ok(())
    }
}
