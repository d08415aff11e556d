# SAFE mode (shared/spec/images.md), as a pure function of one bool, from
# the one table the debian recipe and the cases read too: images/safe-mode.json.
# No nixpkgs, no lib: nixos/tests/safe-mode.nix evaluates it with builtins only.
#
#   import ./safe-mode.nix true  -> the SAFE values (the default of every image)
#   import ./safe-mode.nix false -> the values of SAFE=0
safe:
let
  table = builtins.fromJSON (builtins.readFile ../images/safe-mode.json);
in
if !builtins.isBool safe then
  throw "safe-mode.nix: expected a bool (SAFE on or off), got a ${builtins.typeOf safe}"
else if safe then
  table.safe
else
  table.full
