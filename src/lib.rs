//! depot facade
