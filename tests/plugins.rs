//! Wasm plugins on a 3-member cluster: installed through one member, every
//! member reaches the same decisions at the same log index; hostile plugins
//! fail the same way everywhere and never take a member down.

use std::path::Path;
use std::time::{Duration, Instant};

use harness::plugins::{
    admission_component, cairnctl, json_object_validator, plugin_wasm, redact_to_config_watch, trapping_watch, write_component, Admission,
};
use harness::{etcdctl, txn_input, Cluster};

/// Installs `file` as `name` through `ep`, bound to every key under
/// `prefix`; `extra` adds flags.
fn install(ep: &str, name: &str, file: &Path, hook: &str, prefix: &str, extra: &[&str]) -> harness::Output {
    install_bound(ep, name, file, hook, &["--prefix", prefix], extra)
}

/// Installs `file` as `name` through `ep`, bound to the keys the `bound`
/// flags name (`--prefix`, or `--key` with `--range-end`/`--from-key`).
fn install_bound(ep: &str, name: &str, file: &Path, hook: &str, bound: &[&str], extra: &[&str]) -> harness::Output {
    let file = file.to_str().expect("utf-8 path");
    // Compiling a large component takes seconds on a loaded machine.
    let mut args = vec![
        "--endpoints",
        ep,
        "--timeout",
        "60",
        "plugin",
        "install",
        name,
        file,
        "--hook",
        hook,
    ];
    args.extend_from_slice(bound);
    args.extend_from_slice(extra);
    cairnctl(&args)
}

/// Waits (bounded) until member `ep` lists a plugin line containing `needle`.
fn wait_listed(ep: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let out = cairnctl(&["--endpoints", ep, "plugin", "list"]);
        if let Some(line) = out.stdout.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{ep} never listed {needle:?}: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn revision(ep: &str) -> i64 {
    let j = etcdctl(ep, &["get", "any-key", "-w", "json"]).assert_ok().json();
    j["header"]["revision"].as_i64().expect("revision in header")
}

/// The error a rejected put reports; panics if the put succeeds.
fn put_error(ep: &str, key: &str, value: &str) -> String {
    let out = etcdctl(ep, &["put", key, value]);
    assert_ne!(out.status, Some(0), "put {key} via {ep} was accepted: {out:?}");
    let line = out.error_lines().first().map(|l| l.to_string()).unwrap_or_default();
    assert!(line.contains("code = FailedPrecondition"), "{out:?}");
    line.split("desc = ").nth(1).unwrap_or(&line).to_string()
}

/// Installs the always-denying `deny` as `name` with the given key-range
/// flags, then checks on every member that puts to `allowed` pass and puts
/// to `denied` are refused.
fn deny_in_range(eps: &[String], deny: &Path, name: &str, range: &[&str], allowed: &[&str], denied: &[&str]) {
    install_bound(&eps[1], name, deny, "admission", range, &[]).assert_ok();
    for ep in eps {
        wait_listed(ep, &format!("{name} "));
        for key in allowed {
            etcdctl(ep, &["put", key, "v"]).assert_ok();
        }
        for key in denied {
            assert_eq!(put_error(ep, key, "v"), format!("cairn: plugin \"{name}\" denied the request: no"));
        }
    }
}

#[test]
fn admission_and_validate_decide_alike_on_every_member() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::start(3);
    let eps = c.endpoints();

    // A schema-like validate plugin, installed through member 0 only.
    let json = write_component(dir.path(), "json-object", &json_object_validator());
    install(&eps[0], "json-object", &json, "validate", "cfg/", &[]).assert_ok();
    for ep in &eps {
        let line = wait_listed(ep, "json-object");
        assert!(
            line.contains("hook=validate key=\"cfg/\" range-end=\"cfg0\" mode=enforce failure-policy=fail"),
            "{line}"
        );
    }
    etcdctl(&eps[1], &["put", "cfg/a", "{\"x\":1}"]).assert_ok();
    etcdctl(&eps[1], &["put", "other/a", "not json"]).assert_ok();
    let before = revision(&eps[0]);
    for ep in &eps {
        assert_eq!(
            put_error(ep, "cfg/b", "not json"),
            "cairn: plugin \"json-object\" rejected key \"cfg/b\": value must be a JSON object"
        );
    }
    // A txn whose chosen branch writes under the prefix is rejected whole;
    // the branch its compares do not choose is not looked at.
    let cfg_a_exists = ["create(\"cfg/a\") > \"0\""];
    let txn = etcdctl_txn(
        &eps[2],
        &txn_input(&cfg_a_exists, &["put other/b ok", "put cfg/c nope"], &["put other/c ok"]),
    );
    assert!(txn.contains("rejected key \"cfg/c\""), "{txn}");
    let txn = etcdctl_txn(&eps[2], &txn_input(&cfg_a_exists, &["put other/c ok"], &["put cfg/c nope"]));
    assert!(txn.starts_with("SUCCESS"), "{txn}");
    let before = before + 1;
    assert_eq!(revision(&eps[0]), before, "a rejected write must not make a revision");
    assert_eq!(
        etcdctl(&eps[0], &["get", "other/b", "--print-value-only"]).assert_ok().stdout,
        "",
        "nothing of a rejected txn is applied"
    );

    // Admission reading the state: at most 2 keys under q/.
    let quota = write_component(
        dir.path(),
        "quota",
        &admission_component(Admission::Quota {
            prefix: "q/",
            prefix_end: "q0",
            max: 2,
        }),
    );
    install(&eps[2], "quota", &quota, "admission", "q/", &[]).assert_ok();
    for ep in &eps {
        wait_listed(ep, "quota");
    }
    etcdctl(&eps[0], &["put", "q/1", "a"]).assert_ok();
    etcdctl(&eps[1], &["put", "q/2", "b"]).assert_ok();
    for ep in &eps {
        assert_eq!(
            put_error(ep, "q/3", "c"),
            "cairn: plugin \"quota\" denied the request: quota exceeded"
        );
    }
    etcdctl(&eps[2], &["del", "q/1"]).assert_ok();
    etcdctl(&eps[0], &["put", "q/3", "c"]).assert_ok();

    // Upgrade: the same name with another component takes effect at its
    // own index, on every member.
    let v1 = write_component(dir.path(), "gate-v1", &admission_component(Admission::Deny("closed (v1)")));
    let v2 = write_component(dir.path(), "gate-v2", &admission_component(Admission::Deny("closed (v2)")));
    install(&eps[0], "gate", &v1, "admission", "gate/", &[]).assert_ok();
    let first = wait_listed(&eps[0], "gate ");
    for ep in &eps {
        wait_listed(ep, "gate ");
        assert_eq!(
            put_error(ep, "gate/x", "1"),
            "cairn: plugin \"gate\" denied the request: closed (v1)"
        );
    }
    install(&eps[1], "gate", &v2, "admission", "gate/", &[]).assert_ok();
    let sha = |line: &str| {
        line.split("sha256=")
            .nth(1)
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    for ep in &eps {
        let line = wait_listed(ep, &format!("sha256={}", sha_of(&v2)));
        assert_ne!(sha(&line), sha(&first));
        assert_eq!(
            put_error(ep, "gate/x", "1"),
            "cairn: plugin \"gate\" denied the request: closed (v2)"
        );
    }

    // Warn and dry-run modes evaluate but allow.
    let deny = write_component(dir.path(), "deny", &admission_component(Admission::Deny("no")));
    install(&eps[0], "warned", &deny, "admission", "w/", &["--mode", "warn"]).assert_ok();
    install(&eps[0], "dry", &deny, "admission", "d/", &["--mode", "dry-run"]).assert_ok();
    for ep in &eps {
        wait_listed(ep, "dry ");
        etcdctl(ep, &["put", "w/k", "v"]).assert_ok();
        etcdctl(ep, &["put", "d/k", "v"]).assert_ok();
    }
    // Every member ran both on all three writes, and counted the denials.
    for ep in &eps {
        for name in ["dry", "warned"] {
            wait_listed(ep, &format!("{name} hook=admission key=\"{}/\"", &name[..1]));
            let start = Instant::now();
            while !cairnctl(&["--endpoints", ep, "plugin", "list"])
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.ends_with("calls=3 denials=3 failures=0"))
            {
                assert!(start.elapsed() < Duration::from_secs(20), "{name} via {ep} did not count 3 denials");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    // Bindings to a range [r/b, r/d), and to every key from z/m on, rather
    // than to a prefix.
    deny_in_range(
        &eps,
        &deny,
        "ranged",
        &["--key", "r/b", "--range-end", "r/d"],
        &["r/a", "r/d"],
        &["r/b", "r/c/deeper"],
    );
    deny_in_range(&eps, &deny, "tail", &["--key", "z/m", "--from-key"], &["z/a"], &["z/m", "zz"]);
    cairnctl(&["--endpoints", &eps[0], "plugin", "remove", "tail"]).assert_ok();

    // Removal, again at one index for all.
    cairnctl(&["--endpoints", &eps[2], "plugin", "remove", "json-object"]).assert_ok();
    let out = cairnctl(&["--endpoints", &eps[2], "plugin", "remove", "json-object"]);
    assert_ne!(out.status, Some(0));
    assert!(out.stderr.contains("cairn: plugin \"json-object\" not found"), "{out:?}");
    etcdctl(&eps[0], &["put", "cfg/b", "not json"]).assert_ok();

    c.assert_converged();
}

/// The hex sha256 that `plugin list` shows for a component file.
fn sha_of(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn etcdctl_txn(ep: &str, input: &str) -> String {
    let out = harness::etcdctl_stdin(ep, &["txn"], input.as_bytes());
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn hostile_plugins_fail_the_same_way_on_every_member() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::start_with_args(3, &["--max-plugin-bytes=4096"]);
    let eps = c.endpoints();
    let cases = [
        ("spin", Admission::Spin, "out of fuel"),
        ("memory", Admission::MemoryBomb, "memory limit exceeded"),
        ("trap", Admission::Trap, "trap: wasm `unreachable` instruction executed"),
        ("recursion", Admission::Recursion, "stack overflow"),
        ("huge", Admission::HugeOutput, "output too large"),
    ];
    for (name, behaviour, _) in &cases {
        let file = write_component(dir.path(), name, &admission_component(*behaviour));
        install(&eps[0], name, &file, "admission", &format!("fail/{name}/"), &["--fuel", "2000000"]).assert_ok();
        let ignored = format!("{name}-ignored");
        install(
            &eps[1],
            &ignored,
            &file,
            "admission",
            &format!("ignore/{name}/"),
            &["--failure-policy", "ignore"],
        )
        .assert_ok();
    }
    for ep in &eps {
        wait_listed(ep, "spin-ignored");
        wait_listed(ep, "huge-ignored");
    }
    let before = revision(&eps[0]);
    for (name, _, kind) in &cases {
        for ep in &eps {
            assert_eq!(
                put_error(ep, &format!("fail/{name}/k"), "v"),
                format!("cairn: plugin \"{name}\" denied the request: plugin failed: {kind}")
            );
        }
    }
    assert_eq!(revision(&eps[0]), before);
    for (name, _, _) in &cases {
        etcdctl(&eps[2], &["put", &format!("ignore/{name}/k"), "v"]).assert_ok();
    }

    // Refused at install, with nothing stored: bytes that are not Wasm, a
    // component of another world, a component over --max-plugin-bytes.
    let garbage = write_component(dir.path(), "garbage", b"\0asm not really");
    let out = install(&eps[0], "garbage", &garbage, "admission", "x/", &[]);
    assert_ne!(out.status, Some(0));
    assert!(
        out.stderr.contains("cairn: invalid plugin: not a valid WebAssembly component"),
        "{out:?}"
    );
    let validator = write_component(dir.path(), "validator", &json_object_validator());
    let out = install(&eps[1], "wrong-world", &validator, "admission", "x/", &[]);
    assert!(out.stderr.contains("does not implement the admission world"), "{out:?}");
    let big = write_component(
        dir.path(),
        "big",
        &admission_component(Admission::Deny(Box::leak("x".repeat(5000).into_boxed_str()))),
    );
    let out = install(&eps[2], "big", &big, "admission", "x/", &[]);
    assert!(out.stderr.contains("--max-plugin-bytes"), "{out:?}");
    for ep in &eps {
        let listed = cairnctl(&["--endpoints", ep, "plugin", "list"]).assert_ok().stdout.clone();
        assert!(
            !listed.contains("garbage") && !listed.contains("wrong-world") && !listed.contains("big "),
            "{listed}"
        );
        assert_eq!(listed.lines().count(), 2 * cases.len(), "{listed}");
    }
    // Every member is still up and agrees.
    for i in 0..3 {
        assert!(c.members[i].is_running(), "member {i} died\n{}", c.log_tails());
    }
    c.assert_converged();
}

#[test]
fn plugins_survive_restart_and_snapshot_install() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::start_with_args(3, &["--snapshot-count=20"]);
    let eps = c.endpoints();
    let leader = c.leader();
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.kill9(lagging);

    let json = write_component(dir.path(), "json-object", &json_object_validator());
    install(&eps[leader], "json-object", &json, "validate", "cfg/", &[]).assert_ok();
    wait_listed(&eps[other], "json-object");
    for i in 0..60 {
        etcdctl(&eps[leader], &["put", &format!("fill/{i:02}"), "v"]).assert_ok();
    }
    // The lagging member can only catch up from a snapshot, which must
    // carry the registry.
    c.restart(lagging);
    c.assert_converged();
    assert!(
        c.log_contains(lagging, "installing snapshot"),
        "the member did not catch up from a snapshot\n{}",
        c.log_tails()
    );
    wait_listed(&eps[lagging], "json-object");
    assert_eq!(
        put_error(&eps[lagging], "cfg/x", "nope"),
        "cairn: plugin \"json-object\" rejected key \"cfg/x\": value must be a JSON object"
    );

    // A restart reloads the registry from disk.
    c.restart_all();
    for ep in &eps {
        wait_listed(ep, "json-object");
        assert!(put_error(ep, "cfg/y", "nope").contains("value must be a JSON object"));
    }
    etcdctl(&eps[other], &["put", "cfg/y", "{}"]).assert_ok();
    c.assert_converged();
}

#[test]
fn watch_transforms_look_the_same_through_two_members() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Cluster::start(3);
    let eps = c.endpoints();
    let redact = write_component(dir.path(), "redact", &redact_to_config_watch());
    let config = dir.path().join("config");
    std::fs::write(&config, "REDACTED").expect("write config");
    install(
        &eps[0],
        "redact",
        &redact,
        "watch",
        "secret/",
        &["--config", config.to_str().expect("utf-8")],
    )
    .assert_ok();
    for ep in &eps {
        wait_listed(ep, "redact");
    }
    etcdctl(&eps[0], &["put", "secret/a", "hunter2"]).assert_ok();
    etcdctl(&eps[0], &["put", "public/a", "hello"]).assert_ok();
    etcdctl(&eps[0], &["put", "secret/b", "swordfish"]).assert_ok();
    // Replayed from history through two different members.
    let rt = harness::runtime();
    let watched = |ep: &str| {
        rt.block_on(async {
            let mut client = harness::connect(ep).await;
            let opts = etcd_client::WatchOptions::new().with_range("t").with_start_revision(1);
            let mut stream = client.watch("p", Some(opts)).await.expect("watch");
            let mut seen = Vec::new();
            while seen.len() < 3 {
                let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("events within the time limit")
                    .expect("watch stream")
                    .expect("stream open");
                for e in resp.events() {
                    let kv = e.kv().expect("event kv");
                    seen.push((kv.key_str().expect("utf-8").to_string(), kv.value_str().expect("utf-8").to_string()));
                }
            }
            seen
        })
    };
    let want: Vec<(String, String)> = [("secret/a", "REDACTED"), ("public/a", "hello"), ("secret/b", "REDACTED")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(watched(&eps[1]), want);
    assert_eq!(watched(&eps[2]), want);

    // Live events, delivered as they are applied, go through it too.
    let live = rt.block_on(async {
        let mut streams = Vec::new();
        for ep in &eps[1..] {
            let mut client = harness::connect(ep).await;
            let opts = etcd_client::WatchOptions::new().with_prefix();
            let mut stream = client.watch("secret/", Some(opts)).await.expect("watch");
            // The first response confirms the watch exists.
            stream.message().await.expect("watch created").expect("stream open");
            streams.push((client, stream));
        }
        let mut writer = harness::connect(&eps[0]).await;
        writer.put("secret/c", "opensesame", None).await.expect("put");
        let mut values = Vec::new();
        for (_client, stream) in &mut streams {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("event within the time limit")
                .expect("watch stream")
                .expect("stream open");
            let kv = resp.events().first().and_then(|e| e.kv()).expect("an event");
            values.push((kv.key_str().expect("utf-8").to_string(), kv.value_str().expect("utf-8").to_string()));
        }
        values
    });
    let want = ("secret/c".to_string(), "REDACTED".to_string());
    assert_eq!(live, vec![want.clone(), want]);

    // A failing watch plugin drops the event under `fail` (a failed
    // redaction must not leak) and passes it under `ignore`.
    let broken = write_component(dir.path(), "broken", &trapping_watch());
    install(&eps[0], "broken-fail", &broken, "watch", "bf/", &[]).assert_ok();
    install(&eps[0], "broken-ignore", &broken, "watch", "bi/", &["--failure-policy", "ignore"]).assert_ok();
    for ep in &eps {
        wait_listed(ep, "broken-ignore");
    }
    etcdctl(&eps[0], &["put", "bf/x", "hidden"]).assert_ok();
    etcdctl(&eps[0], &["put", "bi/x", "shown"]).assert_ok();
    for ep in &eps[1..] {
        let first = rt.block_on(async {
            let mut client = harness::connect(ep).await;
            let opts = etcd_client::WatchOptions::new().with_range("bj").with_start_revision(1);
            let mut stream = client.watch("bf/", Some(opts)).await.expect("watch");
            loop {
                let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("events within the time limit")
                    .expect("watch stream")
                    .expect("stream open");
                if let Some(kv) = resp.events().first().and_then(|e| e.kv()) {
                    break (kv.key_str().expect("utf-8").to_string(), kv.value_str().expect("utf-8").to_string());
                }
            }
        });
        assert_eq!(first, ("bi/x".to_string(), "shown".to_string()), "through {ep}");
    }
}

/// The same rejection, seen through every member.
fn same_error_everywhere(eps: &[String], key: &str, value: &str) -> String {
    let first = put_error(&eps[0], key, value);
    for ep in &eps[1..] {
        assert_eq!(put_error(ep, key, value), first, "{key} through {ep}");
    }
    first
}

/// The reference plugins of `plugins/` (built by `make plugins`), and the
/// hostile ones written in Rust, on one cluster.
#[test]
fn reference_plugins_do_their_jobs_on_a_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path.to_str().expect("utf-8").to_string()
    };
    let c = Cluster::start(3);
    let eps = c.endpoints();
    let schema = config(
        "schema.json",
        r#"{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0}}}"#,
    );
    install(
        &eps[0],
        "users-schema",
        &plugin_wasm("json-schema"),
        "validate",
        "users/",
        &["--config", &schema],
    )
    .assert_ok();
    let policy = config(
        "policy.json",
        r#"{"key_pattern":"^/apps/[a-z0-9-]+/[a-z0-9_.-]+$","min_depth":3,"max_depth":3,"max_value_bytes":16}"#,
    );
    install(
        &eps[1],
        "apps-policy",
        &plugin_wasm("key-policy"),
        "validate",
        "/apps/",
        &["--config", &policy],
    )
    .assert_ok();
    let quota = config("quota.json", r#"{"prefix":"/tenants/acme/","max_keys":2}"#);
    install(
        &eps[2],
        "tenant-quota",
        &plugin_wasm("quota"),
        "admission",
        "/tenants/",
        &["--config", &quota],
    )
    .assert_ok();
    let redact = config("redact.json", r#"{"mask":["password"]}"#);
    install(
        &eps[0],
        "secrets",
        &plugin_wasm("redact"),
        "watch",
        "secrets/",
        &["--config", &redact],
    )
    .assert_ok();
    for ep in &eps {
        wait_listed(ep, "secrets");
    }

    etcdctl(&eps[1], &["put", "users/1", r#"{"name":"ada","age":36}"#]).assert_ok();
    let e = same_error_everywhere(&eps, "users/2", r#"{"age":-1}"#);
    assert!(e.starts_with("cairn: plugin \"users-schema\" rejected key \"users/2\": "), "{e}");
    let e = same_error_everywhere(&eps, "users/3", "not json");
    assert!(e.starts_with("cairn: plugin \"users-schema\" rejected key \"users/3\": "), "{e}");

    etcdctl(&eps[2], &["put", "/apps/web/port", "8080"]).assert_ok();
    let e = same_error_everywhere(&eps, "/apps/web", "x");
    assert!(e.starts_with("cairn: plugin \"apps-policy\" rejected key \"/apps/web\": "), "{e}");
    let e = same_error_everywhere(&eps, "/apps/web/big", "01234567890123456789");
    assert!(
        e.starts_with("cairn: plugin \"apps-policy\" rejected key \"/apps/web/big\": "),
        "{e}"
    );

    etcdctl(&eps[0], &["put", "/tenants/acme/a", "1"]).assert_ok();
    etcdctl(&eps[1], &["put", "/tenants/acme/b", "1"]).assert_ok();
    let e = same_error_everywhere(&eps, "/tenants/acme/c", "1");
    assert!(
        e.starts_with("cairn: plugin \"tenant-quota\" denied the request: quota exceeded"),
        "{e}"
    );
    // Over quota, updates and deletes still work.
    etcdctl(&eps[2], &["put", "/tenants/acme/a", "2"]).assert_ok();
    etcdctl(&eps[2], &["del", "/tenants/acme/b"]).assert_ok();
    etcdctl(&eps[0], &["put", "/tenants/acme/c", "1"]).assert_ok();

    etcdctl(&eps[0], &["put", "secrets/a", r#"{"user":"u","password":"hunter2"}"#]).assert_ok();
    let rt = harness::runtime();
    for ep in &eps[1..] {
        let seen = rt.block_on(async {
            let mut client = harness::connect(ep).await;
            let opts = etcd_client::WatchOptions::new().with_prefix().with_start_revision(1);
            let mut stream = client.watch("secrets/", Some(opts)).await.expect("watch");
            loop {
                let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("events within the time limit")
                    .expect("watch stream")
                    .expect("stream open");
                if let Some(e) = resp.events().first() {
                    break e.kv().expect("kv").value_str().expect("utf-8").to_string();
                }
            }
        });
        assert_eq!(seen, r#"{"password":"***","user":"u"}"#, "through {ep}");
    }
    // The store itself keeps the full value.
    let stored = etcdctl(&eps[0], &["get", "secrets/a", "--print-value-only"])
        .assert_ok()
        .stdout
        .clone();
    assert!(stored.contains("hunter2"), "{stored}");

    // The hostile plugins written in Rust: each fails, the same way on
    // every member, and the members stay up.
    let huge_config = config("huge.txt", "1048576");
    for (name, extra) in [
        ("hostile-spin", vec![]),
        ("hostile-memory", vec![]),
        ("hostile-trap", vec![]),
        ("hostile-recursion", vec![]),
        (
            "hostile-huge-output",
            vec!["--max-memory", "67108864", "--config", huge_config.as_str()],
        ),
    ] {
        install(&eps[0], name, &plugin_wasm(name), "admission", &format!("{name}/"), &extra).assert_ok();
        wait_listed(&eps[1], name);
        wait_listed(&eps[2], name);
        let e = same_error_everywhere(&eps, &format!("{name}/k"), "v");
        assert!(
            e.starts_with(&format!("cairn: plugin \"{name}\" denied the request: plugin failed: ")),
            "{e}"
        );
    }
    let mut c = c;
    c.assert_converged();
}

/// `cairnctl plugin test` runs a component with no server at all.
#[test]
fn plugin_test_runs_a_component_locally() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, r#"{"type":"object","required":["name"]}"#).expect("write schema");
    let schema = schema.to_str().expect("utf-8");
    let file = plugin_wasm("json-schema");
    let file = file.to_str().expect("utf-8");
    let out = cairnctl(&[
        "plugin",
        "test",
        file,
        "--hook",
        "validate",
        "--config",
        schema,
        "--put",
        r#"u/1={"name":"x"}"#,
    ]);
    assert_eq!(out.stdout, "u/1: allow\n", "{out:?}");
    assert_eq!(out.status, Some(0));
    let out = cairnctl(&["plugin", "test", file, "--hook", "validate", "--config", schema, "--put", "u/2={}"]);
    assert!(out.stdout.starts_with("u/2: deny: "), "{out:?}");
    assert_eq!(out.status, Some(1));

    let spin = write_component(dir.path(), "spin", &admission_component(Admission::Spin));
    let out = cairnctl(&[
        "plugin",
        "test",
        spin.to_str().expect("utf-8"),
        "--hook",
        "admission",
        "--put",
        "k=v",
    ]);
    assert_eq!(out.stdout, "failed: out of fuel\n", "{out:?}");
    let quota = write_component(
        dir.path(),
        "quota",
        &admission_component(Admission::Quota {
            prefix: "q/",
            prefix_end: "q0",
            max: 1,
        }),
    );
    let quota = quota.to_str().expect("utf-8");
    let out = cairnctl(&["plugin", "test", quota, "--hook", "admission", "--put", "q/2=v"]);
    assert_eq!(out.stdout, "allow\n", "{out:?}");
    let out = cairnctl(&["plugin", "test", quota, "--hook", "admission", "--put", "q/2=v", "--state", "q/1=x"]);
    assert_eq!(out.stdout, "deny: quota exceeded\n", "{out:?}");
    // A component of another world is refused.
    let out = cairnctl(&["plugin", "test", file, "--hook", "admission", "--put", "k=v"]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert!(out.stderr.contains("does not implement the admission world"), "{out:?}");
}

#[test]
fn plugin_metrics_count_calls_denials_failures_and_fuel() {
    use harness::metrics::{sample, scrape};
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Cluster::start(1);
    let ep = c.endpoints()[0].clone();
    let limit = write_component(
        dir.path(),
        "limit",
        &admission_component(Admission::Quota {
            prefix: "q/",
            prefix_end: "q0",
            max: 1,
        }),
    );
    install(&ep, "limit", &limit, "admission", "q/", &[]).assert_ok();
    let trap = write_component(dir.path(), "trap", &admission_component(Admission::Trap));
    install(&ep, "trap", &trap, "admission", "t/", &[]).assert_ok();
    wait_listed(&ep, "trap ");
    let labels = |plugin| [("plugin", plugin), ("hook", "admission")];
    // Labelled series appear with their first sample, so none may be
    // there yet: the counts below compare with what was.
    let before = scrape(&ep);

    etcdctl(&ep, &["put", "q/first", "v"]).assert_ok();
    put_error(&ep, "q/second", "v");
    put_error(&ep, "t/k", "v");

    let after = scrape(&ep);
    for family in [
        "cairn_plugin_calls",
        "cairn_plugin_denials",
        "cairn_plugin_failures",
        "cairn_plugin_fuel_consumed",
        "cairn_plugin_call_duration_seconds",
    ] {
        assert!(after.contains_key(family), "{family} is not exposed");
    }
    let moved =
        |family: &str, name: &str, labels: &[(&str, &str)]| sample(&after, family, name, labels) - sample(&before, family, name, labels);
    assert_eq!(moved("cairn_plugin_calls", "cairn_plugin_calls_total", &labels("limit")), 2.0);
    assert_eq!(moved("cairn_plugin_denials", "cairn_plugin_denials_total", &labels("limit")), 1.0);
    assert_eq!(moved("cairn_plugin_failures", "cairn_plugin_failures_total", &labels("limit")), 0.0);
    assert!(moved("cairn_plugin_fuel_consumed", "cairn_plugin_fuel_consumed_total", &labels("limit")) > 0.0);
    assert_eq!(
        moved(
            "cairn_plugin_call_duration_seconds",
            "cairn_plugin_call_duration_seconds_count",
            &labels("limit")
        ),
        2.0
    );
    assert_eq!(moved("cairn_plugin_calls", "cairn_plugin_calls_total", &labels("trap")), 1.0);
    assert_eq!(
        moved(
            "cairn_plugin_failures",
            "cairn_plugin_failures_total",
            &[("plugin", "trap"), ("hook", "admission"), ("kind", "trap")]
        ),
        1.0
    );
    // A failure under the `fail` policy denies too.
    assert_eq!(moved("cairn_plugin_denials", "cairn_plugin_denials_total", &labels("trap")), 1.0);
}
