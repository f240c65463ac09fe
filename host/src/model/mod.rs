//! Units, errors and limits: the vocabulary every layer above speaks. Imports nothing above it.

pub(crate) mod error;
pub(crate) mod limits;
pub(crate) mod units;
