//! What `describe` reports besides the schema: name, version, description, effect.

use crate::Effect;

/// Tool metadata collected by [`export_tool!`](crate::export_tool); each key
/// of the macro is a method here.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: String,
    pub(crate) effect: Effect,
}

impl Metadata {
    /// Metadata from the crate's package fields, with [`Effect::Pure`].
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            effect: Effect::Pure,
        }
    }

    /// Sets the tool name (the `name = ...` key).
    pub fn name(&mut self, name: &str) {
        name.clone_into(&mut self.name);
    }

    /// Sets the tool version (the `version = ...` key).
    pub fn version(&mut self, version: &str) {
        version.clone_into(&mut self.version);
    }

    /// Sets the description (the `description = ...` key).
    pub fn description(&mut self, description: &str) {
        description.clone_into(&mut self.description);
    }

    /// Sets the effect class (the `effect = ...` key).
    pub fn effect(&mut self, effect: Effect) {
        self.effect = effect;
    }
}
