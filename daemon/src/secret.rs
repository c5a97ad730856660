//! Secrets in the configuration: values that never appear in `check-config`, logs or `Debug`
//! output, and that may be kept out of the configuration file.
//!
//! Every secret-bearing value (`postgres.url`, `kafka.properties` values, `rescore.hash_key`,
//! `privacy.hash_key`, `alerts.webhooks[].url`) may contain references, replaced when the
//! configuration is loaded:
//!
//! - `${env:NAME}`: the value of environment variable `NAME` (an error if it is not set);
//! - `${file:/path}`: the contents of the file, without a trailing line break (an error if it
//!   cannot be read);
//! - `$${` stands for a literal `${`.
//!
//! A reference may be the whole value (`sasl.password = "${file:/run/secrets/kafka}"`) or a part
//! of it (`url = "postgres://tierwatch:${env:PGPASSWORD}@db:5432/tierwatch"`). An error names the
//! configuration key.
//!
//! When shown, a [`Secret`] prints `***` (empty stays empty, so an unset key is visible), a
//! [`SecretUrl`] its URL with the password masked, and [`KafkaProperties`] every value whose key
//! names a secret (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, …)
//! as `***`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Replace `${env:…}` and `${file:…}` references in `raw` (see the module documentation).
pub fn expand(raw: &str) -> Result<String, String> {
    expand_with(raw, &|name| std::env::var(name).ok(), &|path| std::fs::read_to_string(path))
}

fn expand_with(
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
    file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t.find('}').ok_or_else(|| format!("unterminated reference `${{{t}`"))?;
            let reference = &t[..end];
            out.push_str(&resolve(reference, env, file)?);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    reference: &str,
    env: &dyn Fn(&str) -> Option<String>,
    file: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<String, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        if name.is_empty() {
            return Err("`${env:}` needs a variable name".into());
        }
        env(name).ok_or_else(|| format!("environment variable {name} (referenced as `${{env:{name}}}`) is not set"))
    } else if let Some(path) = reference.strip_prefix("file:") {
        if path.is_empty() {
            return Err("`${file:}` needs a path".into());
        }
        let text = file(path).map_err(|e| format!("cannot read secret file {path}: {e}"))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
    } else {
        Err(format!("unknown reference `${{{reference}}}`: use `${{env:NAME}}` or `${{file:PATH}}` (`$${{` for a literal `${{`)"))
    }
}

/// How a secret is shown.
pub trait Redaction {
    fn redact(value: &str) -> String;
}

/// Shown as `***` (empty as empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Whole;
impl Redaction for Whole {
    fn redact(value: &str) -> String {
        if value.is_empty() {
            String::new()
        } else {
            "***".into()
        }
    }
}

/// A connection URL: shown with the password (userinfo and `password`/`sslpassword` query
/// parameters) masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPassword;
impl Redaction for UrlPassword {
    fn redact(value: &str) -> String {
        redact_url_password(value)
    }
}

/// A URL whose path or query may be the credential (a Slack incoming webhook): shown as
/// `scheme://host/***`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlOrigin;
impl Redaction for UrlOrigin {
    fn redact(value: &str) -> String {
        let Some(s) = value.find("://") else { return Whole::redact(value) };
        let after = &value[s + 3..];
        let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let host = &after[..host_end];
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let hidden = if host_end < after.len() { "/***" } else { "" };
        format!("{}{host}{hidden}", &value[..s + 3])
    }
}

/// A configuration value that is a credential, resolved at load time (see the module docs).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<R = Whole> {
    value: String,
    _shown: PhantomData<R>,
}

/// A Postgres connection URL (its password masked when shown).
pub type SecretUrl = Secret<UrlPassword>;

impl<R> Secret<R> {
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: value.into(), _shown: PhantomData }
    }

    /// The real value, for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl<R: Redaction> Secret<R> {
    /// The value as it may be shown.
    pub fn redacted(&self) -> String {
        R::redact(&self.value)
    }
}

impl<R> Deref for Secret<R> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.value
    }
}

impl<R> From<String> for Secret<R> {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl<R> From<&str> for Secret<R> {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl<R: Redaction> fmt::Debug for Secret<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl<R: Redaction> fmt::Display for Secret<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<R: Redaction> Serialize for Secret<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de, R> Deserialize<'de> for Secret<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand(&raw).map(Self::new).map_err(serde::de::Error::custom)
    }
}

/// For a plain `String` field that may carry a credential: `#[serde(deserialize_with =
/// "crate::secret::expand_string")]` resolves its references.
pub fn expand_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand(&raw).map_err(serde::de::Error::custom)
}

/// `#[serde(serialize_with = "crate::secret::serialize_url_origin")]`: show a URL as
/// `scheme://host/***`.
pub fn serialize_url_origin<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&UrlOrigin::redact(value))
}

/// Does a librdkafka property carry a credential?
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "oauthbearer.config", "key.pem", "token", "sasl.jaas.config"].iter().any(|s| k.contains(s))
}

/// `kafka.properties`: librdkafka settings passed through verbatim, references resolved,
/// credentials masked when shown.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KafkaProperties(BTreeMap<String, String>);

impl KafkaProperties {
    fn shown(&self) -> BTreeMap<&str, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { Whole::redact(v) } else { v.clone() }))
            .collect()
    }
}

impl Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for KafkaProperties {
    fn from(m: BTreeMap<String, String>) -> Self {
        Self(m)
    }
}

impl<'a> IntoIterator for &'a KafkaProperties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

impl<'de> Deserialize<'de> for KafkaProperties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            let v = expand(&v).map_err(|e| serde::de::Error::custom(format!("property `{k}`: {e}")))?;
            out.insert(k, v);
        }
        Ok(Self(out))
    }
}

/// Mask the password of a connection URL: `scheme://user:***@host/…`, and the values of
/// `password=` / `sslpassword=` query parameters.
pub fn redact_url_password(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s && !url[s + 3..at].contains('/') => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") => {
                    format!("{k}=***")
                }
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cr$t".to_string())
    }

    fn file(path: &str) -> std::io::Result<String> {
        match path {
            "/run/pw" => Ok("from-file\n".into()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")),
        }
    }

    #[test]
    fn references_are_resolved_in_place() {
        let x = |s: &str| expand_with(s, &env, &file);
        assert_eq!(x("plain").unwrap(), "plain");
        assert_eq!(x("${env:PW}").unwrap(), "s3cr$t");
        assert_eq!(x("postgres://u:${env:PW}@h/db").unwrap(), "postgres://u:s3cr$t@h/db");
        assert_eq!(x("${file:/run/pw}").unwrap(), "from-file");
        assert_eq!(x("a$$${b} $5").unwrap(), "a$${b} $5");
        assert_eq!(x("$${env:PW}").unwrap(), "${env:PW}");
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let x = |s: &str| expand_with(s, &env, &file).unwrap_err();
        assert!(x("${env:NOPE}").contains("environment variable NOPE"), "{}", x("${env:NOPE}"));
        assert!(x("${file:/nope}").contains("cannot read secret file /nope"));
        assert!(x("${vault:x}").contains("unknown reference"));
        assert!(x("${env:PW").contains("unterminated"));
    }

    #[test]
    fn secrets_are_masked_when_shown() {
        let s: Secret = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&Secret::<Whole>::new("")).unwrap(), "\"\"");
        let u = SecretUrl::new("postgres://tw:hunter2@db:5432/tw?sslmode=verify-full&password=x");
        assert_eq!(u.redacted(), "postgres://tw:***@db:5432/tw?sslmode=verify-full&password=***");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(UrlOrigin::redact("https://hooks.slack.com/services/T0/B0/XyZ"), "https://hooks.slack.com/***");
        assert_eq!(UrlOrigin::redact("http://u:p@am:9093"), "http://am:9093");
    }

    #[test]
    fn kafka_properties_mask_credential_keys_only() {
        let p: KafkaProperties = BTreeMap::from([
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("ssl.key.password".to_string(), "k".to_string()),
            ("sasl.oauthbearer.client.secret".to_string(), "c".to_string()),
            ("sasl.username".to_string(), "tw".to_string()),
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
        ])
        .into();
        let shown = serde_json::to_string(&p).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("\"k\"") && !shown.contains("\"c\""), "{shown}");
        assert!(shown.contains("\"sasl.username\":\"tw\"") && shown.contains("SASL_SSL"), "{shown}");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(p.get("sasl.password").map(String::as_str), Some("hunter2"));
    }
}
