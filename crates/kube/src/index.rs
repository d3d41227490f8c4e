//! Secondary indexes over a watch cache: the objects of one kind grouped by a key
//! (the cluster a Machine belongs to, the cluster of a NodePool), so that a
//! reconcile finds its own objects in time proportional to their number, not to
//! the size of the fleet.
//!
//! An index is kept by the watch that fills the cache ([`crate::Shared`]), before
//! the change is fanned out: a reconcile woken by a change finds that change in
//! the index. It holds references only; the objects are read from the cache, so
//! an index never hands out an older copy than the cache holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

/// Something kept up to date by a watch, change by change.
pub trait Observer<K: Resource<DynamicType = ()>>: Send + Sync {
    /// `reference` is now `now`, or gone when `None`.
    fn changed(&self, reference: ObjectRef<K>, now: Option<&K>);
    /// After a (re)list: `all` is everything there is.
    fn reset(&self, all: &[Arc<K>]);
}

/// The group an object belongs to, or `None` when it belongs to none.
pub type KeyFn<K> = fn(&K) -> Option<String>;

/// Objects of kind `K` grouped by a key. Clones share the same index.
pub struct Index<K: Resource<DynamicType = ()>> {
    key: KeyFn<K>,
    groups: Arc<RwLock<Groups<K>>>,
}

impl<K: Resource<DynamicType = ()>> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            key: self.key,
            groups: self.groups.clone(),
        }
    }
}

struct Groups<K: Resource<DynamicType = ()>> {
    members: HashMap<String, HashSet<ObjectRef<K>>>,
    group_of: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource<DynamicType = ()>> Default for Groups<K> {
    fn default() -> Self {
        Self {
            members: HashMap::new(),
            group_of: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Groups<K> {
    fn remove(&mut self, reference: &ObjectRef<K>) {
        if let Some(old) = self.group_of.remove(reference) {
            if let Some(set) = self.members.get_mut(&old) {
                set.remove(reference);
                if set.is_empty() {
                    self.members.remove(&old);
                }
            }
        }
    }

    fn insert(&mut self, reference: ObjectRef<K>, group: String) {
        self.members
            .entry(group.clone())
            .or_default()
            .insert(reference.clone());
        self.group_of.insert(reference, group);
    }
}

impl<K: Resource<DynamicType = ()>> Index<K> {
    /// An empty index that groups objects by `key`.
    pub fn new(key: KeyFn<K>) -> Self {
        Self {
            key,
            groups: Arc::default(),
        }
    }

    /// An index over `objects` as they are (for caches filled without a watch,
    /// such as tests').
    pub fn of<'a>(key: KeyFn<K>, objects: impl IntoIterator<Item = &'a K>) -> Self
    where
        K: 'a + Send + Sync,
    {
        let index = Self::new(key);
        for obj in objects {
            index.changed(ObjectRef::from_obj(obj), Some(obj));
        }
        index
    }

    /// The references in `group`.
    pub fn refs(&self, group: &str) -> Vec<ObjectRef<K>> {
        self.read()
            .members
            .get(group)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects of `group` as `store` holds them now.
    pub fn get(&self, group: &str, store: &Store<K>) -> Vec<Arc<K>>
    where
        K: Clone,
    {
        self.refs(group)
            .iter()
            .filter_map(|r| store.get(r))
            .collect()
    }

    /// How many groups there are (for tests and metrics).
    pub fn group_count(&self) -> usize {
        self.read().members.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Groups<K>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Groups<K>> {
        self.groups.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Resource<DynamicType = ()> + Send + Sync> Observer<K> for Index<K> {
    fn changed(&self, reference: ObjectRef<K>, now: Option<&K>) {
        let group = now.and_then(self.key);
        let mut groups = self.write();
        if groups.group_of.get(&reference) == group.as_ref() {
            return;
        }
        groups.remove(&reference);
        if let Some(group) = group {
            groups.insert(reference, group);
        }
    }

    fn reset(&self, all: &[Arc<K>]) {
        let mut fresh = Groups::default();
        for obj in all {
            if let Some(group) = (self.key)(obj) {
                fresh.insert(ObjectRef::from_obj(obj.as_ref()), group);
            }
        }
        *self.write() = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, group: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: group.map(|g| [("group".to_owned(), g.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn by_label(c: &ConfigMap) -> Option<String> {
        c.metadata.labels.as_ref()?.get("group").cloned()
    }

    fn names(index: &Index<ConfigMap>, group: &str) -> Vec<String> {
        let mut names: Vec<String> = index.refs(group).into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn objects_move_between_groups_and_leave_on_delete() {
        let (a, b, c) = (cm("a", Some("x")), cm("b", Some("x")), cm("c", None));
        let index = Index::of(by_label, [&a, &b, &c]);
        assert_eq!(names(&index, "x"), ["a", "b"]);
        assert_eq!(
            index.group_count(),
            1,
            "an object without a key is in no group"
        );

        let moved = cm("b", Some("y"));
        index.changed(ObjectRef::from_obj(&moved), Some(&moved));
        assert_eq!(names(&index, "x"), ["a"]);
        assert_eq!(names(&index, "y"), ["b"]);

        index.changed(ObjectRef::from_obj(&a), None);
        assert!(names(&index, "x").is_empty());
        assert_eq!(index.group_count(), 1, "an emptied group is dropped");
    }

    #[test]
    fn a_relist_replaces_everything() {
        let (a, b) = (cm("a", Some("x")), cm("b", Some("y")));
        let index = Index::of(by_label, [&a, &b]);
        index.reset(&[Arc::new(cm("c", Some("x")))]);
        assert_eq!(names(&index, "x"), ["c"]);
        assert!(names(&index, "y").is_empty());
    }

    #[test]
    fn get_reads_the_cache_and_skips_what_it_no_longer_holds() {
        let (a, b) = (cm("a", Some("x")), cm("b", Some("x")));
        let (store, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(a.clone()));
        let index = Index::of(by_label, [&a, &b]);
        let got = index.get("x", &store);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].metadata.name.as_deref(), Some("a"));
    }
}
