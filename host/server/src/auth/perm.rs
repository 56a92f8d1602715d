//! Key-range permissions as intervals, after etcd's range permission cache:
//! a user's roles merge into one set of READ intervals and one of WRITE
//! intervals, and a request is allowed when the union of the matching set
//! covers every key it names.
//!
//! A permission or request on one key (`range_end` empty) is the interval
//! `[key, key\0)`; `range_end` "\0" means "to the end of the keyspace".

use std::cmp::Ordering;

use crate::proto::authpb::{permission::Type as PermType, Permission, Role};

/// The access a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    Read,
    Write,
}

/// The exclusive end of an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Key(Vec<u8>),
    Unbounded,
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for End {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
            (End::Unbounded, End::Key(_)) => Ordering::Greater,
            (End::Key(_), End::Unbounded) => Ordering::Less,
            (End::Key(a), End::Key(b)) => a.cmp(b),
        }
    }
}

/// A half-open key interval `[begin, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    begin: Vec<u8>,
    end: End,
}

impl Interval {
    /// The keys a `key`/`range_end` pair names, as etcd reads them.
    pub fn of(key: &[u8], range_end: &[u8]) -> Interval {
        let end = match range_end {
            [] => End::Key([key, &[0]].concat()),
            [0] => End::Unbounded,
            end => End::Key(end.to_vec()),
        };
        Interval { begin: key.to_vec(), end }
    }

    fn is_empty(&self) -> bool {
        match &self.end {
            End::Unbounded => false,
            End::Key(end) => end.as_slice() <= self.begin.as_slice(),
        }
    }
}

/// The intervals a set of roles grants, by kind of access.
#[derive(Clone, Debug, Default)]
pub struct MergedPerms {
    read: Vec<Interval>,
    write: Vec<Interval>,
}

impl MergedPerms {
    /// Merges the permissions of `roles`.
    pub fn of<'a>(roles: impl IntoIterator<Item = &'a Role>) -> MergedPerms {
        let mut merged = MergedPerms::default();
        for perm in roles.into_iter().flat_map(|r| &r.key_permission) {
            merged.add(perm);
        }
        merged.read.sort_by(|a, b| a.begin.cmp(&b.begin));
        merged.write.sort_by(|a, b| a.begin.cmp(&b.begin));
        merged
    }

    fn add(&mut self, perm: &Permission) {
        let interval = Interval::of(&perm.key, &perm.range_end);
        match PermType::try_from(perm.perm_type).unwrap_or(PermType::Read) {
            PermType::Read => self.read.push(interval),
            PermType::Write => self.write.push(interval),
            PermType::Readwrite => {
                self.read.push(interval.clone());
                self.write.push(interval);
            }
        }
    }

    /// Whether the granted intervals of kind `perm` together cover every key
    /// of `wanted`.
    pub fn covers(&self, wanted: &Interval, perm: Perm) -> bool {
        if wanted.is_empty() {
            // etcd refuses a range whose end is not after its start too.
            return false;
        }
        let granted = match perm {
            Perm::Read => &self.read,
            Perm::Write => &self.write,
        };
        // Sorted by start: sweep, extending the covered prefix of `wanted`.
        let mut covered_to = End::Key(wanted.begin.clone());
        for interval in granted {
            if End::Key(interval.begin.clone()) > covered_to {
                break;
            }
            if interval.end > covered_to {
                covered_to = interval.end.clone();
                if covered_to >= wanted.end {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(perms: &[(PermType, &str, &str)]) -> Role {
        Role {
            name: b"r".to_vec(),
            key_permission: perms
                .iter()
                .map(|(t, k, e)| Permission {
                    perm_type: *t as i32,
                    key: k.as_bytes().to_vec(),
                    range_end: e.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    fn allows(perms: &MergedPerms, key: &str, end: &str, perm: Perm) -> bool {
        perms.covers(&Interval::of(key.as_bytes(), end.as_bytes()), perm)
    }

    #[test]
    fn a_single_key_permission_covers_only_that_key() {
        let perms = MergedPerms::of([&role(&[(PermType::Read, "foo", "")])]);
        assert!(allows(&perms, "foo", "", Perm::Read));
        assert!(!allows(&perms, "foo", "", Perm::Write));
        assert!(!allows(&perms, "fo", "", Perm::Read));
        assert!(!allows(&perms, "foo0", "", Perm::Read));
        assert!(allows(&perms, "foo", "foo\0", Perm::Read));
        assert!(!allows(&perms, "foo", "fop", Perm::Read));
    }

    #[test]
    fn a_prefix_permission_covers_keys_and_ranges_inside_it() {
        // etcdctl role grant-permission --prefix r readwrite /a/ -> [/a/, /a0)
        let perms = MergedPerms::of([&role(&[(PermType::Readwrite, "/a/", "/a0")])]);
        for perm in [Perm::Read, Perm::Write] {
            assert!(allows(&perms, "/a/", "", perm));
            assert!(allows(&perms, "/a/x/y", "", perm));
            assert!(allows(&perms, "/a/", "/a0", perm));
            assert!(allows(&perms, "/a/b", "/a/c", perm));
            assert!(!allows(&perms, "/a", "", perm));
            assert!(!allows(&perms, "/a0", "", perm));
            assert!(!allows(&perms, "/a/", "/a1", perm));
            assert!(!allows(&perms, "/a/", "\0", perm));
        }
    }

    #[test]
    fn to_the_end_of_the_keyspace() {
        let perms = MergedPerms::of([&role(&[(PermType::Write, "m", "\0")])]);
        assert!(allows(&perms, "m", "\0", Perm::Write));
        assert!(allows(&perms, "zzzz", "", Perm::Write));
        assert!(allows(&perms, "x", "\0", Perm::Write));
        assert!(!allows(&perms, "l", "\0", Perm::Write));
        assert!(!allows(&perms, "a", "", Perm::Write));
        assert!(!allows(&perms, "m", "\0", Perm::Read));
    }

    #[test]
    fn adjacent_and_overlapping_permissions_of_several_roles_join() {
        let a = role(&[(PermType::Read, "a", "c")]);
        let b = role(&[(PermType::Readwrite, "c", "e"), (PermType::Read, "d", "g")]);
        let perms = MergedPerms::of([&a, &b]);
        assert!(allows(&perms, "a", "g", Perm::Read));
        assert!(allows(&perms, "b", "f", Perm::Read));
        assert!(!allows(&perms, "a", "h", Perm::Read));
        assert!(!allows(&perms, "a", "d", Perm::Write));
        assert!(allows(&perms, "c", "e", Perm::Write));
        // A gap between two grants is not covered.
        let gap = MergedPerms::of([&role(&[(PermType::Read, "a", "b"), (PermType::Read, "c", "d")])]);
        assert!(!allows(&gap, "a", "d", Perm::Read));
        assert!(allows(&gap, "c", "", Perm::Read));
        assert!(!allows(&gap, "b", "", Perm::Read));
    }

    #[test]
    fn no_permissions_and_empty_ranges_allow_nothing() {
        let none = MergedPerms::of(std::iter::empty::<&Role>());
        assert!(!allows(&none, "a", "", Perm::Read));
        let all = MergedPerms::of([&role(&[(PermType::Readwrite, "\0", "\0")])]);
        assert!(allows(&all, "\0", "\0", Perm::Read));
        assert!(!allows(&all, "b", "a", Perm::Read));
    }
}
