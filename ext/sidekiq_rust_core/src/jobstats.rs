//! Which job class grew the memory: per class, how many jobs ran and how much the memory reading moved
//! across their `perform` (total and largest), so a restart can name the likely culprit.

use std::collections::HashMap;

/// Classes beyond this many are counted under [`OTHER`], so a job-name explosion cannot grow memory.
pub const MAX_CLASSES: usize = 10_000;
pub const OTHER: &str = "(other classes)";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClassStats {
    pub count: u64,
    /// Sum of the growths, bytes (can be negative: memory also falls during jobs).
    pub total_growth: i64,
    /// The largest single growth, bytes.
    pub max_growth: i64,
}

#[derive(Debug, Default, Clone)]
pub struct JobStats {
    classes: HashMap<String, ClassStats>,
}

impl JobStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, class: &str, growth: i64) {
        let entry = match self.classes.get_mut(class) {
            Some(entry) => entry,
            None => {
                let key = if self.classes.len() >= MAX_CLASSES {
                    OTHER
                } else {
                    class
                };
                self.classes.entry(key.to_string()).or_insert(ClassStats {
                    count: 0,
                    total_growth: 0,
                    max_growth: i64::MIN,
                })
            }
        };
        entry.count += 1;
        entry.total_growth = entry.total_growth.saturating_add(growth);
        entry.max_growth = entry.max_growth.max(growth);
    }

    /// The `n` classes with the largest total growth, largest first (ties by name).
    pub fn top(&self, n: usize) -> Vec<(String, ClassStats)> {
        let mut all: Vec<(String, ClassStats)> =
            self.classes.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| {
            b.1.total_growth
                .cmp(&a.1.total_growth)
                .then_with(|| a.0.cmp(&b.0))
        });
        all.truncate(n);
        all
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn clear(&mut self) {
        self.classes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_totals_and_maxima() {
        let mut s = JobStats::new();
        s.record("ImportJob", 10);
        s.record("ImportJob", 30);
        s.record("ImportJob", -5);
        s.record("MailJob", 1);
        let top = s.top(5);
        assert_eq!(top[0].0, "ImportJob");
        assert_eq!(
            top[0].1,
            ClassStats {
                count: 3,
                total_growth: 35,
                max_growth: 30
            }
        );
        assert_eq!(top[1].1.max_growth, 1);
        assert_eq!(s.top(1).len(), 1);
    }

    #[test]
    fn a_flood_of_class_names_is_bounded() {
        let mut s = JobStats::new();
        for i in 0..(MAX_CLASSES + 50) {
            s.record(&format!("Job{i}"), 1);
        }
        assert_eq!(s.len(), MAX_CLASSES + 1);
        assert!(s
            .top(MAX_CLASSES + 1)
            .iter()
            .any(|(k, v)| k == OTHER && v.count == 50));
    }

    #[test]
    fn negative_growth_only() {
        let mut s = JobStats::new();
        s.record("Shrinker", -100);
        assert_eq!(s.top(1)[0].1.max_growth, -100);
    }
}
