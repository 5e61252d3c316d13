//! The guard's settings as they cross from Ruby: one list of `key => value` pairs, checked here (every key
//! required, unknown keys rejected, each value of its kind, the cross-field order) and turned into the policy's
//! `Limits` (bytes, milliseconds) and the metric. Ruby owns the user-facing configuration (`SidekiqRust::OPTIONS`:
//! defaults, forms like "1.5GB", the error naming the user's key); this is the boundary's own check, so that a
//! Ruby-side mistake fails loudly instead of guarding wrongly. It keeps no defaults.

use crate::names::Named;
use crate::policy::{Bounds, Brake, Limits};

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

impl Named for Metric {
    const WHAT: &'static str = "metric";

    fn all() -> &'static [Metric] {
        &[Metric::Rss, Metric::Pss, Metric::Cgroup]
    }

    fn as_str(self) -> &'static str {
        match self {
            Metric::Rss => "rss",
            Metric::Pss => "pss",
            Metric::Cgroup => "cgroup",
        }
    }
}

/// What a restart may do, beyond the policy's limits (`GuardCore::restart_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartRules {
    /// Soft-limit restarts only while another process serves.
    pub require_other_process: bool,
    /// Log what would happen; never ask for a slot.
    pub dry_run: bool,
    /// The guard can quiet and stop this Sidekiq: its own process, or an embedded instance handed to it.
    pub stoppable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    pub limits: Limits,
    pub metric: Metric,
    pub restart: RestartRules,
    /// The monitor's measuring reclaims, this often (None: none).
    pub measure_interval_ns: Option<u64>,
    /// Limits given as shares of the memory cgroup's limit, which move with it (None: none is).
    pub follow: Option<Follow>,
    /// Admission (a fetched job starts only when what it needs fits): asked for, with the brake on.
    pub admission: bool,
}

/// Limits given as shares of the memory cgroup's limit (the user's "80%"), with the limit Ruby resolved them
/// against and the brake's shares of max_rss: `GuardCore::cgroup_limit` moves them when the limit changes (an
/// in-place resize of the container). Shares are in millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow {
    /// The cgroup's limit the bounds were last computed for, bytes.
    pub limit: u64,
    /// max_rss as a share of the cgroup's limit (None: a fixed size, which stays).
    pub max_rss: Option<u32>,
    /// hard_max_rss as a share of the cgroup's limit (None: a fixed size or none, which stays).
    pub hard_max_rss: Option<u32>,
    /// The brake's thresholds as shares of max_rss.
    pub brake_at: u32,
    pub resume_at: u32,
}

/// `bytes` times a share in millionths.
fn of(bytes: u64, millionths: u32) -> u64 {
    (u128::from(bytes) * u128::from(millionths) / 1_000_000) as u64
}

fn millionths(share: f64) -> u32 {
    (share * 1_000_000.0).round() as u32
}

impl Follow {
    /// The bounds under a cgroup limit of `limit` bytes, from the `current` ones: a share moves, a fixed size
    /// stays; the soft limit stays below the hard one (a hard share of a lowered limit can pull it down), and
    /// the brake's thresholds are their shares of the soft limit.
    pub fn bounds(&self, limit: u64, current: Bounds) -> Bounds {
        let hard = self.hard_max_rss.map(|m| of(limit, m)).or(current.hard);
        let mut soft = self.max_rss.map_or(current.soft, |m| of(limit, m));
        if let Some(hard) = hard {
            soft = soft.min(hard.saturating_sub(1));
        }
        let soft = soft.max(1);
        Bounds {
            soft,
            hard,
            brake: current
                .brake
                .map(|_| (of(soft, self.brake_at), of(soft, self.resume_at))),
        }
    }
}

/// Every key, with the form it takes (for the error messages). Each is required: the defaults are Ruby's
/// (`SidekiqRust::OPTIONS`), and a key Ruby forgot fails here by name instead of guarding with a guess.
/// The user's keys keep the user's names and units' meaning (seconds, shares of max_rss); the facts about the
/// process (`kill_after` resolved, `concurrency`, `replaced_restart`, `embedded`, `embedded_instance`,
/// `settle`, `quiet_timeout`) are what Ruby knows of it.
pub const KEYS: [(&str, &str); 28] = [
    ("max_rss", "bytes > 0"),
    ("hard_max_rss", "bytes above max_rss, or nil"),
    (
        "max_rss_share",
        "max_rss as a share of cgroup_limit above 0 and at most 1 (given as a percentage), or nil",
    ),
    (
        "hard_max_rss_share",
        "hard_max_rss as a share of cgroup_limit above 0 and at most 1 (given as a percentage), or nil",
    ),
    (
        "cgroup_limit",
        "bytes: the memory cgroup's limit the shares were resolved against (nil only without shares)",
    ),
    ("grace_time", "seconds >= 0"),
    ("metric", ":rss, :pss or :cgroup"),
    ("check_interval", "seconds > 0"),
    ("reclaim", "true or false"),
    ("reclaim_cooldown", "seconds >= 0"),
    ("loop_window", "seconds >= 0 (0: off)"),
    ("shutdown_wait", "seconds >= 0"),
    ("require_other_process", "true or false"),
    ("dry_run", "true or false"),
    ("quarantine_after", "an Integer >= 0 (0: off)"),
    ("measure_interval", "seconds > 0, or nil (none)"),
    ("brake", "true or false"),
    ("admission", "true or false (it needs the brake)"),
    ("brake_at", "a share of max_rss above 0 and at most 1"),
    ("resume_at", "a share of max_rss above 0 and below brake_at"),
    (
        "brake_pressure",
        "a percentage of memory pressure (PSI some avg10) > 0 and <= 100, or nil (not looked at)",
    ),
    ("kill_after", "seconds > 0"),
    (
        "concurrency",
        "an Integer >= 1 (the job threads), or nil (unknown: no brake)",
    ),
    ("replaced_restart", "true or false"),
    ("embedded", "true or false"),
    ("embedded_instance", "true or false"),
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

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

fn millis(key: &str, value: &Value, allow_zero: bool) -> Result<u64, String> {
    let seconds = number(value).ok_or_else(|| bad(key, value))?;
    if seconds < 0.0 || (!allow_zero && seconds <= 0.0) {
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

/// A share of max_rss (0 < share <= 1).
fn share(key: &str, value: &Value) -> Result<f64, String> {
    number(value)
        .filter(|n| *n > 0.0 && *n <= 1.0)
        .ok_or_else(|| bad(key, value))
}

/// A share of the cgroup's limit (0 < share <= 1), or nil.
fn optional_share(key: &str, value: &Value) -> Result<Option<f64>, String> {
    match value {
        Value::Nil => Ok(None),
        other => share(key, other).map(Some),
    }
}

/// Hundredths of a percent; nil is 0 (not looked at).
fn pressure(key: &str, value: &Value) -> Result<u32, String> {
    match value {
        Value::Nil => Ok(0),
        other => number(other)
            .filter(|n| *n > 0.0 && *n <= 100.0)
            .map(|n| (n * 100.0).round() as u32)
            .ok_or_else(|| bad(key, value)),
    }
}

fn concurrency(key: &str, value: &Value) -> Result<Option<u32>, String> {
    match value {
        Value::Nil => Ok(None),
        Value::Int(n) if *n >= 1 && *n <= i64::from(u32::MAX) => Ok(Some(*n as u32)),
        _ => Err(bad(key, value)),
    }
}

fn metric(key: &str, value: &Value) -> Result<Metric, String> {
    match value {
        Value::Name(name) => Metric::from_name(name).ok_or_else(|| bad(key, value)),
        _ => Err(bad(key, value)),
    }
}

/// The pairs by key: every key of `KEYS` once, no other.
struct Pairs<'a>(&'a [(String, Value)]);

impl Pairs<'_> {
    fn check_keys(&self) -> Result<(), String> {
        let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        for (i, (key, _)) in self.0.iter().enumerate() {
            if !known.contains(&key.as_str()) {
                return Err(format!(
                    "the native guard has no setting {key:?} (known: {})",
                    known.join(", ")
                ));
            }
            if self.0[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("the native guard's {key} is given twice"));
            }
        }
        let missing: Vec<&str> = known
            .iter()
            .copied()
            .filter(|k| !self.0.iter().any(|(key, _)| key == k))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the native guard's settings lack {} (every key is required: {})",
                missing.join(", "),
                known.join(", ")
            ))
        }
    }

    fn get<T>(
        &self,
        key: &str,
        read: impl Fn(&str, &Value) -> Result<T, String>,
    ) -> Result<T, String> {
        let value = self
            .0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(&Value::Nil, |(_, v)| v);
        read(key, value)
    }
}

/// Checks the pairs (every key of `KEYS`, each of its kind, in order with the others) and builds the settings;
/// the error says which key is wrong and what it takes. The brake is on when asked for and the job threads are
/// known; a process that replaced a memory restart starts it with one job thread fetching.
pub fn guard_settings(pairs: &[(String, Value)]) -> Result<GuardSettings, String> {
    let pairs = Pairs(pairs);
    pairs.check_keys()?;
    let soft = pairs.get("max_rss", bytes)?;
    let hard = pairs.get("hard_max_rss", optional_bytes)?;
    if let Some(hard) = hard {
        if hard <= soft {
            return Err(bad("hard_max_rss", &Value::Int(hard as i64)));
        }
    }
    let replaced_restart = pairs.get("replaced_restart", boolean)?;
    let embedded = pairs.get("embedded", boolean)?;
    let brake_at = pairs.get("brake_at", share)?;
    let resume_at = pairs.get("resume_at", share)?;
    if resume_at >= brake_at {
        return Err(bad("resume_at", &Value::Float(resume_at)));
    }
    let pressure_at = pairs.get("brake_pressure", pressure)?;
    let threads = pairs.get("concurrency", concurrency)?;
    let brake = match (pairs.get("brake", boolean)?, threads) {
        (true, Some(concurrency)) => Some(Brake {
            pause_at: (soft as f64 * brake_at).floor() as u64,
            resume_at: (soft as f64 * resume_at).floor() as u64,
            concurrency,
            slow_start: replaced_restart,
            pressure_at,
        }),
        _ => None,
    };
    let admission = pairs.get("admission", boolean)?;
    if admission && brake.is_none() {
        return Err(bad("admission", &Value::Bool(true)));
    }
    let limits = Limits {
        soft,
        hard,
        grace_ms: pairs.get("grace_time", |k, v| millis(k, v, true))?,
        reclaim: pairs.get("reclaim", boolean)?,
        reclaim_cooldown_ms: pairs.get("reclaim_cooldown", |k, v| millis(k, v, true))?,
        check_interval_ms: pairs.get("check_interval", |k, v| millis(k, v, false))?,
        shutdown_wait_ms: pairs.get("shutdown_wait", |k, v| millis(k, v, true))?,
        kill_after_ms: pairs.get("kill_after", |k, v| millis(k, v, false))?,
        settle_ms: pairs.get("settle", |k, v| millis(k, v, true))?,
        quiet_timeout_ms: pairs.get("quiet_timeout", |k, v| millis(k, v, false))?,
        loop_window_ms: pairs.get("loop_window", |k, v| millis(k, v, true))?,
        replaced_restart,
        quarantine: pairs.get("quarantine_after", |k, v| match v {
            Value::Int(n) if *n >= 0 => Ok(*n > 0),
            _ => Err(bad(k, v)),
        })?,
        embedded,
        brake,
    };
    let follow = follow(&pairs, brake_at, resume_at)?;
    let measure_interval_ns = pairs
        .get("measure_interval", |k, v| match v {
            Value::Nil => Ok(None),
            other => millis(k, other, false).map(Some),
        })?
        .map(|ms| ms.saturating_mul(1_000_000));
    Ok(GuardSettings {
        limits,
        metric: pairs.get("metric", metric)?,
        restart: RestartRules {
            require_other_process: pairs.get("require_other_process", boolean)?,
            dry_run: pairs.get("dry_run", boolean)?,
            stoppable: !embedded || pairs.get("embedded_instance", boolean)?,
        },
        measure_interval_ns,
        follow,
        admission,
    })
}

/// The shares of the cgroup's limit, if any, with the limit they were resolved against.
fn follow(pairs: &Pairs, brake_at: f64, resume_at: f64) -> Result<Option<Follow>, String> {
    let soft = pairs.get("max_rss_share", optional_share)?;
    let hard = pairs.get("hard_max_rss_share", optional_share)?;
    let limit = pairs.get("cgroup_limit", optional_bytes)?;
    if soft.is_none() && hard.is_none() {
        return Ok(None);
    }
    let Some(limit) = limit else {
        return Err(bad("cgroup_limit", &Value::Nil));
    };
    Ok(Some(Follow {
        limit,
        max_rss: soft.map(millionths),
        hard_max_rss: hard.map(millionths),
        brake_at: millionths(brake_at),
        resume_at: millionths(resume_at),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key, as Ruby's defaults give them for a 300 MB limit.
    fn pairs(changes: &[(&str, Value)]) -> Vec<(String, Value)> {
        let mut p: Vec<(String, Value)> = [
            ("max_rss", Value::Int(300 << 20)),
            ("hard_max_rss", Value::Nil),
            ("grace_time", Value::Float(60.0)),
            ("metric", Value::Name("rss".into())),
            ("check_interval", Value::Float(5.0)),
            ("reclaim", Value::Bool(true)),
            ("reclaim_cooldown", Value::Float(300.0)),
            ("loop_window", Value::Float(600.0)),
            ("shutdown_wait", Value::Float(60.0)),
            ("require_other_process", Value::Bool(true)),
            ("dry_run", Value::Bool(false)),
            ("quarantine_after", Value::Int(2)),
            ("measure_interval", Value::Float(60.0)),
            ("brake", Value::Bool(true)),
            ("admission", Value::Bool(false)),
            ("brake_at", Value::Float(0.9)),
            ("resume_at", Value::Float(0.8)),
            ("brake_pressure", Value::Float(20.0)),
            ("kill_after", Value::Float(40.0)),
            ("concurrency", Value::Int(5)),
            ("replaced_restart", Value::Bool(false)),
            ("embedded", Value::Bool(false)),
            ("embedded_instance", Value::Bool(false)),
            ("settle", Value::Float(2.5)),
            ("quiet_timeout", Value::Float(15.0)),
            ("max_rss_share", Value::Nil),
            ("hard_max_rss_share", Value::Nil),
            ("cgroup_limit", Value::Nil),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        for (key, value) in changes {
            match p.iter_mut().find(|(k, _)| k == key) {
                Some(pair) => pair.1 = value.clone(),
                None => p.push((key.to_string(), value.clone())),
            }
        }
        p
    }

    #[test]
    fn conversions() {
        let s = guard_settings(&pairs(&[
            ("grace_time", Value::Float(1.5)),
            ("metric", Value::Name("pss".into())),
            ("quarantine_after", Value::Int(0)),
        ]))
        .unwrap();
        assert_eq!(s.limits.soft, 300 << 20);
        assert_eq!(s.limits.hard, None);
        assert_eq!(s.limits.grace_ms, 1_500);
        assert_eq!(s.limits.check_interval_ms, 5_000);
        assert_eq!(s.limits.kill_after_ms, 40_000);
        assert_eq!(s.limits.settle_ms, 2_500);
        assert!(!s.limits.quarantine);
        assert!(!s.limits.replaced_restart);
        assert_eq!(s.metric, Metric::Pss);
        assert_eq!(s.measure_interval_ns, Some(60_000_000_000));
        let s = guard_settings(&pairs(&[("measure_interval", Value::Nil)])).unwrap();
        assert_eq!(s.measure_interval_ns, None);
    }

    #[test]
    fn an_embedded_sidekiq_is_stoppable_only_with_its_instance() {
        let stoppable = |embedded, instance| {
            guard_settings(&pairs(&[
                ("embedded", Value::Bool(embedded)),
                ("embedded_instance", Value::Bool(instance)),
            ]))
            .unwrap()
            .restart
            .stoppable
        };
        assert!(stoppable(false, false));
        assert!(!stoppable(true, false));
        assert!(stoppable(true, true));
    }

    #[test]
    fn the_brake_is_on_with_its_shares_in_bytes_when_the_job_threads_are_known() {
        let s = guard_settings(&pairs(&[])).unwrap();
        assert_eq!(
            s.limits.brake,
            Some(Brake {
                pause_at: ((300u64 << 20) as f64 * 0.9).floor() as u64,
                resume_at: ((300u64 << 20) as f64 * 0.8).floor() as u64,
                concurrency: 5,
                slow_start: false,
                pressure_at: 2_000
            })
        );
        let s = guard_settings(&pairs(&[("concurrency", Value::Nil)])).unwrap();
        assert_eq!(s.limits.brake, None);
        let s = guard_settings(&pairs(&[("brake", Value::Bool(false))])).unwrap();
        assert_eq!(s.limits.brake, None);
        let err = guard_settings(&pairs(&[("resume_at", Value::Float(0.95))])).unwrap_err();
        assert!(err.contains("resume_at"), "{err}");
    }

    #[test]
    fn limits_given_as_shares_of_the_cgroup_limit_follow_it() {
        assert_eq!(guard_settings(&pairs(&[])).unwrap().follow, None);
        let gib: u64 = 1 << 30;
        let s = guard_settings(&pairs(&[
            ("max_rss", Value::Int((gib * 8 / 10) as i64)),
            ("max_rss_share", Value::Float(0.8)),
            ("cgroup_limit", Value::Int(gib as i64)),
        ]))
        .unwrap();
        let follow = s.follow.unwrap();
        assert_eq!(
            (follow.limit, follow.max_rss, follow.hard_max_rss),
            (gib, Some(800_000), None)
        );
        // The limit halved: max_rss and the brake move with it.
        let moved = follow.bounds(gib / 2, s.limits.bounds());
        assert_eq!(moved.soft, gib * 4 / 10);
        assert_eq!(moved.hard, None);
        let (pause_at, resume_at) = moved.brake.unwrap();
        assert_eq!(
            (pause_at, resume_at),
            (moved.soft * 9 / 10, moved.soft * 8 / 10)
        );
        // A hard share of a lowered limit pulls a fixed max_rss under it.
        let s = guard_settings(&pairs(&[
            ("max_rss", Value::Int(300 << 20)),
            ("hard_max_rss", Value::Int((gib * 9 / 10) as i64)),
            ("hard_max_rss_share", Value::Float(0.9)),
            ("cgroup_limit", Value::Int(gib as i64)),
        ]))
        .unwrap();
        let moved = s.follow.unwrap().bounds(300 << 20, s.limits.bounds());
        assert_eq!(moved.hard, Some((300u64 << 20) * 9 / 10));
        assert!(moved.soft < moved.hard.unwrap());
        // A share needs the limit it was resolved against.
        let err = guard_settings(&pairs(&[("max_rss_share", Value::Float(0.8))])).unwrap_err();
        assert!(err.contains("cgroup_limit"), "{err}");
        let err = guard_settings(&pairs(&[
            ("max_rss_share", Value::Float(1.5)),
            ("cgroup_limit", Value::Int(gib as i64)),
        ]))
        .unwrap_err();
        assert!(err.contains("max_rss_share"), "{err}");
    }

    #[test]
    fn a_process_that_replaced_a_memory_restart_is_checked_for_a_loop_and_starts_slow() {
        let s = guard_settings(&pairs(&[("replaced_restart", Value::Bool(true))])).unwrap();
        assert!(s.limits.replaced_restart);
        assert_eq!(s.limits.loop_window_ms, 600_000);
        assert!(s.limits.brake.is_some_and(|b| b.slow_start));
    }

    #[test]
    fn every_key_is_required_and_unknown_keys_and_wrong_kinds_are_rejected_by_name() {
        let mut missing = pairs(&[]);
        missing.retain(|(k, _)| k != "grace_time" && k != "settle");
        let err = guard_settings(&missing).unwrap_err();
        assert!(err.contains("lack grace_time, settle"), "{err}");
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
        let mut twice = pairs(&[]);
        twice.push(("reclaim".to_string(), Value::Bool(true)));
        let err = guard_settings(&twice).unwrap_err();
        assert!(err.contains("reclaim is given twice"), "{err}");
    }
}
