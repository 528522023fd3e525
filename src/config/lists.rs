//! Settings that are lists: a list in the file, or one comma-separated string as in a variable.
//! A leaf module: the config and the webhook entries it holds both deserialize with it.

use serde::Deserialize;

/// A list in the file, or one comma-separated string as in the variable (`cors_origins`, a
/// webhook's `events`).
pub(crate) fn list_or_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrText::deserialize(d)? {
        ListOrText::List(list) => list,
        ListOrText::Text(text) => text.split(',').map(str::to_string).collect(),
    })
}
