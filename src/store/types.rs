//! The agent and artifact types in use, each interned into an id of this database (table
//! `type_names`), so that index keys hold two bytes instead of a name. BotArmy's defaults have the
//! ids their enum codes had (0–5 and 0–10), so keys written before names were open keep their
//! meaning. A name gets its id in the writer transaction of the first record, claim or queue
//! setting that names it; the registry here changes only after that commit.

use std::collections::HashMap;

use redb::ReadableTable;

use crate::domain::names::{AgentKind, Allowed, ArtifactKind, Name, NameKind};
use crate::domain::{AgentType, ArtifactType, DomainError};

/// The store's kind code of a vocabulary, the first part of a `type_names` key.
pub(crate) trait Kind: NameKind {
    const CODE: u8;
}

impl Kind for AgentKind {
    const CODE: u8 = 0;
}

impl Kind for ArtifactKind {
    const CODE: u8 = 1;
}

/// One vocabulary's names in use, by id.
#[derive(Debug)]
pub(crate) struct Interned<K: NameKind> {
    ids: HashMap<Name<K>, u16>,
    names: Vec<Name<K>>,
    pub(crate) allowed: Allowed<K>,
}

impl<K: NameKind> Interned<K> {
    fn new(allowed: Allowed<K>) -> Interned<K> {
        Interned {
            ids: HashMap::new(),
            names: Vec::new(),
            allowed,
        }
    }

    pub(crate) fn id(&self, name: &Name<K>) -> Option<u16> {
        self.ids.get(name).copied()
    }

    pub(crate) fn name(&self, id: u16) -> Option<&Name<K>> {
        self.names.get(usize::from(id))
    }

    /// Every name in use, by id: the defaults first.
    pub(crate) fn names(&self) -> &[Name<K>] {
        &self.names
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether `name` (not yet interned, `pending` more being interned before it) fits.
    pub(crate) fn room_for(
        &self,
        field: &str,
        name: &Name<K>,
        pending: usize,
    ) -> Result<(), DomainError> {
        if self.names.len() + pending < self.allowed.max.min(usize::from(u16::MAX)) {
            Ok(())
        } else {
            Err(DomainError::TooManyTypes {
                field: field.to_owned(),
                kind: K::KIND,
                name: name.to_string(),
                max: self.allowed.max,
            })
        }
    }

    /// Adds a name read from the table or committed by the writer, at its id.
    pub(crate) fn insert(&mut self, id: u16, name: Name<K>) {
        let at = usize::from(id);
        debug_assert_eq!(at, self.names.len(), "ids are given in order");
        if at == self.names.len() {
            self.ids.insert(name.clone(), id);
            self.names.push(name);
        }
    }
}

/// Both vocabularies' names in use.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) agents: Interned<AgentKind>,
    pub(crate) artifacts: Interned<ArtifactKind>,
}

impl Registry {
    /// The registry of a database: its `type_names` table read in id order.
    pub(crate) fn load<T>(
        table: &T,
        agents: Allowed<AgentKind>,
        artifacts: Allowed<ArtifactKind>,
    ) -> Result<Registry, crate::store::StoreError>
    where
        T: redb::ReadableTable<(u8, u16), &'static str>,
    {
        let mut registry = Registry {
            agents: Interned::new(agents),
            artifacts: Interned::new(artifacts),
        };
        for entry in table.iter()? {
            let (key, name) = entry?;
            let (kind, id) = key.value();
            let corrupt = |why: String| {
                crate::store::StoreError::Corrupt(format!("type_names ({kind}, {id}): {why}"))
            };
            match kind {
                AgentKind::CODE => {
                    let name = AgentType::parse(name.value()).map_err(corrupt)?;
                    if usize::from(id) != registry.agents.len() {
                        return Err(corrupt("ids are not consecutive".into()));
                    }
                    registry.agents.insert(id, name);
                }
                ArtifactKind::CODE => {
                    let name = ArtifactType::parse(name.value()).map_err(corrupt)?;
                    if usize::from(id) != registry.artifacts.len() {
                        return Err(corrupt("ids are not consecutive".into()));
                    }
                    registry.artifacts.insert(id, name);
                }
                _ => return Err(corrupt("no such kind".into())),
            }
        }
        Ok(registry)
    }

    pub(crate) fn agent(&self, name: &AgentType) -> Option<u16> {
        self.agents.id(name)
    }

    pub(crate) fn artifact(&self, name: &ArtifactType) -> Option<u16> {
        self.artifacts.id(name)
    }
}

/// Writes the defaults at the ids their enum codes had, where the table lacks them (a new
/// database, or one of schema 5 and before).
pub(crate) fn seed_defaults(
    table: &mut redb::Table<'_, (u8, u16), &'static str>,
) -> Result<(), redb::StorageError> {
    fn seed<K: Kind>(
        table: &mut redb::Table<'_, (u8, u16), &'static str>,
    ) -> Result<(), redb::StorageError> {
        for (i, name) in K::DEFAULTS.iter().enumerate() {
            let key = (K::CODE, i as u16);
            if table.get(key)?.is_none() {
                table.insert(key, *name)?;
            }
        }
        Ok(())
    }
    seed::<AgentKind>(table)?;
    seed::<ArtifactKind>(table)
}
