//! Attack tests (threat model in the README): each attack is run by an unprivileged process
//! (`nobody`, through `llmprobe_tests::as_nobody`) against the real agent with the real eBPF
//! programs. During each: the agent stays alive and under its memory budget, a well-behaved
//! client's LLM calls made at the same time are still recorded, and every refusal is counted.
//!
//! Discovery (finding the files that carry OpenSSL) is the target here: the attacker controls
//! which files its processes map, what those files contain, and what their paths resolve to.
//! The well-behaved client is curl through a fresh copy of libssl (`LD_PRELOAD`): a file only
//! discovery can find (it is in no linker cache), so its record proves discovery still works
//! after the attack.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;

const WAIT: Duration = Duration::from_secs(20);
/// The agent's resident memory must stay under this during an attack.
const MEMORY_BUDGET: u64 = 512 << 20;
/// The host's Python, which `nobody` can run (the test venv lives under root's home).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn system_lib(name: &str) -> PathBuf {
    let out = Command::new("ldconfig")
        .arg("-p")
        .output()
        .expect("ldconfig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.trim_start().starts_with(name))
        .filter_map(|l| l.rsplit("=> ").next())
        .map(|p| PathBuf::from(p.trim()))
        .find(|p| p.is_absolute())
        .unwrap_or_else(|| panic!("ldconfig -p lists no {name}"))
}

/// Writes a script the attacker runs.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    p
}

/// The well-behaved client: curl, streaming one chat call over TLS, with its OpenSSL taken from
/// a fresh copy of libssl (a new inode that only discovery can find). `sh` maps the copy first
/// (exec, scan), then becomes curl a moment later, so the probes are in place before the call.
fn curl_through_fresh_libssl(server: &TestServer, dir: &Path, n: u32) -> ClientRun {
    let copy_dir = dir.join(format!("fresh-libssl-{n}"));
    std::fs::create_dir_all(&copy_dir).expect("dir");
    let copy = copy_dir.join("libssl.so.3");
    std::fs::copy(system_lib("libssl.so.3"), &copy).expect("copy libssl");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"sleep 0.5; exec curl "$@""#)
        .arg("sh")
        .args(["-s", "-N", "--fail", "-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {SECRET_KEY}")])
        .args(["-d", r#"{"model":"well-behaved","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello to the test server"}]}"#])
        .arg("--cacert")
        .arg(certs().0)
        .arg(format!("{}/chat/completions", server.base_url()))
        .env("LD_PRELOAD", &copy);
    run_client(cmd)
}

/// Asserts the well-behaved call was recorded (client side, through the fresh libssl).
fn assert_recorded(agent: &Agent, run: &ClientRun) {
    assert!(run.stdout.contains("data: [DONE]"), "{}", run.stdout);
    let recs = agent.wait_records("the well-behaved curl call", WAIT, |r| {
        of(r, run.pid, "client").len() == 1
    });
    let r = &of(&recs, run.pid, "client")[0];
    assert_eq!(r["request_model"], "well-behaved", "{r}");
    assert_eq!(r["tls"], true, "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
}

fn assert_healthy(agent: &mut Agent) {
    assert!(
        agent.alive(),
        "the agent died during the attack:\n{}",
        agent.log_text()
    );
    let (rss, _) = agent.memory();
    assert!(rss < MEMORY_BUDGET, "agent RSS {rss} over budget");
}

/// Waits until the dropped counter for `reason` reaches `at_least`; returns its value.
fn wait_dropped(agent: &Agent, reason: &str, at_least: f64) -> f64 {
    let needle = format!("reason=\"{reason}\"");
    let t0 = Instant::now();
    loop {
        let v = agent
            .metric("llmprobe_dropped_total", &[&needle])
            .unwrap_or(0.0);
        if v >= at_least {
            return v;
        }
        assert!(
            t0.elapsed() < WAIT,
            "llmprobe_dropped_total{{{needle}}} = {v}, expected >= {at_least}; metrics:\n{}\nlog:\n{}",
            agent.scrape(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Maps many copies of a big ELF executable and truncates each right after mapping it, at
/// moments spread around discovery's scan, then keeps them mapped.
const TRUNCATOR: &str = r#"
import mmap, os, random, sys, time
src, d, n, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
data = open(src, 'rb').read()
maps = []
for i in range(n):
    p = os.path.join(d, 'lib%d.so' % i)
    with open(p, 'wb') as f:
        f.write(data)
    fd = os.open(p, os.O_RDWR)
    maps.append(mmap.mmap(fd, len(data), mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_EXEC))
    # Around the agent's 20 ms settle delay, when a reader of a mapping would be mid-parse.
    time.sleep(0.015 + random.random() * 0.015)
    os.ftruncate(fd, 64 if i % 2 == 0 else 4096)
    os.close(fd)
print('DONE', flush=True)
# Keep rewriting one of them while the agent's later scans run.
end = time.time() + hold
fd = os.open(os.path.join(d, 'lib0.so'), os.O_RDWR)
while time.time() < end:
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, 100)
time.sleep(0.1)
"#;

/// Truncating a file while (or before) the agent reads it must be a counted short read, not a
/// SIGBUS: the agent reads with bounded preads. Before the fix the agent mapped each file and
/// died of SIGBUS when a page it touched was truncated away.
#[test]
fn truncating_a_mapped_file_while_it_is_read() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("attack-truncate");
    let work = dir.join("files");
    std::fs::create_dir_all(&work).expect("dir");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let server = TestServer::start(true, 50, 10, 6);
    let mut agent = Agent::start(&dir, false, &[]);
    let s = script(&dir, "truncator.py", TRUNCATOR);
    // libcrypto: a big ELF (thousands of symbols), a long parse for a mapping reader.
    let mut attacker = Proc {
        child: as_nobody(SYSTEM_PYTHON)
            .arg(&s)
            .arg(system_lib("libcrypto.so.3"))
            .arg(&work)
            .args(["120", "6"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start attacker"),
    };
    // A call during the attack...
    let during = curl_through_fresh_libssl(&server, &dir, 1);
    let stdout = attacker.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("attacker");
    assert_eq!(line.trim(), "DONE");
    assert_healthy(&mut agent);
    assert_recorded(&agent, &during);
    // ...and one after it.
    let after = curl_through_fresh_libssl(&server, &dir, 2);
    assert_recorded(&agent, &after);
    let short = wait_dropped(&agent, "discovery_short_read", 1.0);
    eprintln!("short reads counted: {short}");
    assert_healthy(&mut agent);
    assert!(attacker.child.wait().expect("wait").success());
    assert!(agent.stop(), "agent did not exit cleanly");
}

/// Run in a user and mount namespace as `nobody`: opens `lib` (a copy of libssl), then chroots
/// into a fresh tmpfs where the same path is a FIFO (`fifo`) or an absolute symlink to a host
/// file (`symlink`), and only then maps `lib` executable. The kernel reports the mapping under
/// the original path; resolved inside the new root, that path is the FIFO or the symlink.
/// In `fifo` mode it also maps /dev/zero executable (a device file).
const NAMESPACED_MAPPER: &str = r#"
import ctypes, mmap, os, sys, time
mode, lib, host_target, d, hold = sys.argv[1:6]
libc = ctypes.CDLL(None, use_errno=True)
def mount_tmpfs(dst):
    if libc.mount(b'none', dst.encode(), b'tmpfs', 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), dst)
fd = os.open(lib, os.O_RDONLY)
dz = os.open('/dev/zero', os.O_RDONLY)
newroot = os.path.join(d, 'newroot')
os.makedirs(newroot, exist_ok=True)
mount_tmpfs(newroot)
inside = newroot + lib
os.makedirs(os.path.dirname(inside))
if mode == 'fifo':
    os.mkfifo(inside)
else:
    os.symlink(host_target, inside)
os.chroot(newroot)
os.chdir('/')
maps = [mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_EXEC)]
if mode == 'fifo':
    maps.append(mmap.mmap(dz, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_EXEC))
print('MAPPED', flush=True)
time.sleep(float(hold))
"#;

/// Starts the namespaced mapper; returns it once it has mapped, with the real file's inode.
fn start_mapper(dir: &Path, mode: &str, host_target: &Path) -> (Proc, u64) {
    let work = dir.join(format!("{mode}-work"));
    let real = work.join("real");
    std::fs::create_dir_all(&real).expect("dir");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let lib = real.join("libssl.so.3");
    std::fs::copy(system_lib("libssl.so.3"), &lib).expect("copy libssl");
    let ino = std::fs::metadata(&lib).expect("stat").ino();
    let s = script(dir, "mapper.py", NAMESPACED_MAPPER);
    let mut cmd = as_nobody("unshare");
    cmd.args(["-Urm", SYSTEM_PYTHON])
        .arg(&s)
        .arg(mode)
        .arg(&lib)
        .arg(host_target)
        .arg(&work)
        .arg("60")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut p = Proc {
        child: cmd.spawn().expect("start mapper"),
    };
    let stdout = p.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("mapper");
    assert_eq!(line.trim(), "MAPPED", "the namespaced mapper failed");
    (p, ino)
}

/// A mapped file whose path, inside the process's root, is now a FIFO: opening the path would
/// block forever (the agent hung in `open` before the fix, so no TLS library was ever found
/// again). The agent opens the mapped file itself and probes it; the device file the attacker
/// maps executable too is refused as not regular.
#[test]
fn a_fifo_in_place_of_a_mapped_file() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("attack-fifo");
    let server = TestServer::start(true, 50, 10, 6);
    let mut agent = Agent::start(&dir, false, &[]);
    let (mapper, ino) = start_mapper(&dir, "fifo", Path::new("/nonexistent"));
    // Give discovery time to scan the mapper, then check it still finds new libraries.
    std::thread::sleep(Duration::from_millis(500));
    let run = curl_through_fresh_libssl(&server, &dir, 1);
    assert_recorded(&agent, &run);
    assert_healthy(&mut agent);
    wait_dropped(&agent, "discovery_not_regular", 1.0);
    // The file really mapped (the libssl copy, by inode) was found and probed.
    let t0 = Instant::now();
    while !agent.log_text().contains(&format!("inode {ino},")) {
        assert!(
            t0.elapsed() < WAIT,
            "the mapped libssl copy (inode {ino}) was not probed:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(mapper);
    assert!(agent.stop(), "agent did not exit cleanly");
}

/// Reports every open of a file with the opener's pid (fanotify, as root), one `OPEN <pid>`
/// line each, after a `WATCHING` line.
const OPEN_WATCHER: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
fd = libc.fanotify_init(0, os.O_RDONLY)  # FAN_CLASS_NOTIF
if fd < 0:
    raise OSError(ctypes.get_errno(), 'fanotify_init')
if libc.fanotify_mark(fd, 1, 0x20, -100, sys.argv[1].encode()) != 0:  # ADD, FAN_OPEN, AT_FDCWD
    raise OSError(ctypes.get_errno(), 'fanotify_mark')
print('WATCHING', flush=True)
while True:
    buf = os.read(fd, 4096)
    off = 0
    while off + 24 <= len(buf):
        event_len, _v, _r, _m, _mask, efd, pid = struct.unpack_from('IBBHQii', buf, off)
        if efd >= 0:
            os.close(efd)
        print('OPEN', pid, flush=True)
        off += max(event_len, 24)
"#;

/// Watches opens of `file`; the returned list fills with opener pids.
fn watch_opens(dir: &Path, file: &Path) -> (Proc, std::sync::Arc<std::sync::Mutex<Vec<u32>>>) {
    let s = script(dir, "open_watcher.py", OPEN_WATCHER);
    let mut p = Proc {
        child: Command::new(SYSTEM_PYTHON)
            .arg(&s)
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the open watcher"),
    };
    let mut lines = BufReader::new(p.child.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(|l| l.ok()).as_deref(),
        Some("WATCHING"),
        "fanotify watcher failed"
    );
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = pids.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if let Some(pid) = l.strip_prefix("OPEN ").and_then(|p| p.parse().ok()) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
            }
        }
    });
    (p, pids)
}

/// A mapped file whose path, inside the process's root, is an absolute symlink to a host file:
/// resolving it from the agent's root would open the host's file. The host file is root-only;
/// fanotify reports who opens it, and the agent must never be one of them (before the fix it
/// opened it on the first scan of the attacker).
#[test]
fn a_symlink_to_a_host_file_inside_a_mount_namespace() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("attack-symlink");
    let host = dir.join("host-only");
    std::fs::create_dir_all(&host).expect("dir");
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let marker = host.join("secret.so");
    std::fs::write(&marker, b"host secret").expect("write marker");
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let server = TestServer::start(true, 50, 10, 6);
    let mut agent = Agent::start(&dir, false, &[]);
    let agent_pid = agent.pid().expect("agent pid");
    let (_watcher, openers) = watch_opens(&dir, &marker);
    let (mapper, ino) = start_mapper(&dir, "symlink", &marker);
    // The agent scans the mapper on its mmap (and again, rate-limited, on its later ones).
    std::thread::sleep(Duration::from_secs(3));
    let seen = openers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        !seen.contains(&agent_pid),
        "the agent (pid {agent_pid}) opened the host file behind the container's symlink; openers: {seen:?}"
    );
    let run = curl_through_fresh_libssl(&server, &dir, 1);
    assert_recorded(&agent, &run);
    assert_healthy(&mut agent);
    // The file really mapped (the libssl copy, by inode) was probed instead.
    assert!(
        agent.log_text().contains(&format!("inode {ino},")),
        "the mapped libssl copy (inode {ino}) was not probed:\n{}",
        agent.log_text()
    );
    let seen = openers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!seen.contains(&agent_pid), "openers: {seen:?}");
    drop(mapper);
    assert!(agent.stop(), "agent did not exit cleanly");
}

/// Maps a file executable, says so, and exits after a while.
const SHORT_LIVED_MAPPER: &str = r#"
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_EXEC)
print('MAPPED', flush=True)
time.sleep(float(sys.argv[2]))
"#;

/// Files an attacker (or anyone) maps and unmaps must not keep their probes forever: once no
/// process has mapped a file for two full scans (30 s apart), its probes are detached and the
/// attached-files gauge goes down. Before, every file's probes stayed until the agent exited.
#[test]
fn probes_of_files_no_one_maps_are_released() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("attack-release");
    let lib = dir.join("libssl-short-lived.so.3");
    std::fs::copy(system_lib("libssl.so.3"), &lib).expect("copy libssl");
    let ino = std::fs::metadata(&lib).expect("stat").ino();
    let server = TestServer::start(true, 50, 10, 6);
    // Full scans every 5 s (the default is 30 s): the release waits for two of them.
    let mut agent = Agent::start(&dir, false, &["--rescan-interval", "5"]);
    let s = script(&dir, "short_lived.py", SHORT_LIVED_MAPPER);
    let mut mapper = Proc {
        child: as_nobody(SYSTEM_PYTHON)
            .arg(&s)
            .arg(&lib)
            .arg("3")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mapper"),
    };
    let stdout = mapper.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("mapper");
    assert_eq!(line.trim(), "MAPPED");
    let attached = format!("inode {ino},");
    let released = format!("inode {ino}): no traced process maps it");
    let gauge = |a: &Agent| {
        a.metric("llmprobe_tls_libraries_attached", &[])
            .unwrap_or(-1.0)
    };
    let t0 = Instant::now();
    while !agent.log_text().contains(&attached) {
        assert!(t0.elapsed() < WAIT, "not attached:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let with_it = gauge(&agent);
    assert!(with_it >= 2.0, "gauge {with_it}: libssl and the copy");
    assert!(mapper.child.wait().expect("wait").success());
    // Two full scans without a mapping: between 5 and 15 s after it went away.
    let t0 = Instant::now();
    while !agent.log_text().contains(&released) {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the probes of the unmapped copy were not released:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The gauge follows: it must equal the files attached minus those released, as logged
    // (other processes on the machine may map new TLS libraries meanwhile).
    let logged = |log: &str| {
        let attached = log
            .lines()
            .filter(|l| l.contains("] attached ") && l.contains(" uprobes to "))
            .count() as f64;
        let released = log
            .lines()
            .filter(|l| l.contains("released the ") && l.contains(" uprobes of "))
            .count() as f64;
        attached - released
    };
    let t0 = Instant::now();
    let without = loop {
        let before = logged(&agent.log_text());
        let g = gauge(&agent);
        if g == before && before == logged(&agent.log_text()) {
            break g;
        }
        assert!(
            t0.elapsed() < WAIT,
            "attached-files gauge {g}, the log says {before}:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("attached files: {with_it} while mapped, {without} after release");
    assert!(without >= 1.0, "the linker-cache libssl stays attached");
    assert!(
        agent.log_text().matches(&released).count() == 1,
        "released once"
    );
    // Discovery still works after the release.
    let run = curl_through_fresh_libssl(&server, &dir, 1);
    assert_recorded(&agent, &run);
    assert_healthy(&mut agent);
    assert!(agent.stop(), "agent did not exit cleanly");
}
