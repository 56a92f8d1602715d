//! How much memory RocksDB may use. Its block cache and memtables are sized
//! from the memory this process may have, which under a cgroup limit (a
//! container, a Kubernetes memory limit, systemd's MemoryMax=) is far less
//! than the machine's RAM: sized from RAM alone, a member with more data
//! than its limit would be killed by the kernel instead of reading from disk.

use std::path::Path;

/// Upper bounds: more cache than this brings little for a store whose hot
/// set is the latest revision of each key.
const MAX_BLOCK_CACHE: u64 = 512 << 20;
const MAX_MEMTABLES: u64 = 256 << 20;
/// Lower bounds, below which RocksDB flushes and reads too often to serve.
const MIN_BLOCK_CACHE: u64 = 32 << 20;
const MIN_MEMTABLES: u64 = 32 << 20;

/// The memory RocksDB is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Blocks read from table files, index and filter blocks included.
    pub block_cache: u64,
    /// Every column family's memtables together; charged to the cache, so
    /// RocksDB's total stays near `block_cache + memtables`.
    pub memtables: u64,
}

impl MemoryBudget {
    /// An eighth of the available memory for each, within the bounds above,
    /// which leaves most of it to the page cache, requests and watches.
    pub fn for_available(available: u64) -> MemoryBudget {
        MemoryBudget {
            block_cache: (available / 8).clamp(MIN_BLOCK_CACHE, MAX_BLOCK_CACHE),
            memtables: (available / 8).clamp(MIN_MEMTABLES, MAX_MEMTABLES),
        }
    }

    /// The budget for this process: from the smaller of its cgroup memory
    /// limit and the machine's RAM.
    pub fn detect() -> (MemoryBudget, Option<u64>) {
        let available = [cgroup_limit(Path::new("/")), mem_total()].into_iter().flatten().min();
        (MemoryBudget::for_available(available.unwrap_or(u64::MAX)), available)
    }
}

/// The machine's RAM, from /proc/meminfo.
fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The tightest memory limit of this process's cgroup and its ancestors,
/// cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`); `root` is where
/// /proc and /sys are (`/` but in tests).
fn cgroup_limit(root: &Path) -> Option<u64> {
    let membership = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mut limits = Vec::new();
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (mount, file) = if id == "0" && controllers.is_empty() {
            (root.join("sys/fs/cgroup"), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("sys/fs/cgroup/memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        // Inside a container the hierarchy is often mounted at the
        // container's own cgroup, so a path that does not exist there is
        // walked up to the mount's root, whose limit is the container's.
        let mut dir = Some(Path::new(path.trim_start_matches('/')));
        while let Some(d) = dir {
            let limit = std::fs::read_to_string(mount.join(d).join(file)).ok();
            if let Some(bytes) = limit.and_then(|l| l.trim().parse::<u64>().ok()) {
                limits.push(bytes);
            }
            dir = d.parent();
        }
    }
    limits.into_iter().min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    }

    #[test]
    fn a_cgroup_v2_limit_is_found_on_the_process_cgroup_or_an_ancestor() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        write(root, "proc/self/cgroup", "0::/system.slice/cairn.service\n");
        write(root, "sys/fs/cgroup/system.slice/cairn.service/memory.max", "max\n");
        assert_eq!(cgroup_limit(root), None, "no limit anywhere");
        write(root, "sys/fs/cgroup/system.slice/memory.max", "2147483648\n");
        assert_eq!(cgroup_limit(root), Some(2 << 30), "the parent's limit binds");
        write(root, "sys/fs/cgroup/system.slice/cairn.service/memory.max", "1073741824\n");
        assert_eq!(cgroup_limit(root), Some(1 << 30));
    }

    #[test]
    fn a_cgroup_v1_limit_is_found_even_when_the_path_is_the_hosts() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        write(root, "proc/self/cgroup", "7:cpu,cpuacct:/docker/abc\n5:memory:/docker/abc\n");
        // A container sees its own cgroup as the mount's root.
        write(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n");
        assert_eq!(cgroup_limit(root), Some(1 << 30));
        write(root, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "536870912\n");
        assert_eq!(cgroup_limit(root), Some(512 << 20));
    }

    #[test]
    fn the_budget_is_an_eighth_each_within_bounds() {
        assert_eq!(
            MemoryBudget::for_available(1 << 30),
            MemoryBudget {
                block_cache: 128 << 20,
                memtables: 128 << 20
            }
        );
        let big = MemoryBudget::for_available(64 << 30);
        assert_eq!((big.block_cache, big.memtables), (MAX_BLOCK_CACHE, MAX_MEMTABLES));
        let small = MemoryBudget::for_available(64 << 20);
        assert_eq!((small.block_cache, small.memtables), (MIN_BLOCK_CACHE, MIN_MEMTABLES));
        assert_eq!(MemoryBudget::for_available(u64::MAX).block_cache, MAX_BLOCK_CACHE);
    }
}
