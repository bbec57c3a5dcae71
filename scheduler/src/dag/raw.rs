//! The DAG file as written: serde structs mirroring the YAML, with source locations kept
//! (`Spanned`) so that validation can point at the exact value it refuses.
//!
//! Fields that take more than one shape (`command`, `retries`, `env` values, `for_each`)
//! have hand-written visitors instead of `#[serde(untagged)]`, which would lose both the
//! locations inside them and the reason a value did not fit.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::cron::{Catchup, Overlap};
use crate::dag::basic::ParamValue;
use crate::dag::model::{ExecutorKind, TriggerRule};

/// A YAML mapping with string keys, in file order, keys with their locations.
#[derive(Debug)]
pub(crate) struct SpannedMap<V>(pub(crate) Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SpannedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(SpannedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// The top level of a DAG file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDag {
    pub(crate) name: Spanned<String>,
    pub(crate) description: Option<String>,
    pub(crate) params: Option<SpannedMap<Spanned<ParamValue>>>,
    pub(crate) schedule: Option<Spanned<RawSchedule>>,
    pub(crate) max_active_runs: Option<Spanned<u32>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) defaults: Option<Spanned<RawDefaults>>,
    pub(crate) triggers: Option<Vec<Spanned<RawTrigger>>>,
    pub(crate) stages: Spanned<Vec<Spanned<RawStage>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) cron: Spanned<String>,
    pub(crate) timezone: Option<Spanned<String>>,
    pub(crate) catchup: Option<Catchup>,
    pub(crate) overlap: Option<Overlap>,
}

/// Declares a struct holding every stage field `defaults:` may also set, plus `$extra`.
macro_rules! stage_fields_struct {
    ($(#[$meta:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $name {
            $($extra)*
            pub(crate) description: Option<String>,
            pub(crate) executor: Option<ExecutorKind>,
            pub(crate) image: Option<Spanned<String>>,
            pub(crate) command: Option<Spanned<RawCommand>>,
            pub(crate) env: Option<SpannedMap<Spanned<RawEnvValue>>>,
            pub(crate) timeout: Option<Spanned<String>>,
            pub(crate) retries: Option<Spanned<RawRetries>>,
            pub(crate) resources: Option<Spanned<RawResources>>,
            pub(crate) worker: Option<SpannedMap<String>>,
            pub(crate) outputs: Option<Vec<Spanned<RawOutput>>>,
            pub(crate) cache: Option<bool>,
            pub(crate) when: Option<Spanned<String>>,
            pub(crate) trigger: Option<TriggerRule>,
            pub(crate) mounts: Option<Vec<Spanned<String>>>,
        }

        impl $name {
            /// Moves out the fields shared by stages and `defaults:`.
            pub(crate) fn take_common(&mut self) -> RawCommon {
                RawCommon {
                    description: self.description.take(),
                    executor: self.executor.take(),
                    image: self.image.take(),
                    command: self.command.take(),
                    env: self.env.take(),
                    timeout: self.timeout.take(),
                    retries: self.retries.take(),
                    resources: self.resources.take(),
                    worker: self.worker.take(),
                    outputs: self.outputs.take(),
                    cache: self.cache.take(),
                    when: self.when.take(),
                    trigger: self.trigger.take(),
                    mounts: self.mounts.take(),
                }
            }
        }
    };
}

/// The fields a stage and `defaults:` share, as written.
#[derive(Debug, Default)]
pub(crate) struct RawCommon {
    pub(crate) description: Option<String>,
    pub(crate) executor: Option<ExecutorKind>,
    pub(crate) image: Option<Spanned<String>>,
    pub(crate) command: Option<Spanned<RawCommand>>,
    pub(crate) env: Option<SpannedMap<Spanned<RawEnvValue>>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) retries: Option<Spanned<RawRetries>>,
    pub(crate) resources: Option<Spanned<RawResources>>,
    pub(crate) worker: Option<SpannedMap<String>>,
    pub(crate) outputs: Option<Vec<Spanned<RawOutput>>>,
    pub(crate) cache: Option<bool>,
    pub(crate) when: Option<Spanned<String>>,
    pub(crate) trigger: Option<TriggerRule>,
    pub(crate) mounts: Option<Vec<Spanned<String>>>,
}

stage_fields_struct!(
    /// One entry of `stages:`.
    RawStage {
        pub(crate) name: Spanned<String>,
        pub(crate) needs: Option<Vec<Spanned<String>>>,
        pub(crate) for_each: Option<Spanned<RawForEach>>,
        pub(crate) max_parallel: Option<Spanned<u32>>,
        pub(crate) approval: Option<Spanned<RawApproval>>,
    }
);

stage_fields_struct!(
    /// The `defaults:` block. The fields that only make sense per stage are accepted here
    /// so that validation can say why they are refused, rather than "unknown field".
    RawDefaults {
        pub(crate) name: Option<Spanned<IgnoredAny>>,
        pub(crate) needs: Option<Spanned<IgnoredAny>>,
        pub(crate) for_each: Option<Spanned<IgnoredAny>>,
        pub(crate) max_parallel: Option<Spanned<IgnoredAny>>,
        pub(crate) approval: Option<Spanned<IgnoredAny>>,
    }
);

/// A stage's `approval:` gate as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApproval {
    pub(crate) message: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
}

/// `command:` as a list (exec form) or a string (shell form).
#[derive(Debug)]
pub(crate) enum RawCommand {
    Exec(Vec<Spanned<String>>),
    Shell(String),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings (exec form) or a string (shell form)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(RawCommand::Exec(args))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// A value under `env:`: a scalar or `{secret: NAME}`.
#[derive(Debug)]
pub(crate) enum RawEnvValue {
    /// A YAML string.
    Text(String),
    /// A number or boolean; validation takes its spelling from the source when it can.
    OtherScalar(String),
    Secret(Spanned<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    secret: Spanned<String>,
}

impl<'de> Deserialize<'de> for RawEnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvVisitor;
        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = RawEnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean or `{secret: NAME}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::Text(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::OtherScalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::OtherScalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::OtherScalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawEnvValue, E> {
                Ok(RawEnvValue::OtherScalar(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEnvValue, A::Error> {
                let secret = RawSecretRef::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawEnvValue::Secret(secret.secret))
            }
        }
        deserializer.deserialize_any(EnvVisitor)
    }
}

/// `retries:` as a count or a policy map.
#[derive(Debug)]
pub(crate) enum RawRetries {
    Count(u32),
    Policy(RawRetryPolicy),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryPolicy {
    pub(crate) limit: u32,
    pub(crate) backoff: Option<Spanned<String>>,
    pub(crate) max_backoff: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawRetries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetriesVisitor;
        impl<'de> Visitor<'de> for RetriesVisitor {
            type Value = RawRetries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative retry count or `{limit, backoff, max_backoff}`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRetries, E> {
                u32::try_from(v)
                    .map(RawRetries::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRetries, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRetries, A::Error> {
                RawRetryPolicy::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRetries::Policy)
            }
        }
        deserializer.deserialize_any(RetriesVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResources {
    pub(crate) cpus: Option<Spanned<f64>>,
    pub(crate) memory: Option<Spanned<String>>,
    pub(crate) gpus: Option<u32>,
}

/// `for_each:` as a literal list or a template string naming a list param.
#[derive(Debug)]
pub(crate) enum RawForEach {
    List(Vec<Spanned<ParamValue>>),
    Template(String),
}

impl<'de> Deserialize<'de> for RawForEach {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ForEachVisitor;
        impl<'de> Visitor<'de> for ForEachVisitor {
            type Value = RawForEach;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list or a string like \"{{ params.NAME }}\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawForEach, E> {
                Ok(RawForEach::Template(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawForEach, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawForEach::List(items))
            }
        }
        deserializer.deserialize_any(ForEachVisitor)
    }
}

/// An `outputs:` entry: a file name, or `{path, asset, optional}`.
#[derive(Debug)]
pub(crate) enum RawOutput {
    Name(String),
    Spec(RawOutputSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutputSpec {
    pub(crate) path: Spanned<String>,
    pub(crate) asset: Option<Spanned<String>>,
    pub(crate) optional: Option<bool>,
}

impl<'de> Deserialize<'de> for RawOutput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OutputVisitor;
        impl<'de> Visitor<'de> for OutputVisitor {
            type Value = RawOutput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file name or `{path: FILE, asset: NAME, optional: true}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawOutput, E> {
                Ok(RawOutput::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawOutput, A::Error> {
                RawOutputSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawOutput::Spec)
            }
        }
        deserializer.deserialize_any(OutputVisitor)
    }
}

/// A `triggers:` entry. One struct for every kind, so that a trigger naming none or two
/// kinds gets its own error; `asset` is one name or a list of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    pub(crate) asset: Option<Spanned<RawNames>>,
    pub(crate) mode: Option<Spanned<String>>,
}

/// One name or a list of names.
#[derive(Debug)]
pub(crate) enum RawNames {
    /// A single name; its place is the enclosing value's.
    One(String),
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamesVisitor;
        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = RawNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an asset name or a list of asset names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNames, E> {
                Ok(RawNames::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element()? {
                    names.push(name);
                }
                Ok(RawNames::List(names))
            }
        }
        deserializer.deserialize_any(NamesVisitor)
    }
}
