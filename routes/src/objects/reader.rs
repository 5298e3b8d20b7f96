//! Typed access to a [`serde_yaml::Value`] that records every problem with its field path.
//!
//! The fields are read by hand rather than through derived serde structs: a derived struct stops
//! at the first wrong type and does not say where it was, while a user needs every problem with
//! its field path (`status.components.predictor.traffic[1].percent`).

use super::url_host;
use super::FieldError;
use crate::host::normalize_host;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| mget(m, key))
}

/// A key's value; an explicit `null` counts as absent, as it does for Kubernetes.
pub(crate) fn mget<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

/// Typed access that records every problem with its field path instead of stopping.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    pub errors: Vec<FieldError>,
    /// What the controller would ignore and so does the gateway: said, not an error.
    pub warnings: Vec<FieldError>,
}

impl Reader {
    pub(crate) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: Some(field.into()),
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldError {
            field: Some(field.into()),
            message: message.into(),
        });
    }

    pub(crate) fn wrong(&mut self, field: &str, want: &str, v: &Value) {
        self.err(field, format!("expected {want}, found {}", kind(v)));
    }

    pub(crate) fn map<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a Mapping> {
        match v? {
            Value::Mapping(m) => Some(m),
            other => {
                self.wrong(field, "a mapping", other);
                None
            }
        }
    }

    pub(crate) fn seq<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a Vec<Value>> {
        match v? {
            Value::Sequence(s) => Some(s),
            other => {
                self.wrong(field, "a list", other);
                None
            }
        }
    }

    pub(crate) fn str<'a>(&mut self, v: Option<&'a Value>, field: &str) -> Option<&'a str> {
        match v? {
            Value::String(s) => Some(s),
            other => {
                self.wrong(field, "a string", other);
                None
            }
        }
    }

    pub(crate) fn required_str<'a>(
        &mut self,
        v: Option<&'a Value>,
        field: &str,
    ) -> Option<&'a str> {
        match self.str(v, field) {
            Some("") => {
                self.err(field, "empty");
                None
            }
            None if v.is_none() => {
                self.err(field, "missing");
                None
            }
            other => other,
        }
    }

    pub(crate) fn bool(&mut self, v: Option<&Value>, field: &str) -> Option<bool> {
        match v? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong(field, "a boolean", other);
                None
            }
        }
    }

    pub(crate) fn int(&mut self, v: Option<&Value>, field: &str) -> Option<i64> {
        match v? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            Value::Number(n) if n.is_u64() => {
                self.err(field, format!("{n} is too large"));
                None
            }
            other => {
                self.wrong(field, "an integer", other);
                None
            }
        }
    }

    pub(crate) fn percent(&mut self, v: Option<&Value>, field: &str) -> Option<u32> {
        let p = self.int(v, field)?;
        if (0..=100).contains(&p) {
            Some(p as u32)
        } else {
            self.err(field, format!("{p} is not in 0..=100"));
            None
        }
    }

    /// `spec.<component>.timeout`: seconds, a positive integer.
    pub(crate) fn timeout(&mut self, v: Option<&Value>, field: &str) -> Option<u64> {
        let value = v?;
        match value {
            Value::Number(n) if n.as_i64().is_some_and(|t| t > 0) => n.as_u64(),
            other => {
                let shown = match other {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => format!("{s:?}"),
                    other => kind(other).to_string(),
                };
                self.err(
                    field,
                    format!("must be a positive integer (seconds), found {shown}"),
                );
                None
            }
        }
    }

    pub(crate) fn url(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
        let s = self.str(v, field)?;
        match url_host(s) {
            Ok(h) => Some(h),
            Err(e) => {
                self.err(field, e);
                None
            }
        }
    }

    /// A bare host name (v1alpha2's `host` fields).
    pub(crate) fn host(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
        let s = self.str(v, field)?;
        match normalize_host(s).map(|(h, _)| h) {
            Ok(h) => Some(h),
            Err(e) => {
                self.err(field, format!("{s:?}: {e}"));
                None
            }
        }
    }

    pub(crate) fn string_map(
        &mut self,
        v: Option<&Value>,
        field: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, val) in self.map(v, field).into_iter().flatten() {
            match (k.as_str(), val.as_str()) {
                (Some(k), Some(val)) => {
                    out.insert(k.to_string(), val.to_string());
                }
                (Some(k), None) => self.wrong(&format!("{field}[{k:?}]"), "a string", val),
                (None, _) => self.wrong(field, "string keys", k),
            }
        }
        out
    }

    /// `type` -> `status` of Knative conditions.
    pub(crate) fn conditions(
        &mut self,
        v: Option<&Value>,
        field: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(list) = self.seq(v, field) else {
            return out;
        };
        for (i, c) in list.iter().enumerate() {
            let cf = format!("{field}[{i}]");
            let Some(c) = self.map(Some(c), &cf) else {
                continue;
            };
            let t = self.required_str(mget(c, "type"), &format!("{cf}.type"));
            let s = self.required_str(mget(c, "status"), &format!("{cf}.status"));
            if let (Some(t), Some(s)) = (t, s) {
                out.insert(t.to_string(), s.to_string());
            }
        }
        out
    }
}
