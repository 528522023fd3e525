use std::fmt;

/// A UUIDv7 identifier stored as its 16 bytes. Byte order equals creation-time order, so redb keys
/// built from ids sort oldest first.
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Id(pub [u8; 16]);

impl Id {
    /// A fresh time-ordered id.
    pub fn new_v7() -> Id {
        Id(*uuid::Uuid::now_v7().as_bytes())
    }

    /// Parses the hyphenated (or simple) textual form of any UUID.
    ///
    /// ```
    /// use flightdeck::domain::Id;
    /// let id = Id::new_v7();
    /// assert_eq!(Id::parse(&id.to_string()), Some(id));
    /// assert_eq!(Id::parse("not-a-uuid"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Id> {
        uuid::Uuid::try_parse(text).ok().map(|u| Id(*u.as_bytes()))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = uuid::Uuid::encode_buffer();
        f.write_str(
            uuid::Uuid::from_bytes(self.0)
                .hyphenated()
                .encode_lower(&mut buf),
        )
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
