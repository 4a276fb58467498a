//! The deployment files (`deploy/`), checked with the real tools: the kustomization rendered by
//! kubectl's kustomize and every manifest validated against the Kubernetes OpenAPI schemas
//! (`kubernetes-validate`), the Dockerfile linted by hadolint, the systemd unit checked by
//! `systemd-analyze verify`, the pod join rules by `promtool`; and the capability set the
//! DaemonSet and the unit grant, checked against the real agent: with only those capabilities it
//! captures TLS and plain HTTP calls, and without any one of them it misses calls.
//!
//! The tools are installed by `cargo xtask test` (kubectl from Debian's `kubernetes-client` where
//! there is none, systemd, prometheus for promtool, and a venv `target/deploy-venv` with
//! `tests/assets/requirements-deploy.txt`, passed as `LLMPROBE_DEPLOY_TOOLS`). A missing tool fails
//! the test: nothing here is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use llmprobe_tests::{
    Agent, TestServer, as_nobody, assets, certs, e2e_enabled, openai_client, repo_root, run_client,
    scratch, scratch_for_nobody, serial,
};
use serde_json::Value;

/// What the agent needs, in Kubernetes' spelling (see the header of daemonset.yaml).
const CAPABILITIES: [&str; 3] = ["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"];

/// Resident size of the agent beyond its configured buffers: binary, runtime, maps (measured
/// idle: 43 MiB) and the tokenizer (~15 MiB), rounded up.
const AGENT_BASE_BYTES: u64 = 64 << 20;

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// A tool of the deploy venv (`LLMPROBE_DEPLOY_TOOLS`, else `target/deploy-venv/bin`).
fn venv_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("LLMPROBE_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("deploy-venv").join("bin"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask test` installs it (pip install -r tests/assets/requirements-deploy.txt in target/deploy-venv)",
        p.display()
    );
    p
}

/// A tool on PATH (installed with apt by `cargo xtask test`).
fn system_tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: `cargo xtask test` installs it (Debian package {package})")
    })
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `kubectl kustomize deploy/kubernetes`.
fn render() -> String {
    let out = output(
        Command::new(system_tool("kubectl", "kubernetes-client"))
            .arg("kustomize")
            .arg(deploy_dir().join("kubernetes")),
    );
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every document of a YAML stream, as JSON (PyYAML of the deploy venv).
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(venv_tool("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python of the deploy venv");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(yaml.as_bytes()).expect("write yaml");
    }
    let out = child.wait_with_output().expect("yaml to json");
    assert!(out.status.success(), "YAML does not parse");
    match serde_json::from_slice(&out.stdout).expect("json") {
        Value::Array(v) => v,
        other => panic!("not a list of documents: {other}"),
    }
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} expected in the rendered manifests"
    );
    found[0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in an argument list.
fn arg_value<'a>(args: &'a [String], flag: &str) -> &'a str {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{flag} missing from the container's arguments {args:?}"))
}

/// Bytes of a Kubernetes quantity (`384Mi`, `1Gi`) or an llmprobe size (`16M`, bytes).
fn bytes(q: &str) -> u64 {
    let (num, mult) = [
        ("Gi", 1u64 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("not a size: {q}"))
        * mult
}

/// The `-t` tag of the build command documented at the top of deploy/Dockerfile.
fn dockerfile_tag(dockerfile: &str) -> String {
    dockerfile
        .lines()
        .find_map(|l| {
            let l = l.trim_start_matches('#').trim();
            l.strip_prefix("docker build -f deploy/Dockerfile -t ")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        })
        .expect("deploy/Dockerfile documents `docker build -f deploy/Dockerfile -t IMAGE .`")
}

fn workspace_version() -> String {
    let toml = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace version")
        .to_owned()
}

/// `Key=value` lines of a systemd unit or environment file.
fn ini_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= missing"))
        .trim()
        .to_owned()
}

#[test]
fn kustomization_renders_and_validates_against_the_kubernetes_schemas() {
    let rendered = render();
    let dir = scratch("kubernetes-validate");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, &rendered).expect("write rendered");
    let validate = venv_tool("kubernetes-validate");
    // 1.30: the first release with securityContext.appArmorProfile; 1.37: the newest schemas.
    for version in ["1.30.0", "1.37.0"] {
        let out = output(
            Command::new(&validate)
                .args(["--strict", "-k", version])
                .arg(&file)
                .arg(
                    deploy_dir()
                        .join("kubernetes")
                        .join("id-key-secret.example.yaml"),
                ),
        );
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "manifests invalid for Kubernetes {version}:\n{report}"
        );
        for resource in [
            "namespace/llmprobe",
            "serviceaccount/llmprobe",
            "service/llmprobe",
            "daemonset/llmprobe",
            "secret/llmprobe-id-key",
        ] {
            assert!(
                report.contains(&format!("passed for resource {resource} ")),
                "{resource} was not validated against {version}:\n{report}"
            );
        }
        // The one kind without a bundled schema: its structure is checked by the next test.
        assert!(report.contains("kind ServiceMonitor"), "{report}");
    }
    // The validator really validates: a wrong type in the DaemonSet is refused.
    let broken = rendered.replacen("hostPID: true", "hostPID: \"yes\"", 1);
    assert_ne!(broken, rendered);
    std::fs::write(&file, broken).expect("write broken");
    let out = output(Command::new(&validate).arg("--strict").arg(&file));
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted hostPID: \"yes\""
    );
}

#[test]
fn daemonset_grants_what_the_agent_needs() {
    let docs = yaml_docs(&render());
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "the agent resolves host pids");
    assert_ne!(pod["hostNetwork"], true);
    assert_eq!(
        pod["tolerations"][0]["operator"], "Exists",
        "every node, whatever its taints"
    );
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert!(pod["priorityClassName"].is_string());
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Capabilities: exactly the documented set, nothing privileged.
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut added = strs(&sc["capabilities"]["add"]);
    added.sort();
    let mut want: Vec<String> = CAPABILITIES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        added, want,
        "the capabilities checked by agent_with_only_the_documented_capabilities"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);

    // tracefs from the host, where the agent looks for it.
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let tracefs = mounts
        .iter()
        .find(|m| m["mountPath"] == "/sys/kernel/tracing")
        .expect("tracefs mounted at /sys/kernel/tracing");
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == tracefs["name"]))
        .expect("the tracefs volume");
    assert_eq!(volume["hostPath"]["path"], "/sys/kernel/tracing");

    // The image runs `llmprobe run`: the arguments are run's options, /metrics on the pod's IP.
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("deploy/Dockerfile");
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/llmprobe\", \"run\"]"),
        "the Dockerfile's ENTRYPOINT is `llmprobe run`"
    );
    let args = strs(&c["args"]);
    assert_ne!(args.first().map(String::as_str), Some("run"));
    let metrics_addr = arg_value(&args, "--metrics-addr");
    let (host, port) = metrics_addr.rsplit_once(':').expect("host:port");
    assert_eq!(
        host, "0.0.0.0",
        "reachable by Prometheus on the pod network"
    );
    let port: u64 = port.parse().expect("port");
    let ports = c["ports"].as_array().expect("ports");
    let metrics_port = ports
        .iter()
        .find(|p| p["containerPort"] == port)
        .expect("a containerPort for --metrics-addr");
    let port_name = metrics_port["name"].as_str().expect("named port");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/metrics", "{probe}");
        let p = &c[probe]["httpGet"]["port"];
        assert!(
            *p == port_name || *p == port,
            "{probe} port {p} is not the metrics port {port}"
        );
    }

    // The image is the one deploy/Dockerfile documents, at the workspace's version.
    let image = c["image"].as_str().expect("image");
    assert_eq!(image, dockerfile_tag(&dockerfile));
    assert!(
        image.ends_with(&format!(":{}", workspace_version())),
        "{image}"
    );

    // Memory: the limit holds the agent's configured buffers, its ring buffer and its base.
    let memory_limit = bytes(arg_value(&args, "--memory-limit"));
    let ring = bytes(arg_value(&args, "--ring-buffer-size"));
    let limit = bytes(
        c["resources"]["limits"]["memory"]
            .as_str()
            .expect("memory limit"),
    );
    let request = bytes(
        c["resources"]["requests"]["memory"]
            .as_str()
            .expect("memory request"),
    );
    assert!(
        limit >= memory_limit + ring + AGENT_BASE_BYTES,
        "memory limit {limit} < --memory-limit {memory_limit} + ring {ring} + base {AGENT_BASE_BYTES}"
    );
    assert!(request <= limit && request >= AGENT_BASE_BYTES);

    // The systemd unit grants the same capabilities and the same memory.
    let unit = std::fs::read_to_string(deploy_dir().join("systemd").join("llmprobe.service"))
        .expect("unit");
    let env = std::fs::read_to_string(deploy_dir().join("systemd").join("llmprobe.env"))
        .expect("env file");
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let mut caps: Vec<String> = ini_value(&unit, key)
            .split_whitespace()
            .map(|c| c.trim_start_matches("CAP_").to_owned())
            .collect();
        caps.sort();
        assert_eq!(caps, want, "{key} of llmprobe.service");
    }
    assert_eq!(
        bytes(&ini_value(&env, "LLMPROBE_MEMORY_LIMIT")),
        memory_limit
    );
    assert_eq!(bytes(&ini_value(&env, "LLMPROBE_RING_BUFFER_SIZE")), ring);
    assert_eq!(bytes(&ini_value(&unit, "MemoryMax")), limit);
}

#[test]
fn service_and_servicemonitor_scrape_every_agent_as_job_llmprobe() {
    let docs = yaml_docs(&render());
    let ds = kind(&docs, "DaemonSet");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let svc = kind(&docs, "Service");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: every pod an endpoint"
    );
    let selector = svc["spec"]["selector"].as_object().expect("selector");
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k], v,
            "the Service selects the agent pods ({k})"
        );
    }
    let svc_port = &svc["spec"]["ports"][0];
    let container_port = ds["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == svc_port["targetPort"]))
        .expect("the Service's targetPort names a container port");
    assert_eq!(container_port["containerPort"], svc_port["port"]);

    // Only the scraper's namespace reaches the agents' metrics port.
    let np = kind(&docs, "NetworkPolicy");
    let np_selector = np["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector");
    for (k, v) in np_selector {
        assert_eq!(
            &pod_labels[k], v,
            "the NetworkPolicy selects the agent pods ({k})"
        );
    }
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress"]);
    let rules = np["spec"]["ingress"].as_array().expect("ingress rules");
    assert_eq!(rules.len(), 1, "one way in: {np}");
    assert_eq!(
        rules[0]["ports"][0]["port"],
        container_port["containerPort"]
    );
    assert!(
        rules[0]["from"][0]["namespaceSelector"]["matchLabels"].is_object(),
        "from one namespace only: {np}"
    );

    let sm = kind(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], svc["metadata"]["namespace"]);
    let svc_labels = &svc["metadata"]["labels"];
    let matches = sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!matches.is_empty());
    for (k, v) in matches {
        assert_eq!(
            &svc_labels[k], v,
            "the ServiceMonitor selects the Service ({k})"
        );
    }
    // job = the value of the Service label named by jobLabel: what the alert rules select.
    let job_label = sm["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(svc_labels[job_label], "llmprobe");
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], svc_port["name"]);
    assert_eq!(endpoints[0]["path"], "/metrics");
    // Only fields of the CRD's endpoint schema (monitoring.coreos.com/v1 Endpoint).
    let known = [
        "port",
        "path",
        "scheme",
        "interval",
        "scrapeTimeout",
        "relabelings",
        "metricRelabelings",
        "honorLabels",
    ];
    for k in endpoints[0].as_object().expect("endpoint").keys() {
        assert!(known.contains(&k.as_str()), "unknown endpoint field {k}");
    }
    for r in endpoints[0]["relabelings"].as_array().expect("relabelings") {
        let action = r["action"].as_str().expect("action");
        assert!(["replace", "labeldrop"].contains(&action), "{action}");
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = venv_tool("hadolint");
    let out = output(Command::new(&hadolint).arg(deploy_dir().join("Dockerfile")));
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "hadolint deploy/Dockerfile:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // hadolint really lints: an unpinned, uncleaned apt-get install is reported.
    let dir = scratch("hadolint");
    let bad = dir.join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y curl\n",
    )
    .expect("write");
    let out = output(Command::new(&hadolint).arg(&bad));
    assert!(!out.status.success(), "hadolint accepted a bad Dockerfile");
    // Every path the build copies exists, and the context's ignore file lets it through.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("read");
    let ignore = std::fs::read_to_string(deploy_dir().join("Dockerfile.dockerignore"))
        .expect("deploy/Dockerfile.dockerignore");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(repo_root().join(src).exists(), "COPY {src}: missing");
            assert!(
                ignore.lines().any(|l| l == format!("!{src}")),
                "COPY {src} is excluded by Dockerfile.dockerignore"
            );
        }
    }
}

#[test]
fn systemd_unit_verifies() {
    let analyze = system_tool("systemd-analyze", "systemd");
    let unit = std::fs::read_to_string(deploy_dir().join("systemd").join("llmprobe.service"))
        .expect("unit");
    let exec = ini_value(&unit, "ExecStart");
    let installed = exec.split_whitespace().next().expect("ExecStart binary");
    // systemd-analyze checks that ExecStart's binary exists: a copy points at the built one.
    let bin = llmprobe_tests::agent_bin();
    let dir = scratch("systemd");
    let verify = |unit_text: &str| -> String {
        let path = dir.join("llmprobe.service");
        std::fs::write(&path, unit_text).expect("write unit");
        let out = output(Command::new(&analyze).arg("verify").arg(&path));
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success() || !report.is_empty());
        report
    };
    let copy = unit.replacen(
        &format!("ExecStart={installed} "),
        &format!("ExecStart={} ", bin.display()),
        1,
    );
    assert_ne!(copy, unit);
    let report = verify(&copy);
    assert!(
        report.trim().is_empty(),
        "systemd-analyze verify:\n{report}"
    );
    // It really checks: a misspelt hardening directive is reported.
    let report = verify(&copy.replacen("ProtectSystem=", "ProtectSytem=", 1));
    assert!(report.contains("ProtectSytem"), "{report}");
}

#[test]
fn pod_join_rules_pass_promtool() {
    let promtool = system_tool("promtool", "prometheus");
    let dir = deploy_dir().join("kubernetes");
    let out = output(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "rules",
        "llmprobe-pods.rules.yml",
    ]));
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = output(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "llmprobe-pods.rules.test.yml",
    ]));
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The DaemonSet's arguments for the agent, less --jsonl and --metrics-addr (the harness sets them).
fn daemonset_args() -> Vec<String> {
    let docs = yaml_docs(&render());
    let args = strs(&kind(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]);
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--jsonl" || a == "--metrics-addr" {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

/// The agent with only `caps` (lower case, setpriv's spelling) in its bounding set, uid 0: what a
/// container with `drop: [ALL]` and those in `add` gets. `read_only_root`: the root filesystem and
/// tracefs are remounted read-only for it (readOnlyRootFilesystem, ProtectSystem=strict, the
/// DaemonSet's read-only tracefs mount); `dir` stays writable.
fn agent_with(caps: &[&str], dir: &Path, read_only_root: bool) -> Agent {
    let bounding = format!(
        "-all{}",
        caps.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
    let args = daemonset_args();
    let extra: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .chain(["--gpu", "off"])
        .collect();
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro / \
         && mount -o remount,bind,ro /sys/kernel/tracing && exec \"$@\"",
        d = dir.display()
    );
    let mut wrapper: Vec<&str> = Vec::new();
    if read_only_root {
        wrapper.extend([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
        ]);
        wrapper.push(&script);
        wrapper.push("sh");
    }
    wrapper.extend(["setpriv", "--bounding-set", &bounding, "--"]);
    Agent::start_under(&wrapper, dir, false, &extra, &[])
}

/// Node's binary copied into a directory only `nobody` may read: a TLS stack (node links OpenSSL
/// statically) in a file the agent can open only with CAP_DAC_READ_SEARCH, in a process it can
/// inspect only with CAP_SYS_PTRACE... when the process is not its own uid's.
fn private_node(dir: &Path) -> PathBuf {
    let node = Command::new("sh")
        .args(["-c", "command -v node"])
        .output()
        .map(|o| text(&o.stdout).trim().to_owned())
        .expect("node");
    assert!(!node.is_empty(), "node is required by the end-to-end tests");
    let private = dir.join("private");
    std::fs::create_dir_all(&private).expect("mkdir");
    let copy = private.join("node");
    std::fs::copy(&node, &copy).expect("copy node");
    let st = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&private)
        .status()
        .expect("chown");
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    for p in [&private, &copy] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    copy
}

/// Calls the node client makes.
const NODE_CALLS: usize = 3;

/// Streaming calls over TLS from `node` (as `nobody`) to the server: a few, spaced, so that calls
/// after the agent has found the new process's TLS stack exist.
fn node_calls(node: &Path, server: &TestServer) {
    let out = as_nobody(node)
        .arg(assets().join("clients").join("node_fetch.mjs"))
        .args([
            "--url",
            &server.base_url(),
            "--stream",
            "--calls",
            "4",
            "--pause-ms",
            "700",
        ])
        .env("NODE_EXTRA_CA_CERTS", certs().0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("node client");
    assert!(out.status.success(), "node client: {}", text(&out.stderr));
}

/// Stops the agent (its records are complete once it has exited) and returns its records.
fn finish(agent: &mut Agent) -> Vec<Value> {
    assert!(
        agent.stop(),
        "the agent did not exit cleanly:\n{}",
        agent.log_text()
    );
    agent.records()
}

/// Client records of processes named `name`, over TLS or not.
fn clients(records: &[Value], name: &str, tls: bool) -> usize {
    records
        .iter()
        .filter(|r| r["role"] == "client" && r["tls"] == tls && r["comm"].as_str() == Some(name))
        .count()
}

#[test]
fn agent_with_only_the_documented_capabilities() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let t0 = Instant::now();
    let caps: Vec<String> = CAPABILITIES
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let without = |c: &str| -> Vec<&str> { caps.iter().copied().filter(|x| *x != c).collect() };
    let plain = TestServer::start(false, 20, 5, 4);
    let tls = TestServer::start(true, 20, 5, 4);
    let shared = scratch_for_nobody("deploy-caps");
    let node = private_node(&shared);

    // The documented set, root filesystem read-only: plain HTTP and TLS (libssl, python) from
    // root, and TLS from another user's unreadable binary (node).
    let dir = scratch("deploy-caps-all");
    let mut agent = agent_with(&caps, &dir, true);
    run_client(openai_client(&plain, &["--stream"]));
    run_client(openai_client(&tls, &["--stream"]));
    node_calls(&node, &tls);
    let log = agent.log_text();
    let records = finish(&mut agent);
    assert_eq!(
        clients(&records, "python", false),
        1,
        "plain HTTP missed:\n{log}"
    );
    assert_eq!(
        clients(&records, "python", true),
        1,
        "TLS (libssl) missed:\n{log}"
    );
    // The first call may precede the agent's discovery of the new process: the later ones count.
    assert!(
        clients(&records, "node", true) >= NODE_CALLS - 1,
        "TLS (node: another uid, an unreadable file) missed:\n{log}"
    );
    eprintln!(
        "documented capabilities: every call captured ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );

    // CAP_BPF and CAP_PERFMON instead of CAP_SYS_ADMIN: the programs load and plain HTTP is
    // traced, but the uprobes cannot be attached: TLS is missed, and the log says why.
    let dir = scratch("deploy-caps-no-admin");
    let mut narrower = without("sys_admin");
    narrower.extend(["bpf", "perfmon"]);
    let mut agent = agent_with(&narrower, &dir, false);
    run_client(openai_client(&plain, &["--stream"]));
    run_client(openai_client(&tls, &["--stream"]));
    let log = agent.log_text();
    let records = finish(&mut agent);
    assert_eq!(clients(&records, "python", false), 1, "{log}");
    assert_eq!(clients(&records, "python", true), 0, "{log}");
    assert!(
        log.contains("perf_event_open") && log.contains("Permission denied"),
        "no perf_event_open refusal logged:\n{log}"
    );
    eprintln!(
        "without CAP_SYS_ADMIN: TLS missed ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );

    // Without CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH the node process's TLS stack is not probed.
    for missing in ["sys_ptrace", "dac_read_search"] {
        let dir = scratch(&format!("deploy-caps-no-{missing}"));
        let mut agent = agent_with(&without(missing), &dir, false);
        node_calls(&node, &tls);
        let log = agent.log_text();
        let records = finish(&mut agent);
        assert_eq!(
            clients(&records, "node", true),
            0,
            "node's TLS calls captured without {missing}: is it still needed?\n{log}"
        );
        eprintln!(
            "without {missing}: node's TLS missed ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
    }
}
