//! Upstream answers whose fields drift from the documented types.
