//! `Priority`: which due messages a claim takes first. Stored as a small integer, 0 the highest, so the
//! due index orders by it (one lane per priority: see `store/postgres/claim_due.sql`).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// One-time codes and the like: claimed before anything else that is due.
    High,
    /// The default.
    #[default]
    Normal,
    /// Marketing: claimed when nothing higher is due, or once it has waited `PRIORITY_AGING`.
    Low,
}

impl Priority {
    /// Every priority, highest first: the claim's lanes, in the order it takes them.
    pub const ALL: [Self; 3] = [Self::High, Self::Normal, Self::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// The stored value (the `priority` column): 0 high, 1 normal, 2 low.
    pub fn level(self) -> i16 {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }

    pub fn from_level(level: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|p| i64::from(p.level()) == level)
    }

    /// Its place in `ALL`, for arrays kept per priority.
    pub fn index(self) -> usize {
        self.level() as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("must be high, normal or low, got {0:?}")]
pub struct UnknownPriority(String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_round_trip_through_their_names_and_levels() {
        for priority in Priority::ALL {
            assert_eq!(priority.as_str().parse::<Priority>().unwrap(), priority);
            assert_eq!(Priority::from_level(priority.level().into()), Some(priority));
        }
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(Priority::from_level(3), None);
        assert!(Priority::High < Priority::Low, "higher first");
    }
}
