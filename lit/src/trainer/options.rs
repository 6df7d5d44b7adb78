//! Trainer options with a fixed set of values, spelled as Lightning spells them: parsed from text
//! (`FromStr`, an error listing the accepted values), written back as text (`Display`), and
//! read from and written to configuration files as strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// A value a builder setter accepts for an option of type `T`: the value itself, or its text
/// (`"cuda:1"`), which is parsed and reported at `build()` when it is not one of the spellings.
pub trait OptionValue<T> {
    /// The option's value.
    fn into_option(self) -> Result<T, ConfigError>;
}

/// `TryFrom<String>` and `Into<String>` (for `#[serde(try_from, into)]`) and [`OptionValue`]
/// for an option type with `FromStr` and `Display`.
macro_rules! spelled {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = ConfigError;
            fn try_from(text: String) -> Result<Self, ConfigError> {
                text.parse()
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.to_string()
            }
        }
        impl $crate::trainer::OptionValue<$t> for $t {
            fn into_option(self) -> Result<$t, ConfigError> {
                Ok(self)
            }
        }
        impl $crate::trainer::OptionValue<$t> for &str {
            fn into_option(self) -> Result<$t, ConfigError> {
                self.parse()
            }
        }
        impl $crate::trainer::OptionValue<$t> for String {
            fn into_option(self) -> Result<$t, ConfigError> {
                self.parse()
            }
        }
    )*};
}

/// Where the Trainer runs (`accelerator`): `"auto"` (CUDA when there is a device), `"cpu"`,
/// `"cuda"` or `"gpu"` (the first CUDA device), `"cuda:N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum Accelerator {
    /// CUDA when libtorch finds a device, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device (Lightning's `"gpu"`).
    Gpu,
    /// A CUDA device: the first (`"cuda"`) or device N (`"cuda:N"`).
    Cuda(Option<usize>),
}

impl Accelerator {
    /// Whether it asks for CUDA.
    pub fn is_cuda(self) -> bool {
        matches!(self, Accelerator::Gpu | Accelerator::Cuda(_))
    }
}

impl fmt::Display for Accelerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accelerator::Auto => f.write_str("auto"),
            Accelerator::Cpu => f.write_str("cpu"),
            Accelerator::Gpu => f.write_str("gpu"),
            Accelerator::Cuda(None) => f.write_str("cuda"),
            Accelerator::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Accelerator {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        Ok(match text {
            "auto" => Accelerator::Auto,
            "cpu" => Accelerator::Cpu,
            "gpu" => Accelerator::Gpu,
            "cuda" => Accelerator::Cuda(None),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Accelerator::Cuda(Some(n)),
                _ => {
                    return Err(ConfigError::invalid(
                        "accelerator",
                        format!(
                            "unknown accelerator \"{other}\"; expected \"cpu\", \"cuda\", \"gpu\", \"cuda:N\" or \"auto\""
                        ),
                    ));
                }
            },
        })
    }
}

/// How processes train together (`strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum Strategy {
    /// One process, or distributed data parallel with several devices.
    #[default]
    Auto,
    /// Distributed data parallel (`"ddp"`, also `"ddp_find_unused_parameters_false"`), even
    /// with one process.
    Ddp,
    /// Distributed data parallel that searches each step's graph for parameters that take no
    /// part (`"ddp_find_unused_parameters_true"`: DDP's `find_unused_parameters=True`).
    DdpFindUnusedParametersTrue,
}

impl Strategy {
    /// Whether this is one of the distributed data parallel strategies.
    pub fn is_ddp(self) -> bool {
        matches!(self, Strategy::Ddp | Strategy::DdpFindUnusedParametersTrue)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Auto => "auto",
            Strategy::Ddp => "ddp",
            Strategy::DdpFindUnusedParametersTrue => "ddp_find_unused_parameters_true",
        })
    }
}

impl FromStr for Strategy {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text {
            "auto" => Ok(Strategy::Auto),
            "ddp" | "ddp_find_unused_parameters_false" => Ok(Strategy::Ddp),
            "ddp_find_unused_parameters_true" => Ok(Strategy::DdpFindUnusedParametersTrue),
            other => Err(ConfigError::invalid(
                "strategy",
                format!(
                    "unknown strategy \"{other}\"; expected \"auto\", \"ddp\", \"ddp_find_unused_parameters_false\" or \"ddp_find_unused_parameters_true\""
                ),
            )),
        }
    }
}

spelled!(Accelerator, Strategy, crate::amp::Precision, crate::profiler::ProfilerKind);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amp::Precision;
    use crate::profiler::ProfilerKind;

    /// Lightning's `test_ddp_find_parameters_strategy_registry`: the registered names set DDP's
    /// `find_unused_parameters`.
    #[test]
    fn ddp_find_unused_parameters_strategy_names() {
        let find = |name: &str| {
            let config = crate::TrainerConfig { strategy: name.parse().unwrap(), ..Default::default() };
            config.reducer_options().find_unused_parameters
        };
        assert!(!find("ddp"));
        assert!(!find("ddp_find_unused_parameters_false"));
        assert!(find("ddp_find_unused_parameters_true"));
        assert_eq!(
            "ddp_find_unused_parameters_true".parse::<Strategy>().unwrap().to_string(),
            "ddp_find_unused_parameters_true"
        );
        assert!("ddp_find_unused_parameters_true".parse::<Strategy>().unwrap().is_ddp());
        let config = crate::TrainerConfig { ddp_bucket_cap_mb: 25.0, ..Default::default() };
        assert_eq!(config.reducer_options().bucket_bytes_cap, 25 * 1024 * 1024, "DDP's bucket_cap_mb=25");
    }
    #[test]
    fn every_spelling_reads_back_as_it_is_written() {
        for text in ["auto", "cpu", "gpu", "cuda", "cuda:1"] {
            assert_eq!(text.parse::<Accelerator>().unwrap().to_string(), text);
        }
        for text in ["auto", "ddp", "ddp_find_unused_parameters_true"] {
            assert_eq!(text.parse::<Strategy>().unwrap().to_string(), text);
        }
        for text in ["32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true"] {
            assert_eq!(text.parse::<Precision>().unwrap().to_string(), text);
        }
        assert_eq!("simple".parse::<ProfilerKind>().unwrap().to_string(), "simple");
        let e = "tpu".parse::<Accelerator>().unwrap_err().to_string();
        assert!(e.contains("unknown accelerator \"tpu\"") && e.contains("\"cuda:N\""), "{e}");
        let e = "fsdp".parse::<Strategy>().unwrap_err().to_string();
        assert!(e.contains("unknown strategy \"fsdp\"") && e.contains("\"ddp_find_unused_parameters_true\""), "{e}");
        let json = serde_json::to_string(&Accelerator::Cuda(Some(2))).unwrap();
        assert_eq!(json, "\"cuda:2\"");
        assert_eq!(serde_json::from_str::<Accelerator>(&json).unwrap(), Accelerator::Cuda(Some(2)));
    }
}
