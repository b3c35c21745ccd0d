//! Constructor defaults that several diffusers / transformers configs share.

pub(super) fn d_true() -> bool {
    true
}
pub(super) fn d_one() -> f64 {
    1.0
}
pub(super) fn d_four() -> usize {
    4
}
pub(super) fn d_three() -> usize {
    3
}
pub(super) fn d_silu() -> String {
    "silu".into()
}
pub(super) fn d_default() -> String {
    "default".into()
}
pub(super) fn d_positional() -> String {
    "positional".into()
}
pub(super) fn d_eps5() -> f64 {
    1e-5
}
