//! Containers: processes whose TLS library is a file the host does not have at that path, with
//! the real agent and the real eBPF programs (root).
//!
//! - A process in a mount namespace of its own (`unshare --mount`) where another build of libssl
//!   is bind-mounted over the system path: the agent must probe that file (its own device and
//!   inode, not the host's libssl) and record the calls, for a root client (the OpenAI SDK) and
//!   for `nobody`.
//! - A process in a private root (`chroot`) whose paths are attacker-shaped: its libssl sits at
//!   the absolute path of a host file the agent could be tricked into opening, behind an absolute
//!   symlink. The agent must probe the file really mapped and never the host file at that path;
//!   the fallback open (`/proc/PID/root`, used without CAP_SYS_ADMIN) must resolve the container's
//!   symlinks inside the container's root.
//!
//! Another libssl build is made here cheaply: a copy of the system libssl with a section added
//! by `objcopy` (different bytes, a new inode, the same code), so the test needs nothing beyond
//! binutils and util-linux.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use llmprobe::probes::discovery::{Refusal, open_in_root};
use llmprobe_tests::*;

const WAIT: Duration = Duration::from_secs(20);
/// The host's Python, which `nobody` can run (the test venv lives under root's home).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The system libssl, its symlinks resolved (the file a bind mount must cover).
fn system_libssl() -> PathBuf {
    let out = Command::new("ldconfig")
        .arg("-p")
        .output()
        .expect("ldconfig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let p = text
        .lines()
        .filter(|l| l.trim_start().starts_with("libssl.so.3"))
        .filter_map(|l| l.rsplit("=> ").next())
        .map(|p| PathBuf::from(p.trim()))
        .find(|p| p.is_absolute())
        .expect("ldconfig -p lists no libssl.so.3");
    std::fs::canonicalize(&p).expect("resolve the system libssl")
}

/// A different build of libssl at `dst`: the system one with a section `tag` added (new bytes,
/// new inode, same code), readable by everyone. Returns its (device, inode).
fn other_libssl(dst: &Path, tag: &str) -> (u64, u64) {
    let payload = dst.with_extension("tag");
    std::fs::write(&payload, tag).expect("write section payload");
    let st = Command::new("objcopy")
        .arg(format!(
            "--add-section=.llmprobe_{tag}={}",
            payload.display()
        ))
        .arg(system_libssl())
        .arg(dst)
        .status()
        .expect("objcopy (binutils) is needed by this test");
    assert!(st.success(), "objcopy failed");
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let md = std::fs::metadata(dst).expect("stat the copy");
    let host = std::fs::metadata(system_libssl()).expect("stat the system libssl");
    assert_ne!(
        std::fs::read(dst).expect("read the copy"),
        std::fs::read(system_libssl()).expect("read libssl"),
        "the copy must differ from the system libssl"
    );
    assert_ne!((md.dev(), md.ino()), (host.dev(), host.ino()));
    (md.dev(), md.ino())
}

/// The agent's log line for OpenSSL uprobes attached to the file (device, inode).
fn attached_line(agent: &Agent, id: (u64, u64)) -> Option<String> {
    let needle = format!("(device {:#x}, inode {},", id.0, id.1);
    agent
        .log_text()
        .lines()
        .find(|l| l.contains("OpenSSL uprobes to") && l.contains(&needle))
        .map(str::to_owned)
}

/// `program args...` run in a new mount namespace where `lib` is bind-mounted over the system
/// libssl (the host's mount table is untouched: private propagation).
fn in_namespace_with(lib: &Path, program: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" "$1" && shift && exec "$@""#)
        .arg(lib)
        .arg(system_libssl())
        .arg(program);
    c
}

#[test]
fn a_mount_namespace_with_its_own_libssl_is_probed_through_its_file() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("ctr-ns");
    let server = TestServer::start(true, 50, 20, 5);
    let mut agent = Agent::start(&dir, false, &[]);
    let host = std::fs::metadata(system_libssl()).expect("stat libssl");
    let host_id = (host.dev(), host.ino());

    // Root: the OpenAI SDK, its libssl the namespace's.
    let lib = dir.join("libssl-ns.so.3");
    let id = other_libssl(&lib, "ns");
    let mut cmd = in_namespace_with(&lib, &python());
    cmd.arg(assets().join("clients").join("openai_client.py"))
        .args(["--base-url", &server.base_url(), "--ca"])
        .arg(certs().0)
        .args(["--stream", "--include-usage", "--model", "ns-root"]);
    let run = run_client(cmd);
    let recs = agent.wait_records("the namespaced SDK call", WAIT, |r| {
        of(r, run.pid, "client").len() == 1
    });
    let r = &of(&recs, run.pid, "client")[0];
    assert_eq!(r["request_model"], "ns-root", "{r}");
    assert_eq!(r["tls"], true, "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    // The namespace's libssl was mapped (its inode in the client's maps was the copy's, checked
    // by the agent's log), and the probes went onto that file, not the host's.
    let line = attached_line(&agent, id).unwrap_or_else(|| {
        panic!(
            "no uprobes attached to the namespace's libssl {id:?}:\n{}",
            agent.log_text()
        )
    });
    assert!(
        line.contains("libssl.so.3"),
        "the path as the namespace names it: {line}"
    );
    assert_ne!(id, host_id);

    // `nobody`, with another build again, through the standard library's ssl.
    let lib2 = dir.join("libssl-nobody.so.3");
    let id2 = other_libssl(&lib2, "nobody");
    let mut cmd = in_namespace_with(&lib2, Path::new("setpriv"));
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        SYSTEM_PYTHON,
    ])
    .arg(assets().join("clients").join("tls_loop.py"))
    // It waits 300 ms after loading libssl (`import ssl`): discovery places the probes within
    // tens of milliseconds of the mmap (bench_first_calls.py); sooner calls may be missed.
    .args(["--port", &server.port.to_string(), "--calls", "2"])
    .args(["--sleep-before", "0.3"]);
    let run = run_client(cmd);
    let pid = run.json["pid"].as_u64().expect("tls_loop's pid") as u32;
    let recs = agent.wait_records("the namespaced calls of nobody", WAIT, |r| {
        of(r, pid, "client").len() == 2
    });
    for r in of(&recs, pid, "client") {
        assert_eq!(r["request_model"], "scope-test", "{r}");
        assert_eq!(r["tls"], true, "{r}");
    }
    assert!(
        attached_line(&agent, id2).is_some(),
        "no uprobes attached to nobody's libssl {id2:?}:\n{}",
        agent.log_text()
    );
    assert!(agent.alive(), "the agent died");
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
}

/// A private root whose paths name host files: the container's libssl lives at the absolute
/// path of a host decoy (itself a valid libssl, so a wrong open would show as uprobes on it),
/// reached through an absolute symlink, and another symlink points at `/etc/shadow`. The client
/// runs as `nobody` inside the root.
#[test]
fn a_private_root_cannot_point_the_agent_at_host_files() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("ctr-root");
    let server = TestServer::start(true, 50, 20, 5);
    let mut agent = Agent::start(&dir, false, &[]);

    // The host decoy: a libssl at a host path the container will name.
    let decoy_dir = dir.join("decoy");
    std::fs::create_dir_all(&decoy_dir).expect("dir");
    let decoy = decoy_dir.join("libssl.so.3");
    let decoy_id = other_libssl(&decoy, "decoy");

    // The root: the host's /usr read-only, the merged-/usr links, and the container's own files.
    let root = dir.join("root");
    for d in ["usr", "work", "opt/ssl", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("dir");
    }
    for l in ["lib", "lib64", "bin", "sbin"] {
        std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l)).expect("symlink");
    }
    // Inside the root, the decoy's host path holds the container's libssl.
    let inner = root.join(decoy.strip_prefix("/").expect("absolute"));
    std::fs::create_dir_all(inner.parent().expect("parent")).expect("dir");
    let inner_id = other_libssl(&inner, "inner");
    std::os::unix::fs::symlink(&decoy, root.join("opt/ssl/libssl.so.3")).expect("symlink");
    std::os::unix::fs::symlink("/etc/shadow", root.join("opt/ssl/shadow.so")).expect("symlink");
    std::fs::copy(
        assets().join("clients").join("tls_loop.py"),
        root.join("work/tls_loop.py"),
    )
    .expect("copy tls_loop.py");
    for p in [&root, &root.join("work"), &root.join("tmp")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }

    let script = format!(
        r#"mount --bind -o ro /usr "$0/usr" && exec chroot "$0" /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all -- env LD_PRELOAD=/opt/ssl/libssl.so.3 {SYSTEM_PYTHON} /work/tls_loop.py --port {} --calls 2 --sleep-before 0.3 --hold 3"#,
        server.port
    );
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(&script)
        .arg(&root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the contained client");
    let pid = child.id();
    let recs = agent.wait_records("the contained client's calls", WAIT, |r| {
        of(r, pid, "client").len() == 2
    });
    for r in of(&recs, pid, "client") {
        assert_eq!(r["request_model"], "scope-test", "{r}");
        assert_eq!(r["tls"], true, "{r}");
    }
    // The probes are on the file really mapped, never on the host file at the same path.
    assert!(
        attached_line(&agent, inner_id).is_some(),
        "no uprobes on the container's libssl {inner_id:?}:\n{}",
        agent.log_text()
    );
    assert!(
        attached_line(&agent, decoy_id).is_none(),
        "the agent probed the host decoy at the container's path:\n{}",
        agent.log_text()
    );
    // The fallback open (no CAP_SYS_ADMIN: no map_files) resolves inside the container's root:
    // the mapped path gives the container's file, its symlinks never reach the host.
    let proc_root = PathBuf::from(format!("/proc/{pid}/root"));
    let f = open_in_root(&proc_root, &decoy).expect("the container's libssl, in its root");
    assert_eq!(f.file_id, inner_id);
    let f = open_in_root(&proc_root, Path::new("/opt/ssl/libssl.so.3"))
        .expect("the container's symlink, resolved in its root");
    assert_eq!(f.file_id, inner_id);
    assert_eq!(
        open_in_root(&proc_root, Path::new("/opt/ssl/shadow.so")).map(|_| ()),
        Err(Refusal::OpenFailed),
        "a container's symlink to /etc/shadow must not reach the host's"
    );
    let out = child.wait_with_output().expect("wait the contained client");
    assert!(
        out.status.success(),
        "the contained client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.alive(), "the agent died");
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
}
