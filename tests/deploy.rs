//! Deploying like etcd: `cairn --version`, systemd readiness (sd_notify),
//! and the deployment files of host/server/deploy/ checked against the real
//! binary: the systemd unit with `systemd-analyze verify`, the compose file
//! and the Kubernetes StatefulSet by starting the three members they
//! describe (their flags and environment, on loopback ports) and asking
//! their probes.

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::server::free_port;
use harness::{cairn_bin, etcdctl};

/// How long members may take to start and elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/server/deploy")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process killed when the test ends, whatever the outcome.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc { child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("cairn exited with {status}:\n{}", self.log_tail());
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SIGTERM: the path a service manager stops the member by.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "cairn did not exit after SIGTERM:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over plain HTTP with curl: (status, body).
fn http_get(url: &str) -> (u16, String) {
    let (_, out, _) = run(Command::new("curl").args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url]));
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

// --- cairn --version -------------------------------------------------------

#[test]
fn version_prints_cairn_and_the_etcd_version_in_etcds_form() {
    let (ok, out, err) = run(Command::new(cairn_bin()).arg("--version"));
    assert!(ok, "cairn --version failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("cairn Version: {}", env!("CARGO_PKG_VERSION")));
    // The line scripts grep in `etcd --version`, and `etcdctl version`'s API line.
    let etcd = harness::require_etcd();
    let (_, reference, _) = run(Command::new(&etcd).arg("--version"));
    let reference_line = reference
        .lines()
        .find(|l| l.starts_with("etcd Version: "))
        .expect("etcd's version line");
    let ours = lines
        .iter()
        .find(|l| l.starts_with("etcd Version: "))
        .expect("an etcd Version line");
    let version = |line: &str| line["etcd Version: ".len()..].split('.').map(str::to_string).collect::<Vec<_>>();
    assert_eq!(version(ours).len(), 3, "{ours}");
    assert_eq!(version(reference_line).len(), 3, "{reference_line}");
    assert!(lines.contains(&"API version: 3.4"), "{out}");
    let (_, ctl, _) = run(Command::new(harness::require_etcdctl()).arg("version"));
    assert!(ctl.lines().any(|l| l == "API version: 3.4"), "etcdctl speaks {ctl}");

    let (ok, out, _) = run(Command::new(cairn_bin()).arg("-V").env("CAIRN_EMULATED_ETCD_VERSION", "3.5.17"));
    assert!(ok);
    assert!(out.contains("etcd Version: 3.5.17\nAPI version: 3.5\n"), "{out}");
}

// --- sd_notify ---------------------------------------------------------------

/// Waits up to `timeout` for one notification.
fn next_notification(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).expect("read timeout");
    let mut buf = [0u8; 256];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
        Err(e) => panic!("receiving from the notify socket: {e}"),
    }
}

struct Ports {
    client: u16,
    peer: u16,
}

fn member_command(dir: &Path, i: usize, ports: &[Ports]) -> Command {
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let cluster: Vec<String> = ports.iter().enumerate().map(|(j, p)| format!("m{j}={}", url(p.peer))).collect();
    let mut cmd = Command::new(cairn_bin());
    cmd.args(["--name", &format!("m{i}")])
        .arg("--data-dir")
        .arg(dir.join(format!("m{i}.data")))
        .args(["--listen-client-urls", &url(ports[i].client)])
        .args(["--advertise-client-urls", &url(ports[i].client)])
        .args(["--listen-peer-urls", &url(ports[i].peer)])
        .args(["--initial-advertise-peer-urls", &url(ports[i].peer)])
        .args(["--initial-cluster", &cluster.join(",")])
        .args(["--initial-cluster-token", "sd-notify"]);
    cmd
}

fn free_ports(n: usize) -> Vec<Ports> {
    (0..n)
        .map(|_| Ports {
            client: free_port(),
            peer: free_port(),
        })
        .collect()
}

#[test]
fn ready_is_notified_once_clients_are_served_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let ports = free_ports(1);
    let mut member = Proc::spawn(
        member_command(dir.path(), 0, &ports).env("NOTIFY_SOCKET", &socket_path),
        dir.path().join("m0.log"),
    );
    let ready = next_notification(&socket, START_TIMEOUT);
    member.assert_running();
    assert_eq!(ready.as_deref(), Some("READY=1"), "{}", member.log_tail());
    // Clients are served the moment systemd hears of it: a write and a
    // linearizable read, without waiting first.
    let endpoint = format!("127.0.0.1:{}", ports[0].client);
    etcdctl(&endpoint, &["put", "k", "v"]).assert_ok();
    let got = etcdctl(&endpoint, &["get", "k", "--consistency=l", "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), "v");
    assert!(member.terminate().success());
    assert_eq!(next_notification(&socket, Duration::from_secs(10)).as_deref(), Some("STOPPING=1"));
}

#[test]
fn a_member_of_a_new_cluster_is_ready_only_once_it_has_a_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    // An abstract socket name, as systemd passes it ("@..."), unique to
    // this run.
    let name = format!("cairn-test-notify-{}-{}", std::process::id(), ports[0].client);
    let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("name")).expect("bind");
    let mut first = Proc::spawn(
        member_command(dir.path(), 0, &ports).env("NOTIFY_SOCKET", format!("@{name}")),
        dir.path().join("m0.log"),
    );
    // Alone, the member has no leader and serves no client: no READY=1.
    assert_eq!(next_notification(&socket, Duration::from_secs(3)), None);
    first.assert_running();
    let _others: Vec<Proc> = (1..3)
        .map(|i| Proc::spawn(&mut member_command(dir.path(), i, &ports), dir.path().join(format!("m{i}.log"))))
        .collect();
    let ready = next_notification(&socket, START_TIMEOUT);
    assert_eq!(ready.as_deref(), Some("READY=1"), "{}", first.log_tail());
    let endpoint = format!("127.0.0.1:{}", ports[0].client);
    etcdctl(&endpoint, &["put", "k", "v"]).assert_ok();
}

// --- the deployment files ----------------------------------------------------

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(deploy_dir().join("cairn.service")).expect("cairn.service");
    for directive in [
        "Type=notify",
        "EnvironmentFile=-/etc/default/cairn",
        "Restart=on-failure",
        "LimitNOFILE=",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cairn",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(directive)), "cairn.service lacks {directive}");
    }
    // verify checks that ExecStart's binary exists: point it at the built one.
    let installed = "ExecStart=/usr/bin/cairn ";
    assert!(unit.contains(installed), "ExecStart runs /usr/bin/cairn");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cairn.service");
    std::fs::write(&path, unit.replace(installed, &format!("ExecStart={} ", cairn_bin().display()))).expect("write unit");
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(ok && err.trim().is_empty(), "systemd-analyze verify:\n{out}{err}");
}

/// Every `ETCD_*` variable the deployment files set is one `cairn` reads.
#[test]
fn every_variable_the_deployment_files_set_is_a_cairn_flag() {
    let (_, help, _) = run(Command::new(cairn_bin()).arg("--help"));
    let mut seen = 0;
    for file in ["cairn.service", "cairn.default", "compose.yaml", "statefulset.yaml", "Dockerfile"] {
        let text = std::fs::read_to_string(deploy_dir().join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("ETCD_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // "ETCD_*" in a comment names no variable.
            if name.len() > "ETCD_".len() {
                assert!(
                    help.contains(&format!("[env: {name}=")),
                    "{file} sets {name}, which cairn does not read"
                );
                seen += 1;
            }
            rest = &rest[at + name.len()..];
        }
    }
    assert!(seen > 20, "found only {seen} variables");
}

/// The documents of a YAML file, parsed by PyYAML, as JSON.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = run(Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path));
    assert!(ok, "{} does not parse as YAML: {err}", path.display());
    serde_json::from_str(&out).expect("JSON from python")
}

/// The container environment the image sets (`ENV` lines of the Dockerfile).
fn image_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    let joined = text.replace("\\\n", " ");
    let mut env = Vec::new();
    for line in joined.lines().filter_map(|l| l.trim().strip_prefix("ENV ")) {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            env.push((k.to_string(), v.to_string()));
        }
    }
    assert!(!env.is_empty(), "the Dockerfile sets no ENV");
    env
}

/// One member as a deployment file describes it.
struct Described {
    host: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Rewrites the URLs of a member's settings for this machine: the address
/// each member listens on (`0.0.0.0:PORT`) and the names the members know
/// each other by become 127.0.0.1 with a port of that member's own, so
/// three members whose files all say 2379 can run side by side. The data dir
/// moves into `data`. A host the file names that is none of the members
/// fails the test.
fn localize(text: &str, own: usize, hosts: &[String], ports: &[BTreeMap<u16, u16>], data: &Path) -> String {
    if let Some(rest) = text.strip_prefix("/var/lib/cairn") {
        return format!("{}{rest}", data.display());
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("http://") {
        out.push_str(&rest[..at + "http://".len()]);
        rest = &rest[at + "http://".len()..];
        let end = rest.find([',', '/', ' ']).unwrap_or(rest.len());
        let (host, port) = rest[..end].rsplit_once(':').unwrap_or_else(|| panic!("{text}: URL without a port"));
        let port: u16 = port.parse().unwrap_or_else(|_| panic!("{text}: bad port"));
        let member = if host == "0.0.0.0" {
            own
        } else {
            hosts
                .iter()
                .position(|h| h == host)
                .unwrap_or_else(|| panic!("{text}: {host} is no member"))
        };
        let local = ports[member]
            .get(&port)
            .unwrap_or_else(|| panic!("{text}: port {port} is not a member port"));
        out.push_str(&format!("127.0.0.1:{local}"));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Starts the members as described and waits until `probe` (a path on the
/// port a member's container calls `probe_port`) answers 200 on every one;
/// then checks that they replicate a write. Returns the members' logs'
/// directory for failures.
fn start_described(members: &[Described], probe_port: u16, probes: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts: Vec<String> = members.iter().map(|m| m.host.clone()).collect();
    let ports: Vec<BTreeMap<u16, u16>> = members
        .iter()
        .map(|_| [2379, 2380, 2381].into_iter().map(|p| (p, free_port())).collect())
        .collect();
    let mut procs = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let data = dir.path().join(format!("member-{i}"));
        let fix = |s: &str| localize(s, i, &hosts, &ports, &data);
        let mut cmd = Command::new(cairn_bin());
        cmd.env_clear()
            .args(m.args.iter().map(|a| fix(a)))
            .envs(m.env.iter().map(|(k, v)| (k.clone(), fix(v))));
        procs.push(Proc::spawn(&mut cmd, dir.path().join(format!("member-{i}.log"))));
    }
    let deadline = Instant::now() + START_TIMEOUT;
    for (i, p) in procs.iter_mut().enumerate() {
        for path in probes {
            let url = format!("http://127.0.0.1:{}{path}", ports[i][&probe_port]);
            loop {
                p.assert_running();
                let (status, body) = http_get(&url);
                if status == 200 {
                    assert_eq!(body, "ok", "{url}");
                    break;
                }
                assert!(Instant::now() < deadline, "{url} answers {status} {body:?}\n{}", p.log_tail());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let client = |i: usize| format!("127.0.0.1:{}", ports[i][&2379]);
    etcdctl(&client(0), &["put", "deployed", "yes"]).assert_ok();
    let last = members.len() - 1;
    let got = etcdctl(&client(last), &["get", "deployed", "--consistency=l", "--print-value-only"]);
    assert_eq!(got.assert_ok().stdout.trim(), "yes");
    let listed = etcdctl(&client(last), &["member", "list", "-w", "json"]);
    let names: Vec<String> = listed.assert_ok().json()["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names.len(), members.len(), "{names:?}");
}

fn str_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_compose_file_describes_a_three_member_cluster_that_starts() {
    let path = deploy_dir().join("compose.yaml");
    let docs = yaml_documents(&path);
    let compose = &docs[0];
    let services = compose["services"].as_object().expect("services");
    assert_eq!(services.len(), 3);
    let mut members = Vec::new();
    for (name, service) in services {
        let build = &service["build"];
        let dockerfile = deploy_dir()
            .join(build["context"].as_str().expect("build context"))
            .join(build["dockerfile"].as_str().expect("dockerfile"));
        assert!(dockerfile.is_file(), "{name} builds {}", dockerfile.display());
        let mut env = image_env();
        for (k, v) in service["environment"].as_object().expect("environment map") {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), str_of(v)));
        }
        let args = service["command"]
            .as_array()
            .map(|a| a.iter().map(str_of).collect())
            .unwrap_or_default();
        members.push(Described {
            host: service["hostname"].as_str().unwrap_or(name).to_string(),
            args,
            env,
        });
    }
    start_described(&members, 2381, &["/readyz".to_string(), "/livez".to_string()]);
}

/// Kubernetes' `$(VAR)` references to variables defined earlier.
fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

#[test]
fn the_statefulset_members_start_with_its_flags_and_pass_its_probes() {
    let docs = yaml_documents(&deploy_dir().join("statefulset.yaml"));
    let of_kind = |kind: &'static str| docs.iter().filter(move |d| d["kind"] == kind);
    let sts = of_kind("StatefulSet").next().expect("a StatefulSet");
    let service_name = sts["spec"]["serviceName"].as_str().expect("serviceName");
    let headless = of_kind("Service")
        .find(|s| s["metadata"]["name"] == service_name)
        .expect("the StatefulSet's service");
    assert_eq!(headless["spec"]["clusterIP"], "None", "the governing service is headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas") as usize;
    assert_eq!(replicas, 3);
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let container_port = |port: &serde_json::Value| -> u16 {
        match port {
            serde_json::Value::Number(n) => n.as_u64().expect("port") as u16,
            name => container["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| p["name"] == *name)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no container port {name}")) as u16,
        }
    };
    let mut probe_port = None;
    let mut probes = Vec::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        let port = container_port(&get["port"]);
        assert!(probe_port.is_none_or(|p| p == port), "probes on one port");
        probe_port = Some(port);
        probes.push(get["path"].as_str().expect("probe path").to_string());
    }
    assert!(probes.contains(&"/readyz".to_string()) && probes.contains(&"/livez".to_string()));
    let namespace = "default";
    let base = sts["metadata"]["name"].as_str().expect("name");
    let members: Vec<Described> = (0..replicas)
        .map(|i| {
            let pod = format!("{base}-{i}");
            let mut env = image_env();
            for var in container["env"].as_array().expect("env") {
                let name = var["name"].as_str().expect("env name").to_string();
                let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => pod.clone(),
                    Some("metadata.namespace") => namespace.to_string(),
                    Some(other) => panic!("unexpected fieldRef {other}"),
                    None => expand(var["value"].as_str().expect("env value"), &env),
                };
                env.retain(|(k, _)| *k != name);
                env.push((name, value));
            }
            let command: Vec<String> = container["command"].as_array().expect("command").iter().map(str_of).collect();
            assert_eq!(command, ["/usr/local/bin/cairn"], "the image's binary");
            let args = container["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| expand(&str_of(a), &env))
                .collect();
            Described {
                host: format!("{pod}.{service_name}.{namespace}.svc"),
                args,
                env,
            }
        })
        .collect();
    start_described(&members, probe_port.expect("a probe port"), &probes);
}
