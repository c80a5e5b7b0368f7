//! The bollard implementation of [`super::Runtime`].
