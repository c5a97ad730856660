//! The Grafana dashboards against real data. The simulator's post-mortem scenario (15 weeks at
//! 500 conversations a day, with a routed-share target configured for its router; the drift,
//! per-tier, aggregate, calibration-regression and routed-share alerts all fire) is replayed into
//! a real Postgres with `tierwatch simulate` + `tierwatch replay`. Then every SQL query of every
//! dashboard under `grafana/dashboards/` — panel targets, annotation queries and template variable
//! queries — has its Grafana macros and variables expanded by [`grafana::expand`] (which refuses
//! anything it does not know, so an unexpanded macro fails here instead of in Grafana), is
//! executed, and must return rows with the column types its panel needs. The post-mortem has no
//! CASCADE router, so queries reading a view only cascades fill ([`CASCADE_VIEWS`]) must merely run
//! there, and are checked for rows and shape on a replayed cascade scenario. A static test checks
//! that the provisioning, the dashboards and the compose mounts agree.

#[path = "common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Duration;
use common::*;
use serde_json::Value;
use sqlx::{Column, Row, TypeInfo};

const PG_UID: &str = "tierwatch-pg";
const PG_TYPE: &str = "grafana-postgresql-datasource";
const PROM_UID: &str = "tierwatch-prom";
/// Where the provider reads dashboards, and where compose mounts `./grafana/dashboards`.
const DASHBOARDS_PATH: &str = "/var/lib/grafana/dashboards";
/// The SQL dashboards this test must find.
const SQL_DASHBOARDS: &[&str] = &["ledgers", "tier-quality", "router-drift", "rescoring-alerts"];
const DAYS: u32 = 105;
const CONVERSATIONS_PER_DAY: u32 = 500;
/// The post-mortem router's target cheap share in the replay configuration: its observed 7-day
/// share starts near 0.63 and falls below 0.61 as the drift grows, so the target column is set and
/// routed_share_deviation fires.
const ROUTING_TARGET: &str = "[routing.targets.\"router-2026-01\"]\ncheap_share = 0.64\ntolerance = 0.03\n";
/// Views that only CASCADE routers fill (the post-mortem's router is a PRE_ROUTE one).
const CASCADE_VIEWS: &[&str] = &["cascade_daily"];
const CASCADE_DAYS: u32 = 28;
const CASCADE_CONVERSATIONS_PER_DAY: u32 = 300;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(rel: &str) -> yaml_serde::Value {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn yaml_str<'a>(v: &'a yaml_serde::Value, key: &str, what: &str) -> &'a str {
    v.get(key).and_then(yaml_serde::Value::as_str).unwrap_or_else(|| panic!("{what}: `{key}` is missing"))
}

/// The public views documented in docs/contract.md (the headings of its "Public views" section;
/// tests/docs_coverage.rs checks they are exactly the migrations' views): the only relations a
/// dashboard may read.
fn public_views() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/contract.md")).expect("docs/contract.md");
    let section = text.split("\n## ").find(|s| s.starts_with("Public views")).expect("a Public views section");
    let views: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("### "))
        .flat_map(|l| l.split('`').skip(1).step_by(2))
        .filter(|name| !name.ends_with(".sql"))
        .map(str::to_string)
        .collect();
    assert!(
        views.contains("ledger_daily") && views.contains("alerts"),
        "public views read from docs/contract.md: {views:?}"
    );
    views
}

/// Every dashboard under grafana/dashboards/ as (file stem, JSON), sorted by stem.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            (stem.clone(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("{stem}.json: {e}")))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Provisioned datasources: uid → (type, entry).
fn datasources() -> BTreeMap<String, (String, yaml_serde::Value)> {
    let rel = "grafana/provisioning/datasources/tierwatch.yaml";
    let doc = yaml(rel);
    let list = doc.get("datasources").and_then(yaml_serde::Value::as_sequence).expect("datasources list");
    let mut out = BTreeMap::new();
    for ds in list {
        let uid = yaml_str(ds, "uid", rel).to_string();
        let ty = yaml_str(ds, "type", rel).to_string();
        assert!(out.insert(uid.clone(), (ty, ds.clone())).is_none(), "datasource uid {uid} provisioned twice");
    }
    out
}

/// Every `datasource` reference anywhere in a dashboard, as (JSON path, reference).
fn datasource_refs(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((p.clone(), x.clone()));
                }
                datasource_refs(x, &p, out);
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| datasource_refs(x, &format!("{path}[{i}]"), out)),
        _ => {}
    }
}

/// Panels, including those nested in rows.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: Option<&'a Value>, out: &mut Vec<&'a Value>) {
        for p in list.and_then(Value::as_array).into_iter().flatten() {
            out.push(p);
            walk(p.get("panels"), out);
        }
    }
    let mut out = vec![];
    walk(dash.get("panels"), &mut out);
    out
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[test]
fn provisioning_dashboards_and_mounts_agree() {
    let ds = datasources();
    let (pg_type, pg) = ds.get(PG_UID).expect("the PostgreSQL datasource is provisioned with uid tierwatch-pg");
    assert_eq!(pg_type, PG_TYPE);
    let pg_json = pg.get("jsonData").expect("PostgreSQL jsonData");
    for key in ["database", "sslmode"] {
        yaml_str(pg_json, key, "PostgreSQL jsonData");
    }
    assert!(pg_json.get("postgresVersion").and_then(yaml_serde::Value::as_u64).is_some(), "postgresVersion");
    assert_eq!(pg_json.get("timescaledb").and_then(yaml_serde::Value::as_bool), Some(false));
    let (prom_type, prom) = ds.get(PROM_UID).expect("the Prometheus datasource is provisioned with uid tierwatch-prom");
    assert_eq!(prom_type, "prometheus");
    let interval = prom.get("jsonData").map(|j| yaml_str(j, "timeInterval", "Prometheus jsonData"));
    assert_eq!(interval, Some("15s"), "Prometheus timeInterval = the scrape interval");

    // The provider reads the directory compose mounts the dashboards into.
    let rel = "grafana/provisioning/dashboards/tierwatch.yaml";
    let doc = yaml(rel);
    let providers = doc.get("providers").and_then(yaml_serde::Value::as_sequence).expect("providers");
    assert_eq!(providers.len(), 1, "{rel}: one provider");
    let p = &providers[0];
    assert_eq!(yaml_str(p, "type", rel), "file");
    assert_eq!(yaml_str(p, "folder", rel), "tierwatch");
    assert_eq!(p.get("allowUiUpdates").and_then(yaml_serde::Value::as_bool), Some(false));
    let path = yaml_str(p.get("options").expect("provider options"), "path", rel);
    assert_eq!(path, DASHBOARDS_PATH);
    let compose = repo().join("docker-compose.yml");
    if compose.exists() {
        let c = yaml("docker-compose.yml");
        let volumes: Vec<&str> = c
            .get("services")
            .and_then(|s| s.get("grafana"))
            .and_then(|g| g.get("volumes"))
            .and_then(yaml_serde::Value::as_sequence)
            .expect("compose: services.grafana.volumes")
            .iter()
            .filter_map(yaml_serde::Value::as_str)
            .collect();
        let target = |src: &str| {
            volumes.iter().find_map(|v| {
                let mut parts = v.split(':');
                (parts.next() == Some(src)).then(|| parts.next().unwrap_or_default().to_string())
            })
        };
        assert_eq!(
            target("./grafana/dashboards").as_deref(),
            Some(path),
            "compose mounts the dashboards where the provider reads"
        );
        assert_eq!(target("./grafana/provisioning").as_deref(), Some("/etc/grafana/provisioning"));
    } else {
        println!("no docker-compose.yml in this tree: the provider path was checked against {DASHBOARDS_PATH} only");
    }

    // Every dashboard: uid tierwatch-<stem>, unique; every datasource reference by provisioned uid
    // and type (the built-in annotation's "-- Grafana --" aside); SQL targets have rawSql and format.
    let mut uids = BTreeSet::new();
    let mut stems = BTreeSet::new();
    for (stem, dash) in dashboards() {
        let uid = s(&dash, "uid");
        assert_eq!(uid, format!("tierwatch-{stem}"), "{stem}.json uid");
        assert!(uids.insert(uid.to_string()), "dashboard uid {uid} twice");
        assert!(dash.get("schemaVersion").and_then(Value::as_u64).unwrap_or(0) >= 36, "{stem}.json schemaVersion");
        let mut refs = vec![];
        datasource_refs(&dash, &stem, &mut refs);
        assert!(!refs.is_empty(), "{stem}.json references no datasource");
        for (at, r) in refs {
            let uid = s(&r, "uid");
            if uid == "-- Grafana --" {
                continue;
            }
            let (ty, _) = ds.get(uid).unwrap_or_else(|| panic!("{at}: datasource {r} is not a provisioned uid"));
            assert_eq!(s(&r, "type"), ty, "{at}: datasource type");
        }
        // Panel ids are unique; the top-level panels fit the 24-column grid without overlapping.
        let mut ids = BTreeSet::new();
        for p in panels(&dash) {
            let id = p.get("id").and_then(Value::as_i64);
            assert!(
                id.is_some_and(|id| ids.insert(id)),
                "{stem}/{}: panel id {id:?} missing or repeated",
                s(p, "title")
            );
        }
        let mut placed: Vec<(&str, [i64; 4])> = vec![];
        for p in dash.get("panels").and_then(Value::as_array).into_iter().flatten() {
            let title = s(p, "title");
            let g =
                ["x", "y", "w", "h"].map(|k| p.pointer(&format!("/gridPos/{k}")).and_then(Value::as_i64).unwrap_or(-1));
            assert!(g.iter().all(|v| *v >= 0) && g[2] > 0 && g[0] + g[2] <= 24, "{stem}/{title}: gridPos {g:?}");
            for (other, o) in &placed {
                let apart = g[0] + g[2] <= o[0] || o[0] + o[2] <= g[0] || g[1] + g[3] <= o[1] || o[1] + o[3] <= g[1];
                assert!(apart, "{stem}: panels {title:?} and {other:?} overlap");
            }
            placed.push((title, g));
        }
        for p in panels(&dash) {
            if p.get("type").and_then(Value::as_str) == Some("row") {
                continue;
            }
            let title = s(p, "title");
            assert!(p.get("datasource").is_some(), "{stem}/{title}: panel without a datasource");
            for t in p.get("targets").and_then(Value::as_array).expect("targets") {
                assert!(t.get("datasource").is_some(), "{stem}/{title}: target without a datasource");
                if s(t.get("datasource").unwrap(), "uid") == PG_UID {
                    assert!(!s(t, "rawSql").is_empty(), "{stem}/{title}: SQL target without rawSql");
                    assert!(["table", "time_series"].contains(&s(t, "format")), "{stem}/{title}: format");
                }
            }
        }
        stems.insert(stem);
    }
    for d in SQL_DASHBOARDS {
        assert!(stems.contains(*d), "grafana/dashboards/{d}.json is missing");
    }
}

// ---------------------------------------------------------------------------------------------
// The replayed post-mortem and every query

/// One query to run: where it comes from, its SQL template, what it must return.
#[derive(Clone)]
struct Query {
    dashboard: String,
    panel: String,
    ref_id: String,
    kind: Kind,
    sql: String,
    /// The panel's minimum interval (`interval`), if any.
    min_interval: Option<String>,
    /// Columns the panel names in a `byName` override, and whether that override sets a unit.
    declared: Vec<(String, bool)>,
    /// A trend panel's x field (`options.xField`; empty when the panel names none).
    x_field: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    TimeSeries,
    Table,
    Annotation,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::TimeSeries => "time_series",
            Kind::Table => "table",
            Kind::Annotation => "annotation",
        }
    }
}

fn is_pg(ds: Option<&Value>) -> bool {
    ds.map(|d| s(d, "uid") == PG_UID).unwrap_or(false)
}

/// The SQL targets and annotations of a dashboard.
fn queries(stem: &str, dash: &Value) -> Vec<Query> {
    let mut out = vec![];
    for p in panels(dash) {
        let declared: Vec<(String, bool)> = p
            .pointer("/fieldConfig/overrides")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|o| o.pointer("/matcher/id").and_then(Value::as_str) == Some("byName"))
            .map(|o| {
                let name = o.pointer("/matcher/options").and_then(Value::as_str).unwrap_or_default().to_string();
                let unit = o
                    .get("properties")
                    .and_then(Value::as_array)
                    .is_some_and(|ps| ps.iter().any(|x| s(x, "id") == "unit"));
                (name, unit)
            })
            .collect();
        for t in p.get("targets").and_then(Value::as_array).into_iter().flatten() {
            if !is_pg(t.get("datasource").or(p.get("datasource"))) {
                continue;
            }
            out.push(Query {
                dashboard: stem.to_string(),
                panel: s(p, "title").to_string(),
                ref_id: s(t, "refId").to_string(),
                kind: if s(t, "format") == "time_series" { Kind::TimeSeries } else { Kind::Table },
                sql: s(t, "rawSql").to_string(),
                min_interval: p.get("interval").and_then(Value::as_str).map(str::to_string),
                declared: declared.clone(),
                x_field: (s(p, "type") == "trend")
                    .then(|| p.pointer("/options/xField").and_then(Value::as_str).unwrap_or_default().to_string()),
            });
        }
    }
    for a in dash.pointer("/annotations/list").and_then(Value::as_array).into_iter().flatten() {
        if !is_pg(a.get("datasource")) {
            continue;
        }
        let sql = a.pointer("/target/rawSql").or(a.get("rawQuery")).and_then(Value::as_str).unwrap_or_default();
        assert!(!sql.is_empty(), "{stem}: annotation {} has no SQL", s(a, "name"));
        out.push(Query {
            dashboard: stem.to_string(),
            panel: format!("annotation: {}", s(a, "name")),
            ref_id: "-".into(),
            kind: Kind::Annotation,
            sql: sql.to_string(),
            min_interval: None,
            declared: vec![],
            x_field: None,
        });
    }
    out
}

/// The relations a query reads (after FROM / JOIN), other than its own CTEs, and every internal
/// `tw_*` name anywhere in it (tables, helper views, functions).
fn relations(sql: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    // Literals and quoted identifiers out, so their words are not mistaken for SQL.
    let mut plain = String::new();
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                plain.push_str(" q ");
            }
            None => plain.push(c.to_ascii_lowercase()),
        }
    }
    let words: Vec<(usize, &str)> = plain
        .match_indices(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .scan(0, |start, (i, sep)| {
            let w = (*start, &plain[*start..i]);
            *start = i + sep.len();
            Some(w)
        })
        .filter(|(_, w)| !w.is_empty())
        .collect();
    let ctes: BTreeSet<&str> = words
        .windows(2)
        .filter(|w| w[1].1 == "as" && plain[w[1].0 + 2..].trim_start().starts_with('('))
        .map(|w| w[0].1)
        .collect();
    const EXTRACT_FIELDS: &[&str] =
        &["epoch", "year", "month", "day", "hour", "minute", "second", "dow", "doy", "week"];
    let internal = words.iter().filter(|(_, w)| w.starts_with("tw_")).map(|(_, w)| w.to_string()).collect();
    let mut out = BTreeSet::new();
    for (i, (_, w)) in words.iter().enumerate() {
        if !(*w == "from" || *w == "join")
            || (i > 0 && (EXTRACT_FIELDS.contains(&words[i - 1].1) || words[i - 1].1 == "distinct"))
        {
            continue;
        }
        let Some((at, next)) = words.get(i + 1).copied() else { continue };
        let next = if next == "lateral" { words.get(i + 2).map(|x| x.1).unwrap_or_default() } else { next };
        let after = plain[at + next.len()..].trim_start();
        // A subquery (the next word is inside its parentheses) or a function call.
        if plain[words[i].0 + w.len()..at].contains('(') || after.starts_with('(') || ctes.contains(next) {
            continue;
        }
        out.insert(next.trim_start_matches("public.").to_string());
    }
    (out, internal)
}

/// A column of a result: name, Postgres type name, rows where it is not NULL.
struct Col {
    name: String,
    ty: String,
    non_null: i64,
}

const NUMERIC: &[&str] = &["INT2", "INT4", "INT8", "FLOAT4", "FLOAT8", "NUMERIC"];
const TIME: &[&str] = &["TIMESTAMPTZ", "TIMESTAMP", "DATE", "INT4", "INT8", "FLOAT8", "NUMERIC"];
const TEXT: &[&str] = &["TEXT", "VARCHAR", "BPCHAR", "NAME"];

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Run `sql`; returns its columns with their non-NULL counts, and the row count.
async fn run(pool: &sqlx::PgPool, sql: &str) -> Result<(Vec<Col>, i64), String> {
    let sql = sql.trim().trim_end_matches(';');
    let rows = sqlx::query(sql).fetch_all(pool).await.map_err(|e| format!("{e}"))?;
    let Some(first) = rows.first() else { return Ok((vec![], 0)) };
    let mut cols: Vec<Col> = first
        .columns()
        .iter()
        .map(|c| Col { name: c.name().to_string(), ty: c.type_info().name().to_string(), non_null: 0 })
        .collect();
    let names: BTreeSet<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    if names.len() != cols.len() {
        return Err(format!("duplicate column names: {:?}", cols.iter().map(|c| &c.name).collect::<Vec<_>>()));
    }
    let counts = cols.iter().map(|c| format!("COUNT({})", quote_ident(&c.name))).collect::<Vec<_>>().join(", ");
    let row =
        sqlx::query(&format!("SELECT {counts} FROM ({sql}) q")).fetch_one(pool).await.map_err(|e| format!("{e}"))?;
    for (i, c) in cols.iter_mut().enumerate() {
        c.non_null = row.try_get::<i64, _>(i).map_err(|e| format!("{e}"))?;
    }
    Ok((cols, rows.len() as i64))
}

/// What a query's result must look like for its panel; Err describes the mismatch.
fn check_shape(q: &Query, cols: &[Col]) -> Result<(), String> {
    let by_name: BTreeMap<&str, &Col> = cols.iter().map(|c| (c.name.as_str(), c)).collect();
    let time_ok = |name: &str| by_name.get(name).is_some_and(|c| TIME.contains(&c.ty.as_str()) && c.non_null > 0);
    match q.kind {
        Kind::TimeSeries => {
            if !time_ok("time") {
                return Err("no `time` column of a time type (timestamptz, date or epoch)".into());
            }
            let values: Vec<&Col> = cols.iter().filter(|c| c.name != "time").collect();
            for c in &values {
                if !NUMERIC.contains(&c.ty.as_str()) && !TEXT.contains(&c.ty.as_str()) {
                    return Err(format!("column {} is {}: a time series takes numbers and text labels", c.name, c.ty));
                }
                if NUMERIC.contains(&c.ty.as_str()) && c.non_null == 0 {
                    return Err(format!("value column {} is NULL in every row", c.name));
                }
            }
            if !values.iter().any(|c| NUMERIC.contains(&c.ty.as_str())) {
                return Err("no numeric value column".into());
            }
        }
        Kind::Table => {
            if cols.is_empty() || cols.iter().all(|c| c.non_null == 0) {
                return Err("every column is NULL".into());
            }
        }
        Kind::Annotation => {
            if !time_ok("time") {
                return Err("an annotation needs a `time` column of a time type".into());
            }
            if !by_name.get("text").is_some_and(|c| TEXT.contains(&c.ty.as_str()) && c.non_null > 0) {
                return Err("an annotation needs a `text` column".into());
            }
            if let Some(c) = by_name.get("timeend") {
                if !TIME.contains(&c.ty.as_str()) {
                    return Err(format!("timeend is {}", c.ty));
                }
            }
            if by_name.get("tags").is_some_and(|c| !TEXT.contains(&c.ty.as_str())) {
                return Err("tags must be text".into());
            }
        }
    }
    // Columns the panel configures by name exist; those given a unit are numbers with data.
    for (name, unit) in &q.declared {
        let Some(c) = by_name.get(name.as_str()) else {
            return Err(format!("the panel configures column `{name}`, which the query does not return"));
        };
        if *unit && (!NUMERIC.contains(&c.ty.as_str()) || c.non_null == 0) {
            return Err(format!("column `{name}` has a unit but is {} with {} non-NULL values", c.ty, c.non_null));
        }
    }
    Ok(())
}

/// The variables of a dashboard, resolved in order the way Grafana does on load: a query
/// variable runs its (expanded) query; the current selection is kept if it is an option, else
/// All (when offered) or the first option. Returns the variables and one report line each.
async fn resolve_variables(
    stem: &str,
    dash: &Value,
    pool: &sqlx::PgPool,
    range: &grafana::Range,
) -> (grafana::Vars, Vec<(String, i64)>) {
    let mut vars = grafana::Vars::default();
    let mut lines = vec![];
    for v in dash.pointer("/templating/list").and_then(Value::as_array).into_iter().flatten() {
        let name = s(v, "name").to_string();
        let query = match v.get("query") {
            Some(Value::String(q)) => q.clone(),
            Some(Value::Object(o)) => {
                o.get("rawSql").or(o.get("query")).and_then(Value::as_str).unwrap_or_default().into()
            }
            _ => String::new(),
        };
        let options: Vec<String> = match s(v, "type") {
            "query" => {
                assert!(is_pg(v.get("datasource")), "{stem}: variable {name} queries another datasource");
                let sql = grafana::expand(&query, range, grafana::DAY_MS, &vars)
                    .unwrap_or_else(|e| panic!("{stem}: variable {name}: {e}\n{query}"));
                let rows = sqlx::query(sql.trim().trim_end_matches(';'))
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{stem}: variable {name}: {e}\n{sql}"));
                let col = rows.first().map(|r| r.columns()[0].type_info().name().to_string()).unwrap_or_default();
                assert!(
                    rows.is_empty() || TEXT.contains(&col.as_str()),
                    "{stem}: variable {name} returns {col}, not text"
                );
                rows.iter().map(|r| r.get::<Option<String>, _>(0).unwrap_or_default()).collect()
            }
            "custom" => query.split(',').map(|x| x.trim().to_string()).collect(),
            "constant" | "textbox" => vec![query.clone()],
            other => panic!("{stem}: variable {name} of type {other}: the test does not know how to resolve it"),
        };
        assert!(!options.is_empty(), "{stem}: variable {name} has no option on the replayed data");
        lines.push((format!("{stem} | variable: {name}"), options.len() as i64));
        let multi = v.get("multi").and_then(Value::as_bool).unwrap_or(false);
        let include_all = v.get("includeAll").and_then(Value::as_bool).unwrap_or(false);
        let current: Vec<String> = match v.pointer("/current/value") {
            Some(Value::String(x)) => vec![x.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => vec![],
        };
        let all_selected = include_all && (current.is_empty() || current.iter().any(|c| c == "$__all"));
        let kept: Vec<String> = current.into_iter().filter(|c| options.contains(c)).collect();
        let selected = if all_selected {
            grafana::Selected::All { options, custom: v.get("allValue").and_then(Value::as_str).map(str::to_string) }
        } else if !kept.is_empty() {
            grafana::Selected::Values(kept)
        } else {
            grafana::Selected::Values(vec![options[0].clone()])
        };
        vars.insert(name, grafana::Var { selected, quoted: multi || include_all });
    }
    (vars, lines)
}

/// A trend panel's x field: a double precision column, never NULL, strictly ascending in the
/// query's row order (Grafana refuses to draw a trend otherwise).
async fn check_x_field(pool: &sqlx::PgPool, sql: &str, field: &str) -> Result<(), String> {
    if field.is_empty() {
        return Err("a trend panel without options.xField".into());
    }
    let rows = sqlx::query(sql.trim().trim_end_matches(';')).fetch_all(pool).await.map_err(|e| format!("{e}"))?;
    let mut prev = f64::NEG_INFINITY;
    for r in &rows {
        let x: Option<f64> =
            r.try_get(field).map_err(|e| format!("trend x field `{field}`: {e} (double precision needed)"))?;
        let x = x.ok_or_else(|| format!("trend x field `{field}` is NULL"))?;
        if x <= prev {
            return Err(format!("trend x field `{field}` is not ascending: {prev} then {x}"));
        }
        prev = x;
    }
    Ok(())
}

/// Simulate a scenario into files and replay them into the environment's database with the
/// rescorer; `extra` is appended to the replay configuration. Returns replay's last line.
fn simulate_and_replay(env: &Env, scenario: &str, days: u32, per_day: u32, extra: &str) -> String {
    let dir = env.dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_tierwatch"))
        .args(["simulate", "--scenario", scenario, "--format", "avro"])
        .args(["--days", &days.to_string(), "--conversations-per-day", &per_day.to_string()])
        .arg("--out")
        .arg(dir.join("sim"))
        .output()
        .expect("run tierwatch simulate");
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
    let files = ["routing_decisions", "feedback", "support_tickets"].map(|f| dir.join("sim").join(format!("{f}.avro")));
    let model = repo().join("models/rescorer.onnx").canonicalize().expect("models/rescorer.onnx");
    let cfg = dir.join("replay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[postgres]\nurl = \"{}\"\n[http]\nlisten = \"\"\n[drift]\nlookback_days = {}\n\
             [rescore]\nmodel_path = \"{}\"\nqueue_capacity = 1000000\n{extra}",
            env.db_url,
            days + 14,
            model.display()
        ),
    )
    .unwrap();
    replay(&cfg, &files).lines().last().unwrap_or_default().to_string()
}

/// One report line: (dashboard | panel, ref, format, reads, rows).
type Line = (String, String, String, String, i64);

/// Check one query on one database. `Ok(None)`: it ran and returned no row (the caller decides
/// whether that is allowed); `Ok(Some(rows))`: it returned rows of the right shape.
async fn check_query(
    pool: &sqlx::PgPool,
    q: &Query,
    range: &grafana::Range,
    vars: &grafana::Vars,
) -> Result<Option<i64>, String> {
    let interval = grafana::interval_ms(range, q.min_interval.as_deref());
    let sql = grafana::expand(&q.sql, range, interval, vars)?;
    match run(pool, &sql).await {
        Err(e) => Err(format!("{e}\n{sql}")),
        Ok((_, 0)) => Ok(None),
        Ok((cols, n)) => {
            if let Err(e) = check_shape(q, &cols) {
                let got: Vec<String> = cols.iter().map(|c| format!("{} {} ({})", c.name, c.ty, c.non_null)).collect();
                return Err(format!("{e}; columns: {}", got.join(", ")));
            }
            if let Some(field) = &q.x_field {
                check_x_field(pool, &sql, field).await.map_err(|e| format!("{e}\n{sql}"))?;
            }
            Ok(Some(n))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_the_replayed_postmortem() {
    let started = std::time::Instant::now();
    let env = Env::new("dashboards").await;

    // The post-mortem scenario, into files, then replayed into Postgres with the rescorer and a
    // routed-share target for its router.
    let last = simulate_and_replay(&env, "postmortem", DAYS, CONVERSATIONS_PER_DAY, ROUTING_TARGET);
    println!("{last}");
    println!("simulated and replayed in {:.1}s", started.elapsed().as_secs_f64());
    // The scenario's alerts fired, so the alert panels and annotations have something to show.
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT kind FROM alerts ORDER BY 1").fetch_all(&env.pool).await.unwrap();
    for kind in [
        "confidence_drift",
        "tier_quality_regression",
        "aggregate_quality_regression",
        "calibration_regression",
        "routed_share_deviation",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} alert on the replayed post-mortem: {kinds:?}");
    }

    let start = tierwatch::sim::SimConfig::new(tierwatch::sim::Scenario::Postmortem).start;
    let from = start.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let range = grafana::Range { from, to: from + Duration::days(i64::from(DAYS) + 7) };

    let public = public_views();
    let mut report: Vec<Line> = vec![];
    let mut failures = vec![];
    let mut seen = BTreeSet::new();
    // Queries left empty by the post-mortem because they read a cascade-only view, by dashboard.
    let mut deferred: BTreeMap<String, (Value, Vec<(Query, String)>)> = BTreeMap::new();
    for (stem, dash) in dashboards() {
        let all = queries(&stem, &dash);
        let sql_dashboard = SQL_DASHBOARDS.contains(&stem.as_str());
        assert!(!sql_dashboard || !all.is_empty(), "{stem}.json has no SQL query");
        if all.is_empty() {
            continue;
        }
        seen.insert(stem.clone());
        let (vars, var_lines) = resolve_variables(&stem, &dash, &env.pool, &range).await;
        for (what, n) in var_lines {
            report.push((what, "-".into(), "variable".into(), "".into(), n));
        }
        for q in all {
            let what = format!("{} | {}", q.dashboard, q.panel);
            let (views, internal) = relations(&q.sql);
            if !internal.is_empty() {
                failures.push(format!("{what} [{}]: uses internal names {internal:?}", q.ref_id));
            }
            let reads = views.iter().cloned().collect::<Vec<_>>().join(", ");
            if let Some(v) = views.iter().find(|v| !public.contains(*v)) {
                failures.push(format!("{what} [{}]: reads `{v}`, not a documented public view", q.ref_id));
            }
            if views.is_empty() {
                failures.push(format!("{what} [{}]: reads no public view", q.ref_id));
            }
            let cascade_only = views.iter().any(|v| CASCADE_VIEWS.contains(&v.as_str()));
            match check_query(&env.pool, &q, &range, &vars).await {
                Err(e) => failures.push(format!("{what} [{}]: {e}", q.ref_id)),
                Ok(None) if cascade_only => {
                    report.push((what, q.ref_id.clone(), q.kind.label().into(), reads.clone(), 0));
                    deferred.entry(stem.clone()).or_insert_with(|| (dash.clone(), vec![])).1.push((q, reads));
                }
                Ok(None) => failures.push(format!("{what} [{}]: no row on the replayed post-mortem", q.ref_id)),
                Ok(Some(n)) => report.push((what, q.ref_id.clone(), q.kind.label().into(), reads, n)),
            }
        }
    }

    // The cascade-only queries, on a replayed cascade scenario (a CASCADE router, "selfconf-1").
    if !deferred.is_empty() {
        let cascade = Env::new("dashboards_cascade").await;
        let last = simulate_and_replay(&cascade, "cascade", CASCADE_DAYS, CASCADE_CONVERSATIONS_PER_DAY, "");
        println!("cascade: {last}");
        for (stem, (dash, list)) in &deferred {
            let (vars, _) = resolve_variables(stem, dash, &cascade.pool, &range).await;
            for (q, reads) in list {
                let what = format!("{} | {} (cascade replay)", q.dashboard, q.panel);
                match check_query(&cascade.pool, q, &range, &vars).await {
                    Err(e) => failures.push(format!("{what} [{}]: {e}", q.ref_id)),
                    Ok(None) => failures.push(format!("{what} [{}]: no row on the replayed cascade", q.ref_id)),
                    Ok(Some(n)) => report.push((what, q.ref_id.clone(), q.kind.label().into(), reads.clone(), n)),
                }
            }
        }
    }

    println!("\n{:<96} {:<4} {:<12} {:<44} {:>6}", "dashboard | panel", "ref", "format", "reads", "rows");
    for (what, r, kind, reads, n) in &report {
        println!("{what:<96} {r:<4} {kind:<12} {reads:<44} {n:>6}");
    }
    println!("\n{} queries in {:.1}s", report.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} dashboard queries failed:\n\n{}", failures.len(), failures.join("\n\n"));
    for d in SQL_DASHBOARDS {
        assert!(seen.contains(*d), "{d}.json was not checked");
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana's SQL macros and template variables

/// What Grafana does to a PostgreSQL query before sending it: template variables (user ones,
/// `$__interval`, `$__interval_ms`) and the datasource's macros. Anything else starting with `$`
/// or `[[` is refused, so a typo or an unsupported macro fails instead of reaching Postgres.
mod grafana {
    use std::collections::BTreeMap;

    use chrono::{DateTime, SecondsFormat, Utc};

    pub const DAY_MS: i64 = 86_400_000;

    pub struct Range {
        pub from: DateTime<Utc>,
        pub to: DateTime<Utc>,
    }

    pub enum Selected {
        Values(Vec<String>),
        /// The All option: every option, or the variable's custom all value.
        All {
            options: Vec<String>,
            custom: Option<String>,
        },
    }

    pub struct Var {
        pub selected: Selected,
        /// Multi-value or All-offering variables are quoted by default in SQL datasources.
        pub quoted: bool,
    }

    #[derive(Default)]
    pub struct Vars(BTreeMap<String, Var>);

    impl Vars {
        pub fn insert(&mut self, name: String, v: Var) {
            self.0.insert(name, v);
        }
    }

    /// Grafana's interval for a panel: range / 1000 points rounded up to a round step, never
    /// below the panel's minimum interval.
    pub fn interval_ms(range: &Range, min: Option<&str>) -> i64 {
        const STEPS: &[i64] = &[
            1_000,
            5_000,
            10_000,
            15_000,
            30_000,
            60_000,
            300_000,
            600_000,
            900_000,
            1_800_000,
            3_600_000,
            7_200_000,
            10_800_000,
            21_600_000,
            43_200_000,
            DAY_MS,
            7 * DAY_MS,
            30 * DAY_MS,
        ];
        let raw = (range.to - range.from).num_milliseconds() / 1000;
        let auto = STEPS.iter().copied().find(|s| *s >= raw).unwrap_or(30 * DAY_MS);
        auto.max(min.and_then(|m| parse_interval(m).ok()).unwrap_or(0))
    }

    /// `1d`, `12h`, `5m`, `30s`, `250ms`, `1w` (optionally quoted) as milliseconds.
    pub fn parse_interval(text: &str) -> Result<i64, String> {
        let t = text.trim().trim_matches('\'');
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let n: i64 = t[..split].parse().map_err(|_| format!("interval `{text}`"))?;
        let unit = match &t[split..] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => DAY_MS,
            "w" => 7 * DAY_MS,
            _ => return Err(format!("interval `{text}`")),
        };
        Ok(n * unit)
    }

    fn format_interval(ms: i64) -> String {
        for (unit, len) in [("w", 7 * DAY_MS), ("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms % len == 0 {
                return format!("{}{unit}", ms / len);
            }
        }
        format!("{ms}ms")
    }

    fn rfc3339(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn sql_quote(v: &str) -> String {
        format!("'{}'", v.replace('\'', "''"))
    }

    /// A variable's value in a format (`None`: Grafana's default for SQL datasources).
    fn render(name: &str, var: &Var, format: Option<&str>) -> Result<String, String> {
        let values: Vec<String> = match &var.selected {
            Selected::All { custom: Some(c), .. } => return Ok(c.clone()),
            Selected::All { options, .. } => options.clone(),
            Selected::Values(v) => v.clone(),
        };
        let join = |f: &dyn Fn(&str) -> String, sep: &str| values.iter().map(|v| f(v)).collect::<Vec<_>>().join(sep);
        Ok(match format {
            None if var.quoted => join(&sql_quote, ","),
            None | Some("raw") | Some("csv") => join(&|v| v.to_string(), ","),
            Some("sqlstring") => join(&sql_quote, ","),
            Some("singlequote") => join(&|v| format!("'{}'", v.replace('\'', "\\'")), ","),
            Some("doublequote") => join(&|v| format!("\"{}\"", v.replace('"', "\\\"")), ","),
            Some("pipe") => join(&|v| v.to_string(), "|"),
            Some(other) => return Err(format!("variable {name}: unknown format `{other}`")),
        })
    }

    fn ident_len(s: &str) -> usize {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
    }

    /// Template variables (user ones, `$__interval`, `$__interval_ms`); macros are left in place.
    fn variables(sql: &str, interval_ms: i64, vars: &Vars) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = sql;
        while let Some(i) = rest.find(['$', '[']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let braced =
                tail.strip_prefix("[[").map(|t| (t, "]]")).or_else(|| tail.strip_prefix("${").map(|t| (t, "}")));
            if let Some((t, close)) = braced {
                let end =
                    t.find(close).ok_or_else(|| format!("unterminated variable `{}`", &tail[..tail.len().min(20)]))?;
                let (name, format) = t[..end].split_once(':').map_or((&t[..end], None), |(n, f)| (n, Some(f)));
                out.push_str(&lookup(name, format, interval_ms, vars)?);
                rest = &t[end + close.len()..];
            } else if let Some(t) = tail.strip_prefix('[') {
                out.push('[');
                rest = t;
            } else {
                let t = &tail[1..];
                let n = ident_len(t);
                let name = &t[..n];
                if name.is_empty() {
                    return Err(format!("a lone `$` at `{}`", &tail[..tail.len().min(20)]));
                }
                if name.starts_with("__") && t[n..].starts_with('(') {
                    // A macro: left for the macro pass, verbatim.
                    out.push('$');
                    out.push_str(name);
                } else {
                    out.push_str(&lookup(name, None, interval_ms, vars)?);
                }
                rest = &t[n..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(name: &str, format: Option<&str>, interval_ms: i64, vars: &Vars) -> Result<String, String> {
        match name {
            "__interval" => Ok(format_interval(interval_ms)),
            "__interval_ms" => Ok(interval_ms.to_string()),
            _ => match vars.0.get(name) {
                Some(v) => render(name, v, format),
                None if name.starts_with("__") => Err(format!("unknown built-in variable or macro `${name}`")),
                None => Err(format!("unknown variable `${name}`")),
            },
        }
    }

    /// The query Grafana would send for `sql` over `range` at `interval_ms`.
    pub fn expand(sql: &str, range: &Range, interval_ms: i64, vars: &Vars) -> Result<String, String> {
        let sql = variables(sql, interval_ms, vars)?;
        let mut out = String::new();
        let mut rest = sql.as_str();
        while let Some(i) = rest.find("$__") {
            out.push_str(&rest[..i]);
            let t = &rest[i + 3..];
            let n = ident_len(t);
            let name = &t[..n];
            // As Grafana's macro pattern: the arguments run to the first `)`.
            let args_end = t[n + 1..].find(')').ok_or_else(|| format!("macro $__{name}: no closing parenthesis"))?;
            let raw = &t[n + 1..n + 1 + args_end];
            let args: Vec<String> =
                if raw.trim().is_empty() { vec![] } else { raw.split(',').map(|a| a.trim().to_string()).collect() };
            out.push_str(&macro_(name, &args, range)?);
            rest = &t[n + 1 + args_end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn macro_(name: &str, args: &[String], range: &Range) -> Result<String, String> {
        let arity = |n: std::ops::RangeInclusive<usize>| {
            if n.contains(&args.len()) {
                Ok(())
            } else {
                Err(format!("macro $__{name} takes {n:?} arguments, got {}", args.len()))
            }
        };
        if let Some(a) = args.iter().find(|a| a.contains('$')) {
            return Err(format!("macro $__{name}: argument `{a}` is itself a macro or variable left unexpanded"));
        }
        let (from, to) = (range.from, range.to);
        let secs = |a: &str| parse_interval(a).map(|ms| ms as f64 / 1000.0);
        Ok(match name {
            "time" => {
                arity(1..=1)?;
                format!("{} AS \"time\"", args[0])
            }
            "timeEpoch" => {
                arity(1..=1)?;
                format!("extract(epoch from {}) AS \"time\"", args[0])
            }
            "timeFilter" => {
                arity(1..=1)?;
                format!("{} BETWEEN '{}' AND '{}'", args[0], rfc3339(from), rfc3339(to))
            }
            "timeFrom" => {
                arity(0..=0)?;
                format!("'{}'", rfc3339(from))
            }
            "timeTo" => {
                arity(0..=0)?;
                format!("'{}'", rfc3339(to))
            }
            "timeGroup" | "timeGroupAlias" | "unixEpochGroup" | "unixEpochGroupAlias" => {
                arity(2..=3)?;
                let s = secs(&args[1])?;
                let epoch =
                    if name.starts_with("time") { format!("extract(epoch from {})", args[0]) } else { args[0].clone() };
                let e = format!("floor({epoch}/{s})*{s}");
                if name.ends_with("Alias") {
                    format!("{e} AS \"time\"")
                } else {
                    e
                }
            }
            "unixEpochFilter" => {
                arity(1..=1)?;
                format!("{0} >= {1} AND {0} <= {2}", args[0], from.timestamp(), to.timestamp())
            }
            "unixEpochNanoFilter" => {
                arity(1..=1)?;
                let (f, t) = (from.timestamp_nanos_opt().unwrap_or(0), to.timestamp_nanos_opt().unwrap_or(0));
                format!("{0} >= {f} AND {0} <= {t}", args[0])
            }
            "unixEpochFrom" => {
                arity(0..=0)?;
                from.timestamp().to_string()
            }
            "unixEpochTo" => {
                arity(0..=0)?;
                to.timestamp().to_string()
            }
            other => return Err(format!("unknown macro $__{other}")),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn range() -> Range {
            let from = DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").unwrap().with_timezone(&Utc);
            Range { from, to: from + chrono::Duration::days(2) }
        }

        fn vars() -> Vars {
            let mut v = Vars::default();
            let all = Selected::All { options: vec!["a".into(), "o'b".into()], custom: None };
            v.insert("tier".into(), Var { selected: all, quoted: true });
            v.insert("one".into(), Var { selected: Selected::Values(vec!["x".into()]), quoted: false });
            let custom = Selected::All { options: vec!["a".into()], custom: Some("%".into()) };
            v.insert("like".into(), Var { selected: custom, quoted: true });
            v
        }

        fn ok(sql: &str) -> String {
            expand(sql, &range(), DAY_MS, &vars()).unwrap()
        }

        #[test]
        fn macros_and_variables_expand_as_grafana_does() {
            assert_eq!(ok("$__timeFilter(day)"), "day BETWEEN '2026-01-05T00:00:00Z' AND '2026-01-07T00:00:00Z'");
            assert_eq!(ok("$__timeFrom() $__timeTo()"), "'2026-01-05T00:00:00Z' '2026-01-07T00:00:00Z'");
            assert_eq!(
                ok("$__timeGroupAlias(bucket, $__interval)"),
                "floor(extract(epoch from bucket)/86400)*86400 AS \"time\""
            );
            assert_eq!(ok("$__timeGroup(ts, '1h', 0)"), "floor(extract(epoch from ts)/3600)*3600");
            assert_eq!(ok("$__unixEpochFilter(t)"), "t >= 1767571200 AND t <= 1767744000");
            assert_eq!(ok("$__unixEpochGroupAlias(t, 5m)"), "floor(t/300)*300 AS \"time\"");
            assert_eq!(ok("$__interval $__interval_ms"), "1d 86400000");
            assert_eq!(ok("IN (${tier:sqlstring}) IN ($tier) [[tier]]"), "IN ('a','o''b') IN ('a','o''b') 'a','o''b'");
            assert_eq!(ok("${tier:csv} ${one} $one ${one:sqlstring}"), "a,o'b x x 'x'");
            assert_eq!(ok("LIKE '$like'"), "LIKE '%'");
            assert_eq!(ok("a[1] -- no variable"), "a[1] -- no variable");
            assert_eq!(interval_ms(&range(), None), 300_000);
            assert_eq!(interval_ms(&range(), Some("1d")), DAY_MS);
        }

        #[test]
        fn anything_unknown_is_refused() {
            for bad in [
                "$__timeFilterX(day)",
                "$__timeFilter(day",
                "$__timeFilter(a, b)",
                "$__timeGroup(ts)",
                "$__timeGroup(ts, $__intervalx)",
                "$__range",
                "$nope",
                "${nope:sqlstring}",
                "${tier:json}",
                "${tier",
                "[[tier",
                "cost $ 5",
                "$__timeGroup($__timeFrom(), 1d)",
            ] {
                assert!(expand(bad, &range(), DAY_MS, &vars()).is_err(), "`{bad}` was accepted");
            }
        }
    }
}
