#!/usr/bin/env bash
# Build a NEW crate that depends on this package the way a user's does (a path dependency
# with the default features off and `tch` on), next to the newest ndarray / rand /
# rand_chacha that `cargo add` picks today, and compile every ```rust block of the README
# in it: the first block that defines a build script becomes its build.rs, the others its
# examples. The `Use` example then runs, without LD_LIBRARY_PATH (the build.rs snippet's
# rpath). Run by `make test`; shares the repository's target folder so nothing already
# built is built again.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${DOWNSTREAM_DIR:-$repo/target/downstream}"
rm -rf "$dir"
mkdir -p "$dir/src" "$dir/examples"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "downstream-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
boomerang-diffusion = { path = "$repo", default-features = false, features = ["tch"] }

# The same profiles as the repository, so its compiled dependencies are reused.
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 2
debug = false

[workspace]
TOML
# The newest crates really are other versions than the re-exported ones, and both coexist.
cat > "$dir/src/main.rs" <<'RS'
fn main() {
    let theirs = ndarray::Array1::<f32>::zeros(3);
    let ours = boomerang::ndarray::Array1::<f32>::zeros(3);
    assert_eq!(theirs.len(), ours.len());
}
RS
# Start from the repository's lock file (the same versions of everything else), then add
# the newest releases of the crates a user is likely to add beside this one.
cp "$repo/Cargo.lock" "$dir/Cargo.lock"
(cd "$dir" && cargo add --quiet ndarray rand rand_chacha)
# The README's rust blocks.
awk -v dir="$dir" '
  /^```rust/ { inblock = 1; n += 1; body = ""; next }
  /^```/ && inblock { inblock = 0; blocks[n] = body; next }
  inblock { body = body $0 "\n" }
  END {
    ex = 0
    for (i = 1; i <= n; i++) {
      if (blocks[i] ~ /build\.rs/ && !done_build) { print blocks[i] > (dir "/build.rs"); done_build = 1 }
      else { ex += 1; print blocks[i] > (dir "/examples/readme_" ex ".rs") }
    }
  }' "$repo/README.md"
test -f "$dir/build.rs" || { echo "the README has no build.rs block"; exit 1; }
ls "$dir"/examples/readme_*.rs >/dev/null
cd "$dir"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cargo build --quiet --examples --bins
echo "downstream: $(ls examples | wc -l) README examples compile; versions beside it:"
cargo tree --quiet --depth 1 -e normal --charset ascii | grep -E -- '-- (ndarray|rand|rand_chacha) v' || true
# The README's library example runs, finding libtorch through the rpath of its build.rs.
env -u LD_LIBRARY_PATH "$CARGO_TARGET_DIR/debug/examples/readme_1"
echo "downstream: the README's first example runs without LD_LIBRARY_PATH"
