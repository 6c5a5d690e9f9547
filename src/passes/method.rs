//! The one vocabulary of pruning methods, parsed here only: the CLI, sweeps, sensitivity scans
//! and budget searches all build their passes through [`Method::pass`].
//!
//! Grammar: a method name, then `+` suffixes that add to it, each at most once:
//! `NAME(+SUFFIX)*` with NAME one of `layer`, `global`, `N:M` (e.g. `2:4`) or `channel`, and
//! SUFFIX `obs` or `stats` (how the remaining weights recover) and, last, `ft` (the pruned
//! model is then fine-tuned by distillation from the dense one, with the default schedule, on
//! the calibration images): `channel+obs+ft`.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::options::Recover;
use super::{Finetune, PassConfig, PruneChannels, PruneMagnitude, PruneNM, Scope};

/// A pruning method, how the remaining weights recover, and whether fine-tuning follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    pub kind: MethodKind,
    pub recover: Recover,
    pub finetune: bool,
}

/// What a [`Method`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// Magnitude pruning, the amount of every layer (the pruning guide's step).
    Layer,
    /// Magnitude pruning with one threshold over all layers.
    Global,
    /// N:M semi-structured sparsity (the amount does not apply).
    NM { n: usize, m: usize },
    /// Whole output channels removed, the amount of every channel group (L1 importance).
    Channel,
}

/// What a budget search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchAxis {
    /// The pass's amount: the fraction of weights (or channels) removed.
    Amount,
    /// The fraction of MACs removed, `1 - target_macs` (channel pruning with OBS recovery).
    Macs,
}

impl SearchAxis {
    /// The option the axis sets, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            SearchAxis::Amount => "amount",
            SearchAxis::Macs => "MAC target",
        }
    }
}

impl MethodKind {
    /// Parses "N:M", e.g. "2:4".
    pub fn parse_pattern(pattern: &str) -> Result<MethodKind> {
        let parsed = pattern
            .split_once(':')
            .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)));
        match parsed {
            Some((n, m)) => Ok(MethodKind::NM { n, m }),
            None => bail!("pattern {pattern:?} is not of the form N:M (e.g. 2:4)"),
        }
    }
}

impl FromStr for Method {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut parts = text.split('+');
        let name = parts.next().unwrap_or_default();
        let kind = match name {
            "layer" => MethodKind::Layer,
            "global" => MethodKind::Global,
            "channel" => MethodKind::Channel,
            nm if nm.contains(':') => MethodKind::parse_pattern(nm)?,
            other => bail!(
                "unknown method {other:?} in {text:?}: use layer, global, N:M (e.g. 2:4) or \
                 channel, optionally with +obs or +stats"
            ),
        };
        let mut method = Method {
            kind,
            recover: Recover::None,
            finetune: false,
        };
        for suffix in parts {
            if method.finetune {
                bail!("method {text:?}: +ft comes last (fine-tuning runs after the rest)");
            }
            let recover = match suffix {
                "ft" => {
                    method.finetune = true;
                    continue;
                }
                "obs" => Recover::Obs,
                "stats" => Recover::Stats,
                other => bail!(
                    "method {text:?}: unknown suffix {other:?} (use +obs or +stats, then +ft)"
                ),
            };
            if !method.recover.is_none() {
                bail!("method {text:?} names its recovery twice");
            }
            method.recover = recover;
        }
        Ok(method)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            MethodKind::Layer => f.write_str("layer")?,
            MethodKind::Global => f.write_str("global")?,
            MethodKind::NM { n, m } => write!(f, "{n}:{m}")?,
            MethodKind::Channel => f.write_str("channel")?,
        }
        match self.recover {
            Recover::None => {}
            Recover::Stats => f.write_str("+stats")?,
            Recover::Obs => f.write_str("+obs")?,
        }
        if self.finetune {
            f.write_str("+ft")?;
        }
        Ok(())
    }
}

/// Written as the grammar spells it (`global+obs`).
impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Method {
    /// Whether the method takes an amount (N:M does not).
    pub fn takes_amount(&self) -> bool {
        !matches!(self.kind, MethodKind::NM { .. })
    }

    /// Whether the method removes channels (its x axis is the MAC ratio, not zeros).
    pub fn is_structured(&self) -> bool {
        matches!(self.kind, MethodKind::Channel)
    }

    /// The passes of this method at `amount` on the layers `include` and `exclude` select:
    /// [`Method::pass`], then fine-tuning with its default schedule when `+ft`.
    pub fn passes(&self, amount: f64, include: &[String], exclude: &[String]) -> Vec<PassConfig> {
        let prune = self.pass(amount, include, exclude);
        let finetune = self
            .finetune
            .then(|| PassConfig::Finetune(Finetune::default()));
        std::iter::once(prune).chain(finetune).collect()
    }

    /// The pruning pass of this method at `amount` on the layers `include` and `exclude`
    /// select, with the defaults of `prune` and of pipeline files for every other option
    /// (callers with more options set them on the result). Not validated:
    /// [`PassConfig::validate`].
    pub fn pass(&self, amount: f64, include: &[String], exclude: &[String]) -> PassConfig {
        let (include, exclude) = (include.to_vec(), exclude.to_vec());
        let magnitude = |scope| {
            PassConfig::PruneMagnitude(PruneMagnitude {
                amount,
                scope,
                include: include.clone(),
                exclude: exclude.clone(),
                recover: self.recover,
                order: None,
                max_map_drop: None,
            })
        };
        match self.kind {
            MethodKind::Layer => magnitude(Scope::Layer),
            MethodKind::Global => magnitude(Scope::Global),
            MethodKind::NM { n, m } => PassConfig::PruneNM(PruneNM {
                n,
                m,
                include,
                exclude,
                recover: self.recover,
                order: None,
            }),
            MethodKind::Channel => PassConfig::PruneChannels(PruneChannels {
                include,
                exclude,
                recover: self.recover,
                ..PruneChannels::new(amount)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_and_print_back() {
        for text in [
            "layer",
            "global+obs",
            "2:4",
            "2:4+obs",
            "channel+obs",
            "layer+stats",
            "channel+obs+ft",
            "2:4+ft",
        ] {
            let m: Method = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        assert_eq!(
            "1:8".parse::<Method>().unwrap().kind,
            MethodKind::NM { n: 1, m: 8 }
        );
        for bad in [
            "lyer",
            "global+ob",
            "2-4",
            "",
            "global+obs+stats",
            "layer+",
            "channel+ft+obs",
            "global+ft+ft",
        ] {
            assert!(bad.parse::<Method>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_patterns() {
        assert_eq!(
            MethodKind::parse_pattern("2:4").unwrap(),
            MethodKind::NM { n: 2, m: 4 }
        );
        assert!(MethodKind::parse_pattern("2-4").is_err());
    }

    #[test]
    fn each_method_builds_its_pass() {
        let names = |text: &str| {
            let method: Method = text.parse().unwrap();
            let pass = method.pass(0.3, &[], &["^/model\\.0/".into()]);
            pass.validate().unwrap();
            (pass.name(), pass.needs_calibration())
        };
        assert_eq!(names("layer"), ("prune_magnitude", false));
        assert_eq!(names("global+stats"), ("prune_magnitude", true));
        assert_eq!(names("2:4+obs"), ("prune_n_m", true));
        assert_eq!(names("channel"), ("prune_channels", false));
        let method: Method = "channel+obs+ft".parse().unwrap();
        let passes: Vec<&str> = method
            .passes(0.3, &[], &[])
            .iter()
            .map(|p| p.name())
            .collect();
        assert_eq!(passes, ["prune_channels", "finetune"]);
    }
}
