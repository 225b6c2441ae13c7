//! Placeholder: the fused step lands with issue 4.
