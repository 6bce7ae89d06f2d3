//! The OpenStack test world.

pub mod cloud;
