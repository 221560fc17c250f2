#!/usr/bin/env bash
# Nix checks that need no nixpkgs (nixpkgs cannot be fetched in CI):
#   - every .nix file parses (nix-instantiate --parse)
#   - nixfmt --check (the formatter of `nix fmt`, nixfmt-tree) and
#     deadnix --fail
#   - the shared unit definitions evaluate with builtins only
#   - how the backends' sandbox follows their database URL (createLocally
#     with TCP URLs, IPv4 and IPv6 addresses), builtins only
#     (vm-tests/network-eval.nix)
#   - flake.lock pins the agreed nixpkgs revision
#   - with NIXPKGS_LIB=/path/to/nixpkgs/lib (a nixpkgs or nixpkgs.lib
#     checkout): the NixOS module and the flake outputs are evaluated
#     against a stub package set (vm-tests/module-eval.nix, flake-eval.nix)
# Installs nix-bin (apt) and nixfmt/deadnix (cargo install) if missing.
# nixfmt is nixfmt_rs from crates.io, a Rust implementation of nixfmt with
# the same output (nixfmt itself is Haskell and not packaged for Debian).
# Needs no release binaries. `nix flake check` itself needs nixpkgs.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
passed=0
fail() {
  echo "check-nix: FAIL: $*" >&2
  echo "check-nix: $passed passed, 1 failed"
  exit 1
}
ok() {
  passed=$((passed + 1))
  echo "ok: $*"
}

if ! command -v nix-instantiate >/dev/null; then
  echo "check-nix: installing nix-bin"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin jq >/dev/null
fi
command -v jq >/dev/null || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
for tool in nixfmt:nixfmt_rs@0.5.3 deadnix:deadnix; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    echo "check-nix: cargo install --locked ${tool#*:}"
    cargo install --locked --quiet "${tool#*:}"
  fi
done

mapfile -t files < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' | sort)
((${#files[@]} > 0)) || fail "no .nix files found"

for f in "${files[@]}"; do
  nix-instantiate --parse "$f" >/dev/null || fail "$f does not parse"
done
ok "${#files[@]} .nix files parse"

nixfmt --check "${files[@]}" || fail "not formatted: run nixfmt (or nix fmt) on the files above"
ok "nixfmt --check"

deadnix --fail "${files[@]}" || fail "deadnix found unused code (above)"
ok "deadnix --fail"

units=$(nix-instantiate --eval --strict --json -E 'import ./nixos-modules/render-units.nix { }') ||
  fail "nixos-modules/render-units.nix does not evaluate with builtins only"
for svc in gateway user todo; do
  jq -e --arg s "$svc" '.["todoapp-\($s).service"] | test("Type=notify") and test("ExecStart=/usr/local/bin/todoapp-\($s) ")' \
    <<<"$units" >/dev/null || fail "rendered todoapp-$svc.service looks wrong"
  jq -e --arg s "$svc" '.["todoapp-\($s).socket"] | test("FileDescriptorName=\($s)\n")' <<<"$units" >/dev/null ||
    fail "rendered todoapp-$svc.socket looks wrong"
done
ok "unit definitions evaluate with builtins only (scripts/check-units.sh checks them further)"

out=$(nix-instantiate --eval --strict --json vm-tests/network-eval.nix 2>&1 | grep -v "build-users-group") ||
  fail "vm-tests/network-eval.nix: $out"
ok "$out"

lock='{
  "locked": {"owner": "NixOS", "repo": "nixpkgs", "type": "github",
             "rev": "89570f24e97e614aa34aa9ab1c927b6578a43775",
             "narHash": "sha256-EMzXKmnOtBQ2MnvpiNOm7E+kOMvdPrIKaeg52Tip2Uk=",
             "lastModified": 1782175435},
  "original": {"owner": "NixOS", "repo": "nixpkgs", "type": "github", "ref": "nixpkgs-unstable"}
}'
jq -e --argjson want "$lock" '
  .version == 7 and .root == "root" and .nodes.root.inputs == {"nixpkgs": "nixpkgs"}
  and .nodes.nixpkgs.locked == $want.locked and .nodes.nixpkgs.original == $want.original' flake.lock >/dev/null ||
  fail "flake.lock does not pin nixpkgs $(jq -c .nodes.nixpkgs flake.lock)"
grep -q 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";' flake.nix ||
  fail "flake.nix input does not match flake.lock's original (github:NixOS/nixpkgs/nixpkgs-unstable)"
ok "flake.lock pins NixOS/nixpkgs 89570f24e97e614aa34aa9ab1c927b6578a43775"

if [[ -n "${NIXPKGS_LIB:-}" ]]; then
  lib=$NIXPKGS_LIB
  if [[ $(nix-instantiate --eval -E 'builtins ? readFileType') != true ]]; then
    # lib.fileset needs builtins.readFileType (Nix >= 2.14): shim it on a copy.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp -r "$lib" "$tmp/lib"
    sed -i 's|^  pathType = builtins.readFileType;|  pathType = builtins.readFileType or (path: if dirOf path == path then "directory" else (builtins.readDir (dirOf path)).${baseNameOf path});|' \
      "$tmp/lib/filesystem.nix"
    lib=$tmp/lib
  fi
  for t in module-eval flake-eval; do
    out=$(nix-instantiate --read-write-mode --eval --strict --json "vm-tests/$t.nix" --arg lib "import $lib" 2>&1) ||
      fail "vm-tests/$t.nix: $out"
    ok "$out"
  done
else
  echo "skip: module and flake evaluation (set NIXPKGS_LIB to a nixpkgs lib/ directory)"
fi

echo "check-nix: $passed passed, 0 failed"
