# The rave image of this configuration (RAVE_NIXOS_IMAGES/pN), at
# config.system.build.raveImage: the generic harness image
# (nixos/harness-image.nix, manifest schema 2) with rave's label, components,
# HTTPS endpoint, age identity and properties (SAFE mode, limits), and one
# more check: the disk may hold the secrets only encrypted.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.rave;
  flavorName = if cfg.testAccess then "test" else "production";
in
{
  imports = [ ./harness-image.nix ];

  harness.image = {
    inherit (cfg) profile;
    name = "rave-${cfg.profile}-${flavorName}${lib.optionalString (!cfg.safeMode) "-unsafe"}";
    caCert = cfg.secrets.caCert;
    https = {
      host = "rave.local";
      port = 3002;
    };
    fwCfg = lib.optionalAttrs (cfg.secrets.ageIdentity != null) {
      "opt/rave/age-identity" = cfg.secrets.ageIdentity;
    };
    components = lib.mapAttrs (_: unit: { inherit unit; }) cfg.manifest.components;
    inherit (cfg.manifest) absent;
    properties = {
      safe_mode = cfg.safeMode;
      inherit (cfg.manifest) limits;
    };
    # Room for PostgreSQL, Prometheus' TSDB, Grafana and vibe-kanban's data.
    additionalSpace = "3072M";
    # The disk may hold the secrets only encrypted: refuse an image whose
    # bytes contain the webhook token or the body of the TLS key (qcow2 keeps
    # data clusters as they are, so this scans what the guest sees).
    extraCommands = lib.optionalString (cfg.secrets.ageIdentity != null) ''
      export HOME=$TMPDIR SOPS_AGE_KEY_FILE=${cfg.secrets.ageIdentity}
      extract() { ${lib.getExe pkgs.sops} --decrypt --extract "[\"$1\"]" ${cfg.secrets.sopsFile}; }
      token=$(extract webhook-gitlab-secret)
      key_body=$(extract tls-key | sed -n 2p)
      for needle in "$token" "$key_body"; do
        if [ -z "$needle" ]; then echo "rave image: a secret decrypted empty" >&2; exit 1; fi
        if grep -qaF -- "$needle" "$out/nixos.qcow2"; then
          echo "rave image: a plaintext secret is on the disk image: refusing it" >&2
          exit 1
        fi
      done
    '';
  };

  system.build.raveImage = config.system.build.harnessImage;
}
