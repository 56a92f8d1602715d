//! etcd 3.6's `--feature-gates=Name=bool,...`. Gates Cairn implements map
//! onto its settings; gates naming behaviour Cairn always has, or lacks,
//! are accepted so that a 3.6 command line (kubeadm's, for one) starts, and
//! a setting Cairn cannot honour is reported at start-up rather than
//! silently dropped. Malformed lists and unknown names are refused, as etcd
//! refuses them.

use std::collections::BTreeMap;

/// The gates etcd 3.6 knows, with the stage that `AllAlpha` / `AllBeta`
/// switch on and what Cairn does with each.
const KNOWN: [(&str, Stage, Support); 7] = [
    ("CompactHashCheck", Stage::Alpha, Support::Missing),
    ("InitialCorruptCheck", Stage::Alpha, Support::Mapped),
    ("LeaseCheckpoint", Stage::Alpha, Support::AlwaysOn),
    ("LeaseCheckpointPersist", Stage::Alpha, Support::AlwaysOn),
    ("SetMemberLocalAddr", Stage::Alpha, Support::Missing),
    ("StopGRPCServiceOnDefrag", Stage::Alpha, Support::Missing),
    ("TxnModeWriteWithSharedBuffer", Stage::Beta, Support::NoEffect),
];

/// The gate behind `--experimental-initial-corrupt-check`.
pub const INITIAL_CORRUPT_CHECK: &str = "InitialCorruptCheck";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Alpha,
    Beta,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Support {
    /// Turns a Cairn setting on or off.
    Mapped,
    /// Cairn always behaves as if the gate were on.
    AlwaysOn,
    /// Cairn does not have the feature.
    Missing,
    /// An etcd-internal performance switch with nothing observable to do.
    NoEffect,
}

/// The gates a command line set explicitly (the others keep etcd's
/// defaults, which for every gate Cairn maps is off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates {
    set: BTreeMap<&'static str, bool>,
}

impl FeatureGates {
    /// Parses `Name=bool,...` as etcd does: blanks around names and values
    /// and empty items are skipped; booleans are Go's (`true`, `1`, `t`,
    /// `False`...). `AllAlpha` / `AllBeta` set every gate of that stage not
    /// named on its own.
    pub fn parse(text: &str) -> Result<FeatureGates, String> {
        let mut named: BTreeMap<&'static str, bool> = BTreeMap::new();
        let mut stages: Vec<(Stage, bool)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| format!("missing bool value for {item}"))?;
            let (name, value) = (name.trim(), value.trim());
            let on = parse_go_bool(value).ok_or_else(|| format!("invalid value of {name}={value}: not a boolean"))?;
            match name {
                "AllAlpha" => stages.push((Stage::Alpha, on)),
                "AllBeta" => stages.push((Stage::Beta, on)),
                _ => {
                    let (known, _, _) = KNOWN
                        .iter()
                        .find(|(k, _, _)| *k == name)
                        .ok_or_else(|| format!("unrecognized feature gate: {name}"))?;
                    named.insert(known, on);
                }
            }
        }
        for (stage, on) in stages {
            for (name, _, _) in KNOWN.iter().filter(|(_, s, _)| *s == stage) {
                named.entry(name).or_insert(on);
            }
        }
        Ok(FeatureGates { set: named })
    }

    /// The value the command line gave `name`, if it gave one.
    pub fn get(&self, name: &str) -> Option<bool> {
        self.set.get(name).copied()
    }

    /// What start-up should warn about: gates set to something Cairn
    /// cannot do.
    pub fn ignored(&self) -> Vec<String> {
        self.set
            .iter()
            .filter_map(|(name, on)| {
                let (_, _, support) = KNOWN.iter().find(|(k, _, _)| k == name)?;
                match (support, on) {
                    (Support::Missing, true) => Some(format!("{name}=true: Cairn does not implement it")),
                    (Support::AlwaysOn, false) => Some(format!("{name}=false: Cairn always behaves as if it were on")),
                    _ => None,
                }
            })
            .collect()
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_as_etcd_does() {
        let gates = FeatureGates::parse(" InitialCorruptCheck = true ,, LeaseCheckpoint=0,").unwrap();
        assert_eq!(gates.get(INITIAL_CORRUPT_CHECK), Some(true));
        assert_eq!(gates.get("LeaseCheckpoint"), Some(false));
        assert_eq!(gates.get("StopGRPCServiceOnDefrag"), None);
        assert_eq!(FeatureGates::parse("").unwrap(), FeatureGates::default());
    }

    #[test]
    fn all_alpha_fills_what_is_not_named() {
        let gates = FeatureGates::parse("InitialCorruptCheck=false,AllAlpha=true").unwrap();
        assert_eq!(gates.get(INITIAL_CORRUPT_CHECK), Some(false));
        assert_eq!(gates.get("CompactHashCheck"), Some(true));
        assert_eq!(gates.get("TxnModeWriteWithSharedBuffer"), None);
        assert_eq!(
            FeatureGates::parse("AllBeta=false").unwrap().get("TxnModeWriteWithSharedBuffer"),
            Some(false)
        );
    }

    #[test]
    fn refuses_malformed_input() {
        for (bad, why) in [
            ("InitialCorruptCheck", "missing bool value"),
            ("InitialCorruptCheck=yes", "invalid value"),
            ("InitialCorruptCheck=", "invalid value"),
            ("NoSuchGate=true", "unrecognized feature gate: NoSuchGate"),
            ("=true", "unrecognized feature gate"),
        ] {
            let err = FeatureGates::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn reports_what_cairn_cannot_honour() {
        let gates = FeatureGates::parse("StopGRPCServiceOnDefrag=true,LeaseCheckpoint=false,LeaseCheckpointPersist=true,TxnModeWriteWithSharedBuffer=false,InitialCorruptCheck=true").unwrap();
        let ignored = gates.ignored();
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(ignored[0].starts_with("LeaseCheckpoint=false"));
        assert!(ignored[1].starts_with("StopGRPCServiceOnDefrag=true"));
    }
}
