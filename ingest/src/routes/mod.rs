//! One module per resource of the API.

pub mod connections;
pub mod dead_letters;
pub mod events;
pub mod health;
pub mod rules;
pub mod workspaces;
