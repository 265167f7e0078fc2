//! One module per resource of the API, and the pages.

pub mod admin;
pub mod connections;
pub mod dead_letters;
pub mod events;
pub mod health;
pub mod pages;
pub mod rules;
pub mod sessions;
pub mod workspaces;
