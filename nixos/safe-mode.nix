# SAFE mode (shared/spec/images.md), as a pure function of one bool.
# No nixpkgs, no lib: nixos/tests/safe-mode.nix evaluates it with builtins only.
#
#   import ./safe-mode.nix true  -> the SAFE values (the default of every image)
#   import ./safe-mode.nix false -> the values of SAFE=0
safe:
if !builtins.isBool safe then
  throw "safe-mode.nix: expected a bool (SAFE on or off), got a ${builtins.typeOf safe}"
else if safe then
  {
    retention = "3d";
    scrapeInterval = "30s";
    prometheusMemoryMax = "256M";
    grafanaMemoryMax = "128M";
    ramMb = 3072;
    cpus = 2;
  }
else
  {
    retention = "7d";
    scrapeInterval = "15s";
    prometheusMemoryMax = "512M";
    grafanaMemoryMax = "256M";
    ramMb = 4096;
    cpus = 4;
  }
