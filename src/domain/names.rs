//! The open vocabularies: the agent types and artifact types a team names for itself. A name
//! matches `^[a-z][a-z0-9_.-]{0,63}$`; BotArmy's six agent types and eleven artifact types are
//! the known defaults, held without an allocation and listed first.
//!
//! Stored records hold a name as postcard holds an enum: a default as its variant index (the
//! bytes the closed enums of schema 5 and before wrote, so those records read unchanged), any
//! other name as the variant after the defaults carrying its text. Index keys do not use these
//! codes: the store interns every name into an id of its own (`store::types`).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::rules::DomainError;

/// Which open vocabulary a name belongs to.
pub trait NameKind: Copy + Ord + std::hash::Hash + fmt::Debug + Default + 'static {
    /// The kind, as named in error messages and fields (`agent_type`).
    const KIND: &'static str;
    /// The known defaults, in the order their stored codes have.
    const DEFAULTS: &'static [&'static str];
    /// The defaults followed by the variant of any other name (for serde's enum form).
    const VARIANTS: &'static [&'static str];
}

/// A vocabulary: its kind's name and its defaults, written once (`VARIANTS` is the defaults and
/// `named`).
macro_rules! name_kind {
    ($(#[$doc:meta])* $kind:ident, $name:literal, [$($default:literal),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $kind;

        impl NameKind for $kind {
            const KIND: &'static str = $name;
            const DEFAULTS: &'static [&'static str] = &[$($default),+];
            const VARIANTS: &'static [&'static str] = &[$($default,)+ "named"];
        }
    };
}

name_kind!(
    /// The agent types' vocabulary.
    AgentKind,
    "agent_type",
    ["orchestrator", "analyst", "architect", "coder", "tester", "deployer"]
);

name_kind!(
    /// The artifact types' vocabulary.
    ArtifactKind,
    "artifact_type",
    [
        "project_plan",
        "software_specification",
        "implementation_plan",
        "system_architecture",
        "source_code",
        "test_results",
        "deployment_log",
        "deployment_package",
        "user_input",
        "agent_output",
        "hitl_response",
    ]
);

/// An agent type: `coder`, `researcher`, …
pub type AgentType = Name<AgentKind>;
/// An artifact type: `source_code`, `research_notes`, …
pub type ArtifactType = Name<ArtifactKind>;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    /// One of the defaults, by its position.
    Known(u8),
    /// Any other name (never one of the defaults' texts).
    Named(Arc<str>),
}

/// A name of an open vocabulary. Cheap to clone (a default is a byte, another name a shared
/// string); ordered defaults first, in their order, then the others by text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name<K: NameKind> {
    repr: Repr,
    kind: PhantomData<K>,
}

impl<K: NameKind> Name<K> {
    /// The default at `index` of `K::DEFAULTS` (checked at compile time where used in a const).
    pub const fn known(index: u8) -> Name<K> {
        assert!((index as usize) < K::DEFAULTS.len());
        Name {
            repr: Repr::Known(index),
            kind: PhantomData,
        }
    }

    /// The name, or why `text` is not one.
    pub fn parse(text: &str) -> Result<Name<K>, String> {
        if let Some(i) = K::DEFAULTS.iter().position(|d| *d == text) {
            return Ok(Name::known(i as u8));
        }
        check_syntax(text)?;
        Ok(Name {
            repr: Repr::Named(Arc::from(text)),
            kind: PhantomData,
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.repr {
            Repr::Known(i) => K::DEFAULTS[usize::from(*i)],
            Repr::Named(s) => s,
        }
    }

    /// The defaults, in order.
    pub fn defaults() -> impl Iterator<Item = Name<K>> {
        (0..K::DEFAULTS.len()).map(|i| Name::known(i as u8))
    }

    /// Its position among the defaults, if it is one.
    pub fn default_index(&self) -> Option<u8> {
        match self.repr {
            Repr::Known(i) => Some(i),
            Repr::Named(_) => None,
        }
    }
}

/// Which names of a vocabulary a server takes: any, up to `max` distinct ones in use, or only
/// those an operator listed (`agent_types`, `artifact_types`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed<K: NameKind> {
    /// The closed list, when there is one.
    pub only: Option<Vec<Name<K>>>,
    /// Most distinct names kept (`--max-agent-types`, `--max-artifact-types`).
    pub max: usize,
}

impl<K: NameKind> Allowed<K> {
    /// Any name, up to `max` of them.
    pub fn open(max: usize) -> Allowed<K> {
        Allowed { only: None, max }
    }

    /// The name `text` stands for in `field`, if this server takes it (whether one more name
    /// fits is the store's to say: `DomainError::TooManyTypes`).
    pub fn parse(&self, field: &str, text: &str) -> Result<Name<K>, DomainError> {
        let name = Name::parse(text).map_err(|m| DomainError::invalid(field, m))?;
        match &self.only {
            Some(only) if !only.contains(&name) => Err(DomainError::invalid(
                field,
                format!(
                    "unknown {} `{name}`; allowed: {}",
                    K::KIND,
                    only.iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            _ => Ok(name),
        }
    }

    /// The names listed first: the closed list, or the defaults.
    pub fn listed(&self) -> Vec<Name<K>> {
        match &self.only {
            Some(only) => only.clone(),
            None => Name::defaults().collect(),
        }
    }
}

/// Why `text` is not a name: it must match `^[a-z][a-z0-9_.-]{0,63}$`.
pub fn check_syntax(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(b));
    if ok {
        Ok(())
    } else {
        let shown: String = text.chars().take(MAX_NAME_LEN + 1).collect();
        Err(format!(
            "`{shown}` is not a name: a lowercase letter, then at most {} lowercase letters, digits, `_`, `.` or `-`",
            MAX_NAME_LEN - 1
        ))
    }
}

impl AgentType {
    pub const ORCHESTRATOR: AgentType = Name::known(0);
    pub const ANALYST: AgentType = Name::known(1);
    pub const ARCHITECT: AgentType = Name::known(2);
    pub const CODER: AgentType = Name::known(3);
    pub const TESTER: AgentType = Name::known(4);
    pub const DEPLOYER: AgentType = Name::known(5);
    /// The known defaults, in order.
    pub const KNOWN: &'static [AgentType] = &[
        Self::ORCHESTRATOR,
        Self::ANALYST,
        Self::ARCHITECT,
        Self::CODER,
        Self::TESTER,
        Self::DEPLOYER,
    ];
}

impl ArtifactType {
    pub const PROJECT_PLAN: ArtifactType = Name::known(0);
    pub const SOURCE_CODE: ArtifactType = Name::known(4);
    pub const HITL_RESPONSE: ArtifactType = Name::known(10);
    /// The known defaults, in order.
    pub const KNOWN: &'static [ArtifactType] = &[
        Name::known(0),
        Name::known(1),
        Name::known(2),
        Name::known(3),
        Name::known(4),
        Name::known(5),
        Name::known(6),
        Name::known(7),
        Name::known(8),
        Name::known(9),
        Name::known(10),
    ];
}

impl<K: NameKind> fmt::Display for Name<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<K: NameKind> fmt::Debug for Name<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<K: NameKind> serde::Serialize for Name<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.repr {
            Repr::Known(i) => {
                s.serialize_unit_variant("Name", u32::from(*i), K::DEFAULTS[usize::from(*i)])
            }
            Repr::Named(text) => {
                s.serialize_newtype_variant("Name", K::DEFAULTS.len() as u32, "named", &**text)
            }
        }
    }
}

impl<'de, K: NameKind> serde::Deserialize<'de> for Name<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name<K>, D::Error> {
        struct Visit<K>(PhantomData<K>);

        impl<'de, K: NameKind> serde::de::Visitor<'de> for Visit<K> {
            type Value = Name<K>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an {}", K::KIND)
            }

            fn visit_enum<A: serde::de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> Result<Name<K>, A::Error> {
                use serde::de::{Error, VariantAccess};
                let (index, variant): (u32, _) = data.variant()?;
                let index = index as usize;
                if index < K::DEFAULTS.len() {
                    variant.unit_variant()?;
                    Ok(Name::known(index as u8))
                } else if index == K::DEFAULTS.len() {
                    let text: String = variant.newtype_variant()?;
                    Name::parse(&text).map_err(A::Error::custom)
                } else {
                    Err(A::Error::custom(format!(
                        "no {} has the stored code {index}",
                        K::KIND
                    )))
                }
            }
        }

        d.deserialize_enum("Name", K::VARIANTS, Visit(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum OldAgentType {
        Orchestrator,
        Analyst,
        Architect,
        Coder,
        Tester,
        Deployer,
    }

    #[test]
    fn a_default_is_stored_as_the_closed_enum_stored_it() {
        let old = [
            OldAgentType::Orchestrator,
            OldAgentType::Analyst,
            OldAgentType::Architect,
            OldAgentType::Coder,
            OldAgentType::Tester,
            OldAgentType::Deployer,
        ];
        for (i, o) in old.iter().enumerate() {
            let bytes = postcard::to_allocvec(o).unwrap();
            let name: AgentType = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(name.as_str(), AgentKind::DEFAULTS[i]);
            assert_eq!(postcard::to_allocvec(&name).unwrap(), bytes);
        }
        assert_eq!(AgentType::CODER.as_str(), "coder");
        assert_eq!(ArtifactType::HITL_RESPONSE.as_str(), "hitl_response");
        assert_eq!(ArtifactType::SOURCE_CODE.as_str(), "source_code");
    }

    #[test]
    fn any_other_name_round_trips_and_is_not_a_default() {
        let name = AgentType::parse("researcher").unwrap();
        assert_eq!(name.default_index(), None);
        let bytes = postcard::to_allocvec(&name).unwrap();
        assert_eq!(bytes[0], 6);
        let back: AgentType = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, name);
        assert_eq!(back.as_str(), "researcher");
        // A default's text is the default, however it is made.
        assert_eq!(AgentType::parse("coder").unwrap(), AgentType::CODER);
        assert!(AgentType::CODER < name);
        assert!(AgentType::ORCHESTRATOR < AgentType::DEPLOYER);
    }

    #[test]
    fn the_syntax_is_checked() {
        for good in ["a", "research_notes", "v1.2-beta", &"x".repeat(64)] {
            assert!(ArtifactType::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Researcher",
            "1st",
            "_x",
            "a b",
            "é",
            "a/b",
            &"x".repeat(65),
        ] {
            let err = AgentType::parse(bad).unwrap_err();
            assert!(err.contains("is not a name"), "{bad}: {err}");
        }
        let long = AgentType::parse(&"y".repeat(10_000)).unwrap_err();
        assert!(long.len() < 300, "{long}");
    }

    #[test]
    fn a_closed_list_refuses_what_it_does_not_name() {
        let open = Allowed::<AgentKind>::open(256);
        assert_eq!(
            open.parse("agent_type", "researcher").unwrap().as_str(),
            "researcher"
        );
        assert_eq!(open.listed().len(), 6);
        let closed = Allowed::<AgentKind> {
            only: Some(vec![AgentType::CODER, AgentType::parse("planner").unwrap()]),
            max: 256,
        };
        assert_eq!(
            closed.parse("agent_type", "planner").unwrap().as_str(),
            "planner"
        );
        let err = closed.parse("agent_type", "researcher").unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent_type: unknown agent_type `researcher`; allowed: coder, planner"
        );
        let bad = open.parse("tasks[0].agent_type", "Bad").unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("tasks[0].agent_type: `Bad` is not a name"),
            "{bad}"
        );
    }

    #[test]
    fn a_stored_code_past_the_named_variant_is_refused() {
        assert!(postcard::from_bytes::<AgentType>(&[7]).is_err());
        assert!(postcard::from_bytes::<ArtifactType>(&[11, 2, b'a', b'b']).is_ok());
        // A stored default's text in the named variant reads as the default.
        let n: AgentType = postcard::from_bytes(&[6, 5, b'c', b'o', b'd', b'e', b'r']).unwrap();
        assert_eq!(n, AgentType::CODER);
    }
}
