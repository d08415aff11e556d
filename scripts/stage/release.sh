#!/usr/bin/env bash
# The pipeline's release stage: the harness binary and every profile's image
# into a folder, with a manifest of what is there (name, size, sha256, the
# commit) as JSON and as SHA256SUMS (`sha256sum -c SHA256SUMS` checks it).
#   scripts/stage/release.sh [--out DIR]     (default: release/)
# Image files are copied from the image cache (a reflink where the file
# system has them; never a hard link, through which a released disk booted
# by hand would write the cached base image). An image's age identity (the key its secrets are
# decrypted with, passed by fw_cfg at boot) is not released: the manifest
# lists it as withheld.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$repo"

out=release
case "${1:-}" in
  --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2 ;;
  "") ;;
  *) die "unknown option $1: use scripts/stage/release.sh [--out DIR]" ;;
esac
commit=$(git rev-parse HEAD) || die "not a git checkout: the release names its commit"
dirty=false
[ -z "$(git status --porcelain --untracked-files=no)" ] || dirty=true

step "setup"
scripts/setup

step "the harness (release) and the images"
cargo build --quiet --release -p rave-harness-cli
cargo run --quiet -p rave-harness-cli -- images build --profile all

step "release into $out (commit $commit$([ "$dirty" = false ] || echo ", with uncommitted changes"))"
[ ! -e "$out" ] || [ -z "$(ls -A "$out")" ] || die "$out is not empty: give an empty or new folder (--out DIR)"
mkdir -p "$out"
place() { # place SOURCE NAME: a copy (reflinked where the file system can)
  mkdir -p "$(dirname "$out/$2")"
  cp --reflink=auto "$1" "$out/$2"
}
place "$CARGO_TARGET_DIR/release/rave-harness" rave-harness
withheld=()
for profile in p0 p1 p2; do
  image=$(cargo run --quiet -p rave-harness-cli -- images path --profile "$profile")
  name=$(basename "$image")
  for file in "$image"/*; do
    case "$(basename "$file")" in
      age-identity.txt) withheld+=("$name/age-identity.txt") ;;
      *) place "$file" "$name/$(basename "$file")" ;;
    esac
  done
done

sums=$(mktemp)
(cd "$out" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$sums"
mv "$sums" "$out/SHA256SUMS"
! grep -vqE '^[0-9a-f]{64}  [A-Za-z0-9._/-]+$' "$out/SHA256SUMS" || die "a released file's name needs escaping in JSON: $(grep -vE '^[0-9a-f]{64}  [A-Za-z0-9._/-]+$' "$out/SHA256SUMS" | head -1)"
{
  printf '{\n  "commit": "%s",\n  "uncommitted_changes": %s,\n  "built_at": "%s",\n  "files": [\n' "$commit" "$dirty" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  first=1
  while read -r sum name; do
    [ "$first" = 1 ] || printf ',\n'
    first=0
    printf '    {"name": "%s", "size": %s, "sha256": "%s"}' "$name" "$(stat -c %s "$out/$name")" "$sum"
  done <"$out/SHA256SUMS"
  printf '\n  ],\n  "withheld": ['
  sep=""
  for w in "${withheld[@]}"; do printf '%s"%s"' "$sep" "$w"; sep=", "; done
  printf '],\n  "withheld_why": "an image'"'"'s age identity decrypts its secrets; it is not published"\n}\n'
} >"$out/manifest.json"
(cd "$out" && sha256sum -c --quiet SHA256SUMS) || die "the released files do not match their SHA256SUMS"
echo "released $(wc -l <"$out/SHA256SUMS") files into $out ($(du -sh --apparent-size "$out" | cut -f1)): manifest.json, SHA256SUMS"
