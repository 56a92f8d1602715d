//! `cairnctl status` and `cairnctl check` against a running member.

use harness::{cairn_bin, connect, Server};

fn cairnctl(args: &[&str]) -> (i32, String) {
    let bin = cairn_bin().with_file_name("cairnctl");
    let out = std::process::Command::new(&bin).args(args).output().expect("run cairnctl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn status_and_check() {
    let srv = Server::start_target();
    let ep = srv.endpoint();
    let mut c = connect(&ep).await;
    for i in 0..5 {
        c.put(format!("k{i}"), "v", None).await.expect("put");
    }

    let (code, out) = cairnctl(&["--endpoints", &ep, "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(&format!("{ep}: member ")), "{out}");
    assert!(out.contains("revision 6,"), "{out}");

    // The same member twice must agree with itself.
    let both = format!("{ep},{ep}");
    let (code, out) = cairnctl(&["--endpoints", &both, "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("members agree\n"), "{out}");

    // An unreachable member makes status fail.
    let (code, out) = cairnctl(&["--endpoints", &format!("{ep},http://127.0.0.1:1"), "--timeout", "1", "status"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("http://127.0.0.1:1: unavailable"), "{out}");
}
