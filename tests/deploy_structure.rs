//! The deployment files agree with each other and with the daemon: `docker-compose.yml`, the
//! `Dockerfile`, the Kubernetes sidecar in `deploy/kubernetes/`, the Grafana provisioning and
//! dashboards, and the Prometheus configuration.
//!
//! No Docker engine or Kubernetes cluster runs here, so the files are checked for structure:
//! services, healthchecks, dependencies, loopback-only ports, bind mounts that exist, secrets that
//! are declared and never committed, uids and paths that match across files. What the daemon has
//! a say in is asked of the daemon itself: both configurations pass `tierwatch check-config`, and
//! a `tierwatch run` started from the Kubernetes ConfigMap's configuration (against the real
//! broker and Postgres) answers the probe paths and the container healthcheck command.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use yaml_serde::Value;

/// The mounts each compose service must have, exactly (source:target:mode).
const COMPOSE_MOUNTS: &[(&str, &[&str])] = &[
    (
        "grafana",
        &["./grafana/provisioning:/etc/grafana/provisioning:ro", "./grafana/dashboards:/var/lib/grafana/dashboards:ro"],
    ),
    (
        "prometheus",
        &[
            "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
            "./deploy/prometheus/tierwatch.rules.yml:/etc/prometheus/tierwatch.rules.yml:ro",
        ],
    ),
    ("tierwatch", &["./deploy/compose/tierwatch.toml:/etc/tierwatch/tierwatch.toml:ro"]),
    ("migrate", &["./deploy/compose/tierwatch.toml:/etc/tierwatch/tierwatch.toml:ro"]),
];
/// Servers that run for the whole session: each needs a healthcheck.
const SERVERS: &[&str] = &["kafka", "postgres", "tierwatch", "prometheus", "grafana"];
/// One-shot jobs: dependents wait for them to complete successfully.
const ONE_SHOTS: &[&str] = &["kafka-init", "migrate", "loader"];
/// The dashboards committed under grafana/dashboards/.
const DASHBOARDS: &[&str] = &["ledgers", "tier-quality", "router-drift", "rescoring-alerts", "pipeline-health"];
/// Where the compose services read the daemon's configuration.
const COMPOSE_CONFIG_TARGET: &str = "/etc/tierwatch/tierwatch.toml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    yaml_serde::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn toml_file(rel: &str) -> toml_value::Table {
    toml_value::parse(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid TOML: {e}"))
}

/// A string at a mapping key, or a panic naming where.
fn str_at<'a>(v: &'a Value, key: &str, what: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: `{key}` missing or not a string"))
}

fn seq(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_sequence).map(|s| s.as_slice()).unwrap_or(&[])
}

fn keys(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Files of a directory with one of the extensions, sorted.
fn files_in(rel: &str, exts: &[&str]) -> Vec<PathBuf> {
    let dir = repo().join(rel);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {rel}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| exts.contains(&x)))
        .collect();
    out.sort();
    out
}

/// The port of an `ip:port` or `host:port` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in `{addr}`"))
}

/// Seconds of a Prometheus/Grafana duration (`15s`, `1m`, `1h`).
fn duration_secs(d: &str) -> u64 {
    let (num, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("duration `{d}`"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        other => panic!("duration `{d}`: unit `{other}`"),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal TOML reader for the few keys the cross-checks need (the daemon's own parser judges
// the files as a whole through `check-config`).
mod toml_value {
    use std::collections::BTreeMap;

    /// `section.key` → raw value text (strings unquoted).
    pub type Table = BTreeMap<String, String>;

    pub fn parse(text: &str) -> Result<Table, String> {
        let mut out = Table::new();
        let mut section = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(s) = line.strip_prefix('[') {
                section = s.trim_end_matches(']').trim().to_string();
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| format!("line {}: `{line}`", n + 1))?;
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(rest) => rest.split_once('"').map(|(s, _)| s).ok_or(format!("line {}", n + 1))?,
                None => v.split('#').next().unwrap_or_default().trim(),
            };
            out.insert(format!("{section}.{}", k.trim().trim_matches('"')), v.to_string());
        }
        Ok(out)
    }
}

fn get<'a>(t: &'a toml_value::Table, key: &str, file: &str) -> &'a str {
    t.get(key).map(String::as_str).unwrap_or_else(|| panic!("{file}: `{key}` missing"))
}

/// `${file:PATH}` or `${env:NAME}` references in a configuration text (comments aside).
fn references(text: &str, kind: &str) -> BTreeSet<String> {
    let open = format!("${{{kind}:");
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find(&open) {
            let tail = &rest[i + open.len()..];
            let end = tail.find('}').expect("unterminated reference");
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

/// `tierwatch check-config` on a configuration text; returns its stdout or panics with stderr.
fn check_config(text: &str, env: &[(&str, &str)], what: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tierwatch.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierwatch"));
    cmd.args(["check-config", "--config"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tierwatch check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} fails `tierwatch check-config`:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

struct Compose {
    doc: Value,
}

impl Compose {
    fn load() -> Compose {
        Compose { doc: yaml("docker-compose.yml") }
    }

    fn services(&self) -> BTreeSet<String> {
        keys(self.doc.get("services"))
    }

    fn service(&self, name: &str) -> &Value {
        self.doc.get("services").and_then(|s| s.get(name)).unwrap_or_else(|| panic!("compose: no service `{name}`"))
    }

    /// Bind mounts as `source:target[:mode]`, long syntax normalised to the short one.
    fn mounts(&self, name: &str) -> Vec<String> {
        seq(self.service(name).get("volumes"))
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Mapping(_) => {
                    assert_eq!(v.get("type").and_then(Value::as_str), Some("bind"), "{name}: only bind mounts");
                    let ro = v.get("read_only").and_then(Value::as_bool) == Some(true);
                    format!(
                        "{}:{}{}",
                        str_at(v, "source", name),
                        str_at(v, "target", name),
                        if ro { ":ro" } else { "" }
                    )
                }
                other => panic!("{name}: volume {other:?}"),
            })
            .collect()
    }

    /// Target of the mount whose source is `source`, in service `name`.
    fn mount_target(&self, name: &str, source: &str) -> String {
        self.mounts(name)
            .iter()
            .find_map(|m| {
                let mut parts = m.split(':');
                (parts.next() == Some(source)).then(|| parts.next().unwrap_or_default().to_string())
            })
            .unwrap_or_else(|| panic!("compose: service `{name}` does not mount `{source}`"))
    }

    fn secrets_of(&self, name: &str) -> BTreeSet<String> {
        seq(self.service(name).get("secrets"))
            .iter()
            .map(|s| match s {
                Value::String(s) => s.clone(),
                m => str_at(m, "source", name).to_string(),
            })
            .collect()
    }

    fn env(&self, name: &str, var: &str) -> Option<String> {
        match self.service(name).get("environment")? {
            Value::Mapping(m) => m.get(var).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            Value::Sequence(s) => s
                .iter()
                .filter_map(Value::as_str)
                .find_map(|e| e.split_once('=').and_then(|(k, v)| (k == var).then(|| v.to_string()))),
            _ => None,
        }
    }

    /// The command as a list of words (list form only: no shell parsing guesses).
    fn command(&self, name: &str) -> Vec<String> {
        seq(self.service(name).get("command"))
            .iter()
            .map(|w| match w {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{name}: command word {other:?}"),
            })
            .collect()
    }

    /// (host ip, host port, container port) of every published port.
    fn ports(&self, name: &str) -> Vec<(String, u16, u16)> {
        seq(self.service(name).get("ports"))
            .iter()
            .map(|p| match p {
                Value::String(s) => {
                    let parts: Vec<&str> = s.trim_end_matches("/tcp").split(':').collect();
                    assert_eq!(parts.len(), 3, "{name}: port `{s}` must be HOST_IP:HOST_PORT:CONTAINER_PORT");
                    let n = |x: &str| x.parse::<u16>().unwrap_or_else(|_| panic!("{name}: port `{s}`"));
                    (parts[0].to_string(), n(parts[1]), n(parts[2]))
                }
                Value::Mapping(_) => {
                    let n = |k: &str| match p.get(k) {
                        Some(Value::Number(x)) => x.as_u64().unwrap_or_default() as u16,
                        Some(Value::String(x)) => x.parse().unwrap_or_default(),
                        _ => 0,
                    };
                    (p.get("host_ip").and_then(Value::as_str).unwrap_or("").to_string(), n("published"), n("target"))
                }
                other => panic!("{name}: port {other:?}"),
            })
            .collect()
    }

    /// The healthcheck's command words (`CMD`/`CMD-SHELL` first), or None.
    fn healthcheck(&self, name: &str) -> Option<Vec<String>> {
        let hc = self.service(name).get("healthcheck")?;
        if hc.get("disable").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        match hc.get("test")? {
            Value::String(s) => Some(vec!["CMD-SHELL".into(), s.clone()]),
            Value::Sequence(s) => Some(s.iter().filter_map(Value::as_str).map(str::to_string).collect()),
            _ => None,
        }
    }
}

#[test]
fn compose_services_healthchecks_dependencies_and_ports() {
    let c = Compose::load();
    let expected: BTreeSet<String> = SERVERS.iter().chain(ONE_SHOTS).map(|s| s.to_string()).collect();
    assert_eq!(c.services(), expected, "compose services");

    for s in SERVERS {
        let test = c.healthcheck(s).unwrap_or_else(|| panic!("compose: server `{s}` has no healthcheck"));
        assert!(
            matches!(test.first().map(String::as_str), Some("CMD" | "CMD-SHELL")) && test.len() >= 2,
            "compose: `{s}` healthcheck test {test:?}"
        );
    }
    for s in ONE_SHOTS {
        assert_eq!(
            c.service(s).get("restart").and_then(Value::as_str),
            Some("no"),
            "compose: one-shot `{s}` must not be restarted"
        );
    }

    let services = c.services();
    for name in &services {
        let Some(deps) = c.service(name).get("depends_on") else { continue };
        let deps = deps
            .as_mapping()
            .unwrap_or_else(|| panic!("compose: `{name}` depends_on must be a mapping with conditions, not a list"));
        for (dep, spec) in deps {
            let dep = dep.as_str().unwrap_or_default();
            assert!(services.contains(dep), "compose: `{name}` depends on unknown service `{dep}`");
            let cond = str_at(spec, "condition", &format!("{name}.depends_on.{dep}"));
            let want = if ONE_SHOTS.contains(&dep) { "service_completed_successfully" } else { "service_healthy" };
            assert_eq!(cond, want, "compose: `{name}` → `{dep}`");
            if want == "service_healthy" {
                assert!(
                    c.healthcheck(dep).is_some(),
                    "compose: `{name}` waits for `{dep}` to be healthy, it has no healthcheck"
                );
            }
        }
    }

    for name in &services {
        for (ip, host, container) in c.ports(name) {
            assert_eq!(ip, "127.0.0.1", "compose: `{name}` publishes {host}:{container} on `{ip}`, not loopback only");
        }
    }
    // Ports that must be published for a user to see anything.
    let published = |s: &str| c.ports(s).iter().map(|p| p.2).collect::<BTreeSet<u16>>();
    assert!(published("grafana").contains(&3000), "grafana's port 3000 is published");
    assert!(published("prometheus").contains(&9090), "prometheus's port 9090 is published");
}

#[test]
fn compose_mounts_and_secrets() {
    let c = Compose::load();
    let expected: BTreeMap<&str, &[&str]> = COMPOSE_MOUNTS.iter().copied().collect();
    for name in c.services() {
        let mut got = c.mounts(&name);
        got.sort();
        let mut want: Vec<String> =
            expected.get(name.as_str()).copied().unwrap_or(&[]).iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "compose: mounts of `{name}`");
        for m in &got {
            let source = m.split(':').next().unwrap_or_default();
            assert!(source.starts_with("./"), "compose: `{name}` mount `{m}` must be relative to the repository");
            assert!(repo().join(source).exists(), "compose: `{name}` mounts `{source}`, which does not exist");
        }
    }

    let declared = keys(c.doc.get("secrets"));
    assert!(!declared.is_empty(), "compose: no top-level secrets");
    for name in c.services() {
        for s in c.secrets_of(&name) {
            assert!(declared.contains(&s), "compose: `{name}` uses secret `{s}`, not declared at the top level");
        }
        // VAR_FILE / VAR__FILE settings point at a secret this service mounts.
        if let Some(Value::Mapping(env)) = c.service(&name).get("environment") {
            for (k, v) in env {
                let (k, v) = (k.as_str().unwrap_or_default(), v.as_str().unwrap_or_default());
                if k.ends_with("_FILE") {
                    let secret = v.strip_prefix("/run/secrets/").unwrap_or_else(|| panic!("{name}: {k}={v}"));
                    assert!(
                        c.secrets_of(&name).contains(secret),
                        "compose: `{name}` {k} reads a secret it does not mount"
                    );
                }
            }
        }
    }
    for s in &declared {
        let spec = c.doc.get("secrets").and_then(|m| m.get(s.as_str())).expect("declared");
        let file = str_at(spec, "file", &format!("secrets.{s}"));
        let rel = file.strip_prefix("./").unwrap_or_else(|| panic!("secret `{s}`: `{file}` must be relative"));
        assert!(repo().join(format!("{rel}.example")).is_file(), "secret `{s}`: no `{rel}.example` shows its format");
        // The real file is generated and must never be committed.
        let ignored = Command::new("git")
            .args(["check-ignore", "-q", rel])
            .current_dir(repo())
            .status()
            .expect("run git check-ignore");
        assert!(ignored.success(), "secret `{s}`: `{rel}` is not ignored by git");
    }
}

#[test]
fn compose_wiring_agrees_with_the_daemon_configuration() {
    let c = Compose::load();
    let rel = "deploy/compose/tierwatch.toml";
    let text = read(rel);
    let t = toml_file(rel);

    // The daemon serves on the port compose publishes and probes, and the Dockerfile exposes.
    let port = port_of(get(&t, "http.listen", rel));
    assert!(
        get(&t, "http.listen", rel).starts_with("0.0.0.0:"),
        "{rel}: listen on all interfaces inside the container"
    );
    assert!(c.ports("tierwatch").iter().any(|p| p.2 == port), "compose publishes tierwatch's port {port}");
    let hc = c.healthcheck("tierwatch").expect("tierwatch healthcheck").join(" ");
    assert!(hc.contains(&format!("/dev/tcp/127.0.0.1/{port}")), "tierwatch healthcheck probes port {port}: {hc}");
    assert!(hc.contains("GET /healthz "), "tierwatch healthcheck asks /healthz: {hc}");
    assert_eq!(dockerfile().exposed, BTreeSet::from([port]), "Dockerfile EXPOSE");

    // The configuration is mounted where the commands read it.
    for s in ["tierwatch", "migrate"] {
        assert_eq!(c.mount_target(s, "./deploy/compose/tierwatch.toml"), COMPOSE_CONFIG_TARGET);
        let cmd = c.command(s);
        let at = cmd.iter().position(|w| w == "--config").unwrap_or_else(|| panic!("{s}: no --config"));
        assert_eq!(cmd.get(at + 1).map(String::as_str), Some(COMPOSE_CONFIG_TARGET), "{s}: --config");
    }
    assert_eq!(c.command("migrate").first().map(String::as_str), Some("migrate"));
    assert_eq!(c.command("tierwatch").first().map(String::as_str), Some("run"));

    // Store and broker are the compose services, with the database Postgres creates.
    let url = get(&t, "postgres.url", rel);
    let after_at = url.rsplit_once('@').map(|(_, h)| h).unwrap_or_else(|| panic!("{rel}: postgres.url has no user"));
    let (host, db) = after_at.split_once('/').expect("database in postgres.url");
    assert_eq!(host, "postgres:5432", "{rel}: postgres.url host");
    assert_eq!(Some(db.split('?').next().unwrap_or_default().to_string()), c.env("postgres", "POSTGRES_DB"));
    let user = url.trim_start_matches("postgres://").split([':', '@']).next().unwrap_or_default();
    assert_eq!(Some(user.to_string()), c.env("postgres", "POSTGRES_USER"), "{rel}: postgres.url user");
    let brokers = get(&t, "kafka.brokers", rel);
    assert!(c.services().contains(brokers.split(':').next().unwrap_or_default()), "{rel}: brokers `{brokers}`");
    let advertised = c.env("kafka", "KAFKA_ADVERTISED_LISTENERS").expect("KAFKA_ADVERTISED_LISTENERS");
    assert!(advertised.split(',').any(|l| l.ends_with(&format!("//{brokers}"))), "kafka advertises `{brokers}`");

    // The topics kafka-init creates are the ones the daemon reads and the loader writes.
    let init =
        seq(c.service("kafka-init").get("command")).iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ");
    for k in ["routing", "feedback", "tickets"] {
        let name = get(&t, &format!("topics.{k}.name"), rel);
        assert!(init.contains(name), "kafka-init creates `{name}`");
        assert_eq!(get(&t, &format!("topics.{k}.format"), rel), "avro", "{rel}: the loader produces Avro datums");
    }
    assert!(
        init.contains("--partitions 3") && init.contains(&format!("--bootstrap-server {brokers}")),
        "kafka-init: {init}"
    );
    let loader = c.command("loader");
    assert_eq!(loader.first().map(String::as_str), Some("simulate"));
    let flag = |f: &str| loader.iter().position(|w| w == f).and_then(|i| loader.get(i + 1)).cloned();
    assert_eq!(flag("--kafka").as_deref(), Some(brokers), "loader --kafka");
    assert_eq!(flag("--format").as_deref(), Some("avro"), "loader --format");
    for s in ["migrate", "tierwatch", "loader"] {
        assert_eq!(
            c.service(s).get("image").and_then(Value::as_str),
            Some("tierwatch:local"),
            "{s} runs the built image"
        );
    }

    // The rescorer model is where the image puts it.
    let model = get(&t, "rescore.model_path", rel);
    assert!(dockerfile().runtime_files.contains(model), "{rel}: model `{model}` is not copied into the image");

    // Every `${file:…}` is a compose secret mounted into the services that read the file; with
    // the file put elsewhere (and only that changed), the configuration passes check-config.
    let files = references(&text, "file");
    assert!(!files.is_empty(), "{rel}: the password comes from a secret file");
    assert!(references(&text, "env").is_empty(), "{rel}: no ${{env:…}} (compose passes secrets as files)");
    let dir = tempfile::tempdir().unwrap();
    let mut substituted = text.clone();
    for f in &files {
        let secret = f.strip_prefix("/run/secrets/").unwrap_or_else(|| panic!("{rel}: `{f}` is not a compose secret"));
        for s in ["tierwatch", "migrate"] {
            assert!(
                c.secrets_of(s).contains(secret),
                "compose: `{s}` reads `{f}` but does not mount secret `{secret}`"
            );
        }
        let local = dir.path().join(secret);
        std::fs::write(&local, "s3cret-from-test\n").unwrap();
        substituted = substituted.replace(&format!("${{file:{f}}}"), &format!("${{file:{}}}", local.display()));
    }
    let shown = check_config(&substituted, &[], rel);
    assert!(!shown.contains("s3cret-from-test"), "check-config shows the password");
    assert!(shown.contains("postgres:5432"), "check-config output names the store:\n{shown}");
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

struct Dockerfile {
    /// Stage count.
    stages: usize,
    /// The final stage's USER, EXPOSE, ENTRYPOINT and CMD.
    user: String,
    exposed: BTreeSet<u16>,
    entrypoint: String,
    /// Paths the final stage copies into the image (directory targets joined with file names).
    runtime_files: BTreeSet<String>,
    /// Context paths every COPY without --from reads.
    context_sources: BTreeSet<String>,
}

fn dockerfile() -> Dockerfile {
    let text = read("Dockerfile").replace("\\\n", " ");
    let mut d = Dockerfile {
        stages: 0,
        user: String::new(),
        exposed: BTreeSet::new(),
        entrypoint: String::new(),
        runtime_files: BTreeSet::new(),
        context_sources: BTreeSet::new(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => {
                d.stages += 1;
                d.user.clear();
                d.exposed.clear();
                d.runtime_files.clear();
            }
            "USER" => d.user = rest.trim().to_string(),
            "EXPOSE" => {
                d.exposed.extend(words.iter().map(|p| p.trim_end_matches("/tcp").parse::<u16>().expect("EXPOSE port")))
            }
            "ENTRYPOINT" => d.entrypoint = rest.trim().to_string(),
            "COPY" => {
                let from_stage = words.iter().any(|w| w.starts_with("--from="));
                let paths: Vec<&str> = words.iter().copied().filter(|w| !w.starts_with("--")).collect();
                let (target, sources) = paths.split_last().expect("COPY needs a target");
                for s in sources {
                    if !from_stage {
                        d.context_sources.insert(s.to_string());
                    }
                    let name = Path::new(s).file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    let file = if target.ends_with('/') { format!("{target}{name}") } else { target.to_string() };
                    d.runtime_files.insert(file);
                }
            }
            _ => {}
        }
    }
    d
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_reads_what_the_context_keeps() {
    let d = dockerfile();
    assert!(d.stages >= 2, "Dockerfile: multi-stage (builder + runtime), found {} stage(s)", d.stages);
    let uid = d.user.split(':').next().unwrap_or_default();
    assert!(!uid.is_empty() && uid != "root" && uid != "0", "Dockerfile: the final stage runs as `{}`", d.user);
    assert!(uid.parse::<u32>().is_ok(), "Dockerfile: a numeric USER, so Kubernetes can verify runAsNonRoot");
    assert!(d.entrypoint.contains("\"tierwatch\""), "Dockerfile: ENTRYPOINT {}", d.entrypoint);
    assert!(d.runtime_files.contains("/usr/local/bin/tierwatch"), "Dockerfile: the binary is installed");

    // Everything COPY reads exists and is not excluded from the build context.
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    let excluded = |path: &str| {
        ignore.iter().any(|pat| {
            let pat = pat.trim_start_matches("**/");
            path == pat || path.starts_with(&format!("{pat}/")) || path.split('/').any(|c| c == pat)
        })
    };
    for s in &d.context_sources {
        assert!(repo().join(s).exists(), "Dockerfile copies `{s}`, which does not exist");
        assert!(!excluded(s), "Dockerfile copies `{s}`, which .dockerignore excludes");
    }
    // What the crate embeds at compile time (include_str!/include_bytes!/migrate! reaching out
    // of daemon/) is in the build context.
    let mut embedded = BTreeSet::new();
    collect_embedded(&repo().join("daemon/src"), &mut embedded);
    assert!(embedded.contains("migrations") && embedded.contains("models"), "embedded paths found: {embedded:?}");
    for top in &embedded {
        assert!(
            d.context_sources.contains(top.as_str()),
            "the crate embeds `{top}/…`; the Dockerfile does not copy `{top}`"
        );
    }
    for needed in [".cargo", "Cargo.toml", "Cargo.lock", "daemon", "tests"] {
        assert!(d.context_sources.contains(needed), "Dockerfile: the builder needs `{needed}`");
    }
}

/// Top-level repository entries named by `include_str!("../…")`-style paths under `dir`.
fn collect_embedded(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("daemon/src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_embedded(&path, out);
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for mac in ["include_str!(\"", "include_bytes!(\"", "migrate!(\""] {
            for piece in text.split(mac).skip(1) {
                let rel = piece.split('"').next().unwrap_or_default();
                let base =
                    if mac == "migrate!(\"" { repo().join("daemon") } else { path.parent().unwrap().to_path_buf() };
                let Ok(abs) = base.join(rel).canonicalize() else { continue };
                if let Ok(inside) = abs.strip_prefix(repo()) {
                    let top = inside.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default();
                    if top != "daemon" {
                        out.insert(top.to_string());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

struct Kube {
    deployment: Value,
    service: Value,
    podmonitor: Value,
    kustomization: Value,
}

impl Kube {
    fn load() -> Kube {
        let k = yaml("deploy/kubernetes/kustomization.yaml");
        let resources: Vec<&str> = seq(k.get("resources")).iter().filter_map(Value::as_str).collect();
        let mut by_kind: BTreeMap<String, Value> = BTreeMap::new();
        for r in &resources {
            let doc = yaml(&format!("deploy/kubernetes/{r}"));
            let kind = str_at(&doc, "kind", r).to_string();
            assert!(by_kind.insert(kind.clone(), doc).is_none(), "two {kind} resources");
        }
        let mut take = |kind: &str| by_kind.remove(kind).unwrap_or_else(|| panic!("kustomization has no {kind}"));
        Kube {
            deployment: take("Deployment"),
            service: take("Service"),
            podmonitor: take("PodMonitor"),
            kustomization: k,
        }
    }

    fn pod(&self) -> &Value {
        self.deployment.get("spec").and_then(|s| s.get("template")).expect("Deployment spec.template")
    }

    fn sidecar(&self) -> &Value {
        let spec = self.pod().get("spec").expect("pod spec");
        assert!(
            seq(spec.get("containers")).iter().all(|c| c.get("name").and_then(Value::as_str) != Some("tierwatch")),
            "tierwatch must be a native sidecar (an init container), not a regular container"
        );
        seq(spec.get("initContainers"))
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some("tierwatch"))
            .expect("an init container named tierwatch")
    }

    /// The ConfigMap's file: kustomization's configMapGenerator entry for the volume the sidecar
    /// mounts; returns (generator name, file path relative to the repository, mount path).
    fn config(&self) -> (String, String, String) {
        let spec = self.pod().get("spec").expect("pod spec");
        let mount = seq(self.sidecar().get("volumeMounts"))
            .iter()
            .find(|m| m.get("mountPath").and_then(Value::as_str) == Some("/etc/tierwatch"))
            .expect("the sidecar mounts its configuration at /etc/tierwatch");
        let volume = str_at(mount, "name", "volumeMount");
        let vol = seq(spec.get("volumes"))
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(volume))
            .unwrap_or_else(|| panic!("no volume `{volume}`"));
        let cm = vol.get("configMap").map(|c| str_at(c, "name", "configMap")).expect("the volume is a ConfigMap");
        let generator = seq(self.kustomization.get("configMapGenerator"))
            .iter()
            .find(|g| g.get("name").and_then(Value::as_str) == Some(cm))
            .unwrap_or_else(|| panic!("kustomization does not generate ConfigMap `{cm}`"));
        let files = seq(generator.get("files"));
        assert_eq!(files.len(), 1, "ConfigMap `{cm}`: one file");
        let file = files[0].as_str().expect("file name");
        (cm.to_string(), format!("deploy/kubernetes/{file}"), format!("/etc/tierwatch/{file}"))
    }

    fn probes(&self) -> Vec<(&'static str, String, &Value)> {
        let c = self.sidecar();
        ["startupProbe", "livenessProbe", "readinessProbe"]
            .into_iter()
            .filter_map(|k| c.get(k).map(|p| (k, p)))
            .map(|(k, p)| {
                let get = p.get("httpGet").unwrap_or_else(|| panic!("{k}: an httpGet probe"));
                (k, str_at(get, "path", k).to_string(), get.get("port").expect("probe port"))
            })
            .collect()
    }
}

/// CPU in millicores, memory in bytes, of a Kubernetes quantity.
fn quantity(q: &Value, cpu: bool) -> u64 {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("quantity {other:?}"),
    };
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("quantity `{s}`"));
    let mult = match (cpu, unit) {
        (true, "m") => 1.0,
        (true, "") => 1000.0,
        (false, "") => 1.0,
        (false, "Ki") => 1024.0,
        (false, "Mi") => 1024.0 * 1024.0,
        (false, "Gi") => 1024.0 * 1024.0 * 1024.0,
        (false, "k") => 1e3,
        (false, "M") => 1e6,
        (false, "G") => 1e9,
        _ => panic!("quantity `{s}`"),
    };
    (n * mult).round() as u64
}

#[test]
fn kubernetes_sidecar_structure() {
    let k = Kube::load();
    let c = k.sidecar();
    assert_eq!(
        c.get("restartPolicy").and_then(Value::as_str),
        Some("Always"),
        "a native sidecar: restartPolicy Always"
    );

    // Ports agree: the configuration's listen port, the named container port, the probes, the
    // Service's target and the PodMonitor's endpoint.
    let (_, config_file, config_path) = k.config();
    let t = toml_file(&config_file);
    let port = port_of(get(&t, "http.listen", &config_file));
    let cports = seq(c.get("ports"));
    let named = cports
        .iter()
        .find(|p| p.get("containerPort").and_then(Value::as_u64) == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("the sidecar declares containerPort {port}"));
    let port_name = str_at(named, "name", "container port");
    let probes = k.probes();
    assert!(
        probes.iter().any(|(kind, path, _)| *kind == "livenessProbe" && path == "/healthz"),
        "liveness on /healthz"
    );
    for (kind, _, p) in &probes {
        assert!(p.as_str() == Some(port_name) || p.as_u64() == Some(u64::from(port)), "{kind} port {p:?}");
    }
    // A native sidecar's readiness is the pod's: /readyz (false during a store outage) must not
    // take the gateway out of its Service.
    assert!(c.get("readinessProbe").is_none(), "no readinessProbe on the sidecar (docs/deploy.md says why)");
    let sport = seq(k.service.get("spec").and_then(|s| s.get("ports")))
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port_name))
        .unwrap_or_else(|| panic!("the Service has a port named `{port_name}`"));
    assert_eq!(sport.get("targetPort").and_then(Value::as_u64), Some(u64::from(port)), "Service targetPort");
    let eps = seq(k.podmonitor.get("spec").and_then(|s| s.get("podMetricsEndpoints")));
    assert!(!eps.is_empty(), "PodMonitor endpoints");
    for ep in eps {
        assert_eq!(ep.get("port").and_then(Value::as_str), Some(port_name), "PodMonitor port");
        assert_eq!(ep.get("path").and_then(Value::as_str).unwrap_or("/metrics"), "/metrics");
    }

    // The Service and the PodMonitor select the Deployment's pods.
    let pod_labels =
        k.pod().get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_mapping).expect("pod labels");
    for (what, sel) in [
        ("Service", k.service.get("spec").and_then(|s| s.get("selector"))),
        ("PodMonitor", k.podmonitor.get("spec").and_then(|s| s.get("selector")).and_then(|s| s.get("matchLabels"))),
    ] {
        let sel = sel.and_then(Value::as_mapping).unwrap_or_else(|| panic!("{what} selector"));
        assert!(!sel.is_empty(), "{what} selector");
        for (key, v) in sel {
            assert_eq!(pod_labels.get(key), Some(v), "{what} selects {key:?}={v:?}, the pods do not carry it");
        }
    }

    // The command reads the mounted ConfigMap file.
    let args: Vec<&str> = seq(c.get("args")).iter().filter_map(Value::as_str).collect();
    assert_eq!(args, ["run", "--config", config_path.as_str()], "sidecar args");

    // Hardening, and the image's user.
    let sc = c.get("securityContext").expect("sidecar securityContext");
    assert_eq!(sc.get("runAsNonRoot").and_then(Value::as_bool), Some(true));
    assert_eq!(sc.get("readOnlyRootFilesystem").and_then(Value::as_bool), Some(true));
    assert_eq!(sc.get("allowPrivilegeEscalation").and_then(Value::as_bool), Some(false));
    let drop: Vec<&str> =
        seq(sc.get("capabilities").and_then(|c| c.get("drop"))).iter().filter_map(Value::as_str).collect();
    assert_eq!(drop, ["ALL"], "capabilities drop ALL");
    let uid = dockerfile().user.split(':').next().unwrap_or_default().to_string();
    assert_eq!(
        sc.get("runAsUser").and_then(Value::as_u64).map(|u| u.to_string()),
        Some(uid),
        "runAsUser = the image's USER"
    );

    // Requests and limits, requests ≤ limits.
    let res = c.get("resources").expect("sidecar resources");
    for (kind, cpu) in [("cpu", true), ("memory", false)] {
        let q = |side: &str| {
            res.get(side).and_then(|r| r.get(kind)).map(|v| quantity(v, cpu)).unwrap_or_else(|| panic!("{side}.{kind}"))
        };
        assert!(q("requests") <= q("limits"), "{kind}: request {} > limit {}", q("requests"), q("limits"));
    }

    // Credentials: every ${env:NAME} of the configuration is set from the Secret.
    let text = read(&config_file);
    let envs = references(&text, "env");
    assert!(
        !envs.is_empty() && references(&text, "file").is_empty(),
        "{config_file}: credentials from the environment"
    );
    let secret = yaml("deploy/kubernetes/secret.example.yaml");
    let secret_name = str_at(secret.get("metadata").expect("metadata"), "name", "Secret");
    let secret_keys = keys(secret.get("stringData"));
    for var in &envs {
        let e = seq(c.get("env"))
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(var.as_str()))
            .unwrap_or_else(|| panic!("{config_file} reads ${{env:{var}}}; the sidecar does not set {var}"));
        let r = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")).unwrap_or_else(|| panic!("{var} from a Secret"));
        assert_eq!(str_at(r, "name", var), secret_name, "{var}: the Secret");
        assert!(secret_keys.contains(str_at(r, "key", var)), "{var}: key not in secret.example.yaml");
    }
    let model = get(&t, "rescore.model_path", &config_file);
    assert!(dockerfile().runtime_files.contains(model), "{config_file}: model `{model}` is not in the image");
    for r in seq(k.kustomization.get("resources")).iter().filter_map(Value::as_str) {
        assert!(repo().join("deploy/kubernetes").join(r).is_file(), "kustomization resource `{r}`");
    }

    // The ConfigMap's content passes check-config, with the Secret's values set as the
    // Deployment sets them.
    let values: Vec<(&str, &str)> = envs.iter().map(|v| (v.as_str(), "s3cret-from-test")).collect();
    let shown = check_config(&text, &values, &config_file);
    assert!(!shown.contains("s3cret-from-test"), "check-config shows the password");
}

/// The PodMonitor scrapes as often as prometheus.yml does and the Grafana datasource assumes.
#[test]
fn kubernetes_scrape_interval_matches_prometheus() {
    let k = Kube::load();
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let global = str_at(prom.get("global").expect("global"), "scrape_interval", "prometheus.yml global");
    for ep in seq(k.podmonitor.get("spec").and_then(|s| s.get("podMetricsEndpoints"))) {
        assert_eq!(duration_secs(str_at(ep, "interval", "PodMonitor")), duration_secs(global), "PodMonitor interval");
    }
}

/// The probe paths and the compose/Docker healthcheck command, asked of a running daemon started
/// from the Kubernetes ConfigMap's configuration (broker, store, topics and port redirected to
/// the test's own through the environment, as a Deployment could).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_healthcheck_answer_on_a_running_daemon() {
    let k = Kube::load();
    let (_, config_file, _) = k.config();
    let env = common::Env::new("deploy").await;
    let port = common::free_port();
    let config = env.dir.path().join("tierwatch.toml");
    std::fs::write(&config, read(&config_file)).unwrap();
    let model = repo().join("models/rescorer.onnx");
    let log = env.dir.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierwatch"))
        .args(["run", "--config"])
        .arg(&config)
        .env("TIERWATCH_KAFKA__BROKERS", &env.brokers)
        .env("TIERWATCH_KAFKA__GROUP_ID", format!("g-{}", env.topics[0]))
        .env("TIERWATCH_TOPICS__ROUTING__NAME", &env.topics[0])
        .env("TIERWATCH_TOPICS__FEEDBACK__NAME", &env.topics[1])
        .env("TIERWATCH_TOPICS__TICKETS__NAME", &env.topics[2])
        .env("TIERWATCH_POSTGRES__URL", &env.db_url)
        .env("TIERWATCH_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("TIERWATCH_RESCORE__MODEL_PATH", &model)
        .env("TIERWATCH_LOG", "info,librdkafka=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn tierwatch run");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tierwatch exited ({status}) before serving HTTP:\n{}", log_text());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no HTTP after 60 s:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Readiness comes with the subscription: wait for it so /readyz can be asked for a 200 too.
    let until = Instant::now() + Duration::from_secs(60);
    while !common::http_get(port, "/readyz").0.contains(" 200 ") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (kind, path, _) in k.probes() {
        let (status, _) = common::http_get(port, &path);
        assert!(status.contains(" 200 "), "{kind} {path}: {status}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(common::http_get(port, path).0.contains(" 200 "), "GET {path}");
    }
    assert!(common::http_get(port, "/no-such-path").0.contains(" 404 "), "an unknown path is a 404");
    // The PodMonitor's and Prometheus's scrape path.
    for ep in seq(k.podmonitor.get("spec").and_then(|s| s.get("podMetricsEndpoints"))) {
        let path = ep.get("path").and_then(Value::as_str).unwrap_or("/metrics");
        let (status, body) = common::http_get(port, path);
        assert!(status.contains(" 200 ") && body.contains("tierwatch_"), "PodMonitor path {path}: {status}");
    }

    // The compose healthcheck (the same command as the Dockerfile's HEALTHCHECK) on this port,
    // then on a port nobody listens on.
    let c = Compose::load();
    let hc = c.healthcheck("tierwatch").expect("tierwatch healthcheck");
    assert_eq!(hc.first().map(String::as_str), Some("CMD"));
    let compose_port = port_of(get(&toml_file("deploy/compose/tierwatch.toml"), "http.listen", "compose config"));
    let run_hc = |p: u16| {
        let words: Vec<String> =
            hc[1..].iter().map(|w| w.replace(&format!("/{compose_port} "), &format!("/{p} "))).collect();
        Command::new(&words[0]).args(&words[1..]).status().expect("run the healthcheck command").success()
    };
    assert!(run_hc(port), "the compose healthcheck fails against a healthy daemon");
    assert!(!run_hc(common::free_port()), "the compose healthcheck passes with nothing listening");
    let docker_hc = read("Dockerfile").replace("\\\n", " ");
    let docker_cmd = docker_hc.lines().find(|l| l.starts_with("HEALTHCHECK")).expect("Dockerfile HEALTHCHECK");
    let compose_script = hc.last().expect("script");
    let docker_script = compose_script.replace('\\', "\\\\");
    assert!(docker_cmd.contains(&docker_script), "Dockerfile HEALTHCHECK runs the compose healthcheck's script");

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "tierwatch exit {status}:\n{}", log_text());
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tierwatch did not stop on SIGTERM:\n{}", log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana and Prometheus, against compose

/// Every provisioned datasource as uid → (type, entry).
fn datasources() -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for path in files_in("grafana/provisioning/datasources", &["yaml", "yml"]) {
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        for ds in seq(yaml(&rel).get("datasources")) {
            let uid = str_at(ds, "uid", &rel).to_string();
            let ty = str_at(ds, "type", &rel).to_string();
            assert!(out.insert(uid.clone(), (ty, ds.clone())).is_none(), "datasource uid `{uid}` provisioned twice");
        }
    }
    out
}

/// Every datasource reference in a dashboard: (uid, type if given).
fn datasource_refs(v: &serde_json::Value, out: &mut Vec<(String, Option<String>)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" {
                    match x {
                        serde_json::Value::Object(d) => {
                            if let Some(uid) = d.get("uid").and_then(|u| u.as_str()) {
                                out.push((uid.to_string(), d.get("type").and_then(|t| t.as_str()).map(str::to_string)));
                            }
                        }
                        serde_json::Value::String(s) => out.push((s.clone(), None)),
                        _ => {}
                    }
                }
                datasource_refs(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| datasource_refs(x, out)),
        _ => {}
    }
}

#[test]
fn grafana_uids_and_paths_agree_with_compose() {
    let c = Compose::load();
    let ds = datasources();
    let pg = ds.get("tierwatch-pg").expect("PostgreSQL datasource uid tierwatch-pg");
    let prom = ds.get("tierwatch-prom").expect("Prometheus datasource uid tierwatch-prom");
    assert_eq!(pg.0, "grafana-postgresql-datasource");
    assert_eq!(prom.0, "prometheus");

    // Dashboards reference provisioned datasources only (built-in and variable references
    // aside), with the provisioned type; each provisioned datasource is used.
    let builtin = ["-- Grafana --", "-- Dashboard --", "-- Mixed --", "grafana"];
    let mut used = BTreeSet::new();
    let mut stems = BTreeSet::new();
    for path in files_in("grafana/dashboards", &["json"]) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{stem}.json: {e}"));
        assert_eq!(
            dash.get("uid").and_then(|u| u.as_str()),
            Some(format!("tierwatch-{stem}").as_str()),
            "{stem}.json uid"
        );
        let mut refs = Vec::new();
        datasource_refs(&dash, &mut refs);
        assert!(!refs.is_empty(), "{stem}.json references no datasource");
        for (uid, ty) in refs {
            if builtin.contains(&uid.as_str()) || uid.starts_with('$') {
                continue;
            }
            let (pty, _) = ds
                .get(&uid)
                .unwrap_or_else(|| panic!("{stem}.json references datasource uid `{uid}`, not provisioned"));
            if let Some(ty) = ty {
                assert_eq!(&ty, pty, "{stem}.json: datasource `{uid}` type");
            }
            used.insert(uid);
        }
        stems.insert(stem);
    }
    for d in DASHBOARDS {
        assert!(stems.contains(*d), "grafana/dashboards/{d}.json is missing");
    }
    for uid in ds.keys() {
        assert!(used.contains(uid), "provisioned datasource `{uid}` is used by no dashboard");
    }

    // The PostgreSQL datasource reaches the compose Postgres with its database, user and
    // password secret.
    let pg = &pg.1;
    assert_eq!(str_at(pg, "url", "pg datasource"), "postgres:5432");
    let db = pg.get("jsonData").and_then(|j| j.get("database")).or_else(|| pg.get("database")).and_then(Value::as_str);
    assert_eq!(db.map(str::to_string), c.env("postgres", "POSTGRES_DB"), "pg datasource database");
    assert_eq!(Some(str_at(pg, "user", "pg datasource").to_string()), c.env("postgres", "POSTGRES_USER"));
    let password = pg.get("secureJsonData").map(|s| str_at(s, "password", "pg datasource")).unwrap_or_default();
    let secret = password
        .strip_prefix("$__file{/run/secrets/")
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("pg datasource password `{password}`: $__file{{/run/secrets/…}}"));
    assert!(c.secrets_of("grafana").contains(secret), "grafana mounts secret `{secret}`");
    assert_eq!(
        c.env("postgres", "POSTGRES_PASSWORD_FILE"),
        Some(format!("/run/secrets/{secret}")),
        "same password as Postgres"
    );

    // The Prometheus datasource reaches the compose Prometheus, at no finer step than it scrapes.
    let prom = &prom.1;
    let url = str_at(prom, "url", "prometheus datasource");
    let host = url.trim_start_matches("http://").split(':').next().unwrap_or_default();
    assert!(c.services().contains(host), "prometheus datasource url `{url}`");
    assert!(c.ports("prometheus").iter().any(|p| p.2 == port_of(url)), "prometheus datasource port");
    let interval = prom.get("jsonData").map(|j| str_at(j, "timeInterval", "prometheus datasource")).expect("jsonData");
    let prom_yml = yaml("deploy/prometheus/prometheus.yml");
    let scrape = str_at(prom_yml.get("global").expect("global"), "scrape_interval", "prometheus.yml");
    assert!(
        duration_secs(interval) >= duration_secs(scrape),
        "timeInterval {interval} is shorter than the scrape interval {scrape}"
    );

    // The dashboard provider reads the directory compose mounts the dashboards into.
    let target = c.mount_target("grafana", "./grafana/dashboards");
    let mut providers = 0;
    for path in files_in("grafana/provisioning/dashboards", &["yaml", "yml"]) {
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        for p in seq(yaml(&rel).get("providers")) {
            providers += 1;
            let opts = p.get("options").expect("provider options");
            assert_eq!(str_at(opts, "path", &rel), target, "{rel}: provider path = the compose mount target");
        }
    }
    assert!(providers > 0, "a dashboard provider is provisioned");
    assert_eq!(c.mount_target("grafana", "./grafana/provisioning"), "/etc/grafana/provisioning");
}

#[test]
fn prometheus_rules_and_scrape_target_agree_with_compose() {
    let c = Compose::load();
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let mounted: BTreeSet<String> =
        c.mounts("prometheus").iter().filter_map(|m| m.split(':').nth(1).map(str::to_string)).collect();
    let rule_files: Vec<&str> = seq(prom.get("rule_files")).iter().filter_map(Value::as_str).collect();
    assert!(!rule_files.is_empty(), "prometheus.yml loads rule files");
    for r in &rule_files {
        assert!(mounted.contains(*r), "prometheus.yml loads `{r}`, which compose does not mount");
    }
    assert_eq!(c.mount_target("prometheus", "./deploy/prometheus/prometheus.yml"), "/etc/prometheus/prometheus.yml");

    let port = port_of(get(&toml_file("deploy/compose/tierwatch.toml"), "http.listen", "compose config"));
    let job = seq(prom.get("scrape_configs"))
        .iter()
        .find(|j| j.get("job_name").and_then(Value::as_str) == Some("tierwatch"))
        .expect("scrape job `tierwatch`");
    assert_eq!(job.get("metrics_path").and_then(Value::as_str).unwrap_or("/metrics"), "/metrics");
    let targets: Vec<&str> = seq(job.get("static_configs"))
        .iter()
        .flat_map(|s| seq(s.get("targets")).iter().filter_map(Value::as_str))
        .collect();
    assert!(
        targets.contains(&format!("tierwatch:{port}").as_str()),
        "job tierwatch scrapes tierwatch:{port}: {targets:?}"
    );
    assert!(c.services().contains("tierwatch"));
}
