//! The guard's settings as they cross from Ruby: one list of `key => value` pairs, checked here (unknown keys
//! rejected, each value of its kind) and turned into the policy's `Limits` (milliseconds) and the metric.
//! Ruby owns the user-facing configuration (defaults, forms like "1.5GB", the error naming the user's key);
//! this is the boundary's own check, so that a Ruby-side mistake fails loudly instead of guarding wrongly.

use crate::policy::{Brake, Limits, DEFAULT_QUIET_TIMEOUT_MS, DEFAULT_SETTLE_MS};

/// A value as it comes from Ruby.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A Symbol or a String.
    Name(String),
}

/// What the limits are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Rss,
    Pss,
    Cgroup,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Rss, Metric::Pss, Metric::Cgroup];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Rss => "rss",
            Metric::Pss => "pss",
            Metric::Cgroup => "cgroup",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    pub limits: Limits,
    pub metric: Metric,
}

/// Every key, with the form it takes (for the error messages).
pub const KEYS: [(&str, &str); 19] = [
    ("max_rss", "bytes > 0 (required)"),
    ("hard_max_rss", "bytes above max_rss, or nil"),
    ("grace_time", "seconds >= 0"),
    ("reclaim", "true or false"),
    ("reclaim_cooldown", "seconds >= 0"),
    ("check_interval", "seconds > 0"),
    ("shutdown_wait", "seconds >= 0"),
    ("kill_after", "seconds > 0 (required)"),
    ("loop_window", "seconds >= 0 (0: off)"),
    ("quarantine", "true or false"),
    ("embedded", "true or false"),
    ("metric", ":rss, :pss or :cgroup"),
    ("brake_at", "bytes below max_rss, or nil (no brake)"),
    ("resume_at", "bytes below brake_at"),
    ("concurrency", "an Integer >= 1 (the job threads)"),
    ("slow_start", "true or false"),
    (
        "brake_pressure",
        "a percentage of memory pressure (PSI some avg10) > 0 and <= 100, or nil (not looked at)",
    ),
    ("settle", "seconds >= 0"),
    ("quiet_timeout", "seconds > 0"),
];

fn form(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map_or("?", |(_, f)| *f)
}

fn bad(key: &str, value: &Value) -> String {
    format!(
        "the native guard's {key} is {value:?}; expected {}",
        form(key)
    )
}

fn bytes(key: &str, value: &Value) -> Result<u64, String> {
    match value {
        Value::Int(n) if *n > 0 => Ok(*n as u64),
        Value::Float(f) if f.is_finite() && *f >= 1.0 => Ok(*f as u64),
        _ => Err(bad(key, value)),
    }
}

fn optional_bytes(key: &str, value: &Value) -> Result<Option<u64>, String> {
    match value {
        Value::Nil => Ok(None),
        other => bytes(key, other).map(Some),
    }
}

fn millis(key: &str, value: &Value, allow_zero: bool) -> Result<u64, String> {
    let seconds = match value {
        Value::Int(n) => *n as f64,
        Value::Float(f) => *f,
        _ => return Err(bad(key, value)),
    };
    if !seconds.is_finite() || seconds < 0.0 || (!allow_zero && seconds <= 0.0) {
        return Err(bad(key, value));
    }
    Ok((seconds * 1000.0).round() as u64)
}

fn boolean(key: &str, value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        _ => Err(bad(key, value)),
    }
}

/// Checks the pairs and builds the settings; the error says which key is wrong and what it takes.
pub fn guard_settings(pairs: &[(String, Value)]) -> Result<GuardSettings, String> {
    let mut limits = Limits {
        soft: 0,
        hard: None,
        grace_ms: 60_000,
        reclaim: true,
        reclaim_cooldown_ms: 300_000,
        retry_ms: 5_000,
        shutdown_wait_ms: 60_000,
        kill_after_ms: 0,
        settle_ms: DEFAULT_SETTLE_MS,
        quiet_timeout_ms: DEFAULT_QUIET_TIMEOUT_MS,
        loop_window_ms: 0,
        quarantine: false,
        embedded: false,
        brake: None,
    };
    let mut metric = Metric::Rss;
    let (mut brake_at, mut resume_at, mut concurrency) = (None, None, None);
    let mut slow_start = false;
    let mut pressure_at = 0;
    for (key, value) in pairs {
        match key.as_str() {
            "max_rss" => limits.soft = bytes(key, value)?,
            "hard_max_rss" => limits.hard = optional_bytes(key, value)?,
            "grace_time" => limits.grace_ms = millis(key, value, true)?,
            "reclaim" => limits.reclaim = boolean(key, value)?,
            "reclaim_cooldown" => limits.reclaim_cooldown_ms = millis(key, value, true)?,
            "check_interval" => limits.retry_ms = millis(key, value, false)?,
            "shutdown_wait" => limits.shutdown_wait_ms = millis(key, value, true)?,
            "kill_after" => limits.kill_after_ms = millis(key, value, false)?,
            "loop_window" => limits.loop_window_ms = millis(key, value, true)?,
            "quarantine" => limits.quarantine = boolean(key, value)?,
            "embedded" => limits.embedded = boolean(key, value)?,
            "slow_start" => slow_start = boolean(key, value)?,
            "brake_pressure" => {
                pressure_at = match value {
                    Value::Nil => 0,
                    Value::Int(n) if *n > 0 && *n <= 100 => (*n as u32) * 100,
                    Value::Float(f) if f.is_finite() && *f > 0.0 && *f <= 100.0 => {
                        (f * 100.0).round() as u32
                    }
                    _ => return Err(bad(key, value)),
                }
            }
            "settle" => limits.settle_ms = millis(key, value, true)?,
            "quiet_timeout" => limits.quiet_timeout_ms = millis(key, value, false)?,
            "metric" => {
                metric = match value {
                    Value::Name(name) => Metric::ALL
                        .into_iter()
                        .find(|m| m.as_str() == name)
                        .ok_or_else(|| bad(key, value))?,
                    _ => return Err(bad(key, value)),
                }
            }
            "brake_at" => brake_at = optional_bytes(key, value)?,
            "resume_at" => resume_at = optional_bytes(key, value)?,
            "concurrency" => match value {
                Value::Int(n) if *n >= 1 && *n <= i64::from(u32::MAX) => {
                    concurrency = Some(*n as u32)
                }
                _ => return Err(bad(key, value)),
            },
            other => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "the native guard has no setting {other:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    if limits.soft == 0 {
        return Err(bad("max_rss", &Value::Nil));
    }
    if limits.kill_after_ms == 0 {
        return Err(bad("kill_after", &Value::Nil));
    }
    if let Some(hard) = limits.hard {
        if hard <= limits.soft {
            return Err(bad("hard_max_rss", &Value::Int(hard as i64)));
        }
    }
    if let Some(pause_at) = brake_at {
        if pause_at > limits.soft {
            return Err(bad("brake_at", &Value::Int(pause_at as i64)));
        }
        let resume_at = resume_at.ok_or_else(|| bad("resume_at", &Value::Nil))?;
        if resume_at >= pause_at {
            return Err(bad("resume_at", &Value::Int(resume_at as i64)));
        }
        let concurrency = concurrency.ok_or_else(|| bad("concurrency", &Value::Nil))?;
        limits.brake = Some(Brake {
            pause_at,
            resume_at,
            concurrency,
            slow_start,
            pressure_at,
        });
    }
    Ok(GuardSettings { limits, metric })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(extra: &[(&str, Value)]) -> Vec<(String, Value)> {
        let mut p = vec![
            ("max_rss".to_string(), Value::Int(300 << 20)),
            ("kill_after".to_string(), Value::Float(40.0)),
        ];
        p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        p
    }

    #[test]
    fn defaults_and_conversions() {
        let s = guard_settings(&pairs(&[
            ("grace_time", Value::Float(1.5)),
            ("metric", Value::Name("pss".into())),
            ("hard_max_rss", Value::Nil),
        ]))
        .unwrap();
        assert_eq!(s.limits.soft, 300 << 20);
        assert_eq!(s.limits.grace_ms, 1_500);
        assert_eq!(s.limits.kill_after_ms, 40_000);
        assert_eq!(s.limits.settle_ms, DEFAULT_SETTLE_MS);
        assert_eq!(s.limits.brake, None);
        assert_eq!(s.metric, Metric::Pss);
    }

    #[test]
    fn the_brake_needs_its_three_keys_in_order() {
        let s = guard_settings(&pairs(&[
            ("brake_at", Value::Int(270 << 20)),
            ("resume_at", Value::Int(240 << 20)),
            ("concurrency", Value::Int(5)),
        ]))
        .unwrap();
        assert_eq!(
            s.limits.brake,
            Some(Brake {
                pause_at: 270 << 20,
                resume_at: 240 << 20,
                concurrency: 5,
                slow_start: false,
                pressure_at: 0
            })
        );
        let err = guard_settings(&pairs(&[
            ("brake_at", Value::Int(270 << 20)),
            ("resume_at", Value::Int(280 << 20)),
            ("concurrency", Value::Int(5)),
        ]))
        .unwrap_err();
        assert!(err.contains("resume_at"), "{err}");
        let err = guard_settings(&pairs(&[("brake_at", Value::Int(270 << 20))])).unwrap_err();
        assert!(err.contains("resume_at"), "{err}");
    }

    #[test]
    fn unknown_keys_and_wrong_kinds_are_rejected_by_name() {
        let err = guard_settings(&pairs(&[("max_rs", Value::Int(1))])).unwrap_err();
        assert!(
            err.contains("\"max_rs\"") && err.contains("known: max_rss"),
            "{err}"
        );
        let err = guard_settings(&pairs(&[("reclaim", Value::Int(1))])).unwrap_err();
        assert!(
            err.contains("reclaim") && err.contains("true or false"),
            "{err}"
        );
        let err = guard_settings(&pairs(&[("metric", Value::Name("vms".into()))])).unwrap_err();
        assert!(err.contains(":rss, :pss or :cgroup"), "{err}");
        let err = guard_settings(&pairs(&[("hard_max_rss", Value::Int(100 << 20))])).unwrap_err();
        assert!(err.contains("hard_max_rss"), "{err}");
        let err = guard_settings(&[("kill_after".to_string(), Value::Int(1))]).unwrap_err();
        assert!(err.contains("max_rss"), "{err}");
    }
}
