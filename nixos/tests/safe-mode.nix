# Checks nixos/safe-mode.nix with builtins only (no nixpkgs):
#
#   nix-instantiate --eval --strict nixos/tests/safe-mode.nix
#
# Evaluates to a one-line summary, or throws naming the first wrong value.
# RAVE_SAFE_MODE_FILE=/abs/path checks another copy instead (scripts/check-nix
# --self-test feeds it a broken one and expects the throw).
let
  override = builtins.getEnv "RAVE_SAFE_MODE_FILE";
  safeModeFile = if override == "" then ../safe-mode.nix else /. + override;
  safeMode = import safeModeFile;

  # shared/spec/images.md: SAFE on -> 3d/30s/256M/128M/3072/2, off -> 7d/15s/512M/256M/4096/4.
  expected = {
    safe = {
      retention = "3d";
      scrapeInterval = "30s";
      prometheusMemoryMax = "256M";
      grafanaMemoryMax = "128M";
      ramMb = 3072;
      cpus = 2;
    };
    unsafe = {
      retention = "7d";
      scrapeInterval = "15s";
      prometheusMemoryMax = "512M";
      grafanaMemoryMax = "256M";
      ramMb = 4096;
      cpus = 4;
    };
  };

  got = {
    safe = safeMode true;
    unsafe = safeMode false;
  };

  show = builtins.toJSON;

  # Every expected key with the expected value (type included: "3072" is not 3072).
  checkMode =
    mode:
    let
      want = expected.${mode};
      have = got.${mode};
      keys = builtins.attrNames want;
      extra = builtins.filter (k: !(builtins.hasAttr k want)) (builtins.attrNames have);
      checkKey =
        k:
        if !(builtins.hasAttr k have) then
          throw "safe-mode (${mode}): ${k} is missing"
        else if builtins.typeOf have.${k} != builtins.typeOf want.${k} || have.${k} != want.${k} then
          throw "safe-mode (${mode}): ${k} is ${show have.${k}}, expected ${show want.${k}}"
        else
          true;
    in
    if extra != [ ] then
      throw "safe-mode (${mode}): unexpected keys ${show extra}"
    else
      builtins.all checkKey keys;

  # Anything but a bool must be refused, not read as "off".
  refusesNonBool =
    builtins.all (v: !(builtins.tryEval (builtins.deepSeq (safeMode v) true)).success) [
      "0"
      0
      null
    ]
    || throw "safe-mode: a non-bool argument must throw";

  ok = checkMode "safe" && checkMode "unsafe" && refusesNonBool;
in
if ok then
  "safe-mode: SAFE on ${show got.safe}; SAFE off ${show got.unsafe}; non-bool refused"
else
  throw "safe-mode: unreachable"
